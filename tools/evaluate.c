/* evaluate - accuracy, loss, per-class accuracy and confusion matrix from logits + y;
 * or, with --predict, each image's most likely classes. */
#include "cifar.h"
#include "metrics.h"
#include "util.h"
#include <cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: evaluate [--names FILE] [--json] [FILE]\n"
    "       evaluate --predict N [--names FILE] [--json] [FILE]\n"
    "Read records logits (f32 [B,K]) and y (labels [B]) and report top-1 and top-5\n"
    "accuracy, mean cross-entropy loss, per-class accuracy and the confusion matrix\n"
    "(rows: true class, columns: predicted; up to 20 classes). Images whose logits are\n"
    "NaN or infinite count in the accuracies, not in the loss (then undefined: null in JSON).\n"
    "Class names come from --names, else from the stream's record names (the model's,\n"
    "written by incv3-step --eval, or the data's), else they are numbered.\n"
    "      --names FILE   class names: text, one per line (batches.meta.txt), a python-\n"
    "                     version meta file (batches.meta, meta) or a CIFAR tarball\n"
    "      --predict N    per image, a line: its path (record path, image-decode --paths)\n"
    "                     or number, and its N most likely classes with their softmax\n"
    "                     probabilities; labels are not needed (y -1)\n"
    "      --json         one JSON object instead of the table (with --predict: a line each)\n"
    "  -h, --help  --version\n";

/* The name of class k: names[k], or its number. */
static const char *class_name(char *const *names, int K, int k, char *buf, size_t n) {
    if (names && k < K && names[k]) return names[k];
    snprintf(buf, n, "class %d", k);
    return buf;
}

/* --predict: the stream's images, each on a line with its `top` most likely classes. */
static void predict(StreamReader *in, int top, int json, char **names, int nnames) {
    Record r = { 0 }, paths = { 0 };
    char **stream_names = NULL;
    int K_names = 0, have_paths = 0;
    long long image = 0;
    while (sr_next(in, &r)) {
        if (!strcmp(r.name, "names")) {
            names_free(stream_names);
            stream_names = record_names(&r, &K_names);
        } else if (!strcmp(r.name, "path")) {
            record_expect(&r, DT_U8, 2, NULL);
            record_swap(&paths, &r);
            have_paths = 1;
        } else if (!strcmp(r.name, "logits")) {
            record_expect(&r, DT_F32, 2, NULL);
            int64_t B = r.dims[0], K = r.dims[1];
            if (have_paths && paths.dims[0] != B)
                die("record 'path' at byte %llu: %lld paths for the %lld images of the logits after it",
                    (unsigned long long)paths.offset, (long long)paths.dims[0], (long long)B);
            char *const *use = names ? names : stream_names;
            int nuse = names ? nnames : K_names;
            int n = top < K ? top : (int)K;
            int *best = xmalloc(n * sizeof *best);
            for (int64_t b = 0; b < B; b++, image++) {
                const float *z = (const float *)r.data + b * K;
                double zmax = -INFINITY, sum = 0;
                for (int64_t k = 0; k < K; k++) if (z[k] > zmax) zmax = z[k];
                for (int64_t k = 0; k < K; k++) sum += exp((double)z[k] - zmax);
                for (int i = 0; i < n; i++) {      /* the n largest, ties to the lower class */
                    int arg = -1;
                    for (int64_t k = 0; k < K; k++) {
                        int taken = 0;
                        for (int j = 0; j < i; j++) taken |= best[j] == k;
                        if (!taken && (arg < 0 || z[k] > z[arg])) arg = (int)k;
                    }
                    best[i] = arg;
                }
                char label[64], cls[32];
                char *shown;
                if (have_paths) {
                    size_t L = (size_t)paths.dims[1];
                    const char *p = (const char *)paths.data + b * L;
                    char *copy = xmalloc(L + 1);
                    memcpy(copy, p, L);
                    copy[L] = 0;
                    shown = json ? copy : shown_name(copy);
                    if (!json) free(copy);
                } else {
                    snprintf(label, sizeof label, "image %lld", image);
                    shown = xstrdup(label);
                }
                if (json) {
                    cJSON *o = cJSON_CreateObject(), *list = cJSON_CreateArray();
                    cJSON_AddStringToObject(o, have_paths ? "path" : "image", shown);
                    for (int i = 0; i < n; i++) {
                        cJSON *c = cJSON_CreateObject();
                        cJSON_AddNumberToObject(c, "class", best[i]);
                        cJSON_AddStringToObject(c, "name", class_name(use, nuse, best[i], cls, sizeof cls));
                        cJSON_AddNumberToObject(c, "p", exp((double)z[best[i]] - zmax) / sum);
                        cJSON_AddItemToArray(list, c);
                    }
                    cJSON_AddItemToObject(o, "top", list);
                    char *text = cJSON_PrintUnformatted(o);
                    printf("%s\n", text);
                    cJSON_free(text);
                    cJSON_Delete(o);
                } else {
                    printf("%s:", shown);
                    for (int i = 0; i < n; i++)
                        printf("%s %s %.2f%%", i ? "," : "", class_name(use, nuse, best[i], cls, sizeof cls),
                               100.0 * exp((double)z[best[i]] - zmax) / sum);
                    printf("\n");
                }
                free(shown);
            }
            free(best);
            have_paths = 0;
        }
    }
    if (!image) die("no logits in the input");
    names_free(stream_names);
    record_free(&r);
    record_free(&paths);
}

int main(int argc, char **argv) {
    tool_init("evaluate", argc, argv);
    static const struct option longopts[] = {
        { "names", required_argument, 0, 'n' }, { "json", no_argument, 0, 'j' },
        { "predict", required_argument, 0, 'p' },
        { "help", no_argument, 0, 'h' }, { "version", no_argument, 0, 'V' }, { 0 } };
    const char *names_path = NULL;
    int json = 0, top = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n': names_path = optarg; break;
        case 'j': json = 1; break;
        case 'p': top = (int)parse_ll("--predict", optarg, 1, 100000); break;
        case 'h': print_help(USAGE);
        case 'V': print_version();
        default: bad_option(argv);
        }
    }
    if (argc - optind > 1) usage_die("at most one input file");
    StreamReader *in = sr_open_path(optind < argc ? argv[optind] : "-");
    char **read = NULL;
    int count = 0;
    if (top) {
        if (names_path) read = cifar_label_names(names_path, 0, &count);
        predict(in, top, json, read, count);
        sr_close(in);
        xfflush(stdout, "stdout");
        return 0;
    }
    Metrics m = { 0 };
    metrics_read(&m, in);
    sr_close(in);
    if (!m.images) die("no logits and labels in the input");
    char **names = xcalloc(m.K, sizeof *names);
    if (names_path) {       /* CIFAR-100's 20 classes are its coarse ones */
        read = cifar_label_names(names_path, m.K == 20, &count);
        for (int k = 0; k < m.K && k < count; k++) names[k] = read[k];
    } else if (m.names) {
        if (m.nnames != m.K) die("the stream names %d classes, its logits have %d", m.nnames, m.K);
        for (int k = 0; k < m.K; k++) names[k] = m.names[k];
    }
    metrics_print(&m, names, json);
    xfflush(stdout, "stdout");
    return 0;
}
