/* libFuzzer target: checkpoint loading (config record, tensors, momentum). */
#include "checkpoint.h"
#include "memstream.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static jmp_buf jump;
    static StreamReader *in;
    static Model *m;
    die_jump = &jump;
    in = open_memory_stream(data, size);
    m = NULL;
    TrainState st;
    if (!setjmp(jump)) m = checkpoint_read(in, "fuzz", &st);
    model_free(m);
    close_memory_stream(in);
    return 0;
}
