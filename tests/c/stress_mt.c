/* Multithreaded stress: blocks of every size class travel between threads through a shared
 * table (atomic exchange), are checked by the thread that receives them, sometimes reallocated,
 * and freed there (cross-thread frees). Run under LD_PRELOAD. Usage: stress_mt [threads] [ops] */
#include "common.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define SLOTS 4096

struct hdr {
    size_t size;
    uint64_t seed;
};

static _Atomic(struct hdr *) slots[SLOTS];
static long ops_per_thread = 200000;
static atomic_long bad_blocks;

static size_t pick_size(uint64_t *rng) {
    uint64_t r = dm_rand(rng);
    unsigned k = (unsigned)(r % 10000);
    r >>= 14;
    if (k < 7000) return sizeof(struct hdr) + (size_t)(r % 256);      /* tiny */
    if (k < 9500) return sizeof(struct hdr) + (size_t)(r % 4096);     /* small */
    if (k < 9950) return sizeof(struct hdr) + (size_t)(r % 131072);   /* up to 128 KiB */
    if (k < 9995) return sizeof(struct hdr) + (size_t)(r % (2 << 20)); /* large */
    return sizeof(struct hdr) + (4 << 20) + (size_t)(r % (12 << 20)); /* huge */
}

static struct hdr *make(uint64_t *rng) {
    size_t n = pick_size(rng);
    struct hdr *h = malloc(n);
    if (!h) return NULL;
    h->size = n;
    h->seed = dm_rand(rng);
    dm_fill((unsigned char *)(h + 1), n - sizeof *h, h->seed);
    return h;
}

static int verify(struct hdr *h) {
    if (((uintptr_t)h & 15) != 0) {
        fprintf(stderr, "stress_mt: misaligned block %p\n", (void *)h);
        return 0;
    }
    if (malloc_usable_size(h) < h->size) {
        fprintf(stderr, "stress_mt: block %p: usable size %zu < %zu\n", (void *)h, malloc_usable_size(h), h->size);
        return 0;
    }
    if (!dm_check((unsigned char *)(h + 1), h->size - sizeof *h, h->seed)) {
        fprintf(stderr, "stress_mt: block %p of %zu bytes: contents changed\n", (void *)h, h->size);
        return 0;
    }
    return 1;
}

static void *worker(void *arg) {
    uint64_t rng = 0x9E3779B97F4A7C15ULL * ((uintptr_t)arg + 1);
    for (long i = 0; i < ops_per_thread; i++) {
        struct hdr *mine = make(&rng);
        if (!mine) {
            fprintf(stderr, "malloc failed\n");
            atomic_fetch_add(&bad_blocks, 1);
            break;
        }
        struct hdr *old = atomic_exchange(&slots[dm_rand(&rng) % SLOTS], mine);
        if (!old) continue;
        if (!verify(old)) {
            atomic_fetch_add(&bad_blocks, 1);
        }
        if (dm_rand(&rng) % 16 == 0) {
            /* Grow or shrink a block another thread allocated; contents must survive. */
            size_t keep = old->size - sizeof *old;
            size_t n = pick_size(&rng);
            uint64_t seed = old->seed;
            struct hdr *r = realloc(old, n);
            if (!r) {
                atomic_fetch_add(&bad_blocks, 1);
                continue;
            }
            size_t k = n - sizeof *r < keep ? n - sizeof *r : keep;
            if (keep > 65536 && k > 256) k = 256; /* big blocks are filled sparsely: check the head */
            if (!dm_check((unsigned char *)(r + 1), k, seed)) {
                fprintf(stderr, "stress_mt: realloc %zu -> %zu bytes (%p) lost contents\n", keep, n, (void *)r);
                atomic_fetch_add(&bad_blocks, 1);
            }
            old = r;
        }
        free(old);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 8;
    if (argc > 2) ops_per_thread = atol(argv[2]);
    if (!getenv("DM_BASELINE")) dm_require_domalloc(); /* DM_BASELINE=1: run on the system malloc */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int round = 0; round < 2; round++) {
        pthread_t t[256];
        if (threads > 256) threads = 256;
        for (int i = 0; i < threads; i++) FATAL_CHECK(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + round * 1000)) == 0);
        for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    }
    for (int i = 0; i < SLOTS; i++) {
        struct hdr *h = atomic_exchange(&slots[i], NULL);
        if (h) {
            if (!verify(h)) atomic_fetch_add(&bad_blocks, 1);
            free(h);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("stress_mt: %d threads x %ld ops x 2 rounds in %.2fs (%.1f Mops/s)\n", threads, ops_per_thread, s,
           2.0 * threads * (double)ops_per_thread / s / 1e6);
    CHECK(atomic_load(&bad_blocks) == 0);
    return dm_finish("stress_mt");
}
