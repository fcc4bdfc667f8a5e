/* Shared helpers for the C tests of libdomalloc (run by scripts/test-ffi.sh). */
#ifndef DOMALLOC_TEST_COMMON_H
#define DOMALLOC_TEST_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int dm_failures;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
            dm_failures++;                                                                \
        }                                                                                 \
    } while (0)

#define FATAL_CHECK(cond)                                                                 \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: FATAL CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            _exit(3);                                                                     \
        }                                                                                 \
    } while (0)

/* domalloc's extras, found at run time (works under LD_PRELOAD without linking the library). */
typedef int (*dm_int_fn)(void);
typedef int (*dm_node_of_fn)(const void *);

static inline dm_node_of_fn dm_node_of_ptr(void) {
    return (dm_node_of_fn)dlsym(RTLD_DEFAULT, "domalloc_node_of");
}

/* Whether libdomalloc is mapped into this process (/proc/self/maps). */
static inline int dm_mapped(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "libdomalloc")) found = 1;
    fclose(f);
    return found;
}

/* Fails the test unless malloc really is domalloc's: the library is mapped, its extras resolve,
 * and a fresh malloc'd block is one it owns. */
static inline void dm_require_domalloc(void) {
    dm_node_of_fn node_of = dm_node_of_ptr();
    dm_int_fn cur = (dm_int_fn)dlsym(RTLD_DEFAULT, "domalloc_current_node");
    void *p = malloc(24);
    FATAL_CHECK(dm_mapped());
    FATAL_CHECK(node_of != NULL && cur != NULL);
    FATAL_CHECK(node_of(p) >= 0);
    FATAL_CHECK(cur() >= 0);
    free(p);
}

/* Resident set size of this process in bytes. */
static inline size_t dm_rss(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* xorshift64*: a fast per-thread generator. */
static inline uint64_t dm_rand(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Fills a block with a pattern derived from `seed`; dm_check verifies it. */
static inline void dm_fill(unsigned char *p, size_t n, uint64_t seed) {
    size_t i;
    if (n == 0) return;
    /* Sparse fill for big blocks: first/last 256 bytes and one byte per 4 KiB. */
    if (n > 65536) {
        for (i = 0; i < 256; i++) p[i] = (unsigned char)(seed + i);
        for (i = n - 256; i < n; i++) p[i] = (unsigned char)(seed + i);
        for (i = 4096; i < n; i += 4096) p[i] = (unsigned char)(seed + i);
        return;
    }
    for (i = 0; i < n; i++) p[i] = (unsigned char)(seed + i);
}

static inline int dm_check(const unsigned char *p, size_t n, uint64_t seed) {
    size_t i;
    if (n == 0) return 1;
    if (n > 65536) {
        for (i = 0; i < 256; i++) if (p[i] != (unsigned char)(seed + i)) return 0;
        for (i = n - 256; i < n; i++) if (p[i] != (unsigned char)(seed + i)) return 0;
        for (i = 4096; i < n; i += 4096) if (p[i] != (unsigned char)(seed + i)) return 0;
        return 1;
    }
    for (i = 0; i < n; i++) if (p[i] != (unsigned char)(seed + i)) return 0;
    return 1;
}

static inline int dm_finish(const char *name) {
    if (dm_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, dm_failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

#endif
