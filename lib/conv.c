/* conv.c - convolutions (declared in layers.h), run one of three ways by shape.
 *
 * Stride 1, 3x3, 5x5, 1x3, 3x1, 1x7 or 7x1 over 16 channels or more:
 *   Winograd's minimal filtering, in winograd.c.
 * By batch: one GEMM [cout, cin*kh*kw] x [cin*kh*kw, N*Ho*Wo] over columns
 *   gathered (im2col) a chunk of images at a time.
 * By image, shifted: a stride-1 convolution over wide rows gathers nothing.
 *   The padded image is a [cin, Hp*Wp] matrix in which kernel tap (ki, kj) is
 *   the shift ki*Wp + kj, so the convolution is kh*kw GEMMs of the tap's
 *   [cout, cin] weights by shifted views, over Ho rows of Wp columns; the kw-1
 *   columns past Wo in each row read across the row's end and are dropped.
 *   Images go to threads, each GEMM (in cache) to one thread. d(weight) sums
 *   per thread, then over threads in thread order: the same bits for the same
 *   thread count. Gathering each image's own columns the same way measured
 *   slower than by batch at 14x14, and one image at 6x6 is too little work.
 *
 * d(input) of a stride-1 convolution is itself a convolution: of d(output),
 * with the kernel flipped and its in/out channels swapped, padded by k-1-p,
 * so one GEMM writes d(input) directly. Strided ones scatter columns back
 * (col2im).
 *
 * Also here: avgpool 3x3 then a convolution, pooled image by image while
 * padding (Inception-A's pool branch), and 1x1 convolutions of one input
 * stacked into one GEMM. */
#include "conv.h"
#include "profile.h"
#include "winograd.h"
#include "gemm.h"
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
static int omp_get_num_threads(void) { return 1; }
#endif

/* Floats of im2col per chunk of images: 8 MB ran fastest of 2 to 128 MB (make bench). */
#define SCRATCH_TARGET ((size_t)1 << 21)

enum { BY_BATCH, BY_IMAGE_SHIFTED, BY_WINOGRAD };

int conv_is_pointwise(const ConvShape *cs) {
    return cs->kh == 1 && cs->kw == 1 && cs->sh == 1 && cs->sw == 1 && cs->ph == 0 && cs->pw == 0;
}

static int is_transposable(const ConvShape *cs) {
    return cs->sh == 1 && cs->sw == 1 && cs->ph < cs->kh && cs->pw < cs->kw;
}

static ConvShape transposed_shape(const ConvShape *cs) {
    return (ConvShape){ cs->cout, cs->cin, cs->kh, cs->kw, 1, 1, cs->kh - 1 - cs->ph,
                        cs->kw - 1 - cs->pw };
}

static size_t kernel_floats(const ConvShape *cs) {
    return (size_t)cs->cout * cs->cin * cs->kh * cs->kw;
}

static int conv_path(const ConvShape *cs, int H, int W) {
    if (winograd_applies(cs, H, W)) return BY_WINOGRAD;
    int Ho = conv_out(H, cs->kh, cs->sh, cs->ph), Wo = conv_out(W, cs->kw, cs->sw, cs->pw);
    /* shifted: at most 15% of columns wasted, both ways, and GEMMs of 256 columns or more */
    if (is_transposable(cs) && 100 * (cs->kw - 1) <= 15 * Wo && 100 * (cs->kw - 1) <= 15 * W &&
        Ho * (W + 2 * cs->pw) >= 256)
        return BY_IMAGE_SHIFTED;
    return BY_BATCH;
}

/* Images per im2col chunk: enough for large GEMMs, bounded scratch. */
static int chunk_images(const ConvShape *cs, int N, int Ho, int Wo) {
    size_t per = (size_t)cs->cin * cs->kh * cs->kw * Ho * Wo;
    size_t n = SCRATCH_TARGET / (per ? per : 1);
    if (n < 1) n = 1;
    return n > (size_t)N ? N : (int)n;
}

/* [lo, hi): the outputs ox of a row whose kernel column kj reads inside the
 * image, 0 <= ox*sw - pw + kj < W; the rest read padding. Found once per row,
 * the loops over them have no test per element. */
