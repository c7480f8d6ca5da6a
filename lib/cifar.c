/* cifar.c - see cifar.h. */
#include "cifar.h"
#include "pickle.h"
#include "util.h"
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* No CIFAR file comes near this (the largest, CIFAR-100's training set, is 155 MB);
 * one that does is a bomb or /dev/zero, not a batch. */
#define MAX_CIFAR_FILE_BYTES ((size_t)512 << 20)
#define MAX_NAMES_BYTES ((size_t)1 << 20)

static void set_format(CifarSet *s, int cifar100, int fine) {
    s->cifar100 = cifar100;
    s->fine = fine;
    s->classes = cifar100 ? (fine ? 100 : 20) : 10;
}

void cifar_init(CifarSet *s, int cifar100, int fine) {
    *s = (CifarSet){ 0 };
    s->chosen = cifar100;
    set_format(s, cifar100, fine);
}

/* The data of `label` is CIFAR-100 (or not): follow it, unless the format was
 * chosen or other files already set it. */
static void expect_cifar100(CifarSet *s, int yes, const char *label) {
    if (yes == s->cifar100) return;
    if (yes && !s->chosen && !s->count) { set_format(s, 1, 1); return; }
    die(yes ? "%s: holds CIFAR-100 images, the files before it CIFAR-10 ones"
            : "%s: holds CIFAR-10 labels, not the fine and coarse labels of CIFAR-100", label);
}

static void reserve(CifarSet *s, size_t n) {
    if (s->count + n <= s->cap) return;
    s->cap = (s->count + n) * 2;
    s->pixels = xrealloc(s->pixels, s->cap * sizeof *s->pixels);
    s->labels = xrealloc(s->labels, s->cap * sizeof *s->labels);
}

static void add_pickle(CifarSet *s, const unsigned char *buf, size_t len, const char *label) {
    s->pickles = xrealloc(s->pickles, (s->npickles + 1) * sizeof *s->pickles);
    CifarPickle *p = &s->pickles[s->npickles];
    *p = (CifarPickle){ 0 };
    s->npickles++;
    cifar_pickle_parse(p, buf, len, label);
    if (p->has_data && p->row_bytes != CIFAR_PIXELS)
        die("%s: byte %zu: 'data' has shape [%lld, %lld], not [N, %d]", label, p->data_offset,
            (long long)p->count, (long long)p->row_bytes, CIFAR_PIXELS);
    if (!p->count) die("%s: a meta file (label names), not a batch of images", label);
    expect_cifar100(s, !p->labels, label);
    const int64_t *labels = !s->cifar100 ? p->labels : s->fine ? p->fine : p->coarse;
    size_t offset = !s->cifar100 ? p->labels_offset : s->fine ? p->fine_offset : p->coarse_offset;
    size_t n = (size_t)p->count;
    reserve(s, n);
    for (size_t i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= s->classes)
            die("%s: byte %zu: %s label %lld of image %zu is outside 0..%d", label, offset,
                s->cifar100 ? (s->fine ? "fine" : "coarse") : "the", (long long)labels[i], i, s->classes - 1);
        s->pixels[s->count + i] = p->pixels + i * CIFAR_PIXELS;
        s->labels[s->count + i] = labels[i];
    }
    s->count += n;
}

void cifar_add(CifarSet *s, const unsigned char *buf, size_t len, const char *label) {
    if (is_pickle(buf, len)) { add_pickle(s, buf, len, label); return; }
    const size_t rec_size = s->cifar100 ? 3074 : 3073;
    if (len == 0) die("%s: empty file", label);
    if (len % rec_size)
        die("%s: size %zu is not a whole number of %zu-byte %s records", label, len, rec_size,
            s->cifar100 ? "CIFAR-100" : "CIFAR-10");
    size_t n = len / rec_size;
    reserve(s, n);
    for (size_t i = 0; i < n; i++) {
        const unsigned char *r = buf + i * rec_size;
        int l = s->cifar100 ? r[s->fine ? 1 : 0] : r[0];
        if (l >= s->classes)
            die("%s: record %zu has %s label %d, outside 0..%d", label, i,
                s->cifar100 ? (s->fine ? "fine" : "coarse") : "a", l, s->classes - 1);
        s->pixels[s->count + i] = r + (rec_size - CIFAR_PIXELS);
        s->labels[s->count + i] = l;
    }
    s->count += n;
}

/* ---- tarballs ---- */

