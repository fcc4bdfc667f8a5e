/* Memory that must go back, and RSS that must follow the payload (issues 25 and 26). Build with
 * -fno-builtin (so the compiler keeps every malloc/free) and run under LD_PRELOAD=libdomalloc.so
 * (or any allocator, for comparison: the verdicts do not require domalloc).
 *   rss_shapes huge          malloc(64 MiB), touch, free; then no allocator call
 *   rss_shapes huge-calls    the same, with a small malloc/free every poll
 *   rss_shapes realloc       a 64 MiB block realloc'ed to 16 B and back 300 times (ends at 16 B)
 *   rss_shapes remote MIB    4 threads allocate MIB MiB in total in 64 KiB blocks, touch, exit;
 *                            the main thread frees every block; then no allocator call
 *   rss_shapes own MIB       the same, but each thread frees its own blocks before it exits
 *   rss_shapes payload SIZE COUNT   COUNT blocks of SIZE bytes, each touched: RSS added vs payload
 * The first five poll RSS every 100 ms for up to 10 s (a watchdog, not a timing threshold) and
 * fail if it does not come back within 16 MiB of the baseline; "payload" fails above 1.1x. */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>

enum { SLACK = 16 << 20, POLL_MS = 100, WATCH_MS = 10000, THREADS = 4, BLOCK = 64 << 10 };

static long rss_now(void) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *s = buf;
    while (*s && *s != ' ') s++;
    return strtol(s, NULL, 10) * sysconf(_SC_PAGESIZE);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int back(const char *what, long base, long peak, int calls) {
    long after = rss_now(), rss = after;
    int waited = 0;
    while (waited < WATCH_MS && rss > base + SLACK) {
        struct timespec ts = {0, POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
        if (calls) {
            volatile char *p = malloc(32);
            FATAL_CHECK(p != NULL);
            p[0] = 1;
            free((void *)p);
        }
        waited += POLL_MS;
        rss = rss_now();
    }
    printf("%s: baseline %ld MiB, peak %ld MiB, right after the frees %ld MiB, %ld MiB after %d ms%s\n", what,
           base >> 20, peak >> 20, after >> 20, rss >> 20, waited, rss <= base + SLACK ? "" : " FAIL");
    return rss <= base + SLACK ? 0 : 1;
}

static long per_thread_bytes;
static int own_frees;

static void *worker(void *arg) {
    long n = per_thread_bytes / BLOCK;
    void **v = (void **)arg;
    for (long i = 0; i < n; i++) {
        v[i] = malloc(BLOCK);
        FATAL_CHECK(v[i] != NULL);
        memset(v[i], (int)i, BLOCK);
    }
    if (own_frees)
        for (long i = 0; i < n; i++) free(v[i]);
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "huge";
    long base = rss_now();
    if (!strcmp(mode, "huge") || !strcmp(mode, "huge-calls")) {
        size_t n = 64 << 20;
        char *p = malloc(n);
        FATAL_CHECK(p != NULL);
        memset(p, 1, n);
        long peak = rss_now();
        free(p);
        return back(mode, base, peak, !strcmp(mode, "huge-calls"));
    }
    if (!strcmp(mode, "realloc")) {
        size_t n = 64 << 20;
        char *p = malloc(16);
        FATAL_CHECK(p != NULL);
        long peak = 0;
        double t0 = now_s();
        for (int i = 0; i < 300; i++) {
            p = realloc(p, n);
            FATAL_CHECK(p != NULL);
            if (i == 0) memset(p, 1, n);
            p[n - 1] = (char)i;
            long r = rss_now();
            if (r > peak) peak = r;
            p = realloc(p, 16);
            FATAL_CHECK(p != NULL);
        }
        printf("realloc: 300 rounds in %.3f s, RSS at the end of the loop %ld MiB\n", now_s() - t0, rss_now() >> 20);
        int r = back(mode, base, peak, 0);
        free(p);
        return r;
    }
    if (!strcmp(mode, "remote") || !strcmp(mode, "own")) {
        long mib = argc > 2 ? atol(argv[2]) : 1024;
        own_frees = !strcmp(mode, "own");
        per_thread_bytes = (mib << 20) / THREADS;
        long n = per_thread_bytes / BLOCK;
        void **v[THREADS];
        for (int t = 0; t < THREADS; t++) {
            v[t] = mmap(NULL, n * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            FATAL_CHECK(v[t] != MAP_FAILED);
        }
        base = rss_now() + (long)(THREADS * n * sizeof(void *));
        pthread_t th[THREADS];
        for (long t = 0; t < THREADS; t++) FATAL_CHECK(pthread_create(&th[t], NULL, worker, v[t]) == 0);
        long peak = 0;
        for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
        peak = rss_now();
        if (!own_frees)
            for (int t = 0; t < THREADS; t++)
                for (long i = 0; i < n; i++) free(v[t][i]);
        return back(mode, base, peak, 0);
    }
    if (!strcmp(mode, "payload")) {
        long size = argc > 2 ? atol(argv[2]) : 1 << 20, count = argc > 3 ? atol(argv[3]) : 300;
        char **v = mmap(NULL, count * sizeof(char *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        FATAL_CHECK(v != MAP_FAILED);
        v[0] = NULL;
        base = rss_now();
        for (long i = 0; i < count; i++) {
            v[i] = malloc(size);
            FATAL_CHECK(v[i] != NULL);
            memset(v[i], (int)i, size);
        }
        long added = rss_now() - base, payload = size * count;
        double ratio = (double)added / payload;
        printf("payload: %ld blocks of %ld B: payload %.1f MiB, RSS added %.1f MiB (%.2fx)%s\n", count, size,
               payload / 1048576.0, added / 1048576.0, ratio, ratio <= 1.1 ? "" : " FAIL");
        for (long i = 0; i < count; i++) free(v[i]);
        return ratio <= 1.1 ? 0 : 1;
    }
    fprintf(stderr, "rss_shapes: unknown mode %s\n", mode);
    return 2;
}
