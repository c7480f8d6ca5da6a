/* augment.h - image augmentation and normalisation of x records. */
#ifndef INCV3_AUGMENT_H
#define INCV3_AUGMENT_H
#include "stream.h"
#include <stdint.h>

typedef struct {
    int on;
    float mean[3], std[3];
} Normalize;

typedef struct {
    int crop;            /* zero padding of the random crop, pixels */
    int flip;            /* random horizontal flip */
    double rotate_deg;   /* random rotation in [-deg, deg] */
    int cutout;          /* Cutout: a square of this side, centred anywhere, set to the mean */
    Normalize norm;
    uint64_t seed, epoch;
} AugmentSpec;

/* "cifar10" or "M,M,M/S,S,S"; usage error naming opt otherwise. */
void parse_normalize(const char *opt, const char *s, Normalize *n);
extern const Normalize CIFAR10_NORMALIZE;

/* in: x of [B,C,H,W] u8 or f32; keys: B per-image random keys (or NULL to use
 * position + i). out: the augmented batch, f32 when normalising. Cutout comes after
 * the geometric operations: a cutout x cutout square (clipped at the borders) centred
 * on a pixel drawn uniformly, filled with 0 after normalisation, that is with the
 * mean: round(255 * mean) of norm (CIFAR-10's when norm is off) in u8 images, 0 in
 * f32 ones (normalised already). */
void augment_batch(const AugmentSpec *spec, const Record *in, const int64_t *keys,
                   int64_t position, Record *out);
/* u8 [B,3,H,W] -> f32 (x/255 - mean)/std, written to out (B*3*H*W floats). */
void normalize_u8(const Normalize *n, const uint8_t *in, int64_t images, int64_t hw, float *out);
#endif
