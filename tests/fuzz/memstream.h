/* memstream.h - the fuzzers' input as a stream reader, as a tool would open it. */
#define _GNU_SOURCE
#include "stream.h"
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static FILE *memory_file;

static StreamReader *open_memory_stream(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size || lseek(fd, 0, SEEK_SET) != 0) abort();
    if (!(memory_file = fdopen(fd, "rb"))) abort();
    return sr_open(memory_file, "fuzz");
}

static void close_memory_stream(StreamReader *r) {
    sr_close(r);
    fclose(memory_file);
}
