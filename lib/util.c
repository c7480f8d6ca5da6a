/* util.c - see util.h */
#define _GNU_SOURCE
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>
#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

const char *tool_name = "incv3";

/* Temporary files that must vanish if the process dies before committing. */
#define MAX_PENDING 16
static AtomicFile *volatile pending[MAX_PENDING];

static void remove_pending(void) {
    for (int i = 0; i < MAX_PENDING; i++)
        if (pending[i]) { unlink(pending[i]->tmp); pending[i] = NULL; }
}

/* SIGINT, SIGTERM, SIGHUP: remove the temporary files, say so in one line, then die
 * of the signal as if unhandled (the shell sees the usual status). Only
 * async-signal-safe calls. */
static void on_fatal_signal(int sig) {
    int removed = 0;
    for (int i = 0; i < MAX_PENDING; i++) {
        AtomicFile *a = pending[i];
        if (a && a->tmp) { unlink(a->tmp); removed = 1; }
    }
    if (removed) {
        const char *parts[] = { tool_name, ": interrupted by ", sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP",
                                "; nothing was written\n" };
        for (size_t k = 0; k < sizeof parts / sizeof *parts; k++)
            if (write(2, parts[k], strlen(parts[k])) < 0) break;
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void vmsg(const char *fmt, va_list ap) {
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (char *p = buf; *p; p++) if (*p == '\n') *p = ' ';   /* one line, always */
    fprintf(stderr, "%s: %s\n", tool_name, buf);
}

jmp_buf *die_jump;
/* An error has been reported: the exit that follows must not report another. */
static int dying;

void die(const char *fmt, ...) {
    if (die_jump) longjmp(*die_jump, EXIT_DATA);
    va_list ap; va_start(ap, fmt); vmsg(fmt, ap); va_end(ap);
    remove_pending();
    dying = 1;
    exit(EXIT_DATA);
}

void usage_die(const char *fmt, ...) {
    if (die_jump) longjmp(*die_jump, EXIT_USAGE);
    va_list ap; va_start(ap, fmt); vmsg(fmt, ap); va_end(ap);
    remove_pending();
    dying = 1;
    exit(EXIT_USAGE);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory allocating %zu bytes", n);
    return p;
}
char *shown_name(const char *name) {
    size_t n = strlen(name), k = 0;
    char *out = xmalloc(4 * n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '\n') { out[k++] = '\\'; out[k++] = 'n'; }
        else if (c == '\t') { out[k++] = '\\'; out[k++] = 't'; }
        else if (c < 32 || c == 127) k += (size_t)sprintf(out + k, "\\x%02x", c);
        else out[k++] = (char)c;
    }
    out[k] = 0;
    return out;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) die("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}
void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) die("out of memory allocating %zu bytes", n);
    return p;
}
char *xstrdup(const char *s) {
    char *p = strdup(s);
    if (!p) die("out of memory");
    return p;
}

long long parse_ll(const char *opt, const char *s, long long lo, long long hi) {
    char *end; errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) usage_die("%s: '%s' is not an integer", opt, s);
    if (v < lo || v > hi) usage_die("%s: %lld is out of range [%lld, %lld]", opt, v, lo, hi);
    return v;
}

double parse_double(const char *opt, const char *s, double lo, double hi) {
    char *end; errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) usage_die("%s: '%s' is not a number", opt, s);
    if (v < lo || v > hi) usage_die("%s: %g is out of range [%g, %g]", opt, v, lo, hi);
    return v;
}

int parse_double_list(const char *opt, const char *s, double *out, int max) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end; errno = 0;
        double v = strtod(p, &end);
        if (errno || end == p || !isfinite(v) || (*end && *end != ','))
            usage_die("%s: '%s' is not a comma-separated list of numbers", opt, s);
        if (n == max) usage_die("%s: more than %d values in '%s'", opt, max, s);
        out[n++] = v;
        p = *end ? end + 1 : end;
    }
    if (n == 0) usage_die("%s: empty list", opt);
    return n;
}

void parse_shard(const char *opt, const char *s, int *index, int *count) {
    int i, n, len = 0;
    if (sscanf(s, "%d/%d%n", &i, &n, &len) != 2 || s[len] || n < 1 || i < 0 || i >= n)
        usage_die("%s: '%s' is not I/N with 0 <= I < N", opt, s);
    *index = i; *count = n;
}

