/* hbwmalloc.h: memkind's high-bandwidth memory interface (hbwmalloc(3)), as libdomalloc
 * provides it. A program written for memkind builds unchanged and links with -ldomalloc
 * (or $(pkg-config --libs domalloc)); see domalloc(3) and the README's "Memory tiers".
 *
 * Blocks go on the high-bandwidth NUMA node nearest the calling thread, as the kernel's HMAT
 * describes it (or DOMALLOC_HBW_NODES / MEMKIND_HBW_NODES). hbw_free works from any thread;
 * hbw blocks may also be freed with free(). */
#ifndef DOMALLOC_HBWMALLOC_H
#define DOMALLOC_HBWMALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    HBW_POLICY_BIND = 1,       /* NULL and ENOMEM when the nearest HBW node cannot hold it */
    HBW_POLICY_PREFERRED = 2,  /* the default: a full HBW node spills to the nearest node */
    HBW_POLICY_INTERLEAVE = 3, /* pages round-robin over every HBW node */
    HBW_POLICY_BIND_ALL = 4    /* as BIND, then the other HBW nodes, nearest first */
} hbw_policy_t;

typedef enum {
    HBW_PAGESIZE_4KB = 1,
    HBW_PAGESIZE_2MB = 2,
    HBW_PAGESIZE_1GB_STRICT = 3, /* not supported: EINVAL */
    HBW_PAGESIZE_1GB = 4         /* not supported: EINVAL */
} hbw_pagesize_t;

#define HBW_TOUCH_PAGES (1 << 0)

int hbw_check_available(void);
void *hbw_malloc(size_t size);
void *hbw_calloc(size_t nmemb, size_t size);
void *hbw_realloc(void *ptr, size_t size);
void hbw_free(void *ptr);
size_t hbw_malloc_usable_size(void *ptr);
int hbw_posix_memalign(void **memptr, size_t alignment, size_t size);
int hbw_posix_memalign_psize(void **memptr, size_t alignment, size_t size, hbw_pagesize_t pagesize);
hbw_policy_t hbw_get_policy(void);
int hbw_set_policy(hbw_policy_t mode);
int hbw_verify_memory_region(void *addr, size_t size, int flags);

#ifdef __cplusplus
}
#endif

#endif /* DOMALLOC_HBWMALLOC_H */
