//! Segments and spans: the memory layout, and how any pointer finds its metadata in O(1).
//!
//! A *segment* is 4 MiB of address space aligned to 4 MiB and owned by one per-node domain. Its
//! first 64 KiB page holds the [`Segment`] header with one [`Page`] descriptor per 64 KiB page; a
//! *span* is a run of pages serving one size class (small) or one block (large). From a block
//! pointer `p`, `p & !SEGMENT_MASK` is its segment and `(p - segment) >> PAGE_SHIFT` its page
//! descriptor, whose `head_off` leads to the span's head: no syscall, no lock, no table search.
//!
//! *Huge* blocks (above [`LARGE_MAX`]) get a mapping of their own whose first 4 MiB-aligned chunk
//! starts with a `Segment` header of kind `Huge`; the data starts 64 KiB or 2 MiB in (2 MiB when
//! the block can use transparent huge pages, so a huge page never straddles two users' parts).
//! Alignments of 4 MiB and more put the header 4 MiB *before* the data (`p - SEGMENT_SIZE`).
//!
//! The segment map is one bit per 4 MiB of the 47-bit address space (4 MiB of `.bss`, touched only
//! where segments exist): a pointer whose chunk has no bit was never returned by domalloc, which
//! turns a foreign `free` into a clear error instead of a wild read.

use core::cell::Cell;
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use static_assertions::const_assert;

pub(crate) use crate::layout::page::{Page, PageKind};
use crate::sys::os::ADDRESS_LIMIT;

/// log2 of the segment size.
pub(crate) const SEGMENT_SHIFT: usize = 22;
/// Segment size and alignment (4 MiB).
pub(crate) const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
/// Low bits of an address inside its segment.
pub(crate) const SEGMENT_MASK: usize = SEGMENT_SIZE - 1;
/// log2 of the page size.
pub(crate) const PAGE_SHIFT: usize = 16;
/// Page size (64 KiB): the unit of spans.
pub(crate) const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// Pages per segment; page 0 holds the header.
pub(crate) const PAGES: usize = SEGMENT_SIZE / PAGE_SIZE;
/// Largest block served from a span inside a segment; bigger ones are huge (own mapping).
pub(crate) const LARGE_MAX: usize = 1 << 20;
/// Huge blocks at least this big are 2 MiB aligned (transparent huge page size on x86-64).
pub(crate) const THP_SIZE: usize = 2 << 20;

/// Segment kinds.
pub(crate) const SEG_NORMAL: u8 = 1;
/// A huge block's own mapping.
pub(crate) const SEG_HUGE: u8 = 2;

/// How the pages of a segment (and so of its spans) get their node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum SpanPlacement {
    /// Bound to the domain's node (`MPOL_PREFERRED` on multi-node Linux), transparent huge pages
    /// allowed: small blocks below 16 KiB, carved (touched) by the allocating thread, and
    /// node-targeted blocks. The only kind on one node.
    Bound = 0,
    /// Not bound, no huge pages: each page goes where it is first touched (blocks of 16 KiB and
    /// more on multi-node machines). A freed block's home is asked of the kernel.
    FirstTouch = 1,
    /// The process's placement policy applied to the whole segment (`DOMALLOC_POLICY`, numactl).
    Policy = 2,
}

/// Number of [`SpanPlacement`] kinds.
pub(crate) const PLACEMENTS: usize = 3;

/// The header at the start of every segment (and of every huge block's mapping).
#[repr(C)]
pub(crate) struct Segment {
    /// `SEG_NORMAL` or `SEG_HUGE`.
    pub(crate) kind: u8,
    /// The [`SpanPlacement`] of its pages (huge: `Bound` for node-targeted blocks, `Policy` under
    /// a policy, else `FirstTouch`).
    pub(crate) placement: u8,
    /// Huge, cached: its pages were found on several nodes when it was freed (purged before
    /// reuse, so first touch places them again).
    pub(crate) huge_mixed: Cell<bool>,
    /// Huge: 1 once freed (double-free detection while the mapping is cached).
    pub(crate) freed: AtomicU32,
    /// The node whose domain owns the segment (huge: the node its pages are on).
    pub(crate) node: AtomicU32,
    /// Start and size of the whole mapping (the header may not be at its start).
    pub(crate) map_start: Cell<*mut u8>,
    pub(crate) map_size: Cell<usize>,
    /// Normal, domain lock: pages not in any span (bit i = page i).
    pub(crate) free_mask: Cell<u64>,
    /// Normal, domain lock: free pages holding data not yet given back to the OS.
    pub(crate) dirty_mask: Cell<u64>,
    /// Normal, domain lock: pages whose contents may be non-zero.
    pub(crate) nonzero_mask: Cell<u64>,
    /// Normal, domain lock: when the dirty pages should be purged (ms).
    pub(crate) purge_at: Cell<u64>,
    /// Domain lock: segment list links.
    pub(crate) next: Cell<*mut Segment>,
    pub(crate) prev: Cell<*mut Segment>,
    /// Huge: the block's first byte, its usable size and alignment.
    pub(crate) huge_data: Cell<*mut u8>,
    pub(crate) huge_size: Cell<usize>,
    pub(crate) huge_align: Cell<usize>,
    /// Huge, live: bytes past its size that stay resident from a bigger block it reused (spare
    /// capacity not given back), counted in its domain's `huge_slack`; written under its
    /// domain's huge-cache lock, read without it by the block's owner.
    pub(crate) huge_slack: AtomicUsize,
    /// One descriptor per page.
    pub(crate) pages: [Page; PAGES],
}

