/* imageops.c - see imageops.h. Built with -ffp-contract=off: torchvision rounds after
 * every multiply and every add, and so must we to give its bytes. */
#include "imageops.h"
#include <math.h>
#include <string.h>

const char *const IMAGE_OP_NAMES[IMOP_COUNT] = {
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert",
};

/* ---------------- geometric: an affine map, nearest pixel ---------------- */

/* torchvision's _get_inverse_affine_matrix (double, as Python computes it) for a
 * rotation by angle, a translation and a shear, about center (pixels from the image's
 * centre); returns the map from output to input coordinates, both centred. */
static void inverse_affine(double angle, double tx, double ty, double shear_x, double shear_y,
                           double cx, double cy, double m[6]) {
    const double deg = M_PI / 180.0;           /* Python's math.radians */
    double rot = angle * deg, sx = shear_x * deg, sy = shear_y * deg;
    double a = cos(rot - sy) / cos(sy);
    double b = -cos(rot - sy) * tan(sx) / cos(sy) - sin(rot);
    double c = sin(rot - sy) / cos(sy);
    double d = -sin(rot - sy) * tan(sx) / cos(sy) + cos(rot);
    m[0] = d; m[1] = -b; m[2] = 0.0; m[3] = -c; m[4] = a; m[5] = 0.0;
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
}

/* The matrix in float32, rescaled to grid_sample's [-1, 1] coordinates (torchvision's
 * _gen_affine_grid), then grid_sample(mode="nearest", align_corners=False): each output
 * pixel takes the input pixel nearest to where the map sends it (ties to even), or
 * fill when that lies outside. */
static void affine(const double md[6], uint8_t *img, int C, int H, int W, const uint8_t *fill,
                   uint8_t *scratch) {
    float hw = 0.5f * (float)W, hh = 0.5f * (float)H;
    float r00 = (float)md[0] / hw, r10 = (float)md[1] / hw, r20 = (float)md[2] / hw;
    float r01 = (float)md[3] / hh, r11 = (float)md[4] / hh, r21 = (float)md[5] / hh;
    float sw = (float)W / 2, sh = (float)H / 2;
    size_t plane = (size_t)H * W;
    memcpy(scratch, img, C * plane);
    for (int i = 0; i < H; i++) {
        float y = (float)(-H * 0.5 + 0.5 + i);
        for (int j = 0; j < W; j++) {
            float x = (float)(-W * 0.5 + 0.5 + j);
            float gx = x * r00 + y * r10 + r20, gy = x * r01 + y * r11 + r21;
            float ix = nearbyintf((gx + 1.0f) * sw - 0.5f), iy = nearbyintf((gy + 1.0f) * sh - 0.5f);
            int inside = ix >= 0 && ix < (float)W && iy >= 0 && iy < (float)H;
            size_t src = inside ? (size_t)iy * W + (size_t)ix : 0;
            for (int c = 0; c < C; c++)
                img[c * plane + (size_t)i * W + j] = inside ? scratch[c * plane + src] : (fill ? fill[c] : 0);
        }
    }
}

/* ---------------- colour: float32 blends, truncated ---------------- */

/* torchvision's _blend: (ratio * a + (1 - ratio) * b).clamp(0, 255).to(uint8) */
static inline uint8_t blend(float r1, float r2, float a, float b) {
    float s = r1 * a + r2 * b;
    if (s < 0.0f) s = 0.0f;
    if (s > 255.0f) s = 255.0f;
    return (uint8_t)s;
}

/* rgb_to_grayscale: (0.2989 r + 0.587 g + 0.114 b).to(uint8) */
static void grayscale(const uint8_t *img, size_t plane, uint8_t *gray) {
    for (size_t p = 0; p < plane; p++)
        gray[p] = (uint8_t)(0.2989f * img[p] + 0.587f * img[plane + p] + 0.114f * img[2 * plane + p]);
}

