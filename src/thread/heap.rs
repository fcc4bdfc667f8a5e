//! The thread cache ("heap"): one per thread, the only layer the fast path touches.
//!
//! A heap owns pages: per size class a queue of pages with free blocks (the head is where
//! allocation happens). The owner allocates by popping the head page's `free` list and frees by
//! pushing onto the page's `local_free`: no atomics, no locks.
//!
//! Fast path (`alloc_small`): load the TLS heap, the class's head page and its first free block;
//! one test for "have a block and still on the same CPU"; decode and validate the next link (one
//! range compare, one multiply), clear the block's first word, unlink and count. `free`: look the
//! page up from the address, one test for "our page, no flags", check the pointer is a block
//! start and not already free (its first word is not a valid link), link it in and count.
//! Everything else is `#[cold]` and lives in the layer's other files: the refill path and page
//! queues (`refill.rs`), frees of blocks this heap does not own (`free.rs`), large blocks
//! (`large.rs`), creating a thread's heap and its teardown at thread exit (`init.rs`). Here
//! besides the fast paths: migration (when the kernel reports another CPU on another node, rseq
//! `cpu_id` compared on the fast path on NUMA machines, the heap hands all its pages to their
//! home arenas and continues with memory of the new node) and giving every page back.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::node::COUNTED_NODES;

use crate::layout::List;
use crate::layout::{self, Block, Page};
use crate::sys::os::{Os, Sys};

use crate::layout::size_class::{class_size, CLASSES, PLACED_MIN_CLASS};
use crate::thread::tls;

/// Remote frees batched per page before one CAS sends them home.
pub(crate) const REMOTE_BATCH: u32 = 32;
/// Slow-path calls between maintenance sweeps of the node.
pub(crate) const MAINTAIN_EVERY: u32 = 64;

/// Per-heap counters: written by the owner with relaxed stores, read by stats.
#[derive(Default)]
pub(crate) struct HeapCounters {
    pub(crate) remote_frees: AtomicU64,
    pub(crate) remote_batches: AtomicU64,
    pub(crate) migrations: AtomicU64,
    pub(crate) pages_from_arena: AtomicU64,
    pub(crate) pages_fresh: AtomicU64,
}

/// Adds `n` to a counter only its owner writes (a plain load and store: no locked instruction).
#[inline(always)]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// One size class of a heap: the queue head (the fast path's page) and the class's counters
/// (folded in from its pages at refills).
#[repr(C)]
pub(crate) struct Bin {
    pub(crate) page: Cell<*mut Page>,
    /// Blocks this heap handed out from its pages.
    pub(crate) allocs: AtomicU64,
    /// Blocks this heap freed into its own pages.
    pub(crate) frees: AtomicU64,
    /// Blocks this heap freed into pages it does not own (any node).
    pub(crate) rfrees: AtomicU64,
}

/// `stash_node` when nothing is stashed.
pub(crate) const NO_NODE: u32 = u32::MAX;
/// Nodes whose pages a heap keeps while its thread runs elsewhere (about 1.5 KiB each).
pub(crate) const STASHES: usize = 3;

/// Sentinel kinds.
const KIND_NORMAL: u8 = 0;
const KIND_EMPTY: u8 = 1;
const KIND_DEAD: u8 = 2;
const KIND_BUSY: u8 = 3;

