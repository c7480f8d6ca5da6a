/* layers.c - see layers.h for layout and conventions. */
#include "layers.h"
#include "profile.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_max_threads(void) { return 1; }
static int omp_get_thread_num(void) { return 0; }
#endif

/* Floats of im2col per chunk of images: 8 MB ran fastest of 2 to 128 MB (make bench). */
#define SCRATCH_TARGET ((size_t)1 << 21)

void zero_floats(float *p, size_t n) {
    const size_t block = (size_t)1 << 16;
    #pragma omp parallel for schedule(static)
    for (size_t at = 0; at < n; at += block) memset(p + at, 0, (n - at < block ? n - at : block) * sizeof *p);
}

static int is_pointwise(const ConvShape *cs) {
    return cs->kh == 1 && cs->kw == 1 && cs->sh == 1 && cs->sw == 1 && cs->ph == 0 && cs->pw == 0;
}

/* Images per im2col chunk: enough for large GEMMs, bounded scratch. */
static int chunk_images(const ConvShape *cs, int N, int Ho, int Wo) {
    size_t per = (size_t)cs->cin * cs->kh * cs->kw * Ho * Wo;
    size_t n = SCRATCH_TARGET / (per ? per : 1);
    if (n < 1) n = 1;
    return n > (size_t)N ? N : (int)n;
}

/* d(input) of a stride-1 convolution is itself a convolution: of d(output),
 * with the kernel flipped and its in/out channels swapped, padded by k-1-p. A
 * GEMM over cout*kh*kw then writes d(input) directly, instead of one over cout
 * writing columns that col2im scatters back. */
static int backward_by_transposed(const ConvShape *cs) {
    return cs->sh == 1 && cs->sw == 1 && cs->ph < cs->kh && cs->pw < cs->kw;
}

static ConvShape transposed_shape(const ConvShape *cs) {
    return (ConvShape){ cs->cout, cs->cin, cs->kh, cs->kw, 1, 1, cs->kh - 1 - cs->ph,
                        cs->kw - 1 - cs->pw };
}

/* ---- direct convolution ----
 * A stride-1 convolution whose rows are wide against its kernel takes no
 * im2col: an image, padded, is a [cin, Hp*Wp] matrix in which kernel tap
 * (ki, kj) is the shift ki*Wp + kj, so the convolution is kh*kw GEMMs of the
 * tap's [cout, cin] weights by shifted views, over Ho rows of Wp columns; the
 * kw-1 columns of each row past Wo read across the row's end and are dropped.
 * Images go to threads, each GEMM (small enough to stay in cache) to one. */
static int is_direct(const ConvShape *cs, int H, int W) {
    if (cs->sh != 1 || cs->sw != 1 || is_pointwise(cs) || cs->ph >= cs->kh || cs->pw >= cs->kw)
        return 0;
    int Ho = conv_out(H, cs->kh, 1, cs->ph), Wo = conv_out(W, cs->kw, 1, cs->pw);
    /* at most 15% of columns wasted, both ways, and GEMMs of 256 columns or
     * more: at 6x6 or 14x14 (Mixed_6, Mixed_7) one image is too little work */
    return 100 * (cs->kw - 1) <= 15 * Wo && 100 * (cs->kw - 1) <= 15 * W &&
           Ho * (W + 2 * cs->pw) >= 256;
}

static ConvShape transposed_shape(const ConvShape *cs);

/* Floats of one image's padded input, with room for the last row's overrun. */
static size_t padded_floats(const ConvShape *cs, int H, int W) {
    return (size_t)cs->cin * (H + 2 * cs->ph) * (W + 2 * cs->pw) + cs->kw;
}

/* Per thread: the padded image, output (or d(output)) rows, d(weight), and
 * the transposed pass's padded d(output) and d(input) rows. */
