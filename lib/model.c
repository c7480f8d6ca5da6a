/* model.c - graph construction, forward, backward and SGD for InceptionV3. */
#include "model.h"
#include "arena.h"
#include "conv.h"
#include "layers.h"
#include "gemm.h"
#include "profile.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f
#define AUX_LOSS_WEIGHT 0.4f

/* The graph and a step's storage, which model.h keeps opaque (Net). */
typedef enum { OP_CONV, OP_MAXPOOL, OP_AVGPOOL } OpKind;

typedef struct {
    int C, H, W;
    int root, choff;          /* storage: channels [choff, choff+C) of tensor root */
    size_t offset;            /* roots: floats per image into the arena, where the saved
                                 activations live from forward to their last backward */
    size_t grad_offset;       /* roots: floats per image into the arena, where the gradient
                                 lives during backward */
    int grad_start;           /* roots: backward event (0: the head) that first writes the
                                 gradient, -1: none */
    int affine;               /* roots that units write: their channels' BN+ReLU at
                                 [affine, affine + C) of act_scale/act_shift; -1: the
                                 stored values are the activations */
    size_t slot_offset[2];    /* roots with affine: floats per image into the arena where
                                 their activations are made when first read, in forward
                                 and in backward */
    unsigned made;            /* the step pass (model's pass_id) whose slot holds them */
} Tensor;

typedef struct {
    OpKind kind;
    int in, out;
    ConvShape cs;             /* pools: kernel kh, stride sh, padding ph */
    int weight, gamma, beta, bn;
    int group;                /* 1x1 convs of one input run as one GEMM: the group's first
                                 op, whose weights lead theirs in memory; -1: alone */
    int pooled_input;         /* convs: of avgpool 3x3 s1 p1 of `in` (conv_pooled_*) */
    int pooled_output;        /* 1x1 convs: avgpool 3x3 s1 p1 of the conv, then BN */
    size_t stage_offset[2];   /* saved tensors in bf16: floats per image into the arena
                                 where the op's fp32 output (forward) and a conv's output
                                 gradient (backward) are made */
} Op;

/* A module whose output (and in training its gradient) can be taken out of a step. */
typedef enum { TAP_TENSOR, TAP_FEATURES, TAP_LOGITS, TAP_AUX_LOGITS } TapKind;
typedef struct {
    char name[96];            /* as PyTorch's named_modules() of tests/pytorch/inceptionv3.py */
    TapKind kind;
    int tensor;               /* TAP_TENSOR: the module's output */
    int on;                   /* 1: values, 2: gradient (or both) */
    int last_writer;          /* the op after which the values are whole */
    int first_backward;       /* the backward event before which the gradient is whole */
    float *values, *grad;     /* [N, C, H, W] of the last pass; NULL: not taken */
    size_t cap;
} Tap;

struct Net {
    Tensor *tensors; int ntensors;
    Tap *taps; int ntaps, taps_on;
    Op *ops; int nops;
    int input, features, aux_input;          /* tensor ids */
    int *backward_order;      /* [nops]: ops in the order backward runs them */
    int *backward_event;      /* [nops]: op i's backward is event backward_event[i] (1..nops) */
    int linear_w, linear_b, aux_w, aux_b;    /* param ids of the classifiers */
    int affine_channels;
    float *act_scale, *act_shift;            /* [affine_channels]: gamma and beta, or 1, 0 */
    char *grad_final;         /* [nparams] during backward */
    int grad_frontier;        /* params [grad_frontier, nparams) are final */
    /* per-batch storage, grown to the largest batch seen; arena: see plan_memory */
    size_t arena_per_image;   /* floats per image of the arena: saved activations and gradients */
    size_t arena_peak_per_image;  /* the most of it live at once */
    size_t pool_per_image;    /* pool_buf: the largest conv output pooled after (pooled_output) */
    int capacity, capacity_threads;   /* scratch is per thread in part */
    unsigned pass_id;         /* counts forward and backward passes: which slots are made */
    int plan_training;        /* the arena is planned for training (1), inference (0), not yet (-1) */
    int saved_bf16;           /* and with units' xhat saved in bf16 (autocast) */
    int backward;             /* the pass running: slots of forward (0) or backward (1) */
    float *arena, *scratch, *bn_mean, *bn_istd, *pool_buf;
    float *feat, *dfeat, *logits, *dlogits, *aux_feat, *daux_feat, *aux_logits, *daux_logits;
    uint8_t *drop_mask;
    size_t scratch_floats;
};

int scale_channels(int c, double width) {
    int s = (int)floor(c * width + 0.5);
    return s < 1 ? 1 : s;
}

/* ---------------- graph construction ---------------- */

/* root < 0: a new tensor; else channels [choff, choff + C) of root. */
static int add_tensor(Model *m, int C, int H, int W, int root, int choff) {
    Net *net = m->net;
    net->tensors = xrealloc(net->tensors, (net->ntensors + 1) * sizeof *net->tensors);
    Tensor *t = &net->tensors[net->ntensors];
    *t = (Tensor){ .C = C, .H = H, .W = W, .root = root < 0 ? net->ntensors : root, .choff = choff,
                   .grad_start = -1, .affine = -1 };
    return net->ntensors++;
}

static int add_param(Model *m, const char *name, int kind, int rank, const int64_t *dims) {
    m->pinfo = xrealloc(m->pinfo, (m->nparams + 1) * sizeof *m->pinfo);
    Param *p = &m->pinfo[m->nparams];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->kind = kind; p->rank = rank; p->size = 1;
    for (int i = 0; i < rank; i++) { p->dims[i] = dims[i]; p->size *= dims[i]; }
    p->offset = m->nparam_floats;
    m->nparam_floats += p->size;
    return m->nparams++;
}

static Op *add_op(Model *m, OpKind kind, int in, int out) {
    Net *net = m->net;
    net->ops = xrealloc(net->ops, (net->nops + 1) * sizeof *net->ops);
    Op *op = &net->ops[net->nops++];
    memset(op, 0, sizeof *op);
    op->kind = kind; op->in = in; op->out = out; op->group = -1;
    return op;
}

/* Names tensor (or a head output) as tap `name`; a name already there is moved to it
 * (a Sequential's output is its last member's). */
