/* model.c - graph construction, forward, backward and SGD for InceptionV3. */
#include "model.h"
#include "gemm.h"
#include "profile.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f
#define AUX_LOSS_WEIGHT 0.4f

int scale_channels(int c, double width) {
    int s = (int)floor(c * width + 0.5);
    return s < 1 ? 1 : s;
}

/* ---------------- graph construction ---------------- */

/* root < 0: a new tensor; else channels [choff, choff + C) of root. */
static int add_tensor(Model *m, int C, int H, int W, int root, int choff) {
    m->tensors = xrealloc(m->tensors, (m->ntensors + 1) * sizeof *m->tensors);
    Tensor *t = &m->tensors[m->ntensors];
    *t = (Tensor){ .C = C, .H = H, .W = W, .root = root < 0 ? m->ntensors : root, .choff = choff,
                   .grad_start = -1, .affine = -1 };
    return m->ntensors++;
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
    m->ops = xrealloc(m->ops, (m->nops + 1) * sizeof *m->ops);
    Op *op = &m->ops[m->nops++];
    memset(op, 0, sizeof *op);
    op->kind = kind; op->in = in; op->out = out; op->group = -1;
    return op;
}

/* Where an op writes: a new tensor (dst < 0) or channels at choff of dst. */
typedef struct { int root, choff; } Dest;
static const Dest NEW = { -1, 0 };
static Dest into(int root, int choff) { return (Dest){ root, choff }; }

static int make_output(Model *m, Dest d, int C, int H, int W) {
    if (d.root < 0) return add_tensor(m, C, H, W, -1, 0);
    const Tensor *r = &m->tensors[d.root];
    if (r->H != H || r->W != W || d.choff + C > r->C)
        die("internal: branch of %dx%d@%d does not fit its concatenation", C, H, W);
    return add_tensor(m, C, H, W, d.root, d.choff);
}

/* conv (no bias) -> BN -> ReLU, named like PyTorch's BasicConv2d */
static int unit(Model *m, const char *name, int in, Dest d, int cout_full,
                int kh, int kw, int s, int ph, int pw) {
    const Tensor *t = &m->tensors[in];  /* read before make_output moves the array */
    int cin = t->C, cout = scale_channels(cout_full, m->cfg.width);
    int H = t->H, W = t->W;
    int Ho = conv_out(H, kh, s, ph), Wo = conv_out(W, kw, s, pw);
    int out = make_output(m, d, cout, Ho, Wo);
    Tensor *r = &m->tensors[m->tensors[out].root];
    if (r->affine < 0) { r->affine = m->affine_channels; m->affine_channels += r->C; }
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
    return out;
}

/* Inception-A's pool branch, avgpool 3x3 s1 p1 and a 3x3 conv, as one op
 * that pools image by image in cache: the pooled tensor is never stored. */
static int pooled_unit(Model *m, const char *name, int in, Dest d, int cout_full) {
    int out = unit(m, name, in, d, cout_full, 3, 3, 1, 1, 1);
    m->ops[m->nops - 1].pooled_input = 1;
    return out;
}

/* Inception-C and E's pool branch, avgpool 3x3 s1 p1 then a 1x1 conv, as
 * the conv then the pool: both are linear and the pool's divisor is always 9,
 * so the order does not change the function, and pooling the conv's 192
 * channels costs a quarter to a tenth of pooling its 768 to 2048. The conv's
 * output waits in pool_buf (forward) and its gradient there (backward). */
static int pooled_after_unit(Model *m, const char *name, int in, Dest d, int cout_full) {
    int out = unit(m, name, in, d, cout_full, 1, 1, 1, 0, 0);
    const Tensor *t = &m->tensors[out];
    size_t size = (size_t)t->C * t->H * t->W;
    if (size > m->pool_per_image) m->pool_per_image = size;
    m->ops[m->nops - 1].pooled_output = 1;
    return out;
}

/* A pool's output is stored like any tensor's (the arena keeps it only while needed). */
static int pool(Model *m, OpKind kind, int in, Dest d, int k, int s, int p) {
    const Tensor t = m->tensors[in];     /* a copy: make_output may move the array */
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
    const Tensor *t = &m->tensors[x];
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
    return out;
}

