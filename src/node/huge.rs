//! Huge blocks (above [`LARGE_MAX`]): one OS mapping each, headed by a `Segment` of kind huge.
//!
//! They are never touched by the allocator beyond their header, so the kernel's first touch
//! places every page where the program first writes it (a `calloc`'d array filled in parallel
//! lands on each worker's node). Blocks of 2 MiB and more start on a 2 MiB boundary, so a
//! transparent huge page never straddles two workers' parts. `realloc` grows them with
//! `mremap`, moving pages instead of copying.
//!
//! Freed blocks wait in a small per-node cache for reuse. A block's home is where its pages are:
//! on a multi-node machine a freed block is asked about (`placement::home_of`, one system call)
//! and cached on the node its pages are on, so the next block of that size on that node reuses
//! it without a page fault; a block whose pages are on several nodes (a `calloc`'d array touched
//! in parallel) is purged before reuse so first touch places it again. Node-targeted blocks and
//! blocks under a placement policy carry their binding and are never reused for other requests.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::config::options::{self, Policy};
use crate::layout::{init_header, segmap_set, Segment, SpanPlacement, PAGE_SIZE, SEGMENT_SIZE, SEG_HUGE, THP_SIZE};
use crate::node::domain::Domain;
use crate::node::placement;
use crate::sys::os::{self, Os, Sys, OS_PAGE};
use crate::sys::Lock;
use crate::sys::LockKind;

pub(crate) use crate::layout::LARGE_MAX;

const CACHE_SLOTS: usize = 8;

/// Spare capacity (beyond a quarter of the block) from which a reused cached block gives its
/// unused tail's pages back to the kernel (`DOMALLOC_PURGE`); smaller tails are kept as they are
/// (the system call and its TLB shootdown would cost more than they give back).
const LEND_MIN: usize = 2 << 20;

/// Live blocks with slack a domain keeps track of (see [`keep_slack`]).
const SLACK_SLOTS: usize = 32;

/// Hardened builds: a `PROT_NONE` guard page right after each huge block (counted in its mapping)
/// and one right before it (in the unused room between header and data), so linear overflows
/// fault; `realloc` always moves such blocks (their mappings never change size). 0 otherwise.
const GUARD: usize = if cfg!(feature = "hardened") { OS_PAGE } else { 0 };
// The page before the data must not hold any of the header.
static_assertions::const_assert!(core::mem::size_of::<Segment>() + GUARD <= PAGE_SIZE);

/// Freed huge blocks kept for reuse (per node).
pub(crate) struct HugeCache {
    slots: Lock<CacheSlots>,
    /// Bytes held, as of the last change (read without the lock).
    held: core::sync::atomic::AtomicUsize,
}

pub(crate) struct CacheSlots {
    seg: [*mut Segment; CACHE_SLOTS],
    freed_at: [u64; CACHE_SLOTS],
    bytes: usize,
    /// Live blocks with slack (`huge_slack` > 0), and since when.
    slack: [*mut Segment; SLACK_SLOTS],
    slack_at: [u64; SLACK_SLOTS],
}
// SAFETY: the pointers are owned by the cache and guarded by its lock.
unsafe impl Send for CacheSlots {}

impl CacheSlots {
    const EMPTY: CacheSlots = CacheSlots {
        seg: [ptr::null_mut(); CACHE_SLOTS],
        freed_at: [0; CACHE_SLOTS],
        bytes: 0,
        slack: [ptr::null_mut(); SLACK_SLOTS],
        slack_at: [0; SLACK_SLOTS],
    };
}

impl HugeCache {
    pub(crate) fn init(&mut self) {
        self.slots = Lock::new(LockKind::Other, CacheSlots::EMPTY);
    }

    fn take(&self, size: usize, align: usize) -> *mut Segment {
        let mut g = self.slots.lock();
        let mut best = usize::MAX;
        let mut best_size = usize::MAX;
        for i in 0..CACHE_SLOTS {
            let s = g.seg[i];
            if s.is_null() {
                continue;
            }
            // SAFETY: cached headers stay mapped.
            let (hs, ha, data) = unsafe { (usable(&*s), (*s).huge_align.get(), (*s).huge_data.get()) };
            if (data as usize) % align != 0 || ha > SEGMENT_SIZE / 2 {
                continue;
            }
            // The smallest block that holds `size`; failing that the largest smaller one (it
            // grows with `mremap`, keeping its resident pages: fewer page faults than a fresh
            // mapping).
            let better = if best == usize::MAX {
                true
            } else if hs >= size {
                best_size < size || hs < best_size
            } else {
                best_size < size && hs > best_size
            };
            if better {
                best = i;
                best_size = hs;
            }
        }
        if best == usize::MAX {
            return ptr::null_mut();
        }
        let s = g.seg[best];
        g.seg[best] = ptr::null_mut();
        // SAFETY: cached headers stay mapped.
        g.bytes -= unsafe { capacity(&*s) };
        self.held.store(g.bytes, Ordering::Relaxed);
        s
    }

