/* metrics.c - see metrics.h. */
#include "metrics.h"
#include "layers.h"
#include "model.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void add_batch(Metrics *m, const Record *logits, const Record *y) {
    int64_t N = logits->dims[0];
    int K = m->K;
    if (y->rank != 1 || y->dims[0] != N || (y->dtype != DT_I64 && y->dtype != DT_I32))
        die("record 'y' at byte %llu: expected %lld labels (i64 or i32) for the logits before it",
            (unsigned long long)y->offset, (long long)N);
    const float *z = logits->data;
    for (int64_t n = 0; n < N; n++) {
        int64_t label = y->dtype == DT_I64 ? ((const int64_t *)y->data)[n] : ((const int32_t *)y->data)[n];
        if (label == -1)
            die("record 'y' at byte %llu: image %lld has no label (-1): evaluate --predict says what the"
                " model sees in it", (unsigned long long)y->offset, (long long)n);
        if (label < 0 || label >= K)
            die("record 'y' at byte %llu: label %lld outside 0..%d", (unsigned long long)y->offset,
                (long long)label, K - 1);
        const float *row = z + n * K;
        int best = 0, above = 0, finite = 1;
        for (int k = 0; k < K; k++) {
            finite &= isfinite(row[k]);
            if (row[k] > row[best]) best = k;
            if (row[k] > row[label]) above++;
        }
        if (finite) m->loss_sum += softmax_xent(NULL, row, &label, NULL, 1, K, 0, 1.0f);
        else m->nonfinite++;
        m->top1 += best == label;
        m->top5 += above < 5;
        m->count[label]++;
        m->correct[label] += best == label;
        if (m->confusion) m->confusion[label * K + best]++;
    }
    m->images += N;
}

void metrics_read(Metrics *m, StreamReader *in) {
    Record *r = &m->next, *logits = &m->logits;
    int have_logits = 0;
    while (sr_next(in, r)) {
        if (!strcmp(r->name, "logits")) {
            if (have_logits) die("record 'logits' at byte %llu: the logits before it have no y",
                                 (unsigned long long)r->offset);
            record_expect(r, DT_F32, 2, NULL);
            if (m->K && r->dims[1] != m->K) die("record 'logits' at byte %llu: %lld classes, earlier %d",
                                               (unsigned long long)r->offset, (long long)r->dims[1], m->K);
            if (r->dims[1] < 1 || r->dims[1] > MAX_CLASSES)
                die("record 'logits' at byte %llu: %lld classes (1 to %d)", (unsigned long long)r->offset,
                    (long long)r->dims[1], MAX_CLASSES);
            if (!m->K) {
                m->K = (int)r->dims[1];
                m->count = xcalloc(m->K, sizeof *m->count);
                m->correct = xcalloc(m->K, sizeof *m->correct);
                if (m->K <= MAX_CONFUSION_CLASSES) m->confusion = xcalloc((size_t)m->K * m->K, sizeof *m->confusion);
            }
            record_swap(logits, r);
            have_logits = 1;
            continue;
        }
        if (!strcmp(r->name, "names")) {
            names_free(m->names);
            m->names = record_names(r, &m->nnames);
            continue;
        }
        if (!strcmp(r->name, "soft")) {     /* scored against y, once said */
            if (!m->soft_batches++)
                fprintf(stderr, "%s: note: soft targets (record 'soft', MixUp/CutMix) are not scored;"
                        " accuracy and loss are against the labels y\n", tool_name);
            continue;
        }
        if (strcmp(r->name, "y")) continue;
        if (!have_logits) die("record 'y' at byte %llu has no logits before it", (unsigned long long)r->offset);
        add_batch(m, logits, r);
        have_logits = 0;
    }
    if (have_logits) die("record 'logits' at byte %llu has no y after it", (unsigned long long)logits->offset);
}

static double mean_loss(const Metrics *m) {
    long long finite = m->images - m->nonfinite;
    return m->nonfinite || !finite ? NAN : m->loss_sum / finite;
}

void metrics_print(const Metrics *m, char *const *names, int json) {
    int K = m->K;
    double loss = mean_loss(m);
    if (json) {
        printf("{\"images\":%lld,\"top1\":%.6f,\"top5\":%.6f,", m->images, (double)m->top1 / m->images,
               (double)m->top5 / m->images);
        if (isfinite(loss)) printf("\"loss\":%.6f,", loss);
        else printf("\"loss\":null,");
        printf("\"nonfinite\":%lld,\"per_class\":[", m->nonfinite);
        for (int k = 0; k < K; k++)
            printf("%s%.6f", k ? "," : "", m->count[k] ? (double)m->correct[k] / m->count[k] : 0.0);
        printf("]");
        if (m->confusion) {
            printf(",\"confusion\":[");
            for (int k = 0; k < K; k++) {
                printf("%s[", k ? "," : "");
                for (int j = 0; j < K; j++) printf("%s%lld", j ? "," : "", m->confusion[k * K + j]);
                printf("]");
            }
            printf("]");
        }
        printf("}\n");
        return;
    }
    printf("images %lld\ntop-1 %.2f%%\ntop-5 %.2f%%\n", m->images, 100.0 * m->top1 / m->images,
           100.0 * m->top5 / m->images);
    if (m->nonfinite) printf("loss undefined (%lld images with NaN or infinite logits)\n", m->nonfinite);
    else printf("loss %.4f\n", loss);
    printf("\nper-class accuracy:\n");
    char fallback[32];
    for (int k = 0; k < K; k++) {
        snprintf(fallback, sizeof fallback, "class %d", k);
        printf("  %-12s %6.2f%%  (%lld images)\n", names && names[k] ? names[k] : fallback,
               m->count[k] ? 100.0 * m->correct[k] / m->count[k] : 0.0, m->count[k]);
    }
    if (m->confusion) {
        printf("\nconfusion (rows true, columns predicted):\n");
        for (int k = 0; k < K; k++) {
            for (int j = 0; j < K; j++) printf("%6lld", m->confusion[k * K + j]);
            printf("\n");
        }
    }
}

void metrics_free(Metrics *m) {
    record_free(&m->logits);
    record_free(&m->next);
    free(m->count);
    free(m->correct);
    free(m->confusion);
    names_free(m->names);
    *m = (Metrics){ 0 };
}
