/* allreduce.c - see allreduce.h. */
#include "allreduce.h"
#include "util.h"
#ifdef HAVE_MPI
#include <mpi.h>
#endif

void reducer_init(Reducer *r, int use_mpi, int *argc, char ***argv) {
    *r = (Reducer){ 0, 0, 1, 0 };
    if (!use_mpi) return;
#ifdef HAVE_MPI
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &r->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &r->ranks);
    r->mpi = 1;
#else
    (void)argc; (void)argv;
    usage_die("--mpi: this build has no MPI (install libopenmpi-dev and rebuild)");
#endif
}

int reducer_sum(Reducer *r, float *data, size_t n, int local_workers) {
    if (!r->mpi) return local_workers;
#ifdef HAVE_MPI
    if (!r->total_workers)
        MPI_Allreduce(&local_workers, &r->total_workers, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    for (size_t done = 0; done < n;) {      /* MPI counts are ints */
        int chunk = n - done > (1u << 30) ? 1 << 30 : (int)(n - done);
        if (MPI_Allreduce(MPI_IN_PLACE, data + done, chunk, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            die("MPI_Allreduce failed");
        done += chunk;
    }
    return r->total_workers;
#else
    return local_workers;
#endif
}

void reducer_finish(Reducer *r) {
#ifdef HAVE_MPI
    if (r->mpi) MPI_Finalize();
#else
    (void)r;
#endif
}
