/* Free-list integrity (issue 15), the C twin of tests/security.rs: a corrupted free-list link
 * must never make malloc return an address the attacker chose (here: a global array).
 * For blocks of 24, 48, 112, 640 and 3000 bytes, each case in a forked child:
 *   overflow         of 64 blocks, free b whose lower neighbour a is adjacent
 *                    (b == a + malloc_usable_size(a)) and write the global's address one word
 *                    past a's usable bytes (b's first word: a one-word heap overflow);
 *   remote-overflow  the same with b freed by another thread (in its page's remote-free list);
 *   write-after-free the program writes the global's address into a block it freed;
 *   remote-chain     another thread frees three neighbouring blocks (a chain in the page's
 *                    remote-free list), then the link inside the chain is overwritten;
 * then up to 200 mallocs of that size. Expected: the global (or any address inside it) is never
 * returned; if the allocator detects the corruption, the child ends with exactly one
 * "domalloc: error:" line saying "corrupted" (the quarantine build may name the write after
 * free instead) and SIGABRT. Anything else fails: the chosen address returned, another signal,
 * a hang (the child is killed after WATCHDOG_S seconds).
 * Usage: overflow   (no arguments). Run under LD_PRELOAD=libdomalloc.so. */
#include "common.h"

#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

enum { NBLOCKS = 64, TRIES = 200, WATCHDOG_S = 10 };

static _Alignas(64) uint64_t target[512]; /* first word 0: a list that reaches it ends there */

static int in_target(const void *p) {
    return (const char *)p >= (const char *)target && (const char *)p < (const char *)target + sizeof target;
}

