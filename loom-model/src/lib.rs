//! loom checks of domalloc's page remote-free protocol: the allocator's **own source**.
//!
//! `src/remote.rs` of the allocator (the page's `xfree` word: a lock-free stack of freed blocks
//! whose bit 0 is `FULL`, "the owner gave the page up") and its atomics shim `src/sync.rs` are
//! compiled into this crate as they are, through `#[path]`, with `cfg(loom)` (set by `build.rs`):
//! the shim then hands out loom's atomics. So loom explores the real functions with their real
//! orderings; nothing here restates them.
//!
//! What this file adds is the glue `src/page.rs` and `src/heap.rs` provide in the allocator,
//! written the same way (each function names the one it mirrors):
//! * [`Block`] implements `remote::Link` with a loom cell for its link, so loom checks every
//!   access to a block link for data races (a plain field in the allocator);
//! * [`Shared::push_remote`] is `page::push_remote` plus `heap::queue_unowned` (a pusher that
//!   sees `FULL` queues the page); [`Shared::give_up`] is `page::give_up`, [`Shared::reclaim`]
//!   `page::reclaim` (the heap that gave the page up takes it back), [`Shared::collect`] the
//!   remote part of `page::collect` / `page::is_unused` (owner, adopter, or arena reclaim).
//!
//! Model bookkeeping (who holds the page, which blocks were collected) uses `std` atomics: loom
//! does not see them, so they add no interleavings; loom runs an execution's threads one at a
//! time on one OS thread, so they read in schedule order. The one loom atomic the model adds is a
//! relaxed counter every step bumps first ([`Shared::tick`]): without it loom misses
//! interleavings of the real code's load-first CAS loops.

use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
use std::sync::Mutex;

use loom::cell::UnsafeCell;

#[allow(dead_code)]
#[path = "../../src/sys/sync.rs"]
mod sync;

#[allow(dead_code)]
#[path = "../../src/layout/remote.rs"]
mod remote;

/// What `remote.rs` imports from its platform layer's face (`crate::sys` in the allocator).
mod sys {
    pub(crate) use super::sync::{cas_retry, AtomicUsize, Ordering};
}

use remote::{Link, MASK};
use sync::{AtomicUsize, Ordering};

/// `xfree` state: the page was given up (`remote::FULL`, re-exported for the tests).
pub const FULL: usize = remote::FULL;

