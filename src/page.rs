//! Operations on a small span ("page") of blocks: carving, collecting frees, and the lock-free
//! remote-free protocol.
//!
//! A page with blocks in circulation belongs to exactly one heap (thread) or sits in one arena
//! list. The owner allocates from `free` and frees into `local_free` without atomics. Any other
//! thread pushes freed blocks onto `xfree`, a lock-free stack whose two low bits carry a state:
//!
//! * `NORMAL`: push and go.
//! * `FULL`: the page is in its owner's full list, where the owner will not look for free
//!   blocks. The first remote push switches the state to `NOTIFYING`, pushes the page onto the
//!   owner heap's `unfull` stack, and switches back to `NORMAL`. Pushers that meet `NOTIFYING`
//!   wait for those few instructions, and so does an owner that abandons the page, so a heap
//!   never receives a notification for a page it has given up.
//!
//! Remote frees arrive in batches (a chain of blocks for one page, one CAS): see `heap.rs`.

use core::hint::spin_loop;
use core::ptr;
use core::sync::atomic::Ordering;

use crate::heap::Heap;
use crate::os;
use crate::segment::{Block, Page, XSTATE_FULL, XSTATE_MASK, XSTATE_NORMAL, XSTATE_NOTIFYING};

/// Bytes carved per extension: one OS page's worth (at least one block), so memory is touched
/// gradually and by the allocating thread (first touch).
const EXTEND_BYTES: usize = 4096;

/// Carves up to `EXTEND_BYTES` more blocks of the untouched span tail into `free`.
/// Returns false if the span is fully carved.
///
/// # Safety
/// The caller owns `page`, which is a small span; `free` is empty.
pub(crate) unsafe fn extend(page: &Page) -> bool {
    let cap = page.capacity.get();
    let reserved = page.reserved.get();
    if cap >= reserved {
        return false;
    }
    let bs = page.block_size.get() as usize;
    let n = ((EXTEND_BYTES / bs).max(1) as u32).min(reserved - cap) as usize;
    let first = (page.start() as usize + cap as usize * bs) as *mut Block;
    // SAFETY: blocks cap..cap+n lie inside the span, which is mapped and owned by the caller.
    unsafe {
        let mut b = first;
        for _ in 1..n {
            let next = (b as usize + bs) as *mut Block;
            (*b).next = next;
            b = next;
        }
        (*b).next = page.free.get();
    }
    page.free.set(first);
    page.capacity.set(cap + n as u32);
    true
}

/// Moves the owner's own frees and all remote frees into `free`. Returns whether `free` now has
/// blocks.
///
/// # Safety
/// The caller owns `page`.
pub(crate) unsafe fn collect(page: &Page) -> bool {
    // Local frees first: no atomics.
    let local = page.local_free.get();
    if !local.is_null() {
        if page.free.get().is_null() {
            page.free.set(local);
        } else {
            // SAFETY: lists are well formed; append `local` at the tail of `free` is O(n), so
            // prepend instead by walking `local` (it is usually the shorter one).
            unsafe { append(local, page.free.get()) };
            page.free.set(local);
        }
        page.local_free.set(ptr::null_mut());
    }
    // SAFETY: the caller owns the page.
    unsafe { collect_remote(page) };
    !page.free.get().is_null()
}

/// Takes every remotely freed block (keeping the state bits) and adds them to `free`,
/// decrementing `used` by their number.
///
/// # Safety
/// The caller owns `page`.
pub(crate) unsafe fn collect_remote(page: &Page) {
    let mut old = page.xfree.load(Ordering::Relaxed);
    loop {
        if old & !XSTATE_MASK == 0 {
            return;
        }
        match page.xfree.compare_exchange_weak(old, old & XSTATE_MASK, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => break,
            Err(o) => old = o,
        }
    }
    let head = (old & !XSTATE_MASK) as *mut Block;
    let mut n = 1u32;
    let mut tail = head;
    // SAFETY: the chain was published with Release by the pushers; we own it now.
    unsafe {
        while !(*tail).next.is_null() {
            tail = (*tail).next;
            n += 1;
        }
        (*tail).next = page.free.get();
    }
    page.free.set(head);
    page.set_used(page.used().saturating_sub(n));
}

