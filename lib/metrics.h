/* metrics.h - what evaluate reports: accuracy, loss and the confusion of classes,
 * accumulated over the logits and y records of a stream. */
#ifndef INCV3_METRICS_H
#define INCV3_METRICS_H
#include "stream.h"

/* The confusion matrix is kept (and printed) up to this many classes: past it, a
 * table of K x K counts is more memory and text than anyone reads. */
#define MAX_CONFUSION_CLASSES 20

typedef struct {
    int K;                          /* classes, from the first logits record */
    long long images, top1, top5;
    long long nonfinite;            /* images whose logits hold NaN or Inf: no finite loss */
    long long soft_batches;         /* soft-target records passed over (said once) */
    double loss_sum;                /* over images with finite logits */
    long long *count, *correct;     /* [K]: images of each true class, and those right */
    long long *confusion;           /* [K][K] rows true, columns predicted; NULL past the limit */
    Record logits, next;            /* while reading: the logits waiting for their y, the next record */
    char **names;                   /* the stream's class names (record names), or NULL */
    int nnames;
} Metrics;

/* Reads every logits [B,K] record and the y [B] after it, and the class names of a
 * record names (the last one); other records pass.
 * Dies naming the record and byte offset on anything malformed: a y without
 * logits, logits without their y, labels out of range, the class count changing. */
void metrics_read(Metrics *m, StreamReader *in);
/* The table, or one JSON object (loss null when it is not finite); names[k] may be NULL. */
void metrics_print(const Metrics *m, char *const *names, int json);
void metrics_free(Metrics *m);
#endif
