/* exchange.h - a data-parallel worker's side of the exchange with allreduce-merge.
 *
 * Per step: the gradients go out in buckets while backward is still running - a
 * bucket as soon as all of it is final, from the end of the parameters (the head,
 * whose gradients backward makes first) to the start - and a thread of their own
 * takes the means back as the merger returns them; after backward, the worker waits
 * for the last bucket, then exchanges the BN running statistics and the metrics.
 * Every bucket is reduced element by element in worker order, as the whole
 * gradient was: bucketing changes when sums travel, never their bits. */
#ifndef INCV3_EXCHANGE_H
#define INCV3_EXCHANGE_H
#include "model.h"

typedef struct Exchange Exchange;

/* spec "OUT,IN": the stream to the merger and the one back. bucket_mb 0 sends the
 * whole gradient as one bucket after backward (no overlap). */
Exchange *exchange_open(const char *spec, Model *m, double bucket_mb);
/* Before model_train_step: arms the model's grads_ready hook for this step. */
void exchange_step_begin(Exchange *e);
/* After it: every bucket's mean is back in m->grads, and the BN statistics and the
 * n metrics are averaged in place. */
void exchange_step_end(Exchange *e, float *metrics, size_t n);
/* Hangs up and waits for the merger's end of stream. */
void exchange_close(Exchange *e);
#endif
