/* winograd.c - stride-1 convolutions by Winograd's minimal filtering along
 * one axis: 1x7 and 7x1 by F(4, 7), 1x3 and 3x1 by F(6, 3), and the square
 * 3x3 and 5x5 as lines down their columns, shifted across.
 *
 * Along a line, each tile of m outputs comes from the m + r - 1 inputs at m
 * times its position: Y = A' [(G g) . (B' d)], with the elementwise product
 * summed over input channels (Toom-Cook over the points 0, +-1, +-2, +-1/2,
 * 4, -1/4 and infinity). For each point xi of the transform domain that sum
 * is a GEMM, U_xi [cout, cin] by V_xi [cin, tiles]: (m + r - 1)/m
 * multiply-adds per output where a direct convolution spends r, 2.8x fewer
 * for F(4, 7) and 2.25x for F(6, 3), with K = cin and no im2col.
 *
 * An r x r kernel is r kernels r x 1, one per column offset sh. With the
 * lines padded across as well, the r x 1 outputs of offset sh are those of
 * offset 0 read sh columns on, so each point's GEMM is the sum of r GEMMs
 * over shifted views of one V: 3x3 by F(6, 3) takes 4 multiply-adds per
 * output (9 directly), 5x5 by F(4, 5) 10 (25); the last r - 1 columns of each
 * image's lines are computed and dropped. (F(2x2, 3x3) takes 4 too, but its
 * 2-D transforms over 15-tile rows cost more: measured slower at 30x30, level
 * at 6x6.)
 *
 * Backward differentiates these very steps (so it is the exact gradient of
 * the forward): dM = A dY per tile, dU_xi = dM_xi V_xi' and
 * dV_xi = U_xi' dM_xi as GEMMs, then dg = G' dU and dd = B dV added into
 * d(input) where the patches overlap. V is made again, not kept. The
 * kernels' transforms, the same linear map for every kernel, are GEMMs too.
 *
 * Tiles go in chunks of whole images through scratch. The transforms run on
 * threads by channel, over the chunk's images side by side (one image's
 * lines, 6 to 30 long here, are too short to vectorise). Over symmetric
 * points (F(6, 3), F(4, 5)) each pair +-a of rows shares its terms
 * (line_paired): 5-7% less time for the network's 3x3 convolutions. The
 * GEMMs of a chunk run on threads one whole GEMM each (faster than each
 * split over threads, as they are small), or in slices of rows where
 * threads outnumber them: the same bits for the same thread count. */
#include "winograd.h"
#include "gemm.h"
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
#endif

enum { ALPHA_MAX = 10, TAPS_MAX = 7, OUTPUTS_MAX = 6, SHIFTS_MAX = 5, KERNEL_TAPS_MAX = 25 };

/* Floats of V and M (or dM) per chunk: 8 MB ran best of 2 to 32 MB (batch 32). */
#define CHUNK_TARGET ((size_t)1 << 21)

/* F(m, r): V = B' d, U = G g, Y = A' (U . V) per tile. */
typedef struct {
    int taps, outputs;             /* r, m */
    float bt[ALPHA_MAX][ALPHA_MAX], g[ALPHA_MAX][TAPS_MAX], at[OUTPUTS_MAX][ALPHA_MAX];
    int paired;                    /* the 8 points 0, +-a (three pairs), infinity: see line_paired() */
} Line;

typedef struct {
    Line line;
    int along_h;           /* the lines run down the columns (r x 1, r x r); else along rows */
    int points;            /* of the transform domain: m + r - 1 */
    int shifts;            /* r x r: r (kernels r x 1, one per column offset); else 1 */
    int th, tw;            /* an image: th tiles of m outputs on each of tw lines
                              (r x r: the columns, padded across) */
    int Hp;                /* the padded length of a line */
    int Ho, Wo;
    int taps;              /* of the kernel: kh * kw */
    float kernel_g[ALPHA_MAX * SHIFTS_MAX * KERNEL_TAPS_MAX];
                           /* [points * shifts][taps]: U = kernel_g g, g a kernel as a vector */
} Tiling;

/* x^l coefficients of prod over k < n, k != skip of (x - a[k]) */
static void poly_from_roots(double *coef, const double *a, int n, int skip) {
    int deg = 0;
    coef[0] = 1;
    for (int k = 0; k < n; k++) {
        if (k == skip) continue;
        coef[++deg] = 0;
        for (int l = deg; l > 0; l--) coef[l] = coef[l - 1] - a[k] * coef[l];
        coef[0] *= -a[k];
    }
}

/* Over the points 0, a, -a, b, -b, c, -c and infinity (F(6, 3), F(4, 5)) the
 * transforms pair: row -a of B' is row a with its odd terms negated, row 0
 * has only even terms, row infinity only odd ones, and column -a of A' is
 * column a with odd powers negated. Each pair's two rows are then one sum
 * of even terms and one of odd, added and subtracted: 35 multiply-adds for
 * B' d where the full matrix takes 64, 25 for A' M (48 at F(6, 3)). True
 * of the tables exactly (their entries are dyadic), checked here. */
