/* Finite-difference gradient checks of every layer kind: each backward is
 * compared with central differences of L = sum(r * forward(...)) for a fixed
 * random r, in float with steps of 1e-2 (1e-3 through ReLU kinks) on O(1) inputs. */
#include "check.h"
#include "conv.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

#define EPS 1e-2f
/* batch norm + ReLU: a smaller step, so few values cross the ReLU kink */
#define EPS_BN 1e-3f
static float eps = EPS;
#define TOL 2e-2        /* relative to the largest analytic gradient */
#define PROBES 24       /* elements perturbed per input */

static Rng rng;
static float *randn(size_t n) { return uniform_floats(&rng, n); }

/* A layer under test: forward computes out from the current inputs. */
typedef struct Case Case;
struct Case {
    void (*forward)(Case *c);
    float *out, *r;           /* output and its random weights in L */
    size_t nout;
    void *ctx;
};

static double loss_of(Case *c) {
    c->forward(c);
    double s = 0;
    for (size_t i = 0; i < c->nout; i++) s += (double)c->r[i] * c->out[i];
    return s;
}

/* Compares analytic grad of `x` (n elements) with central differences. */
static void fd_check(Case *c, float *x, const float *grad, size_t n, const char *what) {
    double gmax = 1e-6, worst = 0;
    for (size_t i = 0; i < n; i++) if (fabs(grad[i]) > gmax) gmax = fabs(grad[i]);
    for (int k = 0; k < PROBES; k++) {
        size_t i = rng_below(&rng, n);
        float keep = x[i];
        x[i] = keep + eps; double lp = loss_of(c);
        x[i] = keep - eps; double lm = loss_of(c);
        x[i] = keep;
        double fd = (lp - lm) / (2 * eps), d = fabs(fd - grad[i]) / gmax;
        if (d > worst) worst = d;
    }
    loss_of(c);
    CHECK(worst < TOL, "%s: finite differences differ by %.3g of the largest gradient", what, worst);
    printf("%-40s worst %.2e\n", what, worst);
}

/* ---- convolution ---- */
typedef struct { ConvShape cs; int N, H, W; float *in, *w, *scratch; } ConvCtx;
static int pooled;      /* check avgpool 3x3 s1 p1 then the convolution (conv_pooled_*) */
static void conv_fwd(Case *c) {
    ConvCtx *k = c->ctx;
    (pooled ? conv_pooled_forward : conv_forward)(c->out, k->in, k->w, &k->cs, k->N, k->H, k->W, k->scratch);
}

/* The convolution (after the pool, if pooled) by its definition, in double:
 * the reference for forward values, which finite differences cannot check. */
static double direct_conv_diff(const float *out, const ConvCtx *k) {
    const ConvShape *cs = &k->cs;
    int N = k->N, H = k->H, W = k->W;
    int Ho = conv_out(H, cs->kh, cs->sh, cs->ph), Wo = conv_out(W, cs->kw, cs->sw, cs->pw);
    double *x = malloc((size_t)cs->cin * N * H * W * sizeof *x), worst = 0, scale = 1e-30;
    for (int64_t p = 0; p < (int64_t)cs->cin * N; p++)   /* the input, pooled or not */
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) {
                double v = 0;
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        int yy = y + dy, xs = xx + dx;
                        if (pooled ? yy >= 0 && yy < H && xs >= 0 && xs < W : !dy && !dx)
                            v += k->in[(p * H + yy) * W + xs];
                    }
                x[(p * H + y) * W + xx] = pooled ? v / 9 : v;
            }
    for (int co = 0; co < cs->cout; co++)
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double sum = 0;
                    for (int ci = 0; ci < cs->cin; ci++)
                        for (int ki = 0; ki < cs->kh; ki++)
                            for (int kj = 0; kj < cs->kw; kj++) {
                                int iy = oy * cs->sh - cs->ph + ki, ix = ox * cs->sw - cs->pw + kj;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                sum += x[(((int64_t)ci * N + n) * H + iy) * W + ix] *
                                       k->w[(((int64_t)co * cs->cin + ci) * cs->kh + ki) * cs->kw + kj];
                            }
                    float got = out[(((int64_t)co * N + n) * Ho + oy) * Wo + ox];
                    worst = fmax(worst, fabs(got - sum));
                    scale = fmax(scale, fabs(sum));
                }
    free(x);
    return worst / scale;
}

