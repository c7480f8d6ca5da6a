/* augment - stream filter on x: random crop, flip, rotation, torchvision's augmentation
 * policies, Cutout, RandomErasing, normalisation. */
#include "stream.h"
#include "util.h"
#include "augment.h"
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: augment [options] [FILE]\n"
    "Augment the image records x (u8 or f32, [B,C,H,W]) of a stream; pass every\n"
    "other record through unchanged. Randomness per image comes from --seed, --epoch\n"
    "and the image's source number (record idx, else its position in the stream).\n"
    "      --crop P           random crop with P pixels of zero padding (default 0)\n"
    "      --crop-size S      crops of S x S (default: the images' size), drawn over the\n"
    "                         whole padded image: torchvision's RandomCrop(S, padding=P)\n"
    "      --flip             random horizontal flip with probability 1/2\n"
    "      --rotate DEG       random rotation in [-DEG, DEG] degrees, nearest, fill 0\n"
    "      --policy P         torchvision's augmentation policy on u8 images, after the\n"
    "                         above: autoaugment (its CIFAR-10 policy), randaugment[:N,M[,BINS]]\n"
    "                         (2,9,31) or trivialaugment[:BINS] (TrivialAugmentWide, 31)\n"
    "      --fill R,G,B       what the policy's shears, translations and rotations bring in\n"
    "                         from outside the image (0,0,0; one value: all channels)\n"
    "      --cutout S         Cutout: an SxS square centred on a random pixel (clipped at\n"
    "                         the borders) set to the mean colour (0 once normalised)\n"
    "      --random-erasing P torchvision's RandomErasing with probability P (scale 0.02-0.33,\n"
    "                         ratio 0.3-3.3), the rectangle set to the mean colour\n"
    "      --mixup A          MixUp: each image blended with the one before it in the batch,\n"
    "                         one lambda ~ Beta(A, A) per batch; writes soft targets (record\n"
    "                         'soft', f32 [B,K]) before y, and y as each image's most probable class\n"
    "      --cutmix A         CutMix: a box of the image before it, area 1 - lambda; with\n"
    "                         --mixup, each batch takes CutMix with probability --switch-prob\n"
    "      --switch-prob P    (0.5)             --classes K  of the soft targets (10)\n"
    "      --normalize SPEC   to f32: 'cifar10', or 'M,M,M/S,S,S' (x/255 - mean) / std\n"
    "      --seed S, --epoch E (defaults 0)\n"
    "  -o, --output FILE      write to FILE atomically (default stdout)\n"
    "      --level L          zstd level (default 1)   --raw  uncompressed output\n"
    "  -h, --help             --version\n";

enum { OPT_CROP = 256, OPT_CROP_SIZE, OPT_FLIP, OPT_ROTATE, OPT_CUTOUT, OPT_POLICY, OPT_FILL, OPT_ERASE, OPT_MIXUP,
       OPT_CUTMIX, OPT_SWITCH, OPT_CLASSES, OPT_NORM, OPT_SEED, OPT_EPOCH, OPT_LEVEL,
       OPT_RAW, OPT_VERSION };

static double parse_alpha(const char *opt, const char *s) {
    double a = parse_double(opt, s, 0, 1e6);
    if (!(a > 0)) usage_die("%s: alpha must be above 0 (Beta(alpha, alpha)), not '%s'", opt, s);
    return a;
}

/* Mixes the held batch x with its labels y (and soft targets, if any came), then
 * writes x, soft and y. */