static int line_paired(const Line *f) {
    int alpha = f->outputs + f->taps - 1, m = f->outputs;
    if (alpha != 8) return 0;
    for (int l = 0; l < 8; l++) {
        float sign = l % 2 ? -1.0f : 1.0f;
        if ((l % 2 && f->bt[0][l] != 0.0f) || (l % 2 == 0 && f->bt[7][l] != 0.0f)) return 0;
        for (int p = 0; p < 3; p++)
            if (f->bt[2 + 2 * p][l] != sign * f->bt[1 + 2 * p][l] || (l == 7 && f->bt[1 + 2 * p][l] != 0.0f))
                return 0;
    }
    for (int i = 0; i < m; i++) {
        float sign = i % 2 ? -1.0f : 1.0f;
        if (f->at[i][0] != (i == 0) || f->at[i][7] != (i == m - 1)) return 0;
        for (int p = 0; p < 3; p++)
            if (f->at[i][2 + 2 * p] != sign * f->at[i][1 + 2 * p]) return 0;
    }
    return 1;
}

/* Toom-Cook F(m, r) over points a (m + r - 2 of them) and infinity: m = 6
 * for 3 taps, 4 for 5 and 7 (10 points). With 4 and -1/4 as the last two
 * points F(4, 7) rounds within 1e-5 of the largest output (of 0, +-3, +-1/3,
 * +-4, +-1/4, +-3/2, +-2/3 the best); the others use the first seven. */
static void make_line(Line *f, int taps) {
    static const double points[] = { 0, 1, -1, 2, -2, 0.5, -0.5, 4, -0.25 };
    int outputs = taps == 3 ? 6 : 4, alpha = outputs + taps - 1, finite = alpha - 1;
    memset(f, 0, sizeof *f);
    f->taps = taps;
    f->outputs = outputs;
    for (int j = 0; j < finite; j++) {
        double a = points[j], fj = 1, coef[ALPHA_MAX] = { 0 };
        for (int l = 0; l < finite; l++) if (l != j) fj *= a - points[l];
        double power = 1;
        for (int k = 0; k < taps; k++, power *= a) f->g[j][k] = (float)(power / fj);
        poly_from_roots(coef, points, finite, j);
        for (int l = 0; l < alpha; l++) f->bt[j][l] = (float)coef[l];
        power = 1;
        for (int i = 0; i < outputs; i++, power *= a) f->at[i][j] = (float)power;
    }
    double coef[ALPHA_MAX + 1] = { 0 };
    poly_from_roots(coef, points, finite, -1);
    for (int l = 0; l < alpha; l++) f->bt[finite][l] = (float)coef[l];
    f->g[finite][taps - 1] = 1;
    f->at[outputs - 1][finite] = 1;
    f->paired = line_paired(f);
}

static Tiling tiling(const ConvShape *cs, int H, int W) {
    Tiling t;
    t.Ho = conv_out(H, cs->kh, 1, cs->ph);
    t.Wo = conv_out(W, cs->kw, 1, cs->pw);
    t.along_h = cs->kh > 1;
    int taps = t.along_h ? cs->kh : cs->kw;
    make_line(&t.line, taps);
    int m = t.line.outputs;
    t.points = m + taps - 1;
    t.shifts = t.along_h ? cs->kw : 1;
    t.th = ((t.along_h ? t.Ho : t.Wo) + m - 1) / m;
    t.tw = t.along_h ? W + 2 * cs->pw : H;
    t.Hp = m * (t.th - 1) + t.points;
    t.taps = cs->kh * cs->kw;
    memset(t.kernel_g, 0, sizeof t.kernel_g);
    for (int j = 0; j < t.points; j++)     /* tap k along the line, shifted sh across */
        for (int sh = 0; sh < t.shifts; sh++)
            for (int k = 0; k < taps; k++)
                t.kernel_g[(j * t.shifts + sh) * t.taps + k * t.shifts + sh] = t.line.g[j][k];
    return t;
}

int winograd_applies(const ConvShape *cs, int H, int W) {
    int along_w = cs->kh == 1 && cs->ph == 0 && (cs->kw == 3 || cs->kw == 7) && cs->pw < cs->kw;
    int along_h = cs->kw == 1 && cs->pw == 0 && (cs->kh == 3 || cs->kh == 7) && cs->ph < cs->kh;
    int square = cs->kh == cs->kw && (cs->kh == 3 || cs->kh == 5) && cs->ph < cs->kh && cs->pw < cs->kw;
    return cs->sh == 1 && cs->sw == 1 && cs->cin >= WINOGRAD_MIN_CHANNELS && (along_w || along_h || square) &&
           conv_out(H, cs->kh, 1, cs->ph) >= 2 && conv_out(W, cs->kw, 1, cs->pw) >= 2;
}

static int chunk_images(const ConvShape *cs, const Tiling *t, int N) {
    size_t per = (size_t)t->points * (cs->cin + cs->cout) * t->th * t->tw;
    size_t n = CHUNK_TARGET / per;
    if (n < 1) n = 1;
    return n > (size_t)N ? N : (int)n;
}

/* A thread's buffer: a channel's chunk of lines, padded (or m rows of them),
 * then a plane and row sums for the pool. */