static void add_tap(Model *m, const char *name, TapKind kind, int tensor) {
    Net *net = m->net;
    for (int i = 0; i < net->ntaps; i++)
        if (!strcmp(net->taps[i].name, name)) { net->taps[i].tensor = tensor; return; }
    net->taps = xrealloc(net->taps, (net->ntaps + 1) * sizeof *net->taps);
    Tap *t = &net->taps[net->ntaps++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->kind = kind;
    t->tensor = tensor;
}

/* A BasicConv2d's taps: itself, its ReLU (in place: the same values) and, for a
 * member of a Sequential (name ending in .N), the Sequential. */
static void add_unit_taps(Model *m, const char *name, int out) {
    char n[112];
    add_tap(m, name, TAP_TENSOR, out);
    snprintf(n, sizeof n, "%s.relu", name);
    add_tap(m, n, TAP_TENSOR, out);
    const char *dot = strrchr(name, '.');
    if (dot && dot[1] && strspn(dot + 1, "0123456789") == strlen(dot + 1)) {
        snprintf(n, sizeof n, "%.*s", (int)(dot - name), name);
        add_tap(m, n, TAP_TENSOR, out);
    }
}

/* Where an op writes: a new tensor (dst < 0) or channels at choff of dst. */
typedef struct { int root, choff; } Dest;
static const Dest NEW = { -1, 0 };
static Dest into(int root, int choff) { return (Dest){ root, choff }; }

static int make_output(Model *m, Dest d, int C, int H, int W) {
    if (d.root < 0) return add_tensor(m, C, H, W, -1, 0);
    const Tensor *r = &m->net->tensors[d.root];
    if (r->H != H || r->W != W || d.choff + C > r->C)
        die("internal: branch of %dx%d@%d does not fit its concatenation", C, H, W);
    return add_tensor(m, C, H, W, d.root, d.choff);
}

/* conv (no bias) -> BN -> ReLU, named like PyTorch's BasicConv2d */
static int unit(Model *m, const char *name, int in, Dest d, int cout_full,
                int kh, int kw, int s, int ph, int pw) {
    const Tensor *t = &m->net->tensors[in];  /* read before make_output moves the array */
    int cin = t->C, cout = scale_channels(cout_full, m->cfg.width);
    int H = t->H, W = t->W;
    int Ho = conv_out(H, kh, s, ph), Wo = conv_out(W, kw, s, pw);
    int out = make_output(m, d, cout, Ho, Wo);
    Tensor *r = &m->net->tensors[m->net->tensors[out].root];
    if (r->affine < 0) { r->affine = m->net->affine_channels; m->net->affine_channels += r->C; }
    Op *op = add_op(m, OP_CONV, in, out);
    op->cs = (ConvShape){ cin, cout, kh, kw, s, s, ph, pw };
    char n[96];
    snprintf(n, sizeof n, "%s.conv.weight", name);
    op->weight = add_param(m, n, PARAM_WEIGHT, 4, (int64_t[]){ cout, cin, kh, kw });
    snprintf(n, sizeof n, "%s.bn.weight", name);
    op->gamma = add_param(m, n, PARAM_BN_WEIGHT, 1, (int64_t[]){ cout });
    snprintf(n, sizeof n, "%s.bn.bias", name);
    op->beta = add_param(m, n, PARAM_BN_BIAS, 1, (int64_t[]){ cout });
    m->bns = xrealloc(m->bns, (m->nbns + 1) * sizeof *m->bns);
    BatchNorm *bn = &m->bns[m->nbns];
    snprintf(bn->prefix, sizeof bn->prefix, "%s.bn", name);
    bn->channels = cout;
    bn->offset = m->nbuffer_floats;
    bn->batches_tracked = 0;
    m->nbuffer_floats += 2 * (size_t)cout;
    op->bn = m->nbns++;
    add_unit_taps(m, name, out);
    return out;
}

/* Inception-A's pool branch, avgpool 3x3 s1 p1 and a 3x3 conv, as one op
 * that pools image by image in cache: the pooled tensor is never stored. */
static int pooled_unit(Model *m, const char *name, int in, Dest d, int cout_full) {
    Net *net = m->net;
    int out = unit(m, name, in, d, cout_full, 3, 3, 1, 1, 1);
    net->ops[net->nops - 1].pooled_input = 1;
    return out;
}

/* Inception-C and E's pool branch, avgpool 3x3 s1 p1 then a 1x1 conv, as
 * the conv then the pool: both are linear and the pool's divisor is always 9,
 * so the order does not change the function, and pooling the conv's 192
 * channels costs a quarter to a tenth of pooling its 768 to 2048. The conv's
 * output waits in pool_buf (forward) and its gradient there (backward). */
static int pooled_after_unit(Model *m, const char *name, int in, Dest d, int cout_full) {
    Net *net = m->net;
    int out = unit(m, name, in, d, cout_full, 1, 1, 1, 0, 0);
    const Tensor *t = &net->tensors[out];
    size_t size = (size_t)t->C * t->H * t->W;
    if (size > net->pool_per_image) net->pool_per_image = size;
    net->ops[net->nops - 1].pooled_output = 1;
    return out;
}

/* A pool's output is stored like any tensor's (the arena keeps it only while needed). */
static int pool(Model *m, OpKind kind, int in, Dest d, int k, int s, int p) {
    const Tensor t = m->net->tensors[in];     /* a copy: make_output may move the array */
    int out = make_output(m, d, t.C, conv_out(t.H, k, s, p), conv_out(t.W, k, s, p));
    Op *op = add_op(m, kind, in, out);
    op->cs = (ConvShape){ t.C, t.C, k, k, s, s, p, p };
    return out;
}

/* The output of a block: its branches write their channels into it. */
static int concat(Model *m, int channels, int H, int W) {
    return add_tensor(m, channels, H, W, -1, 0);
}

static char *nm(char *buf, const char *block, const char *part) {
    snprintf(buf, 96, "%s.%s", block, part);
    return buf;
}

static int inception_a(Model *m, const char *b, int x, int pool_features) {
    double w = m->cfg.width;
    const Tensor *t = &m->net->tensors[x];
    int c1 = scale_channels(64, w), c5 = scale_channels(64, w), c3 = scale_channels(96, w);
    int cp = scale_channels(pool_features, w);
    int out = concat(m, c1 + c5 + c3 + cp, t->H, t->W);
    char n[96];
    unit(m, nm(n, b, "branch1x1"), x, into(out, 0), 64, 1, 1, 1, 0, 0);
    int y = unit(m, nm(n, b, "branch5x5.0"), x, NEW, 48, 1, 1, 1, 0, 0);
    unit(m, nm(n, b, "branch5x5.1"), y, into(out, c1), 64, 5, 5, 1, 2, 2);
    y = unit(m, nm(n, b, "branch3x3.0"), x, NEW, 64, 1, 1, 1, 0, 0);
    y = unit(m, nm(n, b, "branch3x3.1"), y, NEW, 96, 3, 3, 1, 1, 1);
    unit(m, nm(n, b, "branch3x3.2"), y, into(out, c1 + c5), 96, 3, 3, 1, 1, 1);
    pooled_unit(m, nm(n, b, "branchpool.1"), x, into(out, c1 + c5 + c3), pool_features);
    add_tap(m, b, TAP_TENSOR, out);
    return out;
}

static int inception_b(Model *m, const char *b, int x) {
    double w = m->cfg.width;
    const Tensor *t = &m->net->tensors[x];
    int c3 = scale_channels(384, w), cs = scale_channels(96, w);
    int Ho = conv_out(t->H, 3, 2, 0), Wo = conv_out(t->W, 3, 2, 0);
    int out = concat(m, c3 + cs + t->C, Ho, Wo);
    char n[96];
    unit(m, nm(n, b, "branch3x3"), x, into(out, 0), 384, 3, 3, 2, 0, 0);
    int y = unit(m, nm(n, b, "branch3x3stack.0"), x, NEW, 64, 1, 1, 1, 0, 0);
    y = unit(m, nm(n, b, "branch3x3stack.1"), y, NEW, 96, 3, 3, 1, 1, 1);
    unit(m, nm(n, b, "branch3x3stack.2"), y, into(out, c3), 96, 3, 3, 2, 0, 0);
    add_tap(m, nm(n, b, "branchpool"), TAP_TENSOR, pool(m, OP_MAXPOOL, x, into(out, c3 + cs), 3, 2, 0));
    add_tap(m, b, TAP_TENSOR, out);
    return out;
}

static int inception_c(Model *m, const char *b, int x, int c7) {
    double w = m->cfg.width;
    const Tensor *t = &m->net->tensors[x];
    int c = scale_channels(192, w);
    int out = concat(m, 4 * c, t->H, t->W);
    char n[96];
    unit(m, nm(n, b, "branch1x1"), x, into(out, 0), 192, 1, 1, 1, 0, 0);
    int y = unit(m, nm(n, b, "branch7x7.0"), x, NEW, c7, 1, 1, 1, 0, 0);
    y = unit(m, nm(n, b, "branch7x7.1"), y, NEW, c7, 7, 1, 1, 3, 0);
    unit(m, nm(n, b, "branch7x7.2"), y, into(out, c), 192, 1, 7, 1, 0, 3);
    y = unit(m, nm(n, b, "branch7x7stack.0"), x, NEW, c7, 1, 1, 1, 0, 0);
    y = unit(m, nm(n, b, "branch7x7stack.1"), y, NEW, c7, 7, 1, 1, 3, 0);
    y = unit(m, nm(n, b, "branch7x7stack.2"), y, NEW, c7, 1, 7, 1, 0, 3);
    y = unit(m, nm(n, b, "branch7x7stack.3"), y, NEW, c7, 7, 1, 1, 3, 0);
    unit(m, nm(n, b, "branch7x7stack.4"), y, into(out, 2 * c), 192, 1, 7, 1, 0, 3);
    pooled_after_unit(m, nm(n, b, "branch_pool.1"), x, into(out, 3 * c), 192);
    add_tap(m, b, TAP_TENSOR, out);
    return out;
}

static int inception_d(Model *m, const char *b, int x) {
    double w = m->cfg.width;
    const Tensor *t = &m->net->tensors[x];
    int c3 = scale_channels(320, w), c7 = scale_channels(192, w);
    int Ho = conv_out(t->H, 3, 2, 0), Wo = conv_out(t->W, 3, 2, 0);
    int out = concat(m, c3 + c7 + t->C, Ho, Wo);
    char n[96];
    int y = unit(m, nm(n, b, "branch3x3.0"), x, NEW, 192, 1, 1, 1, 0, 0);
    unit(m, nm(n, b, "branch3x3.1"), y, into(out, 0), 320, 3, 3, 2, 0, 0);
    y = unit(m, nm(n, b, "branch7x7.0"), x, NEW, 192, 1, 1, 1, 0, 0);
    y = unit(m, nm(n, b, "branch7x7.1"), y, NEW, 192, 1, 7, 1, 0, 3);
    y = unit(m, nm(n, b, "branch7x7.2"), y, NEW, 192, 7, 1, 1, 3, 0);
    unit(m, nm(n, b, "branch7x7.3"), y, into(out, c3), 192, 3, 3, 2, 0, 0);
    add_tap(m, nm(n, b, "branchpool"), TAP_TENSOR, pool(m, OP_AVGPOOL, x, into(out, c3 + c7), 3, 2, 0));
    add_tap(m, b, TAP_TENSOR, out);
    return out;
}

static int inception_e(Model *m, const char *b, int x) {
    double w = m->cfg.width;
    const Tensor *t = &m->net->tensors[x];
    int c1 = scale_channels(320, w), c3 = scale_channels(384, w), cp = scale_channels(192, w);
    int out = concat(m, c1 + 4 * c3 + cp, t->H, t->W);
    char n[96];
    unit(m, nm(n, b, "branch1x1"), x, into(out, 0), 320, 1, 1, 1, 0, 0);
    int y = unit(m, nm(n, b, "branch3x3_1"), x, NEW, 384, 1, 1, 1, 0, 0);
    unit(m, nm(n, b, "branch3x3_2a"), y, into(out, c1), 384, 1, 3, 1, 0, 1);
    unit(m, nm(n, b, "branch3x3_2b"), y, into(out, c1 + c3), 384, 3, 1, 1, 1, 0);
    y = unit(m, nm(n, b, "branch3x3stack_1"), x, NEW, 448, 1, 1, 1, 0, 0);
    y = unit(m, nm(n, b, "branch3x3stack_2"), y, NEW, 384, 3, 3, 1, 1, 1);
    unit(m, nm(n, b, "branch3x3stack_3a"), y, into(out, c1 + 2 * c3), 384, 1, 3, 1, 0, 1);
    unit(m, nm(n, b, "branch3x3stack_3b"), y, into(out, c1 + 3 * c3), 384, 3, 1, 1, 1, 0);
    pooled_after_unit(m, nm(n, b, "branch_pool.1"), x, into(out, c1 + 4 * c3), 192);
    add_tap(m, b, TAP_TENSOR, out);
    return out;
}

/* One arena holds everything of a step whose size grows with the batch: what
 * forward saves for backward (each unit's xhat, pools' outputs, the input),
 * the activations remade from an xhat while its readers need them (the
 * "slot" of a root, once in forward and once in backward), and the gradients
 * of tensors in backward. plan_lifetimes works out when each is live on one
 * timeline (op i's forward at i, the head at nops, op i's backward at nops +
 * backward_event[i]); arena_place (lib/arena.c) lets buffers whose lives do not
 * overlap share memory. So backward's gradients and slots take the place of the
 * activations it has finished with, and the arena comes within 1% of the most
 * that is ever live at once (4% under autocast; tests/unit/test_arena.c). Inference
 * plans forward alone: a saved tensor lives only until its last reader has run. */

/* Under autocast the units' xhat (roots with affine) is saved in bf16. */
static int saved_in_bf16(const Model *m, const Tensor *root) {
    return m->net->saved_bf16 && root->affine >= 0;
}

/* Extends the life [life[0], life[1]] (none: life[0] < 0) to time at. */
static void use_at(int *life, int at) {
    if (life[0] < 0 || at < life[0]) life[0] = at;
    if (at > life[1]) life[1] = at;
}

/* Backward runs the ops in reverse, except that average pools (no parameters,
 * nothing read but their output's gradient) wait until another op needs their
 * input's gradient: the auxiliary head's pool, first in backward, would
 * otherwise hold a Mixed_6e-sized gradient through all of Mixed_7's. */
static void plan_backward_order(Model *m) {
    Net *net = m->net;
    int nops = net->nops, n = 0, npending = 0, *pending = xmalloc(nops * sizeof *pending);
    net->backward_order = xmalloc(nops * sizeof *net->backward_order);
    net->backward_event = xmalloc(nops * sizeof *net->backward_event);
    for (int i = nops - 1; i >= -1; i--) {           /* -1: the pools still waiting */
        int k = 0;
        for (int j = 0; j < npending; j++) {
            int root = net->tensors[net->ops[pending[j]].in].root;
            if (i < 0 || net->tensors[net->ops[i].in].root == root || net->tensors[net->ops[i].out].root == root)
                net->backward_order[n++] = pending[j];
            else
                pending[k++] = pending[j];
        }
        npending = k;
        if (i < 0) break;
        if (net->ops[i].kind == OP_AVGPOOL) pending[npending++] = i;
        else net->backward_order[n++] = i;
    }
    for (int k = 0; k < nops; k++) net->backward_event[net->backward_order[k]] = k + 1;
    free(pending);
}

/* Lives of a root tensor's buffers; [-1, -1]: it has none. */
typedef struct { int stored[2], grad[2], slot[2][2]; } Lives;

static Lives *plan_lifetimes(const Model *m, int training) {
    const Net *net = m->net;
    int nops = net->nops;
    Lives *l = xmalloc(net->ntensors * sizeof *l);
    for (int t = 0; t < net->ntensors; t++)
        l[t] = (Lives){ { -1, -1 }, { -1, -1 }, { { -1, -1 }, { -1, -1 } } };
#define ROOT(t) net->tensors[t].root
    use_at(l[net->input].stored, 0);
    for (int i = 0; i < nops; i++) {                 /* forward; a 1x1 group's first op writes all */
        const Op *op = &net->ops[i];
        use_at(l[ROOT(op->in)].stored, i);
        use_at(l[ROOT(op->in)].slot[0], i);
        use_at(l[ROOT(op->out)].stored, op->group >= 0 ? op->group : i);
        use_at(l[ROOT(op->out)].stored, i);
    }
    use_at(l[ROOT(net->features)].stored, nops);       /* the head */
    use_at(l[ROOT(net->features)].slot[0], nops);
    if (net->aux_input >= 0) {
        use_at(l[ROOT(net->aux_input)].stored, nops);
        use_at(l[ROOT(net->aux_input)].slot[0], nops);
    }
    if (training) {
        use_at(l[ROOT(net->features)].grad, nops);
        if (net->aux_input >= 0) use_at(l[ROOT(net->aux_input)].grad, nops);
    }
    for (int i = 0; i < nops && training; i++) {     /* backward */
        const Op *op = &net->ops[i];
        int at = nops + net->backward_event[i], in = ROOT(op->in), out = ROOT(op->out);
        /* BN backward leaves the conv output's gradient in the xhat; a 1x1 group's
         * first op reads them all */
        use_at(l[out].stored, op->group >= 0 ? nops + net->backward_event[op->group] : at);
        use_at(l[out].grad, at);
        if (in != net->input) use_at(l[in].grad, at);
        if (op->kind == OP_AVGPOOL || (op->group >= 0 && op->group != i)) continue;
        use_at(l[in].stored, at);                    /* the conv's or max pool's input */
        use_at(l[in].slot[1], at);
    }
#undef ROOT
    return l;
}

/* The buffers to place, and for each the field that takes its offset. */
typedef struct { ArenaBuffer *b; size_t **field; int n; } BufferList;

static void add_buffer(BufferList *bl, size_t *field, size_t size, const int life[2]) {
    bl->b[bl->n] = (ArenaBuffer){ size, life[0], life[1], 0 };
    bl->field[bl->n++] = field;
}

static void plan_memory(Model *m, int training) {
    Net *net = m->net;
    int nops = net->nops;
    Lives *life = plan_lifetimes(m, training);
    int most = 4 * net->ntensors + 2 * nops;
    BufferList bl = { xmalloc(most * sizeof *bl.b), xmalloc(most * sizeof *bl.field), 0 };
    for (int i = 0; i < nops; i++) {                 /* fp32 outputs of ops saved in bf16 */
        Op *op = &net->ops[i];
        const Tensor *to = &net->tensors[op->out];
        if (!saved_in_bf16(m, &net->tensors[to->root])) continue;
        size_t size = (size_t)to->C * to->H * to->W;
        int first = op->group >= 0 ? op->group : i;
        add_buffer(&bl, &op->stage_offset[0], size, (int[]){ first, i });
        if (op->kind == OP_CONV && training)
            add_buffer(&bl, &op->stage_offset[1], size,
                       (int[]){ nops + net->backward_event[i], nops + net->backward_event[first] });
    }
    for (int t = 0; t < net->ntensors; t++) {
        Tensor *r = &net->tensors[t];
        const Lives *l = &life[t];
        if (r->root != t) continue;
        size_t size = (size_t)r->C * r->H * r->W, half = (size + 1) / 2;
        if (l->stored[0] >= 0) add_buffer(&bl, &r->offset, saved_in_bf16(m, r) ? half : size, l->stored);
        for (int pass = 0; pass < 2; pass++)
            if (r->affine >= 0 && l->slot[pass][0] >= 0)
                add_buffer(&bl, &r->slot_offset[pass], size, l->slot[pass]);
        r->grad_start = l->grad[0] < 0 ? -1 : l->grad[0] - nops;
        if (l->grad[0] >= 0) add_buffer(&bl, &r->grad_offset, size, l->grad);
    }
    net->arena_per_image = arena_place(bl.b, bl.n);
    net->arena_peak_per_image = arena_peak(bl.b, bl.n);
    for (int k = 0; k < bl.n; k++) *bl.field[k] = bl.b[k].offset;
    free(bl.b); free(bl.field); free(life);
}

static int is_pointwise_conv(const Op *op) {
    return op->kind == OP_CONV && conv_is_pointwise(&op->cs);
}

/* 1x1 convs reading one tensor (an Inception block's input feeds three) form
 * a group, and their weights are laid out one after another so that the
 * group's is one [rows, cin] matrix. Offsets only move: names, order of
 * initialisation and checkpoints stay as they are. */
static void plan_groups(Model *m) {
    Net *net = m->net;
    for (int i = 0; i < net->nops; i++) {
        Op *a = &net->ops[i];
        if (!is_pointwise_conv(a) || a->group >= 0) continue;
        for (int j = i + 1; j < net->nops; j++)
            if (is_pointwise_conv(&net->ops[j]) && net->ops[j].in == a->in) net->ops[j].group = a->group = i;
    }
    int *op_of = xmalloc(m->nparams * sizeof *op_of);
    for (int p = 0; p < m->nparams; p++) op_of[p] = -1;
    for (int i = 0; i < net->nops; i++) if (net->ops[i].kind == OP_CONV) op_of[net->ops[i].weight] = i;
    size_t off = 0;
    for (int p = 0; p < m->nparams; p++) {
        int i = op_of[p];
        if (i >= 0 && net->ops[i].group >= 0 && net->ops[i].group != i) continue;   /* placed with its group */
        if (i < 0 || net->ops[i].group < 0) { m->pinfo[p].offset = off; off += m->pinfo[p].size; continue; }
        for (int j = i; j < net->nops; j++)
            if (net->ops[j].group == i) {
                Param *w = &m->pinfo[net->ops[j].weight];
                w->offset = off;
                off += w->size;
            }
    }
    free(op_of);
}

/* The model's layout (layers, parameters, buffers) without its big arrays. */
static Model *model_plan(const ModelConfig *cfg) {
    if (cfg->classes < 1 || cfg->classes > MAX_CLASSES || !(cfg->width > 0) || cfg->width > 4)
        die("invalid model: %d classes (1 to %d), width %g (up to 4)", cfg->classes, MAX_CLASSES, cfg->width);
    Model *m = xcalloc(1, sizeof *m);
    Net *net = m->net = xcalloc(1, sizeof *m->net);
    m->cfg = *cfg;
    net->input = add_tensor(m, 3, 32, 32, -1, 0);
    int x = unit(m, "Conv2d_1a_3x3", net->input, NEW, 32, 3, 3, 1, 1, 1);
    x = unit(m, "Conv2d_2a_3x3", x, NEW, 32, 3, 3, 1, 1, 1);
    x = unit(m, "Conv2d_2b_3x3", x, NEW, 64, 3, 3, 1, 1, 1);
    x = unit(m, "Conv2d_3b_1x1", x, NEW, 80, 1, 1, 1, 0, 0);
    x = unit(m, "Conv2d_4a_3x3", x, NEW, 192, 3, 3, 1, 0, 0);
    x = inception_a(m, "Mixed_5b", x, 32);
    x = inception_a(m, "Mixed_5c", x, 64);
    x = inception_a(m, "Mixed_5d", x, 64);
    x = inception_b(m, "Mixed_6a", x);
    x = inception_c(m, "Mixed_6b", x, 128);
    x = inception_c(m, "Mixed_6c", x, 160);
    x = inception_c(m, "Mixed_6d", x, 160);
    x = inception_c(m, "Mixed_6e", x, 192);
    int aux_from = x;
    x = inception_d(m, "Mixed_7a", x);
    x = inception_e(m, "Mixed_7b", x);
    x = inception_e(m, "Mixed_7c", x);
    net->features = x;
    add_tap(m, "avgpool", TAP_FEATURES, x);
    add_tap(m, "linear", TAP_LOGITS, -1);
    int K = cfg->classes, C = net->tensors[x].C;
    net->linear_w = add_param(m, "linear.weight", PARAM_WEIGHT, 2, (int64_t[]){ K, C });
    net->linear_b = add_param(m, "linear.bias", PARAM_BIAS, 1, (int64_t[]){ K });
    net->aux_input = net->aux_w = net->aux_b = -1;
    if (cfg->aux) {
        int y = pool(m, OP_AVGPOOL, aux_from, NEW, 5, 3, 0);
        add_tap(m, "AuxLogits.pool", TAP_TENSOR, y);
        y = unit(m, "AuxLogits.conv0", y, NEW, 128, 1, 1, 1, 0, 0);
        const Tensor *t = &net->tensors[y];
        y = unit(m, "AuxLogits.conv1", y, NEW, 768, t->H, t->W, 1, 0, 0);
        net->aux_input = y;
        int ca = net->tensors[y].C;
        net->aux_w = add_param(m, "AuxLogits.fc.weight", PARAM_WEIGHT, 2, (int64_t[]){ K, ca });
        net->aux_b = add_param(m, "AuxLogits.fc.bias", PARAM_BIAS, 1, (int64_t[]){ K });
        add_tap(m, "AuxLogits.fc", TAP_AUX_LOGITS, -1);
        add_tap(m, "AuxLogits", TAP_AUX_LOGITS, -1);
    }
    plan_groups(m);
    plan_backward_order(m);
    net->plan_training = -1;          /* the arena is planned when a step needs it */
    return m;
}

size_t model_state_floats(const ModelConfig *cfg) {
    Model *m = model_plan(cfg);
    size_t n = m->nparam_floats + m->nbuffer_floats;
    model_free(m);
    return n;
}

Model *model_create(const ModelConfig *cfg) {
    Model *m = model_plan(cfg);
    Net *net = m->net;
    if (m->nparam_floats > MAX_MODEL_PARAMS)
        die("a model of %d classes at width %g has %zu parameters, over the %d million incv3 allocates",
            cfg->classes, cfg->width, m->nparam_floats, MAX_MODEL_PARAMS / 1000000);
    net->act_scale = xcalloc(net->affine_channels, sizeof *net->act_scale);
    net->act_shift = xcalloc(net->affine_channels, sizeof *net->act_shift);
    m->params = xcalloc(m->nparam_floats, sizeof *m->params);
    m->grads = xcalloc(m->nparam_floats, sizeof *m->grads);
    m->momentum = xcalloc(m->nparam_floats, sizeof *m->momentum);
    m->buffers = xcalloc(m->nbuffer_floats, sizeof *m->buffers);
    return m;
}

void model_free(Model *m) {
    if (!m) return;
    Net *n = m->net;
    free(n->tensors); free(n->ops); free(n->backward_order); free(n->backward_event);
    free(n->act_scale); free(n->act_shift); free(n->grad_final);
    free(n->arena); free(n->pool_buf); free(n->scratch); free(n->bn_mean); free(n->bn_istd);
    free(n->feat); free(n->dfeat); free(n->logits); free(n->dlogits);
    free(n->aux_feat); free(n->daux_feat); free(n->aux_logits); free(n->daux_logits);
    for (int i = 0; i < n->ntaps; i++) { free(n->taps[i].values); free(n->taps[i].grad); }
    free(n->taps); free(n->drop_mask); free(n);
    free(m->pinfo); free(m->bns);
    free(m->params); free(m->grads); free(m->momentum); free(m->buffers); free(m->ema);
    free(m);
}

int model_find_param(const Model *m, const char *name) {
    for (int i = 0; i < m->nparams; i++)
        if (!strcmp(m->pinfo[i].name, name)) return i;
    return -1;
}

void model_init(Model *m, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed, 0x1417);
    int64_t fan_in = 1;
    for (int i = 0; i < m->nparams; i++) {
        const Param *p = &m->pinfo[i];
        float *w = m->params + p->offset;
        if (p->kind == PARAM_WEIGHT) {          /* the bias after it shares its fan-in */
            fan_in = 1;
            for (int d = 1; d < p->rank; d++) fan_in *= p->dims[d];
        }
        float bound = 1.0f / sqrtf((float)fan_in);
        for (size_t j = 0; j < p->size; j++)
            w[j] = p->kind == PARAM_BN_WEIGHT ? 1.0f : p->kind == PARAM_BN_BIAS ? 0.0f
                 : (2.0f * rng_uniform(&rng) - 1.0f) * bound;
    }
    for (int i = 0; i < m->nbns; i++) {
        BatchNorm *bn = &m->bns[i];
        for (int c = 0; c < bn->channels; c++) {
            m->buffers[bn->offset + c] = 0.0f;
            m->buffers[bn->offset + bn->channels + c] = 1.0f;
        }
        bn->batches_tracked = 0;
    }
    memset(m->momentum, 0, m->nparam_floats * sizeof *m->momentum);
}

