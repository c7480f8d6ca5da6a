/* imageops.h - the image operations of torchvision's augmentation policies on u8
 * images, computed as torchvision 0.14 computes them on uint8 tensors (the same
 * float32 arithmetic, truncations and roundings; tests/unit/test_imageops.c holds
 * them against torchvision's outputs), and the three policies that draw them:
 * AutoAugment (its CIFAR-10 policy), RandAugment and TrivialAugmentWide.
 *
 * Images are [C,H,W] u8 with C = 1 or 3, changed in place. */
#ifndef INCV3_IMAGEOPS_H
#define INCV3_IMAGEOPS_H
#include "util.h"
#include <stdint.h>

typedef enum {
    IMOP_IDENTITY, IMOP_SHEAR_X, IMOP_SHEAR_Y, IMOP_TRANSLATE_X, IMOP_TRANSLATE_Y, IMOP_ROTATE,
    IMOP_BRIGHTNESS, IMOP_COLOR, IMOP_CONTRAST, IMOP_SHARPNESS, IMOP_POSTERIZE, IMOP_SOLARIZE,
    IMOP_AUTOCONTRAST, IMOP_EQUALIZE, IMOP_INVERT, IMOP_COUNT
} ImageOp;

extern const char *const IMAGE_OP_NAMES[IMOP_COUNT];   /* torchvision's: "ShearX", ... */

/* magnitude as torchvision's _apply_op takes it: the shear factor (ShearX/Y), pixels
 * (TranslateX/Y, truncated toward 0), degrees counter-clockwise (Rotate), the factor
 * less 1 (Brightness, Color, Contrast, Sharpness), bits kept (Posterize, truncated),
 * the threshold (Solarize); unused by the rest. fill: C values for the pixels that the
 * geometric operations bring in from outside the image (torchvision's fill; NULL: 0).
 * scratch: at least 2 * C * H * W bytes. */
void image_op(ImageOp op, float magnitude, uint8_t *img, int C, int H, int W,
              const uint8_t *fill, uint8_t *scratch);

typedef enum { POLICY_AUTOAUGMENT, POLICY_RANDAUGMENT, POLICY_TRIVIALAUGMENT } PolicyKind;

typedef struct {
    PolicyKind kind;
    int num_ops;          /* RandAugment: operations per image (N) */
    int magnitude;        /* RandAugment: the magnitude bin (M), 0 .. bins - 1 */
    int bins;             /* RandAugment and TrivialAugmentWide: magnitude bins (31);
                             AutoAugment: 10, as its policy is written */
} Policy;

#define POLICY_MAX_OPS 16

typedef struct { ImageOp op; float magnitude; } PolicyStep;

/* The magnitude of bin `bin` of op's table in the policy's space for H x W images,
 * torchvision's float32 table entry; *is_signed: drawn with a random sign. Ops
 * without a magnitude give 0. Ops outside the space give NAN. */
float policy_magnitude(PolicyKind kind, ImageOp op, int bins, int bin, int H, int W, int *is_signed);

/* Draws one image's operations and magnitudes from rng, in the order and with the
 * draws torchvision makes (AutoAugment: a sub-policy, then per op its probability and
 * sign; RandAugment: per op an operation, then a sign if signed; TrivialAugmentWide:
 * an operation, a bin, a sign). Returns how many of steps[POLICY_MAX_OPS] apply. */
int policy_draw(const Policy *p, Rng *rng, int H, int W, PolicyStep *steps);

/* The operations a policy draws from, in torchvision's order (for the tests). */
int policy_ops(PolicyKind kind, const ImageOp **ops);

/* AutoAugment's CIFAR-10 policy: 25 sub-policies of two (op, probability, bin or -1). */
typedef struct { ImageOp op; float p; int bin; } SubPolicyOp;
extern const SubPolicyOp AUTOAUGMENT_CIFAR10[25][2];
#endif
