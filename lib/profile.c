/* profile.c - see profile.h. A stack of open intervals: closing one adds its
 * time to its kind and takes it out of the enclosing one. */
#include "profile.h"
#include "util.h"
#include <omp.h>

int prof_enabled;
static double total[PROF_COUNT], gemm_total[PROF_COUNT];
static struct { int kind; double start, children; } stack[16];
static int depth;

static const char *const NAMES[PROF_COUNT] = {
    "conv 1x1", "conv 3x3", "conv 5x5", "conv 1x7/7x1", "conv 1x3/3x1", "conv other",
    "im2col/col2im", "bn+relu", "pooling", "head", "optimizer", "input", "stream I/O", "exchange" };

void prof_push(int kind) {
    if (!prof_enabled || depth == 16) return;
    stack[depth].kind = kind;
    stack[depth].start = now_seconds();
    stack[depth].children = 0;
    depth++;
}

void prof_pop(void) {
    if (!prof_enabled || depth == 0) return;
    depth--;
    double t = now_seconds() - stack[depth].start;
    total[stack[depth].kind] += t - stack[depth].children;
    if (depth) stack[depth - 1].children += t;
}

void prof_gemm(double seconds) {
    if (!prof_enabled || depth == 0) return;
    int kind = stack[depth - 1].kind;       /* the main thread's: it waits in the region */
    if (omp_in_parallel()) seconds /= omp_get_num_threads();
    #pragma omp atomic
    gemm_total[kind] += seconds;
}

int prof_conv_kind(int kh, int kw) {
    if (kh == 1 && kw == 1) return PROF_CONV_1X1;
    if (kh == 3 && kw == 3) return PROF_CONV_3X3;
    if (kh == 5 && kw == 5) return PROF_CONV_5X5;
    if ((kh == 1 && kw == 7) || (kh == 7 && kw == 1)) return PROF_CONV_1X7;
    if ((kh == 1 && kw == 3) || (kh == 3 && kw == 1)) return PROF_CONV_1X3;
    return PROF_CONV_OTHER;
}

void prof_report(FILE *f) {
    double sum = 0, gemm_sum = 0;
    for (int i = 0; i < PROF_COUNT; i++) sum += total[i], gemm_sum += gemm_total[i];
    fprintf(f, "{\"event\":\"profile\",\"seconds\":%.3f", sum);
    for (int i = 0; i < PROF_COUNT; i++)
        fprintf(f, ",\"%s\":[%.3f,%.4f,%.3f]", NAMES[i], total[i], sum > 0 ? total[i] / sum : 0,
                gemm_total[i]);
    fprintf(f, ",\"gemm_share\":%.4f}\n", sum > 0 ? gemm_sum / sum : 0);
}
