//! Process-wide state: one-time initialisation, the domain and arena tables, the heap pool, the
//! orphan and node heaps, the maintenance sweep and the background purge thread, the fork
//! handlers.
//!
//! Initialisation runs on the first allocation of the process (whatever thread, even before any
//! constructor): options, topology, the link key, tables sized by the highest possible CPU and
//! node ids (mapped from the OS, zero = empty), the thread-exit key, the fork handlers. It never
//! allocates.
//!
//! **Fork.** The prepare handler takes every allocator lock so the child gets consistent lists,
//! in glibc's order: first the C library's stdio list lock (glibc's own fork takes it after the
//! atfork handlers and before its malloc locks, and `getdelim` reallocates while holding a
//! FILE's lock, so taking ours first would close a cycle: forker holds ours and waits for the
//! list lock, `fflush(NULL)` holds that and waits for a FILE lock, a reader holds the FILE lock
//! and waits for ours). A lock the forking thread holds itself (fork from a signal handler that
//! interrupted it inside the allocator) is left as it is: the interrupted code releases it in
//! both processes. The child starts no thread of ours; the purge thread is started again lazily.

use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use crate::arena::Arena;
use crate::contention::LockKind;
use crate::domain::Domain;
use crate::heap::{self, Heap, HeapCounters};
use crate::lock::Lock;
use crate::options::{self, NumaMode, Policy, PurgeThread};
use crate::os::{self, Os, ProcessPolicy, Sys, ThreadKey, OS_PAGE};
use crate::size_class::{class_of, class_size, SMALL_MAX};
use crate::topology;

const UNINIT: u8 = 0;
const READY: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static INIT_LOCK: Lock<()> = Lock::new(LockKind::Process, ());
static NUMA: AtomicBool = AtomicBool::new(false);
/// Whether the kernel's answers about page placement match the topology in use (not when the
/// topology comes from a fake sysfs tree, `DOMALLOC_TOPOLOGY_ROOT`).
static PAGE_QUERIES: AtomicBool = AtomicBool::new(false);

/// The slot of a domain's node-targeted heap (created on first use).
pub(crate) struct NodeHeap(pub(crate) *mut Heap);
// SAFETY: guarded by its lock.
unsafe impl Send for NodeHeap {}

struct Tables {
    domains: *mut Domain,
    n_domains: usize,
    /// One arena per CPU id, then one per node id.
    arenas: *mut Arena,
    n_cpu_arenas: usize,
    node_heaps: *mut Lock<NodeHeap>,
    /// The single domain's node when NUMA is off.
    solo_node: usize,
    key: ThreadKey,
    /// The placement policy in force: `DOMALLOC_POLICY`, else the one the process was started
    /// with (numactl), else local.
    policy: Policy,
    /// Blocks below this size are not subject to `policy` (0 = all; small sizes: per class).
    policy_min_size: usize,
    /// Whether `policy` came from outside (numactl) rather than `DOMALLOC_POLICY`.
    policy_external: bool,
    /// When initialisation finished (ms, monotonic).
    start_ms: u64,
}

struct TablesCell(core::cell::UnsafeCell<Tables>);
// SAFETY: written once under INIT_LOCK before STATE is published as READY; read-only after.
unsafe impl Sync for TablesCell {}

static TABLES: TablesCell = TablesCell(core::cell::UnsafeCell::new(Tables {
    domains: ptr::null_mut(),
    n_domains: 0,
    arenas: ptr::null_mut(),
    n_cpu_arenas: 0,
    node_heaps: ptr::null_mut(),
    solo_node: 0,
    key: ThreadKey(0),
    policy: Policy::Local,
    policy_min_size: 0,
    policy_external: false,
    start_ms: 0,
}));

#[inline(always)]
fn tables() -> &'static Tables {
    // SAFETY: see `TablesCell`.
    unsafe { &*TABLES.0.get() }
}

/// Whether the allocator is initialised (or initialises it). False if it cannot be.
#[inline]
pub(crate) fn ensure_init() -> bool {
    match STATE.load(Ordering::Acquire) {
        READY => true,
        _ => init_slow(),
    }
}

