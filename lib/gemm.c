/* gemm.c - the GEMMs of training on three engines, chosen per kind and pass.
 *
 * OpenBLAS sgemm; oneDNN's sgemm, which picks its kernels from CPUID itself
 * (an OPENBLAS_CORETYPE pin does not narrow it); and oneDNN's matmul over bf16
 * copies of A and B with fp32 accumulation into fp32 C (autocast only, and
 * only on CPUs with bf16 dot products: emulating them would be slower than fp32).
 *
 * The bf16 copies are packed, rounded to nearest even. Matmul primitives are
 * made once per shape and kept: making one costs far more than small GEMMs. */
#include "gemm.h"
#include "profile.h"
#include "util.h"
#include <cblas.h>
#include <dnnl.h>
#include <immintrin.h>
#include <pthread.h>
#include <string.h>

/* Measured with bench/gemm (make bench) on the development machine (Zen 5) at
 * widths 1, 0.25 and 0.125, with and without OPENBLAS_CORETYPE=Haswell; the
 * tables are in docs/performance.md. oneDNN ran 1.8x OpenBLAS under the pin and level
 * to 2x without it, except: d(weight) of the shifted path's small GEMMs, where
 * OpenBLAS was up to 2.5x faster, and the classifiers' tiny GEMMs, where
 * oneDNN's fixed cost per call dominates. BLIS (0.9) ran at a fifth of either;
 * libxsmm (1.17) matched OpenBLAS, on which it falls back for all but small
 * GEMMs, and won nothing by enough to be a third engine. */
static const GemmEngine fp32_engine[GEMM_KINDS][GEMM_PASSES] = {
    [GEMM_POINTWISE] = { ENGINE_ONEDNN, ENGINE_ONEDNN, ENGINE_ONEDNN },
    [GEMM_IM2COL]    = { ENGINE_ONEDNN, ENGINE_ONEDNN, ENGINE_ONEDNN },
    [GEMM_SHIFTED]   = { ENGINE_ONEDNN, ENGINE_ONEDNN, ENGINE_OPENBLAS },
    [GEMM_WINOGRAD]  = { ENGINE_ONEDNN, ENGINE_ONEDNN, ENGINE_ONEDNN },
    [GEMM_HEAD]      = { ENGINE_OPENBLAS, ENGINE_OPENBLAS, ENGINE_OPENBLAS },
};
/* Under autocast: bf16 where it measured faster, the large GEMMs of the 1x1
 * and gathered convolutions (1.5x oneDNN's fp32 at full width). The per-thread
 * GEMMs of the shifted and Winograd paths ran slower in bf16 (too small to
 * repay the conversion); Winograd also amplifies the rounding of its inputs:
 * 4 to 13 times a direct bf16 convolution's error at the tiles winograd.c uses
 * (the study studies/winograd-bf16.py).
 * The classifiers stay fp32: too small to gain, and the loss is taken there. */
static const int bf16_kind[GEMM_KINDS] = { [GEMM_POINTWISE] = 1, [GEMM_IM2COL] = 1 };

static int autocast_on;
static GemmObserver observer;

const char *gemm_engine_name(GemmEngine e) {
    static const char *names[] = { "openblas", "onednn", "onednn-bf16" };
    return names[e];
}
const char *gemm_kind_name(GemmKind k) {
    static const char *names[] = { "1x1", "im2col", "shifted", "winograd", "head" };
    return names[k];
}
const char *gemm_pass_name(GemmPass p) {
    static const char *names[] = { "forward", "d(input)", "d(weight)" };
    return names[p];
}

static int cpu_has_bf16(void) {
    static int has = -1;
    if (has < 0) {
        __builtin_cpu_init();
        has = __builtin_cpu_supports("avx512bf16") != 0;
    }
    return has;
}

const char *gemm_openblas_core(void) { return openblas_get_corename(); }

const char *gemm_onednn_isa(void) {
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
    }
}

