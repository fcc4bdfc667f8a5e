//! Returning memory: the maintenance sweep and the background purge thread.
//!
//! A sweep of a node gives back to its domain what waited long enough in its arenas (pages that
//! remote frees emptied after their owner left, empty spans parked longer than the purge delay),
//! purges the domain's dirty pages that are due, releases old cached huge blocks and trims the
//! home pools. Heap slow paths call [`maintain`], which sweeps at most once per purge delay per
//! node, unless the purge thread runs: it sweeps every node when something is due and sleeps on a
//! futex until the next deadline, or until [`purge_wanted`] wakes it.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};

use crate::arena::queues::{arena, arena_index, cpu_arena_count, node_arena};
use crate::config;
use crate::config::options::{self, PurgeThread};
use crate::config::topology;
use crate::layout::PAGE_SIZE;
use crate::node::{domain, domain_slots};
use crate::sys::os::{Os, Sys};

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
        trim_heaps(now, false);
    }
}

/// The thread-cache layer's trimming of heaps that exited threads left with their pages (set
/// once at start-up, see [`set_heap_trim`]): `f(now, force)` gives up the pages of those that
/// waited longer than the purge delay (all with `force`) and returns the next deadline.
static HEAP_TRIM: AtomicUsize = AtomicUsize::new(0);

/// Installs the heap trimming the sweeps call (the thread-cache layer owns the heap pool; this
/// layer only calls it on its schedule). Start-up only.
pub(crate) fn set_heap_trim(f: fn(u64, bool) -> u64) {
    HEAP_TRIM.store(f as usize, Ordering::Release);
}

/// Trims parked heaps (see [`HEAP_TRIM`]); returns the next deadline or `u64::MAX`.
fn trim_heaps(now: u64, force: bool) -> u64 {
    let f = HEAP_TRIM.load(Ordering::Acquire);
    if f == 0 {
        return u64::MAX;
    }
    // SAFETY: a non-zero value was stored by `set_heap_trim` from a `fn(u64, bool) -> u64`.
    let f: fn(u64, bool) -> u64 = unsafe { core::mem::transmute::<usize, fn(u64, bool) -> u64>(f) };
    f(now, force)
}

/// Returns what waited long enough on node `node`: arena pages emptied by remote frees and
/// empty spans parked longer than the purge delay go to the domain; due dirty pages are purged;
/// old cached huge blocks released; idle home pools trimmed. With `force`, everything now.
/// Returns the earliest deadline still pending (ms) or `u64::MAX`.
pub(crate) fn sweep(node: usize, now: u64, force: bool, wait: bool) -> u64 {
    let delay = options::get().purge_delay_ms;
    if delay == u64::MAX && !force {
        return u64::MAX;
    }
    let mut next = u64::MAX;
    let mut found = false;
    let mut queued = false;
    let mut reclaim = |i: usize| {
        let a = arena(i);
        if let Some(p) = a.reclaim(now, delay, force, wait) {
            found |= !p.is_null();
            // SAFETY: `reclaim` unlinked these unused, unowned span heads; we are their only holder.
            unsafe { free_span_list(p) };
        }
        if a.parked_pages() > 0 {
            next = next.min(now.saturating_add(delay));
        }
        queued |= a.len() > 0;
    };
    swept_arenas(node, &mut reclaim);
    if queued {
        // Pages of exited threads wait in the queues with blocks in use; other threads' frees
        // may empty them without telling anyone (a master thread freeing what its workers
        // allocated), so come back to look: after the purge delay while sweeps keep finding
        // such pages, then less and less often while they find none.
        next = next.min(now.saturating_add(queue_poll_ms(delay, found)));
    }
    let d = domain(node);
    next = next.min(d.purge_due(now, force, wait));
    let age = if force { 0 } else { crate::node::huge_cache_age_ms() };
    if age != u64::MAX {
        d.huge_cache.trim(age);
        let slack = crate::node::huge_trim_slack(d, age);
        if slack || d.huge_cache.bytes() > 0 {
            next = next.min(now.saturating_add(age.max(1)));
        }
    }
    d.pool.trim(now, delay, force);
    if !d.pool.is_empty() {
        next = next.min(now.saturating_add(delay));
    }
    next
}

/// Calls `f` with the index of every arena a sweep of node `node` visits: the arenas of its
/// CPUs (all CPU arenas when NUMA is off) and its node arena.
fn swept_arenas(node: usize, f: &mut impl FnMut(usize)) {
    if config::numa_enabled() {
        for &cpu in topology::get().cpus_of(node) {
            f(arena_index(cpu as usize));
        }
    } else {
        for i in 0..cpu_arena_count() {
            f(i);
        }
    }
    f(node_arena(node));
}

