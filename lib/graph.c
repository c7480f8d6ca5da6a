/* graph.c - how a network definition's calls (graph.h) append tensors, ops,
 * parameters and taps to a model's graph. */
#include "net.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int scale_channels(int c, double width) {
    int s = (int)floor(c * width + 0.5);
    return s < 1 ? 1 : s;
}

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

static int make_output(Model *m, Dest d, int C, int H, int W) {
    if (d.root < 0) return add_tensor(m, C, H, W, -1, 0);
    const Tensor *r = &m->net->tensors[d.root];
    if (r->H != H || r->W != W || d.choff + C > r->C)
        die("internal: branch of %dx%d@%d does not fit its concatenation", C, H, W);
    return add_tensor(m, C, H, W, d.root, d.choff);
}

/* conv (no bias) -> BN -> ReLU, named like PyTorch's BasicConv2d */
int unit(Model *m, const char *name, int in, Dest d, int cout_full,
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
int pooled_unit(Model *m, const char *name, int in, Dest d, int cout_full) {
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
int pooled_after_unit(Model *m, const char *name, int in, Dest d, int cout_full) {
    Net *net = m->net;
    int out = unit(m, name, in, d, cout_full, 1, 1, 1, 0, 0);
    const Tensor *t = &net->tensors[out];
    size_t size = (size_t)t->C * t->H * t->W;
    if (size > net->pool_per_image) net->pool_per_image = size;
    net->ops[net->nops - 1].pooled_output = 1;
    return out;
}

/* A pool's output is stored like any tensor's (the arena keeps it only while needed). */
int pool(Model *m, OpKind kind, int in, Dest d, int k, int s, int p) {
    const Tensor t = m->net->tensors[in];     /* a copy: make_output may move the array */
    int out = make_output(m, d, t.C, conv_out(t.H, k, s, p), conv_out(t.W, k, s, p));
    Op *op = add_op(m, kind, in, out);
    op->cs = (ConvShape){ t.C, t.C, k, k, s, s, p, p };
    return out;
}

int concat(Model *m, int channels, int H, int W) {
    return add_tensor(m, channels, H, W, -1, 0);
}

Shape shape_of(const Model *m, int tensor) {
    const Tensor *t = &m->net->tensors[tensor];
    return (Shape){ t->C, t->H, t->W };
}

int graph_input(Model *m, int C, int H, int W) {
    return m->net->input = add_tensor(m, C, H, W, -1, 0);
}

void tap(Model *m, const char *name, int tensor) {
    add_tap(m, name, TAP_TENSOR, tensor);
}

void classifier(Model *m, int features) {
    Net *net = m->net;
    net->features = features;
    add_tap(m, "avgpool", TAP_FEATURES, features);
    add_tap(m, "linear", TAP_LOGITS, -1);
    int K = m->cfg.classes, C = net->tensors[features].C;
    net->linear_w = add_param(m, "linear.weight", PARAM_WEIGHT, 2, (int64_t[]){ K, C });
    net->linear_b = add_param(m, "linear.bias", PARAM_BIAS, 1, (int64_t[]){ K });
}

void aux_classifier(Model *m, const char *name, int x) {
    Net *net = m->net;
    char n[112];
    net->aux_input = x;
    int K = m->cfg.classes, C = net->tensors[x].C;
    snprintf(n, sizeof n, "%s.weight", name);
    net->aux_w = add_param(m, n, PARAM_WEIGHT, 2, (int64_t[]){ K, C });
    snprintf(n, sizeof n, "%s.bias", name);
    net->aux_b = add_param(m, n, PARAM_BIAS, 1, (int64_t[]){ K });
    add_tap(m, name, TAP_AUX_LOGITS, -1);
    const char *dot = strrchr(name, '.');
    if (dot) {
        snprintf(n, sizeof n, "%.*s", (int)(dot - name), name);
        add_tap(m, n, TAP_AUX_LOGITS, -1);
    }
}