static size_t lines_floats(const ConvShape *cs, const Tiling *t, int N) {
    return (size_t)t->Hp * chunk_images(cs, t, N) * t->tw;
}

static size_t thread_floats(const ConvShape *cs, const Tiling *t, int N, int H, int W) {
    return lines_floats(cs, t, N) + 2 * (size_t)H * W;
}

/* The calling thread's buffer in threads. */
static float *thread_buffer(float *threads, const ConvShape *cs, const Tiling *t, int N, int H, int W) {
    return threads + omp_get_thread_num() * thread_floats(cs, t, N, H, W);
}

/* Tiles (columns of V and M) in a chunk of nc images. */
static int64_t chunk_tiles(const Tiling *t, int nc) { return (int64_t)t->th * t->tw * nc; }

/* A row of V [points][cin][T + shifts - 1]: each ends in shifts - 1 zeros,
 * which the GEMMs of shifted lines read past the last tile. */
static int64_t v_row(const Tiling *t, int64_t T) { return T + t->shifts - 1; }

/* Layout of scratch: U (or, backward, U then dU), V, M, the threads' buffers. */
typedef struct { float *u, *du, *v, *m, *threads; } Scratch;

/* Floats of scratch before the threads' buffers. */
static size_t shared_floats(const ConvShape *cs, const Tiling *t, int N, int backward) {
    size_t kernel = (size_t)t->points * t->shifts * cs->cout * cs->cin;
    int64_t T = chunk_tiles(t, chunk_images(cs, t, N));
    return (backward ? 2 : 1) * kernel + t->points * ((size_t)cs->cin * v_row(t, T) + (size_t)cs->cout * T);
}

static Scratch carve(float *scratch, const ConvShape *cs, const Tiling *t, int N, int backward) {
    size_t kernel = (size_t)t->points * t->shifts * cs->cout * cs->cin;
    int64_t T = chunk_tiles(t, chunk_images(cs, t, N));
    Scratch s;
    s.u = scratch;
    s.du = backward ? s.u + kernel : NULL;
    s.v = s.u + (backward ? 2 : 1) * kernel;
    s.m = s.v + t->points * (size_t)cs->cin * v_row(t, T);
    s.threads = scratch + shared_floats(cs, t, N, backward);
    return s;
}

size_t winograd_scratch_floats(const ConvShape *cs, int N, int H, int W) {
    Tiling t = tiling(cs, H, W);
    return shared_floats(cs, &t, N, 0) + (size_t)max_threads() * thread_floats(cs, &t, N, H, W);
}

/* U [points][shifts][cout][cin] = kernel_g [points*shifts, taps] weight' (weight:
 * [cout*cin, taps]), a GEMM as every kernel takes the same linear map. */
static void transform_kernel(float *u, const float *weight, const ConvShape *cs, const Tiling *t) {
    int plane = cs->cout * cs->cin;
    gemm(GEMM_WINOGRAD, GEMM_FORWARD, 0, 1, t->points * t->shifts, plane, t->taps, t->kernel_g, t->taps, weight,
         t->taps, 0.0f, u, plane);
}

/* dweight [cout*cin, taps] += dU' kernel_g */
static void transform_kernel_backward(float *dweight, const float *du, const ConvShape *cs, const Tiling *t) {
    int plane = cs->cout * cs->cin;
    gemm(GEMM_WINOGRAD, GEMM_DWEIGHT, 1, 0, plane, t->taps, t->points * t->shifts, du, plane, t->kernel_g, t->taps,
         1.0f, dweight, t->taps);
}

/* A channel's chunk as lines: position p along the axis (padded) of line x
 * of image n at p*L + n*lines + x, L = nc*lines; a tile's index is then
 * ty*L + n*lines + x. Image n's plane of that channel: in + n*image. */
static int64_t line_index(const Tiling *t, int64_t L, int n, int p, int x) {
    return p * L + (int64_t)n * t->tw + x;
}

/* lines = the channel's images (planes `image` floats apart), with pool
 * (2*H*W floats) their avgpool 3x3 s1 p1: the interior only. Its padding,
 * along the lines and (shifted lines) across, is never written, so zeroed
 * once (line_padding_clear) it stays zero for every channel after. */
static void line_gather(float *lines, const float *in, int64_t image, const ConvShape *cs,
                        const Tiling *t, int nc, int H, int W, float *pool) {
    int64_t L = (int64_t)nc * t->tw;
    int pad = t->along_h ? cs->ph : cs->pw, across = t->along_h ? cs->pw : 0;
    for (int n = 0; n < nc; n++) {
        const float *plane = in + n * image;
        if (pool) plane = avgpool3_plane(pool, plane, H, W);
        if (t->along_h)
            for (int y = 0; y < H; y++)
                memcpy(lines + line_index(t, L, n, y + pad, across), plane + (int64_t)y * W, W * sizeof *lines);
        else
            for (int x = 0; x < W; x++)
                for (int y = 0; y < H; y++) lines[line_index(t, L, n, x + pad, y)] = plane[(int64_t)y * W + x];
    }
}

