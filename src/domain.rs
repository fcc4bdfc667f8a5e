//! Per-node domains: each owns the segments whose memory lives on its node, hands out spans of
//! pages to arenas and heaps, takes them back, and returns empty memory to the OS after the purge
//! delay.
//!
//! All span bookkeeping is under the domain's spin lock; it is taken once per span (64 KiB or
//! more), never per block. A new segment is bound to its node (`MPOL_PREFERRED` on Linux) when
//! NUMA is on, so its pages land on the domain's node whoever touches them first.

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::global;
use crate::options::{self, Policy};
use crate::os::{self, Os, Placement, Sys};
use crate::segment::{
    segmap_set, Page, PageKind, Segment, PAGES, PAGE_SHIFT, PAGE_SIZE, SEGMENT_SIZE, SEG_NORMAL,
};
use crate::spin::SpinLock;

/// Every page but the header page.
const ALL_PAGES: u64 = !1u64;

/// Counters of one node (relaxed atomics; read by [`crate::stats`]).
#[derive(Default)]
pub(crate) struct NodeCounters {
    pub(crate) segments: AtomicU64,
    pub(crate) segments_total: AtomicU64,
    pub(crate) pages_in_use: AtomicU64,
    pub(crate) large_blocks: AtomicU64,
    pub(crate) large_bytes: AtomicU64,
    pub(crate) huge_blocks: AtomicU64,
    pub(crate) huge_bytes: AtomicU64,
    pub(crate) huge_total: AtomicU64,
    pub(crate) purged_bytes: AtomicU64,
    pub(crate) migrations_in: AtomicU64,
    pub(crate) mapped_bytes: AtomicU64,
}

pub(crate) struct DomainInner {
    /// Normal segments; those with free pages first.
    segs: *mut Segment,
    /// Earliest purge deadline (ms) among segments with dirty pages; `u64::MAX` if none.
    next_purge: u64,
}

/// One NUMA node's memory. All-zero bytes are a valid empty domain (domains live in a zeroed
/// OS mapping); `node` is set by `init`.
pub(crate) struct Domain {
    pub(crate) lock: SpinLock<DomainInner>,
    pub(crate) node: usize,
    /// Where threads running on this node get memory under the policy in force (this node,
    /// or the nearest node with memory the policy allows).
    pub(crate) policy_home: usize,
    pub(crate) counters: NodeCounters,
    pub(crate) huge_cache: crate::huge::HugeCache,
    /// The heap serving node-targeted small allocations for this node (created on first use).
    pub(crate) node_heap: SpinLock<NodeHeap>,
    /// When (ms) `global::maintain` last swept this node's arenas for emptied pages.
    pub(crate) last_reclaim_ms: core::sync::atomic::AtomicU64,
}

/// Slot for a domain's node-targeted heap.
pub(crate) struct NodeHeap(pub(crate) *mut crate::heap::Heap);
// SAFETY: guarded by its lock.
unsafe impl Send for NodeHeap {}

// SAFETY: the raw pointers inside are protected by the lock.
unsafe impl Send for DomainInner {}

/// Segments `alloc_span` searches for a run of still-resident free pages before taking any run.
const DIRTY_SEARCH: usize = 8;

impl Domain {
    pub(crate) fn init(&mut self, node: usize) {
        self.node = node;
        self.lock = SpinLock::new(DomainInner { segs: ptr::null_mut(), next_purge: u64::MAX });
    }