static void check_conv(const char *name, ConvShape cs, int N, int H, int W) {
    ConvCtx k = { cs, N, H, W, NULL, NULL, NULL };
    int Ho = conv_out(H, cs.kh, cs.sh, cs.ph), Wo = conv_out(W, cs.kw, cs.sw, cs.pw);
    size_t nin = (size_t)cs.cin * N * H * W, nw = (size_t)cs.cout * cs.cin * cs.kh * cs.kw;
    size_t nout = (size_t)cs.cout * N * Ho * Wo;
    k.in = randn(nin); k.w = randn(nw);
    k.scratch = zeros(2 * (pooled ? conv_pooled_scratch_floats : conv_scratch_floats)(&cs, N, H, W) + 1);
    Case c = { conv_fwd, zeros(nout), randn(nout), nout, &k };
    float *din = zeros(nin), *dw = zeros(nw);
    loss_of(&c);
    double d = direct_conv_diff(c.out, &k);
    CHECK(d < 1e-5, "conv %s: output differs from the direct sum by %.3g of the largest", name, d);
    (pooled ? conv_pooled_backward : conv_backward)(din, dw, c.r, k.in, k.w, &cs, N, H, W, k.scratch);
    char what[96];
    snprintf(what, sizeof what, "conv %s d(input)", name);
    fd_check(&c, k.in, din, nin, what);
    snprintf(what, sizeof what, "conv %s d(weight)", name);
    fd_check(&c, k.w, dw, nw, what);
    free(k.in); free(k.w); free(k.scratch); free(c.out); free(c.r); free(din); free(dw);
}

/* ---- 1x1 convolutions of one input as one GEMM ---- */
/* Largest |a - b| relative to the largest |b|. */
static double rel_max_diff(const float *a, const float *b, size_t n) {
    double d = 0, scale = 1e-30;
    for (size_t i = 0; i < n; i++) { d = fmax(d, fabs(a[i] - b[i])); scale = fmax(scale, fabs(b[i])); }
    return d / scale;
}

/* Equal, to rounding, to each convolution alone: outputs, d(weight), and the
 * summed d(input); over enough columns to take two chunks. */
static void check_conv1x1_group(void) {
    enum { G = 3, CIN = 5 };
    const int couts[G] = { 4, 2, 3 }, N = 2, H = 300, W = 400;
    const int64_t L = (int64_t)N * H * W;
    int rows = 0;
    for (int g = 0; g < G; g++) rows += couts[g];
    float *in = randn(CIN * L), *weight = randn((size_t)rows * CIN), *dw = zeros((size_t)rows * CIN);
    float *dw_ref = zeros((size_t)rows * CIN), *din = zeros(CIN * L), *din_ref = zeros(CIN * L);
    float *out[G], *ref[G], *dout[G];
    for (int g = 0; g < G; g++) { out[g] = zeros(couts[g] * L); ref[g] = zeros(couts[g] * L); dout[g] = randn(couts[g] * L); }
    CHECK(conv1x1_group_scratch_floats(rows, L) < (size_t)rows * L, "the group test takes one chunk only");
    float *scratch = zeros(conv1x1_group_scratch_floats(rows, L));
    conv1x1_group_forward(out, couts, G, in, weight, CIN, L, scratch);
    conv1x1_group_backward(din, dw, dout, couts, G, in, weight, CIN, L, scratch);
    double worst = 0;
    int row = 0;
    for (int g = 0; g < G; g++) {
        ConvShape cs = { CIN, couts[g], 1, 1, 1, 1, 0, 0 };
        conv_forward(ref[g], in, weight + (size_t)row * CIN, &cs, N, H, W, NULL);
        conv_backward(din_ref, dw_ref + (size_t)row * CIN, dout[g], in, weight + (size_t)row * CIN, &cs,
                      N, H, W, NULL);
        worst = fmax(worst, rel_max_diff(out[g], ref[g], couts[g] * L));
        row += couts[g];
    }
    worst = fmax(worst, rel_max_diff(dw, dw_ref, (size_t)rows * CIN));
    worst = fmax(worst, rel_max_diff(din, din_ref, CIN * L));
    CHECK(worst < 1e-5, "grouped 1x1 convolutions differ from separate ones by %.3g", worst);
    printf("%-40s worst %.2e\n", "1x1 group = separate 1x1 convolutions", worst);
    for (int g = 0; g < G; g++) { free(out[g]); free(ref[g]); free(dout[g]); }
    free(in); free(weight); free(dw); free(dw_ref); free(din); free(din_ref); free(scratch);
}

