/* winograd.c - 3x3 stride-1 convolutions by Winograd's F(2x2, 3x3).
 *
 * Each 2x2 block ("tile") of the output comes from the 4x4 patch of the padded
 * input at twice its position: Y = A' [(G g G') . (B' d B)] A, with the
 * elementwise product summed over input channels. For each of the 16 points
 * xi of the 4x4 transform domain that sum is a GEMM, U_xi [cout, cin] by
 * V_xi [cin, tiles]: 16*cout*cin multiply-adds per tile where a direct 3x3
 * convolution spends 36*cout*cin, and K = cin where im2col has 9*cin.
 * The transforms are small integers and halves, so the rounding stays that of
 * a reordered sum.
 *
 * Backward differentiates these very steps (so it is the exact gradient of
 * the forward): dM = A dY A' per tile, dU_xi = dM_xi V_xi' and
 * dV_xi = U_xi' dM_xi as GEMMs, then dg = G' dU G and dd = B dV B' added
 * into d(input) where the patches overlap. V is made again, not kept.
 *
 * Tiles go in chunks of whole images through scratch; transforms run on
 * threads by (channel, image) plane, and the 16 GEMMs of a chunk on threads
 * one whole GEMM each (faster than each GEMM split over threads, as they are
 * small): the same bits at any thread count. */
#include "winograd.h"
#include <cblas.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
#endif

enum { XI = 16 };                               /* points of the transform domain */

/* Floats of V and M (or dM) per chunk: 16 MB ran best of 4 to 64 MB (make bench). */
#define CHUNK_TARGET ((size_t)1 << 22)

typedef struct {
    int th, tw;            /* tiles per image: down, across */
    int Hp, Wp;            /* padded plane covering every tile's 4x4 patch */
    int Ho, Wo;
} Tiling;

static Tiling tiling(const ConvShape *cs, int H, int W) {
    Tiling t;
    t.Ho = conv_out(H, 3, 1, cs->ph);
    t.Wo = conv_out(W, 3, 1, cs->pw);
    t.th = (t.Ho + 1) / 2;
    t.tw = (t.Wo + 1) / 2;
    t.Hp = 2 * t.th + 2;
    t.Wp = 2 * t.tw + 2;
    return t;
}

int winograd_applies(const ConvShape *cs, int H, int W) {
    return cs->kh == 3 && cs->kw == 3 && cs->sh == 1 && cs->sw == 1 && cs->ph <= 2 &&
           cs->pw <= 2 && cs->cin >= 48 && conv_out(H, 3, 1, cs->ph) >= 2 &&
           conv_out(W, 3, 1, cs->pw) >= 2;
}

static int chunk_images(const ConvShape *cs, const Tiling *t, int N) {
    size_t per = (size_t)XI * (cs->cin + cs->cout) * t->th * t->tw;
    size_t n = CHUNK_TARGET / per;
    if (n < 1) n = 1;
    return n > (size_t)N ? N : (int)n;
}

/* A thread's planes: the padded patch plane, then a plane and row sums for the pool. */
static size_t thread_floats(const Tiling *t, int H, int W) {
    return (size_t)t->Hp * t->Wp + 2 * (size_t)H * W;
}

/* Layout of scratch: U (or, backward, U then dU), V, M, the threads' planes. */
typedef struct { float *u, *du, *v, *m, *threads; } Scratch;

static Scratch carve(float *scratch, const ConvShape *cs, const Tiling *t, int N, int backward) {
    size_t kernel = (size_t)XI * cs->cout * cs->cin, tiles = (size_t)chunk_images(cs, t, N) * t->th * t->tw;
    Scratch s;
    s.u = scratch;
    s.du = backward ? s.u + kernel : NULL;
    s.v = s.u + (backward ? 2 : 1) * kernel;
    s.m = s.v + XI * (size_t)cs->cin * tiles;
    s.threads = s.m + XI * (size_t)cs->cout * tiles;
    return s;
}

size_t winograd_scratch_floats(const ConvShape *cs, int N, int H, int W) {
    Tiling t = tiling(cs, H, W);
    size_t tiles = (size_t)chunk_images(cs, &t, N) * t.th * t.tw;
    return (size_t)XI * cs->cout * cs->cin + XI * (size_t)(cs->cin + cs->cout) * tiles +
           (size_t)max_threads() * thread_floats(&t, H, W);
}

