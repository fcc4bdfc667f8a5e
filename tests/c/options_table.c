/* Every DOMALLOC_* option of the README's table, from a C program under LD_PRELOAD: each value
 * form the table shows, and a malformed value of each (exactly one warning naming it, the default
 * kept). Table-driven: for each case the program runs itself (`options_table child`, which makes
 * a few allocations) with the option and DOMALLOC_VERBOSE=1 in its environment and reads the
 * child's stderr: DOMALLOC_VERBOSE=1 lists every option as `domalloc: option NAME=VALUE (where it
 * came from)`.
 *
 *   LD_PRELOAD=libdomalloc.so options_table
 */
#include "common.h"

#include <sys/wait.h>

extern char **environ;

struct good { const char *name, *value, *shown; };
struct bad { const char *name, *value, *dflt; };

static const struct good GOOD[] = {
    {"DOMALLOC_PURGE_DELAY", "0", "0"},
    {"DOMALLOC_PURGE_DELAY", "250", "250"},
    {"DOMALLOC_PURGE_DELAY", "never", "never"},
    {"DOMALLOC_PURGE", "dontneed", "dontneed"},
    {"DOMALLOC_PURGE", "free", "free"},
    {"DOMALLOC_FIRST_TOUCH", "fresh", "fresh"},
    {"DOMALLOC_FIRST_TOUCH", "reuse", "reuse"},
    {"DOMALLOC_FIRST_TOUCH", "always", "always@16k"},
    {"DOMALLOC_FIRST_TOUCH", "always@64K", "always@64k"},
    {"DOMALLOC_THP", "segments", "segments"},
    {"DOMALLOC_THP", "1", "1"},
    {"DOMALLOC_THP", "0", "0"},
    {"DOMALLOC_NUMA", "auto", "auto"},
    {"DOMALLOC_NUMA", "0", "0"},
    {"DOMALLOC_NUMA", "1", "1"},
    {"DOMALLOC_FOLLOW_DELAY", "0", "0"},
    {"DOMALLOC_FOLLOW_DELAY", "250", "250"},
    {"DOMALLOC_FOLLOW_DELAY", "never", "never"},
    {"DOMALLOC_POLICY", "local", "local"},
    {"DOMALLOC_POLICY", "bind:0", "bind:0"},
    {"DOMALLOC_POLICY", "preferred:0", "preferred:0"},
    {"DOMALLOC_POLICY", "preferred:all", "preferred:0"},
    {"DOMALLOC_POLICY", "interleave:0", "interleave:0"},
    {"DOMALLOC_POLICY", "interleave:0@1M", "interleave:0@1M"},
    /* `all`: every node with memory; the list shown depends on the machine (prefix only). */
    {"DOMALLOC_POLICY", "interleave:all", "interleave:"},
    {"DOMALLOC_POLICY", "bind:all", "bind:"},
    {"DOMALLOC_POLICY", "interleave:all@1M", "interleave:"},
    {"DOMALLOC_TOPOLOGY_ROOT", "/sys", "/sys"},
    {"DOMALLOC_STATS", "0", "0"},
    {"DOMALLOC_STATS", "1", "text"},
    {"DOMALLOC_STATS", "text", "text"},
    {"DOMALLOC_STATS", "json", "json"},
    {"DOMALLOC_STATS_FILE", "/dev/null", "/dev/null"},
    {"DOMALLOC_VERBOSE", "1", "1"},
    {"DOMALLOC_PURGE_THREAD", "auto", "auto"},
    {"DOMALLOC_PURGE_THREAD", "1", "1"},
    {"DOMALLOC_PURGE_THREAD", "0", "0"},
    {"DOMALLOC_HUGE_CACHE", "0", "0"},
    {"DOMALLOC_HUGE_CACHE", "64k", "64k"},
    {"DOMALLOC_HUGE_CACHE", "128M", "128M"},
    {"DOMALLOC_HUGE_CACHE", "1G", "1G"},
    {"DOMALLOC_FAIL_MAP_EVERY", "0", "0"},
    {"DOMALLOC_FAIL_MAP_EVERY", "1000000", "1000000"},
    {"DOMALLOC_FAIL_MAP_AFTER", "0", "0"},
    {"DOMALLOC_FAIL_MAP_AFTER", "1000000", "1000000"},
};

static const struct bad BAD[] = {
    {"DOMALLOC_PURGE_DELAY", "-1", "1000"},
    {"DOMALLOC_PURGE_DELAY", " 100", "1000"},
    {"DOMALLOC_PURGE_DELAY", "18446744073709551616", "1000"},
    {"DOMALLOC_PURGE", "madvise", "dontneed"},
    {"DOMALLOC_FIRST_TOUCH", "always@", "fresh"},
    {"DOMALLOC_FIRST_TOUCH", "sometimes", "fresh"},
    {"DOMALLOC_THP", "yes", "segments"},
    {"DOMALLOC_NUMA", "on", "auto"},
    {"DOMALLOC_FOLLOW_DELAY", "soon", "1000"},
    {"DOMALLOC_POLICY", "interleave:", "local"},
    {"DOMALLOC_POLICY", "preferred:x", "local"},
    {"DOMALLOC_POLICY", "bind:0@99999999999999999999", "local"},
    {"DOMALLOC_STATS", "yes", "0"},
    {"DOMALLOC_PURGE_THREAD", "on", "auto"},
    {"DOMALLOC_HUGE_CACHE", "-1", "128M"},
    {"DOMALLOC_HUGE_CACHE", "1T", "128M"},
    {"DOMALLOC_FAIL_MAP_EVERY", "1e3", "0"},
    {"DOMALLOC_FAIL_MAP_AFTER", "x", "0"},
};