/* ---- batch norm + ReLU (training) ---- */
typedef struct { int C, groups; int64_t M; float *y, *work, *gamma, *beta, *mean, *istd, *rm, *rv; } BnCtx;
static void bn_fwd(Case *c) {
    BnCtx *k = c->ctx;
    memcpy(k->work, k->y, k->C * k->M * sizeof(float));
    bn_forward_train(k->work, NULL, k->mean, k->istd, k->rm, k->rv, k->C, k->M, k->groups, 0.1f, 1e-5f);
    bn_relu_apply(c->out, k->work, k->gamma, k->beta, k->C, k->M);
}

static void check_bn(int groups) {
    BnCtx k = { 3, groups, 40, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL };
    size_t n = k.C * k.M;
    k.y = randn(n); k.work = zeros(n); k.gamma = randn(k.C); k.beta = randn(k.C);
    for (int c = 0; c < k.C; c++) k.gamma[c] += 1.5f;       /* keep away from 0 */
    k.mean = zeros(k.C * groups); k.istd = zeros(k.C * groups); k.rm = zeros(k.C); k.rv = zeros(k.C);
    Case c = { bn_fwd, zeros(n), randn(n), n, &k };
    float *dg = zeros(k.C), *db = zeros(k.C);
    loss_of(&c);
    bn_relu_backward(k.work, NULL, dg, db, c.r, k.gamma, k.beta, k.istd, k.C, k.M, groups);
    float *dy = malloc(n * sizeof *dy);
    memcpy(dy, k.work, n * sizeof *dy);
    char what[64];
    snprintf(what, sizeof what, "bn+relu groups=%d d(input)", groups);
    fd_check(&c, k.y, dy, n, what);
    snprintf(what, sizeof what, "bn+relu groups=%d d(gamma)", groups);
    fd_check(&c, k.gamma, dg, k.C, what);
    snprintf(what, sizeof what, "bn+relu groups=%d d(beta)", groups);
    fd_check(&c, k.beta, db, k.C, what);
    free(k.y); free(k.work); free(k.gamma); free(k.beta); free(k.mean); free(k.istd);
    free(k.rm); free(k.rv); free(c.out); free(c.r); free(dg); free(db); free(dy);
}

/* ---- pooling ---- */
typedef struct { int planes, H, W, k, s, p, max; float *in; } PoolCtx;
static void pool_fwd(Case *c) {
    PoolCtx *k = c->ctx;
    (k->max ? maxpool_forward : avgpool_forward)(c->out, k->in, k->planes, k->H, k->W, k->k, k->s, k->p);
}

