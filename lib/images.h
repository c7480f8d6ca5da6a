/* images.h - pictures as people keep them: a folder of class folders (torchvision's
 * ImageFolder) or image files, decoded (PNG through libpng, JPEG through
 * libjpeg-turbo), converted to RGB as PIL's convert("RGB") does and resized to S x S
 * as torchvision's Resize((S, S)) does on a PIL image: PIL's antialiased bilinear in
 * its own fixed point, so the bytes are PIL's (tests/fixtures/images/). */
#ifndef INCV3_IMAGES_H
#define INCV3_IMAGES_H
#include <stddef.h>
#include <stdint.h>

/* PIL's Image.MAX_IMAGE_PIXELS: larger images are refused before any pixel is
 * allocated (a header can claim 100,000 x 100,000). */
#define DEFAULT_MAX_PIXELS 89478485LL
/* A file larger than this is refused before it is read. */
#define MAX_IMAGE_FILE_BYTES ((size_t)1 << 30)

typedef struct {
    char **paths;           /* [count], in torchvision's order */
    int64_t *labels;        /* [count]: class index, or -1 (a file given without one) */
    size_t count, cap;
    char **classes;         /* [nclasses]: the class folders' names, sorted */
    int nclasses;
} ImageList;

/* The images of an ImageFolder root as torchvision 0.14 lists them: classes are the
 * root's folders (symbolic links followed) in sorted order, indices in that order;
 * under each, every folder met walking it (links followed) in the sorted order of
 * their paths, each one's files in sorted order (byte order: Python's for UTF-8
 * names), those whose names end in one of torchvision's image extensions
 * (any case). Dies naming the path on a root with no class folder, a class with
 * no image, a folder that cannot be read or a loop of symbolic links. */
void image_list_scan(ImageList *l, const char *root);
/* Appends one file with the given label (-1: none). */
void image_list_add(ImageList *l, const char *path, int64_t label);
void image_list_free(ImageList *l);

/* Decodes the file at path into out [3, size, size] (planar RGB, u8). Returns 0, or
 * -1 with a one-line reason in err (naming no path: the caller does). Thread-safe. */
int image_load(const char *path, int size, long long max_pixels, uint8_t *out, char *err, size_t errlen);

/* The same from a file's bytes, told PNG or JPEG by their first bytes. */
int image_decode(const unsigned char *data, size_t len, int size, long long max_pixels, uint8_t *out, char *err,
                 size_t errlen);

/* Decoded RGB (interleaved, [h, w, 3]) resized to [3, size, size] planar, as
 * PIL's Image.resize((size, size), BILINEAR) then PILToTensor. */
void image_resize(uint8_t *out, const uint8_t *rgb, int w, int h, int size);
#endif
