/* libFuzzer target: PNG and JPEG decoding, conversion to RGB and resizing (image-decode). */
#include "images.h"
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint8_t out[3 * 48 * 48];
    char err[256];
    /* a pixel limit that keeps one decoded image within a few MB */
    image_decode(data, size, 32, 1 << 20, out, err, sizeof err);
    image_decode(data, size, 48, 1 << 20, out, err, sizeof err);
    return 0;
}
