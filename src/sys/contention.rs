//! Contention counters (`--features contention-stats`): shared-lock acquisitions by kind,
//! contended acquisitions, futex sleeps, CAS retries on the lock-free lists, system calls, and
//! system calls made while the calling thread holds a domain lock. Off by default, and then every
//! function here is an empty `#[inline(always)]` body: no cost.
//!
//! The library built with the feature prints one line at exit (see `report_line`):
//! `domalloc: contention: ops=N locks_domain=N ...`; the comparison suite's contention report
//! parses it. `ops` counts malloc-family and free calls through the entry points. Lock
//! acquisitions are also split by what the thread was doing (`locks_steady`,
//! `locks_thread_start_exit`, `locks_node_moves`), with the number of node moves followed.
//! System calls are counted by kind (`mmap`, `munmap`, `madvise`, `move_pages`, `mbind`), and
//! what the NUMA paths did ([`Event`]: `home_pool_puts`, `home_pool_takes`, `fresh_purges`).

/// Which lock an acquisition counts under.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum LockKind {
    /// A node domain's span lock.
    Domain = 0,
    /// A process-wide lock (init, heap pool, orphan heap).
    Process = 1,
    /// A per-CPU arena's lock.
    Arena = 2,
    /// Anything else (huge caches, placed-block pools, node heaps).
    Other = 3,
}

/// What the calling thread is doing, for splitting lock counts: steady state, or one of the
/// moments whose locks are counted apart (the contention report's targets count steady state).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Ordinary allocation and free (the default: never set explicitly).
    #[allow(dead_code)]
    Steady = 0,
    /// Creating the thread's heap, or tearing it down at thread exit.
    Lifecycle = 1,
    /// Following the thread to another node.
    Move = 2,
}

/// System calls counted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Syscall {
    /// `mmap` (new mappings).
    Mmap = 0,
    /// `munmap`.
    Munmap = 1,
    /// `madvise` (purges).
    Madvise = 2,
    /// `move_pages` without target nodes: where pages are (a freed placed block's or span's home).
    MovePages = 3,
    /// `mbind` (a policy or a node applied to a range).
    Mbind = 4,
}

/// What the NUMA paths did, counted (the contention report's `home_pool_puts` ...).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Event {
    /// A placed block (16 KiB and more, first touch) freed whose pages are on another node than
    /// its span: sent to that node's home pool.
    HomePoolPut = 0,
    /// A refill served from its node's home pool.
    HomePoolTake = 1,
    /// A span reused for first touch that had been used since its last purge: purged first.
    FreshPurge = 2,
}

#[cfg(feature = "contention-stats")]
mod imp {
    use super::{LockKind, Syscall};
    use core::sync::atomic::{AtomicU64, Ordering};

    pub(super) static OPS: AtomicU64 = AtomicU64::new(0);
    pub(super) static LOCKS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    pub(super) static CONTENDED: AtomicU64 = AtomicU64::new(0);
    pub(super) static FUTEX_WAITS: AtomicU64 = AtomicU64::new(0);
    pub(super) static CAS_RETRIES: AtomicU64 = AtomicU64::new(0);
    pub(super) static SYSCALLS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
    pub(super) static EVENTS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
    pub(super) static UNDER_DOMAIN: AtomicU64 = AtomicU64::new(0);
    /// Lock acquisitions by [`super::Phase`] (all kinds together).
    pub(super) static LOCKS_BY_PHASE: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
    pub(super) static MOVES: AtomicU64 = AtomicU64::new(0);

    std::thread_local! {
        /// The calling thread's [`super::Phase`] (const-initialised, no destructor: reading it
        /// never allocates).
        pub(super) static PHASE: core::cell::Cell<u8> = const { core::cell::Cell::new(0) };
    }

    /// Whether the calling thread holds a domain lock (set by the domain layer).
    static HELD_HINT: [AtomicU64; 1] = [AtomicU64::new(0)];

    pub(super) fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn lock(k: LockKind) {
        add(&LOCKS[k as usize]);
        let ph = PHASE.try_with(|p| p.get()).unwrap_or(1) as usize;
        add(&LOCKS_BY_PHASE[ph.min(2)]);
    }
    pub(super) fn syscall(s: Syscall) {
        add(&SYSCALLS[s as usize]);
        if (super::domain_lock_held)() {
            add(&UNDER_DOMAIN);
        }
    }
    #[allow(dead_code)]
    pub(super) fn hint() -> &'static AtomicU64 {
        &HELD_HINT[0]
    }
}

/// Counts one malloc-family or free call.
#[inline(always)]
pub(crate) fn op() {
    #[cfg(feature = "contention-stats")]
    imp::add(&imp::OPS);
}

