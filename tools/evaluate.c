/* evaluate - accuracy, loss, per-class accuracy and confusion matrix from logits + y. */
#include "cifar.h"
#include "metrics.h"
#include "util.h"
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: evaluate [--names FILE] [--json] [FILE]\n"
    "Read records logits (f32 [B,K]) and y (labels [B]) and report top-1 and top-5\n"
    "accuracy, mean cross-entropy loss, per-class accuracy and the confusion matrix\n"
    "(rows: true class, columns: predicted; up to 20 classes). Images whose logits are\n"
    "NaN or infinite count in the accuracies, not in the loss (then undefined: null in JSON).\n"
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
        case 'h': print_help(USAGE);
        case 'V': print_version();
        default: bad_option(argv);
        }
    }
    if (argc - optind > 1) usage_die("at most one input file");
    StreamReader *in = sr_open_path(optind < argc ? argv[optind] : "-");
    Metrics m = { 0 };
    metrics_read(&m, in);
    sr_close(in);
    if (!m.images) die("no logits and labels in the input");
    char **names = xcalloc(m.K, sizeof *names);
    if (names_path) {       /* CIFAR-100's 20 classes are its coarse ones */
        int count;
        char **read = cifar_label_names(names_path, m.K == 20, &count);
        for (int k = 0; k < m.K && k < count; k++) names[k] = read[k];
    }
    metrics_print(&m, names, json);
    xfflush(stdout, "stdout");
    return 0;
}
