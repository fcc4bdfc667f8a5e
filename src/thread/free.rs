//! Every free, in one place (mimalloc's `free.c` is the model): the owner's fast path
//! ([`free`]: segment map, page, owner, block start, double-free screen, push), and the frees
//! that are not the owner's fast path: huge blocks, large spans, blocks of pages another
//! heap owns (batched per page and pushed home with one CAS, so a block is reused only by its
//! own node), blocks freed by threads without a heap, and placed blocks whose pages are on
//! another node than their span (they go to that node's home pool).

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::layout::{self, Block, Page, PageKind, Segment, PF_PLACED, SEG_HUGE};
use crate::node::COUNTED_NODES;
use crate::node::{self, Home};
use crate::sys::os::{self, Os, Sys};
use crate::thread::heap::{bump, empty_page, likely, Heap, REMOTE_BATCH};
use crate::thread::tls;

/// Frees a block (the fast path).
///
/// # Safety
/// `p` is non-null and was returned by this allocator (anything else is detected where cheap).
#[inline(always)]
pub(crate) unsafe fn free(p: *mut u8) {
    let seg = layout::segment_of(p);
    if !likely(layout::segmap_contains(seg)) {
        return crate::thread::free::free_unknown(p);
    }
    // SAFETY: the segment is live (its bit is set) and contains p.
    unsafe {
        let page = layout::page_of(seg, p);
        let h = tls::heap();
        #[cfg(feature = "debug-invariants")]
        crate::thread::heap::check::on_free(seg, page, p);
        // A flagged page's `owner` never equals a heap's address (`OWNER_SLOW`).
        if likely((*page).owner.load(Ordering::Relaxed) == h as usize) {
            let pg = &*page;
            let b = p as *mut Block;
            if !likely(pg.is_block(p as usize)) {
                not_a_block(p);
            }
            let key = layout::link_key();
            if !likely(!layout::may_be_freed(pg, b, key)) {
                // Cold, and a tail call: the fast path keeps no registers across a call.
                return free_suspect(h, page, b);
            }
            return local_free(h, page, b, key);
        }
        crate::thread::free::free_slow(h, seg, page, p)
    }
}

/// The owner's free of block `b` of `page` (checked already).
///
/// # Safety
/// `h` owns `page`; `b` is an allocated block start of it.
#[inline(always)]
pub(crate) unsafe fn local_free(h: *mut Heap, page: *mut Page, b: *mut Block, key: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        let pg = &*page;
        layout::set_next_k(b, pg.local_free.get(), key);
        pg.local_free.set(b);
        if !likely(!pg.count_free()) {
            crate::thread::refill::page_empty(h, page);
        }
    }
}

/// A block the refill just handed out to heap `h` that the program will not get (the heap
/// profiler serves a sampled allocation from a large block instead: `prof.rs`): it goes back
/// as the owner's local free puts a block back, so the page's counts see one allocation and one
/// free, folded at the next refill, and the live bytes do not move. (No placed-block check: the
/// program never had the block, whose home is what it was when the refill took it; an untouched
/// one gets its first OS page placed by the link written here, on the heap's node.)
///
/// # Safety
/// `h` is the calling thread's heap and owns `page`; `b` is an allocated block start of it,
/// counted in the page's counts (taken from its lists, carved, or bumped; not from a home pool).
#[cold]
pub(crate) unsafe fn free_unused(h: *mut Heap, page: *mut Page, b: *mut Block) {
    // SAFETY: the caller's contract is `local_free`'s.
    unsafe { local_free(h, page, b, layout::link_key()) }
}

/// The owner frees a block whose first word looks like a free-list link: confirmed against the
/// page's lists (abort on a double free), else freed normally.
#[cold]
#[inline(never)]
unsafe fn free_suspect(h: *mut Heap, page: *mut Page, b: *mut Block) {
    let _busy = tls::SlowPath::enter_outer(h);
    // SAFETY: `h` owns `page`; `b` is a block start of it.
    unsafe {
        owner_double_free_check(&*page, b);
        local_free(h, page, b, layout::link_key());
    }
}

