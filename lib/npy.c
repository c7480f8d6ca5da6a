/* npy.c - see npy.h. The header is a Python dict literal; we accept exactly the
 * keys NumPy writes and the little-endian dtypes of the stream. */
#include "npy.h"
#include "util.h"
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static const char *npy_descr(int dtype) {
    switch (dtype) {
    case DT_U8: return "|u1";
    case DT_I32: return "<i4";
    case DT_I64: return "<i8";
    case DT_F32: return "<f4";
    default: return NULL;
    }
}

void npy_write(FILE *f, const char *what, const Record *rec) {
    const char *descr = npy_descr(rec->dtype);
    if (!descr) die("record '%s': dtype %s has no .npy equivalent", rec->name, dtype_name(rec->dtype));
    char dict[512], shape[256] = "";
    size_t n = 0;
    for (int i = 0; i < rec->rank; i++)
        n += snprintf(shape + n, sizeof shape - n, "%lld,%s", (long long)rec->dims[i],
                      i + 1 < rec->rank ? " " : "");
    if (rec->rank > 1) shape[n - 1] = 0;    /* (a, b) but (a,) for one dim */
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                       descr, shape);
    int total = 10 + len + 1, pad = (64 - total % 64) % 64;   /* header ends on 64 bytes */
    unsigned char pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0 };
    int hlen = len + pad + 1;
    pre[8] = hlen & 0xff; pre[9] = hlen >> 8;
    xfwrite(pre, 10, f, what);
    xfwrite(dict, len, f, what);
    for (int i = 0; i < pad; i++) xfwrite(" ", 1, f, what);
    xfwrite("\n", 1, f, what);
    xfwrite(rec->data, rec->nbytes, f, what);
}

/* ---- strict reader of the header dict ---- */

typedef struct { const char *p, *end, *path; } Cursor;

static void skip_ws(Cursor *c) { while (c->p < c->end && (*c->p == ' ' || *c->p == '\n')) c->p++; }

static void expect(Cursor *c, char ch) {
    skip_ws(c);
    if (c->p >= c->end || *c->p != ch) die("%s: malformed .npy header (expected '%c')", c->path, ch);
    c->p++;
}

static int peek(Cursor *c, char ch) { skip_ws(c); return c->p < c->end && *c->p == ch; }

static void read_str(Cursor *c, char *out, size_t n) {
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) die("%s: malformed .npy header (expected a string)", c->path);
    char q = *c->p++;
    size_t k = 0;
    while (c->p < c->end && *c->p != q) {
        if (k + 1 >= n) die("%s: malformed .npy header (string too long)", c->path);
        out[k++] = *c->p++;
    }
    if (c->p >= c->end) die("%s: malformed .npy header (unterminated string)", c->path);
    c->p++;
    out[k] = 0;
}

void npy_parse(const unsigned char *buf, size_t len, const char *path, const char *name, Record *rec) {
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6)) die("%s: not a .npy file (bad magic)", path);
    int major = buf[6];
    size_t hlen, start;
    if (major == 1) { hlen = buf[8] | (size_t)buf[9] << 8; start = 10; }
    else if (major == 2 || major == 3) {
        if (len < 12) die("%s: truncated .npy header", path);
        hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        start = 12;
    } else die("%s: unsupported .npy version %d", path, major);
    if (hlen > len - start) die("%s: truncated .npy header", path);
    Cursor c = { (const char *)buf + start, (const char *)buf + start + hlen, path };
    int dtype = -1, fortran = -1, rank = -1;
    int64_t dims[MAX_RANK];
    expect(&c, '{');
    while (!peek(&c, '}')) {
        char key[32], val[32];
        read_str(&c, key, sizeof key);
        expect(&c, ':');
        if (!strcmp(key, "descr")) {
            read_str(&c, val, sizeof val);
            for (int d = DT_U8; d < DT_COUNT; d++)
                if (npy_descr(d) && !strcmp(val, npy_descr(d))) dtype = d;
            if (!strcmp(val, "<u1")) dtype = DT_U8;
            if (dtype < 0) die("%s: unsupported .npy dtype '%s' (u1, i4, i8, f4 little-endian)", path, val);
        } else if (!strcmp(key, "fortran_order")) {
            skip_ws(&c);
            if (c.end - c.p >= 5 && !memcmp(c.p, "False", 5)) { fortran = 0; c.p += 5; }
            else if (c.end - c.p >= 4 && !memcmp(c.p, "True", 4)) { fortran = 1; c.p += 4; }
            else die("%s: malformed .npy header (fortran_order)", path);
        } else if (!strcmp(key, "shape")) {
            expect(&c, '(');
            rank = 0;
            while (!peek(&c, ')')) {
                skip_ws(&c);
                if (rank == MAX_RANK) die("%s: .npy array has more than %d dimensions", path, MAX_RANK);
                /* digits within the header only: strtoll would read past its end */
                int64_t d = 0;
                const char *start_digits = c.p;
                for (; c.p < c.end && *c.p >= '0' && *c.p <= '9'; c.p++)
                    if (__builtin_mul_overflow(d, 10, &d) || __builtin_add_overflow(d, *c.p - '0', &d))
                        die("%s: .npy dimension overflows", path);
                if (c.p == start_digits) die("%s: malformed .npy shape", path);
                dims[rank++] = d;
                if (!peek(&c, ',')) break;
                c.p++;
            }
            expect(&c, ')');
        } else die("%s: unexpected key '%s' in .npy header", path, key);
        if (!peek(&c, ',')) break;
        c.p++;
    }
    expect(&c, '}');
    if (dtype < 0 || fortran < 0 || rank < 0) die("%s: .npy header lacks descr, fortran_order or shape", path);
    if (fortran) die("%s: Fortran-order .npy arrays are not supported", path);
    uint64_t nelem = 1, nbytes;
    for (int i = 0; i < rank; i++)
        if (__builtin_mul_overflow(nelem, (uint64_t)dims[i], &nelem)) die("%s: .npy shape overflows", path);
    if (__builtin_mul_overflow(nelem, (uint64_t)dtype_size(dtype), &nbytes) || nbytes > MAX_RECORD_BYTES)
        die("%s: .npy array is too large", path);
    size_t data = start + hlen;
    if (len - data != nbytes)
        die("%s: .npy data has %zu bytes, the header says %llu", path, len - data, (unsigned long long)nbytes);
    record_shape(rec, name, dtype, rank, dims);
    if (nbytes) memcpy(rec->data, buf + data, nbytes);
}
