/* gemm.h - every GEMM of training, C [M, N] = op(A) [M, K] op(B) [K, N] + beta C,
 * row-major, alpha 1, beta 0 or 1. Each call names its kind and pass, and runs on
 * the engine that bench/gemm measured fastest for them (the table in gemm.c). */
#ifndef INCV3_GEMM_H
#define INCV3_GEMM_H
#include <stdint.h>
#include <string.h>

typedef enum {
    GEMM_POINTWISE,   /* 1x1 convolutions, alone or stacked */
    GEMM_IM2COL,      /* gathered columns, by batch (strided and small convolutions) */
    GEMM_SHIFTED,     /* by image, one GEMM per kernel tap over shifted views */
    GEMM_WINOGRAD,    /* the point GEMMs and kernel transforms: one thread each */
    GEMM_HEAD,        /* the classifiers */
    GEMM_KINDS
} GemmKind;
typedef enum { GEMM_FORWARD, GEMM_DINPUT, GEMM_DWEIGHT, GEMM_PASSES } GemmPass;
typedef enum { ENGINE_OPENBLAS, ENGINE_ONEDNN, ENGINE_ONEDNN_BF16, ENGINES } GemmEngine;

void gemm(GemmKind kind, GemmPass pass, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
          const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* The same GEMM on a given engine (bench/gemm and the tests). */
void gemm_on(GemmEngine engine, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
             const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* The kernels the GEMMs run on, as a result records them: OpenBLAS's core type and
 * oneDNN's instruction set (the CPU's, narrowed by ONEDNN_MAX_CPU_ISA). */
const char *gemm_openblas_core(void);
const char *gemm_onednn_isa(void);
/* Whether this CPU has bf16 dot products (AVX512_BF16), which ENGINE_ONEDNN_BF16 needs. */
int gemm_bf16_supported(void);
/* Autocast: GEMMs whose kind is safe and faster in bf16 take bf16 inputs and
 * accumulate in fp32; the rest stay fp32. Returns 0, changing nothing, where
 * the CPU lacks bf16 dot products. */
int gemm_set_autocast(int on);
int gemm_autocast(void);
/* Which engine gemm() picks for a kind and pass under the current autocast. */
GemmEngine gemm_engine(GemmKind kind, GemmPass pass);
const char *gemm_engine_name(GemmEngine engine);
const char *gemm_kind_name(GemmKind kind);
const char *gemm_pass_name(GemmPass pass);

/* bench/gemm records the shapes of a step: called for every gemm() while set. */
typedef void (*GemmObserver)(GemmKind kind, GemmPass pass, int trans_a, int trans_b, int64_t M,
                             int64_t N, int64_t K, int64_t lda, int64_t ldb, float beta, int64_t ldc);
void gemm_observe(GemmObserver observer);

/* bf16 with round-to-nearest-even, as PyTorch and the AVX512_BF16 instructions round. */
uint16_t float_to_bf16(float x);
static inline float bf16_to_float(uint16_t b) {     /* inline: loops over it vectorise */
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
/* to [n] = bf16 of from [n] */
void floats_to_bf16(uint16_t *to, const float *from, int64_t n);
/* to [rows, cols] packed = bf16 of from [rows, cols], rows ld apart. */
void matrix_to_bf16(uint16_t *to, const float *from, int64_t rows, int64_t cols, int64_t ld);
#endif