/* oneDNN's view: the CPU's, narrowed by ONEDNN_MAX_CPU_ISA if set. */
int gemm_bf16_supported(void) {
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return cpu_has_bf16() && (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
}

int gemm_set_autocast(int on) {
    if (on && !gemm_bf16_supported()) return 0;
    autocast_on = on;
    return 1;
}

int gemm_autocast(void) { return autocast_on; }

GemmEngine gemm_engine(GemmKind kind, GemmPass pass) {
    return autocast_on && bf16_kind[kind] ? ENGINE_ONEDNN_BF16 : fp32_engine[kind][pass];
}

void gemm_observe(GemmObserver fn) { observer = fn; }

/* ---- bf16 ---- */

/* Denormals flush to signed zero, as VCVTNEPS2BF16 does, so that the vector
 * and scalar paths give the same bits. */
uint16_t float_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0) return (uint16_t)(u >> 16 & 0x8000u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(u >> 16 | 0x0040u);   /* quiet NaN */
    u += 0x7fffu + (u >> 16 & 1u);
    return (uint16_t)(u >> 16);
}

__attribute__((target("avx512f,avx512bf16")))
static void row_to_bf16(uint16_t *to, const float *from, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(from + i));
        _mm256_storeu_si256((__m256i *)(to + i), (__m256i)h);
    }
    for (; i < n; i++) to[i] = float_to_bf16(from[i]);
}

void floats_to_bf16(uint16_t *to, const float *from, int64_t n) {
    if (cpu_has_bf16()) row_to_bf16(to, from, n);
    else for (int64_t i = 0; i < n; i++) to[i] = float_to_bf16(from[i]);
}

void matrix_to_bf16(uint16_t *to, const float *from, int64_t rows, int64_t cols, int64_t ld) {
    #pragma omp parallel for schedule(static) if (rows * cols >= 65536)
    for (int64_t r = 0; r < rows; r++) floats_to_bf16(to + r * cols, from + r * ld, cols);
}

typedef struct {
    int trans_a, trans_b, accumulate;
    int64_t M, N, K, ldc;
    dnnl_primitive_t matmul;
} Bf16Plan;

/* The plans are shared (a primitive may run on several threads at once); the
 * stream and the bf16 copies of A and B are each thread's own, as the shifted
 * path runs its GEMMs inside a parallel loop. */
static struct {
    pthread_mutex_t lock;
    dnnl_engine_t engine;
    Bf16Plan *plans;
    int nplans, cap;
} dnnl = { .lock = PTHREAD_MUTEX_INITIALIZER };
static __thread dnnl_stream_t thread_stream;
static __thread uint16_t *thread_buf;
static __thread size_t thread_buf_elems;

static void dnnl_check(dnnl_status_t s, const char *what) {
    if (s != dnnl_success) die("oneDNN: %s failed (status %d)", what, (int)s);
}

/* A [M, K] as stored: transposed, its rows run down the columns */
static void matrix_desc(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, int trans,
                        int64_t ld, dnnl_data_type_t type) {
    dnnl_dims_t dims = { rows, cols }, strides = { trans ? 1 : ld, trans ? ld : 1 };
    dnnl_check(dnnl_memory_desc_init_by_strides(md, 2, dims, type, strides), "memory descriptor");
}

/* Call with the lock held. */
static dnnl_primitive_t bf16_matmul(int ta, int tb, int64_t M, int64_t N, int64_t K, int64_t ldc,
                                    int accumulate) {
    for (int i = 0; i < dnnl.nplans; i++) {
        Bf16Plan *p = &dnnl.plans[i];
        if (p->trans_a == ta && p->trans_b == tb && p->M == M && p->N == N && p->K == K &&
            p->ldc == ldc && p->accumulate == accumulate)
            return p->matmul;
    }
    if (!dnnl.engine) dnnl_check(dnnl_engine_create(&dnnl.engine, dnnl_cpu, 0), "engine");
    dnnl_memory_desc_t a, b, c;
    matrix_desc(&a, M, K, ta, ta ? M : K, dnnl_bf16);
    matrix_desc(&b, K, N, tb, tb ? K : N, dnnl_bf16);
    matrix_desc(&c, M, N, 0, ldc, dnnl_f32);
    dnnl_matmul_desc_t desc;
    dnnl_check(dnnl_matmul_desc_init(&desc, &a, &b, NULL, &c), "matmul descriptor");
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t post;
    dnnl_check(dnnl_primitive_attr_create(&attr), "attributes");
    dnnl_check(dnnl_post_ops_create(&post), "post-ops");
    if (accumulate) dnnl_check(dnnl_post_ops_append_sum(post, 1.0f), "sum post-op");
    dnnl_check(dnnl_primitive_attr_set_post_ops(attr, post), "post-ops");
    dnnl_primitive_desc_t pd;
    dnnl_check(dnnl_primitive_desc_create(&pd, &desc, attr, dnnl.engine, NULL), "matmul");
    dnnl_primitive_t matmul;
    dnnl_check(dnnl_primitive_create(&matmul, pd), "matmul primitive");
    dnnl_primitive_desc_destroy(pd);
    dnnl_post_ops_destroy(post);
    dnnl_primitive_attr_destroy(attr);
    if (dnnl.nplans == dnnl.cap) {
        dnnl.cap = dnnl.cap ? 2 * dnnl.cap : 64;
        dnnl.plans = xrealloc(dnnl.plans, dnnl.cap * sizeof *dnnl.plans);
    }
    dnnl.plans[dnnl.nplans++] = (Bf16Plan){ ta, tb, accumulate, M, N, K, ldc, matmul };
    return matmul;
}