static size_t direct_thread_floats(const ConvShape *cs, int H, int W) {
    ConvShape ts = transposed_shape(cs);
    int Ho = conv_out(H, cs->kh, 1, cs->ph), Wo = conv_out(W, cs->kw, 1, cs->pw);
    size_t rows = (size_t)cs->cout * Ho * (W + 2 * cs->pw);
    size_t kernel = (size_t)cs->cout * cs->cin * cs->kh * cs->kw;
    size_t transposed = padded_floats(&ts, Ho, Wo) + (size_t)cs->cin * H * (Wo + 2 * ts.pw);
    return padded_floats(cs, H, W) + rows + kernel + transposed;
}

/* xp [cin, H+2ph, W+2pw] (then kw zeros) = image in [cin, H, W], channel rows `stride` apart */
static void pad_image(float *xp, const float *in, int64_t stride, const ConvShape *cs, int H, int W) {
    int Hp = H + 2 * cs->ph, Wp = W + 2 * cs->pw;
    for (int ci = 0; ci < cs->cin; ci++) {
        float *plane = xp + (int64_t)ci * Hp * Wp;
        memset(plane, 0, (size_t)cs->ph * Wp * sizeof *plane);
        for (int y = 0; y < H; y++) {
            float *row = plane + (int64_t)(y + cs->ph) * Wp;
            memset(row, 0, cs->pw * sizeof *row);
            memcpy(row + cs->pw, in + ci * stride + (int64_t)y * W, W * sizeof *row);
            memset(row + cs->pw + W, 0, cs->pw * sizeof *row);
        }
        memset(plane + (int64_t)(cs->ph + H) * Wp, 0, (size_t)cs->ph * Wp * sizeof *plane);
    }
    memset(xp + (int64_t)cs->cin * Hp * Wp, 0, cs->kw * sizeof *xp);
}

/* One image: out [cout, Ho, Wo] (+)= the convolution of in [cin, H, W] by
 * taps [kh*kw][cout][cin]; channel rows out_stride and in_stride apart. */
static void direct_image(float *out, int64_t out_stride, const float *in, int64_t in_stride,
                         const float *taps, const ConvShape *cs, int H, int W, int accumulate,
                         float *xp, float *yp) {
    int Hp = H + 2 * cs->ph, Wp = W + 2 * cs->pw, Ho = Hp - cs->kh + 1, Wo = Wp - cs->kw + 1;
    int64_t n = (int64_t)Ho * Wp;
    pad_image(xp, in, in_stride, cs, H, W);
    for (int t = 0; t < cs->kh * cs->kw; t++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cs->cout, n, cs->cin, 1.0f,
                    taps + (int64_t)t * cs->cout * cs->cin, cs->cin,
                    xp + (int64_t)(t / cs->kw) * Wp + t % cs->kw, (int64_t)Hp * Wp, t ? 1.0f : 0.0f, yp, n);
    for (int co = 0; co < cs->cout; co++)
        for (int oy = 0; oy < Ho; oy++) {
            float *dst = out + co * out_stride + (int64_t)oy * Wo;
            const float *src = yp + co * n + (int64_t)oy * Wp;
            if (accumulate) for (int ox = 0; ox < Wo; ox++) dst[ox] += src[ox];
            else memcpy(dst, src, Wo * sizeof *dst);
        }
}

/* taps [kh*kw][cout][cin] of weight [cout, cin, kh, kw]; flipped: the
 * transposed convolution's, [kh*kw][cin][cout] with each kernel turned 180 degrees */
static void kernel_taps(float *taps, const float *weight, const ConvShape *cs, int flipped) {
    int kk = cs->kh * cs->kw;
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < kk; t++)
        for (int co = 0; co < cs->cout; co++)
            for (int ci = 0; ci < cs->cin; ci++) {
                float w = weight[((int64_t)co * cs->cin + ci) * kk + t];
                if (flipped) taps[((int64_t)(kk - 1 - t) * cs->cin + ci) * cs->cout + co] = w;
                else taps[((int64_t)t * cs->cout + co) * cs->cin + ci] = w;
            }
}