/// A thread's cache. See the module documentation.
#[repr(C)]
pub(crate) struct Heap {
    /// Per class: queue head (the empty page when the queue is empty) and counters. Fast path.
    pub(crate) bins: [Bin; CLASSES],
    /// The kernel's current-CPU word for this thread, or `&self.cpu` when not tracked.
    pub(crate) cpu_ptr: Cell<*const u32>,
    /// The CPU this heap last saw.
    pub(crate) cpu: Cell<u32>,
    /// The node whose memory the heap hands out.
    pub(crate) node: Cell<u32>,
    /// The arena of `cpu` (node heaps: of their node).
    pub(crate) arena: Cell<u32>,
    pub(crate) kind: Cell<u8>,
    /// Allocates for a fixed node (node-targeted allocation): never follows the CPU.
    pub(crate) pinned: Cell<bool>,
    /// Per class, the pages this heap owns (the queue's head is also `bins[c].page`, the fast
    /// path's page; the empty page when the queue is empty).
    pub(crate) queues: [List<Page>; CLASSES],
    /// The queues of the nodes the thread last left: still owned, so that a thread the
    /// scheduler moves between a few nodes swaps sets of queues instead of giving every page up
    /// and adopting or carving new ones on each move. The least recently left goes first.
    pub(crate) stash: [[List<Page>; CLASSES]; STASHES],
    /// The node of each stash's pages, or [`NO_NODE`].
    pub(crate) stash_node: [Cell<u32>; STASHES],
    /// When each stash was filled (a count of moves): the lowest is given up first.
    pub(crate) stash_age: [Cell<u32>; STASHES],
    pub(crate) pend_page: Cell<*mut Page>,
    pub(crate) pend_head: Cell<*mut Block>,
    pub(crate) pend_tail: Cell<*mut Block>,
    pub(crate) pend_count: Cell<u32>,
    pub(crate) ticks: Cell<u32>,
    /// When the heap was parked in the pool with its pages (ms; `init.rs`).
    pub(crate) parked_ms: Cell<u64>,
    /// Links in the heap pool's lists (live heaps, or the free pool: `init.rs`).
    pub(crate) reg_next: Cell<*mut Heap>,
    pub(crate) reg_prev: Cell<*mut Heap>,
    pub(crate) counters: HeapCounters,
    /// Blocks this heap freed into pages it does not own, by the pages' node (slot
    /// `min(node, COUNTED_NODES - 1)`): per-node statistics without shared atomics.
    pub(crate) freed_to: [AtomicU64; COUNTED_NODES],
    /// Per placed class, blocks this heap freed whose pages are on its node while their span
    /// is another node's (they would go to the node's home pool: `free.rs`): kept here for the
    /// heap's next refill of the class, without the pool's lock either way. Lists linked like
    /// the pools' (`node::link_pooled`); at most [`PLACED_CACHE_BYTES`] in all; given to the
    /// pool when the heap follows its thread to another node or is parked.
    pub(crate) placed: [Cell<*mut Block>; CLASSES - PLACED_MIN_CLASS],
    /// Bytes in `placed`.
    pub(crate) placed_bytes: Cell<u32>,
    /// A node the scheduler moved the thread to, not followed yet ([`NO_NODE`]: none), and
    /// when the heap first saw it there (ms): see [`Heap::may_follow`].
    pub(crate) follow_node: Cell<u32>,
    /// See `follow_node`.
    pub(crate) follow_since: Cell<u64>,
    /// Live bytes this heap counted and has not yet added to the shared gauge (`prof.rs`).
    pub(crate) live_acc: Cell<i64>,
}

/// Bytes of placed blocks a heap keeps for itself (see [`Heap::placed`]): two of the largest
/// class, bounded like the rest of a thread's cache (the home pools give the pages of idle
/// blocks back; these wait for their heap). Under thread churn on several nodes, most placed
/// blocks that go home come back to the heap that freed them, and the pools' lock was about
/// 40% of all shared-lock acquisitions (`churn`, 32 threads, 4-node guest).
pub(crate) const PLACED_CACHE_BYTES: u32 = 256 << 10;

/// A `Sync` wrapper so the sentinel heaps can be statics.
#[repr(transparent)]
pub(crate) struct SyncHeap(Heap);
// SAFETY: sentinel heaps are never written: their pages are the empty page (never written), and
// every slow path checks for sentinels before touching heap state.
unsafe impl Sync for SyncHeap {}

static ZERO_CPU: u32 = 0;

