/* augment.h - image augmentation and normalisation of x records. */
#ifndef INCV3_AUGMENT_H
#define INCV3_AUGMENT_H
#include "imageops.h"
#include "stream.h"
#include <stdint.h>

typedef struct {
    int on;
    float mean[3], std[3];
} Normalize;

typedef struct {
    int crop;            /* zero padding of the random crop, pixels */
    int crop_size;       /* the crop's side; 0: the images' own (torchvision's RandomCrop(size, crop)) */
    int flip;            /* random horizontal flip */
    double rotate_deg;   /* random rotation in [-deg, deg] */
    int cutout;          /* Cutout: a square of this side, centred anywhere, set to the mean */
    int policy_on;       /* an augmentation policy (imageops.h) on the u8 images */
    Policy policy;
    uint8_t fill[3];     /* what the policy's geometric operations bring in from outside */
    double erase_p;      /* RandomErasing: probability of a rectangle set to the mean */
    Normalize norm;
    uint64_t seed, epoch;
} AugmentSpec;

/* "cifar10" or "M,M,M/S,S,S"; usage error naming opt otherwise. */
void parse_normalize(const char *opt, const char *s, Normalize *n);
extern const Normalize CIFAR10_NORMALIZE;

/* "autoaugment", "randaugment[:N,M[,BINS]]" (2, 9, 31) or "trivialaugment[:BINS]" (31);
 * usage error naming opt otherwise. */
void parse_policy(const char *opt, const char *s, Policy *p);

/* in: x of [B,C,H,W] u8 or f32; keys: B per-image random keys (or NULL to use
 * position + i). out: the augmented batch, f32 when normalising, of crop_size square
 * images when set (the crop then drawn from the whole padded image, as RandomCrop). The order is
 * torchvision's CIFAR recipes': the geometric operations, the policy (u8 images),
 * normalisation, then Cutout and RandomErasing. Cutout: a cutout x cutout square
 * (clipped at the borders) centred on a pixel drawn uniformly; RandomErasing:
 * torchvision's RandomErasing(p, scale=(0.02, 0.33), ratio=(0.3, 3.3)). Both fill
 * with 0 after normalisation, that is with the mean: round(255 * mean) of norm
 * (CIFAR-10's when norm is off) in u8 images, 0 in f32 ones (normalised already).
 * Each image draws, in this order, its geometric parameters, Cutout's square, the
 * policy's operations, RandomErasing's rectangle: adding a stage leaves the draws of
 * the others as they were. */
void augment_batch(const AugmentSpec *spec, const Record *in, const int64_t *keys,
                   int64_t position, Record *out);
/* MixUp and CutMix, a batch stage: each image is mixed with the one before it in the
 * batch (the first with the last; torchvision v2's batch.roll(1)) at one lambda per
 * batch drawn from Beta(alpha, alpha): MixUp blends the images, CutMix pastes a box of
 * the other image whose area is 1 - lambda (clipped at the borders, lambda then
 * recomputed from the box, as torchvision's CutMix). With both, each batch takes
 * CutMix with probability switch_p, else MixUp (timm's Mixup). */
typedef struct {
    double mixup_alpha, cutmix_alpha;   /* 0: off */
    double switch_p;
    int classes;
    uint64_t seed, epoch;
} MixSpec;

/* x [B,C,H,W] u8 (blends rounded to nearest) or f32, mixed in place; labels [B] in
 * [0, classes); soft_in [B,K] (or NULL: one-hot labels) the targets before mixing.
 * Writes soft_out [B,K], the mixed targets, and labels_out [B], each row's most
 * probable class. key: the batch's random key (its first image's source number). */
void mix_batch(const MixSpec *s, Record *x, const int64_t *labels, const float *soft_in,
               int64_t key, float *soft_out, int64_t *labels_out);

/* u8 [B,3,H,W] -> f32 (x/255 - mean)/std, written to out (B*3*H*W floats). */
void normalize_u8(const Normalize *n, const uint8_t *in, int64_t images, int64_t hw, float *out);
#endif