#[cold]
#[inline(never)]
fn init_slow() -> bool {
    let g = INIT_LOCK.lock();
    if STATE.load(Ordering::Acquire) == READY {
        return true;
    }
    let ok = init_locked();
    // A failure (no memory for the tables) is not final: the next allocation tries again, so a
    // transient mapping failure at start-up does not disable the allocator for good.
    if ok {
        STATE.store(READY, Ordering::Release);
    }
    drop(g);
    if ok && options::get().verbose {
        crate::stats::print_banner();
    }
    ok
}

/// Stages of initialisation already done by an earlier, failed attempt (under `INIT_LOCK`).
static OPTIONS_READ: AtomicBool = AtomicBool::new(false);
static TOPOLOGY_READ: AtomicBool = AtomicBool::new(false);

fn init_locked() -> bool {
    // Options (and the fault injection they configure) are read once: a retry must not undo a
    // later `set_fault_injection`.
    if !OPTIONS_READ.load(Ordering::Relaxed) {
        options::init();
        let opts = options::get();
        os::set_fault_injection(opts.fail_map_every, opts.fail_map_after);
        crate::page::set_link_key(Sys::random_u64());
        OPTIONS_READ.store(true, Ordering::Relaxed);
    }
    let opts = options::get();
    if !TOPOLOGY_READ.load(Ordering::Relaxed) {
        if !topology::init(opts.topology_root) {
            return false;
        }
        TOPOLOGY_READ.store(true, Ordering::Relaxed);
    }
    let topo = topology::get();
    let numa = match opts.numa {
        NumaMode::Off => false,
        NumaMode::On => true,
        NumaMode::Auto => topo.memory_node_count() > 1,
    };
    NUMA.store(numa, Ordering::Relaxed);
    PAGE_QUERIES.store(numa && opts.topology_root.is_none(), Ordering::Relaxed);
    let n_domains = topo.node_ids().max(1);
    let n_cpu_arenas = topo.cpu_ids().max(1);
    let n_arenas = n_cpu_arenas + n_domains;
    let dom_bytes = round_page(n_domains * size_of::<Domain>());
    let arena_bytes = round_page(n_arenas * size_of::<Arena>());
    let nh_bytes = round_page(n_domains * size_of::<Lock<NodeHeap>>());
    // SAFETY: page-multiple sizes; fresh zeroed memory, set up below before publication.
    let (domains, arenas, node_heaps) = unsafe {
        (
            os::map_aligned(dom_bytes, OS_PAGE) as *mut Domain,
            os::map_aligned(arena_bytes, OS_PAGE) as *mut Arena,
            os::map_aligned(nh_bytes, OS_PAGE) as *mut Lock<NodeHeap>,
        )
    };
    let key = (!domains.is_null() && !arenas.is_null() && !node_heaps.is_null())
        .then(|| Sys::thread_key_create(heap::thread_done))
        .flatten();
    let Some(key) = key else {
        // SAFETY: our own fresh mappings (or null), not published.
        unsafe {
            for (p, n) in [(domains.cast::<u8>(), dom_bytes), (arenas.cast(), arena_bytes), (node_heaps.cast(), nh_bytes)] {
                if !p.is_null() {
                    os::unmap(p, n);
                }
            }
        }
        return false;
    };
    // SAFETY: within the fresh tables, not yet visible to anyone.
    unsafe {
        for n in 0..n_domains {
            (*domains.add(n)).init(n);
            node_heaps.add(n).write(Lock::new(LockKind::Other, NodeHeap(ptr::null_mut())));
        }
        for i in 0..n_arenas {
            (*arenas.add(i)).init();
        }
    }
    let solo_node = (0..n_domains).find(|&n| topo.has_memory(n)).unwrap_or(0);
    let (policy, policy_min_size, policy_external) = resolve_policy(topo, opts);
    // Where each node's threads get memory under the policy.
    for n in 0..n_domains {
        let home = if !numa {
            solo_node
        } else if policy_min_size == 0 {
            match policy {
                Policy::Bind(m) => nearest_in(topo, topo.home_of_node(n), &m),
                Policy::Preferred(p) if topo.has_memory(p) => p,
                _ => topo.home_of_node(n),
            }
        } else {
            topo.home_of_node(n)
        };
        // SAFETY: within the table.
        unsafe { (*domains.add(n)).policy_home = home };
    }
    // SAFETY: single writer before publication.
    unsafe {
        *TABLES.0.get() = Tables {
            domains,
            n_domains,
            arenas,
            n_cpu_arenas,
            node_heaps,
            solo_node,
            key,
            policy,
            policy_min_size,
            policy_external,
            start_ms: Sys::now_ms(),
        };
    }
    crate::contention::set_domain_lock_probe(holds_a_domain_lock);
    Sys::atfork(fork_prepare, fork_parent, fork_child);
    true
}

