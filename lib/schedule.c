/* schedule.c - see schedule.h. All of it per iteration, as the recipe says. */
#include "schedule.h"
#include <math.h>
#include <string.h>

int schedule_kind(const char *name) {
    if (!strcmp(name, "multistep")) return SCHED_MULTISTEP;
    if (!strcmp(name, "cosine")) return SCHED_COSINE;
    if (!strcmp(name, "linear")) return SCHED_LINEAR;
    if (!strcmp(name, "constant")) return SCHED_CONSTANT;
    return -1;
}

double schedule_lr(const Schedule *s, uint64_t it) {
    double spe = s->steps_per_epoch ? (double)s->steps_per_epoch : 1.0;
    double warm = s->warmup_epochs * spe;
    if (it < warm) return s->base_lr * (it + 1) / warm;
    double epoch = floor(it / spe);
    switch (s->kind) {
    case SCHED_MULTISTEP: {
        double lr = s->base_lr;
        for (int i = 0; i < s->nmilestones; i++) if (epoch >= s->milestones[i]) lr *= s->gamma;
        return lr;
    }
    case SCHED_COSINE:
    case SCHED_LINEAR: {        /* t: the share of the steps after the warm-up that went by */
        double total = s->epochs * spe - warm, t = total > 0 ? (it - warm) / total : 1.0;
        if (t > 1) t = 1;
        return s->base_lr * (s->kind == SCHED_COSINE ? 0.5 * (1.0 + cos(M_PI * t)) : 1.0 - t);
    }
    default:
        return s->base_lr;
    }
}