/* A thread's lines zeroed before its first line_gather of a chunk. */
static void line_padding_clear(float *lines, const Tiling *t, int nc) {
    memset(lines, 0, (size_t)t->Hp * nc * t->tw * sizeof *lines);
}

/* The channel's images += the lines' interior (line_gather's inverse, adding);
 * with pool (2*H*W floats), through the pool's backward. */
static void line_scatter_add(float *in, int64_t image, const float *lines, const ConvShape *cs,
                             const Tiling *t, int nc, int H, int W, float *pool) {
    int64_t L = (int64_t)nc * t->tw;
    int pad = t->along_h ? cs->ph : cs->pw, across = t->along_h ? cs->pw : 0;
    for (int n = 0; n < nc; n++) {
        float *plane = in + n * image, *dst = pool ? pool : plane;   /* pooled: d(pooled plane) first */
        if (pool) memset(pool, 0, (size_t)H * W * sizeof *pool);
        if (t->along_h)
            for (int y = 0; y < H; y++) {
                const float *src = lines + line_index(t, L, n, y + pad, across);
                float *row = dst + (int64_t)y * W;
                for (int x = 0; x < W; x++) row[x] += src[x];
            }
        else
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) dst[(int64_t)y * W + x] += lines[line_index(t, L, n, x + pad, y)];
        if (pool) box3_plane(plane, pool, H, W, 1.0f / 9.0f, pool + (size_t)H * W);
    }
}

/* ---- the transforms, on rows of L floats (rows of d, v, m and dm `stride`
 * floats apart), LANES x at a time: each x's inputs are loaded once and every
 * output row made from them in registers (the last block partial: lanes at
 * and past n are not read or written). 16 lanes are one AVX-512 register; without
 * AVX-512, 8 (one AVX2 register): the same bits, no spills, and no vectors that
 * the ABI passes in registers the CPU lacks. ---- */
#ifdef __AVX512F__
enum { LANES = 16 };
#else
enum { LANES = 8 };
#endif
typedef float fvec __attribute__((vector_size(LANES * sizeof(float))));

static inline fvec loadv(const float *p, int n) {
    fvec v = { 0 };
    memcpy(&v, p, n * sizeof *p);
    return v;
}

static inline void storev(float *p, fvec v, int n) { memcpy(p, &v, n * sizeof *p); }

/* o[r] (+)= sum over l < terms of c[r * c_row + l * c_col] src[l], r < rows, at x (n lanes) */
static inline __attribute__((always_inline)) void transform_v(float *o, int64_t o_stride, const float *src,
        int64_t s_stride, const float *c, int c_row, int c_col, const int rows, const int terms, const int add,
        int64_t x, int n) {
    fvec in[ALPHA_MAX];
    for (int l = 0; l < terms; l++) in[l] = loadv(src + l * s_stride + x, n);
    for (int r = 0; r < rows; r++) {
        fvec acc = add ? loadv(o + r * o_stride + x, n) : (fvec){ 0 };
        for (int l = 0; l < terms; l++) acc += c[r * c_row + l * c_col] * in[l];
        storev(o + r * o_stride + x, acc, n);
    }
}

static inline __attribute__((always_inline)) void transform_n(float *o, int64_t o_stride, const float *src,
        int64_t s_stride, const float *c, int c_row, int c_col, const int rows, const int terms, const int add,
        int64_t L) {
    int64_t x = 0;
    for (; x + LANES <= L; x += LANES) transform_v(o, o_stride, src, s_stride, c, c_row, c_col, rows, terms, add, x, LANES);
    if (x < L) transform_v(o, o_stride, src, s_stride, c, c_row, c_col, rows, terms, add, x, (int)(L - x));
}

/* A line's full matrix on rows: rows and terms constant (inlined) for F(4, 7),
 * the line in use that does not pair: B' d and B dV over 10 points, A' M and A dY. */
static void transform(float *o, int64_t o_stride, const float *src, int64_t s_stride, const float *c, int c_row,
                      int c_col, int rows, int terms, int add, int64_t L) {
    if (rows == 10 && terms == 10 && !add) transform_n(o, o_stride, src, s_stride, c, c_row, c_col, 10, 10, 0, L);
    else if (rows == 10 && terms == 10) transform_n(o, o_stride, src, s_stride, c, c_row, c_col, 10, 10, 1, L);
    else if (rows == 4 && terms == 10 && !add) transform_n(o, o_stride, src, s_stride, c, c_row, c_col, 4, 10, 0, L);
    else if (rows == 10 && terms == 4 && !add) transform_n(o, o_stride, src, s_stride, c, c_row, c_col, 10, 4, 0, L);
    else transform_n(o, o_stride, src, s_stride, c, c_row, c_col, rows, terms, add, L);
}

/* ---- the paired transforms (line_paired) ---- */

