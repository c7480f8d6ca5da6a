/* incv3-step - the trainer: a filter from batches to metrics (or logits with --eval). */
#include "augment.h"
#include "checkpoint.h"
#include "exchange.h"
#include "gemm.h"
#include "profile.h"
#include "schedule.h"
#include "stream.h"
#include "util.h"
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: incv3-step -c CKPT [options] [FILE]\n"
    "Train InceptionV3 on the batches of a stream (records x, y); print one JSON line\n"
    "per step and write the checkpoint at the end. With --eval, emit logits instead.\n"
    "  -c, --checkpoint PATH   resume from PATH if it exists (else initialise); save there\n"
    "      --init FILE         initialise from a safetensors state_dict (PyTorch names)\n"
    "      --reinit-classifier re-initialise linear (and AuxLogits.fc) for --classes\n"
    "      --classes K (10)  --width W (1)  --aux  --seed S (0)   for a new model\n"
    "      --lr LR (0.1)  --momentum M (0.9)  --weight-decay WD (5e-4)  --nesterov\n"
    "      --no-bn-decay           no weight decay on batch norm's gamma and beta and the\n"
    "                              classifiers' biases (the weights keep --weight-decay)\n"
    "      --schedule multistep|cosine|linear|constant (multistep)  --warmup EPOCHS (1)\n"
    "      --milestones E,E,.. (30,60,80)  --gamma G (0.2)  --epochs E (50, where cosine\n"
    "                              and linear reach 0)\n"
    "      --steps-per-epoch N     default: the batches count of the stream's meta record\n"
    "      --ghost-batch B         batch-norm statistics per group of B images\n"
    "      --label-smoothing S     cross-entropy against (1 - S) one-hot + S/K (0)\n"
    "      --ema DECAY             keep an exponential moving average of the weights and\n"
    "                              BN statistics in the checkpoint (decay min(DECAY, (1+t)/(10+t)))\n"
    "      --normalize SPEC        for u8 images (default cifar10)\n"
    "      --exchange OUT,IN       data parallel: gradients to OUT, their mean from IN\n"
    "      --bucket-mb S           gradients travel in buckets of S MB while backward runs\n"
    "                              (4; 0: all of them after backward)\n"
    "      --save-every N          also write the checkpoint every N steps\n"
    "      --no-save               never write the checkpoint (other workers)\n"
    "      --log FILE              JSON lines to FILE instead of stdout\n"
    "      --threads T             OpenBLAS/OpenMP threads  --quiet  no progress bar\n"
    "      --autocast bf16|fp32    bf16 inputs to the large convolution GEMMs, fp32\n"
    "                              accumulation, weights and the rest (fp32)\n"
    "      --profile               log where the time went, by layer kind, at the end\n"
    "      --kernels               print the kernels the GEMMs run (one JSON line) and exit\n"
    "      --eval                  forward only: emit logits [B,K] with y and idx passed on\n"
    "      --ema-weights           with --eval: the checkpoint's moving average of the weights\n"
    "      --tta flip              with --eval: the mean of the logits of each image and its mirror\n"
    "      --tap NAME[,NAME..]     write the output of each module NAME (PyTorch's named_modules():\n"
    "                              Mixed_5b, Mixed_6e.branch7x7stack.3, avgpool, ...) as a record\n"
    "                              tap.NAME [B,C,H,W]; in training to the stream (-o, or standard\n"
    "                              output when --log takes the log)\n"
    "      --tap-grad NAME[,..]    training: the gradient of the loss there too (tapgrad.NAME)\n"
    "      --features              with --eval: the pooled penultimate features [B, 2048 x width]\n"
    "      --stats N               training: every N steps, per parameter its norm, its gradient's\n"
    "                              and update/weight, per block its activations' mean, std, zero\n"
    "                              share and max |x|, as a JSON line (event stats) in the log\n"
    "  -o, --output FILE  --level L  --raw    stream output options (--eval, taps)\n"
    "  -h, --help  --version\n";

enum { OPT_INIT = 256, OPT_REINIT, OPT_CLASSES, OPT_WIDTH, OPT_AUX, OPT_SEED, OPT_LR, OPT_MOM,
       OPT_WD, OPT_SCHED, OPT_WARM, OPT_MILES, OPT_GAMMA, OPT_EPOCHS, OPT_SPE, OPT_GHOST, OPT_NORM,
       OPT_EXCH, OPT_BUCKET, OPT_SAVE_EVERY, OPT_NO_SAVE, OPT_LOG, OPT_THREADS, OPT_QUIET, OPT_EVAL, OPT_LEVEL,
       OPT_RAW, OPT_PROFILE, OPT_AUTOCAST, OPT_NESTEROV, OPT_SMOOTH, OPT_EMA, OPT_EMA_WEIGHTS, OPT_TTA, OPT_KERNELS,
       OPT_TAP, OPT_TAP_GRAD, OPT_FEATURES, OPT_STATS, OPT_NO_BN_DECAY, OPT_VERSION };

#define MAX_TAPS 64