/// The policy in force: `DOMALLOC_POLICY` if it names only nodes with memory (else a warning and
/// the default), otherwise the one the process was started with.
fn resolve_policy(topo: &topology::Topology, opts: &options::Options) -> (Policy, usize, bool) {
    let (policy, min) = (opts.policy, opts.policy_min_size);
    let bad = match &policy {
        Policy::Local => None,
        Policy::Preferred(n) => (!topo.has_memory(*n)).then_some(*n),
        Policy::Bind(m) | Policy::Interleave(m) => m.iter().find(|&n| !topo.has_memory(n)),
    };
    if let Some(n) = bad {
        os::eprint(format_args!(
            "domalloc: warning: DOMALLOC_POLICY={} names node {}, which does not exist or has no memory; using the default (local) placement\n",
            policy, n
        ));
        return (Policy::Local, 0, false);
    }
    if policy != Policy::Local {
        return (policy, min, false);
    }
    match Sys::process_policy() {
        Some(ProcessPolicy::Bind(m)) => (Policy::Bind(m), 0, true),
        Some(ProcessPolicy::Preferred(n)) => (Policy::Preferred(n), 0, true),
        Some(ProcessPolicy::Interleave(m)) => (Policy::Interleave(m), 0, true),
        None => (Policy::Local, 0, false),
    }
}

fn round_page(n: usize) -> usize {
    (n + OS_PAGE - 1) & !(OS_PAGE - 1)
}

/// The nearest node to `n` that is in `mask` and has memory (`n` itself if it qualifies).
fn nearest_in(topo: &topology::Topology, n: usize, mask: &crate::os::NodeMask) -> usize {
    if mask.contains(n) && topo.has_memory(n) {
        return n;
    }
    let mut best = (u32::MAX, n);
    for m in mask.iter() {
        if topo.has_memory(m) {
            let d = match topo.distance(n, m) {
                0 => 255,
                d => d,
            };
            if d < best.0 {
                best = (d, m);
            }
        }
    }
    best.1
}

/// The placement policy in force and its size threshold.
pub(crate) fn policy() -> (Policy, usize) {
    let t = tables();
    (t.policy, t.policy_min_size)
}

/// Whether the policy in force applies to blocks of `size` bytes. Small blocks are covered per
/// size class: a class is covered when its block size reaches the threshold (so the fast path,
/// which never looks at the policy, gets its spans from the policy's segments).
#[inline]
pub(crate) fn policy_covers(size: usize) -> bool {
    let t = tables();
    if matches!(t.policy, Policy::Local) {
        return false;
    }
    let min = t.policy_min_size;
    min == 0 || if size <= SMALL_MAX { class_size(class_of(size.max(1))) >= min } else { size >= min }
}

/// Whether the policy in force was inherited from the process (numactl) rather than set by
/// `DOMALLOC_POLICY`.
pub(crate) fn policy_is_external() -> bool {
    tables().policy_external
}

/// Whether NUMA logic is on (more than one node with memory, or forced).
#[inline]
pub(crate) fn numa_enabled() -> bool {
    NUMA.load(Ordering::Relaxed)
}

/// Whether the kernel may be asked where pages are (NUMA on, the real topology).
#[inline]
pub(crate) fn page_queries() -> bool {
    PAGE_QUERIES.load(Ordering::Relaxed)
}

