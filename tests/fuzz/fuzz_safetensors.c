/* libFuzzer target: the safetensors reader (header, offsets, names, shapes),
 * building a small-width model from what it accepts. */
#include "checkpoint.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static jmp_buf jump;
    die_jump = &jump;
    if (!setjmp(jump)) {
        Model *m = safetensors_parse(data, size, "fuzz", 0.0625, 0, 1);
        model_free(m);
    }
    return 0;
}
