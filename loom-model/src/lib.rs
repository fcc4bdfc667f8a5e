//! A loom model of domalloc's page remote-free protocol (`src/page.rs` and the `unfull` stack of
//! `src/heap.rs`).
//!
//! This is a *copy* of the protocol's state machine written against loom's atomics and cells,
//! not the allocator's code: loom needs every atomic and every shared non-atomic field to be its
//! own type, and the core does not (yet) swap its atomics under a cfg. When `src/page.rs`
//! changes, this file must follow; the functions keep the names and the orderings of the
//! originals so the two can be compared side by side.
//!
//! What is modelled, per page:
//! * `xfree`: the lock-free stack of remotely freed blocks whose low two bits carry the state
//!   (`NORMAL`, `FULL`, `NOTIFYING`);
//! * `heap`: the owning heap (compared and loaded by freers);
//! * `next_unfull`: the link of the owner's notification stack, a plain (non-atomic) field that
//!   the notifier writes and the owner reads;
//! * each block's `next` link, a plain field written by the pusher and read by the owner.
//!
//! Per heap: `unfull`, the lock-free stack of pages that got a remote free while full.
//!
//! The orderings come in two sets ([`Orderings::AS_IN_SRC`] and [`Orderings::FIXED`]) so the
//! tests can show what loom finds with the orderings of `src/page.rs` and that the proposed
//! orderings remove it.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};

/// Remote frees just push.
pub const NORMAL: usize = 0;
/// The page is in its owner's full list: the first remote free notifies the owner.
pub const FULL: usize = 1;
/// A remote freer is notifying the owner right now.
pub const NOTIFYING: usize = 2;
/// The state bits of `xfree`.
pub const MASK: usize = 3;

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
    TRACE
        .with(|t| std::mem::take(&mut *t.borrow_mut()))
        .join("\n")
}

/// The first value a freer's CAS loop expects where `src` loads one first. loom (0.7) stops
/// exploring interleavings when a thread's accesses to an atomic begin with a plain load
/// (tokio-rs/loom#166, #392): with a relaxed first load, loom ran one or two executions of the
/// three-thread model. A guessed first value gives the same behaviours (a wrong guess just
/// fails the CAS, which returns the current value, as a stale load would).
const GUESS: usize = 0;

/// The page's id in the (one-page) model; 0 is null.
const PAGE_ID: usize = 1;
/// The owning heap's id; 0 is "no owner".
pub const HEAP_ID: usize = 1;

/// The memory orderings of the protocol's atomic operations that are candidates for change.
#[derive(Clone, Copy, Debug)]
pub struct Orderings {
    /// `push_remote`: success ordering of the CAS that publishes the chain (and may move
    /// `FULL` to `NOTIFYING`).
    pub push_cas_success: Ordering,
    /// `clear_full` and `push_remote`: the loads that wait out `NOTIFYING`, and the failure
    /// ordering of `clear_full`'s CAS (whose failure value `clear_full` acts on).
    pub wait_load: Ordering,
}

impl Orderings {
    /// Exactly the orderings of `src/page.rs` (commit 14d31f3).
    pub const AS_IN_SRC: Orderings = Orderings {
        push_cas_success: Ordering::Release,
        wait_load: Ordering::Relaxed,
    };
    /// The proposed fix: the notifier acquires the owner's `FULL` (so its write of
    /// `next_unfull` happens after the owner's earlier reads of it), and the owner acquires the
    /// notifier's return to `NORMAL` (so everything the notifier did happens before the owner
    /// abandons or re-marks the page).
    pub const FIXED: Orderings = Orderings {
        push_cas_success: Ordering::AcqRel,
        wait_load: Ordering::Acquire,
    };
}

/// A block: its first word links to the next (block index; 0 = null).
pub struct Block {
    next: UnsafeCell<usize>,
}

