//! malloc and free re-entered from a signal handler (sampling profilers allocate in their
//! SIGPROF handlers; POSIX does not allow it, programs do it anyway).
//!
//! What domalloc promises: while a thread runs one of the allocator's slow paths (refills,
//! frees of blocks it does not own, large and huge blocks, thread start-up), its heap pointer is
//! the busy heap (`tls::SlowPath`), and a handler's calls are served aside:
//! - allocations from the shared orphan heap under its lock, or null with `ENOMEM` when the
//!   interrupted path holds an allocator lock (waiting for it would wait for ourselves);
//! - frees onto a lock-free deferred list, freed for real at the next refill of any thread
//!   (checked there with one load), at thread exit and by `collect` (`malloc_trim`).
//!
//! A lock the thread itself holds is never waited for: `lock.rs` aborts with a message naming
//! the cause instead of hanging. What stays unguarded are the few instructions of the fast paths
//! themselves (the pop of a block, the push of a freed one): a handler that interrupts exactly
//! there can take the block the interrupted call is taking. Guarding them would cost every
//! malloc and free two more stores; the README says so.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Frees made while their thread's heap was busy, linked through their first word.
static DEFERRED: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
/// Re-entered allocations refused because the interrupted path held an allocator lock.
pub(crate) static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Whether a re-entered allocation must fail: the interrupted path holds an allocator lock,
/// which serving it might need.
pub(crate) fn refused() -> bool {
    crate::sys::os::SIGNAL_REENTRIES.fetch_add(1, Ordering::Relaxed);
    if crate::thread::init::holds_a_lock() {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    false
}

/// A block of class `c` for a re-entered allocation (null: refused or out of memory).
pub(crate) fn alloc_small(c: usize) -> (*mut u8, bool) {
    if refused() {
        return (ptr::null_mut(), false);
    }
    crate::thread::init::orphan_alloc(c)
}

/// A re-entered free of `p`: kept until the interrupted slow path ends.
///
/// # Safety
/// `p` is a block the program passes to free (its first word is written).
pub(crate) unsafe fn defer_free(p: *mut u8) {
    crate::sys::os::SIGNAL_REENTRIES.fetch_add(1, Ordering::Relaxed);
    let mut head = DEFERRED.load(Ordering::Relaxed);
    loop {
        // SAFETY: the caller's block; its first word is ours until it is freed for real.
        unsafe { ptr::write(p.cast::<*mut u8>(), head) };
        match DEFERRED.compare_exchange_weak(head, p, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => head = now,
        }
    }
}

/// Frees what re-entered frees deferred (called outside any slow path: the thread's heap is
/// consistent).
#[inline]
pub(crate) fn drain() {
    if DEFERRED.load(Ordering::Relaxed).is_null() {
        return;
    }
    drain_slow();
}

#[cold]
#[inline(never)]
fn drain_slow() {
    let mut p = DEFERRED.swap(ptr::null_mut(), Ordering::Acquire);
    while !p.is_null() {
        // SAFETY: pushed by `defer_free`: a block passed to free, its first word our link. The
        // link is read before the block is freed (a block deferred twice is then caught by the
        // second free's double-free check, never followed through a stale link).
        unsafe {
            let next = ptr::read(p.cast::<*mut u8>());
            #[cfg(not(feature = "quarantine"))]
            crate::thread::free::free(p);
            #[cfg(feature = "quarantine")]
            crate::thread::quarantine::free(p);
            p = next;
        }
    }
}
