/* tensor - inspect tensor streams: list, export/import .npy, render PNG grids. */
#include "augment.h"
#include "npy.h"
#include "stream.h"
#include "util.h"
#include <getopt.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: tensor ls [FILE]\n"
    "       tensor export NAME [-i K] -o OUT.npy [FILE]\n"
    "       tensor import NAME IN.npy [-o FILE] [--level L | --raw]\n"
    "       tensor png [-r NAME] [-i K] [--image J] [--normalize SPEC] [--scale S] -o OUT.png [FILE]\n"
    "ls: one line per record: name, dtype, shape, byte offset, min, max, mean, std, NaNs.\n"
    "export: the K-th (default 0) record called NAME as a NumPy .npy file.\n"
    "import: a .npy file as a one-record stream called NAME.\n"
    "png: the K-th image batch (record x by default, else the first tap.NAME or\n"
    "  tapgrad.NAME; [B,C,H,W] with C 1 or 3) as a grid, ceil(sqrt(B)) images wide, each\n"
    "  scaled by S (default 2) with 1-pixel gaps; f32 images are de-normalised with SPEC\n"
    "  (cifar10 or M,M,M/S,S,S), else taken as 0..1. A feature map (any other C), or\n"
    "  any batch with --image J: the channels of image J (0) as a grid of grey maps,\n"
    "  each stretched from its own minimum (black) to its maximum (white).\n";

typedef struct { double min, max, mean, std; long long nans; } Stats;

static double element(const Record *r, int64_t i) {
    switch (r->dtype) {
    case DT_U8: return ((const uint8_t *)r->data)[i];
    case DT_I32: return ((const int32_t *)r->data)[i];
    case DT_I64: return (double)((const int64_t *)r->data)[i];
    case DT_F32: return ((const float *)r->data)[i];
    case DT_BF16: { uint32_t b = (uint32_t)((const uint16_t *)r->data)[i] << 16; float f; memcpy(&f, &b, 4); return f; }
    }
    return 0;
}

static Stats stats(const Record *r) {
    Stats s = { INFINITY, -INFINITY, 0, 0, 0 };
    double sum = 0, sq = 0;
    int64_t n = 0;
    for (int64_t i = 0; i < r->nelem; i++) {
        double v = element(r, i);
        if (isnan(v)) { s.nans++; continue; }
        if (v < s.min) s.min = v;
        if (v > s.max) s.max = v;
        sum += v; n++;
    }
    s.mean = n ? sum / n : NAN;
    for (int64_t i = 0; i < r->nelem; i++) {
        double v = element(r, i);
        if (!isnan(v)) sq += (v - s.mean) * (v - s.mean);
    }
    s.std = n ? sqrt(sq / n) : NAN;
    if (!n) s.min = s.max = NAN;
    return s;
}

/* Options every subcommand takes: -h/--help; anything else unknown is a usage error. */
static const struct option HELP_OPTION = { "help", no_argument, 0, 'h' };

static int cmd_ls(int argc, char **argv) {
    static const struct option longopts[] = { HELP_OPTION, { 0 } };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'h') print_help(USAGE);
        bad_option(argv);
    }
    if (argc - optind > 1) usage_die("ls takes at most one file");
    StreamReader *in = sr_open_path(optind < argc ? argv[optind] : "-");
    Record r = { 0 };
    printf("%-24s %-5s %-18s %12s %12s %12s %12s %12s %6s\n", "name", "dtype", "shape", "offset",
           "min", "max", "mean", "std", "nan");
    while (sr_next(in, &r)) {
        char shape[128];
        record_shape_str(&r, shape, sizeof shape);
        Stats s = stats(&r);
        printf("%-24s %-5s %-18s %12llu %12.6g %12.6g %12.6g %12.6g %6lld\n", r.name,
               dtype_name(r.dtype), shape, (unsigned long long)r.offset, s.min, s.max, s.mean,
               s.std, s.nans);
    }
    xfflush(stdout, "stdout");
    sr_close(in);
    record_free(&r);
    return 0;
}

/* Finds the index-th record called name (NULL: x, else the first tap.NAME or
 * tapgrad.NAME seen); dies if the stream has fewer. */
static void find_record(const char *path, const char *name, long long index, Record *r) {
    StreamReader *in = sr_open_path(path);
    long long seen = 0;
    char chosen[256] = "";
    while (sr_next(in, r)) {
        int pick = name ? !strcmp(r->name, name)
                 : !strcmp(r->name, "x") || (!chosen[0] && (!strncmp(r->name, "tap.", 4) || !strncmp(r->name, "tapgrad.", 8)))
                   || (chosen[0] && !strcmp(r->name, chosen));
        if (!pick) continue;
        if (!name && !chosen[0]) snprintf(chosen, sizeof chosen, "%s", r->name);
        if (seen++ == index) { sr_close(in); return; }
    }
    die("%s: no record '%s' number %lld (found %lld)", path, name ? name : chosen[0] ? chosen : "x", index, seen);
}

