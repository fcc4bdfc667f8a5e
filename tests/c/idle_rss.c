/* Memory goes back to the OS while the program is idle: allocate 400,000 blocks of 512 B (about
 * 200 MiB, all touched), free them all, then make no allocator call at all and sleep. RSS must
 * come back near its baseline (within 16 MiB of the RSS before the allocations) without any
 * further malloc/free: the documented promise is "within about twice the purge delay"; the
 * program polls /proc/self/statm every 100 ms for up to 10 s (a watchdog, not a timing
 * threshold) with DOMALLOC_PURGE_DELAY=100 (set here, by re-executing itself, if missing).
 *   idle_rss single    one thread allocates and frees
 *   idle_rss threads   4 threads allocate and free 100,000 blocks each and exit; then idle
 * Run under LD_PRELOAD=libdomalloc.so. */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <time.h>

enum { BLOCKS = 400000, SIZE = 512, THREADS = 4, SLACK = 16 << 20, POLL_MS = 100, WATCH_MS = 10000 };

static void *blk[BLOCKS];

/* RSS in bytes from /proc/self/statm, without allocating (no stdio). */
static long rss_now(void) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *s = buf;
    while (*s && *s != ' ') s++; /* skip the size field */
    return strtol(s, NULL, 10) * sysconf(_SC_PAGESIZE);
}

static void *work(void *arg) {
    long t = (long)arg, per = BLOCKS / THREADS;
    for (long i = t * per; i < (t + 1) * per; i++) {
        blk[i] = malloc(SIZE);
        FATAL_CHECK(blk[i] != NULL);
        memset(blk[i], (int)i, SIZE);
    }
    for (long i = t * per; i < (t + 1) * per; i++) free(blk[i]);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 && strcmp(argv[1], "threads") == 0;
    if (!getenv("DOMALLOC_PURGE_DELAY")) {
        setenv("DOMALLOC_PURGE_DELAY", "100", 1);
        execv("/proc/self/exe", argv);
        perror("idle_rss: execv");
        return 1;
    }
    dm_require_domalloc();
    memset(blk, 0, sizeof blk); /* the pointer table is part of the baseline */
    long base = rss_now();
    if (threads) {
        pthread_t t[THREADS];
        /* Allocate all, then free all, in each thread (the frees are the owner's). */
        for (long i = 0; i < THREADS; i++) FATAL_CHECK(pthread_create(&t[i], NULL, work, (void *)i) == 0);
        for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    } else {
        for (long i = 0; i < BLOCKS; i++) {
            blk[i] = malloc(SIZE);
            FATAL_CHECK(blk[i] != NULL);
            memset(blk[i], (int)i, SIZE);
        }
    }
    long peak = rss_now();
    if (!threads)
        for (long i = 0; i < BLOCKS; i++) free(blk[i]);
    long after_free = rss_now();

    /* Idle: no allocator call from here on until the verdict. */
    long rss = after_free;
    int waited = 0;
    while (rss > base + SLACK && waited < WATCH_MS) {
        struct timespec ts = {0, POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
        waited += POLL_MS;
        rss = rss_now();
    }
    /* The peak figure is measured in the single-thread case only (threads free before exit). */
    if (!threads && peak < base + (150L << 20)) {
        fprintf(stderr, "idle_rss: the working set was not resident? base %ld MiB, peak %ld MiB\n", base >> 20,
                peak >> 20);
        return 1;
    }
    if (rss > base + SLACK) {
        fprintf(stderr,
                "idle_rss (%s): FAIL: RSS stayed at %ld MiB after %d ms idle (baseline %ld MiB, %ld MiB right "
                "after the %s): memory freed and then left alone is not returned while the program makes no "
                "allocator call (DOMALLOC_PURGE_DELAY=%s)\n",
                threads ? "threads" : "single", rss >> 20, waited, base >> 20, after_free >> 20,
                threads ? "threads freed and exited" : "frees", getenv("DOMALLOC_PURGE_DELAY"));
        return 1;
    }
    printf("idle_rss ok (%s): RSS %ld MiB right after the %s -> %ld MiB after %d ms idle (baseline %ld MiB)\n",
           threads ? "threads" : "single", after_free >> 20, threads ? "threads exited" : "frees", rss >> 20, waited,
           base >> 20);
    return 0;
}
