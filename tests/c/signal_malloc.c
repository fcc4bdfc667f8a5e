/* malloc re-entered from a signal handler: what sampling profilers do (a SIGPROF handler that
 * allocates and frees while the thread it interrupted may be inside malloc or free). Not
 * async-signal-safe by POSIX; domalloc promises that it neither corrupts its heap nor blames the
 * program for it: the handler's calls are served from a separate locked heap while the thread's
 * own heap is in a slow path, and a handler that interrupts a path holding an allocator lock gets
 * NULL (ENOMEM), never a deadlock.
 *
 * Usage: signal_malloc [seconds] [threads] [mode] [sizes]
 *   mode "prof" (default): ITIMER_PROF every 1 ms of CPU time, the handler mallocs and frees
 *   blocks of 16 B to 256 KiB (and keeps a few between signals, freeing them in later ones);
 *   mode "usr1": a helper thread sends SIGUSR1 to the workers as fast as it can.
 *   sizes "mixed" (default): the workers' blocks are 16 B to 2 MiB, most small;
 *   sizes "big": 64 KiB to 4 MiB (large and huge blocks: every worker call is a slow path, so
 *   a signal lands inside the allocator's slow paths, holding its locks, all the time).
 * The workers malloc, realloc, calloc and free blocks, write a stamp into each, check it before
 * free, and free some on another thread. Exit 0 when every stamp held; the allocator's abort, a
 * stamp mismatch or a hang (the caller's timeout) fails.
 *
 * What domalloc guarantees is the "big" case (and a handler interrupting any slow path): the
 * handler's calls never touch the interrupted heap and never wait for a lock the thread holds.
 * The few instructions of the fast paths themselves are not guarded (README, "Signal
 * handlers"), so "mixed" can still fail, rarely; it is a measurement, not a CI test. */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <time.h>

enum { SLOTS = 4096, KEEP = 64 };

static volatile sig_atomic_t stop;
static int big_sizes; /* "big": the workers' blocks and half the handler's are large or huge */
static volatile long handled, handler_null;
static __thread void *kept[KEEP];
static __thread unsigned kept_i;
static __thread uint64_t sig_rng = 88172645463325252ull;

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t worker_size(uint64_t r) {
    if (big_sizes) return 64 * 1024 + r % (4 << 20);
    switch (r % 16) {
    case 0: return 16 + (r >> 8) % (256 * 1024);
    case 1: return 64 * 1024 + (r >> 8) % (2 << 20);
    default: return 16 + (r >> 8) % 1024;
    }
}

static size_t pick_size(uint64_t r) {
    switch (r % 16) {
    case 0: return 16 + (r >> 8) % (256 * 1024);        /* up to 256 KiB */
    case 1: return 64 * 1024 + (r >> 8) % (2 << 20);    /* large and huge */
    default: return 16 + (r >> 8) % 1024;               /* small */
    }
}

static void handler(int sig) {
    (void)sig;
    int saved = errno;
    uint64_t r = xorshift(&sig_rng);
    size_t n = big_sizes && (r & 2) ? 64 * 1024 + (r >> 8) % (1 << 20) : pick_size(r) % (256 * 1024) + 1;
    unsigned char *p = malloc(n);
    if (p) {
        p[0] = 0x5a;
        p[n - 1] = 0xa5;
        if (p[0] != 0x5a || p[n - 1] != 0xa5) _exit(4);
    } else {
        handler_null++;
    }
    unsigned i = kept_i++ % KEEP;
    free(kept[i]);
    kept[i] = p;
    if (r & 1) {
        void *q = calloc(1, 24 + (r >> 20) % 3000);
        free(q);
    }
    handled++;
    errno = saved;
}

struct slot {
    pthread_mutex_t lock;
    uint64_t *p;
    size_t n;
};
static struct slot shared[SLOTS];

static void stamp(uint64_t *p, size_t n, uint64_t v) {
    p[0] = v;
    if (n >= 16) p[n / 8 - 1] = ~v;
}