/* U [16][cout][cin] = G g G' of weight [cout, cin, 3, 3] */
static void transform_kernel(float *u, const float *weight, const ConvShape *cs) {
    int64_t plane = (int64_t)cs->cout * cs->cin;
    #pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < plane; k++) {
        const float *g = weight + k * 9;
        float r[4][3];                            /* G g: rows of the 4x3 */
        for (int b = 0; b < 3; b++) {
            r[0][b] = g[b];
            r[1][b] = 0.5f * (g[b] + g[3 + b] + g[6 + b]);
            r[2][b] = 0.5f * (g[b] - g[3 + b] + g[6 + b]);
            r[3][b] = g[6 + b];
        }
        for (int i = 0; i < 4; i++) {
            u[(4 * i + 0) * plane + k] = r[i][0];
            u[(4 * i + 1) * plane + k] = 0.5f * (r[i][0] + r[i][1] + r[i][2]);
            u[(4 * i + 2) * plane + k] = 0.5f * (r[i][0] - r[i][1] + r[i][2]);
            u[(4 * i + 3) * plane + k] = r[i][2];
        }
    }
}

/* dweight [cout, cin, 3, 3] += G' dU G of du [16][cout][cin] */
static void transform_kernel_backward(float *dweight, const float *du, const ConvShape *cs) {
    int64_t plane = (int64_t)cs->cout * cs->cin;
    #pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < plane; k++) {
        float r[4][3];                            /* dU G: rows of the 4x3 */
        for (int i = 0; i < 4; i++) {
            float d0 = du[(4 * i) * plane + k], d1 = du[(4 * i + 1) * plane + k];
            float d2 = du[(4 * i + 2) * plane + k], d3 = du[(4 * i + 3) * plane + k];
            r[i][0] = d0 + 0.5f * (d1 + d2);
            r[i][1] = 0.5f * (d1 - d2);
            r[i][2] = 0.5f * (d1 + d2) + d3;
        }
        float *g = dweight + k * 9;
        for (int b = 0; b < 3; b++) {
            g[b] += r[0][b] + 0.5f * (r[1][b] + r[2][b]);
            g[3 + b] += 0.5f * (r[1][b] - r[2][b]);
            g[6 + b] += 0.5f * (r[1][b] + r[2][b]) + r[3][b];
        }
    }
}

/* The padded plane of one input channel of one image (plane [H, W]), or of
 * its avgpool 3x3 s1 p1 when pool (2*H*W floats) is given. */
static void pad_plane(float *pp, const float *plane, const ConvShape *cs, const Tiling *t, int H,
                      int W, float *pool) {
    if (pool) {
        memset(pool, 0, (size_t)H * W * sizeof *pool);
        box3_plane(pool, plane, H, W, 1.0f / 9.0f, pool + (size_t)H * W);
        plane = pool;
    }
    memset(pp, 0, (size_t)t->Hp * t->Wp * sizeof *pp);
    for (int y = 0; y < H; y++)
        memcpy(pp + (int64_t)(y + cs->ph) * t->Wp + cs->pw, plane + (int64_t)y * W, W * sizeof *pp);
}

/* v: the chunk's V [16][cin][T] at channel ci, tile t0 = this image's first:
 * B' d B of every 4x4 patch of the padded plane. */
static void transform_input(float *v, int64_t xi_stride, const float *pp, const Tiling *t) {
    float c[4][t->Wp];                            /* B' d: the rows combined, per column */
    for (int ty = 0; ty < t->th; ty++) {
        const float *r0 = pp + (int64_t)2 * ty * t->Wp, *r1 = r0 + t->Wp, *r2 = r1 + t->Wp, *r3 = r2 + t->Wp;
        for (int x = 0; x < t->Wp; x++) {
            c[0][x] = r0[x] - r2[x];
            c[1][x] = r1[x] + r2[x];
            c[2][x] = r2[x] - r1[x];
            c[3][x] = r1[x] - r3[x];
        }
        float *out = v + (int64_t)ty * t->tw;
        for (int i = 0; i < 4; i++) {
            float *o0 = out + (4 * i) * xi_stride, *o1 = o0 + xi_stride, *o2 = o1 + xi_stride, *o3 = o2 + xi_stride;
            const float *a = c[i];
            for (int tx = 0; tx < t->tw; tx++) {
                const float *p = a + 2 * tx;
                o0[tx] = p[0] - p[2];
                o1[tx] = p[1] + p[2];
                o2[tx] = p[2] - p[1];
                o3[tx] = p[1] - p[3];
            }
        }
    }
}

