/* stream.h - the incv3 tensor stream (man 5 incv3-stream).
 *
 * A stream is a sequence of records, optionally zstd-compressed as a whole:
 *   magic "IV3T" | version u8 (1) | dtype u8 | rank u8 | name length u8 (1..255)
 *   | name (printable ASCII) | rank x i64 LE dims | payload (LE, C order)
 * A writer ends every stream with an end record (dtype 0, name "end", rank 0);
 * a reader that meets EOF without it reports a truncated stream, so a stage
 * that died upstream is never taken for a clean end. */
#ifndef INCV3_STREAM_H
#define INCV3_STREAM_H
#include <stdint.h>
#include <stdio.h>
#include <stddef.h>

enum { DT_END = 0, DT_U8 = 1, DT_I32 = 2, DT_I64 = 3, DT_F32 = 4, DT_BF16 = 5, DT_COUNT };
#define MAX_RANK 8
#define MAX_RECORD_BYTES (16ULL << 30)   /* sane cap on one payload */

typedef struct {
    char name[256];
    int dtype, rank;
    int64_t dims[MAX_RANK];
    int64_t nelem;
    size_t nbytes;
    void *data;         /* owned by the record, reused across reads */
    size_t cap;
    uint64_t offset;    /* byte offset of the header in the uncompressed stream */
} Record;

const char *dtype_name(int dtype);
size_t dtype_size(int dtype);
void record_free(Record *r);
/* Exchanges a and b, headers and buffers: keeps the record just read in a while the
 * reader goes on reading into the buffer a held (no copy). */
void record_swap(Record *a, Record *b);
/* Set header fields and make room for the payload. */
void record_shape(Record *r, const char *name, int dtype, int rank, const int64_t *dims);
/* Dies unless r has the given dtype and rank (dims < 0 are wildcards). */
void record_expect(const Record *r, int dtype, int rank, const int64_t *dims);
void record_shape_str(const Record *r, char *buf, size_t n);

typedef struct StreamReader StreamReader;
/* label names the input in error messages (a path or "stdin"). */
StreamReader *sr_open(FILE *f, const char *label);
StreamReader *sr_open_path(const char *path);   /* "-" is stdin */
/* Reads the next record into rec: 1, or 0 at a clean end of stream.
 * Any malformed, truncated or corrupt input dies with one line naming the
 * input, the record and its byte offset. */
int sr_next(StreamReader *r, Record *rec);
void sr_close(StreamReader *r);

typedef struct StreamWriter StreamWriter;
/* level: zstd level (negative levels are zstd's fast modes); raw: no compression. */
StreamWriter *sw_open(FILE *f, const char *label, int raw, int level);
void sw_write(StreamWriter *w, const char *name, int dtype, int rank, const int64_t *dims,
              const void *data);
void sw_write_record(StreamWriter *w, const Record *r);
/* Writes the end record, flushes; does not close f. */
void sw_close(StreamWriter *w);

#define DEFAULT_ZSTD_LEVEL 1

/* Strings travel as a u8 [K, L] record, each NUL-padded to L bytes (the longest, plus
 * its NUL): class names in a record "names" (the decoders write it, checkpoints keep
 * it, incv3-step --eval passes the model's on, evaluate prints them), image-decode's
 * file paths in a record "path". */
void sw_write_strings(StreamWriter *w, const char *name, char *const *strings, int n);
#define sw_write_names(w, names, K) sw_write_strings(w, "names", names, K)
/* The names of a record "names", NULL-terminated (names_free); *K their count. Dies
 * naming the record when it is not one. */
char **record_names(const Record *r, int *K);
void names_free(char **names);

/* A tool's stream output: stdout, or a file written atomically (-o). */
typedef struct {
    StreamWriter *w;
    struct AtomicFileTag *af;
} Output;
void output_open(Output *o, const char *path, int raw, int level);
void output_close(Output *o);   /* end record, then commit the file */
int parse_level(const char *s); /* --level value, usage error if out of zstd's range */
#endif
