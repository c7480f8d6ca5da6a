/* cifar-decode - CIFAR-10/100 files as users have them to a tensor stream of batches. */
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
    "  -b, --batch N          images per batch (default 128)\n"
    "      --shuffle SEED     shuffle all records with a permutation from SEED and --epoch\n"
    "      --epoch E          epoch number for --shuffle (default 0)\n"
    "      --shard I/N        emit slice I of each global batch of N*B images\n"
    "      --limit N          use only the first N records of the files\n"
    "      --drop-last        omit a final incomplete (global) batch\n"
    "      --count            print the number of records (after --limit) and exit\n"
    "      --cifar100 fine|coarse  the files are CIFAR-100; which label to emit (python\n"
    "                         versions and CIFAR-100 tarballs say so themselves: fine)\n"
    "      --split train|test which batches of a tarball (default train)\n"
    "  -o, --output FILE      write to FILE atomically (default stdout)\n"
    "      --level L          zstd level (default 1)   --raw  uncompressed output\n"
    "  -h, --help             --version\n";

enum { OPT_SHUFFLE = 256, OPT_EPOCH, OPT_SHARD, OPT_LIMIT, OPT_DROP, OPT_C100, OPT_SPLIT, OPT_LEVEL,
       OPT_RAW, OPT_COUNT, OPT_VERSION };

int main(int argc, char **argv) {
    tool_init("cifar-decode", argc, argv);
    static const struct option longopts[] = {
        { "batch", required_argument, 0, 'b' }, { "shuffle", required_argument, 0, OPT_SHUFFLE },
        { "epoch", required_argument, 0, OPT_EPOCH }, { "shard", required_argument, 0, OPT_SHARD },
        { "limit", required_argument, 0, OPT_LIMIT }, { "drop-last", no_argument, 0, OPT_DROP },
        { "cifar100", required_argument, 0, OPT_C100 }, { "split", required_argument, 0, OPT_SPLIT },
        { "output", required_argument, 0, 'o' },
        { "level", required_argument, 0, OPT_LEVEL }, { "raw", no_argument, 0, OPT_RAW },
        { "count", no_argument, 0, OPT_COUNT },
        { "help", no_argument, 0, 'h' }, { "version", no_argument, 0, OPT_VERSION }, { 0 } };
    long long batch = 128, epoch = 0, limit = -1;
    unsigned long long seed = 0;
    int shuffle = 0, shard_i = 0, shard_n = 1, drop_last = 0, cifar100 = 0, fine = 1;
    int raw = 0, level = DEFAULT_ZSTD_LEVEL, test_split = 0, count_only = 0, c;
    const char *out_path = NULL;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "b:o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'b': batch = parse_ll("--batch", optarg, 1, 1 << 20); break;
        case OPT_SHUFFLE: seed = (unsigned long long)parse_ll("--shuffle", optarg, 0, INT64_MAX); shuffle = 1; break;
        case OPT_EPOCH: epoch = parse_ll("--epoch", optarg, 0, 1 << 30); break;
        case OPT_SHARD: parse_shard("--shard", optarg, &shard_i, &shard_n); break;
        case OPT_LIMIT: limit = parse_ll("--limit", optarg, 1, INT64_MAX); break;
        case OPT_DROP: drop_last = 1; break;
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
        case 'o': out_path = optarg; break;
        case OPT_LEVEL: level = parse_level(optarg); break;
        case OPT_RAW: raw = 1; break;
        case OPT_COUNT: count_only = 1; break;
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
    const size_t pixels = CIFAR_PIXELS;
    size_t count = limit >= 0 && (size_t)limit < set.count ? (size_t)limit : set.count;
    if (count_only) {
        printf("%zu\n", count);
        return 0;
    }

    size_t *order = xmalloc(count * sizeof *order);
    for (size_t i = 0; i < count; i++) order[i] = i;
    if (shuffle) {      /* Fisher-Yates: the same permutation on every worker */
        Rng rng;
        rng_seed(&rng, seed, (uint64_t)epoch);
        for (size_t i = count - 1; i > 0 && count > 1; i--) {
            size_t j = rng_below(&rng, i + 1), t = order[i];
            order[i] = order[j]; order[j] = t;
        }
    }

    size_t global = (size_t)batch * shard_n;
    size_t batches = drop_last ? count / global : (count + global - 1) / global;
    Output out;
    output_open(&out, out_path, raw, level);
    char meta[512];
    int mlen = snprintf(meta, sizeof meta,
                        "format=%s\nrecords=%zu\nbatches=%zu\nbatch_size=%lld\nepoch=%lld\nshard=%d/%d\n"
                        "classes=%d\n", set.cifar100 ? "cifar100" : "cifar10", count, batches, batch,
                        epoch, shard_i, shard_n, set.classes);
    int64_t mdim = mlen;
    sw_write(out.w, "meta", DT_U8, 1, &mdim, meta);

    unsigned char *x = xmalloc((size_t)batch * pixels);
    int64_t *y = xmalloc((size_t)batch * sizeof *y), *idx = xmalloc((size_t)batch * sizeof *idx);
    for (size_t k = 0; k < batches; k++) {
        size_t lo = k * global + (size_t)shard_i * batch, hi = lo + batch;
        if (hi > count) hi = count;
        if (lo >= hi) continue;          /* this worker's slice of a short last batch is empty */
        size_t b = hi - lo;
        for (size_t i = 0; i < b; i++) {
            size_t r = order[lo + i];
            memcpy(x + i * pixels, set.pixels[r], pixels);
            y[i] = set.labels[r];
            idx[i] = (int64_t)r;
        }
        int64_t xd[4] = { (int64_t)b, 3, 32, 32 }, yd[1] = { (int64_t)b };
        sw_write(out.w, "idx", DT_I64, 1, yd, idx);
        sw_write(out.w, "x", DT_U8, 4, xd, x);
        sw_write(out.w, "y", DT_I64, 1, yd, y);
    }
    output_close(&out);
    return 0;
}
