/* checkpoint.c - see checkpoint.h. */
#include "checkpoint.h"
#include "stream.h"
#include "util.h"
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The largest safetensors file read: a width-4 model is 1.4 GB. */
#define MAX_SAFETENSORS_BYTES ((size_t)2 << 30)

/* One tensor of the PyTorch state_dict: a parameter or a BN buffer. */
typedef struct {
    char name[112];
    int dtype, rank;
    int64_t dims[4];
    void *data;
    int classifier;     /* linear.* or AuxLogits.fc.*: replaced when fine-tuning */
} Entry;

static int is_classifier(const char *name) {
    return !strncmp(name, "linear.", 7) || !strncmp(name, "AuxLogits.fc.", 13);
}

/* The state_dict of m; *n receives the count. */
static Entry *state_entries(const Model *m, int *n) {
    Entry *e = xcalloc(m->nparams + 3 * m->nbns, sizeof *e);
    int k = 0;
    for (int i = 0; i < m->nparams; i++, k++) {
        const Param *p = &m->pinfo[i];
        snprintf(e[k].name, sizeof e[k].name, "%s", p->name);
        e[k].dtype = DT_F32; e[k].rank = p->rank;
        memcpy(e[k].dims, p->dims, sizeof p->dims);
        e[k].data = m->params + p->offset;
        e[k].classifier = is_classifier(p->name);
    }
    for (int i = 0; i < m->nbns; i++) {
        BatchNorm *bn = &m->bns[i];
        static const char *const suffix[3] = { "running_mean", "running_var", "num_batches_tracked" };
        for (int j = 0; j < 3; j++, k++) {
            snprintf(e[k].name, sizeof e[k].name, "%s.%s", bn->prefix, suffix[j]);
            e[k].dtype = j < 2 ? DT_F32 : DT_I64;
            e[k].rank = j < 2 ? 1 : 0;
            e[k].dims[0] = bn->channels;
            e[k].data = j < 2 ? (void *)(m->buffers + bn->offset + j * bn->channels)
                              : (void *)&bn->batches_tracked;
        }
    }
    *n = k;
    return e;
}

/* Where the moving average keeps an f32 entry's values (params, then buffers). */
static float *ema_of(const Model *m, const Entry *e) {
    const float *p = e->data;
    if (p >= m->params && p < m->params + m->nparam_floats) return m->ema + (p - m->params);
    return m->ema + m->nparam_floats + (p - m->buffers);
}

static size_t entry_elems(const Entry *e) {
    size_t n = 1;
    for (int i = 0; i < e->rank; i++) n *= e->dims[i];
    return n;
}

static void shape_str(int rank, const int64_t *dims, char *buf, size_t n) {
    size_t u = snprintf(buf, n, "[");
    for (int i = 0; i < rank && u < n; i++) u += snprintf(buf + u, n - u, i ? ",%lld" : "%lld", (long long)dims[i]);
    if (u < n) snprintf(buf + u, n - u, "]");
}

/* ---------------- checkpoints ---------------- */

void checkpoint_save(const char *path, const Model *m, const TrainState *st) {
    AtomicFile *af = atomic_open(path);
    StreamWriter *w = sw_open(af->f, path, 0, DEFAULT_ZSTD_LEVEL);
    char cfg[256];
    int len = snprintf(cfg, sizeof cfg, "classes=%d\nwidth=%.17g\naux=%d\nstep=%llu\nseed=%llu\n",
                       m->cfg.classes, m->cfg.width, m->cfg.aux, (unsigned long long)st->step,
                       (unsigned long long)st->seed);
    int64_t d = len;
    sw_write(w, "incv3.checkpoint", DT_U8, 1, &d, cfg);
    int n;
    Entry *e = state_entries(m, &n);
    for (int i = 0; i < n; i++) sw_write(w, e[i].name, e[i].dtype, e[i].rank, e[i].dims, e[i].data);
    if (m->class_names) sw_write_names(w, m->class_names, m->cfg.classes);
    for (int i = 0; i < m->nparams; i++) {
        char name[128];
        snprintf(name, sizeof name, "momentum.%s", m->pinfo[i].name);
        sw_write(w, name, DT_F32, m->pinfo[i].rank, m->pinfo[i].dims, m->momentum + m->pinfo[i].offset);
    }
    for (int i = 0; i < n && m->ema; i++) {
        if (e[i].dtype != DT_F32) continue;
        char name[128];
        snprintf(name, sizeof name, "ema.%s", e[i].name);
        sw_write(w, name, DT_F32, e[i].rank, e[i].dims, ema_of(m, &e[i]));
    }
    sw_close(w);
    atomic_commit(af);
    free(e);
}

