/* allreduce-merge - mean of N workers' gradient streams, sent back to each of them. */
#include "stream.h"
#include "util.h"
#include "allreduce.h"
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: allreduce-merge [--mpi] [--rounds R] IN0,IN1,... OUT0,OUT1,...\n"
    "Read one record from every input in turn (all alike in name, dtype and shape),\n"
    "write the element-wise mean of the f32 ones (summed in input order, so the result\n"
    "is reproducible) to every output; other dtypes must agree and pass as they are.\n"
    "Inputs and outputs are files or FIFOs; outputs are raw (uncompressed) streams.\n"
    "Any input that ends early or is malformed stops the merge with exit status 1,\n"
    "which in turn stops every worker.\n"
    "      --mpi        also average across MPI ranks (MPI_Allreduce); every rank runs\n"
    "                   one merger over its local workers\n"
    "      --rounds R   serve R rounds (epochs): when every input has ended, open the\n"
    "                   inputs and outputs again for the next round (1)\n"
    "  -h, --help  --version\n";

static int split(char *list, char **out, int max) {
    int n = 0;
    for (char *p = strtok(list, ","); p; p = strtok(NULL, ",")) {
        if (n == max) usage_die("more than %d workers", max);
        out[n++] = p;
    }
    return n;
}

/* One round: open every input, then every output (the order in which workers
 * open their ends), merge until all inputs end, close. */
static void merge_round(int n, char **in_paths, char **out_paths, Reducer *red, Record *r) {
    StreamReader **in = xcalloc(n, sizeof *in);
    StreamWriter **out = xcalloc(n, sizeof *out);
    FILE **out_files = xcalloc(n, sizeof *out_files);
    for (int i = 0; i < n; i++) in[i] = sr_open_path(in_paths[i]);
    for (int i = 0; i < n; i++) {
        if (!(out_files[i] = fopen(out_paths[i], "wb"))) die("cannot open %s: %s", out_paths[i], strerror(errno));
        out[i] = sw_open(out_files[i], out_paths[i], 1, 0);
    }
    static float *sum;
    static size_t cap;
    /* Workers' streams are read, and written, side by side: one at a time, each
     * worker would wait for the ones before it. */
    int streams = n < 64 ? n : 64;
    for (;;) {
        int ended = 0;
        #pragma omp parallel for schedule(dynamic) num_threads(streams) reduction(+:ended)
        for (int i = 0; i < n; i++) ended += !sr_next(in[i], &r[i]);
        if (ended == n) break;
        if (ended) die("a worker's stream ended before the others' (worker stopped?)");
        for (int i = 1; i < n; i++) {
            int same = !strcmp(r[i].name, r[0].name) && r[i].dtype == r[0].dtype && r[i].rank == r[0].rank;
            for (int d = 0; same && d < r[0].rank; d++) same = r[i].dims[d] == r[0].dims[d];
            if (!same) die("%s: record '%s' at byte %llu does not match '%s' of %s", in_paths[i], r[i].name,
                           (unsigned long long)r[i].offset, r[0].name, in_paths[0]);
            if (r[0].dtype != DT_F32 && memcmp(r[i].data, r[0].data, r[0].nbytes))
                die("%s: record '%s' differs from %s's and is not f32", in_paths[i], r[i].name, in_paths[0]);
        }
        if (r[0].dtype == DT_F32) {
            size_t len = (size_t)r[0].nelem;
            if (len > cap) { cap = len; sum = xrealloc(sum, cap * sizeof *sum); }
            #pragma omp parallel for schedule(static)
            for (size_t k = 0; k < len; k++) {          /* workers in order: the same bits */
                float s = ((const float *)r[0].data)[k];
                for (int i = 1; i < n; i++) s += ((const float *)r[i].data)[k];
                sum[k] = s;
            }
            int total = reducer_sum(red, sum, len, n);
            float inv = 1.0f / (float)total;
            #pragma omp parallel for schedule(static)
            for (size_t k = 0; k < len; k++) ((float *)r[0].data)[k] = sum[k] * inv;
        }
        #pragma omp parallel for schedule(dynamic) num_threads(streams)
        for (int i = 0; i < n; i++) sw_write_record(out[i], &r[0]);
    }
    for (int i = 0; i < n; i++) { sw_close(out[i]); fclose(out_files[i]); sr_close(in[i]); }
    free(in); free(out); free(out_files);
}

int main(int argc, char **argv) {
    tool_init("allreduce-merge", argc, argv);
    static const struct option longopts[] = {
        { "mpi", no_argument, 0, 'm' }, { "rounds", required_argument, 0, 'r' },
        { "help", no_argument, 0, 'h' },
        { "version", no_argument, 0, 'V' }, { 0 } };
    int use_mpi = 0, c;
    long long rounds = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': use_mpi = 1; break;
        case 'r': rounds = parse_ll("--rounds", optarg, 1, 1 << 30); break;
        case 'h': print_help(USAGE);
        case 'V': print_version();
        default: bad_option(argv);
        }
    }
    if (argc - optind != 2) usage_die("need the input list and the output list (see --help)");
    enum { MAX_WORKERS = 256 };
    char *in_paths[MAX_WORKERS], *out_paths[MAX_WORKERS];
    int n = split(argv[optind], in_paths, MAX_WORKERS);
    if (split(argv[optind + 1], out_paths, MAX_WORKERS) != n)
        usage_die("%d inputs but a different number of outputs", n);
    if (n < 1) usage_die("no workers");
    Reducer red;
    reducer_init(&red, use_mpi, &argc, &argv);

    Record *r = xcalloc(n, sizeof *r);
    for (long long round = 0; round < rounds; round++) merge_round(n, in_paths, out_paths, &red, r);
    reducer_finish(&red);
    return 0;
}