static int stamped(const uint64_t *p, size_t n, uint64_t v) {
    return p[0] == v && (n < 16 || p[n / 8 - 1] == ~v);
}

static void *worker(void *arg) {
    uint64_t rng = 0x9e3779b97f4a7c15ull * (uintptr_t)(arg + 1);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    while (!stop) {
        uint64_t r = xorshift(&rng);
        struct slot *s = &shared[r % (big_sizes ? 64 : SLOTS)];
        size_t n = (worker_size(r >> 12) + 15) & ~(size_t)15;
        uint64_t v = r | 1;
        pthread_mutex_lock(&s->lock);
        if (s->p) {
            if (!stamped(s->p, s->n, (uint64_t)(uintptr_t)s->p)) {
                fprintf(stderr, "signal_malloc: block %p (%zu B) lost its stamp\n", (void *)s->p, s->n);
                _exit(5);
            }
            if (r & 2) {
                uint64_t *q = realloc(s->p, n);
                if (q) {
                    s->p = q;
                    s->n = n < s->n ? n : s->n;
                    stamp(q, s->n, (uint64_t)(uintptr_t)q);
                }
                pthread_mutex_unlock(&s->lock);
                continue;
            }
            free(s->p);
            s->p = NULL;
        } else {
            uint64_t *q = (r & 4) ? calloc(1, n) : malloc(n);
            if (q) {
                stamp(q, n, (uint64_t)(uintptr_t)q);
                s->p = q;
                s->n = n;
            }
        }
        pthread_mutex_unlock(&s->lock);
        (void)v;
    }
    return NULL;
}

static pthread_t workers[64];
static int nworkers;

static void *sender(void *arg) {
    (void)arg;
    while (!stop) {
        for (int i = 0; i < nworkers; i++) pthread_kill(workers[i], SIGUSR1);
        sched_yield();
    }
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3;
    nworkers = argc > 2 ? atoi(argv[2]) : 2;
    const char *mode = argc > 3 ? argv[3] : "prof";
    big_sizes = argc > 4 && strcmp(argv[4], "big") == 0;
    if (nworkers < 1 || nworkers > 64) nworkers = 2;
    for (int i = 0; i < SLOTS; i++) pthread_mutex_init(&shared[i].lock, NULL);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    int sig = strcmp(mode, "usr1") == 0 ? SIGUSR1 : SIGPROF;
    sigaction(sig, &sa, NULL);

    /* The main thread blocks the signal: only the workers, which allocate all the time, get it. */
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, sig);
    pthread_sigmask(SIG_BLOCK, &block, NULL);

    for (int i = 0; i < nworkers; i++) pthread_create(&workers[i], NULL, worker, (void *)(intptr_t)i);
    pthread_t snd;
    if (sig == SIGPROF) {
        struct itimerval it = {{0, 1000}, {0, 1000}};
        setitimer(ITIMER_PROF, &it, NULL);
    } else {
        pthread_create(&snd, NULL, sender, NULL);
    }
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    stop = 1;
    if (sig == SIGPROF) {
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_PROF, &off, NULL);
    } else {
        pthread_join(snd, NULL);
    }
    for (int i = 0; i < nworkers; i++) pthread_join(workers[i], NULL);
    for (int i = 0; i < SLOTS; i++) {
        if (shared[i].p && !stamped(shared[i].p, shared[i].n, (uint64_t)(uintptr_t)shared[i].p)) {
            fprintf(stderr, "signal_malloc: block %p lost its stamp at the end\n", (void *)shared[i].p);
            return 5;
        }
        free(shared[i].p);
    }
    printf("signal_malloc: %ld signals handled (%ld handler allocations got NULL), %s mode, %s sizes, %d workers\n",
           handled, handler_null, mode, big_sizes ? "big" : "mixed", nworkers);
    return handled > 0 ? 0 : 6;
}