typedef struct {
    const char *ckpt, *init, *log, *out_path, *exchange;
    int reinit, eval, no_save, quiet, raw, level, threads, bf16, nesterov, no_bn_decay, use_ema, tta_flip, features;
    const char *tap_names[MAX_TAPS];   /* --tap and --tap-grad, in order */
    int tap_what[MAX_TAPS], ntaps;     /* 1: values, 2: gradient */
    long long stats;                   /* --stats N; 0: off */
    /* use_ema: evaluate the moving average; ema_decay > 0: keep one in training */
    ModelConfig cfg;
    uint64_t seed;
    double momentum, wd, bucket_mb, label_smoothing, ema_decay;
    Schedule sched;
    long long ghost, save_every;
    Normalize norm;
} Options;

static void parse_options(int argc, char **argv, Options *o) {
    static const struct option longopts[] = {
        { "checkpoint", required_argument, 0, 'c' }, { "init", required_argument, 0, OPT_INIT },
        { "reinit-classifier", no_argument, 0, OPT_REINIT }, { "classes", required_argument, 0, OPT_CLASSES },
        { "width", required_argument, 0, OPT_WIDTH }, { "aux", no_argument, 0, OPT_AUX },
        { "seed", required_argument, 0, OPT_SEED }, { "lr", required_argument, 0, OPT_LR },
        { "momentum", required_argument, 0, OPT_MOM }, { "weight-decay", required_argument, 0, OPT_WD },
        { "no-bn-decay", no_argument, 0, OPT_NO_BN_DECAY },
        { "schedule", required_argument, 0, OPT_SCHED }, { "warmup", required_argument, 0, OPT_WARM },
        { "milestones", required_argument, 0, OPT_MILES }, { "gamma", required_argument, 0, OPT_GAMMA },
        { "epochs", required_argument, 0, OPT_EPOCHS }, { "steps-per-epoch", required_argument, 0, OPT_SPE },
        { "ghost-batch", required_argument, 0, OPT_GHOST }, { "normalize", required_argument, 0, OPT_NORM },
        { "exchange", required_argument, 0, OPT_EXCH }, { "bucket-mb", required_argument, 0, OPT_BUCKET },
        { "save-every", required_argument, 0, OPT_SAVE_EVERY },
        { "no-save", no_argument, 0, OPT_NO_SAVE }, { "log", required_argument, 0, OPT_LOG },
        { "threads", required_argument, 0, OPT_THREADS }, { "quiet", no_argument, 0, OPT_QUIET },
        { "eval", no_argument, 0, OPT_EVAL }, { "output", required_argument, 0, 'o' },
        { "level", required_argument, 0, OPT_LEVEL }, { "raw", no_argument, 0, OPT_RAW },
        { "profile", no_argument, 0, OPT_PROFILE }, { "autocast", required_argument, 0, OPT_AUTOCAST },
        { "nesterov", no_argument, 0, OPT_NESTEROV }, { "label-smoothing", required_argument, 0, OPT_SMOOTH },
        { "ema", required_argument, 0, OPT_EMA }, { "ema-weights", no_argument, 0, OPT_EMA_WEIGHTS },
        { "tta", required_argument, 0, OPT_TTA }, { "kernels", no_argument, 0, OPT_KERNELS },
        { "tap", required_argument, 0, OPT_TAP }, { "tap-grad", required_argument, 0, OPT_TAP_GRAD },
        { "features", no_argument, 0, OPT_FEATURES }, { "stats", required_argument, 0, OPT_STATS },
        { "help", no_argument, 0, 'h' }, { "version", no_argument, 0, OPT_VERSION }, { 0 } };
    *o = (Options){ .level = DEFAULT_ZSTD_LEVEL, .cfg = { 10, 1.0, 0, 0.5f }, .momentum = 0.9, .wd = 5e-4, .bucket_mb = 4,
                    .sched = { SCHED_MULTISTEP, 0.1, 0.2, 1.0, 3, { 30, 60, 80 }, 50, 0 },
                    .norm = CIFAR10_NORMALIZE };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': o->ckpt = optarg; break;
        case OPT_INIT: o->init = optarg; break;
        case OPT_REINIT: o->reinit = 1; break;
        case OPT_CLASSES: o->cfg.classes = (int)parse_ll("--classes", optarg, 1, MAX_CLASSES); break;
        case OPT_WIDTH: o->cfg.width = parse_double("--width", optarg, 0.001, 4); break;
        case OPT_AUX: o->cfg.aux = 1; break;
        case OPT_SEED: o->seed = (uint64_t)parse_ll("--seed", optarg, 0, INT64_MAX); break;
        case OPT_LR: o->sched.base_lr = parse_double("--lr", optarg, 0, 100); break;
        case OPT_MOM: o->momentum = parse_double("--momentum", optarg, 0, 1); break;
        case OPT_WD: o->wd = parse_double("--weight-decay", optarg, 0, 1); break;
        case OPT_SCHED:
            if ((o->sched.kind = schedule_kind(optarg)) < 0)
                usage_die("--schedule: '%s' is not multistep, cosine, linear or constant", optarg);
            break;
        case OPT_WARM: o->sched.warmup_epochs = parse_double("--warmup", optarg, 0, 1e6); break;
        case OPT_MILES: o->sched.nmilestones = parse_double_list("--milestones", optarg, o->sched.milestones, 16); break;
        case OPT_GAMMA: o->sched.gamma = parse_double("--gamma", optarg, 0, 1); break;
        case OPT_EPOCHS: o->sched.epochs = parse_double("--epochs", optarg, 0, 1e6); break;
        case OPT_SPE: o->sched.steps_per_epoch = (uint64_t)parse_ll("--steps-per-epoch", optarg, 1, INT64_MAX); break;
        case OPT_GHOST: o->ghost = parse_ll("--ghost-batch", optarg, 2, 1 << 20); break;
        case OPT_NORM: parse_normalize("--normalize", optarg, &o->norm); break;
        case OPT_EXCH: o->exchange = optarg; break;
        case OPT_BUCKET: o->bucket_mb = parse_double("--bucket-mb", optarg, 0, 1024); break;
        case OPT_SAVE_EVERY: o->save_every = parse_ll("--save-every", optarg, 1, INT64_MAX); break;
        case OPT_NO_SAVE: o->no_save = 1; break;
        case OPT_LOG: o->log = optarg; break;
        case OPT_THREADS: o->threads = parse_threads(optarg); break;
        case OPT_QUIET: o->quiet = 1; break;
        case OPT_EVAL: o->eval = 1; break;
        case 'o': o->out_path = optarg; break;
        case OPT_LEVEL: o->level = parse_level(optarg); break;
        case OPT_RAW: o->raw = 1; break;
        case OPT_PROFILE: prof_enabled = 1; break;
        case OPT_AUTOCAST:
            if (strcmp(optarg, "bf16") && strcmp(optarg, "fp32"))
                usage_die("--autocast: '%s' is not bf16 or fp32", optarg);
            o->bf16 = !strcmp(optarg, "bf16");
            break;
        case 'h': print_help(USAGE);
        case OPT_NESTEROV: o->nesterov = 1; break;
        case OPT_NO_BN_DECAY: o->no_bn_decay = 1; break;
        case OPT_SMOOTH: o->label_smoothing = parse_double("--label-smoothing", optarg, 0, 1); break;
        case OPT_EMA:
            o->ema_decay = parse_double("--ema", optarg, 0, 1);
            if (o->ema_decay <= 0 || o->ema_decay >= 1)
                usage_die("--ema: the decay must be between 0 and 1, both excluded (e.g. 0.999)");
            break;
        case OPT_EMA_WEIGHTS: o->use_ema = 1; break;
        case OPT_TTA:
            if (strcmp(optarg, "flip")) usage_die("--tta: '%s' is not flip", optarg);
            o->tta_flip = 1;
            break;
        case OPT_TAP:
        case OPT_TAP_GRAD:      /* a comma list; the names are checked once the model is built */
            if (!optarg[0] || strspn(optarg, ",") == strlen(optarg) || strstr(optarg, ",,") ||
                optarg[strlen(optarg) - 1] == ',')
                usage_die("%s: '%s' is not a list of module names", c == OPT_TAP ? "--tap" : "--tap-grad", optarg);
            for (char *save, *t = strtok_r(optarg, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o->ntaps == MAX_TAPS) usage_die("--tap: more than %d modules", MAX_TAPS);
                o->tap_names[o->ntaps] = t;
                o->tap_what[o->ntaps++] = c == OPT_TAP ? 1 : 2;
            }
            break;
        case OPT_FEATURES: o->features = 1; break;
        case OPT_STATS: o->stats = parse_ll("--stats", optarg, 1, INT64_MAX); break;
        case OPT_KERNELS:
            printf("{\"openblas_core\":\"%s\",\"openblas_coretype\":\"%s\",\"onednn_isa\":\"%s\","
                   "\"bf16\":%d}\n", gemm_openblas_core(), getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "",
                   gemm_onednn_isa(), gemm_bf16_supported());
            exit(0);
        case OPT_VERSION: print_version();
        default: bad_option(argv);
        }
    }
    if (!o->ckpt) usage_die("-c/--checkpoint is required (see --help)");
    if (argc - optind > 1) usage_die("at most one input file (see --help)");
    if (o->reinit && !o->init) usage_die("--reinit-classifier needs --init");
    if (o->eval && (o->exchange || o->init)) usage_die("--eval takes neither --exchange nor --init");
    if (o->eval && o->ema_decay) usage_die("--ema is for training; --eval --ema-weights evaluates the average");
    if (!o->eval && (o->use_ema || o->tta_flip)) usage_die("--ema-weights and --tta are for --eval");
    if (!o->eval && o->features) usage_die("--features is for --eval (features of the images evaluated)");
    if (o->eval && o->stats) usage_die("--stats is for training");
    for (int i = 0; i < o->ntaps; i++)
        if (o->eval && o->tap_what[i] == 2) usage_die("--tap-grad is for training: --eval computes no gradients");
    if (!o->eval && o->ntaps && !o->out_path && !o->log)
        usage_die("--tap in training writes a stream: give -o FILE, or --log FILE so that standard output can carry it");
}

