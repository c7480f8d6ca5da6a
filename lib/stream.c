/* stream.c - reader and writer of the tensor stream; see stream.h. */
#define _GNU_SOURCE          /* F_SETPIPE_SZ */
#include "stream.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

static const char MAGIC[4] = { 'I', 'V', '3', 'T' };
#define STREAM_VERSION 1
#define IN_CHUNK (1 << 17)
#define PAYLOAD_CHUNK ((size_t)1 << 26)

static const char *const DTYPE_NAMES[DT_COUNT] = { "end", "u8", "i32", "i64", "f32", "bf16" };
static const size_t DTYPE_SIZES[DT_COUNT] = { 0, 1, 4, 8, 4, 2 };

const char *dtype_name(int dt) { return dt >= 0 && dt < DT_COUNT ? DTYPE_NAMES[dt] : "?"; }
size_t dtype_size(int dt) { return dt >= 0 && dt < DT_COUNT ? DTYPE_SIZES[dt] : 0; }

void record_free(Record *r) { free(r->data); memset(r, 0, sizeof *r); }

void record_swap(Record *a, Record *b) {
    Record t = *a;
    *a = *b;
    *b = t;
}

/* Element count of a shape: 0 if any dimension is (however large the others), else
 * their product; returns 0 when a dimension is negative or the count passes INT64_MAX. */
static int shape_elements(int rank, const int64_t *dims, uint64_t *count) {
    uint64_t n = 1;
    int zero = 0;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 0) return 0;
        zero |= dims[i] == 0;
    }
    for (int i = 0; i < rank && !zero; i++)
        if (__builtin_mul_overflow(n, (uint64_t)dims[i], &n) || n > INT64_MAX) return 0;
    *count = zero ? 0 : n;
    return 1;
}

void record_shape(Record *r, const char *name, int dtype, int rank, const int64_t *dims) {
    uint64_t nelem, nbytes;
    if (!shape_elements(rank, dims, &nelem) || __builtin_mul_overflow(nelem, (uint64_t)dtype_size(dtype), &nbytes) ||
        nbytes > MAX_RECORD_BYTES)
        die("record '%s': its shape holds more than the %llu-byte cap", name, (unsigned long long)MAX_RECORD_BYTES);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->dtype = dtype; r->rank = rank;
    if (rank) memcpy(r->dims, dims, rank * sizeof *dims);
    r->nelem = (int64_t)nelem;
    r->nbytes = nbytes;
    if (r->cap < r->nbytes) { r->data = xrealloc(r->data, r->nbytes); r->cap = r->nbytes; }
}

