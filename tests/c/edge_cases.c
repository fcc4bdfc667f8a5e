/* Every exported function's edge cases. Built against include/domalloc.h and linked with
 * -ldomalloc (shared) and with libdomalloc.a (static), so header and library cannot drift. */
#include "common.h"

#include <malloc.h>
#include <stdint.h>

#include "domalloc.h"

/* C23 and glibc-internal entry points that older headers do not declare. */
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t alignment, size_t size);
void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void __libc_free(void *);
void *__libc_memalign(size_t, size_t);
void *__libc_valloc(size_t);
void *__libc_pvalloc(size_t);
int __posix_memalign(void **, size_t, size_t);

#define OURS(p) (domalloc_node_of(p) >= 0)

static void *volatile sink; /* keeps the compiler from folding malloc/free pairs */

static void test_malloc_free(void) {
    size_t sizes[] = {0, 1, 7, 8, 9, 15, 16, 17, 24, 100, 1000, 4095, 4096, 4097, 65536, 100000,
                      1 << 20, (1 << 20) + 1, 4 << 20, (8 << 20) + 123, 64 << 20};
    void *a = malloc(0), *b = malloc(0);
    CHECK(a != NULL && b != NULL && a != b);
    CHECK(OURS(a));
    free(a);
    free(b);
    free(NULL);
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        unsigned char *p = malloc(n);
        CHECK(p != NULL);
        if (!p) continue;
        CHECK(((uintptr_t)p & 15) == 0);
        CHECK(malloc_usable_size(p) >= n);
        /* The whole usable size may be written. */
        size_t u = malloc_usable_size(p);
        if (u <= (1 << 20)) memset(p, 0xA5, u);
        else { p[0] = 1; p[u - 1] = 2; }
        CHECK(OURS(p));
        free(p);
    }
    CHECK(malloc_usable_size(NULL) == 0);
}

static void test_huge_requests(void) {
    size_t bad[] = {SIZE_MAX, SIZE_MAX - 4096, (size_t)PTRDIFF_MAX, (size_t)PTRDIFF_MAX + 1,
                    SIZE_MAX / 2 - 4096, (size_t)1 << 62};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        errno = 0;
        sink = malloc(bad[i]);
        CHECK(sink == NULL && errno == ENOMEM);
        errno = 0;
        sink = calloc(1, bad[i]);
        CHECK(sink == NULL && errno == ENOMEM);
        errno = 0;
        sink = aligned_alloc(4096, bad[i]);
        CHECK(sink == NULL && errno == ENOMEM);
        errno = 0;
        sink = memalign(64, bad[i]);
        CHECK(sink == NULL && errno == ENOMEM);
        errno = 0;
        sink = valloc(bad[i]);
        CHECK(sink == NULL && errno == ENOMEM);
        errno = 0;
        sink = pvalloc(bad[i]);
        CHECK(sink == NULL && errno == ENOMEM);
    }
    /* Too large for this machine but below PTRDIFF_MAX: 64 TiB. */
    errno = 0;
    sink = malloc((size_t)1 << 46);
    CHECK(sink == NULL && errno == ENOMEM);
}