static void direct_forward(float *out, const float *in, const float *weight, const ConvShape *cs,
                           int N, int H, int W, float *scratch) {
    int Ho = conv_out(H, cs->kh, 1, cs->ph), Wo = conv_out(W, cs->kw, 1, cs->pw);
    size_t per_thread = direct_thread_floats(cs, H, W);
    float *taps = scratch, *threads = scratch + (size_t)cs->cout * cs->cin * cs->kh * cs->kw;
    kernel_taps(taps, weight, cs, 0);
    #pragma omp parallel num_threads(omp_get_max_threads())
    {
        float *xp = threads + omp_get_thread_num() * per_thread, *yp = xp + padded_floats(cs, H, W);
        #pragma omp for schedule(static)
        for (int n = 0; n < N; n++)
            direct_image(out + (int64_t)n * Ho * Wo, (int64_t)N * Ho * Wo, in + (int64_t)n * H * W,
                         (int64_t)N * H * W, taps, cs, H, W, 0, xp, yp);
    }
}

/* d(weight) per thread over its images, summed in thread order (the same bits
 * for the same thread count); d(input) by the transposed convolution. */
static void direct_backward(float *din, float *dweight, const float *dout, const float *in,
                            const float *weight, const ConvShape *cs, int N, int H, int W,
                            float *scratch) {
    int Ho = conv_out(H, cs->kh, 1, cs->ph), Wo = conv_out(W, cs->kw, 1, cs->pw);
    int Hp = H + 2 * cs->ph, Wp = W + 2 * cs->pw, kk = cs->kh * cs->kw, T = omp_get_max_threads();
    int64_t n = (int64_t)Ho * Wp;
    size_t kernel = (size_t)cs->cout * cs->cin * kk, per_thread = direct_thread_floats(cs, H, W);
    ConvShape ts = transposed_shape(cs);
    float *taps = scratch, *threads = scratch + kernel;
    kernel_taps(taps, weight, cs, 1);
    #pragma omp parallel num_threads(T)
    {
        float *xp = threads + omp_get_thread_num() * per_thread, *dy = xp + padded_floats(cs, H, W);
        float *dw = dy + (size_t)cs->cout * n, *tp = dw + kernel, *ty = tp + padded_floats(&ts, Ho, Wo);
        memset(dw, 0, kernel * sizeof *dw);
        #pragma omp for schedule(static)
        for (int i = 0; i < N; i++) {
            pad_image(xp, in + (int64_t)i * H * W, (int64_t)N * H * W, cs, H, W);
            for (int co = 0; co < cs->cout; co++)        /* d(output) rows, zero past Wo */
                for (int oy = 0; oy < Ho; oy++) {
                    float *row = dy + co * n + (int64_t)oy * Wp;
                    memcpy(row, dout + ((int64_t)co * N + i) * Ho * Wo + (int64_t)oy * Wo, Wo * sizeof *row);
                    memset(row + Wo, 0, (Wp - Wo) * sizeof *row);
                }
            for (int t = 0; t < kk; t++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cs->cout, cs->cin, n, 1.0f,
                            dy, n, xp + (int64_t)(t / cs->kw) * Wp + t % cs->kw, (int64_t)Hp * Wp, 1.0f,
                            dw + (int64_t)t * cs->cout * cs->cin, cs->cin);
            if (din)
                direct_image(din + (int64_t)i * H * W, (int64_t)N * H * W, dout + (int64_t)i * Ho * Wo,
                             (int64_t)N * Ho * Wo, taps, &ts, Ho, Wo, 1, tp, ty);
        }
    }
    #pragma omp parallel for schedule(static)
    for (int co = 0; co < cs->cout; co++)
        for (int t = 0; t < T; t++) {
            const float *dw = threads + t * per_thread + padded_floats(cs, H, W) + (size_t)cs->cout * n;
            for (int ci = 0; ci < cs->cin; ci++)
                for (int k = 0; k < kk; k++)
                    dweight[((int64_t)co * cs->cin + ci) * kk + k] += dw[((int64_t)k * cs->cout + co) * cs->cin + ci];
        }
}