#[cold]
#[inline(never)]
pub(crate) fn not_a_block(p: *mut u8) -> ! {
    os::fatal(format_args!("free(): invalid pointer {:p} (not a block start)", p))
}

/// The owner frees a block whose first word looks like a free-list link: aborts if it is in the
/// page's lists (a double free), else goes on (the program stored such a value by chance).
#[cold]
#[inline(never)]
pub(crate) unsafe fn owner_double_free_check(page: &Page, b: *mut Block) {
    // SAFETY: the caller owns the page. Collecting first brings remote frees into the lists.
    unsafe {
        if !layout::is_freed(page, b) {
            return;
        }
        layout::collect_remote(page);
        if layout::in_free_lists(page, b) {
            os::fatal(format_args!("free(): double free of {:p}", b));
        }
    }
}

#[cold]
#[inline(never)]
pub(crate) fn free_unknown(p: *mut u8) {
    match layout::big_aligned_segment(p) {
        // SAFETY: a live huge header whose data is p; a re-entered free (signal handler) waits.
        Some(seg) => unsafe {
            let h = tls::heap();
            if h == crate::thread::heap::busy_heap() {
                return crate::thread::reentry::defer_free(p);
            }
            let _busy = tls::SlowPath::enter_outer(h);
            free_huge(seg, p)
        },
        None => os::fatal(format_args!("free(): invalid pointer {:p} (not allocated by domalloc)", p)),
    }
}

/// Frees huge block `p` (cached or unmapped); a cached block waits for the sweep, which is told.
///
/// # Safety
/// `seg` is a live huge segment whose block is `p`, passed to free by the program.
unsafe fn free_huge(seg: *mut Segment, p: *mut u8) {
    // SAFETY: a live huge header (the caller's contract).
    crate::thread::prof::big_freed(p, unsafe { (*seg).huge_size.get() });
    // SAFETY: forwarded.
    unsafe { node::huge_free(seg, p) };
    crate::arena::purge_wanted();
}

