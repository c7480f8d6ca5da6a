/* allreduce.h - the reduction across machines of allreduce-merge: MPI when
 * built with it and asked for, else the identity (one machine). Sums are started
 * and finished apart (MPI_Iallreduce), so that a bucket's sum can cross the
 * network while the next bucket is still being computed. */
#ifndef INCV3_ALLREDUCE_H
#define INCV3_ALLREDUCE_H
#include <stddef.h>

typedef struct {
    int mpi, rank, ranks, total_workers;
} Reducer;
typedef struct ReduceRequest ReduceRequest;

/* local_workers: the workers this rank merges; total_workers gets all ranks' sum. */
void reducer_init(Reducer *r, int use_mpi, int local_workers, int *argc, char ***argv);
/* Starts summing data[0, n) in place over all ranks. */
ReduceRequest *reducer_start(Reducer *r, float *data, size_t n);
/* 1 (and the request freed) once that sum is complete; else 0. Never blocks. */
int reducer_done(Reducer *r, ReduceRequest *q);
void reducer_finish(Reducer *r);
#endif
