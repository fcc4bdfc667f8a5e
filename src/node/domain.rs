//! Per-node domains: each owns the segments whose memory lives on its node, hands out spans of
//! pages to arenas and heaps, takes them back, and returns empty memory to the OS after the purge
//! delay.
//!
//! Span bookkeeping is under the domain's lock; it is taken once per span (64 KiB or more) that
//! the per-CPU arenas could not serve, never per block, and **no system call is made while it is
//! held**: a new segment is mapped (and bound) before the lock is taken, purges collect their
//! ranges under the lock (taking them out of the free set), `madvise` them after releasing it and
//! put them back in a second short round; a segment that became entirely free is unlinked under
//! the lock and unmapped after.
//!
//! A domain keeps one list of segments per [`SpanPlacement`]: `Bound` segments (bound to the
//! node, transparent huge pages allowed) for small blocks below 16 KiB, which the allocating
//! thread carves and so touches; `FirstTouch` segments (unbound, no huge pages) on multi-node
//! machines for blocks of 16 KiB and more, whose pages the kernel places where the program first
//! touches them; `Policy` segments under a placement policy (`DOMALLOC_POLICY` or an inherited
//! numactl policy) for the sizes it covers.

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::config;
use crate::config::options::{self, Policy};
use crate::config::topology;
use crate::layout::size_class::CLASSES;
use crate::layout::List;
use crate::layout::{
    init_header, segmap_set, Page, PageKind, Segment, SpanPlacement, PAGES, PAGE_SHIFT, PAGE_SIZE, PLACEMENTS,
    SEGMENT_SIZE, SEG_NORMAL,
};
use crate::sys::os::{self, Os, Placement, Sys};
use crate::sys::SetOnce;
use crate::sys::{ForkLock, ForkStage, Lock};

/// Every page that can hold spans: all but the header page (and, in hardened builds, the last
/// page, whose last OS page is a guard: an overflow off the segment's end faults before it
/// reaches the next segment's header).
const ALL_PAGES: u64 = if cfg!(feature = "hardened") { !1u64 & !(1u64 << 63) } else { !1u64 };

/// Counters of one node (relaxed atomics; read by [`crate::api::stats`]). All zero in a fresh domain.
pub(crate) struct NodeCounters {
    pub(crate) segments: AtomicU64,
    pub(crate) segments_total: AtomicU64,
    pub(crate) pages_in_use: AtomicU64,
    pub(crate) large_blocks: AtomicU64,
    pub(crate) large_bytes: AtomicU64,
    pub(crate) large_allocs: AtomicU64,
    pub(crate) large_frees: AtomicU64,
    pub(crate) huge_blocks: AtomicU64,
    pub(crate) huge_bytes: AtomicU64,
    /// Resident spare capacity of live huge blocks (see `huge::keep_slack`).
    pub(crate) huge_slack: AtomicU64,
    pub(crate) huge_total: AtomicU64,
    pub(crate) huge_frees: AtomicU64,
    pub(crate) huge_cache_hits: AtomicU64,
    pub(crate) huge_cache_misses: AtomicU64,
    pub(crate) purged_bytes: AtomicU64,
    pub(crate) migrations_in: AtomicU64,
    pub(crate) mapped_bytes: AtomicU64,
    pub(crate) mapped_peak: AtomicU64,
    pub(crate) in_use_peak: AtomicU64,
    /// Blocks of this node freed by a thread running on another node.
    pub(crate) remote_node_frees: AtomicU64,
    /// Blocks sent to this node's lists by a free on another node (remote frees that went home,
    /// and placed blocks found on this node whose spans belong to another).
    pub(crate) went_home: AtomicU64,
    /// Spans for first touch that had been used since their last purge and were purged before
    /// being handed out again (one `madvise` each).
    pub(crate) fresh_purges: AtomicU64,
    /// Small-block allocations and frees per class, folded in from heaps that exited or moved
    /// (live heaps count their own), whatever node the blocks were on: class totals only.
    pub(crate) class_allocs: [AtomicU64; CLASSES],
    pub(crate) class_frees: [AtomicU64; CLASSES],
    /// Small blocks of this node allocated and freed, folded in from heaps and counted by slow
    /// paths (home pools, frees by threads without a heap): node totals.
    pub(crate) node_allocs: AtomicU64,
    pub(crate) node_frees: AtomicU64,
}

