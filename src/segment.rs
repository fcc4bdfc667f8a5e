//! Segments, spans and pages: the memory layout, and how any pointer finds its metadata in O(1).
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
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use static_assertions::const_assert;

use crate::heap::Heap;

/// log2 of the segment size.
pub const SEGMENT_SHIFT: usize = 22;
/// Segment size and alignment (4 MiB).
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
/// Low bits of an address inside its segment.
pub const SEGMENT_MASK: usize = SEGMENT_SIZE - 1;
/// log2 of the page size.
pub const PAGE_SHIFT: usize = 16;
/// Page size (64 KiB): the unit of spans.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// Pages per segment; page 0 holds the header.
pub const PAGES: usize = SEGMENT_SIZE / PAGE_SIZE;
/// Largest block served from a span inside a segment; bigger ones are huge (own mapping).
pub const LARGE_MAX: usize = 1 << 20;
/// Huge blocks at least this big are 2 MiB aligned (transparent huge page size on x86-64).
pub const THP_SIZE: usize = 2 << 20;
/// Addresses at or above this are never used (the segment map covers 47 bits).
pub const ADDRESS_LIMIT: usize = 1 << 47;

/// A free block: the first word links to the next.
#[repr(C)]
pub struct Block {
    pub(crate) next: *mut Block,
}

/// What a page descriptor describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum PageKind {
    /// Not part of an allocated span (free, or a huge segment's unused descriptor).
    Free = 0,
    /// Head or member of a span of small blocks of one class.
    Small = 1,
    /// Head or member of a span holding one large block.
    Large = 2,
    /// The header page.
    Meta = 3,
}

/// Page flag: the page sits in its heap's full list.
pub const IN_FULL: u8 = 1;

/// Remote-free list state bits (low bits of [`Page::xfree`]).
pub const XSTATE_MASK: usize = 3;
/// Remote frees just push.
pub const XSTATE_NORMAL: usize = 0;
/// The page is in its owner's full list: the first remote free must notify the owner.
pub const XSTATE_FULL: usize = 1;
/// A remote free is notifying the owner right now; others wait (a few instructions).
pub const XSTATE_NOTIFYING: usize = 2;

/// Per-64 KiB-page metadata. For a span, the head descriptor holds the state; the others only
/// `head_off`. Fields marked *owner* are touched only by the thread whose heap owns the page (or,
/// for a page in no heap, by whoever holds the lock of the list it is in).
///
/// Two cache lines: the first holds everything the owner's allocation and free paths touch;
/// the second the remote-free stack that other threads update, so a producer/consumer pair
/// does not bounce the owner's line with every batch of remote frees.
#[repr(C, align(64))]
pub struct Page {
    // ---- line 0: the owner's ----
    /// *owner*: blocks ready to allocate.
    pub(crate) free: Cell<*mut Block>,
    /// *owner*: blocks freed by the owner, merged into `free` when it runs dry.
    pub(crate) local_free: Cell<*mut Block>,
    /// The owning heap, or null (in an arena, large, or free). Compared by `free` on any thread.
    pub(crate) heap: AtomicPtr<Heap>,
    /// *owner*: blocks handed out and not yet collected back (atomic only so stats may read it).
    pub(crate) used: AtomicU32,
    /// *owner*: `IN_FULL`.
    pub(crate) flags: Cell<u8>,
    /// Size class (small spans).
    pub(crate) class: Cell<u8>,
    /// [`PageKind`] as a byte.
    pub(crate) kind: Cell<u8>,
    /// Distance in descriptors from this page to its span's head.
    pub(crate) head_off: Cell<u8>,
    /// Block size in bytes (large: the span size).
    pub(crate) block_size: Cell<u32>,
    /// *owner*: blocks carved into lists so far (the rest of the span is untouched).
    pub(crate) capacity: Cell<u32>,
    /// Blocks the span can hold.
    pub(crate) reserved: Cell<u32>,
    /// Pages in the span.
    pub(crate) span_pages: Cell<u32>,
    /// List links (heap queue or full list, or arena queue).
    pub(crate) next: Cell<*mut Page>,
    pub(crate) prev: Cell<*mut Page>,
    // ---- line 1: updated by freeing threads ----
    /// Blocks freed by other threads: a lock-free stack whose low bits hold `XSTATE_*`.
    pub(crate) xfree: AtomicUsize,
    /// Link in the owner's notification stack.
    pub(crate) next_unfull: Cell<*mut Page>,
    /// Home arena (CPU index) for when the owner abandons the page.
    pub(crate) arena: Cell<u32>,
    /// Span memory reads as zero (fresh or purged) and nothing was carved yet.
    pub(crate) is_zero: Cell<bool>,
}

