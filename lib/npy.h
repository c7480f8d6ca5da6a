/* npy.h - NumPy .npy files (format 1.0 written; 1.0-3.0 read) <-> records. */
#ifndef INCV3_NPY_H
#define INCV3_NPY_H
#include "stream.h"
/* Writes rec to f as .npy; dies on a dtype NumPy cannot hold here (bf16). */
void npy_write(FILE *f, const char *what, const Record *rec);
/* Parses an in-memory .npy file into rec (named name). Dies naming path on
 * any malformed or unsupported header. */
void npy_parse(const unsigned char *buf, size_t len, const char *path, const char *name, Record *rec);
#endif