/* v = B' d at x (n lanes) */
static inline __attribute__((always_inline)) void input_paired_v(float *v, int64_t v_stride, const float *d,
        int64_t d_stride, const float (*b)[ALPHA_MAX], int64_t x, int n) {
    fvec e0 = loadv(d + x, n), o0 = loadv(d + d_stride + x, n), e1 = loadv(d + 2 * d_stride + x, n);
    fvec o1 = loadv(d + 3 * d_stride + x, n), e2 = loadv(d + 4 * d_stride + x, n);
    fvec o2 = loadv(d + 5 * d_stride + x, n), e3 = loadv(d + 6 * d_stride + x, n);
    fvec o3 = loadv(d + 7 * d_stride + x, n);
    storev(v + x, b[0][0] * e0 + b[0][2] * e1 + b[0][4] * e2 + b[0][6] * e3, n);
    storev(v + 7 * v_stride + x, b[7][1] * o0 + b[7][3] * o1 + b[7][5] * o2 + b[7][7] * o3, n);
    for (int j = 1; j < 7; j += 2) {              /* rows a and -a */
        fvec even = b[j][0] * e0 + b[j][2] * e1 + b[j][4] * e2 + b[j][6] * e3;
        fvec odd = b[j][1] * o0 + b[j][3] * o1 + b[j][5] * o2;
        storev(v + j * v_stride + x, even + odd, n);
        storev(v + (j + 1) * v_stride + x, even - odd, n);
    }
}

static void input_paired(float *v, int64_t v_stride, const float *d, int64_t d_stride, const Line *f, int64_t L) {
    int64_t x = 0;
    for (; x + LANES <= L; x += LANES) input_paired_v(v, v_stride, d, d_stride, f->bt, x, LANES);
    if (x < L) input_paired_v(v, v_stride, d, d_stride, f->bt, x, (int)(L - x));
}

/* d += B dv at x (n lanes): the transpose of input_paired_v */
static inline __attribute__((always_inline)) void input_paired_backward_v(float *d, int64_t d_stride,
        const float *dv, int64_t v_stride, const float (*b)[ALPHA_MAX], int64_t x, int n) {
    fvec v0 = loadv(dv + x, n), v7 = loadv(dv + 7 * v_stride + x, n), sum[3], diff[3];
    for (int p = 0; p < 3; p++) {
        fvec pos = loadv(dv + (1 + 2 * p) * v_stride + x, n), neg = loadv(dv + (2 + 2 * p) * v_stride + x, n);
        sum[p] = pos + neg;
        diff[p] = pos - neg;
    }
    for (int l = 0; l < 7; l += 2)
        storev(d + l * d_stride + x, loadv(d + l * d_stride + x, n) + b[0][l] * v0 + b[1][l] * sum[0] +
                b[3][l] * sum[1] + b[5][l] * sum[2], n);
    for (int l = 1; l < 7; l += 2)
        storev(d + l * d_stride + x, loadv(d + l * d_stride + x, n) + b[7][l] * v7 + b[1][l] * diff[0] +
                b[3][l] * diff[1] + b[5][l] * diff[2], n);
    storev(d + 7 * d_stride + x, loadv(d + 7 * d_stride + x, n) + b[7][7] * v7, n);
}

static void input_paired_backward(float *d, int64_t d_stride, const float *dv, int64_t v_stride, const Line *f,
                                  int64_t L) {
    int64_t x = 0;
    for (; x + LANES <= L; x += LANES) input_paired_backward_v(d, d_stride, dv, v_stride, f->bt, x, LANES);
    if (x < L) input_paired_backward_v(d, d_stride, dv, v_stride, f->bt, x, (int)(L - x));
}

/* y [outputs][L] = A' m at x (n lanes) */
static inline __attribute__((always_inline)) void output_paired_v(float *y, int64_t y_stride, const float *m,
        int64_t m_stride, const float (*a)[ALPHA_MAX], const int outputs, int64_t x, int n) {
    fvec sum[3], diff[3];
    for (int p = 0; p < 3; p++) {
        fvec pos = loadv(m + (1 + 2 * p) * m_stride + x, n), neg = loadv(m + (2 + 2 * p) * m_stride + x, n);
        sum[p] = pos + neg;
        diff[p] = pos - neg;
    }
    for (int i = 0; i < outputs; i++) {
        const fvec *s = i % 2 ? diff : sum;
        fvec out = a[i][1] * s[0] + a[i][3] * s[1] + a[i][5] * s[2];
        if (i == 0) out += loadv(m + x, n);
        if (i == outputs - 1) out += loadv(m + 7 * m_stride + x, n);
        storev(y + i * y_stride + x, out, n);
    }
}

/* dm = A dy at x (n lanes): the transpose of output_paired_v */
static inline __attribute__((always_inline)) void output_paired_backward_v(float *dm, int64_t m_stride,
        const float *dy, int64_t y_stride, const float (*a)[ALPHA_MAX], const int outputs, int64_t x, int n) {
    fvec even[3] = { 0 }, odd[3] = { 0 };
    for (int i = 0; i < outputs; i++) {
        fvec yi = loadv(dy + i * y_stride + x, n);
        for (int p = 0; p < 3; p++) {
            if (i % 2) odd[p] += a[i][1 + 2 * p] * yi;
            else even[p] += a[i][1 + 2 * p] * yi;
        }
    }
    storev(dm + x, loadv(dy + x, n), n);
    for (int p = 0; p < 3; p++) {
        storev(dm + (1 + 2 * p) * m_stride + x, even[p] + odd[p], n);
        storev(dm + (2 + 2 * p) * m_stride + x, even[p] - odd[p], n);
    }
    storev(dm + 7 * m_stride + x, loadv(dy + (outputs - 1) * y_stride + x, n), n);
}