const fn sentinel(kind: u8) -> SyncHeap {
    let ep = &EMPTY_PAGE.0 as *const Page as *mut Page;
    SyncHeap(Heap {
        bins: [const {
            Bin {
                page: Cell::new(&EMPTY_PAGE.0 as *const Page as *mut Page),
                allocs: AtomicU64::new(0),
                frees: AtomicU64::new(0),
                rfrees: AtomicU64::new(0),
            }
        }; CLASSES],
        cpu_ptr: Cell::new(&ZERO_CPU),
        cpu: Cell::new(0),
        node: Cell::new(0),
        arena: Cell::new(0),
        kind: Cell::new(kind),
        pinned: Cell::new(false),
        queues: [const { List::new() }; CLASSES],
        stash: [const { [const { List::new() }; CLASSES] }; STASHES],
        stash_node: [const { Cell::new(NO_NODE) }; STASHES],
        stash_age: [const { Cell::new(0) }; STASHES],
        pend_page: Cell::new(ep),
        pend_head: Cell::new(ptr::null_mut()),
        pend_tail: Cell::new(ptr::null_mut()),
        pend_count: Cell::new(0),
        ticks: Cell::new(0),
        parked_ms: Cell::new(0),
        reg_next: Cell::new(ptr::null_mut()),
        reg_prev: Cell::new(ptr::null_mut()),
        counters: HeapCounters {
            remote_frees: AtomicU64::new(0),
            remote_batches: AtomicU64::new(0),
            migrations: AtomicU64::new(0),
            pages_from_arena: AtomicU64::new(0),
            pages_fresh: AtomicU64::new(0),
        },
        freed_to: [const { AtomicU64::new(0) }; COUNTED_NODES],
        placed: [const { Cell::new(ptr::null_mut()) }; CLASSES - PLACED_MIN_CLASS],
        placed_bytes: Cell::new(0),
        follow_node: Cell::new(NO_NODE),
        follow_since: Cell::new(0),
        live_acc: Cell::new(0),
    })
}

/// Every thread's heap before its first allocation.
pub(crate) static EMPTY_HEAP: SyncHeap = sentinel(KIND_EMPTY);
/// The heap of threads past their teardown.
pub(crate) static DEAD_HEAP: SyncHeap = sentinel(KIND_DEAD);
/// The thread's heap while one of its slow paths runs (`tls::SlowPath`): a signal handler that
/// calls malloc or free then finds empty bins and no page it owns, so its calls take the slow
/// path and are served aside (`reentry.rs`) instead of touching the heap mid-update.
pub(crate) static BUSY_HEAP: SyncHeap = sentinel(KIND_BUSY);

#[inline(always)]
pub(crate) fn empty_heap() -> *mut Heap {
    &EMPTY_HEAP.0 as *const Heap as *mut Heap
}
#[inline(always)]
pub(crate) fn dead_heap() -> *mut Heap {
    &DEAD_HEAP.0 as *const Heap as *mut Heap
}
#[inline(always)]
pub(crate) fn busy_heap() -> *mut Heap {
    &BUSY_HEAP.0 as *const Heap as *mut Heap
}

/// Shared empty page: every list head of an empty heap points here, so the fast path needs no
/// null check (its `free` is always null and it is never written).
pub(crate) struct SyncPage(pub(crate) Page);
// SAFETY: the empty page is never written: the fast path writes a page only after finding a
// block in it, and this one has none; slow paths never treat it as a real page.
unsafe impl Sync for SyncPage {}

pub(crate) static EMPTY_PAGE: SyncPage = SyncPage(Page::empty());

/// The empty page's address.
#[inline(always)]
pub(crate) fn empty_page() -> *mut Page {
    &EMPTY_PAGE.0 as *const Page as *mut Page
}

#[inline(always)]
pub(crate) fn likely(b: bool) -> bool {
    if !b {
        cold();
    }
    b
}
#[cold]
#[inline(always)]
fn cold() {}

/// Allocates a block of class `c` (the fast path).
///
/// # Safety
/// `c < CLASSES`.
#[inline(always)]
pub(crate) unsafe fn alloc_small(c: usize) -> *mut u8 {
    // SAFETY: forwarded.
    unsafe { alloc_small_or(c, alloc_small_refill) }
}

/// [`alloc_small`] with the slow path given: `slow(heap, c)` when the fast path cannot serve
/// (a constant, so the fast path ends in a tail call and keeps no stack frame).
///
/// # Safety
/// `c < CLASSES`; `slow` allocates a block of class `c` for the calling thread (or null).
#[inline(always)]
pub(crate) unsafe fn alloc_small_or(c: usize, slow: unsafe fn(*mut Heap, usize) -> *mut u8) -> *mut u8 {
    let h = tls::heap();
    // SAFETY: `h` is a valid heap (or sentinel); `bins[c].page` a valid page (or the empty
    // page); `cpu_ptr` points to a live u32 for the thread's life. The page is this thread's.
    unsafe {
        let bin = (*h).bins.get_unchecked(c);
        let page = bin.page.get();
        // The CPU first: the block is loaded just before `pop` stores the next one (the
        // window a signal handler's malloc could fall into stays a few instructions).
        if likely(ptr::read_volatile((*h).cpu_ptr.get()) == (*h).cpu.get() && !(*page).free.get().is_null()) {
            return layout::pop(&*page).cast();
        }
        slow(h, c)
    }
}

