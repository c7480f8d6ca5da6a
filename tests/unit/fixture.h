/* fixture.h - the PyTorch fixture (tests/pytorch/make_fixture.py) for the unit
 * tests that hold the whole network against it. */
#ifndef INCV3_FIXTURE_H
#define INCV3_FIXTURE_H
#include "model.h"
#include "stream.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static Record recs[4096];
static int nrecs;

static inline void fixture_read(const char *path) {
    StreamReader *in = sr_open_path(path);
    while (nrecs < 4096 && sr_next(in, &recs[nrecs])) nrecs++;
    sr_close(in);
}

static inline const Record *fx(const char *name) {
    for (int i = 0; i < nrecs; i++) if (!strcmp(recs[i].name, name)) return &recs[i];
    fprintf(stderr, "fixture lacks %s\n", name);
    exit(1);
}

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Parameters and running statistics from the fixture's state `prefix` (init, step1, ...). */
static inline void load_state(Model *m, const char *prefix) {
    char n[160];
    for (int i = 0; i < m->nparams; i++) {
        snprintf(n, sizeof n, "%s.%s", prefix, m->pinfo[i].name);
        const Record *r = fx(n);
        if ((size_t)r->nelem != m->pinfo[i].size) { fprintf(stderr, "size of %s\n", n); exit(1); }
        memcpy(m->params + m->pinfo[i].offset, r->data, r->nbytes);
    }
    for (int i = 0; i < m->nbns; i++) {
        BatchNorm *bn = &m->bns[i];
        snprintf(n, sizeof n, "%s.%s.running_mean", prefix, bn->prefix);
        memcpy(m->buffers + bn->offset, fx(n)->data, bn->channels * sizeof(float));
        snprintf(n, sizeof n, "%s.%s.running_var", prefix, bn->prefix);
        memcpy(m->buffers + bn->offset + bn->channels, fx(n)->data, bn->channels * sizeof(float));
    }
}
#endif
