/* layers.c - see layers.h for layout and conventions. */
#include "layers.h"
#include "gemm.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void zero_floats(float *p, size_t n) {
    const size_t block = (size_t)1 << 16;
    #pragma omp parallel for schedule(static)
    for (size_t at = 0; at < n; at += block) memset(p + at, 0, (n - at < block ? n - at : block) * sizeof *p);
}

/* ---- batch norm + ReLU ---- */

/* A unit's output from its stored xhat; NaN passes, as in PyTorch's ReLU. */
static inline float bn_relu(float xhat, float scale, float shift) {
    float v = scale * xhat + shift;
    return v < 0 ? 0 : v;
}

/* Eight floats widened to eight double lanes. The sums below keep one lane
 * per position mod 8: vectorised, yet the same order (and bits) at any
 * thread count. */
typedef float f8 __attribute__((vector_size(32)));
typedef int i8 __attribute__((vector_size(32)));
typedef double d8 __attribute__((vector_size(64)));

static inline f8 load_f8(const float *p) {
    f8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static double lanes_total(d8 v) {
    double total = 0;
    for (int j = 0; j < 8; j++) total += v[j];
    return total;
}

/* Sums of row[0..n) and of its squares. */
static void sum_and_squares(const float *row, int64_t n, double *sum, double *squares) {
    d8 s = { 0 }, q = { 0 }, s2 = { 0 }, q2 = { 0 };   /* two chains: the adds' latency */
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        d8 v = __builtin_convertvector(load_f8(row + i), d8), w = __builtin_convertvector(load_f8(row + i + 8), d8);
        s += v; s2 += w;
        q += v * v; q2 += w * w;
    }
    s += s2; q += q2;
    for (; i + 8 <= n; i += 8) {
        d8 v = __builtin_convertvector(load_f8(row + i), d8);
        s += v;
        q += v * v;
    }
    for (int j = 0; i < n; i++, j++) { double v = row[i]; s[j] += v; q[j] += v * v; }
    *sum = lanes_total(s);
    *squares = lanes_total(q);
}

/* xhat = (row - mean) * istd, in place, or only to row16 in bf16 (through a
 * buffer in L1: writing the fp32 row back as well would cost memory bandwidth) */
static void normalize_row(float *row, uint16_t *row16, int64_t n, float mean, float istd) {
    if (!row16) {
        for (int64_t i = 0; i < n; i++) row[i] = (row[i] - mean) * istd;
        return;
    }
    float chunk[256];
    for (int64_t at = 0; at < n; at += 256) {
        int64_t k = n - at < 256 ? n - at : 256;
        for (int64_t i = 0; i < k; i++) chunk[i] = (row[at + i] - mean) * istd;
        floats_to_bf16(row16 + at, chunk, k);
    }
}

void bn_forward_train(float *y, uint16_t *xhat16, float *mean, float *istd, float *run_mean,
                      float *run_var, int C, int64_t M, int groups, float momentum, float eps) {
    const int64_t Mg = M / groups;
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double mean_sum = 0, var_sum = 0;
        for (int g = 0; g < groups; g++) {
            float *row = y + (int64_t)c * M + g * Mg;
            double s, sq;
            sum_and_squares(row, Mg, &s, &sq);
            double mu = s / Mg, var = sq / Mg - mu * mu;   /* one pass: doubles keep it exact enough */
            if (var < 0) var = 0;
            float is = (float)(1.0 / sqrt(var + eps)), m = (float)mu;
            mean[c * groups + g] = m;
            istd[c * groups + g] = is;
            normalize_row(row, xhat16 ? xhat16 + (int64_t)c * M + g * Mg : NULL, Mg, m, is);
            mean_sum += mu;
            var_sum += Mg > 1 ? var * Mg / (Mg - 1) : var;
        }
        run_mean[c] = (1 - momentum) * run_mean[c] + momentum * (float)(mean_sum / groups);
        run_var[c] = (1 - momentum) * run_var[c] + momentum * (float)(var_sum / groups);
    }
}

