/* plan.c - how a graph is planned: the order backward runs its ops in, which 1x1
 * convolutions run as one GEMM, and where each buffer of a step lives in the arena. */
#include "net.h"
#include "arena.h"
#include "conv.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

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

int saved_in_bf16(const Model *m, const Tensor *root) {
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
void plan_backward_order(Model *m) {
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

void plan_memory(Model *m, int training) {
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
void plan_groups(Model *m) {
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