static int inception_b(Model *m, const char *b, int x) {
    double w = m->cfg.width;
    const Tensor *t = &m->tensors[x];
    int c3 = scale_channels(384, w), cs = scale_channels(96, w);
    int Ho = conv_out(t->H, 3, 2, 0), Wo = conv_out(t->W, 3, 2, 0);
    int out = concat(m, c3 + cs + t->C, Ho, Wo);
    char n[96];
    unit(m, nm(n, b, "branch3x3"), x, into(out, 0), 384, 3, 3, 2, 0, 0);
    int y = unit(m, nm(n, b, "branch3x3stack.0"), x, NEW, 64, 1, 1, 1, 0, 0);
    y = unit(m, nm(n, b, "branch3x3stack.1"), y, NEW, 96, 3, 3, 1, 1, 1);
    unit(m, nm(n, b, "branch3x3stack.2"), y, into(out, c3), 96, 3, 3, 2, 0, 0);
    pool(m, OP_MAXPOOL, x, into(out, c3 + cs), 3, 2, 0);
    return out;
}

static int inception_c(Model *m, const char *b, int x, int c7) {
    double w = m->cfg.width;
    const Tensor *t = &m->tensors[x];
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
    return out;
}

static int inception_d(Model *m, const char *b, int x) {
    double w = m->cfg.width;
    const Tensor *t = &m->tensors[x];
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
    pool(m, OP_AVGPOOL, x, into(out, c3 + c7), 3, 2, 0);
    return out;
}

static int inception_e(Model *m, const char *b, int x) {
    double w = m->cfg.width;
    const Tensor *t = &m->tensors[x];
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
    return out;
}

/* One arena holds everything of a step whose size grows with the batch: what
 * forward saves for backward (each unit's xhat, pools' outputs, the input),
 * the activations remade from an xhat while its readers need them (the
 * "slot" of a root, once in forward and once in backward), and the gradients
 * of tensors in backward. On one timeline (op i's forward at i, the head at
 * nops, op i's backward at nops + backward_event[i]) each lives from its first
 * use to its last, and buffers whose lives do not overlap share memory: the
 * largest first, each at the lowest offset free throughout its life. So
 * backward's gradients and slots take the place of the activations it has
 * finished with, and the arena comes within 1% of the most that is ever live
 * at once (at width 1). Inference plans forward alone: a saved tensor lives
 * only until its last reader has run. */
typedef struct { size_t *offset, size; int start, end, order; } Block;

static int block_largest_first(const void *a, const void *b) {
    const Block *x = a, *y = b;
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return x->order - y->order;
}

static void add_block(Block *blocks, int *n, size_t *offset, size_t size, const int life[2]) {
    blocks[*n] = (Block){ offset, size, life[0], life[1], *n };
    ++*n;
}

/* Under autocast the units' xhat (roots with affine) is saved in bf16. */
static int saved_in_bf16(const Model *m, const Tensor *root) {
    return m->saved_bf16 && root->affine >= 0;
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
    int nops = m->nops, n = 0, npending = 0, *pending = xmalloc(nops * sizeof *pending);
    m->backward_order = xmalloc(nops * sizeof *m->backward_order);
    m->backward_event = xmalloc(nops * sizeof *m->backward_event);
    for (int i = nops - 1; i >= -1; i--) {           /* -1: the pools still waiting */
        int k = 0;
        for (int j = 0; j < npending; j++) {
            int root = m->tensors[m->ops[pending[j]].in].root;
            if (i < 0 || m->tensors[m->ops[i].in].root == root || m->tensors[m->ops[i].out].root == root)
                m->backward_order[n++] = pending[j];
            else
                pending[k++] = pending[j];
        }
        npending = k;
        if (i < 0) break;
        if (m->ops[i].kind == OP_AVGPOOL) pending[npending++] = i;
        else m->backward_order[n++] = i;
    }
    for (int k = 0; k < nops; k++) m->backward_event[m->backward_order[k]] = k + 1;
    free(pending);
}

