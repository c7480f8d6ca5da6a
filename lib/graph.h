/* graph.h - the calls a network definition (lib/inceptionv3.c) builds its graph with.
 *
 * A tensor is an id, [C, H, W] per image. Every call appends to the model's graph in
 * the order made: operations run forward in that order, parameters are laid out and
 * initialised in it (the checkpoint's order), and taps are listed in it. Channels are
 * given at full width and scaled by the model's width multiplier here.
 *
 * Layers: lib/inceptionv3.c (what the network is) over this file's lib/graph.c (how
 * a graph is made); lib/plan.c plans it and lib/model.c runs it, both through
 * lib/net.h, which no network definition needs to see. */
#ifndef INCV3_GRAPH_H
#define INCV3_GRAPH_H
#include "model.h"

typedef enum { OP_CONV, OP_MAXPOOL, OP_AVGPOOL } OpKind;

/* Where an op writes: a new tensor (NEW), or channels from choff on of a
 * concatenation's tensor (into). */
typedef struct { int root, choff; } Dest;
#define NEW ((Dest){ -1, 0 })
static inline Dest into(int root, int choff) { return (Dest){ root, choff }; }

typedef struct { int C, H, W; } Shape;
Shape shape_of(const Model *m, int tensor);

/* The network's input, images of C x H x W. */
int graph_input(Model *m, int C, int H, int W);
/* BasicConv2d `name`: conv (no bias) kh x kw, stride s, padding (ph, pw) -> BN -> ReLU,
 * cout_full output channels at width 1. Taps: name, name.relu and, for a member of a
 * Sequential (name ending in .N), the Sequential. */
int unit(Model *m, const char *name, int in, Dest d, int cout_full, int kh, int kw, int s, int ph, int pw);
/* avgpool 3x3 s1 p1 then a 3x3 unit, pooled image by image in cache (Inception-A's pool branch) */
int pooled_unit(Model *m, const char *name, int in, Dest d, int cout_full);
/* avgpool 3x3 s1 p1 then a 1x1 unit, run as the conv then the pool (Inception-C and E's) */
int pooled_after_unit(Model *m, const char *name, int in, Dest d, int cout_full);
/* Max or average pool, k x k, stride s, padding p. */
int pool(Model *m, OpKind kind, int in, Dest d, int k, int s, int p);
/* The output of a block, channels wide: its branches write into it. */
int concat(Model *m, int channels, int H, int W);
/* Names tensor as tap `name` (model_tap_find); a name already there moves to it. */
void tap(Model *m, const char *name, int tensor);
/* The classifier on features: global average pool (tap "avgpool"), dropout, and the
 * linear layer (parameters and tap "linear"), classes wide. */
void classifier(Model *m, int features);
/* The auxiliary classifier's linear layer `name` (name.weight, name.bias; taps name
 * and the module above it) on x, whose H and W are 1. */
void aux_classifier(Model *m, const char *name, int x);
#endif
