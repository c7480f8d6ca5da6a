/* libFuzzer target: the restricted unpickler of the CIFAR python versions, as a
 * data batch (every CIFAR format) and as a meta file (label names). */
#include "cifar.h"
#include "pickle.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static jmp_buf jump;
    die_jump = &jump;
    static CifarPickle p;
    if (!setjmp(jump)) cifar_pickle_parse(&p, data, size, "fuzz");
    cifar_pickle_free(&p);
    for (int kind = 0; kind < 3; kind++) {
        static CifarSet set;
        cifar_init(&set, kind > 0, kind == 1);
        if (!setjmp(jump)) cifar_add(&set, data, size, "fuzz");
        cifar_free(&set);
    }
    return 0;
}