/// Node ids counted apart in per-node statistics (higher ids share the last slot).
pub(crate) const COUNTED_NODES: usize = 64;

impl NodeCounters {
    /// Adds to the mapped bytes (and the peak).
    pub(crate) fn mapped(&self, add: u64) {
        let now = self.mapped_bytes.fetch_add(add, Ordering::Relaxed) + add;
        self.mapped_peak.fetch_max(now, Ordering::Relaxed);
    }
    /// Subtracts from the mapped bytes.
    pub(crate) fn unmapped(&self, sub: u64) {
        self.mapped_bytes.fetch_sub(sub, Ordering::Relaxed);
    }
    /// Bytes in use: spans handed out plus huge blocks.
    pub(crate) fn in_use_bytes(&self) -> u64 {
        (self.pages_in_use.load(Ordering::Relaxed) << PAGE_SHIFT) + self.huge_bytes.load(Ordering::Relaxed)
    }
    /// Updates the in-use peak after an increase.
    pub(crate) fn note_in_use(&self) {
        self.in_use_peak.fetch_max(self.in_use_bytes(), Ordering::Relaxed);
    }
}

/// The lists of one domain (under its lock).
pub(crate) struct Spans {
    /// Per placement: segments, those with free pages first.
    segs: [List<Segment>; PLACEMENTS],
    /// Earliest purge deadline (ms) among segments with dirty pages; `u64::MAX` if none.
    next_purge: u64,
}

// SAFETY: the raw pointers inside are protected by the lock.
unsafe impl Send for Spans {}

/// One NUMA node's memory. All-zero bytes are a valid empty domain (domains live in a zeroed
/// OS mapping); `node` is set by `init`.
pub(crate) struct Domain {
    pub(crate) lock: Lock<Spans>,
    pub(crate) node: usize,
    /// Where threads running on this node get memory under the policy in force (this node,
    /// or the nearest node with memory the policy allows).
    pub(crate) policy_home: usize,
    pub(crate) counters: NodeCounters,
    pub(crate) huge_cache: crate::node::huge::HugeCache,
    /// Placed blocks and large spans whose pages are on this node but whose segments belong to
    /// another node's domain.
    pub(crate) pool: crate::node::home_pool::HomePool,
    /// When (ms) the maintenance sweep last visited this node.
    pub(crate) last_sweep_ms: AtomicU64,
    /// Bytes of free, dirty pages waiting for their purge.
    pub(crate) dirty_bytes: AtomicU64,
}

/// Used free memory of a node (waiting for the purge schedule) up to which spans for first
/// touch come from new mappings rather than from used pages purged on reuse
/// ([`Domain::maps_instead_of_purging`]): it bounds what that adds to the resident memory.
const FRESH_RESERVE: u64 = 32 << 20;

/// Segments `alloc_span` searches for a run of still-resident free pages before taking any run.
const DIRTY_SEARCH: usize = 8;
/// Dirty runs purged per lock round.
const PURGE_BATCH: usize = 16;

/// A run of pages taken out of the free set to be purged outside the lock.
#[derive(Clone, Copy)]
struct PurgeRun {
    seg: *mut Segment,
    run: u64,
}

impl Domain {
    pub(crate) fn init(&mut self, node: usize) {
        self.node = node;
        self.lock = Lock::new(
            crate::sys::LockKind::Domain,
            Spans { segs: [const { List::new() }; PLACEMENTS], next_purge: u64::MAX },
        );
        self.huge_cache.init();
        self.pool.init();
    }