static void mix_and_write(const MixSpec *mix, Record *x, const Record *y, const Record *soft_in,
                          int64_t key, StreamWriter *w) {
    int64_t B = x->dims[0], K = mix->classes;
    if (y->rank != 1 || y->dims[0] != B || (y->dtype != DT_I64 && y->dtype != DT_I32))
        die("record 'y' at byte %llu: expected %lld labels (i64 or i32) for the x before it",
            (unsigned long long)y->offset, (long long)B);
    if (soft_in && (soft_in->dtype != DT_F32 || soft_in->rank != 2 || soft_in->dims[0] != B || soft_in->dims[1] != K))
        die("record 'soft' at byte %llu: expected f32 [%lld,%lld] soft targets", (unsigned long long)soft_in->offset,
            (long long)B, (long long)K);
    int64_t *labels = xmalloc((B ? B : 1) * sizeof *labels), *mixed = xmalloc((B ? B : 1) * sizeof *mixed);
    float *targets = xmalloc((B * K > 0 ? B * K : 1) * sizeof *targets);
    for (int64_t i = 0; i < B; i++) {
        labels[i] = y->dtype == DT_I64 ? ((const int64_t *)y->data)[i] : ((const int32_t *)y->data)[i];
        if (labels[i] < 0 || labels[i] >= K)
            die("record 'y' at byte %llu: label %lld of image %lld is outside 0..%lld (--classes %lld)",
                (unsigned long long)y->offset, (long long)labels[i], (long long)i, (long long)(K - 1), (long long)K);
    }
    if (B) mix_batch(mix, x, labels, soft_in ? soft_in->data : NULL, key, targets, mixed);
    sw_write_record(w, x);
    sw_write(w, "soft", DT_F32, 2, (int64_t[]){ B, K }, targets);
    sw_write(w, "y", DT_I64, 1, (int64_t[]){ B }, mixed);
    free(labels); free(mixed); free(targets);
}