void bad_option(char **argv) {
    const char *arg = argv[optind - 1];
    if (optopt > ' ' && optopt < 127 && !(arg && arg[0] == '-' && arg[1] == '-'))
        usage_die("invalid option or missing value: -%c (see --help)", optopt);
    usage_die("invalid option or missing value: %s (see --help)", arg ? arg : "?");
}

/* Every tool's last act (atexit): whatever it printed reached standard output, or
 * one line and exit 1, so that `tool > /dev/full` never succeeds, whichever command
 * printed. Closing a standard output that was closed before we started (EBADF) with
 * nothing written to it is no error. */
static void close_stdout(void) {
    if (dying) return;
    errno = 0;
    int failed = fflush(stdout) || ferror(stdout);
    int err = errno;
    if (!failed && fclose(stdout) && errno != EBADF) { failed = 1; err = errno; }
    if (!failed) return;
    fprintf(stderr, "%s: cannot write standard output: %s\n", tool_name, strerror(err ? err : EIO));
    remove_pending();
    _exit(EXIT_DATA);
}

void print_version(void) {
    printf("%s (incv3) %s\n", tool_name, INCV3_VERSION);
    exit(0);
}

void print_help(const char *usage) {
    fputs(usage, stdout);
    exit(0);
}

/* Vector width of this CPU: 0 SSE, 1 AVX, 2 AVX2, 3 AVX-512. */
static const char *const ISA_NAMES[] = { "SSE", "AVX", "AVX2", "AVX-512" };

static int cpu_isa(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 3 : __builtin_cpu_supports("avx2") ? 2
         : __builtin_cpu_supports("avx") ? 1 : 0;
}

/* OpenBLAS 0.3.21 does not know some AVX-512 CPUs and silently falls back to
 * its generic Prescott kernels (~6x slower). The core type is read from the
 * environment when the library loads, so the fix is to set it and re-exec. */
static void blas_check_coretype(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || getenv("INCV3_NO_REEXEC")) return;
    const char *core = openblas_get_corename();
    if (!core || (strcasecmp(core, "prescott") && strcasecmp(core, "core2") &&
                  strcasecmp(core, "nehalem") && strcasecmp(core, "unknown")))
        return;
    int isa = cpu_isa();
    if (isa < 2) return;
    const char *want = isa == 3 ? "SkylakeX" : "Haswell";
    if (!getenv("INCV3_QUIET_BLAS"))
        fprintf(stderr, "%s: note: OpenBLAS chose '%s' kernels on a CPU with %s; "
                "re-running with OPENBLAS_CORETYPE=%s\n", tool_name, core, ISA_NAMES[isa], want);
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("INCV3_NO_REEXEC", "1", 1);     /* never loop */
    execv("/proc/self/exe", argv);
    /* exec failed: carry on slowly rather than not at all */
}

void tool_init(const char *name, int argc, char **argv) {
    (void)argc;
    tool_name = name;
    blas_check_coretype(argv);
    atexit(close_stdout);
}

/* ---- atomic files ---- */

/* A temporary file is named BASE.tmp.PID beside its target BASE. A BASE too long to
 * take the suffix within the file system's name limit is cut short and given a hash
 * of the whole name instead (BASE' ~ HASH .tmp.PID), so every name the file system
 * accepts can be written atomically, and each target still has temporaries of its own. */
#define TMP_SUFFIX_MAX 16       /* ".tmp." and a pid of up to 10 digits, and a NUL */
static char *temp_prefix(const char *path, const char *dir, const char *base) {
    long name_max = pathconf(dir, _PC_NAME_MAX);
    if (name_max <= 0 || name_max > 4096) name_max = 255;
    size_t blen = strlen(base), room = (size_t)name_max - (TMP_SUFFIX_MAX - 1);
    if (blen > (size_t)name_max) die("cannot create %s: %s", path, strerror(ENAMETOOLONG));
    if (blen <= room) return xstrdup(base);
    uint64_t h = 0xcbf29ce484222325ULL;         /* FNV-1a over the whole name */
    for (const char *c = base; *c; c++) h = (h ^ (unsigned char)*c) * 0x100000001b3ULL;
    size_t keep = room - 17;                    /* "~" and 16 hex digits */
    char *p = xmalloc(room + 1);
    memcpy(p, base, keep);
    snprintf(p + keep, 18, "~%016llx", (unsigned long long)h);
    return p;
}