/// Links list `a` in front of `b` (walks `a`).
///
/// # Safety
/// Both lists are well formed and owned by the caller; `a` is non-null.
unsafe fn append(a: *mut Block, b: *mut Block) {
    let mut t = a;
    // SAFETY: well-formed list.
    unsafe {
        while !(*t).next.is_null() {
            t = (*t).next;
        }
        (*t).next = b;
    }
}

/// Pushes the chain `head..=tail` (linked through `next`) onto `page`'s remote list, notifying
/// the owner if the page was in its full list.
///
/// # Safety
/// The blocks belong to `page`, are allocated (not in any list), and the chain is well formed.
pub(crate) unsafe fn push_remote(page: &Page, head: *mut Block, tail: *mut Block) {
    let mut spins = 0u32;
    let mut old = page.xfree.load(Ordering::Relaxed);
    let was_full = loop {
        let state = old & XSTATE_MASK;
        if state == XSTATE_NOTIFYING {
            wait(&mut spins);
            // Acquire: pairs with the notifier's release of NOTIFYING, so its writes to the
            // unfull links happen before ours.
            old = page.xfree.load(Ordering::Acquire);
            continue;
        }
        // SAFETY: we own the chain until the CAS publishes it.
        unsafe { (*tail).next = (old & !XSTATE_MASK) as *mut Block };
        let new_state = if state == XSTATE_FULL { XSTATE_NOTIFYING } else { state };
        // AcqRel: releases our chain; acquires the owner's `try_mark_full` (and the last
        // notifier's writes) before we touch the unfull links.
        match page.xfree.compare_exchange_weak(
            old,
            head as usize | new_state,
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => break state == XSTATE_FULL,
            Err(o) => old = o,
        }
    };
    if was_full {
        // The owner cannot abandon the page while we are NOTIFYING, so `heap` is live.
        let heap = page.heap.load(Ordering::Acquire);
        if !heap.is_null() {
            // SAFETY: heaps are never unmapped and the owner waits for us (see module doc).
            unsafe { (*heap).notify_unfull(page) };
        }
        let mut old = page.xfree.load(Ordering::Relaxed);
        loop {
            match page.xfree.compare_exchange_weak(
                old,
                (old & !XSTATE_MASK) | XSTATE_NORMAL,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(o) => old = o,
            }
        }
    }
}

/// Owner: tries to move the page's remote state to `FULL`. Fails (returns false) if remote frees
/// arrived meanwhile; the caller should collect them instead.
pub(crate) fn try_mark_full(page: &Page) -> bool {
    page.xfree
        .compare_exchange(XSTATE_NORMAL, XSTATE_FULL, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Owner: leaves the `FULL` state (waiting out a notifier), keeping queued blocks.
pub(crate) fn clear_full(page: &Page) {
    let mut spins = 0;
    let mut old = page.xfree.load(Ordering::Relaxed);
    loop {
        match old & XSTATE_MASK {
            XSTATE_NOTIFYING => {
                wait(&mut spins);
                old = page.xfree.load(Ordering::Acquire);
            }
            XSTATE_FULL => {
                match page.xfree.compare_exchange_weak(
                    old,
                    old & !XSTATE_MASK,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return,
                    Err(o) => old = o,
                }
            }
            _ => return,
        }
    }
}

fn wait(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        spin_loop();
    } else {
        os::yield_now();
    }
}

/// Owner: gives up ownership so that the page can go to an arena: merges the local list and
/// clears `heap`. The page must not be `FULL` (call [`clear_full`] first).
///
/// # Safety
/// The caller owns `page`.
pub(crate) unsafe fn disown(page: &Page) {
    let local = page.local_free.get();
    if !local.is_null() {
        if !page.free.get().is_null() {
            // SAFETY: owned lists.
            unsafe { append(local, page.free.get()) };
        }
        page.free.set(local);
        page.local_free.set(ptr::null_mut());
    }
    page.flags.set(0);
    page.heap.store(ptr::null_mut::<Heap>(), Ordering::Release);
}

/// Whether the page (owned) has no block in use, counting uncollected remote frees.
///
/// # Safety
/// The caller owns `page`.
pub(crate) unsafe fn is_unused(page: &Page) -> bool {
    // SAFETY: forwarded.
    unsafe { collect_remote(page) };
    page.used() == 0
}
