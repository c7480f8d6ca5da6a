/* cifar.h - the CIFAR-10/100 binary formats. */
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
} CifarSet;

void cifar_init(CifarSet *s, int cifar100, int fine);
/* Appends the records of one file's bytes (kept alive by the caller), validating
 * whole records and label ranges; dies naming `label` and the record. */
void cifar_add(CifarSet *s, const unsigned char *buf, size_t len, const char *label);
void cifar_free(CifarSet *s);
#endif