/// The slow path of [`alloc_small`]: a block of class `c` for heap `h` (a sentinel: the
/// thread's heap is created first), or null when memory is exhausted.
///
/// # Safety
/// `h` is the calling thread's heap or a sentinel; `c < CLASSES`.
#[cold]
#[inline(never)]
pub(crate) unsafe fn alloc_small_refill(h: *mut Heap, c: usize) -> *mut u8 {
    // SAFETY: forwarded.
    unsafe { alloc_small_slow(h, c).0 }
}

/// Allocates a zeroed block of class `c`: as [`alloc_small`], then clears `size` bytes unless
/// the block is untouched memory that reads as zero (placed blocks: never touched, so calloc
/// leaves first touch to the program).
///
/// # Safety
/// `c < CLASSES`, `size <= class_size(c)`.
#[inline]
pub(crate) unsafe fn alloc_small_zeroed(c: usize, size: usize) -> *mut u8 {
    let h = tls::heap();
    // SAFETY: as in `alloc_small`.
    unsafe {
        let bin = (*h).bins.get_unchecked(c);
        let page = bin.page.get();
        let (p, zero) =
            if likely(ptr::read_volatile((*h).cpu_ptr.get()) == (*h).cpu.get() && !(*page).free.get().is_null()) {
                (layout::pop(&*page).cast::<u8>(), false)
            } else {
                alloc_small_slow(h, c)
            };
        if !p.is_null() && !zero {
            ptr::write_bytes(p, 0, size);
        }
        p
    }
}

#[cold]
#[inline(never)]
unsafe fn alloc_small_slow(h: *mut Heap, c: usize) -> (*mut u8, bool) {
    if h == busy_heap() {
        // A signal handler interrupted one of this thread's slow paths.
        return crate::thread::reentry::alloc_small(c);
    }
    let r = {
        let _busy = tls::SlowPath::enter_outer(h);
        let mut h = h;
        if tls::is_sentinel(h) {
            if h == dead_heap() {
                return crate::thread::init::orphan_alloc(c);
            }
            h = crate::thread::init::init_thread_heap();
            if h.is_null() {
                return (ptr::null_mut(), false);
            }
        }
        // SAFETY: a real heap of this thread.
        let (p, zero) = unsafe { (*h).alloc_refill(c) };
        // The heap profiler may serve a sampled allocation from a large block instead.
        crate::thread::prof::small_refilled(h, p, zero)
    };
    // Frees that signal handlers deferred wait for the next refill of any thread (one load
    // when there are none), not for the end of every slow path.
    crate::thread::reentry::drain();
    r
}

impl crate::layout::Linked for Heap {
    fn next_link(&self) -> &Cell<*mut Heap> {
        &self.reg_next
    }
    fn prev_link(&self) -> &Cell<*mut Heap> {
        &self.reg_prev
    }
}

impl Heap {
    /// The arena of the CPU the heap last saw (node heaps: their node's).
    #[inline]
    pub(crate) fn arena_index(&self) -> usize {
        self.arena.get() as usize
    }

    /// Initialises a heap taken from the pool (all-zero memory or a recycled heap).
    ///
    /// # Safety
    /// The heap is owned by the caller and not in use.
    pub(crate) unsafe fn setup(&self, track_cpu: bool) {
        for c in 0..CLASSES {
            self.bins[c].page.set(empty_page());
            self.queues[c].clear();
        }
        for s in 0..STASHES {
            self.stash[s].iter().for_each(List::clear);
            self.stash_node[s].set(NO_NODE);
        }
        self.pend_page.set(empty_page());
        self.pend_head.set(ptr::null_mut());
        self.pend_tail.set(ptr::null_mut());
        self.pend_count.set(0);
        // SAFETY: forwarded.
        unsafe { self.setup_thread(track_cpu) };
    }

