//! Process-wide state: one-time initialisation, the domain and arena tables, the heap pool, the
//! orphan heap for threads past teardown, and the fork handlers.
//!
//! Initialisation runs on the first allocation of the process (whatever thread, even before any
//! constructor): options, topology, tables sized by the highest possible CPU and node ids (mapped
//! from the OS, zero = empty), the thread-exit key, the fork handlers. It never allocates.

use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::arena::Arena;
use crate::domain::Domain;
use crate::heap::{self, Heap, HeapCounters};

use crate::options::{self, NumaMode, Policy};
use crate::os::ProcessPolicy;
use crate::os::{self, Os, Sys, OS_PAGE};
use crate::spin::SpinLock;
use crate::topology;

const UNINIT: u8 = 0;
const READY: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static INIT_LOCK: SpinLock<()> = SpinLock::new(());
static NUMA: AtomicBool = AtomicBool::new(false);

struct Tables {
    domains: *mut Domain,
    n_domains: usize,
    arenas: *mut Arena,
    n_arenas: usize,
    /// The single domain's node when NUMA is off.
    solo_node: usize,
    key: libc::pthread_key_t,
    /// The placement policy in force: `DOMALLOC_POLICY`, else the one the process was started
    /// with (numactl), else local.
    policy: Policy,
    /// Blocks below this size are not subject to `policy` (0 = all).
    policy_min_size: usize,
    /// Whether `policy` came from outside (numactl) rather than `DOMALLOC_POLICY`.
    policy_external: bool,
}

struct TablesCell(core::cell::UnsafeCell<Tables>);
// SAFETY: written once under INIT_LOCK before STATE is published as READY; read-only after.
unsafe impl Sync for TablesCell {}

static TABLES: TablesCell = TablesCell(core::cell::UnsafeCell::new(Tables {
    domains: ptr::null_mut(),
    n_domains: 0,
    arenas: ptr::null_mut(),
    n_arenas: 0,
    solo_node: 0,
    key: 0,
    policy: Policy::Local,
    policy_min_size: 0,
    policy_external: false,
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
    let _g = INIT_LOCK.lock();
    if STATE.load(Ordering::Acquire) == READY {
        return true;
    }
    let ok = init_locked();
    // A failure (no memory for the tables) is not final: the next allocation tries again, so a
    // transient mapping failure at start-up does not disable the allocator for good.
    if ok {
        STATE.store(READY, Ordering::Release);
    }
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
    let n_domains = topo.node_ids().max(1);
    let n_arenas = topo.cpu_ids().max(1);
    let dom_bytes = round_page(n_domains * size_of::<Domain>());
    let arena_bytes = round_page(n_arenas * size_of::<Arena>());
    // SAFETY: page-multiple sizes; fresh zeroed memory is a valid empty Domain/Arena table.
    let (domains, arenas) = unsafe {
        (os::map_aligned(dom_bytes, OS_PAGE) as *mut Domain, os::map_aligned(arena_bytes, OS_PAGE) as *mut Arena)
    };
    let Some(key) = (!domains.is_null() && !arenas.is_null())
        .then(|| Sys::thread_key_create(heap::thread_done))
        .flatten()
    else {
        // SAFETY: our own fresh mappings (or null), not published.
        unsafe {
            if !domains.is_null() {
                Sys::unmap(domains.cast(), dom_bytes);
            }
            if !arenas.is_null() {
                Sys::unmap(arenas.cast(), arena_bytes);
            }
        }
        return false;
    };
    for n in 0..n_domains {
        // SAFETY: within the table.
        unsafe { (*domains.add(n)).init(n) };
    }
    let solo_node = (0..n_domains).find(|&n| topo.has_memory(n)).unwrap_or(0);
    let (mut policy, mut policy_min_size, mut policy_external) = (opts.policy, opts.policy_min_size, false);
    if policy == Policy::Local {
        if let Some(pp) = Sys::process_policy() {
            policy = match pp {
                ProcessPolicy::Bind(m) => Policy::Bind(m),
                ProcessPolicy::Preferred(n) => Policy::Preferred(n),
                ProcessPolicy::Interleave(m) => Policy::Interleave(m),
            };
            policy_min_size = 0;
            policy_external = true;
        }
    }
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
        *TABLES.0.get() =
            Tables { domains, n_domains, arenas, n_arenas, solo_node, key, policy, policy_min_size, policy_external };
    }
    Sys::atfork(fork_prepare, fork_parent, fork_child);
    true
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

/// As [`policy`], initialising first; `(Local, 0)` if initialisation fails.
pub(crate) fn policy_if_init() -> (Policy, usize) {
    if ensure_init() { policy() } else { (Policy::Local, 0) }
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
    let n = tables().n_arenas;
    if n == 0 { 0 } else { cpu % n }
}

/// Arena number `i` (from [`arena_index`]).
#[inline]
pub(crate) fn arena(i: usize) -> &'static Arena {
    let t = tables();
    // SAFETY: `i < n_arenas` by construction; the table lives forever.
    unsafe { &*t.arenas.add(i.min(t.n_arenas - 1)) }
}

/// CPUs whose arenas serve node `node`.
pub(crate) fn cpus_of_node(node: usize) -> &'static [u32] {
    if !numa_enabled() {
        return &[];
    }
    topology::get().cpus_of(node)
}

