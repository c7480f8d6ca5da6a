/* libFuzzer target: the tensor stream reader on arbitrary bytes (raw or zstd). */
#define _GNU_SOURCE
#include "stream.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static jmp_buf jump;
    static Record rec;
    int fd = memfd_create("fuzz", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size || lseek(fd, 0, SEEK_SET) != 0) abort();
    FILE *f = fdopen(fd, "rb");
    die_jump = &jump;
    if (!setjmp(jump)) {
        StreamReader *r = sr_open(f, "fuzz");
        while (sr_next(r, &rec)) {}
        sr_close(r);
    }
    fclose(f);
    return 0;
}
