/* cifar-decode - CIFAR-10/100 files as users have them to a tensor stream of batches. */
#include "batches.h"
#include "cifar.h"
#include "stream.h"
#include "util.h"
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: cifar-decode [options] FILE...\n"
    "Decode CIFAR-10 (or CIFAR-100) files into batches: records idx (i64 [B], source\n"
    "record numbers), x (u8 [B,3,32,32]), y (i64 [B]). A FILE is a binary-version batch\n"
    "(data_batch_1.bin, train.bin), a python-version pickle (data_batch_1, train), either\n"
    "plain or .zst, or a downloaded tarball (cifar-10-python.tar.gz, ...), read in place.\n"
    BATCH_OPTIONS_HELP
    "      --cifar100 fine|coarse  the files are CIFAR-100; which label to emit (python\n"
    "                         versions and CIFAR-100 tarballs say so themselves: fine)\n"
    "      --split train|test which batches of a tarball (default train)\n"
    "      --names FILE       class names (batches.meta.txt, a meta file or a tarball) into a\n"
    "                         record names, which checkpoints keep and evaluate prints\n"
    "  -h, --help             --version\n";

enum { OPT_C100 = 256, OPT_SPLIT, OPT_NAMES, OPT_VERSION };

int main(int argc, char **argv) {
    tool_init("cifar-decode", argc, argv);
    static const struct option longopts[] = {
        BATCH_LONG_OPTIONS,
        { "cifar100", required_argument, 0, OPT_C100 }, { "split", required_argument, 0, OPT_SPLIT },
        { "names", required_argument, 0, OPT_NAMES },
        { "help", no_argument, 0, 'h' }, { "version", no_argument, 0, OPT_VERSION }, { 0 } };
    BatchOptions bo;
    batch_options_init(&bo);
    int cifar100 = 0, fine = 1, test_split = 0, c;
    const char *names_path = NULL;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "b:o:h", longopts, NULL)) != -1) {
        if (batch_option(&bo, c, optarg)) continue;
        switch (c) {
        case OPT_C100:
            cifar100 = 1;
            if (!strcmp(optarg, "fine")) fine = 1;
            else if (!strcmp(optarg, "coarse")) fine = 0;
            else usage_die("--cifar100: '%s' is neither fine nor coarse", optarg);
            break;
        case OPT_SPLIT:
            if (!strcmp(optarg, "train")) test_split = 0;
            else if (!strcmp(optarg, "test")) test_split = 1;
            else usage_die("--split: '%s' is neither train nor test", optarg);
            break;
        case OPT_NAMES: names_path = optarg; break;
        case 'h': print_help(USAGE);
        case OPT_VERSION: print_version();
        default: bad_option(argv);
        }
    }
    if (optind >= argc) usage_die("no input files (see --help)");

    /* Gather every record of every file, in order, validating as we go. */
    CifarSet set;
    cifar_init(&set, cifar100, fine);
    for (int a = optind; a < argc; a++) cifar_add_path(&set, argv[a], test_split);
    BatchSource src = { set.pixels, set.labels, NULL, set.count, 32, set.classes,
                        set.cifar100 ? "cifar100" : "cifar10", "" };
    if (bo.count_only) {
        printf("%zu\n", batch_records(&bo, &src));
        return 0;
    }
    char **names = NULL;
    if (names_path) {
        int count;
        names = cifar_label_names(names_path, set.cifar100 && !set.fine, &count);
        if (count < set.classes)
            die("%s: %d class names for %d classes", names_path, count, set.classes);
    }
    Output out;
    output_open(&out, bo.out_path, bo.raw, bo.level);
    write_batches(&out, &bo, &src, names);
    output_close(&out);
    return 0;
}
