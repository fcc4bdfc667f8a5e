/* Allocation before any constructor ran: from .preinit_array (runs before every shared
 * library's constructors) and from a high-priority constructor. The blocks are checked and freed
 * later, from another thread. Run under LD_PRELOAD (or linked with -ldomalloc). */
#include "common.h"

#include <pthread.h>

static char *pre_blocks[64];
static char *ctor_blocks[64];

static void fill(char **blocks, int tag) {
    for (int i = 0; i < 64; i++) {
        size_t n = 1 + (size_t)i * 997;
        char *p = i % 3 == 0 ? malloc(n) : i % 3 == 1 ? calloc(1, n) : realloc(NULL, n);
        if (!p) _exit(10);
        memset(p, tag + i, n);
        blocks[i] = p;
    }
    /* A huge block and an aligned one, too. */
    void *a = NULL;
    if (posix_memalign(&a, 4096, 5 << 20) != 0) _exit(11);
    free(a);
}

static void preinit(int argc, char **argv, char **envp) {
    (void)argc, (void)argv, (void)envp;
    fill(pre_blocks, 1);
}
__attribute__((section(".preinit_array"), used)) static void (*preinit_entry)(int, char **, char **) = preinit;

__attribute__((constructor(101))) static void early_ctor(void) { fill(ctor_blocks, 100); }

static void *check_and_free(void *arg) {
    char **blocks = arg;
    int tag = blocks == pre_blocks ? 1 : 100;
    long bad = 0;
    for (int i = 0; i < 64; i++) {
        size_t n = 1 + (size_t)i * 997;
        for (size_t j = 0; j < n; j++) bad += blocks[i][j] != (char)(tag + i);
        free(blocks[i]);
    }
    return (void *)bad;
}

int main(void) {
    dm_require_domalloc();
    dm_node_of_fn node_of = dm_node_of_ptr();
    CHECK(node_of(pre_blocks[0]) >= 0);
    CHECK(node_of(ctor_blocks[0]) >= 0);
    pthread_t a, b;
    void *ra, *rb;
    FATAL_CHECK(pthread_create(&a, NULL, check_and_free, pre_blocks) == 0);
    FATAL_CHECK(pthread_create(&b, NULL, check_and_free, ctor_blocks) == 0);
    pthread_join(a, &ra);
    pthread_join(b, &rb);
    CHECK(ra == NULL && rb == NULL);
    return dm_finish("early");
}
