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
//! Everything else is `#[cold]`:
//!
//! * refill: collect frees into the head page, carve more of its span (or hand out the next
//!   untouched block of a placed span), give a page with nothing left up (it leaves the queue;
//!   its next remote free queues it in its arena), then take a queued page from this CPU's arena
//!   (or another arena of the same node), then a placed block from the node's home pool, then an
//!   empty span parked in the arena, then a fresh span from the node's domain;
//! * migration: when the kernel reports another CPU (rseq `cpu_id`, compared on the fast path
//!   on NUMA machines) on another node, the heap hands all its pages to their home arenas and
//!   continues with memory of the new node;
//! * remote frees (block of a page this heap does not own): batched per page and pushed home
//!   with one CAS (`page.rs`), so the block is reused only by its own node; a placed block whose
//!   pages are on another node than its span goes to that node's home pool;
//! * thread exit: a `pthread_key` destructor gives every page back (arena or domain) and parks
//!   the thread on the dead heap, whose allocations go to a shared, locked orphan heap.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::domain::COUNTED_NODES;
use crate::global;
use crate::os::{self, Os, Sys};
use crate::page::{self, Block, Page, PageKind, PF_PLACED};
use crate::placement::{self, Home};
use crate::segment::{self, Segment, SpanPlacement, PAGE_SHIFT, PAGE_SIZE, SEG_HUGE};
use crate::size_class::{class_size, is_placed, span_blocks, span_pages, CLASSES};
use crate::tls;
use crate::huge;

/// Remote frees batched per page before one CAS sends them home.
const REMOTE_BATCH: u32 = 32;
/// Slow-path calls between maintenance sweeps of the node.
const MAINTAIN_EVERY: u32 = 64;

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
    page: Cell<*mut Page>,
    /// Blocks this heap handed out from its pages.
    pub(crate) allocs: AtomicU64,
    /// Blocks this heap freed into its own pages.
    pub(crate) frees: AtomicU64,
    /// Blocks this heap freed into pages it does not own (any node).
    pub(crate) rfrees: AtomicU64,
}

/// Sentinel kinds.
const KIND_NORMAL: u8 = 0;
const KIND_EMPTY: u8 = 1;
const KIND_DEAD: u8 = 2;

/// A thread's cache. See the module documentation.
#[repr(C)]
pub struct Heap {
    /// Per class: queue head (the empty page when the queue is empty) and counters. Fast path.
    bins: [Bin; CLASSES],
    /// The kernel's current-CPU word for this thread, or `&self.cpu` when not tracked.
    cpu_ptr: Cell<*const u32>,
    /// The CPU this heap last saw.
    cpu: Cell<u32>,
    /// The node whose memory the heap hands out.
    node: Cell<u32>,
    /// The arena of `cpu` (node heaps: of their node).
    arena: Cell<u32>,
    kind: Cell<u8>,
    /// Allocates for a fixed node (node-targeted allocation): never follows the CPU.
    pinned: Cell<bool>,
    tails: [Cell<*mut Page>; CLASSES],
    pend_page: Cell<*mut Page>,
    pend_head: Cell<*mut Block>,
    pend_tail: Cell<*mut Block>,
    pend_count: Cell<u32>,
    ticks: Cell<u32>,
    /// Registry links (live heaps, or the free pool).
    pub(crate) reg_next: Cell<*mut Heap>,
    pub(crate) reg_prev: Cell<*mut Heap>,
    pub(crate) counters: HeapCounters,
    /// Blocks this heap freed into pages it does not own, by the pages' node (slot
    /// `min(node, COUNTED_NODES - 1)`): per-node statistics without shared atomics.
    pub(crate) freed_to: [AtomicU64; COUNTED_NODES],
}

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
            Bin { page: Cell::new(&EMPTY_PAGE.0 as *const Page as *mut Page), allocs: AtomicU64::new(0), frees: AtomicU64::new(0), rfrees: AtomicU64::new(0) }
        }; CLASSES],
        cpu_ptr: Cell::new(&ZERO_CPU),
        cpu: Cell::new(0),
        node: Cell::new(0),
        arena: Cell::new(0),
        kind: Cell::new(kind),
        pinned: Cell::new(false),
        tails: [const { Cell::new(ptr::null_mut()) }; CLASSES],
        pend_page: Cell::new(ep),
        pend_head: Cell::new(ptr::null_mut()),
        pend_tail: Cell::new(ptr::null_mut()),
        pend_count: Cell::new(0),
        ticks: Cell::new(0),
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
    })
}

/// Every thread's heap before its first allocation.
pub(crate) static EMPTY_HEAP: SyncHeap = sentinel(KIND_EMPTY);
/// The heap of threads past their teardown.
pub(crate) static DEAD_HEAP: SyncHeap = sentinel(KIND_DEAD);