/* Forward: columns of the input. Backward: those, or columns of d(output)
 * followed by the flipped kernel, or (strided) two sets of input columns.
 * Direct: the kernel's taps, then each thread's buffers (at the current
 * thread count). */
size_t conv_scratch_floats(const ConvShape *cs, int N, int H, int W) {
    if (is_pointwise(cs)) return 0;
    if (is_direct(cs, H, W))
        return (size_t)cs->cout * cs->cin * cs->kh * cs->kw +
               (size_t)omp_get_max_threads() * direct_thread_floats(cs, H, W);
    int Ho = conv_out(H, cs->kh, cs->sh, cs->ph), Wo = conv_out(W, cs->kw, cs->sw, cs->pw);
    size_t col = (size_t)cs->cin * cs->kh * cs->kw * chunk_images(cs, N, Ho, Wo) * Ho * Wo;
    if (!backward_by_transposed(cs)) return col;
    ConvShape ts = transposed_shape(cs);
    size_t dcol = (size_t)ts.cin * ts.kh * ts.kw * chunk_images(&ts, N, H, W) * H * W;
    return (col > dcol ? col : dcol) + (size_t)cs->cout * cs->cin * cs->kh * cs->kw;
}

/* col [cin*kh*kw, nc*Ho*Wo] from images n0..n0+nc of in [cin, N, H, W] */
static void im2col(float *col, const float *in, const ConvShape *cs, int N, int H, int W,
                   int n0, int nc, int Ho, int Wo) {
    const int64_t L = (int64_t)nc * Ho * Wo;
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < cs->cin; ci++)
        for (int ki = 0; ki < cs->kh; ki++)
            for (int kj = 0; kj < cs->kw; kj++) {
                float *row = col + ((int64_t)(ci * cs->kh + ki) * cs->kw + kj) * L;
                for (int n = 0; n < nc; n++) {
                    const float *plane = in + ((int64_t)ci * N + n0 + n) * H * W;
                    for (int oy = 0; oy < Ho; oy++) {
                        float *dst = row + ((int64_t)n * Ho + oy) * Wo;
                        int iy = oy * cs->sh - cs->ph + ki;
                        if (iy < 0 || iy >= H) { memset(dst, 0, Wo * sizeof *dst); continue; }
                        const float *src = plane + (int64_t)iy * W;
                        int ix = kj - cs->pw;
                        if (cs->sw == 1) {          /* contiguous run with zero edges */
                            int lo = ix < 0 ? -ix : 0, hi = W - ix < Wo ? W - ix : Wo;
                            if (hi < lo) hi = lo;
                            memset(dst, 0, lo * sizeof *dst);
                            memcpy(dst + lo, src + ix + lo, (hi - lo) * sizeof *dst);
                            memset(dst + hi, 0, (Wo - hi) * sizeof *dst);
                        } else {
                            for (int ox = 0; ox < Wo; ox++, ix += cs->sw)
                                dst[ox] = ix >= 0 && ix < W ? src[ix] : 0.0f;
                        }
                    }
                }
            }
}

/* in [cin, N, H, W] += col2im(col) for images n0..n0+nc */
static void col2im(float *in, const float *col, const ConvShape *cs, int N, int H, int W,
                   int n0, int nc, int Ho, int Wo) {
    const int64_t L = (int64_t)nc * Ho * Wo;
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < cs->cin; ci++)
        for (int ki = 0; ki < cs->kh; ki++)
            for (int kj = 0; kj < cs->kw; kj++) {
                const float *row = col + ((int64_t)(ci * cs->kh + ki) * cs->kw + kj) * L;
                for (int n = 0; n < nc; n++) {
                    float *plane = in + ((int64_t)ci * N + n0 + n) * H * W;
                    for (int oy = 0; oy < Ho; oy++) {
                        int iy = oy * cs->sh - cs->ph + ki;
                        if (iy < 0 || iy >= H) continue;
                        const float *src = row + ((int64_t)n * Ho + oy) * Wo;
                        float *dst = plane + (int64_t)iy * W;
                        int ix = kj - cs->pw;
                        if (cs->sw == 1) {          /* the run inside the image, vectorised */
                            int lo = ix < 0 ? -ix : 0, hi = W - ix < Wo ? W - ix : Wo;
                            for (int ox = lo; ox < hi; ox++) dst[ox + ix] += src[ox];
                        } else {
                            for (int ox = 0; ox < Wo; ox++, ix += cs->sw)
                                if (ix >= 0 && ix < W) dst[ix] += src[ox];
                        }
                    }
                }
            }
}

