/* allreduce-merge - mean of N workers' gradient streams, sent back to each of them. */
#include "stream.h"
#include "util.h"
#include "allreduce.h"
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <time.h>
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

/* A record of every worker, merged: the f32 sum over this rank's workers (in worker
 * order: the same bits every time), then over the ranks, then the mean. */
typedef struct Item {
    Record rec;             /* worker 0's record; f32 ones end up holding the mean */
    ReduceRequest *sum;     /* the sum across ranks in flight; NULL for other dtypes */
    int started, last;      /* sum started; last: no record, the inputs have ended */
    struct Item *next;
} Item;

/* Reading and summing run in a thread of their own, so that the main thread can keep
 * the sums across ranks moving (MPI progresses only inside MPI calls) and hand means
 * back while the workers are still computing the next buckets. */
typedef struct {
    int n;
    StreamReader **in;
    char **in_paths;
    pthread_mutex_t lock;
    pthread_cond_t more;
    Item *head, **tail;
} Queue;

static void push(Queue *q, Item *it) {
    pthread_mutex_lock(&q->lock);
    *q->tail = it;
    q->tail = &it->next;
    pthread_cond_signal(&q->more);
    pthread_mutex_unlock(&q->lock);
}

static void *read_and_sum(void *arg) {
    Queue *q = arg;
    int n = q->n, streams = n < 64 ? n : 64;
    Record *r = xcalloc(n, sizeof *r);
    for (;;) {
        int ended = 0;
        /* workers' streams side by side: one at a time, each would wait for the ones before it */
        #pragma omp parallel for schedule(dynamic) num_threads(streams) reduction(+:ended)
        for (int i = 0; i < n; i++) ended += !sr_next(q->in[i], &r[i]);
        Item *it = xcalloc(1, sizeof *it);
        if (ended == n) { it->last = 1; push(q, it); break; }
        if (ended) die("a worker's stream ended before the others' (worker stopped?)");
        for (int i = 1; i < n; i++) {
            int same = !strcmp(r[i].name, r[0].name) && r[i].dtype == r[0].dtype && r[i].rank == r[0].rank;
            for (int d = 0; same && d < r[0].rank; d++) same = r[i].dims[d] == r[0].dims[d];
            if (!same) die("%s: record '%s' at byte %llu does not match '%s' of %s", q->in_paths[i], r[i].name,
                           (unsigned long long)r[i].offset, r[0].name, q->in_paths[0]);
            if (r[0].dtype != DT_F32 && memcmp(r[i].data, r[0].data, r[0].nbytes))
                die("%s: record '%s' differs from %s's and is not f32", q->in_paths[i], r[i].name, q->in_paths[0]);
        }
        if (r[0].dtype == DT_F32) {
            float *sum = r[0].data;
            size_t len = (size_t)r[0].nelem;
            for (size_t k = 0; k < len; k++) {          /* workers in order: the same bits */
                float s = sum[k];
                for (int i = 1; i < n; i++) s += ((const float *)r[i].data)[k];
                sum[k] = s;
            }
        }
        it->rec = r[0];               /* the item takes worker 0's buffer */
        r[0] = (Record){ 0 };
        push(q, it);
    }
    for (int i = 0; i < n; i++) record_free(&r[i]);
    free(r);
    return NULL;
}

/* One round: open every input, then every output (the order in which workers
 * open their ends), merge until all inputs end, close. */
static void merge_round(int n, char **in_paths, char **out_paths, Reducer *red) {
    Queue q = { n, xcalloc(n, sizeof *q.in), in_paths, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                NULL, NULL };
    q.tail = &q.head;
    StreamWriter **out = xcalloc(n, sizeof *out);
    FILE **out_files = xcalloc(n, sizeof *out_files);
    for (int i = 0; i < n; i++) q.in[i] = sr_open_path(in_paths[i]);
    for (int i = 0; i < n; i++) {
        if (!(out_files[i] = fopen(out_paths[i], "wb"))) die("cannot open %s: %s", out_paths[i], strerror(errno));
        out[i] = sw_open(out_files[i], out_paths[i], 1, 0);
    }
    pthread_t reader;
    if (pthread_create(&reader, NULL, read_and_sum, &q)) die("cannot start the reading thread");
    int streams = n < 64 ? n : 64;
    float inv = 1.0f / (float)red->total_workers;
    for (int finished = 0; !finished;) {
        pthread_mutex_lock(&q.lock);
        while (!q.head) pthread_cond_wait(&q.more, &q.lock);
        for (Item *it = q.head; it; it = it->next)      /* every new record's sum goes out at once */
            if (!it->started) {
                it->started = 1;
                if (!it->last && it->rec.dtype == DT_F32)
                    it->sum = reducer_start(red, it->rec.data, (size_t)it->rec.nelem);
            }
        Item *it = q.head;
        int ready = !it->sum || reducer_done(red, it->sum);
        if (ready) {
            q.head = it->next;
            if (!q.head) q.tail = &q.head;
        } else {            /* in flight: wait a moment for more records, then ask MPI again */
            struct timespec t;
            clock_gettime(CLOCK_REALTIME, &t);
            t.tv_nsec += 200000;
            if (t.tv_nsec >= 1000000000) { t.tv_sec++; t.tv_nsec -= 1000000000; }
            pthread_cond_timedwait(&q.more, &q.lock, &t);
        }
        pthread_mutex_unlock(&q.lock);
        if (!ready) continue;
        if (it->last) finished = 1;
        else {
            if (it->rec.dtype == DT_F32) {
                float *v = it->rec.data;
                for (int64_t k = 0; k < it->rec.nelem; k++) v[k] *= inv;
            }
            #pragma omp parallel for schedule(dynamic) num_threads(streams)
            for (int i = 0; i < n; i++) sw_write_record(out[i], &it->rec);
        }
        record_free(&it->rec);
        free(it);
    }
    pthread_join(reader, NULL);
    for (int i = 0; i < n; i++) { sw_close(out[i]); fclose(out_files[i]); sr_close(q.in[i]); }
    free(q.in); free(out); free(out_files);
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
    reducer_init(&red, use_mpi, n, &argc, &argv);
    for (long long round = 0; round < rounds; round++) merge_round(n, in_paths, out_paths, &red);
    reducer_finish(&red);
    return 0;
}
