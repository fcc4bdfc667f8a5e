/* Thread exit churn: thousands of short-lived threads (joined and detached) allocate, free some
 * blocks locally, hand others to the next generation (freed by a thread that did not allocate
 * them) and exit. RSS must stay bounded: heaps and pages of dead threads are reused.
 * Run under LD_PRELOAD. Usage: thread_churn [threads] [max-rss-growth-MiB] */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

#define HANDOFF 1024
static _Atomic(void *) handoff[HANDOFF];
static atomic_int running;

static void *body(void *arg) {
    uint64_t rng = 0xABCDEF12345ULL ^ ((uintptr_t)arg * 0x9E3779B97F4A7C15ULL);
    void *local[64];
    for (int i = 0; i < 64; i++) {
        size_t n = 16 + dm_rand(&rng) % 3000;
        local[i] = malloc(n);
        if (local[i]) memset(local[i], i, n);
    }
    for (int i = 0; i < 64; i += 2) free(local[i]);
    for (int i = 1; i < 64; i += 2) {
        /* Pass to a later thread; free what an earlier thread left. */
        void *old = atomic_exchange(&handoff[dm_rand(&rng) % HANDOFF], local[i]);
        free(old);
    }
    void *big = malloc(300000 + dm_rand(&rng) % 100000);
    if (big) memset(big, 1, 4096);
    free(big);
    atomic_fetch_sub(&running, 1);
    return NULL;
}

static void wave(int n, int base) {
    pthread_t t[16];
    pthread_attr_t detached;
    pthread_attr_init(&detached);
    pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < n; i++) {
        atomic_fetch_add(&running, 1);
        if (i % 4 == 3) {
            pthread_t d;
            FATAL_CHECK(pthread_create(&d, &detached, body, (void *)(uintptr_t)(base + i)) == 0);
            t[i] = 0;
        } else {
            FATAL_CHECK(pthread_create(&t[i], NULL, body, (void *)(uintptr_t)(base + i)) == 0);
        }
    }
    for (int i = 0; i < n; i++)
        if (t[i]) pthread_join(t[i], NULL);
    pthread_attr_destroy(&detached);
}

int main(int argc, char **argv) {
    int total = argc > 1 ? atoi(argv[1]) : 5000;
    long limit_mib = argc > 2 ? atol(argv[2]) : 48;
    dm_require_domalloc();
    /* Warm up: the first waves map what steady state needs. */
    for (int i = 0; i < 50; i++) wave(16, i * 16);
    while (atomic_load(&running)) usleep(1000);
    size_t rss0 = dm_rss();
    int done = 800;
    size_t peak = rss0;
    while (done < total) {
        wave(16, done);
        done += 16;
        if (done % 512 == 0) {
            size_t r = dm_rss();
            if (r > peak) peak = r;
        }
    }
    while (atomic_load(&running)) usleep(1000);
    size_t rss1 = dm_rss();
    if (rss1 > peak) peak = rss1;
    printf("thread_churn: %d threads; RSS after warm-up %.1f MiB, peak %.1f MiB, end %.1f MiB\n", done,
           (double)rss0 / 1048576, (double)peak / 1048576, (double)rss1 / 1048576);
    CHECK(peak <= rss0 + (size_t)limit_mib * 1048576);
    for (int i = 0; i < HANDOFF; i++) free(atomic_exchange(&handoff[i], NULL));
    return dm_finish("thread_churn");
}
