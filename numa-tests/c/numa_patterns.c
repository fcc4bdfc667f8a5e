/*
 * numa_patterns: the C twin of numa-guest (numa-tests/src/bin/numa-guest/). It runs inside a
 * QEMU guest with emulated NUMA nodes, allocates through plain malloc/calloc/free (so whatever
 * library LD_PRELOAD puts first decides where memory comes from) and asks the kernel where the
 * pages are with move_pages(2) (nodes = NULL: query only). It prints the same INFO / RESULT /
 * CRASH / SUMMARY lines as the Rust guest, so the host parser (domalloc_numa_tests::GuestReport)
 * reads both.
 *
 *   numa_patterns [options] [RUN...]    RUN = P[:info][:thp=MODE], P = 1..5 or 9 (default: 1 2 3 4 5 9);
 *                                       info: its RESULT lines are INFO (measured, not checked)
 *     --tpn N          threads per node (default 1)
 *     --sizes L        object sizes for patterns 1-4 (default 16,64,256,1K,4K,16K,64K,256K,1M,4M,mixed)
 *     --large L        array sizes for pattern 5 (default 2M,8M,32M,64M)
 *     --budget B       bytes per thread per phase for patterns 1-4 (default 1M)
 *     --max-objects N  cap on objects per thread per phase (default 1024)
 *     --threshold F    share of pages that must be local (default 0.99)
 *     --rounds N       pattern 2 producer/consumer batches (default 200)
 *     --batch N        objects per batch (default 128)
 *     --rss-bound B    pattern 2 stream: allowed RSS growth (default 64M)
 *     --thp5 MODE      THP mode set for pattern 5 (default never; "keep" leaves it alone)
 *     --thp9 MODE      THP mode set for pattern 9 (default never; "keep" leaves it alone)
 *     --sizes9 L       pattern 9 buffer sizes, SIZE or SIZExCOUNT (default 16K,64K,256K,768K,1536K,3M,64Mx1)
 *     --k9 N           pattern 9 buffers per worker where the size gives no count (default 8)
 *     --aligned9 S     pattern 9: the size also allocated with posix_memalign, aligned_alloc and
 *                      memalign (alignment 4 KiB; default 64K, 0 = none)
 *     --child-timeout S  seconds one pattern may take (default 300)
 *
 * Each pattern runs in a fresh child process (fork before any worker thread exists), so
 * patterns do not share allocator state; pattern 9 forks once more for each of its cases. Worker threads pin themselves with sched_setaffinity;
 * the allocator never pins. No libnuma: the topology comes from /sys/devices/system/node.
 *
 * Build: gcc -O2 -pthread -o numa_patterns numa_patterns.c
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define MAX_NODES 64
#define MAX_CPUS 256
#define MAX_SIZES 32

/* ---- configuration ----------------------------------------------------------------------- */
static int cfg_tpn = 1;
static size_t cfg_sizes[MAX_SIZES]; /* 0 = mixed */
static int cfg_nsizes;
static size_t cfg_large[MAX_SIZES];
static int cfg_nlarge;
static size_t cfg_budget = 1 << 20;
static size_t cfg_max_objects = 1024;
static double cfg_threshold = 0.99;
static int cfg_rounds = 200;
static int cfg_batch = 128;
static size_t cfg_rss_bound = 64UL << 20;
static const char *cfg_thp5 = "never";
static const char *cfg_thp9 = "never";
static int cfg_child_timeout = 300;
static int cfg_info; /* this run's RESULT lines are INFO, not checks */
typedef struct {
    size_t size, count; /* count 0: cfg_k9 */
} size9_t;
static size9_t cfg_sizes9[MAX_SIZES];
static int cfg_nsizes9;
static size_t cfg_k9 = 8;
static size_t cfg_aligned9 = 64 << 10;

/* ---- topology ---------------------------------------------------------------------------- */
static int cpu_nodes[MAX_NODES], n_cpu_nodes;
static int node_cpus[MAX_NODES][MAX_CPUS], node_ncpus[MAX_NODES];
static unsigned long node_mem_kib[MAX_NODES];

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("CRASH pattern=- error=");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    _exit(2);
}

/* Reads a small file into buf (NUL-terminated); returns length or -1. Uses no malloc. */
static int read_file(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    return (int)n;
}

/* Parses a cpulist such as "0-1,4" into out; returns the count. */
static int parse_list(const char *s, int *out, int cap) {
    int n = 0;
    while (*s) {
        while (*s == ',' || *s == ' ' || *s == '\n') s++;
        if (!*s) break;
        char *e;
        long a = strtol(s, &e, 10), b = a;
        if (e == s) break;
        s = e;
        if (*s == '-') {
            b = strtol(s + 1, &e, 10);
            s = e;
        }
        for (long x = a; x <= b && n < cap; x++) out[n++] = (int)x;
    }
    return n;
}

static void read_topology(void) {
    char buf[4096], path[128];
    int online[MAX_NODES];
    if (read_file("/sys/devices/system/node/online", buf, sizeof buf) < 0) strcpy(buf, "0");
    int n = parse_list(buf, online, MAX_NODES);
    for (int i = 0; i < n; i++) {
        int node = online[i];
        snprintf(path, sizeof path, "/sys/devices/system/node/node%d/cpulist", node);
        if (read_file(path, buf, sizeof buf) < 0) buf[0] = 0;
        node_ncpus[node] = parse_list(buf, node_cpus[node], MAX_CPUS);
        if (node_ncpus[node] > 0) cpu_nodes[n_cpu_nodes++] = node;
        snprintf(path, sizeof path, "/sys/devices/system/node/node%d/meminfo", node);
        char *m = read_file(path, buf, sizeof buf) > 0 ? strstr(buf, "MemTotal:") : NULL;
        node_mem_kib[node] = m ? strtoul(m + strlen("MemTotal:"), NULL, 10) : 0;
    }
}

static int current_node(void) {
    unsigned cpu = 0, node = 0;
    if (syscall(SYS_getcpu, &cpu, &node, NULL) != 0) return -1;
    return (int)node;
}

/* Pins the calling thread to all CPUs of `node` and checks it runs there. */
static void pin(int node) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < node_ncpus[node]; i++) CPU_SET(node_cpus[node][i], &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity_node_%d:%s", node, strerror(errno));
    sched_yield();
    int now = current_node();
    if (now != node) die("pinned_to_node_%d_runs_on_%d", node, now);
}

/* ---- scratch memory that never goes through malloc --------------------------------------- */
static void *scratch(size_t bytes) {
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap_scratch_%zu", bytes);
    return p;
}
static void unscratch(void *p, size_t bytes) { munmap(p, bytes ? bytes : 1); }

static size_t rss_bytes(void) {
    char buf[256];
    unsigned long size = 0, res = 0;
    if (read_file("/proc/self/statm", buf, sizeof buf) > 0) sscanf(buf, "%lu %lu", &size, &res);
    return res * PAGE;
}

