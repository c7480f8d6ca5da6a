/* images.c - see images.h. */
#include "images.h"
#include "util.h"
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jpeglib.h>
#include <jerror.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------- the folder as torchvision's ImageFolder lists it ---------------- */

/* torchvision.datasets.folder.IMG_EXTENSIONS */
static const char *const EXTENSIONS[] = { ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp" };

static int has_image_extension(const char *name) {
    size_t n = strlen(name);
    for (size_t e = 0; e < sizeof EXTENSIONS / sizeof *EXTENSIONS; e++) {
        size_t m = strlen(EXTENSIONS[e]);
        if (n < m) continue;
        size_t i = 0;
        while (i < m && tolower((unsigned char)name[n - m + i]) == EXTENSIONS[e][i]) i++;
        if (i == m) return 1;
    }
    return 0;
}

typedef struct { char **s; size_t n, cap; } Strings;

static void strings_push(Strings *l, char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->s = xrealloc(l->s, l->cap * sizeof *l->s);
    }
    l->s[l->n++] = s;
}

static void strings_free(Strings *l) {
    for (size_t i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
}

/* strcmp orders as unsigned bytes: Python's order of str for UTF-8 names */
static int by_bytes(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = xmalloc(a + b + 2);
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* The entries of dir, sorted: folders (symbolic links followed, as os.scandir's
 * is_dir()) and the rest (files, and links that lead nowhere). */
static void read_folder(const char *dir, Strings *dirs, Strings *files) {
    DIR *d = opendir(dir);
    if (!d) die("%s: cannot read the folder: %s", shown_name(dir), strerror(errno));
    struct dirent *e;
    while ((errno = 0, e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *path = join(dir, e->d_name);
        struct stat st;
        int is_dir = !stat(path, &st) && S_ISDIR(st.st_mode);
        free(path);
        if (is_dir) strings_push(dirs, xstrdup(e->d_name));
        else if (files) strings_push(files, xstrdup(e->d_name));
    }
    if (errno) die("%s: cannot read the folder: %s", shown_name(dir), strerror(errno));
    closedir(d);
    if (dirs->n > 1) qsort(dirs->s, dirs->n, sizeof *dirs->s, by_bytes);
    if (files && files->n > 1) qsort(files->s, files->n, sizeof *files->s, by_bytes);
}

/* The folders on the way down, to tell a loop of links from a deep tree. */
typedef struct Visit { dev_t dev; ino_t ino; const char *path; const struct Visit *up; } Visit;

/* Every folder under dir, itself first, links followed (os.walk(followlinks=True)). */
static void walk(const char *dir, const Visit *up, Strings *all) {
    struct stat st;
    if (stat(dir, &st)) die("%s: %s", shown_name(dir), strerror(errno));
    for (const Visit *v = up; v; v = v->up)
        if (v->dev == st.st_dev && v->ino == st.st_ino)
            die("%s: a loop of symbolic links (it is %s again)", shown_name(dir), shown_name(v->path));
    Visit here = { st.st_dev, st.st_ino, dir, up };
    strings_push(all, xstrdup(dir));
    Strings subs = { 0 };
    read_folder(dir, &subs, NULL);
    for (size_t i = 0; i < subs.n; i++) {
        char *sub = join(dir, subs.s[i]);
        walk(sub, &here, all);
        free(sub);
    }
    strings_free(&subs);
}

void image_list_add(ImageList *l, const char *path, int64_t label) {
    if (l->count == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->paths = xrealloc(l->paths, l->cap * sizeof *l->paths);
        l->labels = xrealloc(l->labels, l->cap * sizeof *l->labels);
    }
    l->paths[l->count] = xstrdup(path);
    l->labels[l->count++] = label;
}

void image_list_scan(ImageList *l, const char *root) {
    struct stat st;
    if (stat(root, &st)) die("%s: %s", shown_name(root), strerror(errno));
    if (!S_ISDIR(st.st_mode)) die("%s: not a folder (an ImageFolder root holds a folder per class)", shown_name(root));
    Strings classes = { 0 };
    read_folder(root, &classes, NULL);
    if (!classes.n) die("%s: no class folders (an ImageFolder root holds ROOT/CLASS/IMAGE)", shown_name(root));
    if (classes.n > 100000) die("%s: %zu class folders, over the 100000 a model can have", shown_name(root), classes.n);
    for (size_t c = 0; c < classes.n; c++) {
        char *class_dir = join(root, classes.s[c]);
        Strings folders = { 0 };
        walk(class_dir, NULL, &folders);
        /* sorted(os.walk(...)) orders the folders by their whole paths */
        if (folders.n > 1) qsort(folders.s, folders.n, sizeof *folders.s, by_bytes);
        size_t before = l->count;
        for (size_t f = 0; f < folders.n; f++) {
            Strings subs = { 0 }, files = { 0 };
            read_folder(folders.s[f], &subs, &files);
            for (size_t i = 0; i < files.n; i++) {
                if (!has_image_extension(files.s[i])) continue;
                char *path = join(folders.s[f], files.s[i]);
                image_list_add(l, path, (int64_t)c);
                free(path);
            }
            strings_free(&subs);
            strings_free(&files);
        }
        if (l->count == before)
            die("%s: class '%s' has no images (.png, .jpg or .jpeg; torchvision also lists "
                ".ppm .bmp .pgm .tif .tiff .webp)", shown_name(class_dir), shown_name(classes.s[c]));
        strings_free(&folders);
        free(class_dir);
    }
    l->classes = classes.s;
    l->nclasses = (int)classes.n;
}

void image_list_free(ImageList *l) {
    for (size_t i = 0; i < l->count; i++) free(l->paths[i]);
    for (int c = 0; c < l->nclasses; c++) free(l->classes[c]);
    free(l->paths); free(l->labels); free(l->classes);
    *l = (ImageList){ 0 };
}

/* ---------------- PIL's resize: antialiased bilinear in fixed point ---------------- */

#define PRECISION_BITS (32 - 8 - 2)

static double bilinear(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* For each output position: the first input read, how many, and their weights in
 * PIL's fixed point (Resample.c's precompute_coeffs and normalize_coeffs_8bpc). */
static int coefficients(int in_size, int out_size, int **bounds_out, int32_t **k_out) {
    double scale = (double)(float)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    int *bounds = xmalloc(2 * (size_t)out_size * sizeof *bounds);
    int32_t *k = xmalloc((size_t)out_size * ksize * sizeof *k);
    double *w = xmalloc(ksize * sizeof *w);
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax;
        if (xmin < 0) xmin = 0;
        xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            w[x] = bilinear((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? w[x] / ww : w[x]) : 0.0;
            k[xx * ksize + x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                                      : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    free(w);
    *bounds_out = bounds;
    *k_out = k;
    return ksize;
}

static uint8_t clip8(int32_t v) {
    v >>= PRECISION_BITS;
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

void image_resize(uint8_t *out, const uint8_t *rgb, int w, int h, int size) {
    int *xb = NULL, *yb = NULL;
    int32_t *xk = NULL, *yk = NULL;
    int yks = coefficients(h, size, &yb, &yk);
    /* PIL resamples across first (only the rows the vertical pass reads), then down */
    const uint8_t *src = rgb;
    uint8_t *across = NULL;
    int first = 0, rows = h;
    if (w != size) {
        int xks = coefficients(w, size, &xb, &xk);
        first = yb[0];
        rows = yb[2 * size - 2] + yb[2 * size - 1] - first;
        across = xmalloc((size_t)rows * size * 3);
        for (int y = 0; y < rows; y++) {
            const uint8_t *line = rgb + (size_t)(y + first) * w * 3;
            for (int xx = 0; xx < size; xx++) {
                const int32_t *k = xk + (size_t)xx * xks;
                const uint8_t *p = line + (size_t)xb[2 * xx] * 3;
                int n = xb[2 * xx + 1];
                int32_t r = 1 << (PRECISION_BITS - 1), g = r, bl = r;
                for (int x = 0; x < n; x++, p += 3) {
                    r += p[0] * k[x];
                    g += p[1] * k[x];
                    bl += p[2] * k[x];
                }
                uint8_t *o = across + ((size_t)y * size + xx) * 3;
                o[0] = clip8(r); o[1] = clip8(g); o[2] = clip8(bl);
            }
        }
        src = across;
        w = size;
    }
    for (int yy = 0; yy < size; yy++) {
        const int32_t *k = yk + (size_t)yy * yks;
        int ymin = yb[2 * yy] - first, n = yb[2 * yy + 1];
        for (int xx = 0; xx < size; xx++)
            for (int c = 0; c < 3; c++) {
                uint8_t v;
                if (h == size) {
                    v = src[((size_t)yy * w + xx) * 3 + c];
                } else {
                    int32_t ss = 1 << (PRECISION_BITS - 1);
                    for (int y = 0; y < n; y++) ss += src[((size_t)(y + ymin) * w + xx) * 3 + c] * k[y];
                    v = clip8(ss);
                }
                out[((size_t)c * size + yy) * size + xx] = v;
            }
    }
    free(across); free(xb); free(xk); free(yb); free(yk);
}

/* ---------------- decoding, as PIL decodes and converts to RGB ---------------- */

typedef struct { char *msg; size_t len; } Err;

static int fail(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(Err *e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, e->len, fmt, ap);
    va_end(ap);
    return -1;
}

static int too_many_pixels(Err *e, long long w, long long h, long long max) {
    if (w * h <= max) return 0;
    return fail(e, "%lld x %lld pixels, over the limit of %lld (--max-pixels)", w, h, max);
}

typedef struct {
    jmp_buf jump;
    Err *err;
    const unsigned char *data;
    size_t len, at;
} PngSource;

static void png_fail(png_structp p, png_const_charp msg) {
    PngSource *s = png_get_error_ptr(p);
    fail(s->err, "corrupt PNG: %s", msg);
    longjmp(s->jump, 1);
}
static void png_quiet(png_structp p, png_const_charp msg) { (void)p; (void)msg; }
static void png_read_memory(png_structp p, png_bytep out, size_t n) {
    PngSource *s = png_get_io_ptr(p);
    if (n > s->len - s->at) png_error(p, "the file ends inside the image (truncated)");
    memcpy(out, s->data + s->at, n);
    s->at += n;
}

/* PIL keeps 16-bit grey as 32-bit integers and convert("RGB") clips them to 255;
 * every other 16-bit image it takes by its high bytes. Alpha is dropped, not
 * composited; a palette's transparency is ignored. */
static int decode_png(const unsigned char *data, size_t len, long long max_pixels, uint8_t **rgb, int *w,
                      int *h, Err *err) {
    PngSource src = { .err = err, .data = data, .len = len };
    png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_fail, png_quiet);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    if (!info) {
        png_destroy_read_struct(&p, NULL, NULL);
        return fail(err, "out of memory");
    }
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(src.jump)) {
        png_destroy_read_struct(&p, &info, NULL);
        free(pixels); free(rows);
        return -1;
    }
    png_set_read_fn(p, &src, png_read_memory);
    png_set_user_limits(p, 0x7fffffff, 0x7fffffff);
    png_read_info(p, info);
    png_uint_32 width = png_get_image_width(p, info), height = png_get_image_height(p, info);
    int depth = png_get_bit_depth(p, info), type = png_get_color_type(p, info);
    if (too_many_pixels(err, width, height, max_pixels)) longjmp(src.jump, 1);
    int grey16 = type == PNG_COLOR_TYPE_GRAY && depth == 16;
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(p);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(p);
    if (depth == 16 && !grey16) png_set_strip_16(p);
    if (grey16) png_set_swap(p);                 /* host order: read as uint16 */
    png_set_strip_alpha(p);
    png_set_interlace_handling(p);
    png_read_update_info(p, info);
    size_t row_bytes = png_get_rowbytes(p, info);
    int channels = png_get_channels(p, info);
    pixels = xmalloc(row_bytes * height);
    rows = xmalloc(height * sizeof *rows);
    for (png_uint_32 y = 0; y < height; y++) rows[y] = pixels + y * row_bytes;
    png_read_image(p, rows);
    png_destroy_read_struct(&p, &info, NULL);
    free(rows);
    uint8_t *out = xmalloc((size_t)width * height * 3);
    for (png_uint_32 y = 0; y < height; y++)
        for (png_uint_32 x = 0; x < width; x++) {
            uint8_t *o = out + ((size_t)y * width + x) * 3;
            if (grey16) {
                uint16_t v = ((const uint16_t *)(pixels + y * row_bytes))[x];
                o[0] = o[1] = o[2] = v > 255 ? 255 : (uint8_t)v;
            } else if (channels == 1) {
                o[0] = o[1] = o[2] = pixels[y * row_bytes + x];
            } else {
                memcpy(o, pixels + y * row_bytes + (size_t)x * channels, 3);
            }
        }
    free(pixels);
    *rgb = out; *w = (int)width; *h = (int)height;
    return 0;
}

typedef struct {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    Err *err;
} JpegErrors;

static void jpeg_fail(j_common_ptr c) {
    JpegErrors *e = (JpegErrors *)c->err;
    char msg[JMSG_LENGTH_MAX];
    c->err->format_message(c, msg);
    fail(e->err, "corrupt JPEG: %s", msg);
    longjmp(e->jump, 1);
}

/* Warnings pass, as in PIL, but for the end of the data inside the image:
 * PIL refuses a truncated image. */
static void jpeg_warning(j_common_ptr c, int level) {
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) {
        JpegErrors *e = (JpegErrors *)c->err;
        fail(e->err, "the file ends inside the image (truncated JPEG)");
        longjmp(e->jump, 1);
    }
}

/* PIL's CMYK to RGB (Convert.c's cmyk2rgb), after it inverts Adobe's CMYK. */
static uint8_t cmyk_channel(int c, int nk) {
    int t = c * nk + 128;
    int v = nk - (((t >> 8) + t) >> 8);
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

static int decode_jpeg(const unsigned char *data, size_t len, long long max_pixels, uint8_t **rgb, int *w,
                       int *h, Err *err) {
    struct jpeg_decompress_struct c;
    JpegErrors e;
    c.err = jpeg_std_error(&e.mgr);
    e.mgr.error_exit = jpeg_fail;
    e.mgr.emit_message = jpeg_warning;
    e.err = err;
    uint8_t *volatile out = NULL, *volatile line = NULL;
    jpeg_create_decompress(&c);
    if (setjmp(e.jump)) {
        jpeg_destroy_decompress(&c);
        free(out); free(line);
        return -1;
    }
    jpeg_mem_src(&c, data, len);
    jpeg_read_header(&c, TRUE);
    if (too_many_pixels(err, c.image_width, c.image_height, max_pixels)) longjmp(e.jump, 1);
    int cmyk = c.jpeg_color_space == JCS_CMYK || c.jpeg_color_space == JCS_YCCK;
    c.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(&c);
    size_t W = c.output_width, H = c.output_height, comps = c.output_components;
    out = xmalloc(W * H * 3);
    line = xmalloc(W * comps);
    while (c.output_scanline < H) {
        size_t y = c.output_scanline;
        JSAMPROW row = line;
        jpeg_read_scanlines(&c, &row, 1);
        for (size_t x = 0; x < W; x++) {
            uint8_t *o = out + (y * W + x) * 3;
            const uint8_t *i = line + x * comps;
            if (!cmyk) { memcpy(o, i, 3); continue; }
            int nk = i[3];          /* 255 - K, where PIL's K is the file's inverted */
            for (int k = 0; k < 3; k++) o[k] = cmyk_channel(255 - i[k], nk);
        }
    }
    jpeg_destroy_decompress(&c);
    free(line);
    *rgb = out; *w = (int)W; *h = (int)H;
    return 0;
}

/* What the first bytes say a file is, for the formats torchvision's extensions name. */
static const char *other_format(const unsigned char *b, size_t n) {
    if (n >= 2 && b[0] == 'B' && b[1] == 'M') return "BMP";
    if (n >= 4 && (!memcmp(b, "II*\0", 4) || !memcmp(b, "MM\0*", 4))) return "TIFF";
    if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4)) return "WebP";
    if (n >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6') return "PPM/PGM";
    if (n >= 4 && !memcmp(b, "GIF8", 4)) return "GIF";
    return NULL;
}

int image_load(const char *path, int size, long long max_pixels, uint8_t *out, char *errbuf, size_t errlen) {
    Err err = { errbuf, errlen };
    FILE *f = fopen(path, "rb");
    if (!f) return fail(&err, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fail(&err, "not a regular file");
    }
    if (st.st_size == 0) { fclose(f); return fail(&err, "an empty file, not an image"); }
    if ((uint64_t)st.st_size > MAX_IMAGE_FILE_BYTES) {
        fclose(f);
        return fail(&err, "%lld bytes, over the %zu an image file may have", (long long)st.st_size,
                    MAX_IMAGE_FILE_BYTES);
    }
    size_t len = (size_t)st.st_size;
    unsigned char *data = malloc(len);
    if (!data) { fclose(f); return fail(&err, "out of memory for %zu bytes", len); }
    size_t got = fread(data, 1, len, f);
    int read_error = ferror(f);
    fclose(f);
    if (read_error || got != len) { free(data); return fail(&err, "cannot read: %s", strerror(errno)); }
    int r = image_decode(data, len, size, max_pixels, out, errbuf, errlen);
    free(data);
    return r;
}

int image_decode(const unsigned char *data, size_t len, int size, long long max_pixels, uint8_t *out, char *errbuf,
                 size_t errlen) {
    Err err = { errbuf, errlen };
    static const unsigned char PNG_MAGIC[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    uint8_t *rgb = NULL;
    int w = 0, h = 0, r;
    if (len >= 8 && !memcmp(data, PNG_MAGIC, 8)) r = decode_png(data, len, max_pixels, &rgb, &w, &h, &err);
    else if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        r = decode_jpeg(data, len, max_pixels, &rgb, &w, &h, &err);
    else if (other_format(data, len))
        r = fail(&err, "a %s image: incv3 decodes PNG and JPEG only", other_format(data, len));
    else r = fail(&err, "not an image (neither PNG nor JPEG)");
    if (r) return r;
    if (w < 1 || h < 1) { free(rgb); return fail(&err, "an image of no pixels"); }
    image_resize(out, rgb, w, h, size);
    free(rgb);
    return 0;
}