/* The batch being assembled from the stream: x then y (idx optional; soft, the
 * soft targets of MixUp and CutMix, between x and y). */
typedef struct {
    Record x, y, idx, soft, other;
    float *xf;
    int64_t *labels;
    uint64_t *keys;
    size_t cap, xf_cap;           /* images; floats of xf */
    int have_x, have_idx, have_soft;
} Batch;

/* x as f32 NCHW, normalising u8; y as i64 in [0, K). Images of another size than the
 * last batch's set the model's (model_set_input: progressive resizing, smaller crops). */
/* eval: labels may be -1 (pictures nobody labelled; they pass on to evaluate --predict) */
static int prepare_batch(Batch *b, Model *m, const Normalize *norm, int eval) {
    const Record *x = &b->x, *y = &b->y;
    const int K = m->cfg.classes;
    int64_t want[4] = { -1, 3, -1, -1 };
    if (x->dtype != DT_U8 && x->dtype != DT_F32) record_expect(x, DT_F32, 4, want);
    record_expect(x, x->dtype, 4, want);
    int N = (int)x->dims[0];
    if (N < 1) die("record 'x' at byte %llu: empty batch", (unsigned long long)x->offset);
    char why[200];
    if (x->dims[2] > MAX_INPUT_SIZE || x->dims[3] > MAX_INPUT_SIZE)
        die("record 'x' at byte %llu: images of %lldx%lld: sides from 1 to %d", (unsigned long long)x->offset,
            (long long)x->dims[2], (long long)x->dims[3], MAX_INPUT_SIZE);
    if (model_set_input(m, (int)x->dims[2], (int)x->dims[3], why, sizeof why))
        die("record 'x' at byte %llu: %s", (unsigned long long)x->offset, why);
    const size_t hw = (size_t)x->dims[2] * x->dims[3];
    if (y->rank != 1 || y->dims[0] != N || (y->dtype != DT_I64 && y->dtype != DT_I32))
        die("record 'y' at byte %llu: expected %d labels (i64) for x", (unsigned long long)y->offset, N);
    if (b->have_soft) {         /* probabilities: [N, K], each row >= 0 summing to 1 */
        const Record *t = &b->soft;
        if (t->dtype != DT_F32 || t->rank != 2 || t->dims[0] != N || t->dims[1] != K)
            die("record 'soft' at byte %llu: expected f32 [%d,%d] soft targets for x", (unsigned long long)t->offset, N, K);
        const float *p = t->data;
        for (int i = 0; i < N; i++) {
            double sum = 0;
            int ok = 1;
            for (int k = 0; k < K; k++) { ok &= p[i * K + k] >= 0 && p[i * K + k] <= 1; sum += p[i * K + k]; }
            if (!ok || fabs(sum - 1.0) > 1e-4)
                die("record 'soft' at byte %llu: the targets of image %d are not probabilities summing to 1 (sum %g)",
                    (unsigned long long)t->offset, i, sum);
        }
    }
    if (b->have_idx && (b->idx.rank != 1 || b->idx.dims[0] != N || b->idx.dtype != DT_I64))
        die("record 'idx' at byte %llu: expected %d record numbers (i64) for x", (unsigned long long)b->idx.offset, N);
    if ((size_t)N > b->cap) {
        b->cap = N;
        b->labels = xrealloc(b->labels, (size_t)N * sizeof *b->labels);
        b->keys = xrealloc(b->keys, (size_t)N * sizeof *b->keys);
    }
    if ((size_t)N * 3 * hw > b->xf_cap) {
        b->xf_cap = (size_t)N * 3 * hw;
        b->xf = xrealloc(b->xf, b->xf_cap * sizeof *b->xf);
    }
    if (x->dtype == DT_U8) normalize_u8(norm, x->data, N, (int64_t)hw, b->xf);
    else memcpy(b->xf, x->data, x->nbytes);
    for (int i = 0; i < N; i++) {
        int64_t l = y->dtype == DT_I64 ? ((int64_t *)y->data)[i] : ((int32_t *)y->data)[i];
        if ((l < 0 || l >= K) && !(eval && l == -1))
            die("record 'y' at byte %llu: label %lld of image %d is outside 0..%d",
                (unsigned long long)y->offset, (long long)l, i, K - 1);
        b->labels[i] = l;
    }
    return N;
}

