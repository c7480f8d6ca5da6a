/* augment - stream filter on x: random crop, flip, rotation, Cutout, normalisation. */
#include "stream.h"
#include "util.h"
#include "augment.h"
#include <getopt.h>
#include <string.h>

static const char USAGE[] =
    "usage: augment [options] [FILE]\n"
    "Augment the image records x (u8 or f32, [B,C,H,W]) of a stream; pass every\n"
    "other record through unchanged. Randomness per image comes from --seed, --epoch\n"
    "and the image's source number (record idx, else its position in the stream).\n"
    "      --crop P           random crop with P pixels of zero padding (default 0)\n"
    "      --flip             random horizontal flip with probability 1/2\n"
    "      --rotate DEG       random rotation in [-DEG, DEG] degrees, nearest, fill 0\n"
    "      --cutout S         Cutout: an SxS square centred on a random pixel (clipped at\n"
    "                         the borders) set to the mean colour (0 once normalised)\n"
    "      --normalize SPEC   to f32: 'cifar10', or 'M,M,M/S,S,S' (x/255 - mean) / std\n"
    "      --seed S, --epoch E (defaults 0)\n"
    "  -o, --output FILE      write to FILE atomically (default stdout)\n"
    "      --level L          zstd level (default 1)   --raw  uncompressed output\n"
    "  -h, --help             --version\n";

enum { OPT_CROP = 256, OPT_FLIP, OPT_ROTATE, OPT_CUTOUT, OPT_NORM, OPT_SEED, OPT_EPOCH, OPT_LEVEL,
       OPT_RAW, OPT_VERSION };

int main(int argc, char **argv) {
    tool_init("augment", argc, argv);
    static const struct option longopts[] = {
        { "crop", required_argument, 0, OPT_CROP }, { "flip", no_argument, 0, OPT_FLIP },
        { "rotate", required_argument, 0, OPT_ROTATE }, { "normalize", required_argument, 0, OPT_NORM },
        { "cutout", required_argument, 0, OPT_CUTOUT },
        { "seed", required_argument, 0, OPT_SEED }, { "epoch", required_argument, 0, OPT_EPOCH },
        { "output", required_argument, 0, 'o' }, { "level", required_argument, 0, OPT_LEVEL },
        { "raw", no_argument, 0, OPT_RAW }, { "help", no_argument, 0, 'h' },
        { "version", no_argument, 0, OPT_VERSION }, { 0 } };
    AugmentSpec spec = { 0 };
    int raw = 0, level = DEFAULT_ZSTD_LEVEL, c;
    const char *out_path = NULL;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_CROP: spec.crop = (int)parse_ll("--crop", optarg, 0, 64); break;
        case OPT_FLIP: spec.flip = 1; break;
        case OPT_ROTATE: spec.rotate_deg = parse_double("--rotate", optarg, 0, 180); break;
        case OPT_CUTOUT: spec.cutout = (int)parse_ll("--cutout", optarg, 1, 4096); break;
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
    StreamReader *in = sr_open_path(optind < argc ? argv[optind] : "-");
    Output out;
    output_open(&out, out_path, raw, level);
    Record rec = { 0 }, idx = { 0 }, result = { 0 };
    int have_idx = 0;
    int64_t position = 0;     /* image count so far, when no idx record names them */
    while (sr_next(in, &rec)) {
        if (!strcmp(rec.name, "idx") && rec.dtype == DT_I64 && rec.rank == 1) {
            record_swap(&idx, &rec);               /* keep it for the next x */
            have_idx = 1;
            sw_write_record(out.w, &idx);
            continue;
        }
        if (strcmp(rec.name, "x")) { sw_write_record(out.w, &rec); continue; }
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
        augment_batch(&spec, &rec, keys, position, &result);
        position += rec.dims[0];
        sw_write_record(out.w, &result);
    }
    output_close(&out);
    sr_close(in);
    return 0;
}