/// The shared state of one page and its owning heap.
pub struct Shared {
    /// `Page::xfree`: chain head (block index << 2) | state.
    pub xfree: AtomicUsize,
    /// `Page::heap`.
    pub heap: AtomicUsize,
    /// `Page::next_unfull`.
    next_unfull: UnsafeCell<usize>,
    /// `Heap::unfull`: 0 or `PAGE_ID`.
    pub unfull: AtomicUsize,
    /// Blocks 1..=n (index 0 unused).
    blocks: Vec<Block>,
    /// Model bookkeeping, not in the allocator: notifications in the current FULL period.
    notifications: AtomicUsize,
    ord: Orderings,
}

// SAFETY: shared between the model's threads on purpose: the fields are loom atomics and loom
// cells, and loom checks every access to the cells for data races (that is the test).
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    /// A page owned by the heap, with `n` blocks, all allocated.
    pub fn new(n: usize, ord: Orderings) -> Shared {
        Shared {
            xfree: AtomicUsize::new(NORMAL),
            heap: AtomicUsize::new(HEAP_ID),
            next_unfull: UnsafeCell::new(0),
            unfull: AtomicUsize::new(0),
            blocks: (0..=n)
                .map(|_| Block {
                    next: UnsafeCell::new(0),
                })
                .collect(),
            notifications: AtomicUsize::new(0),
            ord,
        }
    }

    /// Links block `a` to block `b` (a freer building a batch of blocks it owns).
    pub fn link(&self, a: usize, b: usize) {
        // SAFETY (model): the freer owns both blocks.
        self.blocks[a].next.with_mut(|n| unsafe { *n = b });
    }

    fn wait() {
        loom::thread::yield_now();
    }

    /// `page::push_remote`: a non-owner frees the chain `head..=tail` (already linked).
    pub fn push_remote(&self, head: usize, tail: usize) {
        // `src` starts with a relaxed load; a guess is equivalent (a wrong one fails the CAS,
        // which returns the current value) and keeps loom exploring (see `GUESS`).
        let mut old = GUESS;
        let was_full = loop {
            let state = old & MASK;
            if state == NOTIFYING {
                Self::wait();
                old = self.xfree.load(self.ord.wait_load);
                continue;
            }
            // SAFETY (model): the chain is ours until the CAS publishes it.
            self.blocks[tail]
                .next
                .with_mut(|n| unsafe { *n = old >> 2 });
            let new_state = if state == FULL { NOTIFYING } else { state };
            match self.xfree.compare_exchange_weak(
                old,
                (head << 2) | new_state,
                self.ord.push_cas_success,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    trace(format_args!("push_remote: pushed {head}..{tail} onto {old:#x}, state {state} -> {new_state}"));
                    break state == FULL;
                }
                Err(o) => old = o,
            }
        };
        if was_full {
            let heap = self.heap.load(Ordering::Acquire);
            assert_eq!(heap, HEAP_ID, "a notifier found the page without an owner");
            let n = self.notifications.fetch_add(1, Ordering::Relaxed);
            assert_eq!(
                n, 0,
                "the page was pushed onto the owner's unfull stack twice in one FULL period"
            );
            self.notify_unfull();
            trace("push_remote: notified the owner");
            let mut old = GUESS | NOTIFYING;
            loop {
                match self.xfree.compare_exchange_weak(
                    old,
                    (old & !MASK) | NORMAL,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        trace(format_args!("push_remote: back to NORMAL from {old:#x}"));
                        break;
                    }
                    Err(o) => old = o,
                }
            }
        }
    }

    /// `Heap::notify_unfull`.
    fn notify_unfull(&self) {
        let mut head = GUESS;
        loop {
            // SAFETY (model): the notifier has exclusive use of `next_unfull` while NOTIFYING.
            self.next_unfull.with_mut(|n| unsafe { *n = head });
            match self.unfull.compare_exchange_weak(
                head,
                PAGE_ID,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    trace(format_args!("notify_unfull: pushed the page onto {head}"));
                    return;
                }
                Err(h) => head = h,
            }
        }
    }

    /// `page::try_mark_full` (owner).
    pub fn try_mark_full(&self) -> bool {
        // Model bookkeeping: a new FULL period starts if the CAS succeeds.
        self.notifications.store(0, Ordering::Relaxed);
        let r = self
            .xfree
            .compare_exchange(NORMAL, FULL, Ordering::AcqRel, Ordering::Relaxed);
        trace(format_args!("try_mark_full: {r:?}"));
        r.is_ok()
    }

    /// `page::clear_full` (owner).
    pub fn clear_full(&self) {
        let mut old = self.xfree.load(self.ord.wait_load);
        loop {
            match old & MASK {
                NOTIFYING => {
                    Self::wait();
                    old = self.xfree.load(self.ord.wait_load);
                }
                FULL => match self.xfree.compare_exchange_weak(
                    old,
                    old & !MASK,
                    Ordering::AcqRel,
                    self.ord.wait_load,
                ) {
                    Ok(_) => {
                        trace(format_args!("clear_full: FULL -> NORMAL ({old:#x})"));
                        return;
                    }
                    Err(o) => old = o,
                },
                _ => {
                    trace(format_args!("clear_full: saw {old:#x}"));
                    return;
                }
            }
        }
    }

    /// `page::collect_remote` (owner): takes every queued block, keeping the state bits.
    /// Returns the blocks taken.
    pub fn collect_remote(&self) -> Vec<usize> {
        let mut old = self.xfree.load(Ordering::Relaxed);
        loop {
            if old & !MASK == 0 {
                return Vec::new();
            }
            match self.xfree.compare_exchange_weak(
                old,
                old & MASK,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(o) => old = o,
            }
        }
        let mut got = Vec::new();
        let mut b = old >> 2;
        while b != 0 {
            assert!(
                got.len() < self.blocks.len(),
                "cycle in the remote-free chain"
            );
            got.push(b);
            // SAFETY (model): the chain was published with Release; we own it now.
            b = self.blocks[b].next.with(|n| unsafe { *n });
        }
        // The owner links the chain's tail to its own free list (a write, as in the original).
        trace(format_args!("collect_remote: took {got:?} from {old:#x}"));
        let tail = *got.last().unwrap();
        self.blocks[tail].next.with_mut(|n| unsafe { *n = 0 });
        got
    }
}

