/* inceptionv3.h - the network's definition (lib/inceptionv3.c). */
#ifndef INCV3_INCEPTIONV3_H
#define INCV3_INCEPTIONV3_H
#include "model.h"

/* Builds InceptionV3's graph into m (cfg: classes, width, aux), through graph.h. */
void inceptionv3(Model *m);
#endif
