/*
 * domalloc.h - node-aware extras of domalloc, a NUMA-aware memory allocator.
 *
 * libdomalloc replaces the whole malloc family (malloc, free, calloc, realloc, reallocarray,
 * posix_memalign, aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size, mallopt,
 * malloc_trim, mallinfo2, malloc_stats, and C23 free_sized / free_aligned_sized); their
 * prototypes come from <stdlib.h> and <malloc.h>. This header declares only what domalloc adds.
 *
 * Use:   cc app.c $(pkg-config --cflags --libs domalloc)      (or -ldomalloc; see man 3 domalloc)
 * or:    LD_PRELOAD=/path/to/libdomalloc.so ./app             (no rebuild; the extras are then
 *        reachable with dlsym(RTLD_DEFAULT, "domalloc_current_node"))
 *
 * Memory a thread gets from malloc comes from the NUMA node the thread runs on now. Tuning is
 * by DOMALLOC_* environment variables (see the README), e.g. DOMALLOC_STATS=1 prints per-node
 * statistics to stderr at exit.
 */
#ifndef DOMALLOC_H
#define DOMALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header; domalloc_version() is the library's. The SONAME is
 * libdomalloc.so.DOMALLOC_VERSION_MAJOR; while the major version is 0, releases only add to the
 * ABI (docs/ABI.md), so a program built against 0.N runs with any library 0.M, M >= N. */
#define DOMALLOC_VERSION_MAJOR 0
#define DOMALLOC_VERSION_MINOR 2
#define DOMALLOC_VERSION_PATCH 0
#define DOMALLOC_VERSION "0.2.0"

/* The library's version, e.g. "0.2.0": a static NUL-terminated string (never freed). */
const char *domalloc_version(void);

/* `size` bytes on NUMA node `node`: the pages are bound to that node whichever thread first
 * touches them. Free with free(). NULL with errno = EINVAL if the node does not exist or has no
 * memory, ENOMEM when out of memory. Small blocks come from a per-node heap under a lock: use
 * this for long-lived data placed on purpose, not for hot-path allocation. */
void *domalloc_malloc_on_node(size_t size, int node);

/* `size` bytes in a mapping of their own whose pages alternate over every node with memory (for
 * data all threads read, like a lookup table). Page granular: meant for large blocks. Free with
 * free(). NULL with errno = ENOMEM on failure. */
void *domalloc_malloc_interleaved(size_t size);

/* The NUMA node of block `ptr`: the node whose domain owns it, or, for a block placed by first
 * touch that was freed and found on another node, the node its pages are on (its home). Huge
 * blocks (above 1 MiB) report the node they were allocated for. -1 for NULL and for pointers
 * domalloc did not hand out. */
int domalloc_node_of(const void *ptr);

/* The NUMA node of the CPU the calling thread runs on now: the node whose memory malloc hands
 * it. 0 on single-node machines (or with DOMALLOC_NUMA=0). */
int domalloc_current_node(void);

/* The number of NUMA nodes with memory (at least 1). Node ids may be sparse: do not assume
 * they run from 0 to this count - 1. */
int domalloc_node_count(void);

/* Prints per-node and per-size-class statistics to stderr (the report DOMALLOC_STATS=1 prints
 * at exit). Never allocates. */
void domalloc_print_stats(void);

/* Writes the statistics report (text, as DOMALLOC_STATS=1 prints it) to file descriptor `fd`.
 * 0 on success, -1 on error. */
int domalloc_stats_print(int fd);

/* Writes the statistics as one JSON document (the schema DOMALLOC_STATS=json writes),
 * NUL-terminated, into `buf` if it fits in `size` bytes. Returns the length the document needs
 * without the NUL, like snprintf: call it with (NULL, 0) to learn the size. */
size_t domalloc_stats_json(char *buf, size_t size);

/* The sampling heap profiler (README: "Heap profiling"). Starts sampling one allocation per
 * `sample_bytes` allocated on average (0: DOMALLOC_PROF_SAMPLE, 512 KiB by default); 0 on
 * success, -1 if its tables (about 4.5 MiB, mapped once) cannot be mapped. With
 * DOMALLOC_PROF_INTERVAL set, also starts the thread that writes the periodic profiles (it
 * allocates: not from a signal handler). */
int domalloc_prof_start(size_t sample_bytes);

/* Stops sampling; blocks sampled so far are still followed to their free. */
void domalloc_prof_stop(void);

/* Writes the heap profile (collapsed stacks with raw addresses and the module map; symbolised
 * by `domalloc report --prof`) to `path`, or to DOMALLOC_PROF_FILE's expansion when NULL.
 * 0 on success, -1 if the profiler never ran or the file cannot be written. */
int domalloc_prof_dump(const char *path);

#ifdef __cplusplus
}
#endif

#endif /* DOMALLOC_H */
