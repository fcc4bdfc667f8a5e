/* The sampling heap profiler attributes bytes to the right functions: three allocation sites of
 * known sizes and counts (built with -fno-omit-frame-pointer), run under LD_PRELOAD with
 * DOMALLOC_PROF=1; the program then dumps the profile with domalloc_prof_dump (found with
 * dlsym), reads it back and attributes each call site to the function its innermost return
 * address lies in (this program's own function addresses: no symboliser needed). Each site's
 * estimate must be within a wide statistical bound (35%) of its true bytes, and the live view
 * must hold only the blocks still live (site_medium's). Prints "ok ..." and exits 0 on success.
 *
 *   site_small   64 B     x 400000, each freed at once      25.6 MB allocated, 0 live
 *   site_medium  4000 B   x 12800, kept to the end          51.2 MB allocated, 51.2 MB live
 *   site_large   300000 B x 256, each freed at once         76.8 MB allocated, 0 live */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile sink;

__attribute__((noinline)) void *site_small(void) { void *p = malloc(64); memset(p, 1, 64); return p; }
__attribute__((noinline)) void *site_medium(void) { void *p = malloc(4000); memset(p, 2, 4000); return p; }
__attribute__((noinline)) void *site_large(void) { void *p = malloc(300000); memset(p, 3, 4096); return p; }
__attribute__((noinline)) void after_sites(void) { sink = 0; }


static uintptr_t starts[4];
static const char *names[4] = {"site_small", "site_medium", "site_large", "after_sites"};

/* Which of our functions holds return address `ra` (-1: none of the three sites). */
static int function_of(uintptr_t ra) {
    int best = -1;
    for (int i = 0; i < 4; i++)
        if (starts[i] < ra && (best < 0 || starts[i] > starts[best])) best = i;
    if (best < 0 || best == 3 || ra - starts[best] > 256) return -1;
    return best;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "prof_sites.prof";
    int (*dump)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "domalloc_prof_dump");
    if (!dump) {
        fprintf(stderr, "domalloc_prof_dump not found: run with libdomalloc preloaded\n");
        return 2;
    }
    starts[0] = (uintptr_t)site_small;
    starts[1] = (uintptr_t)site_medium;
    starts[2] = (uintptr_t)site_large;
    starts[3] = (uintptr_t)after_sites;
    static void *keep[12800];
    int m = 0, l = 0;
    for (int i = 0; i < 400000; i++) {
        void *p = site_small();
        sink = p;
        free(p);
        if (i % 31 == 0 && m < 12800) keep[m++] = site_medium();
        if (i % 1562 == 0 && l < 256) {
            free(site_large());
            l++;
        }
    }
    after_sites();
    if (dump(path) != 0) {
        fprintf(stderr, "domalloc_prof_dump(%s) failed (is DOMALLOC_PROF=1 set?)\n", path);
        return 1;
    }
    FILE *f = fopen(path, "r");
    if (!f) return 2;
    double alloc[3] = {0}, live[3] = {0}, unattributed = 0;
    static char line[8192];
    while (fgets(line, sizeof line, f)) {
        unsigned long long samples, a, lv, peak, freed, remote, life, size, threads;
        char nodes[256], stack[4096];
        if (sscanf(line, "# site %llu %llu %llu %llu %llu %llu %llu %255s %llu %llu %4095s", &samples, &a, &lv, &peak,
                   &freed, &remote, &life, nodes, &size, &threads, stack) != 11)
            continue;
        char *inner = strrchr(stack, ';');
        inner = inner ? inner + 1 : stack;
        int fn = function_of((uintptr_t)strtoull(inner, NULL, 16));
        if (fn < 0) {
            unattributed += a;
            continue;
        }
        alloc[fn] += a;
        live[fn] += lv;
    }
    fclose(f);
    const double want_alloc[3] = {64.0 * 400000, 4000.0 * 12800, 300000.0 * 256};
    const double want_live[3] = {0, 4000.0 * 12800, 0};
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        printf("%-12s allocated %6.1f MB (true %6.1f), live %6.1f MB (true %6.1f)\n", names[i], alloc[i] / 1e6,
               want_alloc[i] / 1e6, live[i] / 1e6, want_live[i] / 1e6);
        if (alloc[i] < 0.65 * want_alloc[i] || alloc[i] > 1.35 * want_alloc[i]) bad = 1;
        if (live[i] < 0.65 * want_live[i] || live[i] > 1.35 * want_live[i] + 2e6) bad = 1;
    }
    printf("unattributed %.1f MB\n", unattributed / 1e6);
    if (unattributed > 0.1 * (want_alloc[0] + want_alloc[1] + want_alloc[2])) bad = 1;
    for (int i = 0; i < m; i++) free(keep[i]);
    if (bad) {
        fprintf(stderr, "the profile does not attribute the bytes to the right sites\n");
        return 1;
    }
    printf("ok: three sites attributed within 35%%\n");
    return 0;
}