static int count_correct(const float *logits, const int64_t *y, int N, int K) {
    int correct = 0;
    for (int n = 0; n < N; n++) {
        int best = 0;
        for (int k = 1; k < K; k++) if (logits[n * K + k] > logits[n * K + best]) best = k;
        correct += best == y[n];
    }
    return correct;
}

/* meta record text: value of key as a number, or -1 */
static long long meta_number(const Record *r, const char *key) {
    char text[1024];
    size_t n = r->nbytes < sizeof text - 1 ? r->nbytes : sizeof text - 1;
    memcpy(text, r->data, n); text[n] = 0;
    size_t kl = strlen(key);
    for (char *p = text; p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, key, kl) && p[kl] == '=') return strtoll(p + kl + 1, NULL, 10);
    return -1;
}

/* ---- output ---- */
static void progress(int quiet, uint64_t epoch, uint64_t done, uint64_t total, double loss,
                     double ips, double eta) {
    if (quiet || !isatty(2)) return;
    int width = 30, fill = total ? (int)(width * done / total) : 0;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\repoch %llu [%s] %llu/%llu loss %.4f %.1f img/s ETA %02d:%02d ",
            (unsigned long long)epoch, bar, (unsigned long long)done, (unsigned long long)total,
            loss, ips, (int)(eta / 60), (int)fmod(eta, 60));
}