#[inline(always)]
pub(crate) fn empty_heap() -> *mut Heap {
    &EMPTY_HEAP.0 as *const Heap as *mut Heap
}
#[inline(always)]
pub(crate) fn dead_heap() -> *mut Heap {
    &DEAD_HEAP.0 as *const Heap as *mut Heap
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
fn likely(b: bool) -> bool {
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
        let b = (*page).free.get();
        if likely(!b.is_null() && ptr::read_volatile((*h).cpu_ptr.get()) == (*h).cpu.get()) {
            return page::pop(&*page).cast();
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
        let b = (*page).free.get();
        let (p, zero) = if likely(!b.is_null() && ptr::read_volatile((*h).cpu_ptr.get()) == (*h).cpu.get()) {
            (page::pop(&*page).cast::<u8>(), false)
        } else {
            alloc_small_slow(h, c)
        };
        if !p.is_null() && !zero {
            ptr::write_bytes(p, 0, size);
        }
        p
    }
}

/// Frees a block (the fast path).
///
/// # Safety
/// `p` is non-null and was returned by this allocator (anything else is detected where cheap).
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8) {
    let seg = segment::segment_of(p);
    if !likely(segment::segmap_contains(seg)) {
        return free_unknown(p);
    }
    // SAFETY: the segment is live (its bit is set) and contains p.
    unsafe {
        let page = segment::page_of(seg, p);
        let h = tls::heap();
        #[cfg(feature = "debug-invariants")]
        check::on_free(seg, page, p);
        // A flagged page's `owner` never equals a heap's address (`OWNER_SLOW`).
        if likely((*page).owner.load(Ordering::Relaxed) == h as usize) {
            let pg = &*page;
            let b = p as *mut Block;
            if !likely(pg.is_block(p as usize)) {
                not_a_block(p);
            }
            let key = page::link_key();
            if !likely(!page::may_be_freed(pg, b, key)) {
                // Cold, and a tail call: the fast path keeps no registers across a call.
                return free_suspect(h, page, b);
            }
            return local_free(h, page, b, key);
        }
        free_slow(h, seg, page, p)
    }
}

/// The owner's free of block `b` of `page` (checked already).
///
/// # Safety
/// `h` owns `page`; `b` is an allocated block start of it.
#[inline(always)]
unsafe fn local_free(h: *mut Heap, page: *mut Page, b: *mut Block, key: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        let pg = &*page;
        page::set_next_k(b, pg.local_free.get(), key);
        pg.local_free.set(b);
        let u = pg.count_free();
        if !likely(u != 0) {
            page_empty(h, page);
        }
    }
}

/// The owner frees a block whose first word looks like a free-list link: confirmed against the
/// page's lists (abort on a double free), else freed normally.
#[cold]
#[inline(never)]
unsafe fn free_suspect(h: *mut Heap, page: *mut Page, b: *mut Block) {
    // SAFETY: `h` owns `page`; `b` is a block start of it.
    unsafe {
        owner_double_free_check(&*page, b);
        local_free(h, page, b, page::link_key());
    }
}

#[cold]
#[inline(never)]
fn not_a_block(p: *mut u8) -> ! {
    os::fatal(format_args!("free(): invalid pointer {:p} (not a block start)", p))
}

/// The owner frees a block whose first word looks like a free-list link: aborts if it is in the
/// page's lists (a double free), else goes on (the program stored such a value by chance).
#[cold]
#[inline(never)]
unsafe fn owner_double_free_check(page: &Page, b: *mut Block) {
    // SAFETY: the caller owns the page. Collecting first brings remote frees into the lists.
    unsafe {
        if !page::is_freed(page, b) {
            return;
        }
        page::collect_remote(page);
        if page::in_free_lists(page, b) {
            os::fatal(format_args!("free(): double free of {:p}", b));
        }
    }
}

#[cold]
#[inline(never)]
fn free_unknown(p: *mut u8) {
    match segment::big_aligned_segment(p) {
        // SAFETY: a live huge header whose data is p.
        Some(seg) => unsafe { huge::free(seg, p) },
        None => os::fatal(format_args!("free(): invalid pointer {:p} (not allocated by domalloc)", p)),
    }
}

