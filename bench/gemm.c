/* gemm - the GEMMs of one training step, timed on every candidate engine.
 *
 *   bench-gemm [WIDTH [BATCH [THREADS]]]
 *
 * Runs one step of the model with gemm_observe() to record each GEMM's kind,
 * pass and shape, then times every distinct shape on OpenBLAS, oneDNN, BLIS
 * and libxsmm, in fp32 and (where the CPU has bf16 dot products) in bf16 with
 * the conversion of A and B included, and prints seconds per step for each
 * kind and pass. Kinds that run one GEMM per thread (Winograd, shifted) are
 * timed that way: every thread running its own copy at once. BLIS is loaded
 * with dlopen, as its BLAS symbols would clash with OpenBLAS's. libxsmm's bf16
 * GEMM takes A and B untransposed: it is given packed bf16 copies made before
 * the clock starts, so its time is a lower bound (the kernel alone). It is
 * timed only for the kinds of small GEMMs it is made for (one per thread):
 * on the large ones it ran at 1-4 GFLOP/s, minutes per table. */
#include "gemm.h"
#include "model.h"
#include "util.h"
#include <dlfcn.h>
#include <libxsmm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

enum { OPENBLAS, ONEDNN, BLIS, XSMM, ONEDNN_BF16, XSMM_BF16, CANDIDATES };
static const char *candidate_names[] = { "openblas", "onednn", "blis", "libxsmm",
                                         "onednn-bf16", "libxsmm-bf16" };

typedef struct {
    GemmKind kind; GemmPass pass;
    int ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    float beta;
    int calls;
} Shape;
static Shape *shapes;
static int nshapes, cap_shapes;

static void record(GemmKind kind, GemmPass pass, int ta, int tb, int64_t M, int64_t N, int64_t K,
                   int64_t lda, int64_t ldb, float beta, int64_t ldc) {
    #pragma omp critical
    {
        Shape s = { kind, pass, ta, tb, M, N, K, lda, ldb, ldc, beta, 1 };
        int i = 0;
        while (i < nshapes && !(shapes[i].kind == kind && shapes[i].pass == pass && shapes[i].ta == ta &&
                                shapes[i].tb == tb && shapes[i].M == M && shapes[i].N == N && shapes[i].K == K &&
                                shapes[i].lda == lda && shapes[i].ldb == ldb && shapes[i].ldc == ldc &&
                                shapes[i].beta == beta))
            i++;
        if (i < nshapes) shapes[i].calls++;
        else {
            if (nshapes == cap_shapes) shapes = xrealloc(shapes, (cap_shapes = 2 * cap_shapes + 64) * sizeof *shapes);
            shapes[nshapes++] = s;
        }
    }
}

/* BLIS's typed API takes general strides, so a transposed operand is a stride swap. */
typedef void (*BliSgemm)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float *alpha, float *a,
                         int64_t rsa, int64_t csa, float *b, int64_t rsb, int64_t csb, float *beta, float *c,
                         int64_t rsc, int64_t csc);
static BliSgemm bli_sgemm;