typedef struct {
    char *name;
    unsigned char *data;
    size_t len;
} Member;

static int is_archive(const unsigned char *p, size_t n) {
    return (n >= 2 && p[0] == 0x1F && p[1] == 0x8B) ||                     /* gzip */
           (n >= 3 && !memcmp(p, "BZh", 3)) ||                            /* bzip2 */
           (n >= 6 && !memcmp(p, "\xFD" "7zXZ\0", 6)) ||                  /* xz */
           (n >= 262 && !memcmp(p + 257, "ustar", 5));                    /* tar */
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int cmp_member(const void *a, const void *b) {
    return strcmp(((const Member *)a)->name, ((const Member *)b)->name);
}

/* The regular members whose base name `want` accepts, read into memory and sorted
 * by name. From the file at path, or from mem when it is not NULL. */
static Member *archive_members(const char *path, const unsigned char *mem, size_t mem_len,
                               int (*want)(const char *base, int arg), int arg, size_t *count) {
    struct archive *a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    int r = mem ? archive_read_open_memory(a, mem, mem_len) : archive_read_open_filename(a, path, 1 << 16);
    if (r != ARCHIVE_OK) die("%s: %s", path, archive_error_string(a));
    Member *members = NULL;
    size_t n = 0;
    struct archive_entry *e;
    while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(e);
        if (archive_entry_filetype(e) != AE_IFREG || !name || !want(base_name(name), arg)) continue;
        Member m = { xstrdup(name), NULL, 0 };
        size_t cap = 0;
        for (;;) {
            if (m.len == cap) {
                if (cap >= MAX_CIFAR_FILE_BYTES)
                    die("%s: %s is larger than %zu MiB, more than any CIFAR file holds", path, name,
                        MAX_CIFAR_FILE_BYTES >> 20);
                cap = cap ? 2 * cap : 1 << 20;
                m.data = xrealloc(m.data, cap);
            }
            la_ssize_t got = archive_read_data(a, m.data + m.len, cap - m.len);
            if (got < 0) die("%s: %s: %s", path, name, archive_error_string(a));
            if (got == 0) break;
            m.len += (size_t)got;
        }
        members = xrealloc(members, (n + 1) * sizeof *members);
        members[n++] = m;
    }
    if (r != ARCHIVE_EOF) die("%s: %s", path, archive_error_string(a));
    archive_read_free(a);
    if (n) qsort(members, n, sizeof *members, cmp_member);
    *count = n;
    return members;
}

/* data_batch_N[.bin] and CIFAR-100's train[.bin]; test_batch[.bin] and test[.bin] */
static int is_batch(const char *base, int test_split) {
    if (!strncmp(base, "._", 2)) return 0;                  /* macOS resource forks */
    if (test_split) return !strcmp(base, "test_batch") || !strcmp(base, "test_batch.bin") ||
                           !strcmp(base, "test") || !strcmp(base, "test.bin");
    if (!strcmp(base, "train") || !strcmp(base, "train.bin")) return 1;
    if (strncmp(base, "data_batch_", 11) || !base[11]) return 0;
    const char *p = base + 11;
    while (*p >= '0' && *p <= '9') p++;
    return p > base + 11 && (!*p || !strcmp(p, ".bin"));
}

static void add_members(CifarSet *s, const char *path, const unsigned char *mem, size_t mem_len,
                        int test_split) {
    size_t n;
    Member *members = archive_members(path, mem, mem_len, is_batch, test_split, &n);
    if (!n) die("%s: no %s batches in the archive (%s)", path, test_split ? "test" : "training",
                test_split ? "test_batch or test" : "data_batch_N or train");
    for (size_t k = 0; k < n; k++) {
        size_t llen = strlen(path) + strlen(members[k].name) + 2;
        char *label = xmalloc(llen);
        snprintf(label, llen, "%s:%s", path, members[k].name);
        const char *base = base_name(members[k].name);
        if (!is_pickle(members[k].data, members[k].len) && (!strcmp(base, "train.bin") || !strcmp(base, "test.bin")))
            expect_cifar100(s, 1, label);         /* the CIFAR-100 binary version's 3074-byte records */
        cifar_add(s, members[k].data, members[k].len, label);
        free(label);
        free(members[k].name);
        s->buffers = xrealloc(s->buffers, (s->nbuffers + 1) * sizeof *s->buffers);
        s->buffers[s->nbuffers++] = members[k].data;
    }
    free(members);
}