/* ---------------- per-batch storage ---------------- */

static size_t scratch_need(const Model *m, int N) {
    const Net *net = m->net;
    size_t need = 0;
    for (int i = 0; i < net->nops; i++) {
        const Op *op = &net->ops[i];
        if (op->kind != OP_CONV) continue;
        const Tensor *t = &net->tensors[op->in];
        size_t s = 2 * (op->pooled_input ? conv_pooled_scratch_floats : conv_scratch_floats)(&op->cs, N, t->H, t->W);
        if (op->group == i) {
            int rows = 0;
            for (int j = i; j < net->nops; j++) if (net->ops[j].group == i) rows += net->ops[j].cs.cout;
            size_t g = conv1x1_group_scratch_floats(rows, (int64_t)N * t->H * t->W);
            if (g > s) s = g;
        }
        if (s > need) need = s;
    }
    return need;
}

static size_t bn_channels(const Model *m) {
    size_t c = 0;
    for (int i = 0; i < m->nbns; i++) c += m->bns[i].channels;
    return c;
}

/* Storage for batches of N, planned for training or inference in the current precision. */
static void ensure_capacity(Model *m, int N, int training) {
    Net *net = m->net;
    int bf16 = gemm_autocast(), same_plan = net->plan_training == training && net->saved_bf16 == bf16;
    if (same_plan && N <= net->capacity && net->capacity_threads == max_threads()) return;
    if (N < net->capacity) N = net->capacity;        /* threads or plan changed: same size */
    if (!same_plan) {
        net->saved_bf16 = bf16;
        net->plan_training = training;
        plan_memory(m, training);
    }
    size_t C = net->tensors[net->features].C, K = m->cfg.classes, bnc = bn_channels(m);
    free(net->arena); free(net->scratch);
    free(net->bn_mean); free(net->bn_istd); free(net->feat); free(net->dfeat);
    free(net->logits); free(net->dlogits); free(net->drop_mask);
    free(net->aux_feat); free(net->daux_feat); free(net->aux_logits); free(net->daux_logits);
    net->arena = xmalloc(net->arena_per_image * N * sizeof(float));
    free(net->pool_buf);
    net->pool_buf = xmalloc(net->pool_per_image * N * sizeof(float));
    net->scratch_floats = scratch_need(m, N);
    net->scratch = xmalloc(net->scratch_floats * sizeof(float));
    net->bn_mean = xmalloc(bnc * N * sizeof(float));
    net->bn_istd = xmalloc(bnc * N * sizeof(float));
    net->feat = xmalloc(C * N * sizeof(float));
    net->dfeat = xmalloc(C * N * sizeof(float));
    net->logits = xmalloc(K * N * sizeof(float));
    net->dlogits = xmalloc(K * N * sizeof(float));
    net->drop_mask = xmalloc(C * N);
    size_t ca = net->aux_input >= 0 ? (size_t)net->tensors[net->aux_input].C : 1;
    net->aux_feat = xmalloc(ca * N * sizeof(float));
    net->daux_feat = xmalloc(ca * N * sizeof(float));
    net->aux_logits = xmalloc(K * N * sizeof(float));
    net->daux_logits = xmalloc(K * N * sizeof(float));
    net->capacity = N;
    net->capacity_threads = max_threads();
}

