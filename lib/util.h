/* util.h - errors, option parsing, atomic files, RNG, threads: what every tool shares. */
#ifndef INCV3_UTIL_H
#define INCV3_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define INCV3_VERSION "0.1.0"

/* Exit statuses of every tool. */
enum { EXIT_DATA = 1, EXIT_USAGE = 2 };

/* Call first in main: names the tool for messages, makes sure OpenBLAS runs the
 * kernels of this CPU (see blas_check_coretype), and checks at exit that all that
 * was printed reached standard output (else one line and exit 1). */
void tool_init(const char *name, int argc, char **argv);
extern const char *tool_name;

/* One-line error on stderr prefixed with the tool's name; removes pending
 * temporary files (no partial output), then exits 1 (die) or 2 (usage_die). */
void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void usage_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* Fuzzing: when set, die() and usage_die() jump here instead of exiting. */
#include <setjmp.h>
extern jmp_buf *die_jump;

/* A name as a one-line message may show it: control characters (a newline in a
 * file name) as C escapes. Newly allocated. */
char *shown_name(const char *name);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* Strict number parsing for option values: the whole string must be a number
 * in range, else usage_die naming the option. */
long long parse_ll(const char *opt, const char *s, long long lo, long long hi);
double parse_double(const char *opt, const char *s, double lo, double hi);
/* "a,b,c" into at most max doubles; returns the count. */
int parse_double_list(const char *opt, const char *s, double *out, int max);
/* "I/N" with 0 <= I < N. */
void parse_shard(const char *opt, const char *s, int *index, int *count);
/* Reports an unknown option or missing argument from getopt_long (exit 2). */
void bad_option(char **argv) __attribute__((noreturn));
void print_version(void) __attribute__((noreturn));
/* Prints the usage text and exits 0 (1 when standard output cannot take it). */
void print_help(const char *usage) __attribute__((noreturn));

/* Atomic output: write to PATH.tmp.PID (a name cut short, with a hash, where PATH's
 * own is too long to take the suffix), then fsync + rename on commit.
 * A die() before commit removes the temporary file. */
typedef struct AtomicFileTag {
    char *path, *tmp;
    FILE *f;
} AtomicFile;
AtomicFile *atomic_open(const char *path);
void atomic_commit(AtomicFile *a);
/* Checked stdio: die naming the file on failure. */
void xfwrite(const void *p, size_t n, FILE *f, const char *what);
void xfflush(FILE *f, const char *what);

/* Read a whole file (or "-" for stdin) into memory; zstd-compressed input is
 * decompressed (detected by magic). Dies naming the file on error, on a device
 * (/dev/zero never ends) and, before reading it all, on more than max bytes. */
unsigned char *read_whole_file(const char *path, size_t *len, size_t max);

/* Deterministic random numbers: xoshiro256** seeded through splitmix64. */
typedef struct { uint64_t s[4]; } Rng;
void rng_seed(Rng *r, uint64_t seed, uint64_t stream);
uint64_t rng_next(Rng *r);
float rng_uniform(Rng *r);                 /* [0, 1) */
uint64_t rng_below(Rng *r, uint64_t n);    /* [0, n), unbiased */
uint64_t mix64(uint64_t x);

/* --threads: 1 to MAX_THREADS (more than any machine incv3 runs on has cores). */
#define MAX_THREADS 256
int parse_threads(const char *s);
/* Threads for OpenBLAS and OpenMP loops; 0 keeps the library default. */
void set_threads(int n);
/* Threads the next parallel region gets. */
int max_threads(void);
double now_seconds(void);
double clock_time(void);       /* seconds since 1970 (UTC): times logged for people and other runs */
#endif