static void inside_run(const ConvShape *cs, int kj, int W, int Wo, int *lo, int *hi) {
    int first = kj - cs->pw;                          /* the column output 0 reads */
    *lo = first < 0 ? (-first + cs->sw - 1) / cs->sw : 0;
    *hi = W - 1 - first < 0 ? 0 : (W - 1 - first) / cs->sw + 1;
    if (*hi > Wo) *hi = Wo;
    if (*lo > *hi) *lo = *hi;
}

/* dst [Ho, W] = rows of the plane [H, W] shifted by ki - ph rows and kj - pw
 * columns, zero where that reads padding: a stride-1 convolution's im2col
 * row for tap (ki, kj) when Wo = W. Its rows inside the plane are one
 * contiguous run of the plane, shifted; only the lo + W - hi columns at the
 * edges (read across a row's end) are set to zero after. */
static void shifted_plane(float *dst, const float *plane, const ConvShape *cs, int H, int W, int Ho,
                          int ki, int kj, int lo, int hi) {
    int oy0 = cs->ph - ki > 0 ? cs->ph - ki : 0, oy1 = H + cs->ph - ki < Ho ? H + cs->ph - ki : Ho;
    if (oy1 < oy0) oy1 = oy0;
    memset(dst, 0, (size_t)oy0 * W * sizeof *dst);
    memset(dst + (int64_t)oy1 * W, 0, (size_t)(Ho - oy1) * W * sizeof *dst);
    if (oy1 == oy0) return;
    int64_t start = (int64_t)(oy0 - cs->ph + ki) * W + kj - cs->pw, count = (int64_t)(oy1 - oy0) * W;
    int64_t k_lo = start < 0 ? -start : 0, k_hi = (int64_t)H * W - start < count ? (int64_t)H * W - start : count;
    memcpy(dst + (int64_t)oy0 * W + k_lo, plane + start + k_lo, (k_hi - k_lo) * sizeof *dst);
    for (int oy = oy0; oy < oy1; oy++) {
        float *r = dst + (int64_t)oy * W;
        for (int ox = 0; ox < lo; ox++) r[ox] = 0.0f;
        for (int ox = hi; ox < W; ox++) r[ox] = 0.0f;
    }
}

/* col [cin*kh*kw, nc*Ho*Wo] from images n0..n0+nc of in [cin, N, H, W]; on
 * threads by row of col (a 3-channel input still has 27 rows to share). */
static void im2col(float *col, const float *in, const ConvShape *cs, int N, int H, int W,
                   int n0, int nc, int Ho, int Wo) {
    const int64_t L = (int64_t)nc * Ho * Wo;
    const int taps = cs->kh * cs->kw, by_plane = cs->sh == 1 && cs->sw == 1 && Wo == W;
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < cs->cin * taps; r++) {
        int ci = r / taps, ki = r % taps / cs->kw, kj = r % cs->kw, lo, hi;
        inside_run(cs, kj, W, Wo, &lo, &hi);
        float *row = col + (int64_t)r * L;
        for (int n = 0; n < nc; n++) {
            const float *plane = in + ((int64_t)ci * N + n0 + n) * H * W;
            if (by_plane) {
                shifted_plane(row + (int64_t)n * Ho * Wo, plane, cs, H, W, Ho, ki, kj, lo, hi);
                continue;
            }
            for (int oy = 0; oy < Ho; oy++) {
                float *dst = row + ((int64_t)n * Ho + oy) * Wo;
                int iy = oy * cs->sh - cs->ph + ki;
                if (iy < 0 || iy >= H) { memset(dst, 0, Wo * sizeof *dst); continue; }
                const float *src = plane + (int64_t)iy * W + kj - cs->pw;
                memset(dst, 0, lo * sizeof *dst);
                if (cs->sw == 1) memcpy(dst + lo, src + lo, (hi - lo) * sizeof *dst);
                else for (int ox = lo; ox < hi; ox++) dst[ox] = src[ox * cs->sw];
                memset(dst + hi, 0, (Wo - hi) * sizeof *dst);
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
                        float *dst = plane + (int64_t)iy * W + kj - cs->pw;
                        int lo, hi;
                        inside_run(cs, kj, W, Wo, &lo, &hi);
                        if (cs->sw == 1) for (int ox = lo; ox < hi; ox++) dst[ox] += src[ox];
                        else for (int ox = lo; ox < hi; ox++) dst[ox * cs->sw] += src[ox];
                    }
                }
            }
}