/* ---- placement --------------------------------------------------------------------------- */
typedef struct {
    uint64_t pages, absent, local, objects, nonzero;
    uint64_t by_node[MAX_NODES];
} tally_t;

static void tally_merge(tally_t *t, const tally_t *o) {
    t->pages += o->pages;
    t->absent += o->absent;
    t->local += o->local;
    t->objects += o->objects;
    t->nonzero += o->nonzero;
    for (int i = 0; i < MAX_NODES; i++) t->by_node[i] += o->by_node[i];
}

/* Queries the nodes of `n` page addresses and adds them to `t` (local = on `expected`). */
static void query_pages(void **pages, size_t n, int expected, tally_t *t) {
    const size_t CHUNK = 16384;
    int *status = scratch(CHUNK * sizeof(int));
    for (size_t off = 0; off < n; off += CHUNK) {
        size_t k = n - off < CHUNK ? n - off : CHUNK;
        long rc = syscall(SYS_move_pages, 0, (unsigned long)k, pages + off, NULL, status, 0);
        if (rc < 0) die("move_pages:%s", strerror(errno));
        for (size_t i = 0; i < k; i++) {
            t->pages++;
            if (status[i] >= 0 && status[i] < MAX_NODES) {
                t->by_node[status[i]]++;
                if (status[i] == expected) t->local++;
            } else {
                t->absent++;
            }
        }
    }
    unscratch(status, CHUNK * sizeof(int));
}

typedef struct {
    void **ptr;
    size_t *size;
    size_t n;
} objs_t;

static void measure(const objs_t *o, int expected, tally_t *t) {
    size_t total = 0;
    for (size_t i = 0; i < o->n; i++)
        total += (((uintptr_t)o->ptr[i] + o->size[i] - 1) / PAGE) - ((uintptr_t)o->ptr[i] / PAGE) + 1;
    void **pages = scratch(total * sizeof(void *));
    size_t k = 0;
    for (size_t i = 0; i < o->n; i++) {
        uintptr_t a = (uintptr_t)o->ptr[i] & ~(PAGE - 1), last = ((uintptr_t)o->ptr[i] + o->size[i] - 1) & ~(PAGE - 1);
        for (; a <= last; a += PAGE) pages[k++] = (void *)a;
    }
    query_pages(pages, k, expected, t);
    t->objects += o->n;
    unscratch(pages, total * sizeof(void *));
}

/* xorshift, same constants as the Rust guest. */
static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}
static uint64_t rng_new(uint64_t seed) { return (seed * 0x9E3779B97F4A7C15ULL) | 1; }
/* Log-uniform in 16 B ..= 64 KiB. */
static size_t mixed_size(uint64_t *s) {
    unsigned exp = 4 + (unsigned)(rng_next(s) % 12);
    size_t base = (size_t)1 << exp;
    size_t v = base + (size_t)(rng_next(s) % base);
    return v > 65536 ? 65536 : v;
}

static size_t object_count(size_t spec) {
    if (spec == 0) return cfg_max_objects / 2 ? cfg_max_objects / 2 : 1;
    size_t n = cfg_budget / spec;
    if (n < 1) n = 1;
    if (n > cfg_max_objects) n = cfg_max_objects;
    return n;
}

/* Allocates n objects of `spec` bytes (0 = mixed) with malloc. */
static objs_t alloc_objs(size_t spec, size_t n, uint64_t *rng) {
    objs_t o = {scratch(n * sizeof(void *)), scratch(n * sizeof(size_t)), n};
    for (size_t i = 0; i < n; i++) {
        size_t sz = spec ? spec : mixed_size(rng);
        o.ptr[i] = malloc(sz);
        if (!o.ptr[i]) die("malloc_%zu_failed", sz);
        o.size[i] = sz;
    }
    return o;
}
static void touch(const objs_t *o) {
    for (size_t i = 0; i < o->n; i++) memset(o->ptr[i], 0x5a, o->size[i]);
}
static void free_objs(objs_t *o) {
    for (size_t i = 0; i < o->n; i++) free(o->ptr[i]);
    unscratch(o->ptr, o->n * sizeof(void *));
    unscratch(o->size, o->n * sizeof(size_t));
    o->n = 0;
}

static void size_label(size_t s, char *buf, size_t cap) {
    if (s == 0) snprintf(buf, cap, "mixed");
    else if (s % (1UL << 20) == 0) snprintf(buf, cap, "%zuM", s >> 20);
    else if (s % 1024 == 0) snprintf(buf, cap, "%zuK", s >> 10);
    else snprintf(buf, cap, "%zu", s);
}

static void report(int pattern, const char *phase, const char *pair, const char *size, const tally_t *t,
                   const char *extra, int extra_ok) {
    double share = t->pages ? (double)t->local / (double)t->pages : 0.0;
    int ok = t->pages > 0 && share >= cfg_threshold && extra_ok;
    char nodes[1024] = "";
    size_t len = 0;
    for (int i = 0; i < MAX_NODES; i++)
        if (t->by_node[i])
            len += snprintf(nodes + len, sizeof nodes - len, "%s%d:%llu", len ? "," : "", i,
                            (unsigned long long)t->by_node[i]);
    if (!len) snprintf(nodes, sizeof nodes, "-");
    printf("RESULT pattern=%d phase=%s pair=%s size=%s threads_per_node=%d objects=%llu pages=%llu local=%llu "
           "absent=%llu share=%.4f nodes=%s%s%s %s\n",
           pattern, phase, pair, size, cfg_tpn, (unsigned long long)t->objects, (unsigned long long)t->pages,
           (unsigned long long)t->local, (unsigned long long)t->absent, share, nodes, extra && *extra ? " " : "",
           extra ? extra : "", cfg_info ? "INFO" : ok ? "PASS" : "FAIL");
    fflush(stdout);
}

/* ---- threads ----------------------------------------------------------------------------- */
static pthread_barrier_t barrier;
static void bwait(void) { pthread_barrier_wait(&barrier); }

typedef struct {
    int node, idx, t;   /* node, index on node, thread number */
    int a, b;           /* the pair */
    tally_t *res;       /* per-thread results, layout decided by the pattern */
} worker_t;

static void run_threads(int n, void *(*fn)(void *), worker_t *w) {
    pthread_t th[MAX_CPUS];
    for (int i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, fn, &w[i]) != 0) die("pthread_create");
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
}

/* 1: threads on every node allocate and touch their own data. */
static void *p1_worker(void *arg) {
    worker_t *w = arg;
    pin(w->node);
    uint64_t rng = rng_new((uint64_t)w->node * 1000 + w->idx + 1);
    for (int k = 0; k < cfg_nsizes; k++) {
        bwait();
        objs_t o = alloc_objs(cfg_sizes[k], object_count(cfg_sizes[k]), &rng);
        touch(&o);
        bwait();
        measure(&o, w->node, &w->res[k]);
        free_objs(&o);
    }
    return NULL;
}

