/* libFuzzer target: the restricted unpickler of the CIFAR python versions, data
 * batches and meta files alike (fuzz_cifar takes pickles through cifar_add too). */
#include "pickle.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static jmp_buf jump;
    static CifarPickle p;
    die_jump = &jump;
    if (!setjmp(jump)) cifar_pickle_parse(&p, data, size, "fuzz");
    cifar_pickle_free(&p);
    return 0;
}