/* The transposed convolution's weights: flipped [cin, cout*kh*kw], each
 * kernel turned 180 degrees, or (taps) [kh*kw][cin][cout] for the shifted
 * path; unflipped taps [kh*kw][cout][cin]. */
enum { FLIPPED, FLIPPED_TAPS, TAPS };
static void rearrange_kernel(float *to, const float *weight, const ConvShape *cs, int how) {
    int kk = cs->kh * cs->kw;
    #pragma omp parallel for schedule(static)
    for (int ci = 0; ci < cs->cin; ci++)
        for (int co = 0; co < cs->cout; co++)
            for (int k = 0; k < kk; k++) {
                float w = weight[((int64_t)co * cs->cin + ci) * kk + k];
                if (how == FLIPPED) to[((int64_t)ci * cs->cout + co) * kk + kk - 1 - k] = w;
                else if (how == FLIPPED_TAPS) to[((int64_t)(kk - 1 - k) * cs->cin + ci) * cs->cout + co] = w;
                else to[((int64_t)k * cs->cout + co) * cs->cin + ci] = w;
            }
}

/* ---- by image, shifted ---- */

/* Floats of one image's padded input, with room for the last row's overrun. */
static size_t padded_floats(const ConvShape *cs, int H, int W) {
    return (size_t)cs->cin * (H + 2 * cs->ph) * (W + 2 * cs->pw) + cs->kw;
}

/* xp [cin, H+2ph, W+2pw] (then kw zeros) = image in [cin, H, W], channel rows
 * `stride` apart, or (pool, 2*H*W floats of scratch: else NULL) its avgpool
 * 3x3 s1 p1. */
static void pad_image(float *xp, const float *in, int64_t stride, const ConvShape *cs, int H, int W,
                      float *pool) {
    int Hp = H + 2 * cs->ph, Wp = W + 2 * cs->pw;
    for (int ci = 0; ci < cs->cin; ci++) {
        float *plane = xp + (int64_t)ci * Hp * Wp;
        const float *src = in + ci * stride;
        if (pool) src = avgpool3_plane(pool, src, H, W);
        memset(plane, 0, (size_t)cs->ph * Wp * sizeof *plane);
        for (int y = 0; y < H; y++) {
            float *row = plane + (int64_t)(y + cs->ph) * Wp;
            memset(row, 0, cs->pw * sizeof *row);
            memcpy(row + cs->pw, src + (int64_t)y * W, W * sizeof *row);
            memset(row + cs->pw + W, 0, cs->pw * sizeof *row);
        }
        memset(plane + (int64_t)(cs->ph + H) * Wp, 0, (size_t)cs->ph * Wp * sizeof *plane);
    }
    memset(xp + (int64_t)cs->cin * Hp * Wp, 0, cs->kw * sizeof *xp);
}

/* One image: out [cout, Ho, Wo] (+)= the convolution of in [cin, H, W] by
 * taps [kh*kw][cout][cin]; channel rows out_stride and in_stride apart. */
static void shifted_image(float *out, int64_t out_stride, const float *in, int64_t in_stride,
                          const float *taps, const ConvShape *cs, int H, int W, int accumulate,
                          float *xp, float *yp, float *pool, GemmPass pass) {
    int Hp = H + 2 * cs->ph, Wp = W + 2 * cs->pw, Ho = Hp - cs->kh + 1, Wo = Wp - cs->kw + 1;
    int64_t n = (int64_t)Ho * Wp;
    pad_image(xp, in, in_stride, cs, H, W, pool);
    for (int t = 0; t < cs->kh * cs->kw; t++)
        gemm(GEMM_SHIFTED, pass, 0, 0, cs->cout, n, cs->cin, taps + (int64_t)t * cs->cout * cs->cin, cs->cin,
             xp + (int64_t)(t / cs->kw) * Wp + t % cs->kw, (int64_t)Hp * Wp, t ? 1.0f : 0.0f, yp, n);
    for (int co = 0; co < cs->cout; co++)
        for (int oy = 0; oy < Ho; oy++) {
            float *dst = out + co * out_stride + (int64_t)oy * Wo;
            const float *src = yp + co * n + (int64_t)oy * Wp;
            if (accumulate) for (int ox = 0; ox < Wo; ox++) dst[ox] += src[ox];
            else memcpy(dst, src, Wo * sizeof *dst);
        }
}