static void pattern1(void) {
    int n = n_cpu_nodes * cfg_tpn;
    worker_t *w = scratch(n * sizeof *w);
    for (int i = 0; i < n; i++) {
        w[i] = (worker_t){cpu_nodes[i / cfg_tpn], i % cfg_tpn, i, 0, 0, scratch(MAX_SIZES * sizeof(tally_t))};
    }
    pthread_barrier_init(&barrier, NULL, n);
    run_threads(n, p1_worker, w);
    for (int k = 0; k < cfg_nsizes; k++) {
        tally_t t = {0};
        for (int i = 0; i < n; i++) tally_merge(&t, &w[i].res[k]);
        char lbl[32];
        size_label(cfg_sizes[k], lbl, sizeof lbl);
        report(1, "own", "all", lbl, &t, "", 1);
    }
}

/* 2: remote free + stream. Per thread pair i: slot[i] hands A's objects to B. */
#define QCAP 4
typedef struct {
    objs_t handoff;
    objs_t q[QCAP];
    int head, count, done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t rss0, rss_max, rss_end, streamed;
} pair_t;
static pair_t *pairs2;

static void *p2_producer(void *arg) {
    worker_t *w = arg;
    pair_t *p = &pairs2[w->idx];
    pin(w->a);
    uint64_t rng = rng_new((uint64_t)w->a * 1000 + w->idx + 7);
    for (int k = 0; k < cfg_nsizes; k++) {
        objs_t o = alloc_objs(cfg_sizes[k], object_count(cfg_sizes[k]), &rng);
        touch(&o);
        measure(&o, w->a, &w->res[3 * k + 0]);
        p->handoff = o;
        bwait(); /* handed over */
        bwait(); /* B freed A's objects */
        bwait(); /* B allocated its own */
        objs_t again = alloc_objs(cfg_sizes[k], object_count(cfg_sizes[k]), &rng);
        touch(&again);
        measure(&again, w->a, &w->res[3 * k + 2]);
        bwait();
        free_objs(&again);
        bwait();
    }
    bwait();
    p->rss0 = p->rss_max = rss_bytes();
    for (int r = 0; r < cfg_rounds; r++) {
        objs_t batch = alloc_objs(0, cfg_batch, &rng);
        touch(&batch);
        for (size_t j = 0; j < batch.n; j++) p->streamed += batch.size[j];
        if (r % 10 == 0) {
            measure(&batch, w->a, &w->res[3 * MAX_SIZES]);
            size_t now = rss_bytes();
            if (now > p->rss_max) p->rss_max = now;
        }
        pthread_mutex_lock(&p->mu);
        while (p->count == QCAP) pthread_cond_wait(&p->cv, &p->mu);
        p->q[(p->head + p->count) % QCAP] = batch;
        p->count++;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_lock(&p->mu);
    p->done = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    bwait();
    p->rss_end = rss_bytes();
    if (p->rss_end > p->rss_max) p->rss_max = p->rss_end;
    return NULL;
}

static void *p2_consumer(void *arg) {
    worker_t *w = arg;
    pair_t *p = &pairs2[w->idx];
    pin(w->b);
    uint64_t rng = rng_new((uint64_t)w->b * 1000 + w->idx + 13);
    for (int k = 0; k < cfg_nsizes; k++) {
        bwait();
        objs_t theirs = p->handoff;
        free_objs(&theirs);
        bwait();
        objs_t mine = alloc_objs(cfg_sizes[k], object_count(cfg_sizes[k]), &rng);
        touch(&mine);
        measure(&mine, w->b, &w->res[3 * k + 1]);
        bwait();
        bwait();
        free_objs(&mine);
        bwait();
    }
    bwait();
    volatile uint64_t sink = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->count == 0 && !p->done) pthread_cond_wait(&p->cv, &p->mu);
        if (p->count == 0 && p->done) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        objs_t batch = p->q[p->head];
        p->head = (p->head + 1) % QCAP;
        p->count--;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        for (size_t j = 0; j < batch.n; j++) sink += *(volatile unsigned char *)batch.ptr[j];
        free_objs(&batch);
    }
    bwait();
    return NULL;
}

static void pattern2(int a, int b) {
    char pair[32];
    snprintf(pair, sizeof pair, "%d>%d", a, b);
    int n = 2 * cfg_tpn;
    worker_t *w = scratch(n * sizeof *w);
    pairs2 = scratch(cfg_tpn * sizeof *pairs2);
    pthread_t th[MAX_CPUS];
    pthread_barrier_init(&barrier, NULL, n);
    for (int i = 0; i < cfg_tpn; i++) {
        pthread_mutex_init(&pairs2[i].mu, NULL);
        pthread_cond_init(&pairs2[i].cv, NULL);
        w[2 * i] = (worker_t){a, i, 2 * i, a, b, scratch((3 * MAX_SIZES + 1) * sizeof(tally_t))};
        w[2 * i + 1] = (worker_t){b, i, 2 * i + 1, a, b, scratch((3 * MAX_SIZES + 1) * sizeof(tally_t))};
        if (pthread_create(&th[2 * i], NULL, p2_producer, &w[2 * i]) ||
            pthread_create(&th[2 * i + 1], NULL, p2_consumer, &w[2 * i + 1]))
            die("pthread_create");
    }
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    static const char *phases[3] = {"a-alloc", "b-alloc", "a-again"};
    for (int k = 0; k < cfg_nsizes; k++) {
        char lbl[32];
        size_label(cfg_sizes[k], lbl, sizeof lbl);
        for (int ph = 0; ph < 3; ph++) {
            tally_t t = {0};
            for (int i = 0; i < n; i++) tally_merge(&t, &w[i].res[3 * k + ph]);
            report(2, phases[ph], pair, lbl, &t, "", 1);
        }
    }
    tally_t t = {0};
    size_t streamed = 0;
    for (int i = 0; i < n; i++) tally_merge(&t, &w[i].res[3 * MAX_SIZES]);
    for (int i = 0; i < cfg_tpn; i++) streamed += pairs2[i].streamed;
    pair_t *p0 = &pairs2[0];
    size_t growth = p0->rss_max > p0->rss0 ? p0->rss_max - p0->rss0 : 0;
    char extra[256];
    snprintf(extra, sizeof extra,
             "rounds=%d streamed=%zuK rss_start=%zuK rss_max=%zuK rss_end=%zuK rss_growth=%zuK rss_bound=%zuK", cfg_rounds,
             streamed / 1024, p0->rss0 / 1024, p0->rss_max / 1024, p0->rss_end / 1024, growth / 1024,
             cfg_rss_bound / 1024);
    report(2, "stream", pair, "mixed", &t, extra, growth <= cfg_rss_bound);
}