static void blend_image(uint8_t *img, int C, size_t plane, double ratio, const uint8_t *other,
                        int other_per_channel, float other_value) {
    float r1 = (float)ratio, r2 = (float)(1.0 - ratio);
    for (int c = 0; c < C; c++)
        for (size_t p = 0; p < plane; p++) {
            float b = other ? other[(other_per_channel ? c * plane : 0) + p] : other_value;
            img[c * plane + p] = blend(r1, r2, img[c * plane + p], b);
        }
}

/* _blurred_degenerate_image: the 3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13 over the inner
 * pixels, rounded; the border keeps its pixels. */
static void blurred(const uint8_t *img, int C, int H, int W, uint8_t *out) {
    float k1 = 1.0f / 13.0f, k5 = 5.0f / 13.0f;
    size_t plane = (size_t)H * W;
    memcpy(out, img, C * plane);
    for (int c = 0; c < C; c++) {
        const uint8_t *s = img + c * plane;
        for (int i = 1; i < H - 1; i++)
            for (int j = 1; j < W - 1; j++) {
                float sum = 0.0f;
                for (int di = -1; di <= 1; di++)
                    for (int dj = -1; dj <= 1; dj++)
                        sum += (float)s[(i + di) * W + j + dj] * (di == 0 && dj == 0 ? k5 : k1);
                out[c * plane + (size_t)i * W + j] = (uint8_t)nearbyintf(sum);
            }
    }
}

/* ---------------- histogram ---------------- */