void bn_forward_eval(float *y, uint16_t *xhat16, const float *run_mean, const float *run_var,
                     int C, int64_t M, float eps) {
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        float is = 1.0f / sqrtf(run_var[c] + eps), m = run_mean[c];
        float *row = y + (int64_t)c * M;
        normalize_row(row, xhat16 ? xhat16 + (int64_t)c * M : NULL, M, m, is);
    }
}

void bn_relu_apply(float *out, const float *xhat, const float *gamma, const float *beta, int C,
                   int64_t M) {
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *x = xhat + (int64_t)c * M;
        float *o = out + (int64_t)c * M, ga = gamma[c], be = beta[c];
        for (int64_t i = 0; i < M; i++) o[i] = bn_relu(x[i], ga, be);
    }
}

void bn_relu_apply_bf16(float *out, const uint16_t *xhat, const float *gamma, const float *beta,
                        int C, int64_t M) {
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const uint16_t *x = xhat + (int64_t)c * M;
        float *o = out + (int64_t)c * M, ga = gamma[c], be = beta[c];
        for (int64_t i = 0; i < M; i++) o[i] = bn_relu(bf16_to_float(x[i]), ga, be);
    }
}

/* Eight bf16 widened to floats (exact). */
typedef uint16_t h8 __attribute__((vector_size(16)));
typedef uint32_t u8 __attribute__((vector_size(32)));
static inline f8 load_bf16_f8(const uint16_t *p) {
    h8 h;
    memcpy(&h, p, sizeof h);
    return (f8)(__builtin_convertvector(h, u8) << 16);
}

/* xhat[i], from fp32 or, when xh16 is not NULL, from bf16 */
static inline float xhat_at(const float *xh, const uint16_t *xh16, int64_t i) {
    return xh16 ? bf16_to_float(xh16[i]) : xh[i];
}

/* Sums of dz and dz * xhat, where dz is d masked by the ReLU; lanes as in
 * sum_and_squares. */
static void relu_grad_sums(const float *xh, const uint16_t *xh16, const float *d, int64_t n,
                           float ga, float be, double *sum_dz, double *sum_dzx) {
    d8 s = { 0 }, q = { 0 }, s2 = { 0 }, q2 = { 0 };   /* two chains: the adds' latency */
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        f8 x = xh16 ? load_bf16_f8(xh16 + i) : load_f8(xh + i);
        f8 y = xh16 ? load_bf16_f8(xh16 + i + 8) : load_f8(xh + i + 8);
        /* bn_relu(x) > 0, NaN off */
        d8 dz = __builtin_convertvector((f8)((i8)load_f8(d + i) & (x * ga + be > 0)), d8);
        d8 dw = __builtin_convertvector((f8)((i8)load_f8(d + i + 8) & (y * ga + be > 0)), d8);
        s += dz; s2 += dw;
        q += dz * __builtin_convertvector(x, d8);
        q2 += dw * __builtin_convertvector(y, d8);
    }
    s += s2; q += q2;
    for (; i + 8 <= n; i += 8) {
        f8 x = xh16 ? load_bf16_f8(xh16 + i) : load_f8(xh + i);
        i8 on = x * ga + be > 0;                  /* bn_relu(x) > 0, NaN off */
        d8 dz = __builtin_convertvector((f8)((i8)load_f8(d + i) & on), d8);
        s += dz;
        q += dz * __builtin_convertvector(x, d8);
    }
    for (int j = 0; i < n; i++, j++) {
        float x = xhat_at(xh, xh16, i);
        double dz = bn_relu(x, ga, be) > 0 ? d[i] : 0.0f;
        s[j] += dz; q[j] += dz * x;
    }
    *sum_dz = lanes_total(s);
    *sum_dzx = lanes_total(q);
}

