/* arena.h - placing buffers whose lives are known in one block of memory.
 *
 * A buffer is a size and a life [start, end] on some timeline (the caller's: for
 * the model, the events of a training step). Two buffers whose lives overlap never
 * share bytes; two whose lives do not may. lib/plan.c works out the lives of a
 * step's tensors; this file only places them. */
#ifndef INCV3_ARENA_H
#define INCV3_ARENA_H
#include <stddef.h>

typedef struct {
    size_t size;          /* in: any unit (the model's: floats per image) */
    int start, end;       /* in: the life, start <= end, both ends included */
    size_t offset;        /* out: where the buffer starts in the arena */
} ArenaBuffer;

/* Places every buffer, the largest first (ties: earlier start, then input order),
 * each at the lowest offset that no placed buffer with an overlapping life holds.
 * Returns the arena's size: the largest offset + size. */
size_t arena_place(ArenaBuffer *b, int n);

/* The most that is live at any one time: no placement can take less. */
size_t arena_peak(const ArenaBuffer *b, int n);
#endif