#[cold]
#[inline(never)]
unsafe fn free_slow(h: *mut Heap, seg: *mut Segment, page: *mut Page, p: *mut u8) {
    // SAFETY: live segment/page (caller); page fields read per the ownership rules.
    unsafe {
        if (*seg).kind == SEG_HUGE {
            return huge::free(seg, p);
        }
        let pg = &*page;
        match pg.kind() {
            PageKind::Small => {
                if !pg.is_block(p as usize) {
                    not_a_block(p);
                }
                let b = p as *mut Block;
                if pg.flags.get() & PF_PLACED != 0 && global::numa_enabled() {
                    let home = placed_home(pg, b);
                    if home != pg.node() {
                        return to_home_pool(h, pg, b, home);
                    }
                }
                if !tls::is_sentinel(h) && page::reclaim(pg, h as usize) {
                    // A page we gave up (full) and nobody else freed into since: ours again, at
                    // the back of its queue, so that it gathers frees while allocation goes on
                    // from the head (at the front, its one free block would be taken at once
                    // and the page given up again: a slow path for every block).
                    let c = pg.class.get() as usize;
                    (*h).queue_push_back(c, page);
                }
                if pg.owned_by(h as usize) {
                    owner_double_free_check(pg, b);
                    local_free(h, page, b, page::link_key());
                } else {
                    remote_free(h, page, b);
                }
            }
            PageKind::Large => {
                if pg.span_start() != p {
                    os::fatal(format_args!("free(): invalid pointer {:p} (inside a large block)", p));
                }
                free_large(h, page, p);
            }
            PageKind::Free => os::fatal(format_args!("free(): double free or invalid pointer {:p}", p)),
            PageKind::Meta => os::fatal(format_args!("free(): invalid pointer {:p} (allocator metadata)", p)),
        }
    }
}

/// The node whose memory holds placed block `b` of `page`: recorded, or asked of the kernel the
/// first time the block is freed (and recorded).
fn placed_home(page: &Page, b: *mut Block) -> usize {
    let i = page.block_index(b as usize);
    if let Some(n) = page.home(i) {
        return n;
    }
    let n = match placement::home_of(b as *const u8, page.block_size.get() as usize) {
        Home::On(n) | Home::Mixed(n) if n < global::domain_slots() && global::domain(n).node == n => n,
        _ => page.node(),
    };
    page.set_home(i, n);
    n
}

/// A placed block whose pages are on `home`, not on its span's node: it waits in `home`'s pool
/// (still in use from its span's view) for the next allocation of its size there.
///
/// # Safety
/// `b` is an allocated block of `page`, just freed by the program.
unsafe fn to_home_pool(h: *mut Heap, page: &Page, b: *mut Block, home: usize) {
    let i = page.block_index(b as usize);
    if !page.mark_pooled(i) {
        os::fatal(format_args!("free(): double free of {:p}", b));
    }
    let c = page.class.get() as usize;
    count_foreign_free(h, page, c, 1);
    let dest = global::domain(home);
    dest.counters.went_home.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the caller's block, resident on `home`.
    unsafe { dest.pool.put_block(c, b) };
}

/// Counts `n` blocks of class `c` of `page` freed by `h` (a heap that does not own the page, or
/// a sentinel): in the heap's own counters (plain stores, no shared line), else in the page's
/// domain.
fn count_foreign_free(h: *mut Heap, page: &Page, c: usize, n: u64) {
    if tls::is_sentinel(h) {
        let d = global::domain(page.node());
        d.counters.class_frees[c].fetch_add(n, Ordering::Relaxed);
        d.counters.node_frees.fetch_add(n, Ordering::Relaxed);
        d.counters.remote_node_frees.fetch_add(n, Ordering::Relaxed);
        return;
    }
    // SAFETY: the calling thread's own heap (or the orphan / a node heap under its lock).
    let hh = unsafe { &*h };
    bump(&hh.bins[c].rfrees, n);
    bump(&hh.freed_to[page.node().min(COUNTED_NODES - 1)], n);
}

/// Remote frees by threads that have no heap (not yet, or no more), for the stats.
pub(crate) static HEAPLESS_REMOTE_FREES: AtomicU64 = AtomicU64::new(0);

/// Sends a block home: batched per page when the thread has a heap.
///
/// # Safety
/// `b` is an allocated block of `page`, which this thread does not own.
unsafe fn remote_free(h: *mut Heap, page: *mut Page, b: *mut Block) {
    // SAFETY: sentinels are never written; a real heap is ours; the page is live.
    unsafe {
        let pg = &*page;
        if page::is_freed(pg, b) {
            // In another thread's lists, in a remote chain, or in our own pending batch: a
            // double free (or, with about 2^-50 odds, a program word that looks like a link).
            os::fatal(format_args!("free(): double free of {:p}", b));
        }
        if tls::is_sentinel(h) {
            page::set_next(b, ptr::null_mut());
            HEAPLESS_REMOTE_FREES.fetch_add(1, Ordering::Relaxed);
            count_foreign_free(h, pg, pg.class.get() as usize, 1);
            if page::push_remote(pg, b, b) {
                queue_unowned(page);
            }
            return;
        }
        let hh = &*h;
        if hh.pend_page.get() == page && hh.pend_count.get() < REMOTE_BATCH {
            page::set_next(b, hh.pend_head.get());
            hh.pend_head.set(b);
            hh.pend_count.set(hh.pend_count.get() + 1);
            return;
        }
        hh.flush_pending();
        page::set_next(b, ptr::null_mut());
        hh.pend_page.set(page);
        hh.pend_head.set(b);
        hh.pend_tail.set(b);
        hh.pend_count.set(1);
    }
}

