/* inceptionv3.c - what the network is: InceptionV3 for 32x32 images, as
 * tests/pytorch/inceptionv3.py has it in PyTorch. One function per block type, in
 * the order of that file's classes; each reads as its module's __init__ and forward
 * together. Names are those of PyTorch's named_modules() and state_dict (graph.h says
 * how a unit's taps are named). To change the network, change this file: the graph it
 * builds is planned (lib/plan.c) and run (lib/model.c) whatever its shape. */
#include "inceptionv3.h"
#include "graph.h"
#include "layers.h"
#include <stdio.h>

static char *nm(char *buf, const char *block, const char *part) {
    snprintf(buf, 96, "%s.%s", block, part);
    return buf;
}

static int inception_a(Model *m, const char *b, int x, int pool_features) {
    double w = m->cfg.width;
    Shape t = shape_of(m, x);
    int c1 = scale_channels(64, w), c5 = scale_channels(64, w), c3 = scale_channels(96, w);
    int cp = scale_channels(pool_features, w);
    int out = concat(m, c1 + c5 + c3 + cp, t.H, t.W);
    char n[96];
    unit(m, nm(n, b, "branch1x1"), x, into(out, 0), 64, 1, 1, 1, 0, 0);
    int y = unit(m, nm(n, b, "branch5x5.0"), x, NEW, 48, 1, 1, 1, 0, 0);
    unit(m, nm(n, b, "branch5x5.1"), y, into(out, c1), 64, 5, 5, 1, 2, 2);
    y = unit(m, nm(n, b, "branch3x3.0"), x, NEW, 64, 1, 1, 1, 0, 0);
    y = unit(m, nm(n, b, "branch3x3.1"), y, NEW, 96, 3, 3, 1, 1, 1);
    unit(m, nm(n, b, "branch3x3.2"), y, into(out, c1 + c5), 96, 3, 3, 1, 1, 1);
    pooled_unit(m, nm(n, b, "branchpool.1"), x, into(out, c1 + c5 + c3), pool_features);
    tap(m, b, out);
    return out;
}

static int inception_b(Model *m, const char *b, int x) {
    double w = m->cfg.width;
    Shape t = shape_of(m, x);
    int c3 = scale_channels(384, w), cs = scale_channels(96, w);
    int Ho = conv_out(t.H, 3, 2, 0), Wo = conv_out(t.W, 3, 2, 0);
    int out = concat(m, c3 + cs + t.C, Ho, Wo);
    char n[96];
    unit(m, nm(n, b, "branch3x3"), x, into(out, 0), 384, 3, 3, 2, 0, 0);
    int y = unit(m, nm(n, b, "branch3x3stack.0"), x, NEW, 64, 1, 1, 1, 0, 0);
    y = unit(m, nm(n, b, "branch3x3stack.1"), y, NEW, 96, 3, 3, 1, 1, 1);
    unit(m, nm(n, b, "branch3x3stack.2"), y, into(out, c3), 96, 3, 3, 2, 0, 0);
    tap(m, nm(n, b, "branchpool"), pool(m, OP_MAXPOOL, x, into(out, c3 + cs), 3, 2, 0));
    tap(m, b, out);
    return out;
}

static int inception_c(Model *m, const char *b, int x, int c7) {
    double w = m->cfg.width;
    Shape t = shape_of(m, x);
    int c = scale_channels(192, w);
    int out = concat(m, 4 * c, t.H, t.W);
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
    tap(m, b, out);
    return out;
}

static int inception_d(Model *m, const char *b, int x) {
    double w = m->cfg.width;
    Shape t = shape_of(m, x);
    int c3 = scale_channels(320, w), c7 = scale_channels(192, w);
    int Ho = conv_out(t.H, 3, 2, 0), Wo = conv_out(t.W, 3, 2, 0);
    int out = concat(m, c3 + c7 + t.C, Ho, Wo);
    char n[96];
    int y = unit(m, nm(n, b, "branch3x3.0"), x, NEW, 192, 1, 1, 1, 0, 0);
    unit(m, nm(n, b, "branch3x3.1"), y, into(out, 0), 320, 3, 3, 2, 0, 0);
    y = unit(m, nm(n, b, "branch7x7.0"), x, NEW, 192, 1, 1, 1, 0, 0);
    y = unit(m, nm(n, b, "branch7x7.1"), y, NEW, 192, 1, 7, 1, 0, 3);
    y = unit(m, nm(n, b, "branch7x7.2"), y, NEW, 192, 7, 1, 1, 3, 0);
    unit(m, nm(n, b, "branch7x7.3"), y, into(out, c3), 192, 3, 3, 2, 0, 0);
    tap(m, nm(n, b, "branchpool"), pool(m, OP_AVGPOOL, x, into(out, c3 + c7), 3, 2, 0));
    tap(m, b, out);
    return out;
}

static int inception_e(Model *m, const char *b, int x) {
    double w = m->cfg.width;
    Shape t = shape_of(m, x);
    int c1 = scale_channels(320, w), c3 = scale_channels(384, w), cp = scale_channels(192, w);
    int out = concat(m, c1 + 4 * c3 + cp, t.H, t.W);
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
    tap(m, b, out);
    return out;
}

/* InceptionAux: average pool 5 s3, two units, the linear layer (graph.h). */
static void inception_aux(Model *m, const char *b, int x) {
    char n[96];
    int y = pool(m, OP_AVGPOOL, x, NEW, 5, 3, 0);
    tap(m, nm(n, b, "pool"), y);
    y = unit(m, nm(n, b, "conv0"), y, NEW, 128, 1, 1, 1, 0, 0);
    Shape t = shape_of(m, y);
    y = unit(m, nm(n, b, "conv1"), y, NEW, 768, t.H, t.W, 1, 0, 0);
    aux_classifier(m, nm(n, b, "fc"), y);
}

void inceptionv3(Model *m, int H, int W) {
    int x = graph_input(m, 3, H, W);
    x = unit(m, "Conv2d_1a_3x3", x, NEW, 32, 3, 3, 1, 1, 1);
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
    classifier(m, x);
    /* Built last, where PyTorch declares it after Mixed_6e: its parameters follow
     * linear's in incv3's checkpoints, and a model without it lays out the same. */
    if (m->cfg.aux) inception_aux(m, "AuxLogits", aux_from);
}
