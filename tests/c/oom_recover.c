/* Out of memory, then recovery (as `ulimit -v 400000`): under RLIMIT_AS = 400000 KiB, malloc
 * 1 MiB blocks (each touched) until malloc returns NULL, free them all, then malloc(64 MiB) must
 * succeed: the memory the program gave back must be usable again for any size. glibc passes
 * (its 1 MiB blocks are mmapped and unmapped by free). Also checks errno == ENOMEM on the NULL.
 * Usage: oom_recover [KiB]   (default 400000). Run under LD_PRELOAD=libdomalloc.so. */
#include "common.h"

#include <sys/resource.h>

enum { MAX_BLOCKS = 4096 };

int main(int argc, char **argv) {
    long kib = argc > 1 ? atol(argv[1]) : 400000;
    dm_require_domalloc();
    struct rlimit r = {(rlim_t)kib * 1024, RLIM_INFINITY};
    FATAL_CHECK(setrlimit(RLIMIT_AS, &r) == 0);

    static void *blk[MAX_BLOCKS];
    int n = 0;
    errno = 0;
    while (n < MAX_BLOCKS) {
        void *p = malloc(1 << 20);
        if (!p) break;
        memset(p, 0x5a, 4096); /* touch the start */
        blk[n++] = p;
    }
    int err = errno;
    if (n == MAX_BLOCKS) {
        fprintf(stderr, "oom_recover: %d blocks of 1 MiB under a %ld KiB limit: the limit does not work\n", n, kib);
        return 1;
    }
    CHECK(err == ENOMEM);
    for (int i = 0; i < n; i++) free(blk[i]);

    /* Everything is free again: a block much bigger than one of those must fit. */
    unsigned char *big = malloc(64 << 20);
    if (!big) {
        fprintf(stderr,
                "oom_recover: FAIL: malloc(64 MiB) returned NULL after %d blocks of 1 MiB were freed "
                "(under RLIMIT_AS %ld KiB): freed memory is not usable again\n",
                n, kib);
        return 1;
    }
    memset(big, 1, 64 << 20);
    free(big);
    /* And the 1 MiB blocks fit again. */
    int m = 0;
    while (m < n / 2 && (blk[m] = malloc(1 << 20)) != NULL) m++;
    for (int i = 0; i < m; i++) free(blk[i]);
    if (m < n / 2) {
        fprintf(stderr, "oom_recover: FAIL: only %d of %d blocks of 1 MiB fit again after freeing\n", m, n / 2);
        return 1;
    }
    if (dm_failures) return 1;
    printf("oom_recover ok: %d blocks of 1 MiB until NULL (ENOMEM), all freed, then 64 MiB and %d x 1 MiB again\n",
           n, m);
    return 0;
}