/* 3: a thread on A allocates, frees every other object, moves itself to B and allocates. */
static void *p3_worker(void *arg) {
    worker_t *w = arg;
    uint64_t rng = rng_new((uint64_t)w->a * 1000 + w->idx + 21);
    for (int k = 0; k < cfg_nsizes; k++) {
        size_t spec = cfg_sizes[k], n = object_count(spec);
        pin(w->a);
        bwait();
        objs_t o = alloc_objs(spec, n, &rng);
        touch(&o);
        measure(&o, w->a, &w->res[2 * k]);
        objs_t keep = {scratch(n * sizeof(void *)), scratch(n * sizeof(size_t)), 0};
        for (size_t j = 0; j < o.n; j++) {
            if (j % 2 == 0) {
                free(o.ptr[j]);
            } else {
                keep.ptr[keep.n] = o.ptr[j];
                keep.size[keep.n++] = o.size[j];
            }
        }
        unscratch(o.ptr, n * sizeof(void *));
        unscratch(o.size, n * sizeof(size_t));
        pin(w->b);
        objs_t after = alloc_objs(spec, n, &rng);
        touch(&after);
        measure(&after, w->b, &w->res[2 * k + 1]);
        for (size_t j = 0; j < keep.n; j++) free(keep.ptr[j]);
        unscratch(keep.ptr, n * sizeof(void *));
        unscratch(keep.size, n * sizeof(size_t));
        free_objs(&after);
    }
    return NULL;
}

static void pattern3(int a, int b) {
    char pair[32];
    snprintf(pair, sizeof pair, "%d>%d", a, b);
    worker_t *w = scratch(cfg_tpn * sizeof *w);
    for (int i = 0; i < cfg_tpn; i++) w[i] = (worker_t){a, i, i, a, b, scratch(2 * MAX_SIZES * sizeof(tally_t))};
    pthread_barrier_init(&barrier, NULL, cfg_tpn);
    run_threads(cfg_tpn, p3_worker, w);
    pthread_barrier_destroy(&barrier);
    static const char *phases[2] = {"before-move", "after-move"};
    for (int k = 0; k < cfg_nsizes; k++) {
        char lbl[32];
        size_label(cfg_sizes[k], lbl, sizeof lbl);
        for (int ph = 0; ph < 2; ph++) {
            tally_t t = {0};
            for (int i = 0; i < cfg_tpn; i++) tally_merge(&t, &w[i].res[2 * k + ph]);
            report(3, phases[ph], pair, lbl, &t, "", 1);
        }
    }
}

/* 4: threads on A allocate, free and exit; new threads on B allocate. */
static size_t p4_spec;
static void *p4_worker(void *arg) {
    worker_t *w = arg;
    pin(w->node);
    uint64_t rng = rng_new((uint64_t)w->node * 1000 + w->idx + 31);
    bwait();
    objs_t o = alloc_objs(p4_spec, object_count(p4_spec), &rng);
    touch(&o);
    measure(&o, w->node, w->res);
    free_objs(&o);
    return NULL;
}

static void pattern4(int a, int b) {
    char pair[32];
    snprintf(pair, sizeof pair, "%d>%d", a, b);
    worker_t *w = scratch(cfg_tpn * sizeof *w);
    tally_t *res = scratch(2 * cfg_tpn * sizeof(tally_t));
    for (int k = 0; k < cfg_nsizes; k++) {
        p4_spec = cfg_sizes[k];
        memset(res, 0, 2 * cfg_tpn * sizeof(tally_t));
        for (int r = 0; r < 2; r++) {
            int node = r ? b : a;
            for (int i = 0; i < cfg_tpn; i++) w[i] = (worker_t){node, i, i, a, b, &res[r * cfg_tpn + i]};
            pthread_barrier_init(&barrier, NULL, cfg_tpn);
            run_threads(cfg_tpn, p4_worker, w);
            pthread_barrier_destroy(&barrier);
        }
        char lbl[32];
        size_label(p4_spec, lbl, sizeof lbl);
        tally_t ta = {0}, tb = {0};
        for (int i = 0; i < cfg_tpn; i++) {
            tally_merge(&ta, &res[i]);
            tally_merge(&tb, &res[cfg_tpn + i]);
        }
        report(4, "a-threads", pair, lbl, &ta, "", 1);
        report(4, "b-new-threads", pair, lbl, &tb, "", 1);
    }
}

/* 5: calloc + parallel first touch; then free, the same size from B, roles swapped. */
static int p5_nt;
static char *volatile p5_ptr;
static int p5_alloc_t[2]; /* thread number that callocs in round 0 / 1 */

static uint64_t touch_part(uintptr_t lo, uintptr_t hi) {
    uint64_t nonzero = 0;
    for (uintptr_t addr = lo; addr < hi;) {
        uintptr_t end = (addr & ~(PAGE - 1)) + PAGE;
        if (end > hi) end = hi;
        *(volatile unsigned char *)addr = 0x77;
        for (uintptr_t x = addr + 1; x < end; x++)
            if (*(unsigned char *)x) {
                nonzero++;
                break;
            }
        memset((void *)addr, 0x77, end - addr);
        addr = end;
    }
    return nonzero;
}

static void *p5_worker(void *arg) {
    worker_t *w = arg;
    pin(w->node);
    for (int k = 0; k < cfg_nlarge; k++) {
        size_t size = cfg_large[k];
        for (int round = 0; round < 2; round++) {
            if (w->t == p5_alloc_t[round]) {
                p5_ptr = calloc(1, size);
                if (!p5_ptr) die("calloc_%zu_failed", size);
            }
            bwait();
            uintptr_t p = (uintptr_t)p5_ptr;
            /* Units: page boundaries inside the array. */
            uintptr_t first = (p / PAGE + 1) * PAGE;
            size_t units = (p + size > first ? (p + size - first + PAGE - 1) / PAGE : 0) + 1;
            int part = round == 0 ? w->t : p5_nt - 1 - w->t;
            size_t u0 = (size_t)part * units / p5_nt, u1 = (size_t)(part + 1) * units / p5_nt;
            uintptr_t lo = u0 == 0 ? p : first + (u0 - 1) * PAGE;
            uintptr_t hi = u1 == units ? p + size : first + (u1 - 1) * PAGE;
            uint64_t nz = lo < hi ? touch_part(lo, hi) : 0;
            bwait();
            tally_t *t = &w->res[2 * k + round];
            if (lo < hi) {
                size_t np = ((hi - 1) / PAGE) - (lo / PAGE) + 1;
                void **pages = scratch(np * sizeof(void *));
                for (size_t j = 0; j < np; j++) pages[j] = (void *)((lo & ~(PAGE - 1)) + j * PAGE);
                query_pages(pages, np, w->node, t);
                unscratch(pages, np * sizeof(void *));
                t->objects++;
            }
            t->nonzero += nz;
            bwait();
            if (w->t == p5_alloc_t[round]) free((void *)p);
            bwait();
        }
    }
    return NULL;
}