    /// Makes a heap parked with its pages (`init.rs`) the calling thread's: its queues stay
    /// (the pages are still its own); only the thread's CPU and node are taken. A heap parked
    /// for another node than the thread's gives its pages up first.
    ///
    /// # Safety
    /// The heap was parked by [`Self::park`], is owned by the caller and not in use.
    pub(crate) unsafe fn setup_parked(&self, track_cpu: bool) {
        let node = self.node.get();
        // SAFETY: forwarded.
        unsafe { self.setup_thread(track_cpu) };
        if self.node.get() != node {
            let now = self.node.get();
            self.node.set(node);
            self.abandon_all();
            self.fold_counts();
            self.node.set(now);
        }
    }

    /// Before a heap is parked in the pool with its pages for the next thread of its node:
    /// pending remote frees go home and the pages of other nodes are given up.
    pub(crate) fn park(&self) {
        self.flush_pending();
        self.flush_placed();
        for s in 0..STASHES {
            self.give_up_queues(&self.stash[s]);
            self.stash_node[s].set(NO_NODE);
        }
    }

    /// Keeps placed block `b` of class `c` for this heap's next refill of the class (see
    /// [`Heap::placed`]); false when the cache is full or the heap is a node heap.
    ///
    /// # Safety
    /// `h` is the calling thread's real heap; `b` a block of class `c` the program just freed,
    /// marked pooled, whose pages are on the heap's node.
    pub(crate) unsafe fn cache_placed(&self, c: usize, b: *mut Block) -> bool {
        let size = class_size(c) as u32;
        if self.pinned.get() || self.placed_bytes.get() + size > PLACED_CACHE_BYTES {
            return false;
        }
        let slot = &self.placed[c - PLACED_MIN_CLASS];
        // SAFETY: the caller's block; the list is this heap's.
        slot.set(unsafe { crate::node::link_pooled(b, slot.get()) });
        self.placed_bytes.set(self.placed_bytes.get() + size);
        true
    }

    /// A placed block of class `c` this heap kept (see [`Heap::placed`]), its first word
    /// cleared, or null.
    pub(crate) fn take_placed(&self, c: usize) -> *mut Block {
        let slot = &self.placed[c - PLACED_MIN_CLASS];
        let b = slot.get();
        if !b.is_null() {
            // SAFETY: the head of this heap's list of class `c`.
            slot.set(unsafe { crate::node::unlink_pooled(b, c) });
            self.placed_bytes.set(self.placed_bytes.get() - class_size(c) as u32);
        }
        b
    }

    /// Gives the placed blocks this heap kept to its node's home pool (their pages are there).
    pub(crate) fn flush_placed(&self) {
        if self.placed_bytes.get() == 0 {
            return;
        }
        let pool = &crate::node::domain(self.node()).pool;
        for c in PLACED_MIN_CLASS..CLASSES {
            loop {
                let b = self.take_placed(c);
                if b.is_null() {
                    break;
                }
                crate::sys::event(crate::sys::Event::HomePoolPut);
                // SAFETY: a freed placed block, still marked pooled, resident on this node.
                unsafe { pool.put_block(c, b) };
            }
        }
    }

    /// Whether the heap owns any page.
    pub(crate) fn has_pages(&self) -> bool {
        self.queues.iter().any(|q| !q.is_empty()) || self.stash.iter().flatten().any(|q| !q.is_empty())
    }

    /// The thread-dependent part of [`Self::setup`]: kind, CPU tracking, CPU, arena and node.
    ///
    /// # Safety
    /// The heap is owned by the caller and not in use.
    unsafe fn setup_thread(&self, track_cpu: bool) {
        self.kind.set(KIND_NORMAL);
        self.pinned.set(false);
        let mut cpu = Sys::current_cpu().unwrap_or(0) as u32;
        let rseq = Sys::cpu_id_ptr();
        if track_cpu && crate::config::numa_enabled() && !rseq.is_null() {
            self.cpu_ptr.set(rseq);
            // SAFETY: rseq area of this thread.
            cpu = unsafe { ptr::read_volatile(rseq) };
        } else {
            self.cpu_ptr.set(&self.cpu as *const Cell<u32> as *const u32);
        }
        self.cpu.set(cpu);
        self.arena.set(crate::arena::arena_index(cpu as usize) as u32);
        self.node.set(crate::node::node_of_cpu(cpu as usize) as u32);
        self.follow_node.set(NO_NODE);
    }

    /// The node this heap allocates from.
    pub(crate) fn node(&self) -> usize {
        self.node.get() as usize
    }

