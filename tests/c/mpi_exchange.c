/* Open MPI ranks under LD_PRELOAD=libdomalloc.so (mpirun -x LD_PRELOAD=...): every rank checks
 * that domalloc is its malloc, then exchanges malloc'd messages of many sizes around a ring and
 * all-to-all (contents checked), reallocs received buffers, and reduces checksums. */
#include "common.h"

#include <mpi.h>

static uint64_t pattern(int from, int to, size_t i, int round) {
    return ((uint64_t)from * 1000003u) ^ ((uint64_t)to * 7919u) ^ (uint64_t)i ^ ((uint64_t)round << 40);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long errors = 0;

    dm_node_of_fn node_of = dm_node_of_ptr();
    int preloaded = dm_mapped() && node_of != NULL;
    if (!preloaded) errors++;

    size_t sizes[] = {1, 100, 4096, 65536, 1 << 20, 6 << 20};
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    for (int round = 0; round < 10; round++) {
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            size_t n = sizes[s];
            uint64_t *out = malloc(n * sizeof *out);
            uint64_t *in = malloc(n * sizeof *in);
            if (!out || !in) MPI_Abort(MPI_COMM_WORLD, 3);
            if (preloaded && (node_of(out) < 0 || node_of(in) < 0)) errors++;
            for (size_t i = 0; i < n; i++) out[i] = pattern(rank, next, i, round);
            MPI_Sendrecv(out, (int)n, MPI_UINT64_T, next, round, in, (int)n, MPI_UINT64_T, prev, round,
                         MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            for (size_t i = 0; i < n; i++)
                if (in[i] != pattern(prev, rank, i, round)) {
                    errors++;
                    break;
                }
            /* Grow the received buffer: the contents move with it. */
            in = realloc(in, 2 * n * sizeof *in);
            if (!in) MPI_Abort(MPI_COMM_WORLD, 3);
            if (in[n - 1] != pattern(prev, rank, n - 1, round)) errors++;
            free(out);
            free(in);
        }
        /* All-to-all with per-peer blocks. */
        int per = 1000 + round * 100;
        int *sbuf = malloc((size_t)per * (size_t)size * sizeof(int));
        int *rbuf = calloc((size_t)per * (size_t)size, sizeof(int));
        if (!sbuf || !rbuf) MPI_Abort(MPI_COMM_WORLD, 3);
        for (int p = 0; p < size; p++)
            for (int i = 0; i < per; i++) sbuf[p * per + i] = rank * 100000 + p * 1000 + i % 1000;
        MPI_Alltoall(sbuf, per, MPI_INT, rbuf, per, MPI_INT, MPI_COMM_WORLD);
        for (int p = 0; p < size; p++)
            for (int i = 0; i < per; i++)
                if (rbuf[p * per + i] != p * 100000 + rank * 1000 + i % 1000) {
                    errors++;
                    p = size;
                    break;
                }
        free(sbuf);
        free(rbuf);
    }
    long total = 0;
    MPI_Allreduce(&errors, &total, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    int all_preloaded = 0;
    MPI_Allreduce(&preloaded, &all_preloaded, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("mpi_exchange: %d ranks, %d with domalloc, %ld error(s)\n", size, all_preloaded, total);
        if (total == 0 && all_preloaded == size) printf("mpi_exchange: ok\n");
    }
    MPI_Finalize();
    return total == 0 && all_preloaded == size ? 0 : 1;
}