/* Address of tensor t of a batch of N images. */
static float *tensor_at(const Model *m, int t, int N) {
    const Net *net = m->net;
    const Tensor *tt = &net->tensors[t], *r = &net->tensors[tt->root];
    return net->arena + r->offset * N + (size_t)tt->choff * N * tt->H * tt->W;
}

static float *P(const Model *m, int param) { return m->params + m->pinfo[param].offset; }
static float *G(const Model *m, int param) { return m->grads + m->pinfo[param].offset; }

/* A unit's xhat in bf16 (saved_bf16) */
static uint16_t *stored_bf16(const Model *m, int t, int N) {
    const Net *net = m->net;
    const Tensor *tt = &net->tensors[t], *r = &net->tensors[tt->root];
    return (uint16_t *)(net->arena + r->offset * N) + (size_t)tt->choff * N * tt->H * tt->W;
}

/* Where op i's output (forward) or a conv's output gradient (backward) is made
 * in fp32: in place of the saved tensor, or in the op's own buffer of that pass
 * when the saved tensor is bf16. */
static float *made_at(const Model *m, int i, int backward, int N) {
    const Net *net = m->net;
    const Op *op = &net->ops[i];
    if (!saved_in_bf16(m, &net->tensors[net->tensors[op->out].root])) return tensor_at(m, op->out, N);
    return net->arena + op->stage_offset[backward] * N;
}

