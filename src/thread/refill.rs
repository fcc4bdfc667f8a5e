//! The thread cache's refill path and page queues: where a heap finds its next block when the
//! fast path's page is empty.
//!
//! In order: collect frees into the head page, carve more of its span (or hand out the next
//! untouched block of a placed span), give a page with nothing left up (it leaves the queue; its
//! next remote free queues it in its arena), then take a queued page from this CPU's arena (or
//! another arena of the same node), then a placed block from the node's home pool, then an empty
//! span parked in the arena, then a fresh span from the node's domain. A page whose blocks are
//! all free again goes back (`page_empty`, `give_back_span`).

use core::ptr;
use core::sync::atomic::Ordering;

use crate::layout::size_class::{class_size, is_placed, span_blocks, span_pages};
use crate::layout::{self, Block, Page, PageKind, SpanPlacement, PF_PLACED};
use crate::sys::os::{Os, Sys};
use crate::thread::heap::{bump, empty_page, Heap, MAINTAIN_EVERY};

impl Heap {
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
            crate::arena::maintain(self.node());
        }
        let (b, zero) = self.find_block(c);
        (b.cast(), zero)
    }

    /// A block of class `c`: from our queue, an arena page, the home pool, or a new span.
    pub(crate) fn find_block(&self, c: usize) -> (*mut Block, bool) {
        if let Some(r) = self.take_from_queue(c) {
            return r;
        }
        // Pages of this node that nobody owns (left by exited or migrated threads, or given up
        // full and since freed into).
        for _ in 0..16 {
            let page = self.take_from_arenas(c);
            if page.is_null() {
                break;
            }
            // An inbox comes whole (a list through `next`): every page joins our queue, the
            // first at its head.
            // SAFETY: pages taken from an arena are nobody's but ours now.
            let mut rest = unsafe { (*page).next.get() };
            bump(&self.counters.pages_from_arena, 1);
            self.adopt(c, page);
            while !rest.is_null() {
                // SAFETY: as above.
                let next = unsafe { (*rest).next.get() };
                bump(&self.counters.pages_from_arena, 1);
                self.adopt_back(c, rest);
                rest = next;
            }
            if let Some(r) = self.take_from_queue(c) {
                return r;
            }
        }
        // A placed block freed on this node whose span belongs to another (no page fault).
        if is_placed(c) && !self.pinned.get() && crate::config::numa_enabled() {
            let mut b = self.take_placed(c);
            if b.is_null() {
                b = crate::node::domain(self.node()).pool.take_block(c);
                if !b.is_null() {
                    crate::sys::event(crate::sys::Event::HomePoolTake);
                }
            }
            if !b.is_null() {
                // SAFETY: a block of a live span: it leaves the pool.
                unsafe { pool_taken(b, c) };
                let from = crate::config::options::get().fresh_blocks_from;
                if from != 0 && class_size(c) >= from {
                    // SAFETY: the block is ours now, whole OS pages.
                    let zero = unsafe { refresh(b, class_size(c), self.node()) };
                    return (b, zero);
                }
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

    /// A block from our queue `c`: each turn either finds one or gives the head page up.
    fn take_from_queue(&self, c: usize) -> Option<(*mut Block, bool)> {
        loop {
            let page = self.bins[c].page.get();
            if page == empty_page() {
                return None;
            }
            if let Some(r) = self.take_or_give_up(c, page) {
                return Some(r);
            }
        }
    }

    /// For a page at the head of queue `c`: a block if it has one now (after collecting or
    /// carving); otherwise the page is given up (it leaves the queue) and `None` returned.
    pub(crate) fn take_or_give_up(&self, c: usize, page: *mut Page) -> Option<(*mut Block, bool)> {
        // SAFETY: pages in our queue are ours.
        unsafe {
            self.fold_page(&*page);
            if let Some(r) = take_block(&*page) {
                return Some(r);
            }
            self.fold_page(&*page);
            self.queue_remove(c, page);
            if layout::give_up(&*page, self as *const Heap as usize) {
                return None;
            }
            // Remote frees arrived between the collect and the give-up: take them.
            self.queue_push_front(c, page);
            take_block(&*page)
        }
    }

    /// Where class `c`'s spans come from.
    pub(crate) fn placement_for(&self, c: usize) -> SpanPlacement {
        crate::node::span_placement(crate::node::BlockKind::Small { class: c, pinned: self.pinned.get() })
    }

    /// A span for class `c`: parked empty in our arena, else fresh from the node's domain
    /// (after giving free memory back to the OS once if the OS refused). Null if out of memory.
    pub(crate) fn new_span(&self, c: usize) -> *mut Page {
        let n = span_pages(c);
        let placement = self.placement_for(c);
        let mut page = crate::arena::arena(self.arena.get() as usize).take_empty(n, placement);
        if !page.is_null() {
            // SAFETY: an unused span of our node, ours now.
            unsafe {
                // Same class: its lists are intact, except for a span placed by first touch,
                // which `take_empty` purged (its blocks are handed out fresh again, by `bump`).
                if placement != SpanPlacement::FirstTouch
                    && (*page).kind() == PageKind::Small
                    && (*page).class.get() as usize == c
                {
                    return page;
                }
                let zero = placement == SpanPlacement::FirstTouch && (*page).is_zero.get();
                crate::node::init_span(page, n, PageKind::Small);
                (*page).is_zero.set(zero);
            }
        } else {
            let d = crate::node::domain(self.node());
            page = crate::thread::init::retrying_after_release(|| {
                d.alloc_span(n, PageKind::Small, self.arena.get(), placement)
            });
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

    /// Takes pages of class `c` from this CPU's arena or another arena of this node (see
    /// `Arena::pop`: a whole inbox, linked through `next`, or one queued page).
    pub(crate) fn take_from_arenas(&self, c: usize) -> *mut Page {
        let own = crate::arena::arena(self.arena.get() as usize);
        let p = own.pop(c);
        if !p.is_null() {
            return p;
        }
        for &cpu in crate::arena::cpus_of_node(self.node()) {
            let i = crate::arena::arena_index(cpu as usize);
            if i != self.arena.get() as usize {
                let a = crate::arena::arena(i);
                if a.len() > 0 {
                    let p = a.pop(c);
                    if !p.is_null() {
                        return p;
                    }
                }
            }
        }
        let na = crate::arena::node_arena(self.node());
        if na != self.arena.get() as usize {
            return crate::arena::arena(na).pop(c);
        }
        ptr::null_mut()
    }

    /// Makes an unowned page ours and puts it at the head of its queue.
    pub(crate) fn adopt(&self, c: usize, page: *mut Page) {
        self.take_ownership(page);
        self.queue_push_front(c, page);
    }

    /// Makes an unowned page ours and puts it at the tail of its queue (the rest of an inbox).
    fn adopt_back(&self, c: usize, page: *mut Page) {
        self.take_ownership(page);
        self.queue_push_back(c, page);
    }

    /// Makes an unowned page (from an arena or the domain) ours, in no list.
    fn take_ownership(&self, page: *mut Page) {
        // SAFETY: the page came from an arena or the domain: nobody else owns it.
        unsafe {
            (*page).set_owner(self as *const Heap as usize);
            (*page).next.set(ptr::null_mut());
            (*page).prev.set(ptr::null_mut());
        }
    }

    /// Queue `c`'s head becomes the fast path's page (the empty page for an empty queue).
    pub(crate) fn sync_bin(&self, c: usize) {
        let head = self.queues[c].head();
        self.bins[c].page.set(if head.is_null() { empty_page() } else { head });
    }

    pub(crate) fn queue_push_front(&self, c: usize, page: *mut Page) {
        // SAFETY: our page, in no list; the queue is ours.
        unsafe { self.queues[c].push_front(page) };
        self.sync_bin(c);
    }

    pub(crate) fn queue_push_back(&self, c: usize, page: *mut Page) {
        // SAFETY: as in `queue_push_front`.
        unsafe { self.queues[c].push_back(page) };
        self.sync_bin(c);
    }

    pub(crate) fn queue_remove(&self, c: usize, page: *mut Page) {
        // SAFETY: our page, in queue `c`.
        unsafe { self.queues[c].remove(page) };
        self.sync_bin(c);
    }
}

/// A page of ours dropped to zero used blocks.
#[cold]
#[inline(never)]
pub(crate) unsafe fn page_empty(h: *mut Heap, page: *mut Page) {
    let _busy = crate::thread::tls::SlowPath::enter(h);
    // SAFETY: the page is ours (owner path).
    unsafe {
        let hh = &*h;
        let c = (*page).class.get() as usize;
        if let Some(stash) = hh.stash_of(&*page) {
            // A page of a node the thread left, emptied by the thread's own frees.
            stash[c].remove(page);
        } else {
            // Keep the only page of a class: allocating again soon is likely.
            if hh.bins[c].page.get() == page && (*page).next.get().is_null() {
                return;
            }
            hh.queue_remove(c, page);
        }
        hh.fold_page(&*page);
        layout::disown(&*page);
        give_back_span(page);
    }
}

/// An unused, unowned span goes to its arena's empty cache, or else to its domain.
///
/// # Safety
/// `page` is the head of an unused span nobody owns, in no list.
pub(crate) unsafe fn give_back_span(page: *mut Page) {
    // SAFETY: the caller's contract.
    unsafe {
        if crate::config::options::get().purge_delay_ms != 0
            && crate::arena::arena((*page).arena.get() as usize).park_empty(page, Sys::now_ms())
        {
            return;
        }
        crate::node::domain((*page).node()).free_span(page);
    }
    // Dirty pages now wait in the domain: the sweep (or the purge thread) is told.
    crate::arena::purge_wanted();
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
        if !page.free.get().is_null() || layout::collect(page) {
            let b = layout::pop(page);
            if refresh_blocks(page) {
                // First touch decides again: the rest waits off the fast path, this one is
                // purged (it reads as zero then).
                layout::hold_back(page);
                let zero = refresh(b, page.block_size.get() as usize, page.node());
                return Some((b, zero));
            }
            return Some((b, false));
        }
        if is_placed(page.class.get() as usize) {
            let (b, zero) = layout::bump(page);
            return (!b.is_null()).then_some((b, zero));
        }
        if layout::extend(page) {
            return Some((layout::pop(page), false));
        }
    }
    None
}

/// Whether recycled blocks of `page` are purged before they are handed out again
/// (`DOMALLOC_FIRST_TOUCH=always@<size>`: spans placed by first touch, blocks of at least
/// `<size>`, on a machine with several nodes).
#[inline]
fn refresh_blocks(page: &Page) -> bool {
    let from = crate::config::options::get().fresh_blocks_from;
    from != 0
        && page.block_size.get() as usize >= from
        && page.placement() == SpanPlacement::FirstTouch
        && crate::config::numa_enabled()
}

/// Purges recycled block `b` of `size` bytes (a multiple of the OS page, page-aligned: a placed
/// class) of node `node`'s domain, so the first thread that touches it places its pages.
/// Returns whether it reads as zero now.
///
/// # Safety
/// `b` is a block just taken for handing out; nothing else uses it.
unsafe fn refresh(b: *mut Block, size: usize, node: usize) -> bool {
    // SAFETY: the caller's block, whole OS pages (placed classes are multiples of 4 KiB).
    let zero = unsafe { crate::sys::os::purge(b.cast(), size, crate::sys::os::PurgeMode::DontNeed) };
    if zero {
        crate::node::domain(node).counters.purged_bytes.fetch_add(size as u64, Ordering::Relaxed);
    }
    zero
}

/// Bookkeeping for a placed block taken out of a home pool.
///
/// # Safety
/// `b` is a block of a live span that was in a pool.
unsafe fn pool_taken(b: *mut Block, c: usize) {
    if let Some((_, page)) = layout::lookup(b as *const u8) {
        // SAFETY: the block's live span.
        unsafe {
            let pg = &*page;
            pg.clear_pooled(pg.block_index(b as usize));
            let d = crate::node::domain(pg.node());
            d.counters.class_allocs[c].fetch_add(1, Ordering::Relaxed);
            d.counters.node_allocs.fetch_add(1, Ordering::Relaxed);
        }
    }
}
