/* bench/winograd.c - the network's stride-1 3x3 convolutions three ways: ours
 * (conv.c: F(6, 3) along columns, shifted across), oneDNN's fp32 Winograd
 * F(4x4, 3x3) (dnnl_convolution_winograd, AVX-512) and oneDNN's direct
 * convolution, forward and both backward passes, on the same data.
 *
 * oneDNN runs in its own blocked layouts (nChw16c and blocked weights); our
 * activations are [C, N, H, W]. Its time is given alone and with the reorders
 * a step would need (input, d(output) and weights in; output, d(input) and
 * d(weight) out). Its forward error is measured against ours and against a
 * double-precision direct sum over the first images.
 *
 *   bench-winograd [WIDTH (1)] [BATCH (128)] [THREADS (all)] [REPS (3)]
 * One line per shape and way: milliseconds per pass (median of REPS). */
#include "conv.h"
#include "util.h"
#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { const char *where; int cin, cout, H, W, per_step; } Shape;

/* full width; channels scale with the width as the model's do */
static const Shape SHAPES[] = {
    { "Mixed_5b-d, 6a branch3x3dbl_2", 64, 96, 30, 30, 4 },
    { "Mixed_5b-d branch3x3dbl_3", 96, 96, 30, 30, 3 },
    { "Mixed_7b-c branch3x3dbl_2", 448, 384, 6, 6, 2 },
};

static void check(dnnl_status_t s, const char *what) {
    if (s != dnnl_success) die("oneDNN: %s failed (status %d)", what, (int)s);
}

/* uniform in [-1, 1): what matters here is time and relative rounding */
static float *random_floats(size_t n, uint64_t seed) {
    float *x = xmalloc(n * sizeof *x);
    Rng r;
    rng_seed(&r, seed, 0);
    for (size_t i = 0; i < n; i++) x[i] = 2 * rng_uniform(&r) - 1;
    return x;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- oneDNN ---- */

static dnnl_engine_t engine;
static dnnl_stream_t stream;

/* [N, C, H, W] as our [C, N, H, W] stores it */
static void cnhw_desc(dnnl_memory_desc_t *md, int N, int C, int H, int W) {
    dnnl_dims_t dims = { N, C, H, W }, strides = { (int64_t)H * W, (int64_t)N * H * W, W, 1 };
    check(dnnl_memory_desc_init_by_strides(md, 4, dims, dnnl_f32, strides), "CNHW descriptor");
}

static void any_desc(dnnl_memory_desc_t *md, int a, int b, int c, int d) {
    dnnl_dims_t dims = { a, b, c, d };
    check(dnnl_memory_desc_init_by_tag(md, 4, dims, dnnl_f32, dnnl_format_tag_any), "descriptor");
}

static dnnl_memory_t memory(const dnnl_memory_desc_t *md, void *data) {
    dnnl_memory_t m;
    check(dnnl_memory_create(&m, md, engine, data ? data : DNNL_MEMORY_ALLOCATE), "memory");
    return m;
}

static dnnl_primitive_t reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to) {
    dnnl_primitive_desc_t pd;
    check(dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, NULL), "reorder");
    dnnl_primitive_t p;
    check(dnnl_primitive_create(&p, pd), "reorder primitive");
    dnnl_primitive_desc_destroy(pd);
    return p;
}

static double run_reorder(dnnl_primitive_t r, dnnl_memory_t from, dnnl_memory_t to) {
    dnnl_exec_arg_t args[] = { { DNNL_ARG_FROM, from }, { DNNL_ARG_TO, to } };
    double t = now_seconds();
    check(dnnl_primitive_execute(r, stream, 2, args), "reorder");
    check(dnnl_stream_wait(stream), "stream");
    return now_seconds() - t;
}

static double run(dnnl_primitive_t p, dnnl_exec_arg_t *args, int nargs) {
    double t = now_seconds();
    check(dnnl_primitive_execute(p, stream, nargs, args), "convolution");
    check(dnnl_stream_wait(stream), "stream");
    return now_seconds() - t;
}