/// Milliseconds since initialisation.
pub(crate) fn elapsed_ms() -> u64 {
    Sys::now_ms().saturating_sub(tables().start_ms)
}

/// The domain of node `n` (the solo domain when NUMA is off or `n` is out of range).
#[inline]
pub(crate) fn domain(n: usize) -> &'static Domain {
    let t = tables();
    let n = if n < t.n_domains { n } else { t.solo_node };
    // SAFETY: index in range; the table lives forever.
    unsafe { &*t.domains.add(n) }
}

/// Number of domain slots (highest possible node id + 1).
pub(crate) fn domain_slots() -> usize {
    tables().n_domains
}

/// The node whose memory serves CPU `cpu`.
#[inline]
pub(crate) fn node_of_cpu(cpu: usize) -> usize {
    if !numa_enabled() {
        return tables().solo_node;
    }
    let n = topology::get().cpu_node(cpu).unwrap_or(tables().solo_node);
    domain(n).policy_home
}

/// Index of CPU `cpu`'s arena.
#[inline]
pub(crate) fn arena_index(cpu: usize) -> usize {
    let n = tables().n_cpu_arenas;
    if n == 0 { 0 } else { cpu % n }
}

/// Index of node `node`'s own arena (for node-targeted heaps and memory-only nodes).
#[inline]
pub(crate) fn node_arena(node: usize) -> usize {
    let t = tables();
    let node = if numa_enabled() && node < t.n_domains { node } else { t.solo_node };
    t.n_cpu_arenas + node
}

/// The node whose pages arena `i` holds.
pub(crate) fn arena_node(i: usize) -> usize {
    let t = tables();
    if i >= t.n_cpu_arenas { i - t.n_cpu_arenas } else { node_of_cpu(i) }
}

/// Arena number `i` (from [`arena_index`] or [`node_arena`]).
#[inline]
pub(crate) fn arena(i: usize) -> &'static Arena {
    let t = tables();
    // SAFETY: clamped to the table, which lives forever.
    unsafe { &*t.arenas.add(i.min(t.n_cpu_arenas + t.n_domains - 1)) }
}

/// CPUs whose arenas serve node `node` (none when NUMA is off: every CPU serves the one node,
/// and heaps look in their own arena and the node's).
pub(crate) fn cpus_of_node(node: usize) -> &'static [u32] {
    if !numa_enabled() {
        return &[];
    }
    topology::get().cpus_of(node)
}

/// Whether the calling thread holds some domain's lock (contention counters).
fn holds_a_domain_lock() -> bool {
    (0..domain_slots()).any(|n| domain(n).lock.held_by_me())
}

// ---- maintenance: returning memory ----

/// Periodic work from heap slow paths: unless the purge thread does it, sweep node `node` at
/// most once per purge delay (without waiting for busy locks).
pub(crate) fn maintain(node: usize) {
    if PURGE_THREAD.load(Ordering::Relaxed) == PT_RUNNING {
        return;
    }
    let d = domain(node);
    let now = Sys::now_ms();
    let last = d.last_sweep_ms.load(Ordering::Relaxed);
    let delay = options::get().purge_delay_ms;
    if now >= last.saturating_add(delay.clamp(1, 1000))
        && d.last_sweep_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        sweep(node, now, false, false);
    }
}