/* Each thread's buffers: d(weight) [kh*kw][cout][cin], the padded image,
 * output or d(output) rows, the transposed pass's padded d(output) and
 * d(input) rows, and with a pool first: a plane pooled and its row sums,
 * and the pooled image's d(input). */
static size_t image_thread_floats(const ConvShape *cs, int H, int W, int pooled) {
    int Ho = conv_out(H, cs->kh, 1, cs->ph), Wo = conv_out(W, cs->kw, 1, cs->pw);
    ConvShape ts = transposed_shape(cs);
    return kernel_floats(cs) + padded_floats(cs, H, W) + (size_t)cs->cout * Ho * (W + 2 * cs->pw) +
           padded_floats(&ts, Ho, Wo) + (size_t)cs->cin * H * (Wo + 2 * ts.pw) +
           (pooled ? (size_t)(2 + cs->cin) * H * W : 0);
}

/* The pool's buffers, at the end of a thread's: a plane and its row sums, then d(input). */
static float *pool_buffers(float *thread, const ConvShape *cs, int H, int W) {
    return thread + image_thread_floats(cs, H, W, 0);
}

/* Forward: columns of the input, a chunk at a time. Backward: those, or
 * columns of d(output) followed by the flipped kernel, or (strided) two sets
 * of input columns. By image: the rearranged kernel, then each thread's
 * buffers at the current thread count. */
size_t conv_scratch_floats(const ConvShape *cs, int N, int H, int W) {
    if (conv_is_pointwise(cs)) return 0;
    if (conv_path(cs, H, W) == BY_WINOGRAD) return winograd_scratch_floats(cs, N, H, W);
    if (conv_path(cs, H, W) == BY_IMAGE_SHIFTED)
        return kernel_floats(cs) + (size_t)max_threads() * image_thread_floats(cs, H, W, 0);
    int Ho = conv_out(H, cs->kh, cs->sh, cs->ph), Wo = conv_out(W, cs->kw, cs->sw, cs->pw);
    size_t col = (size_t)cs->cin * cs->kh * cs->kw * chunk_images(cs, N, Ho, Wo) * Ho * Wo;
    if (!is_transposable(cs)) return col;
    ConvShape ts = transposed_shape(cs);
    size_t dcol = (size_t)ts.cin * ts.kh * ts.kw * chunk_images(&ts, N, H, W) * H * W;
    return (col > dcol ? col : dcol) + kernel_floats(cs);
}

/* ---- by image ---- */

static void image_forward(float *out, const float *in, const float *weight, const ConvShape *cs,
                          int N, int H, int W, float *scratch, int pooled) {
    int Ho = conv_out(H, cs->kh, 1, cs->ph), Wo = conv_out(W, cs->kw, 1, cs->pw);
    size_t per_thread = image_thread_floats(cs, H, W, pooled);
    float *taps = scratch, *threads = scratch + kernel_floats(cs);
    rearrange_kernel(taps, weight, cs, TAPS);
    #pragma omp parallel num_threads(max_threads())
    {
        float *thread = threads + omp_get_thread_num() * per_thread, *xp = thread + kernel_floats(cs);
        float *pool = pooled ? pool_buffers(thread, cs, H, W) : NULL;
        #pragma omp for schedule(static)
        for (int i = 0; i < N; i++)
            shifted_image(out + (int64_t)i * Ho * Wo, (int64_t)N * Ho * Wo, in + (int64_t)i * H * W,
                          (int64_t)N * H * W, taps, cs, H, W, 0, xp, xp + padded_floats(cs, H, W), pool,
                          GEMM_FORWARD);
    }
}

/* Image i: dw [kh*kw][cout][cin] += its d(weight), din += its d(input);
 * pool: the pool's buffers where a pool comes first, else NULL. */
