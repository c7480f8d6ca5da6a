/* image-decode - your own pictures (an ImageFolder root, or image files) to the tensor
 * stream of batches that cifar-decode writes. */
#include "batches.h"
#include "images.h"
#include "stream.h"
#include "util.h"
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char USAGE[] =
    "usage: image-decode [options] ROOT\n"
    "       image-decode [options] FILE...\n"
    "Decode pictures into batches: records idx (i64 [B], the images' numbers in the list),\n"
    "x (u8 [B,3,S,S]), y (i64 [B]), after a record names (the classes). ROOT is a folder of\n"
    "class folders as torchvision's ImageFolder reads it (ROOT/CLASS/.../IMAGE, classes and\n"
    "files in its order); FILEs are images without a label (y -1) unless --label says one.\n"
    "PNG and JPEG, converted to RGB and resized to S x S as PIL and torchvision's\n"
    "Resize((S, S)) do (antialiased bilinear): the same bytes.\n"
    BATCH_OPTIONS_HELP
    "      --size S           the images' side after resizing (default 32)\n"
    "      --label K          the class of the FILEs (default: none, y -1)\n"
    "      --paths            a record path (u8 [B, L], NUL-padded) before each batch\n"
    "      --max-pixels N     refuse larger images before decoding them (default 89478485,\n"
    "                         PIL's MAX_IMAGE_PIXELS)\n"
    "      --skip-bad         leave out files that cannot be decoded, each named on stderr\n"
    "                         with the count at the end (default: the first one is an error)\n"
    "      --threads T        decoding threads (default: the cores)\n"
    "  -h, --help             --version\n";

enum { OPT_SIZE = 256, OPT_LABEL, OPT_PATHS, OPT_MAX_PIXELS, OPT_SKIP, OPT_THREADS, OPT_VERSION };

int main(int argc, char **argv) {
    tool_init("image-decode", argc, argv);
    static const struct option longopts[] = {
        BATCH_LONG_OPTIONS,
        { "size", required_argument, 0, OPT_SIZE }, { "label", required_argument, 0, OPT_LABEL },
        { "paths", no_argument, 0, OPT_PATHS }, { "max-pixels", required_argument, 0, OPT_MAX_PIXELS },
        { "skip-bad", no_argument, 0, OPT_SKIP }, { "threads", required_argument, 0, OPT_THREADS },
        { "help", no_argument, 0, 'h' }, { "version", no_argument, 0, OPT_VERSION }, { 0 } };
    BatchOptions bo;
    batch_options_init(&bo);
    int size = 32, with_paths = 0, skip_bad = 0, c;
    long long label = -1, max_pixels = DEFAULT_MAX_PIXELS;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "b:o:h", longopts, NULL)) != -1) {
        if (batch_option(&bo, c, optarg)) continue;
        switch (c) {
        case OPT_SIZE: size = (int)parse_ll("--size", optarg, 1, 4096); break;
        case OPT_LABEL: label = parse_ll("--label", optarg, 0, 99999); break;
        case OPT_PATHS: with_paths = 1; break;
        case OPT_MAX_PIXELS: max_pixels = parse_ll("--max-pixels", optarg, 1, 1LL << 40); break;
        case OPT_SKIP: skip_bad = 1; break;
        case OPT_THREADS: set_threads(parse_threads(optarg)); break;
        case 'h': print_help(USAGE);
        case OPT_VERSION: print_version();
        default: bad_option(argv);
        }
    }
    if (optind >= argc) usage_die("no input: an ImageFolder root or image files (see --help)");

    ImageList list = { 0 };
    struct stat st;
    if (argc - optind == 1 && !stat(argv[optind], &st) && S_ISDIR(st.st_mode)) {
        if (label >= 0) usage_die("--label is for image files; an ImageFolder's classes are its folders");
        image_list_scan(&list, argv[optind]);
    } else {
        for (int a = optind; a < argc; a++) image_list_add(&list, argv[a], label);
    }
    int classes = list.nclasses ? list.nclasses : (int)label + 1;
    size_t count = bo.limit >= 0 && (size_t)bo.limit < list.count ? (size_t)bo.limit : list.count;
    if (bo.count_only && !skip_bad) {
        printf("%zu\n", count);
        return 0;
    }

    /* Every image decoded first, on every core: which ones fail is known before the
     * batches are drawn, so a skipped file moves no other image between batches. */
    size_t pixels = 3 * (size_t)size * size;
    if (count && pixels > ((size_t)16 << 30) / count)
        die("%zu images of %d x %d are more than the 16 GiB image-decode holds; use --limit or a smaller --size",
            count, size, size);
    uint8_t *data = xmalloc((count ? count : 1) * pixels);
    char **errors = xcalloc(count ? count : 1, sizeof *errors);
    #pragma omp parallel for schedule(dynamic, 4)
    for (size_t i = 0; i < count; i++) {
        char err[256];
        if (image_load(list.paths[i], size, max_pixels, data + i * pixels, err, sizeof err)) errors[i] = strdup(err);
    }
    const unsigned char **rows = xmalloc((count ? count : 1) * sizeof *rows);
    int64_t *labels = xmalloc((count ? count : 1) * sizeof *labels);
    char **paths = xmalloc((count ? count : 1) * sizeof *paths);
    size_t kept = 0, skipped = 0;
    for (size_t i = 0; i < count; i++) {
        if (errors[i]) {
            if (!skip_bad) die("%s: %s", shown_name(list.paths[i]), errors[i]);
            char *name = shown_name(list.paths[i]);
            fprintf(stderr, "%s: skipped %s: %s\n", tool_name, name, errors[i]);
            free(name);
            skipped++;
            continue;
        }
        rows[kept] = data + i * pixels;
        labels[kept] = list.labels[i];
        paths[kept++] = list.paths[i];
    }
    if (skipped) fprintf(stderr, "%s: skipped %zu of %zu files\n", tool_name, skipped, count);
    if (bo.count_only) {
        printf("%zu\n", kept);
        return 0;
    }
    char meta_extra[64];
    snprintf(meta_extra, sizeof meta_extra, "size=%d\n", size);
    BatchSource src = { rows, labels, with_paths ? paths : NULL, kept, size, classes,
                        list.nclasses ? "imagefolder" : "images", meta_extra };
    Output out;
    output_open(&out, bo.out_path, bo.raw, bo.level);
    write_batches(&out, &bo, &src, list.nclasses ? list.classes : NULL);
    output_close(&out);
    return 0;
}
