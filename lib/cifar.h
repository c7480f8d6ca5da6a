/* cifar.h - CIFAR-10/100 as users have them: the binary version's records, the
 * python version's pickles (pickle.h), either inside the downloaded tarballs. */
#ifndef INCV3_CIFAR_H
#define INCV3_CIFAR_H
#include <stddef.h>
#include <stdint.h>

#define CIFAR_PIXELS 3072

typedef struct {
    const unsigned char **pixels;   /* per record, CIFAR_PIXELS bytes inside the file buffers */
    int64_t *labels;
    size_t count, cap;
    int cifar100, fine, classes;
    int chosen;                     /* the format was given (--cifar100), not read off the data */
    struct CifarPickle *pickles;    /* parsed python-version files, owned */
    size_t npickles;
    unsigned char **buffers;        /* files read by cifar_add_path, owned */
    size_t nbuffers;
} CifarSet;

/* cifar100 = 0 means CIFAR-10 unless the data says CIFAR-100 (a python-version
 * file with fine and coarse labels, a cifar-100 tarball): then fine labels. */
void cifar_init(CifarSet *s, int cifar100, int fine);
/* Appends the records of one file's bytes (kept alive by the caller): binary
 * records, or a python-version data batch (detected by content). Validates whole
 * records and label ranges; dies naming `label` and the record. */
void cifar_add(CifarSet *s, const unsigned char *buf, size_t len, const char *label);
/* Appends a file (plain or .zst) or, from a tarball (cifar-10-python.tar.gz,
 * cifar-100-binary.tar.gz, ...), its training or test batches in name order,
 * streamed out of the archive, never unpacked to disk. */
void cifar_add_path(CifarSet *s, const char *path, int test_split);
void cifar_free(CifarSet *s);

/* Class names from a text file (one per line, batches.meta.txt), a python-version
 * meta file (batches.meta, meta) or a tarball holding either; coarse picks
 * CIFAR-100's 20 superclasses. NULL-terminated; dies on a file that is none. */
char **cifar_label_names(const char *path, int coarse, int *count);
#endif