void conv_forward(float *out, const float *in, const float *weight, const ConvShape *cs,
                  int N, int H, int W, float *scratch) {
    int Ho = conv_out(H, cs->kh, cs->sh, cs->ph), Wo = conv_out(W, cs->kw, cs->sw, cs->pw);
    int64_t L = (int64_t)N * Ho * Wo;
    if (is_pointwise(cs)) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cs->cout, L, cs->cin, 1.0f,
                    weight, cs->cin, in, L, 0.0f, out, L);
        return;
    }
    if (is_direct(cs, H, W)) { direct_forward(out, in, weight, cs, N, H, W, scratch); return; }
    int K = cs->cin * cs->kh * cs->kw, step = chunk_images(cs, N, Ho, Wo);
    for (int n0 = 0; n0 < N; n0 += step) {
        int nc = N - n0 < step ? N - n0 : step;
        prof_push(PROF_IM2COL);
        im2col(scratch, in, cs, N, H, W, n0, nc, Ho, Wo);
        prof_pop();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cs->cout, nc * Ho * Wo, K, 1.0f,
                    weight, K, scratch, nc * Ho * Wo, 0.0f, out + (int64_t)n0 * Ho * Wo, L);
    }
}

/* din [cin, N, H, W] += the transposed convolution of dout [cout, N, Ho, Wo] */
static void transposed_backward(float *din, const float *dout, const float *weight,
                                const ConvShape *cs, int N, int H, int W, float *scratch) {
    int Ho = conv_out(H, cs->kh, 1, cs->ph), Wo = conv_out(W, cs->kw, 1, cs->pw);
    ConvShape ts = transposed_shape(cs);
    int kk = cs->kh * cs->kw, K = cs->cout * kk, step = chunk_images(&ts, N, H, W);
    int64_t L = (int64_t)N * H * W;
    size_t col_floats = (size_t)K * step * H * W, in_col = conv_scratch_floats(cs, N, H, W) -
                        (size_t)cs->cout * cs->cin * kk;
    float *col = scratch, *flipped = scratch + (col_floats > in_col ? col_floats : in_col);
    /* flipped [cin, cout, kh, kw]: weight [cout, cin] swapped, each kernel turned 180 degrees */
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < cs->cin; ci++)
        for (int co = 0; co < cs->cout; co++)
            for (int k = 0; k < kk; k++)
                flipped[((int64_t)ci * cs->cout + co) * kk + kk - 1 - k] =
                    weight[((int64_t)co * cs->cin + ci) * kk + k];
    for (int n0 = 0; n0 < N; n0 += step) {
        int nc = N - n0 < step ? N - n0 : step;
        prof_push(PROF_IM2COL);
        im2col(col, dout, &ts, N, Ho, Wo, n0, nc, H, W);
        prof_pop();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cs->cin, (int64_t)nc * H * W, K,
                    1.0f, flipped, K, col, (int64_t)nc * H * W, 1.0f, din + (int64_t)n0 * H * W, L);
    }
}

