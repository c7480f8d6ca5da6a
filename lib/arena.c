/* arena.c - see arena.h */
#include "arena.h"
#include "util.h"
#include <stdlib.h>

static int overlaps_in_time(const ArenaBuffer *a, const ArenaBuffer *b) {
    return a->start <= b->end && b->start <= a->end;
}

/* Placement order: sizes descending, then starts ascending, then input order
 * (the pointers' order, since qsort is not stable). */
static int largest_first(const void *pa, const void *pb) {
    const ArenaBuffer *x = *(ArenaBuffer *const *)pa, *y = *(ArenaBuffer *const *)pb;
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return x < y ? -1 : x > y;
}

size_t arena_place(ArenaBuffer *b, int n) {
    ArenaBuffer **order = xmalloc((size_t)n * sizeof *order);
    for (int i = 0; i < n; i++) order[i] = &b[i];
    qsort(order, (size_t)n, sizeof *order, largest_first);
    size_t total = 0;
    for (int k = 0; k < n; k++) {
        ArenaBuffer *x = order[k];
        size_t off = 0;
        for (int moved = 1; moved;) {          /* past every placed buffer in the way */
            moved = 0;
            for (int j = 0; j < k; j++) {
                const ArenaBuffer *y = order[j];
                if (overlaps_in_time(x, y) && off < y->offset + y->size && y->offset < off + x->size) {
                    off = y->offset + y->size;
                    moved = 1;
                }
            }
        }
        x->offset = off;
        if (off + x->size > total) total = off + x->size;
    }
    free(order);
    return total;
}

size_t arena_peak(const ArenaBuffer *b, int n) {
    size_t peak = 0;
    for (int i = 0; i < n; i++) {              /* the sum is highest at some buffer's start */
        size_t live = 0;
        for (int j = 0; j < n; j++)
            if (b[j].start <= b[i].start && b[i].start <= b[j].end) live += b[j].size;
        if (live > peak) peak = live;
    }
    return peak;
}
