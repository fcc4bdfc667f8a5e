/* dlopen, both ways.
 *   dlopen_late lib PATH/libdomalloc.so : not preloaded, not linked: the allocator is dlopen'ed
 *     after threads started (its TLS comes from the static TLS surplus), and its malloc/free,
 *     reached through dlsym, serve those threads, including cross-thread frees. dlclose must not
 *     unload it (blocks it handed out stay valid).
 *   dlopen_late plugin PATH/plugin.so   : under LD_PRELOAD: a plugin dlopen'ed later allocates
 *     in its constructor, exchanges blocks with the program, and is unloaded. */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);
typedef void *(*realloc_fn)(void *, size_t);

static malloc_fn dm_malloc;
static free_fn dm_free;
static realloc_fn dm_realloc;
static dm_node_of_fn dm_node_of;
static atomic_int go;
static _Atomic(void *) pass[256];
static atomic_long bad;

static void *early_thread(void *arg) {
    uint64_t rng = 77 + (uintptr_t)arg;
    void *sys = malloc(100); /* the system malloc: the library is not loaded yet */
    while (!atomic_load(&go)) usleep(100);
    for (int i = 0; i < 100000; i++) {
        size_t n = 1 + dm_rand(&rng) % 5000;
        unsigned char *p = dm_malloc(n);
        if (!p || dm_node_of(p) < 0) {
            atomic_fetch_add(&bad, 1);
            continue;
        }
        p[0] = 0x5A;
        if (i % 7 == 0) p = dm_realloc(p, n * 2);
        unsigned char *old = atomic_exchange(&pass[dm_rand(&rng) % 256], p);
        if (old) {
            if (old[0] != 0x5A) atomic_fetch_add(&bad, 1);
            dm_free(old);
        }
    }
    free(sys);
    return NULL;
}

static int late_library(const char *path) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) FATAL_CHECK(pthread_create(&t[i], NULL, early_thread, (void *)(uintptr_t)i) == 0);
    usleep(20000);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen_late: %s\n", dlerror());
        return 1;
    }
    dm_malloc = (malloc_fn)dlsym(h, "malloc");
    dm_free = (free_fn)dlsym(h, "free");
    dm_realloc = (realloc_fn)dlsym(h, "realloc");
    dm_node_of = (dm_node_of_fn)dlsym(h, "domalloc_node_of");
    FATAL_CHECK(dm_malloc && dm_free && dm_realloc && dm_node_of);
    /* The process's malloc is still glibc's: only the handle's symbols are domalloc's. */
    void *sys = malloc(64);
    CHECK(dm_node_of(sys) == -1);
    free(sys);
    atomic_store(&go, 1);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    void *kept = dm_malloc(12345);
    FATAL_CHECK(kept);
    memset(kept, 3, 12345);
    CHECK(dlclose(h) == 0);
    /* -z nodelete: still mapped, the block still valid and freeable. */
    CHECK(dm_node_of(kept) >= 0);
    dm_free(kept);
    for (int i = 0; i < 256; i++) dm_free(atomic_exchange(&pass[i], NULL));
    CHECK(atomic_load(&bad) == 0);
    return 0;
}

typedef char *(*plugin_fn)(char *);

static int plugin(const char *path) {
    dm_require_domalloc();
    for (int round = 0; round < 20; round++) {
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "dlopen_late: %s\n", dlerror());
            return 1;
        }
        plugin_fn work = (plugin_fn)dlsym(h, "plugin_work");
        FATAL_CHECK(work);
        char *s = work(strdup("from main"));
        CHECK(s && strcmp(s, "made by the plugin") == 0);
        CHECK(dm_node_of_ptr()(s) >= 0);
        free(s);
        CHECK(dlclose(h) == 0);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: dlopen_late lib|plugin PATH\n");
        return 2;
    }
    int rc = strcmp(argv[1], "lib") == 0 ? late_library(argv[2]) : plugin(argv[2]);
    if (rc) return rc;
    return dm_finish(strcmp(argv[1], "lib") == 0 ? "dlopen_late(lib)" : "dlopen_late(plugin)");
}