void conv_backward(float *din, float *dweight, const float *dout, const float *in,
                   const float *weight, const ConvShape *cs, int N, int H, int W, float *scratch) {
    int Ho = conv_out(H, cs->kh, cs->sh, cs->ph), Wo = conv_out(W, cs->kw, cs->sw, cs->pw);
    int64_t L = (int64_t)N * Ho * Wo;
    if (is_pointwise(cs)) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cs->cout, cs->cin, L, 1.0f,
                    dout, L, in, L, 1.0f, dweight, cs->cin);
        if (din)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cs->cin, L, cs->cout, 1.0f,
                        weight, cs->cin, dout, L, 1.0f, din, L);
        return;
    }
    if (is_direct(cs, H, W)) { direct_backward(din, dweight, dout, in, weight, cs, N, H, W, scratch); return; }
    int K = cs->cin * cs->kh * cs->kw, step = chunk_images(cs, N, Ho, Wo);
    int transposed = din && backward_by_transposed(cs);
    float *col = scratch, *dcol = scratch + conv_scratch_floats(cs, N, H, W);
    for (int n0 = 0; n0 < N; n0 += step) {
        int nc = N - n0 < step ? N - n0 : step;
        int64_t Lc = (int64_t)nc * Ho * Wo;
        const float *dchunk = dout + (int64_t)n0 * Ho * Wo;
        prof_push(PROF_IM2COL);
        im2col(col, in, cs, N, H, W, n0, nc, Ho, Wo);
        prof_pop();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cs->cout, K, Lc, 1.0f,
                    dchunk, L, col, Lc, 1.0f, dweight, K);
        if (!din || transposed) continue;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, Lc, cs->cout, 1.0f,
                    weight, K, dchunk, L, 0.0f, dcol, Lc);
        prof_push(PROF_IM2COL);
        col2im(din, dcol, cs, N, H, W, n0, nc, Ho, Wo);
        prof_pop();
    }
    if (transposed) transposed_backward(din, dout, weight, cs, N, H, W, scratch);
}

/* ---- grouped 1x1 convolutions ---- */

size_t conv1x1_group_scratch_floats(int rows, int64_t L) {
    size_t all = (size_t)rows * L;
    return all < SCRATCH_TARGET ? all : SCRATCH_TARGET < (size_t)rows ? (size_t)rows : SCRATCH_TARGET;
}

static int group_rows(const int *couts, int groups) {
    int rows = 0;
    for (int g = 0; g < groups; g++) rows += couts[g];
    return rows;
}

/* Between the stacked rows of a chunk [rows, n] and the groups' own tensors
 * [couts[g], L] at column c0: to_stack gathers, else scatters. */
static void copy_group_rows(float *stack, float *const *part, const int *couts, int groups,
                            int64_t L, int64_t c0, int64_t n, int to_stack) {
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < group_rows(couts, groups); r++) {
        int g = 0, row = r;
        while (row >= couts[g]) row -= couts[g++];
        float *s = stack + (int64_t)r * n, *t = part[g] + (int64_t)row * L + c0;
        memcpy(to_stack ? s : t, to_stack ? t : s, n * sizeof *s);
    }
}

void conv1x1_group_forward(float *const *out, const int *couts, int groups, const float *in,
                           const float *weight, int cin, int64_t L, float *scratch) {
    int rows = group_rows(couts, groups);
    int64_t step = conv1x1_group_scratch_floats(rows, L) / rows;
    for (int64_t c0 = 0; c0 < L; c0 += step) {
        int64_t n = L - c0 < step ? L - c0 : step;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, n, cin, 1.0f, weight, cin,
                    in + c0, L, 0.0f, scratch, n);
        copy_group_rows(scratch, out, couts, groups, L, c0, n, 0);
    }
}

void conv1x1_group_backward(float *din, float *dweight, float *const *dout, const int *couts,
                            int groups, const float *in, const float *weight, int cin, int64_t L,
                            float *scratch) {
    int rows = group_rows(couts, groups);
    int64_t step = conv1x1_group_scratch_floats(rows, L) / rows;
    for (int64_t c0 = 0; c0 < L; c0 += step) {
        int64_t n = L - c0 < step ? L - c0 : step;
        copy_group_rows(scratch, dout, couts, groups, L, c0, n, 1);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cin, n, 1.0f, scratch, n,
                    in + c0, L, 1.0f, dweight, cin);
        if (din)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cin, n, rows, 1.0f, weight, cin,
                        scratch, n, 1.0f, din + c0, L);
    }
}

/* ---- batch norm + ReLU ---- */

