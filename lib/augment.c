/* augment.c - see augment.h. Each image gets its own random stream keyed by
 * (seed, epoch, source record number), so sharded workers augment an image
 * exactly as a single process would. */
#include "augment.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
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

void parse_policy(const char *opt, const char *s, Policy *p) {
    const char *colon = strchr(s, ':');
    size_t len = colon ? (size_t)(colon - s) : strlen(s);
    double v[3];
    int n = 0;
    if (colon) {
        n = parse_double_list(opt, colon + 1, v, 3);
        for (int i = 0; i < n; i++)
            if (v[i] != floor(v[i])) usage_die("%s: '%s': whole numbers after the colon", opt, s);
    }
    if (len == 11 && !strncmp(s, "autoaugment", len)) {
        if (colon && strcmp(colon + 1, "cifar10"))
            usage_die("%s: '%s': AutoAugment's policy here is CIFAR-10's (autoaugment or autoaugment:cifar10)", opt, s);
        *p = (Policy){ POLICY_AUTOAUGMENT, 2, 0, 10 };
        return;
    }
    if (len == 11 && !strncmp(s, "randaugment", len)) {
        *p = (Policy){ POLICY_RANDAUGMENT, 2, 9, 31 };
        if (colon && n != 2 && n != 3) usage_die("%s: '%s': randaugment:N,M or randaugment:N,M,BINS", opt, s);
        if (n >= 2) { p->num_ops = (int)v[0]; p->magnitude = (int)v[1]; }
        if (n == 3) p->bins = (int)v[2];
        if (p->bins < 2 || p->bins > 1000) usage_die("%s: '%s': BINS must be from 2 to 1000", opt, s);
        if (p->num_ops < 1 || p->num_ops > POLICY_MAX_OPS)
            usage_die("%s: '%s': N (operations per image) must be from 1 to %d", opt, s, POLICY_MAX_OPS);
        if (p->magnitude < 0 || p->magnitude >= p->bins)
            usage_die("%s: '%s': M (the magnitude bin) must be from 0 to BINS - 1 = %d", opt, s, p->bins - 1);
        return;
    }
    if (len == 14 && !strncmp(s, "trivialaugment", len)) {
        *p = (Policy){ POLICY_TRIVIALAUGMENT, 1, 0, 31 };
        if (colon && n != 1) usage_die("%s: '%s': trivialaugment or trivialaugment:BINS", opt, s);
        if (n == 1) p->bins = (int)v[0];
        if (p->bins < 2 || p->bins > 1000) usage_die("%s: '%s': BINS must be from 2 to 1000", opt, s);
        return;
    }
    usage_die("%s: '%s' is not autoaugment, randaugment[:N,M[,BINS]] or trivialaugment[:BINS]", opt, s);
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

/* For each pixel of the Ho x Wo output, the index of its source pixel in the H x W
 * image or -1 (zero fill). Output is rotate(flip(crop(image))); the crop's corner is
 * drawn over the padded image's (H + 2 crop - Ho + 1) x (W + 2 crop - Wo + 1) places. */
static void build_map(const AugmentSpec *s, Rng *rng, int H, int W, int Ho, int Wo, int32_t *map) {
    int oy = 0, ox = 0, flip = 0;
    double angle = 0;
    if (s->crop || Ho != H || Wo != W) {
        oy = (int)rng_below(rng, (uint64_t)(H + 2 * s->crop - Ho + 1)) - s->crop;
        ox = (int)rng_below(rng, (uint64_t)(W + 2 * s->crop - Wo + 1)) - s->crop;
    }
    if (s->flip) flip = rng_uniform(rng) < 0.5f;
    if (s->rotate_deg > 0) angle = (2.0 * rng_uniform(rng) - 1.0) * s->rotate_deg * M_PI / 180.0;
    float cs = (float)cos(angle), sn = (float)sin(angle);
    float cy = (Ho - 1) * 0.5f, cx = (Wo - 1) * 0.5f;
    for (int y = 0; y < Ho; y++)
        for (int x = 0; x < Wo; x++) {
            int ry = y, rx = x;
            if (angle != 0) {   /* nearest source pixel of a counter-clockwise rotation */
                float dx = x - cx, dy = y - cy;
                rx = (int)floorf(cx + cs * dx + sn * dy + 0.5f);
                ry = (int)floorf(cy - sn * dx + cs * dy + 0.5f);
            }
            int32_t src = -1;
            if (ry >= 0 && ry < Ho && rx >= 0 && rx < Wo) {
                int fx = flip ? Wo - 1 - rx : rx;
                int sy = ry + oy, sx = fx + ox;
                if (sy >= 0 && sy < H && sx >= 0 && sx < W) src = sy * W + sx;
            }
            map[y * Wo + x] = src;
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

/* RandomErasing's rectangle, as torchvision draws it: with probability p, up to ten
 * tries of an area (2% to 33% of the image) and a log-uniform aspect ratio (0.3 to
 * 3.3) until one fits; none: an empty box. */
static void erase_box(double p, Rng *rng, int H, int W, int32_t box[4]) {
    box[0] = box[1] = box[2] = box[3] = 0;
    if (!(rng_uniform(rng) < p)) return;
    double lo = log(0.3), hi = log(3.3);
    for (int attempt = 0; attempt < 10; attempt++) {
        double area = H * W * (0.02 + 0.31 * rng_uniform(rng));
        double aspect = exp(lo + (hi - lo) * rng_uniform(rng));
        int h = (int)nearbyint(sqrt(area * aspect)), w = (int)nearbyint(sqrt(area / aspect));
        if (!(h < H && w < W)) continue;
        int y = (int)rng_below(rng, (uint64_t)(H - h + 1)), x = (int)rng_below(rng, (uint64_t)(W - w + 1));
        box[0] = y; box[1] = y + h; box[2] = x; box[3] = x + w;
        return;
    }
}

/* Sets box [y0, y1) x [x0, x1) of each channel of one image to the mean colour. */
static void fill_box(const int32_t box[4], const Normalize *mean, Record *out, int64_t i) {
    int64_t C = out->dims[1], W = out->dims[3], hw = out->dims[2] * W;
    for (int64_t c = 0; c < C; c++) {
        uint8_t fill8 = out->dtype == DT_U8 ? (uint8_t)lrintf(255.0f * mean->mean[c]) : 0;
        char *plane = (char *)out->data + (i * C + c) * hw * dtype_size(out->dtype);
        for (int y = box[0]; y < box[1]; y++)
            for (int x = box[2]; x < box[3]; x++) {
                if (out->dtype == DT_U8) ((uint8_t *)plane)[y * W + x] = fill8;
                else ((float *)plane)[y * W + x] = 0.0f;
            }
    }
}

void augment_batch(const AugmentSpec *s, const Record *in, const int64_t *keys, int64_t position,
                   Record *out) {
    int64_t B = in->dims[0], C = in->dims[1], H = in->dims[2], W = in->dims[3], hw = H * W;
    if (H > 4096 || W > 4096) die("record 'x' at byte %llu: images of %lldx%lld are too large",
                                  (unsigned long long)in->offset, (long long)H, (long long)W);
    if (s->norm.on && (in->dtype != DT_U8 || C != 3))
        die("record 'x' at byte %llu: --normalize needs u8 images with 3 channels",
            (unsigned long long)in->offset);
    if ((s->cutout || s->erase_p > 0) && in->dtype == DT_U8 && C != 3)
        die("record 'x' at byte %llu: Cutout and RandomErasing of u8 images need 3 channels (they fill with the mean colour)",
            (unsigned long long)in->offset);
    if (s->policy_on && (in->dtype != DT_U8 || (C != 1 && C != 3)))
        die("record 'x' at byte %llu: augmentation policies take u8 images with 1 or 3 channels, as torchvision's do",
            (unsigned long long)in->offset);
    int64_t Ho = s->crop_size ? s->crop_size : H, Wo = s->crop_size ? s->crop_size : W, ohw = Ho * Wo;
    if (Ho > H + 2 * s->crop || Wo > W + 2 * s->crop)
        die("record 'x' at byte %llu: a crop of %lldx%lld does not fit in images of %lldx%lld padded by %d",
            (unsigned long long)in->offset, (long long)Ho, (long long)Wo, (long long)H, (long long)W, s->crop);
    const int64_t dims[4] = { B, C, Ho, Wo };
    if (in->nelem == 0) {       /* however many images of no pixels: nothing to do */
        record_shape(out, "x", s->norm.on ? DT_F32 : in->dtype, 4, dims);
        return;
    }
    int geometric = s->crop || Ho != H || Wo != W || s->flip || s->rotate_deg > 0;
    int boxes_on = s->cutout || s->erase_p > 0;
    size_t esize = dtype_size(in->dtype);
    /* geometric ops and the policy at the input's element size, then normalise, then the
     * boxes; the buffers live across batches */
    static Record tmp;
    static int32_t *map, (*boxes)[2][4];
    static uint8_t *scratch;
    static int64_t map_cap, boxes_cap, scratch_cap;
    record_shape(&tmp, "x", in->dtype, 4, dims);
    if (ohw > map_cap) { map = xrealloc(map, ohw * sizeof *map); map_cap = ohw; }
    if (boxes_on && B > boxes_cap) { boxes = xrealloc(boxes, B * sizeof *boxes); boxes_cap = B; }
    if (s->policy_on && 2 * C * ohw > scratch_cap) { scratch = xrealloc(scratch, 2 * C * ohw); scratch_cap = 2 * C * ohw; }
    if (!geometric && s->policy_on) memcpy(tmp.data, in->data, in->nbytes);   /* the policy works in tmp */
    for (int64_t i = 0; i < B && (geometric || boxes_on || s->policy_on); i++) {
        Rng rng;
        rng_seed(&rng, mix64(s->seed) ^ s->epoch, (uint64_t)(keys ? keys[i] : position + i));
        if (geometric) build_map(s, &rng, (int)H, (int)W, (int)Ho, (int)Wo, map);
        if (boxes_on) memset(boxes[i], 0, sizeof boxes[i]);
        if (s->cutout) cutout_box(s->cutout, &rng, (int)Ho, (int)Wo, boxes[i][0]);
        PolicyStep steps[POLICY_MAX_OPS];
        int nsteps = s->policy_on ? policy_draw(&s->policy, &rng, (int)Ho, (int)Wo, steps) : 0;
        if (s->erase_p > 0) erase_box(s->erase_p, &rng, (int)Ho, (int)Wo, boxes[i][1]);
        if (geometric)
            for (int64_t c = 0; c < C; c++) {
                const char *src = (const char *)in->data + (i * C + c) * hw * esize;
                char *dst = (char *)tmp.data + (i * C + c) * ohw * esize;
                if (esize == 1)
                    for (int64_t p = 0; p < ohw; p++) dst[p] = map[p] < 0 ? 0 : src[map[p]];
                else
                    for (int64_t p = 0; p < ohw; p++) ((float *)dst)[p] = map[p] < 0 ? 0.0f : ((const float *)src)[map[p]];
            }
        for (int k = 0; k < nsteps; k++)
            image_op(steps[k].op, steps[k].magnitude, (uint8_t *)tmp.data + i * C * ohw, (int)C, (int)Ho, (int)Wo,
                     s->fill, scratch);
    }
    const void *images = geometric || s->policy_on ? tmp.data : in->data;
    if (s->norm.on) {
        record_shape(out, "x", DT_F32, 4, dims);
        normalize_u8(&s->norm, images, B, ohw, out->data);
    } else {
        record_shape(out, "x", in->dtype, 4, dims);
        memcpy(out->data, images, (size_t)B * C * ohw * esize);
    }
    if (boxes_on) {
        const Normalize *mean = s->norm.on ? &s->norm : &CIFAR10_NORMALIZE;
        for (int64_t i = 0; i < B; i++)
            for (int k = 0; k < 2; k++) fill_box(boxes[i][k], mean, out, i);
    }
}

/* ---------------- MixUp and CutMix ---------------- */

static double uniform_open(Rng *rng) {      /* (0, 1) */
    return ((double)(rng_next(rng) >> 11) + 0.5) * 0x1p-53;
}

/* Gamma(a, 1) by Marsaglia and Tsang; a < 1 through Gamma(a + 1) U^(1/a). */
static double gamma_draw(Rng *rng, double a) {
    if (a < 1) return gamma_draw(rng, a + 1) * pow(uniform_open(rng), 1.0 / a);
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double z = sqrt(-2.0 * log(uniform_open(rng))) * cos(2.0 * M_PI * uniform_open(rng));
        double v = 1.0 + c * z;
        if (v <= 0) continue;
        v = v * v * v;
        double u = uniform_open(rng);
        if (log(u) < 0.5 * z * z + d - d * v + d * log(v)) return d * v;
    }
}

static double beta_draw(Rng *rng, double a) {
    double x = gamma_draw(rng, a), y = gamma_draw(rng, a);
    return x / (x + y);
}

void mix_batch(const MixSpec *s, Record *x, const int64_t *labels, const float *soft_in,
               int64_t key, float *soft_out, int64_t *labels_out) {
    int64_t B = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3], hw = H * W, K = s->classes;
    Rng rng;
    rng_seed(&rng, mix64(s->seed ^ 0x6d69787570ULL) ^ s->epoch, (uint64_t)key);
    int cutmix = s->cutmix_alpha > 0 && (s->mixup_alpha <= 0 || rng_uniform(&rng) < s->switch_p);
    double lambda = beta_draw(&rng, cutmix ? s->cutmix_alpha : s->mixup_alpha);
    int64_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;
    if (cutmix) {               /* a box of area (1 - lambda) about a uniform centre */
        int64_t cx = (int64_t)rng_below(&rng, (uint64_t)W), cy = (int64_t)rng_below(&rng, (uint64_t)H);
        double r = 0.5 * sqrt(1.0 - lambda);
        int64_t half_w = (int64_t)(r * W), half_h = (int64_t)(r * H);
        x0 = cx - half_w < 0 ? 0 : cx - half_w;
        y0 = cy - half_h < 0 ? 0 : cy - half_h;
        x1 = cx + half_w > W ? W : cx + half_w;
        y1 = cy + half_h > H ? H : cy + half_h;
        lambda = 1.0 - (double)((x1 - x0) * (y1 - y0)) / (double)hw;
    }
    /* image i takes from image i - 1, the first from the last: walking down from the
     * last, with the last's original kept aside for the first */
    size_t esize = dtype_size(x->dtype), image = (size_t)C * hw * esize;
    char *last = xmalloc(image);
    memcpy(last, (char *)x->data + (B - 1) * image, image);
    float a = (float)lambda, b = (float)(1.0 - lambda);
    for (int64_t i = B - 1; i >= 0; i--) {
        char *dst = (char *)x->data + i * image;
        const char *src = i ? dst - image : last;
        for (int64_t c = 0; c < C; c++) {
            for (int64_t yy = cutmix ? y0 : 0; yy < (cutmix ? y1 : H); yy++)
                for (int64_t xx = cutmix ? x0 : 0; xx < (cutmix ? x1 : W); xx++) {
                    int64_t at = c * hw + yy * W + xx;
                    if (esize == 1) {
                        uint8_t *d = (uint8_t *)dst + at, v = ((const uint8_t *)src)[at];
                        *d = cutmix ? v : (uint8_t)lrintf(a * *d + b * v);
                    } else {
                        float *d = (float *)dst + at, v = ((const float *)src)[at];
                        *d = cutmix ? v : a * *d + b * v;
                    }
                }
        }
    }
    free(last);
    for (int64_t i = 0; i < B; i++) {
        int64_t j = i ? i - 1 : B - 1;
        float *t = soft_out + i * K;
        for (int64_t k = 0; k < K; k++) {
            double ti = soft_in ? soft_in[i * K + k] : (double)(labels[i] == k);
            double tj = soft_in ? soft_in[j * K + k] : (double)(labels[j] == k);
            t[k] = (float)(lambda * ti + (1.0 - lambda) * tj);
        }
        int64_t best = 0;
        for (int64_t k = 1; k < K; k++) if (t[k] > t[best]) best = k;
        labels_out[i] = best;
    }
}
