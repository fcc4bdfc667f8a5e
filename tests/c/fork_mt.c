/* fork() from a multithreaded parent whose threads keep allocating (small, large and huge
 * blocks, cross-thread frees) while the main thread forks. Each child allocates, starts threads
 * that allocate and free each other's blocks, and exits; a child that hangs (a lock held across
 * fork) is killed after a timeout and fails the test. Run under LD_PRELOAD.
 * Usage: fork_mt [forks] [threads] [mixed|huge|onnode]
 * `huge` makes the busy threads allocate only huge blocks, so a fork often lands while one of
 * them holds the per-node huge-block cache's lock; `onnode` makes them (and the child) allocate
 * small blocks with domalloc_malloc_on_node, whose per-node heap has a lock of its own (run it
 * with DOMALLOC_NUMA=1 on a one-node machine). Regression tests: every allocator lock must be
 * taken by its fork handlers. */
#include "common.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>

static atomic_int stop;
static int huge_only;
static int on_node;
typedef void *(*on_node_fn)(size_t, int);
static on_node_fn malloc_on_node;
static dm_int_fn current_node;
static _Atomic(void *) exchange[64];

static void *busy(void *arg) {
    uint64_t rng = 0x1234567ULL + (uintptr_t)arg * 7919;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint64_t r = dm_rand(&rng);
        size_t n;
        switch (huge_only ? 0 : r % 64) {
        case 0: n = (5 << 20) + (r >> 40) % (1 << 20); break; /* huge: the huge cache's lock */
        case 1: case 2: n = 200000 + (r >> 40) % 500000; break; /* large */
        default: n = 1 + (r >> 40) % 2000; break;
        }
        unsigned char *p = on_node ? malloc_on_node(1 + (r >> 40) % 2000, current_node()) : malloc(n);
        if (on_node) n = 1 + (r >> 40) % 2000;
        if (!p) continue;
        p[0] = (unsigned char)n;
        p[n - 1] = (unsigned char)n;
        void *old = atomic_exchange(&exchange[(r >> 8) % 64], p);
        free(old);
        if (r % 97 == 0) malloc_trim(0);
    }
    return NULL;
}

struct child_arg {
    int id;
    void *from_parent;
};

static void *child_thread(void *arg) {
    struct child_arg *a = arg;
    void *keep[256];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 256; i++) {
            size_t n = 16 + (size_t)(i * 37 + round) % 4000;
            keep[i] = on_node && i % 2 ? malloc_on_node(n, current_node()) : malloc(n);
            if (!keep[i]) return (void *)1;
            memset(keep[i], a->id, 16);
        }
        for (int i = 0; i < 256; i++) free(keep[i]);
    }
    void *big = malloc(8 << 20);
    if (!big) return (void *)1;
    memset(big, 1, 8 << 20);
    return big; /* freed by the main thread of the child: a cross-thread free */
}

static int child_main(void *from_parent) {
    /* Blocks from before the fork are still ours and freeable. */
    free(from_parent);
    pthread_t t[4];
    struct child_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i].id = i + 1;
        if (pthread_create(&t[i], NULL, child_thread, &args[i]) != 0) return 2;
    }
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        if (r == NULL || r == (void *)1) return 3;
        free(r);
    }
    char *s = strdup("child");
    if (!s) return 4;
    free(s);
    return 0;
}

int main(int argc, char **argv) {
    int forks = argc > 1 ? atoi(argv[1]) : 200;
    int nthreads = argc > 2 ? atoi(argv[2]) : 4;
    huge_only = argc > 3 && strcmp(argv[3], "huge") == 0;
    on_node = argc > 3 && strcmp(argv[3], "onnode") == 0;
    dm_require_domalloc();
    malloc_on_node = (on_node_fn)dlsym(RTLD_DEFAULT, "domalloc_malloc_on_node");
    current_node = (dm_int_fn)dlsym(RTLD_DEFAULT, "domalloc_current_node");
    FATAL_CHECK(malloc_on_node && current_node);
    pthread_t t[32];
    if (nthreads > 32) nthreads = 32;
    for (int i = 0; i < nthreads; i++) FATAL_CHECK(pthread_create(&t[i], NULL, busy, (void *)(uintptr_t)i) == 0);
    int hung = 0, failed = 0;
    for (int f = 0; f < forks; f++) {
        void *before = malloc(100 + (size_t)f);
        FATAL_CHECK(before);
        pid_t pid = fork();
        FATAL_CHECK(pid >= 0);
        if (pid == 0) {
            alarm(30); /* a deadlocked child dies by SIGALRM rather than hanging the suite */
            _exit(child_main(before));
        }
        free(before);
        int status = 0;
        /* Wait up to 5 s (a child takes milliseconds). */
        for (int w = 0; w < 5000; w++) {
            pid_t r = waitpid(pid, &status, WNOHANG);
            if (r == pid) break;
            if (w == 4999) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                hung++;
                break;
            }
            usleep(1000);
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            failed++;
            if (failed < 5) {
                if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
                    fprintf(stderr, "fork_mt: child %d hung (killed after 5 s)\n", f);
                else if (WIFSIGNALED(status))
                    fprintf(stderr, "fork_mt: child %d killed by signal %d\n", f, WTERMSIG(status));
                else
                    fprintf(stderr, "fork_mt: child %d exited %d\n", f, WEXITSTATUS(status));
            }
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < nthreads; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 64; i++) free(atomic_exchange(&exchange[i], NULL));
    printf("fork_mt: %d forks from %d busy threads (%s blocks): %d failed (%d hung)\n", forks, nthreads,
           huge_only ? "huge" : on_node ? "on-node" : "mixed", failed, hung);
    CHECK(failed == 0);
    return dm_finish("fork_mt");
}