/* Everything a run keeps between batches. */
typedef struct {
    Options o;
    Model *m;
    TrainState st;
    StreamReader *in;
    Output out;               /* --eval */
    FILE *log;                /* training */
    Exchange *ex;
    uint64_t epoch, batches;  /* from the meta record */
    uint64_t seen, skip;      /* this epoch's batches read; of them, trained before a resume */
    uint64_t trained, images, correct_sum;
    uint64_t images_seen;     /* dropout keys of batches without idx */
    double loss_sum, t_start;
    float *logits;
    size_t logits_cap;
    int stream_out;           /* a stream goes out: --eval, or taps in training */
    int tap_id[MAX_TAPS], tap_what[MAX_TAPS], ntaps;    /* the taps asked for, each once */
    int features_tap;         /* --features: avgpool's values; -1: off */
    float *params_before;     /* --stats: the weights before the step */
} Run;

static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    int *row = xmalloc((lb + 1) * sizeof *row);
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    int d = row[lb];
    free(row);
    return d;
}

/* A module name that is no tap: a usage error naming the five nearest that are. */
static void unknown_tap(const Model *m, const char *name) {
    int n = model_tap_count(m), best[5] = { -1, -1, -1, -1, -1 }, dist[5];
    for (int k = 0; k < n; k++) {
        int d = edit_distance(name, model_tap_name(m, k));
        for (int j = 0; j < 5; j++)
            if (best[j] < 0 || d < dist[j]) {
                for (int q = 4; q > j; q--) { best[q] = best[q - 1]; dist[q] = dist[q - 1]; }
                best[j] = k; dist[j] = d;
                break;
            }
    }
    char list[600] = "";
    for (int j = 0; j < 5 && best[j] >= 0; j++) {
        strncat(list, j ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, model_tap_name(m, best[j]), sizeof list - strlen(list) - 1);
    }
    usage_die("--tap: no module '%s' to tap; the nearest: %s (a BasicConv2d's .conv and .bn are fused, never stored)",
              name, list);
}

/* The taps asked for, each module once with everything asked of it. */
static void open_taps(Run *r) {
    const Options *o = &r->o;
    r->features_tap = -1;
    for (int i = 0; i < o->ntaps; i++) {
        int id = model_tap_find(r->m, o->tap_names[i]), k = 0;
        if (id < 0) unknown_tap(r->m, o->tap_names[i]);
        while (k < r->ntaps && r->tap_id[k] != id) k++;
        if (k == r->ntaps) { r->tap_id[k] = id; r->tap_what[k] = 0; r->ntaps++; }
        r->tap_what[k] |= o->tap_what[i];
    }
    for (int k = 0; k < r->ntaps; k++) model_tap_on(r->m, r->tap_id[k], r->tap_what[k]);
    if (o->features) {
        r->features_tap = model_tap_find(r->m, "avgpool");
        int k = 0;
        while (k < r->ntaps && r->tap_id[k] != r->features_tap) k++;
        model_tap_on(r->m, r->features_tap, k < r->ntaps ? r->tap_what[k] | 1 : 1);
    }
}

/* The batch's taps (tap.NAME, tapgrad.NAME) and --features, into the stream. */
static void write_taps(Run *r, int N) {
    for (int k = 0; k < r->ntaps; k++) {
        int d[3], rank = model_tap_shape(r->m, r->tap_id[k], d);
        int64_t dims[4] = { N, d[0], d[1], d[2] };
        for (int grad = 0; grad < 2; grad++) {
            if (!(r->tap_what[k] & (grad ? 2 : 1))) continue;
            char name[160];
            snprintf(name, sizeof name, "%s.%s", grad ? "tapgrad" : "tap", model_tap_name(r->m, r->tap_id[k]));
            sw_write(r->out.w, name, DT_F32, rank, dims, model_tap_values(r->m, r->tap_id[k], grad));
        }
    }
    if (r->features_tap >= 0) {
        int d[3];
        model_tap_shape(r->m, r->features_tap, d);
        sw_write(r->out.w, "features", DT_F32, 2, (int64_t[]){ N, d[0] }, model_tap_values(r->m, r->features_tap, 0));
    }
}