    /// Allocates a span of `n` pages (1..=63) of `kind` with pages placed as `placement`, from an
    /// existing segment or a new one. Returns the head descriptor (kind, span fields, arena,
    /// zero flag and placement set), or null when the OS has no memory.
    pub(crate) fn alloc_span(&self, n: usize, kind: PageKind, arena: u32, placement: SpanPlacement) -> *mut Page {
        debug_assert!((1..PAGES).contains(&n));
        let mut fresh: *mut Segment = ptr::null_mut();
        let mut mapped = false;
        loop {
            let mut g = self.lock.lock();
            if !fresh.is_null() {
                // (`fresh` is only read again after `new_segment` set it anew.)
                // SAFETY: a new segment of ours, in no list; the lock is held.
                unsafe { g.segs[placement as usize].push_front(fresh) };
            }
            let first_touch = placement == SpanPlacement::FirstTouch;
            if let Some((seg, i)) = find_span(&g.segs[placement as usize], n, first_touch) {
                // SAFETY: a live segment of ours under the lock.
                let used = unsafe { (*seg).nonzero_mask.get() } & run_mask(i, n) != 0;
                if first_touch && used && !mapped && self.maps_instead_of_purging() {
                    // Only used pages fit, which `make_untouched` would purge: map a segment
                    // instead (once), and the used pages wait for the purge schedule.
                    drop(g);
                    mapped = true;
                    fresh = self.new_segment(placement);
                    continue;
                }
                // SAFETY: a live segment of ours under the lock; pages i..i+n are free.
                let head = unsafe { self.carve_locked(&mut g, placement, seg, i, n, kind, arena) };
                drop(g);
                if first_touch {
                    // SAFETY: the span we just took out of the free set: nobody else uses it.
                    unsafe { self.make_untouched(head) };
                }
                return head;
            }
            drop(g);
            // No room: map a segment outside the lock, then look again (another thread may have
            // freed a span meanwhile; the new segment is kept either way).
            fresh = self.new_segment(placement);
            if fresh.is_null() {
                return ptr::null_mut();
            }
        }
    }

    /// # Safety
    /// `seg` is a live segment of list `placement`, pages `i..i+n` free; the lock is held.
    #[allow(clippy::too_many_arguments)]
    unsafe fn carve_locked(
        &self,
        g: &mut Spans,
        placement: SpanPlacement,
        seg: *mut Segment,
        i: usize,
        n: usize,
        kind: PageKind,
        arena: u32,
    ) -> *mut Page {
        // SAFETY: the caller's contract.
        unsafe {
            let s = &*seg;
            let run = run_mask(i, n);
            s.free_mask.set(s.free_mask.get() & !run);
            let was_nonzero = s.nonzero_mask.get() & run != 0;
            let was_dirty = (s.dirty_mask.get() & run).count_ones() as u64;
            s.dirty_mask.set(s.dirty_mask.get() & !run);
            s.nonzero_mask.set(s.nonzero_mask.get() | run);
            if s.free_mask.get() == 0 {
                g.segs[placement as usize].move_to_back(seg);
            }
            self.dirty_bytes.fetch_sub(was_dirty << PAGE_SHIFT, Ordering::Relaxed);
            let head = s.page(i);
            init_span(head, n, kind);
            let h = &*head;
            h.owner.store(0, Ordering::Relaxed);
            h.reset_counts(0);
            h.flags.set(0);
            h.set_capacity(0);
            h.set_reserved(0);
            h.xfree.store(0, Ordering::Relaxed);
            h.arena.set(arena);
            h.is_zero.set(!was_nonzero);
            h.placement.set(placement as u8);
            self.counters.pages_in_use.fetch_add(n as u64, Ordering::Relaxed);
            self.counters.note_in_use();
            head
        }
    }