static void poke(void *at, const void *value) { memcpy(at, &value, sizeof value); }

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* Finds k neighbouring blocks (each starting at the previous one's usable end) among v. */
static int neighbours(void **v, int n, int k, void **out) {
    static void *s[NBLOCKS];
    memcpy(s, v, sizeof(void *) * (size_t)n);
    qsort(s, (size_t)n, sizeof(void *), cmp_ptr);
    for (int i = 0; i + k <= n; i++) {
        size_t us = malloc_usable_size(s[i]);
        int ok = 1;
        for (int j = 1; j < k; j++)
            if ((char *)s[i + j] != (char *)s[i + j - 1] + us) ok = 0;
        if (ok) {
            for (int j = 0; j < k; j++) out[j] = s[i + j];
            return 1;
        }
    }
    return 0;
}

struct frees {
    void **p;
    int n;
};

/* A thread that never allocates: its frees go straight to the pages' remote-free lists. */
static void *free_them(void *arg) {
    struct frees *f = arg;
    for (int i = 0; i < f->n; i++) free(f->p[i]);
    return NULL;
}

static void free_on_other_thread(void **p, int n) {
    struct frees f = {p, n};
    pthread_t t;
    FATAL_CHECK(pthread_create(&t, NULL, free_them, &f) == 0);
    pthread_join(t, NULL);
}

/* The child: sets up the case, then mallocs. Exit 0: never returned; 2: returned; 4: no
 * neighbours (the case does not apply). */
static void child(const char *kase, size_t size) {
    static void *v[NBLOCKS];
    void *nb[3];
    for (int i = 0; i < NBLOCKS; i++) FATAL_CHECK((v[i] = malloc(size)) != NULL);
    if (strcmp(kase, "overflow") == 0 || strcmp(kase, "remote-overflow") == 0) {
        if (!neighbours(v, NBLOCKS, 2, nb)) _exit(4);
        if (kase[0] == 'o') free(nb[1]);
        else free_on_other_thread(&nb[1], 1);
        poke((char *)nb[0] + malloc_usable_size(nb[0]), target); /* one word past a */
    } else if (strcmp(kase, "write-after-free") == 0) {
        free(v[40]);
        poke(v[40], target);
    } else if (strcmp(kase, "remote-chain") == 0) {
        if (!neighbours(v, NBLOCKS, 3, nb)) _exit(4);
        free_on_other_thread(nb, 3);                                      /* chain b3 -> b2 -> b1 */
        poke((char *)nb[0] + malloc_usable_size(nb[0]), target); /* b2's link, through b1 */
    }
    for (int k = 1; k <= TRIES; k++) {
        void *p = malloc(size);
        if (in_target(p)) {
            dprintf(1, "malloc(%zu) #%d returned %p, inside the global at %p\n", size, k, p, (void *)target);
            _exit(2);
        }
    }
    _exit(0);
}

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

/* Runs one case in a child; returns 1 if it passed. */
static int run(const char *kase, size_t size) {
    int out[2], err[2];
    FATAL_CHECK(pipe(out) == 0 && pipe(err) == 0);
    pid_t pid = fork();
    FATAL_CHECK(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]);
        close(err[0]);
        child(kase, size);
    }
    close(out[1]);
    close(err[1]);
    static char obuf[4096], ebuf[16384];
    size_t on = 0, en = 0;
    int open_fds = 2, st = 0, hung = 0;
    long t0 = now_ms();
    struct pollfd pf[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    while (open_fds > 0) {
        if (now_ms() - t0 > WATCHDOG_S * 1000L) {
            kill(pid, SIGKILL);
            hung = 1;
            break;
        }
        if (poll(pf, 2, 100) <= 0) continue;
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP))) continue;
            char *b = i ? ebuf : obuf;
            size_t *n = i ? &en : &on, cap = i ? sizeof ebuf : sizeof obuf;
            ssize_t r = read(pf[i].fd, b + *n, cap - 1 - *n);
            if (r > 0) *n += (size_t)r;
            if (r <= 0 || *n >= cap - 1) {
                close(pf[i].fd);
                pf[i].fd = -1;
                open_fds--;
            }
        }
    }
    obuf[on] = 0;
    ebuf[en] = 0;
    waitpid(pid, &st, 0);
    if (pf[0].fd >= 0) close(pf[0].fd);
    if (pf[1].fd >= 0) close(pf[1].fd);

    int lines = 0, ok_words = 0;
    for (char *l = ebuf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, "domalloc: error:", 16) == 0) {
            lines++;
            char *end = strchr(l, '\n');
            size_t len = end ? (size_t)(end - l) : strlen(l);
            char line[1024];
            snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), l);
            if (strstr(line, "corrupted") || strstr(line, "write after free") || strstr(line, "use after free"))
                ok_words = 1;
        }
    const char *verdict = NULL;
    if (hung) verdict = "hung (killed by the watchdog)";
    else if (WIFEXITED(st) && WEXITSTATUS(st) == 2) verdict = "returned the chosen address";
    else if (WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 4)) verdict = NULL;
    else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT) {
        if (lines != 1) verdict = "aborted without exactly one error line";
        else if (!ok_words) verdict = "the error line does not say \"corrupted\"";
    } else verdict = "ended otherwise (crash or exit status)";
    if (verdict) {
        printf("FAIL  %-16s %4zu B: %s (status 0x%x)\n", kase, size, verdict, st);
        if (*obuf) printf("      | %s", obuf);
        if (*ebuf) printf("      | stderr: %.600s\n", ebuf);
        return 0;
    }
    printf("ok    %-16s %4zu B: %s\n", kase, size,
           WIFSIGNALED(st) ? "detected (one error line, SIGABRT)"
           : WEXITSTATUS(st) == 4 ? "no neighbouring blocks (the case does not apply)"
                                  : "the chosen address was never returned");
    return 1;
}

int main(void) {
    dm_require_domalloc();
    static const char *cases[] = {"overflow", "remote-overflow", "write-after-free", "remote-chain"};
    static const size_t sizes[] = {24, 48, 112, 640, 3000};
    int failed = 0, total = 0;
    for (int c = 0; c < 4; c++)
        for (int s = 0; s < 5; s++) {
            total++;
            if (!run(cases[c], sizes[s])) failed++;
        }
    if (failed) {
        printf("overflow: %d of %d cases failed\n", failed, total);
        return 1;
    }
    printf("overflow ok: %d cases, the chosen address never returned\n", total);
    return 0;
}
