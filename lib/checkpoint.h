/* checkpoint.h - training checkpoints (a tensor stream) and safetensors interchange.
 *
 * A checkpoint is a zstd tensor stream: a text record "incv3.checkpoint"
 * (key=value lines: classes, width, aux, step, seed), then every tensor of
 * the PyTorch state_dict under its PyTorch name, then "momentum.<name>" for
 * every parameter, and with a moving average of the weights (--ema) "ema.<name>"
 * for every f32 tensor of the state_dict. Written atomically: a crash leaves the
 * previous file whole. */
#ifndef INCV3_CHECKPOINT_H
#define INCV3_CHECKPOINT_H
#include "model.h"
#include "stream.h"

typedef struct {
    uint64_t step;      /* optimizer steps taken */
    uint64_t seed;      /* of initialisation and dropout */
} TrainState;

void checkpoint_save(const char *path, const Model *m, const TrainState *st);
/* Loads path; dies naming the file and tensor on any mismatch. */
Model *checkpoint_load(const char *path, TrainState *st);
/* The same from an open stream; label names it in errors. */
Model *checkpoint_read(StreamReader *in, const char *label, TrainState *st);

/* Parameters and BN buffers as safetensors with PyTorch names (metadata
 * records the width). */
void safetensors_export(const char *path, const Model *m);
/* Builds a model from a safetensors state_dict: classes from linear.weight,
 * aux from AuxLogits.*, width from the metadata or `width` (<= 0: 1.0).
 * Strict like load_state_dict(strict=True): every tensor present, no extra,
 * shapes exact. With reinit_classes > 0, the classifiers (linear, AuxLogits.fc)
 * are re-initialised from seed for that many classes instead of loaded. */
Model *safetensors_import(const char *path, double width, int reinit_classes, uint64_t seed);
/* The same from memory (label names it in errors). */
Model *safetensors_parse(const unsigned char *buf, size_t len, const char *label, double width,
                         int reinit_classes, uint64_t seed);
#endif