void bn_relu_backward(float *xhat, const uint16_t *xhat16, float *dgamma, float *dbeta,
                      const float *dout, const float *gamma, const float *beta, const float *istd,
                      int C, int64_t M, int groups) {
    const int64_t Mg = M / groups;
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        for (int g = 0; g < groups; g++) {
            int64_t base = (int64_t)c * M + g * Mg;
            float *xh = xhat + base, ga = gamma[c], be = beta[c];
            const uint16_t *xh16 = xhat16 ? xhat16 + base : NULL;
            const float *d = dout + base;
            double a, b;
            relu_grad_sums(xh, xh16, d, Mg, ga, be, &a, &b);
            dbeta[c] += (float)a;
            dgamma[c] += (float)b;
            float k = ga * istd[c * groups + g] / (float)Mg, fa = (float)a, fb = (float)b;
            for (int64_t i = 0; i < Mg; i++) {
                float x = xhat_at(xh, xh16, i), dz = bn_relu(x, ga, be) > 0 ? d[i] : 0.0f;
                xh[i] = k * ((float)Mg * dz - fa - x * fb);
            }
        }
}

/* ---- pooling ---- */

/* m [Wo] = the maxima of output row oy's windows, at [Wo] their index in the
 * plane (the first maximum, or the last NaN: as PyTorch), -inf and -1 for a
 * window wholly in the padding. Taps outer, windows inner: each window sees
 * its taps in the same order, and the inner loop vectorises. */
static void window_row_max(float *m, int *at, const float *src, int H, int W, int oy, int Wo,
                           int k, int s, int p) {
    for (int ox = 0; ox < Wo; ox++) { m[ox] = -INFINITY; at[ox] = -1; }
    for (int i = 0; i < k; i++) {
        int iy = oy * s - p + i;
        if (iy < 0 || iy >= H) continue;
        const float *r = src + (int64_t)iy * W;
        for (int j = 0; j < k; j++) {                /* windows whose tap j is inside the row */
            int lo = p > j ? (p - j + s - 1) / s : 0, hi = W - 1 + p - j < 0 ? 0 : (W - 1 + p - j) / s + 1;
            if (hi > Wo) hi = Wo;
            for (int ox = lo; ox < hi; ox++) {
                int ix = ox * s - p + j;
                float v = r[ix];
                int take = v > m[ox] || v != v;
                m[ox] = take ? v : m[ox];
                at[ox] = take ? iy * W + ix : at[ox];
            }
        }
    }
}

void maxpool_forward(float *out, const float *in, int planes, int H, int W, int k, int s, int p) {
    int Ho = conv_out(H, k, s, p), Wo = conv_out(W, k, s, p);
    #pragma omp parallel
    {
        int *at = xmalloc(Wo * sizeof *at);
        #pragma omp for schedule(static)
        for (int pl = 0; pl < planes; pl++)
            for (int oy = 0; oy < Ho; oy++)
                window_row_max(out + ((int64_t)pl * Ho + oy) * Wo, at, in + (int64_t)pl * H * W, H, W,
                               oy, Wo, k, s, p);
        free(at);
    }
}

/* The gradient goes to each window's maximum, the one forward chose. */
void maxpool_backward(float *din, const float *dout, const float *in, int planes, int H, int W,
                      int k, int s, int p) {
    int Ho = conv_out(H, k, s, p), Wo = conv_out(W, k, s, p);
    #pragma omp parallel
    {
        float *m = xmalloc(Wo * sizeof *m);
        int *at = xmalloc(Wo * sizeof *at);
        #pragma omp for schedule(static)
        for (int pl = 0; pl < planes; pl++) {
            const float *d = dout + (int64_t)pl * Ho * Wo;
            float *dst = din + (int64_t)pl * H * W;
            for (int oy = 0; oy < Ho; oy++) {
                window_row_max(m, at, in + (int64_t)pl * H * W, H, W, oy, Wo, k, s, p);
                for (int ox = 0; ox < Wo; ox++)
                    if (at[ox] >= 0) dst[at[ox]] += d[oy * Wo + ox];
            }
        }
        free(m); free(at);
    }
}