/* Temporary files of ours for this target whose writer died (SIGKILL, power): a
 * process that no longer exists will never commit them. */
static void remove_stale_temps(const char *dir, const char *prefix) {
    size_t plen = strlen(prefix);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (strncmp(n, prefix, plen) || strncmp(n + plen, ".tmp.", 5) || !n[plen + 5]) continue;
        char *end;
        errno = 0;
        long pid = strtol(n + plen + 5, &end, 10);
        if (*end || pid <= 0 || pid == getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        size_t len = strlen(dir) + strlen(n) + 2;
        char *full = xmalloc(len);
        snprintf(full, len, "%s/%s", dir, n);
        unlink(full);
        free(full);
    }
    closedir(d);
}

/* Where output to `path` really goes: through symbolic links to their target (the
 * link stays a link, as coreutils writes through it). */
static char *resolve_links(const char *path) {
    char *p = xstrdup(path);
    for (int hops = 0; hops < 40; hops++) {
        struct stat st;
        if (lstat(p, &st) || !S_ISLNK(st.st_mode)) return p;
        char target[4096];
        ssize_t n = readlink(p, target, sizeof target - 1);
        if (n < 0) die("cannot read the link %s: %s", p, strerror(errno));
        target[n] = 0;
        char *next;
        if (target[0] == '/') next = xstrdup(target);
        else {          /* relative to the link's directory */
            char *copy = xstrdup(p);
            const char *dir = dirname(copy);
            size_t len = strlen(dir) + strlen(target) + 2;
            next = xmalloc(len);
            snprintf(next, len, "%s/%s", dir, target);
            free(copy);
        }
        free(p);
        p = next;
    }
    die("%s: too many levels of symbolic links", path);
}

AtomicFile *atomic_open(const char *path) {
    AtomicFile *a = xcalloc(1, sizeof *a);
    a->path = resolve_links(path);
    struct stat st;
    if (!stat(a->path, &st) && !S_ISREG(st.st_mode)) {
        /* a FIFO, a device, /dev/null: written in place, never replaced */
        if (S_ISDIR(st.st_mode)) die("cannot write %s: it is a directory", path);
        a->f = fopen(a->path, "wb");
        if (!a->f) die("cannot open %s: %s", path, strerror(errno));
        return a;
    }
    char *copy = xstrdup(a->path), *copy2 = xstrdup(a->path);
    const char *dir = dirname(copy);
    char *prefix = temp_prefix(path, dir, basename(copy2));
    remove_stale_temps(dir, prefix);
    const char *slash = strrchr(a->path, '/');
    int dirlen = slash ? (int)(slash - a->path + 1) : 0;      /* "DIR/" as the path gives it */
    size_t n = dirlen + strlen(prefix) + TMP_SUFFIX_MAX;
    a->tmp = xmalloc(n);
    snprintf(a->tmp, n, "%.*s%s.tmp.%d", dirlen, a->path, prefix, (int)getpid());
    free(copy); free(copy2); free(prefix);
    static int handlers;
    if (!handlers) {
        handlers = 1;
        int sigs[] = { SIGINT, SIGTERM, SIGHUP };
        for (int i = 0; i < 3; i++) {
            struct sigaction sa = { 0 }, old;
            sa.sa_handler = on_fatal_signal;
            sigemptyset(&sa.sa_mask);
            /* a signal ignored by whoever started us (nohup) stays ignored */
            if (!sigaction(sigs[i], NULL, &old) && old.sa_handler != SIG_IGN) sigaction(sigs[i], &sa, NULL);
        }
    }
    a->f = fopen(a->tmp, "wb");
    if (!a->f) die("cannot create %s: %s", a->tmp, strerror(errno));
    for (int i = 0; i < MAX_PENDING; i++)
        if (!pending[i]) { pending[i] = a; break; }
    return a;
}

static void unregister(AtomicFile *a) {
    for (int i = 0; i < MAX_PENDING; i++)
        if (pending[i] == a) pending[i] = NULL;
}

