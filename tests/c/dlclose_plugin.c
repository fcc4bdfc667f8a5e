/* A plugin that carries its own copy of domalloc (linked with libdomalloc.a and
 * -Wl,--exclude-libs,ALL, so its malloc is private to it): for dlclose_host.c. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { THREADS = 4, BLOCKS = 4096, SIZE = 4096 };

static void *churn(void *arg) {
    (void)arg;
    void **v = malloc(BLOCKS * sizeof(void *));
    if (!v) return NULL;
    for (int i = 0; i < BLOCKS; i++) {
        v[i] = malloc(SIZE);
        if (v[i]) memset(v[i], i, SIZE);
    }
    for (int i = 0; i < BLOCKS; i++) free(v[i]);
    free(v);
    return NULL;
}

/* Enough to start the purge thread: 4 threads x 4096 x 4 KiB, then one 64 MiB block. Returns 0. */
int plugin_churn(void) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, churn, NULL) != 0) return 1;
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    char *big = malloc(64 << 20);
    if (!big) return 1;
    memset(big, 1, 64 << 20);
    free(big);
    return 0;
}

/* One allocation and free in the calling thread (gives it a heap of this copy). Returns 0. */
int plugin_touch(void) {
    char *p = malloc(100);
    if (!p) return 1;
    memset(p, 3, 100);
    free(p);
    return 0;
}
