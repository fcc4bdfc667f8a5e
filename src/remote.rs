//! The lock-free core of the remote-free protocol: the page's `xfree` word and the owner heap's
//! `unfull` notification stack. `page.rs` and `heap.rs` call these functions; the protocol is
//! described in `page.rs`'s module documentation.
//!
//! This file depends on nothing in the crate but [`crate::sync`] (atomics and the spin wait), so
//! that `loom-model/` compiles it as it is (`#[path = "../../src/remote.rs"]`) against loom's
//! atomics: loom checks *this* code, with its orderings, not a copy. Blocks and pages appear only
//! through the [`Link`] and [`UnfullLink`] traits (the allocator's `Block::next` and
//! `Page::next_unfull`; the model's loom cells), and the owning heap only as the pointer in
//! `Page::heap` and a notification callback.
//!
//! `xfree` holds the head of a stack of blocks (4-aligned, so the two low bits are free) and, in
//! those two bits, the state: [`NORMAL`], [`FULL`] or [`NOTIFYING`].

use core::ptr;

use crate::sync::{spin_wait, AtomicPtr, AtomicUsize, Ordering};

/// `xfree` state: remote frees just push.
pub(crate) const NORMAL: usize = 0;
/// `xfree` state: the page is in its owner's full list; the first remote free notifies the owner.
pub(crate) const FULL: usize = 1;
/// `xfree` state: a remote freer is notifying the owner right now; others wait.
pub(crate) const NOTIFYING: usize = 2;
/// The state bits of `xfree`.
pub(crate) const MASK: usize = 3;

/// A freed block, linked through a plain (non-atomic) field.
pub(crate) trait Link {
    /// The block after `this`.
    ///
    /// # Safety
    /// `this` is a valid block whose link the caller may read (it owns the list, or the list was
    /// published to it with release/acquire).
    unsafe fn next(this: *mut Self) -> *mut Self;

    /// Links `this` to `next`.
    ///
    /// # Safety
    /// `this` is a valid block whose link the caller may write (it owns the block).
    unsafe fn set_next(this: *mut Self, next: *mut Self);
}

/// A page as an element of its owner heap's `unfull` stack (a plain link field).
pub(crate) trait UnfullLink {
    /// The page after `this` in the stack.
    ///
    /// # Safety
    /// `this` is a valid page taken from the stack by the caller (its link was published with
    /// release and taken with acquire).
    unsafe fn next_unfull(this: *mut Self) -> *mut Self;

    /// Sets the link of `this`.
    ///
    /// # Safety
    /// `this` is a valid page and the caller has exclusive use of its link (a notifier while the
    /// page is `NOTIFYING`).
    unsafe fn set_next_unfull(this: *mut Self, next: *mut Self);
}

/// Pushes the chain `head..=tail` (already linked through [`Link`]) onto `xfree` with one CAS.
/// If the page was `FULL`, moves it to `NOTIFYING`, calls `notify` with the owner loaded from
/// `owner` (null if the page has none), and returns the state to `NORMAL`. Pushers that meet
/// `NOTIFYING` wait for that.
///
/// # Safety
/// The blocks belong to the page whose remote list is `xfree` and whose owner is `owner`; they
/// are allocated (in no list), and the chain is well formed and the caller's. `notify` may use
/// the owner it gets until it returns: the owner cannot give the page up (see [`clear_full`]).
#[inline]
pub(crate) unsafe fn push<B: Link, H>(
    xfree: &AtomicUsize,
    owner: &AtomicPtr<H>,
    head: *mut B,
    tail: *mut B,
    notify: impl FnOnce(*mut H),
) {
    let mut spins = 0u32;
    let mut old = xfree.load(Ordering::Relaxed);
    let was_full = loop {
        let state = old & MASK;
        if state == NOTIFYING {
            spin_wait(&mut spins);
            // Acquire: pairs with the notifier's release of NOTIFYING, so its writes to the
            // unfull links happen before ours.
            old = xfree.load(Ordering::Acquire);
            continue;
        }
        // SAFETY: we own the chain until the CAS publishes it.
        unsafe { B::set_next(tail, (old & !MASK) as *mut B) };
        let new_state = if state == FULL { NOTIFYING } else { state };
        // AcqRel: releases our chain; acquires the owner's `try_mark_full` (and the last
        // notifier's writes) before we touch the unfull links.
        match xfree.compare_exchange_weak(old, head as usize | new_state, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => break state == FULL,
            Err(o) => old = o,
        }
    };
    if was_full {
        // The owner cannot abandon the page while we are NOTIFYING, so a non-null owner is live.
        notify(owner.load(Ordering::Acquire));
        let mut old = xfree.load(Ordering::Relaxed);
        loop {
            match xfree.compare_exchange_weak(old, (old & !MASK) | NORMAL, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(o) => old = o,
            }
        }
    }
}