static void test_calloc(void) {
    errno = 0;
    sink = calloc(SIZE_MAX / 2, 3);
    CHECK(sink == NULL && errno == ENOMEM);
    errno = 0;
    sink = calloc((size_t)1 << 33, (size_t)1 << 33);
    CHECK(sink == NULL && errno == ENOMEM);
    void *z = calloc(0, 0);
    CHECK(z != NULL);
    free(z);
    z = calloc(0, 100);
    CHECK(z != NULL);
    free(z);
    /* Reused memory must be zeroed: dirty blocks of many sizes, free, calloc the same sizes. */
    size_t sizes[] = {8, 24, 100, 1000, 5000, 40000, 300000, 3 << 20, 9 << 20};
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            size_t n = sizes[i];
            void *d[16];
            for (int k = 0; k < 16; k++) {
                d[k] = malloc(n);
                FATAL_CHECK(d[k]);
                memset(d[k], 0xEE, n);
            }
            for (int k = 0; k < 16; k++) free(d[k]);
            for (int k = 0; k < 16; k++) {
                unsigned char *c = calloc(1, n);
                FATAL_CHECK(c);
                size_t bad = 0;
                for (size_t j = 0; j < n; j++) bad += c[j] != 0;
                CHECK(bad == 0);
                d[k] = c;
            }
            for (int k = 0; k < 16; k++) free(d[k]);
        }
    }
    /* A big calloc is zero everywhere. */
    size_t big = (size_t)256 << 20;
    unsigned char *c = calloc(big / 4096, 4096);
    CHECK(c != NULL);
    if (c) {
        size_t bad = 0;
        for (size_t j = 0; j < big; j += 512) bad += c[j] != 0;
        CHECK(bad == 0);
        free(c);
    }
}