static dnnl_memory_t wrap(dnnl_primitive_t p, dnnl_query_t which, int index, void *data) {
    const_dnnl_primitive_desc_t pd;
    dnnl_check(dnnl_primitive_get_primitive_desc(p, &pd), "primitive query");
    dnnl_memory_t m;
    dnnl_check(dnnl_memory_create(&m, dnnl_primitive_desc_query_md(pd, which, index), dnnl.engine, data),
               "memory");
    return m;
}

static void gemm_bf16(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    pthread_mutex_lock(&dnnl.lock);
    dnnl_primitive_t matmul = bf16_matmul(ta, tb, M, N, K, ldc, beta != 0.0f);
    if (!thread_stream)
        dnnl_check(dnnl_stream_create(&thread_stream, dnnl.engine, dnnl_stream_default_flags), "stream");
    pthread_mutex_unlock(&dnnl.lock);
    size_t need = (size_t)M * K + (size_t)K * N;
    if (need > thread_buf_elems) {
        free(thread_buf);
        thread_buf = xmalloc(need * sizeof *thread_buf);
        thread_buf_elems = need;
    }
    uint16_t *a16 = thread_buf, *b16 = thread_buf + (size_t)M * K;
    matrix_to_bf16(a16, A, ta ? K : M, ta ? M : K, lda);
    matrix_to_bf16(b16, B, tb ? N : K, tb ? K : N, ldb);
    dnnl_memory_t am = wrap(matmul, dnnl_query_src_md, 0, a16);
    dnnl_memory_t bm = wrap(matmul, dnnl_query_weights_md, 0, b16);
    dnnl_memory_t cm = wrap(matmul, dnnl_query_dst_md, 0, C);
    dnnl_exec_arg_t args[] = { { DNNL_ARG_SRC, am }, { DNNL_ARG_WEIGHTS, bm }, { DNNL_ARG_DST, cm } };
    double start = prof_enabled ? now_seconds() : 0;
    dnnl_check(dnnl_primitive_execute(matmul, thread_stream, 3, args), "matmul");
    dnnl_check(dnnl_stream_wait(thread_stream), "stream");
    if (prof_enabled) prof_gemm(now_seconds() - start);
    dnnl_memory_destroy(am);
    dnnl_memory_destroy(bm);
    dnnl_memory_destroy(cm);
}

/* ---- dispatch ---- */

void gemm_on(GemmEngine engine, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
             int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (beta != 0.0f && beta != 1.0f) die("internal: gemm takes beta 0 or 1, not %g", beta);
    /* the profile counts the multiplication alone: the bf16 engine times its own,
       leaving out its conversions */
    int timed = prof_enabled && engine != ENGINE_ONEDNN_BF16;
    double start = timed ? now_seconds() : 0;
    switch (engine) {
    case ENGINE_OPENBLAS:
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K,
                    1.0f, A, lda, B, ldb, beta, C, ldc);
        break;
    case ENGINE_ONEDNN:
        dnnl_check(dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc),
                   "sgemm");
        break;
    case ENGINE_ONEDNN_BF16:
        if (K == 0) {               /* nothing to multiply: C = beta C */
            if (beta == 0.0f)
                for (int64_t r = 0; r < M; r++) memset(C + r * ldc, 0, N * sizeof *C);
            break;
        }
        gemm_bf16(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
        break;
    default:
        die("internal: no GEMM engine %d", (int)engine);
    }
    if (timed) prof_gemm(now_seconds() - start);
}

void gemm(GemmKind kind, GemmPass pass, int ta, int tb, int64_t M, int64_t N, int64_t K,
          const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (observer) observer(kind, pass, ta, tb, M, N, K, lda, ldb, beta, ldc);
    gemm_on(gemm_engine(kind, pass), ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}
