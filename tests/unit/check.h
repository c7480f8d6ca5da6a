/* check.h - a tiny test harness: CHECK counts, the summary line is what CI reads. */
#ifndef INCV3_CHECK_H
#define INCV3_CHECK_H
#include "util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int checks_passed, checks_failed;

#define CHECK(cond, ...) do { \
    if (cond) checks_passed++; \
    else { checks_failed++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
           fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* Largest |a-b| relative to the largest |b| (floored at 1e-6). */
static inline double rel_diff(const float *a, const float *b, long n) {
    double md = 0, mb = 1e-6;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d;            /* NaN propagates */
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

/* ||a-b|| / ||b|| (floored at 1e-12). */
static inline double rel_l2(const float *a, const float *b, long n) {
    double dd = 0, bb = 0;
    for (long i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        dd += d * d;
        bb += (double)b[i] * b[i];
    }
    return sqrt(dd) / (bb > 1e-24 ? sqrt(bb) : 1e-12);
}

/* n floats uniform in [-1, 1): the inputs of the layer tests */
static inline float *uniform_floats(Rng *r, size_t n) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = 2.0f * rng_uniform(r) - 1.0f;
    return p;
}
static inline float *zeros(size_t n) { return calloc(n, sizeof(float)); }

static inline int check_summary(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, checks_passed, checks_failed);
    return checks_failed ? 1 : 0;
}
#endif
