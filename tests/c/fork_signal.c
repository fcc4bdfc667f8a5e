/* fork() from a signal handler in a single-threaded program (the scenario of glibc's
 * malloc/tst-mallocfork2, our own code): a helper process sends SIGUSR1 continuously while the
 * main loop frees and mallocs blocks of random sizes up to 70000 bytes; the handler forks, the
 * child _exits, the handler waits for it. The signal lands anywhere, also while the allocator
 * holds one of its locks: a pthread_atfork prepare handler that then takes that lock spins (or
 * sleeps) forever on a lock its own thread holds. glibc's malloc passes this (single-threaded
 * fork takes no malloc lock).
 * A watchdog (SIGALRM every second) turns a hang into a failure: no progress for WATCHDOG_S s.
 * Usage: fork_signal [seconds] [signals]   (default 3 s or 1000 handled signals, whichever first).
 * Run under LD_PRELOAD=libdomalloc.so. */
#include "common.h"

#include <signal.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>

enum { OBJECTS = 1009, MAX_SIZE = 70000, WATCHDOG_S = 5 };

static pid_t sender;
static volatile sig_atomic_t in_handler_fork; /* 1 while the handler is in fork() */
static volatile sig_atomic_t received;
static volatile sig_atomic_t progress;
static volatile sig_atomic_t stalled_s;
static volatile long handled;
static volatile long loops;

static void say(const char *s) {
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

/* Async-signal-safe decimal formatting. */
static void say_num(long v) {
    char b[24];
    int i = sizeof b;
    b[--i] = 0;
    if (v == 0) b[--i] = '0';
    while (v > 0 && i > 0) {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    }
    say(b + i);
}

static void on_usr1(int sig) {
    (void)sig;
    if (received) return; /* one fork per main-loop step, so the loop progresses */
    if (sender > 0) kill(sender, SIGSTOP);
    received = 1;
    in_handler_fork = 1;
    pid_t pid = fork();
    if (pid < 0) {
        say("fork_signal: fork failed in the signal handler\n");
        _exit(1);
    }
    if (pid == 0) _exit(0);
    in_handler_fork = 0;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        say("fork_signal: the child forked in the handler did not exit 0\n");
        _exit(1);
    }
}

static void on_alarm(int sig) {
    (void)sig;
    if (progress) {
        progress = 0;
        stalled_s = 0;
        return;
    }
    if (++stalled_s < WATCHDOG_S) return;
    if (sender > 0) kill(sender, SIGKILL);
    say("fork_signal: HANG: no progress for 5 s ");
    say(in_handler_fork ? "inside fork() called from the SIGUSR1 handler (a fork handler waits for a lock "
                          "its own thread holds: the signal interrupted the allocator)"
                        : "outside fork()");
    say("; signals handled: ");
    say_num(handled);
    say(", main-loop steps: ");
    say_num(loops);
    say("\n");
    _exit(1);
}

static void send_forever(pid_t target) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != target) _exit(0);
    for (;;) {
        if (kill(target, SIGUSR1) != 0) _exit(0);
        sched_yield();
    }
}

int main(int argc, char **argv) {
    int secs = argc > 1 ? atoi(argv[1]) : 3;
    long want = argc > 2 ? atol(argv[2]) : 1000;
    dm_require_domalloc();

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_usr1;
    FATAL_CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    sa.sa_handler = on_alarm;
    FATAL_CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
    struct itimerval it = {{1, 0}, {1, 0}};
    FATAL_CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0);

    pid_t me = getpid();
    pid_t s = fork();
    FATAL_CHECK(s >= 0);
    if (s == 0) send_forever(me);
    sender = s;

    static void *obj[OBJECTS];
    unsigned seed = 1;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        progress = 1;
        loops++;
        int slot = rand_r(&seed) % OBJECTS;
        size_t size = (size_t)rand_r(&seed) % MAX_SIZE;
        received = 0;
        kill(sender, SIGCONT);
        free(obj[slot]);
        obj[slot] = malloc(size);
        if (received) handled++;
        if (obj[slot] == NULL) {
            kill(sender, SIGKILL);
            fprintf(stderr, "fork_signal: malloc(%zu) returned NULL\n", size);
            return 1;
        }
        if (size > 0) ((unsigned char *)obj[slot])[size - 1] = 1;
        if ((loops & 255) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if (handled >= want || t.tv_sec - t0.tv_sec >= secs) break;
        }
    }
    signal(SIGUSR1, SIG_IGN);
    kill(sender, SIGKILL);
    waitpid(sender, NULL, 0);
    for (int i = 0; i < OBJECTS; i++) free(obj[i]);
    printf("fork_signal ok: %ld forks from the signal handler in %ld main-loop steps\n", handled, loops);
    return 0;
}