/* dpp [Hp, Wp] += B dV B' of every tile's dV (as transform_input lays V out). */
static void transform_input_backward(float *dpp, const float *dv, int64_t xi_stride, const Tiling *t) {
    for (int ty = 0; ty < t->th; ty++) {
        float c[4][t->Wp];                        /* dV B', per row i of the domain */
        memset(c, 0, sizeof c);
        const float *in = dv + (int64_t)ty * t->tw;
        for (int i = 0; i < 4; i++) {
            const float *d0 = in + (4 * i) * xi_stride, *d1 = d0 + xi_stride, *d2 = d1 + xi_stride, *d3 = d2 + xi_stride;
            float *a = c[i];
            for (int tx = 0; tx < t->tw; tx++) {
                float *p = a + 2 * tx;
                p[0] += d0[tx];
                p[1] += d1[tx] - d2[tx] + d3[tx];
                p[2] += -d0[tx] + d1[tx] + d2[tx];
                p[3] -= d3[tx];
            }
        }
        float *r0 = dpp + (int64_t)2 * ty * t->Wp, *r1 = r0 + t->Wp, *r2 = r1 + t->Wp, *r3 = r2 + t->Wp;
        for (int x = 0; x < t->Wp; x++) {
            r0[x] += c[0][x];
            r1[x] += c[1][x] - c[2][x] + c[3][x];
            r2[x] += -c[0][x] + c[1][x] + c[2][x];
            r3[x] -= c[3][x];
        }
    }
}

/* out plane [Ho, Wo] = A' M A of every tile (m: M [16][cout][T] at this plane's tiles) */
static void transform_output(float *out, const float *m, int64_t xi_stride, const Tiling *t) {
    float c[2][4][t->tw];                         /* A' M: rows combined, per domain column */
    for (int ty = 0; ty < t->th; ty++) {
        const float *in = m + (int64_t)ty * t->tw;
        for (int j = 0; j < 4; j++) {
            const float *m0 = in + j * xi_stride, *m1 = m0 + 4 * xi_stride, *m2 = m1 + 4 * xi_stride, *m3 = m2 + 4 * xi_stride;
            for (int tx = 0; tx < t->tw; tx++) {
                c[0][j][tx] = m0[tx] + m1[tx] + m2[tx];
                c[1][j][tx] = m1[tx] - m2[tx] - m3[tx];
            }
        }
        for (int a = 0; a < 2 && 2 * ty + a < t->Ho; a++) {
            float *row = out + (int64_t)(2 * ty + a) * t->Wo;
            for (int tx = 0; tx < t->tw; tx++) {
                row[2 * tx] = c[a][0][tx] + c[a][1][tx] + c[a][2][tx];
                if (2 * tx + 1 < t->Wo) row[2 * tx + 1] = c[a][1][tx] - c[a][2][tx] - c[a][3][tx];
            }
        }
    }
}

/* dm [16][cout][T] at this plane's tiles = A dY A' of every tile of dout plane [Ho, Wo] */
static void transform_output_backward(float *dm, int64_t xi_stride, const float *dout, const Tiling *t) {
    for (int ty = 0; ty < t->th; ty++) {
        const float *y0 = dout + (int64_t)2 * ty * t->Wo;
        const float *y1 = 2 * ty + 1 < t->Ho ? y0 + t->Wo : NULL;
        float *o = dm + (int64_t)ty * t->tw;
        for (int tx = 0; tx < t->tw; tx++) {
            int x1 = 2 * tx + 1 < t->Wo;
            float a = y0[2 * tx], b = x1 ? y0[2 * tx + 1] : 0.0f;
            float c = y1 ? y1[2 * tx] : 0.0f, d = y1 && x1 ? y1[2 * tx + 1] : 0.0f;
            float col[2][4] = { { a, a + b, a - b, -b }, { c, c + d, c - d, -d } };
            for (int j = 0; j < 4; j++) {
                o[(0 + j) * xi_stride + tx] = col[0][j];
                o[(4 + j) * xi_stride + tx] = col[0][j] + col[1][j];
                o[(8 + j) * xi_stride + tx] = col[0][j] - col[1][j];
                o[(12 + j) * xi_stride + tx] = -col[1][j];
            }
        }
    }
}

/* V of images n0..n0+nc of in [cin, N, H, W] */
static void input_chunk(float *v, const float *in, const ConvShape *cs, const Tiling *t, int N,
                        int H, int W, int n0, int nc, float *threads, int pooled) {
    int64_t tiles = (int64_t)t->th * t->tw, T = tiles * nc, xi_stride = (int64_t)cs->cin * T;
    size_t per_thread = thread_floats(t, H, W);
    #pragma omp parallel
    {
        float *pp = threads + omp_get_thread_num() * per_thread, *pool = pooled ? pp + t->Hp * t->Wp : NULL;
        #pragma omp for schedule(static)
        for (int64_t k = 0; k < (int64_t)cs->cin * nc; k++) {
            int ci = (int)(k / nc), n = (int)(k % nc);
            pad_plane(pp, in + ((int64_t)ci * N + n0 + n) * H * W, cs, t, H, W, pool);
            transform_input(v + ci * T + n * tiles, xi_stride, pp, t);
        }
    }
}

/* C_xi = op(A_xi) op(B_xi) (+ beta C_xi) for the 16 points; inside the
 * parallel loop OpenBLAS runs each on its caller's thread. */
