/* model.c - how the graph runs: a step's storage, forward, backward, taps, SGD and
 * the weights' moving average. What the network is lives in lib/inceptionv3.c, how
 * its graph is made in lib/graph.c and planned in lib/plan.c. */
#include "net.h"
#include "inceptionv3.h"
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

/* The model's layout (layers, parameters, buffers) without its big arrays, for
 * images of H x W. */
static Model *model_plan(const ModelConfig *cfg, int H, int W) {
    if (cfg->classes < 1 || cfg->classes > MAX_CLASSES || !(cfg->width > 0) || cfg->width > 4)
        die("invalid model: %d classes (1 to %d), width %g (up to 4)", cfg->classes, MAX_CLASSES, cfg->width);
    Model *m = xcalloc(1, sizeof *m);
    Net *net = m->net = xcalloc(1, sizeof *m->net);
    m->cfg = *cfg;
    net->aux_input = net->aux_w = net->aux_b = -1;
    inceptionv3(m, H, W);
    plan_groups(m);
    plan_backward_order(m);
    net->plan_training = -1;          /* the arena is planned when a step needs it */
    return m;
}

size_t model_state_floats(const ModelConfig *cfg) {
    Model *m = model_plan(cfg, INPUT_SIZE, INPUT_SIZE);
    size_t n = m->nparam_floats + m->nbuffer_floats;
    model_free(m);
    return n;
}

Model *model_create(const ModelConfig *cfg) {
    Model *m = model_plan(cfg, INPUT_SIZE, INPUT_SIZE);
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
    model_set_class_names(m, NULL);
    free(m);
}

int model_input_size(const Model *m, int *W) {
    const Tensor *t = &m->net->tensors[m->net->input];
    if (W) *W = t->W;
    return t->H;
}

int model_set_input(Model *m, int H, int W, char *why, size_t why_size) {
    Net *net = m->net;
    Tensor *in = &net->tensors[net->input];
    if (in->H == H && in->W == W) return 0;
    if (m->cfg.aux) {      /* AuxLogits.conv1's kernel is the size of its input */
        snprintf(why, why_size, "a model with the auxiliary classifier takes %dx%d images only", in->H, in->W);
        return -1;
    }
    if (H < 1 || W < 1 || H > MAX_INPUT_SIZE || W > MAX_INPUT_SIZE) {
        snprintf(why, why_size, "images of %dx%d: sides from 1 to %d", H, W, MAX_INPUT_SIZE);
        return -1;
    }
    Model *sized = model_plan(&m->cfg, H, W);      /* the same graph; only H and W differ */
    const Net *s = sized->net;
    for (int i = 0; i < s->nops; i++) {          /* every kernel within its padded input */
        const Op *op = &s->ops[i];
        const Tensor *ti = &s->tensors[op->in];
        if (ti->H + 2 * op->cs.ph >= op->cs.kh && ti->W + 2 * op->cs.pw >= op->cs.kw) continue;
        int k = 0;
        while (k < s->ntaps && (s->taps[k].kind != TAP_TENSOR || s->taps[k].tensor != op->out)) k++;
        snprintf(why, why_size, "images of %dx%d are too small: %s's %dx%d kernel meets a %dx%d input", H, W,
                 k < s->ntaps ? s->taps[k].name : "a layer", op->cs.kh, op->cs.kw, ti->H, ti->W);
        model_free(sized);
        return -1;
    }
    if (s->ntensors != net->ntensors || sized->nparam_floats != m->nparam_floats)
        die("internal: the graph at %dx%d differs from the graph at %dx%d", H, W, in->H, in->W);
    for (int t = 0; t < s->ntensors; t++) {
        net->tensors[t].H = s->tensors[t].H;
        net->tensors[t].W = s->tensors[t].W;
    }
    net->pool_per_image = s->pool_per_image;
    model_free(sized);
    net->plan_training = -1;          /* planned and allocated again by the next pass */
    return 0;
}

void model_set_class_names(Model *m, char *const *names) {
    for (int k = 0; m->class_names && m->class_names[k]; k++) free(m->class_names[k]);
    free(m->class_names);
    m->class_names = NULL;
    if (!names) return;
    m->class_names = xcalloc((size_t)m->cfg.classes + 1, sizeof *m->class_names);
    for (int k = 0; k < m->cfg.classes; k++) m->class_names[k] = xstrdup(names[k]);
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

/* x [N,3,H,W] (NCHW) into the input tensor [3, N, H, W] */
static void load_input(Model *m, const float *x, int N) {
    float *in = tensor_at(m, m->net->input, N);
    const Tensor *t = &m->net->tensors[m->net->input];
    const size_t HW = (size_t)t->H * t->W;
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

void model_sgd(Model *m, float lr, float momentum, float weight_decay, float norm_bias_decay,
               int nesterov) {
    prof_push(PROF_OPTIMIZER);
    size_t from = 0, to = 0;  /* a run of adjacent parameters that share a decay: one call */
    float run_wd = weight_decay;
    for (int p = 0; p <= m->nparams; p++) {
        const Param *pi = p < m->nparams ? &m->pinfo[p] : NULL;
        float wd = pi && pi->kind != PARAM_WEIGHT ? norm_bias_decay : weight_decay;
        if (pi && pi->offset == to && wd == run_wd) { to += pi->size; continue; }
        if (to > from)
            sgd_update(m->params + from, m->grads + from, m->momentum + from, to - from, lr, momentum, run_wd,
                       nesterov);
        if (pi) { from = pi->offset; to = from + pi->size; run_wd = wd; }
    }
    prof_pop();
}