static void check_pool(int max, int ks, int s, int p) {
    PoolCtx k = { 6, 9, 9, ks, s, p, max, NULL };
    int Ho = conv_out(9, ks, s, p);
    size_t nin = 6 * 81, nout = 6 * Ho * Ho;
    k.in = randn(nin);
    Case c = { pool_fwd, zeros(nout), randn(nout), nout, &k };
    float *din = zeros(nin);
    loss_of(&c);
    if (max) maxpool_backward(din, c.r, k.in, 6, 9, 9, ks, s, p);
    else avgpool_backward(din, c.r, 6, 9, 9, ks, s, p);
    char what[64];
    snprintf(what, sizeof what, "%s %dx%d s%d p%d", max ? "maxpool" : "avgpool", ks, ks, s, p);
    fd_check(&c, k.in, din, nin, what);
    free(k.in); free(c.out); free(c.r); free(din);
}

/* NaN wins a window and takes its gradient (the last NaN, as PyTorch's CPU
 * kernel); elsewhere the first of equal maxima does. */
static void check_maxpool_nan(void) {
    float in[9] = { 1, NAN, 3, 3, NAN, 2, 0, 3, 1 }, out[4], dout[4] = { 1, 1, 1, 1 }, din[9] = { 0 };
    maxpool_forward(out, in, 1, 3, 3, 2, 1, 0);       /* 2x2 windows, stride 1 */
    maxpool_backward(din, dout, in, 1, 3, 3, 2, 1, 0);
    CHECK(isnan(out[0]) && isnan(out[1]) && isnan(out[2]) && isnan(out[3]), "maxpool: NaN wins its windows");
    /* every window holds the NaN at 4 (the last NaN for windows 0 and 1) */
    CHECK(din[4] == 4 && din[1] == 0, "maxpool: NaN windows' gradient to the last NaN (%g, %g)", din[4], din[1]);
    float ties[4] = { 2, 2, 1, 2 }, t_out[1], t_din[4] = { 0 }, one = 1;
    maxpool_forward(t_out, ties, 1, 2, 2, 2, 2, 0);
    maxpool_backward(t_din, &one, ties, 1, 2, 2, 2, 2, 0);
    CHECK(t_out[0] == 2 && t_din[0] == 1 && t_din[1] == 0 && t_din[3] == 0,
          "maxpool: the first of equal maxima takes the gradient");
    printf("%-40s exact\n", "maxpool NaN and ties");
}

/* ---- head: global average pool, linear, cross-entropy ---- */
typedef struct { int C, N, HW, K; float *in, *feat, *w, *b; int64_t *y; } HeadCtx;
static void head_fwd(Case *c) {
    HeadCtx *k = c->ctx;
    gap_forward(k->feat, k->in, k->C, k->N, k->HW);
    linear_forward(c->out, k->feat, k->w, k->b, k->C, k->N, k->K);
}

static void check_head(void) {
    HeadCtx k = { 5, 4, 9, 7, NULL, NULL, NULL, NULL, NULL };
    k.in = randn(5 * 4 * 9); k.feat = zeros(20); k.w = randn(35); k.b = randn(7);
    int64_t y[4] = { 0, 3, 6, 3 };
    k.y = y;
    size_t nout = 4 * 7;
    Case c = { head_fwd, zeros(nout), randn(nout), nout, &k };
    float *din = zeros(180), *dfeat = zeros(20), *dw = zeros(35), *db = zeros(7);
    loss_of(&c);
    linear_backward(dfeat, dw, db, c.r, k.feat, k.w, 5, 4, 7);
    gap_backward(din, dfeat, 5, 4, 9);
    fd_check(&c, k.in, din, 180, "global avgpool + linear d(input)");
    fd_check(&c, k.w, dw, 35, "linear d(weight)");
    fd_check(&c, k.b, db, 7, "linear d(bias)");
    /* cross-entropy, plain and label-smoothed: the loss itself is the scalar */
    float *dl = zeros(nout);
    head_fwd(&c);
    for (int s = 0; s < 2; s++) {
        float smoothing = s ? 0.2f : 0.0f;
        softmax_xent(dl, c.out, y, NULL, 4, 7, smoothing, 1.0f);
        double worst = 0, gmax = 1e-6;
        for (size_t i = 0; i < nout; i++) if (fabs(dl[i]) > gmax) gmax = fabs(dl[i]);
        for (size_t i = 0; i < nout; i++) {
            float keep = c.out[i];
            c.out[i] = keep + EPS; double lp = softmax_xent(NULL, c.out, y, NULL, 4, 7, smoothing, 1.0f);
            c.out[i] = keep - EPS; double lm = softmax_xent(NULL, c.out, y, NULL, 4, 7, smoothing, 1.0f);
            c.out[i] = keep;
            double d = fabs((lp - lm) / (2 * EPS) - dl[i]) / gmax;
            if (d > worst) worst = d;
        }
        CHECK(worst < TOL, "softmax cross-entropy (smoothing %g) differs by %.3g", smoothing, worst);
        printf("%-40s worst %.2e\n", s ? "smoothed (0.2) cross-entropy d(logits)" : "softmax cross-entropy d(logits)",
               worst);
    }
    free(k.in); free(k.feat); free(k.w); free(k.b); free(c.out); free(c.r);
    free(din); free(dfeat); free(dw); free(db); free(dl);
}

