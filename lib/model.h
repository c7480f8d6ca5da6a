/* model.h - the CIFAR InceptionV3 (lib/inceptionv3.c; tests/pytorch/inceptionv3.py is the
 * same network in PyTorch) as a list of ops over CNHW tensors.
 *
 * Parameters, their gradients and momentum live in one allocation each, laid
 * out in the order of params[]; names are those of the PyTorch state_dict. */
#ifndef INCV3_MODEL_H
#define INCV3_MODEL_H
#include <stddef.h>
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

/* The graph (tensors, ops) and what a step keeps between its passes (the arena
 * and its plan, scratch, the head's buffers): lib/net.h, for the library alone. */
typedef struct Net Net;

typedef struct {
    ModelConfig cfg;
    Param *pinfo; int nparams;
    BatchNorm *bns; int nbns;
    size_t nparam_floats, nbuffer_floats;
    float *params, *grads, *momentum, *buffers;   /* buffers: BN running statistics */
    float *ema;               /* NULL, or [nparam_floats + nbuffer_floats]: the moving average
                                 of params, then of the BN running statistics (--ema) */
    /* Data parallel: backward calls grads_ready(ctx, from) each time grads[from, end)
     * have become final (param order is forward order, so they finish from the end),
     * so that they can travel while the rest is still computed. */
    void (*grads_ready)(void *ctx, size_t from);
    void *grads_ready_ctx;
    float label_smoothing;    /* training's loss: cross-entropy against (1 - s) one-hot + s/K */
    char **class_names;       /* NULL, or [classes] (then NULL): what the classes are called, from
                                 the data it trained on; checkpoints and safetensors keep them */
    Net *net;
} Model;

int scale_channels(int c, double width);
/* Limits of a model that incv3 builds: checked before anything large is allocated,
 * so a header that claims a huge model fails at once. 400 million parameters are
 * width 4 at up to about 5,000 classes, or width 1 at 100,000. */
#define MAX_CLASSES 100000
#define MAX_MODEL_PARAMS 400000000
/* The images a model is made for (INPUT_SIZE square) and the largest side it takes. */
#define INPUT_SIZE 32
#define MAX_INPUT_SIZE 512
/* Builds the graph and allocates (zeroed) parameters; call model_init to fill them.
 * Dies naming the limit on a model over MAX_MODEL_PARAMS. */
Model *model_create(const ModelConfig *cfg);
/* Floats of the state_dict (parameters and BN buffers) of such a model, without building it. */
size_t model_state_floats(const ModelConfig *cfg);
void model_free(Model *m);
/* Takes a copy of names[0, classes) as the model's class names (NULL: none). */
void model_set_class_names(Model *m, char *const *names);
/* PyTorch's default initialisation (U(+-1/sqrt(fan_in)), BN gamma 1 beta 0) from seed. */
void model_init(Model *m, uint64_t seed);
int model_find_param(const Model *m, const char *name);

/* The size of the images the passes take (H; *W the width, if not NULL): 32x32 as made. */
int model_input_size(const Model *m, int *W);
/* Passes to come take images of H x W: the graph's sizes follow (the parameters are the
 * same), storage is planned again. Returns -1 with why filled, changing nothing, where
 * the network cannot take them: too small for its last blocks, or a model with the
 * auxiliary classifier (its last kernel is the size of its input, so 32x32 only). */
int model_set_input(Model *m, int H, int W, char *why, size_t why_size);

/* One training step's forward and backward on images x [N,3,H,W] (NCHW f32, the size
 * model_set_input set: 32x32 unless changed)
 * with labels y, or with the probabilities targets [N, K] when not NULL (MixUp,
 * CutMix; y then only counts as the images' labels): fills grads (zeroed first) and returns the mean loss
 * (plus 0.4 * the auxiliary loss when aux is on; both smoothed by
 * label_smoothing). BN uses statistics of
 * groups of N/ghost_groups consecutive images; dropout draws per image from
 * (dropout_seed, keys[n]). logits_out [N, K] (may be NULL) receives the main logits. */
double model_train_step(Model *m, const float *x, const int64_t *y, const float *targets, int N, int ghost_groups,
                        uint64_t dropout_seed, const uint64_t *keys, float *logits_out);
/* The auxiliary classifier's logits [N, K] of the last training step (aux on). */
const float *model_aux_logits(const Model *m);
/* Inference on x [N,3,H,W]: logits [N, K], BN from running statistics, no dropout. */
void model_eval(Model *m, const float *x, int N, float *logits);
/* Floats per image of a step's arena as planned for training (1) or inference (0)
 * in the current precision; *peak: the most of it that is ever live at once. */
size_t model_arena_floats(Model *m, int training, size_t *peak);
/* After optimizer step `step` (1, 2, ...): ema = d*ema + (1-d)*(params, buffers) with
 * d = min(decay, (1 + step) / (10 + step)), so that the early average forgets the
 * initial weights fast. The first call starts the average from the weights. */
void model_ema_update(Model *m, double decay, uint64_t step);
/* Puts the moving average in place of the weights and statistics (to evaluate or
 * export it); dies when the model keeps none. */
void model_use_ema(Model *m);
/* Taps: a module's output, and in training the gradient of the loss with respect to
 * it, taken out of a step. Modules are named as PyTorch's named_modules() names those
 * of tests/pytorch/inceptionv3.py: every BasicConv2d (and its .relu), the Sequential
 * branches, the Mixed blocks, the pool branches of Mixed_6a and Mixed_7a, avgpool
 * ([C,1,1]), linear (the logits), AuxLogits.pool/.conv0/.conv1/.fc. The insides of a
 * BasicConv2d (.conv, .bn) are fused and never stored: not taps. */
int model_tap_count(const Model *m);
const char *model_tap_name(const Model *m, int tap);
int model_tap_find(const Model *m, const char *name);        /* -1: no such tap */
/* C, H, W of one image; returns the rank of a batch of them as PyTorch has it (4; 2
 * for the logits, linear and AuxLogits.fc, whose H and W are 1) */
int model_tap_shape(const Model *m, int tap, int dims[3]);
/* Takes tap's values (what & 1) and gradient (what & 2) in the passes to come; 0: off.
 * With every tap off, a step costs what it did without them. */
void model_tap_on(Model *m, int tap, int what);
/* [N, C, H, W] of the last pass (gradients: the last training step), NULL when off. */
const float *model_tap_values(const Model *m, int tap, int grad);
/* SGD over every parameter (PyTorch's, nesterov as its nesterov=True): weight_decay on
 * the convolutions' and classifiers' weights, norm_bias_decay on batch norm's gamma and
 * beta and the classifiers' biases (equal: PyTorch's one parameter group; 0: timm's
 * filter_bias_and_bn, a second group without decay). */
void model_sgd(Model *m, float lr, float momentum, float weight_decay, float norm_bias_decay,
               int nesterov);
#endif
