/* evaluate - accuracy, loss, per-class accuracy and confusion matrix from logits + y. */
#include "cifar.h"
#include "layers.h"
#include "stream.h"
#include "util.h"
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: evaluate [--names FILE] [--json] [FILE]\n"
    "Read records logits (f32 [B,K]) and y (labels [B]) and report top-1 and top-5\n"
    "accuracy, mean cross-entropy loss, per-class accuracy and the confusion matrix\n"
    "(rows: true class, columns: predicted).\n"
    "      --names FILE   class names: text, one per line (batches.meta.txt), a python-\n"
    "                     version meta file (batches.meta, meta) or a CIFAR tarball\n"
    "      --json         one JSON object instead of the table\n"
    "  -h, --help  --version\n";

int main(int argc, char **argv) {
    tool_init("evaluate", argc, argv);
    static const struct option longopts[] = {
        { "names", required_argument, 0, 'n' }, { "json", no_argument, 0, 'j' },
        { "help", no_argument, 0, 'h' }, { "version", no_argument, 0, 'V' }, { 0 } };
    const char *names_path = NULL;
    int json = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n': names_path = optarg; break;
        case 'j': json = 1; break;
        case 'h': fputs(USAGE, stdout); return 0;
        case 'V': print_version();
        default: bad_option(argv);
        }
    }
    if (argc - optind > 1) usage_die("at most one input file");
    StreamReader *in = sr_open_path(optind < argc ? argv[optind] : "-");
    Record r = { 0 }, logits = { 0 };
    int have_logits = 0, K = 0;
    long long total = 0, top1 = 0, top5 = 0, *confusion = NULL;
    double loss_sum = 0;
    while (sr_next(in, &r)) {
        if (!strcmp(r.name, "logits")) {
            record_expect(&r, DT_F32, 2, NULL);
            if (K && r.dims[1] != K) die("record 'logits' at byte %llu: %lld classes, earlier %d",
                                         (unsigned long long)r.offset, (long long)r.dims[1], K);
            if (r.dims[1] < 1 || r.dims[1] > 100000) die("record 'logits' at byte %llu: bad class count", (unsigned long long)r.offset);
            if (!K) { K = (int)r.dims[1]; confusion = xcalloc((size_t)K * K, sizeof *confusion); }
            Record t = logits; logits = r; r = t;
            have_logits = 1;
            continue;
        }
        if (strcmp(r.name, "y")) continue;
        if (!have_logits) die("record 'y' at byte %llu has no logits before it", (unsigned long long)r.offset);
        int N = (int)logits.dims[0];
        if (r.rank != 1 || r.dims[0] != N || (r.dtype != DT_I64 && r.dtype != DT_I32))
            die("record 'y' at byte %llu: expected %d labels", (unsigned long long)r.offset, N);
        int64_t *labels = xmalloc((N ? N : 1) * sizeof *labels);
        for (int n = 0; n < N; n++) {
            labels[n] = r.dtype == DT_I64 ? ((int64_t *)r.data)[n] : ((int32_t *)r.data)[n];
            if (labels[n] < 0 || labels[n] >= K)
                die("record 'y' at byte %llu: label %lld outside 0..%d", (unsigned long long)r.offset,
                    (long long)labels[n], K - 1);
        }
        loss_sum += softmax_xent(NULL, logits.data, labels, N, K, 1.0f) * N;
        const float *z = logits.data;
        for (int n = 0; n < N; n++) {
            const float *row = z + (size_t)n * K;
            int best = 0, above = 0;
            for (int k = 0; k < K; k++) {
                if (row[k] > row[best]) best = k;
                if (row[k] > row[labels[n]]) above++;
            }
            top1 += best == labels[n];
            top5 += above < 5;
            confusion[labels[n] * K + best]++;
        }
        total += N;
        free(labels);
        have_logits = 0;
    }
    sr_close(in);
    if (!total) die("no logits and labels in the input");
    char **names = xcalloc(K, sizeof *names);
    if (names_path) {       /* CIFAR-100's 20 classes are its coarse ones */
        int count;
        char **read = cifar_label_names(names_path, K == 20, &count);
        for (int k = 0; k < K && k < count; k++) names[k] = read[k];
    }
    char fallback[32];
    if (json) {
        printf("{\"images\":%lld,\"top1\":%.6f,\"top5\":%.6f,\"loss\":%.6f,\"per_class\":[", total,
               (double)top1 / total, (double)top5 / total, loss_sum / total);
        for (int k = 0; k < K; k++) {
            long long row = 0;
            for (int j = 0; j < K; j++) row += confusion[k * K + j];
            printf("%s%.6f", k ? "," : "", row ? (double)confusion[k * K + k] / row : 0.0);
        }
        printf("],\"confusion\":[");
        for (int k = 0; k < K; k++) {
            printf("%s[", k ? "," : "");
            for (int j = 0; j < K; j++) printf("%s%lld", j ? "," : "", confusion[k * K + j]);
            printf("]");
        }
        printf("]}\n");
    } else {
        printf("images %lld\ntop-1 %.2f%%\ntop-5 %.2f%%\nloss %.4f\n\nper-class accuracy:\n", total,
               100.0 * top1 / total, 100.0 * top5 / total, loss_sum / total);
        for (int k = 0; k < K; k++) {
            long long row = 0;
            for (int j = 0; j < K; j++) row += confusion[k * K + j];
            snprintf(fallback, sizeof fallback, "class %d", k);
            printf("  %-12s %6.2f%%  (%lld images)\n", names[k] ? names[k] : fallback,
                   row ? 100.0 * confusion[k * K + k] / row : 0.0, row);
        }
        if (K <= 20) {
            printf("\nconfusion (rows true, columns predicted):\n");
            for (int k = 0; k < K; k++) {
                for (int j = 0; j < K; j++) printf("%6lld", confusion[k * K + j]);
                printf("\n");
            }
        }
    }
    xfflush(stdout, "stdout");
    return 0;
}