/// Returns what waited long enough on node `node`: arena pages emptied by remote frees and
/// empty spans parked longer than the purge delay go to the domain; due dirty pages are purged;
/// old cached huge blocks released; idle home pools trimmed. With `force`, everything now.
/// Returns the earliest deadline still pending (ms) or `u64::MAX`.
fn sweep(node: usize, now: u64, force: bool, wait: bool) -> u64 {
    let delay = options::get().purge_delay_ms;
    if delay == u64::MAX && !force {
        return u64::MAX;
    }
    let mut next = u64::MAX;
    let mut reclaim = |i: usize| {
        let a = arena(i);
        if let Some(p) = a.reclaim(now, delay, force, wait) {
            // SAFETY: `reclaim` unlinked these unused, unowned span heads; we are their only holder.
            unsafe { free_span_list(p) };
        }
        if a.parked_pages() > 0 {
            next = next.min(now.saturating_add(delay));
        }
    };
    let t = tables();
    if numa_enabled() {
        for &cpu in topology::get().cpus_of(node) {
            reclaim(arena_index(cpu as usize));
        }
    } else {
        for i in 0..t.n_cpu_arenas {
            reclaim(i);
        }
    }
    reclaim(node_arena(node));
    let d = domain(node);
    next = next.min(d.purge_due(now, force, wait));
    let age = if force { 0 } else { crate::huge::cache_age_ms() };
    if age != u64::MAX {
        d.huge_cache.trim(age);
        if d.huge_cache.bytes() > 0 {
            next = next.min(now.saturating_add(age.max(1)));
        }
    }
    d.pool.trim(now, delay, force);
    if !d.pool.is_empty() {
        next = next.min(now.saturating_add(delay));
    }
    next
}

/// Returns a list of unused spans (linked through `next`) to their domains, taking each
/// domain's lock once per run of pages of that domain.
///
/// # Safety
/// Every page on the list is an unused, unowned span head of ours, on no other list.
pub(crate) unsafe fn free_span_list(mut p: *mut crate::page::Page) {
    while !p.is_null() {
        // SAFETY: as stated: live span heads of live segments.
        let node = unsafe { (*p).node() };
        // SAFETY: forwarded; the call consumes the run of pages of `node`.
        p = unsafe { domain(node).free_span_run(p) };
    }
}

/// Returns free memory to the OS now; with `force`, also memory whose purge delay has not
/// passed, and the huge caches and home pools.
pub(crate) fn collect(force: bool) {
    if STATE.load(Ordering::Acquire) != READY {
        return;
    }
    let h = crate::tls::heap();
    if !crate::tls::is_sentinel(h) {
        // SAFETY: our own heap.
        unsafe { (*h).flush_pending() };
    }
    let now = Sys::now_ms();
    for n in 0..domain_slots() {
        if domain(n).node == n {
            sweep(n, now, force, true);
        }
    }
}

/// After the OS refused memory: gives back everything free or cached (parked spans, dirty
/// pages, empty segments, huge caches, pools) so that a retry can succeed. Returns whether
/// anything was released.
#[cold]
pub(crate) fn release_free_memory() -> bool {
    if STATE.load(Ordering::Acquire) != READY {
        return false;
    }
    let before = released_bytes();
    collect(true);
    released_bytes() != before
}

/// Bytes purged and unmapped so far (to tell whether a release did anything).
fn released_bytes() -> (u64, u64) {
    let (mut purged, mut mapped) = (0u64, 0u64);
    for n in 0..domain_slots() {
        let c = &domain(n).counters;
        purged = purged.wrapping_add(c.purged_bytes.load(Ordering::Relaxed));
        mapped = mapped.wrapping_add(c.mapped_bytes.load(Ordering::Relaxed));
    }
    (purged, mapped)
}

// ---- the background purge thread ----

const PT_IDLE: u8 = 0;
const PT_RUNNING: u8 = 1;
const PT_FAILED: u8 = 2;
static PURGE_THREAD: AtomicU8 = AtomicU8::new(PT_IDLE);
/// The purge thread's futex word (bumped to wake it).
static PURGE_WAKE: AtomicU32 = AtomicU32::new(0);
/// The purge thread sleeps until woken (nothing was pending).
static PURGE_SLEEPING: AtomicBool = AtomicBool::new(false);
/// Bytes waiting to be purged from which `DOMALLOC_PURGE_THREAD=auto` starts the thread.
pub(crate) const PURGE_THREAD_THRESHOLD: u64 = 4 << 20;

/// Bytes of dirty free pages waiting in the domains (a sum of per-domain counters).
fn pending_bytes() -> u64 {
    (0..domain_slots()).map(|n| domain(n).dirty_bytes.load(Ordering::SeqCst)).sum()
}