static void test_realloc(void) {
    /* realloc(NULL, n) is malloc(n). */
    char *p = realloc(NULL, 100);
    CHECK(p != NULL && OURS(p));
    /* realloc(p, 0) frees and returns NULL (glibc). */
    CHECK(realloc(p, 0) == NULL);
    /* Growth and shrink through every kind of block keep the contents. */
    size_t steps[] = {1, 16, 100, 1000, 10000, 100000, 1 << 20, 5 << 20, 40 << 20, 100 << 20,
                      3 << 20, 300000, 500, 3};
    size_t prev = 0;
    unsigned char *q = NULL;
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        size_t n = steps[i];
        unsigned char *r = realloc(q, n);
        FATAL_CHECK(r != NULL);
        size_t keep = prev < n ? prev : n;
        CHECK(dm_check(r, keep < 65536 ? keep : 65536, 7));
        dm_fill(r, n < 65536 ? n : 65536, 7);
        CHECK(malloc_usable_size(r) >= n);
        CHECK(((uintptr_t)r & 15) == 0);
        q = r;
        prev = n;
    }
    /* Failure leaves the block intact. */
    errno = 0;
    CHECK(realloc(q, SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(realloc(q, (size_t)1 << 46) == NULL && errno == ENOMEM);
    CHECK(dm_check(q, 3, 7));
    free(q);
    /* reallocarray. */
    errno = 0;
    CHECK(reallocarray(NULL, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
    int *a = reallocarray(NULL, 10, sizeof(int));
    CHECK(a != NULL);
    for (int i = 0; i < 10; i++) a[i] = i;
    errno = 0;
    CHECK(reallocarray(a, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
    a = reallocarray(a, 1000, sizeof(int));
    CHECK(a != NULL);
    for (int i = 0; i < 10; i++) CHECK(a[i] == i);
    free(a);
}

static void test_posix_memalign(void) {
    void *sentinel = (void *)0x1234;
    void *out = sentinel;
    size_t bad[] = {0, 1, 2, 3, 4, 12, 24, 48, 4095, (size_t)1 << 63 | 8};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        out = sentinel;
        errno = 0;
        CHECK(posix_memalign(&out, bad[i], 16) == EINVAL);
        CHECK(out == sentinel);
        CHECK(errno == 0);
    }
    out = sentinel;
    CHECK(posix_memalign(&out, 4096, SIZE_MAX - 100) == ENOMEM);
    CHECK(out == sentinel);
    CHECK(posix_memalign(&out, (size_t)1 << 62, 16) == ENOMEM);
    CHECK(out == sentinel);
    for (size_t a = sizeof(void *); a <= ((size_t)1 << 30); a <<= 1) {
        size_t sizes[] = {0, 1, a, 3 * a + 5};
        for (int k = 0; k < 4; k++) {
            if (sizes[k] > ((size_t)1 << 30)) continue;
            out = sentinel;
            int rc = posix_memalign(&out, a, sizes[k]);
            CHECK(rc == 0);
            if (rc) continue;
            CHECK(((uintptr_t)out & (a - 1)) == 0);
            CHECK(malloc_usable_size(out) >= sizes[k]);
            if (sizes[k]) {
                ((char *)out)[0] = 1;
                ((char *)out)[sizes[k] - 1] = 1;
            }
            free(out);
        }
    }
    out = sentinel;
    CHECK(__posix_memalign(&out, 64, 100) == 0 && ((uintptr_t)out & 63) == 0 && OURS(out));
    free(out);
}

static void test_aligned(void) {
    for (size_t a = 1; a <= ((size_t)1 << 30); a <<= 1) {
        size_t n = a < 4096 ? 3 * a + 1 : 100;
        void *p = aligned_alloc(a, n);
        CHECK(p != NULL && ((uintptr_t)p & (a - 1)) == 0 && ((uintptr_t)p & 15) == 0);
        if (p) {
            CHECK(malloc_usable_size(p) >= n);
            memset(p, 1, n);
            free_aligned_sized(p, a, n);
        }
        void *m = memalign(a, n);
        CHECK(m != NULL && ((uintptr_t)m & (a - 1)) == 0);
        if (m) {
            memset(m, 1, n);
            free(m);
        }
    }
    /* aligned_alloc: the alignment must be a power of two (glibc 2.38). */
    errno = 0;
    CHECK(aligned_alloc(24, 48) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(aligned_alloc(0, 48) == NULL && errno == EINVAL);
    /* memalign rounds a non-power-of-two alignment up. */
    void *m = memalign(24, 100);
    CHECK(m != NULL && ((uintptr_t)m & 31) == 0);
    free(m);
    m = memalign(0, 100);
    CHECK(m != NULL && ((uintptr_t)m & 15) == 0);
    free(m);
    errno = 0;
    CHECK(memalign(SIZE_MAX, 100) == NULL && errno == EINVAL);
    /* A 1 GiB-aligned large block. */
    size_t big = (size_t)64 << 20;
    unsigned char *g = aligned_alloc((size_t)1 << 30, big);
    CHECK(g != NULL && ((uintptr_t)g & ((1u << 30) - 1)) == 0);
    if (g) {
        g[0] = 1;
        g[big - 1] = 2;
        CHECK(malloc_usable_size(g) >= big);
        free(g);
    }
    long page = sysconf(_SC_PAGESIZE);
    void *v = valloc(10);
    CHECK(v != NULL && ((uintptr_t)v % (uintptr_t)page) == 0);
    free(v);
    v = pvalloc(0);
    CHECK(v != NULL && ((uintptr_t)v % (uintptr_t)page) == 0 && malloc_usable_size(v) >= (size_t)page);
    free(v);
    v = pvalloc((size_t)page + 1);
    CHECK(v != NULL && malloc_usable_size(v) >= 2 * (size_t)page);
    memset(v, 3, 2 * (size_t)page);
    free(v);
}

static void test_sized_free(void) {
    for (size_t n = 1; n < (1 << 22); n = n * 3 + 1) {
        void *p = malloc(n);
        FATAL_CHECK(p);
        free_sized(p, n);
    }
    free_sized(NULL, 0);
    free_aligned_sized(NULL, 64, 0);
}

static void test_glibc_extensions(void) {
    CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1);
    CHECK(mallopt(M_TRIM_THRESHOLD, 1 << 20) == 1);
    CHECK(mallopt(M_ARENA_MAX, 4) == 1);
    CHECK(mallopt(M_MXFAST, 1 << 20) == 0);
    CHECK(mallopt(424242, 1) == 0);

    /* mallinfo2 sees live memory. */
    enum { N = 10000 };
    static void *blocks[N];
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(1000);
        FATAL_CHECK(blocks[i]);
        memset(blocks[i], 1, 1000);
    }
    void *huge = malloc(32 << 20);
    sink = huge;
    struct mallinfo2 mid = mallinfo2();
    CHECK(mid.uordblks >= before.uordblks + (size_t)N * 1000 / 2);
    CHECK(mid.arena >= mid.uordblks);
    CHECK(mid.hblks >= 1 && mid.hblkhd >= (32u << 20));
    free(huge);
    for (int i = 0; i < N; i++) free(blocks[i]);
    struct mallinfo2 after = mallinfo2();
    CHECK(after.uordblks < mid.uordblks);
    /* malloc_trim releases the freed memory. */
    int t = malloc_trim(0);
    CHECK(t == 0 || t == 1);
    for (int i = 0; i < N; i++) blocks[i] = malloc(5000);
    for (int i = 0; i < N; i++) free(blocks[i]);
    CHECK(malloc_trim(0) == 1);
    CHECK(malloc_trim(0) == 0 || 1);
    malloc_stats();
}

static void test_extras(void) {
    int local = 0;
    void *p = malloc(100);
    sink = &local;
    CHECK(domalloc_node_of(p) >= 0);
    CHECK(domalloc_node_of(p) < 4096);
    CHECK(domalloc_node_of(NULL) == -1);
    CHECK(domalloc_node_of(&local) == -1);
    CHECK(domalloc_node_of((void *)&test_extras) == -1);
    CHECK(domalloc_current_node() >= 0);
    CHECK(domalloc_node_count() >= 1);
    free(p);
    /* Node-targeted blocks of every kind land on the node asked for. */
    int here = domalloc_current_node();
    size_t sizes[] = {0, 1, 100, 5000, 200000, 3 << 20, 40 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        unsigned char *q = domalloc_malloc_on_node(sizes[i], here);
        CHECK(q != NULL && ((uintptr_t)q & 15) == 0);
        if (!q) continue;
        CHECK(domalloc_node_of(q) == here);
        CHECK(malloc_usable_size(q) >= sizes[i]);
        if (sizes[i]) memset(q, 0x3C, sizes[i]);
        q = realloc(q, sizes[i] * 2 + 1);
        CHECK(q != NULL && (sizes[i] == 0 || q[sizes[i] - 1] == 0x3C));
        free(q);
    }
    errno = 0;
    CHECK(domalloc_malloc_on_node(10, -1) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(domalloc_malloc_on_node(10, 1 << 20) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(domalloc_malloc_on_node(SIZE_MAX, here) == NULL && errno == ENOMEM);
    size_t il = (size_t)16 << 20;
    unsigned char *v = domalloc_malloc_interleaved(il);
    CHECK(v != NULL && domalloc_node_of(v) >= 0 && malloc_usable_size(v) >= il);
    if (v) {
        for (size_t j = 0; j < il; j += 4096) v[j] = (unsigned char)j;
        free(v);
    }
    v = domalloc_malloc_interleaved(1);
    CHECK(v != NULL);
    free(v);
    errno = 0;
    CHECK(domalloc_malloc_interleaved(SIZE_MAX) == NULL && errno == ENOMEM);
    domalloc_print_stats();
}

static void test_libc_aliases(void) {
    void *p = __libc_malloc(10);
    CHECK(p && OURS(p));
    p = __libc_realloc(p, 5000);
    CHECK(p && OURS(p));
    __libc_free(p);
    unsigned char *c = __libc_calloc(10, 10);
    CHECK(c && OURS(c) && c[99] == 0);
    __libc_free(c);
    p = __libc_memalign(256, 10);
    CHECK(p && OURS(p) && ((uintptr_t)p & 255) == 0);
    __libc_free(p);
    p = __libc_valloc(10);
    CHECK(p && ((uintptr_t)p & 4095) == 0);
    __libc_free(p);
    p = __libc_pvalloc(10);
    CHECK(p && malloc_usable_size(p) >= 4096);
    __libc_free(p);
}

int main(void) {
    test_malloc_free();
    test_huge_requests();
    test_calloc();
    test_realloc();
    test_posix_memalign();
    test_aligned();
    test_sized_free();
    test_glibc_extensions();
    test_extras();
    test_libc_aliases();
    return dm_finish("edge_cases");
}
