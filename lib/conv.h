/* conv.h - the convolutions (conv.c), each a forward/backward pair over CNHW tensors
 * as layers.h lays them out: a GEMM over the batch, image by image over wide images,
 * Winograd's minimal filtering where it applies (winograd.h). */
#ifndef INCV3_CONV_H
#define INCV3_CONV_H
#include "layers.h"

/* 1x1, stride 1, no padding: a plain GEMM on its input, no im2col. */
int conv_is_pointwise(const ConvShape *cs);

/* Floats of scratch a convolution needs for N images (0 for 1x1 stride 1) at
 * the current thread count (image by image, each thread has its own). */
size_t conv_scratch_floats(const ConvShape *cs, int N, int H, int W);

/* out [cout, N, Ho, Wo] = in [cin, N, H, W] (*) weight [cout, cin, kh, kw] */
void conv_forward(float *out, const float *in, const float *weight, const ConvShape *cs,
                  int N, int H, int W, float *scratch);
/* din [cin, N, H, W] += ..., dweight [cout, cin, kh, kw] += ...; din may be NULL.
 * scratch: twice conv_scratch_floats. */
void conv_backward(float *din, float *dweight, const float *dout, const float *in,
                   const float *weight, const ConvShape *cs, int N, int H, int W, float *scratch);

/* avgpool 3x3 s1 p1 (padding counted in the divisor) of in, then the
 * convolution cs (stride 1, not 1x1): the Inception-A pool branch, pooled image
 * by image in cache and never kept (over images too small to go image by image,
 * pooled whole in scratch). d(input) is of the pool's input. Scratch: twice
 * conv_pooled_scratch_floats. */
size_t conv_pooled_scratch_floats(const ConvShape *cs, int N, int H, int W);
void conv_pooled_forward(float *out, const float *in, const float *weight, const ConvShape *cs,
                         int N, int H, int W, float *scratch);
void conv_pooled_backward(float *din, float *dweight, const float *dout, const float *in,
                          const float *weight, const ConvShape *cs, int N, int H, int W,
                          float *scratch);

/* Several 1x1 stride-1 convolutions of one input as one GEMM: its many rows
 * keep OpenBLAS near its peak where each alone has few. weight [rows, cin]
 * stacks theirs (rows = the sum of couts[g]); out[g] [couts[g], L]. Works in
 * chunks of columns through scratch (conv1x1_group_scratch_floats). */
size_t conv1x1_group_scratch_floats(int rows, int64_t L);
void conv1x1_group_forward(float *const *out, const int *couts, int groups, const float *in,
                           const float *weight, int cin, int64_t L, float *scratch);
/* din [cin, L] += ... (may be NULL), dweight [rows, cin] += ...; dout[g] [couts[g], L] */
void conv1x1_group_backward(float *din, float *dweight, float *const *dout, const int *couts,
                            int groups, const float *in, const float *weight, int cin, int64_t L,
                            float *scratch);
#endif
