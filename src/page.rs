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
//!
//! The lock-free parts (the `xfree` word and the owner's `unfull` stack) live in `remote.rs`,
//! which `loom-model/` compiles with loom's atomics; this file wraps them for the page
//! descriptor.

use core::ptr;

use crate::heap::Heap;
use crate::remote::{self, Link, UnfullLink};
use crate::segment::{Block, Page, XSTATE_FULL, XSTATE_MASK, XSTATE_NORMAL, XSTATE_NOTIFYING};

// `segment.rs` names the states for the page descriptor; `remote.rs` (compiled alone for loom)
// has its own names for the same values.
const _: () = assert!(
    XSTATE_NORMAL == remote::NORMAL
        && XSTATE_FULL == remote::FULL
        && XSTATE_NOTIFYING == remote::NOTIFYING
        && XSTATE_MASK == remote::MASK
);

/// Reads a free block's link. The plain load, except in quarantine build, where links are stored
/// encoded (`checked::encode`) and a decoded link outside the block's span is reported.
///
/// # Safety
/// `b` is a free block the caller may read (in a list it owns, or a chain it holds).
#[inline(always)]
pub(crate) unsafe fn next_of(b: *mut Block) -> *mut Block {
    // SAFETY: the caller's contract.
    let raw = unsafe { (*b).next };
    #[cfg(feature = "quarantine")]
    let raw = crate::quarantine::decode(b, raw);
    raw
}

/// Writes a free block's link (quarantine build: encoded). The plain store otherwise.
///
/// # Safety
/// `b` is a block the caller may write (freed, or in a list it owns); `next` is null or a
/// block of the same span.
#[inline(always)]
pub(crate) unsafe fn set_next(b: *mut Block, next: *mut Block) {
    #[cfg(feature = "quarantine")]
    let next = crate::quarantine::encode(b, next);
    // SAFETY: the caller's contract.
    unsafe { (*b).next = next }
}

impl Link for Block {
    #[inline(always)]
    unsafe fn next(this: *mut Block) -> *mut Block {
        // SAFETY: a valid block the caller may read (the trait's contract).
        unsafe { next_of(this) }
    }
    #[inline(always)]
    unsafe fn set_next(this: *mut Block, next: *mut Block) {
        // SAFETY: a valid block the caller may write (the trait's contract).
        unsafe { set_next(this, next) }
    }
}

impl UnfullLink for Page {
    #[inline(always)]
    unsafe fn next_unfull(this: *mut Page) -> *mut Page {
        // SAFETY: a valid page (the trait's contract); the link is a `Cell`.
        unsafe { (*this).next_unfull.get() }
    }
    #[inline(always)]
    unsafe fn set_next_unfull(this: *mut Page, next: *mut Page) {
        // SAFETY: a valid page whose link the caller may write (the trait's contract).
        unsafe { (*this).next_unfull.set(next) }
    }
}

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
            set_next(b, next);
            b = next;
        }
        set_next(b, page.free.get());
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
    let head = remote::take::<Block>(&page.xfree);
    if head.is_null() {
        return;
    }
    // SAFETY: the chain was published with Release by the pushers and taken with Acquire; we
    // own it now.
    let (tail, n) = unsafe { remote::chain_end(head) };
    // SAFETY: as above.
    unsafe { set_next(tail, page.free.get()) };
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
        while !next_of(t).is_null() {
            t = next_of(t);
        }
        set_next(t, b);
    }
}

/// Pushes the chain `head..=tail` (linked through `next`) onto `page`'s remote list, notifying
/// the owner if the page was in its full list.
///
/// # Safety
/// The blocks belong to `page`, are allocated (not in any list), and the chain is well formed.
pub(crate) unsafe fn push_remote(page: &Page, head: *mut Block, tail: *mut Block) {
    // Runs while the page is NOTIFYING, when the owner cannot abandon it.
    let notify = |heap: *mut Heap| {
        if !heap.is_null() {
            // SAFETY: heaps are never unmapped and the owner waits for us (see module doc).
            unsafe { (*heap).notify_unfull(page) };
        }
    };
    // SAFETY: the caller's contract is `remote::push`'s.
    unsafe { remote::push(&page.xfree, &page.heap, head, tail, notify) }
}

/// Owner: tries to move the page's remote state to `FULL`. Fails (returns false) if remote frees
/// arrived meanwhile; the caller should collect them instead.
pub(crate) fn try_mark_full(page: &Page) -> bool {
    remote::try_mark_full(&page.xfree)
}

/// Owner: leaves the `FULL` state (waiting out a notifier), keeping queued blocks.
pub(crate) fn clear_full(page: &Page) {
    remote::clear_full(&page.xfree)
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
    remote::release_owner(&page.heap);
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