typedef struct { double fwd, bwd_data, bwd_weights, reorders; float *out; } Timing;   /* out NULL: no kernel */

/* An input of a backward pass in its layout md: the forward pass's own (shared,
 * in shared_md) where the layouts agree, else a buffer of its own and *fill,
 * the reorder into it from our layout from_md. */
static dnnl_memory_t backward_input(const dnnl_memory_desc_t *md, dnnl_memory_t shared,
                                    const dnnl_memory_desc_t *shared_md, const dnnl_memory_desc_t *from_md,
                                    dnnl_primitive_t *fill) {
    if (dnnl_memory_desc_equal(md, shared_md)) { *fill = NULL; return shared; }
    *fill = reorder(from_md, md);
    return memory(md, NULL);
}

/* One way of oneDNN's (alg), REPS times after one untimed (which makes its
 * kernels): medians; out: its forward output in CNHW. */
static Timing onednn(dnnl_alg_kind_t alg, const ConvShape *cs, int N, int H, int W, const float *in,
                     const float *weight, const float *dout, int reps) {
    Timing t = { 0 };
    dnnl_memory_desc_t src_any, wei_any, dst_any, src_cnhw, dst_cnhw, wei_oihw;
    any_desc(&src_any, N, cs->cin, H, W);
    any_desc(&wei_any, cs->cout, cs->cin, 3, 3);
    any_desc(&dst_any, N, cs->cout, H, W);
    cnhw_desc(&src_cnhw, N, cs->cin, H, W);
    cnhw_desc(&dst_cnhw, N, cs->cout, H, W);
    dnnl_dims_t wdims = { cs->cout, cs->cin, 3, 3 };
    check(dnnl_memory_desc_init_by_tag(&wei_oihw, 4, wdims, dnnl_f32, dnnl_oihw), "weights");
    dnnl_dims_t strides = { 1, 1 }, pad = { 1, 1 };
    dnnl_convolution_desc_t fd, bdd, bwd;
    check(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, alg, &src_any, &wei_any, NULL,
                                             &dst_any, strides, pad, pad), "forward descriptor");
    dnnl_primitive_desc_t fpd, bdpd, bwpd;
    if (dnnl_primitive_desc_create(&fpd, &fd, NULL, engine, NULL) != dnnl_success) return t;   /* no kernel */
    check(dnnl_convolution_backward_data_desc_init(&bdd, alg, &src_any, &wei_any, &dst_any, strides, pad, pad),
          "backward data descriptor");
    check(dnnl_primitive_desc_create(&bdpd, &bdd, NULL, engine, fpd), "backward data");
    check(dnnl_convolution_backward_weights_desc_init(&bwd, alg, &src_any, &wei_any, NULL, &dst_any, strides,
                                                      pad, pad), "backward weights descriptor");
    check(dnnl_primitive_desc_create(&bwpd, &bwd, NULL, engine, fpd), "backward weights");
    const dnnl_memory_desc_t *src_md = dnnl_primitive_desc_query_md(fpd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *wei_md = dnnl_primitive_desc_query_md(fpd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *dst_md = dnnl_primitive_desc_query_md(fpd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *dsrc_md = dnnl_primitive_desc_query_md(bdpd, dnnl_query_diff_src_md, 0);
    const dnnl_memory_desc_t *bd_wei_md = dnnl_primitive_desc_query_md(bdpd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *bd_ddst_md = dnnl_primitive_desc_query_md(bdpd, dnnl_query_diff_dst_md, 0);
    const dnnl_memory_desc_t *bw_src_md = dnnl_primitive_desc_query_md(bwpd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *dwei_md = dnnl_primitive_desc_query_md(bwpd, dnnl_query_diff_weights_md, 0);
    const dnnl_memory_desc_t *bw_ddst_md = dnnl_primitive_desc_query_md(bwpd, dnnl_query_diff_dst_md, 0);
    dnnl_primitive_t fwd, bdata, bweights;
    check(dnnl_primitive_create(&fwd, fpd), "forward primitive");
    check(dnnl_primitive_create(&bdata, bdpd), "backward data primitive");
    check(dnnl_primitive_create(&bweights, bwpd), "backward weights primitive");

    float *out = xmalloc((size_t)cs->cout * N * H * W * sizeof *out);
    float *din = xmalloc((size_t)cs->cin * N * H * W * sizeof *din);
    float *dw = xmalloc((size_t)cs->cout * cs->cin * 9 * sizeof *dw);
    dnnl_memory_t in_c = memory(&src_cnhw, (void *)in), out_c = memory(&dst_cnhw, out);
    dnnl_memory_t dout_c = memory(&dst_cnhw, (void *)dout), din_c = memory(&src_cnhw, din);
    dnnl_memory_t w_o = memory(&wei_oihw, (void *)weight), dw_o = memory(&wei_oihw, dw);
    dnnl_memory_t src = memory(src_md, NULL), wei = memory(wei_md, NULL), dst = memory(dst_md, NULL);
    dnnl_memory_t dsrc = memory(dsrc_md, NULL), bd_ddst = memory(bd_ddst_md, NULL), dwei = memory(dwei_md, NULL);
    dnnl_primitive_t r_in = reorder(&src_cnhw, src_md), r_w = reorder(&wei_oihw, wei_md);
    dnnl_primitive_t r_out = reorder(dst_md, &dst_cnhw), r_dout = reorder(&dst_cnhw, bd_ddst_md);
    dnnl_primitive_t r_din = reorder(dsrc_md, &src_cnhw), r_dw = reorder(dwei_md, &wei_oihw);
    /* the backward passes take forward's weights, input and bd's d(output) where their layouts agree */
    dnnl_primitive_t r_bdw, r_bwin, r_bwdout;
    dnnl_memory_t bd_wei = backward_input(bd_wei_md, wei, wei_md, &wei_oihw, &r_bdw);
    dnnl_memory_t bw_src = backward_input(bw_src_md, src, src_md, &src_cnhw, &r_bwin);
    dnnl_memory_t bw_ddst = backward_input(bw_ddst_md, bd_ddst, bd_ddst_md, &dst_cnhw, &r_bwdout);

    double *f = xmalloc((reps + 1) * sizeof *f), *bd = xmalloc((reps + 1) * sizeof *bd);
    double *bw = xmalloc((reps + 1) * sizeof *bw), *ro = xmalloc((reps + 1) * sizeof *ro);
    for (int r = 0; r <= reps; r++) {
        /* the reorders a step in our layout would need */
        ro[r] = run_reorder(r_in, in_c, src) + run_reorder(r_w, w_o, wei) + run_reorder(r_dout, dout_c, bd_ddst);
        if (r_bdw) ro[r] += run_reorder(r_bdw, w_o, bd_wei);
        if (r_bwin) ro[r] += run_reorder(r_bwin, in_c, bw_src);
        if (r_bwdout) ro[r] += run_reorder(r_bwdout, dout_c, bw_ddst);
        dnnl_exec_arg_t fa[] = { { DNNL_ARG_SRC, src }, { DNNL_ARG_WEIGHTS, wei }, { DNNL_ARG_DST, dst } };
        f[r] = run(fwd, fa, 3);
        dnnl_exec_arg_t da[] = { { DNNL_ARG_DIFF_DST, bd_ddst }, { DNNL_ARG_WEIGHTS, bd_wei },
                                 { DNNL_ARG_DIFF_SRC, dsrc } };
        bd[r] = run(bdata, da, 3);
        dnnl_exec_arg_t wa[] = { { DNNL_ARG_SRC, bw_src }, { DNNL_ARG_DIFF_DST, bw_ddst },
                                 { DNNL_ARG_DIFF_WEIGHTS, dwei } };
        bw[r] = run(bweights, wa, 3);
        ro[r] += run_reorder(r_out, dst, out_c) + run_reorder(r_din, dsrc, din_c) + run_reorder(r_dw, dwei, dw_o);
    }
    t.fwd = median(f + 1, reps); t.bwd_data = median(bd + 1, reps); t.bwd_weights = median(bw + 1, reps);
    t.reorders = median(ro + 1, reps);
    t.out = out;
    free(f); free(bd); free(bw); free(ro); free(din); free(dw);
    dnnl_memory_t ms[] = { in_c, out_c, dout_c, din_c, w_o, dw_o, src, wei, dst, dsrc, bd_ddst, dwei };
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) dnnl_memory_destroy(ms[i]);
    if (r_bdw) dnnl_memory_destroy(bd_wei);
    if (r_bwin) dnnl_memory_destroy(bw_src);
    if (r_bwdout) dnnl_memory_destroy(bw_ddst);
    dnnl_primitive_t ps[] = { fwd, bdata, bweights, r_in, r_w, r_out, r_dout, r_din, r_dw, r_bdw, r_bwin, r_bwdout };
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++)
        if (ps[i]) dnnl_primitive_destroy(ps[i]);
    dnnl_primitive_desc_destroy(fpd); dnnl_primitive_desc_destroy(bdpd); dnnl_primitive_desc_destroy(bwpd);
    return t;
}

/* ---- ours ---- */

static Timing ours(const ConvShape *cs, int N, int H, int W, const float *in, const float *weight,
                   const float *dout, int reps) {
    Timing t = { 0 };
    size_t scratch_floats = 2 * conv_scratch_floats(cs, N, H, W) + 1;
    float *scratch = xmalloc(scratch_floats * sizeof *scratch);
    float *out = xmalloc((size_t)cs->cout * N * H * W * sizeof *out);
    float *din = xcalloc((size_t)cs->cin * N * H * W, sizeof *din);
    float *dw = xcalloc((size_t)cs->cout * cs->cin * 9, sizeof *dw);
    double *f = xmalloc((reps + 1) * sizeof *f), *b = xmalloc((reps + 1) * sizeof *b);
    for (int r = 0; r <= reps; r++) {       /* the first, untimed, as oneDNN's */
        double t0 = now_seconds();
        conv_forward(out, in, weight, cs, N, H, W, scratch);
        double t1 = now_seconds();
        conv_backward(din, dw, dout, in, weight, cs, N, H, W, scratch);
        f[r] = t1 - t0;
        b[r] = now_seconds() - t1;
    }
    t.fwd = median(f + 1, reps);
    t.bwd_data = median(b + 1, reps);          /* both backward passes: conv_backward runs them together */
    t.out = out;
    free(f); free(b); free(scratch); free(din); free(dw);
    return t;
}

/* Largest |out - direct sum in double| over the first `images`, relative to the largest output. */
static double error_vs_direct(const float *out, const ConvShape *cs, int N, int H, int W, const float *in,
                              const float *weight, int images) {
    double worst = 0, scale = 1e-30;
    for (int co = 0; co < cs->cout; co++)
        for (int n = 0; n < images; n++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    double sum = 0;
                    for (int ci = 0; ci < cs->cin; ci++)
                        for (int ki = 0; ki < 3; ki++)
                            for (int kj = 0; kj < 3; kj++) {
                                int iy = y - 1 + ki, ix = x - 1 + kj;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                sum += (double)in[(((int64_t)ci * N + n) * H + iy) * W + ix] *
                                       weight[(((int64_t)co * cs->cin + ci) * 3 + ki) * 3 + kj];
                            }
                    double got = out[(((int64_t)co * N + n) * H + y) * W + x];
                    worst = fmax(worst, fabs(got - sum));
                    scale = fmax(scale, fabs(sum));
                }
    return worst / scale;
}

int main(int argc, char **argv) {
    double width = argc > 1 ? atof(argv[1]) : 1;
    int N = argc > 2 ? atoi(argv[2]) : 128, threads = argc > 3 ? atoi(argv[3]) : omp_get_max_threads();
    int reps = argc > 4 ? atoi(argv[4]) : 3;
    if (width <= 0 || N < 1 || threads < 1 || reps < 1)
        die("usage: bench-winograd [WIDTH] [BATCH] [THREADS] [REPS]");
    omp_set_num_threads(threads);
    check(dnnl_engine_create(&engine, dnnl_cpu, 0), "engine");
    check(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags), "stream");
    printf("3x3 stride-1 convolutions, width %g, batch %d, %d threads, median of %d; ms per pass\n", width, N,
           threads, reps);
    printf("%-34s %-22s %8s %8s %8s %9s %8s %10s %10s\n", "shape", "way", "forward", "d(in)", "d(w)",
           "reorders", "total", "err/ours", "err/exact");
    double step_ours = 0, step_wino = 0, step_wino_r = 0;
    for (size_t s = 0; s < sizeof SHAPES / sizeof *SHAPES; s++) {
        const Shape *sh = &SHAPES[s];
        int cin = (int)(sh->cin * width + 0.5), cout = (int)(sh->cout * width + 0.5);
        ConvShape cs = { cin, cout, 3, 3, 1, 1, 1, 1 };
        int H = sh->H, W = sh->W;
        float *in = random_floats((size_t)cin * N * H * W, 1), *weight = random_floats((size_t)cout * cin * 9, 2);
        float *dout = random_floats((size_t)cout * N * H * W, 3);
        for (size_t i = 0; i < (size_t)cout * cin * 9; i++) weight[i] *= 1.0f / sqrtf(9.0f * cin);
        char label[96];
        snprintf(label, sizeof label, "%s %d->%d %dx%d", sh->where, cin, cout, H, W);
        Timing o = ours(&cs, N, H, W, in, weight, dout, reps);
        double e_ours = error_vs_direct(o.out, &cs, N, H, W, in, weight, 2);
        printf("%-34.34s %-22s %8.1f %17.1f %9s %8.1f %10s %10.2e\n", label, "incv3 F(6,3) shifted",
               1e3 * o.fwd, 1e3 * o.bwd_data, "-", 1e3 * (o.fwd + o.bwd_data), "-", e_ours);
        step_ours += sh->per_step * (o.fwd + o.bwd_data);
        static const struct { dnnl_alg_kind_t alg; const char *name; } WAYS[] = {
            { dnnl_convolution_winograd, "oneDNN Winograd 4x4" }, { dnnl_convolution_direct, "oneDNN direct" } };
        for (int w = 0; w < 2; w++) {
            Timing d = onednn(WAYS[w].alg, &cs, N, H, W, in, weight, dout, reps);
            if (!d.out) { printf("%-34.34s %-22s no kernel for this shape here\n", label, WAYS[w].name); continue; }
            double e_rel = 0, scale = 1e-30;
            for (size_t i = 0; i < (size_t)cout * N * H * W; i++) {
                e_rel = fmax(e_rel, fabs(d.out[i] - o.out[i]));
                scale = fmax(scale, fabs(o.out[i]));
            }
            double total = d.fwd + d.bwd_data + d.bwd_weights;
            printf("%-34.34s %-22s %8.1f %8.1f %8.1f %9.1f %8.1f %10.2e %10.2e\n", label, WAYS[w].name,
                   1e3 * d.fwd, 1e3 * d.bwd_data, 1e3 * d.bwd_weights, 1e3 * d.reorders, 1e3 * (total + d.reorders),
                   e_rel / scale, error_vs_direct(d.out, &cs, N, H, W, in, weight, 2));
            if (w == 0) { step_wino += sh->per_step * total; step_wino_r += sh->per_step * (total + d.reorders); }
            free(d.out);
        }
        free(o.out); free(in); free(weight); free(dout);
    }
    printf("a step's stride-1 3x3 convolutions: incv3 %.0f ms, oneDNN Winograd %.0f ms (%.0f with reorders)\n",
           1e3 * step_ours, 1e3 * step_wino, 1e3 * step_wino_r);
    return 0;
}
