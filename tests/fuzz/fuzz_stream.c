/* libFuzzer target: the tensor stream reader on arbitrary bytes (raw or zstd). */
#include "memstream.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static jmp_buf jump;
    static StreamReader *in;
    static Record rec;
    die_jump = &jump;
    in = open_memory_stream(data, size);
    if (!setjmp(jump)) while (sr_next(in, &rec)) {}
    close_memory_stream(in);
    return 0;
}