/* Activations of tensor t: its stored values, or its root's BN+ReLU, made in
 * the root's slot of this pass when first read. */
static const float *activations(Model *m, int t, int N) {
    Net *net = m->net;
    const Tensor *tt = &net->tensors[t];
    Tensor *r = &net->tensors[tt->root];
    float *stored = tensor_at(m, t, N);
    if (r->affine < 0) return stored;
    size_t plane = (size_t)N * r->H * r->W;
    float *slot = net->arena + r->slot_offset[net->backward] * N;
    if (r->made != net->pass_id) {
        prof_push(PROF_BN_RELU);
        if (net->saved_bf16)
            bn_relu_apply_bf16(slot, stored_bf16(m, tt->root, N), net->act_scale + r->affine,
                               net->act_shift + r->affine, r->C, plane);
        else
            bn_relu_apply(slot, stored - tt->choff * plane, net->act_scale + r->affine,
                          net->act_shift + r->affine, r->C, plane);
        prof_pop();
        r->made = net->pass_id;
    }
    return slot + tt->choff * plane;
}

/* Starts a pass: no slot holds activations of it yet. */
static void begin_pass(Model *m, int backward) {
    Net *net = m->net;
    net->backward = backward;
    net->pass_id++;
}

/* Gamma and beta of every unit (1 and 0 for pools into concatenations) where
 * readers of its output find them. */