static char out[1 << 16];

/* Runs `self child` with NAME=VALUE (and DOMALLOC_VERBOSE=1 unless NAME is it) added to an
 * environment without any other DOMALLOC_* variable; its stderr into `out`. */
static void run(const char *self, const char *name, const char *value) {
    static char *envp[4096];
    static char kv[512];
    int n = 0, fds[2];
    for (char **e = environ; *e && n < 4000; e++)
        if (strncmp(*e, "DOMALLOC_", 9) != 0) envp[n++] = *e;
    snprintf(kv, sizeof kv, "%s=%s", name, value);
    envp[n++] = kv;
    if (strcmp(name, "DOMALLOC_VERBOSE") != 0) envp[n++] = (char *)"DOMALLOC_VERBOSE=1";
    envp[n] = NULL;
    FATAL_CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    FATAL_CHECK(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        char *argv[] = {(char *)self, (char *)"child", NULL};
        execve(self, argv, envp);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t r;
    while ((r = read(fds[0], out + len, sizeof out - 1 - len)) > 0) len += (size_t)r;
    out[len] = 0;
    close(fds[0]);
    int st;
    FATAL_CHECK(waitpid(pid, &st, 0) == pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "%s=%s: the child ended with status %#x:\n%s\n", name, value, st, out);
        dm_failures++;
    }
}

/* The number of `domalloc: warning:` lines, and the first. */
static int warnings(const char **first) {
    int n = 0;
    *first = NULL;
    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, "domalloc: warning:", 18) == 0 && n++ == 0) *first = l;
    return n;
}

/* The `domalloc: option NAME=` line (up to its newline, copied into `line`), or NULL. */
static const char *option_line(const char *name, char *line, size_t cap) {
    char prefix[128];
    snprintf(prefix, sizeof prefix, "domalloc: option %s=", name);
    const char *l = strstr(out, prefix);
    if (!l) return NULL;
    size_t n = strcspn(l, "\n");
    if (n >= cap) n = cap - 1;
    memcpy(line, l, n);
    line[n] = 0;
    return line;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        void *p[64];
        for (int i = 0; i < 64; i++) p[i] = malloc((size_t)16 << (i % 16));
        for (int i = 0; i < 64; i++) free(p[i]);
        return 0;
    }
    dm_require_domalloc();
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    FATAL_CHECK(n > 0);
    self[n] = 0;
    char line[1024], want[512];
    const char *w;
    int cases = 0;
    for (size_t i = 0; i < sizeof GOOD / sizeof GOOD[0]; i++, cases++) {
        const struct good *c = &GOOD[i];
        run(self, c->name, c->value);
        snprintf(want, sizeof want, "domalloc: option %s=%s", c->name, c->shown);
        int nw = warnings(&w);
        if (!option_line(c->name, line, sizeof line) || strncmp(line, want, strlen(want)) != 0 || !strstr(line, "(environment") || nw != 0) {
            fprintf(stderr, "%s=%s: expected a line starting \"%s\" from the environment and no warning; got \"%s\", %d warning(s)\n%s\n",
                    c->name, c->value, want, option_line(c->name, line, sizeof line) ? line : "(none)", nw, out);
            dm_failures++;
        }
    }
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++, cases++) {
        const struct bad *c = &BAD[i];
        run(self, c->name, c->value);
        char warn[512];
        snprintf(warn, sizeof warn, "domalloc: warning: ignoring %s=%s (malformed; using the default)\n", c->name, c->value);
        snprintf(want, sizeof want, "domalloc: option %s=%s (default; ", c->name, c->dflt);
        int nw = warnings(&w);
        if (nw != 1 || strncmp(w, warn, strlen(warn)) != 0 || !option_line(c->name, line, sizeof line) || strncmp(line, want, strlen(want)) != 0) {
            fprintf(stderr, "%s=\"%s\": expected one warning \"%.*s\" and a line starting \"%s\"; got %d warning(s):\n%s\n",
                    c->name, c->value, (int)strlen(warn) - 1, warn, want, nw, out);
            dm_failures++;
        }
    }
    /* DOMALLOC_VERBOSE itself malformed: one warning, and no listing (its default is off). */
    run(self, "DOMALLOC_VERBOSE", "yes");
    cases++;
    if (warnings(&w) != 1 || strstr(out, "domalloc: option ")) {
        fprintf(stderr, "DOMALLOC_VERBOSE=yes: expected one warning and no listing:\n%s\n", out);
        dm_failures++;
    }
    printf("%d option cases under LD_PRELOAD\n", cases);
    return dm_finish("options_table");
}
