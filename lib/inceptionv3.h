/* inceptionv3.h - the network's definition (lib/inceptionv3.c). */
#ifndef INCV3_INCEPTIONV3_H
#define INCV3_INCEPTIONV3_H
#include "model.h"

/* Builds InceptionV3's graph into m (cfg: classes, width, aux) for images of H x W
 * (32 x 32 as it is made for; the network is convolutional up to its global pool, so
 * smaller ones train it too), through graph.h. */
void inceptionv3(Model *m, int H, int W);
#endif