static void open_run(Run *r, int argc, char **argv) {
    Options *o = &r->o;
    r->st = (TrainState){ 0, o->seed };
    if (access(o->ckpt, F_OK) == 0) {
        r->m = checkpoint_load(o->ckpt, &r->st);
        if (o->init) usage_die("--init: %s exists already; remove it to start from %s", o->ckpt, o->init);
        if (o->use_ema) model_use_ema(r->m);
    } else if (o->eval) {
        die("cannot open checkpoint %s: %s", o->ckpt, strerror(errno));
    } else if (o->init) {
        r->m = safetensors_import(o->init, 0, o->reinit ? o->cfg.classes : 0, o->seed);
    } else {
        r->m = model_create(&o->cfg);
        model_init(r->m, o->seed);
    }
    r->m->label_smoothing = (float)o->label_smoothing;
    r->in = sr_open_path(optind < argc ? argv[optind] : "-");
    open_taps(r);
    r->log = stdout;
    r->stream_out = o->eval || r->ntaps;
    if (r->stream_out) output_open(&r->out, o->out_path, o->raw, o->level);
    if (o->eval && r->m->class_names) sw_write_names(r->out.w, r->m->class_names, r->m->cfg.classes);
    if (!o->eval && o->log && !(r->log = fopen(o->log, "a"))) die("cannot open log %s: %s", o->log, strerror(errno));
    r->ex = o->exchange ? exchange_open(o->exchange, r->m, o->bucket_mb) : NULL;
    r->t_start = now_seconds();
}

/* A meta record starts an epoch: its number, its batch count, and on resume the
 * batches of it that the checkpoint has trained already. */
static void start_epoch(Run *r, const Record *meta) {
    long long e = meta_number(meta, "epoch"), nb = meta_number(meta, "batches");
    if (e >= 0) r->epoch = (uint64_t)e;
    if (nb > 0) r->batches = (uint64_t)nb;
    if (!r->o.sched.steps_per_epoch && nb > 0) r->o.sched.steps_per_epoch = (uint64_t)nb;
    r->seen = 0;
    uint64_t first = r->epoch * r->o.sched.steps_per_epoch;
    r->skip = !r->o.eval && r->st.step > first ? r->st.step - first : 0;
}

/* The data's class names: in training the model takes them (its checkpoint keeps
 * them); in evaluation they must be the model's, or its labels mean other classes. */
static void take_names(Run *r, const Record *rec) {
    int K;
    char **names = record_names(rec, &K);
    Model *m = r->m;
    if (K != m->cfg.classes)
        die("record 'names' at byte %llu: %d classes in the data, %d in the model", (unsigned long long)rec->offset,
            K, m->cfg.classes);
    for (int k = 0; m->class_names && k < K; k++)
        if (strcmp(names[k], m->class_names[k])) {
            if (r->o.eval)
                die("record 'names' at byte %llu: the data's class %d is '%s', the model's '%s'",
                    (unsigned long long)rec->offset, k, names[k], m->class_names[k]);
            break;
        }
    if (!r->o.eval) model_set_class_names(m, names);
    names_free(names);
}

/* Reads records up to the next whole batch (x, y, and idx if any) into b: 1, or 0 at
 * the end of the stream. Meta records start epochs; under --eval, records that are
 * not the batch's pass on as they are. */
static int read_batch(Run *r, Batch *b) {
    Record *rec = &b->other;
    for (;;) {
        prof_push(PROF_STREAM_IO);
        int more = sr_next(r->in, rec);
        prof_pop();
        if (!more) {
            if (b->have_x) die("stream ends with an x record that has no y");
            return 0;
        }
        if (!strcmp(rec->name, "meta") && rec->dtype == DT_U8) {
            start_epoch(r, rec);
            if (r->stream_out) sw_write_record(r->out.w, rec);
        } else if (!strcmp(rec->name, "names")) {
            take_names(r, rec);
        } else if (!strcmp(rec->name, "x")) {
            record_swap(&b->x, rec);
            b->have_x = 1;
        } else if (!strcmp(rec->name, "idx")) {
            record_swap(&b->idx, rec);
            b->have_idx = 1;
        } else if (!strcmp(rec->name, "soft")) {
            if (!b->have_x) die("record 'soft' at byte %llu comes without an x before it", (unsigned long long)rec->offset);
            record_swap(&b->soft, rec);
            b->have_soft = 1;
        } else if (!strcmp(rec->name, "y")) {
            if (!b->have_x) die("record 'y' at byte %llu comes without an x before it", (unsigned long long)rec->offset);
            record_swap(&b->y, rec);
            b->have_x = 0;
            r->seen++;
            return 1;
        } else if (r->o.eval) {
            sw_write_record(r->out.w, rec);
        }
    }
}

/* images [N, 3, H, W] mirrored left to right */
static void flip_images(float *dst, const float *src, int N, int H, int W) {
    for (size_t row = 0; row < (size_t)N * 3 * H; row++)
        for (int x = 0; x < W; x++) dst[row * W + x] = src[row * W + W - 1 - x];
}

