/* allreduce.h - the reduction across machines of allreduce-merge: MPI when
 * built with it and asked for, else the identity (one machine). */
#ifndef INCV3_ALLREDUCE_H
#define INCV3_ALLREDUCE_H
#include <stddef.h>

typedef struct {
    int mpi, rank, ranks, total_workers;
} Reducer;

void reducer_init(Reducer *r, int use_mpi, int *argc, char ***argv);
/* data holds this rank's sum over its local_workers; on return, the sum over
 * all ranks. Returns the number of workers in all ranks. */
int reducer_sum(Reducer *r, float *data, size_t n, int local_workers);
void reducer_finish(Reducer *r);
#endif