/* ---- dropout (fixed mask) and SGD (exact) ---- */
static void check_dropout_sgd(void) {
    float x[1000], dx[1000];
    uint8_t mask[1000];
    uint64_t keys[10] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    for (int i = 0; i < 1000; i++) x[i] = dx[i] = 1.0f;
    dropout_forward(x, mask, 100, 10, 0.5f, 3, keys);
    dropout_backward(dx, mask, 1000, 0.5f);
    int kept = 0, exact = 1;
    for (int i = 0; i < 1000; i++) {
        kept += mask[i];
        exact &= x[i] == (mask[i] ? 2.0f : 0.0f) && dx[i] == x[i];
    }
    CHECK(exact, "dropout scales kept elements by 2 and zeroes the rest, gradient alike");
    CHECK(kept > 430 && kept < 570, "dropout kept %d of 1000 at p=0.5", kept);
    /* an image's mask depends on its key alone: image 7 alone gets the same */
    float y[100];
    uint8_t m7[100];
    for (int i = 0; i < 100; i++) y[i] = 1.0f;
    dropout_forward(y, m7, 100, 1, 0.5f, 3, keys + 7);
    int same = 1;
    for (int c = 0; c < 100; c++) same &= m7[c] == mask[c * 10 + 7];
    CHECK(same, "dropout mask of an image does not depend on its batch");
    float w[2] = { 1.0f, -2.0f }, g[2] = { 0.5f, 0.25f }, buf[2] = { 0.1f, 0.0f };
    sgd_update(w, g, buf, 2, 0.1f, 0.9f, 0.01f, 0);
    /* buf = 0.9*0.1 + (0.5 + 0.01*1) = 0.6; w = 1 - 0.06 */
    CHECK(fabsf(buf[0] - 0.6f) < 1e-6f && fabsf(w[0] - 0.94f) < 1e-6f, "sgd step 0: %g %g", buf[0], w[0]);
    /* buf = 0 + (0.25 - 0.02) = 0.23; w = -2 - 0.023 */
    CHECK(fabsf(buf[1] - 0.23f) < 1e-6f && fabsf(w[1] + 2.023f) < 1e-6f, "sgd step 1: %g %g", buf[1], w[1]);
}