    /// Allocates a span of `n` pages (1..=63) for kind `kind`, from an existing segment or a new
    /// one. Returns the initialised head descriptor, or null when the OS has no memory.
    pub(crate) fn alloc_span(&self, n: usize, kind: PageKind, arena: u32) -> *mut Page {
        debug_assert!((1..PAGES).contains(&n));
        let mut g = self.lock.lock();
        let now = Sys::now_ms();
        self.maybe_purge(&mut g, now, false);
        // Prefer a run of dirty pages (freed, not yet purged: still resident, no page faults)
        // among the first few segments with room; else the first run that fits.
        let mut seg = g.segs;
        let mut found = None;
        let mut looked = 0;
        while !seg.is_null() && looked < DIRTY_SEARCH {
            // SAFETY: segments in the list are live; fields are under our lock.
            let s = unsafe { &*seg };
            let free = s.free_mask.get();
            if free == 0 {
                break; // full segments are at the back
            }
            if let Some(i) = find_run(free & s.dirty_mask.get(), n) {
                found = Some((seg, i));
                break;
            }
            if found.is_none() {
                if let Some(i) = find_run(free, n) {
                    found = Some((seg, i));
                }
            }
            looked += 1;
            seg = s.next.get();
        }
        while found.is_none() && !seg.is_null() {
            // SAFETY: as above.
            let s = unsafe { &*seg };
            let free = s.free_mask.get();
            if free == 0 {
                break;
            }
            if let Some(i) = find_run(free, n) {
                found = Some((seg, i));
            }
            seg = s.next.get();
        }
        let (seg, i) = match found {
            Some(f) => f,
            None => {
                let seg = self.new_segment();
                if seg.is_null() {
                    return ptr::null_mut();
                }
                push_front(&mut g, seg);
                (seg, 1)
            }
        };
        // SAFETY: live segment under our lock; i..i+n are free pages of it.
        unsafe {
            let s = &*seg;
            let run = run_mask(i, n);
            s.free_mask.set(s.free_mask.get() & !run);
            let was_nonzero = s.nonzero_mask.get() & run != 0;
            s.dirty_mask.set(s.dirty_mask.get() & !run);
            s.nonzero_mask.set(s.nonzero_mask.get() | run);
            if s.free_mask.get() == 0 {
                move_to_back(&mut g, seg);
            }
            let pages = ptr::addr_of!((*seg).pages).cast::<Page>() as *mut Page;
            for k in 1..n {
                let d = &*pages.add(i + k);
                d.kind.set(kind as u8);
                d.head_off.set(k as u8);
            }
            let head = &*pages.add(i);
            head.kind.set(kind as u8);
            head.head_off.set(0);
            head.span_pages.set(n as u32);
            head.free.set(ptr::null_mut());
            head.local_free.set(ptr::null_mut());
            head.heap.store(ptr::null_mut(), Ordering::Relaxed);
            head.set_used(0);
            head.flags.set(0);
            head.capacity.set(0);
            head.reserved.set(0);
            head.xfree.store(0, Ordering::Relaxed);
            head.next.set(ptr::null_mut());
            head.prev.set(ptr::null_mut());
            head.next_unfull.set(ptr::null_mut());
            head.arena.set(arena);
            head.is_zero.set(!was_nonzero);
            self.counters.pages_in_use.fetch_add(n as u64, Ordering::Relaxed);
            pages.add(i)
        }
    }

    /// Returns a span to the domain. Its memory is purged after the purge delay.
    ///
    /// # Safety
    /// `page` is the head of a span of this domain that nobody uses any more.
    pub(crate) unsafe fn free_span(&self, page: *mut Page) {
        let mut g = self.lock.lock();
        // SAFETY: forwarded.
        unsafe { self.free_span_locked(&mut g, page) };
    }

    /// Returns the leading pages of the list `p` (linked through `next`) that belong to this
    /// domain under one lock acquisition; returns the rest of the list.
    ///
    /// # Safety
    /// Every page on the list is an unused, unowned span head of ours, on no other list.
    pub(crate) unsafe fn free_span_run(&self, mut p: *mut Page) -> *mut Page {
        let mut g = self.lock.lock();
        while !p.is_null() {
            // SAFETY: as stated.
            unsafe {
                if (*(*p).segment()).node as usize != self.node {
                    break;
                }
                let next = (*p).next.get();
                (*p).next.set(ptr::null_mut());
                self.free_span_locked(&mut g, p);
                p = next;
            }
        }
        p
    }

    /// Frees a large block's span; false (nothing done) if `page` is not a live large span, i.e.
    /// a double free. The check is under the lock, so concurrent double frees are caught too.
    ///
    /// # Safety
    /// `page` is a head descriptor of a segment of this domain.
    pub(crate) unsafe fn free_large(&self, page: *mut Page) -> bool {
        let mut g = self.lock.lock();
        // SAFETY: descriptor of a live segment; fields under our lock.
        unsafe {
            if (*page).kind() != PageKind::Large || (*page).head_off.get() != 0 {
                return false;
            }
            self.counters.large_blocks.fetch_sub(1, Ordering::Relaxed);
            self.counters.large_bytes.fetch_sub((*page).span_bytes() as u64, Ordering::Relaxed);
            self.free_span_locked(&mut g, page);
        }
        true
    }