static void eval_batch(Run *r, Batch *b, int N) {
    int K = r->m->cfg.classes;
    model_eval(r->m, b->xf, N, r->logits);
    if (r->o.tta_flip) {        /* the mean of the logits of each image and its mirror */
        int W, H = model_input_size(r->m, &W);
        float *flipped = xmalloc((size_t)N * 3 * H * W * sizeof *flipped);
        float *mirror_logits = xmalloc((size_t)N * K * sizeof *mirror_logits);
        flip_images(flipped, b->xf, N, H, W);
        model_eval(r->m, flipped, N, mirror_logits);
        for (size_t i = 0; i < (size_t)N * K; i++) r->logits[i] = 0.5f * (r->logits[i] + mirror_logits[i]);
        free(flipped); free(mirror_logits);
    }
    if (b->have_idx) sw_write_record(r->out.w, &b->idx);
    sw_write(r->out.w, "logits", DT_F32, 2, (int64_t[]){ N, K }, r->logits);
    write_taps(r, N);
    if (b->have_soft) sw_write_record(r->out.w, &b->soft);     /* evaluate says it cannot score them */
    sw_write_record(r->out.w, &b->y);
}

static void log_step(Run *r, const float metrics[2], double lr, int N, double seconds) {
    fprintf(r->log, "{\"event\":\"step\",\"epoch\":%llu,\"step\":%llu,\"loss\":%.6f,\"accuracy\":%.4f,"
            "\"lr\":%.6g,\"images_per_s\":%.2f,\"time\":%.3f}\n", (unsigned long long)r->epoch,
            (unsigned long long)r->st.step, metrics[0], metrics[1], lr, N / seconds,
            clock_time());     /* train sums an epoch's wall time across kills from it */
    fflush(r->log);
    double elapsed = now_seconds() - r->t_start;
    progress(r->o.quiet, r->epoch, r->seen, r->batches, r->loss_sum / r->trained, r->images / elapsed,
             r->batches > r->seen ? elapsed / r->trained * (r->batches - r->seen) : 0);
}

/* --stats: the modules whose activations every stats step describes: the stem's units
 * and the blocks (top-level names), and the taps asked for. */
static int is_stats_tap(const Run *r, int id) {
    int d[3];       /* not the head: the logits (rank 2), the pooled features */
    if (model_tap_shape(r->m, id, d) != 4 || id == model_tap_find(r->m, "avgpool")) return 0;
    if (!strchr(model_tap_name(r->m, id), '.')) return 1;
    for (int k = 0; k < r->ntaps; k++) if (r->tap_id[k] == id && (r->tap_what[k] & 1)) return 1;
    return 0;
}

static void stats_taps(Run *r, int on) {
    for (int id = 0; id < model_tap_count(r->m); id++) {
        if (!is_stats_tap(r, id)) continue;
        int what = 0;
        for (int k = 0; k < r->ntaps; k++) if (r->tap_id[k] == id) what = r->tap_what[k];
        model_tap_on(r->m, id, on ? what | 1 : what);
    }
}

static double norm2(const float *v, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    return sqrt(s);
}

/* One JSON line: per parameter [norm, gradient norm, |update| / norm], per module
 * [mean, std, share of zeros, max |x|] of its activations in this step. */
static void log_stats(Run *r, int N) {
    Model *m = r->m;
    fprintf(r->log, "{\"event\":\"stats\",\"epoch\":%llu,\"step\":%llu,\"params\":{",
            (unsigned long long)r->epoch, (unsigned long long)r->st.step);
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->pinfo[i];
        const float *w = m->params + p->offset, *before = r->params_before + p->offset;
        double wn = norm2(before, p->size), du = 0;
        for (size_t j = 0; j < p->size; j++) du += ((double)w[j] - before[j]) * ((double)w[j] - before[j]);
        fprintf(r->log, "%s\"%s\":[%.6g,%.6g,%.6g]", i ? "," : "", p->name, wn, norm2(m->grads + p->offset, p->size),
                wn > 0 ? sqrt(du) / wn : 0.0);
    }
    fprintf(r->log, "},\"activations\":{");
    int first = 1;
    for (int id = 0; id < model_tap_count(m); id++) {
        if (!is_stats_tap(r, id)) continue;
        int d[3];
        model_tap_shape(m, id, d);
        size_t n = (size_t)N * d[0] * d[1] * d[2], zeros = 0;
        const float *v = model_tap_values(m, id, 0);
        double sum = 0, sq = 0, mx = 0;
        for (size_t j = 0; j < n; j++) {
            sum += v[j]; sq += (double)v[j] * v[j];
            zeros += v[j] == 0;
            if (fabs(v[j]) > mx) mx = fabs(v[j]);
        }
        double mean = sum / n, var = sq / n - mean * mean;
        fprintf(r->log, "%s\"%s\":[%.6g,%.6g,%.6g,%.6g]", first ? "" : ",", model_tap_name(m, id), mean,
                sqrt(var > 0 ? var : 0), (double)zeros / n, mx);
        first = 0;
    }
    fprintf(r->log, "}}\n");
}

/* One SGD step on the batch (its gradient averaged with the other workers' under
 * --exchange), logged, and saved every --save-every steps. */
