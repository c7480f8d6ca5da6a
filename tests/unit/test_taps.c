/* test_taps - module outputs and their gradients taken out of a step, against
 * PyTorch's forward hooks and full backward hooks on the conformance fixture's model
 * (tests/fixtures/taps.tz from tests/pytorch/make_taps_fixture.py), with the
 * conformance test's bounds; and taps change nothing of the step they watch. */
#include "check.h"
#include "fixture.h"
#include "model.h"

#define TOL_FORWARD 1e-4        /* as test_conformance: logits, running statistics */
#define TOL_GRAD_ANY 0.25       /* as test_conformance: any gradient, relative L2 */
#define TOL_GRAD_MEDIAN 0.02

static const Record *find(const char *name) {
    for (int i = 0; i < nrecs; i++) if (!strcmp(recs[i].name, name)) return &recs[i];
    return NULL;
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    tool_init("test_taps", argc, argv);
    fixture_read("tests/fixtures/conformance.tz");
    fixture_read("tests/fixtures/taps.tz");
    const int64_t *config = fx("config")->data;
    int K = (int)config[0], N = (int)config[1];
    ModelConfig cfg = { K, *(const float *)fx("width")->data, 1, 0.0f };
    const float *x = fx("x")->data;
    const int64_t *y = fx("y")->data;
    uint64_t keys[64] = { 0 };

    /* the module names, one per line */
    const Record *nr = fx("names");
    char names[4096];
    snprintf(names, sizeof names, "%.*s", (int)nr->nelem, (const char *)nr->data);
    char *list[64];
    int nnames = 0;
    for (char *save, *t = strtok_r(names, "\n", &save); t && nnames < 64; t = strtok_r(NULL, "\n", &save))
        list[nnames++] = t;

    /* a step without taps, then the same step with every tap on: the same bytes */
    Model *plain = model_create(&cfg), *m = model_create(&cfg);
    load_state(plain, "init");
    load_state(m, "init");
    float *l0 = malloc(sizeof(float) * N * K), *l1 = malloc(sizeof(float) * N * K);
    double loss0 = model_train_step(plain, x, y, NULL, N, 1, 1, keys, l0);
    int taps[64];
    for (int i = 0; i < nnames; i++) {
        taps[i] = model_tap_find(m, list[i]);
        CHECK(taps[i] >= 0, "no tap %s", list[i]);
        if (taps[i] >= 0) model_tap_on(m, taps[i], 3);
    }
    double loss1 = model_train_step(m, x, y, NULL, N, 1, 1, keys, l1);
    CHECK(loss0 == loss1 && !memcmp(l0, l1, sizeof(float) * N * K) &&
          !memcmp(plain->grads, m->grads, m->nparam_floats * sizeof *m->grads),
          "taps changed the step (loss %.9g against %.9g)", loss1, loss0);

    double gerr[64];
    for (int i = 0; i < nnames; i++) {
        if (taps[i] < 0) continue;
        int d[3];
        model_tap_shape(m, taps[i], d);
        char n[160];
        snprintf(n, sizeof n, "tap.%s", list[i]);
        const Record *want = fx(n);
        long count = (long)N * d[0] * d[1] * d[2];
        CHECK(want->nelem == count, "%s: %ld values, PyTorch %lld", list[i], count, (long long)want->nelem);
        double dv = rel_diff(model_tap_values(m, taps[i], 0), want->data, count);
        CHECK(dv < TOL_FORWARD, "%s: values differ from PyTorch's forward hook by %.3g", list[i], dv);
        snprintf(n, sizeof n, "tapgrad.%s", list[i]);
        gerr[i] = rel_l2(model_tap_values(m, taps[i], 1), fx(n)->data, count);
        CHECK(gerr[i] < TOL_GRAD_ANY, "%s: gradient differs from PyTorch's backward hook by %.3g", list[i], gerr[i]);
        printf("tap %-26s [%d,%d,%d,%d] values within %.2e, gradient within %.2e (relative L2)\n",
               list[i], N, d[0], d[1], d[2], dv, gerr[i]);
    }
    qsort(gerr, nnames, sizeof *gerr, cmp_dbl);
    CHECK(gerr[nnames / 2] < TOL_GRAD_MEDIAN, "median gradient difference %.3g", gerr[nnames / 2]);

    /* inference from the initial state (running statistics): the modules it runs */
    Model *e = model_create(&cfg);
    load_state(e, "init");
    int evaluated = 0;
    for (int i = 0; i < nnames; i++) {
        char n[160];
        snprintf(n, sizeof n, "evaltap.%s", list[i]);
        if (!find(n)) continue;
        model_tap_on(e, model_tap_find(e, list[i]), 1);
    }
    model_eval(e, x, N, l1);
    for (int i = 0; i < nnames; i++) {
        char n[160];
        snprintf(n, sizeof n, "evaltap.%s", list[i]);
        const Record *want = find(n);
        if (!want) continue;
        int t = model_tap_find(e, list[i]);
        CHECK(model_tap_values(e, t, 1) == NULL, "%s: a gradient in inference", list[i]);
        double dv = rel_diff(model_tap_values(e, t, 0), want->data, (long)want->nelem);
        CHECK(dv < TOL_FORWARD, "%s in inference: values differ by %.3g", list[i], dv);
        evaluated++;
    }
    CHECK(evaluated >= 8, "only %d taps in inference", evaluated);
    printf("inference: %d taps within %.0e of PyTorch's forward hooks\n", evaluated, TOL_FORWARD);

    /* what is not a tap: the insides of a BasicConv2d, unknown names */
    CHECK(model_tap_find(m, "Mixed_5b.branch1x1.conv") < 0 && model_tap_find(m, "Mixed_9z") < 0,
          "a module that is not stored is a tap");
    CHECK(model_tap_find(m, "Mixed_5b.branch1x1.relu") >= 0 && model_tap_find(m, "Mixed_6e.branch_pool") >= 0,
          "ReLU and Sequential names are taps");
    model_free(plain); model_free(m); model_free(e);
    free(l0); free(l1);
    return check_summary("taps");
}
