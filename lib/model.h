/* model.h - the CIFAR InceptionV3 of DESIGN §4 as a list of ops over CNHW tensors.
 *
 * Parameters, their gradients and momentum live in one allocation each, laid
 * out in the order of params[]; names are those of the PyTorch state_dict. */
#ifndef INCV3_MODEL_H
#define INCV3_MODEL_H
#include "layers.h"
#include "stream.h"
#include <stdint.h>

typedef struct {
    int classes;        /* K */
    double width;       /* channel multiplier w: c -> max(1, floor(c*w + 0.5)) */
    int aux;            /* auxiliary classifier on Mixed_6e */
    float dropout;      /* head dropout probability (0.5) */
} ModelConfig;

enum { PARAM_WEIGHT, PARAM_BIAS, PARAM_BN_WEIGHT, PARAM_BN_BIAS };

typedef struct {
    char name[96];
    int kind, rank;
    int64_t dims[4];
    size_t offset, size;      /* in floats, within params/grads/momentum */
} Param;

typedef struct {
    char prefix[96];          /* "<unit>.bn" */
    int channels;
    size_t offset;            /* running_mean at offset, running_var at offset + channels */
    int64_t batches_tracked;
} BatchNorm;

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

typedef struct {
    ModelConfig cfg;
    Param *pinfo; int nparams;
    BatchNorm *bns; int nbns;
    Tensor *tensors; int ntensors;
    Op *ops; int nops;
    int input, features, aux_input;          /* tensor ids */
    int *backward_order;      /* [nops]: ops in the order backward runs them */
    int *backward_event;      /* [nops]: op i's backward is event backward_event[i] (1..nops) */
    int linear_w, linear_b, aux_w, aux_b;    /* param ids of the classifiers */
    size_t nparam_floats, nbuffer_floats;
    size_t arena_per_image;   /* floats per image of the arena: saved activations and gradients */
    size_t pool_per_image;    /* pool_buf: the largest conv output pooled after (pooled_output) */
    int affine_channels;
    float *params, *grads, *momentum, *buffers;   /* buffers: BN running statistics */
    /* Data parallel: backward calls grads_ready(ctx, from) each time grads[from, end)
     * have become final (param order is forward order, so they finish from the end),
     * so that they can travel while the rest is still computed. */
    void (*grads_ready)(void *ctx, size_t from);
    void *grads_ready_ctx;
    char *grad_final;         /* [nparams] during backward */
    int grad_frontier;        /* params [grad_frontier, nparams) are final */
    float *act_scale, *act_shift;                 /* [affine_channels]: gamma and beta, or 1, 0 */
    /* per-batch storage, grown to the largest batch seen; arena: see plan_memory */
    int capacity, capacity_threads;   /* scratch is per thread in part */
    unsigned pass_id;         /* counts forward and backward passes: which slots are made */
    int plan_training;        /* the arena is planned for training (1), inference (0), not yet (-1) */
    int saved_bf16;           /* and with units' xhat saved in bf16 (autocast) */
    int backward;             /* the pass running: slots of forward (0) or backward (1) */
    float *arena, *scratch, *bn_mean, *bn_istd, *pool_buf;
    float *feat, *dfeat, *logits, *dlogits, *aux_feat, *daux_feat, *aux_logits, *daux_logits;
    uint8_t *drop_mask;
    size_t scratch_floats, bn_stat_floats;
} Model;

int scale_channels(int c, double width);
/* Limits of a model that incv3 builds: checked before anything large is allocated,
 * so a header that claims a huge model fails at once. 400 million parameters are
 * width 4 at up to about 5,000 classes, or width 1 at 100,000. */
#define MAX_CLASSES 100000
#define MAX_MODEL_PARAMS 400000000
/* Builds the graph and allocates (zeroed) parameters; call model_init to fill them.
 * Dies naming the limit on a model over MAX_MODEL_PARAMS. */
Model *model_create(const ModelConfig *cfg);
/* Floats of the state_dict (parameters and BN buffers) of such a model, without building it. */
size_t model_state_floats(const ModelConfig *cfg);
void model_free(Model *m);
/* PyTorch's default initialisation (U(+-1/sqrt(fan_in)), BN gamma 1 beta 0) from seed. */
void model_init(Model *m, uint64_t seed);
int model_find_param(const Model *m, const char *name);

/* One training step's forward and backward on images x [N,3,32,32] (NCHW f32)
 * with labels y: fills grads (zeroed first) and returns the mean loss
 * (plus 0.4 * the auxiliary loss when aux is on). BN uses statistics of
 * groups of N/ghost_groups consecutive images; dropout draws per image from
 * (dropout_seed, keys[n]). logits_out [N, K] (may be NULL) receives the main logits. */
double model_train_step(Model *m, const float *x, const int64_t *y, int N, int ghost_groups,
                        uint64_t dropout_seed, const uint64_t *keys, float *logits_out);
/* Inference: logits [N, K], BN from running statistics, no dropout. */
void model_eval(Model *m, const float *x, int N, float *logits);
/* SGD over every parameter. */
void model_sgd(Model *m, float lr, float momentum, float weight_decay);
#endif
