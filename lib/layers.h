/* layers.h - the kernels of the network, each a forward/backward pair.
 *
 * Layout: activations are CNHW, i.e. [C, N, H, W] with the whole mini-batch
 * inside each channel row. A convolution is then one GEMM over the batch
 * ([Cout, K] x [K, N*Ho*Wo]), a 1x1 convolution needs no im2col at all,
 * batch norm works on contiguous rows, and a channel concatenation is free:
 * each branch writes its rows of the concatenated tensor in place. (Over
 * wide images a convolution goes image by image instead: conv.h.)
 * Backward functions accumulate (+=) into input and parameter gradients, so
 * a tensor read by several branches sums their gradients. */
#ifndef INCV3_LAYERS_H
#define INCV3_LAYERS_H
#include <stddef.h>
#include <stdint.h>
#include "util.h"

typedef struct {
    int cin, cout, kh, kw, sh, sw, ph, pw;
} ConvShape;

static inline int conv_out(int n, int k, int s, int p) { return (n + 2 * p - k) / s + 1; }

/* p[0, n) = 0 on all threads: large per-batch buffers, where one thread's
 * memset would hold the others up. */
void zero_floats(float *p, size_t n);

/* Batch norm followed by ReLU over rows of M = N*H*W values per channel, in
 * `groups` groups of M/groups consecutive values with their own statistics
 * (groups > 1 is "ghost" BN: local statistics of each worker's images).
 * A unit keeps only xhat; its output relu(gamma * xhat + beta) is made by
 * bn_relu_apply where and when it is read, so post-ReLU activations are not kept.
 * Training: y [C, M] holds the conv output and is overwritten with xhat, or,
 * when xhat16 is not NULL, xhat goes to xhat16 in bf16 (as autocast saves it);
 * mean/istd [C * groups] are saved; running statistics move by momentum toward
 * the group averages (unbiased var). */
void bn_forward_train(float *y, uint16_t *xhat16, float *mean, float *istd, float *run_mean,
                      float *run_var, int C, int64_t M, int groups, float momentum, float eps);
/* Inference: y normalised with the running statistics, in place or to xhat16. */
void bn_forward_eval(float *y, uint16_t *xhat16, const float *run_mean, const float *run_var,
                     int C, int64_t M, float eps);
/* out [C, M] = relu(gamma * xhat + beta), from xhat in fp32 or in bf16 */
void bn_relu_apply(float *out, const float *xhat, const float *gamma, const float *beta, int C,
                   int64_t M);
void bn_relu_apply_bf16(float *out, const uint16_t *xhat, const float *gamma, const float *beta,
                        int C, int64_t M);
/* dout [C, M]: gradient of the unit's output. xhat holds xhat, or, when xhat16
 * is not NULL, xhat is read from xhat16 (bf16) and xhat is only written. On
 * return xhat holds dy, the gradient of the conv output; dgamma, dbeta [C] += ... */
void bn_relu_backward(float *xhat, const uint16_t *xhat16, float *dgamma, float *dbeta,
                      const float *dout, const float *gamma, const float *beta, const float *istd,
                      int C, int64_t M, int groups);

/* Pooling over `planes` = C*N planes of H x W; avg counts padding in the divisor. */
void maxpool_forward(float *out, const float *in, int planes, int H, int W, int k, int s, int p);
void maxpool_backward(float *din, const float *dout, const float *in, int planes, int H, int W,
                      int k, int s, int p);
void avgpool_forward(float *out, const float *in, int planes, int H, int W, int k, int s, int p);
/* dst [H, W] += (3x3 sums of src [H, W], zero outside) * scale: one plane of
 * avgpool 3 s1 p1, or of its backward (the box is symmetric); rows: H*W floats. */
void box3_plane(float *dst, const float *src, int H, int W, float scale, float *rows);
/* pool [H, W] = avgpool 3x3 s1 p1 of src [H, W]; pool is followed by H*W
 * floats of scratch. Returns pool. */
const float *avgpool3_plane(float *pool, const float *src, int H, int W);
void avgpool_backward(float *din, const float *dout, int planes, int H, int W, int k, int s, int p);

/* Global average pool: out [C, N] = mean over HW of in [C, N, HW]. */
void gap_forward(float *out, const float *in, int C, int N, int HW);
void gap_backward(float *din, const float *dout, int C, int N, int HW);

/* Dropout of x [C, N] with keep-scaling 1/(1-p); mask [C, N] records kept
 * elements. Image n draws from its own stream keyed by (seed, keys[n]), so an
 * image is dropped alike whichever worker or batch it lands in. */
void dropout_forward(float *x, uint8_t *mask, int C, int N, float p, uint64_t seed,
                     const uint64_t *keys);
void dropout_backward(float *dx, const uint8_t *mask, int64_t n, float p);

/* logits [N, K] = in[C, N]^T weight[K, C]^T + bias[K] */
void linear_forward(float *logits, const float *in, const float *weight, const float *bias,
                    int C, int N, int K);
/* din [C, N] += ..., dweight [K, C] += ..., dbias [K] += ... */
void linear_backward(float *din, float *dweight, float *dbias, const float *dlogits,
                     const float *in, const float *weight, int C, int N, int K);

/* Mean softmax cross-entropy of logits [N, K] against labels, or against the
 * probabilities targets [N, K] when not NULL (MixUp, CutMix), smoothed as PyTorch's
 * cross_entropy(label_smoothing=s): the target is (1 - s) one-hot (or targets) + s/K.
 * dlogits [N, K] (may be NULL) gets scale * d(loss)/d(logits). Returns the mean loss. */
double softmax_xent(float *dlogits, const float *logits, const int64_t *labels, const float *targets,
                    int N, int K, float smoothing, float scale);

/* PyTorch SGD: d = g + wd*w; buf = momentum*buf + d; w -= lr*buf, or with nesterov
 * w -= lr*(d + momentum*buf). */
void sgd_update(float *w, const float *g, float *buf, size_t n, float lr, float momentum, float wd,
                int nesterov);
#endif