impl Page {
    /// The descriptor kind.
    #[inline]
    pub(crate) fn kind(&self) -> PageKind {
        match self.kind.get() {
            1 => PageKind::Small,
            2 => PageKind::Large,
            3 => PageKind::Meta,
            _ => PageKind::Free,
        }
    }
    /// The segment holding this descriptor.
    #[inline]
    pub(crate) fn segment(&self) -> *mut Segment {
        (self as *const Page as usize & !SEGMENT_MASK) as *mut Segment
    }
    /// Index of this descriptor in its segment.
    #[inline]
    pub(crate) fn index(&self) -> usize {
        let seg = self.segment();
        // SAFETY: descriptors live in the `pages` array of their segment header.
        let first = unsafe { ptr::addr_of!((*seg).pages) } as usize;
        (self as *const Page as usize - first) / size_of::<Page>()
    }
    /// First byte of the span's memory.
    #[inline]
    pub(crate) fn start(&self) -> *mut u8 {
        (self.segment() as usize + (self.index() << PAGE_SHIFT)) as *mut u8
    }
    /// Bytes in the span.
    #[inline]
    pub(crate) fn span_bytes(&self) -> usize {
        (self.span_pages.get() as usize) << PAGE_SHIFT
    }
    /// Used blocks (owner).
    #[inline]
    pub(crate) fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }
    /// Sets used blocks (owner).
    #[inline]
    pub(crate) fn set_used(&self, v: u32) {
        self.used.store(v, Ordering::Relaxed)
    }
}

/// Segment kinds.
pub const SEG_NORMAL: u8 = 1;
/// A huge block's own mapping.
pub const SEG_HUGE: u8 = 2;

/// The header at the start of every segment (and of every huge block's mapping).
#[repr(C)]
pub struct Segment {
    /// `SEG_NORMAL` or `SEG_HUGE`.
    pub(crate) kind: u8,
    /// Huge: 1 once freed (double-free detection while the mapping is cached).
    pub(crate) freed: AtomicU32,
    /// The node whose domain owns the segment.
    pub(crate) node: u32,
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
    /// One descriptor per page.
    pub(crate) pages: [Page; PAGES],
}

const_assert!(size_of::<Segment>() <= PAGE_SIZE);
const_assert!(PAGES == 64);
// Descriptors are two cache lines: `pages[i]` is a shift away, and neighbours share no line.
const_assert!(size_of::<Page>() == 128);
const_assert!(core::mem::offset_of!(Page, xfree) == 64);
const_assert!(LARGE_MAX < SEGMENT_SIZE / 2);

/// The segment containing `p` (if `p` is in a segment's first 4 MiB).
#[inline(always)]
pub fn segment_of(p: *const u8) -> *mut Segment {
    (p as usize & !SEGMENT_MASK) as *mut Segment
}

/// The head descriptor of the span containing `p`.
///
/// # Safety
/// `seg` must be a live segment containing `p`.
#[inline(always)]
pub unsafe fn page_of(seg: *mut Segment, p: *const u8) -> *mut Page {
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
pub fn segmap_contains(seg: *const Segment) -> bool {
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
    Some((seg, unsafe { ptr::addr_of_mut!((*seg).pages[0]) }))
}

/// Shared empty page: every list head of an empty heap points here, so the fast path needs no
/// null check (its `free` is always null and it is never written).
pub(crate) struct SyncPage(pub(crate) Page);
// SAFETY: the empty page is never written: the fast path writes a page only after finding a
// block in it, and this one has none; slow paths never treat it as a real page.
unsafe impl Sync for SyncPage {}

pub(crate) static EMPTY_PAGE: SyncPage = SyncPage(Page {
    free: Cell::new(ptr::null_mut()),
    local_free: Cell::new(ptr::null_mut()),
    heap: AtomicPtr::new(ptr::null_mut()),
    used: AtomicU32::new(0),
    flags: Cell::new(0),
    class: Cell::new(0),
    kind: Cell::new(PageKind::Free as u8),
    head_off: Cell::new(0),
    block_size: Cell::new(0),
    capacity: Cell::new(0),
    reserved: Cell::new(0),
    span_pages: Cell::new(0),
    xfree: AtomicUsize::new(0),
    next: Cell::new(ptr::null_mut()),
    prev: Cell::new(ptr::null_mut()),
    next_unfull: Cell::new(ptr::null_mut()),
    arena: Cell::new(0),
    is_zero: Cell::new(false),
});

/// The empty page's address.
#[inline(always)]
pub(crate) fn empty_page() -> *mut Page {
    &EMPTY_PAGE.0 as *const Page as *mut Page
}