static void thp_read(char *out, size_t cap) {
    char buf[256];
    snprintf(out, cap, "unavailable");
    if (read_file("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf) > 0) {
        char *l = strchr(buf, '['), *r = strchr(buf, ']');
        if (l && r && r > l) snprintf(out, cap, "%.*s", (int)(r - l - 1), l + 1);
    }
}

static void pattern5(int a, int b) {
    char pair[32];
    snprintf(pair, sizeof pair, "%d>%d", a, b);
    int nt = 0;
    worker_t *w = scratch(n_cpu_nodes * cfg_tpn * sizeof *w);
    size_t rsz = 2 * MAX_SIZES * sizeof(tally_t);
    for (int i = 0; i < cfg_tpn; i++) w[nt++] = (worker_t){a, i, 0, a, b, scratch(rsz)};
    for (int n = 0; n < n_cpu_nodes; n++)
        if (cpu_nodes[n] != a && cpu_nodes[n] != b)
            for (int i = 0; i < cfg_tpn; i++) w[nt++] = (worker_t){cpu_nodes[n], i, 0, a, b, scratch(rsz)};
    for (int i = 0; i < cfg_tpn; i++) w[nt++] = (worker_t){b, i, 0, a, b, scratch(rsz)};
    for (int i = 0; i < nt; i++) w[i].t = i;
    p5_nt = nt;
    p5_alloc_t[0] = 0;             /* first thread on A */
    p5_alloc_t[1] = nt - cfg_tpn;  /* first thread on B */
    pthread_barrier_init(&barrier, NULL, nt);
    run_threads(nt, p5_worker, w);
    pthread_barrier_destroy(&barrier);
    char thp[32];
    thp_read(thp, sizeof thp);
    static const char *phases[2] = {"a-calloc", "b-calloc"};
    for (int k = 0; k < cfg_nlarge; k++) {
        char lbl[32];
        size_label(cfg_large[k], lbl, sizeof lbl);
        for (int ph = 0; ph < 2; ph++) {
            tally_t t = {0};
            for (int i = 0; i < nt; i++) tally_merge(&t, &w[i].res[2 * k + ph]);
            char extra[128];
            snprintf(extra, sizeof extra, "split=4K thp=%s nonzero_pages=%llu", thp, (unsigned long long)t.nonzero);
            report(5, phases[ph], pair, lbl, &t, extra, t.nonzero == 0);
        }
    }
}

/* ---- pattern 9: per-worker first touch (the OpenMP serial-region idiom) ------------------ */
/* The main thread, pinned on the first CPU node A, allocates cfg_k9 buffers for each worker
 * (cfg_tpn pinned on every CPU node), interleaved (buffer i of every worker, then buffer i+1);
 * each worker first touches its own and move_pages checks every page of them (first-touch);
 * then each worker frees them and allocates the same again (recycle, with its own minor
 * faults: getrusage(RUSAGE_THREAD)). Then remote-free (the main thread touches the buffers
 * itself, the worker frees them and allocates its own) and realloc-grow (a worker grows its
 * buffers with realloc), one buffer per worker and size up to 4 MiB. Every case runs in a process
 * of its own (fork). */
enum { API_MALLOC, API_CALLOC, API_POSIX_MEMALIGN, API_ALIGNED_ALLOC, API_MEMALIGN, API_REALLOC };
static const char *api_names[] = {"malloc", "calloc", "posix_memalign", "aligned_alloc", "memalign", "realloc"};
enum { CASE_FIRST_TOUCH, CASE_REMOTE_FREE, CASE_REALLOC_GROW };
static const char *case_names[] = {"first-touch", "remote-free", "realloc-grow"};
#define P9_FILL 0x5a
#define P9_SMALL_MAX (4UL << 20) /* largest size of remote-free and realloc-grow */
#define P9_NEIGHBOUR_BUFFERS 1   /* their buffers per worker and size */

typedef struct {
    void *p;
    size_t size;
} buf_t;

typedef struct {
    tally_t t;
    uint64_t minflt, bad_content;
    double worst; /* lowest local share of one buffer */
} round9_t;

typedef struct {
    int node, idx;
    buf_t *slot; /* c9_count buffers: handed over by the main thread, reused by the worker */
    round9_t out[2 * MAX_SIZES];
} w9_t;

/* The case this process runs (set before the fork). */
static int c9_kind, c9_api;
static size_t c9_count, c9_sizes[MAX_SIZES];
static int c9_nsizes;

static uint64_t thread_minflt(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0) return 0;
    return (uint64_t)ru.ru_minflt;
}

static void *api_alloc(int api, size_t size) {
    void *p = NULL;
    switch (api) {
    case API_MALLOC: p = malloc(size); break;
    case API_CALLOC: p = calloc(1, size); break;
    case API_POSIX_MEMALIGN:
        if (posix_memalign(&p, 4096, size) != 0) p = NULL;
        break;
    case API_ALIGNED_ALLOC: p = aligned_alloc(4096, size); break;
    case API_MEMALIGN: p = memalign(4096, size); break;
    default: die("bad_api_%d", api);
    }
    if (!p) die("%s_%zu_failed", api_names[api], size);
    return p;
}

/* Writes every byte; zeroed: page by page, first byte first, checking the rest reads as zero
 * (returns the pages that did not). */
static uint64_t touch9(buf_t *b, size_t n, int zeroed) {
    uint64_t nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (zeroed) nonzero += touch_part((uintptr_t)b[i].p, (uintptr_t)b[i].p + b[i].size);
        else memset(b[i].p, P9_FILL, b[i].size);
    }
    return nonzero;
}

/* Every page of every buffer, local when on `node`. */
static void measure9(buf_t *b, size_t n, int node, round9_t *r) {
    memset(r, 0, sizeof *r);
    r->worst = 1.0;
    for (size_t i = 0; i < n; i++) {
        tally_t one = {0};
        objs_t o = {&b[i].p, &b[i].size, 1};
        measure(&o, node, &one);
        double share = one.pages ? (double)one.local / (double)one.pages : 0.0;
        if (share < r->worst) r->worst = share;
        tally_merge(&r->t, &one);
    }
}

