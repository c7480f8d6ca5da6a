/* pickle.c - see pickle.h. A stack machine over the opcodes these files use;
 * values live in one arena that is freed as a whole. */
#include "pickle.h"
#include "util.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_MARKS = 64, VALUES_PER_BLOCK = 1024 };

typedef enum { V_NONE, V_BOOL, V_INT, V_BYTES, V_STR, V_TUPLE, V_LIST, V_DICT, V_GLOBAL,
               V_ARRAY, V_DTYPE } Kind;
typedef enum { G_RECONSTRUCT, G_NDARRAY, G_DTYPE, G_ENCODE, G_FROMBUFFER } Global;

typedef struct Value Value;
struct Value {
    Kind kind;
    int built;                  /* ARRAY, DTYPE: state applied (BUILD) */
    size_t offset;              /* of the opcode that made it, for errors */
    int64_t i;                  /* BOOL, INT; GLOBAL: which */
    const unsigned char *p;     /* BYTES, STR (UTF-8), ARRAY: the data */
    size_t n;                   /* bytes at p */
    Value **items;              /* TUPLE, LIST; DICT: key, value, key, value, ... */
    size_t count, cap;
    int rank;                   /* ARRAY */
    int64_t dims[2];
};

/* Every allocation of a parse, and a budget that keeps memory a small multiple
 * of the input however its opcodes are arranged. */
struct PickleArena {
    void **blocks;
    size_t nblocks, cap;
    Value *values;              /* the current block of values */
    size_t values_left;
    size_t bytes, budget;
};

typedef struct {
    const unsigned char *buf;
    size_t len, pos, op;        /* op: offset of the opcode being run */
    const char *label;
    PickleArena *arena;
    Value **stack;
    size_t depth, stack_cap;
    size_t marks[MAX_MARKS];
    int nmarks;
    Value **memo;               /* memo_cap slots (a power of two), nmemo used */
    uint64_t *memo_keys;
    size_t nmemo, memo_cap;
} Unpickler;