    /// Whether a span for first touch should come from newly mapped memory rather than from
    /// used pages purged for it: while the node's used free memory waiting for the purge
    /// schedule is at most [`FRESH_RESERVE`]. Purging on reuse is one `madvise` per span and, on
    /// a machine with many CPUs, a TLB shootdown on every CPU running the process; mapping is
    /// neither (threads that start, exit and start again on several nodes: 47 such purges in
    /// one run of `test-stress` at 32 threads on 8 nodes).
    pub(crate) fn maps_instead_of_purging(&self) -> bool {
        crate::config::numa_enabled()
            && options::get().fresh_spans
            && self.dirty_bytes.load(Ordering::Relaxed) <= FRESH_RESERVE
    }

    /// Makes a span about to be handed out for first touch untouched memory: a span carved from
    /// pages that were used since their last purge (still resident where their last user touched
    /// them, or only lazily freed with `MADV_FREE`) is purged now, with one `madvise` for the
    /// whole span (never per block). Memory handed out as fresh must be untouched, or the
    /// kernel's first touch does not place it: the span's history (a run freed in an earlier
    /// phase of the program, parked, reused for another class) must not decide where its pages
    /// are. A span that reads as zero (never used, or purged with `MADV_DONTNEED`) costs nothing.
    ///
    /// # Safety
    /// `head` is the head of a span the caller just took (from this domain or a parked cache),
    /// with no block handed out yet.
    pub(crate) unsafe fn make_untouched(&self, head: *mut Page) {
        // On one node there is nothing to place: first-touch spans exist there only to keep large
        // blocks out of huge pages, and purging a reused one would only fault its pages in again
        // (rptest: 44,000 -> 692,000 page faults, 1.6x the time).
        if !crate::config::numa_enabled() || !options::get().fresh_spans {
            return;
        }
        // SAFETY: the caller's contract.
        unsafe {
            let h = &*head;
            if h.is_zero.get() {
                return;
            }
            let bytes = h.span_bytes();
            crate::sys::event(crate::sys::Event::FreshPurge);
            let zeroed = os::purge(h.span_start(), bytes, os::PurgeMode::DontNeed);
            self.counters.purged_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            self.counters.fresh_purges.fetch_add(1, Ordering::Relaxed);
            h.is_zero.set(zeroed);
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
        drop(g);
        self.after_free();
    }

    /// After spans came back: `DOMALLOC_PURGE_DELAY=0` purges at once (outside the lock). Otherwise
    /// the memory waits for the maintenance sweep, which the caller tells
    /// (`arena::purge_wanted`: the domains do not start threads).
    fn after_free(&self) {
        if options::get().purge_delay_ms == 0 {
            self.purge_due(Sys::now_ms(), false, true);
        }
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
                if (*p).node() != self.node {
                    break;
                }
                let next = (*p).next.get();
                (*p).next.set(ptr::null_mut());
                self.free_span_locked(&mut g, p);
                p = next;
            }
        }
        drop(g);
        self.after_free();
        p
    }

    /// # Safety
    /// As [`Domain::free_span`], with the lock held.
    unsafe fn free_span_locked(&self, g: &mut Spans, page: *mut Page) {
        // SAFETY: caller guarantees; fields under our lock.
        unsafe {
            let p = &*page;
            let seg = p.segment();
            let s = &*seg;
            let i = p.index();
            let n = p.span_pages() as usize;
            init_span(page, n, PageKind::Free);
            p.owner.store(0, Ordering::Relaxed);
            let run = run_mask(i, n);
            let was_full = s.free_mask.get() == 0;
            s.free_mask.set(s.free_mask.get() | run);
            s.dirty_mask.set(s.dirty_mask.get() | run);
            self.dirty_bytes.fetch_add((n << PAGE_SHIFT) as u64, Ordering::Relaxed);
            self.counters.pages_in_use.fetch_sub(n as u64, Ordering::Relaxed);
            if was_full {
                // Segments with free pages come first.
                let list = &g.segs[s.placement as usize];
                list.remove(seg);
                list.push_front(seg);
            }
            let delay = options::get().purge_delay_ms;
            if delay != u64::MAX {
                // The segment's deadline: the delay after its first dirty span, pushed back by a
                // tenth of the delay for every later one (never past a full delay from now), so
                // that a span freed just before the deadline is not purged at once and faulted
                // in again by the next thread (mimalloc extends its arenas' deadline the same
                // way). Under steady churn memory changes mapping only on this schedule.
                let now = Sys::now_ms();
                let at = s.purge_at.get();
                let at = if at == 0 {
                    now.saturating_add(delay)
                } else {
                    at.saturating_add(delay / 10).min(now.saturating_add(delay))
                };
                s.purge_at.set(at);
                g.next_purge = g.next_purge.min(at);
            }
        }
    }

    /// Purges dirty pages whose delay has passed (all of them with `force`) and unmaps segments
    /// that are entirely free. The system calls run outside the lock. With `wait` false, gives
    /// up when the lock is busy. Returns the earliest deadline still pending (ms, `u64::MAX`).
    pub(crate) fn purge_due(&self, now: u64, force: bool, wait: bool) -> u64 {
        let mode = options::get().purge_mode;
        loop {
            let mut runs = [PurgeRun { seg: ptr::null_mut(), run: 0 }; PURGE_BATCH];
            let mut released: [*mut Segment; PURGE_BATCH] = [ptr::null_mut(); PURGE_BATCH];
            let (n_runs, n_rel, next) = {
                let mut g = if wait {
                    self.lock.lock()
                } else {
                    match self.lock.try_lock() {
                        Some(g) => g,
                        None => return u64::MAX,
                    }
                };
                if !force && now < g.next_purge {
                    return g.next_purge;
                }
                // SAFETY: lists under the lock.
                unsafe { self.collect_purges(&mut g, now, force, &mut runs, &mut released) }
            };
            for r in &released[..n_rel] {
                // SAFETY: unlinked and entirely free: nobody can reach it any more.
                unsafe { self.release_segment(*r) };
            }
            let mut zeroed = [false; PURGE_BATCH];
            for (k, r) in runs[..n_runs].iter().enumerate() {
                let mut bits = r.run;
                let mut all_zero = true;
                while bits != 0 {
                    let start = bits.trailing_zeros() as usize;
                    let len = ((!(bits >> start)).trailing_zeros() as usize).min(PAGES - start);
                    let addr = (r.seg as usize + (start << PAGE_SHIFT)) as *mut u8;
                    // SAFETY: pages we took out of the free set: nobody uses them.
                    all_zero &= unsafe { os::purge(addr, len << PAGE_SHIFT, mode) };
                    self.counters.purged_bytes.fetch_add((len << PAGE_SHIFT) as u64, Ordering::Relaxed);
                    bits &= !run_mask(start, len);
                }
                zeroed[k] = all_zero;
            }
            if n_runs > 0 {
                let g = self.lock.lock();
                for (k, r) in runs[..n_runs].iter().enumerate() {
                    // SAFETY: a live segment of ours; the run was free before we took it.
                    unsafe {
                        let s = &*r.seg;
                        let was_full = s.free_mask.get() == 0;
                        s.free_mask.set(s.free_mask.get() | r.run);
                        if zeroed[k] {
                            s.nonzero_mask.set(s.nonzero_mask.get() & !r.run);
                        }
                        if was_full {
                            let list = &g.segs[s.placement as usize];
                            list.remove(r.seg);
                            list.push_front(r.seg);
                        }
                    }
                }
            }
            if n_runs < PURGE_BATCH && n_rel < PURGE_BATCH {
                return next;
            }
        }
    }

    /// Takes up to `PURGE_BATCH` due dirty runs out of the free set, and unlinks up to as many
    /// entirely free segments. Returns (runs, released, earliest deadline left).
    ///
    /// # Safety
    /// The caller holds the lock (`g`).
    unsafe fn collect_purges(
        &self,
        g: &mut Spans,
        now: u64,
        force: bool,
        runs: &mut [PurgeRun; PURGE_BATCH],
        released: &mut [*mut Segment; PURGE_BATCH],
    ) -> (usize, usize, u64) {
        let (mut nr, mut nl) = (0, 0);
        let mut next = u64::MAX;
        for list in 0..PLACEMENTS {
            let mut seg = g.segs[list].head();
            while !seg.is_null() {
                // SAFETY: live segment under the lock.
                let s = unsafe { &*seg };
                let after = s.next.get();
                let dirty = s.dirty_mask.get();
                if dirty != 0 || s.free_mask.get() == ALL_PAGES {
                    if force || s.purge_at.get() <= now {
                        if s.free_mask.get() == ALL_PAGES && nl < PURGE_BATCH {
                            // SAFETY: a segment of this list, under the lock.
                            unsafe { g.segs[list].remove(seg) };
                            self.dirty_bytes.fetch_sub((dirty.count_ones() as u64) << PAGE_SHIFT, Ordering::Relaxed);
                            released[nl] = seg;
                            nl += 1;
                        } else if dirty != 0 && nr < PURGE_BATCH {
                            s.free_mask.set(s.free_mask.get() & !dirty);
                            s.dirty_mask.set(0);
                            s.purge_at.set(0);
                            self.dirty_bytes.fetch_sub((dirty.count_ones() as u64) << PAGE_SHIFT, Ordering::Relaxed);
                            runs[nr] = PurgeRun { seg, run: dirty };
                            nr += 1;
                        } else {
                            next = now; // batch full: come back at once
                        }
                    } else {
                        next = next.min(s.purge_at.get());
                    }
                }
                seg = after;
            }
        }
        g.next_purge = next;
        (nr, nl, next)
    }

    /// Maps and sets up a new segment of `placement` (outside the lock).
    fn new_segment(&self, placement: SpanPlacement) -> *mut Segment {
        // SAFETY: valid size/alignment.
        let p = unsafe { os::map_aligned(SEGMENT_SIZE, SEGMENT_SIZE) };
        if p.is_null() {
            return ptr::null_mut();
        }
        let (policy, _) = config::policy();
        let interleaved = matches!(policy, Policy::Interleave(_)) && placement == SpanPlacement::Policy;
        match placement {
            SpanPlacement::Policy => crate::node::placement::apply_policy(p, SEGMENT_SIZE, self.node, true),
            SpanPlacement::Bound if config::numa_enabled() => {
                crate::node::placement::apply_policy(p, SEGMENT_SIZE, self.node, false)
            }
            _ => {}
        }
        let thp = match placement {
            // A segment holding one node's memory: huge pages change no placement.
            SpanPlacement::Bound => options::get().segment_thp,
            // Each page must go to its own first toucher; interleave alternates page by page.
            SpanPlacement::FirstTouch => false,
            SpanPlacement::Policy => options::get().segment_thp && !interleaved,
        };
        if thp || placement != SpanPlacement::Bound {
            // SAFETY: our fresh mapping (also where the system's THP setting is `always`).
            unsafe { Sys::set_huge_pages(p, SEGMENT_SIZE, thp) };
        }
        if cfg!(feature = "hardened") {
            // SAFETY: the last OS page of our fresh mapping, never part of a span.
            unsafe { Sys::protect(p.add(SEGMENT_SIZE - os::OS_PAGE), os::OS_PAGE, false) };
        }
        let seg = p as *mut Segment;
        // SAFETY: fresh zeroed mapping, unknown to anyone.
        unsafe {
            init_header(seg, SEG_NORMAL, placement as u8, self.node, p, SEGMENT_SIZE);
            let s = &*seg;
            s.free_mask.set(ALL_PAGES);
            (*s.page(0)).kind.set(PageKind::Meta as u8);
        }
        self.counters.segments.fetch_add(1, Ordering::Relaxed);
        self.counters.segments_total.fetch_add(1, Ordering::Relaxed);
        self.counters.mapped(SEGMENT_SIZE as u64);
        seg
    }

    /// # Safety
    /// The segment is unlinked and entirely free.
    unsafe fn release_segment(&self, seg: *mut Segment) {
        segmap_set(seg, false);
        self.counters.segments.fetch_sub(1, Ordering::Relaxed);
        self.counters.unmapped(SEGMENT_SIZE as u64);
        // SAFETY: caller guarantees nothing uses it.
        unsafe { os::unmap(seg.cast(), SEGMENT_SIZE) };
    }

    /// Visits every live segment (for stats), under the lock.
    pub(crate) fn for_each_segment(&self, mut f: impl FnMut(&Segment)) {
        let g = self.lock.lock();
        for list in &g.segs {
            for seg in list.iter() {
                // SAFETY: live segment under the lock.
                f(unsafe { &*seg });
            }
        }
    }
}