void atomic_commit(AtomicFile *a) {
    if (!a->tmp) {          /* written in place */
        if (fflush(a->f) || ferror(a->f) || fclose(a->f)) die("cannot write %s: %s", a->path, strerror(errno ? errno : EIO));
        free(a->path); free(a);
        return;
    }
    if (fflush(a->f) || ferror(a->f) || fsync(fileno(a->f)))
        die("cannot write %s: %s", a->path, strerror(errno ? errno : EIO));
    if (fclose(a->f)) { a->f = NULL; die("cannot write %s: %s", a->path, strerror(errno)); }
    a->f = NULL;
    if (rename(a->tmp, a->path)) die("cannot rename %s to %s: %s", a->tmp, a->path, strerror(errno));
    unregister(a);
    /* make the rename itself durable */
    char *dir = xstrdup(a->path);
    int fd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) { fsync(fd); close(fd); }
    free(dir);
    free(a->path); free(a->tmp); free(a);
}

void xfwrite(const void *p, size_t n, FILE *f, const char *what) {
    if (n && fwrite(p, 1, n, f) != n) die("cannot write %s: %s", what, strerror(errno ? errno : EIO));
}

void xfflush(FILE *f, const char *what) {
    if (fflush(f)) die("cannot write %s: %s", what, strerror(errno ? errno : EIO));
}

/* ---- whole files ---- */

static void die_too_large(const char *path, size_t max) {
    die("%s: larger than %zu MiB, more than any file of this kind holds", path, max >> 20);
}

static unsigned char *zstd_decompress_all(const unsigned char *src, size_t n, size_t *len,
                                          const char *path, size_t max) {
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    ZSTD_DCtx_setParameter(dc, ZSTD_d_windowLogMax, 27);
    size_t cap = 1 << 20, used = 0;
    unsigned char *out = xmalloc(cap);
    ZSTD_inBuffer in = { src, n, 0 };
    for (;;) {
        if (used == cap) {
            if (cap > max) die_too_large(path, max);
            cap *= 2;
            out = xrealloc(out, cap);
        }
        ZSTD_outBuffer ob = { out + used, cap - used, 0 };
        size_t ret = ZSTD_decompressStream(dc, &ob, &in);
        if (ZSTD_isError(ret))
            die("%s: corrupt zstd data near compressed byte %zu: %s", path, in.pos, ZSTD_getErrorName(ret));
        used += ob.pos;
        if (in.pos == in.size) {
            if (ret == 0) break;                        /* every frame decoded and flushed */
            /* room left in the output and nothing more to come: the frame was cut */
            if (ob.pos < ob.size) die("%s: truncated zstd frame", path);
        }
    }
    if (used > max) die_too_large(path, max);
    ZSTD_freeDCtx(dc);
    *len = used;
    return out;
}

unsigned char *read_whole_file(const char *path, size_t *len, size_t max) {
    int is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (!fstat(fileno(f), &st)) {
        if (S_ISDIR(st.st_mode)) die("%s: is a directory, not a file", path);
        if (!is_stdin && !S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode))
            die("%s: is a device or socket, not a file", path);
        if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max) die_too_large(path, max);
    }
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = xmalloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap > max) die_too_large(path, max);
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) die("cannot read %s: %s", path, strerror(errno));
    if (!is_stdin) fclose(f);
    if (n >= 4 && buf[0] == 0x28 && buf[1] == 0xB5 && buf[2] == 0x2F && buf[3] == 0xFD) {
        unsigned char *out = zstd_decompress_all(buf, n, len, path, max);
        free(buf);
        return out;
    }
    if (n > max) die_too_large(path, max);
    *len = n;
    return buf;
}

/* ---- random numbers ---- */

uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rng_seed(Rng *r, uint64_t seed, uint64_t stream) {
    uint64_t x = mix64(seed) ^ mix64(stream * 0x632be59bd9b4e019ULL + 1);
    for (int i = 0; i < 4; i++) { x = mix64(x); r->s[i] = x; }
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_next(Rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return result;
}

float rng_uniform(Rng *r) { return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f); }

uint64_t rng_below(Rng *r, uint64_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;
    do x = rng_next(r); while (x >= lim);
    return x % n;
}

int parse_threads(const char *s) {
    return (int)parse_ll("--threads", s, 1, MAX_THREADS);
}

void set_threads(int n) {
    if (n <= 0) return;
    openblas_set_num_threads(n);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double clock_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