void record_shape_str(const Record *r, char *buf, size_t n) {
    size_t used = snprintf(buf, n, "[");
    for (int i = 0; i < r->rank && used < n; i++)
        used += snprintf(buf + used, n - used, i ? ",%lld" : "%lld", (long long)r->dims[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

void record_expect(const Record *r, int dtype, int rank, const int64_t *dims) {
    char got[128];
    record_shape_str(r, got, sizeof got);
    if ((dtype >= 0 && r->dtype != dtype) || r->rank != rank)
        die("record '%s' at byte %llu: expected %s of rank %d, got %s %s", r->name,
            (unsigned long long)r->offset, dtype >= 0 ? dtype_name(dtype) : "a tensor", rank,
            dtype_name(r->dtype), got);
    for (int i = 0; dims && i < rank; i++)
        if (dims[i] >= 0 && r->dims[i] != dims[i])
            die("record '%s' at byte %llu: dimension %d is %lld, expected %lld", r->name,
                (unsigned long long)r->offset, i, (long long)r->dims[i], (long long)dims[i]);
}

/* ---------------- reader ---------------- */

struct StreamReader {
    FILE *f;
    char *label;
    int zstd, input_eof, saw_end, own_file, started;
    ZSTD_DCtx *dc;
    unsigned char *in;          /* bytes read from f */
    size_t in_len, in_pos;
    unsigned char *out;         /* decompressed bytes not yet consumed */
    size_t out_len, out_pos;
    size_t frame_left;          /* 0 when the decoder sits between frames */
    uint64_t pos;               /* uncompressed bytes consumed */
    uint64_t cpos;              /* input bytes consumed before in[] */
};

/* read(2), not fread: a pipe or FIFO hands over what it has, so a peer that
 * waits for our answer is never waited on for more bytes. */
static size_t read_some(StreamReader *r, unsigned char *buf, size_t n) {
    for (;;) {
        ssize_t got = read(fileno(r->f), buf, n);
        if (got >= 0) return (size_t)got;
        if (errno != EINTR) die("%s: read error: %s", r->label, strerror(errno));
    }
}

static int fill_input(StreamReader *r) {
    if (r->input_eof) return 0;
    r->cpos += r->in_len;
    r->in_len = read_some(r, r->in, IN_CHUNK);
    r->in_pos = 0;
    if (r->in_len == 0) { r->input_eof = 1; return 0; }
    return 1;
}

/* Makes more uncompressed bytes available in out[]; 0 at end of input. */
static int refill(StreamReader *r) {
    if (!r->zstd) {
        if (r->in_pos == r->in_len && !fill_input(r)) return 0;
        r->out = r->in; r->out_pos = r->in_pos; r->out_len = r->in_len;
        r->in_pos = r->in_len;
        return 1;
    }
    for (;;) {
        if (r->in_pos == r->in_len && r->frame_left == 0 && !fill_input(r)) return 0;
        ZSTD_inBuffer ib = { r->in, r->in_len, r->in_pos };
        ZSTD_outBuffer ob = { r->out, ZSTD_DStreamOutSize(), 0 };
        size_t ret = ZSTD_decompressStream(r->dc, &ob, &ib);
        if (ZSTD_isError(ret))
            die("%s: corrupt zstd data near compressed byte %llu: %s", r->label,
                (unsigned long long)(r->cpos + ib.pos), ZSTD_getErrorName(ret));
        r->in_pos = ib.pos;
        r->frame_left = ret;
        r->out_pos = 0; r->out_len = ob.pos;
        if (ob.pos) return 1;
        if (r->in_pos == r->in_len && ret != 0 && !fill_input(r))
            die("%s: truncated zstd frame at compressed byte %llu", r->label,
                (unsigned long long)r->cpos);
    }
}

/* Reads up to n bytes; fewer only at the end of input. */
static size_t read_bytes(StreamReader *r, void *dst, size_t n) {
    size_t got = 0;
    while (got < n) {
        if (r->out_pos == r->out_len && !refill(r)) break;
        size_t k = r->out_len - r->out_pos;
        if (k > n - got) k = n - got;
        memcpy((char *)dst + got, r->out + r->out_pos, k);
        r->out_pos += k; got += k;
    }
    r->pos += got;
    return got;
}

/* A pipe or FIFO of 1 MiB (Linux's default most) instead of 64 KiB: a
 * gradient exchange of 88 MB then takes 88 wake-ups, not 1,400. */
static void widen_pipe(FILE *f) {
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISFIFO(st.st_mode)) fcntl(fileno(f), F_SETPIPE_SZ, 1 << 20);
}

StreamReader *sr_open(FILE *f, const char *label) {
    widen_pipe(f);
    StreamReader *r = xcalloc(1, sizeof *r);
    r->f = f;
    r->label = xstrdup(label);
    r->in = xmalloc(IN_CHUNK);
    return r;
}

/* Reads nothing until the first record is asked for, so that opening FIFOs
 * in a fixed order never waits on data. Then detects zstd by its magic. */
static void start(StreamReader *r) {
    r->started = 1;
    fill_input(r);
    while (r->in_len > 0 && r->in_len < 4) {       /* a pipe may deliver fewer bytes */
        size_t got = read_some(r, r->in + r->in_len, IN_CHUNK - r->in_len);
        if (!got) break;
        r->in_len += got;
    }
    r->zstd = r->in_len >= 4 && r->in[0] == 0x28 && r->in[1] == 0xB5 && r->in[2] == 0x2F &&
              r->in[3] == 0xFD;
    if (r->zstd) {
        r->dc = ZSTD_createDCtx();
        ZSTD_DCtx_setParameter(r->dc, ZSTD_d_windowLogMax, 27);
        r->out = xmalloc(ZSTD_DStreamOutSize());
    }
}

StreamReader *sr_open_path(const char *path) {
    if (!strcmp(path, "-")) return sr_open(stdin, "stdin");
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    StreamReader *r = sr_open(f, path);
    r->own_file = 1;
    return r;
}

void sr_close(StreamReader *r) {
    if (!r) return;
    if (r->own_file) fclose(r->f);
    if (r->dc) { ZSTD_freeDCtx(r->dc); free(r->out); }
    free(r->in); free(r->label); free(r);
}

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

int sr_next(StreamReader *r, Record *rec) {
    if (!r->started) start(r);
    for (;;) {
        unsigned char h[8];
        uint64_t at = r->pos;
        size_t got = read_bytes(r, h, 8);
        if (got == 0) {
            if (r->saw_end) return 0;
            if (at == 0) die("%s: empty stream (no records)", r->label);
            die("%s: stream ends at byte %llu without an end record (truncated, or an upstream "
                "stage failed)", r->label, (unsigned long long)at);
        }
        if (got < 8 && memcmp(h, MAGIC, got < 4 ? got : 4) == 0)
            die("%s: truncated record header at byte %llu", r->label, (unsigned long long)at);
        if (memcmp(h, MAGIC, 4))
            die("%s: bad magic at byte %llu (not an incv3 tensor stream)", r->label,
                (unsigned long long)at);
        int version = h[4], dtype = h[5], rank = h[6], namelen = h[7];
        if (version != STREAM_VERSION)
            die("%s: record at byte %llu has unsupported version %d", r->label,
                (unsigned long long)at, version);
        if (dtype >= DT_COUNT)
            die("%s: record at byte %llu has unknown dtype %d", r->label, (unsigned long long)at, dtype);
        if (rank > MAX_RANK)
            die("%s: record at byte %llu has rank %d (at most %d)", r->label,
                (unsigned long long)at, rank, MAX_RANK);
        if (namelen == 0) die("%s: record at byte %llu has an empty name", r->label, (unsigned long long)at);
        char name[256];
        if (read_bytes(r, name, namelen) < (size_t)namelen)
            die("%s: truncated record header at byte %llu", r->label, (unsigned long long)at);
        name[namelen] = 0;
        for (int i = 0; i < namelen; i++)
            if (name[i] <= ' ' || name[i] > '~')
                die("%s: record at byte %llu has a name with a non-printable byte", r->label,
                    (unsigned long long)at);
        if (dtype == DT_END) {
            if (rank != 0 || strcmp(name, "end"))
                die("%s: malformed end record at byte %llu", r->label, (unsigned long long)at);
            r->saw_end = 1;
            continue;
        }
        unsigned char db[8 * MAX_RANK];
        if (read_bytes(r, db, 8 * (size_t)rank) < 8 * (size_t)rank)
            die("%s: record '%s' at byte %llu: truncated header", r->label, name, (unsigned long long)at);
        uint64_t nelem;
        for (int i = 0; i < rank; i++) rec->dims[i] = (int64_t)le64(db + 8 * i);
        if (!shape_elements(rank, rec->dims, &nelem))
            die("%s: record '%s' at byte %llu: element count overflows", r->label, name,
                (unsigned long long)at);
        uint64_t nbytes;
        if (__builtin_mul_overflow(nelem, (uint64_t)dtype_size(dtype), &nbytes) ||
            nbytes > MAX_RECORD_BYTES)
            die("%s: record '%s' at byte %llu: %llu elements exceed the %llu-byte cap", r->label,
                name, (unsigned long long)at, (unsigned long long)nelem,
                (unsigned long long)MAX_RECORD_BYTES);
        memcpy(rec->name, name, namelen + 1);
        rec->dtype = dtype; rec->rank = rank;
        rec->nelem = (int64_t)nelem; rec->nbytes = nbytes; rec->offset = at;
        /* grow with the data actually read, so a lying header cannot make us
         * allocate more than the input holds */
        size_t have = 0;
        while (have < nbytes) {
            size_t want = nbytes - have < PAYLOAD_CHUNK ? nbytes - have : PAYLOAD_CHUNK;
            if (rec->cap < have + want) {
                size_t c = rec->cap * 2 > have + want ? rec->cap * 2 : have + want;
                if (c > nbytes) c = nbytes;
                rec->data = xrealloc(rec->data, c);
                rec->cap = c;
            }
            size_t n = read_bytes(r, (char *)rec->data + have, want);
            have += n;
            if (n < want)
                die("%s: record '%s' at byte %llu: payload truncated after %zu of %llu bytes",
                    r->label, name, (unsigned long long)at, have, (unsigned long long)nbytes);
        }
        r->saw_end = 0;
        return 1;
    }
}

/* ---------------- writer ---------------- */

struct StreamWriter {
    FILE *f;
    char *label;
    int raw;
    ZSTD_CCtx *cc;
    unsigned char *out;
    size_t out_cap;
};

StreamWriter *sw_open(FILE *f, const char *label, int raw, int level) {
    widen_pipe(f);
    StreamWriter *w = xcalloc(1, sizeof *w);
    w->f = f; w->raw = raw;
    w->label = xstrdup(label);
    if (!raw) {
        w->cc = ZSTD_createCCtx();
        ZSTD_CCtx_setParameter(w->cc, ZSTD_c_compressionLevel, level);
        ZSTD_CCtx_setParameter(w->cc, ZSTD_c_checksumFlag, 1);
        w->out_cap = ZSTD_CStreamOutSize();
        w->out = xmalloc(w->out_cap);
    }
    return w;
}

static void emit(StreamWriter *w, const void *p, size_t n, ZSTD_EndDirective mode) {
    if (w->raw) {
        xfwrite(p, n, w->f, w->label);
        if (mode != ZSTD_e_continue) xfflush(w->f, w->label);
        return;
    }
    ZSTD_inBuffer ib = { p, n, 0 };
    for (;;) {
        ZSTD_outBuffer ob = { w->out, w->out_cap, 0 };
        size_t left = ZSTD_compressStream2(w->cc, &ob, &ib, mode);
        if (ZSTD_isError(left)) die("%s: zstd: %s", w->label, ZSTD_getErrorName(left));
        xfwrite(w->out, ob.pos, w->f, w->label);
        if (mode == ZSTD_e_continue ? ib.pos == ib.size : left == 0) break;
    }
    if (mode != ZSTD_e_continue) xfflush(w->f, w->label);
}

static void write_header(StreamWriter *w, const char *name, int dtype, int rank, const int64_t *dims) {
    size_t namelen = strlen(name);
    if (namelen == 0 || namelen > 255) die("record name '%s' must have 1 to 255 bytes", name);
    unsigned char h[8 + 255 + 8 * MAX_RANK];
    memcpy(h, MAGIC, 4);
    h[4] = STREAM_VERSION; h[5] = (unsigned char)dtype; h[6] = (unsigned char)rank;
    h[7] = (unsigned char)namelen;
    memcpy(h + 8, name, namelen);
    size_t n = 8 + namelen;
    for (int i = 0; i < rank; i++, n += 8)
        for (int b = 0; b < 8; b++) h[n + b] = (unsigned char)((uint64_t)dims[i] >> (8 * b));
    emit(w, h, n, ZSTD_e_continue);
}

void sw_write(StreamWriter *w, const char *name, int dtype, int rank, const int64_t *dims,
              const void *data) {
    size_t nbytes = dtype_size(dtype);
    for (int i = 0; i < rank; i++) nbytes *= (size_t)dims[i];
    write_header(w, name, dtype, rank, dims);
    emit(w, data, nbytes, ZSTD_e_continue);
    /* flush per record: a downstream stage sees whole records at once */
    emit(w, NULL, 0, ZSTD_e_flush);
}

void sw_write_record(StreamWriter *w, const Record *r) {
    sw_write(w, r->name, r->dtype, r->rank, r->dims, r->data);
}

void sw_close(StreamWriter *w) {
    write_header(w, "end", DT_END, 0, NULL);
    emit(w, NULL, 0, w->raw ? ZSTD_e_flush : ZSTD_e_end);
    if (w->cc) { ZSTD_freeCCtx(w->cc); free(w->out); }
    free(w->label); free(w);
}

/* ---------------- tool output ---------------- */

void output_open(Output *o, const char *path, int raw, int level) {
    o->af = NULL;
    if (!path || !strcmp(path, "-")) {
        o->w = sw_open(stdout, "stdout", raw, level);
        return;
    }
    o->af = atomic_open(path);
    o->w = sw_open(o->af->f, path, raw, level);
}

void output_close(Output *o) {
    sw_close(o->w);
    if (o->af) atomic_commit(o->af);
    else xfflush(stdout, "stdout");
    o->w = NULL; o->af = NULL;
}

int parse_level(const char *s) {
    return (int)parse_ll("--level", s, ZSTD_minCLevel(), ZSTD_maxCLevel());
}

void sw_write_strings(StreamWriter *w, const char *name, char *const *strings, int n) {
    size_t longest = 1;
    for (int k = 0; k < n; k++) if (strlen(strings[k]) + 1 > longest) longest = strlen(strings[k]) + 1;
    char *buf = xcalloc((size_t)n, longest);
    for (int k = 0; k < n; k++) memcpy(buf + k * longest, strings[k], strlen(strings[k]));
    sw_write(w, name, DT_U8, 2, (int64_t[]){ n, (int64_t)longest }, buf);
    free(buf);
}

void names_free(char **names) {
    for (int k = 0; names && names[k]; k++) free(names[k]);
    free(names);
}

char **record_names(const Record *r, int *K) {
    if (r->dtype != DT_U8 || r->rank != 2 || r->dims[0] < 1 || r->dims[0] > 100000 || r->dims[1] < 1)
        die("record 'names' at byte %llu: expected u8 [K, L] class names, K from 1 to 100000",
            (unsigned long long)r->offset);
    size_t n = (size_t)r->dims[0], L = (size_t)r->dims[1];
    const char *p = r->data;
    char **names = xcalloc(n + 1, sizeof *names);
    for (size_t k = 0; k < n; k++) {
        if (memchr(p + k * L, 0, L) == NULL)
            die("record 'names' at byte %llu: name %zu has no NUL within its %zu bytes",
                (unsigned long long)r->offset, k, L);
        names[k] = xstrdup(p + k * L);
    }
    *K = (int)n;
    return names;
}