/// Periodic work from heap slow paths: purge what is due.
pub(crate) fn maintain(node: usize) {
    let d = domain(node);
    let now = Sys::now_ms();
    // Pages left in this node's arenas by exited threads and then emptied by remote frees go
    // back to their domains, at most once per purge delay (the walk is over every queued page).
    let last = d.last_reclaim_ms.load(Ordering::Relaxed);
    if now >= last.saturating_add(options::get().purge_delay_ms.max(1))
        && d.last_reclaim_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        let cpus = cpus_of_node(node);
        if cpus.is_empty() {
            for i in 0..tables().n_arenas {
                reclaim_arena(i, false);
            }
        } else {
            for &cpu in cpus {
                reclaim_arena(cpu as usize, false);
            }
        }
    }
    if let Some(mut g) = d.lock.try_lock() {
        d.maybe_purge(&mut g, now, false);
    }
    let age = crate::huge::cache_age_ms();
    if age != u64::MAX {
        d.huge_cache.trim(age);
    }
}

/// Returns arena `i`'s pages that remote frees emptied to their domains.
fn reclaim_arena(i: usize, wait: bool) {
    let Some(p) = arena(i).reclaim(wait) else { return };
    // SAFETY: `reclaim` unlinked these unused, unowned span heads; we are their only holder.
    unsafe { free_span_list(p) }
}

/// Returns a list of unused spans (linked through `next`) to their domains, taking each
/// domain's lock once per run of pages of that domain.
///
/// # Safety
/// Every page on the list is an unused, unowned span head of ours, on no other list.
pub(crate) unsafe fn free_span_list(mut p: *mut crate::segment::Page) {
    while !p.is_null() {
        // SAFETY: as stated: live span heads of live segments.
        let node = unsafe { (*(*p).segment()).node } as usize;
        // SAFETY: forwarded; the call consumes the run of pages of `node`.
        p = unsafe { domain(node).free_span_run(p) };
    }
}

/// Purges every domain now; with `force`, also memory whose delay has not passed, and the huge
/// caches.
pub(crate) fn collect(force: bool) {
    if STATE.load(Ordering::Acquire) != READY {
        return;
    }
    let h = crate::tls::heap();
    if !crate::tls::is_sentinel(h) {
        // SAFETY: our own heap.
        unsafe { (*h).flush_pending() };
    }
    for i in 0..tables().n_arenas {
        reclaim_arena(i, true);
    }
    for n in 0..domain_slots() {
        let d = domain(n);
        d.purge_all(force);
        let age = crate::huge::cache_age_ms();
        if force {
            d.huge_cache.trim(0);
        } else if age != u64::MAX {
            d.huge_cache.trim(age);
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

static POOL: SpinLock<Pool> = SpinLock::new(Pool {
    free: ptr::null_mut(),
    live: ptr::null_mut(),
    live_count: 0,
    chunk: ptr::null_mut(),
    chunk_left: 0,
    retired: [0; 5],
});

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

/// Registers the thread-exit destructor for the calling thread's new heap.
pub(crate) fn register_thread_heap(h: *mut Heap) {
    Sys::thread_key_set(tables().key, h.cast());
}

// ---- orphan heap: allocations of threads past their teardown ----

struct Orphan(*mut Heap);
// SAFETY: guarded by its lock.
unsafe impl Send for Orphan {}
static ORPHAN: SpinLock<Orphan> = SpinLock::new(Orphan(ptr::null_mut()));

/// Allocates class `c` from the shared orphan heap (threads in their final destructors).
#[cold]
pub(crate) fn orphan_alloc(c: usize) -> *mut u8 {
    if !ensure_init() {
        return ptr::null_mut();
    }
    let mut g = ORPHAN.lock();
    if g.0.is_null() {
        let h = heap_acquire();
        if h.is_null() {
            return h.cast();
        }
        // SAFETY: fresh heap, ours; it is never any thread's TLS heap.
        unsafe { (*h).setup(false) };
        g.0 = h;
    }
    // SAFETY: the orphan heap is used only under its lock.
    unsafe { (*g.0).alloc_refill(c) }
}

// ---- fork ----

unsafe extern "C" fn fork_prepare() {
    core::mem::forget(INIT_LOCK.lock());
    core::mem::forget(ORPHAN.lock());
    let t = tables();
    // Lock order: the orphan and node heaps are held while refilling (which takes the pool,
    // domain, arena and huge-cache locks), so they come first; the huge caches take nothing
    // while held, so they come last.
    for n in 0..t.n_domains {
        // SAFETY: table in range.
        core::mem::forget(unsafe { &*t.domains.add(n) }.node_heap.lock());
    }
    core::mem::forget(POOL.lock());
    for n in 0..t.n_domains {
        // SAFETY: table in range.
        let d = unsafe { &*t.domains.add(n) };
        core::mem::forget(d.lock.lock());
    }
    for i in 0..t.n_arenas {
        arena(i).lock_for_fork();
    }
    for n in 0..t.n_domains {
        // SAFETY: table in range.
        unsafe { &*t.domains.add(n) }.huge_cache.lock_for_fork();
    }
}

unsafe fn fork_unlock_all() {
    let t = tables();
    // SAFETY: every lock below was taken by `fork_prepare` in this thread (or its image in the
    // child), and the guards were forgotten.
    unsafe {
        for n in 0..t.n_domains {
            (*t.domains.add(n)).huge_cache.unlock_after_fork();
        }
        for i in 0..t.n_arenas {
            arena(i).unlock_after_fork();
        }
        for n in 0..t.n_domains {
            (*t.domains.add(n)).lock.force_unlock();
        }
        POOL.force_unlock();
        for n in 0..t.n_domains {
            (*t.domains.add(n)).node_heap.force_unlock();
        }
        ORPHAN.force_unlock();
        INIT_LOCK.force_unlock();
    }
}

unsafe extern "C" fn fork_parent() {
    // SAFETY: locks taken by fork_prepare.
    unsafe { fork_unlock_all() }
}

unsafe extern "C" fn fork_child() {
    // SAFETY: locks taken by fork_prepare (copied into the child, held by this thread).
    unsafe { fork_unlock_all() }
}

