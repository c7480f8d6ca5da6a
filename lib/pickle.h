/* pickle.h - the CIFAR python versions, read by a restricted unpickler.
 *
 * The files are pickled dicts (Python 2 cPickle, protocol 2, as published; or the
 * same dicts pickled again by Python 3, protocols 2 to 5). The unpickler runs a
 * whitelist of opcodes and calls no code: the only globals it knows are the five
 * that rebuild a uint8 NumPy array and a latin-1 byte string (numpy's _reconstruct,
 * ndarray, dtype and _frombuffer; _codecs.encode), each checked for exactly the
 * arguments those files hold. Every length is checked against the input, memo
 * indices must be ones already written, nesting is bounded, and memory grows
 * with the bytes read, never with a length a header claims. */
#ifndef INCV3_PICKLE_H
#define INCV3_PICKLE_H
#include <stddef.h>
#include <stdint.h>

typedef struct PickleArena PickleArena;

typedef struct CifarPickle {
    int has_data;                   /* a data batch ('data'), not a meta file */
    int64_t count, row_bytes;       /* 'data' [count, row_bytes] (the caller checks the width) */
    size_t data_offset;             /* byte offset of 'data' */
    const unsigned char *pixels;    /* its rows: channel planes as in the binary version */
    const int64_t *labels;          /* 'labels' (CIFAR-10), or NULL */
    const int64_t *fine, *coarse;   /* 'fine_labels', 'coarse_labels' (CIFAR-100), or NULL */
    size_t labels_offset, fine_offset, coarse_offset;   /* byte offsets of the lists */
    char **names, **fine_names, **coarse_names;        /* label names of meta files, or NULL */
    int nnames, nfine_names, ncoarse_names;
    PickleArena *arena;             /* owns everything above */
} CifarPickle;

/* A pickle of protocol 2 or later starts with PROTO (0x80); no CIFAR binary
 * record can (labels are below 100). */
int is_pickle(const unsigned char *buf, size_t len);
/* Reads one CIFAR python-version file (a data batch or a meta file) out of buf,
 * which must outlive the result. Dies "label: byte N: what" on anything else. */
void cifar_pickle_parse(CifarPickle *out, const unsigned char *buf, size_t len, const char *label);
void cifar_pickle_free(CifarPickle *p);
#endif
