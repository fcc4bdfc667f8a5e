/* Cost of purging recycled first-touch spans (issue 20): run with LD_PRELOAD=libdomalloc.so, on a
   fake two-node topology (DOMALLOC_TOPOLOGY_ROOT, DOMALLOC_NUMA=1) and on one node:
     gcc -O2 -o phases_bench phases_bench.c && LD_PRELOAD=.../libdomalloc.so taskset -c 0 ./phases_bench 200 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
/* One thread, phase after phase: 8 blocks of one size, written, freed; the size changes every
   phase (each small class from 16K to 128K, then large 136K..900K), so spans freed by one phase
   are carved again by another. Prints ns per phase and minor faults per phase. */
int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    size_t sizes[] = {16384,20480,24576,28672,32768,36864,40960,45056,49152,53248,57344,61440,65536,
                      73728,81920,90112,98304,106496,114688,122880,131072,139264,262144,524288,921600};
    int ns = sizeof sizes / sizeof sizes[0];
    struct rusage r0, r1; getrusage(RUSAGE_SELF, &r0);
    struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
    long phases = 0;
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < ns; i++) {
            size_t s = sizes[(i * 7 + r) % ns];
            void *p[8];
            for (int k = 0; k < 8; k++) { p[k] = malloc(s); memset(p[k], k, s); }
            for (int k = 0; k < 8; k++) free(p[k]);
            phases++;
        }
    clock_gettime(CLOCK_MONOTONIC, &t1); getrusage(RUSAGE_SELF, &r1);
    double ns_ = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    printf("phases=%ld us_per_phase=%.1f minflt_per_phase=%.1f\n", phases, ns_ / phases / 1e3, (double)(r1.ru_minflt - r0.ru_minflt) / phases);
    return 0;
}