std::thread_local! {
    /// Events of the current execution, for failure messages.
    static TRACE: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records an event of the current execution.
pub fn trace(what: impl std::fmt::Display) {
    let who = format!("{:?}", loom::thread::current().id());
    TRACE.with(|t| t.borrow_mut().push(format!("{who}: {what}")));
}

/// Takes the events recorded so far (and starts a new trace).
pub fn take_trace() -> String {
    TRACE.with(|t| std::mem::take(&mut *t.borrow_mut())).join("\n")
}

/// A block: the allocator's `page::Block`, whose first word links to the next, with the link in
/// a loom cell.
pub struct Block {
    next: UnsafeCell<*mut Block>,
    /// The block's number (1..=n) in the model.
    id: usize,
}

impl Link for Block {
    type Span = ();
    unsafe fn next(_span: &(), this: *mut Block) -> *mut Block {
        // SAFETY: a live block of the model; loom checks the access for races.
        unsafe { (*this).next.with(|p| *p) }
    }
    unsafe fn set_next(this: *mut Block, next: *mut Block) {
        // SAFETY: as above.
        unsafe { (*this).next.with_mut(|p| *p = next) }
    }
}

/// Who holds the page (model bookkeeping): its owner heap, nobody (given up), or its arena.
pub const OWNED: usize = 0;
/// See [`OWNED`].
pub const GIVEN_UP: usize = 1;
/// See [`OWNED`].
pub const QUEUED: usize = 2;

/// One page (its `xfree` word) and its `n` blocks, all allocated at the start.
pub struct Shared {
    /// `Page::xfree`.
    pub xfree: AtomicUsize,
    blocks: Vec<Box<Block>>,
    /// Bookkeeping: [`OWNED`], [`GIVEN_UP`] or [`QUEUED`].
    holder: StdAtomicUsize,
    /// Bookkeeping: how many times the page was queued.
    pub queued: StdAtomicUsize,
    /// Bookkeeping: every block collected back, in order.
    pub got: Mutex<Vec<usize>>,
    /// Model-only: see [`Shared::tick`].
    clock: AtomicUsize,
}

// SAFETY: shared between the model's threads on purpose: the shared fields are loom atomics and
// loom cells, and loom checks every access to the cells for data races (that is the test).
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    /// An owned page with blocks `1..=n`, all allocated.
    pub fn new(n: usize) -> Shared {
        let blocks = (1..=n).map(|id| Box::new(Block { next: UnsafeCell::new(std::ptr::null_mut()), id })).collect();
        Shared {
            xfree: AtomicUsize::new(0),
            blocks,
            holder: StdAtomicUsize::new(OWNED),
            queued: StdAtomicUsize::new(0),
            got: Mutex::new(Vec::new()),
            clock: AtomicUsize::new(0),
        }
    }

    /// A scheduling point: a relaxed RMW of a model-only atomic, made by every thread before
    /// each protocol step. loom (0.7) misses interleavings when a thread's first accesses are
    /// plain loads (tokio-rs/loom#166, #392): the real code starts its CAS loops with a relaxed
    /// load. The ticks are dependent accesses, so loom's DPOR tries the steps in every order.
    /// Being relaxed, they create no happens-before edge and hide no ordering bug.
    pub fn tick(&self) {
        self.clock.fetch_add(1, Ordering::Relaxed);
    }

    fn block(&self, id: usize) -> *mut Block {
        &*self.blocks[id - 1] as *const Block as *mut Block
    }

    /// Who holds the page now (bookkeeping).
    pub fn holder(&self) -> usize {
        self.holder.load(StdOrdering::Relaxed)
    }

    /// Links block `a` to block `b` (a freer building a batch of blocks it owns, as
    /// `heap::remote_free` does).
    pub fn link(&self, a: usize, b: usize) {
        // SAFETY: the freer owns both blocks.
        unsafe { Block::set_next(self.block(a), self.block(b)) };
    }

    /// `page::push_remote` + `heap::queue_unowned`: a non-owner frees the chain `head..=tail`
    /// (already linked; the real code sets the tail's link) and queues the page if it took it
    /// out of the given-up state.
    pub fn push_remote(&self, head: usize, tail: usize) {
        trace(format_args!("push_remote({head}..={tail})"));
        self.tick();
        // SAFETY: the chain's blocks are allocated, ours and linked.
        let was_full = unsafe { remote::push(&self.xfree, self.block(head), self.block(tail)) };
        if was_full {
            let prev = self.holder.swap(QUEUED, StdOrdering::Relaxed);
            assert_eq!(prev, GIVEN_UP, "a pusher saw FULL but the page was not given up (holder {prev})");
            self.queued.fetch_add(1, StdOrdering::Relaxed);
            trace("push_remote: queued the page");
        }
    }

    /// `page::give_up` (owner, with nothing left to hand out). True: given up.
    pub fn give_up(&self) -> bool {
        self.tick();
        assert_eq!(self.holder(), OWNED, "only the owner gives the page up");
        // The holder changes first in the model: once the CAS succeeds a pusher may queue the
        // page at once (the real code clears `owner` before the CAS for the same reason).
        self.holder.store(GIVEN_UP, StdOrdering::Relaxed);
        let ok = remote::try_give_up(&self.xfree);
        if !ok {
            self.holder.store(OWNED, StdOrdering::Relaxed);
        }
        trace(format_args!("give_up: {ok}"));
        ok
    }

    /// `page::reclaim`: the heap that gave the page up frees into it and takes it back if no
    /// push queued it meanwhile. True: owned again.
    pub fn reclaim(&self) -> bool {
        self.tick();
        let ok = remote::try_reclaim(&self.xfree);
        if ok {
            let prev = self.holder.swap(OWNED, StdOrdering::Relaxed);
            assert_eq!(prev, GIVEN_UP, "reclaimed a page that was not given up (holder {prev})");
        }
        trace(format_args!("reclaim: {ok}"));
        ok
    }

    /// An adopter takes the page from its arena (`Arena::pop` + `Heap::adopt`). True: adopted.
    pub fn adopt(&self) -> bool {
        self.tick();
        let ok = self.holder.compare_exchange(QUEUED, OWNED, StdOrdering::Relaxed, StdOrdering::Relaxed).is_ok();
        trace(format_args!("adopt: {ok}"));
        ok
    }

    /// The remote part of `page::collect` (by whoever holds the page): takes every queued block,
    /// keeping the state bits.
    pub fn collect(&self) {
        self.tick();
        let head = remote::take::<Block>(&self.xfree);
        if head.is_null() {
            trace("collect: nothing");
            return;
        }
        // SAFETY: taken with Acquire, published with Release: the chain is ours.
        let (tail, n) =
            unsafe { remote::chain_end(&(), head, self.blocks.len() as u32) }.expect("cycle in the remote-free chain");
        let mut got = Vec::new();
        let mut b = head;
        while !b.is_null() {
            // SAFETY: as above.
            unsafe {
                got.push((*b).id);
                b = Block::next(&(), b);
            }
        }
        assert_eq!(got.len(), n as usize, "chain_end miscounted");
        // The collector links the chain's tail to its own free list (a write, as the real one).
        // SAFETY: as above.
        unsafe { Block::set_next(tail, std::ptr::null_mut()) };
        trace(format_args!("collect: took {got:?}"));
        self.got.lock().unwrap().extend(got);
    }

    /// The state bits of `xfree` and whether blocks wait in it (a relaxed load).
    pub fn xfree_state(&self) -> (usize, bool) {
        let x = self.xfree.load(Ordering::Relaxed);
        (x & MASK, x & !MASK != 0)
    }
}

/// Checks that `blocks` holds each of `ids` exactly once.
pub fn assert_each_once(blocks: &[usize], ids: &[usize]) {
    let mut a = blocks.to_vec();
    a.sort_unstable();
    let mut b = ids.to_vec();
    b.sort_unstable();
    assert_eq!(a, b, "blocks collected (lost or duplicated ones differ)");
}