    /// Per-class counters: allocations, frees into own pages, frees into other pages.
    pub(crate) fn bin_counts(&self, c: usize) -> (u64, u64, u64) {
        let b = &self.bins[c];
        (b.allocs.load(Ordering::Relaxed), b.frees.load(Ordering::Relaxed), b.rfrees.load(Ordering::Relaxed))
    }

    /// Adds a page's unfolded counts to this heap's bins (owner: at refills, and before the page
    /// leaves the heap).
    pub(crate) fn fold_page(&self, page: &Page) {
        let (a, f) = layout::take_counts(page);
        if a != 0 || f != 0 {
            crate::thread::prof::fold_small(self as *const Heap as *mut Heap, page.class.get() as usize, a, f);
            let bin = &self.bins[page.class.get() as usize];
            bump(&bin.allocs, a as u64);
            bump(&bin.frees, f as u64);
        }
    }

    /// Moves this heap's per-class counts to its node's domain (before the heap changes node or
    /// goes back to the pool) and clears them.
    pub(crate) fn fold_counts(&self) {
        let d = crate::node::domain(self.node());
        let (mut allocs, mut frees) = (0, 0);
        for c in 0..CLASSES {
            let (a, f, r) = self.bin_counts(c);
            if a != 0 || f != 0 || r != 0 {
                d.counters.class_allocs[c].fetch_add(a, Ordering::Relaxed);
                d.counters.class_frees[c].fetch_add(f + r, Ordering::Relaxed);
                self.bins[c].allocs.store(0, Ordering::Relaxed);
                self.bins[c].frees.store(0, Ordering::Relaxed);
                self.bins[c].rfrees.store(0, Ordering::Relaxed);
                allocs += a;
                frees += f;
            }
        }
        d.counters.node_allocs.fetch_add(allocs, Ordering::Relaxed);
        d.counters.node_frees.fetch_add(frees, Ordering::Relaxed);
        for n in 0..COUNTED_NODES {
            let f = self.freed_to[n].swap(0, Ordering::Relaxed);
            if f != 0 {
                let to = crate::node::domain(n);
                to.counters.node_frees.fetch_add(f, Ordering::Relaxed);
                if n != self.node() {
                    to.counters.remote_node_frees.fetch_add(f, Ordering::Relaxed);
                    to.counters.went_home.fetch_add(f, Ordering::Relaxed);
                }
            }
        }
    }

    /// Fixes the heap to node `node` (node-targeted allocation heaps): its spans are bound to the
    /// node and park in the node's arena.
    pub(crate) fn pin_to_node(&self, node: usize) {
        self.pinned.set(true);
        self.node.set(node as u32);
        self.arena.set(crate::arena::node_arena(node) as u32);
    }

    /// Refreshes the CPU; on a node change, gives all pages back and follows the thread.
    /// Without rseq the CPU is asked for every `MAINTAIN_EVERY` refills only.
    pub(crate) fn update_cpu(&self) {
        self.update_cpu_inner(false)
    }

    /// As [`Self::update_cpu`], but always asks (`sched_getcpu` without rseq): for large and
    /// huge allocations, which cost far more than the question.
    pub(crate) fn update_cpu_now(&self) {
        self.update_cpu_inner(true)
    }

