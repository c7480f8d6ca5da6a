/* winograd.h - conv.c's path for stride-1 3x3, 5x5, 1xr and rx1 convolutions (winograd.c). */
#ifndef INCV3_WINOGRAD_H
#define INCV3_WINOGRAD_H
#include "layers.h"

/* Whether cs over H x W images goes this way: stride 1, 3x3 (padding up to
 * 2), 5x5 (padding up to 4) or 1x3, 3x1, 1x7, 7x1 (padding along the kernel
 * only, less than its length), over WINOGRAD_MIN_CHANNELS input channels or more.
 * Faster than the other paths from 3 channels up, but the transforms' rounding
 * does not shrink with the channel count as a direct sum's does: with fewer than
 * 16 the conformance network's fp32 forward drifts from PyTorch's double past the
 * tests' 1e-4 (docs/performance.md, "Winograd from 16 channels"). */
#define WINOGRAD_MIN_CHANNELS 16
int winograd_applies(const ConvShape *cs, int H, int W);
/* Floats of scratch forward needs; backward needs twice that. */
size_t winograd_scratch_floats(const ConvShape *cs, int N, int H, int W);
/* As conv_forward/conv_backward; pooled: of avgpool 3x3 s1 p1 of in, as
 * conv_pooled_forward/backward. */
void winograd_forward(float *out, const float *in, const float *weight, const ConvShape *cs,
                      int N, int H, int W, float *scratch, int pooled);
void winograd_backward(float *din, float *dweight, const float *dout, const float *in,
                       const float *weight, const ConvShape *cs, int N, int H, int W,
                       float *scratch, int pooled);
#endif
