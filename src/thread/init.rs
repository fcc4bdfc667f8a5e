//! Process and thread start-up and teardown: one-time initialisation, the heap pool, the orphan
//! and node heaps, the thread-exit key, and the fork handlers.
//!
//! Initialisation runs on the first allocation of the process (whatever thread, even before any
//! constructor): options, topology, the link key, the domain and arena tables sized by the
//! highest possible node and CPU ids (mapped from the OS, zero = empty), the start-up decisions
//! (`config`), the thread-exit key, the fork handlers. It never allocates. It is the one place
//! that reaches *down* into every layer to set it up; the lower layers reach it only through the
//! allocator's entry points (the first allocation's slow path calls [`ensure_init`]).
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

use crate::arena::{self, Arena};
use crate::config::options::{self, NumaMode, Policy};
use crate::config::topology;
use crate::config::{self, Config};
use crate::layout::List;
use crate::node::{self, domain, domain_slots, Domain};
use crate::sys::os::{self, Os, ProcessPolicy, Sys, ThreadKey, OS_PAGE};
use crate::sys::LockKind;
use crate::sys::SetOnce;
use crate::sys::{ForkLock, ForkStage, Lock};
use crate::thread::heap::{dead_heap, Heap, HeapCounters};
use crate::thread::tls;

const UNINIT: u8 = 0;
const READY: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static INIT_LOCK: Lock<()> = Lock::new(LockKind::Process, ());

/// The slot of a domain's node-targeted heap (created on first use).
pub(crate) struct NodeHeap(pub(crate) *mut Heap);
// SAFETY: guarded by its lock.
unsafe impl Send for NodeHeap {}

/// What threads need from start-up: the node heap slots and the thread-exit key.
struct Threads {
    node_heaps: *mut Lock<NodeHeap>,
    n_nodes: usize,
    key: ThreadKey,
}

static THREADS: SetOnce<Threads> = SetOnce::new(Threads { node_heaps: ptr::null_mut(), n_nodes: 0, key: ThreadKey(0) });

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
        config::print_banner();
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
        crate::layout::set_link_key(Sys::random_u64());
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
    let page_queries = numa && opts.topology_root.is_none();
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
        .then(|| Sys::thread_key_create(thread_done))
        .flatten();
    let Some(key) = key else {
        // SAFETY: our own fresh mappings (or null), not published.
        unsafe {
            for (p, n) in
                [(domains.cast::<u8>(), dom_bytes), (arenas.cast(), arena_bytes), (node_heaps.cast(), nh_bytes)]
            {
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
                Policy::Bind(m) | Policy::PreferredMany(m) => nearest_in(topo, topo.home_of_node(n), &m),
                Policy::Preferred(p) if topo.has_memory(p) => p,
                _ => topo.home_of_node(n),
            }
        } else {
            topo.home_of_node(n)
        };
        // SAFETY: within the table.
        unsafe { (*domains.add(n)).policy_home = home };
    }
    // SAFETY: start-up, under INIT_LOCK, before STATE is published as READY.
    unsafe {
        node::set_table(domains, n_domains, solo_node);
        arena::set_table(arenas, n_cpu_arenas, n_domains);
        THREADS.set(Threads { node_heaps, n_nodes: n_domains, key });
        config::set(Config { numa, page_queries, policy, policy_min_size, policy_external, start_ms: Sys::now_ms() });
    }
    crate::sys::set_domain_lock_probe(node::holds_a_domain_lock);
    crate::arena::set_heap_trim(trim_parked);
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
        Policy::Bind(m) | Policy::Interleave(m) | Policy::PreferredMany(m) => m.iter().find(|&n| !topo.has_memory(n)),
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
        Some(ProcessPolicy::PreferredMany(m)) => (Policy::PreferredMany(m), 0, true),
        Some(ProcessPolicy::Interleave(m)) => (Policy::Interleave(m), 0, true),
        None => (Policy::Local, 0, false),
    }
}

fn round_page(n: usize) -> usize {
    (n + OS_PAGE - 1) & !(OS_PAGE - 1)
}