static void *p9_worker(void *arg) {
    w9_t *w = arg;
    pin(w->node);
    size_t n = c9_count;
    if (c9_kind == CASE_FIRST_TOUCH) {
        int zeroed = c9_api == API_CALLOC;
        size_t size = c9_sizes[0];
        bwait(); /* 1: the main thread allocated */
        uint64_t f0 = thread_minflt();
        uint64_t nz = touch9(w->slot, n, zeroed);
        uint64_t f1 = thread_minflt();
        bwait(); /* 2: every worker touched */
        measure9(w->slot, n, w->node, &w->out[0]);
        w->out[0].t.nonzero = nz;
        w->out[0].minflt = f1 - f0;
        /* The recycle round: free what it used, allocate the same again. */
        uint64_t r0 = thread_minflt();
        for (size_t i = 0; i < n; i++) free(w->slot[i].p);
        for (size_t i = 0; i < n; i++) w->slot[i] = (buf_t){api_alloc(c9_api, size), size};
        nz = touch9(w->slot, n, zeroed);
        uint64_t r1 = thread_minflt();
        bwait(); /* 3: every worker recycled */
        measure9(w->slot, n, w->node, &w->out[1]);
        w->out[1].t.nonzero = nz;
        w->out[1].minflt = r1 - r0;
        for (size_t i = 0; i < n; i++) free(w->slot[i].p);
        bwait(); /* 4: results ready */
    } else if (c9_kind == CASE_REMOTE_FREE) {
        for (int s = 0; s < c9_nsizes; s++) {
            bwait(); /* 1: the main thread allocated and touched */
            for (size_t i = 0; i < n; i++) free(w->slot[i].p);
            uint64_t f0 = thread_minflt();
            for (size_t i = 0; i < n; i++) w->slot[i] = (buf_t){api_alloc(API_MALLOC, c9_sizes[s]), c9_sizes[s]};
            touch9(w->slot, n, 0);
            uint64_t f1 = thread_minflt();
            bwait(); /* 2: every worker has its own */
            measure9(w->slot, n, w->node, &w->out[s]);
            w->out[s].minflt = f1 - f0;
            for (size_t i = 0; i < n; i++) free(w->slot[i].p);
            bwait(); /* 3: results ready */
        }
    } else {
        size_t prev = 0;
        for (int s = 0; s < c9_nsizes; s++) {
            size_t size = c9_sizes[s];
            uint64_t bad = 0;
            bwait(); /* 1: step starts */
            uint64_t f0 = thread_minflt();
            for (size_t i = 0; i < n; i++) {
                if (prev == 0) {
                    w->slot[i].p = api_alloc(API_MALLOC, size);
                } else {
                    unsigned char *q = realloc(w->slot[i].p, size);
                    if (!q) die("realloc_%zu_failed", size);
                    size_t kept = prev < size ? prev : size;
                    if (q[0] != P9_FILL || q[kept - 1] != P9_FILL) bad++;
                    w->slot[i].p = q;
                }
                w->slot[i].size = size;
            }
            touch9(w->slot, n, 0);
            uint64_t f1 = thread_minflt();
            bwait(); /* 2: every worker grew and touched */
            measure9(w->slot, n, w->node, &w->out[s]);
            w->out[s].minflt = f1 - f0;
            w->out[s].bad_content = bad;
            bwait(); /* 3: results ready */
            prev = size;
        }
        for (size_t i = 0; i < n; i++) free(w->slot[i].p);
    }
    return NULL;
}

/* "0:400M,1:450M": each CPU node's MemFree. */
static void node_free(char *out, size_t cap) {
    char buf[4096], path[128];
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < n_cpu_nodes; i++) {
        snprintf(path, sizeof path, "/sys/devices/system/node/node%d/meminfo", cpu_nodes[i]);
        char *m = read_file(path, buf, sizeof buf) > 0 ? strstr(buf, "MemFree:") : NULL;
        unsigned long kib = m ? strtoul(m + strlen("MemFree:"), NULL, 10) : 0;
        len += snprintf(out + len, cap - len, "%s%d:%luM", i ? "," : "", cpu_nodes[i], kib / 1024);
    }
}

static const char *refaulted(uint64_t minflt, uint64_t pages) {
    if (minflt * 10 < pages) return "none";
    if (minflt * 10 >= pages * 9) return "all";
    return "partly";
}