/// Sets the descriptors of a span of `n` pages at `head` to `kind`: the head has `head_off` 0 and
/// `span_pages` n, every other page points back to it.
///
/// # Safety
/// `head` is a descriptor of a live segment with `n` descriptors from it, owned by the caller.
pub(crate) unsafe fn init_span(head: *mut Page, n: usize, kind: PageKind) {
    // SAFETY: the caller's contract.
    unsafe {
        for k in 1..n {
            let d = &*head.add(k);
            d.kind.set(kind as u8);
            d.head_off.set(k as u8);
        }
        let h = &*head;
        h.kind.set(kind as u8);
        h.head_off.set(0);
        h.set_span_pages(n as u32);
        h.free.set(ptr::null_mut());
        h.local_free.set(ptr::null_mut());
        h.next.set(ptr::null_mut());
        h.prev.set(ptr::null_mut());
    }
}

/// The first segment of `list` with `n` free pages in a row: a run of still-resident (dirty)
/// pages among the first few segments with room (no page faults), else the first run that fits.
/// With `untouched` (spans placed by first touch) the preference is the other way round: a run
/// that reads as zero (never used or purged), so that no `madvise` is needed to hand it out.
fn find_span(list: &List<Segment>, n: usize, untouched: bool) -> Option<(*mut Segment, usize)> {
    let mut found = None;
    for (looked, seg) in list.iter().enumerate() {
        // SAFETY: segments in the list are live; fields are under the caller's lock.
        let s = unsafe { &*seg };
        let free = s.free_mask.get();
        if free == 0 {
            break; // full segments are at the back
        }
        if looked < DIRTY_SEARCH {
            let preferred = if untouched { free & !s.nonzero_mask.get() } else { free & s.dirty_mask.get() };
            if let Some(i) = find_run(preferred, n) {
                return Some((seg, i));
            }
        }
        if found.is_none() {
            if let Some(i) = find_run(free, n) {
                found = Some((seg, i));
                if looked >= DIRTY_SEARCH {
                    break;
                }
            }
        }
    }
    found
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
    if m == 0 {
        None
    } else {
        Some(m.trailing_zeros() as usize)
    }
}

