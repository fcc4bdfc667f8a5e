/* malloc_stats() and domalloc_stats_print() under a deferred pthread_cancel (the scenario of
 * glibc's tst-malloc-stats-cancellation, written for domalloc): a thread prints the report in a
 * loop and is cancelled while it prints. Printing is not a place to be cancelled: the report's
 * write() calls are cancellation points, and a cancel acting there would leave half a report
 * (and whatever the printing held). domalloc disables cancellation while it prints, as glibc
 * does, so the cancel acts at the loop's pthread_testcancel() between two reports.
 *
 *   stats_cancel ROUNDS
 *
 * Each round: start the printer, let it print a few reports, cancel it, join it (it must end as
 * PTHREAD_CANCELED, cancelled outside the printing), then allocate and print once more from the
 * main thread (no lock left held). stderr goes to /dev/null (the reports). */
#include "common.h"

#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>

typedef int (*stats_print_fn)(int);

static stats_print_fn stats_print;
static int null_fd;
static volatile int printing;       /* 1: inside malloc_stats, 2: inside domalloc_stats_print */
static volatile int cancelled_in;   /* where the cancel acted (0: between reports) */
static volatile unsigned long reports;

static void on_cancel(void *arg) {
    (void)arg;
    cancelled_in = printing;
}

static void *printer(void *arg) {
    (void)arg;
    pthread_cleanup_push(on_cancel, NULL);
    for (;;) {
        printing = 1;
        malloc_stats();
        printing = 2;
        stats_print(null_fd);
        printing = 0;
        reports++;
        pthread_testcancel();
    }
    pthread_cleanup_pop(0);
    return NULL;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    dm_require_domalloc();
    stats_print = (stats_print_fn)dlsym(RTLD_DEFAULT, "domalloc_stats_print");
    FATAL_CHECK(stats_print != NULL);
    null_fd = open("/dev/null", O_WRONLY);
    FATAL_CHECK(null_fd >= 0);
    FATAL_CHECK(dup2(null_fd, 2) == 2); /* the reports of malloc_stats */
    for (int r = 0; r < rounds; r++) {
        pthread_t t;
        void *ret = NULL;
        unsigned long before = reports;
        cancelled_in = -1;
        FATAL_CHECK(pthread_create(&t, NULL, printer, NULL) == 0);
        /* Let it print a report or two (plus a varying part of one), then cancel. */
        while (reports < before + 1 + (unsigned long)(r % 2))
            usleep(100);
        usleep((useconds_t)(r % 7) * 50);
        FATAL_CHECK(pthread_cancel(t) == 0);
        FATAL_CHECK(pthread_join(t, &ret) == 0);
        if (ret != PTHREAD_CANCELED || cancelled_in != 0) {
            printf("round %d: the printer ended with %p, cancelled %s\n", r, ret,
                   cancelled_in == 1 ? "inside malloc_stats()" : cancelled_in == 2 ? "inside domalloc_stats_print()" : "between reports");
            dm_failures++;
        }
        /* Nothing left held: allocate, free and print from this thread. */
        void *p = malloc(1000), *q = malloc(200000);
        CHECK(p != NULL && q != NULL);
        free(p);
        free(q);
        CHECK(stats_print(null_fd) == 0);
    }
    printf("%d rounds, %lu reports printed\n", rounds, reports);
    return dm_finish("stats_cancel");
}