    /// Offers a freed block; returns false if the cache does not want it. Entries older than
    /// `max_age_ms` are released on the way, so a program that keeps freeing huge blocks does
    /// not hold idle ones past the purge delay.
    fn put(&self, seg: *mut Segment, limit: usize, max_age_ms: u64) -> bool {
        // SAFETY: header is live.
        let size = unsafe { capacity(&*seg) };
        if size > limit {
            return false;
        }
        let mut evict = [ptr::null_mut::<Segment>(); CACHE_SLOTS];
        {
            let mut g = self.slots.lock();
            let now = Sys::now_ms();
            let mut n = 0;
            for i in 0..CACHE_SLOTS {
                if !g.seg[i].is_null() && now.saturating_sub(g.freed_at[i]) >= max_age_ms {
                    evict[n] = g.seg[i];
                    n += 1;
                    // SAFETY: header is live.
                    g.bytes -= unsafe { capacity(&*g.seg[i]) };
                    g.seg[i] = ptr::null_mut();
                }
            }
            // Make room: evict oldest entries until the new one fits.
            while g.bytes + size > limit || g.seg.iter().all(|s| !s.is_null()) {
                let mut oldest = usize::MAX;
                for i in 0..CACHE_SLOTS {
                    if !g.seg[i].is_null() && (oldest == usize::MAX || g.freed_at[i] < g.freed_at[oldest]) {
                        oldest = i;
                    }
                }
                if oldest == usize::MAX {
                    break;
                }
                evict[n] = g.seg[oldest];
                n += 1;
                // SAFETY: header is live.
                g.bytes -= unsafe { capacity(&*g.seg[oldest]) };
                g.seg[oldest] = ptr::null_mut();
            }
            let i = g.seg.iter().position(|s| s.is_null()).unwrap_or(0);
            g.seg[i] = seg;
            g.freed_at[i] = now;
            g.bytes += size;
            self.held.store(g.bytes, Ordering::Relaxed);
        }
        for s in evict {
            if !s.is_null() {
                // SAFETY: evicted entries are ours.
                unsafe { release(s) };
            }
        }
        true
    }

    /// Releases entries older than `max_age_ms` (all with 0).
    pub(crate) fn trim(&self, max_age_ms: u64) {
        let mut out = [ptr::null_mut::<Segment>(); CACHE_SLOTS];
        {
            let mut g = self.slots.lock();
            if g.bytes == 0 {
                return;
            }
            let now = Sys::now_ms();
            for (i, o) in out.iter_mut().enumerate() {
                if !g.seg[i].is_null() && now.saturating_sub(g.freed_at[i]) >= max_age_ms {
                    *o = g.seg[i];
                    // SAFETY: header is live.
                    g.bytes -= unsafe { capacity(&*g.seg[i]) };
                    g.seg[i] = ptr::null_mut();
                }
            }
            self.held.store(g.bytes, Ordering::Relaxed);
        }
        for s in out {
            if !s.is_null() {
                // SAFETY: removed from the cache, ours.
                unsafe { release(s) };
            }
        }
    }

    /// The cache's lock, for the fork handlers.
    pub(crate) fn fork_lock(&self) -> &Lock<CacheSlots> {
        &self.slots
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.lock().bytes
    }

