//! Large blocks: one span of whole 64 KiB pages per block (above the small classes, up to a
//! segment's worth), described by the span's head descriptor like a one-block small span.
//! Their spans come from first-touch segments (never transparent huge pages, so RSS follows the
//! pages the program touches); on a multi-node machine their pages are placed by first touch; a freed span whose pages
//! turned out to be on another node goes to that node's home pool, where the next large
//! allocation of the same size there takes it. Otherwise freed spans park in the CPU's arena
//! (the next large or small span of that CPU reuses them without the domain lock) or go back
//! to their domain.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::layout::{Page, PageKind, SpanPlacement, PAGE_SHIFT, PAGE_SIZE};
use crate::node::{self, Home};
use crate::sys::os;
use crate::thread::heap::Heap;
use crate::thread::tls;

/// Allocates a large block (one span of whole pages) from node `node`'s domain: a span freed on
/// this node whose pages are here (home pool), one parked in the CPU's arena, or a fresh one.
pub(crate) fn alloc(node: usize, size: usize, zero: bool) -> *mut u8 {
    let (p, reads_zero) = alloc_uncleared(node, size);
    if zero && !p.is_null() && !reads_zero {
        // SAFETY: a block of at least `size` bytes, ours until handed out.
        unsafe { ptr::write_bytes(p, 0, size) };
    }
    p
}

/// The usable size of a large block for `size` bytes: its span's whole pages.
#[inline]
pub(crate) fn usable_size(size: usize) -> usize {
    (size + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// [`alloc`] without clearing: the block, and whether it reads as zero (a fresh or purged span;
/// one from a home pool or parked in an arena is dirty). Null (and false) when out of memory.
pub(crate) fn alloc_uncleared(node: usize, size: usize) -> (*mut u8, bool) {
    let n = usable_size(size) >> PAGE_SHIFT;
    let d = crate::node::domain(node);
    // First-touch segments also on one node: they never get transparent huge pages, so a large
    // block costs the pages the program touches, not the 2 MiB pages around them (300 touched
    // blocks of 1 MiB cost 400 MiB of RSS in bound segments with THP, of 131073 B 56 MiB for
    // 37.5 MiB of payload). The price: a fresh block's first touch takes a fault per 4 KiB
    // page (as glibc's), not per 2 MiB; `DOMALLOC_THP=1` keeps them in bound segments with huge
    // pages on one-node machines.
    let placement = crate::node::span_placement(crate::node::BlockKind::Large { size });
    let h = tls::own_heap();
    // SAFETY: a real heap is this thread's (only read here); sentinels are only read.
    let arena = unsafe { (*h).arena_index() } as u32;
    let mut page = if placement == SpanPlacement::FirstTouch { d.pool.take_large(n) } else { ptr::null_mut() };
    let pooled = !page.is_null();
    if pooled {
        crate::sys::event(crate::sys::Event::HomePoolTake);
    }
    if page.is_null() && !tls::is_sentinel(h) && crate::arena::arena_node(arena as usize) == node {
        page = crate::arena::arena(arena as usize).take_empty(n, placement);
        if !page.is_null() {
            // SAFETY: an unused span of this node, ours now.
            unsafe {
                // (A first-touch span comes back purged from `take_empty`: it may read as zero.)
                let zero = placement == SpanPlacement::FirstTouch && (*page).is_zero.get();
                crate::node::init_span(page, n, PageKind::Large);
                (*page).is_zero.set(zero);
            }
        }
    }
    if page.is_null() {
        let arena = if tls::is_sentinel(h) || crate::arena::arena_node(arena as usize) != node {
            crate::arena::node_arena(node) as u32
        } else {
            arena
        };
        page = crate::thread::init::retrying_after_release(|| d.alloc_span(n, PageKind::Large, arena, placement));
        if page.is_null() {
            return (ptr::null_mut(), false);
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
        let c = &crate::node::domain(pg.node()).counters;
        c.large_blocks.fetch_add(1, Ordering::Relaxed);
        c.large_bytes.fetch_add((n << PAGE_SHIFT) as u64, Ordering::Relaxed);
        c.large_allocs.fetch_add(1, Ordering::Relaxed);
        // The program writes it from now on (a pooled or parked span comes back dirty).
        let zero = pg.is_zero.replace(false);
        (pg.span_start(), zero)
    }
}

/// Frees a large block: back to its arena's empty cache or its domain, or, when its pages turned
/// out to be on another node (first touch), to that node's home pool.
///
/// # Safety
/// `page` is the head of a large span; `p` its start, passed to free by the program.
pub(crate) unsafe fn free(h: *mut Heap, page: *mut Page, p: *mut u8) {
    // SAFETY: a live large span head.
    let pg = unsafe { &*page };
    if pg.counts.compare_exchange(1, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        os::fatal(format_args!("free(): double free of {:p}", p));
    }
    let span_node = pg.node();
    let c = &crate::node::domain(span_node).counters;
    c.large_blocks.fetch_sub(1, Ordering::Relaxed);
    c.large_bytes.fetch_sub(pg.span_bytes() as u64, Ordering::Relaxed);
    c.large_frees.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `h` is this thread's heap or a sentinel.
    let freer = if tls::is_sentinel(h) { usize::MAX } else { unsafe { (*h).node() } };
    if freer != span_node {
        c.remote_node_frees.fetch_add(1, Ordering::Relaxed);
    }
    if pg.placement() == SpanPlacement::FirstTouch && crate::config::numa_enabled() {
        match node::home_of(p, pg.span_bytes()) {
            Home::On(n) if n != span_node && n < crate::node::domain_slots() && crate::node::domain(n).node == n => {
                let dest = crate::node::domain(n);
                dest.counters.went_home.fetch_add(1, Ordering::Relaxed);
                crate::sys::event(crate::sys::Event::HomePoolPut);
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
    unsafe { crate::thread::refill::give_back_span(page) };
}
