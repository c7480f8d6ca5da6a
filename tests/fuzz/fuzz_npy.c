/* libFuzzer target: .npy import (tensor import), header dict and payload size. */
#include "npy.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static jmp_buf jump;
    static Record rec;
    die_jump = &jump;
    if (!setjmp(jump)) npy_parse(data, size, "fuzz", "x", &rec);
    record_free(&rec);
    return 0;
}