static void plan_memory(Model *m, int training) {
    int n = m->ntensors, nops = m->nops;
    int (*stored)[2] = xmalloc(n * sizeof *stored), (*grad)[2] = xmalloc(n * sizeof *grad),
        (*slot)[2][2] = xmalloc(n * sizeof *slot);
    for (int t = 0; t < n; t++) {
        stored[t][0] = grad[t][0] = slot[t][0][0] = slot[t][1][0] = -1;
        stored[t][1] = grad[t][1] = slot[t][0][1] = slot[t][1][1] = -1;
    }
#define ROOT(t) m->tensors[t].root
    use_at(stored[m->input], 0);
    for (int i = 0; i < nops; i++) {                 /* forward; a 1x1 group's first op writes all */
        const Op *op = &m->ops[i];
        use_at(stored[ROOT(op->in)], i);
        use_at(slot[ROOT(op->in)][0], i);
        use_at(stored[ROOT(op->out)], op->group >= 0 ? op->group : i);
        use_at(stored[ROOT(op->out)], i);
    }
    use_at(stored[ROOT(m->features)], nops);         /* the head */
    use_at(slot[ROOT(m->features)][0], nops);
    if (m->aux_input >= 0) {
        use_at(stored[ROOT(m->aux_input)], nops);
        use_at(slot[ROOT(m->aux_input)][0], nops);
    }
    if (training) {
        use_at(grad[ROOT(m->features)], nops);
        if (m->aux_input >= 0) use_at(grad[ROOT(m->aux_input)], nops);
    }
    for (int i = 0; i < nops && training; i++) {     /* backward */
        const Op *op = &m->ops[i];
        int at = nops + m->backward_event[i], in = ROOT(op->in), out = ROOT(op->out);
        /* BN backward leaves the conv output's gradient in the xhat; a 1x1 group's
         * first op reads them all */
        use_at(stored[out], op->group >= 0 ? nops + m->backward_event[op->group] : at);
        use_at(grad[out], at);
        if (in != m->input) use_at(grad[in], at);
        if (op->kind == OP_AVGPOOL || (op->group >= 0 && op->group != i)) continue;
        use_at(stored[in], at);                      /* the conv's or max pool's input */
        use_at(slot[in][1], at);
    }
#undef ROOT
    Block *blocks = xmalloc((4 * n + 2 * nops) * sizeof *blocks);
    int nblocks = 0;
    for (int i = 0; i < nops; i++) {                 /* fp32 outputs of ops saved in bf16 */
        Op *op = &m->ops[i];
        const Tensor *to = &m->tensors[op->out];
        if (!saved_in_bf16(m, &m->tensors[to->root])) continue;
        size_t size = (size_t)to->C * to->H * to->W;
        int first = op->group >= 0 ? op->group : i;
        add_block(blocks, &nblocks, &op->stage_offset[0], size, (int[]){ first, i });
        if (op->kind == OP_CONV && training)
            add_block(blocks, &nblocks, &op->stage_offset[1], size,
                      (int[]){ nops + m->backward_event[i], nops + m->backward_event[first] });
    }
    for (int t = 0; t < n; t++) {
        Tensor *r = &m->tensors[t];
        if (r->root != t) continue;
        size_t size = (size_t)r->C * r->H * r->W, half = (size + 1) / 2;
        if (stored[t][0] >= 0)
            add_block(blocks, &nblocks, &r->offset, saved_in_bf16(m, r) ? half : size, stored[t]);
        for (int pass = 0; pass < 2; pass++)
            if (r->affine >= 0 && slot[t][pass][0] >= 0)
                add_block(blocks, &nblocks, &r->slot_offset[pass], size, slot[t][pass]);
        r->grad_start = grad[t][0] < 0 ? -1 : grad[t][0] - nops;
        if (grad[t][0] >= 0) add_block(blocks, &nblocks, &r->grad_offset, size, grad[t]);
    }
    qsort(blocks, nblocks, sizeof *blocks, block_largest_first);
    m->arena_per_image = 0;
    for (int b = 0; b < nblocks; b++) {
        Block *x = &blocks[b];
        size_t off = 0;
        for (int moved = 1; moved;) {                /* lowest gap among those placed that fits */
            moved = 0;
            for (int j = 0; j < b; j++) {
                const Block *y = &blocks[j];
                if (y->start <= x->end && x->start <= y->end &&
                    off < *y->offset + y->size && *y->offset < off + x->size) {
                    off = *y->offset + y->size;
                    moved = 1;
                }
            }
        }
        *x->offset = off;
        if (off + x->size > m->arena_per_image) m->arena_per_image = off + x->size;
    }
    free(blocks); free(stored); free(grad); free(slot);
}

static int is_pointwise_conv(const Op *op) {
    return op->kind == OP_CONV && conv_is_pointwise(&op->cs);
}

/* 1x1 convs reading one tensor (an Inception block's input feeds three) form
 * a group, and their weights are laid out one after another so that the
 * group's is one [rows, cin] matrix. Offsets only move: names, order of
 * initialisation and checkpoints stay as they are. */