/* One case, in this (forked) process: the main thread's serial region, then the report. */
static void p9_case(void) {
    int a = cpu_nodes[0];
    pin(a); /* the serial region runs on the first CPU node */
    int nw = n_cpu_nodes * cfg_tpn;
    size_t n = c9_count;
    w9_t *w = scratch(nw * sizeof *w);
    for (int i = 0; i < nw; i++) {
        w[i].node = cpu_nodes[i / cfg_tpn];
        w[i].idx = i % cfg_tpn;
        w[i].slot = scratch(n * sizeof(buf_t));
    }
    char memfree[256], thp[32];
    node_free(memfree, sizeof memfree);
    thp_read(thp, sizeof thp);
    pthread_barrier_init(&barrier, NULL, nw + 1);
    pthread_t th[MAX_CPUS];
    for (int i = 0; i < nw; i++)
        if (pthread_create(&th[i], NULL, p9_worker, &w[i]) != 0) die("pthread_create");
    int steps = c9_kind == CASE_FIRST_TOUCH ? 1 : c9_nsizes;
    for (int s = 0; s < steps; s++) {
        if (c9_kind != CASE_REALLOC_GROW) {
            int api = c9_kind == CASE_FIRST_TOUCH ? c9_api : API_MALLOC;
            for (size_t i = 0; i < n; i++)
                for (int k = 0; k < nw; k++) w[k].slot[i] = (buf_t){api_alloc(api, c9_sizes[s]), c9_sizes[s]};
            if (c9_kind == CASE_REMOTE_FREE)
                for (int k = 0; k < nw; k++) touch9(w[k].slot, n, 0);
        }
        int waits = c9_kind == CASE_FIRST_TOUCH ? 4 : 3;
        for (int i = 0; i < waits; i++) bwait();
    }
    for (int i = 0; i < nw; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (int s = 0; s < steps; s++) {
        char lbl[32], from[32], pair[32], extra[512];
        size_label(c9_sizes[s], lbl, sizeof lbl);
        if (s > 0) size_label(c9_sizes[s - 1], from, sizeof from);
        else snprintf(from, sizeof from, "-");
        for (int k = 0; k < nw; k++) {
            /* Who allocated > who uses (realloc-grow: the worker does both). */
            snprintf(pair, sizeof pair, "%d>%d", c9_kind == CASE_REALLOC_GROW ? w[k].node : a, w[k].node);
            if (c9_kind == CASE_FIRST_TOUCH) {
                static const char *phases[2] = {"first-touch", "recycle"};
                for (int ph = 0; ph < 2; ph++) {
                    round9_t *r = &w[k].out[ph];
                    snprintf(extra, sizeof extra,
                             "api=%s worker=%d:%d minflt=%llu worst_buffer=%.4f nonzero_pages=%llu thp=%s memfree=%s",
                             api_names[c9_api], w[k].node, w[k].idx, (unsigned long long)r->minflt, r->worst,
                             (unsigned long long)r->t.nonzero, thp, memfree);
                    report(9, phases[ph], pair, lbl, &r->t, extra, r->t.nonzero == 0);
                }
                round9_t *r = &w[k].out[1];
                printf("INFO pattern=9 recycle-faults threads_per_node=%d size=%s api=%s worker=%d:%d pages_touched=%llu "
                       "minflt=%llu faults_per_page=%.2f refaulted=%s first_touch_minflt=%llu\n",
                       cfg_tpn, lbl, api_names[c9_api], w[k].node, w[k].idx, (unsigned long long)r->t.pages,
                       (unsigned long long)r->minflt, r->t.pages ? (double)r->minflt / (double)r->t.pages : 0.0,
                       refaulted(r->minflt, r->t.pages), (unsigned long long)w[k].out[0].minflt);
            } else if (c9_kind == CASE_REMOTE_FREE) {
                round9_t *r = &w[k].out[s];
                snprintf(extra, sizeof extra, "api=malloc worker=%d:%d minflt=%llu worst_buffer=%.4f", w[k].node,
                         w[k].idx, (unsigned long long)r->minflt, r->worst);
                report(9, "remote-free", pair, lbl, &r->t, extra, 1);
            } else {
                round9_t *r = &w[k].out[s];
                snprintf(extra, sizeof extra, "api=realloc from=%s worker=%d:%d minflt=%llu worst_buffer=%.4f bad_content=%llu",
                         from, w[k].node, w[k].idx, (unsigned long long)r->minflt, r->worst,
                         (unsigned long long)r->bad_content);
                report(9, "realloc-grow", pair, lbl, &r->t, extra, r->bad_content == 0);
            }
        }
    }
}

/* Forks a process for one case and waits for it; a case that dies gives a FAIL line. */
static void p9_run(int kind, int api, size_t count, const size_t *sizes, int nsizes) {
    c9_kind = kind;
    c9_api = api;
    c9_count = count;
    c9_nsizes = nsizes;
    memcpy(c9_sizes, sizes, nsizes * sizeof *sizes);
    char name[256], lbl[32];
    size_t len = snprintf(name, sizeof name, "%s:%s:%zu:", case_names[kind], kind == CASE_FIRST_TOUCH ? api_names[api] : kind == CASE_REMOTE_FREE ? "malloc" : "realloc", count);
    for (int i = 0; i < nsizes; i++) {
        size_label(sizes[i], lbl, sizeof lbl);
        len += snprintf(name + len, sizeof name - len, "%s%s", i ? "+" : "", lbl);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        alarm(240);
        p9_case();
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("RESULT pattern=9 phase=%s pair=- size=- threads_per_node=%d objects=0 pages=0 local=0 absent=0 "
               "share=0.0000 nodes=- note=sub_run_status:%s_%d %s\n",
               name, cfg_tpn, WIFSIGNALED(status) ? "signal" : "exit", WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
               cfg_info ? "INFO" : "FAIL");
    }
    printf("INFO sub-run pattern=9 case=%s seconds=%.1f\n", name,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
}

static void pattern9(void) {
    unsigned long min_kib = 0;
    for (int i = 0; i < n_cpu_nodes; i++)
        if (i == 0 || node_mem_kib[cpu_nodes[i]] < min_kib) min_kib = node_mem_kib[cpu_nodes[i]];
    size_t small[MAX_SIZES];
    int nsmall = 0;
    for (int k = 0; k < cfg_nsizes9; k++) {
        size_t size = cfg_sizes9[k].size, count = cfg_sizes9[k].count ? cfg_sizes9[k].count : cfg_k9;
        char lbl[32];
        size_label(size, lbl, sizeof lbl);
        unsigned long long need = (unsigned long long)size * count * cfg_tpn * 3;
        if (need > (unsigned long long)min_kib * 1024) {
            printf("RESULT pattern=9 phase=first-touch pair=- size=%s threads_per_node=%d "
                   "note=node_memory_too_small:need=%lluK:smallest_node=%luK SKIP\n",
                   lbl, cfg_tpn, need / 1024, min_kib);
            continue;
        }
        p9_run(CASE_FIRST_TOUCH, API_MALLOC, count, &size, 1);
        p9_run(CASE_FIRST_TOUCH, API_CALLOC, count, &size, 1);
        if (size == cfg_aligned9) {
            p9_run(CASE_FIRST_TOUCH, API_POSIX_MEMALIGN, count, &size, 1);
            p9_run(CASE_FIRST_TOUCH, API_ALIGNED_ALLOC, count, &size, 1);
            p9_run(CASE_FIRST_TOUCH, API_MEMALIGN, count, &size, 1);
        }
        if (size <= P9_SMALL_MAX) {
            int j = nsmall++;
            while (j > 0 && small[j - 1] > size) small[j] = small[j - 1], j--; /* ascending */
            small[j] = size;
        }
    }
    if (nsmall > 0) {
        p9_run(CASE_REMOTE_FREE, API_MALLOC, P9_NEIGHBOUR_BUFFERS, small, nsmall);
        p9_run(CASE_REALLOC_GROW, API_REALLOC, P9_NEIGHBOUR_BUFFERS, small, nsmall);
    }
}

/* Node pairs (A, B): each CPU node and its successor (both ways on 2 nodes). */
static int make_pairs(int (*out)[2]) {
    int k = n_cpu_nodes;
    if (k < 2) return 0;
    if (k == 2) {
        out[0][0] = cpu_nodes[0], out[0][1] = cpu_nodes[1];
        out[1][0] = cpu_nodes[1], out[1][1] = cpu_nodes[0];
        return 2;
    }
    for (int i = 0; i < k; i++) out[i][0] = cpu_nodes[i], out[i][1] = cpu_nodes[(i + 1) % k];
    return k;
}

static void run_pattern(int p) {
    int prs[MAX_NODES][2];
    int np = make_pairs(prs);
    if (p >= 2 && np == 0) {
        printf("RESULT pattern=%d phase=- pair=- size=- threads_per_node=%d note=needs_two_cpu_nodes SKIP\n", p, cfg_tpn);
        return;
    }
    for (int i = 0; i < (p == 1 || p == 9 ? 1 : np); i++) {
        switch (p) {
        case 1: pattern1(); break;
        case 9: pattern9(); break;
        case 2: pattern2(prs[i][0], prs[i][1]); break;
        case 3: pattern3(prs[i][0], prs[i][1]); break;
        case 4: pattern4(prs[i][0], prs[i][1]); break;
        case 5: pattern5(prs[i][0], prs[i][1]); break;
        default: die("no_pattern_%d", p);
        }
    }
}

/* ---- driver ------------------------------------------------------------------------------ */
static size_t parse_size(const char *s) {
    char *e;
    double v = strtod(s, &e);
    switch (*e) {
    case 'k': case 'K': v *= 1024; break;
    case 'm': case 'M': v *= 1024 * 1024; break;
    case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
    }
    return (size_t)v;
}

/* "16K,64K,64Mx1": sizes with an optional buffer count each (0: --k9). */
static int parse_sizes9(const char *s, size9_t *out) {
    int n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok && n < MAX_SIZES; tok = strtok(NULL, ",")) {
        char *x = strchr(tok, 'x');
        out[n].count = x ? strtoul(x + 1, NULL, 10) : 0;
        if (x) *x = 0;
        out[n].size = parse_size(tok);
        if (out[n].size == 0 || (x && out[n].count == 0)) die("bad_sizes9_%s", s);
        n++;
    }
    return n;
}

static int parse_sizes(const char *s, size_t *out) {
    int n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok && n < MAX_SIZES; tok = strtok(NULL, ","))
        out[n++] = strcmp(tok, "mixed") == 0 ? 0 : parse_size(tok);
    return n;
}