/// The owner's private state (fields only the owning thread touches in `src/`).
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
        if self.s.try_mark_full() {
            self.in_full = true;
            true
        } else {
            self.collect();
            false
        }
    }

    /// `page::collect`'s remote part.
    pub fn collect(&mut self) {
        let g = self.s.collect_remote();
        self.got.extend(g);
    }

    /// `Heap::drain_unfull`.
    pub fn drain_unfull(&mut self) {
        if self.s.unfull.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut p = self.s.unfull.swap(0, Ordering::Acquire);
        trace(format_args!("drain_unfull: took {p}"));
        let mut seen = 0;
        while p != 0 {
            assert_eq!(p, PAGE_ID);
            seen += 1;
            assert!(seen == 1, "the page sits twice in the unfull stack (cycle)");
            // SAFETY (model): pushed with Release, taken with Acquire.
            let next = self.s.next_unfull.with(|n| unsafe { *n });
            self.handled += 1;
            self.unfull_page();
            p = next;
        }
    }

    /// `Heap::unfull_page`.
    pub fn unfull_page(&mut self) {
        if !self.in_full {
            return;
        }
        self.s.clear_full();
        self.in_full = false;
    }

    /// `Heap::abandon_all` for this page, then `release_page` (`disown` + `is_unused`).
    pub fn abandon(&mut self) {
        if self.in_full {
            self.s.clear_full();
        }
        self.s.unfull.store(0, Ordering::Relaxed);
        trace("abandon: unfull discarded");
        self.in_full = false;
        self.s.heap.store(0, Ordering::Release);
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