static void autocontrast(uint8_t *img, int C, size_t plane) {
    for (int c = 0; c < C; c++) {
        uint8_t *s = img + c * plane, lo = 255, hi = 0;
        for (size_t p = 0; p < plane; p++) { if (s[p] < lo) lo = s[p]; if (s[p] > hi) hi = s[p]; }
        /* 255 / (max - min) is Tensor.__rtruediv__: a reciprocal, then a product */
        float minimum = lo, scale = (1.0f / (float)(hi - lo)) * 255.0f;
        if (hi == lo) { minimum = 0.0f; scale = 1.0f; }     /* the infinite scale torchvision drops */
        for (size_t p = 0; p < plane; p++) {
            float v = ((float)s[p] - minimum) * scale;
            s[p] = (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
        }
    }
}

/* _scale_channel: the cumulative histogram, stepped by what the bins but the last
 * non-empty one hold over 255 */
static void equalize(uint8_t *img, int C, size_t plane) {
    for (int c = 0; c < C; c++) {
        uint8_t *s = img + c * plane;
        int64_t hist[256] = { 0 }, last = 0, total = 0;
        for (size_t p = 0; p < plane; p++) hist[s[p]]++;
        for (int v = 0; v < 256; v++) if (hist[v]) { total += hist[v]; last = hist[v]; }
        int64_t step = (total - last) / 255;
        if (step == 0) continue;
        uint8_t lut[256];
        int64_t cum = 0;
        for (int v = 0; v < 256; v++) {
            int64_t l = (cum + step / 2) / step;
            lut[v] = (uint8_t)(l > 255 ? 255 : l);
            cum += hist[v];
        }
        for (size_t p = 0; p < plane; p++) s[p] = lut[s[p]];
    }
}

void image_op(ImageOp op, float magnitude, uint8_t *img, int C, int H, int W,
              const uint8_t *fill, uint8_t *scratch) {
    size_t plane = (size_t)H * W;
    double m = magnitude, md[6];
    switch (op) {
    case IMOP_IDENTITY: break;
    case IMOP_SHEAR_X:          /* shear of atan(m) degrees about the top left corner */
    case IMOP_SHEAR_Y: {
        double shear = atan(m) * (180.0 / M_PI);
        inverse_affine(0, 0, 0, op == IMOP_SHEAR_X ? shear : 0, op == IMOP_SHEAR_Y ? shear : 0,
                       -W * 0.5, -H * 0.5, md);
        affine(md, img, C, H, W, fill, scratch);
        break;
    }
    case IMOP_TRANSLATE_X:
    case IMOP_TRANSLATE_Y: {
        double t = (double)(int64_t)m;
        inverse_affine(0, op == IMOP_TRANSLATE_X ? t : 0, op == IMOP_TRANSLATE_Y ? t : 0, 0, 0, 0, 0, md);
        affine(md, img, C, H, W, fill, scratch);
        break;
    }
    case IMOP_ROTATE:           /* F.rotate: the affine map of -angle */
        inverse_affine(-m, 0, 0, 0, 0, 0, 0, md);
        affine(md, img, C, H, W, fill, scratch);
        break;
    case IMOP_BRIGHTNESS:
        blend_image(img, C, plane, 1.0 + m, NULL, 0, 0.0f);
        break;
    case IMOP_COLOR:            /* saturation: towards the image's grey */
        if (C != 3) break;
        grayscale(img, plane, scratch);
        blend_image(img, C, plane, 1.0 + m, scratch, 0, 0.0f);
        break;
    case IMOP_CONTRAST: {       /* towards the mean of the grey image */
        const uint8_t *gray = img;
        if (C == 3) { grayscale(img, plane, scratch); gray = scratch; }
        int64_t sum = 0;
        for (size_t p = 0; p < (C == 3 ? plane : C * plane); p++) sum += gray[p];
        float mean = (float)sum / (float)(C == 3 ? plane : C * plane);
        blend_image(img, C, plane, 1.0 + m, NULL, 0, mean);
        break;
    }
    case IMOP_SHARPNESS:        /* away from a blurred copy */
        if (H <= 2 || W <= 2) break;
        blurred(img, C, H, W, scratch);
        blend_image(img, C, plane, 1.0 + m, scratch, 1, 0.0f);
        break;
    case IMOP_POSTERIZE: {
        int bits = (int)m;
        uint8_t mask = (uint8_t)(-(1 << (8 - bits)));
        for (size_t p = 0; p < C * plane; p++) img[p] &= mask;
        break;
    }
    case IMOP_SOLARIZE:         /* invert what is at or above the threshold */
        for (size_t p = 0; p < C * plane; p++) if ((float)img[p] >= magnitude) img[p] = 255 - img[p];
        break;
    case IMOP_AUTOCONTRAST: autocontrast(img, C, plane); break;
    case IMOP_EQUALIZE: equalize(img, C, plane); break;
    case IMOP_INVERT:
        for (size_t p = 0; p < C * plane; p++) img[p] = 255 - img[p];
        break;
    default: die("internal: image operation %d", (int)op);
    }
}

/* ---------------- the policies ---------------- */

/* torch.linspace(start, end, steps)[i] in float32 as ATen computes it on x86-64 (its
 * AVX2 kernel): from the start for the first half, from the end for the second, with
 * fused multiply-adds; the first 16 values in vectors of 8 from a fused base. Other
 * orders differ in the last bit, and a last bit moves a Translate by a pixel. */
static float linspace_at(float start, float end, int steps, int i) {
    if (steps == 1) return start;
    float step = (end - start) / (float)(steps - 1);
    int halfway = steps / 2, lanes = 8, vectorised = steps / (2 * lanes) * (2 * lanes);
    int at = i < vectorised ? i / lanes * lanes : i;
    float v = at < halfway ? fmaf(step, (float)at, start) : fmaf(-step, (float)(steps - at - 1), end);
    return at == i ? v : v + step * (float)(i - at);
}

static const ImageOp AUTOAUGMENT_OPS[] = {   /* every op of the CIFAR-10 policy's space */
    IMOP_SHEAR_X, IMOP_SHEAR_Y, IMOP_TRANSLATE_X, IMOP_TRANSLATE_Y, IMOP_ROTATE, IMOP_BRIGHTNESS,
    IMOP_COLOR, IMOP_CONTRAST, IMOP_SHARPNESS, IMOP_POSTERIZE, IMOP_SOLARIZE, IMOP_AUTOCONTRAST,
    IMOP_EQUALIZE, IMOP_INVERT,
};
static const ImageOp RANDAUGMENT_OPS[] = {   /* RandAugment's and TrivialAugmentWide's */
    IMOP_IDENTITY, IMOP_SHEAR_X, IMOP_SHEAR_Y, IMOP_TRANSLATE_X, IMOP_TRANSLATE_Y, IMOP_ROTATE,
    IMOP_BRIGHTNESS, IMOP_COLOR, IMOP_CONTRAST, IMOP_SHARPNESS, IMOP_POSTERIZE, IMOP_SOLARIZE,
    IMOP_AUTOCONTRAST, IMOP_EQUALIZE,
};

int policy_ops(PolicyKind kind, const ImageOp **ops) {
    if (kind == POLICY_AUTOAUGMENT) { *ops = AUTOAUGMENT_OPS; return 14; }
    *ops = RANDAUGMENT_OPS;
    return 14;
}

float policy_magnitude(PolicyKind kind, ImageOp op, int bins, int bin, int H, int W, int *is_signed) {
    int wide = kind == POLICY_TRIVIALAUGMENT;
    *is_signed = 1;
    switch (op) {
    case IMOP_SHEAR_X: case IMOP_SHEAR_Y: return linspace_at(0.0f, wide ? 0.99f : 0.3f, bins, bin);
    case IMOP_TRANSLATE_X:
        return linspace_at(0.0f, wide ? 32.0f : (float)(150.0 / 331.0 * W), bins, bin);
    case IMOP_TRANSLATE_Y:
        return linspace_at(0.0f, wide ? 32.0f : (float)(150.0 / 331.0 * H), bins, bin);
    case IMOP_ROTATE: return linspace_at(0.0f, wide ? 135.0f : 30.0f, bins, bin);
    case IMOP_BRIGHTNESS: case IMOP_COLOR: case IMOP_CONTRAST: case IMOP_SHARPNESS:
        return linspace_at(0.0f, wide ? 0.99f : 0.9f, bins, bin);
    default: break;
    }
    *is_signed = 0;
    switch (op) {
    case IMOP_POSTERIZE:        /* 8 - round(i / ((bins - 1) / 4 or 6)), ties to even */
        return (float)(8 - (int)nearbyintf((float)bin / (float)((bins - 1) / (wide ? 6.0 : 4.0))));
    case IMOP_SOLARIZE: return linspace_at(255.0f, 0.0f, bins, bin);
    case IMOP_INVERT: return kind == POLICY_AUTOAUGMENT ? 0.0f : NAN;
    default: return 0.0f;       /* Identity, AutoContrast, Equalize */
    }
}

const SubPolicyOp AUTOAUGMENT_CIFAR10[25][2] = {
    { { IMOP_INVERT, 0.1f, -1 }, { IMOP_CONTRAST, 0.2f, 6 } },
    { { IMOP_ROTATE, 0.7f, 2 }, { IMOP_TRANSLATE_X, 0.3f, 9 } },
    { { IMOP_SHARPNESS, 0.8f, 1 }, { IMOP_SHARPNESS, 0.9f, 3 } },
    { { IMOP_SHEAR_Y, 0.5f, 8 }, { IMOP_TRANSLATE_Y, 0.7f, 9 } },
    { { IMOP_AUTOCONTRAST, 0.5f, -1 }, { IMOP_EQUALIZE, 0.9f, -1 } },
    { { IMOP_SHEAR_Y, 0.2f, 7 }, { IMOP_POSTERIZE, 0.3f, 7 } },
    { { IMOP_COLOR, 0.4f, 3 }, { IMOP_BRIGHTNESS, 0.6f, 7 } },
    { { IMOP_SHARPNESS, 0.3f, 9 }, { IMOP_BRIGHTNESS, 0.7f, 9 } },
    { { IMOP_EQUALIZE, 0.6f, -1 }, { IMOP_EQUALIZE, 0.5f, -1 } },
    { { IMOP_CONTRAST, 0.6f, 7 }, { IMOP_SHARPNESS, 0.6f, 5 } },
    { { IMOP_COLOR, 0.7f, 7 }, { IMOP_TRANSLATE_X, 0.5f, 8 } },
    { { IMOP_EQUALIZE, 0.3f, -1 }, { IMOP_AUTOCONTRAST, 0.4f, -1 } },
    { { IMOP_TRANSLATE_Y, 0.4f, 3 }, { IMOP_SHARPNESS, 0.2f, 6 } },
    { { IMOP_BRIGHTNESS, 0.9f, 6 }, { IMOP_COLOR, 0.2f, 8 } },
    { { IMOP_SOLARIZE, 0.5f, 2 }, { IMOP_INVERT, 0.0f, -1 } },
    { { IMOP_EQUALIZE, 0.2f, -1 }, { IMOP_AUTOCONTRAST, 0.6f, -1 } },
    { { IMOP_EQUALIZE, 0.2f, -1 }, { IMOP_EQUALIZE, 0.6f, -1 } },
    { { IMOP_COLOR, 0.9f, 9 }, { IMOP_EQUALIZE, 0.6f, -1 } },
    { { IMOP_AUTOCONTRAST, 0.8f, -1 }, { IMOP_SOLARIZE, 0.2f, 8 } },
    { { IMOP_BRIGHTNESS, 0.1f, 3 }, { IMOP_COLOR, 0.7f, 0 } },
    { { IMOP_SOLARIZE, 0.4f, 5 }, { IMOP_AUTOCONTRAST, 0.9f, -1 } },
    { { IMOP_TRANSLATE_Y, 0.9f, 9 }, { IMOP_TRANSLATE_Y, 0.7f, 9 } },
    { { IMOP_AUTOCONTRAST, 0.9f, -1 }, { IMOP_SOLARIZE, 0.8f, 3 } },
    { { IMOP_EQUALIZE, 0.8f, -1 }, { IMOP_INVERT, 0.1f, -1 } },
    { { IMOP_TRANSLATE_Y, 0.7f, 9 }, { IMOP_AUTOCONTRAST, 0.9f, -1 } },
};

int policy_draw(const Policy *p, Rng *rng, int H, int W, PolicyStep *steps) {
    int n = 0, is_signed;
    switch (p->kind) {
    case POLICY_AUTOAUGMENT: {  /* a sub-policy; each op applies with its probability */
        const SubPolicyOp *sub = AUTOAUGMENT_CIFAR10[rng_below(rng, 25)];
        float prob[2] = { rng_uniform(rng), rng_uniform(rng) };
        int negative[2] = { rng_below(rng, 2) == 0, rng_below(rng, 2) == 0 };
        for (int i = 0; i < 2; i++) {
            if (!(prob[i] <= sub[i].p)) continue;
            float mag = sub[i].bin < 0 ? 0.0f : policy_magnitude(p->kind, sub[i].op, 10, sub[i].bin, H, W, &is_signed);
            if (sub[i].bin >= 0 && is_signed && negative[i]) mag = -mag;
            steps[n++] = (PolicyStep){ sub[i].op, mag };
        }
        break;
    }
    case POLICY_RANDAUGMENT:    /* N ops, uniformly, each at magnitude M */
        for (int i = 0; i < p->num_ops; i++) {
            ImageOp op = RANDAUGMENT_OPS[rng_below(rng, 14)];
            float mag = policy_magnitude(p->kind, op, p->bins, p->magnitude, H, W, &is_signed);
            if (is_signed && rng_below(rng, 2)) mag = -mag;
            steps[n++] = (PolicyStep){ op, mag };
        }
        break;
    case POLICY_TRIVIALAUGMENT: {   /* one op at a uniformly drawn magnitude */
        ImageOp op = RANDAUGMENT_OPS[rng_below(rng, 14)];
        int has_table = op != IMOP_IDENTITY && op != IMOP_AUTOCONTRAST && op != IMOP_EQUALIZE;
        int bin = has_table ? (int)rng_below(rng, (uint64_t)p->bins) : 0;
        float mag = policy_magnitude(p->kind, op, p->bins, bin, H, W, &is_signed);
        if (is_signed && rng_below(rng, 2)) mag = -mag;
        steps[n++] = (PolicyStep){ op, mag };
        break;
    }
    }
    return n;
}