/* A unit's output from its stored xhat; NaN passes, as in PyTorch's ReLU. */
static inline float bn_relu(float xhat, float scale, float shift) {
    float v = scale * xhat + shift;
    return v < 0 ? 0 : v;
}

/* Sums of row[0..n) and of its squares, in double with eight fixed lanes:
 * vectorised, yet the same order (and bits) at any thread count. */
static void sum_and_squares(const float *row, int64_t n, double *sum, double *squares) {
    double s[8] = { 0 }, q[8] = { 0 };
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) { double v = row[i + j]; s[j] += v; q[j] += v * v; }
    for (int j = 0; i < n; i++, j++) { double v = row[i]; s[j] += v; q[j] += v * v; }
    *sum = *squares = 0;
    for (int j = 0; j < 8; j++) { *sum += s[j]; *squares += q[j]; }
}

void bn_forward_train(float *y, float *mean, float *istd, float *run_mean, float *run_var,
                      int C, int64_t M, int groups, float momentum, float eps) {
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
            for (int64_t i = 0; i < Mg; i++) row[i] = (row[i] - m) * is;
            mean_sum += mu;
            var_sum += Mg > 1 ? var * Mg / (Mg - 1) : var;
        }
        run_mean[c] = (1 - momentum) * run_mean[c] + momentum * (float)(mean_sum / groups);
        run_var[c] = (1 - momentum) * run_var[c] + momentum * (float)(var_sum / groups);
    }
}

void bn_forward_eval(float *y, const float *run_mean, const float *run_var, int C, int64_t M,
                     float eps) {
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        float is = 1.0f / sqrtf(run_var[c] + eps), m = run_mean[c];
        float *row = y + (int64_t)c * M;
        for (int64_t i = 0; i < M; i++) row[i] = (row[i] - m) * is;
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

/* Sums of dz and dz * xhat, where dz is d masked by the ReLU; lanes as in
 * sum_and_squares. */
static void relu_grad_sums(const float *xh, const float *d, int64_t n, float ga, float be,
                           double *sum_dz, double *sum_dzx) {
    double s[8] = { 0 }, q[8] = { 0 };
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            double dz = bn_relu(xh[i + j], ga, be) > 0 ? d[i + j] : 0.0f;
            s[j] += dz; q[j] += dz * xh[i + j];
        }
    for (int j = 0; i < n; i++, j++) {
        double dz = bn_relu(xh[i], ga, be) > 0 ? d[i] : 0.0f;
        s[j] += dz; q[j] += dz * xh[i];
    }
    *sum_dz = *sum_dzx = 0;
    for (int j = 0; j < 8; j++) { *sum_dz += s[j]; *sum_dzx += q[j]; }
}

void bn_relu_backward(float *xhat, float *dgamma, float *dbeta, const float *dout,
                      const float *gamma, const float *beta, const float *istd,
                      int C, int64_t M, int groups) {
    const int64_t Mg = M / groups;
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        for (int g = 0; g < groups; g++) {
            int64_t base = (int64_t)c * M + g * Mg;
            float *xh = xhat + base, ga = gamma[c], be = beta[c];
            const float *d = dout + base;
            double a, b;
            relu_grad_sums(xh, d, Mg, ga, be, &a, &b);
            dbeta[c] += (float)a;
            dgamma[c] += (float)b;
            float k = ga * istd[c * groups + g] / (float)Mg, fa = (float)a, fb = (float)b;
            for (int64_t i = 0; i < Mg; i++) {
                float dz = bn_relu(xh[i], ga, be) > 0 ? d[i] : 0.0f;
                xh[i] = k * ((float)Mg * dz - fa - xh[i] * fb);
            }
        }
}

/* ---- pooling ---- */

/* Index in the plane of the first maximum of window (oy, ox), NaN winning as in
 * PyTorch; -1 for a window wholly in the padding. */
