/* A host that dlopen's a plugin carrying its own domalloc (dlclose_plugin.c linked with
 * libdomalloc.a, or a Rust cdylib with `#[global_allocator] static A: domalloc::DomAlloc`),
 * lets it allocate, dlclose's it, and goes on (issue 26 item 1):
 *   dlclose_host purge PLUGIN.so    the plugin starts its purge thread (4 threads x 4096 x 4 KiB,
 *                                   one 64 MiB block); after dlclose the host sleeps 1.5 s
 *   dlclose_host thread PLUGIN.so   a thread allocates through the plugin; the main thread
 *                                   dlclose's it; then the thread exits (the plugin's thread-exit
 *                                   destructor runs)
 * Before the fix both died with SIGSEGV (code of the unloaded plugin). Prints "dlclose_host ok". */
#include <dlfcn.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int (*touch_fn)(void);
static sem_t touched, closed;

static void *user(void *arg) {
    (void)arg;
    if (touch_fn() != 0) {
        fprintf(stderr, "dlclose_host: plugin_touch failed\n");
        exit(1);
    }
    sem_post(&touched);
    sem_wait(&closed);
    return NULL; /* thread exit: the plugin's key destructor runs now */
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: dlclose_host purge|thread PLUGIN.so\n");
        return 2;
    }
    void *h = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlclose_host: %s\n", dlerror());
        return 2;
    }
    if (!strcmp(argv[1], "purge")) {
        int (*churn)(void) = (int (*)(void))dlsym(h, "plugin_churn");
        if (!churn || churn() != 0) {
            fprintf(stderr, "dlclose_host: plugin_churn missing or failed\n");
            return 1;
        }
        dlclose(h);
        struct timespec ts = {1, 500000000L};
        nanosleep(&ts, NULL);
    } else {
        touch_fn = (int (*)(void))dlsym(h, "plugin_touch");
        if (!touch_fn) {
            fprintf(stderr, "dlclose_host: plugin_touch missing\n");
            return 1;
        }
        sem_init(&touched, 0, 0);
        sem_init(&closed, 0, 0);
        pthread_t t;
        if (pthread_create(&t, NULL, user, NULL) != 0) return 1;
        sem_wait(&touched);
        dlclose(h);
        sem_post(&closed);
        pthread_join(t, NULL);
        struct timespec ts = {0, 200000000L};
        nanosleep(&ts, NULL);
    }
    printf("dlclose_host ok (%s)\n", argv[1]);
    return 0;
}
