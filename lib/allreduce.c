/* allreduce.c - see allreduce.h. */
#include "allreduce.h"
#include "util.h"
#include <limits.h>
#include <stdlib.h>
#ifdef HAVE_MPI
#include <mpi.h>
#endif

struct ReduceRequest {
#ifdef HAVE_MPI
    MPI_Request req;
#endif
    int pending;
};

void reducer_init(Reducer *r, int use_mpi, int local_workers, int *argc, char ***argv) {
    *r = (Reducer){ 0, 0, 1, local_workers };
    if (!use_mpi) return;
#ifdef HAVE_MPI
    int provided;       /* only the merger's main thread calls MPI */
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &r->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &r->ranks);
    MPI_Allreduce(&local_workers, &r->total_workers, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    r->mpi = 1;
#else
    (void)argc; (void)argv;
    usage_die("--mpi: this build has no MPI (install libopenmpi-dev and rebuild)");
#endif
}

ReduceRequest *reducer_start(Reducer *r, float *data, size_t n) {
    ReduceRequest *q = xcalloc(1, sizeof *q);
    if (!r->mpi) return q;
#ifdef HAVE_MPI
    if (n > INT_MAX) die("a bucket of %zu floats is over MPI's count limit", n);
    if (MPI_Iallreduce(MPI_IN_PLACE, data, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &q->req) != MPI_SUCCESS)
        die("MPI_Iallreduce failed");
    q->pending = 1;
#else
    (void)data; (void)n;
#endif
    return q;
}

int reducer_done(Reducer *r, ReduceRequest *q) {
#ifdef HAVE_MPI
    if (q->pending) {
        int done = 0;
        if (MPI_Test(&q->req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) die("MPI_Iallreduce failed");
        if (!done) return 0;
    }
#endif
    (void)r;
    free(q);
    return 1;
}

void reducer_finish(Reducer *r) {
#ifdef HAVE_MPI
    if (r->mpi) MPI_Finalize();
#else
    (void)r;
#endif
}