/* Separable: row sums, then column sums. */
void box3_plane(float *dst, const float *src, int H, int W, float scale, float *rows) {
    for (int y = 0; y < H; y++) {
        const float *r = src + (int64_t)y * W;
        float *t = rows + (int64_t)y * W;
        t[0] = r[0] + (W > 1 ? r[1] : 0.0f);
        for (int x = 1; x < W - 1; x++) t[x] = r[x - 1] + r[x] + r[x + 1];
        if (W > 1) t[W - 1] = r[W - 2] + r[W - 1];
    }
    for (int y = 0; y < H; y++) {
        const float *up = y > 0 ? rows + (int64_t)(y - 1) * W : NULL;
        const float *mid = rows + (int64_t)y * W;
        const float *down = y < H - 1 ? rows + (int64_t)(y + 1) * W : NULL;
        float *d = dst + (int64_t)y * W;
        for (int x = 0; x < W; x++)
            d[x] += ((up ? up[x] : 0.0f) + mid[x] + (down ? down[x] : 0.0f)) * scale;
    }
}

const float *avgpool3_plane(float *pool, const float *src, int H, int W) {
    memset(pool, 0, (size_t)H * W * sizeof *pool);
    box3_plane(pool, src, H, W, 1.0f / 9.0f, pool + (size_t)H * W);
    return pool;
}

/* box3_plane over `planes` planes of H x W. */
static void box3_accumulate(float *out, const float *in, int planes, int H, int W, float scale) {
    #pragma omp parallel
    {
        float *rows = xmalloc((size_t)H * W * sizeof *rows);
        #pragma omp for schedule(static)
        for (int pl = 0; pl < planes; pl++)
            box3_plane(out + (int64_t)pl * H * W, in + (int64_t)pl * H * W, H, W, scale, rows);
        free(rows);
    }
}

void avgpool_forward(float *out, const float *in, int planes, int H, int W, int k, int s, int p) {
    if (k == 3 && s == 1 && p == 1) {
        zero_floats(out, (size_t)planes * H * W);
        box3_accumulate(out, in, planes, H, W, 1.0f / 9.0f);
        return;
    }
    int Ho = conv_out(H, k, s, p), Wo = conv_out(W, k, s, p);
    float inv = 1.0f / (float)(k * k);
    #pragma omp parallel for schedule(static)
    for (int pl = 0; pl < planes; pl++) {
        const float *src = in + (int64_t)pl * H * W;
        float *dst = out + (int64_t)pl * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                float sum = 0;
                for (int i = 0; i < k; i++) {
                    int iy = oy * s - p + i;
                    if (iy < 0 || iy >= H) continue;
                    for (int j = 0; j < k; j++) {
                        int ix = ox * s - p + j;
                        if (ix >= 0 && ix < W) sum += src[iy * W + ix];
                    }
                }
                dst[oy * Wo + ox] = sum * inv;
            }
    }
}

void avgpool_backward(float *din, const float *dout, int planes, int H, int W, int k, int s, int p) {
    if (k == 3 && s == 1 && p == 1) { box3_accumulate(din, dout, planes, H, W, 1.0f / 9.0f); return; }
    int Ho = conv_out(H, k, s, p), Wo = conv_out(W, k, s, p);
    float inv = 1.0f / (float)(k * k);
    #pragma omp parallel for schedule(static)
    for (int pl = 0; pl < planes; pl++) {
        const float *d = dout + (int64_t)pl * Ho * Wo;
        float *dst = din + (int64_t)pl * H * W;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                float g = d[oy * Wo + ox] * inv;
                for (int i = 0; i < k; i++) {
                    int iy = oy * s - p + i;
                    if (iy < 0 || iy >= H) continue;
                    for (int j = 0; j < k; j++) {
                        int ix = ox * s - p + j;
                        if (ix >= 0 && ix < W) dst[iy * W + ix] += g;
                    }
                }
            }
    }
}