    /// Bytes held as of the last change (no lock: a hint).
    pub(crate) fn bytes_hint(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// Allocates a huge block of `size` bytes aligned to `align` from domain `d`. `placed` says the
/// block must be bound to `d`'s node (node-targeted allocation) rather than placed by first
/// touch; `policy` that the process's placement policy applies to it. Null when the OS refuses
/// the memory (the caller may give back free memory and try again).
pub(crate) fn alloc(d: &Domain, size: usize, align: usize, zero: bool, placed: bool, policy: bool) -> *mut u8 {
    if !placed && !policy {
        let Some(data_size) = size.checked_add(OS_PAGE - 1).map(|s| s & !(OS_PAGE - 1)) else {
            return ptr::null_mut();
        };
        let seg = d.huge_cache.take(data_size, align);
        if !seg.is_null() {
            // SAFETY: taken from the cache: ours.
            let p = unsafe { reuse(d, seg, size, data_size, zero) };
            if !p.is_null() {
                return p;
            }
        } else {
            d.counters.huge_cache_misses.fetch_add(1, Ordering::Relaxed);
        }
    }
    alloc_uncached(d, size, align, placed, policy)
}

/// Hands out a block taken from the cache, fitted to `data_size`: its pages stay where they are
/// (on `d`'s node) unless they were on several nodes, then they are purged first.
///
/// # Safety
/// `seg` was just taken from `d`'s cache: nobody else holds it.
unsafe fn reuse(d: &Domain, seg: *mut Segment, size: usize, data_size: usize, zero: bool) -> *mut u8 {
    // Bytes of the block that may hold old data (a grown block's tail is fresh).
    // SAFETY: a cached header of ours.
    let dirty = unsafe { capacity(&*seg) }.min(size);
    // SAFETY: ours.
    let seg = unsafe { fit_cached(d, seg, data_size) };
    if seg.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: a cached header of ours.
    unsafe {
        let s = &*seg;
        let p = s.huge_data.get();
        // Hardened builds: the block was inaccessible while cached; the part handed out becomes
        // accessible again (a smaller request leaves the rest inaccessible, next to the guard).
        #[cfg(feature = "hardened")]
        Sys::protect(p, data_size, true);
        let mut is_zero = false;
        // `DOMALLOC_FIRST_TOUCH=always@<size>`: a recycled block of a first-touch mapping is
        // placed again by first touch, whoever allocates it.
        let from = crate::config::options::get().fresh_blocks_from;
        let refresh = from != 0
            && data_size >= from
            && s.placement == crate::layout::SpanPlacement::FirstTouch as u8
            && crate::config::numa_enabled();
        if refresh || s.huge_mixed.get() || (zero && crate::config::numa_enabled()) {
            // Pages on several nodes, or a `calloc` (the array many threads first-touch in
            // parallel: recycled pages on one node would stay there): placed again by first
            // touch like a fresh block (all of it: a later `realloc` may grow into the spare
            // capacity), and zero. A plain `malloc` on the block's node keeps its resident
            // pages: no page fault.
            is_zero = os::purge(p, usable(s), os::PurgeMode::DontNeed);
            s.huge_mixed.set(false);
            drop_slack(d, seg);
        }
        if zero && !is_zero {
            ptr::write_bytes(p, 0, dirty);
        }
        s.freed.store(0, Ordering::Release);
        d.counters.huge_blocks.fetch_add(1, Ordering::Relaxed);
        d.counters.huge_bytes.fetch_add(s.huge_size.get() as u64, Ordering::Relaxed);
        d.counters.huge_total.fetch_add(1, Ordering::Relaxed);
        d.counters.huge_cache_hits.fetch_add(1, Ordering::Relaxed);
        d.counters.note_in_use();
        p
    }
}

/// Fits a block taken from the cache to `data_size` bytes: gives the tail's pages back when it
/// is more than a quarter too big; grows it in place or by moving its pages (`mremap`) when too
/// small. Returns the (possibly moved) header, or null after releasing the block when it could
/// not grow.
///
/// # Safety
/// `seg` was just taken from the cache: nobody else holds it.
unsafe fn fit_cached(d: &Domain, seg: *mut Segment, data_size: usize) -> *mut Segment {
    // SAFETY: live header, ours.
    let s = unsafe { &*seg };
    let hs = usable(s);
    let off = s.huge_data.get() as usize - s.map_start.get() as usize;
    let old_map = s.map_size.get();
    let resized = |s: &Segment| {
        s.map_size.set(off + data_size);
        s.huge_size.set(data_size);
        d.counters.mapped((off + data_size) as u64);
        d.counters.unmapped(old_map as u64);
    };
    if hs >= data_size {
        // A block more than a quarter too big keeps its mapping as spare capacity (a later
        // `realloc` grows into it, a later request of its size reuses it). Its unused tail's
        // pages stay resident as slack while the node's live huge blocks pay for it (see
        // `keep_slack`); otherwise they go back as the purge mode says: with `dontneed` (the
        // default) they leave the RSS now (`sort -S 100M` reused its 100 MB buffer's block for
        // a 28 MB one and peaked at 183 MB with the tail lent lazily, `MADV_FREE` pages
        // counting as resident; glibc 104 MB); with `free` they stay resident, and fault-free
        // on the next write, unless the system needs the memory. On a multi-node machine the
        // next toucher places them again.
        s.huge_size.set(data_size);
        let tail = hs - data_size;
        if tail > (data_size / 4).max(LEND_MIN) {
            let mode = if keep_slack(d, seg, tail) {
                // Kept, but lazily freed: fault-free when written again before the kernel
                // takes it, and taken before anything is killed for memory (a cgroup limit).
                os::PurgeMode::Free
            } else {
                d.counters.purged_bytes.fetch_add(tail as u64, Ordering::Relaxed);
                options::get().purge_mode
            };
            // SAFETY: the tail of our own block; nobody uses it (its contents are undefined to
            // the program, which has not written it yet).
            unsafe { os::purge(s.huge_data.get().add(data_size), tail, mode) };
        }
        return seg;
    }
    if GUARD != 0 {
        // Hardened builds never grow a cached block (its guard page would have to move): a block
        // too small for this request is released, so the cache does not fill with such blocks.
        // SAFETY: ours, in no cache.
        unsafe { drop_block(seg) };
        return ptr::null_mut();
    }
    // SAFETY: our mapping.
    if unsafe { Sys::resize_in_place(s.map_start.get(), old_map, off + data_size) } {
        resized(s);
        return seg;
    }
    let nseg = if s.map_start.get() == seg.cast() {
        // SAFETY: ours, header at the mapping's start.
        unsafe { move_block(seg, off + data_size) }
    } else {
        ptr::null_mut()
    };
    if nseg.is_null() {
        // SAFETY: ours, in no cache.
        unsafe { release(seg) };
        return ptr::null_mut();
    }
    // SAFETY: the header now lives at `nseg`.
    resized(unsafe { &*nseg });
    nseg
}

/// Moves a huge block's whole mapping (header first) to a new, `map_size`-byte place with
/// `mremap`: its pages move, nothing is copied. Returns the new header, or null (nothing
/// changed). The caller updates the sizes and counters.
///
/// # Safety
/// `seg` is a live huge header of ours at the start of its mapping.
unsafe fn move_block(seg: *mut Segment, map_size: usize) -> *mut Segment {
    // SAFETY: live header.
    let s = unsafe { &*seg };
    let off = s.huge_data.get() as usize - s.map_start.get() as usize;
    // Off the map before the old range is given up: once `mremap` has moved the pages, another
    // thread may map something new at the old address and set the same bit.
    segmap_set(seg, false);
    // SAFETY: our mapping; on success the header moved with it.
    let moved = unsafe { Sys::move_mapping(seg.cast(), s.map_size.get(), map_size, SEGMENT_SIZE) };
    if moved.is_null() {
        segmap_set(seg, true);
        return ptr::null_mut();
    }
    let nseg = moved as *mut Segment;
    // SAFETY: the header now lives at `moved`.
    unsafe {
        let ns = &*nseg;
        ns.map_start.set(moved);
        ns.huge_data.set(moved.add(off));
    }
    segmap_set(nseg, true);
    nseg
}

/// A fresh mapping for a huge block (see [`alloc`]); `placed` binds it to `d`'s node.
fn alloc_uncached(d: &Domain, size: usize, align: usize, placed: bool, policy: bool) -> *mut u8 {
    // At least one page, so that even a zero-size request with a huge alignment points into its
    // own mapping (and finds its own header), never at the next one.
    let Some(data_size) = size.max(1).checked_add(OS_PAGE - 1).map(|s| s & !(OS_PAGE - 1)) else {
        return ptr::null_mut();
    };
    let opts = options::get();
    let (hdr, p, map_size) = if align >= SEGMENT_SIZE {
        // The header's segment right before the block, the block on `align`: only these are
        // mapped read/write (the search for the place reserves address space, not memory, so
        // alignments far beyond the machine's memory work).
        let Some(total) = data_size.checked_add(SEGMENT_SIZE + GUARD) else { return ptr::null_mut() };
        // SAFETY: valid sizes; SEGMENT_SIZE < align, both page multiples.
        let hdr = unsafe { os::map_aligned_offset(total, align, SEGMENT_SIZE) };
        if hdr.is_null() {
            return hdr;
        }
        // SAFETY: SEGMENT_SIZE < total.
        (hdr, unsafe { hdr.add(SEGMENT_SIZE) }, total)
    } else {
        let off = if data_size >= THP_SIZE || align > PAGE_SIZE { THP_SIZE.max(align) } else { PAGE_SIZE };
        let Some(total) = data_size.checked_add(off + GUARD) else { return ptr::null_mut() };
        // SAFETY: valid sizes.
        let m = unsafe { os::map_aligned(total, SEGMENT_SIZE) };
        if m.is_null() {
            return m;
        }
        // SAFETY: off < total.
        (m, unsafe { m.add(off) }, total)
    };
    if GUARD != 0 {
        // SAFETY: the page after the data is the mapping's last (GUARD); the page before it lies
        // between the header (at most PAGE_SIZE - GUARD bytes, asserted above) and the data.
        unsafe {
            Sys::protect(p.add(data_size), GUARD, false);
            Sys::protect(p.sub(GUARD), GUARD, false);
        }
    }
    let (pol, _) = crate::config::policy();
    let placement = if placed {
        // Node-targeted: bound to the node per range, or first-touched from it (the BSDs).
        placement::place_range(p, data_size, os::Placement::Preferred(d.node));
        SpanPlacement::Bound
    } else if policy {
        placement::apply_policy(p, data_size, d.node, true);
        if !opts.thp && matches!(pol, Policy::Interleave(_)) {
            // Page by page, also where the system's THP setting is `always`.
            // SAFETY: our fresh mapping.
            unsafe { Sys::set_huge_pages(p, data_size, false) };
        }
        SpanPlacement::Policy
    } else {
        SpanPlacement::FirstTouch
    };
    if opts.thp && data_size >= THP_SIZE {
        // SAFETY: our mapping; the header region stays on small pages.
        unsafe { Sys::set_huge_pages(p, data_size & !(THP_SIZE - 1), true) };
    }
    let seg = hdr as *mut Segment;
    // SAFETY: fresh zeroed mapping; header fields initialised here, then published.
    unsafe {
        let s = &*seg;
        s.huge_data.set(p);
        s.huge_size.set(map_size - GUARD - (p as usize - hdr as usize));
        s.huge_align.set(align);
        init_header(seg, SEG_HUGE, placement as u8, d.node, hdr, map_size);
    }
    d.counters.huge_blocks.fetch_add(1, Ordering::Relaxed);
    // SAFETY: header initialised.
    d.counters.huge_bytes.fetch_add(unsafe { (*seg).huge_size.get() } as u64, Ordering::Relaxed);
    d.counters.huge_total.fetch_add(1, Ordering::Relaxed);
    d.counters.mapped(map_size as u64);
    d.counters.note_in_use();
    p
}

/// Allocates a block with its own mapping whose pages are interleaved over `nodes`.
pub(crate) fn alloc_placed(d: &Domain, size: usize, align: usize, nodes: &crate::sys::os::NodeMask) -> *mut u8 {
    // A private mapping: bypass the cache (cached blocks carry another placement).
    let p = alloc_uncached(d, size, align, false, true);
    if let Some((seg, _)) = crate::layout::lookup(p) {
        // SAFETY: the header of the block we just mapped.
        let len = unsafe { (*seg).huge_size.get() };
        placement::place_range(p, len, os::Placement::Interleave(nodes));
        if !options::get().thp {
            // Page by page, also where the system's THP setting is `always`.
            // SAFETY: our fresh mapping.
            unsafe { Sys::set_huge_pages(p, len, false) };
        }
    }
    p
}

/// How long (ms) a freed huge block may wait in the cache: 5 times the purge delay (half a
/// second by default). Re-faulting a multi-MiB block costs far more than re-faulting a span, and
/// programs that reallocate big arrays every step (time steps, solver iterations) come back
/// within that time; the cache's size limit bounds what an idle program holds meanwhile.
pub(crate) fn cache_age_ms() -> u64 {
    options::get().purge_delay_ms.saturating_mul(2)
}

/// Aborts with a clear message naming `what` if `p` is not the live start of the huge block
/// `seg` (a freed block still held by the cache, or an interior pointer).
///
/// # Safety
/// `seg` is a live huge header.
pub(crate) unsafe fn check_live(seg: *mut Segment, p: *const u8, what: &str) {
    // SAFETY: live header.
    let s = unsafe { &*seg };
    if s.freed.load(Ordering::Acquire) != 0 {
        os::fatal(format_args!("{}(): double free or use after free of {:p}", what, p));
    }
    if !core::ptr::eq(s.huge_data.get(), p) {
        os::fatal(format_args!("{}(): invalid pointer {:p} (inside a huge block at {:p})", what, p, s.huge_data.get()));
    }
}

/// Frees a huge block. Aborts on a double or interior free.
///
/// # Safety
/// `seg` is a live huge header and `p` a pointer the program passed to free.
pub(crate) unsafe fn free(seg: *mut Segment, p: *mut u8) {
    // SAFETY: forwarded.
    unsafe {
        mark_freed(seg, p);
        cache_or_release(seg);
    }
}

/// The checks and bookkeeping of a huge block's `free`: aborts on an interior pointer or a
/// second free; afterwards the block is the caller's to cache or release.
///
/// # Safety
/// `seg` is a live huge header and `p` a pointer the program passed to free.
pub(crate) unsafe fn mark_freed(seg: *mut Segment, p: *mut u8) {
    // SAFETY: live header.
    let s = unsafe { &*seg };
    if s.huge_data.get() != p {
        os::fatal(format_args!("free(): invalid pointer {:p} (inside a huge block at {:p})", p, s.huge_data.get()));
    }
    if s.freed.swap(1, Ordering::AcqRel) != 0 {
        os::fatal(format_args!("free(): double free of {:p}", p));
    }
    let d = crate::node::domain::domain(s.node());
    d.counters.huge_blocks.fetch_sub(1, Ordering::Relaxed);
    d.counters.huge_bytes.fetch_sub(s.huge_size.get() as u64, Ordering::Relaxed);
    d.counters.huge_frees.fetch_add(1, Ordering::Relaxed);
    drop_slack(d, seg);
}

/// Puts a freed block in the cache of the node its pages are on, or unmaps it.
///
/// # Safety
/// `seg` is a huge block of ours that [`mark_freed`] marked, in no cache.
unsafe fn cache_or_release(seg: *mut Segment) {
    // SAFETY: live header.
    let s = unsafe { &*seg };
    let limit = options::get().huge_cache;
    let first_touch = s.placement == SpanPlacement::FirstTouch as u8;
    if limit == 0 || !first_touch {
        // SAFETY: freed, ours.
        unsafe { drop_block(seg) };
        return;
    }
    let home = if crate::config::numa_enabled() {
        // SAFETY: our freed block.
        unsafe { rehome(seg) }
    } else {
        crate::node::domain::domain(s.node())
    };
    // Hardened builds: a cached block is inaccessible until it is handed out again (its pages
    // stay resident), so a use after free faults and a second free sees the `freed` flag.
    #[cfg(feature = "hardened")]
    // SAFETY: the data range of our freed block; nobody uses it.
    unsafe {
        Sys::protect(s.huge_data.get(), s.huge_size.get(), false)
    };
    if !home.huge_cache.put(seg, limit, cache_age_ms()) {
        // SAFETY: freed, ours.
        unsafe { drop_block(seg) };
    }
}

/// A freed block the cache does not keep: unmapped (hardened builds: retired first).
///
/// # Safety
/// `seg` is a huge block of ours that [`mark_freed`] marked, in no cache.
unsafe fn drop_block(seg: *mut Segment) {
    #[cfg(feature = "hardened")]
    // SAFETY: forwarded.
    unsafe {
        retire(seg)
    };
    #[cfg(not(feature = "hardened"))]
    // SAFETY: forwarded.
    unsafe {
        release(seg)
    };
}

/// Asks where a freed block's pages are and moves it to that node's domain (its home).
///
/// # Safety
/// `seg` is a freed huge block of ours, in no cache.
unsafe fn rehome(seg: *mut Segment) -> &'static Domain {
    // SAFETY: live header.
    let s = unsafe { &*seg };
    let old = s.node();
    let (node, mixed) = match placement::home_of(s.huge_data.get(), s.huge_size.get()) {
        placement::Home::On(n) => (n, false),
        placement::Home::Mixed(n) => (n, true),
        placement::Home::Untouched | placement::Home::Unknown => (old, false),
    };
    s.huge_mixed.set(mixed);
    let node = if node < crate::node::domain::domain_slots() { crate::node::domain::domain(node).node } else { old };
    if node != old {
        let (from, to) = (crate::node::domain::domain(old), crate::node::domain::domain(node));
        from.counters.unmapped(s.map_size.get() as u64);
        to.counters.mapped(s.map_size.get() as u64);
        to.counters.went_home.fetch_add(1, Ordering::Relaxed);
        s.node.store(node as u32, Ordering::Relaxed);
    }
    crate::node::domain::domain(node)
}

/// Unmaps a huge block's mapping.
///
/// # Safety
/// Nobody uses the block; it is in no cache.
pub(crate) unsafe fn release(seg: *mut Segment) {
    // SAFETY: live header until the unmap.
    let (start, size, node) = unsafe { ((*seg).map_start.get(), (*seg).map_size.get(), (*seg).node()) };
    segmap_set(seg, false);
    crate::node::domain::domain(node).counters.unmapped(size as u64);
    // SAFETY: our mapping.
    unsafe { os::unmap(start, size) };
}

/// Resizes a huge block in place or by moving its pages. Returns the (possibly moved) block, or
/// null if the caller must allocate, copy and free.
///
/// # Safety
/// `seg` is the live header of the block `p`, owned by the caller.
pub(crate) unsafe fn realloc(seg: *mut Segment, p: *mut u8, new_size: usize) -> *mut u8 {
    // SAFETY: live header.
    let s = unsafe { &*seg };
    if GUARD != 0 {
        return ptr::null_mut(); // hardened: mappings keep their size (and guard pages)
    }
    let Some(new_data) = new_size.checked_add(OS_PAGE - 1).map(|x| x & !(OS_PAGE - 1)) else {
        return ptr::null_mut();
    };
    let old_data = s.huge_size.get();
    let off = p as usize - s.map_start.get() as usize;
    let d = crate::node::domain::domain(s.node());
    if new_data <= old_data && (new_data >= old_data / 2 || new_size <= LARGE_MAX) {
        return if new_size > LARGE_MAX { p } else { ptr::null_mut() };
    }
    // The block changes size (or moves): its slack, if it kept some, is no longer tracked (a
    // sweep must not give back the part it grows into, or follow a moved header).
    drop_slack(d, seg);
    if new_data <= old_data {
        // Shrink in place: give the tail back.
        // SAFETY: our mapping, shrinking.
        if unsafe { Sys::resize_in_place(s.map_start.get(), s.map_size.get(), off + new_data) } {
            adjust(d, s, off + new_data, new_data);
        }
        return p;
    }
    if new_data <= capacity(s) {
        // Grows into spare capacity: no system call.
        adjust(d, s, s.map_size.get(), new_data);
        return p;
    }
    // SAFETY: our mapping.
    if unsafe { Sys::resize_in_place(s.map_start.get(), s.map_size.get(), off + new_data) } {
        adjust(d, s, off + new_data, new_data);
        return p;
    }
    if s.huge_align.get() >= SEGMENT_SIZE || s.map_start.get() != seg.cast() {
        return ptr::null_mut();
    }
    // SAFETY: ours, header at the mapping's start (checked above).
    let nseg = unsafe { move_block(seg, off + new_data) };
    if nseg.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: the header now lives at `nseg`.
    let ns = unsafe { &*nseg };
    adjust(d, ns, off + new_data, new_data);
    ns.huge_data.get()
}

/// Bytes from a huge block's start to the end of its mapping: its size plus spare capacity left
/// by a bigger cached block it reused.
fn capacity(s: &Segment) -> usize {
    s.map_size.get() - (s.huge_data.get() as usize - s.map_start.get() as usize)
}

/// The bytes a huge block can hold: its capacity less the trailing guard page (hardened).
fn usable(s: &Segment) -> usize {
    capacity(s) - GUARD
}

/// Keeps the `tail` bytes past live block `seg`'s size resident as its slack, fault-free when
/// the block, freed again, is reused for a bigger request, if the domain's slack stays within
/// its live huge bytes and a slot of the slack table is free; false: the caller gives them back
/// now. Kept slack is given back by the sweeps once it is older than cached blocks may get
/// (`cache_age_ms`), and by `malloc_trim`. A program cycling through huge blocks of varying
/// sizes (mimalloc-bench's malloc-large: 20 live blocks of 5-25 MiB) reuses resident pages
/// instead of faulting them in again (1.78 M page faults became 0.15 M); a 100 MiB block reused
/// for 28 MiB still gives its tail back at once.
fn keep_slack(d: &Domain, seg: *mut Segment, tail: usize) -> bool {
    let live = d.counters.huge_bytes.load(Ordering::Relaxed);
    // (The block being handed out is not counted in `huge_bytes` yet.)
    // SAFETY: a live header of ours.
    let live = live + unsafe { (*seg).huge_size.get() } as u64;
    if d.counters.huge_slack.load(Ordering::Relaxed) + tail as u64 > live {
        return false;
    }
    let mut g = d.huge_cache.slots.lock();
    let Some(i) = g.slack.iter().position(|s| s.is_null()) else { return false };
    g.slack[i] = seg;
    g.slack_at[i] = Sys::now_ms();
    // SAFETY: a live header of ours; its slack is written under this lock.
    unsafe { (*seg).huge_slack.store(tail, Ordering::Release) };
    d.counters.huge_slack.fetch_add(tail as u64, Ordering::Relaxed);
    true
}

/// Live block `seg` stops keeping slack (it is freed, resized or purged whole): its resident
/// tail is no longer counted or tracked (the caller frees, resizes or purges it). Cheap when it
/// has none.
fn drop_slack(d: &Domain, seg: *mut Segment) {
    // SAFETY: a live header of ours.
    let s = unsafe { &*seg };
    if s.huge_slack.load(Ordering::Acquire) == 0 {
        return; // none, or a sweep gave it back already
    }
    let mut g = d.huge_cache.slots.lock();
    if let Some(i) = g.slack.iter().position(|&x| x == seg) {
        g.slack[i] = ptr::null_mut();
        let n = s.huge_slack.swap(0, Ordering::AcqRel);
        d.counters.huge_slack.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

/// Gives back the slack of live blocks kept longer than `max_age_ms` (all with 0). Returns
/// whether some is still kept.
pub(crate) fn trim_slack(d: &Domain, max_age_ms: u64) -> bool {
    if d.counters.huge_slack.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let mut g = d.huge_cache.slots.lock();
    let now = Sys::now_ms();
    let mut left = false;
    for i in 0..SLACK_SLOTS {
        let seg = g.slack[i];
        if seg.is_null() {
            continue;
        }
        if now.saturating_sub(g.slack_at[i]) < max_age_ms {
            left = true;
            continue;
        }
        g.slack[i] = ptr::null_mut();
        // SAFETY: a tracked block is live (its owner takes this lock to untrack it before
        // freeing or resizing it), and its tail past its size is not the program's.
        unsafe {
            let s = &*seg;
            let tail = s.huge_slack.load(Ordering::Acquire);
            os::purge(s.huge_data.get().add(s.huge_size.get()), tail, options::get().purge_mode);
            s.huge_slack.store(0, Ordering::Release);
            d.counters.huge_slack.fetch_sub(tail as u64, Ordering::Relaxed);
            d.counters.purged_bytes.fetch_add(tail as u64, Ordering::Relaxed);
        }
    }
    left
}

fn adjust(d: &Domain, s: &Segment, map_size: usize, data: usize) {
    let old_map = s.map_size.get();
    let old_data = s.huge_size.get();
    s.map_size.set(map_size);
    s.huge_size.set(data);
    d.counters.mapped(map_size as u64);
    d.counters.unmapped(old_map as u64);
    d.counters.huge_bytes.fetch_add(data as u64, Ordering::Relaxed);
    d.counters.huge_bytes.fetch_sub(old_data as u64, Ordering::Relaxed);
    d.counters.note_in_use();
}

/// Hardened builds: freed huge blocks kept (inaccessible, their pages dropped) before they are
/// unmapped, so a second free or a use soon after the free is caught.
#[cfg(feature = "hardened")]
pub(crate) const RETIRED_SLOTS: usize = 16;

/// Freed huge blocks waiting to be unmapped: a ring of headers, lock-free (a lock here could be
/// held across `fork`).
#[cfg(feature = "hardened")]
static RETIRED: [core::sync::atomic::AtomicPtr<Segment>; RETIRED_SLOTS] =
    [const { core::sync::atomic::AtomicPtr::new(ptr::null_mut()) }; RETIRED_SLOTS];
#[cfg(feature = "hardened")]
static RETIRED_NEXT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Hardened builds: a huge block was freed (its `freed` flag set): its pages are dropped, it is
/// made inaccessible and queued (its header stays, so a second free of it says "double free");
/// the oldest queued block is unmapped.
///
/// # Safety
/// `seg` is the live header of a freed huge block, in no cache, owned by the caller.
#[cfg(feature = "hardened")]
pub(crate) unsafe fn retire(seg: *mut Segment) {
    // SAFETY: the caller's block: its data range is ours and nothing uses it.
    unsafe {
        let (p, n) = ((*seg).huge_data.get(), (*seg).huge_size.get());
        os::purge(p, n, crate::sys::os::PurgeMode::DontNeed);
        Sys::protect(p, n, false);
    }
    let i = RETIRED_NEXT.fetch_add(1, Ordering::Relaxed) % RETIRED_SLOTS;
    let old = RETIRED[i].swap(seg, Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: out of the ring: nobody else holds it.
        unsafe { release(old) };
    }
}

/// Hardened builds: unmaps every retired huge block (`collect(true)`).
#[cfg(feature = "hardened")]
pub(crate) fn flush_retired() {
    for slot in &RETIRED {
        let s = slot.swap(ptr::null_mut(), Ordering::AcqRel);
        if !s.is_null() {
            // SAFETY: out of the ring: nobody else holds it.
            unsafe { release(s) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    const MIB: usize = 1 << 20;

    /// A cache of our own, outside any domain.
    fn cache() -> HugeCache {
        HugeCache { slots: Lock::new(LockKind::Other, CacheSlots::EMPTY), held: AtomicUsize::new(0) }
    }

    /// A header describing a huge block of `cap` bytes at a made-up address (never mapped: the
    /// cache policy only reads the header), data `align`-aligned.
    fn header(cap: usize, at: usize) -> *mut Segment {
        // SAFETY: a zeroed header is a valid `Segment` (null pointers, zero counters).
        let s = unsafe { std::alloc::alloc_zeroed(std::alloc::Layout::new::<Segment>()) } as *mut Segment;
        assert!(!s.is_null());
        // SAFETY: ours.
        unsafe {
            (*s).kind = SEG_HUGE;
            (*s).map_start.set(at as *mut u8);
            (*s).huge_data.set((at + PAGE_SIZE) as *mut u8);
            (*s).map_size.set(cap + PAGE_SIZE + GUARD);
            (*s).huge_size.set(cap);
            (*s).huge_align.set(16);
        }
        s
    }

    fn cap_of(s: *mut Segment) -> usize {
        // SAFETY: a header of ours.
        unsafe { usable(&*s) }
    }

    #[test]
    fn takes_the_smallest_block_that_holds_the_request_else_the_largest_smaller_one() {
        let c = cache();
        let limit = 1 << 30;
        let blocks = [8 * MIB, 16 * MIB, 32 * MIB];
        let segs: Vec<*mut Segment> =
            blocks.iter().enumerate().map(|(i, &b)| header(b, 0x7e00_0000_0000 + i * (64 << 20))).collect();
        for &s in &segs {
            assert!(c.put(s, limit, u64::MAX));
        }
        assert_eq!(c.bytes_hint(), blocks.iter().map(|b| b + PAGE_SIZE + GUARD - PAGE_SIZE).sum::<usize>());
        assert_eq!(cap_of(c.take(10 * MIB, 16)), 16 * MIB, "10 MiB: the smallest block that holds it");
        assert_eq!(cap_of(c.take(40 * MIB, 16)), 32 * MIB, "40 MiB: nothing holds it, the largest smaller block grows");
        assert_eq!(cap_of(c.take(MIB, 16)), 8 * MIB);
        assert!(c.take(MIB, 16).is_null(), "an empty cache hands out nothing");
        assert_eq!(c.bytes_hint(), 0);
        for s in segs {
            // SAFETY: allocated above, out of the cache.
            unsafe { std::alloc::dealloc(s.cast(), std::alloc::Layout::new::<Segment>()) };
        }
    }

    #[test]
    fn refuses_what_exceeds_its_limit_and_skips_misaligned_blocks() {
        let c = cache();
        let big = header(200 * MIB, 0x7e10_0000_0000);
        assert!(!c.put(big, 128 * MIB, u64::MAX), "a block above the cache's limit is not kept");
        let odd = header(8 * MIB, 0x7e20_0000_0000);
        assert!(c.put(odd, 128 * MIB, u64::MAX));
        // Its data is page-aligned, not 2 MiB-aligned: a 2 MiB-aligned request cannot use it.
        assert!(c.take(4 * MIB, 2 * MIB).is_null());
        assert_eq!(c.take(4 * MIB, 4096), odd);
        for s in [big, odd] {
            // SAFETY: allocated above, out of the cache.
            unsafe { std::alloc::dealloc(s.cast(), std::alloc::Layout::new::<Segment>()) };
        }
    }
}