static void image_backward_one(float *din, float *dw, const float *dout, const float *in,
                               const float *flipped_taps, const ConvShape *cs, int N, int H, int W,
                               int i, float *buf, float *pool) {
    int Ho = conv_out(H, cs->kh, 1, cs->ph), Wo = conv_out(W, cs->kw, 1, cs->pw);
    int Hp = H + 2 * cs->ph, Wp = W + 2 * cs->pw;
    int64_t n = (int64_t)Ho * Wp, out_stride = (int64_t)N * Ho * Wo, in_stride = (int64_t)N * H * W;
    const float *dout_i = dout + (int64_t)i * Ho * Wo;
    ConvShape ts = transposed_shape(cs);
    float *xp = buf, *dy = xp + padded_floats(cs, H, W), *tp = dy + (size_t)cs->cout * n;
    pad_image(xp, in + (int64_t)i * H * W, in_stride, cs, H, W, pool);
    for (int co = 0; co < cs->cout; co++)        /* d(output) rows, zero past Wo */
        for (int oy = 0; oy < Ho; oy++) {
            float *row = dy + co * n + (int64_t)oy * Wp;
            memcpy(row, dout_i + co * out_stride + (int64_t)oy * Wo, Wo * sizeof *row);
            memset(row + Wo, 0, (Wp - Wo) * sizeof *row);
        }
    for (int t = 0; t < cs->kh * cs->kw; t++)
        gemm(GEMM_SHIFTED, GEMM_DWEIGHT, 0, 1, cs->cout, cs->cin, n, dy, n,
             xp + (int64_t)(t / cs->kw) * Wp + t % cs->kw, (int64_t)Hp * Wp, 1.0f,
             dw + (int64_t)t * cs->cout * cs->cin, cs->cin);
    if (!din) return;
    if (!pool) {
        shifted_image(din + (int64_t)i * H * W, in_stride, dout_i, out_stride, flipped_taps, &ts, Ho,
                      Wo, 1, tp, tp + padded_floats(&ts, Ho, Wo), NULL, GEMM_DINPUT);
        return;
    }
    float *dpooled = pool + (size_t)2 * H * W;    /* d(pooled image), then back through the pool */
    memset(dpooled, 0, (size_t)cs->cin * H * W * sizeof *dpooled);
    shifted_image(dpooled, (int64_t)H * W, dout_i, out_stride, flipped_taps, &ts, Ho, Wo, 1, tp,
                  tp + padded_floats(&ts, Ho, Wo), NULL, GEMM_DINPUT);
    for (int ci = 0; ci < cs->cin; ci++)
        box3_plane(din + ci * in_stride + (int64_t)i * H * W, dpooled + (size_t)ci * H * W, H, W,
                   1.0f / 9.0f, pool);
}

static void image_backward(float *din, float *dweight, const float *dout, const float *in,
                           const float *weight, const ConvShape *cs, int N, int H, int W,
                           float *scratch, int pooled) {
    int kk = cs->kh * cs->kw, team = 1;
    size_t kernel = kernel_floats(cs), per_thread = image_thread_floats(cs, H, W, pooled);
    float *flipped_taps = scratch, *threads = scratch + kernel;
    if (din) rearrange_kernel(flipped_taps, weight, cs, FLIPPED_TAPS);
    #pragma omp parallel num_threads(max_threads())
    {
        #pragma omp single
        team = omp_get_num_threads();
        float *dw = threads + omp_get_thread_num() * per_thread;
        float *pool = pooled ? pool_buffers(dw, cs, H, W) : NULL;
        memset(dw, 0, kernel * sizeof *dw);
        #pragma omp for schedule(static)
        for (int i = 0; i < N; i++)
            image_backward_one(din, dw, dout, in, flipped_taps, cs, N, H, W, i, dw + kernel, pool);
    }
    #pragma omp parallel for schedule(static)
    for (int co = 0; co < cs->cout; co++)
        for (int t = 0; t < team; t++) {
            const float *dw = threads + t * per_thread;
            for (int ci = 0; ci < cs->cin; ci++)
                for (int k = 0; k < kk; k++)
                    dweight[((int64_t)co * cs->cin + ci) * kk + k] += dw[((int64_t)k * cs->cout + co) * cs->cin + ci];
        }
}

/* ---- a pool, then the convolution ---- */

/* Image by image (Winograd, or shifted) the pool is made in cache and never kept; over
 * images too small for those paths (smaller crops than the network is made for) the
 * pooled input is made whole in scratch and convolved by batch. */
static void require_pooled_shape(const ConvShape *cs) {
    if (conv_is_pointwise(cs)) die("internal: a 1x1 convolution cannot take its pool image by image");
}