#[cold]
#[inline(never)]
pub(crate) unsafe fn free_slow(h: *mut Heap, seg: *mut Segment, page: *mut Page, p: *mut u8) {
    if h == crate::thread::heap::busy_heap() {
        // A signal handler interrupted one of this thread's slow paths: the block waits.
        // SAFETY: a block of a live segment, passed to free.
        return unsafe { crate::thread::reentry::defer_free(p) };
    }
    let _busy = tls::SlowPath::enter_outer(h);
    // SAFETY: live segment/page (caller); page fields read per the ownership rules.
    unsafe {
        if (*seg).kind == SEG_HUGE {
            return free_huge(seg, p);
        }
        let pg = &*page;
        match pg.kind() {
            PageKind::Small => {
                if !pg.is_block(p as usize) {
                    not_a_block(p);
                }
                let b = p as *mut Block;
                if pg.flags.get() & PF_PLACED != 0 && crate::config::numa_enabled() {
                    let home = placed_home(pg, b);
                    if home != pg.node() {
                        return to_home_pool(h, pg, b, home);
                    }
                }
                // (Same node only: the heap that gave the page up may since have been recycled for
                // a thread on another node, and a heap hands out only its own node's memory.)
                if !tls::is_sentinel(h) && pg.node() == (*h).node() && layout::reclaim(pg, h as usize) {
                    // A page we gave up (full) and nobody else freed into since: ours again, at
                    // the back of its queue, so that it gathers frees while allocation goes on
                    // from the head (at the front, its one free block would be taken at once
                    // and the page given up again: a slow path for every block).
                    let c = pg.class.get() as usize;
                    (*h).queue_push_back(c, page);
                }
                if pg.owned_by(h as usize) {
                    owner_double_free_check(pg, b);
                    local_free(h, page, b, layout::link_key());
                } else {
                    remote_free(h, page, b);
                }
            }
            PageKind::Large => {
                if pg.span_start() != p {
                    os::fatal(format_args!("free(): invalid pointer {:p} (inside a large block)", p));
                }
                crate::thread::prof::big_freed(p, pg.block_size.get() as usize);
                crate::thread::large::free(h, page, p);
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
    let n = match node::home_of(b as *const u8, page.block_size.get() as usize) {
        Home::On(n) | Home::Mixed(n) if n < crate::node::domain_slots() && crate::node::domain(n).node == n => n,
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
    let dest = crate::node::domain(home);
    dest.counters.went_home.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `h` is this thread's heap when not a sentinel; the block is resident on `home`.
    if !tls::is_sentinel(h) && unsafe { (*h).node() } == home && unsafe { (*h).cache_placed(c, b) } {
        return;
    }
    crate::sys::event(crate::sys::Event::HomePoolPut);
    // SAFETY: the caller's block, resident on `home`.
    unsafe { dest.pool.put_block(c, b) };
}

/// Counts `n` blocks of class `c` of `page` freed by `h` (a heap that does not own the page, or
/// a sentinel): in the heap's own counters (plain stores, no shared line), else in the page's
/// domain.
fn count_foreign_free(h: *mut Heap, page: &Page, c: usize, n: u64) {
    crate::thread::prof::freed_small(h, c, n);
    if tls::is_sentinel(h) {
        let d = crate::node::domain(page.node());
        d.counters.class_frees[c].fetch_add(n, Ordering::Relaxed);
        d.counters.node_frees.fetch_add(n, Ordering::Relaxed);
        // Remote only if the freeing thread runs on another node (a rare, slow path: asking is
        // cheap next to the shared atomics above).
        if crate::node::node_of_cpu(Sys::current_cpu().unwrap_or(0)) != page.node() {
            d.counters.remote_node_frees.fetch_add(n, Ordering::Relaxed);
        }
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
unsafe fn remote_free(mut h: *mut Heap, page: *mut Page, b: *mut Block) {
    // SAFETY: sentinels are never written; a real heap is ours; the page is live.
    unsafe {
        let pg = &*page;
        if layout::is_freed(pg, b) {
            // In another thread's lists, in a remote chain, or in our own pending batch: a
            // double free (or, with about 2^-50 odds, a program word that looks like a link).
            os::fatal(format_args!("free(): double free of {:p}", b));
        }
        if h == crate::thread::heap::empty_heap() {
            // A thread that only frees (the consumer of a producer/consumer pair) gets a heap
            // on its first remote free, as on its first malloc: its frees are then batched
            // per page (one CAS per batch) and counted in its own counters, instead of one
            // CAS, two shared atomic adds and a CPU query per block.
            let own = crate::thread::init::init_thread_heap();
            if !own.is_null() {
                h = own;
            }
        }
        if tls::is_sentinel(h) {
            layout::set_next(b, ptr::null_mut());
            HEAPLESS_REMOTE_FREES.fetch_add(1, Ordering::Relaxed);
            count_foreign_free(h, pg, pg.class.get() as usize, 1);
            if layout::push_remote(pg, b, b) {
                queue_unowned(page);
            }
            return;
        }
        let hh = &*h;
        if hh.pend_page.get() == page && hh.pend_count.get() < REMOTE_BATCH {
            layout::set_next(b, hh.pend_head.get());
            hh.pend_head.set(b);
            hh.pend_count.set(hh.pend_count.get() + 1);
            return;
        }
        hh.flush_pending();
        layout::set_next(b, ptr::null_mut());
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
pub(crate) unsafe fn queue_unowned(page: *mut Page) {
    // SAFETY: the caller's contract.
    unsafe { crate::arena::arena((*page).arena.get() as usize).push(page) };
    // Its blocks may all be free soon (the owner left): a sleeping purge thread looks again.
    crate::arena::page_queued();
}

impl Heap {
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
            if layout::push_remote(pg, self.pend_head.get(), self.pend_tail.get()) {
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
}
