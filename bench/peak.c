/* bench-peak - this CPU's limit: how many fp32 multiply-adds (AVX2 and AVX-512 FMA)
 * and bf16 dot products (AVX512_BF16's vdpbf16ps) it retires per second on 1 and on
 * all threads, and how close LIBXSMM's JIT batch-reduce GEMMs come to it on blocks in
 * cache at the shapes of this network's convolutions. Every speed figure of incv3 is
 * a fraction of the first table. Run by `make bench` (bench/peak).
 *   bench-peak [SECONDS per measurement, default 0.5] */
#include <libxsmm.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* Each loop body: 12 (AVX2) or 24 (AVX-512) independent multiply-adds, more than
 * the FMA units' latency times their count, in inline assembly so that nothing is
 * folded away. Returns FLOPs done. */
#define REP12(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11)
#define REP24(op) REP12(op) op(12) op(13) op(14) op(15) op(16) op(17) op(18) op(19) op(20) op(21) op(22) op(23)

__attribute__((target("avx2,fma"))) static double fma_avx2(long iters) {
#define YMM(i) "vfmadd231ps %%ymm14, %%ymm15, %%ymm" #i "\n\t"
    __asm__ volatile("vxorps %%ymm14, %%ymm14, %%ymm14\n\tvxorps %%ymm15, %%ymm15, %%ymm15" ::: "xmm14", "xmm15");
    for (long i = 0; i < iters; i++)
        __asm__ volatile(REP12(YMM) ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                         "xmm8", "xmm9", "xmm10", "xmm11");
    __asm__ volatile("vzeroupper");
    return (double)iters * 12 * 8 * 2;
}

__attribute__((target("avx512f"))) static double fma_avx512(long iters) {
#define ZMM(i) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #i "\n\t"
    __asm__ volatile("vpxord %%zmm30, %%zmm30, %%zmm30\n\tvpxord %%zmm31, %%zmm31, %%zmm31" ::: "xmm30", "xmm31");
    for (long i = 0; i < iters; i++)
        __asm__ volatile(REP24(ZMM) ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                         "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17",
                         "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23");
    __asm__ volatile("vzeroupper");
    return (double)iters * 24 * 16 * 2;
}

__attribute__((target("avx512f,avx512bf16"))) static double dot_bf16(long iters) {
#define BF(i) "vdpbf16ps %%zmm30, %%zmm31, %%zmm" #i "\n\t"
    __asm__ volatile("vpxord %%zmm30, %%zmm30, %%zmm30\n\tvpxord %%zmm31, %%zmm31, %%zmm31" ::: "xmm30", "xmm31");
    for (long i = 0; i < iters; i++)
        __asm__ volatile(REP24(BF) ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                         "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17",
                         "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23");
    __asm__ volatile("vzeroupper");
    return (double)iters * 24 * 16 * 4;      /* 16 lanes, each 2 products and 2 adds */
}

/* GFLOP/s of kernel on `threads` threads, best of 3 runs of about `seconds`. */
static double peak(double (*kernel)(long), int threads, double seconds) {
    long iters = 1 << 16;
    double t0 = now();
    kernel(iters);
    double per = (now() - t0) / iters;
    iters = (long)(seconds / (per > 0 ? per : 1e-9)) + 1;
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double flops = 0;
        t0 = now();
        #pragma omp parallel num_threads(threads) reduction(+ : flops)
        flops += kernel(iters);
        double rate = flops / (now() - t0) / 1e9;
        if (rate > best) best = rate;
    }
    return best;
}

/* A batch-reduce GEMM as a 1x1 convolution's block runs it: C[m x n] += sum over
 * `blocks` of A_i[m x k] B_i[k x n] (column-major: m pixels, n output channels, k input
 * channels per block), each thread on its own blocks in cache. */