    /// # Safety
    /// As [`Domain::free_span`], with the lock held.
    unsafe fn free_span_locked(&self, g: &mut DomainInner, page: *mut Page) {
        // SAFETY: caller guarantees; fields under our lock.
        unsafe {
            let p = &*page;
            let seg = p.segment();
            let s = &*seg;
            let i = p.index();
            let n = p.span_pages.get() as usize;
            for k in 0..n {
                let d = &*page.add(k);
                d.kind.set(PageKind::Free as u8);
                d.head_off.set(0);
            }
            p.heap.store(ptr::null_mut(), Ordering::Relaxed);
            let run = run_mask(i, n);
            let was_full = s.free_mask.get() == 0;
            s.free_mask.set(s.free_mask.get() | run);
            s.dirty_mask.set(s.dirty_mask.get() | run);
            self.counters.pages_in_use.fetch_sub(n as u64, Ordering::Relaxed);
            if was_full {
                unlink(g, seg);
                push_front(g, seg);
            }
            let now = Sys::now_ms();
            let delay = options::get().purge_delay_ms;
            if delay != u64::MAX {
                if s.purge_at.get() == 0 {
                    s.purge_at.set(now.saturating_add(delay));
                }
                g.next_purge = g.next_purge.min(s.purge_at.get());
            }
            self.maybe_purge(g, now, false);
        }
    }

    /// Purges dirty pages whose delay has passed (all of them with `force`), and unmaps segments
    /// that are entirely free.
    pub(crate) fn maybe_purge(&self, g: &mut DomainInner, now: u64, force: bool) {
        if !force && now < g.next_purge {
            return;
        }
        let mode = options::get().purge_mode;
        let mut next = u64::MAX;
        let mut seg = g.segs;
        while !seg.is_null() {
            // SAFETY: live segment under the lock.
            let s = unsafe { &*seg };
            let after = s.next.get();
            let dirty = s.dirty_mask.get();
            if dirty != 0 {
                if force || s.purge_at.get() <= now {
                    if s.free_mask.get() == ALL_PAGES {
                        // Entirely free: give the whole segment back.
                        unlink(g, seg);
                        // SAFETY: no span of it is in use.
                        unsafe { self.release_segment(seg) };
                        seg = after;
                        continue;
                    }
                    let mut bits = dirty;
                    while bits != 0 {
                        let start = bits.trailing_zeros() as usize;
                        let len = (!(bits >> start)).trailing_zeros() as usize;
                        let len = len.min(PAGES - start);
                        let addr = (seg as usize + (start << PAGE_SHIFT)) as *mut u8;
                        // SAFETY: free pages of a live segment of ours.
                        let zero = unsafe { Sys::purge(addr, len << PAGE_SHIFT, mode) };
                        let run = run_mask(start, len);
                        if zero {
                            s.nonzero_mask.set(s.nonzero_mask.get() & !run);
                        }
                        self.counters.purged_bytes.fetch_add((len << PAGE_SHIFT) as u64, Ordering::Relaxed);
                        bits &= !run;
                    }
                    s.dirty_mask.set(0);
                    s.purge_at.set(0);
                } else {
                    next = next.min(s.purge_at.get());
                }
            }
            seg = after;
        }
        g.next_purge = next;
    }

    /// Purges now (for `collect`).
    pub(crate) fn purge_all(&self, force: bool) {
        let mut g = self.lock.lock();
        self.maybe_purge(&mut g, Sys::now_ms(), force);
    }

    fn new_segment(&self) -> *mut Segment {
        // SAFETY: valid size/alignment.
        let p = unsafe { os::map_aligned(SEGMENT_SIZE, SEGMENT_SIZE) };
        if p.is_null() {
            return ptr::null_mut();
        }
        let (policy, min) = global::policy();
        if global::numa_enabled() || !matches!(policy, Policy::Local) {
            apply_policy(p, SEGMENT_SIZE, self.node, min == 0);
        }
        if options::get().segment_thp && !(min == 0 && matches!(policy, Policy::Interleave(_))) {
            // A segment holds one node's memory (bound to it on multi-node machines), so huge
            // pages change no placement: fewer faults and TLB misses. (Not under an interleave
            // policy for all sizes, which must alternate nodes page by page.)
            // SAFETY: our fresh mapping.
            unsafe { Sys::set_huge_pages(p, SEGMENT_SIZE, true) };
        } else if min == 0 && matches!(policy, Policy::Interleave(_)) {
            // Page by page, also where the system's THP setting is `always`.
            // SAFETY: our fresh mapping.
            unsafe { Sys::set_huge_pages(p, SEGMENT_SIZE, false) };
        }
        let seg = p as *mut Segment;
        // SAFETY: fresh zeroed mapping; we initialise the header fields that are not zero.
        unsafe {
            let s = &mut *seg;
            s.kind = SEG_NORMAL;
            s.node = self.node as u32;
            s.map_start.set(p);
            s.map_size.set(SEGMENT_SIZE);
            s.free_mask.set(ALL_PAGES);
            s.pages[0].kind.set(PageKind::Meta as u8);
        }
        segmap_set(seg, true);
        self.counters.segments.fetch_add(1, Ordering::Relaxed);
        self.counters.segments_total.fetch_add(1, Ordering::Relaxed);
        self.counters.mapped_bytes.fetch_add(SEGMENT_SIZE as u64, Ordering::Relaxed);
        seg
    }