static void plan_groups(Model *m) {
    for (int i = 0; i < m->nops; i++) {
        Op *a = &m->ops[i];
        if (!is_pointwise_conv(a) || a->group >= 0) continue;
        for (int j = i + 1; j < m->nops; j++)
            if (is_pointwise_conv(&m->ops[j]) && m->ops[j].in == a->in) m->ops[j].group = a->group = i;
    }
    int *op_of = xmalloc(m->nparams * sizeof *op_of);
    for (int p = 0; p < m->nparams; p++) op_of[p] = -1;
    for (int i = 0; i < m->nops; i++) if (m->ops[i].kind == OP_CONV) op_of[m->ops[i].weight] = i;
    size_t off = 0;
    for (int p = 0; p < m->nparams; p++) {
        int i = op_of[p];
        if (i >= 0 && m->ops[i].group >= 0 && m->ops[i].group != i) continue;   /* placed with its group */
        if (i < 0 || m->ops[i].group < 0) { m->pinfo[p].offset = off; off += m->pinfo[p].size; continue; }
        for (int j = i; j < m->nops; j++)
            if (m->ops[j].group == i) {
                Param *w = &m->pinfo[m->ops[j].weight];
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
    m->cfg = *cfg;
    m->input = add_tensor(m, 3, 32, 32, -1, 0);
    int x = unit(m, "Conv2d_1a_3x3", m->input, NEW, 32, 3, 3, 1, 1, 1);
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
    m->features = x;
    int K = cfg->classes, C = m->tensors[x].C;
    m->linear_w = add_param(m, "linear.weight", PARAM_WEIGHT, 2, (int64_t[]){ K, C });
    m->linear_b = add_param(m, "linear.bias", PARAM_BIAS, 1, (int64_t[]){ K });
    m->aux_input = m->aux_w = m->aux_b = -1;
    if (cfg->aux) {
        int y = pool(m, OP_AVGPOOL, aux_from, NEW, 5, 3, 0);
        y = unit(m, "AuxLogits.conv0", y, NEW, 128, 1, 1, 1, 0, 0);
        const Tensor *t = &m->tensors[y];
        y = unit(m, "AuxLogits.conv1", y, NEW, 768, t->H, t->W, 1, 0, 0);
        m->aux_input = y;
        int ca = m->tensors[y].C;
        m->aux_w = add_param(m, "AuxLogits.fc.weight", PARAM_WEIGHT, 2, (int64_t[]){ K, ca });
        m->aux_b = add_param(m, "AuxLogits.fc.bias", PARAM_BIAS, 1, (int64_t[]){ K });
    }
    plan_groups(m);
    plan_backward_order(m);
    m->plan_training = -1;          /* the arena is planned when a step needs it */
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
    if (m->nparam_floats > MAX_MODEL_PARAMS)
        die("a model of %d classes at width %g has %zu parameters, over the %d million incv3 allocates",
            cfg->classes, cfg->width, m->nparam_floats, MAX_MODEL_PARAMS / 1000000);
    m->act_scale = xcalloc(m->affine_channels, sizeof *m->act_scale);
    m->act_shift = xcalloc(m->affine_channels, sizeof *m->act_shift);
    m->params = xcalloc(m->nparam_floats, sizeof *m->params);
    m->grads = xcalloc(m->nparam_floats, sizeof *m->grads);
    m->momentum = xcalloc(m->nparam_floats, sizeof *m->momentum);
    m->buffers = xcalloc(m->nbuffer_floats, sizeof *m->buffers);
    return m;
}

void model_free(Model *m) {
    if (!m) return;
    free(m->pinfo); free(m->bns); free(m->tensors); free(m->ops);
    free(m->params); free(m->grads); free(m->momentum); free(m->buffers);
    free(m->act_scale); free(m->act_shift);
    free(m->arena); free(m->pool_buf); free(m->scratch); free(m->bn_mean);
    free(m->bn_istd); free(m->feat); free(m->dfeat); free(m->logits); free(m->dlogits);
    free(m->aux_feat); free(m->daux_feat); free(m->aux_logits); free(m->daux_logits);
    free(m->drop_mask); free(m->grad_final); free(m->backward_order); free(m->backward_event); free(m);
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
    size_t need = 0;
    for (int i = 0; i < m->nops; i++) {
        const Op *op = &m->ops[i];
        if (op->kind != OP_CONV) continue;
        const Tensor *t = &m->tensors[op->in];
        size_t s = 2 * (op->pooled_input ? conv_pooled_scratch_floats : conv_scratch_floats)(&op->cs, N, t->H, t->W);
        if (op->group == i) {
            int rows = 0;
            for (int j = i; j < m->nops; j++) if (m->ops[j].group == i) rows += m->ops[j].cs.cout;
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
    int bf16 = gemm_autocast(), same_plan = m->plan_training == training && m->saved_bf16 == bf16;
    if (same_plan && N <= m->capacity && m->capacity_threads == max_threads()) return;
    if (N < m->capacity) N = m->capacity;        /* threads or plan changed: same size */
    if (!same_plan) {
        m->saved_bf16 = bf16;
        m->plan_training = training;
        plan_memory(m, training);
    }
    size_t C = m->tensors[m->features].C, K = m->cfg.classes, bnc = bn_channels(m);
    free(m->arena); free(m->scratch);
    free(m->bn_mean); free(m->bn_istd); free(m->feat); free(m->dfeat);
    free(m->logits); free(m->dlogits); free(m->drop_mask);
    free(m->aux_feat); free(m->daux_feat); free(m->aux_logits); free(m->daux_logits);
    m->arena = xmalloc(m->arena_per_image * N * sizeof(float));
    free(m->pool_buf);
    m->pool_buf = xmalloc(m->pool_per_image * N * sizeof(float));
    m->scratch_floats = scratch_need(m, N);
    m->scratch = xmalloc(m->scratch_floats * sizeof(float));
    m->bn_mean = xmalloc(bnc * N * sizeof(float));
    m->bn_istd = xmalloc(bnc * N * sizeof(float));
    m->feat = xmalloc(C * N * sizeof(float));
    m->dfeat = xmalloc(C * N * sizeof(float));
    m->logits = xmalloc(K * N * sizeof(float));
    m->dlogits = xmalloc(K * N * sizeof(float));
    m->drop_mask = xmalloc(C * N);
    size_t ca = m->aux_input >= 0 ? (size_t)m->tensors[m->aux_input].C : 1;
    m->aux_feat = xmalloc(ca * N * sizeof(float));
    m->daux_feat = xmalloc(ca * N * sizeof(float));
    m->aux_logits = xmalloc(K * N * sizeof(float));
    m->daux_logits = xmalloc(K * N * sizeof(float));
    m->capacity = N;
    m->capacity_threads = max_threads();
}

/* Address of tensor t of a batch of N images. */
static float *tensor_at(const Model *m, int t, int N) {
    const Tensor *tt = &m->tensors[t], *r = &m->tensors[tt->root];
    return m->arena + r->offset * N + (size_t)tt->choff * N * tt->H * tt->W;
}

static float *P(const Model *m, int param) { return m->params + m->pinfo[param].offset; }
static float *G(const Model *m, int param) { return m->grads + m->pinfo[param].offset; }

/* A unit's xhat in bf16 (saved_bf16) */
static uint16_t *stored_bf16(const Model *m, int t, int N) {
    const Tensor *tt = &m->tensors[t], *r = &m->tensors[tt->root];
    return (uint16_t *)(m->arena + r->offset * N) + (size_t)tt->choff * N * tt->H * tt->W;
}

/* Where op i's output (forward) or a conv's output gradient (backward) is made
 * in fp32: in place of the saved tensor, or in the op's own buffer of that pass
 * when the saved tensor is bf16. */
static float *made_at(const Model *m, int i, int backward, int N) {
    const Op *op = &m->ops[i];
    if (!saved_in_bf16(m, &m->tensors[m->tensors[op->out].root])) return tensor_at(m, op->out, N);
    return m->arena + op->stage_offset[backward] * N;
}

/* Activations of tensor t: its stored values, or its root's BN+ReLU, made in
 * the root's slot of this pass when first read. */
static const float *activations(Model *m, int t, int N) {
    const Tensor *tt = &m->tensors[t];
    Tensor *r = &m->tensors[tt->root];
    float *stored = tensor_at(m, t, N);
    if (r->affine < 0) return stored;
    size_t plane = (size_t)N * r->H * r->W;
    float *slot = m->arena + r->slot_offset[m->backward] * N;
    if (r->made != m->pass_id) {
        prof_push(PROF_BN_RELU);
        if (m->saved_bf16)
            bn_relu_apply_bf16(slot, stored_bf16(m, tt->root, N), m->act_scale + r->affine,
                               m->act_shift + r->affine, r->C, plane);
        else
            bn_relu_apply(slot, stored - tt->choff * plane, m->act_scale + r->affine,
                          m->act_shift + r->affine, r->C, plane);
        prof_pop();
        r->made = m->pass_id;
    }
    return slot + tt->choff * plane;
}

/* Starts a pass: no slot holds activations of it yet. */
static void begin_pass(Model *m, int backward) {
    m->backward = backward;
    m->pass_id++;
}

/* Gamma and beta of every unit (1 and 0 for pools into concatenations) where
 * readers of its output find them. */
static void load_affine(Model *m) {
    for (int i = 0; i < m->nops; i++) {
        const Op *op = &m->ops[i];
        const Tensor *to = &m->tensors[op->out], *r = &m->tensors[to->root];
        if (r->affine < 0) continue;
        for (int c = 0; c < to->C; c++) {
            int at = r->affine + to->choff + c;
            m->act_scale[at] = op->kind == OP_CONV ? P(m, op->gamma)[c] : 1.0f;
            m->act_shift[at] = op->kind == OP_CONV ? P(m, op->beta)[c] : 0.0f;
        }
    }
}

/* Address of the gradient of tensor t; zeroed first when event ev starts it. */
static float *grad_at(const Model *m, int t, int N, int ev) {
    const Tensor *tt = &m->tensors[t], *r = &m->tensors[tt->root];
    float *root = m->arena + r->grad_offset * N;
    if (r->grad_start == ev) zero_floats(root, (size_t)r->C * r->H * r->W * N);
    return root + (size_t)tt->choff * N * tt->H * tt->W;
}

/* x [N,3,32,32] (NCHW) into the input tensor [3, N, 32, 32] */
static void load_input(Model *m, const float *x, int N) {
    float *in = tensor_at(m, m->input, N);
    const int HW = 32 * 32;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < 3; c++)
            memcpy(in + ((size_t)c * N + n) * HW, x + ((size_t)n * 3 + c) * HW, HW * sizeof *x);
}

static void pool_forward(Model *m, const Op *op, int N) {
    const Tensor *ti = &m->tensors[op->in];
    const Tensor *to = &m->tensors[op->out];
    const float *in = activations(m, op->in, N);
    float *out = made_at(m, (int)(op - m->ops), 0, N);
    prof_push(PROF_POOL);
    if (op->kind == OP_MAXPOOL)
        maxpool_forward(out, in, ti->C * N, ti->H, ti->W, op->cs.kh, op->cs.sh, op->cs.ph);
    else
        avgpool_forward(out, in, ti->C * N, ti->H, ti->W, op->cs.kh, op->cs.sh, op->cs.ph);
    if (saved_in_bf16(m, &m->tensors[to->root]))      /* into a concatenation saved in bf16 */
        matrix_to_bf16(stored_bf16(m, op->out, N), out, to->C, (int64_t)N * to->H * to->W,
                       (int64_t)N * to->H * to->W);
    prof_pop();
}

/* The tensors of the 1x1 convs grouped with op first: their outputs, and in
 * backward their gradients, which bn_relu_backward leaves in the same place. */
enum { MAX_GROUP = 8 };
static int group_members(const Model *m, int first, int backward, int N, float **rows, int *couts) {
    int g = 0;
    for (int j = first; j < m->nops; j++)
        if (m->ops[j].group == first) {
            if (g == MAX_GROUP) die("internal: more than %d 1x1 convolutions share an input", MAX_GROUP);
            rows[g] = m->ops[j].pooled_output ? m->pool_buf : made_at(m, j, backward, N);
            couts[g++] = m->ops[j].cs.cout;
        }
    return g;
}

/* Forward through every op; train selects batch statistics (in groups). */
static void forward_ops(Model *m, int N, int train, int groups) {
    load_affine(m);
    begin_pass(m, 0);
    for (int i = 0; i < m->nops; i++) {
        const Op *op = &m->ops[i];
        const Tensor *ti = &m->tensors[op->in], *to = &m->tensors[op->out];
        if (op->kind != OP_CONV) { pool_forward(m, op, N); continue; }
        BatchNorm *bn = &m->bns[op->bn];
        float *y = made_at(m, i, 0, N);          /* conv output, then xhat in place */
        uint16_t *xhat16 = m->saved_bf16 ? stored_bf16(m, op->out, N) : NULL;
        float *rm = m->buffers + bn->offset, *rv = rm + bn->channels;
        int64_t M = (int64_t)N * to->H * to->W;
        prof_push(prof_conv_kind(op->cs.kh, op->cs.kw));
        if (op->group < 0) {
            (op->pooled_input ? conv_pooled_forward : conv_forward)(op->pooled_output ? m->pool_buf : y,
                activations(m, op->in, N), P(m, op->weight), &op->cs, N, ti->H, ti->W, m->scratch);
        } else if (op->group == i) {          /* the whole group; the others' outputs wait */
            float *outs[MAX_GROUP];
            int couts[MAX_GROUP], members = group_members(m, i, 0, N, outs, couts);
            conv1x1_group_forward(outs, couts, members, activations(m, op->in, N), P(m, op->weight),
                                  op->cs.cin, (int64_t)N * ti->H * ti->W, m->scratch);
        }
        prof_pop();
        if (op->pooled_output) {
            prof_push(PROF_POOL);
            avgpool_forward(y, m->pool_buf, to->C * N, to->H, to->W, 3, 1, 1);
            prof_pop();
        }
        prof_push(PROF_BN_RELU);
        if (train) {
            size_t bn_base = (bn->offset / 2) * groups;
            bn_forward_train(y, xhat16, m->bn_mean + bn_base, m->bn_istd + bn_base, rm, rv, bn->channels,
                             M, groups, BN_MOMENTUM, BN_EPS);
            bn->batches_tracked++;
        } else {
            bn_forward_eval(y, xhat16, rm, rv, bn->channels, M, BN_EPS);
        }
        prof_pop();
    }
}

/* Param p's gradient is final; tell grads_ready when the final suffix grows. */
static void grad_done(Model *m, int p) {
    if (!m->grads_ready) return;
    m->grad_final[p] = 1;
    int f = m->grad_frontier;
    while (f > 0 && m->grad_final[f - 1]) f--;
    if (f == m->grad_frontier) return;
    m->grad_frontier = f;
    m->grads_ready(m->grads_ready_ctx, f ? m->pinfo[f].offset : 0);
}

static void backward_ops(Model *m, int N, int groups) {
    begin_pass(m, 1);
    for (int ev = 1; ev <= m->nops; ev++) {
        int i = m->backward_order[ev - 1];
        const Op *op = &m->ops[i];
        const Tensor *ti = &m->tensors[op->in], *to = &m->tensors[op->out];
        float *dout = grad_at(m, op->out, N, ev);
        float *din = op->in == m->input ? NULL : grad_at(m, op->in, N, ev);
        if (op->kind == OP_CONV) {
            const BatchNorm *bn = &m->bns[op->bn];
            float *xhat = made_at(m, i, 1, N);        /* becomes the conv output's gradient */
            prof_push(PROF_BN_RELU);
            bn_relu_backward(xhat, m->saved_bf16 ? stored_bf16(m, op->out, N) : NULL,
                             G(m, op->gamma), G(m, op->beta), dout, P(m, op->gamma), P(m, op->beta),
                             m->bn_istd + (bn->offset / 2) * groups, bn->channels,
                             (int64_t)N * to->H * to->W, groups);
            prof_pop();
            grad_done(m, op->gamma);
            grad_done(m, op->beta);
            if (op->pooled_output) {          /* d(conv output), there until the conv's backward */
                prof_push(PROF_POOL);
                zero_floats(m->pool_buf, (size_t)to->C * N * to->H * to->W);
                avgpool_backward(m->pool_buf, xhat, to->C * N, to->H, to->W, 3, 1, 1);
                prof_pop();
            }
            if (op->group >= 0 && op->group != i) continue;   /* with the group's first op */
            const float *in = activations(m, op->in, N);
            prof_push(prof_conv_kind(op->cs.kh, op->cs.kw));
            if (op->group < 0) {
                (op->pooled_input ? conv_pooled_backward : conv_backward)(din, G(m, op->weight),
                    op->pooled_output ? m->pool_buf : xhat, in, P(m, op->weight), &op->cs, N, ti->H,
                    ti->W, m->scratch);
            } else {              /* the last of its group backward visits: all their dy are ready */
                float *douts[MAX_GROUP];
                int couts[MAX_GROUP], members = group_members(m, i, 1, N, douts, couts);
                conv1x1_group_backward(din, G(m, op->weight), douts, couts, members, in, P(m, op->weight),
                                       op->cs.cin, (int64_t)N * ti->H * ti->W, m->scratch);
            }
            prof_pop();
            for (int j = i; j < m->nops; j++)         /* this op's weight, or its group's */
                if (j == i || m->ops[j].group == i) grad_done(m, m->ops[j].weight);
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

double model_train_step(Model *m, const float *x, const int64_t *y, int N, int groups,
                        uint64_t dropout_seed, const uint64_t *keys, float *logits_out) {
    if (groups < 1 || N % groups) die("batch of %d images does not split into %d BN groups", N, groups);
    if (N / groups < 2) die("batch norm in training needs at least 2 images per group (got %d)", N / groups);
    ensure_capacity(m, N, 1);
    prof_push(PROF_INPUT);
    load_input(m, x, N);
    prof_pop();
    forward_ops(m, N, 1, groups);

    prof_push(PROF_HEAD);
    const Tensor *tf = &m->tensors[m->features];
    int C = tf->C, K = m->cfg.classes, HW = tf->H * tf->W;
    gap_forward(m->feat, activations(m, m->features, N), C, N, HW);
    if (m->cfg.dropout > 0) dropout_forward(m->feat, m->drop_mask, C, N, m->cfg.dropout, dropout_seed, keys);
    linear_forward(m->logits, m->feat, P(m, m->linear_w), P(m, m->linear_b), C, N, K);
    double loss = softmax_xent(m->dlogits, m->logits, y, N, K, 1.0f);
    if (logits_out) memcpy(logits_out, m->logits, (size_t)N * K * sizeof *logits_out);

    zero_floats(m->grads, m->nparam_floats);
    if (m->grads_ready) {
        if (!m->grad_final) m->grad_final = xmalloc(m->nparams);
        memset(m->grad_final, 0, m->nparams);
        m->grad_frontier = m->nparams;
    }
    memset(m->dfeat, 0, (size_t)C * N * sizeof *m->dfeat);
    linear_backward(m->dfeat, G(m, m->linear_w), G(m, m->linear_b), m->dlogits, m->feat,
                    P(m, m->linear_w), C, N, K);
    grad_done(m, m->linear_w);
    grad_done(m, m->linear_b);
    if (m->cfg.dropout > 0) dropout_backward(m->dfeat, m->drop_mask, (int64_t)C * N, m->cfg.dropout);
    gap_backward(grad_at(m, m->features, N, 0), m->dfeat, C, N, HW);

    if (m->aux_input >= 0) {
        const Tensor *ta = &m->tensors[m->aux_input];
        int Ca = ta->C, HWa = ta->H * ta->W;
        gap_forward(m->aux_feat, activations(m, m->aux_input, N), Ca, N, HWa);
        linear_forward(m->aux_logits, m->aux_feat, P(m, m->aux_w), P(m, m->aux_b), Ca, N, K);
        loss += AUX_LOSS_WEIGHT * softmax_xent(m->daux_logits, m->aux_logits, y, N, K, AUX_LOSS_WEIGHT);
        memset(m->daux_feat, 0, (size_t)Ca * N * sizeof *m->daux_feat);
        linear_backward(m->daux_feat, G(m, m->aux_w), G(m, m->aux_b), m->daux_logits, m->aux_feat,
                        P(m, m->aux_w), Ca, N, K);
        grad_done(m, m->aux_w);
        grad_done(m, m->aux_b);
        gap_backward(grad_at(m, m->aux_input, N, 0), m->daux_feat, Ca, N, HWa);
    }
    prof_pop();
    backward_ops(m, N, groups);
    if (m->grads_ready && m->grad_frontier)
        die("internal: the gradient of %s was never marked final", m->pinfo[m->grad_frontier - 1].name);
    return loss;
}

void model_eval(Model *m, const float *x, int N, float *logits) {
    ensure_capacity(m, N, 0);
    load_input(m, x, N);
    forward_ops(m, N, 0, 1);
    const Tensor *tf = &m->tensors[m->features];
    int C = tf->C;
    gap_forward(m->feat, activations(m, m->features, N), C, N, tf->H * tf->W);
    linear_forward(logits, m->feat, P(m, m->linear_w), P(m, m->linear_b), C, N, m->cfg.classes);
}

void model_sgd(Model *m, float lr, float momentum, float weight_decay) {
    prof_push(PROF_OPTIMIZER);
    sgd_update(m->params, m->grads, m->momentum, m->nparam_floats, lr, momentum, weight_decay);
    prof_pop();
}