static void train_batch(Run *r, Batch *b, int N) {
    const Options *o = &r->o;
    int groups = 1;
    if (o->ghost) {
        if (N % o->ghost) die("batch of %d images at byte %llu is not a multiple of --ghost-batch %lld",
                              N, (unsigned long long)b->x.offset, o->ghost);
        groups = N / (int)o->ghost;
    }
    double t0 = now_seconds();
    /* dropout per image from (seed, step, source record): reproducible on
     * resume and the same on however many workers */
    for (int i = 0; i < N; i++)
        b->keys[i] = b->have_idx ? (uint64_t)((int64_t *)b->idx.data)[i] : r->images_seen + i;
    if (r->ex) exchange_step_begin(r->ex);
    int stats = o->stats && (r->st.step + 1) % (uint64_t)o->stats == 0;
    if (stats) stats_taps(r, 1);
    double loss = model_train_step(r->m, b->xf, b->labels, b->have_soft ? b->soft.data : NULL, N, groups, mix64(r->st.seed) ^ r->st.step,
                                   b->keys, r->logits);
    r->images_seen += N;
    int K = r->m->cfg.classes;
    float metrics[2] = { (float)loss, (float)count_correct(r->logits, b->labels, N, K) / N };
    if (r->ex) exchange_step_end(r->ex, metrics, 2);
    if (!isfinite(metrics[0]))
        die("step %llu: loss is %s; stopping, %s keeps its last good state",
            (unsigned long long)r->st.step + 1, isnan(metrics[0]) ? "NaN" : "infinite", o->ckpt);
    double lr = schedule_lr(&o->sched, r->st.step);
    if (stats) {
        if (!r->params_before) r->params_before = xmalloc(r->m->nparam_floats * sizeof *r->params_before);
        memcpy(r->params_before, r->m->params, r->m->nparam_floats * sizeof *r->params_before);
    }
    model_sgd(r->m, (float)lr, (float)o->momentum, (float)o->wd, o->no_bn_decay ? 0.0f : (float)o->wd, o->nesterov);
    r->st.step++; r->trained++; r->images += N;
    if (o->ema_decay > 0) model_ema_update(r->m, o->ema_decay, r->st.step);
    r->loss_sum += metrics[0];
    r->correct_sum += (uint64_t)llround(metrics[1] * N);
    log_step(r, metrics, lr, N, now_seconds() - t0);
    if (stats) {
        log_stats(r, N);
        stats_taps(r, 0);
    }
    if (r->stream_out) {        /* the taps of the step, with the images' numbers and labels */
        if (b->have_idx) sw_write_record(r->out.w, &b->idx);
        write_taps(r, N);
        sw_write_record(r->out.w, &b->y);
    }
    if (o->save_every && r->st.step % o->save_every == 0 && !o->no_save) checkpoint_save(o->ckpt, r->m, &r->st);
}

/* The end of the stream: the checkpoint and the epoch's summary (training), or the
 * end record of the logits stream (--eval). */
static void finish_run(Run *r) {
    const Options *o = &r->o;
    if (r->stream_out) output_close(&r->out);
    if (!o->eval) {
        if (!o->quiet && isatty(2)) fputc('\n', stderr);
        if (r->trained && !o->no_save) checkpoint_save(o->ckpt, r->m, &r->st);
        if (r->trained) {
            double elapsed = now_seconds() - r->t_start;
            int w, h = model_input_size(r->m, &w);
            fprintf(r->log, "{\"event\":\"train_epoch\",\"epoch\":%llu,\"steps\":%llu,\"loss\":%.6f,"
                    "\"accuracy\":%.4f,\"images_per_s\":%.2f,\"seconds\":%.1f,\"input\":[%d,%d]}\n",
                    (unsigned long long)r->epoch, (unsigned long long)r->trained, r->loss_sum / r->trained,
                    (double)r->correct_sum / r->images, r->images / elapsed, elapsed, h, w);
        }
        if (prof_enabled) prof_report(r->log);
        xfflush(r->log, o->log ? o->log : "stdout");
        if (o->log && fclose(r->log)) die("cannot write %s: %s", o->log, strerror(errno));
        if (r->ex) exchange_close(r->ex);
    }
    sr_close(r->in);
    free(r->params_before);
    model_free(r->m);
}

int main(int argc, char **argv) {
    tool_init("incv3-step", argc, argv);
    Run r = { 0 };
    parse_options(argc, argv, &r.o);
    set_threads(r.o.threads);
    if (r.o.bf16 && !gemm_set_autocast(1) && !getenv("INCV3_QUIET_BLAS"))
        fprintf(stderr, "incv3-step: note: --autocast bf16: this CPU has no bf16 dot products "
                "(AVX512_BF16); training in fp32\n");
    open_run(&r, argc, argv);
    Batch b = { 0 };
    while (read_batch(&r, &b)) {
        if (r.seen <= r.skip) {         /* trained before the resume */
            b.have_idx = b.have_soft = 0;
            r.images_seen += (uint64_t)b.x.dims[0];
            continue;
        }
        prof_push(PROF_INPUT);
        int N = prepare_batch(&b, r.m, &r.o.norm, r.o.eval);
        prof_pop();
        if ((size_t)N * r.m->cfg.classes > r.logits_cap) {
            r.logits_cap = (size_t)N * r.m->cfg.classes;
            r.logits = xrealloc(r.logits, r.logits_cap * sizeof *r.logits);
        }
        if (r.o.eval) eval_batch(&r, &b, N);
        else train_batch(&r, &b, N);
        b.have_idx = b.have_soft = 0;
    }
    finish_run(&r);
    return 0;
}