// ---- the table of domains ----

/// One domain per node id (slots of ids without a node stay unused), set up at start-up.
struct Table {
    domains: *mut Domain,
    n: usize,
    /// The node whose domain serves every request when NUMA is off (the first with memory).
    solo: usize,
}

static TABLE: SetOnce<Table> = SetOnce::new(Table { domains: ptr::null_mut(), n: 0, solo: 0 });

/// Publishes the domain table (`n` initialised domains at `domains`).
///
/// # Safety
/// Start-up only, before the allocator is published as ready; the table lives forever.
pub(crate) unsafe fn set_table(domains: *mut Domain, n: usize, solo: usize) {
    // SAFETY: the caller's contract is `SetOnce::set`'s.
    unsafe { TABLE.set(Table { domains, n, solo }) }
}

/// The domain of node `n` (the solo domain when `n` is out of range).
#[inline]
pub(crate) fn domain(n: usize) -> &'static Domain {
    let t = TABLE.get();
    let n = if n < t.n { n } else { t.solo };
    // SAFETY: index in range; the table lives forever.
    unsafe { &*t.domains.add(n) }
}

/// Number of domain slots (highest possible node id + 1).
#[inline]
pub(crate) fn domain_slots() -> usize {
    TABLE.get().n
}

/// The node layer's locks of fork stage `stage` (see `sys::ForkStage`): the domains' span locks,
/// then, as leaves, their home pools and huge-block caches.
pub(crate) fn fork_locks(stage: ForkStage, f: &mut dyn FnMut(&dyn ForkLock)) {
    for n in 0..domain_slots() {
        let d = domain(n);
        match stage {
            ForkStage::Spans => f(&d.lock),
            ForkStage::Leaves => {
                f(d.pool.fork_lock());
                f(d.huge_cache.fork_lock());
            }
            ForkStage::Outer | ForkStage::Queues => {}
        }
    }
}