static void load_affine(Model *m) {
    Net *net = m->net;
    for (int i = 0; i < net->nops; i++) {
        const Op *op = &net->ops[i];
        const Tensor *to = &net->tensors[op->out], *r = &net->tensors[to->root];
        if (r->affine < 0) continue;
        for (int c = 0; c < to->C; c++) {
            int at = r->affine + to->choff + c;
            net->act_scale[at] = op->kind == OP_CONV ? P(m, op->gamma)[c] : 1.0f;
            net->act_shift[at] = op->kind == OP_CONV ? P(m, op->beta)[c] : 0.0f;
        }
    }
}

/* Address of the gradient of tensor t; zeroed first when event ev starts it. */
static float *grad_at(const Model *m, int t, int N, int ev) {
    const Net *net = m->net;
    const Tensor *tt = &net->tensors[t], *r = &net->tensors[tt->root];
    float *root = net->arena + r->grad_offset * N;
    if (r->grad_start == ev) zero_floats(root, (size_t)r->C * r->H * r->W * N);
    return root + (size_t)tt->choff * N * tt->H * tt->W;
}

/* x [N,3,32,32] (NCHW) into the input tensor [3, N, 32, 32] */
static void load_input(Model *m, const float *x, int N) {
    float *in = tensor_at(m, m->net->input, N);
    const int HW = 32 * 32;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < 3; c++)
            memcpy(in + ((size_t)c * N + n) * HW, x + ((size_t)n * 3 + c) * HW, HW * sizeof *x);
}

static void pool_forward(Model *m, const Op *op, int N) {
    Net *net = m->net;
    const Tensor *ti = &net->tensors[op->in];
    const Tensor *to = &net->tensors[op->out];
    const float *in = activations(m, op->in, N);
    float *out = made_at(m, (int)(op - net->ops), 0, N);
    prof_push(PROF_POOL);
    if (op->kind == OP_MAXPOOL)
        maxpool_forward(out, in, ti->C * N, ti->H, ti->W, op->cs.kh, op->cs.sh, op->cs.ph);
    else
        avgpool_forward(out, in, ti->C * N, ti->H, ti->W, op->cs.kh, op->cs.sh, op->cs.ph);
    if (saved_in_bf16(m, &net->tensors[to->root]))      /* into a concatenation saved in bf16 */
        matrix_to_bf16(stored_bf16(m, op->out, N), out, to->C, (int64_t)N * to->H * to->W,
                       (int64_t)N * to->H * to->W);
    prof_pop();
}

/* The tensors of the 1x1 convs grouped with op first: their outputs, and in
 * backward their gradients, which bn_relu_backward leaves in the same place. */
enum { MAX_GROUP = 8 };
static int group_members(const Model *m, int first, int backward, int N, float **rows, int *couts) {
    const Net *net = m->net;
    int g = 0;
    for (int j = first; j < net->nops; j++)
        if (net->ops[j].group == first) {
            if (g == MAX_GROUP) die("internal: more than %d 1x1 convolutions share an input", MAX_GROUP);
            rows[g] = net->ops[j].pooled_output ? net->pool_buf : made_at(m, j, backward, N);
            couts[g++] = net->ops[j].cs.cout;
        }
    return g;
}

/* ---------------- taps ---------------- */

static void tap_dims(const Model *m, const Tap *t, int dims[3]) {
    const Net *net = m->net;
    if (t->kind == TAP_TENSOR) {
        const Tensor *tt = &net->tensors[t->tensor];
        dims[0] = tt->C; dims[1] = tt->H; dims[2] = tt->W;
    } else {
        dims[0] = t->kind == TAP_FEATURES ? net->tensors[net->features].C : m->cfg.classes;
        dims[1] = dims[2] = 1;
    }
}

/* The tap's buffer of what (0 values, 1 gradient) for N images. */
static float *tap_buffer(const Model *m, Tap *t, int grad, int N) {
    int d[3];
    tap_dims(m, t, d);
    size_t n = (size_t)N * d[0] * d[1] * d[2];
    if (n > t->cap) {
        free(t->values); free(t->grad);
        t->values = xmalloc(n * sizeof *t->values);
        t->grad = xmalloc(n * sizeof *t->grad);
        t->cap = n;
    }
    return grad ? t->grad : t->values;
}

/* [C, N, HW] (the arena's layout) to [N, C, HW] */
static void to_nchw(float *dst, const float *src, int C, int N, size_t hw) {
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++)
            memcpy(dst + ((size_t)n * C + c) * hw, src + ((size_t)c * N + n) * hw, hw * sizeof *dst);
}

/* After op i in forward: the values of the taps it completes, from what the arena
 * keeps (a unit's xhat through its BN and ReLU, as its readers see it). */
static void take_tap_values(Model *m, int i, int N) {
    Net *net = m->net;
    for (int k = 0; k < net->ntaps; k++) {
        Tap *t = &net->taps[k];
        if (!(t->on & 1) || t->kind != TAP_TENSOR || t->last_writer != i) continue;
        const Tensor *tt = &net->tensors[t->tensor], *r = &net->tensors[tt->root];
        size_t plane = (size_t)N * tt->H * tt->W;
        float *cn = xmalloc(plane * tt->C * sizeof *cn);
        if (r->affine < 0)
            memcpy(cn, tensor_at(m, t->tensor, N), plane * tt->C * sizeof *cn);
        else if (net->saved_bf16)
            bn_relu_apply_bf16(cn, stored_bf16(m, t->tensor, N), net->act_scale + r->affine + tt->choff,
                               net->act_shift + r->affine + tt->choff, tt->C, plane);
        else
            bn_relu_apply(cn, tensor_at(m, t->tensor, N), net->act_scale + r->affine + tt->choff,
                          net->act_shift + r->affine + tt->choff, tt->C, plane);
        to_nchw(tap_buffer(m, t, 0, N), cn, tt->C, N, (size_t)tt->H * tt->W);
        free(cn);
    }
}

/* Before backward event ev: the gradients of the taps whose module output it is
 * about to consume, whole now (every reader's backward has run). */
