/* schedule.h - learning rate per iteration: linear warm-up, then multistep, cosine or
 * linear to zero (with the warm-up, the triangular one-cycle of fast CIFAR trainers). */
#ifndef INCV3_SCHEDULE_H
#define INCV3_SCHEDULE_H
#include <stdint.h>

enum { SCHED_MULTISTEP, SCHED_COSINE, SCHED_LINEAR, SCHED_CONSTANT };

typedef struct {
    int kind;
    double base_lr, gamma, warmup_epochs;
    int nmilestones;
    double milestones[16];
    double epochs;              /* cosine's and linear's horizon: lr reaches 0 there */
    uint64_t steps_per_epoch;
} Schedule;

/* lr for the update at global iteration `it` (0-based). */
double schedule_lr(const Schedule *s, uint64_t it);
/* "multistep", "cosine", "linear" or "constant"; -1 if unknown. */
int schedule_kind(const char *name);
#endif