/// The node of the one domain used when NUMA is off.
#[inline]
pub(crate) fn solo_node() -> usize {
    TABLE.get().solo
}

/// The node whose memory serves CPU `cpu` (under a binding policy: the nearest allowed node).
#[inline]
pub(crate) fn node_of_cpu(cpu: usize) -> usize {
    if !config::numa_enabled() {
        return solo_node();
    }
    let n = topology::get().cpu_node(cpu).unwrap_or(solo_node());
    domain(n).policy_home
}

/// Whether the calling thread's affinity keeps it on node `node` (every CPU it may run on is
/// that node's, as [`node_of_cpu`] maps them): the program or its launcher put it there, so a
/// move there is followed at once. False when the OS cannot say. A system call: slow paths.
pub(crate) fn affinity_within(node: usize) -> bool {
    let mut mask = [0u64; os::CPU_WORDS];
    if !Sys::thread_cpus(&mut mask) {
        return false;
    }
    let mut any = false;
    for (w, &word) in mask.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let cpu = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if node_of_cpu(cpu) != node {
                return false;
            }
            any = true;
        }
    }
    any
}

/// Whether the calling thread holds some domain's lock (the contention counters' probe).
pub(crate) fn holds_a_domain_lock() -> bool {
    (0..domain_slots()).any(|n| domain(n).lock.held_by_me())
}

/// Bytes per page, re-exported for the stats report.
pub(crate) const SPAN_UNIT: usize = PAGE_SIZE;

/// The placement a policy gives a range (used when binding segments and huge blocks).
pub(crate) fn placement_of(policy: &Policy) -> Placement<'_> {
    match policy {
        Policy::Bind(m) => Placement::Bind(m),
        Policy::Interleave(m) => Placement::Interleave(m),
        Policy::Preferred(n) => Placement::Preferred(*n),
        Policy::PreferredMany(m) => Placement::PreferredMany(m),
        Policy::Local => Placement::Local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs() {
        assert_eq!(find_run(0b1111_0110, 2), Some(1));
        assert_eq!(find_run(0b1111_0110, 3), Some(4));
        assert_eq!(find_run(0b1111_0110, 5), None);
        let usable = ALL_PAGES.count_ones() as usize;
        assert_eq!(find_run(ALL_PAGES, usable), Some(1));
        assert_eq!(run_mask(1, usable), ALL_PAGES);
        assert_eq!(run_mask(3, 2), 0b11000);
    }
}
