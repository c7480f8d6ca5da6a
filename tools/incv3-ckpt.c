/* incv3-ckpt - checkpoints: inspect, create, and move weights to and from PyTorch (safetensors). */
#include "checkpoint.h"
#include "cifar.h"
#include "util.h"
#include <stdlib.h>
#include <getopt.h>
#include <string.h>

static const char USAGE[] =
    "usage: incv3-ckpt info CKPT\n"
    "       incv3-ckpt init -o CKPT [--classes K] [--width W] [--aux] [--seed S] [--names FILE]\n"
    "       incv3-ckpt export [--ema-weights] [--names FILE] CKPT OUT.safetensors\n"
    "       incv3-ckpt import IN.safetensors -o CKPT [--width W] [--classes K --reinit-classifier]\n"
    "                         [--seed S] [--names FILE]\n"
    "info: the model's options, step, parameter count, and whether it keeps a moving average.\n"
    "init: a new checkpoint initialised as PyTorch would (seeded).\n"
    "export: parameters and BN buffers with PyTorch state_dict names (--ema-weights: their\n"
    "  moving average, of a checkpoint trained with --ema).\n"
    "import: a PyTorch state_dict saved as safetensors (strict: every tensor, no extra);\n"
    "  classes from linear.weight, aux from AuxLogits.*, width from the file's metadata\n"
    "  or --width. --reinit-classifier starts linear (and AuxLogits.fc) afresh for K classes.\n"
    "Class names travel with the weights (the checkpoint's record names, the safetensors\n"
    "metadata incv3.class_names); --names FILE (one a line, or a CIFAR meta file) sets them.\n";

/* --names FILE: the model's class names, one for each of its classes. */
static void set_names(Model *m, const char *path) {
    if (!path) return;
    int count;
    char **names = cifar_label_names(path, m->cfg.classes == 20, &count);
    if (count != m->cfg.classes) die("%s: %d class names for a model of %d classes", path, count, m->cfg.classes);
    model_set_class_names(m, names);
}

int main(int argc, char **argv) {
    tool_init("incv3-ckpt", argc, argv);
    opterr = 0;
    if (argc < 2) usage_die("which command? info, init, export or import (see --help)");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) print_help(USAGE);
    if (!strcmp(cmd, "--version")) print_version();
    static const struct option longopts[] = {
        { "output", required_argument, 0, 'o' }, { "classes", required_argument, 0, 'k' },
        { "width", required_argument, 0, 'w' }, { "aux", no_argument, 0, 'a' },
        { "seed", required_argument, 0, 's' }, { "reinit-classifier", no_argument, 0, 'r' },
        { "ema-weights", no_argument, 0, 'e' }, { "names", required_argument, 0, 'n' }, { 0 } };
    const char *out = NULL, *names_path = NULL;
    ModelConfig cfg = { 10, 1.0, 0, 0.5f };
    double width = 0;
    int reinit = 0, classes_set = 0, ema = 0, c;
    uint64_t seed = 0;
    optind = 2;
    while ((c = getopt_long(argc, argv, "o:", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'k': cfg.classes = (int)parse_ll("--classes", optarg, 1, MAX_CLASSES); classes_set = 1; break;
        case 'w': width = cfg.width = parse_double("--width", optarg, 0.001, 4); break;
        case 'a': cfg.aux = 1; break;
        case 's': seed = (uint64_t)parse_ll("--seed", optarg, 0, INT64_MAX); break;
        case 'r': reinit = 1; break;
        case 'e': ema = 1; break;
        case 'n': names_path = optarg; break;
        default: bad_option(argv);
        }
    }
    int nargs = argc - optind;
    char **args = argv + optind;
    TrainState st = { 0, seed };
    if (ema && strcmp(cmd, "export")) usage_die("--ema-weights is for export");
    if (names_path && !strcmp(cmd, "info")) usage_die("--names is for init, export and import");
    if (!strcmp(cmd, "info")) {
        if (nargs != 1) usage_die("info: one checkpoint");
        Model *m = checkpoint_load(args[0], &st);
        printf("classes %d\nwidth %g\naux %d\nstep %llu\nseed %llu\nparameters %zu\nbatchnorms %d\nema %d\n",
               m->cfg.classes, m->cfg.width, m->cfg.aux, (unsigned long long)st.step,
               (unsigned long long)st.seed, m->nparam_floats, m->nbns, m->ema != NULL);
        for (int k = 0; m->class_names && k < m->cfg.classes; k++) {
            char *name = shown_name(m->class_names[k]);
            printf("%s%s%s", k ? ", " : "class_names ", name, k + 1 < m->cfg.classes ? "" : "\n");
            free(name);
        }
        model_free(m);
    } else if (!strcmp(cmd, "init")) {
        if (nargs || !out) usage_die("init: -o CKPT and no other arguments");
        Model *m = model_create(&cfg);
        model_init(m, seed);
        set_names(m, names_path);
        checkpoint_save(out, m, &st);
        model_free(m);
    } else if (!strcmp(cmd, "export")) {
        if (nargs != 2) usage_die("export: CKPT and OUT.safetensors");
        Model *m = checkpoint_load(args[0], &st);
        if (ema) model_use_ema(m);
        set_names(m, names_path);
        safetensors_export(args[1], m);
        model_free(m);
    } else if (!strcmp(cmd, "import")) {
        if (nargs != 1 || !out) usage_die("import: IN.safetensors and -o CKPT");
        if (reinit && !classes_set) usage_die("--reinit-classifier needs --classes");
        Model *m = safetensors_import(args[0], width, reinit ? cfg.classes : 0, seed);
        set_names(m, names_path);
        checkpoint_save(out, m, &st);
        model_free(m);
    } else {
        usage_die("unknown command '%s' (info, init, export, import)", cmd);
    }
    return 0;
}