/// Something now waits to be purged: wake the purge thread, or start it (lazily, the first time
/// enough waits; again in a fork child). Call only where a nested `malloc` is safe (no lock
/// held): starting a thread allocates.
pub(crate) fn purge_wanted() {
    match PURGE_THREAD.load(Ordering::Relaxed) {
        PT_RUNNING if PURGE_SLEEPING.load(Ordering::SeqCst) && PURGE_SLEEPING.swap(false, Ordering::SeqCst) => {
            PURGE_WAKE.fetch_add(1, Ordering::SeqCst);
            Sys::futex_wake(&PURGE_WAKE, 1);
        }
        PT_IDLE => {
            let mode = options::get().purge_thread;
            if mode == PurgeThread::Off || options::get().purge_delay_ms == u64::MAX {
                return;
            }
            if mode == PurgeThread::Auto && pending_bytes() < PURGE_THREAD_THRESHOLD {
                return;
            }
            if PURGE_THREAD.compare_exchange(PT_IDLE, PT_RUNNING, Ordering::AcqRel, Ordering::Relaxed).is_ok()
                && !Sys::spawn_thread(purge_main)
            {
                PURGE_THREAD.store(PT_FAILED, Ordering::Relaxed);
            }
        }
        _ => {}
    }
}

/// Whether the background purge thread runs.
pub(crate) fn purge_thread_running() -> bool {
    PURGE_THREAD.load(Ordering::Relaxed) == PT_RUNNING
}

/// The purge thread: sweeps every node when something is due, sleeps until the next deadline,
/// and sleeps until woken when nothing waits.
extern "C" fn purge_main(_: *mut core::ffi::c_void) -> *mut core::ffi::c_void {
    loop {
        let gen = PURGE_WAKE.load(Ordering::SeqCst);
        let now = Sys::now_ms();
        let mut next = u64::MAX;
        for n in 0..domain_slots() {
            if domain(n).node == n {
                next = next.min(sweep(n, now, false, true));
            }
        }
        if next == u64::MAX {
            PURGE_SLEEPING.store(true, Ordering::SeqCst);
            if pending_bytes() > 0 {
                PURGE_SLEEPING.store(false, Ordering::SeqCst);
                continue;
            }
            Sys::futex_wait(&PURGE_WAKE, gen, None);
            PURGE_SLEEPING.store(false, Ordering::SeqCst);
        } else {
            let wait = next.saturating_sub(Sys::now_ms()).clamp(5, options::get().purge_delay_ms.max(5));
            Sys::futex_wait(&PURGE_WAKE, gen, Some(wait));
        }
    }
}

// ---- heap pool ----

struct Pool {
    free: *mut Heap,
    live: *mut Heap,
    live_count: usize,
    chunk: *mut u8,
    chunk_left: usize,
    retired: [u64; 5],
}
// SAFETY: guarded by its lock.
unsafe impl Send for Pool {}

static POOL: Lock<Pool> = Lock::new(
    LockKind::Process,
    Pool { free: ptr::null_mut(), live: ptr::null_mut(), live_count: 0, chunk: ptr::null_mut(), chunk_left: 0, retired: [0; 5] },
);

const HEAP_CHUNK: usize = 256 << 10;

/// A heap for a new thread (zeroed or recycled), linked into the live list. Null if out of memory.
pub(crate) fn heap_acquire() -> *mut Heap {
    let mut p = POOL.lock();
    let h = if !p.free.is_null() {
        let h = p.free;
        // SAFETY: pool heaps are live memory.
        p.free = unsafe { (*h).reg_next.get() };
        h
    } else {
        let sz = (size_of::<Heap>() + 63) & !63;
        if p.chunk_left < sz {
            // SAFETY: valid size.
            let c = unsafe { os::map_aligned(HEAP_CHUNK, OS_PAGE) };
            if c.is_null() {
                return ptr::null_mut();
            }
            p.chunk = c;
            p.chunk_left = HEAP_CHUNK;
        }
        let h = p.chunk as *mut Heap;
        // SAFETY: within the chunk.
        p.chunk = unsafe { p.chunk.add(sz) };
        p.chunk_left -= sz;
        h
    };
    // SAFETY: h is ours; link into the live list.
    unsafe {
        (*h).reg_prev.set(ptr::null_mut());
        (*h).reg_next.set(p.live);
        if !p.live.is_null() {
            (*p.live).reg_prev.set(h);
        }
    }
    p.live = h;
    p.live_count += 1;
    h
}