/* Channels of one image [C,H,W] as a grid of grey maps, each channel stretched over
 * its own range, into rgb (width x height, gaps left as they are). */
static void draw_channels(const Record *r, int64_t image, int64_t scale, int64_t cols, int64_t width,
                          uint8_t *rgb) {
    int64_t C = r->dims[1], H = r->dims[2], W = r->dims[3], cw = W * scale + 1, ch = H * scale + 1;
    for (int64_t c = 0; c < C; c++) {
        int64_t base = (image * C + c) * H * W;
        double lo = INFINITY, hi = -INFINITY;
        for (int64_t p = 0; p < H * W; p++) {
            double v = element(r, base + p);
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
        for (int64_t y = 0; y < H * scale; y++)
            for (int64_t x = 0; x < W * scale; x++) {
                double v = element(r, base + (y / scale) * W + x / scale);
                uint8_t g = hi > lo ? (uint8_t)lrint(255.0 * (v - lo) / (hi - lo)) : 0;
                int64_t px = (c % cols) * cw + 1 + x, py = (c / cols) * ch + 1 + y;
                memset(rgb + (py * width + px) * 3, g, 3);
            }
    }
}

/* The largest grid tensor png draws: 64 megapixels, 192 MB of RGB. */
#define MAX_PNG_PIXELS (64 << 20)

/* libpng's own messages become part of our one line instead of lines of their own. */
static char png_message[256];
static void png_error_line(png_structp pp, png_const_charp msg) {
    snprintf(png_message, sizeof png_message, "%s", msg);
    png_longjmp(pp, 1);
}
static void png_warning_quiet(png_structp pp, png_const_charp msg) { (void)pp; (void)msg; }

/* RGB rows of width x height into path, atomically. */
static void write_png(const char *path, const uint8_t *img, int64_t width, int64_t height) {
    AtomicFile *af = atomic_open(path);
    png_structp pp = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, png_error_line, png_warning_quiet);
    png_infop info = png_create_info_struct(pp);
    if (!pp || !info || setjmp(png_jmpbuf(pp)))
        die("cannot write %s: %s", path, png_message[0] ? png_message : "libpng failed");
    png_init_io(pp, af->f);
    png_set_IHDR(pp, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(pp, info);
    for (int64_t y = 0; y < height; y++) png_write_row(pp, (png_bytep)(img + y * width * 3));
    png_write_end(pp, info);
    png_destroy_write_struct(&pp, &info);
    atomic_commit(af);
}

static int cmd_export_png(int argc, char **argv, int png) {
    static const struct option longopts[] = {
        { "index", required_argument, 0, 'i' }, { "output", required_argument, 0, 'o' },
        { "record", required_argument, 0, 'r' }, { "normalize", required_argument, 0, 'n' },
        { "scale", required_argument, 0, 's' }, { "image", required_argument, 0, 'j' }, HELP_OPTION, { 0 } };
    long long index = 0, scale = 2, image = -1;
    const char *out_path = NULL, *name = NULL;
    Normalize norm = { 0 };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "i:o:r:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': print_help(USAGE);
        case 'i': index = parse_ll("--index", optarg, 0, INT64_MAX); break;
        case 'o': out_path = optarg; break;
        case 'r': if (!png) bad_option(argv); name = optarg; break;
        case 'n': if (!png) bad_option(argv); parse_normalize("--normalize", optarg, &norm); break;
        case 's': if (!png) bad_option(argv); scale = parse_ll("--scale", optarg, 1, 16); break;
        case 'j': if (!png) bad_option(argv); image = parse_ll("--image", optarg, 0, INT64_MAX); break;
        default: bad_option(argv);
        }
    }
    if (!png) {
        if (optind >= argc) usage_die("export: which record? (see --help)");
        name = argv[optind++];
    }
    if (!out_path) usage_die("%s: -o OUT is required", png ? "png" : "export");
    if (argc - optind > 1) usage_die("at most one input file");
    Record r = { 0 };
    find_record(optind < argc ? argv[optind] : "-", name, index, &r);
    if (png) {
        if (r.rank != 4 || (r.dtype != DT_U8 && r.dtype != DT_F32))
            die("record '%s' at byte %llu is not a batch [B,C,H,W] of u8 or f32 images or feature maps", r.name,
                (unsigned long long)r.offset);
        int64_t B = r.dims[0], C = r.dims[1], H = r.dims[2], W = r.dims[3];
        int maps = image >= 0 || (C != 1 && C != 3);    /* the channels of one image */
        if (maps && image < 0) image = 0;
        if (maps && image >= B)
            die("record '%s' at byte %llu: no image %lld in a batch of %lld", r.name, (unsigned long long)r.offset,
                image, (long long)B);
        int64_t tiles = maps ? C : B;
        if (tiles == 0 || H > 1024 || W > 1024 || tiles > 65536) die("record '%s': no image grid for this shape", r.name);
        int64_t cols = (int64_t)ceil(sqrt((double)tiles)), rows = (tiles + cols - 1) / cols;
        int64_t cw = W * scale + 1, ch = H * scale + 1, width = cols * cw + 1, height = rows * ch + 1;
        if (width * height > MAX_PNG_PIXELS)
            die("record '%s': a grid of %lldx%lld pixels is over the %d megapixels tensor png draws "
                "(lower --scale, or export fewer images)", r.name, (long long)width, (long long)height,
                MAX_PNG_PIXELS >> 20);
        uint8_t *img = xmalloc(width * height * 3);
        memset(img, 64, width * height * 3);      /* dark grey gaps */
        if (maps) draw_channels(&r, image, scale, cols, width, img);
        else
        for (int64_t i = 0; i < B; i++)
            for (int64_t y = 0; y < H * scale; y++)
                for (int64_t x = 0; x < W * scale; x++)
                    for (int k = 0; k < 3; k++) {
                        int64_t c = C == 1 ? 0 : k, at = ((i * C + c) * H + y / scale) * W + x / scale;
                        double v = element(&r, at);
                        if (r.dtype == DT_F32)
                            v = (norm.on ? v * norm.std[c] + norm.mean[c] : v) * 255.0;
                        v = v < 0 ? 0 : v > 255 ? 255 : v;
                        int64_t px = (i % cols) * cw + 1 + x, py = (i / cols) * ch + 1 + y;
                        img[(py * width + px) * 3 + k] = (uint8_t)lrint(v);
                    }
        write_png(out_path, img, width, height);
        free(img);
    } else {
        AtomicFile *af = atomic_open(out_path);
        npy_write(af->f, out_path, &r);
        atomic_commit(af);
    }
    record_free(&r);
    return 0;
}