static double brgemm(int m, int n, int k, int blocks, int bf16, int threads, double seconds) {
    libxsmm_blasint lda = m, ldb = k, ldc = m;
    float alpha = 1, beta = 1;
    int flags = bf16 ? LIBXSMM_GEMM_FLAG_VNNI_A : 0, prefetch = LIBXSMM_PREFETCH_NONE;
    size_t esize = bf16 ? 2 : 4;
    libxsmm_smmfunction_reducebatch_strd fs = NULL;
    libxsmm_bsmmfunction_reducebatch_strd fb = NULL;
    if (bf16)
        fb = libxsmm_bsmmdispatch_reducebatch_strd(m, n, k, (libxsmm_blasint)(m * k * esize),
                                                   (libxsmm_blasint)(k * n * esize), &lda, &ldb, &ldc, &alpha,
                                                   &beta, &flags, &prefetch);
    else
        fs = libxsmm_smmdispatch_reducebatch_strd(m, n, k, (libxsmm_blasint)(m * k * esize),
                                                  (libxsmm_blasint)(k * n * esize), &lda, &ldb, &ldc, &alpha,
                                                  &beta, &flags, &prefetch);
    if (!fs && !fb) return 0;
    double best = 0, flop = 2.0 * m * n * k * blocks;
    for (int r = 0; r < 3; r++) {
        double total = 0;
        double t0 = now();
        #pragma omp parallel num_threads(threads) reduction(+ : total)
        {
            char *a = calloc((size_t)m * k * blocks, esize), *b = calloc((size_t)k * n * blocks, esize);
            float *c = calloc((size_t)m * n, sizeof *c);
            unsigned long long count = (unsigned long long)blocks;
            long calls = (long)(seconds * 100e9 / flop / threads) + 1;
            for (long i = 0; i < calls; i++) {
                if (bf16) fb((const libxsmm_bfloat16 *)a, (const libxsmm_bfloat16 *)b, c, &count);
                else fs((const float *)a, (const float *)b, c, &count);
            }
            total += calls * flop;
            free(a); free(b); free(c);
        }
        double rate = total / (now() - t0) / 1e9;
        if (rate > best) best = rate;
    }
    return best;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0.5;
    int all = omp_get_max_threads();
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = __builtin_cpu_supports("avx512f"), bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
    libxsmm_init();
    printf("== the limit: GFLOP/s of independent multiply-adds (best of 3, %.1f s each)\n", seconds);
    printf("%-34s %12s %12s\n", "instruction", "1 thread", "all threads");
    double fp32_peak = 0, bf16_peak = 0;
    if (avx2) {
        double one = peak(fma_avx2, 1, seconds), many = peak(fma_avx2, all, seconds);
        printf("%-34s %12.1f %12.1f\n", "fp32 vfmadd231ps ymm (AVX2)", one, many);
        fp32_peak = many;
    }
    if (avx512) {
        double one = peak(fma_avx512, 1, seconds), many = peak(fma_avx512, all, seconds);
        printf("%-34s %12.1f %12.1f\n", "fp32 vfmadd231ps zmm (AVX-512)", one, many);
        if (many > fp32_peak) fp32_peak = many;
    } else {
        printf("%-34s %12s %12s\n", "fp32 vfmadd231ps zmm (AVX-512)", "no AVX-512", "");
    }
    if (bf16) {
        double one = peak(dot_bf16, 1, seconds), many = peak(dot_bf16, all, seconds);
        printf("%-34s %12.1f %12.1f\n", "bf16 vdpbf16ps zmm (AVX512_BF16)", one, many);
        bf16_peak = many;
    } else {
        printf("%-34s %12s %12s\n", "bf16 vdpbf16ps zmm (AVX512_BF16)", "none here", "");
    }
    printf("peak_fp32 %.1f\npeak_bf16 %.1f\n", fp32_peak, bf16_peak);
    printf("\n== LIBXSMM %s batch-reduce GEMMs on blocks in cache (JIT target %s), %d threads\n",
           LIBXSMM_VERSION, libxsmm_get_target_arch(), all);
    printf("%-24s %7s %14s %8s %14s %8s\n", "m x n x k, blocks", "where", "fp32 GFLOP/s", "of peak",
           "bf16 GFLOP/s", "of peak");
    /* m pixels x n output channels x k input channels a block, reduced over the blocks
     * of a layer's input channels: 1x1 convolutions of Mixed_5 to Mixed_7, and the
     * per-point GEMMs of the Winograd convolutions */
    static const struct { int m, n, k, blocks; const char *where; } shapes[] = {
        { 64, 64, 64, 4, "Mixed_5 1x1" }, { 64, 64, 64, 12, "Mixed_6 1x1" }, { 32, 64, 64, 20, "Mixed_7 1x1" },
        { 16, 96, 16, 4, "narrow" }, { 128, 64, 64, 6, "wide" }, { 64, 32, 32, 12, "Winograd point" },
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%dx%d, %d", shapes[i].m, shapes[i].n, shapes[i].k, shapes[i].blocks);
        double f = brgemm(shapes[i].m, shapes[i].n, shapes[i].k, shapes[i].blocks, 0, all, seconds);
        double b = bf16 ? brgemm(shapes[i].m, shapes[i].n, shapes[i].k, shapes[i].blocks, 1, all, seconds) : 0;
        printf("%-24s %-14s %7.1f %7.0f%%", shape, shapes[i].where, f, fp32_peak > 0 ? 100 * f / fp32_peak : 0);
        if (bf16) printf(" %14.1f %7.0f%%\n", b, 100 * b / bf16_peak);
        else printf(" %14s\n", "-");
    }
    libxsmm_finalize();
    return 0;
}