static inline __attribute__((always_inline)) void output_paired_n(float *y, int64_t y_stride, const float *m,
        int64_t m_stride, const Line *f, const int outputs, int64_t L) {
    int64_t x = 0;
    for (; x + LANES <= L; x += LANES) output_paired_v(y, y_stride, m, m_stride, f->at, outputs, x, LANES);
    if (x < L) output_paired_v(y, y_stride, m, m_stride, f->at, outputs, x, (int)(L - x));
}

static inline __attribute__((always_inline)) void output_paired_backward_n(float *dm, int64_t m_stride,
        const float *dy, int64_t y_stride, const Line *f, const int outputs, int64_t L) {
    int64_t x = 0;
    for (; x + LANES <= L; x += LANES) output_paired_backward_v(dm, m_stride, dy, y_stride, f->at, outputs, x, LANES);
    if (x < L) output_paired_backward_v(dm, m_stride, dy, y_stride, f->at, outputs, x, (int)(L - x));
}

/* The output transforms for the lines in use: 6 outputs (3 taps), 4 (5 taps). */
static void output_paired(float *y, int64_t y_stride, const float *m, int64_t m_stride, const Line *f, int64_t L) {
    if (f->outputs == 6) output_paired_n(y, y_stride, m, m_stride, f, 6, L);
    else output_paired_n(y, y_stride, m, m_stride, f, 4, L);
}

static void output_paired_backward(float *dm, int64_t m_stride, const float *dy, int64_t y_stride,
                                   const Line *f, int64_t L) {
    if (f->outputs == 6) output_paired_backward_n(dm, m_stride, dy, y_stride, f, 6, L);
    else output_paired_backward_n(dm, m_stride, dy, y_stride, f, 4, L);
}

/* v: V [m+r-1][cin][T + shifts - 1] at this channel = B' d of every tile's
 * patch, each row ending in its zeros */
static void line_input(float *v, int64_t xi_stride, const float *lines, const Tiling *t, int64_t L) {
    const Line *f = &t->line;
    for (int ty = 0; ty < t->th; ty++)
        if (f->paired) input_paired(v + ty * L, xi_stride, lines + f->outputs * ty * L, L, f, L);
        else
            transform(v + ty * L, xi_stride, lines + f->outputs * ty * L, L, &f->bt[0][0], ALPHA_MAX, 1, t->points,
                      t->points, 0, L);
    for (int j = 0; j < t->points; j++)
        memset(v + j * xi_stride + t->th * L, 0, (t->shifts - 1) * sizeof *v);
}

/* lines = B dV of every tile, summed where patches overlap */
static void line_input_backward(float *lines, const float *dv, int64_t xi_stride, const Tiling *t, int64_t L) {
    const Line *f = &t->line;
    memset(lines, 0, t->Hp * L * sizeof *lines);
    for (int ty = 0; ty < t->th; ty++)
        if (f->paired) input_paired_backward(lines + f->outputs * ty * L, L, dv + ty * L, xi_stride, f, L);
        else
            transform(lines + f->outputs * ty * L, L, dv + ty * L, xi_stride, &f->bt[0][0], 1, ALPHA_MAX, t->points,
                      t->points, 1, L);
}

/* Between the m rows of tile row ty, [m][nc][tw] (rows m*L floats), and the
 * channel's output planes (`image` floats apart): to_planes copies the
 * outputs there, else gathers them, with zeros past the last output (of
 * shifted lines, also in the last shifts - 1 columns: never written, zeroed
 * once as each thread's rows are, when dout_chunk begins). */
static void tile_rows(float *rows, float *planes, int64_t image, const Tiling *t, int nc, int ty, int to_planes) {
    int64_t L = (int64_t)nc * t->tw;
    int m = t->line.outputs;
    for (int n = 0; n < nc; n++) {
        float *plane = planes + n * image, *r = rows + n * t->tw;
        if (t->along_h)                     /* output row q = m*ty + i: line x is column x */
            for (int i = 0; i < m; i++) {
                int q = m * ty + i, valid = q < t->Ho ? t->Wo : 0;
                if (to_planes) memcpy(plane + (int64_t)q * t->Wo, r + i * L, valid * sizeof *r);
                else if (valid) memcpy(r + i * L, plane + (int64_t)q * t->Wo, valid * sizeof *r);
                else memset(r + i * L, 0, t->tw * sizeof *r);   /* past Wo: zero since dout_chunk began */
            }
        else                                /* output column q = m*ty + i of row x */
            for (int x = 0; x < t->tw; x++)
                for (int i = 0; i < m; i++) {
                    int q = m * ty + i;
                    if (to_planes) { if (q < t->Wo) plane[(int64_t)x * t->Wo + q] = r[i * L + x]; }
                    else r[i * L + x] = q < t->Wo ? plane[(int64_t)x * t->Wo + q] : 0.0f;
                }
    }
}