/// Owner: takes every remotely freed block, keeping the state bits. Returns the chain's head
/// (null if there was none); the chain ends with a null link.
#[inline]
pub(crate) fn take<B>(xfree: &AtomicUsize) -> *mut B {
    let mut old = xfree.load(Ordering::Relaxed);
    loop {
        if old & !MASK == 0 {
            return ptr::null_mut();
        }
        match xfree.compare_exchange_weak(old, old & MASK, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return (old & !MASK) as *mut B,
            Err(o) => old = o,
        }
    }
}

/// The last block of the chain starting at `head`, and the chain's length.
///
/// # Safety
/// `head` is non-null and starts a well-formed, null-terminated chain the caller owns (for a
/// chain from [`take`]: published with release by the pushers, taken with acquire).
#[inline]
pub(crate) unsafe fn chain_end<B: Link>(head: *mut B) -> (*mut B, u32) {
    let mut n = 1u32;
    let mut tail = head;
    // SAFETY: a well-formed chain of ours (the caller's contract).
    unsafe {
        while !B::next(tail).is_null() {
            tail = B::next(tail);
            n += 1;
        }
    }
    (tail, n)
}

/// Owner: tries to move the state from `NORMAL` to `FULL`. Fails (returns false) if remote frees
/// arrived meanwhile; the caller should collect them instead.
#[inline]
pub(crate) fn try_mark_full(xfree: &AtomicUsize) -> bool {
    xfree.compare_exchange(NORMAL, FULL, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// Owner: leaves the `FULL` state (waiting out a notifier), keeping queued blocks. Once it
/// returns, no notification for the page is in flight, and none comes until the next
/// [`try_mark_full`].
#[inline]
pub(crate) fn clear_full(xfree: &AtomicUsize) {
    let mut spins = 0;
    // Acquire, like every read here whose value ends the wait: seeing NORMAL written by a
    // notifier's release must order its `unfull` push before what the owner does next (an
    // abandoning owner discards the stack). loom's `abandon` model fails with Relaxed.
    let mut old = xfree.load(Ordering::Acquire);
    loop {
        match old & MASK {
            NOTIFYING => {
                spin_wait(&mut spins);
                old = xfree.load(Ordering::Acquire);
            }
            FULL => match xfree.compare_exchange_weak(old, old & !MASK, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(o) => old = o,
            },
            _ => return,
        }
    }
}

/// Owner: gives the page up (clears `owner`). The state must not be `FULL` (call
/// [`clear_full`] first), so no notifier can find the old owner afterwards.
#[inline]
pub(crate) fn release_owner<H>(owner: &AtomicPtr<H>) {
    owner.store(ptr::null_mut(), Ordering::Release);
}

/// Notifier: pushes `page` onto its owner's `unfull` stack.
///
/// # Safety
/// `page` is valid, and the caller has exclusive use of its `unfull` link (it moved the page's
/// state from `FULL` to `NOTIFYING`, see [`push`]).
#[inline]
pub(crate) unsafe fn unfull_push<P: UnfullLink>(stack: &AtomicPtr<P>, page: *mut P) {
    let mut head = stack.load(Ordering::Relaxed);
    loop {
        // SAFETY: the notifier has exclusive use of the link while NOTIFYING.
        unsafe { P::set_next_unfull(page, head) };
        match stack.compare_exchange_weak(head, page, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// Owner: takes every page of the `unfull` stack and calls `f` on each (newest first). Each
/// page's link is read before `f` sees the page, so `f` may mark the page full again.
///
/// # Safety
/// `stack` is the caller's heap's, and only pages still valid are on it (the owner drains the
/// stack before it gives any page away).
#[inline]
pub(crate) unsafe fn unfull_drain<P: UnfullLink>(stack: &AtomicPtr<P>, mut f: impl FnMut(*mut P)) {
    if stack.load(Ordering::Relaxed).is_null() {
        return;
    }
    let mut p = stack.swap(ptr::null_mut(), Ordering::Acquire);
    while !p.is_null() {
        // SAFETY: pushed with Release by its notifier, taken with Acquire; valid (contract).
        let next = unsafe { P::next_unfull(p) };
        f(p);
        p = next;
    }
}