int main(int argc, char **argv) {
    tool_init("augment", argc, argv);
    static const struct option longopts[] = {
        { "crop", required_argument, 0, OPT_CROP }, { "flip", no_argument, 0, OPT_FLIP },
        { "crop-size", required_argument, 0, OPT_CROP_SIZE },
        { "rotate", required_argument, 0, OPT_ROTATE }, { "normalize", required_argument, 0, OPT_NORM },
        { "cutout", required_argument, 0, OPT_CUTOUT }, { "policy", required_argument, 0, OPT_POLICY },
        { "fill", required_argument, 0, OPT_FILL }, { "mixup", required_argument, 0, OPT_MIXUP },
        { "cutmix", required_argument, 0, OPT_CUTMIX }, { "switch-prob", required_argument, 0, OPT_SWITCH },
        { "classes", required_argument, 0, OPT_CLASSES }, { "random-erasing", required_argument, 0, OPT_ERASE },
        { "seed", required_argument, 0, OPT_SEED }, { "epoch", required_argument, 0, OPT_EPOCH },
        { "output", required_argument, 0, 'o' }, { "level", required_argument, 0, OPT_LEVEL },
        { "raw", no_argument, 0, OPT_RAW }, { "help", no_argument, 0, 'h' },
        { "version", no_argument, 0, OPT_VERSION }, { 0 } };
    AugmentSpec spec = { 0 };
    MixSpec mix = { 0, 0, 0.5, 10, 0, 0 };
    int raw = 0, level = DEFAULT_ZSTD_LEVEL, have_fill = 0, have_switch = 0, have_classes = 0, c;
    const char *out_path = NULL;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_CROP: spec.crop = (int)parse_ll("--crop", optarg, 0, 64); break;
        case OPT_CROP_SIZE: spec.crop_size = (int)parse_ll("--crop-size", optarg, 1, 4096); break;
        case OPT_FLIP: spec.flip = 1; break;
        case OPT_ROTATE: spec.rotate_deg = parse_double("--rotate", optarg, 0, 180); break;
        case OPT_CUTOUT: spec.cutout = (int)parse_ll("--cutout", optarg, 1, 4096); break;
        case OPT_POLICY: parse_policy("--policy", optarg, &spec.policy); spec.policy_on = 1; break;
        case OPT_FILL: {
            double v[3];
            int n = parse_double_list("--fill", optarg, v, 3);
            if (n != 1 && n != 3) usage_die("--fill: '%s': one value or three (R,G,B)", optarg);
            for (int i = 0; i < 3; i++) {
                double x = v[n == 1 ? 0 : i];
                if (!(x >= 0 && x <= 255) || x != floor(x)) usage_die("--fill: '%s': whole numbers from 0 to 255", optarg);
                spec.fill[i] = (uint8_t)x;
            }
            have_fill = 1;
            break;
        }
        case OPT_MIXUP: mix.mixup_alpha = parse_alpha("--mixup", optarg); break;
        case OPT_CUTMIX: mix.cutmix_alpha = parse_alpha("--cutmix", optarg); break;
        case OPT_SWITCH: mix.switch_p = parse_double("--switch-prob", optarg, 0, 1); have_switch = 1; break;
        case OPT_CLASSES: mix.classes = (int)parse_ll("--classes", optarg, 1, 100000); have_classes = 1; break;
        case OPT_ERASE: spec.erase_p = parse_double("--random-erasing", optarg, 0, 1); break;
        case OPT_NORM: parse_normalize("--normalize", optarg, &spec.norm); break;
        case OPT_SEED: spec.seed = (uint64_t)parse_ll("--seed", optarg, 0, INT64_MAX); break;
        case OPT_EPOCH: spec.epoch = (uint64_t)parse_ll("--epoch", optarg, 0, INT64_MAX); break;
        case 'o': out_path = optarg; break;
        case OPT_LEVEL: level = parse_level(optarg); break;
        case OPT_RAW: raw = 1; break;
        case 'h': print_help(USAGE);
        case OPT_VERSION: print_version();
        default: bad_option(argv);
        }
    }
    if (argc - optind > 1) usage_die("at most one input file (see --help)");
    if (have_fill && !spec.policy_on) usage_die("--fill is for the operations of a --policy (see --help)");
    int mixing = mix.mixup_alpha > 0 || mix.cutmix_alpha > 0;
    if (have_switch && !(mix.mixup_alpha > 0 && mix.cutmix_alpha > 0))
        usage_die("--switch-prob chooses between --mixup and --cutmix: give both (see --help)");
    if (have_classes && !mixing) usage_die("--classes is for the soft targets of --mixup or --cutmix (see --help)");
    mix.seed = spec.seed; mix.epoch = spec.epoch;
    StreamReader *in = sr_open_path(optind < argc ? argv[optind] : "-");
    Output out;
    output_open(&out, out_path, raw, level);
    Record rec = { 0 }, idx = { 0 }, result = { 0 }, soft = { 0 };
    int have_idx = 0, held = 0, have_soft = 0;   /* held: x waits for its y (mixing) */
    int64_t position = 0;     /* image count so far, when no idx record names them */
    int64_t batch_key = 0;
    while (sr_next(in, &rec)) {
        if (!strcmp(rec.name, "idx") && rec.dtype == DT_I64 && rec.rank == 1) {
            record_swap(&idx, &rec);               /* keep it for the next x */
            have_idx = 1;
            sw_write_record(out.w, &idx);
            continue;
        }
        if (mixing && !strcmp(rec.name, "soft")) {
            if (!held) die("record 'soft' at byte %llu comes without an x before it", (unsigned long long)rec.offset);
            record_swap(&soft, &rec);
            have_soft = 1;
            continue;
        }
        if (mixing && !strcmp(rec.name, "y")) {
            if (!held) die("record 'y' at byte %llu comes without an x before it", (unsigned long long)rec.offset);
            mix_and_write(&mix, &result, &rec, have_soft ? &soft : NULL, batch_key, out.w);
            held = have_soft = 0;
            continue;
        }
        if (strcmp(rec.name, "x")) { sw_write_record(out.w, &rec); continue; }
        if (held) die("record 'x' at byte %llu: the x before it has no y (MixUp and CutMix need the labels)",
                      (unsigned long long)rec.offset);
        if (rec.rank != 4 || (rec.dtype != DT_U8 && rec.dtype != DT_F32))
            record_expect(&rec, DT_U8, 4, NULL);
        const int64_t *keys = NULL;
        if (have_idx) {
            if (idx.dims[0] != rec.dims[0])
                die("record 'x' at byte %llu: %lld images but idx has %lld",
                    (unsigned long long)rec.offset, (long long)rec.dims[0], (long long)idx.dims[0]);
            keys = idx.data;
            have_idx = 0;
        }
        batch_key = keys && rec.dims[0] ? keys[0] : position;
        augment_batch(&spec, &rec, keys, position, &result);
        position += rec.dims[0];
        if (mixing) held = 1;
        else sw_write_record(out.w, &result);
    }
    if (held) die("the stream ends with an x that has no y (MixUp and CutMix need the labels)");
    output_close(&out);
    sr_close(in);
    return 0;
}