static size_t pooled_input_floats(const ConvShape *cs, int N, int H, int W) {
    return (size_t)cs->cin * N * H * W;
}

size_t conv_pooled_scratch_floats(const ConvShape *cs, int N, int H, int W) {
    require_pooled_shape(cs);
    int path = conv_path(cs, H, W);
    if (path == BY_WINOGRAD) return winograd_scratch_floats(cs, N, H, W);
    if (path == BY_BATCH) return pooled_input_floats(cs, N, H, W) + conv_scratch_floats(cs, N, H, W);
    return kernel_floats(cs) + (size_t)max_threads() * image_thread_floats(cs, H, W, 1);
}

void conv_pooled_forward(float *out, const float *in, const float *weight, const ConvShape *cs,
                         int N, int H, int W, float *scratch) {
    require_pooled_shape(cs);
    int path = conv_path(cs, H, W);
    if (path == BY_WINOGRAD) winograd_forward(out, in, weight, cs, N, H, W, scratch, 1);
    else if (path == BY_IMAGE_SHIFTED) image_forward(out, in, weight, cs, N, H, W, scratch, 1);
    else {
        float *pooled = scratch;
        avgpool_forward(pooled, in, cs->cin * N, H, W, 3, 1, 1);
        conv_forward(out, pooled, weight, cs, N, H, W, pooled + pooled_input_floats(cs, N, H, W));
    }
}

void conv_pooled_backward(float *din, float *dweight, const float *dout, const float *in,
                          const float *weight, const ConvShape *cs, int N, int H, int W,
                          float *scratch) {
    require_pooled_shape(cs);
    int path = conv_path(cs, H, W);
    if (path == BY_WINOGRAD) winograd_backward(din, dweight, dout, in, weight, cs, N, H, W, scratch, 1);
    else if (path == BY_IMAGE_SHIFTED) image_backward(din, dweight, dout, in, weight, cs, N, H, W, scratch, 1);
    else {      /* scratch: the pooled input, its gradient, the convolution's own */
        size_t n = pooled_input_floats(cs, N, H, W);
        float *pooled = scratch, *dpooled = din ? scratch + n : NULL;
        avgpool_forward(pooled, in, cs->cin * N, H, W, 3, 1, 1);
        if (dpooled) zero_floats(dpooled, n);
        conv_backward(dpooled, dweight, dout, pooled, weight, cs, N, H, W, scratch + 2 * n);
        if (din) avgpool_backward(din, dpooled, cs->cin * N, H, W, 3, 1, 1);
    }
}

/* ---- by batch ---- */

/* din [cin, N, H, W] += the transposed convolution of dout [cout, N, Ho, Wo] */
static void transposed_backward(float *din, const float *dout, const float *weight,
                                const ConvShape *cs, int N, int H, int W, float *scratch) {
    int Ho = conv_out(H, cs->kh, 1, cs->ph), Wo = conv_out(W, cs->kw, 1, cs->pw);
    ConvShape ts = transposed_shape(cs);
    int K = cs->cout * cs->kh * cs->kw, step = chunk_images(&ts, N, H, W);
    int64_t L = (int64_t)N * H * W;
    float *col = scratch, *flipped = scratch + conv_scratch_floats(cs, N, H, W) - kernel_floats(cs);
    rearrange_kernel(flipped, weight, cs, FLIPPED);
    for (int n0 = 0; n0 < N; n0 += step) {
        int nc = N - n0 < step ? N - n0 : step;
        prof_push(PROF_IM2COL);
        im2col(col, dout, &ts, N, Ho, Wo, n0, nc, H, W);
        prof_pop();
        gemm(GEMM_IM2COL, GEMM_DINPUT, 0, 0, cs->cin, (int64_t)nc * H * W, K, flipped, K, col,
             (int64_t)nc * H * W, 1.0f, din + (int64_t)n0 * H * W, L);
    }
}