/// Returns a torn-down heap to the pool, folding its counters into the retired totals.
pub(crate) fn heap_release(h: *mut Heap) {
    let mut p = POOL.lock();
    // SAFETY: h is a live heap, no longer used by any thread.
    unsafe {
        let c = &(*h).counters;
        for (r, v) in p.retired.iter_mut().zip(counters_of(c)) {
            *r += v;
        }
        for a in [&c.remote_frees, &c.remote_batches, &c.migrations, &c.pages_from_arena, &c.pages_fresh] {
            a.store(0, Ordering::Relaxed);
        }
        let (pr, nx) = ((*h).reg_prev.get(), (*h).reg_next.get());
        if pr.is_null() {
            p.live = nx;
        } else {
            (*pr).reg_next.set(nx);
        }
        if !nx.is_null() {
            (*nx).reg_prev.set(pr);
        }
        (*h).reg_next.set(p.free);
    }
    p.free = h;
    p.live_count -= 1;
}

fn counters_of(c: &HeapCounters) -> [u64; 5] {
    [
        c.remote_frees.load(Ordering::Relaxed),
        c.remote_batches.load(Ordering::Relaxed),
        c.migrations.load(Ordering::Relaxed),
        c.pages_from_arena.load(Ordering::Relaxed),
        c.pages_fresh.load(Ordering::Relaxed),
    ]
}

/// Sums heap counters over live and retired heaps: remote frees, remote batches, migrations,
/// pages from arenas, fresh pages; and the number of live heaps.
pub(crate) fn heap_totals() -> ([u64; 5], usize) {
    let p = POOL.lock();
    let mut t = p.retired;
    // Remote frees by threads without a heap (before their first allocation, or after exit):
    // one block per push.
    let heapless = heap::HEAPLESS_REMOTE_FREES.load(Ordering::Relaxed);
    t[0] += heapless;
    t[1] += heapless;
    let mut h = p.live;
    while !h.is_null() {
        // SAFETY: live heaps under the pool lock; counters are atomics.
        unsafe {
            let v = counters_of(&(*h).counters);
            for i in 0..5 {
                t[i] += v[i];
            }
            h = (*h).reg_next.get();
        }
    }
    (t, p.live_count)
}

/// Calls `f` with every live heap (thread, orphan and node heaps), under the pool lock: `f` may
/// only read their counters.
pub(crate) fn for_each_live_heap(mut f: impl FnMut(&Heap)) {
    let p = POOL.lock();
    let mut h = p.live;
    while !h.is_null() {
        // SAFETY: live heaps under the pool lock.
        unsafe {
            f(&*h);
            h = (*h).reg_next.get();
        }
    }
}

/// Registers the thread-exit destructor for the calling thread's new heap.
pub(crate) fn register_thread_heap(h: *mut Heap) {
    Sys::thread_key_set(tables().key, h.cast());
}

// ---- orphan heap: allocations of threads past their teardown ----

struct Orphan(*mut Heap);
// SAFETY: guarded by its lock.
unsafe impl Send for Orphan {}
static ORPHAN: Lock<Orphan> = Lock::new(LockKind::Process, Orphan(ptr::null_mut()));

/// Allocates class `c` from the shared orphan heap (threads in their final destructors).
#[cold]
pub(crate) fn orphan_alloc(c: usize) -> (*mut u8, bool) {
    if !ensure_init() {
        return (ptr::null_mut(), false);
    }
    let mut g = ORPHAN.lock();
    if g.0.is_null() {
        let h = heap_acquire();
        if h.is_null() {
            return (ptr::null_mut(), false);
        }
        // SAFETY: fresh heap, ours; it is never any thread's TLS heap.
        unsafe { (*h).setup(false) };
        g.0 = h;
    }
    // SAFETY: the orphan heap is used only under its lock.
    unsafe { (*g.0).alloc_refill(c) }
}

