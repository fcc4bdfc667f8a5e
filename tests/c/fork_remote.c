/* fork() while other threads free blocks into full pages of a third thread (remote frees).
 *   owner:   allocates all blocks of PAGES spans of two small classes with few blocks per span,
 *            shares one block of each span in a slot and keeps the others, and allocates a new
 *            block into every slot a freer emptied: the block just freed comes back, and the
 *            span is full again (it goes to the owner's full list on its next refill);
 *   freers:  never allocate; take blocks out of the slots, one span after another, and free
 *            them: almost every free lands in a full page and notifies the owner (the page's
 *            remote-free state goes FULL -> NOTIFYING -> NORMAL);
 *   forker:  the main thread forks in a loop; each child frees one kept block of every span
 *            and what is in the slots (remote frees into the owner's pages), allocates and
 *            frees blocks of the same classes, and exits.
 * A fork that copies a page while its state is NOTIFYING leaves the child a page whose state
 * never changes again (the notifying thread does not exist there): the child's first free into
 * it spins forever. The window is a few instructions per notification, so this test is
 * PROBABILISTIC: the freers notify as often as they can while the main thread forks for the
 * given time (on the old core, c338579, it hung in 7 of 19 runs of 4 s on a 2-core machine).
 * A child that does not exit within WATCHDOG_S seconds is killed and fails the test with a
 * message (never a skip).
 * Usage: fork_remote [seconds] [freers]   (default 4 s, 2 freers). Under LD_PRELOAD. */
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>

enum { PAGES = 128, STRIDE = 7, MAX_FREERS = 8, WATCHDOG_S = 5 };
/* 16000 B (16 KiB class: 4 blocks per 64 KiB span) for the first half of the spans, 10000 B
 * (10 KiB class: 6 per span) for the second. */
static size_t size_of(int i) { return i < PAGES / 2 ? 16000 : 10000; }
static int blocks_per_span(int i) { return i < PAGES / 2 ? 4 : 6; }

/* One block of each of the owner's spans, shared with the freers. */
static _Atomic(void *) slot[PAGES];
/* The other blocks of each span (kept allocated, so a span is full whenever its slot is). */
static void *kept[PAGES][5];
static atomic_int stop, owner_ready;
static atomic_long remote_frees, allocs;

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

static void *owner(void *arg) {
    (void)arg;
    /* A fresh span is carved in address order: n consecutive blocks of a class fill one. */
    for (int i = 0; i < PAGES; i++) {
        void *p = malloc(size_of(i));
        FATAL_CHECK(p != NULL);
        atomic_store(&slot[i], p);
        for (int j = 0; j < blocks_per_span(i) - 1; j++) FATAL_CHECK((kept[i][j] = malloc(size_of(i))) != NULL);
    }
    atomic_store(&owner_ready, 1);
    long n = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int i = 0; i < PAGES; i++) {
            if (atomic_load_explicit(&slot[i], memory_order_relaxed)) continue;
            void *p = malloc(size_of(i));
            FATAL_CHECK(p != NULL);
            void *expected = NULL;
            if (!atomic_compare_exchange_strong(&slot[i], &expected, p)) free(p);
            n++;
        }
    }
    for (int i = 0; i < PAGES; i++)
        for (int j = 0; j < blocks_per_span(i) - 1; j++) free(kept[i][j]);
    atomic_fetch_add(&allocs, n);
    return NULL;
}

static void *freer(void *arg) {
    long n = 0;
    unsigned i = (unsigned)(uintptr_t)arg * (PAGES / MAX_FREERS), idle = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        i = (i + STRIDE) % PAGES; /* another span each time */
        void *p = atomic_load_explicit(&slot[i], memory_order_relaxed);
        if (p && (p = atomic_exchange_explicit(&slot[i], NULL, memory_order_acq_rel))) {
            free(p); /* this thread never allocates: each free goes straight to the page */
            n++;
            idle = 0;
        } else if (++idle == PAGES) {
            idle = 0;
            sched_yield(); /* nothing to free: let the owner refill */
        }
    }
    atomic_fetch_add(&remote_frees, n);
    return NULL;
}

static void child(void) {
    /* Remote frees into every span of the owner (which does not exist here). The span a freer
     * was freeing into at the fork has its slot empty: free a kept block of each span. */
    for (int i = 0; i < PAGES; i++) free(atomic_exchange(&slot[i], NULL));
    for (int i = 0; i < PAGES; i++) free(kept[i][0]);
    static void *keep[256];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 256; i++) {
            keep[i] = malloc(size_of((i + round) % PAGES));
            if (!keep[i]) _exit(3);
            *(volatile char *)keep[i] = 1;
        }
        for (int i = 0; i < 256; i++) free(keep[i]);
    }
    _exit(0);
}

int main(int argc, char **argv) {
    int secs = argc > 1 ? atoi(argv[1]) : 4;
    int nfreers = argc > 2 ? atoi(argv[2]) : 2;
    if (nfreers < 1 || nfreers > MAX_FREERS) nfreers = 2;
    dm_require_domalloc();
    pthread_t o, f[MAX_FREERS];
    FATAL_CHECK(pthread_create(&o, NULL, owner, NULL) == 0);
    while (!atomic_load(&owner_ready)) sched_yield();
    for (long i = 0; i < nfreers; i++) FATAL_CHECK(pthread_create(&f[i], NULL, freer, (void *)i) == 0);
    long t0 = now_ms(), forks = 0;
    while (now_ms() - t0 < secs * 1000L) {
        pid_t pid = fork();
        FATAL_CHECK(pid >= 0);
        if (pid == 0) child();
        forks++;
        int st = 0;
        long w0 = now_ms();
        pid_t r;
        while ((r = waitpid(pid, &st, WNOHANG)) == 0) {
            if (now_ms() - w0 > WATCHDOG_S * 1000L) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                fprintf(stderr,
                        "fork_remote: HANG: the child of fork %ld did not exit within %d s (killed): "
                        "fork copied a page in the middle of a remote free's owner notification "
                        "(state NOTIFYING), which nothing ends in the child\n",
                        forks, WATCHDOG_S);
                _exit(1);
            }
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
        if (r != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "fork_remote: the child of fork %ld failed (status 0x%x)\n", forks, st);
            return 1;
        }
    }
    atomic_store(&stop, 1);
    pthread_join(o, NULL);
    for (int i = 0; i < nfreers; i++) pthread_join(f[i], NULL);
    for (int i = 0; i < PAGES; i++) free(atomic_exchange(&slot[i], NULL));
    printf("fork_remote ok: %ld forks, %ld allocations, %ld remote frees in %d s\n", forks, atomic_load(&allocs),
           atomic_load(&remote_frees), secs);
    return 0;
}