void conv_forward(float *out, const float *in, const float *weight, const ConvShape *cs,
                  int N, int H, int W, float *scratch) {
    int Ho = conv_out(H, cs->kh, cs->sh, cs->ph), Wo = conv_out(W, cs->kw, cs->sw, cs->pw);
    int64_t L = (int64_t)N * Ho * Wo;
    if (conv_is_pointwise(cs)) {
        gemm(GEMM_POINTWISE, GEMM_FORWARD, 0, 0, cs->cout, L, cs->cin, weight, cs->cin, in, L, 0.0f, out, L);
        return;
    }
    if (conv_path(cs, H, W) == BY_WINOGRAD) { winograd_forward(out, in, weight, cs, N, H, W, scratch, 0); return; }
    if (conv_path(cs, H, W) == BY_IMAGE_SHIFTED) { image_forward(out, in, weight, cs, N, H, W, scratch, 0); return; }
    int K = cs->cin * cs->kh * cs->kw, step = chunk_images(cs, N, Ho, Wo);
    for (int n0 = 0; n0 < N; n0 += step) {
        int nc = N - n0 < step ? N - n0 : step;
        prof_push(PROF_IM2COL);
        im2col(scratch, in, cs, N, H, W, n0, nc, Ho, Wo);
        prof_pop();
        gemm(GEMM_IM2COL, GEMM_FORWARD, 0, 0, cs->cout, nc * Ho * Wo, K, weight, K, scratch, nc * Ho * Wo,
             0.0f, out + (int64_t)n0 * Ho * Wo, L);
    }
}

void conv_backward(float *din, float *dweight, const float *dout, const float *in,
                   const float *weight, const ConvShape *cs, int N, int H, int W, float *scratch) {
    int Ho = conv_out(H, cs->kh, cs->sh, cs->ph), Wo = conv_out(W, cs->kw, cs->sw, cs->pw);
    int64_t L = (int64_t)N * Ho * Wo;
    if (conv_is_pointwise(cs)) {
        gemm(GEMM_POINTWISE, GEMM_DWEIGHT, 0, 1, cs->cout, cs->cin, L, dout, L, in, L, 1.0f, dweight, cs->cin);
        if (din)
            gemm(GEMM_POINTWISE, GEMM_DINPUT, 1, 0, cs->cin, L, cs->cout, weight, cs->cin, dout, L, 1.0f, din, L);
        return;
    }
    if (conv_path(cs, H, W) == BY_WINOGRAD) {
        winograd_backward(din, dweight, dout, in, weight, cs, N, H, W, scratch, 0);
        return;
    }
    if (conv_path(cs, H, W) == BY_IMAGE_SHIFTED) {
        image_backward(din, dweight, dout, in, weight, cs, N, H, W, scratch, 0);
        return;
    }
    int K = cs->cin * cs->kh * cs->kw, step = chunk_images(cs, N, Ho, Wo);
    int transposed = din && is_transposable(cs);
    float *col = scratch, *dcol = scratch + conv_scratch_floats(cs, N, H, W);
    for (int n0 = 0; n0 < N; n0 += step) {
        int nc = N - n0 < step ? N - n0 : step;
        int64_t Lc = (int64_t)nc * Ho * Wo;
        const float *dchunk = dout + (int64_t)n0 * Ho * Wo;
        prof_push(PROF_IM2COL);
        im2col(col, in, cs, N, H, W, n0, nc, Ho, Wo);
        prof_pop();
        gemm(GEMM_IM2COL, GEMM_DWEIGHT, 0, 1, cs->cout, K, Lc, dchunk, L, col, Lc, 1.0f, dweight, K);
        if (!din || transposed) continue;
        gemm(GEMM_IM2COL, GEMM_DINPUT, 1, 0, K, Lc, cs->cout, weight, K, dchunk, L, 0.0f, dcol, Lc);
        prof_push(PROF_IM2COL);
        col2im(din, dcol, cs, N, H, W, n0, nc, Ho, Wo);
        prof_pop();
    }
    if (transposed) transposed_backward(din, dout, weight, cs, N, H, W, scratch);
}

/* ---- 1x1 convolutions of one input as one GEMM ---- */

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
        gemm(GEMM_POINTWISE, GEMM_FORWARD, 0, 0, rows, n, cin, weight, cin, in + c0, L, 0.0f, scratch, n);
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
        gemm(GEMM_POINTWISE, GEMM_DWEIGHT, 0, 1, rows, cin, n, scratch, n, in + c0, L, 1.0f, dweight, cin);
        if (din)
            gemm(GEMM_POINTWISE, GEMM_DINPUT, 1, 0, cin, n, rows, weight, cin, scratch, n, 1.0f, din + c0, L);
    }
}