static void take_tap_grads(Model *m, int ev, int N) {
    Net *net = m->net;
    for (int k = 0; k < net->ntaps; k++) {
        Tap *t = &net->taps[k];
        if (!(t->on & 2) || t->kind != TAP_TENSOR || t->first_backward != ev) continue;
        const Tensor *tt = &net->tensors[t->tensor], *r = &net->tensors[tt->root];
        const float *g = net->arena + r->grad_offset * N + (size_t)tt->choff * N * tt->H * tt->W;
        to_nchw(tap_buffer(m, t, 1, N), g, tt->C, N, (size_t)tt->H * tt->W);
    }
}

/* The head's taps: features [C, N], logits [N, K] (values or gradients). */
static void take_head_taps(Model *m, TapKind kind, int grad, const float *src, int N) {
    Net *net = m->net;
    for (int k = 0; k < net->ntaps; k++) {
        Tap *t = &net->taps[k];
        if (!(t->on & (grad ? 2 : 1)) || t->kind != kind) continue;
        int d[3];
        tap_dims(m, t, d);
        float *dst = tap_buffer(m, t, grad, N);
        if (kind == TAP_FEATURES) to_nchw(dst, src, d[0], N, 1);
        else memcpy(dst, src, (size_t)N * d[0] * sizeof *dst);
    }
}

int model_tap_count(const Model *m) { return m->net->ntaps; }
const char *model_tap_name(const Model *m, int tap) { return m->net->taps[tap].name; }

int model_tap_find(const Model *m, const char *name) {
    for (int k = 0; k < m->net->ntaps; k++) if (!strcmp(m->net->taps[k].name, name)) return k;
    return -1;
}

int model_tap_shape(const Model *m, int tap, int dims[3]) {
    const Tap *t = &m->net->taps[tap];
    tap_dims(m, t, dims);
    return t->kind == TAP_LOGITS || t->kind == TAP_AUX_LOGITS ? 2 : 4;
}

void model_tap_on(Model *m, int tap, int what) {
    Net *net = m->net;
    Tap *t = &net->taps[tap];
    t->on = what;
    if (t->kind == TAP_TENSOR) {      /* the ops that write into the module's channels */
        const Tensor *tt = &net->tensors[t->tensor];
        t->last_writer = -1;
        t->first_backward = net->nops + 1;
        for (int i = 0; i < net->nops; i++) {
            const Tensor *o = &net->tensors[net->ops[i].out];
            if (o->root != tt->root || o->choff >= tt->choff + tt->C || o->choff + o->C <= tt->choff) continue;
            t->last_writer = i;
            if (net->backward_event[i] < t->first_backward) t->first_backward = net->backward_event[i];
        }
    }
    net->taps_on = 0;
    for (int k = 0; k < net->ntaps; k++) net->taps_on |= net->taps[k].on;
}

const float *model_tap_values(const Model *m, int tap, int grad) {
    const Tap *t = &m->net->taps[tap];
    if (!(t->on & (grad ? 2 : 1))) return NULL;
    return grad ? t->grad : t->values;
}

/* Forward through every op; train selects batch statistics (in groups). */
static void forward_ops(Model *m, int N, int train, int groups) {
    Net *net = m->net;
    load_affine(m);
    begin_pass(m, 0);
    for (int i = 0; i < net->nops; i++) {
        const Op *op = &net->ops[i];
        const Tensor *ti = &net->tensors[op->in], *to = &net->tensors[op->out];
        if (op->kind != OP_CONV) {
            pool_forward(m, op, N);
            if (net->taps_on) take_tap_values(m, i, N);
            continue;
        }
        BatchNorm *bn = &m->bns[op->bn];
        float *y = made_at(m, i, 0, N);          /* conv output, then xhat in place */
        uint16_t *xhat16 = net->saved_bf16 ? stored_bf16(m, op->out, N) : NULL;
        float *rm = m->buffers + bn->offset, *rv = rm + bn->channels;
        int64_t M = (int64_t)N * to->H * to->W;
        prof_push(prof_conv_kind(op->cs.kh, op->cs.kw));
        if (op->group < 0) {
            (op->pooled_input ? conv_pooled_forward : conv_forward)(op->pooled_output ? net->pool_buf : y,
                activations(m, op->in, N), P(m, op->weight), &op->cs, N, ti->H, ti->W, net->scratch);
        } else if (op->group == i) {          /* the whole group; the others' outputs wait */
            float *outs[MAX_GROUP];
            int couts[MAX_GROUP], members = group_members(m, i, 0, N, outs, couts);
            conv1x1_group_forward(outs, couts, members, activations(m, op->in, N), P(m, op->weight),
                                  op->cs.cin, (int64_t)N * ti->H * ti->W, net->scratch);
        }
        prof_pop();
        if (op->pooled_output) {
            prof_push(PROF_POOL);
            avgpool_forward(y, net->pool_buf, to->C * N, to->H, to->W, 3, 1, 1);
            prof_pop();
        }
        prof_push(PROF_BN_RELU);
        if (train) {
            size_t bn_base = (bn->offset / 2) * groups;
            bn_forward_train(y, xhat16, net->bn_mean + bn_base, net->bn_istd + bn_base, rm, rv, bn->channels,
                             M, groups, BN_MOMENTUM, BN_EPS);
            bn->batches_tracked++;
        } else {
            bn_forward_eval(y, xhat16, rm, rv, bn->channels, M, BN_EPS);
        }
        prof_pop();
        if (net->taps_on) take_tap_values(m, i, N);
    }
}

/* Param p's gradient is final; tell grads_ready when the final suffix grows. */
static void grad_done(Model *m, int p) {
    Net *net = m->net;
    if (!m->grads_ready) return;
    net->grad_final[p] = 1;
    int f = net->grad_frontier;
    while (f > 0 && net->grad_final[f - 1]) f--;
    if (f == net->grad_frontier) return;
    net->grad_frontier = f;
    m->grads_ready(m->grads_ready_ctx, f ? m->pinfo[f].offset : 0);
}

static void backward_ops(Model *m, int N, int groups) {
    Net *net = m->net;
    begin_pass(m, 1);
    for (int ev = 1; ev <= net->nops; ev++) {
        int i = net->backward_order[ev - 1];
        const Op *op = &net->ops[i];
        const Tensor *ti = &net->tensors[op->in], *to = &net->tensors[op->out];
        if (net->taps_on) take_tap_grads(m, ev, N);
        float *dout = grad_at(m, op->out, N, ev);
        float *din = op->in == net->input ? NULL : grad_at(m, op->in, N, ev);
        if (op->kind == OP_CONV) {
            const BatchNorm *bn = &m->bns[op->bn];
            float *xhat = made_at(m, i, 1, N);        /* becomes the conv output's gradient */
            prof_push(PROF_BN_RELU);
            bn_relu_backward(xhat, net->saved_bf16 ? stored_bf16(m, op->out, N) : NULL,
                             G(m, op->gamma), G(m, op->beta), dout, P(m, op->gamma), P(m, op->beta),
                             net->bn_istd + (bn->offset / 2) * groups, bn->channels,
                             (int64_t)N * to->H * to->W, groups);
            prof_pop();
            grad_done(m, op->gamma);
            grad_done(m, op->beta);
            if (op->pooled_output) {          /* d(conv output), there until the conv's backward */
                prof_push(PROF_POOL);
                zero_floats(net->pool_buf, (size_t)to->C * N * to->H * to->W);
                avgpool_backward(net->pool_buf, xhat, to->C * N, to->H, to->W, 3, 1, 1);
                prof_pop();
            }
            if (op->group >= 0 && op->group != i) continue;   /* with the group's first op */
            const float *in = activations(m, op->in, N);
            prof_push(prof_conv_kind(op->cs.kh, op->cs.kw));
            if (op->group < 0) {
                (op->pooled_input ? conv_pooled_backward : conv_backward)(din, G(m, op->weight),
                    op->pooled_output ? net->pool_buf : xhat, in, P(m, op->weight), &op->cs, N, ti->H,
                    ti->W, net->scratch);
            } else {              /* the last of its group backward visits: all their dy are ready */
                float *douts[MAX_GROUP];
                int couts[MAX_GROUP], members = group_members(m, i, 1, N, douts, couts);
                conv1x1_group_backward(din, G(m, op->weight), douts, couts, members, in, P(m, op->weight),
                                       op->cs.cin, (int64_t)N * ti->H * ti->W, net->scratch);
            }
            prof_pop();
            for (int j = i; j < net->nops; j++)         /* this op's weight, or its group's */
                if (j == i || net->ops[j].group == i) grad_done(m, net->ops[j].weight);
        } else if (din) {
            if (op->kind == OP_MAXPOOL) {
                const float *in = activations(m, op->in, N);
                prof_push(PROF_POOL);
                maxpool_backward(din, dout, in, ti->C * N, ti->H, ti->W, op->cs.kh, op->cs.sh, op->cs.ph);
            } else {
                prof_push(PROF_POOL);
                avgpool_backward(din, dout, ti->C * N, ti->H, ti->W, op->cs.kh, op->cs.sh, op->cs.ph);
            }
            prof_pop();
        }
    }
}

