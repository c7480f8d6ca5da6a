/* cifar.c - see cifar.h. */
#include "cifar.h"
#include "util.h"
#include <stdlib.h>

void cifar_init(CifarSet *s, int cifar100, int fine) {
    *s = (CifarSet){ 0 };
    s->cifar100 = cifar100;
    s->fine = fine;
    s->classes = cifar100 ? (fine ? 100 : 20) : 10;
}

void cifar_add(CifarSet *s, const unsigned char *buf, size_t len, const char *label) {
    const size_t rec_size = s->cifar100 ? 3074 : 3073;
    if (len == 0) die("%s: empty file", label);
    if (len % rec_size)
        die("%s: size %zu is not a whole number of %zu-byte %s records", label, len, rec_size,
            s->cifar100 ? "CIFAR-100" : "CIFAR-10");
    size_t n = len / rec_size;
    if (s->count + n > s->cap) {
        s->cap = (s->count + n) * 2;
        s->pixels = xrealloc(s->pixels, s->cap * sizeof *s->pixels);
        s->labels = xrealloc(s->labels, s->cap * sizeof *s->labels);
    }
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

void cifar_free(CifarSet *s) {
    free(s->pixels);
    free(s->labels);
    *s = (CifarSet){ 0 };
}