/* Value of key in "k=v\n" text, or NULL. */
static const char *config_value(const char *text, const char *key, char *buf, size_t n) {
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            const char *v = p + kl + 1, *end = strchr(v, '\n');
            size_t l = end ? (size_t)(end - v) : strlen(v);
            if (l >= n) l = n - 1;
            memcpy(buf, v, l); buf[l] = 0;
            return buf;
        }
    }
    return NULL;
}

static double config_number(const char *path, const char *text, const char *key, double lo, double hi) {
    char buf[64], *end;
    if (!config_value(text, key, buf, sizeof buf)) die("%s: checkpoint lacks '%s'", path, key);
    double v = strtod(buf, &end);
    if (end == buf || *end || !(v >= lo && v <= hi)) die("%s: checkpoint has invalid %s '%s'", path, key, buf);
    return v;
}

/* Copies a record into an entry after checking dtype and shape. */
static void fill_entry(const char *path, const Entry *e, const Record *r, const char *what) {
    char want[96], got[96];
    shape_str(e->rank, e->dims, want, sizeof want);
    shape_str(r->rank, r->dims, got, sizeof got);
    int same = r->dtype == e->dtype && r->rank == e->rank;
    for (int i = 0; same && i < e->rank; i++) same = r->dims[i] == e->dims[i];
    if (!same)
        die("%s: %s '%s' is %s %s, the model needs %s %s", path, what, r->name, dtype_name(r->dtype),
            got, dtype_name(e->dtype), want);
    memcpy(e->data, r->data, r->nbytes);
}

Model *checkpoint_load(const char *path, TrainState *st) {
    StreamReader *in = sr_open_path(path);
    Model *m = checkpoint_read(in, path, st);
    sr_close(in);
    return m;
}

/* What a load holds while it reads: all of it is freed however the load ends. */
typedef struct {
    Record r;
    Model *m;
    Entry *e;
    char *seen;
} Loading;

static void read_checkpoint(StreamReader *in, const char *path, TrainState *st, Loading *l);

static void loading_free(Loading *l, int keep_model) {
    record_free(&l->r);
    free(l->e);
    free(l->seen);
    if (!keep_model) model_free(l->m);
    free(l);
}

Model *checkpoint_read(StreamReader *in, const char *path, TrainState *st) {
    /* On the heap, so that it is intact after a longjmp. */
    Loading *l = xcalloc(1, sizeof *l);
    /* Where die() jumps instead of exiting (the fuzzer), nothing leaks. */
    jmp_buf *outer = die_jump, here;
    if (outer) {
        if (setjmp(here)) {
            die_jump = outer;
            loading_free(l, 0);
            longjmp(*outer, EXIT_DATA);
        }
        die_jump = &here;
    }
    read_checkpoint(in, path, st, l);
    die_jump = outer;
    Model *m = l->m;
    loading_free(l, 1);
    return m;
}