/// A page that was given up received its first remote free: it goes to its arena (a node-local
/// list where any heap of its node adopts it).
///
/// # Safety
/// `page` is a small span's head, unowned and in no list (the caller's push moved it out of
/// the given-up state, so no one else queues it).
unsafe fn queue_unowned(page: *mut Page) {
    // SAFETY: the caller's contract.
    unsafe { global::arena((*page).arena.get() as usize).push(page) };
}

/// A page of ours dropped to zero used blocks.
#[cold]
#[inline(never)]
unsafe fn page_empty(h: *mut Heap, page: *mut Page) {
    // SAFETY: the page is ours (owner path).
    unsafe {
        let hh = &*h;
        let c = (*page).class.get() as usize;
        // Keep the only page of a class: allocating again soon is likely.
        if hh.bins[c].page.get() == page && (*page).next.get().is_null() {
            return;
        }
        hh.queue_remove(c, page);
        hh.fold_page(&*page);
        page::disown(&*page);
        give_back_span(page);
    }
}

/// An unused, unowned span goes to its arena's empty cache, or else to its domain.
///
/// # Safety
/// `page` is the head of an unused span nobody owns, in no list.
unsafe fn give_back_span(page: *mut Page) {
    // SAFETY: the caller's contract.
    unsafe {
        if crate::options::get().purge_delay_ms != 0
            && global::arena((*page).arena.get() as usize).park_empty(page, Sys::now_ms())
        {
            return;
        }
        global::domain((*page).node()).free_span(page);
    }
}

#[cold]
#[inline(never)]
unsafe fn alloc_small_slow(h: *mut Heap, c: usize) -> (*mut u8, bool) {
    let mut h = h;
    if tls::is_sentinel(h) {
        if h == dead_heap() {
            return global::orphan_alloc(c);
        }
        h = init_thread_heap();
        if h.is_null() {
            return (ptr::null_mut(), false);
        }
    }
    // SAFETY: a real heap of this thread.
    unsafe { (*h).alloc_refill(c) }
}

/// Creates the calling thread's heap. Null if the allocator cannot initialise.
#[cold]
fn init_thread_heap() -> *mut Heap {
    if !global::ensure_init() {
        return ptr::null_mut();
    }
    let h = global::heap_acquire();
    if h.is_null() {
        return h;
    }
    // SAFETY: a fresh heap from the pool, ours.
    unsafe { (*h).setup(true) };
    tls::set_heap(h);
    global::register_thread_heap(h);
    h
}

impl Heap {
    /// Initialises a heap taken from the pool (all-zero memory or a recycled heap).
    ///
    /// # Safety
    /// The heap is owned by the caller and not in use.
    pub(crate) unsafe fn setup(&self, track_cpu: bool) {
        for c in 0..CLASSES {
            self.bins[c].page.set(empty_page());
            self.tails[c].set(ptr::null_mut());
        }
        self.pend_page.set(empty_page());
        self.pend_head.set(ptr::null_mut());
        self.pend_tail.set(ptr::null_mut());
        self.pend_count.set(0);
        self.kind.set(KIND_NORMAL);
        self.pinned.set(false);
        let mut cpu = Sys::current_cpu().unwrap_or(0) as u32;
        let rseq = Sys::cpu_id_ptr();
        if track_cpu && global::numa_enabled() && !rseq.is_null() {
            self.cpu_ptr.set(rseq);
            // SAFETY: rseq area of this thread.
            cpu = unsafe { ptr::read_volatile(rseq) };
        } else {
            self.cpu_ptr.set(&self.cpu as *const Cell<u32> as *const u32);
        }
        self.cpu.set(cpu);
        self.arena.set(global::arena_index(cpu as usize) as u32);
        self.node.set(global::node_of_cpu(cpu as usize) as u32);
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
        let (a, f) = page::take_counts(page);
        if a != 0 || f != 0 {
            let bin = &self.bins[page.class.get() as usize];
            bump(&bin.allocs, a as u64);
            bump(&bin.frees, f as u64);
        }
    }

    /// Moves this heap's per-class counts to its node's domain (before the heap changes node or
    /// goes back to the pool) and clears them.
    pub(crate) fn fold_counts(&self) {
        let d = global::domain(self.node());
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
                let to = global::domain(n);
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
        self.arena.set(global::node_arena(node) as u32);
    }