/* The channel's output planes (`image` floats apart) = A' M of every tile;
 * rows: m*L floats. */
static void line_output(float *out, int64_t image, const float *m, int64_t xi_stride,
                        const Tiling *t, int nc, float *rows) {
    const Line *f = &t->line;
    int64_t L = (int64_t)nc * t->tw;
    for (int ty = 0; ty < t->th; ty++) {
        if (f->paired) output_paired(rows, L, m + ty * L, xi_stride, f, L);
        else
            transform(rows, L, m + ty * L, xi_stride, &f->at[0][0], ALPHA_MAX, 1, f->outputs, t->points, 0, L);
        tile_rows(rows, out, image, t, nc, ty, 1);
    }
}

/* dm: dM [points][cout][T] at this channel = A dY of every tile of the
 * channel's d(output) planes; rows: m*L floats. */
static void line_output_backward(float *dm, int64_t xi_stride, const float *dout, int64_t image,
                                 const Tiling *t, int nc, float *rows) {
    const Line *f = &t->line;
    int64_t L = (int64_t)nc * t->tw;
    for (int ty = 0; ty < t->th; ty++) {
        tile_rows(rows, (float *)dout, image, t, nc, ty, 0);
        if (f->paired) output_paired_backward(dm + ty * L, xi_stride, rows, L, f, L);
        else
            transform(dm + ty * L, xi_stride, rows, L, &f->at[0][0], 1, ALPHA_MAX, t->points, f->outputs, 0, L);
    }
}

/* ---- a chunk of images nc from n0 ---- */

/* V [points][cin][v_row] of in [cin, N, H, W], of its avgpool 3x3 s1 p1 when pooled */
static void input_chunk(float *v, const float *in, const ConvShape *cs, const Tiling *t, int N,
                        int H, int W, int n0, int nc, float *threads, int pooled) {
    int64_t T = chunk_tiles(t, nc), ld = v_row(t, T), xi_stride = cs->cin * ld;
    #pragma omp parallel
    {
        float *buf = thread_buffer(threads, cs, t, N, H, W);
        float *pool = pooled ? buf + lines_floats(cs, t, N) : NULL;
        line_padding_clear(buf, t, nc);
        #pragma omp for schedule(static)
        for (int ci = 0; ci < cs->cin; ci++) {
            line_gather(buf, in + ((int64_t)ci * N + n0) * H * W, (int64_t)H * W, cs, t, nc, H, W, pool);
            line_input(v + ci * ld, xi_stride, buf, t, (int64_t)nc * t->tw);
        }
    }
}

/* out [cout, N, Ho, Wo] at the chunk's images = A' M of M [points][cout][T] */
static void output_chunk(float *out, const float *m, const ConvShape *cs, const Tiling *t, int N,
                         int H, int W, int n0, int nc, float *threads) {
    int64_t T = chunk_tiles(t, nc), image = (int64_t)t->Ho * t->Wo;
    #pragma omp parallel
    {
        float *rows = thread_buffer(threads, cs, t, N, H, W);
        #pragma omp for schedule(static)
        for (int co = 0; co < cs->cout; co++)
            line_output(out + ((int64_t)co * N + n0) * image, image, m + co * T, cs->cout * T, t, nc, rows);
    }
}

/* dM [points][cout][T] = A dY of dout [cout, N, Ho, Wo] at the chunk's images */
static void dout_chunk(float *dm, const float *dout, const ConvShape *cs, const Tiling *t, int N,
                       int H, int W, int n0, int nc, float *threads) {
    int64_t T = chunk_tiles(t, nc), image = (int64_t)t->Ho * t->Wo;
    #pragma omp parallel
    {
        float *rows = thread_buffer(threads, cs, t, N, H, W);
        memset(rows, 0, (size_t)t->line.outputs * nc * t->tw * sizeof *rows);
        #pragma omp for schedule(static)
        for (int co = 0; co < cs->cout; co++)
            line_output_backward(dm + co * T, cs->cout * T, dout + ((int64_t)co * N + n0) * image, image,
                                 t, nc, rows);
    }
}

/* din [cin, N, H, W] at the chunk's images += B dV of dV [points][cin][v_row],
 * through the pool first when pooled */
static void din_chunk(float *din, const float *dv, const ConvShape *cs, const Tiling *t, int N,
                      int H, int W, int n0, int nc, float *threads, int pooled) {
    int64_t T = chunk_tiles(t, nc), ld = v_row(t, T), xi_stride = cs->cin * ld;
    #pragma omp parallel
    {
        float *buf = thread_buffer(threads, cs, t, N, H, W);
        float *pool = pooled ? buf + lines_floats(cs, t, N) : NULL;
        #pragma omp for schedule(static)
        for (int ci = 0; ci < cs->cin; ci++) {
            line_input_backward(buf, dv + ci * ld, xi_stride, t, (int64_t)nc * t->tw);
            line_scatter_add(din + ((int64_t)ci * N + n0) * H * W, (int64_t)H * W, buf, cs, t, nc, H, W, pool);
        }
    }
}

/* A matrix of gemms(): that of point xi and shift sh at at + xi*point + sh*shift. */
typedef struct { float *at; int64_t point, shift; int ld; } Mat;