/// Counts one acquisition of a lock of `kind`.
#[inline(always)]
pub(crate) fn lock_taken(_kind: LockKind) {
    #[cfg(feature = "contention-stats")]
    imp::lock(_kind);
}

/// Counts an acquisition that found the lock held.
#[inline(always)]
pub(crate) fn lock_contended(_kind: LockKind) {
    #[cfg(feature = "contention-stats")]
    imp::add(&imp::CONTENDED);
}

/// Runs `f` with the calling thread's locks counted under `phase` (see [`Phase`]).
#[inline(always)]
pub(crate) fn in_phase<R>(_phase: Phase, f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "contention-stats")]
    {
        let old = imp::PHASE.try_with(|p| p.replace(_phase as u8)).unwrap_or(0);
        if _phase == Phase::Move {
            imp::add(&imp::MOVES);
        }
        let r = f();
        let _ = imp::PHASE.try_with(|p| p.set(old));
        return r;
    }
    #[allow(unreachable_code)]
    f()
}

/// Counts one NUMA-path event.
#[inline(always)]
pub(crate) fn event(_e: Event) {
    #[cfg(feature = "contention-stats")]
    imp::add(&imp::EVENTS[_e as usize]);
}

/// Counts a futex sleep.
#[inline(always)]
pub(crate) fn futex_wait() {
    #[cfg(feature = "contention-stats")]
    imp::add(&imp::FUTEX_WAITS);
}

/// Counts a failed compare-and-swap on a lock-free list.
#[inline(always)]
pub(crate) fn cas_retry() {
    #[cfg(feature = "contention-stats")]
    imp::add(&imp::CAS_RETRIES);
}

/// Counts a system call (and whether a domain lock is held by the caller while making it).
#[inline(always)]
pub(crate) fn syscall(_s: Syscall) {
    #[cfg(feature = "contention-stats")]
    imp::syscall(_s);
}

/// Set by the domain layer at start-up: whether the calling thread holds a domain lock (only
/// read with the feature on).
#[cfg(feature = "contention-stats")]
static mut DOMAIN_LOCK_HELD_FN: fn() -> bool = || false;

#[cfg(feature = "contention-stats")]
fn domain_lock_held() -> bool {
    // SAFETY: written once by `set_domain_lock_probe` during initialisation, before threads use it.
    unsafe { DOMAIN_LOCK_HELD_FN() }
}

/// Installs the probe for "the calling thread holds a domain lock" (the domain layer owns the
/// locks; this layer only counts).
#[allow(unused_variables)]
pub(crate) fn set_domain_lock_probe(f: fn() -> bool) {
    // SAFETY: called once during initialisation under the init lock, before any reader.
    #[cfg(feature = "contention-stats")]
    unsafe {
        DOMAIN_LOCK_HELD_FN = f
    };
}

/// The report line (without the newline), or `None` when the feature is off.
#[allow(unreachable_code)]
pub(crate) fn report_line(w: &mut dyn core::fmt::Write) -> bool {
    #[cfg(feature = "contention-stats")]
    {
        use core::sync::atomic::Ordering::Relaxed;
        let l = |i: usize| imp::LOCKS[i].load(Relaxed);
        let s = |i: usize| imp::SYSCALLS[i].load(Relaxed);
        let _ = write!(
            w,
            "domalloc: contention: ops={} locks_domain={} locks_process={} locks_arena={} locks_other={} contended={} futex_waits={} cas_retries={} mmap={} munmap={} madvise={} move_pages={} mbind={} syscalls_under_domain_lock={} locks_steady={} locks_thread_start_exit={} locks_node_moves={} node_moves={} home_pool_puts={} home_pool_takes={} fresh_purges={}",
            imp::OPS.load(Relaxed),
            l(0),
            l(1),
            l(2),
            l(3),
            imp::CONTENDED.load(Relaxed),
            imp::FUTEX_WAITS.load(Relaxed),
            imp::CAS_RETRIES.load(Relaxed),
            s(0),
            s(1),
            s(2),
            s(3),
            s(4),
            imp::UNDER_DOMAIN.load(Relaxed),
            imp::LOCKS_BY_PHASE[0].load(Relaxed),
            imp::LOCKS_BY_PHASE[1].load(Relaxed),
            imp::LOCKS_BY_PHASE[2].load(Relaxed),
            imp::MOVES.load(Relaxed),
            imp::EVENTS[0].load(Relaxed),
            imp::EVENTS[1].load(Relaxed),
            imp::EVENTS[2].load(Relaxed)
        );
        return true;
    }
    let _ = w;
    false
}