int main(int argc, char **argv) {
    tool_init("test_gradcheck", argc, argv);       /* the kernels the tools would run */
    rng_seed(&rng, 42, 0);
    set_threads(1);
    check_conv("1x1", (ConvShape){ 4, 5, 1, 1, 1, 1, 0, 0 }, 3, 6, 6);
    check_conv("3x3 p1", (ConvShape){ 3, 4, 3, 3, 1, 1, 1, 1 }, 2, 7, 7);
    check_conv("3x3 s2 p0", (ConvShape){ 3, 4, 3, 3, 2, 2, 0, 0 }, 2, 9, 9);
    check_conv("5x5 p2", (ConvShape){ 2, 3, 5, 5, 1, 1, 2, 2 }, 2, 6, 6);
    check_conv("1x7 p(0,3)", (ConvShape){ 3, 3, 1, 7, 1, 1, 0, 3 }, 2, 8, 8);
    check_conv("7x1 p(3,0)", (ConvShape){ 3, 3, 7, 1, 1, 1, 3, 0 }, 2, 8, 8);
    check_conv("1x3 p(0,1)", (ConvShape){ 3, 4, 1, 3, 1, 1, 0, 1 }, 2, 6, 6);
    check_conv("3x1 p(1,0)", (ConvShape){ 3, 4, 3, 1, 1, 1, 1, 0 }, 2, 6, 6);
    check_conv("4x4 valid", (ConvShape){ 3, 4, 4, 4, 1, 1, 0, 0 }, 3, 4, 4);
    eps = EPS_BN;
    check_bn(1);
    check_bn(2);
    eps = EPS;
    check_pool(1, 3, 2, 0);
    check_pool(0, 3, 1, 1);
    check_pool(0, 3, 2, 0);
    check_pool(0, 5, 3, 0);
    check_head();
    check_dropout_sgd();
    /* after the checks above, which keep their random draws */
    /* images large enough to go image by image (shifted views, no im2col),
     * on one thread and on three */
    check_conv("3x3 p1 shifted", (ConvShape){ 3, 4, 3, 3, 1, 1, 1, 1 }, 2, 20, 20);
    check_conv("3x3 p0 shifted", (ConvShape){ 3, 4, 3, 3, 1, 1, 0, 0 }, 2, 22, 22);
    set_threads(3);
    check_conv("5x5 p2 shifted, 3 threads", (ConvShape){ 2, 3, 5, 5, 1, 1, 2, 2 }, 5, 30, 30);
    check_conv("7x1 p(3,0) shifted, 3 threads", (ConvShape){ 3, 3, 7, 1, 1, 1, 3, 0 }, 4, 20, 16);
    check_conv("1x7 p(0,3) by batch, 3 threads", (ConvShape){ 3, 4, 1, 7, 1, 1, 0, 3 }, 4, 12, 14);
    pooled = 1;
    check_conv("avgpool 3x3 then 3x3 p1, 3 threads", (ConvShape){ 3, 4, 3, 3, 1, 1, 1, 1 }, 3, 20, 20);
    /* images too small to go image by image (smaller crops): the pooled input whole, by batch */
    check_conv("avgpool 3x3 then 3x3 p1 by batch, 3 threads", (ConvShape){ 3, 4, 3, 3, 1, 1, 1, 1 }, 3, 8, 7);
    pooled = 0;
    set_threads(1);
    check_conv1x1_group();
    eps = EPS_BN;           /* fewer steps across a change of a window's maximum */
    check_pool(1, 3, 1, 1);
    check_pool(1, 3, 2, 1);
    eps = EPS;
    check_maxpool_nan();
    /* Winograd F(m, r) along a line (winograd.c), stride 1 over 16 channels
     * or more: 7 and 3 taps both ways, odd lengths (a tile partly outside),
     * padding short of full, several threads, two chunks of images (1x7 over
     * 12 x 700); 3x3 and 5x5 as lines shifted across, also with a pool first */
    check_conv("3x3 p1 Winograd", (ConvShape){ 64, 5, 3, 3, 1, 1, 1, 1 }, 2, 6, 6);
    check_conv("3x3 p1 Winograd, 16 channels", (ConvShape){ 16, 5, 3, 3, 1, 1, 1, 1 }, 2, 7, 6);
    check_conv("5x5 p2 Winograd, 16 channels", (ConvShape){ 16, 3, 5, 5, 1, 1, 2, 2 }, 2, 6, 7);
    set_threads(3);
    check_conv("3x3 p0 Winograd, odd, 3 threads", (ConvShape){ 64, 3, 3, 3, 1, 1, 0, 0 }, 2, 7, 9);
    check_conv("3x3 p2 Winograd, 3 threads", (ConvShape){ 70, 4, 3, 3, 1, 1, 2, 2 }, 3, 5, 6);
    pooled = 1;
    check_conv("avgpool then 3x3 p1 Winograd, 3 threads", (ConvShape){ 64, 4, 3, 3, 1, 1, 1, 1 }, 2, 6, 7);
    check_conv("avgpool then 1x3 p(0,1) Winograd, 3 threads", (ConvShape){ 48, 4, 1, 3, 1, 1, 0, 1 }, 2, 5, 7);
    pooled = 0;
    set_threads(2);
    check_conv("3x3 p1 Winograd, two chunks", (ConvShape){ 48, 1, 3, 3, 1, 1, 1, 1 }, 3, 60, 355);
    check_conv("1x7 p(0,3) Winograd", (ConvShape){ 48, 4, 1, 7, 1, 1, 0, 3 }, 2, 5, 9);
    set_threads(3);
    check_conv("7x1 p(3,0) Winograd, 3 threads", (ConvShape){ 50, 3, 7, 1, 1, 1, 3, 0 }, 3, 8, 5);
    check_conv("7x1 p(1,0) Winograd, 3 threads", (ConvShape){ 48, 3, 7, 1, 1, 1, 1, 0 }, 2, 12, 4);
    check_conv("1x3 p(0,1) Winograd, 3 threads", (ConvShape){ 48, 5, 1, 3, 1, 1, 0, 1 }, 2, 6, 6);
    check_conv("3x1 p(1,0) Winograd, 3 threads", (ConvShape){ 48, 5, 3, 1, 1, 1, 1, 0 }, 2, 7, 6);
    set_threads(9);             /* more threads than the 8 points: GEMMs in slices of rows */
    check_conv("1x3 p(0,1) Winograd, 9 threads", (ConvShape){ 48, 5, 1, 3, 1, 1, 0, 1 }, 2, 6, 6);
    set_threads(2);
    check_conv("1x7 p(0,3) Winograd, two chunks", (ConvShape){ 48, 4, 1, 7, 1, 1, 0, 3 }, 4, 12, 700);
    check_conv("5x5 p2 Winograd", (ConvShape){ 48, 5, 5, 5, 1, 1, 2, 2 }, 2, 9, 7);
    check_conv("5x5 p(1,3) Winograd, two chunks", (ConvShape){ 48, 1, 5, 5, 1, 1, 1, 3 }, 2, 60, 360);
    set_threads(3);
    check_conv("5x5 p(4,0) Winograd, 3 threads", (ConvShape){ 50, 4, 5, 5, 1, 1, 4, 0 }, 2, 6, 8);
    set_threads(9);             /* the 8 points' GEMMs in slices of rows, each over 5 shifts */
    check_conv("5x5 p2 Winograd, 9 threads", (ConvShape){ 48, 5, 5, 5, 1, 1, 2, 2 }, 2, 8, 8);
    set_threads(2);
    /* strided, padded: im2col's and col2im's runs inside the image (last: the random
       data of the cases above stay as they were) */
    check_conv("3x3 s2 p1", (ConvShape){ 3, 4, 3, 3, 2, 2, 1, 1 }, 2, 8, 8);
    check_conv("1x5 s(1,3) p(0,2)", (ConvShape){ 2, 3, 1, 5, 1, 3, 0, 2 }, 2, 5, 11);
    /* stride 1, as wide out as in, by batch: im2col copies each tap's plane as one
       shifted run, then zeroes the columns read across a row's end */
    check_conv("3x3 p1 by batch", (ConvShape){ 3, 4, 3, 3, 1, 1, 1, 1 }, 2, 7, 9);
    check_conv("5x5 p2 by batch", (ConvShape){ 2, 3, 5, 5, 1, 1, 2, 2 }, 2, 6, 8);
    check_conv("3x5 p(0,2) by batch", (ConvShape){ 2, 3, 3, 5, 1, 1, 0, 2 }, 3, 5, 4);
    return check_summary("gradcheck");
}