static inline int window_argmax(const float *src, int H, int W, int oy, int ox, int k, int s, int p) {
    float m = -INFINITY;
    int at = -1;
    for (int i = 0; i < k; i++) {
        int iy = oy * s - p + i;
        if (iy < 0 || iy >= H) continue;
        for (int j = 0; j < k; j++) {
            int ix = ox * s - p + j;
            if (ix >= 0 && ix < W && (src[iy * W + ix] > m || isnan(src[iy * W + ix])))
                { m = src[iy * W + ix]; at = iy * W + ix; }
        }
    }
    return at;
}

void maxpool_forward(float *out, const float *in, int planes, int H, int W, int k, int s, int p) {
    int Ho = conv_out(H, k, s, p), Wo = conv_out(W, k, s, p);
    #pragma omp parallel for schedule(static)
    for (int pl = 0; pl < planes; pl++) {
        const float *src = in + (int64_t)pl * H * W;
        float *dst = out + (int64_t)pl * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                int at = window_argmax(src, H, W, oy, ox, k, s, p);
                dst[oy * Wo + ox] = at < 0 ? -INFINITY : src[at];
            }
    }
}

/* The gradient goes to the first maximum of each window, as in PyTorch. */
void maxpool_backward(float *din, const float *dout, const float *in, int planes, int H, int W,
                      int k, int s, int p) {
    int Ho = conv_out(H, k, s, p), Wo = conv_out(W, k, s, p);
    #pragma omp parallel for schedule(static)
    for (int pl = 0; pl < planes; pl++) {
        const float *src = in + (int64_t)pl * H * W, *d = dout + (int64_t)pl * Ho * Wo;
        float *dst = din + (int64_t)pl * H * W;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                int at = window_argmax(src, H, W, oy, ox, k, s, p);
                if (at >= 0) dst[at] += d[oy * Wo + ox];
            }
    }
}

/* out += (3x3 sums of in, zero outside) * scale, over H x W planes: the
 * Inception branches' avgpool 3 s1 p1 forward, and its backward alike (the
 * box is symmetric). Separable: row sums, then column sums. */
static void box3_accumulate(float *out, const float *in, int planes, int H, int W, float scale) {
    #pragma omp parallel
    {
        float *rows = xmalloc((size_t)H * W * sizeof *rows);
        #pragma omp for schedule(static)
        for (int pl = 0; pl < planes; pl++) {
            const float *src = in + (int64_t)pl * H * W;
            float *dst = out + (int64_t)pl * H * W;
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
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, N, K, C, 1.0f, in, N, weight, C, 1.0f,
                logits, K);
}

void linear_backward(float *din, float *dweight, float *dbias, const float *dlogits,
                     const float *in, const float *weight, int C, int N, int K) {
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) dbias[k] += dlogits[(int64_t)n * K + k];
    /* dweight [K, C] += dlogits^T [K, N] in^T [N, C] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, K, C, N, 1.0f, dlogits, K, in, N, 1.0f,
                dweight, C);
    /* din [C, N] += weight^T [C, K] dlogits^T [K, N] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, C, N, K, 1.0f, weight, C, dlogits, K, 1.0f,
                din, N);
}

double softmax_xent(float *dlogits, const float *logits, const int64_t *labels, int N, int K,
                    float scale) {
    double total = 0;
    for (int n = 0; n < N; n++) {
        const float *z = logits + (int64_t)n * K;
        float mx = z[0];
        for (int k = 1; k < K; k++) if (z[k] > mx) mx = z[k];
        double sum = 0;
        for (int k = 0; k < K; k++) sum += exp((double)(z[k] - mx));
        double lse = mx + log(sum);
        total += lse - z[labels[n]];
        if (!dlogits) continue;
        float *d = dlogits + (int64_t)n * K;
        for (int k = 0; k < K; k++)
            d[k] = scale * (float)(exp((double)z[k] - lse) - (k == labels[n])) / N;
    }
    return total / N;
}

void sgd_update(float *w, const float *g, float *buf, size_t n, float lr, float momentum, float wd) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        buf[i] = momentum * buf[i] + (g[i] + wd * w[i]);
        w[i] -= lr * buf[i];
    }
}