/// Returns a list of unused spans (linked through `next`) to their domains, taking each
/// domain's lock once per run of pages of that domain.
///
/// # Safety
/// Every page on the list is an unused, unowned span head of ours, on no other list.
pub(crate) unsafe fn free_span_list(mut p: *mut crate::layout::Page) {
    while !p.is_null() {
        // SAFETY: as stated: live span heads of live segments.
        let node = unsafe { (*p).node() };
        // SAFETY: forwarded; the call consumes the run of pages of `node`.
        p = unsafe { domain(node).free_span_run(p) };
    }
}

/// Sweeps every node (see [`sweep`]), waiting for busy locks; with `force`, everything free now.
pub(crate) fn sweep_all(force: bool) {
    let now = Sys::now_ms();
    // Parked heaps first: what they give up is then swept (and with `force`, purged) too.
    trim_heaps(now, force);
    for n in 0..domain_slots() {
        if domain(n).node == n {
            sweep(n, now, force, true);
        }
    }
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

/// The longest wait between two looks at the arenas' queues when the looks find nothing: 64
/// purge delays (6.4 s by default).
const QUEUE_POLL_MAX_SHIFT: u32 = 6;
/// How many times in a row sweeps found no emptied page in the queues (capped).
static QUEUE_POLL_SHIFT: AtomicU32 = AtomicU32::new(0);

/// When to look at the arenas' queues again (ms from now): after `delay` when this sweep found
/// emptied pages, backing off to 2^QUEUE_POLL_MAX_SHIFT delays while sweeps find none.
fn queue_poll_ms(delay: u64, found: bool) -> u64 {
    let shift = if found {
        QUEUE_POLL_SHIFT.store(0, Ordering::Relaxed);
        0
    } else {
        let s = QUEUE_POLL_SHIFT.load(Ordering::Relaxed);
        QUEUE_POLL_SHIFT.store((s + 1).min(QUEUE_POLL_MAX_SHIFT), Ordering::Relaxed);
        s
    };
    delay.max(1).saturating_mul(1 << shift)
}

/// Bytes of freed memory waiting to go back to the OS, of every kind: dirty free pages in the
/// domains, cached huge blocks, empty spans parked in the arenas, queued pages of exited threads
/// (whose blocks other threads may free; counted whole) and home pools (one page each: a hint).
fn pending_bytes() -> u64 {
    let mut sum = 0u64;
    for n in 0..domain_slots() {
        let d = domain(n);
        if d.node != n {
            continue;
        }
        sum = sum.saturating_add(d.dirty_bytes.load(Ordering::SeqCst));
        sum = sum.saturating_add(d.huge_cache.bytes_hint() as u64);
        sum = sum.saturating_add(d.counters.huge_slack.load(Ordering::Relaxed));
        if !d.pool.is_empty() {
            sum = sum.saturating_add(PAGE_SIZE as u64);
        }
        // (Only the arenas the sweeps visit: what they never see must not keep the purge
        // thread from sleeping.)
        swept_arenas(n, &mut |i| {
            let a = arena(i);
            sum = sum.saturating_add(((a.parked_pages() + a.len()) * PAGE_SIZE) as u64);
        });
    }
    sum
}

/// Bytes handed out (spans and huge blocks) on every node.
fn in_use_bytes() -> u64 {
    (0..domain_slots())
        .filter(|&n| domain(n).node == n)
        .map(|n| domain(n).counters.in_use_bytes())
        .fold(0, u64::saturating_add)
}

/// A thread exited: pages it left with blocks in use (in the arenas, or given up full) empty
/// later as other threads free their blocks, without any further call of this thread (workers
/// allocate, the master frees). `auto` starts the purge thread here when that much memory is in
/// use, so that its sweeps find them (woken by [`page_queued`]). No lock is held.
pub(crate) fn thread_exited() {
    if THREADS.fetch_sub(1, Ordering::AcqRel) <= 1 {
        // The last thread with a heap: the purge thread must not keep the process alive (a
        // process whose last thread leaves with `pthread_exit`, or a fork child whose only
        // thread returns, ends only when every thread has). Wake it: it sees no thread and ends.
        THREADS.store(0, Ordering::Release);
        if PURGE_THREAD.load(Ordering::Relaxed) == PT_RUNNING {
            PURGE_WAKE.fetch_add(1, Ordering::SeqCst);
            Sys::futex_wake(&PURGE_WAKE, 1);
        }
        return;
    }
    if PURGE_THREAD.load(Ordering::Relaxed) == PT_IDLE
        && options::get().purge_thread == PurgeThread::Auto
        && in_use_bytes() >= PURGE_THREAD_THRESHOLD
    {
        start_purge_thread();
    }
    purge_wanted();
}

/// Threads that have a heap (created on their first allocation, gone at their exit): the purge
/// thread ends when there is none left.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// A thread got its heap.
pub(crate) fn thread_started() {
    THREADS.fetch_add(1, Ordering::AcqRel);
}

/// An unowned page was queued in an arena (a given-up page got its first remote free): a
/// sleeping purge thread is woken to look at the queues again. Never starts a thread (callers
/// may hold locks) and never allocates.
pub(crate) fn page_queued() {
    if PURGE_THREAD.load(Ordering::Relaxed) == PT_RUNNING
        && PURGE_SLEEPING.load(Ordering::SeqCst)
        && PURGE_SLEEPING.swap(false, Ordering::SeqCst)
    {
        QUEUE_POLL_SHIFT.store(0, Ordering::Relaxed);
        PURGE_WAKE.fetch_add(1, Ordering::SeqCst);
        Sys::futex_wake(&PURGE_WAKE, 1);
    }
}

/// Starts the purge thread unless it runs (or failed to start). Allocates.
fn start_purge_thread() {
    if options::get().purge_delay_ms == u64::MAX || options::get().purge_thread == PurgeThread::Off {
        return;
    }
    // The thread runs our code until the process ends: the object holding it must stay loaded
    // (a plugin carrying its own copy of the allocator may be `dlclose`d).
    crate::sys::os::pin_once();
    if PURGE_THREAD.compare_exchange(PT_IDLE, PT_RUNNING, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        && !Sys::spawn_thread(purge_main)
    {
        PURGE_THREAD.store(PT_FAILED, Ordering::Relaxed);
    }
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
            start_purge_thread();
        }
        _ => {}
    }
}