/// The nearest node to `n` that is in `mask` and has memory (`n` itself if it qualifies).
fn nearest_in(topo: &topology::Topology, n: usize, mask: &crate::sys::os::NodeMask) -> usize {
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

/// Returns free memory to the OS now; with `force`, also memory whose purge delay has not
/// passed, and the huge caches and home pools.
pub(crate) fn collect(force: bool) {
    if STATE.load(Ordering::Acquire) != READY {
        return;
    }
    if crate::thread::tls::heap() != crate::thread::heap::busy_heap() {
        // Outside a slow path (not the retry after an out-of-memory): frees that signal
        // handlers deferred go now.
        crate::thread::reentry::drain();
    }
    let h = crate::thread::tls::own_heap();
    if !crate::thread::tls::is_sentinel(h) {
        // SAFETY: our own heap.
        unsafe { (*h).flush_pending() };
    }
    arena::sweep_all(force);
    if crate::thread::tls::heap() != crate::thread::heap::busy_heap() {
        // The sweep folded pages: the calling thread's gathered live bytes go to the gauge.
        crate::thread::prof::flush_own_live();
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

/// The one out-of-memory retry: `alloc()`, and when it gets null (the OS refused memory), gives
/// back everything free or cached ([`release_free_memory`]) and tries once more if that released
/// anything. Every kind of block (small spans, large spans, huge blocks) goes through it.
#[inline]
pub(crate) fn retrying_after_release<T>(mut alloc: impl FnMut() -> *mut T) -> *mut T {
    let p = alloc();
    if !p.is_null() {
        return p;
    }
    if release_free_memory() {
        alloc()
    } else {
        p
    }
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

// ---- heap pool ----

struct Pool {
    /// Heaps of exited threads, ready for reuse (singly linked through `reg_next`).
    free: *mut Heap,
    /// Heaps that exited threads left with their pages, newest first (singly linked through
    /// `reg_next`): the next thread that starts on a heap's node takes it whole, so thread
    /// churn (pools, OpenMP teams, short-lived workers) hands pages over with one pool lock
    /// instead of a lock per page in the arenas. The sweeps give up the pages of heaps parked
    /// longer than the purge delay ([`trim_parked`]).
    parked: *mut Heap,
    /// Heaps in use (thread, orphan and node heaps).
    live: List<Heap>,
    live_count: usize,
    chunk: *mut u8,
    chunk_left: usize,
    retired: [u64; 5],
}
// SAFETY: guarded by its lock.
unsafe impl Send for Pool {}

static POOL: Lock<Pool> = Lock::new(
    LockKind::Process,
    Pool {
        free: ptr::null_mut(),
        parked: ptr::null_mut(),
        live: List::new(),
        live_count: 0,
        chunk: ptr::null_mut(),
        chunk_left: 0,
        retired: [0; 5],
    },
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
    // SAFETY: h is ours, in no list; the pool lock is held.
    unsafe { p.live.push_front(h) };
    p.live_count += 1;
    h
}

/// A heap parked with its pages for node `node` (see `Pool::parked`), linked into the live
/// list; null if there is none.
fn heap_acquire_parked(node: usize) -> *mut Heap {
    let h = take_parked(node);
    if !h.is_null() {
        HEAPS_TAKEN_OVER.fetch_add(1, Ordering::Relaxed);
    }
    h
}

/// Heaps taken over whole by a new thread (statistics).
static HEAPS_TAKEN_OVER: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How many parked heaps new threads took over.
pub(crate) fn heaps_taken_over() -> u64 {
    HEAPS_TAKEN_OVER.load(Ordering::Relaxed)
}

/// Unlinks a heap parked for `node` and links it into the live list; null if there is none.
fn take_parked(node: usize) -> *mut Heap {
    let mut p = POOL.lock();
    let mut prev: *mut Heap = ptr::null_mut();
    let mut h = p.parked;
    // SAFETY: parked heaps are live memory, linked under the pool lock.
    unsafe {
        while !h.is_null() && (*h).node() != node {
            prev = h;
            h = (*h).reg_next.get();
        }
        if h.is_null() {
            return h;
        }
        let next = (*h).reg_next.get();
        if prev.is_null() {
            p.parked = next;
        } else {
            (*prev).reg_next.set(next);
        }
        p.live.push_front(h);
    }
    p.live_count += 1;
    h
}

/// Parks the heap of an exiting thread with its pages (see `Pool::parked`), folding its
/// counters into the retired totals.
fn heap_park(h: *mut Heap) {
    let mut p = POOL.lock();
    retire_counters(&mut p, h);
    // SAFETY: h is a live heap, no longer used by any thread; pool lists under the lock.
    unsafe {
        p.live.remove(h);
        (*h).parked_ms.set(Sys::now_ms());
        (*h).reg_next.set(p.parked);
    }
    p.parked = h;
    p.live_count -= 1;
}

/// Gives up the pages of heaps parked longer than the purge delay (all of them with `force`)
/// and moves those heaps to the free list. Returns the next deadline (ms) or `u64::MAX`.
/// Installed as the sweeps' heap trimming (`arena::set_heap_trim`).
fn trim_parked(now: u64, force: bool) -> u64 {
    let delay = crate::config::options::get().purge_delay_ms;
    if delay == u64::MAX && !force {
        return u64::MAX;
    }
    let mut due: *mut Heap = ptr::null_mut();
    let mut next = u64::MAX;
    {
        let mut p = POOL.lock();
        let mut prev: *mut Heap = ptr::null_mut();
        let mut h = p.parked;
        // SAFETY: parked heaps are live memory, linked under the pool lock.
        unsafe {
            while !h.is_null() {
                let after = (*h).reg_next.get();
                let at = (*h).parked_ms.get().saturating_add(delay);
                if force || at <= now {
                    if prev.is_null() {
                        p.parked = after;
                    } else {
                        (*prev).reg_next.set(after);
                    }
                    (*h).reg_next.set(due);
                    due = h;
                } else {
                    next = next.min(at);
                    prev = h;
                }
                h = after;
            }
        }
    }
    while !due.is_null() {
        // SAFETY: unlinked above: no thread uses these heaps and no list holds them.
        unsafe {
            let h = due;
            due = (*h).reg_next.get();
            (*h).abandon_all();
            (*h).fold_counts();
            let mut p = POOL.lock();
            (*h).reg_next.set(p.free);
            p.free = h;
        }
    }
    next
}

/// Moves a heap's counters into the pool's retired totals and clears them.
fn retire_counters(p: &mut Pool, h: *mut Heap) {
    // SAFETY: h is a live heap no thread uses; its counters are atomics.
    let c = unsafe { &(*h).counters };
    for (r, v) in p.retired.iter_mut().zip(counters_of(c)) {
        *r += v;
    }
    for a in [&c.remote_frees, &c.remote_batches, &c.migrations, &c.pages_from_arena, &c.pages_fresh] {
        a.store(0, Ordering::Relaxed);
    }
}

/// Returns a torn-down heap to the pool, folding its counters into the retired totals.
pub(crate) fn heap_release(h: *mut Heap) {
    let mut p = POOL.lock();
    retire_counters(&mut p, h);
    // SAFETY: h is a live heap, no longer used by any thread; pool lists under the lock.
    unsafe {
        p.live.remove(h);
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
    let heapless = crate::thread::free::HEAPLESS_REMOTE_FREES.load(Ordering::Relaxed);
    t[0] += heapless;
    t[1] += heapless;
    for h in p.live.iter() {
        // SAFETY: live heaps under the pool lock; counters are atomics.
        let v = counters_of(unsafe { &(*h).counters });
        for i in 0..5 {
            t[i] += v[i];
        }
    }
    (t, p.live_count)
}

/// Whether the calling thread holds the heap pool's lock (a signal handler that interrupted it).
pub(crate) fn pool_held_by_me() -> bool {
    POOL.held_by_me()
}

/// Calls `f` with every live heap (thread, orphan and node heaps), under the pool lock: `f` may
/// only read their counters.
pub(crate) fn for_each_live_heap(mut f: impl FnMut(&Heap)) {
    let p = POOL.lock();
    for h in p.live.iter() {
        // SAFETY: live heaps under the pool lock.
        f(unsafe { &*h });
    }
}

/// Registers the thread-exit destructor for the calling thread's new heap.
pub(crate) fn register_thread_heap(h: *mut Heap) {
    Sys::thread_key_set(THREADS.get().key, h.cast());
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
    let t = THREADS.get();
    // SAFETY: clamped index into the table, which lives forever.
    unsafe { &*t.node_heaps.add(node.min(t.n_nodes - 1)) }
}

// ---- fork ----

/// Whether the prepare handler took the C library's stdio list lock.
static STDIO_TAKEN: AtomicBool = AtomicBool::new(false);

/// Calls `f` with every allocator lock, in the order the prepare handler takes them: the
/// process-wide ones and the node heaps first (they are held while refilling, which takes the
/// others), then the inner ones, which never nest.
fn each_lock(mut f: impl FnMut(&dyn ForkLock)) {
    for stage in ForkStage::ALL {
        fork_locks(stage, &mut f);
        crate::arena::fork_locks(stage, &mut f);
        crate::node::fork_locks(stage, &mut f);
    }
}

/// The thread layer's locks of fork stage `stage` (see `sys::ForkStage`): start-up, the orphan
/// heap, the node heaps and the heap pool first; the profiler's tables and the quarantine's
/// thread-exit key as leaves.
fn fork_locks(stage: ForkStage, f: &mut dyn FnMut(&dyn ForkLock)) {
    match stage {
        ForkStage::Outer => {
            f(&INIT_LOCK);
            f(&ORPHAN);
            for n in 0..domain_slots() {
                f(node_heap(n));
            }
            f(&POOL);
        }
        ForkStage::Leaves => {
            f(crate::thread::prof::fork_lock());
            #[cfg(feature = "quarantine")]
            f(crate::thread::quarantine::fork_lock());
        }
        ForkStage::Spans | ForkStage::Queues => {}
    }
}

/// Whether the calling thread holds one of the allocator's locks (a signal handler's call
/// re-entering the allocator must not wait for one: `reentry.rs`). Walks every lock: for the
/// rare re-entered call only.
pub(crate) fn holds_a_lock() -> bool {
    if INIT_LOCK.held_by_me() || FORK_LOCK.held_by_me() {
        return true;
    }
    if STATE.load(Ordering::Acquire) != READY {
        return false;
    }
    let mut held = false;
    each_lock(|l| held |= l.held_by_me());
    held
}

/// Held by the thread that runs the fork handlers, from `fork_prepare` to `fork_parent` or
/// `fork_child`: a fork from a signal handler that interrupted those handlers themselves (a
/// single-threaded process does not block signals around `fork`) finds it held by its own
/// thread and leaves every lock to the outer handlers. (Forks of different threads do not
/// overlap: the C library serialises the handlers of a multi-threaded process.)
static FORK_LOCK: Lock<()> = Lock::new(LockKind::Process, ());
/// How many forks are nested inside the outer fork's handlers (changed only by the thread
/// holding `FORK_LOCK`, and in a child, by its only thread).
static FORK_NESTED: AtomicU32 = AtomicU32::new(0);

unsafe extern "C" fn fork_prepare() {
    if FORK_LOCK.held_by_me() {
        FORK_NESTED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    FORK_LOCK.fork_acquire();
    // glibc's order: its stdio list lock before any malloc lock (see the module documentation).
    // A single-threaded process (fork from a signal handler) needs neither: no other thread can
    // hold a lock, and glibc takes no stdio lock then either.
    let multi = !Sys::is_single_threaded();
    STDIO_TAKEN.store(multi && Sys::stdio_lock(), Ordering::Relaxed);
    each_lock(|l| l.acquire());
}

/// Releases what `fork_prepare` took, calling `mid` after the first lock (a no-op but in the
/// tests, which run a nested fork's handlers there).
///
/// # Safety
/// After `fork_prepare` in this thread (in the child: in the parent image of this thread).
unsafe fn fork_release_all(mut mid: impl FnMut()) {
    let mut first = true;
    each_lock(|l| {
        // SAFETY: every lock here was taken (or skipped) by `fork_prepare` in this thread.
        unsafe { l.release() };
        if core::mem::take(&mut first) {
            mid();
        }
    });
}

/// Whether these post-fork handlers belong to a fork nested in the outer fork's handlers (then
/// they do nothing: the outer ones release what they took).
fn leave_nested() -> bool {
    let n = FORK_NESTED.load(Ordering::Relaxed);
    if n > 0 {
        FORK_NESTED.store(n - 1, Ordering::Relaxed);
    }
    n > 0
}

unsafe extern "C" fn fork_parent() {
    // SAFETY: forwarded.
    unsafe { fork_parent_with(|| {}) }
}

/// `fork_parent`, with `mid` as in [`fork_release_all`].
///
/// # Safety
/// After `fork_prepare` in this thread.
unsafe fn fork_parent_with(mid: impl FnMut()) {
    if leave_nested() {
        return;
    }
    // SAFETY: after fork_prepare.
    unsafe { fork_release_all(mid) };
    if STDIO_TAKEN.swap(false, Ordering::Relaxed) {
        Sys::stdio_unlock();
    }
    // SAFETY: taken by `fork_prepare` in this thread.
    unsafe { FORK_LOCK.fork_release() };
}

unsafe extern "C" fn fork_child() {
    // The child's only thread has a new kernel id; ids cached in locks held across the fork are
    // released by `fork_release_all` (and by the interrupted code for skipped ones).
    os::forget_thread_id();
    // No purge thread in the child: started again when something waits. Its one thread is the
    // only one that may have a heap.
    arena::forget_purge_thread(usize::from(!tls::is_sentinel(tls::own_heap())));
    if leave_nested() {
        // The child of a fork from a signal handler inside the fork handlers: the locks stay as
        // the outer handlers left them (such a child may only make async-signal-safe calls).
        return;
    }
    // SAFETY: after fork_prepare (in the parent image of this thread).
    unsafe { fork_release_all(|| {}) };
    // glibc resets its stdio list lock in the child itself (multi-threaded case, the only one in
    // which we took it).
    STDIO_TAKEN.store(false, Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { FORK_LOCK.fork_release() };
}

/// Creates the calling thread's heap. Null if the allocator cannot initialise.
#[cold]
pub(crate) fn init_thread_heap() -> *mut Heap {
    if !crate::thread::init::ensure_init() {
        return ptr::null_mut();
    }
    let h = crate::sys::in_phase(crate::sys::Phase::Lifecycle, || {
        // A heap an exited thread of this node left with its pages, else a fresh one.
        let node = crate::node::node_of_cpu(Sys::current_cpu().unwrap_or(0));
        let mut h = heap_acquire_parked(node);
        if !h.is_null() {
            // SAFETY: a parked heap, ours now.
            unsafe { (*h).setup_parked(true) };
        } else {
            h = crate::thread::init::heap_acquire();
            if h.is_null() {
                return h;
            }
            // SAFETY: a fresh heap from the pool, ours.
            unsafe { (*h).setup(true) };
        }
        tls::install(h);
        crate::thread::init::register_thread_heap(h);
        crate::arena::thread_started();
        h
    });
    if h.is_null() {
        return h;
    }
    // The thread-exit destructor is registered for this thread now: the object holding it (a
    // plugin carrying its own copy of the allocator) must stay loaded until the thread exits,
    // whatever `dlclose` the program calls. Once per process; the loader's own allocations are
    // served by the heap just set.
    crate::sys::os::pin_once();
    h
}

/// The node a large or huge allocation of the calling thread should come from (creating the
/// thread's heap on its first allocation). `None` if the allocator cannot initialise.
pub(crate) fn alloc_node() -> Option<usize> {
    let h = tls::own_heap();
    if !tls::is_sentinel(h) {
        // SAFETY: our own heap. The thread may have moved since its last small refill: follow
        // it before choosing the node of a large or huge block.
        unsafe {
            (*h).update_cpu_now();
            return Some((*h).node());
        }
    }
    if h == dead_heap() {
        if !crate::thread::init::ensure_init() {
            return None;
        }
        return Some(crate::node::node_of_cpu(Sys::current_cpu().unwrap_or(0)));
    }
    let h = init_thread_heap();
    if h.is_null() {
        None
    } else {
        // SAFETY: our own new heap.
        Some(unsafe { (*h).node() })
    }
}

/// The node of the CPU the calling thread runs on, without touching its heap (a re-entered
/// call's). `None` if the allocator cannot initialise.
pub(crate) fn node_of_this_cpu() -> Option<usize> {
    if !crate::thread::init::ensure_init() {
        return None;
    }
    Some(crate::node::node_of_cpu(Sys::current_cpu().unwrap_or(0)))
}

/// The thread-exit destructor (registered with `pthread_key_create`).
///
/// # Safety
/// Called by libc with the value stored for the exiting thread.
pub(crate) unsafe extern "C" fn thread_done(arg: *mut core::ffi::c_void) {
    let h = arg as *mut Heap;
    if h.is_null() || tls::is_sentinel(h) {
        return;
    }
    // Quarantine build: the thread's quarantine is really freed while its heap still counts them.
    #[cfg(feature = "quarantine")]
    crate::thread::quarantine::flush();
    crate::thread::reentry::drain();
    crate::sys::in_phase(crate::sys::Phase::Lifecycle, || {
        // SAFETY: the exiting thread's own heap.
        unsafe {
            (*h).park();
            (*h).fold_counts();
        }
        tls::set_heap(dead_heap());
        // (From here on the thread's live-byte counts go to the shared gauge directly.)
        crate::thread::prof::flush_live(h);
        // SAFETY: as above.
        if unsafe { (*h).has_pages() } {
            // Its pages stay with it for the next thread of its node (or the sweep's trim).
            heap_park(h);
        } else {
            crate::thread::init::heap_release(h);
        }
    });
    // Its pages wait in the arenas now (or given up, full), with blocks other threads may free:
    // the purge thread, started here if enough is in use, looks at them. No lock is held.
    crate::arena::thread_exited();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether an allocator lock stays held. The unit tests share the process with other tests'
    /// threads, which take allocator locks for a moment: only a lock still held after 500 ms
    /// counts (one the handlers left held stays held).
    fn any_locked() -> bool {
        (0..500).all(|_| {
            let mut locked = false;
            each_lock(|l| locked |= l.locked());
            if locked {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            locked
        })
    }

    /// `fork_prepare` holds every lock of every layer (each layer names its own, stage by
    /// stage), the quarantine build's thread-exit key lock included, and `fork_parent` releases
    /// them all.
    #[test]
    fn fork_prepare_takes_every_lock_of_every_layer() {
        assert!(ensure_init());
        let mut seen: [*const u8; 4] = [ptr::null(); 4];
        let wanted: [*const u8; 4] = [
            &POOL as *const _ as *const u8,
            &domain(0).lock as *const _ as *const u8,
            crate::arena::arena(0).fork_lock() as *const _ as *const u8,
            domain(0).huge_cache.fork_lock() as *const _ as *const u8,
        ];
        #[cfg(feature = "quarantine")]
        let mut quarantine_seen = false;
        each_lock(|l| {
            let a = l as *const dyn ForkLock as *const u8;
            for (i, w) in wanted.iter().enumerate() {
                if a == *w {
                    seen[i] = a;
                }
            }
            #[cfg(feature = "quarantine")]
            if a == crate::thread::quarantine::fork_lock() as *const _ as *const u8 {
                quarantine_seen = true;
            }
        });
        assert_eq!(seen, wanted, "a layer's lock is missing from the fork handlers' set");
        #[cfg(feature = "quarantine")]
        assert!(quarantine_seen, "the quarantine's thread-exit key lock is not taken at fork");
        // SAFETY: the handlers' calling sequence of a fork in the parent.
        unsafe {
            fork_prepare();
            let mut all = true;
            each_lock(|l| all &= l.locked());
            fork_parent();
            assert!(all, "fork_prepare left a lock free");
        }
        assert!(!any_locked(), "a lock stayed held after fork_parent");
    }

    /// A fork from a signal handler that interrupted the fork handlers themselves (the signal
    /// arrived while `fork_prepare` or `fork_parent` ran, as in a single-threaded process whose
    /// signals are not blocked around `fork`): the nested handlers must leave the outer ones'
    /// locks alone, and every lock is free once the outer `fork_parent` returns.
    #[test]
    fn fork_handlers_nest() {
        assert!(ensure_init());
        // SAFETY: the handlers' calling sequence of a fork from a signal handler that arrived
        // inside `fork_prepare` (after it took the locks) and of one inside `fork_parent`.
        unsafe {
            fork_prepare();
            fork_prepare(); // nested
            fork_parent(); // nested
            fork_parent();
            assert!(!any_locked(), "a lock stayed held after a fork nested in fork_prepare");
            fork_prepare();
            fork_parent_with(|| {
                fork_prepare(); // nested, in the middle of releasing
                fork_parent();
            });
            assert!(!any_locked(), "a lock stayed held after a fork nested in fork_parent");
        }
    }
}
