/* DOMALLOC_PROF_INTERVAL: a program that runs for SECONDS (default 3), allocating all the time:
 * blocks it frees at once (churn) and blocks it keeps (grow, so each periodic profile holds more
 * live bytes than the one before). Built with -fno-omit-frame-pointer, so the profiles name
 * both functions. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void *volatile sink;

__attribute__((noinline)) void *churn(void) { void *p = malloc(3000); memset(p, 1, 3000); return p; }
__attribute__((noinline)) void *grow(void) { void *p = malloc(16384); memset(p, 2, 16384); return p; }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3.0, t0 = now();
    struct timespec nap = {0, 2000000};
    while (now() - t0 < seconds) {
        for (int i = 0; i < 200; i++) {
            void *p = churn();
            sink = p;
            free(p);
        }
        sink = grow(); /* kept: about 8 MB a second */
        nanosleep(&nap, NULL);
    }
    return 0;
}
