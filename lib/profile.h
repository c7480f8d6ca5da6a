/* profile.h - where a training step's time goes, by layer kind (exclusive time:
 * im2col inside a convolution counts as im2col, not as that convolution), and
 * how much of each kind is GEMM: what a faster GEMM engine could still win, and
 * what only fewer passes over memory can. */
#ifndef INCV3_PROFILE_H
#define INCV3_PROFILE_H
#include <stdio.h>

enum {
    PROF_CONV_1X1, PROF_CONV_3X3, PROF_CONV_5X5, PROF_CONV_1X7, PROF_CONV_1X3, PROF_CONV_OTHER,
    PROF_IM2COL, PROF_BN_RELU, PROF_POOL, PROF_HEAD, PROF_OPTIMIZER, PROF_INPUT, PROF_STREAM_IO,
    PROF_EXCHANGE, PROF_COUNT
};

extern int prof_enabled;
void prof_push(int kind);
void prof_pop(void);
/* Adds a GEMM's seconds to the kind open now. A GEMM inside a parallel region
 * counts its time over the team's size: the threads run side by side. */
void prof_gemm(double seconds);
/* The kind of a convolution by its kernel. */
int prof_conv_kind(int kh, int kw);
/* One JSON object: per kind [seconds, share, of them in GEMMs]; gemm_share. */
void prof_report(FILE *f);
#endif
