/* augment.c - see augment.h. Each image gets its own random stream keyed by
 * (seed, epoch, source record number), so sharded workers augment an image
 * exactly as a single process would. */
#include "augment.h"
#include "util.h"
#include <math.h>
#include <string.h>

const Normalize CIFAR10_NORMALIZE = { 1, { 0.4914f, 0.4822f, 0.4465f }, { 0.2470f, 0.2435f, 0.2616f } };

void parse_normalize(const char *opt, const char *s, Normalize *n) {
    if (!strcmp(s, "cifar10")) { *n = CIFAR10_NORMALIZE; return; }
    const char *slash = strchr(s, '/');
    if (!slash) usage_die("%s: '%s' is neither cifar10 nor MEAN,MEAN,MEAN/STD,STD,STD", opt, s);
    char means[256];
    snprintf(means, sizeof means, "%.*s", (int)(slash - s), s);
    double m[3], d[3];
    if (parse_double_list(opt, means, m, 3) != 3 || parse_double_list(opt, slash + 1, d, 3) != 3)
        usage_die("%s: '%s' needs three means and three stds", opt, s);
    n->on = 1;
    for (int c = 0; c < 3; c++) {
        if (!(d[c] > 0)) usage_die("%s: std must be positive in '%s'", opt, s);
        n->mean[c] = (float)m[c]; n->std[c] = (float)d[c];
    }
}

void normalize_u8(const Normalize *n, const uint8_t *in, int64_t images, int64_t hw, float *out) {
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - n->mean[c]) / n->std[c];
    for (int64_t i = 0; i < images; i++)
        for (int c = 0; c < 3; c++) {
            const uint8_t *src = in + (i * 3 + c) * hw;
            float *dst = out + (i * 3 + c) * hw;
            for (int64_t p = 0; p < hw; p++) dst[p] = lut[c][src[p]];
        }
}

/* For each output pixel, the source pixel index or -1 (zero fill). Output is
 * rotate(flip(crop(image))). */
static void build_map(const AugmentSpec *s, Rng *rng, int H, int W, int32_t *map) {
    int oy = 0, ox = 0, flip = 0;
    double angle = 0;
    if (s->crop) {
        oy = (int)rng_below(rng, 2 * s->crop + 1) - s->crop;
        ox = (int)rng_below(rng, 2 * s->crop + 1) - s->crop;
    }
    if (s->flip) flip = rng_uniform(rng) < 0.5f;
    if (s->rotate_deg > 0) angle = (2.0 * rng_uniform(rng) - 1.0) * s->rotate_deg * M_PI / 180.0;
    float cs = (float)cos(angle), sn = (float)sin(angle);
    float cy = (H - 1) * 0.5f, cx = (W - 1) * 0.5f;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int ry = y, rx = x;
            if (angle != 0) {   /* nearest source pixel of a counter-clockwise rotation */
                float dx = x - cx, dy = y - cy;
                rx = (int)floorf(cx + cs * dx + sn * dy + 0.5f);
                ry = (int)floorf(cy - sn * dx + cs * dy + 0.5f);
            }
            int32_t src = -1;
            if (ry >= 0 && ry < H && rx >= 0 && rx < W) {
                int fx = flip ? W - 1 - rx : rx;
                int sy = ry + oy, sx = fx + ox;
                if (sy >= 0 && sy < H && sx >= 0 && sx < W) src = sy * W + sx;
            }
            map[y * W + x] = src;
        }
}

/* Cutout's square for one image: rows [box[0], box[1]), columns [box[2], box[3]). Drawn
 * after the geometric operations' draws, which stay those of a run without Cutout. */
static void cutout_box(int side, Rng *rng, int H, int W, int32_t box[4]) {
    int cy = (int)rng_below(rng, (uint64_t)H), cx = (int)rng_below(rng, (uint64_t)W);
    int y0 = cy - side / 2, x0 = cx - side / 2;
    box[0] = y0 < 0 ? 0 : y0;
    box[1] = y0 + side > H ? H : y0 + side;
    box[2] = x0 < 0 ? 0 : x0;
    box[3] = x0 + side > W ? W : x0 + side;
}