    /// Refreshes the CPU; on a node change, gives all pages back and follows the thread.
    /// Without rseq the CPU is asked for every `MAINTAIN_EVERY` refills only.
    fn update_cpu(&self) {
        self.update_cpu_inner(false)
    }

    /// As [`Self::update_cpu`], but always asks (`sched_getcpu` without rseq): for large and
    /// huge allocations, which cost far more than the question.
    pub(crate) fn update_cpu_now(&self) {
        self.update_cpu_inner(true)
    }

    fn update_cpu_inner(&self, always: bool) {
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
        if cpu == self.cpu.get() {
            return;
        }
        self.arena.set(global::arena_index(cpu as usize) as u32);
        let node = global::node_of_cpu(cpu as usize) as u32;
        if tracked {
            self.cpu.set(cpu);
        }
        if node != self.node.get() {
            self.abandon_all();
            self.fold_counts();
            self.node.set(node);
            bump(&self.counters.migrations, 1);
            global::domain(node as usize).counters.migrations_in.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refill path for class `c`: returns a block (and whether it reads as zero), or null (out
    /// of memory).
    ///
    /// # Safety
    /// `self` is the calling thread's heap (or the orphan or a node heap under its lock).
    pub(crate) unsafe fn alloc_refill(&self, c: usize) -> (*mut u8, bool) {
        self.ticks.set(self.ticks.get().wrapping_add(1));
        self.update_cpu();
        self.flush_pending();
        if self.ticks.get() % MAINTAIN_EVERY == 0 {
            global::maintain(self.node());
        }
        let (b, zero) = self.find_block(c);
        (b.cast(), zero)
    }

    /// A block of class `c`: from our queue, an arena page, the home pool, or a new span.
    fn find_block(&self, c: usize) -> (*mut Block, bool) {
        // Our own queue: each turn either finds a block or gives the head page up.
        loop {
            let page = self.bins[c].page.get();
            if page == empty_page() {
                break;
            }
            if let Some(r) = self.take_or_give_up(c, page) {
                return r;
            }
        }
        // Pages of this node that nobody owns (left by exited or migrated threads, or given up
        // full and since freed into).
        for _ in 0..16 {
            let page = self.take_from_arenas(c);
            if page.is_null() {
                break;
            }
            bump(&self.counters.pages_from_arena, 1);
            self.adopt(c, page);
            if let Some(r) = self.take_or_give_up(c, page) {
                return r;
            }
        }
        // A placed block freed on this node whose span belongs to another (no page fault).
        if is_placed(c) && !self.pinned.get() && global::numa_enabled() {
            let b = global::domain(self.node()).pool.take_block(c);
            if !b.is_null() {
                // SAFETY: a block of a live span: it leaves the pool.
                unsafe { pool_taken(b, c) };
                return (b, false);
            }
        }
        let page = self.new_span(c);
        if page.is_null() {
            return (ptr::null_mut(), false);
        }
        self.adopt(c, page);
        // SAFETY: our page, with blocks to hand out.
        unsafe { take_block(&*page) }.unwrap_or((ptr::null_mut(), false))
    }

    /// For a page at the head of queue `c`: a block if it has one now (after collecting or
    /// carving); otherwise the page is given up (it leaves the queue) and `None` returned.
    fn take_or_give_up(&self, c: usize, page: *mut Page) -> Option<(*mut Block, bool)> {
        // SAFETY: pages in our queue are ours.
        unsafe {
            self.fold_page(&*page);
            if let Some(r) = take_block(&*page) {
                return Some(r);
            }
            self.fold_page(&*page);
            self.queue_remove(c, page);
            if page::give_up(&*page, self as *const Heap as usize) {
                return None;
            }
            // Remote frees arrived between the collect and the give-up: take them.
            self.queue_push_front(c, page);
            take_block(&*page)
        }
    }

    /// Where class `c`'s spans come from.
    fn placement_for(&self, c: usize) -> SpanPlacement {
        if global::policy_covers(class_size(c)) {
            SpanPlacement::Policy
        } else if global::numa_enabled() && is_placed(c) && !self.pinned.get() {
            SpanPlacement::FirstTouch
        } else {
            SpanPlacement::Bound
        }
    }

    /// A span for class `c`: parked empty in our arena, else fresh from the node's domain
    /// (after giving free memory back to the OS once if the OS refused). Null if out of memory.
    fn new_span(&self, c: usize) -> *mut Page {
        let n = span_pages(c);
        let placement = self.placement_for(c);
        let mut page = global::arena(self.arena.get() as usize).take_empty(n, placement);
        if !page.is_null() {
            // SAFETY: an unused span of our node, ours now.
            unsafe {
                if (*page).kind() == PageKind::Small && (*page).class.get() as usize == c {
                    return page; // same class: its lists are intact
                }
                crate::domain::init_span(page, n, PageKind::Small);
                (*page).is_zero.set(false);
            }
        } else {
            let d = global::domain(self.node());
            page = d.alloc_span(n, PageKind::Small, self.arena.get(), placement);
            if page.is_null() && global::release_free_memory() {
                page = d.alloc_span(n, PageKind::Small, self.arena.get(), placement);
            }
            if page.is_null() {
                return page;
            }
            bump(&self.counters.pages_fresh, 1);
        }
        let flags = if placement == SpanPlacement::FirstTouch { PF_PLACED } else { 0 };
        // SAFETY: a fresh (or re-carved) span head, ours.
        unsafe { (*page).init_small(c, class_size(c), span_blocks(c), flags) };
        page
    }

    /// Takes a page of class `c` from this CPU's arena or another arena of this node.
    fn take_from_arenas(&self, c: usize) -> *mut Page {
        let own = global::arena(self.arena.get() as usize);
        let p = own.pop(c);
        if !p.is_null() {
            return p;
        }
        for &cpu in global::cpus_of_node(self.node()) {
            let i = global::arena_index(cpu as usize);
            if i != self.arena.get() as usize {
                let a = global::arena(i);
                if a.len() > 0 {
                    let p = a.pop(c);
                    if !p.is_null() {
                        return p;
                    }
                }
            }
        }
        let na = global::node_arena(self.node());
        if na != self.arena.get() as usize {
            return global::arena(na).pop(c);
        }
        ptr::null_mut()
    }

    /// Makes an unowned page ours and puts it at the head of its queue.
    fn adopt(&self, c: usize, page: *mut Page) {
        // SAFETY: the page came from an arena or the domain: nobody else owns it.
        unsafe {
            (*page).set_owner(self as *const Heap as usize);
            (*page).next.set(ptr::null_mut());
            (*page).prev.set(ptr::null_mut());
        }
        self.queue_push_front(c, page);
    }

    fn queue_push_front(&self, c: usize, page: *mut Page) {
        let head = self.bins[c].page.get();
        // SAFETY: our pages.
        unsafe {
            (*page).prev.set(ptr::null_mut());
            if head == empty_page() {
                (*page).next.set(ptr::null_mut());
                self.tails[c].set(page);
            } else {
                (*page).next.set(head);
                (*head).prev.set(page);
            }
        }
        self.bins[c].page.set(page);
    }

    fn queue_push_back(&self, c: usize, page: *mut Page) {
        let tail = self.tails[c].get();
        if tail.is_null() {
            return self.queue_push_front(c, page);
        }
        // SAFETY: our pages; `tail` ends queue `c`.
        unsafe {
            (*page).next.set(ptr::null_mut());
            (*page).prev.set(tail);
            (*tail).next.set(page);
        }
        self.tails[c].set(page);
    }

    fn queue_remove(&self, c: usize, page: *mut Page) {
        // SAFETY: our pages, `page` is in queue `c`.
        unsafe {
            let (p, n) = ((*page).prev.get(), (*page).next.get());
            if p.is_null() {
                self.bins[c].page.set(if n.is_null() { empty_page() } else { n });
            } else {
                (*p).next.set(n);
            }
            if n.is_null() {
                self.tails[c].set(p);
            } else {
                (*n).prev.set(p);
            }
            (*page).next.set(ptr::null_mut());
            (*page).prev.set(ptr::null_mut());
        }
    }

    /// Sends the pending remote-free batch home.
    pub(crate) fn flush_pending(&self) {
        let n = self.pend_count.get();
        if n == 0 {
            return;
        }
        let page = self.pend_page.get();
        // SAFETY: the batch holds allocated blocks of `page`, chained head..tail.
        unsafe {
            let pg = &*page;
            count_foreign_free(self as *const Heap as *mut Heap, pg, pg.class.get() as usize, n as u64);
            if page::push_remote(pg, self.pend_head.get(), self.pend_tail.get()) {
                queue_unowned(page);
            }
        }
        bump(&self.counters.remote_frees, n as u64);
        bump(&self.counters.remote_batches, 1);
        self.pend_page.set(empty_page());
        self.pend_head.set(ptr::null_mut());
        self.pend_tail.set(ptr::null_mut());
        self.pend_count.set(0);
    }

    /// Gives every page back: empty ones to their arenas' caches or domains, the others to their
    /// home arenas.
    pub(crate) fn abandon_all(&self) {
        self.flush_pending();
        // Pages in use to their arenas, unused ones to their domains in one batch (one lock
        // round instead of one per page: threads exit in bursts).
        let mut unused = ptr::null_mut();
        for c in 0..CLASSES {
            let mut p = self.bins[c].page.get();
            while p != empty_page() && !p.is_null() {
                // SAFETY: our page.
                let next = unsafe { (*p).next.get() };
                // SAFETY: as above.
                self.fold_page(unsafe { &*p });
                release_page(p, &mut unused);
                p = next;
            }
            self.bins[c].page.set(empty_page());
            self.tails[c].set(ptr::null_mut());
        }
        // SAFETY: unowned, unused span heads linked through `next`, ours to give back.
        unsafe { global::free_span_list(unused) };
    }
}

/// Hands out a block of `page` if it has one: from its free list, after collecting frees, or
/// carved (or, placed spans, the next untouched block). Returns the block and whether it reads
/// as zero.
///
/// # Safety
/// The caller owns `page`.
unsafe fn take_block(page: &Page) -> Option<(*mut Block, bool)> {
    // SAFETY: the caller owns the page.
    unsafe {
        if !page.free.get().is_null() || page::collect(page) {
            return Some((page::pop(page), false));
        }
        if is_placed(page.class.get() as usize) {
            let (b, zero) = page::bump(page);
            return (!b.is_null()).then_some((b, zero));
        }
        if page::extend(page) {
            return Some((page::pop(page), false));
        }
    }
    None
}

/// Bookkeeping for a placed block taken out of a home pool.
///
/// # Safety
/// `b` is a block of a live span that was in a pool.
unsafe fn pool_taken(b: *mut Block, c: usize) {
    if let Some((_, page)) = segment::lookup(b as *const u8) {
        // SAFETY: the block's live span.
        unsafe {
            let pg = &*page;
            pg.clear_pooled(pg.block_index(b as usize));
            let d = global::domain(pg.node());
            d.counters.class_allocs[c].fetch_add(1, Ordering::Relaxed);
            d.counters.node_allocs.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The node a large or huge allocation of the calling thread should come from (creating the
/// thread's heap on its first allocation). `None` if the allocator cannot initialise.
pub(crate) fn alloc_node() -> Option<usize> {
    let h = tls::heap();
    if !tls::is_sentinel(h) {
        // SAFETY: our own heap. The thread may have moved since its last small refill: follow
        // it before choosing the node of a large or huge block.
        unsafe {
            (*h).update_cpu_now();
            return Some((*h).node());
        }
    }
    if h == dead_heap() {
        if !global::ensure_init() {
            return None;
        }
        return Some(global::node_of_cpu(Sys::current_cpu().unwrap_or(0)));
    }
    let h = init_thread_heap();
    // SAFETY: our own new heap.
    if h.is_null() { None } else { Some(unsafe { (*h).node() }) }
}

/// Allocates a large block (one span of whole pages) from node `node`'s domain: a span freed on
/// this node whose pages are here (home pool), one parked in the CPU's arena, or a fresh one.
pub(crate) fn alloc_large(node: usize, size: usize, zero: bool) -> *mut u8 {
    let n = (size + PAGE_SIZE - 1) >> PAGE_SHIFT;
    let d = global::domain(node);
    let placement = if global::policy_covers(size) {
        SpanPlacement::Policy
    } else if global::numa_enabled() {
        SpanPlacement::FirstTouch
    } else {
        SpanPlacement::Bound
    };
    let h = tls::heap();
    // SAFETY: a real heap is this thread's; sentinels are only read.
    let arena = unsafe { (*h).arena.get() };
    let mut page = if placement == SpanPlacement::FirstTouch { d.pool.take_large(n) } else { ptr::null_mut() };
    let pooled = !page.is_null();
    if page.is_null() && !tls::is_sentinel(h) && global::arena_node(arena as usize) == node {
        page = global::arena(arena as usize).take_empty(n, placement);
        if !page.is_null() {
            // SAFETY: an unused span of this node, ours now.
            unsafe {
                crate::domain::init_span(page, n, PageKind::Large);
                (*page).is_zero.set(false);
            }
        }
    }
    if page.is_null() {
        let arena = if tls::is_sentinel(h) || global::arena_node(arena as usize) != node { global::node_arena(node) as u32 } else { arena };
        page = d.alloc_span(n, PageKind::Large, arena, placement);
        if page.is_null() && global::release_free_memory() {
            page = d.alloc_span(n, PageKind::Large, arena, placement);
        }
        if page.is_null() {
            return ptr::null_mut();
        }
    }
    // SAFETY: a span of ours until freed.
    unsafe {
        let pg = &*page;
        pg.block_size.set((n << PAGE_SHIFT) as u32);
        pg.start.set(pg.span_start() as usize);
        pg.set_reserved(1);
        pg.set_capacity(1);
        pg.reset_counts(1);
        pg.flags.set(0);
        if !pooled {
            pg.homes[0].store(0, Ordering::Relaxed); // (a pooled span keeps its home: its pages')
        }
        let c = &global::domain(pg.node()).counters;
        c.large_blocks.fetch_add(1, Ordering::Relaxed);
        c.large_bytes.fetch_add((n << PAGE_SHIFT) as u64, Ordering::Relaxed);
        c.large_allocs.fetch_add(1, Ordering::Relaxed);
        let p = pg.span_start();
        if zero && !pg.is_zero.get() {
            ptr::write_bytes(p, 0, size);
        }
        // The program writes it from now on (a pooled or parked span comes back dirty).
        pg.is_zero.set(false);
        p
    }
}

/// Frees a large block: back to its arena's empty cache or its domain, or, when its pages turned
/// out to be on another node (first touch), to that node's home pool.
///
/// # Safety
/// `page` is the head of a large span; `p` its start, passed to free by the program.
unsafe fn free_large(h: *mut Heap, page: *mut Page, p: *mut u8) {
    // SAFETY: a live large span head.
    let pg = unsafe { &*page };
    if pg.counts.compare_exchange(1, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        os::fatal(format_args!("free(): double free of {:p}", p));
    }
    let span_node = pg.node();
    let c = &global::domain(span_node).counters;
    c.large_blocks.fetch_sub(1, Ordering::Relaxed);
    c.large_bytes.fetch_sub(pg.span_bytes() as u64, Ordering::Relaxed);
    c.large_frees.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `h` is this thread's heap or a sentinel.
    let freer = if tls::is_sentinel(h) { usize::MAX } else { unsafe { (*h).node() } };
    if freer != span_node {
        c.remote_node_frees.fetch_add(1, Ordering::Relaxed);
    }
    if pg.placement() == SpanPlacement::FirstTouch && global::numa_enabled() {
        match placement::home_of(p, pg.span_bytes()) {
            Home::On(n) if n != span_node && n < global::domain_slots() && global::domain(n).node == n => {
                let dest = global::domain(n);
                dest.counters.went_home.fetch_add(1, Ordering::Relaxed);
                pg.set_home(0, n);
                // SAFETY: the program freed it; its pages are on `n`.
                unsafe { dest.pool.put_large(page) };
                return;
            }
            Home::Mixed(_) => {
                // Pages on several nodes: purge, so the next user's first touch places them.
                // SAFETY: the freed span's memory, ours.
                unsafe { os::purge(p, pg.span_bytes(), os::PurgeMode::DontNeed) };
                c.purged_bytes.fetch_add(pg.span_bytes() as u64, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    // SAFETY: unused and unowned now.
    unsafe { give_back_span(page) };
}

/// Expensive invariant checks (`--features debug-invariants`): every test runs with them too.
#[cfg(feature = "debug-invariants")]
mod check {
    use super::*;

    /// A freed pointer must be the start of a carved block of a live small span, or a large
    /// span's start, and (for the owner) not already in the page's free lists.
    pub(super) unsafe fn on_free(seg: *mut Segment, page: *mut Page, p: *mut u8) {
        // SAFETY: live segment and descriptor (the caller checked the segment map).
        unsafe {
            if (*seg).kind == SEG_HUGE || (*page).kind() != PageKind::Small {
                return;
            }
            let pg = &*page;
            if !pg.is_block(p as usize) || pg.block_index(p as usize) >= pg.capacity() as usize {
                os::fatal(format_args!("free(): invalid pointer {:p} (not a block start: never handed out; debug-invariants build)", p));
            }
            if pg.owned_by(tls::heap() as usize) && page::in_free_lists(pg, p.cast()) {
                os::fatal(format_args!("free(): double free of {:p} (debug-invariants build)", p));
            }
        }
    }
}

/// Gives one page away (heap teardown or migration): to its arena if blocks are in use, else
/// onto `unused` (linked through `next`) for the caller to hand to the domains.
fn release_page(page: *mut Page, unused: &mut *mut Page) {
    // SAFETY: the caller owns the page and has taken it out of its lists.
    unsafe {
        (*page).next.set(ptr::null_mut());
        (*page).prev.set(ptr::null_mut());
        page::disown(&*page);
        if page::is_unused(&*page) {
            (*page).next.set(*unused);
            *unused = page;
        } else {
            global::arena((*page).arena.get() as usize).push(page);
        }
    }
}

/// The thread-exit destructor (registered with `pthread_key_create`).
///
/// # Safety
/// Called by libc with the value stored for the exiting thread.
pub(crate) unsafe extern "C" fn thread_done(arg: *mut core::ffi::c_void) {
    let h = arg as *mut Heap;
    if h.is_null() || tls::is_sentinel(h) {
        return;
    }
    // Quarantine build: the thread's quarantine is really freed while its heap still counts them.
    #[cfg(feature = "quarantine")]
    crate::quarantine::flush();
    // SAFETY: the exiting thread's own heap.
    unsafe {
        (*h).abandon_all();
        (*h).fold_counts();
    }
    tls::set_heap(dead_heap());
    global::heap_release(h);
}
