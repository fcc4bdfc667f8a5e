//! The thread cache ("heap"): one per thread, the only layer the fast path touches.
//!
//! A heap owns pages: per size class a queue of pages with free blocks (the head is where
//! allocation happens) and one list of full pages. The owner allocates by popping the head
//! page's `free` list and frees by pushing onto the page's `local_free`: no atomics, no locks.
//!
//! Fast path (`alloc_small`): load the TLS heap, the class's head page and its first free block;
//! one test for "have a block and still on the same CPU"; unlink and count. About ten
//! instructions. Everything else is `#[cold]`:
//!
//! * refill: collect frees into the head page, carve more of its span, move to the next page,
//!   then take a queued page from this CPU's arena (or another arena of the same node), then a
//!   fresh span from the node's domain;
//! * migration: when the kernel reports another CPU (rseq `cpu_id`, compared on the fast path
//!   on NUMA machines) on another node, the heap hands all its pages to their home arenas and
//!   continues with memory of the new node;
//! * remote frees (block of a page this heap does not own): batched per page and pushed home
//!   with one CAS (`page.rs`), so the block is reused only by its own node;
//! * thread exit: a `pthread_key` destructor gives every page back (arena or domain) and parks
//!   the thread on the dead heap, whose allocations go to a shared, locked orphan heap.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::global;
use crate::os::{Os, Sys};
use crate::page;
use crate::remote;
use crate::segment::{
    empty_page, Block, Page, PageKind, Segment, EMPTY_PAGE, IN_FULL, PAGE_SHIFT, PAGE_SIZE, SEG_HUGE,
};
use crate::size_class::{class_size, span_blocks, span_pages, CLASSES};
use crate::tls;
use crate::util;
use crate::{huge, segment};

/// Remote frees batched per page before one CAS sends them home.
const REMOTE_BATCH: u32 = 32;
/// Slow-path calls between purge checks of the node's domain.
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

impl HeapCounters {
    fn bump(c: &AtomicU64, n: u64) {
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

/// Sentinel kinds.
const KIND_NORMAL: u8 = 0;
const KIND_EMPTY: u8 = 1;
const KIND_DEAD: u8 = 2;

/// A thread's cache. See the module documentation.
#[repr(C)]
pub struct Heap {
    /// Queue heads per class (the empty page when the queue is empty). Fast path.
    pages: [Cell<*mut Page>; CLASSES],
    /// The kernel's current-CPU word for this thread, or `&self.cpu` when not tracked.
    cpu_ptr: Cell<*const u32>,
    /// The CPU this heap last saw.
    cpu: Cell<u32>,
    /// The node whose memory the heap hands out.
    node: Cell<u32>,
    /// The arena of `cpu`.
    arena: Cell<u32>,
    kind: Cell<u8>,
    /// Allocates for a fixed node (node-targeted allocation): never follows the CPU.
    pinned: Cell<bool>,
    tails: [Cell<*mut Page>; CLASSES],
    full: Cell<*mut Page>,
    /// Pages of ours that received a remote free while full (pushed by the freeing thread).
    unfull: AtomicPtr<Page>,
    pend_page: Cell<*mut Page>,
    pend_head: Cell<*mut Block>,
    pend_tail: Cell<*mut Block>,
    pend_count: Cell<u32>,
    ticks: Cell<u32>,
    /// Registry links (live heaps, or the free pool).
    pub(crate) reg_next: Cell<*mut Heap>,
    pub(crate) reg_prev: Cell<*mut Heap>,
    pub(crate) counters: HeapCounters,
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
        pages: [const { Cell::new(&EMPTY_PAGE.0 as *const Page as *mut Page) }; CLASSES],
        cpu_ptr: Cell::new(&ZERO_CPU),
        cpu: Cell::new(0),
        node: Cell::new(0),
        arena: Cell::new(0),
        kind: Cell::new(kind),
        pinned: Cell::new(false),
        tails: [const { Cell::new(ptr::null_mut()) }; CLASSES],
        full: Cell::new(ptr::null_mut()),
        unfull: AtomicPtr::new(ptr::null_mut()),
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
    })
}

/// Every thread's heap before its first allocation.
pub(crate) static EMPTY_HEAP: SyncHeap = sentinel(KIND_EMPTY);
/// The heap of threads past their teardown.
pub(crate) static DEAD_HEAP: SyncHeap = sentinel(KIND_DEAD);
/// The empty heap's address, for const contexts.
#[allow(dead_code)]
pub(crate) const EMPTY_HEAP_PTR: *const Heap = &EMPTY_HEAP.0;

