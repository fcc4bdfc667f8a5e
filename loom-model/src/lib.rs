//! loom checks of domalloc's page remote-free protocol: the allocator's **own source**.
//!
//! `src/remote.rs` of the allocator (the `xfree` word with its `NORMAL`/`FULL`/`NOTIFYING`
//! states, and the owner heap's `unfull` notification stack) and its atomics shim `src/sync.rs`
//! are compiled into this crate as they are, through `#[path]`, with `cfg(loom)` (set by
//! `build.rs`): the shim then hands out loom's atomics and turns the spin waits into loom yields.
//! So loom explores the real functions with their real orderings; nothing here restates them.
//!
//! What this file adds is the glue that `src/page.rs` and `src/heap.rs` provide in the allocator,
//! written the same way (each function names the one it mirrors):
//! * [`Block`] and [`Page`] implement `remote::Link` / `remote::UnfullLink` with loom cells
//!   instead of plain fields, so loom checks every access to a block link and to `next_unfull`
//!   for data races (the links are plain fields in the allocator);
//! * [`Shared::push_remote`] is `page::push_remote` (its notification callback is
//!   `Heap::notify_unfull`), [`Owner`] the owner's side: `usable_or_retire`'s retire step,
//!   `collect_remote`, `drain_unfull`, `unfull_page`, and `abandon_all` + `disown` +
//!   `is_unused` for one page.
//!
//! Model bookkeeping (which blocks were collected, whether the page sits in the `unfull` stack)
//! uses `std` atomics: loom does not see them, so they add no interleavings; loom runs an
//! execution's threads one at a time on one OS thread, so they read in schedule order. The one
//! loom atomic the model adds is a relaxed counter every step bumps first ([`Shared::tick`]):
//! without it loom misses interleavings of the real code's load-first CAS loops.

use std::sync::atomic::{AtomicBool, Ordering as StdOrdering};

use loom::cell::UnsafeCell;

#[allow(dead_code)]
#[path = "../../src/sync.rs"]
mod sync;

#[allow(dead_code)]
#[path = "../../src/remote.rs"]
mod remote;

use remote::{Link, UnfullLink, MASK, NORMAL};
use sync::{AtomicPtr, AtomicUsize, Ordering};

/// `xfree` state: the page is in its owner's full list (`remote::FULL`, re-exported for the
/// tests).
pub const FULL: usize = remote::FULL;