static void load_blis(int threads) {
    void *lib = dlopen("libblis.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    bli_sgemm = (BliSgemm)dlsym(lib, "bli_sgemm");
    void (*set_threads)(int64_t) = (void (*)(int64_t))dlsym(lib, "bli_thread_set_num_threads");
    if (set_threads) set_threads(threads);
}

/* libxsmm is column-major: C' = op(B)' op(A)', columns [c0, c1) of C. Single-threaded
 * per call. bf16: A16 [M, K] and B16 [K, N] packed. */
static void xsmm(int bf16, const Shape *s, const float *A, const float *B, const uint16_t *A16,
                 const uint16_t *B16, float *C, int64_t c0, int64_t c1) {
    char ta = s->ta ? 'T' : 'N', tb = s->tb ? 'T' : 'N', n = 'N';
    libxsmm_blasint m = (libxsmm_blasint)(c1 - c0), nn = (libxsmm_blasint)s->M, k = (libxsmm_blasint)s->K;
    libxsmm_blasint lda = (libxsmm_blasint)s->lda, ldb = (libxsmm_blasint)s->ldb, ldc = (libxsmm_blasint)s->ldc;
    libxsmm_blasint lda16 = (libxsmm_blasint)s->K, ldb16 = (libxsmm_blasint)s->N;
    float one = 1.0f, beta = s->beta;
    if (bf16) libxsmm_bsgemm(&n, &n, &m, &nn, &k, &one, B16 + c0, &ldb16, A16, &lda16, &beta, C + c0, &ldc);
    else libxsmm_sgemm(&tb, &ta, &m, &nn, &k, &one, B + (s->tb ? c0 * s->ldb : c0), &ldb, A, &lda, &beta,
                       C + c0, &ldc);
}

/* One GEMM of shape s on candidate e; libxsmm splits the columns over the threads
 * when the kind's GEMM runs on all of them. */
static void run(int e, const Shape *s, const float *A, const float *B, float *C, const uint16_t *A16,
                const uint16_t *B16, int whole_team) {
    switch (e) {
    case OPENBLAS: gemm_on(ENGINE_OPENBLAS, s->ta, s->tb, s->M, s->N, s->K, A, s->lda, B, s->ldb, s->beta, C, s->ldc); break;
    case ONEDNN: gemm_on(ENGINE_ONEDNN, s->ta, s->tb, s->M, s->N, s->K, A, s->lda, B, s->ldb, s->beta, C, s->ldc); break;
    case ONEDNN_BF16: gemm_on(ENGINE_ONEDNN_BF16, s->ta, s->tb, s->M, s->N, s->K, A, s->lda, B, s->ldb, s->beta, C, s->ldc); break;
    case BLIS: {
        float one = 1.0f, beta = s->beta;
        bli_sgemm(0, 0, s->M, s->N, s->K, &one, (float *)A, s->ta ? 1 : s->lda, s->ta ? s->lda : 1, (float *)B,
                  s->tb ? 1 : s->ldb, s->tb ? s->ldb : 1, &beta, C, s->ldc, 1);
        break;
    }
    case XSMM: case XSMM_BF16:
        if (!whole_team) { xsmm(e == XSMM_BF16, s, A, B, A16, B16, C, 0, s->N); break; }
        #pragma omp parallel
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            xsmm(e == XSMM_BF16, s, A, B, A16, B16, C, s->N * t / nt, s->N * (t + 1) / nt);
        }
        break;
    }
}

/* The column of bench-gemm's table that times an engine of lib/gemm.c */
static int candidate_of(GemmEngine e) {
    return e == ENGINE_OPENBLAS ? OPENBLAS : e == ENGINE_ONEDNN ? ONEDNN : ONEDNN_BF16;
}

static int per_thread_kind(GemmKind k) { return k == GEMM_WINOGRAD || k == GEMM_SHIFTED; }