impl crate::layout::list::Linked for Segment {
    fn next_link(&self) -> &Cell<*mut Segment> {
        &self.next
    }
    fn prev_link(&self) -> &Cell<*mut Segment> {
        &self.prev
    }
}

const_assert!(size_of::<Segment>() <= PAGE_SIZE);
const_assert!(PAGES == 64);
const_assert!(LARGE_MAX < SEGMENT_SIZE / 2);

impl Segment {
    /// The node whose domain owns the segment.
    #[inline]
    pub(crate) fn node(&self) -> usize {
        self.node.load(Ordering::Relaxed) as usize
    }

    /// The descriptor of page `i`.
    #[inline]
    pub(crate) fn page(&self, i: usize) -> *mut Page {
        // SAFETY: `i < PAGES` by the callers; the array is part of the header.
        unsafe { ptr::addr_of!(self.pages).cast::<Page>().add(i) as *mut Page }
    }
}

/// Writes the header fields of a fresh (zeroed) mapping at `seg` and records it in the segment
/// map. `map_start..map_start+map_size` is the whole mapping.
///
/// # Safety
/// `seg` is the start of a 4 MiB-aligned chunk of a fresh zeroed mapping of ours, at least a
/// page long, that nobody else knows.
pub(crate) unsafe fn init_header(
    seg: *mut Segment,
    kind: u8,
    placement: u8,
    node: usize,
    map_start: *mut u8,
    map_size: usize,
) {
    // SAFETY: the caller's contract; zero bytes are valid for every field.
    unsafe {
        let s = &mut *seg;
        s.kind = kind;
        s.placement = placement;
        s.node.store(node as u32, Ordering::Relaxed);
        s.map_start.set(map_start);
        s.map_size.set(map_size);
    }
    segmap_set(seg, true);
}

/// The segment containing `p` (if `p` is in a segment's first 4 MiB).
#[inline(always)]
pub(crate) fn segment_of(p: *const u8) -> *mut Segment {
    (p as usize & !SEGMENT_MASK) as *mut Segment
}

/// The head descriptor of the span containing `p`.
///
/// # Safety
/// `seg` must be a live segment containing `p`.
#[inline(always)]
pub(crate) unsafe fn page_of(seg: *mut Segment, p: *const u8) -> *mut Page {
    let i = (p as usize - seg as usize) >> PAGE_SHIFT;
    // SAFETY: i < PAGES since p is inside the segment; head_off leads back within the array.
    unsafe {
        let d = ptr::addr_of_mut!((*seg).pages).cast::<Page>().add(i);
        d.sub((*d).head_off.get() as usize)
    }
}

/// One bit per 4 MiB chunk of the 47-bit address space.
static SEGMAP: [AtomicU64; ADDRESS_LIMIT >> SEGMENT_SHIFT >> 6] =
    [const { AtomicU64::new(0) }; ADDRESS_LIMIT >> SEGMENT_SHIFT >> 6];

/// Whether a segment header of domalloc's lives at `seg` (a 4 MiB-aligned address).
#[inline(always)]
pub(crate) fn segmap_contains(seg: *const Segment) -> bool {
    let i = seg as usize >> SEGMENT_SHIFT;
    let w = i >> 6;
    w < SEGMAP.len() && SEGMAP[w].load(Ordering::Relaxed) & (1 << (i & 63)) != 0
}

/// Records (or forgets) a segment header at `seg`.
pub(crate) fn segmap_set(seg: *const Segment, present: bool) {
    let i = seg as usize >> SEGMENT_SHIFT;
    let (w, b) = (i >> 6, 1u64 << (i & 63));
    if w < SEGMAP.len() {
        if present {
            SEGMAP[w].fetch_or(b, Ordering::Release);
        } else {
            SEGMAP[w].fetch_and(!b, Ordering::Release);
        }
    }
}

/// Finds the segment header of a huge block aligned to 4 MiB or more (`p` itself 4 MiB aligned).
#[cold]
pub(crate) fn big_aligned_segment(p: *const u8) -> Option<*mut Segment> {
    if p as usize & SEGMENT_MASK != 0 || (p as usize) < SEGMENT_SIZE {
        return None;
    }
    let seg = (p as usize - SEGMENT_SIZE) as *mut Segment;
    // SAFETY: the map says a header lives there; headers stay mapped while their bit is set.
    if segmap_contains(seg) && unsafe { (*seg).kind == SEG_HUGE && ptr::eq((*seg).huge_data.get(), p) } {
        Some(seg)
    } else {
        None
    }
}

/// Resolves any pointer to (segment, head descriptor) if domalloc handed it out as a block start
/// or it lies within a small/large span. Returns `None` for foreign pointers.
pub(crate) fn lookup(p: *const u8) -> Option<(*mut Segment, *mut Page)> {
    let seg = segment_of(p);
    if segmap_contains(seg) {
        // SAFETY: the header is live while its bit is set.
        return Some((seg, unsafe { page_of(seg, p) }));
    }
    let seg = big_aligned_segment(p)?;
    // SAFETY: as above.
    Some((seg, unsafe { (*seg).page(0) }))
}