std::thread_local! {
    /// Events of the current execution, for failure messages. loom runs an execution's
    /// threads as coroutines on the test's own OS thread, one execution at a time.
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

/// A block: the allocator's `segment::Block`, whose first word links to the next, with the link
/// in a loom cell.
pub struct Block {
    next: UnsafeCell<*mut Block>,
    /// The block's number (1..=n) in the model.
    id: usize,
}

impl Link for Block {
    unsafe fn next(this: *mut Block) -> *mut Block {
        // SAFETY: a live block of the model; loom checks the access for races.
        unsafe { (*this).next.with(|p| *p) }
    }
    unsafe fn set_next(this: *mut Block, next: *mut Block) {
        // SAFETY: as above.
        unsafe { (*this).next.with_mut(|p| *p = next) }
    }
}

/// The owning heap: its `unfull` stack (the allocator's `Heap::unfull`).
pub struct Heap {
    /// Pages of ours that received a remote free while full.
    pub unfull: AtomicPtr<Page>,
}

/// The page descriptor's fields that the protocol shares between threads.
pub struct Page {
    /// `Page::xfree`: remotely freed blocks, state in the low bits.
    pub xfree: AtomicUsize,
    /// `Page::heap`: the owner, or null.
    pub heap: AtomicPtr<Heap>,
    /// `Page::next_unfull` (a `Cell` in the allocator).
    next_unfull: UnsafeCell<*mut Page>,
}

impl UnfullLink for Page {
    unsafe fn next_unfull(this: *mut Page) -> *mut Page {
        // SAFETY: the model's live page; loom checks the access for races.
        unsafe { (*this).next_unfull.with(|p| *p) }
    }
    unsafe fn set_next_unfull(this: *mut Page, next: *mut Page) {
        // SAFETY: as above.
        unsafe { (*this).next_unfull.with_mut(|p| *p = next) }
    }
}

/// One page, its `n` blocks (all allocated at the start) and its owning heap.
pub struct Shared {
    /// The page (boxed: its address goes into the heap's `unfull` stack).
    pub page: Box<Page>,
    /// The owner (boxed: its address is in `page.heap`).
    pub heap: Box<Heap>,
    blocks: Vec<Box<Block>>,
    /// Bookkeeping: the page sits in the owner's `unfull` stack.
    on_stack: AtomicBool,
    /// Model-only: see [`Shared::tick`].
    clock: AtomicUsize,
}

// SAFETY: shared between the model's threads on purpose: the shared fields are loom atomics and
// loom cells, and loom checks every access to the cells for data races (that is the test).
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    /// A page owned by the heap, with blocks `1..=n`, all allocated.
    pub fn new(n: usize) -> Shared {
        let heap = Box::new(Heap {
            unfull: AtomicPtr::new(std::ptr::null_mut()),
        });
        let page = Box::new(Page {
            xfree: AtomicUsize::new(NORMAL),
            heap: AtomicPtr::new(&*heap as *const Heap as *mut Heap),
            next_unfull: UnsafeCell::new(std::ptr::null_mut()),
        });
        let blocks = (1..=n)
            .map(|id| {
                Box::new(Block {
                    next: UnsafeCell::new(std::ptr::null_mut()),
                    id,
                })
            })
            .collect();
        Shared {
            page,
            heap,
            blocks,
            on_stack: AtomicBool::new(false),
            clock: AtomicUsize::new(0),
        }
    }

    /// A scheduling point: a relaxed RMW of a model-only atomic, made by every thread before
    /// each protocol step. loom (0.7) misses interleavings when a thread's first accesses are
    /// plain loads (tokio-rs/loom#166, #392): the real code starts its CAS loops with a relaxed
    /// load, and without the ticks loom ran 48 executions per model, never let a freer run
    /// between two owner steps, and missed a deliberately weakened ordering. The ticks are
    /// dependent accesses, so loom's DPOR tries the steps in every order. Being relaxed, they
    /// create no happens-before edge and hide no ordering bug.
    pub fn tick(&self) {
        self.clock.fetch_add(1, Ordering::Relaxed);
    }

    fn block(&self, id: usize) -> *mut Block {
        &*self.blocks[id - 1] as *const Block as *mut Block
    }

    fn page_ptr(&self) -> *mut Page {
        &*self.page as *const Page as *mut Page
    }

    fn heap_ptr(&self) -> *mut Heap {
        &*self.heap as *const Heap as *mut Heap
    }

    /// Links block `a` to block `b` (a freer building a batch of blocks it owns, as
    /// `heap::remote_free` does).
    pub fn link(&self, a: usize, b: usize) {
        // SAFETY: the freer owns both blocks.
        unsafe { Block::set_next(self.block(a), self.block(b)) };
    }

    /// `page::push_remote`: a non-owner frees the chain `head..=tail` (already linked; the
    /// real code sets the tail's link). The notification is `Heap::notify_unfull`.
    pub fn push_remote(&self, head: usize, tail: usize) {
        trace(format_args!("push_remote({head}..={tail})"));
        self.tick();
        let page = self.page_ptr();
        let notify = |heap: *mut Heap| {
            // The allocator skips a null owner; it must never see one here (the owner waits out
            // NOTIFYING before it gives the page up).
            assert!(!heap.is_null(), "a notifier found the page without an owner");
            assert_eq!(heap, self.heap_ptr());
            assert!(
                !self.on_stack.swap(true, StdOrdering::Relaxed),
                "the page was pushed onto the owner's unfull stack while already on it"
            );
            // SAFETY: we moved the page to NOTIFYING: its link is ours (`Heap::notify_unfull`).
            unsafe { remote::unfull_push(&(*heap).unfull, page) };
            trace("notify_unfull: pushed the page");
        };
        // SAFETY: the chain's blocks are allocated, ours and linked.
        unsafe {
            remote::push(
                &self.page.xfree,
                &self.page.heap,
                self.block(head),
                self.block(tail),
                notify,
            )
        };
        trace(format_args!("push_remote({head}..={tail}) done"));
    }

    /// `page::collect_remote` (owner): takes every queued block, keeping the state bits.
    /// Returns the ids of the blocks taken.
    pub fn collect_remote(&self) -> Vec<usize> {
        let head = remote::take::<Block>(&self.page.xfree);
        if head.is_null() {
            trace("collect_remote: nothing");
            return Vec::new();
        }
        // SAFETY: taken with Acquire, published with Release: the chain is ours.
        let (tail, n) = unsafe { remote::chain_end(head) };
        let mut got = Vec::new();
        let mut b = head;
        while !b.is_null() {
            assert!(got.len() < self.blocks.len(), "cycle in the remote-free chain");
            // SAFETY: as above.
            unsafe {
                got.push((*b).id);
                b = Block::next(b);
            }
        }
        assert_eq!(got.len(), n as usize, "chain_end miscounted");
        // The owner links the chain's tail to its own free list (a write, as in the original).
        // SAFETY: as above.
        unsafe { Block::set_next(tail, std::ptr::null_mut()) };
        trace(format_args!("collect_remote: took {got:?}"));
        got
    }

    /// The owner's `unfull` stack is empty (and bookkeeping agrees).
    pub fn unfull_is_empty(&self) -> bool {
        self.heap.unfull.load(Ordering::Relaxed).is_null()
    }

    /// The page's current owner is null (`disown` happened).
    pub fn owner_is_null(&self) -> bool {
        self.page.heap.load(Ordering::Relaxed).is_null()
    }

    /// The state bits of `xfree` and whether blocks wait in it (a relaxed load).
    pub fn xfree_state(&self) -> (usize, bool) {
        let x = self.page.xfree.load(Ordering::Relaxed);
        (x & MASK, x & !MASK != 0)
    }
}

