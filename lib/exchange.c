/* exchange.c - see exchange.h. */
#include "exchange.h"
#include "profile.h"
#include "stream.h"
#include "util.h"
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct Exchange {
    Model *m;
    FILE *out;
    StreamWriter *w;
    StreamReader *r;
    Record rec;
    size_t bucket_floats, buckets, next_out;
    pthread_t receiver;
};

/* Bucket k is grads[lo, hi): bucket 0 ends at the end of the parameters. */
static void bucket_range(const Exchange *e, size_t k, size_t *lo, size_t *hi) {
    size_t n = e->m->nparam_floats;
    *hi = n - k * e->bucket_floats;
    *lo = *hi > e->bucket_floats ? *hi - e->bucket_floats : 0;
}

static void send_bucket(Exchange *e, size_t k) {
    size_t lo, hi;
    bucket_range(e, k, &lo, &hi);
    int64_t d = (int64_t)(hi - lo);
    sw_write(e->w, "grads", DT_F32, 1, &d, e->m->grads + lo);
}

/* The model's hook: grads[from, end) are final; send every bucket inside. */
static void grads_ready(void *ctx, size_t from) {
    Exchange *e = ctx;
    size_t lo, hi;
    prof_push(PROF_EXCHANGE);
    while (e->next_out < e->buckets) {
        bucket_range(e, e->next_out, &lo, &hi);
        if (lo < from) break;
        send_bucket(e, e->next_out++);
    }
    prof_pop();
}

static void take(Exchange *e, Record *rec, const char *name, size_t n) {
    if (!sr_next(e->r, rec)) die("exchange ended early: a worker or the merger stopped");
    int64_t d = (int64_t)n;
    if (strcmp(rec->name, name)) die("exchange: expected '%s', got '%s'", name, rec->name);
    record_expect(rec, DT_F32, 1, &d);
}

/* The receiving thread: each bucket's mean into its place, as the merger sends it. */
static void *receive_buckets(void *arg) {
    Exchange *e = arg;
    for (size_t k = 0; k < e->buckets; k++) {
        size_t lo, hi;
        bucket_range(e, k, &lo, &hi);
        take(e, &e->rec, "grads", hi - lo);
        memcpy(e->m->grads + lo, e->rec.data, (hi - lo) * sizeof(float));
    }
    return NULL;
}

Exchange *exchange_open(const char *spec, Model *m, double bucket_mb) {
    const char *comma = strchr(spec, ',');
    if (!comma) usage_die("--exchange: '%s' is not OUT,IN", spec);
    Exchange *e = xcalloc(1, sizeof *e);
    e->m = m;
    char *out = xstrdup(spec);
    out[comma - spec] = 0;
    if (!(e->out = fopen(out, "wb"))) die("cannot open exchange output %s: %s", out, strerror(errno));
    e->w = sw_open(e->out, out, 1, 0);
    e->r = sr_open_path(comma + 1);
    free(out);
    size_t n = m->nparam_floats, floats = (size_t)(bucket_mb * (1 << 20) / sizeof(float));
    e->bucket_floats = floats == 0 || floats > n ? n : floats;
    e->buckets = (n + e->bucket_floats - 1) / e->bucket_floats;
    return e;
}

void exchange_step_begin(Exchange *e) {
    e->next_out = 0;
    e->m->grads_ready = grads_ready;
    e->m->grads_ready_ctx = e;
    if (pthread_create(&e->receiver, NULL, receive_buckets, e)) die("cannot start the exchange's receiving thread");
}

void exchange_step_end(Exchange *e, float *metrics, size_t n) {
    prof_push(PROF_EXCHANGE);
    if (e->next_out != e->buckets) die("internal: %zu of %zu gradient buckets sent", e->next_out, e->buckets);
    pthread_join(e->receiver, NULL);
    e->m->grads_ready = NULL;
    int64_t d = (int64_t)e->m->nbuffer_floats;
    sw_write(e->w, "bn_stats", DT_F32, 1, &d, e->m->buffers);
    d = (int64_t)n;
    sw_write(e->w, "metrics", DT_F32, 1, &d, metrics);
    take(e, &e->rec, "bn_stats", e->m->nbuffer_floats);
    memcpy(e->m->buffers, e->rec.data, e->m->nbuffer_floats * sizeof(float));
    take(e, &e->rec, "metrics", n);
    memcpy(metrics, e->rec.data, n * sizeof(float));
    prof_pop();
}

void exchange_close(Exchange *e) {
    sw_close(e->w);
    fclose(e->out);
    if (sr_next(e->r, &e->rec)) die("exchange: unexpected record '%s' after the last step", e->rec.name);
    sr_close(e->r);
    record_free(&e->rec);
    free(e);
}