void augment_batch(const AugmentSpec *s, const Record *in, const int64_t *keys, int64_t position,
                   Record *out) {
    int64_t B = in->dims[0], C = in->dims[1], H = in->dims[2], W = in->dims[3], hw = H * W;
    if (H > 4096 || W > 4096) die("record 'x' at byte %llu: images of %lldx%lld are too large",
                                  (unsigned long long)in->offset, (long long)H, (long long)W);
    if (s->norm.on && (in->dtype != DT_U8 || C != 3))
        die("record 'x' at byte %llu: --normalize needs u8 images with 3 channels",
            (unsigned long long)in->offset);
    if (s->cutout && in->dtype == DT_U8 && C != 3)
        die("record 'x' at byte %llu: Cutout of u8 images needs 3 channels (it fills with the mean colour)",
            (unsigned long long)in->offset);
    if (in->nelem == 0) {       /* however many images of no pixels: nothing to do */
        record_shape(out, "x", s->norm.on ? DT_F32 : in->dtype, 4, in->dims);
        return;
    }
    int geometric = s->crop || s->flip || s->rotate_deg > 0;
    size_t esize = dtype_size(in->dtype);
    /* geometric ops at the input's element size, then normalise, then Cutout; the
     * buffers live across batches */
    static Record tmp;
    static int32_t *map, (*boxes)[4];
    static int64_t map_cap, boxes_cap;
    record_shape(&tmp, "x", in->dtype, 4, in->dims);
    if (hw > map_cap) { map = xrealloc(map, hw * sizeof *map); map_cap = hw; }
    if (s->cutout && B > boxes_cap) { boxes = xrealloc(boxes, B * sizeof *boxes); boxes_cap = B; }
    for (int64_t i = 0; i < B && (geometric || s->cutout); i++) {
        Rng rng;
        rng_seed(&rng, mix64(s->seed) ^ s->epoch, (uint64_t)(keys ? keys[i] : position + i));
        if (geometric) build_map(s, &rng, (int)H, (int)W, map);
        if (s->cutout) cutout_box(s->cutout, &rng, (int)H, (int)W, boxes[i]);
        if (!geometric) continue;
        for (int64_t c = 0; c < C; c++) {
            const char *src = (const char *)in->data + (i * C + c) * hw * esize;
            char *dst = (char *)tmp.data + (i * C + c) * hw * esize;
            if (esize == 1)
                for (int64_t p = 0; p < hw; p++) dst[p] = map[p] < 0 ? 0 : src[map[p]];
            else
                for (int64_t p = 0; p < hw; p++) ((float *)dst)[p] = map[p] < 0 ? 0.0f : ((const float *)src)[map[p]];
        }
    }
    const void *geo = geometric ? tmp.data : in->data;
    if (s->norm.on) {
        record_shape(out, "x", DT_F32, 4, in->dims);
        normalize_u8(&s->norm, geo, B, hw, out->data);
    } else {
        record_shape(out, "x", in->dtype, 4, in->dims);
        memcpy(out->data, geo, in->nbytes);
    }
    if (s->cutout) {
        const Normalize *mean = s->norm.on ? &s->norm : &CIFAR10_NORMALIZE;
        for (int64_t i = 0; i < B; i++)
            for (int64_t c = 0; c < C; c++) {
                uint8_t fill8 = out->dtype == DT_U8 ? (uint8_t)lrintf(255.0f * mean->mean[c]) : 0;
                char *plane = (char *)out->data + (i * C + c) * hw * dtype_size(out->dtype);
                for (int y = boxes[i][0]; y < boxes[i][1]; y++)
                    for (int x = boxes[i][2]; x < boxes[i][3]; x++) {
                        if (out->dtype == DT_U8) ((uint8_t *)plane)[y * W + x] = fill8;
                        else ((float *)plane)[y * W + x] = 0.0f;
                    }
            }
    }
}