#[inline(always)]
pub(crate) fn empty_heap() -> *mut Heap {
    &EMPTY_HEAP.0 as *const Heap as *mut Heap
}
#[inline(always)]
pub(crate) fn dead_heap() -> *mut Heap {
    &DEAD_HEAP.0 as *const Heap as *mut Heap
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
    let h = tls::heap();
    // SAFETY: `h` is a valid heap (or sentinel); `pages[c]` a valid page (or the empty page);
    // `cpu_ptr` points to a live u32 for the thread's life. The page is owned by this thread.
    unsafe {
        let page = (*h).pages.get_unchecked(c).get();
        let b = (*page).free.get();
        if likely(!b.is_null() && ptr::read_volatile((*h).cpu_ptr.get()) == (*h).cpu.get()) {
            (*page).free.set(page::next_of(b));
            (*page).set_used((*page).used() + 1);
            return b.cast();
        }
        alloc_small_slow(h, c)
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
        if likely((*page).heap.load(Ordering::Relaxed) == h && (*page).flags.get() == 0) {
            let b = p as *mut Block;
            page::set_next(b, (*page).local_free.get());
            (*page).local_free.set(b);
            let u = (*page).used().wrapping_sub(1);
            (*page).set_used(u);
            if !likely(u != 0) {
                page_empty(h, page);
            }
            return;
        }
        free_slow(h, seg, page, p)
    }
}

#[cold]
#[inline(never)]
fn free_unknown(p: *mut u8) {
    match segment::big_aligned_segment(p) {
        // SAFETY: a live huge header whose data is p.
        Some(seg) => unsafe { huge::free(seg, p) },
        None => util::fatal(format_args!("free(): invalid pointer {:p} (not allocated by domalloc)", p)),
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
        match (*page).kind() {
            PageKind::Small => {
                if (*page).heap.load(Ordering::Relaxed) == h {
                    // Ours but in the full list: back to the queue, then a normal local free.
                    (*h).unfull_page(page);
                    let b = p as *mut Block;
                    page::set_next(b, (*page).local_free.get());
                    (*page).local_free.set(b);
                    let u = (*page).used() - 1;
                    (*page).set_used(u);
                    if u == 0 {
                        page_empty(h, page);
                    }
                } else {
                    remote_free(h, page, p as *mut Block);
                }
            }
            PageKind::Large => {
                if (*page).start() != p {
                    util::fatal(format_args!("free(): invalid pointer {:p} (inside a large block)", p));
                }
                let d = global::domain((*seg).node as usize);
                if !d.free_large(page) {
                    util::fatal(format_args!("free(): double free of {:p}", p));
                }
            }
            PageKind::Free => util::fatal(format_args!("free(): double free or invalid pointer {:p}", p)),
            PageKind::Meta => util::fatal(format_args!("free(): invalid pointer {:p} (allocator metadata)", p)),
        }
    }
}

/// Remote frees by threads that have no heap (not yet, or no more), for the stats.
pub(crate) static HEAPLESS_REMOTE_FREES: AtomicU64 = AtomicU64::new(0);