static void read_checkpoint(StreamReader *in, const char *path, TrainState *st, Loading *l) {
    Record *r = &l->r;
    if (!sr_next(in, r) || strcmp(r->name, "incv3.checkpoint") || r->dtype != DT_U8 || r->rank != 1 || r->nbytes > 4096)
        die("%s: not an incv3 checkpoint (no incv3.checkpoint record first)", path);
    char text[4097];
    if (r->nbytes) memcpy(text, r->data, r->nbytes);
    text[r->nbytes] = 0;
    ModelConfig cfg = { (int)config_number(path, text, "classes", 1, MAX_CLASSES),
                        config_number(path, text, "width", 1e-3, 4),
                        (int)config_number(path, text, "aux", 0, 1), 0.5f };
    st->step = (uint64_t)config_number(path, text, "step", 0, 1e18);
    st->seed = (uint64_t)config_number(path, text, "seed", 0, 1.8e19);
    Model *m = l->m = model_create(&cfg);
    int n;
    Entry *e = l->e = state_entries(m, &n);
    /* seen: the state's n entries, the momentum of each parameter, the average of each entry */
    char *seen = l->seen = xcalloc(2 * n + m->nparams, 1), *seen_ema = seen + n + m->nparams;
    int any_ema = 0;
    while (sr_next(in, r)) {
        int found = 0;
        if (!strcmp(r->name, "names")) {
            if (m->class_names) die("%s: record 'names' appears twice", path);
            int K;
            char **names = record_names(r, &K);
            if (K != cfg.classes) die("%s: %d class names for a model of %d classes", path, K, cfg.classes);
            model_set_class_names(m, names);
            names_free(names);
            found = 1;
        } else if (!strncmp(r->name, "ema.", 4)) {
            if (!m->ema) m->ema = xcalloc(m->nparam_floats + m->nbuffer_floats, sizeof *m->ema);
            for (int i = 0; i < n && !found; i++)
                if (e[i].dtype == DT_F32 && !strcmp(e[i].name, r->name + 4)) {
                    Entry ee = e[i];
                    ee.data = ema_of(m, &e[i]);
                    if (seen_ema[i]++) die("%s: tensor '%s' appears twice", path, r->name);
                    fill_entry(path, &ee, r, "moving average");
                    found = any_ema = 1;
                }
        } else if (!strncmp(r->name, "momentum.", 9)) {
            int i = model_find_param(m, r->name + 9);
            if (i >= 0) {
                Entry me = { "", DT_F32, m->pinfo[i].rank, { 0 }, m->momentum + m->pinfo[i].offset, 0 };
                memcpy(me.dims, m->pinfo[i].dims, sizeof me.dims);
                if (seen[n + i]++) die("%s: tensor '%s' appears twice", path, r->name);
                fill_entry(path, &me, r, "momentum");
                found = 1;
            }
        } else {
            for (int i = 0; i < n && !found; i++)
                if (!strcmp(e[i].name, r->name)) {
                    if (seen[i]++) die("%s: tensor '%s' appears twice", path, r->name);
                    fill_entry(path, &e[i], r, "tensor");
                    found = 1;
                }
        }
        if (!found) die("%s: unexpected tensor '%s' for a model of %d classes, width %g%s", path,
                        r->name, cfg.classes, cfg.width, cfg.aux ? ", aux" : "");
    }
    for (int i = 0; i < n + m->nparams; i++)
        if (!seen[i])
            die("%s: checkpoint lacks %s'%s'", path, i < n ? "" : "momentum of ",
                i < n ? e[i].name : m->pinfo[i - n].name);
    for (int i = 0; i < n && any_ema; i++)
        if (e[i].dtype == DT_F32 && !seen_ema[i]) die("%s: checkpoint lacks the moving average of '%s'", path, e[i].name);
}

/* ---------------- safetensors ---------------- */

void safetensors_export(const char *path, const Model *m) {
    int n;
    Entry *e = state_entries(m, &n);
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "__metadata__");
    char width[64];
    snprintf(width, sizeof width, "%.17g", m->cfg.width);
    cJSON_AddStringToObject(meta, "format", "pt");
    cJSON_AddStringToObject(meta, "incv3.width", width);
    if (m->class_names) {     /* metadata values are strings: a JSON array, as text */
        cJSON *names = cJSON_CreateArray();
        for (int k = 0; k < m->cfg.classes; k++) cJSON_AddItemToArray(names, cJSON_CreateString(m->class_names[k]));
        char *text = cJSON_PrintUnformatted(names);
        cJSON_AddStringToObject(meta, "incv3.class_names", text);
        cJSON_free(text);
        cJSON_Delete(names);
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *t = cJSON_AddObjectToObject(root, e[i].name);
        cJSON_AddStringToObject(t, "dtype", e[i].dtype == DT_F32 ? "F32" : "I64");
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < e[i].rank; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e[i].dims[d]));
        size_t bytes = entry_elems(&e[i]) * dtype_size(e[i].dtype);
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    size_t jl = strlen(json), padded = (jl + 7) / 8 * 8;
    AtomicFile *af = atomic_open(path);
    unsigned char len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (unsigned char)((uint64_t)padded >> (8 * b));
    xfwrite(len8, 8, af->f, path);
    xfwrite(json, jl, af->f, path);
    for (size_t i = jl; i < padded; i++) xfwrite(" ", 1, af->f, path);
    for (int i = 0; i < n; i++) xfwrite(e[i].data, entry_elems(&e[i]) * dtype_size(e[i].dtype), af->f, path);
    atomic_commit(af);
    cJSON_free(json);
    cJSON_Delete(root);
    free(e);
}

