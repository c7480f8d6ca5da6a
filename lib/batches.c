/* batches.c - see batches.h. */
#include "batches.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void batch_options_init(BatchOptions *o) {
    *o = (BatchOptions){ .batch = 128, .limit = -1, .shard_n = 1, .level = DEFAULT_ZSTD_LEVEL };
}

int batch_option(BatchOptions *o, int c, const char *arg) {
    switch (c) {
    case 'b': o->batch = parse_ll("--batch", arg, 1, 1 << 20); return 1;
    case OPT_SHUFFLE: o->seed = (unsigned long long)parse_ll("--shuffle", arg, 0, INT64_MAX); o->shuffle = 1; return 1;
    case OPT_EPOCH: o->epoch = parse_ll("--epoch", arg, 0, 1 << 30); return 1;
    case OPT_SHARD: parse_shard("--shard", arg, &o->shard_i, &o->shard_n); return 1;
    case OPT_LIMIT: o->limit = parse_ll("--limit", arg, 1, INT64_MAX); return 1;
    case OPT_DROP: o->drop_last = 1; return 1;
    case OPT_COUNT: o->count_only = 1; return 1;
    case 'o': o->out_path = arg; return 1;
    case OPT_LEVEL: o->level = parse_level(arg); return 1;
    case OPT_RAW: o->raw = 1; return 1;
    }
    return 0;
}

size_t batch_records(const BatchOptions *o, const BatchSource *s) {
    return o->limit >= 0 && (size_t)o->limit < s->count ? (size_t)o->limit : s->count;
}

void write_batches(Output *out, const BatchOptions *o, const BatchSource *s, char *const *names) {
    size_t count = batch_records(o, s), pixels = 3 * (size_t)s->size * s->size;
    size_t *order = xmalloc((count ? count : 1) * sizeof *order);
    for (size_t i = 0; i < count; i++) order[i] = i;
    if (o->shuffle) {      /* Fisher-Yates: the same permutation on every worker */
        Rng rng;
        rng_seed(&rng, o->seed, (uint64_t)o->epoch);
        for (size_t i = count - 1; i > 0 && count > 1; i--) {
            size_t j = rng_below(&rng, i + 1), t = order[i];
            order[i] = order[j]; order[j] = t;
        }
    }
    size_t batch = (size_t)o->batch, global = batch * o->shard_n;
    size_t batches = o->drop_last ? count / global : (count + global - 1) / global;
    char meta[512];
    int mlen = snprintf(meta, sizeof meta,
                        "format=%s\nrecords=%zu\nbatches=%zu\nbatch_size=%lld\nepoch=%lld\nshard=%d/%d\n"
                        "classes=%d\n%s", s->format, count, batches, o->batch, o->epoch, o->shard_i,
                        o->shard_n, s->classes, s->meta_extra);
    int64_t mdim = mlen;
    sw_write(out->w, "meta", DT_U8, 1, &mdim, meta);
    if (names) sw_write_names(out->w, names, s->classes);

    unsigned char *x = xmalloc(batch * pixels);
    int64_t *y = xmalloc(batch * sizeof *y), *idx = xmalloc(batch * sizeof *idx);
    char **paths = s->paths ? xmalloc(batch * sizeof *paths) : NULL;
    for (size_t k = 0; k < batches; k++) {
        size_t lo = k * global + (size_t)o->shard_i * batch, hi = lo + batch;
        if (hi > count) hi = count;
        if (lo >= hi) continue;          /* this worker's slice of a short last batch is empty */
        size_t b = hi - lo;
        for (size_t i = 0; i < b; i++) {
            size_t r = order[lo + i];
            memcpy(x + i * pixels, s->pixels[r], pixels);
            y[i] = s->labels[r];
            idx[i] = (int64_t)r;
            if (paths) paths[i] = s->paths[r];
        }
        int64_t xd[4] = { (int64_t)b, 3, s->size, s->size }, yd[1] = { (int64_t)b };
        if (paths) sw_write_strings(out->w, "path", paths, (int)b);
        sw_write(out->w, "idx", DT_I64, 1, yd, idx);
        sw_write(out->w, "x", DT_U8, 4, xd, x);
        sw_write(out->w, "y", DT_I64, 1, yd, y);
    }
    free(order); free(x); free(y); free(idx); free(paths);
}