/// The purge thread does not exist (in a fork child): started again when something waits.
/// `threads` is the number of the child's threads with a heap (its one thread, or none).
pub(crate) fn forget_purge_thread(threads: usize) {
    THREADS.store(threads, Ordering::Release);
    if PURGE_THREAD.load(Ordering::Relaxed) == PT_RUNNING {
        PURGE_THREAD.store(PT_IDLE, Ordering::Relaxed);
    }
    PURGE_SLEEPING.store(false, Ordering::Relaxed);
}

/// Whether the background purge thread runs.
pub(crate) fn purge_thread_running() -> bool {
    PURGE_THREAD.load(Ordering::Relaxed) == PT_RUNNING
}

/// The purge thread: sweeps every node when something is due, sleeps until the next deadline,
/// and sleeps until woken when nothing waits. A wait longer than the purge delay (nothing due
/// soon, or only the arenas' queues to look at again) can be cut short by [`purge_wanted`], so
/// memory freed meanwhile still goes back after about its delay.
extern "C" fn purge_main(_: *mut core::ffi::c_void) -> *mut core::ffi::c_void {
    loop {
        let gen = PURGE_WAKE.load(Ordering::SeqCst);
        if THREADS.load(Ordering::Acquire) == 0 {
            // Every thread of the program is gone (see `thread_exited`): end, so that the
            // process can. A thread that starts later starts a new purge thread when needed.
            PURGE_SLEEPING.store(false, Ordering::SeqCst);
            PURGE_THREAD.store(PT_IDLE, Ordering::Release);
            return core::ptr::null_mut();
        }
        let now = Sys::now_ms();
        let mut next = trim_heaps(now, false);
        for n in 0..domain_slots() {
            if domain(n).node == n {
                next = next.min(sweep(n, now, false, true));
            }
        }
        let delay = options::get().purge_delay_ms.max(5);
        let wait = if next == u64::MAX { None } else { Some(next.saturating_sub(Sys::now_ms()).max(5)) };
        if wait.map_or(true, |w| w > delay) {
            // A long sleep: say so, then look again whether something arrived meanwhile (its
            // `purge_wanted` may have run before the flag was set).
            let left = pending_bytes();
            PURGE_SLEEPING.store(true, Ordering::SeqCst);
            if (wait.is_none() && left > 0) || pending_bytes() > left {
                PURGE_SLEEPING.store(false, Ordering::SeqCst);
                continue;
            }
        }
        Sys::futex_wait(&PURGE_WAKE, gen, wait);
        PURGE_SLEEPING.store(false, Ordering::SeqCst);
    }
}