static int cmd_import(int argc, char **argv) {
    static const struct option longopts[] = {
        { "output", required_argument, 0, 'o' }, { "level", required_argument, 0, 'l' },
        { "raw", no_argument, 0, 'w' }, HELP_OPTION, { 0 } };
    const char *out_path = NULL;
    int raw = 0, level = DEFAULT_ZSTD_LEVEL, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': print_help(USAGE);
        case 'o': out_path = optarg; break;
        case 'l': level = parse_level(optarg); break;
        case 'w': raw = 1; break;
        default: bad_option(argv);
        }
    }
    if (argc - optind != 2) usage_die("import: NAME and IN.npy are required (see --help)");
    const char *name = argv[optind], *path = argv[optind + 1];
    if (!*name || strlen(name) > 255) usage_die("import: record name must have 1 to 255 characters");
    for (const char *p = name; *p; p++)
        if (*p <= ' ' || *p > '~') usage_die("import: record name must be printable ASCII without spaces");
    size_t len;
    unsigned char *buf = read_whole_file(path, &len, MAX_RECORD_BYTES + (1 << 20));
    Record r = { 0 };
    npy_parse(buf, len, path, name, &r);
    Output out;
    output_open(&out, out_path, raw, level);
    sw_write_record(out.w, &r);
    output_close(&out);
    free(buf);
    record_free(&r);
    return 0;
}

int main(int argc, char **argv) {
    tool_init("tensor", argc, argv);
    opterr = 0;
    if (argc < 2) usage_die("which command? ls, export, import or png (see --help)");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) print_help(USAGE);
    if (!strcmp(cmd, "--version")) print_version();
    if (!strcmp(cmd, "ls")) return cmd_ls(argc - 1, argv + 1);
    if (!strcmp(cmd, "export")) return cmd_export_png(argc - 1, argv + 1, 0);
    if (!strcmp(cmd, "png")) return cmd_export_png(argc - 1, argv + 1, 1);
    if (!strcmp(cmd, "import")) return cmd_import(argc - 1, argv + 1);
    usage_die("unknown command '%s' (ls, export, import, png)", cmd);
}