/// Node `node`'s node-targeted heap slot.
pub(crate) fn node_heap(node: usize) -> &'static Lock<NodeHeap> {
    let t = tables();
    // SAFETY: clamped index into the table, which lives forever.
    unsafe { &*t.node_heaps.add(node.min(t.n_domains - 1)) }
}

// ---- fork ----

/// Whether the prepare handler took the C library's stdio list lock.
static STDIO_TAKEN: AtomicBool = AtomicBool::new(false);

/// Calls `f` with every allocator lock, in the order the prepare handler takes them: the
/// process-wide ones and the node heaps first (they are held while refilling, which takes the
/// others), then the inner ones, which never nest.
fn each_lock(mut f: impl FnMut(&dyn ForkLock)) {
    f(&INIT_LOCK);
    f(&ORPHAN);
    let t = tables();
    for n in 0..t.n_domains {
        f(node_heap(n));
    }
    f(&POOL);
    for n in 0..t.n_domains {
        f(&domain(n).lock);
    }
    for i in 0..t.n_cpu_arenas + t.n_domains {
        f(arena(i));
    }
    for n in 0..t.n_domains {
        f(&domain(n).pool);
        f(&domain(n).huge_cache);
    }
}

/// What the fork handlers do with each lock.
trait ForkLock {
    fn acquire(&self);
    /// # Safety
    /// After `acquire` by this thread (or its image in the child).
    unsafe fn release(&self);
}

impl<T> ForkLock for Lock<T> {
    fn acquire(&self) {
        self.fork_acquire()
    }
    unsafe fn release(&self) {
        // SAFETY: forwarded.
        unsafe { self.fork_release() }
    }
}
impl ForkLock for Arena {
    fn acquire(&self) {
        self.fork_acquire()
    }
    unsafe fn release(&self) {
        // SAFETY: forwarded.
        unsafe { self.fork_release() }
    }
}
impl ForkLock for crate::home_pool::HomePool {
    fn acquire(&self) {
        self.fork_acquire()
    }
    unsafe fn release(&self) {
        // SAFETY: forwarded.
        unsafe { self.fork_release() }
    }
}
impl ForkLock for crate::huge::HugeCache {
    fn acquire(&self) {
        self.fork_acquire()
    }
    unsafe fn release(&self) {
        // SAFETY: forwarded.
        unsafe { self.fork_release() }
    }
}

unsafe extern "C" fn fork_prepare() {
    // glibc's order: its stdio list lock before any malloc lock (see the module documentation).
    // A single-threaded process (fork from a signal handler) needs neither: no other thread can
    // hold a lock, and glibc takes no stdio lock then either.
    let multi = !Sys::is_single_threaded();
    STDIO_TAKEN.store(multi && Sys::stdio_lock(), Ordering::Relaxed);
    each_lock(|l| l.acquire());
}

unsafe fn fork_release_all() {
    // SAFETY: every lock below was taken (or skipped) by `fork_prepare` in this thread.
    each_lock(|l| unsafe { l.release() });
}

unsafe extern "C" fn fork_parent() {
    // SAFETY: after fork_prepare.
    unsafe { fork_release_all() };
    if STDIO_TAKEN.swap(false, Ordering::Relaxed) {
        Sys::stdio_unlock();
    }
}

unsafe extern "C" fn fork_child() {
    // The child's only thread has a new kernel id; ids cached in locks held across the fork are
    // released by `fork_release_all` (and by the interrupted code for skipped ones).
    os::forget_thread_id();
    // SAFETY: after fork_prepare (in the parent image of this thread).
    unsafe { fork_release_all() };
    // glibc resets its stdio list lock in the child itself (multi-threaded case, the only one in
    // which we took it).
    STDIO_TAKEN.store(false, Ordering::Relaxed);
    // No purge thread in the child: started again when something waits.
    if PURGE_THREAD.load(Ordering::Relaxed) == PT_RUNNING {
        PURGE_THREAD.store(PT_IDLE, Ordering::Relaxed);
    }
    PURGE_SLEEPING.store(false, Ordering::Relaxed);
}
