/* net.h - the graph (tensors, ops, taps) and what a step keeps between its passes:
 * the struct that model.h keeps opaque (Net), shared by lib/graph.c, which builds it,
 * lib/plan.c, which plans its order and memory, and lib/model.c, which runs it. */
#ifndef INCV3_NET_H
#define INCV3_NET_H
#include "graph.h"
#include "layers.h"

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

/* Planning (lib/plan.c). */
/* 1x1 convs reading one tensor form a group run as one GEMM; their weights move together. */
void plan_groups(Model *m);
/* The order backward runs the ops in (backward_order, backward_event). */
void plan_backward_order(Model *m);
/* Places every buffer of a step in the arena for training (1) or inference (0). */
void plan_memory(Model *m, int training);
/* Under autocast the units' xhat (roots with affine) is saved in bf16. */
int saved_in_bf16(const Model *m, const Tensor *root);
#endif
