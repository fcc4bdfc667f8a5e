//! The lock-free core of the remote-free protocol: a page's `xfree` word. `page.rs` and
//! `heap.rs` call these functions; the protocol is described in `page.rs`'s module
//! documentation.
//!
//! This file depends on nothing in the crate but [`crate::sys::sync`] (atomics), so that
//! `loom-model/` compiles it as it is (`#[path = "../../src/layout/remote.rs"]`) against loom's atomics:
//! loom checks *this* code, with its orderings, not a copy. Blocks appear only through the
//! [`Link`] trait (the allocator's encoded `Block::next`; the model's loom cells).
//!
//! `xfree` holds the head of a stack of blocks (8-aligned, so bit 0 is free) and, in bit 0, the
//! state [`FULL`]: the owner gave the page up. There is no state that another thread must end:
//! a push clears `FULL` in the same CAS that publishes its blocks, and the pusher that did so
//! queues the page (it alone saw the bit). A thread that vanishes (a fork child has only the
//! forking thread) can leave a page unqueued, never a free that spins.

use core::ptr;

use crate::sys::{cas_retry, AtomicUsize, Ordering};

/// `xfree` state: the page was given up (no owner, in no list); the next push must queue it.
pub(crate) const FULL: usize = 1;
/// The state bits of `xfree`.
pub(crate) const MASK: usize = 1;

/// A freed block, linked through a plain (non-atomic) field.
pub(crate) trait Link {
    /// What a chain of these blocks belongs to (the page descriptor that validates links).
    type Span;

    /// The block after `this`.
    ///
    /// # Safety
    /// `this` is a valid block of `span` whose link the caller may read (it owns the list, or
    /// the list was published to it with release/acquire).
    unsafe fn next(span: &Self::Span, this: *mut Self) -> *mut Self;

    /// Links `this` to `next`.
    ///
    /// # Safety
    /// `this` is a valid block whose link the caller may write (it owns the block).
    unsafe fn set_next(this: *mut Self, next: *mut Self);
}

/// Pushes the chain `head..=tail` (already linked through [`Link`]) onto `xfree` with one CAS,
/// clearing [`FULL`]. Returns whether the page was `FULL`: then the caller must queue it.
///
/// # Safety
/// The blocks belong to the page whose remote list is `xfree`; they are allocated (in no list),
/// and the chain is well formed and the caller's.
#[inline]
pub(crate) unsafe fn push<B: Link>(xfree: &AtomicUsize, head: *mut B, tail: *mut B) -> bool {
    let mut old = xfree.load(Ordering::Relaxed);
    loop {
        // SAFETY: we own the chain until the CAS publishes it.
        unsafe { B::set_next(tail, (old & !MASK) as *mut B) };
        // Release: publishes the chain. Acquire: a pusher that sees FULL queues the page and
        // reads what the owner wrote before giving it up.
        match xfree.compare_exchange_weak(old, head as usize, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return old & FULL != 0,
            Err(o) => {
                cas_retry();
                old = o;
            }
        }
    }
}

/// Takes every remotely freed block, keeping the state bits. Returns the chain's head (null if
/// there was none); the chain ends with a null link.
#[inline]
pub(crate) fn take<B>(xfree: &AtomicUsize) -> *mut B {
    let mut old = xfree.load(Ordering::Relaxed);
    loop {
        if old & !MASK == 0 {
            return ptr::null_mut();
        }
        match xfree.compare_exchange_weak(old, old & MASK, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return (old & !MASK) as *mut B,
            Err(o) => {
                cas_retry();
                old = o;
            }
        }
    }
}

/// The last block of the chain starting at `head` and the chain's length, or `None` if the
/// chain is longer than `max` blocks (it loops: a double free or corruption).
///
/// # Safety
/// `head` is non-null and starts a chain of `span` the caller owns (for a chain from [`take`]:
/// published with release by the pushers, taken with acquire).
#[inline]
pub(crate) unsafe fn chain_end<B: Link>(span: &B::Span, head: *mut B, max: u32) -> Option<(*mut B, u32)> {
    let mut n = 1u32;
    let mut tail = head;
    loop {
        // SAFETY: a chain of ours (the caller's contract).
        let next = unsafe { B::next(span, tail) };
        if next.is_null() {
            return Some((tail, n));
        }
        tail = next;
        n += 1;
        if n > max {
            return None;
        }
    }
}

/// The heap that gave the page up takes it back: moves the state from [`FULL`] (no block pushed
/// since) to empty. Fails if a remote free came first (it queues the page).
#[inline]
pub(crate) fn try_reclaim(xfree: &AtomicUsize) -> bool {
    xfree.compare_exchange(FULL, 0, Ordering::Acquire, Ordering::Relaxed).is_ok()
}

/// Owner: tries to give the page up, moving the state from empty to [`FULL`]. Fails (returns
/// false) if remote frees arrived meanwhile; the caller should collect them instead. The owner
/// clears its claim on the page (`owner`) before calling this, with release.
#[inline]
pub(crate) fn try_give_up(xfree: &AtomicUsize) -> bool {
    xfree.compare_exchange(0, FULL, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}
