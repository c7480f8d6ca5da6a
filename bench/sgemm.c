/* sgemm - OpenBLAS single-precision GEMM rate on this machine: the roofline of
 * training, since almost all of a step's FLOPs are GEMMs. Prints GFLOP/s and the
 * kernels OpenBLAS ran. */
#include "util.h"
#include <cblas.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    tool_init("bench-sgemm", argc, argv);
    int n = argc > 1 ? atoi(argv[1]) : 2048, reps = 5;
    if (argc > 2) set_threads(atoi(argv[2]));
    float *a = xmalloc((size_t)n * n * sizeof *a), *b = xmalloc((size_t)n * n * sizeof *b);
    float *c = xcalloc((size_t)n * n, sizeof *c);
    for (size_t i = 0; i < (size_t)n * n; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.1f; }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double rate = 2.0 * n * n * (double)n / (now_seconds() - t) / 1e9;
        if (rate > best) best = rate;
    }
    printf("%.1f %s\n", best, openblas_get_corename());
    return 0;
}