/* Seconds per call: the best of a few timed rounds after a warm-up. */
static double time_shape(int e, const Shape *s, const float *A, const float *B, float *C, uint16_t *A16,
                         uint16_t *B16, size_t c_floats, int threads) {
    int team = per_thread_kind(s->kind);
    int rounds = 2;
    double best = 1e30;
    for (int r = 0; r <= rounds; r++) {
        double t0 = now_seconds();
        if (team) {
            #pragma omp parallel num_threads(threads)
            run(e, s, A, B, C + omp_get_thread_num() * c_floats, A16, B16, 0);
        } else {
            run(e, s, A, B, C, A16, B16, 1);
        }
        double t = (now_seconds() - t0) / (team ? threads : 1);
        if (r && t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv) {
    tool_init("bench-gemm", argc, argv);
    double width = argc > 1 ? atof(argv[1]) : 1.0;
    int batch = argc > 2 ? atoi(argv[2]) : 32, threads = argc > 3 ? atoi(argv[3]) : max_threads();
    set_threads(threads);
    ModelConfig cfg = { .classes = 10, .width = width, .aux = 0, .dropout = 0.5f };
    Model *m = model_create(&cfg);
    model_init(m, 1);
    float *x = xmalloc((size_t)batch * 3 * 32 * 32 * sizeof *x);
    int64_t *y = xmalloc(batch * sizeof *y);
    uint64_t *keys = xmalloc(batch * sizeof *keys);
    Rng rng;
    rng_seed(&rng, 7, 0);
    for (size_t i = 0; i < (size_t)batch * 3 * 32 * 32; i++) x[i] = (float)rng_uniform(&rng) * 2 - 1;
    for (int i = 0; i < batch; i++) { y[i] = i % 10; keys[i] = i; }
    gemm_observe(record);
    model_train_step(m, x, y, NULL, batch, 1, 1, keys, NULL);
    gemm_observe(NULL);
    model_free(m);

    size_t a_max = 0, b_max = 0, c_max = 0;
    for (int i = 0; i < nshapes; i++) {
        Shape *s = &shapes[i];
        size_t a = (size_t)s->lda * (s->ta ? s->K : s->M), b = (size_t)s->ldb * (s->tb ? s->N : s->K);
        size_t c = (size_t)s->ldc * s->M;
        if (a > a_max) a_max = a;
        if (b > b_max) b_max = b;
        if (c > c_max) c_max = c;
    }
    float *A = xmalloc(a_max * sizeof *A), *B = xmalloc(b_max * sizeof *B);
    float *C = xcalloc(c_max * threads, sizeof *C);
    uint16_t *A16 = xmalloc(a_max * sizeof *A16), *B16 = xmalloc(b_max * sizeof *B16);
    for (size_t i = 0; i < a_max; i++) A[i] = (float)rng_uniform(&rng) - 0.5f;
    for (size_t i = 0; i < b_max; i++) B[i] = (float)rng_uniform(&rng) - 0.5f;
    load_blis(threads);
    int bf16 = gemm_bf16_supported();

    double total[GEMM_KINDS][GEMM_PASSES][CANDIDATES] = { 0 }, flop[GEMM_KINDS][GEMM_PASSES] = { 0 };
    int calls[GEMM_KINDS][GEMM_PASSES] = { 0 };
    for (int i = 0; i < nshapes; i++) {
        Shape *s = &shapes[i];
        flop[s->kind][s->pass] += 2.0 * s->M * s->N * s->K * s->calls;
        calls[s->kind][s->pass] += s->calls;
        if (bf16)     /* op(A), op(B) packed, for libxsmm */
            for (int64_t r = 0; r < s->M; r++)
                for (int64_t c = 0; c < s->K; c++)
                    A16[r * s->K + c] = float_to_bf16(s->ta ? A[c * s->lda + r] : A[r * s->lda + c]);
        if (bf16)
            for (int64_t r = 0; r < s->K; r++)
                for (int64_t c = 0; c < s->N; c++)
                    B16[r * s->N + c] = float_to_bf16(s->tb ? B[c * s->ldb + r] : B[r * s->ldb + c]);
        for (int e = 0; e < CANDIDATES; e++) {
            int usable = (e != BLIS || bli_sgemm) && (e < ONEDNN_BF16 || bf16) &&
                         (e != XSMM_BF16 || per_thread_kind(s->kind));
            total[s->kind][s->pass][e] += usable
                ? s->calls * time_shape(e, s, A, B, C, A16, B16, c_max, threads) : 1e30;
        }
    }
    printf("GEMMs of one step, width %g, batch %d, %d threads, seconds per step (GFLOP/s):\n", width, batch,
           threads);
    printf("%-9s %-9s %5s %7s", "kind", "pass", "calls", "GFLOP");
    for (int e = 0; e < CANDIDATES; e++) printf(" %15s", candidate_names[e]);
    printf("  fastest fp32 / bf16; incv3 runs fp32 / autocast\n");
    double sum[CANDIDATES] = { 0 }, chosen[2] = { 0 };   /* on incv3's engines: fp32, autocast */
    for (int k = 0; k < GEMM_KINDS; k++)
        for (int p = 0; p < GEMM_PASSES; p++) {
            if (!calls[k][p]) continue;
            printf("%-9s %-9s %5d %7.2f", gemm_kind_name(k), gemm_pass_name(p), calls[k][p], flop[k][p] / 1e9);
            int best32 = OPENBLAS, best16 = ONEDNN_BF16;
            for (int e = 0; e < CANDIDATES; e++) {
                double t = total[k][p][e];
                sum[e] += t;
                if (t >= 1e29) printf(" %15s", "-");
                else printf(" %7.4f (%5.0f)", t, flop[k][p] / t / 1e9);
                if (e < ONEDNN_BF16 && t < total[k][p][best32]) best32 = e;
                if (e >= ONEDNN_BF16 && t < total[k][p][best16]) best16 = e;
            }
            printf("  %s / %s; ", candidate_names[best32], bf16 ? candidate_names[best16] : "-");
            gemm_set_autocast(0);
            printf("%s / ", gemm_engine_name(gemm_engine(k, p)));
            chosen[0] += total[k][p][candidate_of(gemm_engine(k, p))];
            if (gemm_set_autocast(1)) {
                printf("%s\n", gemm_engine_name(gemm_engine(k, p)));
                chosen[1] += total[k][p][candidate_of(gemm_engine(k, p))];
            } else printf("-\n");
            gemm_set_autocast(0);
        }
    printf("%-9s %-9s %5s %7s", "all", "", "", "");
    for (int e = 0; e < CANDIDATES; e++) sum[e] >= 1e29 ? printf(" %15s", "-") : printf(" %7.4f %7s", sum[e], "");
    printf("\n");
    /* The GEMMs' own speed-up under autocast: the rest of a step dilutes it,
     * unless that gets as much faster (bf16 x-hat halves batch norm's traffic). */
    printf("a step's GEMMs on incv3's engines: fp32 %.4f s", chosen[0]);
    if (bf16) printf(", autocast %.4f s (%.2fx)", chosen[1], chosen[0] / chosen[1]);
    printf("\n");
    return 0;
}
