/* A batch system's walltime kill: a child holding memory is SIGTERM'd mid-run; with
 * DOMALLOC_STATS=json and DOMALLOC_STATS_FILE (a template with %p) its report must be written
 * from the signal handler, count the blocks it holds in "live_bytes", and the child must still
 * die of SIGTERM (the default action after the report). Run under LD_PRELOAD with both
 * variables set; prints "ok" and exits 0 on success. With DOMALLOC_PROF=1 and
 * DOMALLOC_PROF_FILE (a template with %p) the heap profile must be left too, with call sites. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLOCKS 4000
#define SIZE 1000

static char *volatile keep[BLOCKS];

int main(void) {
    const char *tmpl = getenv("DOMALLOC_STATS_FILE");
    if (!tmpl || !strstr(tmpl, "%p")) {
        fprintf(stderr, "set DOMALLOC_STATS_FILE to a template with %%p\n");
        return 2;
    }
    int fds[2];
    if (pipe(fds) != 0) return 2;
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < BLOCKS; i++) {
            keep[i] = malloc(SIZE);
            memset(keep[i], i, SIZE);
        }
        char *volatile big = malloc(3 << 20);
        memset(big, 1, 3 << 20);
        if (write(fds[1], "r", 1) != 1) _exit(3);
        for (;;) pause();
    }
    char c;
    if (read(fds[0], &c, 1) != 1) return 2;
    kill(pid, SIGTERM);
    int st;
    if (waitpid(pid, &st, 0) != pid) return 2;
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGTERM) {
        fprintf(stderr, "the child did not die of SIGTERM (status %#x)\n", st);
        return 1;
    }
    char path[512], pidtxt[32];
    snprintf(pidtxt, sizeof pidtxt, "%d", (int)pid);
    const char *p = strstr(tmpl, "%p");
    snprintf(path, sizeof path, "%.*s%s%s", (int)(p - tmpl), tmpl, pidtxt, p + 2);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "no statistics file %s after SIGTERM\n", path);
        return 1;
    }
    static char doc[1 << 16];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = 0;
    const char *live = strstr(doc, "\"live_bytes\":");
    if (!live) {
        fprintf(stderr, "no live_bytes in %s:\n%s\n", path, doc);
        return 1;
    }
    unsigned long long v = strtoull(live + strlen("\"live_bytes\":"), NULL, 10);
    unsigned long long want = (unsigned long long)BLOCKS * SIZE + (3 << 20);
    if (v < want) {
        fprintf(stderr, "live_bytes %llu below the %llu bytes the child held\n", v, want);
        return 1;
    }
    printf("ok: live_bytes %llu at SIGTERM\n", v);
    const char *ptmpl = getenv("DOMALLOC_PROF_FILE");
    if (ptmpl && getenv("DOMALLOC_PROF")) {
        const char *pp = strstr(ptmpl, "%p");
        if (!pp) return 2;
        snprintf(path, sizeof path, "%.*s%s%s", (int)(pp - ptmpl), ptmpl, pidtxt, pp + 2);
        f = fopen(path, "r");
        if (!f) {
            fprintf(stderr, "no heap profile %s after SIGTERM\n", path);
            return 1;
        }
        n = fread(doc, 1, sizeof doc - 1, f);
        fclose(f);
        doc[n] = 0;
        if (!strstr(doc, "# domalloc heap profile") || !strstr(doc, "\n# site ") || !strstr(doc, "# view live_bytes")) {
            fprintf(stderr, "the heap profile %s after SIGTERM has no call sites:\n%s\n", path, doc);
            return 1;
        }
        printf("ok: heap profile at SIGTERM\n");
    }
    return 0;
}