/* A validated safetensors tensor. */
typedef struct {
    const char *name;
    int dtype, rank;
    int64_t dims[MAX_RANK];
    const unsigned char *data;
} StTensor;

static int64_t json_index(const char *label, const char *name, const cJSON *v, const char *what) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
        v->valuedouble != floor(v->valuedouble))
        die("%s: tensor '%s' has an invalid %s", label, name, what);
    return (int64_t)v->valuedouble;
}

static void st_tensor(const char *label, const cJSON *t, const unsigned char *data, size_t data_len,
                      StTensor *out) {
    const char *name = t->string;
    if (!cJSON_IsObject(t)) die("%s: entry '%s' is not an object", label, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        die("%s: tensor '%s' lacks dtype, shape or data_offsets", label, name);
    out->name = name;
    if (!strcmp(dt->valuestring, "F32")) out->dtype = DT_F32;
    else if (!strcmp(dt->valuestring, "I64")) out->dtype = DT_I64;
    else die("%s: tensor '%s' has unsupported dtype '%s' (F32, I64)", label, name, dt->valuestring);
    out->rank = cJSON_GetArraySize(shape);
    if (out->rank > MAX_RANK) die("%s: tensor '%s' has rank %d", label, name, out->rank);
    uint64_t elems = 1, bytes;
    for (int i = 0; i < out->rank; i++) {
        out->dims[i] = json_index(label, name, cJSON_GetArrayItem(shape, i), "shape");
        if (__builtin_mul_overflow(elems, (uint64_t)out->dims[i], &elems))
            die("%s: tensor '%s' has a shape that overflows", label, name);
    }
    if (__builtin_mul_overflow(elems, (uint64_t)dtype_size(out->dtype), &bytes))
        die("%s: tensor '%s' has a shape that overflows", label, name);
    int64_t b = json_index(label, name, cJSON_GetArrayItem(offs, 0), "data offset");
    int64_t e = json_index(label, name, cJSON_GetArrayItem(offs, 1), "data offset");
    if (b > e || (uint64_t)e > data_len)
        die("%s: tensor '%s' has data_offsets [%lld, %lld] outside the %zu data bytes", label, name,
            (long long)b, (long long)e, data_len);
    if ((uint64_t)(e - b) != bytes)
        die("%s: tensor '%s' spans %lld bytes, its shape needs %llu", label, name, (long long)(e - b),
            (unsigned long long)bytes);
    out->data = data + b;
}

/* The metadata's incv3.class_names: a JSON array of the classes' names, as text. */
static void set_class_names(Model *m, const cJSON *text, const char *label) {
    cJSON *names = cJSON_IsString(text) ? cJSON_Parse(text->valuestring) : NULL;
    int K = m->cfg.classes;
    if (!cJSON_IsArray(names) || cJSON_GetArraySize(names) != K) {
        cJSON_Delete(names);
        die("%s: incv3.class_names is not a JSON array of %d names", label, K);
    }
    char **list = xcalloc((size_t)K + 1, sizeof *list);
    for (int k = 0; k < K; k++) {
        const cJSON *n = cJSON_GetArrayItem(names, k);
        if (!cJSON_IsString(n) || !n->valuestring[0]) {
            cJSON_Delete(names);
            die("%s: incv3.class_names: name %d is not a non-empty string", label, k);
        }
        list[k] = n->valuestring;
    }
    model_set_class_names(m, list);
    free(list);
    cJSON_Delete(names);
}

Model *safetensors_parse(const unsigned char *buf, size_t len, const char *label, double width,
                         int reinit_classes, uint64_t seed) {
    if (len < 8) die("%s: too short for safetensors", label);
    uint64_t hl = 0;
    for (int b = 7; b >= 0; b--) hl = hl << 8 | buf[b];
    if (hl > len - 8 || hl > (100u << 20)) die("%s: header length %llu exceeds the file", label, (unsigned long long)hl);
    cJSON *root = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hl);
    if (!cJSON_IsObject(root)) { cJSON_Delete(root); die("%s: header is not a JSON object", label); }
    const unsigned char *data = buf + 8 + hl;
    size_t data_len = len - 8 - hl;
    int count = 0;
    const cJSON *class_names = NULL;
    for (cJSON *t = root->child; t; t = t->next) count++;
    StTensor *ts = xcalloc(count, sizeof *ts);
    int nt = 0;
    for (cJSON *t = root->child; t; t = t->next) {
        if (!strcmp(t->string, "__metadata__")) {
            if (!cJSON_IsObject(t)) die("%s: __metadata__ is not an object", label);
            const cJSON *w = cJSON_GetObjectItemCaseSensitive(t, "incv3.width");
            if (cJSON_IsString(w) && width <= 0) {
                char *end;
                width = strtod(w->valuestring, &end);
                if (*end || !(width > 0 && width <= 4)) die("%s: invalid incv3.width '%s'", label, w->valuestring);
            }
            class_names = cJSON_GetObjectItemCaseSensitive(t, "incv3.class_names");
            continue;
        }
        st_tensor(label, t, data, data_len, &ts[nt++]);
    }
    const StTensor *lin = NULL;
    int aux = 0;
    for (int i = 0; i < nt; i++) {
        if (!strcmp(ts[i].name, "linear.weight")) lin = &ts[i];
        if (!strncmp(ts[i].name, "AuxLogits.", 10)) aux = 1;
    }
    if (!lin || lin->rank != 2 || lin->dims[0] < 1 || lin->dims[0] > MAX_CLASSES)
        die("%s: no usable linear.weight (is this an InceptionV3 state_dict?)", label);
    ModelConfig cfg = { reinit_classes > 0 ? reinit_classes : (int)lin->dims[0], width > 0 ? width : 1.0, aux, 0.5f };
    /* memory follows the data: a header that claims a model far larger than its
     * tensors fails before the model is allocated (a small one is built, so that the
     * error can name the tensor that does not fit) */
    size_t need = model_state_floats(&cfg) * sizeof(float);
    if (reinit_classes <= 0 && data_len < need && need > ((size_t)64 << 20))
        die("%s: holds %zu bytes of tensors; a model of %d classes at width %g needs %zu", label, data_len,
            cfg.classes, cfg.width, need);
    Model *m = model_create(&cfg);
    model_init(m, seed);        /* the classifiers keep these when re-initialised */
    int n;
    Entry *e = state_entries(m, &n);
    char *seen = xcalloc(n, 1);
    for (int i = 0; i < nt; i++) {
        const StTensor *t = &ts[i];
        int k = 0;
        while (k < n && strcmp(e[k].name, t->name)) k++;
        if (reinit_classes > 0 && is_classifier(t->name)) continue;
        if (k == n) die("%s: unexpected tensor '%s' (width %g%s)", label, t->name, cfg.width, aux ? ", aux" : "");
        if (seen[k]++) die("%s: tensor '%s' appears twice", label, t->name);
        Record r = { 0 };
        snprintf(r.name, sizeof r.name, "%s", t->name);
        r.dtype = t->dtype; r.rank = t->rank;
        memcpy(r.dims, t->dims, sizeof r.dims);
        r.nbytes = entry_elems(&e[k]) * dtype_size(t->dtype);
        r.data = (void *)t->data;
        int same = r.rank == e[k].rank && r.dtype == e[k].dtype;
        for (int d = 0; same && d < r.rank; d++) same = r.dims[d] == e[k].dims[d];
        if (!same) {
            char want[96], got[96];
            shape_str(e[k].rank, e[k].dims, want, sizeof want);
            shape_str(r.rank, r.dims, got, sizeof got);
            die("%s: tensor '%s' is %s %s, the model (width %g) needs %s %s", label, t->name,
                dtype_name(r.dtype), got, cfg.width, dtype_name(e[k].dtype), want);
        }
        memcpy(e[k].data, t->data, r.nbytes);
    }
    for (int k = 0; k < n; k++)
        if (!seen[k] && !(reinit_classes > 0 && e[k].classifier))
            die("%s: missing tensor '%s'", label, e[k].name);
    if (class_names && reinit_classes <= 0) set_class_names(m, class_names, label);
    free(seen); free(e); free(ts);
    cJSON_Delete(root);
    return m;
}

Model *safetensors_import(const char *path, double width, int reinit_classes, uint64_t seed) {
    size_t len;
    unsigned char *buf = read_whole_file(path, &len, MAX_SAFETENSORS_BYTES);
    Model *m = safetensors_parse(buf, len, path, width, reinit_classes, seed);
    free(buf);
    return m;
}