/// The owner's private state (fields only the owning thread touches in the allocator).
pub struct Owner<'a> {
    /// The shared page/heap.
    pub s: &'a Shared,
    /// `flags & IN_FULL`.
    pub in_full: bool,
    /// Blocks collected back, in order.
    pub got: Vec<usize>,
    /// Notifications the owner handled for this page.
    pub handled: usize,
}

impl<'a> Owner<'a> {
    /// The owner of `s`'s page.
    pub fn new(s: &'a Shared) -> Self {
        Owner {
            s,
            in_full: false,
            got: Vec::new(),
            handled: 0,
        }
    }

    /// `Heap::usable_or_retire`'s retire step: mark the page full (true) or, if frees raced in,
    /// collect them.
    pub fn retire(&mut self) -> bool {
        self.s.tick();
        let ok = remote::try_mark_full(&self.s.page.xfree);
        trace(format_args!("try_mark_full: {ok}"));
        if ok {
            self.in_full = true;
        } else {
            self.collect();
        }
        ok
    }

    /// `page::collect`'s remote part.
    pub fn collect(&mut self) {
        self.s.tick();
        let g = self.s.collect_remote();
        self.got.extend(g);
    }

    /// `Heap::drain_unfull`.
    pub fn drain_unfull(&mut self) {
        let s = self.s;
        s.tick();
        let page = s.page_ptr();
        let mut taken = Vec::new();
        // SAFETY: the stack is this heap's and holds only its live page.
        unsafe {
            remote::unfull_drain(&s.heap.unfull, |p| {
                assert_eq!(p, page, "an unknown page in the unfull stack");
                assert!(taken.len() < 1, "the page sits twice in the unfull stack (cycle)");
                assert!(s.on_stack.swap(false, StdOrdering::Relaxed));
                taken.push(p);
                trace("drain_unfull: took the page");
                // `unfull_page`, inline (the closure borrows the stack, not `self`).
                self.handled += 1;
                if self.in_full {
                    remote::clear_full(&s.page.xfree);
                    trace("unfull_page: clear_full done");
                    self.in_full = false;
                }
            })
        };
    }

    /// `Heap::unfull_page`.
    pub fn unfull_page(&mut self) {
        if !self.in_full {
            return;
        }
        remote::clear_full(&self.s.page.xfree);
        trace("unfull_page: clear_full done");
        self.in_full = false;
    }

    /// `Heap::abandon_all` for this page, then `release_page` (`disown` + `is_unused`).
    pub fn abandon(&mut self) {
        self.s.tick();
        // 1. No more notifications.
        if self.in_full {
            remote::clear_full(&self.s.page.xfree);
            trace("abandon: clear_full done");
        }
        // 2. Discard pending notifications (as `abandon_all`: a relaxed store of null).
        self.s.heap.unfull.store(std::ptr::null_mut(), Ordering::Relaxed);
        self.s.on_stack.store(false, StdOrdering::Relaxed);
        trace("abandon: unfull discarded");
        self.in_full = false;
        // 3. `disown`, then `is_unused` collects.
        remote::release_owner(&self.s.page.heap);
        self.collect();
    }
}

/// Checks that `blocks` holds each of `1..=n` exactly once.
pub fn assert_each_once(blocks: &[usize], n: usize) {
    let mut seen = vec![0u32; n + 1];
    for &b in blocks {
        assert!(b >= 1 && b <= n, "unknown block {b}");
        seen[b] += 1;
    }
    for (b, &k) in seen.iter().enumerate().skip(1) {
        assert_eq!(
            k, 1,
            "block {b} collected {k} times (lost or duplicated); all: {blocks:?}"
        );
    }
}