    pub(crate) fn update_cpu_inner(&self, always: bool) {
        if self.pinned.get() {
            return;
        }
        let tracked = self.cpu_ptr.get() != &self.cpu as *const Cell<u32> as *const u32;
        let cpu = if tracked {
            // SAFETY: rseq area of this thread.
            unsafe { ptr::read_volatile(self.cpu_ptr.get()) }
        } else if always || self.ticks.get() % MAINTAIN_EVERY == 0 {
            match Sys::current_cpu() {
                Some(c) => c as u32,
                None => return,
            }
        } else {
            return;
        };
        if cpu == self.cpu.get() && self.follow_node.get() == NO_NODE {
            return;
        }
        let node = crate::node::node_of_cpu(cpu as usize) as u32;
        if tracked {
            self.cpu.set(cpu);
        }
        if node != self.node.get() && !self.may_follow(node) {
            // Not yet: the blocks keep coming from this node's pages (and its CPU's arena).
            return;
        }
        self.follow_node.set(NO_NODE);
        self.arena.set(crate::arena::arena_index(cpu as usize) as u32);
        if node != self.node.get() {
            self.flush_pending();
            self.flush_placed();
            for c in 0..CLASSES {
                for p in self.queues[c].iter() {
                    // SAFETY: our pages.
                    self.fold_page(unsafe { &*p });
                }
            }
            crate::sys::in_phase(crate::sys::Phase::Move, || {
                self.fold_counts();
                self.switch_node(node);
            });
            bump(&self.counters.migrations, 1);
            crate::node::domain(node as usize).counters.migrations_in.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the heap follows its thread to `node`, another node than the heap's, now: at
    /// once when the thread's affinity keeps it on `node` (the program, numactl or an OpenMP
    /// binding moved it: it stays; asked at every refill while a move is pending, since a
    /// thread often pins itself only after the scheduler placed it); else only once the heap
    /// has seen it there for `DOMALLOC_FOLLOW_DELAY` (1000 ms: the kernel's own NUMA-balancing
    /// scan delay) without seeing it on another node in between. A thread the scheduler moves (an oversubscribed
    /// node, unpinned threads) is often moved again soon, and following costs the new node's
    /// pages for every class the thread uses: under thread churn on 4 nodes, 32 threads
    /// followed 500-650 moves per run, each taking pages from the new node's arenas and
    /// domain (13,000 domain and 15,000 arena locks; 360-480 spans purged for first touch,
    /// each a TLB shootdown on every CPU of the process); with the delay, 1.
    fn may_follow(&self, node: u32) -> bool {
        let delay = crate::config::options::get().follow_delay_ms;
        if delay == 0 {
            return true;
        }
        if crate::node::affinity_within(node as usize) {
            return true;
        }
        let now = Sys::now_ms();
        if self.follow_node.get() != node {
            self.follow_node.set(node);
            self.follow_since.set(now);
            return false;
        }
        now.saturating_sub(self.follow_since.get()) >= delay
    }

    /// The thread now runs on `node`: the current queues are stashed (still owned) in the
    /// stash that holds `node`'s pages, which become current; else in a free stash, else in
    /// the least recently filled one, whose pages are given up first. No lock and no system
    /// call while the thread moves among up to `STASHES + 1` nodes.
    fn switch_node(&self, node: u32) {
        let slot = (0..STASHES)
            .find(|&s| self.stash_node[s].get() == node)
            .or_else(|| (0..STASHES).find(|&s| self.stash_node[s].get() == NO_NODE))
            .unwrap_or_else(|| (0..STASHES).min_by_key(|&s| self.stash_age[s].get()).unwrap_or(0));
        let stash = &self.stash[slot];
        if self.stash_node[slot].get() != node {
            self.give_up_queues(stash);
        }
        for (c, (q, s)) in self.queues.iter().zip(stash).enumerate() {
            q.swap(s);
            self.sync_bin(c);
        }
        let left = if stash.iter().all(List::is_empty) { NO_NODE } else { self.node.get() };
        self.stash_node[slot].set(left);
        self.stash_age[slot].set(self.counters.migrations.load(Ordering::Relaxed) as u32);
        self.node.set(node);
    }

    /// The stash holding `page` (ours), or `None` when it is in the current queues (its node is
    /// the heap's).
    #[inline]
    pub(crate) fn stash_of(&self, page: &Page) -> Option<&[List<Page>; CLASSES]> {
        let n = page.node() as u32;
        if n == self.node.get() {
            return None;
        }
        (0..STASHES).find(|&s| self.stash_node[s].get() == n).map(|s| &self.stash[s])
    }

    /// Gives every page back: empty ones to their arenas' caches or domains, the others to their
    /// home arenas.
    pub(crate) fn abandon_all(&self) {
        self.park();
        self.give_up_queues(&self.queues);
        for c in 0..CLASSES {
            self.bins[c].page.set(empty_page());
        }
    }

    /// Gives every page of `queues` back (see [`Self::abandon_all`]); leaves them empty.
    fn give_up_queues(&self, queues: &[List<Page>; CLASSES]) {
        // Pages in use to their arenas, unused ones to their domains, each in one batch (one
        // lock round per arena or domain instead of one per page: threads exit in bursts).
        let mut unused = ptr::null_mut();
        let mut in_use = ptr::null_mut();
        for q in queues {
            while !q.is_empty() {
                let p = q.head();
                // SAFETY: our page, in queue `q`.
                unsafe { q.remove(p) };
                // SAFETY: as above.
                self.fold_page(unsafe { &*p });
                release_page(p, &mut unused, &mut in_use);
            }
        }
        // SAFETY: unowned span heads linked through `next`, ours to give back: with blocks in
        // use (to their arenas), and unused (to their domains).
        unsafe {
            crate::arena::push_list(in_use);
            crate::arena::free_span_list(unused);
        }
    }
}

/// Expensive invariant checks (`--features debug-invariants`): every test runs with them too.
#[cfg(feature = "debug-invariants")]
pub(crate) mod check {
    use super::*;
    use crate::layout::PageKind;
    use crate::layout::{Segment, SEG_HUGE};
    use crate::sys::os;

    /// A freed pointer must be the start of a carved block of a live small span, or a large
    /// span's start, and (for the owner) not already in the page's free lists.
    pub(crate) unsafe fn on_free(seg: *mut Segment, page: *mut Page, p: *mut u8) {
        // SAFETY: live segment and descriptor (the caller checked the segment map).
        unsafe {
            if (*seg).kind == SEG_HUGE || (*page).kind() != PageKind::Small {
                return;
            }
            let pg = &*page;
            if !pg.is_block(p as usize) || pg.block_index(p as usize) >= pg.capacity() as usize {
                os::fatal(format_args!(
                    "free(): invalid pointer {:p} (not a block start: never handed out; debug-invariants build)",
                    p
                ));
            }
            if pg.owned_by(tls::heap() as usize) && layout::in_free_lists(pg, p.cast()) {
                os::fatal(format_args!("free(): double free of {:p} (debug-invariants build)", p));
            }
        }
    }
}

/// Gives one page away (heap teardown or migration): onto `in_use` (linked through `next`)
/// if blocks are in use, for the caller to queue in their arenas, else onto `unused`, for the
/// caller to hand to the domains.
fn release_page(page: *mut Page, unused: &mut *mut Page, in_use: &mut *mut Page) {
    // SAFETY: the caller owns the page and has taken it out of its lists.
    unsafe {
        (*page).prev.set(ptr::null_mut());
        layout::disown(&*page);
        let list = if layout::is_unused(&*page) { unused } else { in_use };
        (*page).next.set(*list);
        *list = page;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap keeps the placed blocks it frees at home for its own next refill, bounded by
    /// [`PLACED_CACHE_BYTES`], in last-in first-out order, and gives them to its node's pool
    /// when asked (a move to another node, parking).
    #[test]
    fn placed_blocks_cached_by_their_heap_are_bounded_and_flushed_to_the_pool() {
        assert!(crate::thread::ensure_init());
        let c = CLASSES - 1; // the largest placed class
        assert!(crate::layout::size_class::is_placed(c));
        // SAFETY: a valid class; blocks of this allocator.
        let blocks: Vec<*mut Block> = (0..3).map(|_| unsafe { crate::thread::alloc_small(c) }.cast()).collect();
        assert!(blocks.iter().all(|b| !b.is_null()));
        let h = tls::own_heap();
        // SAFETY: this thread's real heap (it just allocated).
        let heap = unsafe { &*h };
        assert_eq!(heap.placed_bytes.get(), 0);
        let fits = (PLACED_CACHE_BYTES as usize / class_size(c)).min(blocks.len());
        for (i, &b) in blocks.iter().enumerate() {
            // SAFETY: our blocks of class `c`, handed to the cache once.
            let kept = unsafe { heap.cache_placed(c, b) };
            assert_eq!(kept, i < fits, "block {i}: the cache holds {fits} blocks of {} B", class_size(c));
        }
        assert_eq!(heap.placed_bytes.get() as usize, fits * class_size(c));
        assert_eq!(heap.take_placed(c), blocks[fits - 1], "last in, first out");
        assert_eq!(heap.placed_bytes.get() as usize, (fits - 1) * class_size(c));
        heap.flush_placed();
        assert_eq!(heap.placed_bytes.get(), 0);
        assert!(heap.take_placed(c).is_null(), "flushed");
        let pool = &crate::node::domain(heap.node()).pool;
        for &b in blocks[..fits - 1].iter().rev() {
            assert_eq!(pool.take_block(c), b, "flushed to the node's pool");
        }
        for &b in &blocks {
            // SAFETY: our blocks, out of every list, freed once.
            unsafe { crate::thread::free::free(b.cast()) };
        }
    }
}