static void fail(const Unpickler *u, size_t offset, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
static void fail(const Unpickler *u, size_t offset, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    die("%s: byte %zu: %s", u->label, offset, msg);
}

static void charge(Unpickler *u, size_t size) {
    PickleArena *a = u->arena;
    if (size > a->budget - a->bytes)
        fail(u, u->op, "more objects than a CIFAR file holds (over %zu MB for %zu bytes of input)",
             a->budget >> 20, u->len);
    a->bytes += size;
}

static void *arena_alloc(Unpickler *u, size_t size) {
    PickleArena *a = u->arena;
    charge(u, size);
    if (a->nblocks == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->blocks = xrealloc(a->blocks, a->cap * sizeof *a->blocks);
    }
    return a->blocks[a->nblocks++] = xcalloc(1, size ? size : 1);
}

static Value *new_value(Unpickler *u, Kind kind) {
    PickleArena *a = u->arena;
    if (!a->values_left) {
        a->values = arena_alloc(u, VALUES_PER_BLOCK * sizeof *a->values);
        a->values_left = VALUES_PER_BLOCK;
    }
    Value *v = a->values++;
    a->values_left--;
    v->kind = kind;
    v->offset = u->op;
    return v;
}

static void add_item(Unpickler *u, Value *c, Value *item) {
    if (c->count == c->cap) {       /* the old array stays in the arena: at most doubles the cost */
        size_t cap = c->cap ? 2 * c->cap : 8;
        Value **items = arena_alloc(u, cap * sizeof *items);
        if (c->count) memcpy(items, c->items, c->count * sizeof *items);
        c->items = items;
        c->cap = cap;
    }
    c->items[c->count++] = item;
}

/* ---- reading the input ---- */

static const unsigned char *take(Unpickler *u, uint64_t n) {
    if (n > u->len - u->pos)
        fail(u, u->op, "truncated: %llu bytes needed, %zu left", (unsigned long long)n, u->len - u->pos);
    const unsigned char *p = u->buf + u->pos;
    u->pos += (size_t)n;
    return p;
}

static uint64_t read_le(Unpickler *u, int bytes) {
    const unsigned char *p = take(u, (uint64_t)bytes);
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* ---- the stack, marks and memo ---- */

static void push(Unpickler *u, Value *v) {
    if (u->depth == u->stack_cap) {
        u->stack_cap *= 2;
        u->stack = xrealloc(u->stack, u->stack_cap * sizeof *u->stack);
    }
    u->stack[u->depth++] = v;
}

static size_t stack_floor(const Unpickler *u) { return u->nmarks ? u->marks[u->nmarks - 1] : 0; }

static Value *pop(Unpickler *u) {
    if (u->depth <= stack_floor(u)) fail(u, u->op, "stack underflow");
    return u->stack[--u->depth];
}

static Value *top(Unpickler *u) {
    if (u->depth <= stack_floor(u)) fail(u, u->op, "stack underflow");
    return u->stack[u->depth - 1];
}

/* Items pushed since the last MARK (count in *n); the mark is removed. */
static Value **pop_mark(Unpickler *u, size_t *n) {
    if (!u->nmarks) fail(u, u->op, "no MARK before this opcode");
    size_t at = u->marks[--u->nmarks];
    *n = u->depth - at;
    u->depth = at;
    return u->stack + at;
}

/* The memo: index -> value, open addressing. Indices are whatever the pickler chose
 * (cPickle starts at 1, pickle.py at 0); the table grows with the puts, which the
 * input pays for, never with an index's size. */
static Value **memo_slot(Unpickler *u, uint64_t index) {
    size_t mask = u->memo_cap - 1, k = (size_t)(mix64(index) & mask);
    while (u->memo[k] && u->memo_keys[k] != index) k = (k + 1) & mask;
    return &u->memo[k];
}

static void memo_put(Unpickler *u, uint64_t index) {
    Value *v = top(u);
    if (2 * (u->nmemo + 1) > u->memo_cap) {          /* grow: rehash at half load */
        Value **old = u->memo;
        uint64_t *old_keys = u->memo_keys;
        size_t old_cap = u->memo_cap;
        u->memo_cap = old_cap ? 2 * old_cap : 64;
        charge(u, u->memo_cap * (sizeof *u->memo + sizeof *u->memo_keys));
        u->memo = xcalloc(u->memo_cap, sizeof *u->memo);
        u->memo_keys = xcalloc(u->memo_cap, sizeof *u->memo_keys);
        for (size_t k = 0; k < old_cap; k++)
            if (old[k]) {
                Value **slot = memo_slot(u, old_keys[k]);
                *slot = old[k];
                u->memo_keys[slot - u->memo] = old_keys[k];
            }
        free(old);
        free(old_keys);
    }
    Value **slot = memo_slot(u, index);
    if (!*slot) u->nmemo++;
    *slot = v;
    u->memo_keys[slot - u->memo] = index;
}

static void memo_get(Unpickler *u, uint64_t index) {
    Value **slot = u->memo_cap ? memo_slot(u, index) : NULL;
    if (!slot || !*slot) fail(u, u->op, "memo index %llu was never written", (unsigned long long)index);
    push(u, *slot);
}

/* ---- values ---- */

static int utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!len || len > n - i) return 0;
        uint32_t cp = len == 1 ? c : c & (0x7F >> len);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        static const uint32_t least[5] = { 0, 0, 0x80, 0x800, 0x10000 };
        if (cp < least[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += len;
    }
    return 1;
}

static Value *text_value(Unpickler *u, Kind kind, uint64_t n) {
    Value *v = new_value(u, kind);
    v->p = take(u, n);
    v->n = (size_t)n;
    if (kind == V_STR && !utf8_valid(v->p, v->n)) fail(u, u->op, "string is not valid UTF-8");
    return v;
}

static Value *int_value(Unpickler *u, int64_t i) {
    Value *v = new_value(u, V_INT);
    v->i = i;
    return v;
}

static int is_text(const Value *v, const char *s) {
    return (v->kind == V_BYTES || v->kind == V_STR) && v->n == strlen(s) && !memcmp(v->p, s, v->n);
}

static int is_number(const Value *v, int64_t i) {
    return (v->kind == V_INT || v->kind == V_BOOL) && v->i == i;
}

static Global find_global(Unpickler *u, const unsigned char *module, size_t mlen,
                          const unsigned char *name, size_t nlen) {
    static const struct { const char *module, *name; Global g; } allowed[] = {
        { "numpy.core.multiarray", "_reconstruct", G_RECONSTRUCT },
        { "numpy._core.multiarray", "_reconstruct", G_RECONSTRUCT },
        { "numpy", "ndarray", G_NDARRAY },
        { "numpy", "dtype", G_DTYPE },
        { "_codecs", "encode", G_ENCODE },
        { "numpy.core.numeric", "_frombuffer", G_FROMBUFFER },
        { "numpy._core.numeric", "_frombuffer", G_FROMBUFFER } };
    for (size_t k = 0; k < sizeof allowed / sizeof *allowed; k++)
        if (strlen(allowed[k].module) == mlen && !memcmp(allowed[k].module, module, mlen) &&
            strlen(allowed[k].name) == nlen && !memcmp(allowed[k].name, name, nlen))
            return allowed[k].g;
    char shown[96];
    int len = 0;
    for (size_t k = 0; k < mlen + 1 + nlen && len < (int)sizeof shown - 4; k++) {
        unsigned char c = k < mlen ? module[k] : k == mlen ? '.' : name[k - mlen - 1];
        shown[len++] = c >= 0x20 && c < 0x7F ? (char)c : '?';
    }
    shown[len] = 0;
    fail(u, u->op, "global '%s' is not allowed (only NumPy's array rebuilders)", shown);
}

static void push_global(Unpickler *u, Global g) {
    Value *v = new_value(u, V_GLOBAL);
    v->i = g;
    push(u, v);
}

/* GLOBAL: "module\nname\n" */
static void op_global(Unpickler *u) {
    const unsigned char *part[2];
    size_t len[2];
    for (int k = 0; k < 2; k++) {
        size_t left = u->len - u->pos, max = left < 128 ? left : 128;
        const unsigned char *nl = memchr(u->buf + u->pos, '\n', max);
        if (!nl) fail(u, u->op, "GLOBAL without its two newline-ended names");
        part[k] = u->buf + u->pos;
        len[k] = (size_t)(nl - part[k]);
        u->pos += len[k] + 1;
    }
    push_global(u, find_global(u, part[0], len[0], part[1], len[1]));
}

static void op_stack_global(Unpickler *u) {
    Value *name = pop(u), *module = pop(u);
    if (name->kind != V_STR || module->kind != V_STR) fail(u, u->op, "STACK_GLOBAL of non-strings");
    push_global(u, find_global(u, module->p, module->n, name->p, name->n));
}

/* Shape tuple of at most 2 non-negative dims into v; returns the element count. */
static uint64_t set_shape(Unpickler *u, Value *v, const Value *shape) {
    if (shape->kind != V_TUPLE || shape->count < 1 || shape->count > 2)
        fail(u, u->op, "array shape is not a tuple of one or two sizes");
    uint64_t total = 1;
    v->rank = (int)shape->count;
    for (size_t k = 0; k < shape->count; k++) {
        const Value *d = shape->items[k];
        if (d->kind != V_INT || d->i < 0 || d->i > (int64_t)u->len)
            fail(u, u->op, "array dimension is not a size this input can hold");
        v->dims[k] = d->i;
        total *= (uint64_t)d->i;          /* both dims <= len: no overflow */
    }
    return total;
}

static int dtype_ok(const Value *v) { return v->kind == V_DTYPE && v->built; }

/* _codecs.encode(s, 'latin1'): Python 3's protocol-2 spelling of bytes. */
static Value *latin1_bytes(Unpickler *u, const Value *s) {
    unsigned char *out = arena_alloc(u, s->n);
    size_t n = 0;
    for (size_t i = 0; i < s->n; n++) {
        unsigned c = s->p[i];
        if (c < 0x80) i++;
        else if ((c & 0xE0) == 0xC0 && c <= 0xC3) { c = (c & 0x1F) << 6 | (s->p[i + 1] & 0x3F); i += 2; }
        else fail(u, u->op, "latin-1 text holds a character above U+00FF");
        out[n] = (unsigned char)c;
    }
    Value *v = new_value(u, V_BYTES);
    v->p = out;
    v->n = n;
    return v;
}

static void op_reduce(Unpickler *u) {
    Value *args = pop(u), *f = pop(u);
    if (f->kind != V_GLOBAL) fail(u, u->op, "REDUCE of something that is not an allowed global");
    if (args->kind != V_TUPLE) fail(u, u->op, "REDUCE arguments are not a tuple");
    Value **a = args->items, *v = NULL;
    switch ((Global)f->i) {
    case G_RECONSTRUCT:     /* _reconstruct(ndarray, (0,), b'b'): an empty array, BUILD fills it */
        if (args->count != 3 || a[0]->kind != V_GLOBAL || a[0]->i != G_NDARRAY || a[1]->kind != V_TUPLE ||
            a[1]->count != 1 || !is_number(a[1]->items[0], 0) || !is_text(a[2], "b"))
            fail(u, u->op, "_reconstruct with arguments other than (ndarray, (0,), b'b')");
        v = new_value(u, V_ARRAY);
        break;
    case G_DTYPE:           /* dtype('u1', False, True) */
        if (args->count != 3 || !is_text(a[0], "u1") || !is_number(a[1], 0) || !is_number(a[2], 1))
            fail(u, u->op, "dtype other than uint8 ('u1')");
        v = new_value(u, V_DTYPE);
        break;
    case G_ENCODE:
        if (args->count != 2 || a[0]->kind != V_STR || !(is_text(a[1], "latin1") || is_text(a[1], "latin-1")))
            fail(u, u->op, "_codecs.encode other than (str, 'latin1')");
        v = latin1_bytes(u, a[0]);
        break;
    case G_FROMBUFFER:      /* _frombuffer(data, dtype, shape, 'C'): protocol 5 */
        if (args->count != 4 || a[0]->kind != V_BYTES || !dtype_ok(a[1]) || !is_text(a[3], "C"))
            fail(u, u->op, "_frombuffer other than (bytes, uint8 dtype, shape, 'C')");
        v = new_value(u, V_ARRAY);
        if (set_shape(u, v, a[2]) != a[0]->n) fail(u, u->op, "array data is not shape's size");
        v->p = a[0]->p;
        v->n = a[0]->n;
        v->built = 1;
        break;
    case G_NDARRAY:
        fail(u, u->op, "ndarray called directly");
    }
    push(u, v);
}

static void op_build(Unpickler *u) {
    Value *state = pop(u), *obj = top(u);
    if (obj->built || (obj->kind != V_ARRAY && obj->kind != V_DTYPE))
        fail(u, u->op, "BUILD of something other than a new array or dtype");
    Value **s = state->items;
    if (obj->kind == V_DTYPE) {     /* (3, '|', None, None, None, -1, -1, 0) */
        if (state->kind != V_TUPLE || state->count < 8 || state->count > 9 || !(is_number(s[0], 3) ||
            is_number(s[0], 4)) || !is_text(s[1], "|"))
            fail(u, u->op, "dtype state is not that of uint8");
    } else {                        /* (1, shape, dtype, is_fortran, data) */
        if (state->kind != V_TUPLE || state->count != 5 || !is_number(s[0], 1))
            fail(u, u->op, "array state is not (1, shape, dtype, fortran, data)");
        if (!dtype_ok(s[2])) fail(u, u->op, "array of a dtype other than uint8");
        if (!is_number(s[3], 0)) fail(u, u->op, "array in Fortran order");
        if (s[4]->kind != V_BYTES) fail(u, u->op, "array data is not a byte string");
        if (set_shape(u, obj, s[1]) != s[4]->n) fail(u, u->op, "array data is not shape's size");
        obj->p = s[4]->p;
        obj->n = s[4]->n;
    }
    obj->built = 1;
}

/* The top n values (n = -1: those above the last MARK, which is removed). */
static Value **pop_n(Unpickler *u, size_t *n) {
    if (*n == (size_t)-1) return pop_mark(u, n);
    if (u->depth < stack_floor(u) + *n) fail(u, u->op, "stack underflow");
    u->depth -= *n;
    return u->stack + u->depth;
}

static void op_setitems(Unpickler *u, size_t n) {
    Value **kv = pop_n(u, &n);
    if (n % 2) fail(u, u->op, "SETITEMS with a key and no value");
    Value *d = top(u);
    if (d->kind != V_DICT) fail(u, u->op, "SETITEMS on something that is not a dict");
    for (size_t k = 0; k < n; k += 2) {
        if (kv[k]->kind != V_BYTES && kv[k]->kind != V_STR) fail(u, u->op, "dict key is not a string");
        add_item(u, d, kv[k]);
        add_item(u, d, kv[k + 1]);
    }
}

static void op_appends(Unpickler *u, size_t n) {
    Value **items = pop_n(u, &n);
    Value *l = top(u);
    if (l->kind != V_LIST) fail(u, u->op, "APPEND to something that is not a list");
    for (size_t k = 0; k < n; k++) add_item(u, l, items[k]);
}

static void op_tuple(Unpickler *u, size_t n) {
    Value *t = new_value(u, V_TUPLE);
    Value **items = pop_n(u, &n);
    for (size_t k = 0; k < n; k++) add_item(u, t, items[k]);
    push(u, t);
}

/* Runs the pickle; returns the value STOP takes. */
static Value *run(Unpickler *u) {
    for (;;) {
        u->op = u->pos;
        unsigned char op = *take(u, 1);
        switch (op) {
        case 0x80: {                                        /* PROTO */
            unsigned v = *take(u, 1);
            if (v < 2 || v > 5) fail(u, u->op, "pickle protocol %u (2 to 5 are read)", v);
            break;
        }
        case 0x95: read_le(u, 8); break;                      /* FRAME: a size hint */
        case '.': {                                          /* STOP */
            Value *v = pop(u);
            if (u->depth || u->nmarks) fail(u, u->op, "STOP with more on the stack");
            if (u->pos != u->len) fail(u, u->pos, "%zu bytes after the pickle's end", u->len - u->pos);
            return v;
        }
        case '(':                                           /* MARK */
            if (u->nmarks == MAX_MARKS) fail(u, u->op, "nested deeper than %d", MAX_MARKS);
            u->marks[u->nmarks++] = u->depth;
            break;
        case '}': push(u, new_value(u, V_DICT)); break;      /* EMPTY_DICT */
        case ']': push(u, new_value(u, V_LIST)); break;      /* EMPTY_LIST */
        case ')': push(u, new_value(u, V_TUPLE)); break;     /* EMPTY_TUPLE */
        case 't': op_tuple(u, (size_t)-1); break;            /* TUPLE */
        case 0x85: op_tuple(u, 1); break;                    /* TUPLE1..3 */
        case 0x86: op_tuple(u, 2); break;
        case 0x87: op_tuple(u, 3); break;
        case 'N': push(u, new_value(u, V_NONE)); break;
        case 0x88: case 0x89: {                             /* NEWTRUE, NEWFALSE */
            Value *v = new_value(u, V_BOOL);
            v->i = op == 0x88;
            push(u, v);
            break;
        }
        case 'J': push(u, int_value(u, (int32_t)read_le(u, 4))); break;   /* BININT */
        case 'K': push(u, int_value(u, (int64_t)read_le(u, 1))); break;   /* BININT1 */
        case 'M': push(u, int_value(u, (int64_t)read_le(u, 2))); break;   /* BININT2 */
        case 0x8a: {                                        /* LONG1 */
            unsigned n = *take(u, 1);
            if (n > 8) fail(u, u->op, "integer of %u bytes", n);
            uint64_t v = n ? read_le(u, (int)n) : 0;
            if (n && n < 8 && (v >> (8 * n - 1) & 1)) v |= ~0ULL << (8 * n);   /* sign */
            push(u, int_value(u, (int64_t)v));
            break;
        }
        case 'U': push(u, text_value(u, V_BYTES, read_le(u, 1))); break;  /* SHORT_BINSTRING */
        case 'T': {                                         /* BINSTRING */
            int32_t n = (int32_t)read_le(u, 4);
            if (n < 0) fail(u, u->op, "string of negative length %d", n);
            push(u, text_value(u, V_BYTES, (uint64_t)n));
            break;
        }
        case 'C': push(u, text_value(u, V_BYTES, read_le(u, 1))); break;  /* SHORT_BINBYTES */
        case 'B': push(u, text_value(u, V_BYTES, read_le(u, 4))); break;  /* BINBYTES */
        case 0x8e: case 0x96: push(u, text_value(u, V_BYTES, read_le(u, 8))); break; /* BINBYTES8, BYTEARRAY8 */
        case 0x8c: push(u, text_value(u, V_STR, read_le(u, 1))); break;   /* SHORT_BINUNICODE */
        case 'X': push(u, text_value(u, V_STR, read_le(u, 4))); break;    /* BINUNICODE */
        case 0x8d: push(u, text_value(u, V_STR, read_le(u, 8))); break;   /* BINUNICODE8 */
        case 'q': memo_put(u, read_le(u, 1)); break;          /* BINPUT */
        case 'r': memo_put(u, read_le(u, 4)); break;          /* LONG_BINPUT */
        case 0x94: memo_put(u, u->nmemo); break;              /* MEMOIZE: the next index */
        case 'h': memo_get(u, read_le(u, 1)); break;          /* BINGET */
        case 'j': memo_get(u, read_le(u, 4)); break;          /* LONG_BINGET */
        case 'c': op_global(u); break;
        case 0x93: op_stack_global(u); break;
        case 'R': op_reduce(u); break;
        case 'b': op_build(u); break;
        case 's': op_setitems(u, 2); break;                   /* SETITEM */
        case 'u': op_setitems(u, (size_t)-1); break;          /* SETITEMS */
        case 'a': op_appends(u, 1); break;                    /* APPEND */
        case 'e': op_appends(u, (size_t)-1); break;           /* APPENDS */
        default:
            fail(u, u->op, "opcode 0x%02x is not one a CIFAR pickle uses", op);
        }
    }
}

/* ---- the CIFAR dict ---- */

static const Value *dict_get(const Value *d, const char *key) {
    for (size_t k = 0; k < d->count; k += 2)
        if (is_text(d->items[k], key)) return d->items[k + 1];
    return NULL;
}

static const int64_t *int_list(Unpickler *u, const Value *d, const char *key, int64_t want, size_t *offset) {
    const Value *l = dict_get(d, key);
    if (!l) return NULL;
    if (l->kind != V_LIST) fail(u, l->offset, "'%s' is not a list", key);
    if ((int64_t)l->count != want)
        fail(u, l->offset, "'%s' holds %zu labels for %lld images", key, l->count, (long long)want);
    int64_t *out = arena_alloc(u, l->count * sizeof *out);
    for (size_t k = 0; k < l->count; k++) {
        if (l->items[k]->kind != V_INT) fail(u, l->items[k]->offset, "'%s'[%zu] is not an integer", key, k);
        out[k] = l->items[k]->i;
    }
    *offset = l->offset;
    return out;
}

static char **name_list(Unpickler *u, const Value *d, const char *key, int *count) {
    const Value *l = dict_get(d, key);
    if (!l) return NULL;
    if (l->kind != V_LIST) fail(u, l->offset, "'%s' is not a list of names", key);
    char **out = arena_alloc(u, l->count * sizeof *out);
    for (size_t k = 0; k < l->count; k++) {
        const Value *s = l->items[k];
        if (s->kind != V_BYTES && s->kind != V_STR) fail(u, s->offset, "'%s'[%zu] is not a string", key, k);
        for (size_t c = 0; c < s->n; c++)
            if (s->p[c] < 0x20 || s->p[c] == 0x7F) fail(u, s->offset, "'%s'[%zu] holds a control character", key, k);
        out[k] = arena_alloc(u, s->n + 1);
        memcpy(out[k], s->p, s->n);
    }
    *count = (int)l->count;
    return out;
}

static void parse_dict(Unpickler *u, CifarPickle *out);

static void unpickler_free(Unpickler *u) {
    free(u->stack);
    free(u->memo);
    free(u->memo_keys);
    free(u);
}

int is_pickle(const unsigned char *buf, size_t len) {
    return len >= 1 && buf[0] == 0x80;
}

void cifar_pickle_parse(CifarPickle *out, const unsigned char *buf, size_t len, const char *label) {
    *out = (CifarPickle){ 0 };
    out->arena = xcalloc(1, sizeof *out->arena);
    out->arena->budget = (len < SIZE_MAX / 16 ? 8 * len : len) + ((size_t)1 << 20);
    /* On the heap: what the parse changes is still there after a longjmp. */
    Unpickler *u = xcalloc(1, sizeof *u);
    *u = (Unpickler){ .buf = buf, .len = len, .label = label, .arena = out->arena, .stack_cap = 64 };
    u->stack = xmalloc(u->stack_cap * sizeof *u->stack);
    /* Where die() jumps instead of exiting (the fuzzer), free what the parse holds. */
    jmp_buf *outer = die_jump, here;
    if (outer) {
        if (setjmp(here)) {
            die_jump = outer;
            unpickler_free(u);
            cifar_pickle_free(out);
            longjmp(*outer, EXIT_DATA);
        }
        die_jump = &here;
    }
    parse_dict(u, out);
    die_jump = outer;
    unpickler_free(u);
}

static void parse_dict(Unpickler *u, CifarPickle *out) {
    if (!is_pickle(u->buf, u->len)) fail(u, 0, "not a pickle (no PROTO opcode first)");
    Value *d = run(u);
    if (d->kind != V_DICT) fail(u, d->offset, "the pickle holds no dict");
    const Value *data = dict_get(d, "data");
    if (data) {
        if (data->kind != V_ARRAY || !data->built) fail(u, data->offset, "'data' is not a NumPy array");
        if (data->rank != 2)
            fail(u, data->offset, "'data' has shape [%lld], not one row of pixels per image",
                 (long long)data->dims[0]);
        out->has_data = 1;
        out->count = data->dims[0];
        out->row_bytes = data->dims[1];
        out->data_offset = data->offset;
        out->pixels = data->p;
        out->labels = int_list(u, d, "labels", out->count, &out->labels_offset);
        out->fine = int_list(u, d, "fine_labels", out->count, &out->fine_offset);
        out->coarse = int_list(u, d, "coarse_labels", out->count, &out->coarse_offset);
        if (!out->labels && !(out->fine && out->coarse))
            fail(u, d->offset, "the dict has 'data' but no 'labels' (nor 'fine_labels' and 'coarse_labels')");
    } else {
        out->names = name_list(u, d, "label_names", &out->nnames);
        out->fine_names = name_list(u, d, "fine_label_names", &out->nfine_names);
        out->coarse_names = name_list(u, d, "coarse_label_names", &out->ncoarse_names);
        if (!out->names && !out->fine_names)
            fail(u, d->offset, "the dict holds neither 'data' nor label names");
    }
}

void cifar_pickle_free(CifarPickle *p) {
    if (!p->arena) return;
    for (size_t k = 0; k < p->arena->nblocks; k++) free(p->arena->blocks[k]);
    free(p->arena->blocks);
    free(p->arena);
    *p = (CifarPickle){ 0 };
}