/// Sends a block home: batched per page when the thread has a heap.
///
/// # Safety
/// `b` is an allocated block of `page`, which this thread does not own.
unsafe fn remote_free(h: *mut Heap, page: *mut Page, b: *mut Block) {
    // SAFETY: sentinels are never written; a real heap is ours.
    unsafe {
        if tls::is_sentinel(h) {
            page::set_next(b, ptr::null_mut());
            HEAPLESS_REMOTE_FREES.fetch_add(1, Ordering::Relaxed);
            return page::push_remote(&*page, b, b);
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

/// A page of ours dropped to zero used blocks.
#[cold]
#[inline(never)]
unsafe fn page_empty(h: *mut Heap, page: *mut Page) {
    // SAFETY: the page is ours (owner path).
    unsafe {
        let hh = &*h;
        let c = (*page).class.get() as usize;
        // Keep the only page of a class: allocating again soon is likely.
        if hh.pages[c].get() == page && (*page).next.get().is_null() {
            return;
        }
        // A stale notification for this page may sit in `unfull`: handle them all first.
        hh.drain_unfull();
        if (*page).flags.get() & IN_FULL != 0 {
            return; // cannot happen for used == 0, but never free a listed page
        }
        hh.queue_remove(c, page);
        page::disown(&*page);
        // A one-page span parks in its CPU's arena (a per-CPU lock, rarely contended) for the
        // next refill of any thread on this node; `global::maintain` hands arena pages that stay
        // unused back to the domain after the purge delay. Bigger spans, spans past the bound
        // and everything when memory is to be returned at once go straight to the domain.
        let a = global::arena((*page).arena.get() as usize);
        if (*page).span_pages.get() == 1 && a.len() < ARENA_KEEP_EMPTY && crate::options::get().purge_delay_ms != 0 {
            a.push(page);
        } else {
            global::domain((*(*page).segment()).node as usize).free_span(page);
        }
    }
}

/// Pages an arena may hold before emptied pages go straight back to the domain (at most 1 MiB
/// of parked one-page spans per CPU).
const ARENA_KEEP_EMPTY: usize = 16;

#[cold]
#[inline(never)]
unsafe fn alloc_small_slow(h: *mut Heap, c: usize) -> *mut u8 {
    let mut h = h;
    if tls::is_sentinel(h) {
        if h == dead_heap() {
            return global::orphan_alloc(c);
        }
        h = init_thread_heap();
        if h.is_null() {
            return ptr::null_mut();
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
            self.pages[c].set(empty_page());
            self.tails[c].set(ptr::null_mut());
        }
        self.full.set(ptr::null_mut());
        self.unfull.store(ptr::null_mut(), Ordering::Relaxed);
        self.pend_page.set(empty_page());
        self.pend_head.set(ptr::null_mut());
        self.pend_tail.set(ptr::null_mut());
        self.pend_count.set(0);
        self.kind.set(KIND_NORMAL);
        self.pinned.set(false);
        let cpu = Sys::current_cpu().unwrap_or(0) as u32;
        self.cpu.set(cpu);
        self.arena.set(global::arena_index(cpu as usize) as u32);
        self.node.set(global::node_of_cpu(cpu as usize) as u32);
        let rseq = Sys::cpu_id_ptr();
        if track_cpu && global::numa_enabled() && !rseq.is_null() {
            self.cpu_ptr.set(rseq);
            // SAFETY: rseq area of this thread.
            let now = unsafe { ptr::read_volatile(rseq) };
            self.cpu.set(now);
            self.arena.set(global::arena_index(now as usize) as u32);
            self.node.set(global::node_of_cpu(now as usize) as u32);
        } else {
            self.cpu_ptr.set(&self.cpu as *const Cell<u32> as *const u32);
        }
    }

    /// The node this heap allocates from.
    pub(crate) fn node(&self) -> usize {
        self.node.get() as usize
    }

    /// Fixes the heap to node `node` (node-targeted allocation heaps).
    pub(crate) fn pin_to_node(&self, node: usize) {
        self.pinned.set(true);
        self.node.set(node as u32);
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
            self.node.set(node);
            HeapCounters::bump(&self.counters.migrations, 1);
            global::domain(node as usize).counters.migrations_in.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refill path for class `c`: returns a block or null (out of memory).
    ///
    /// # Safety
    /// `self` is the calling thread's heap (or the orphan heap under its lock).
    pub(crate) unsafe fn alloc_refill(&self, c: usize) -> *mut u8 {
        self.ticks.set(self.ticks.get().wrapping_add(1));
        self.update_cpu();
        self.flush_pending();
        self.drain_unfull();
        if self.ticks.get() % MAINTAIN_EVERY == 0 {
            global::maintain(self.node());
        }
        let page = self.find_page(c);
        if page.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: `find_page` returns an owned page with a free block.
        unsafe {
            let p = &*page;
            let b = p.free.get();
            p.free.set(page::next_of(b));
            p.set_used(p.used() + 1);
            b.cast()
        }
    }

    /// Finds an owned page of class `c` with a free block (queue, arena, domain).
    fn find_page(&self, c: usize) -> *mut Page {
        // Our own queue: each turn either finds blocks or moves a full page out of the queue.
        loop {
            let page = self.pages[c].get();
            if page == empty_page() {
                break;
            }
            if self.usable_or_retire(c, page) {
                return page;
            }
        }
        // Queued pages of this node (left by exited or migrated threads). Full ones are adopted
        // into our full list, where remote frees will find them.
        for _ in 0..16 {
            let page = self.take_from_arenas(c);
            if page.is_null() {
                break;
            }
            HeapCounters::bump(&self.counters.pages_from_arena, 1);
            self.adopt(c, page);
            if self.usable_or_retire(c, page) {
                return page;
            }
        }
        // A fresh span.
        let d = global::domain(self.node());
        let page = d.alloc_span(span_pages(c), PageKind::Small, self.arena.get());
        if page.is_null() {
            return page;
        }
        HeapCounters::bump(&self.counters.pages_fresh, 1);
        // SAFETY: a fresh span head, ours.
        unsafe {
            let p = &*page;
            p.class.set(c as u8);
            p.block_size.set(class_size(c) as u32);
            p.reserved.set(span_blocks(c) as u32);
        }
        self.adopt(c, page);
        // SAFETY: owned now.
        unsafe { page::extend(&*page) };
        page
    }

    /// For a page at the head of queue `c`: true if it has a free block now (after collecting
    /// or carving); otherwise moves it to the full list (unless frees raced in) and returns false.
    fn usable_or_retire(&self, c: usize, page: *mut Page) -> bool {
        // SAFETY: pages in our queue are ours.
        unsafe {
            let p = &*page;
            if page::collect(p) || page::extend(p) {
                return true;
            }
            if page::try_mark_full(p) {
                self.queue_remove(c, page);
                self.full_push(page);
                false
            } else {
                // Remote frees arrived between the collect and the mark: take them.
                page::collect(p)
            }
        }
    }

    /// Takes a page of class `c` from this CPU's arena or another arena of this node.
    fn take_from_arenas(&self, c: usize) -> *mut Page {
        // A node heap (pinned to its node) runs on any CPU: its own arena index says nothing
        // about its node, so it looks only at the arenas of its node's CPUs (none for a
        // memory-only node).
        if !self.pinned.get() {
            let own = global::arena(self.arena.get() as usize);
            let p = own.pop(c);
            if !p.is_null() {
                return p;
            }
        }
        for &cpu in global::cpus_of_node(self.node()) {
            let a = global::arena(global::arena_index(cpu as usize));
            if a.len() > 0 {
                let p = a.pop(c);
                if !p.is_null() {
                    return p;
                }
            }
        }
        ptr::null_mut()
    }

    /// Makes an unowned page ours and puts it at the head of its queue.
    fn adopt(&self, c: usize, page: *mut Page) {
        // SAFETY: the page came from an arena or the domain: nobody else owns it.
        unsafe {
            (*page).heap.store(self as *const Heap as *mut Heap, Ordering::Release);
            (*page).flags.set(0);
            (*page).next.set(ptr::null_mut());
            (*page).prev.set(ptr::null_mut());
        }
        self.queue_push_front(c, page);
    }

    fn queue_push_front(&self, c: usize, page: *mut Page) {
        let head = self.pages[c].get();
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
        self.pages[c].set(page);
    }

    fn queue_push_back(&self, c: usize, page: *mut Page) {
        let tail = self.tails[c].get();
        if tail.is_null() {
            return self.queue_push_front(c, page);
        }
        // SAFETY: our pages.
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
                self.pages[c].set(if n.is_null() { empty_page() } else { n });
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

    fn full_push(&self, page: *mut Page) {
        // SAFETY: our page, just removed from its queue.
        unsafe {
            (*page).flags.set((*page).flags.get() | IN_FULL);
            let head = self.full.get();
            (*page).prev.set(ptr::null_mut());
            (*page).next.set(head);
            if !head.is_null() {
                (*head).prev.set(page);
            }
        }
        self.full.set(page);
    }

    fn full_remove(&self, page: *mut Page) {
        // SAFETY: our page in the full list.
        unsafe {
            let (p, n) = ((*page).prev.get(), (*page).next.get());
            if p.is_null() {
                self.full.set(n);
            } else {
                (*p).next.set(n);
            }
            if !n.is_null() {
                (*n).prev.set(p);
            }
            (*page).next.set(ptr::null_mut());
            (*page).prev.set(ptr::null_mut());
            (*page).flags.set((*page).flags.get() & !IN_FULL);
        }
    }

    /// Moves a page of ours from the full list back to the end of its queue.
    fn unfull_page(&self, page: *mut Page) {
        // SAFETY: our page.
        unsafe {
            if (*page).flags.get() & IN_FULL == 0 {
                return;
            }
            page::clear_full(&*page);
            self.full_remove(page);
            let c = (*page).class.get() as usize;
            self.queue_push_back(c, page);
        }
    }

    /// Called by a remote freer: page (ours, full) has a free block now.
    pub(crate) fn notify_unfull(&self, page: &Page) {
        let page = page as *const Page as *mut Page;
        // SAFETY: the notifier has exclusive use of `next_unfull` while NOTIFYING.
        unsafe { remote::unfull_push(&self.unfull, page) };
    }

    /// Handles all notifications: pages still in our full list go back to their queues.
    fn drain_unfull(&self) {
        // SAFETY: only pages of ours are pushed, and we drain before giving any page away.
        unsafe { remote::unfull_drain(&self.unfull, |p| self.unfull_page(p)) };
    }

    /// Sends the pending remote-free batch home.
    pub(crate) fn flush_pending(&self) {
        let n = self.pend_count.get();
        if n == 0 {
            return;
        }
        let page = self.pend_page.get();
        // SAFETY: the batch holds allocated blocks of `page`, chained head..tail.
        unsafe { page::push_remote(&*page, self.pend_head.get(), self.pend_tail.get()) };
        HeapCounters::bump(&self.counters.remote_frees, n as u64);
        HeapCounters::bump(&self.counters.remote_batches, 1);
        self.pend_page.set(empty_page());
        self.pend_head.set(ptr::null_mut());
        self.pend_tail.set(ptr::null_mut());
        self.pend_count.set(0);
    }

    /// Gives every page back: empty ones to their domain, the others to their home arena.
    pub(crate) fn abandon_all(&self) {
        self.flush_pending();
        // 1. No more notifications: take full pages out of the FULL state.
        let mut p = self.full.get();
        while !p.is_null() {
            // SAFETY: our full pages.
            unsafe {
                page::clear_full(&*p);
                p = (*p).next.get();
            }
        }
        // 2. Discard pending notifications (all pages are handled below).
        self.unfull.store(ptr::null_mut(), Ordering::Relaxed);
        // 3. Release: pages in use to their arenas, unused ones to their domains in one batch
        // (one lock round instead of one per page: threads exit in bursts).
        let mut unused = ptr::null_mut();
        let mut p = self.full.get();
        while !p.is_null() {
            // SAFETY: our page.
            let next = unsafe { (*p).next.get() };
            release_page(p, &mut unused);
            p = next;
        }
        self.full.set(ptr::null_mut());
        for c in 0..CLASSES {
            let mut p = self.pages[c].get();
            while p != empty_page() && !p.is_null() {
                // SAFETY: our page.
                let next = unsafe { (*p).next.get() };
                release_page(p, &mut unused);
                p = next;
            }
            self.pages[c].set(empty_page());
            self.tails[c].set(ptr::null_mut());
        }
        // SAFETY: unowned, unused span heads linked through `next`, ours to give back.
        unsafe { global::free_span_list(unused) };
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

/// Allocates a large block (one span of whole pages) from node `node`'s domain.
pub(crate) fn alloc_large(node: usize, size: usize, zero: bool) -> *mut u8 {
    let n = (size + PAGE_SIZE - 1) >> PAGE_SHIFT;
    let d = global::domain(node);
    let page = d.alloc_span(n, PageKind::Large, 0);
    if page.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: fresh span, ours until returned.
    unsafe {
        let pg = &*page;
        pg.block_size.set((n << PAGE_SHIFT) as u32);
        pg.reserved.set(1);
        pg.capacity.set(1);
        pg.set_used(1);
        d.counters.large_blocks.fetch_add(1, Ordering::Relaxed);
        d.counters.large_bytes.fetch_add((n << PAGE_SHIFT) as u64, Ordering::Relaxed);
        let p = pg.start();
        if zero && !pg.is_zero.get() {
            ptr::write_bytes(p, 0, size);
        }
        p
    }
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
            let off = p as usize - pg.start() as usize;
            let bs = pg.block_size.get() as usize;
            if off % bs != 0 || off / bs >= pg.capacity.get() as usize {
                util::fatal(format_args!("free(): invalid pointer {:p} (not a block start; debug-invariants build)", p));
            }
            if pg.heap.load(Ordering::Relaxed) == tls::heap() {
                for list in [pg.free.get(), pg.local_free.get()] {
                    let mut b = list;
                    while !b.is_null() {
                        if b as *mut u8 == p {
                            util::fatal(format_args!("free(): double free of {:p} (debug-invariants build)", p));
                        }
                        b = page::next_of(b);
                    }
                }
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
pub(crate) unsafe extern "C" fn thread_done(arg: *mut libc::c_void) {
    let h = arg as *mut Heap;
    if h.is_null() || tls::is_sentinel(h) {
        return;
    }
    // Hardened build: the thread's quarantine is really freed while its heap still counts them.
    #[cfg(feature = "quarantine")]
    crate::quarantine::flush();
    // SAFETY: the exiting thread's own heap.
    unsafe { (*h).abandon_all() };
    tls::set_heap(dead_heap());
    global::heap_release(h);
}
