/* libFuzzer target: CIFAR-10 and CIFAR-100 (fine, coarse) record validation. */
#include "cifar.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static jmp_buf jump;
    die_jump = &jump;
    for (int kind = 0; kind < 3; kind++) {
        static CifarSet set;
        cifar_init(&set, kind > 0, kind == 1);
        if (!setjmp(jump)) cifar_add(&set, data, size, "fuzz");
        cifar_free(&set);
    }
    return 0;
}
