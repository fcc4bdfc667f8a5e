/* fork() against stdio (the scenario of glibc's malloc/tst-malloc-fork-deadlock, our own code):
 * reader threads call getline/getdelim on their own FILE (glibc reallocs the line buffer while it
 * holds the FILE's lock), one thread calls fflush(NULL) in a loop (it holds stdio's list lock and
 * takes every FILE's lock in turn), and one thread forks in a loop (fork takes stdio's list lock
 * after running the pthread_atfork prepare handlers). An allocator whose prepare handler keeps
 * its own locks while fork waits for the list lock closes the cycle
 *     fork (allocator locks) -> fflush(NULL) (list lock) -> reader (FILE lock) -> allocator lock
 * and the process hangs. A watchdog in the main thread turns a hang into a failure with a
 * message (no fork completed for WATCHDOG_S seconds, or the threads did not stop).
 * Usage: fork_stdio [seconds]   (default 3). Run under LD_PRELOAD=libdomalloc.so. */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>

enum { READERS = 4, WATCHDOG_S = 5 };

static atomic_int stop;
static atomic_long forks, lines, flushes;
static char path_small[64], path_long[64];

static void say(const char *s) {
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

static void die(const char *s) {
    say(s);
    _exit(1);
}

/* Writes a file whose lines have the given lengths (cycled), so getline's buffer grows through
 * small, large (> 128 KiB) and huge (> 1 MiB) blocks: every kind of allocator slow path. */
static void make_file(char *path, const size_t *lens, int n, int lines_per_len) {
    strcpy(path, "/tmp/domalloc-fork-stdio-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) die("fork_stdio: mkstemp failed\n");
    static char buf[1 << 16];
    memset(buf, 'x', sizeof buf);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < lines_per_len; k++) {
            size_t left = lens[i];
            while (left > 0) {
                size_t c = left < sizeof buf ? left : sizeof buf;
                if (write(fd, buf, c) != (ssize_t)c) die("fork_stdio: write failed\n");
                left -= c;
            }
            if (write(fd, "\n", 1) != 1) die("fork_stdio: write failed\n");
        }
    close(fd);
}

static void *reader(void *arg) {
    long id = (long)arg;
    FILE *f = fopen(id % 2 ? path_long : path_small, "r");
    if (!f) die("fork_stdio: fopen failed\n");
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        rewind(f);
        /* A fresh buffer each pass: getline grows it by realloc, under the FILE's lock. */
        char *line = NULL;
        size_t cap = 0;
        ssize_t r;
        int n = 0;
        while ((r = (id % 3 == 2) ? getdelim(&line, &cap, '\n', f) : getline(&line, &cap, f)) > 0) {
            if (line[0] != 'x') die("fork_stdio: getline returned damaged data\n");
            if (++n % 4 == 0) {
                sched_yield();
                free(line); /* and start small again */
                line = NULL;
                cap = 0;
            }
            if (atomic_load_explicit(&stop, memory_order_relaxed)) break;
        }
        free(line);
        atomic_fetch_add_explicit(&lines, n, memory_order_relaxed);
        /* Leave the FILE unlocked for a moment, or fflush(NULL) (and with it fork) starves. */
        sched_yield();
    }
    fclose(f);
    return NULL;
}

static void *flusher(void *arg) {
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        if (fflush(NULL) != 0) die("fork_stdio: fflush(NULL) failed\n");
        atomic_fetch_add_explicit(&flushes, 1, memory_order_relaxed);
    }
    return NULL;
}

static void *forker(void *arg) {
    long k = 0;
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        pid_t pid = fork();
        if (pid < 0) die("fork_stdio: fork failed\n");
        if (pid == 0) {
            /* Every other child uses the allocator once: the locks must be usable after fork. */
            if (k % 2) {
                void *p = malloc(100 + (size_t)k % 5000);
                if (!p) _exit(3);
                memset(p, 1, 100);
                free(p);
            }
            _exit(17);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 17)
            die("fork_stdio: child did not exit with status 17\n");
        atomic_fetch_add_explicit(&forks, 1, memory_order_relaxed);
        k++;
    }
    return NULL;
}

static void report(const char *what) {
    char msg[512];
    snprintf(msg, sizeof msg,
             "fork_stdio: HANG: %s (forks %ld, getline passes %ld lines, fflush(NULL) %ld): a fork "
             "deadlocked against stdio (allocator locks held by the atfork prepare handler while "
             "fork waits for stdio's list lock)\n",
             what, atomic_load(&forks), atomic_load(&lines), atomic_load(&flushes));
    die(msg);
}

static void nap_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    int secs = argc > 1 ? atoi(argv[1]) : 3;
    dm_require_domalloc();
    static const size_t small_lens[] = {10, 100, 900, 3000, 20000, 70000};
    static const size_t long_lens[] = {50000, 200000, 700000, 1500000};
    make_file(path_small, small_lens, 6, 4);
    make_file(path_long, long_lens, 4, 1);

    pthread_t t[READERS + 2];
    for (long i = 0; i < READERS; i++)
        if (pthread_create(&t[i], NULL, reader, (void *)i) != 0) die("fork_stdio: pthread_create failed\n");
    if (pthread_create(&t[READERS], NULL, flusher, NULL) != 0) die("fork_stdio: pthread_create failed\n");
    if (pthread_create(&t[READERS + 1], NULL, forker, NULL) != 0) die("fork_stdio: pthread_create failed\n");

    /* Watchdog: forks must keep completing. A hang is a failure, never a skip. */
    long last = 0;
    int idle_ms = 0;
    for (int ms = 0; ms < secs * 1000; ms += 100) {
        nap_ms(100);
        long f = atomic_load(&forks);
        idle_ms = f == last ? idle_ms + 100 : 0;
        last = f;
        if (idle_ms >= WATCHDOG_S * 1000) {
            unlink(path_small);
            unlink(path_long);
            report("no fork completed for 5 s");
        }
    }
    atomic_store(&stop, 1);
    /* The threads must stop too (a reader or the flusher may be the one stuck). */
    int joined[READERS + 2] = {0}, done = 0;
    for (int ms = 0; ms < WATCHDOG_S * 1000 && done < READERS + 2; ms += 50) {
        for (int i = 0; i < READERS + 2; i++)
            if (!joined[i] && pthread_tryjoin_np(t[i], NULL) == 0) {
                joined[i] = 1;
                done++;
            }
        if (done < READERS + 2) nap_ms(50);
    }
    unlink(path_small);
    unlink(path_long);
    if (done != READERS + 2) report("the threads did not stop within 5 s of being told to");
    printf("fork_stdio ok: %ld forks, %ld getline lines, %ld fflush(NULL) in %d s\n", atomic_load(&forks),
           atomic_load(&lines), atomic_load(&flushes), secs);
    return 0;
}