/* ---- head ---- */

void gap_forward(float *out, const float *in, int C, int N, int HW) {
    for (int64_t r = 0; r < (int64_t)C * N; r++) {
        float s = 0;
        for (int i = 0; i < HW; i++) s += in[r * HW + i];
        out[r] = s / HW;
    }
}

void gap_backward(float *din, const float *dout, int C, int N, int HW) {
    for (int64_t r = 0; r < (int64_t)C * N; r++) {
        float g = dout[r] / HW;
        for (int i = 0; i < HW; i++) din[r * HW + i] += g;
    }
}

void dropout_forward(float *x, uint8_t *mask, int C, int N, float p, uint64_t seed,
                     const uint64_t *keys) {
    float scale = 1.0f / (1.0f - p);
    for (int n = 0; n < N; n++) {
        Rng rng;
        rng_seed(&rng, seed, keys[n]);
        for (int c = 0; c < C; c++) {
            int64_t i = (int64_t)c * N + n;
            mask[i] = rng_uniform(&rng) >= p;
            x[i] = mask[i] ? x[i] * scale : 0.0f;
        }
    }
}

void dropout_backward(float *dx, const uint8_t *mask, int64_t n, float p) {
    float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++) dx[i] = mask[i] ? dx[i] * scale : 0.0f;
}

void linear_forward(float *logits, const float *in, const float *weight, const float *bias,
                    int C, int N, int K) {
    for (int n = 0; n < N; n++) memcpy(logits + (int64_t)n * K, bias, K * sizeof *bias);
    gemm(GEMM_HEAD, GEMM_FORWARD, 1, 1, N, K, C, in, N, weight, C, 1.0f, logits, K);
}

void linear_backward(float *din, float *dweight, float *dbias, const float *dlogits,
                     const float *in, const float *weight, int C, int N, int K) {
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) dbias[k] += dlogits[(int64_t)n * K + k];
    /* dweight [K, C] += dlogits^T [K, N] in^T [N, C] */
    gemm(GEMM_HEAD, GEMM_DWEIGHT, 1, 1, K, C, N, dlogits, K, in, N, 1.0f, dweight, C);
    /* din [C, N] += weight^T [C, K] dlogits^T [K, N] */
    gemm(GEMM_HEAD, GEMM_DINPUT, 1, 1, C, N, K, weight, C, dlogits, K, 1.0f, din, N);
}

double softmax_xent(float *dlogits, const float *logits, const int64_t *labels, const float *targets,
                    int N, int K, float smoothing, float scale) {
    double total = 0, off = (double)smoothing / K, keep = 1.0 - smoothing;
    for (int n = 0; n < N; n++) {
        const float *z = logits + (int64_t)n * K, *t = targets ? targets + (int64_t)n * K : NULL;
        float mx = z[0];
        for (int k = 1; k < K; k++) if (z[k] > mx) mx = z[k];
        double sum = 0;
        for (int k = 0; k < K; k++) sum += exp((double)(z[k] - mx));
        double lse = mx + log(sum);
        /* -sum_k t'_k log p_k = lse - sum_k t'_k z_k, t' = (1 - s) t + s/K summing to 1 */
        double tz = 0;
        for (int k = 0; k < K; k++) tz += ((t ? keep * t[k] : keep * (k == labels[n])) + off) * z[k];
        total += lse - tz;
        if (!dlogits) continue;
        float *d = dlogits + (int64_t)n * K;
        for (int k = 0; k < K; k++) {
            double target = (t ? keep * t[k] : keep * (k == labels[n])) + off;
            d[k] = scale * (float)(exp((double)z[k] - lse) - target) / N;
        }
    }
    return total / N;
}

void sgd_update(float *w, const float *g, float *buf, size_t n, float lr, float momentum, float wd,
                int nesterov) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + wd * w[i];
        buf[i] = momentum * buf[i] + d;
        w[i] -= lr * (nesterov ? d + momentum * buf[i] : buf[i]);
    }
}