static void gemms(int M, int Ncols, int K, int trans_a, int trans_b,
                  const float *a, int64_t a_stride, const float *b, int64_t b_stride,
                  float beta, float *c, int64_t c_stride) {
    #pragma omp parallel for schedule(static)
    for (int xi = 0; xi < XI; xi++)
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                    M, Ncols, K, 1.0f, a + xi * a_stride, trans_a ? M : K, b + xi * b_stride,
                    trans_b ? K : Ncols, beta, c + xi * c_stride, Ncols);
}

void winograd_forward(float *out, const float *in, const float *weight, const ConvShape *cs,
                      int N, int H, int W, float *scratch, int pooled) {
    Tiling t = tiling(cs, H, W);
    Scratch s = carve(scratch, cs, &t, N, 0);
    int step = chunk_images(cs, &t, N);
    int64_t tiles = (int64_t)t.th * t.tw, kernel = (int64_t)cs->cout * cs->cin;
    transform_kernel(s.u, weight, cs);
    for (int n0 = 0; n0 < N; n0 += step) {
        int nc = N - n0 < step ? N - n0 : step;
        int64_t T = tiles * nc;
        input_chunk(s.v, in, cs, &t, N, H, W, n0, nc, s.threads, pooled);
        gemms(cs->cout, T, cs->cin, 0, 0, s.u, kernel, s.v, cs->cin * T, 0.0f, s.m, cs->cout * T);
        #pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < (int64_t)cs->cout * nc; k++) {
            int co = (int)(k / nc), n = (int)(k % nc);
            transform_output(out + ((int64_t)co * N + n0 + n) * t.Ho * t.Wo, s.m + co * T + n * tiles,
                             cs->cout * T, &t);
        }
    }
}

void winograd_backward(float *din, float *dweight, const float *dout, const float *in,
                       const float *weight, const ConvShape *cs, int N, int H, int W,
                       float *scratch, int pooled) {
    Tiling t = tiling(cs, H, W);
    Scratch s = carve(scratch, cs, &t, N, 1);
    int step = chunk_images(cs, &t, N);
    int64_t tiles = (int64_t)t.th * t.tw, kernel = (int64_t)cs->cout * cs->cin;
    size_t per_thread = thread_floats(&t, H, W);
    if (din) transform_kernel(s.u, weight, cs);
    for (int n0 = 0; n0 < N; n0 += step) {
        int nc = N - n0 < step ? N - n0 : step;
        int64_t T = tiles * nc;
        input_chunk(s.v, in, cs, &t, N, H, W, n0, nc, s.threads, pooled);
        #pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < (int64_t)cs->cout * nc; k++) {
            int co = (int)(k / nc), n = (int)(k % nc);
            transform_output_backward(s.m + co * T + n * tiles, cs->cout * T,
                                      dout + ((int64_t)co * N + n0 + n) * t.Ho * t.Wo, &t);
        }
        /* dU_xi [cout, cin] (+)= dM_xi [cout, T] V_xi' */
        gemms(cs->cout, cs->cin, T, 0, 1, s.m, cs->cout * T, s.v, cs->cin * T,
              n0 ? 1.0f : 0.0f, s.du, kernel);
        if (!din) continue;
        /* dV_xi [cin, T] = U_xi' dM_xi, over V */
        gemms(cs->cin, T, cs->cout, 1, 0, s.u, kernel, s.m, cs->cout * T, 0.0f, s.v, cs->cin * T);
        #pragma omp parallel
        {
            float *dpp = s.threads + omp_get_thread_num() * per_thread, *pool = dpp + t.Hp * t.Wp;
            #pragma omp for schedule(static)
            for (int64_t k = 0; k < (int64_t)cs->cin * nc; k++) {
                int ci = (int)(k / nc), n = (int)(k % nc);
                memset(dpp, 0, (size_t)t.Hp * t.Wp * sizeof *dpp);
                transform_input_backward(dpp, s.v + ci * T + n * tiles, cs->cin * T, &t);
                float *dplane = din + ((int64_t)ci * N + n0 + n) * H * W;
                if (pooled) {                    /* d(pooled plane), then back through the pool */
                    for (int y = 0; y < H; y++)
                        memcpy(pool + (int64_t)y * W, dpp + (int64_t)(y + cs->ph) * t.Wp + cs->pw, W * sizeof *pool);
                    box3_plane(dplane, pool, H, W, 1.0f / 9.0f, pool + (size_t)H * W);
                } else {
                    for (int y = 0; y < H; y++) {
                        const float *src = dpp + (int64_t)(y + cs->ph) * t.Wp + cs->pw;
                        float *dst = dplane + (int64_t)y * W;
                        for (int x = 0; x < W; x++) dst[x] += src[x];
                    }
                }
            }
        }
    }
    transform_kernel_backward(dweight, s.du, cs);
}