    /// # Safety
    /// The segment is unlinked and entirely free.
    unsafe fn release_segment(&self, seg: *mut Segment) {
        segmap_set(seg, false);
        self.counters.segments.fetch_sub(1, Ordering::Relaxed);
        self.counters.mapped_bytes.fetch_sub(SEGMENT_SIZE as u64, Ordering::Relaxed);
        // SAFETY: caller guarantees nothing uses it.
        unsafe { Sys::unmap(seg.cast(), SEGMENT_SIZE) };
    }

    /// Visits every live segment (for stats), under the lock.
    pub(crate) fn for_each_segment(&self, mut f: impl FnMut(&Segment)) {
        let g = self.lock.lock();
        let mut seg = g.segs;
        while !seg.is_null() {
            // SAFETY: live segment under the lock.
            let s = unsafe { &*seg };
            f(s);
            seg = s.next.get();
        }
    }
}

/// Applies the placement for memory of domain `node`: the configured policy when it applies to
/// this range, else "this node" (preferred) so pages land on the domain's node.
pub(crate) fn apply_policy(p: *mut u8, size: usize, node: usize, policy_applies: bool) {
    let (policy, _) = global::policy();
    let placement = match (&policy, policy_applies) {
        (Policy::Bind(m), true) => Placement::Bind(m),
        (Policy::Interleave(m), true) => Placement::Interleave(m),
        (Policy::Preferred(n), true) => Placement::Preferred(*n),
        _ => {
            if !global::numa_enabled() {
                return;
            }
            // "This node" is what first touch gives anyway where placement is per thread: only
            // bind where the OS can do it per range, without touching the pages now.
            // SAFETY: our own fresh mapping.
            unsafe { Sys::place(p, size, Placement::Preferred(node)) };
            return;
        }
    };
    crate::huge::place_range(p, size, placement);
}

/// Bit mask of pages `i..i+n`.
fn run_mask(i: usize, n: usize) -> u64 {
    (if n >= 64 { !0u64 } else { (1u64 << n) - 1 }) << i
}

/// Lowest `i` such that bits `i..i+n` of `free` are all set.
fn find_run(free: u64, n: usize) -> Option<usize> {
    let mut m = free;
    for k in 1..n {
        m &= free >> k;
        if m == 0 {
            return None;
        }
    }
    if m == 0 { None } else { Some(m.trailing_zeros() as usize) }
}

fn push_front(g: &mut DomainInner, seg: *mut Segment) {
    // SAFETY: live segments under the lock.
    unsafe {
        (*seg).prev.set(ptr::null_mut());
        (*seg).next.set(g.segs);
        if !g.segs.is_null() {
            (*g.segs).prev.set(seg);
        }
    }
    g.segs = seg;
}

fn unlink(g: &mut DomainInner, seg: *mut Segment) {
    // SAFETY: live segments under the lock.
    unsafe {
        let (p, n) = ((*seg).prev.get(), (*seg).next.get());
        if p.is_null() {
            g.segs = n;
        } else {
            (*p).next.set(n);
        }
        if !n.is_null() {
            (*n).prev.set(p);
        }
        (*seg).next.set(ptr::null_mut());
        (*seg).prev.set(ptr::null_mut());
    }
}

fn move_to_back(g: &mut DomainInner, seg: *mut Segment) {
    // SAFETY: live segments under the lock.
    unsafe {
        if (*seg).next.get().is_null() {
            return;
        }
        unlink(g, seg);
        let mut t = g.segs;
        if t.is_null() {
            g.segs = seg;
            return;
        }
        while !(*t).next.get().is_null() {
            t = (*t).next.get();
        }
        (*t).next.set(seg);
        (*seg).prev.set(t);
    }
}

/// Bytes per page, re-exported for the stats report.
pub(crate) const SPAN_UNIT: usize = PAGE_SIZE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs() {
        assert_eq!(find_run(0b1111_0110, 2), Some(1));
        assert_eq!(find_run(0b1111_0110, 3), Some(4));
        assert_eq!(find_run(0b1111_0110, 5), None);
        assert_eq!(find_run(ALL_PAGES, 63), Some(1));
        assert_eq!(run_mask(1, 63), ALL_PAGES);
        assert_eq!(run_mask(3, 2), 0b11000);
    }
}