static void write_thp(const char *mode) {
    int fd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_WRONLY);
    if (fd < 0) return;
    if (write(fd, mode, strlen(mode)) < 0) { /* reported through the thp= field */ }
    close(fd);
}

/* Counts of RESULT verdicts, shared with the children. */
typedef struct {
    volatile long passed, failed, info;
} counts_t;

/* One RUN argument: P[:info][:thp=MODE]. */
typedef struct {
    int p, info;
    char thp[16]; /* "" = the pattern's default (--thp5, --thp9) */
} run_t;

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    run_t runs[16];
    int npat = 0;
    cfg_nsizes = parse_sizes("16,64,256,1K,4K,16K,64K,256K,1M,4M,mixed", cfg_sizes);
    cfg_nlarge = parse_sizes("2M,8M,32M,64M", cfg_large);
    cfg_nsizes9 = parse_sizes9("16K,64K,256K,768K,1536K,3M,64Mx1", cfg_sizes9);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--tpn")) cfg_tpn = atoi(v), i++;
        else if (!strcmp(a, "--sizes")) cfg_nsizes = parse_sizes(v, cfg_sizes), i++;
        else if (!strcmp(a, "--large")) cfg_nlarge = parse_sizes(v, cfg_large), i++;
        else if (!strcmp(a, "--budget")) cfg_budget = parse_size(v), i++;
        else if (!strcmp(a, "--max-objects")) cfg_max_objects = strtoul(v, NULL, 10), i++;
        else if (!strcmp(a, "--threshold")) cfg_threshold = atof(v), i++;
        else if (!strcmp(a, "--rounds")) cfg_rounds = atoi(v), i++;
        else if (!strcmp(a, "--batch")) cfg_batch = atoi(v), i++;
        else if (!strcmp(a, "--rss-bound")) cfg_rss_bound = parse_size(v), i++;
        else if (!strcmp(a, "--thp5")) cfg_thp5 = v, i++;
        else if (!strcmp(a, "--thp9")) cfg_thp9 = v, i++;
        else if (!strcmp(a, "--sizes9")) cfg_nsizes9 = parse_sizes9(v, cfg_sizes9), i++;
        else if (!strcmp(a, "--k9")) cfg_k9 = strtoul(v, NULL, 10), i++;
        else if (!strcmp(a, "--aligned9")) cfg_aligned9 = parse_size(v), i++;
        else if (!strcmp(a, "--child-timeout")) cfg_child_timeout = atoi(v), i++;
        else if (((a[0] >= '1' && a[0] <= '5') || a[0] == '9') && (a[1] == 0 || a[1] == ':') && npat < 16) {
            run_t r = {a[0] - '0', 0, ""};
            char buf[128];
            snprintf(buf, sizeof buf, "%s", a[1] ? a + 2 : "");
            for (char *tok = strtok(buf, ":"); tok; tok = strtok(NULL, ":")) {
                if (!strcmp(tok, "info")) r.info = 1;
                else if (!strncmp(tok, "thp=", 4)) snprintf(r.thp, sizeof r.thp, "%s", tok + 4);
                else die("unknown_run_option_%s", tok);
            }
            runs[npat++] = r;
        } else die("unknown_argument_%s", a);
    }
    if (npat == 0) {
        static const int all[] = {1, 2, 3, 4, 5, 9};
        for (int k = 0; k < 6; k++) runs[npat++] = (run_t){all[k], 0, ""};
    }
    if (cfg_k9 < 1) die("bad_k9");
    if (cfg_tpn < 1 || cfg_tpn > 8) die("bad_tpn");

    read_topology();
    char thp[32], buf[512];
    thp_read(thp, sizeof thp);
    /* Where malloc really comes from: the first definition in the global scope. */
    Dl_info info;
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    const char *from = m && dladdr(m, &info) && info.dli_fname ? info.dli_fname : "?";
    const char *pre = getenv("LD_PRELOAD");
    printf("INFO allocator=c-malloc malloc_from=%s ld_preload=%s\n", from, pre && *pre ? pre : "-");
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < n_cpu_nodes; i++) len += snprintf(buf + len, sizeof buf - len, "%s%d", i ? "," : "", cpu_nodes[i]);
    printf("INFO topology cpu_nodes=%s\n", buf);
    printf("INFO thp=%s tpn=%d\n", thp, cfg_tpn);

    counts_t *counts = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (counts == MAP_FAILED) die("mmap_shared");
    long crashed = 0;
    for (int i = 0; i < npat; i++) {
        int p = runs[i].p;
        const char *mode = runs[i].thp[0] ? runs[i].thp : p == 5 ? cfg_thp5 : p == 9 ? cfg_thp9 : "keep";
        if (strcmp(mode, "keep") != 0) write_thp(mode);
        cfg_info = runs[i].info;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int fds[2];
        if (pipe(fds) != 0) die("pipe");
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            close(fds[0]);
            dup2(fds[1], 1);
            close(fds[1]);
            alarm((unsigned)cfg_child_timeout);
            run_pattern(p);
            fflush(stdout);
            _exit(0);
        }
        close(fds[1]);
        /* Echo the child's lines and count its verdicts. */
        FILE *in = fdopen(fds[0], "r");
        char line[2048];
        while (in && fgets(line, sizeof line, in)) {
            fputs(line, stdout);
            if (!strncmp(line, "RESULT ", 7)) {
                size_t l = strlen(line);
                while (l && (line[l - 1] == '\n' || line[l - 1] == ' ')) line[--l] = 0;
                if (l >= 4 && !strcmp(line + l - 4, "PASS")) counts->passed++;
                else if (l >= 4 && !strcmp(line + l - 4, "FAIL")) counts->failed++;
                else if (l >= 4 && !strcmp(line + l - 4, "INFO")) counts->info++;
            }
        }
        if (in) fclose(in);
        int status = 0;
        waitpid(pid, &status, 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            printf("INFO run pattern=%d threads_per_node=%d seconds=%.1f\n", p, cfg_tpn, secs);
        } else {
            crashed++;
            if (WIFSIGNALED(status))
                printf("CRASH pattern=%d threads_per_node=%d status=signal_%d seconds=%.1f\n", p, cfg_tpn,
                       WTERMSIG(status), secs);
            else
                printf("CRASH pattern=%d threads_per_node=%d status=exit_%d seconds=%.1f\n", p, cfg_tpn,
                       WEXITSTATUS(status), secs);
        }
        if (strcmp(mode, "keep") != 0) write_thp(thp);
    }
    printf("SUMMARY passed=%ld failed=%ld info=%ld crashed=%ld\n", counts->passed, counts->failed, counts->info, crashed);
    return counts->failed || crashed ? 1 : 0;
}
