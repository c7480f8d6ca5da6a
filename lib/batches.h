/* batches.h - what the decoders (cifar-decode, image-decode) share: their batching
 * options and the stream of batches they write: a meta record, then per batch
 * idx (i64 [B], the records' numbers), x (u8 [B,3,S,S]) and y (i64 [B]). */
#ifndef INCV3_BATCHES_H
#define INCV3_BATCHES_H
#include "stream.h"
#include <getopt.h>
#include <stdint.h>

typedef struct {
    long long batch, epoch, limit;      /* limit < 0: every record */
    unsigned long long seed;
    int shuffle, shard_i, shard_n, drop_last, count_only, raw, level;
    const char *out_path;
} BatchOptions;

enum { OPT_BATCH_FIRST = 0x1000, OPT_SHUFFLE = OPT_BATCH_FIRST, OPT_EPOCH, OPT_SHARD, OPT_LIMIT, OPT_DROP,
       OPT_COUNT, OPT_LEVEL, OPT_RAW, OPT_BATCH_LAST = OPT_RAW };
/* The long options of BatchOptions, for a tool's table (-b and -o are short options too). */
#define BATCH_LONG_OPTIONS                                                                              \
    { "batch", required_argument, 0, 'b' }, { "shuffle", required_argument, 0, OPT_SHUFFLE },           \
    { "epoch", required_argument, 0, OPT_EPOCH }, { "shard", required_argument, 0, OPT_SHARD },         \
    { "limit", required_argument, 0, OPT_LIMIT }, { "drop-last", no_argument, 0, OPT_DROP },            \
    { "count", no_argument, 0, OPT_COUNT }, { "output", required_argument, 0, 'o' },                    \
    { "level", required_argument, 0, OPT_LEVEL }, { "raw", no_argument, 0, OPT_RAW }
/* The help text's lines for them. */
#define BATCH_OPTIONS_HELP                                                                              \
    "  -b, --batch N          images per batch (default 128)\n"                                         \
    "      --shuffle SEED     shuffle all records with a permutation from SEED and --epoch\n"            \
    "      --epoch E          epoch number for --shuffle (default 0)\n"                                  \
    "      --shard I/N        emit slice I of each global batch of N*B images\n"                         \
    "      --limit N          use only the first N records\n"                                            \
    "      --drop-last        omit a final incomplete (global) batch\n"                                   \
    "      --count            print the number of records (after --limit) and exit\n"                    \
    "  -o, --output FILE      write to FILE atomically (default stdout)\n"                               \
    "      --level L          zstd level (default 1)   --raw  uncompressed output\n"

void batch_options_init(BatchOptions *o);
/* Takes getopt's c and optarg when c is one of BatchOptions' options: 1, else 0. */
int batch_option(BatchOptions *o, int c, const char *arg);

/* The records to write: pixels[r] is record r's image, [3, size, size] u8. */
typedef struct {
    const unsigned char *const *pixels;
    const int64_t *labels;
    char *const *paths;       /* written as a record path (u8 [B, L], NUL-padded) when not NULL */
    size_t count;             /* before --limit */
    int size, classes;
    const char *format;       /* the meta record's format= */
    const char *meta_extra;   /* further "key=value\n" lines of the meta record, or "" */
} BatchSource;

/* Records after --limit. */
size_t batch_records(const BatchOptions *o, const BatchSource *s);
/* Writes the meta record, the class names record (names, when not NULL; see
 * stream.h) and every batch of this epoch and shard to out. */
void write_batches(Output *out, const BatchOptions *o, const BatchSource *s, char *const *names);
#endif
