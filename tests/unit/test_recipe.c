/* test_recipe - the training recipe's options outside the network, against PyTorch
 * (tests/fixtures/recipe.tz, from tests/pytorch/make_recipe_fixture.py): label-smoothed
 * cross-entropy, Nesterov SGD; and the moving average of the weights and the linear
 * schedule against their definitions. */
#include "check.h"
#include "fixture.h"
#include "layers.h"
#include "model.h"
#include "schedule.h"

#define TOL 1e-6

/* cross_entropy(logits, target, label_smoothing=s) against the fixture's records
 * loss.PREFIXs and dlogits.PREFIXs; soft: probability targets (MixUp, CutMix) or NULL */
static void check_xent(const char *prefix, const char *what, const float *soft) {
    const Record *z = fx("logits");
    int N = (int)z->dims[0], K = (int)z->dims[1];
    const int64_t *y = fx("labels")->data;
    float *d = malloc((size_t)N * K * sizeof *d);
    const char *tags[] = { "0", "0.1", "0.2" };
    const float s[] = { 0.0f, 0.1f, 0.2f };
    for (int i = 0; i < 3; i++) {
        char name[40];
        double loss = softmax_xent(d, z->data, y, soft, N, K, s[i], 1.0f);
        snprintf(name, sizeof name, "loss.%s%s", prefix, tags[i]);
        float want = *(const float *)fx(name)->data;
        CHECK(fabs(loss - want) < TOL * fabs(want), "%s, smoothing %s: loss %.8f, PyTorch %.8f", what, tags[i],
              loss, want);
        snprintf(name, sizeof name, "dlogits.%s%s", prefix, tags[i]);
        double diff = rel_diff(d, fx(name)->data, (long)N * K);
        CHECK(diff < TOL, "%s, smoothing %s: d(logits) differs from PyTorch's by %.3g", what, tags[i], diff);
        printf("%s, smoothing %-4s loss %.7f (PyTorch %.7f), d(logits) within %.2e\n", what, tags[i], loss,
               want, diff);
    }
    free(d);
}

static void check_label_smoothing(void) {
    check_xent("", "labels", NULL);
    check_xent("soft.", "soft targets", fx("soft")->data);
}

static void check_nesterov(void) {
    const Record *w0 = fx("sgd.w0");
    const float *h = fx("sgd.hyper")->data;
    size_t n = (size_t)w0->nelem;
    float *w = malloc(n * sizeof *w), *buf = calloc(n, sizeof *buf);
    memcpy(w, w0->data, n * sizeof *w);
    double worst = 0;
    for (int k = 0; k < 3; k++) {
        char name[32];
        snprintf(name, sizeof name, "sgd.g%d", k);
        sgd_update(w, fx(name)->data, buf, n, h[0], h[1], h[2], 1);
        snprintf(name, sizeof name, "sgd.w%d", k + 1);
        double d = rel_diff(w, fx(name)->data, (long)n);
        if (d > worst) worst = d;
    }
    CHECK(worst < TOL, "Nesterov SGD differs from torch.optim.SGD(nesterov=True) by %.3g", worst);
    printf("Nesterov SGD, three steps: within %.2e of PyTorch\n", worst);
    free(w); free(buf);
}

/* ema = d*ema + (1-d)*w with d = min(decay, (1+t)/(10+t)), over params and BN buffers */
static void check_ema(void) {
    ModelConfig cfg = { 10, 0.0625, 0, 0.5f };
    Model *m = model_create(&cfg);
    model_init(m, 3);
    size_t np = m->nparam_floats, nb = m->nbuffer_floats;
    double *want = malloc((np + nb) * sizeof *want);
    model_ema_update(m, 0.9, 1);                     /* starts from the weights */
    for (size_t i = 0; i < np + nb; i++) want[i] = i < np ? m->params[i] : m->buffers[i - np];
    int exact_start = !memcmp(m->ema, m->params, np * sizeof *m->ema);
    double worst = 0;
    for (uint64_t t = 2; t <= 40; t++) {
        for (size_t i = 0; i < np; i++) m->params[i] += 0.01f * (float)((i * 7 + t) % 13) - 0.06f;
        for (size_t i = 0; i < nb; i++) m->buffers[i] *= 1.01f;
        model_ema_update(m, 0.9, t);
        double d = fmin(0.9, (1.0 + t) / (10.0 + t));
        for (size_t i = 0; i < np + nb; i++) {
            double w = i < np ? m->params[i] : m->buffers[i - np];
            want[i] = d * want[i] + (1 - d) * w;
            double e = fabs(m->ema[i] - want[i]) / fmax(1.0, fabs(want[i]));
            if (e > worst) worst = e;
        }
    }
    CHECK(exact_start, "the average starts as a copy of the weights");
    CHECK(worst < 1e-5, "the moving average differs from its definition by %.3g", worst);
    model_use_ema(m);
    CHECK(!memcmp(m->params, m->ema, np * sizeof *m->params) &&
          !memcmp(m->buffers, m->ema + np, nb * sizeof *m->buffers), "model_use_ema puts the average in place");
    printf("moving average, 40 steps: within %.2e of its definition\n", worst);
    free(want);
    model_free(m);
}

static void check_linear_schedule(void) {
    Schedule s = { SCHED_LINEAR, 0.4, 0.2, 1.0, 0, { 0 }, 5, 10 };
    /* warm-up over the first epoch's 10 steps, then down to 0 over the remaining 40 */
    CHECK(fabs(schedule_lr(&s, 0) - 0.04) < 1e-12, "linear: first warm-up step %g", schedule_lr(&s, 0));
    CHECK(fabs(schedule_lr(&s, 9) - 0.4) < 1e-12, "linear: peak %g", schedule_lr(&s, 9));
    CHECK(fabs(schedule_lr(&s, 10) - 0.4) < 1e-12, "linear: after the warm-up %g", schedule_lr(&s, 10));
    CHECK(fabs(schedule_lr(&s, 30) - 0.2) < 1e-12, "linear: halfway %g", schedule_lr(&s, 30));
    CHECK(fabs(schedule_lr(&s, 49) - 0.01) < 1e-12, "linear: last step %g", schedule_lr(&s, 49));
    CHECK(schedule_lr(&s, 60) == 0, "linear: past the end %g", schedule_lr(&s, 60));
    CHECK(schedule_kind("linear") == SCHED_LINEAR, "\"linear\" names the schedule");
}

int main(int argc, char **argv) {
    tool_init("test_recipe", argc, argv);
    fixture_read(argc > 1 ? argv[1] : "tests/fixtures/recipe.tz");
    check_label_smoothing();
    check_nesterov();
    check_ema();
    check_linear_schedule();
    return check_summary("recipe");
}