/* C = op(A) op(B) (+ beta C) for every point and shift: C [M, Ncols], K the
 * inner dimension. With sum_shifts one C per point takes the sum over the
 * shifts (lines shifted across: forward, and dV, into C shifted); else
 * each shift has its own. Inside the parallel loop OpenBLAS runs each GEMM
 * on its caller's thread; with more threads than GEMMs, each goes in slices
 * of its rows. */
static void gemms(GemmPass pass, const Tiling *t, int M, int Ncols, int K, int trans_a, Mat a, int trans_b,
                  Mat b, float beta, Mat c, int sum_shifts) {
    int jobs = sum_shifts ? t->points : t->points * t->shifts;
    int slices = (max_threads() + jobs - 1) / jobs;
    if (slices > M) slices = M;
    #pragma omp parallel for schedule(static)
    for (int w = 0; w < jobs * slices; w++) {
        int job = w / slices, slice = w % slices;
        int xi = sum_shifts ? job : job / t->shifts, sh0 = sum_shifts ? 0 : job % t->shifts;
        int sh1 = sum_shifts ? t->shifts : sh0 + 1;
        int r0 = (int)((int64_t)M * slice / slices), r1 = (int)((int64_t)M * (slice + 1) / slices);
        for (int sh = sh0; sh < sh1; sh++)
            gemm(GEMM_WINOGRAD, pass, trans_a, trans_b, r1 - r0, Ncols, K,
                 a.at + xi * a.point + sh * a.shift + (trans_a ? r0 : (int64_t)r0 * a.ld), a.ld,
                 b.at + xi * b.point + sh * b.shift, b.ld, sh > sh0 ? 1.0f : beta,
                 c.at + xi * c.point + sh * c.shift + (int64_t)r0 * c.ld, c.ld);
    }
}

void winograd_forward(float *out, const float *in, const float *weight, const ConvShape *cs,
                      int N, int H, int W, float *scratch, int pooled) {
    Tiling t = tiling(cs, H, W);
    Scratch s = carve(scratch, cs, &t, N, 0);
    int step = chunk_images(cs, &t, N);
    int64_t kernel = (int64_t)cs->cout * cs->cin;
    transform_kernel(s.u, weight, cs, &t);
    for (int n0 = 0; n0 < N; n0 += step) {
        int nc = N - n0 < step ? N - n0 : step;
        int64_t T = chunk_tiles(&t, nc), ld = v_row(&t, T);
        input_chunk(s.v, in, cs, &t, N, H, W, n0, nc, s.threads, pooled);
        /* M_xi [cout, T] = sum over shifts sh of U_xi,sh V_xi (sh columns on) */
        gemms(GEMM_FORWARD, &t, cs->cout, T, cs->cin, 0, (Mat){ s.u, t.shifts * kernel, kernel, cs->cin },
              0, (Mat){ s.v, cs->cin * ld, 1, ld }, 0.0f, (Mat){ s.m, cs->cout * T, 0, T }, 1);
        output_chunk(out, s.m, cs, &t, N, H, W, n0, nc, s.threads);
    }
}

void winograd_backward(float *din, float *dweight, const float *dout, const float *in,
                       const float *weight, const ConvShape *cs, int N, int H, int W,
                       float *scratch, int pooled) {
    Tiling t = tiling(cs, H, W);
    Scratch s = carve(scratch, cs, &t, N, 1);
    int step = chunk_images(cs, &t, N);
    int64_t kernel = (int64_t)cs->cout * cs->cin;
    if (din) transform_kernel(s.u, weight, cs, &t);
    for (int n0 = 0; n0 < N; n0 += step) {
        int nc = N - n0 < step ? N - n0 : step;
        int64_t T = chunk_tiles(&t, nc), ld = v_row(&t, T);
        input_chunk(s.v, in, cs, &t, N, H, W, n0, nc, s.threads, pooled);
        dout_chunk(s.m, dout, cs, &t, N, H, W, n0, nc, s.threads);
        /* dU_xi,sh [cout, cin] (+)= dM_xi [cout, T] V_xi' (sh columns on) */
        gemms(GEMM_DWEIGHT, &t, cs->cout, cs->cin, T, 0, (Mat){ s.m, cs->cout * T, 0, T }, 1, (Mat){ s.v, cs->cin * ld, 1, ld },
              n0 ? 1.0f : 0.0f, (Mat){ s.du, t.shifts * kernel, kernel, cs->cin }, 0);
        if (!din) continue;
        /* dV_xi [cin, T] (sh columns on) = sum over sh of U_xi,sh' dM_xi, over V */
        gemms(GEMM_DINPUT, &t, cs->cin, T, cs->cout, 1, (Mat){ s.u, t.shifts * kernel, kernel, cs->cin },
              0, (Mat){ s.m, cs->cout * T, 0, T }, 0.0f, (Mat){ s.v, cs->cin * ld, 1, ld }, 1);
        din_chunk(din, s.v, cs, &t, N, H, W, n0, nc, s.threads, pooled);
    }
    transform_kernel_backward(dweight, s.du, cs, &t);
}