double model_train_step(Model *m, const float *x, const int64_t *y, const float *targets, int N, int groups,
                        uint64_t dropout_seed, const uint64_t *keys, float *logits_out) {
    Net *net = m->net;
    if (groups < 1 || N % groups) die("batch of %d images does not split into %d BN groups", N, groups);
    if (N / groups < 2) die("batch norm in training needs at least 2 images per group (got %d)", N / groups);
    ensure_capacity(m, N, 1);
    prof_push(PROF_INPUT);
    load_input(m, x, N);
    prof_pop();
    forward_ops(m, N, 1, groups);

    prof_push(PROF_HEAD);
    const Tensor *tf = &net->tensors[net->features];
    int C = tf->C, K = m->cfg.classes, HW = tf->H * tf->W;
    gap_forward(net->feat, activations(m, net->features, N), C, N, HW);
    if (net->taps_on) take_head_taps(m, TAP_FEATURES, 0, net->feat, N);
    if (m->cfg.dropout > 0) dropout_forward(net->feat, net->drop_mask, C, N, m->cfg.dropout, dropout_seed, keys);
    linear_forward(net->logits, net->feat, P(m, net->linear_w), P(m, net->linear_b), C, N, K);
    double loss = softmax_xent(net->dlogits, net->logits, y, targets, N, K, m->label_smoothing, 1.0f);
    if (net->taps_on) {
        take_head_taps(m, TAP_LOGITS, 0, net->logits, N);
        take_head_taps(m, TAP_LOGITS, 1, net->dlogits, N);
    }
    if (logits_out) memcpy(logits_out, net->logits, (size_t)N * K * sizeof *logits_out);

    zero_floats(m->grads, m->nparam_floats);
    if (m->grads_ready) {
        if (!net->grad_final) net->grad_final = xmalloc(m->nparams);
        memset(net->grad_final, 0, m->nparams);
        net->grad_frontier = m->nparams;
    }
    memset(net->dfeat, 0, (size_t)C * N * sizeof *net->dfeat);
    linear_backward(net->dfeat, G(m, net->linear_w), G(m, net->linear_b), net->dlogits, net->feat,
                    P(m, net->linear_w), C, N, K);
    grad_done(m, net->linear_w);
    grad_done(m, net->linear_b);
    if (m->cfg.dropout > 0) dropout_backward(net->dfeat, net->drop_mask, (int64_t)C * N, m->cfg.dropout);
    if (net->taps_on) take_head_taps(m, TAP_FEATURES, 1, net->dfeat, N);
    gap_backward(grad_at(m, net->features, N, 0), net->dfeat, C, N, HW);

    if (net->aux_input >= 0) {
        const Tensor *ta = &net->tensors[net->aux_input];
        int Ca = ta->C, HWa = ta->H * ta->W;
        gap_forward(net->aux_feat, activations(m, net->aux_input, N), Ca, N, HWa);
        linear_forward(net->aux_logits, net->aux_feat, P(m, net->aux_w), P(m, net->aux_b), Ca, N, K);
        loss += AUX_LOSS_WEIGHT * softmax_xent(net->daux_logits, net->aux_logits, y, targets, N, K, m->label_smoothing,
                                               AUX_LOSS_WEIGHT);
        if (net->taps_on) {
            take_head_taps(m, TAP_AUX_LOGITS, 0, net->aux_logits, N);
            take_head_taps(m, TAP_AUX_LOGITS, 1, net->daux_logits, N);
        }
        memset(net->daux_feat, 0, (size_t)Ca * N * sizeof *net->daux_feat);
        linear_backward(net->daux_feat, G(m, net->aux_w), G(m, net->aux_b), net->daux_logits, net->aux_feat,
                        P(m, net->aux_w), Ca, N, K);
        grad_done(m, net->aux_w);
        grad_done(m, net->aux_b);
        gap_backward(grad_at(m, net->aux_input, N, 0), net->daux_feat, Ca, N, HWa);
    }
    prof_pop();
    backward_ops(m, N, groups);
    if (m->grads_ready && net->grad_frontier)
        die("internal: the gradient of %s was never marked final", m->pinfo[net->grad_frontier - 1].name);
    return loss;
}

void model_eval(Model *m, const float *x, int N, float *logits) {
    Net *net = m->net;
    ensure_capacity(m, N, 0);
    load_input(m, x, N);
    forward_ops(m, N, 0, 1);
    const Tensor *tf = &net->tensors[net->features];
    int C = tf->C;
    gap_forward(net->feat, activations(m, net->features, N), C, N, tf->H * tf->W);
    linear_forward(logits, net->feat, P(m, net->linear_w), P(m, net->linear_b), C, N, m->cfg.classes);
    if (net->taps_on) {
        take_head_taps(m, TAP_FEATURES, 0, net->feat, N);
        take_head_taps(m, TAP_LOGITS, 0, logits, N);
    }
}

const float *model_aux_logits(const Model *m) { return m->net->aux_logits; }

size_t model_arena_floats(Model *m, int training, size_t *peak) {
    Net *net = m->net;
    net->saved_bf16 = gemm_autocast();
    plan_memory(m, training);
    net->plan_training = -1;        /* the next step plans (and allocates) for itself */
    *peak = net->arena_peak_per_image;
    return net->arena_per_image;
}

void model_ema_update(Model *m, double decay, uint64_t step) {
    size_t np = m->nparam_floats, n = np + m->nbuffer_floats;
    if (!m->ema) {
        m->ema = xmalloc(n * sizeof *m->ema);
        memcpy(m->ema, m->params, np * sizeof *m->ema);
        memcpy(m->ema + np, m->buffers, m->nbuffer_floats * sizeof *m->ema);
        return;
    }
    double warm = (1.0 + step) / (10.0 + step);
    float d = (float)(decay < warm ? decay : warm), e = 1.0f - d;
    float *ema = m->ema;
    const float *w = m->params, *b = m->buffers;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) ema[i] = d * ema[i] + e * (i < np ? w[i] : b[i - np]);
}

void model_use_ema(Model *m) {
    if (!m->ema) die("the checkpoint keeps no moving average of the weights (train with --ema)");
    memcpy(m->params, m->ema, m->nparam_floats * sizeof *m->params);
    memcpy(m->buffers, m->ema + m->nparam_floats, m->nbuffer_floats * sizeof *m->buffers);
}

void model_sgd(Model *m, float lr, float momentum, float weight_decay, int nesterov) {
    prof_push(PROF_OPTIMIZER);
    sgd_update(m->params, m->grads, m->momentum, m->nparam_floats, lr, momentum, weight_decay, nesterov);
    prof_pop();
}