/* The first bytes of a regular file, to tell an archive from a batch without reading
 * it all; 0 for anything else (a pipe's bytes, once read, would be lost). */
static size_t peek(const char *path, unsigned char *head, size_t n) {
    struct stat st;
    if (!strcmp(path, "-") || stat(path, &st) || !S_ISREG(st.st_mode)) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    size_t got = fread(head, 1, n, f);
    if (ferror(f)) die("cannot read %s: %s", path, strerror(errno));
    fclose(f);
    return got;
}

void cifar_add_path(CifarSet *s, const char *path, int test_split) {
    unsigned char head[512];
    if (is_archive(head, peek(path, head, sizeof head))) {
        add_members(s, path, NULL, 0, test_split);          /* streamed from the file */
        return;
    }
    size_t len;
    unsigned char *buf = read_whole_file(path, &len, MAX_CIFAR_FILE_BYTES);   /* maybe a .tar.zst */
    s->buffers = xrealloc(s->buffers, (s->nbuffers + 1) * sizeof *s->buffers);
    s->buffers[s->nbuffers++] = buf;
    if (is_archive(buf, len)) add_members(s, path, buf, len, test_split);
    else cifar_add(s, buf, len, path);
}

void cifar_free(CifarSet *s) {
    for (size_t k = 0; k < s->npickles; k++) cifar_pickle_free(&s->pickles[k]);
    for (size_t k = 0; k < s->nbuffers; k++) free(s->buffers[k]);
    free(s->pickles);
    free(s->buffers);
    free(s->pixels);
    free(s->labels);
    *s = (CifarSet){ 0 };
}

/* ---- class names ---- */

static int is_names(const char *base, int coarse) {
    return coarse ? !strcmp(base, "coarse_label_names.txt") || !strcmp(base, "meta")
                  : !strcmp(base, "batches.meta.txt") || !strcmp(base, "batches.meta") ||
                    !strcmp(base, "fine_label_names.txt") || !strcmp(base, "meta");
}

static char **names_from(const unsigned char *buf, size_t len, const char *label, int coarse, int *count) {
    char **names;
    int n = 0;
    if (is_pickle(buf, len)) {
        CifarPickle p;
        cifar_pickle_parse(&p, buf, len, label);
        char **from = coarse ? p.coarse_names : p.names ? p.names : p.fine_names;
        int k = coarse ? p.ncoarse_names : p.names ? p.nnames : p.nfine_names;
        if (!from) die("%s: holds no %slabel names", label, coarse ? "coarse " : "");
        names = xcalloc((size_t)k + 1, sizeof *names);
        for (n = 0; n < k; n++) names[n] = xstrdup(from[n]);
        cifar_pickle_free(&p);
    } else {            /* text: one name per line, blank lines skipped */
        names = xcalloc(len / 2 + 2, sizeof *names);
        for (size_t i = 0; i < len;) {
            size_t end = i;
            while (end < len && buf[end] != '\n') end++;
            size_t stop = end > i && buf[end - 1] == '\r' ? end - 1 : end;
            if (stop > i) {
                for (size_t c = i; c < stop; c++)
                    if (buf[c] < 0x20 || buf[c] == 0x7F) die("%s: line %d is not a class name", label, n + 1);
                names[n] = xmalloc(stop - i + 1);
                memcpy(names[n], buf + i, stop - i);
                names[n++][stop - i] = 0;
            }
            i = end + 1;
        }
    }
    *count = n;
    return names;
}

char **cifar_label_names(const char *path, int coarse, int *count) {
    unsigned char head[512];
    if (is_archive(head, peek(path, head, sizeof head))) {
        size_t n;
        Member *m = archive_members(path, NULL, 0, is_names, coarse, &n);
        if (!n) die("%s: no label names in the archive (batches.meta.txt, batches.meta, meta)", path);
        /* the text form first where both are there: it is what the binary version ships */
        size_t pick = 0;
        for (size_t k = 0; k < n; k++) if (strstr(m[k].name, ".txt")) pick = k;
        char **names = names_from(m[pick].data, m[pick].len, path, coarse, count);
        for (size_t k = 0; k < n; k++) { free(m[k].name); free(m[k].data); }
        free(m);
        return names;
    }
    size_t len;
    unsigned char *buf = read_whole_file(path, &len, MAX_NAMES_BYTES);
    char **names = names_from(buf, len, path, coarse, count);
    free(buf);
    return names;
}
