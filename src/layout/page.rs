//! The page descriptor and what happens to the blocks of one span: carving, encoded free-list
//! links, collecting frees, the remote-free hand-off, and the home node of placed blocks.
//!
//! A span with blocks in circulation belongs to exactly one heap (its *owner*), sits in one arena
//! list, or is *given up* (full, in no list). The owner allocates from `free` and frees into
//! `local_free` without atomics. Any other thread pushes freed blocks onto `xfree`, a lock-free
//! stack (`remote.rs`); when an owner finds a page with no free block left it gives it up: it
//! clears `owner` and moves `xfree` to [`remote::FULL`], and the first remote free afterwards
//! takes it back out of that state and queues the page in its arena, where a heap of the same
//! node adopts it. No state ever waits for another thread to finish a step, so a thread that
//! disappears at any instant (killed, or absent in a fork child) leaves at worst one page
//! unqueued (leaked), never a spinning free.
//!
//! **Links are encoded.** Every link stored inside a free block (local lists, remote chains,
//! pending batches) is `next ^ address of the block ^ key`, with a random per-process key, and is
//! validated when followed: the decoded pointer must be null or a block start of the same span
//! (`Page::is_block`: one range compare and one multiply). A heap overflow or a write after free
//! that changes a link is reported ("corrupted") and the process aborts, instead of handing out
//! an address the attacker chose. Handing a block out clears its first word, so a freed block is
//! recognised by a first word that decodes to a valid link: a second `free` of it is reported as
//! a double free (confirmed against the lists where the freeing thread owns them).
//!
//! **Placed blocks** (classes of 16 KiB and more, multiples of the OS page) are never written by
//! the allocator while fresh: a span of them is handed out block by block from an untouched tail
//! (`bump`), so the first touch of whoever uses a block places its pages. On a multi-node machine
//! the span's descriptor keeps each block's home (`homes`): unknown until the block is first
//! freed, when the kernel is asked once where its pages are (`placement.rs`).

use core::cell::Cell;
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use static_assertions::const_assert;

use crate::layout::remote::{self, Link};
use crate::layout::segment::{Segment, SpanPlacement, PAGE_SHIFT, SEGMENT_MASK};
use crate::layout::size_class::MAX_PLACED_BLOCKS;
use crate::sys::os;

/// A free block: the first word links to the next (encoded).
#[repr(C)]
pub(crate) struct Block {
    pub(crate) next: *mut Block,
}

/// What a page descriptor describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum PageKind {
    /// Not part of an allocated span (free, or a huge segment's unused descriptor).
    Free = 0,
    /// Head or member of a span of small blocks of one class.
    Small = 1,
    /// Head or member of a span holding one large block.
    Large = 2,
    /// The header page.
    Meta = 3,
}

/// Bit of a `homes` entry: the block waits in a home pool.
const POOLED: u16 = 1 << 15;

/// Page flag: blocks' homes are checked on free (a first-touch span on a multi-node machine).
/// Any flag sends the owner's frees to the slow path (through [`OWNER_SLOW`]).
pub(crate) const PF_PLACED: u8 = 1;

/// Bit 0 of `owner` (heaps are aligned): set on a flagged page, so that the owner's free, which
/// compares `owner` with its heap's address and nothing else, takes the slow path.
const OWNER_SLOW: usize = 1;

/// Per-64 KiB-page metadata. For a span, the head descriptor holds the state; the others only
/// `kind` and `head_off`. Fields marked *owner* are touched only by the thread whose heap owns
/// the page (or, for a page in no heap, by whoever holds the lock of the list it is in).
///
/// Two cache lines: the first holds everything the owner's allocation and free paths touch;
/// the second the remote-free stack that other threads update (and the slow-path fields), so a
/// producer/consumer pair does not bounce the owner's line with every batch of remote frees.
#[repr(C, align(64))]
pub(crate) struct Page {
    // ---- line 0: the owner's fast path ----
    /// *owner*: blocks ready to allocate (links encoded).
    pub(crate) free: Cell<*mut Block>,
    /// *owner*: blocks freed by the owner, merged into `free` when it runs dry.
    pub(crate) local_free: Cell<*mut Block>,
    /// The owning heap's address (with [`OWNER_SLOW`] on a flagged page), or 0 (in an arena,
    /// given up, large, or free). Compared by `free` on any thread.
    pub(crate) owner: AtomicUsize,
    /// *owner*: low 32 bits: blocks handed out and not yet collected back (`used`; large
    /// spans: 1 while live, taken back with a CAS by the one `free` that wins); high 32 bits:
    /// blocks handed out since the counts were last folded into the heap's per-class totals
    /// (at every refill: at most `reserved` apart). One word, so that an allocation counts both
    /// with one add; frees are not counted one by one: see [`take_counts`]. Atomic only so that
    /// the stats may read it.
    pub(crate) counts: AtomicU64,
    /// Address of the first block.
    pub(crate) start: Cell<usize>,
    /// Bytes from `start` in which block starts lie (`reserved * block_size`).
    pub(crate) limit: Cell<u32>,
    /// `PF_*` flags.
    pub(crate) flags: Cell<u8>,
    /// Size class (small spans).
    pub(crate) class: Cell<u8>,
    /// [`PageKind`] as a byte (on every descriptor of a span).
    pub(crate) kind: Cell<u8>,
    /// Distance in descriptors from this page to its span's head.
    pub(crate) head_off: Cell<u8>,
    /// `u64::MAX / block_size + 1`: divisibility and division by the block size with one
    /// multiply (Lemire, Kaser, Kurz: "Faster remainder by direct computation", 2019).
    pub(crate) magic: Cell<u64>,
    /// Block size in bytes (large: the span size).
    pub(crate) block_size: Cell<u32>,
    /// *owner*: `used` when the counts were last folded, less the remote frees collected since:
    /// the owner's own frees since then are `allocs - (used - fold_base)`.
    pub(crate) fold_base: AtomicU32,
    // ---- line 1: shared, and the slow paths' ----
    /// Blocks freed by other threads: a lock-free stack; bit 0 is [`remote::FULL`].
    pub(crate) xfree: AtomicUsize,
    /// List links (heap queue, arena list, pool).
    pub(crate) next: Cell<*mut Page>,
    pub(crate) prev: Cell<*mut Page>,
    /// The heap that gave the page up last (it may take it back with [`reclaim`]); read by any
    /// freeing thread, hence atomic (relaxed).
    pub(crate) last_owner: AtomicUsize,
    /// Placed spans: per block, 0 = home not known yet, `n + 1` = its pages are on node `n`.
    pub(crate) homes: [AtomicU16; MAX_PLACED_BLOCKS],
    /// *owner*: blocks carved (or handed out fresh) so far; the rest of the span is untouched.
    capacity_: Cell<u16>,
    /// Blocks the span can hold (at most 8192: 64 KiB of 8-byte blocks).
    reserved_: Cell<u16>,
    /// Home arena for when the page has no owner (an arena of the span's node).
    pub(crate) arena: Cell<u32>,
    /// When the span was parked unused in an arena (ms, truncated).
    pub(crate) parked_ms: Cell<u32>,
    /// Pages in the span.
    span_pages_: Cell<u8>,
    /// Span memory reads as zero (fresh or purged) and nothing was carved yet.
    pub(crate) is_zero: Cell<bool>,
    /// [`SpanPlacement`] of the span's segment, as a byte.
    pub(crate) placement: Cell<u8>,
}

impl crate::layout::list::Linked for Page {
    fn next_link(&self) -> &Cell<*mut Page> {
        &self.next
    }
    fn prev_link(&self) -> &Cell<*mut Page> {
        &self.prev
    }
}

// Descriptors are two cache lines: `pages[i]` is a shift away, and neighbours share no line.
const_assert!(size_of::<Page>() == 128);
const_assert!(core::mem::offset_of!(Page, xfree) == 64);

impl Page {
    /// A descriptor of nothing (all zero but `magic`): the shared empty page of the heaps.
    pub(crate) const fn empty() -> Page {
        Page {
            free: Cell::new(ptr::null_mut()),
            local_free: Cell::new(ptr::null_mut()),
            owner: AtomicUsize::new(0),
            counts: AtomicU64::new(0),
            start: Cell::new(0),
            limit: Cell::new(0),
            flags: Cell::new(0),
            class: Cell::new(0),
            kind: Cell::new(PageKind::Free as u8),
            head_off: Cell::new(0),
            magic: Cell::new(1),
            block_size: Cell::new(0),
            fold_base: AtomicU32::new(0),
            xfree: AtomicUsize::new(0),
            next: Cell::new(ptr::null_mut()),
            prev: Cell::new(ptr::null_mut()),
            last_owner: AtomicUsize::new(0),
            homes: [const { AtomicU16::new(0) }; MAX_PLACED_BLOCKS],
            capacity_: Cell::new(0),
            reserved_: Cell::new(0),
            arena: Cell::new(0),
            parked_ms: Cell::new(0),
            span_pages_: Cell::new(0),
            is_zero: Cell::new(false),
            placement: Cell::new(0),
        }
    }

    /// Blocks carved (or handed out fresh) so far.
    #[inline]
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity_.get() as u32
    }
    /// Sets `capacity` (at most `reserved`).
    #[inline]
    pub(crate) fn set_capacity(&self, n: u32) {
        self.capacity_.set(n as u16)
    }
    /// Blocks the span holds.
    #[inline]
    pub(crate) fn reserved(&self) -> u32 {
        self.reserved_.get() as u32
    }
    /// Sets `reserved` (at most 8192).
    #[inline]
    pub(crate) fn set_reserved(&self, n: u32) {
        self.reserved_.set(n as u16)
    }
    /// Pages in the span.
    #[inline]
    pub(crate) fn span_pages(&self) -> u32 {
        self.span_pages_.get() as u32
    }
    /// Sets the span's page count (below 64).
    #[inline]
    pub(crate) fn set_span_pages(&self, n: u32) {
        self.span_pages_.set(n as u8)
    }
    /// Makes heap `h` the owner (release: the page's state is published with it).
    #[inline]
    pub(crate) fn set_owner(&self, h: usize) {
        let slow = if self.flags.get() != 0 { OWNER_SLOW } else { 0 };
        self.owner.store(h | slow, Ordering::Release);
    }
    /// Whether heap `h` owns the page.
    #[inline]
    pub(crate) fn owned_by(&self, h: usize) -> bool {
        self.owner.load(Ordering::Relaxed) & !OWNER_SLOW == h
    }
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
    /// The node whose domain owns the span.
    #[inline]
    pub(crate) fn node(&self) -> usize {
        // SAFETY: a descriptor lives in the header of its live segment.
        unsafe { (*self.segment()).node() }
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
    pub(crate) fn span_start(&self) -> *mut u8 {
        (self.segment() as usize + (self.index() << PAGE_SHIFT)) as *mut u8
    }
    /// Bytes in the span.
    #[inline]
    pub(crate) fn span_bytes(&self) -> usize {
        (self.span_pages() as usize) << PAGE_SHIFT
    }
    /// Used blocks.
    #[inline(always)]
    pub(crate) fn used(&self) -> u32 {
        self.counts.load(Ordering::Relaxed) as u32
    }
    /// Sets `used` to `v` and forgets any unfolded counts (a span changing use).
    #[inline]
    pub(crate) fn reset_counts(&self, v: u32) {
        self.counts.store(v as u64, Ordering::Relaxed);
        self.fold_base.store(v, Ordering::Relaxed);
    }
    /// One block handed out (owner): `used` and the unfolded allocation count up by one.
    #[inline(always)]
    pub(crate) fn count_alloc(&self) {
        // One instruction on x86-64 (an `add` to memory, not locked: only the owner writes), so a
        // signal handler that allocates from this page cannot land between a load and a store
        // and lose its count or ours (`reentry.rs`).
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the owner's word (no other thread writes it); a plain read-modify-write.
        unsafe {
            core::arch::asm!("add qword ptr [{c}], {one}", c = in(reg) self.counts.as_ptr(), one = in(reg) ALLOC_ONE, options(nostack));
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let c = self.counts.load(Ordering::Relaxed);
            self.counts.store(c.wrapping_add(ALLOC_ONE), Ordering::Relaxed)
        }
    }
    /// One block freed by the owner: `used` down by one; returns whether it reached zero.
    #[inline(always)]
    pub(crate) fn count_free(&self) -> bool {
        // `used` is at least 1 here (the block was handed out), so nothing borrows from the
        // allocation count above it: the low 32 bits alone go down by one. One instruction on
        // x86-64 (as `count_alloc`), which also tells whether `used` reached zero.
        #[cfg(target_arch = "x86_64")]
        {
            let empty: u8;
            // SAFETY: the owner's word (no other thread writes it); `used` is its low half
            // (little-endian); a plain read-modify-write of it.
            unsafe {
                core::arch::asm!("sub dword ptr [{c}], 1", "setz {e}", c = in(reg) self.counts.as_ptr(), e = out(reg_byte) empty, options(nostack));
            }
            empty != 0
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let c = self.counts.load(Ordering::Relaxed).wrapping_sub(1);
            self.counts.store(c, Ordering::Relaxed);
            c as u32 == 0
        }
    }
    /// `n` remote frees collected back (owner or list holder): `used` down by `n` (at most by
    /// `used`: more would be a miscount, never a borrow from the allocation count).
    #[inline]
    pub(crate) fn count_collected(&self, n: u32) {
        let n = n.min(self.used());
        self.counts.store(self.counts.load(Ordering::Relaxed) - n as u64, Ordering::Relaxed);
        self.fold_base.store(self.fold_base.load(Ordering::Relaxed).wrapping_sub(n), Ordering::Relaxed);
    }
    /// The allocations and owner frees not yet folded into a heap's totals, read from any
    /// thread (approximate while the owner works on the page).
    pub(crate) fn unfolded_counts(&self) -> (u32, u32) {
        let base = self.fold_base.load(Ordering::Relaxed);
        let c = self.counts.load(Ordering::Relaxed);
        if self.fold_base.load(Ordering::Relaxed) != base {
            return (0, 0); // folded meanwhile: the heap has them
        }
        split_counts(c, base)
    }
    /// The span's placement.
    #[inline]
    pub(crate) fn placement(&self) -> SpanPlacement {
        match self.placement.get() {
            1 => SpanPlacement::FirstTouch,
            2 => SpanPlacement::Policy,
            _ => SpanPlacement::Bound,
        }
    }

    /// Whether `a` is the start of a block of this span (any block of its grid, carved or not).
    #[inline(always)]
    pub(crate) fn is_block(&self, a: usize) -> bool {
        let off = a.wrapping_sub(self.start.get()) as u64;
        off < self.limit.get() as u64 && off.wrapping_mul(self.magic.get()) < self.magic.get()
    }

    /// The index of the block that starts at `a` (a block start of this span).
    #[inline]
    pub(crate) fn block_index(&self, a: usize) -> usize {
        let off = (a - self.start.get()) as u64;
        ((off as u128 * self.magic.get() as u128) >> 64) as usize
    }

    /// Address of block `i`.
    #[inline]
    pub(crate) fn block_at(&self, i: usize) -> *mut Block {
        (self.start.get() + i * self.block_size.get() as usize) as *mut Block
    }

    /// The recorded home of placed block `i` (`None`: not known yet).
    #[inline]
    pub(crate) fn home(&self, i: usize) -> Option<usize> {
        match self.homes.get(i).map_or(0, |h| h.load(Ordering::Relaxed) & !POOLED) {
            0 => None,
            h => Some(h as usize - 1),
        }
    }

    /// Records the home of placed block `i`.
    #[inline]
    pub(crate) fn set_home(&self, i: usize, node: usize) {
        if let Some(h) = self.homes.get(i) {
            h.store((node as u16 & !POOLED).wrapping_add(1), Ordering::Relaxed);
        }
    }

    /// Marks placed block `i` as waiting in a home pool; false if it already was (a double free).
    #[inline]
    pub(crate) fn mark_pooled(&self, i: usize) -> bool {
        self.homes.get(i).map_or(true, |h| h.fetch_or(POOLED, Ordering::AcqRel) & POOLED == 0)
    }

    /// Placed block `i` left its pool.
    #[inline]
    pub(crate) fn clear_pooled(&self, i: usize) {
        if let Some(h) = self.homes.get(i) {
            h.fetch_and(!POOLED, Ordering::AcqRel);
        }
    }

    /// Sets up the head descriptor of a fresh span for small blocks of `block_size` bytes
    /// (class `class`), `reserved` of them; `flags` as the span's placement needs.
    ///
    /// # Safety
    /// The caller owns the span (just taken from a domain or an arena, unused).
    pub(crate) unsafe fn init_small(&self, class: usize, block_size: usize, reserved: usize, flags: u8) {
        self.class.set(class as u8);
        self.block_size.set(block_size as u32);
        self.start.set(self.span_start() as usize);
        self.limit.set((reserved * block_size) as u32);
        self.magic.set(u64::MAX / block_size as u64 + 1);
        self.set_reserved(reserved as u32);
        self.set_capacity(0);
        self.free.set(ptr::null_mut());
        self.local_free.set(ptr::null_mut());
        self.reset_counts(0);
        self.flags.set(flags);
        self.xfree.store(0, Ordering::Relaxed);
        for h in &self.homes {
            h.store(0, Ordering::Relaxed);
        }
    }
}

// ---- links ----

pub(crate) use super::codec::{link_key, set_link_key, Codec};

/// Reads free block `b`'s link, aborting if it does not decode to null or a block of `page`.
///
/// # Safety
/// `b` is a free block of `page` the caller may read (in a list it owns, or a chain it holds).
#[inline(always)]
pub(crate) unsafe fn next_of(page: &Page, b: *mut Block) -> *mut Block {
    // SAFETY: the caller's contract.
    unsafe { next_of_k(page, b, link_key()) }
}

/// Free block `b`'s link, decoded, not yet validated ([`check_next`]).
///
/// # Safety
/// As [`next_of`].
#[inline(always)]
unsafe fn raw_next(b: *mut Block, key: usize) -> *mut Block {
    // SAFETY: the caller's contract.
    unsafe { Codec::with(key).read(b.cast()) as *mut Block }
}

/// Aborts unless `next` (from [`raw_next`] of `b`) is null or a block of `page`.
#[inline(always)]
fn check_next(page: &Page, b: *mut Block, next: *mut Block) {
    #[cfg(not(domalloc_plain_links))]
    if !next.is_null() && !page.is_block(next as usize) {
        corrupted(page, b);
    }
    #[cfg(domalloc_plain_links)]
    let _ = (page, b, next);
}

/// [`next_of`] with the key already loaded.
///
/// # Safety
/// As [`next_of`].
#[inline(always)]
pub(crate) unsafe fn next_of_k(page: &Page, b: *mut Block, key: usize) -> *mut Block {
    // Measurement build only (`RUSTFLAGS=--cfg domalloc_plain_links`): plain, unchecked links,
    // to price the encoding and the double-free screen. Never a build to run.
    // SAFETY: the caller's contract.
    let next = unsafe { raw_next(b, key) };
    check_next(page, b, next);
    next
}

/// Writes free block `b`'s link to `next` (null or a block of the same span), encoded.
///
/// # Safety
/// `b` is a block the caller may write (being freed, or in a list it owns).
#[inline(always)]
pub(crate) unsafe fn set_next(b: *mut Block, next: *mut Block) {
    // SAFETY: the caller's contract.
    unsafe { set_next_k(b, next, link_key()) }
}

/// [`set_next`] with the key already loaded.
///
/// # Safety
/// As [`set_next`].
#[inline(always)]
pub(crate) unsafe fn set_next_k(b: *mut Block, next: *mut Block, key: usize) {
    // SAFETY: the caller's contract.
    unsafe { Codec::with(key).write(b.cast(), next as usize) }
}

/// The fast screen for a freed block: its first word decodes to null or to an address inside
/// its span (one compare; the exact test is [`is_freed`]). A live block passes only if the
/// program stored such a value there.
///
/// # Safety
/// `b` is a block start of `page`.
#[inline(always)]
pub(crate) unsafe fn may_be_freed(page: &Page, b: *mut Block, key: usize) -> bool {
    // Measurement build: no double-free screen (plain links cannot tell a freed block).
    #[cfg(domalloc_plain_links)]
    {
        let _ = (page, b, key);
        return false;
    }
    #[cfg(not(domalloc_plain_links))]
    {
        // SAFETY: the caller's contract: a mapped block of at least 8 bytes.
        let v = unsafe { Codec::with(key).read(b.cast()) };
        v == 0 || (v.wrapping_sub(page.start.get()) as u64) < page.limit.get() as u64
    }
}

/// Whether block `b`'s first word is a valid encoded link: the mark every freed block carries
/// (handing a block out clears it). A live block has it only if the program stored exactly
/// such a value there (a chance of about `blocks / 2^64`).
///
/// # Safety
/// `b` is a block start of `page`.
#[inline]
pub(crate) unsafe fn is_freed(page: &Page, b: *mut Block) -> bool {
    #[cfg(domalloc_plain_links)]
    {
        let _ = (page, b);
        return false;
    }
    #[cfg(not(domalloc_plain_links))]
    {
        // SAFETY: the caller's contract: a mapped block of at least 8 bytes.
        let v = unsafe { Codec::current().read(b.cast()) };
        v == 0 || page.is_block(v)
    }
}

#[cold]
#[inline(never)]
#[cfg_attr(domalloc_plain_links, allow(dead_code))]
fn corrupted(page: &Page, b: *mut Block) -> ! {
    // What locates the damage, and nothing from which the link key follows (forked children
    // share it): not the decoded link (with the block's address and the value written, it gives
    // the key), nor the raw word (a partial overwrite, as an off-by-one NUL, leaves the other
    // bytes of the encoded link there).
    os::fatal(format_args!(
        "malloc(): corrupted free list at {:p}, a free block of {} B (size class {}) in the span at {:p}: its link is not a block of its span (heap overflow, write after free or double free)",
        b,
        page.block_size.get(),
        page.class.get(),
        page.span_start()
    ))
}

impl Link for Block {
    type Span = Page;
    #[inline(always)]
    unsafe fn next(span: &Page, this: *mut Block) -> *mut Block {
        // SAFETY: a valid block of `span` the caller may read (the trait's contract).
        unsafe { next_of(span, this) }
    }
    #[inline(always)]
    unsafe fn set_next(this: *mut Block, next: *mut Block) {
        // SAFETY: a valid block the caller may write (the trait's contract).
        unsafe { set_next(this, next) }
    }
}

// ---- the owner's operations ----

/// Bytes carved per extension: one OS page's worth (at least one block), so memory is touched
/// gradually and by the allocating thread.
const EXTEND_BYTES: usize = 4096;

/// Pops the first block of `free` (which must be non-empty), clears its mark and counts it.
///
/// # Safety
/// The caller owns `page`; `free` is non-empty.
#[inline(always)]
pub(crate) unsafe fn pop(page: &Page) -> *mut Block {
    let b = page.free.get();
    // SAFETY: a block of our list.
    unsafe {
        // The new head is stored before it is validated: the window in which a signal handler's
        // malloc could take the same block is the two loads and the store (`reentry.rs`).
        let next = raw_next(b, link_key());
        page.free.set(next);
        check_next(page, b, next);
        (*b).next = ptr::null_mut();
    }
    page.count_alloc();
    b
}

/// `Page::counts` for one more allocation: `used` and the allocation count each up by one.
const ALLOC_ONE: u64 = (1 << 32) | 1;

/// Allocations and owner frees since the last fold, from a `counts` word and `fold_base`:
/// `used` moved by allocations less owner frees less collected remote frees, and `fold_base`
/// moved by the collected ones (all modulo 2^32).
#[inline]
fn split_counts(c: u64, base: u32) -> (u32, u32) {
    let allocs = (c >> 32) as u32;
    (allocs, allocs.wrapping_sub((c as u32).wrapping_sub(base)))
}

/// Takes the page's unfolded allocation and owner-free counts (owner), leaving zero.
#[inline]
pub(crate) fn take_counts(page: &Page) -> (u32, u32) {
    let c = page.counts.load(Ordering::Relaxed);
    let r = split_counts(c, page.fold_base.load(Ordering::Relaxed));
    page.counts.store(c & u32::MAX as u64, Ordering::Relaxed);
    page.fold_base.store(c as u32, Ordering::Relaxed);
    r
}

/// Carves up to `EXTEND_BYTES` more blocks of the untouched span tail into `free` (small spans
/// that are not placed: the carving thread touches them). Returns false if fully carved.
///
/// # Safety
/// The caller owns `page`, a small span; `free` is empty.
pub(crate) unsafe fn extend(page: &Page) -> bool {
    let cap = page.capacity();
    let reserved = page.reserved();
    if cap >= reserved {
        return false;
    }
    let bs = page.block_size.get() as usize;
    let n = ((EXTEND_BYTES / bs).max(1) as u32).min(reserved - cap) as usize;
    let first = page.block_at(cap as usize);
    #[cfg(feature = "hardened")]
    if n > 1 {
        // SAFETY: as below; the blocks are linked in a random order.
        unsafe { link_shuffled(page, cap as usize, n) };
        page.set_capacity(cap + n as u32);
        page.is_zero.set(false);
        return true;
    }
    // SAFETY: blocks cap..cap+n lie inside the span, which is mapped and owned by the caller.
    unsafe {
        let mut b = first;
        for _ in 1..n {
            let next = (b as usize + bs) as *mut Block;
            set_next(b, next);
            b = next;
        }
        set_next(b, page.free.get());
    }
    page.free.set(first);
    page.set_capacity(cap + n as u32);
    page.is_zero.set(false);
    true
}

/// Hardened builds: links blocks `first..first+n` into `free` in a random order (a shuffle of
/// their indices with a generator seeded from the link key, the page and the carve position),
/// so the next address is not predictable from the last one.
///
/// # Safety
/// As [`extend`]; `n` is at most `EXTEND_BYTES / 8`.
#[cfg(feature = "hardened")]
unsafe fn link_shuffled(page: &Page, first: usize, n: usize) {
    let mut idx = [0u16; EXTEND_BYTES / 8];
    for (i, x) in idx[..n].iter_mut().enumerate() {
        *x = i as u16;
    }
    let mut r = (link_key() as u64)
        ^ (page as *const Page as u64).rotate_left(29)
        ^ (first as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for i in (1..n).rev() {
        // xorshift64*
        r ^= r >> 12;
        r ^= r << 25;
        r ^= r >> 27;
        let j = (r.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % (i + 1);
        idx.swap(i, j);
    }
    let mut next = page.free.get();
    for &i in idx[..n].iter().rev() {
        let b = page.block_at(first + i as usize);
        // SAFETY: the caller's contract: block `first + i` lies in the span, uncarved, ours.
        unsafe { set_next(b, next) };
        next = b;
    }
    page.free.set(next);
}

/// Hands out the next untouched block of a placed span without writing it (its pages are placed
/// by the first touch of its user), or null when the span is fully handed out. Returns whether
/// it reads as zero too.
///
/// # Safety
/// The caller owns `page`, a small span of a placed class.
pub(crate) unsafe fn bump(page: &Page) -> (*mut Block, bool) {
    let cap = page.capacity();
    if cap >= page.reserved() {
        return (ptr::null_mut(), false);
    }
    page.set_capacity(cap + 1);
    page.count_alloc();
    let b = page.block_at(cap as usize);
    let zero = page.is_zero.get();
    if !zero {
        // A reused span may hold an old encoded link here, which would make the live block look
        // freed. Its pages are resident already: writing them places nothing.
        // SAFETY: the block is ours, mapped.
        unsafe { (*b).next = ptr::null_mut() };
    }
    (b, zero)
}

/// Moves the owner's own frees and all remote frees into `free`. Returns whether `free` now has
/// blocks.
///
/// # Safety
/// The caller owns `page`.
pub(crate) unsafe fn collect(page: &Page) -> bool {
    let local = page.local_free.get();
    if !local.is_null() {
        if page.free.get().is_null() {
            page.free.set(local);
        } else {
            // SAFETY: owned lists; prepend `local` (usually the shorter one) by walking it.
            unsafe { append(page, local, page.free.get()) };
            page.free.set(local);
        }
        page.local_free.set(ptr::null_mut());
    }
    // SAFETY: the caller owns the page.
    unsafe { collect_remote(page) };
    !page.free.get().is_null()
}

/// Moves the page's `free` list onto `local_free`, so that the fast path finds no block here and
/// the next allocation takes the refill path (`DOMALLOC_FIRST_TOUCH=always`: each recycled block
/// is purged as it is handed out).
///
/// # Safety
/// The caller owns `page`.
pub(crate) unsafe fn hold_back(page: &Page) {
    let rest = page.free.get();
    if rest.is_null() {
        return;
    }
    let local = page.local_free.get();
    if !local.is_null() {
        // SAFETY: owned lists; `rest` goes in front of `local`.
        unsafe { append(page, rest, local) };
    }
    page.local_free.set(rest);
    page.free.set(ptr::null_mut());
}

/// Takes every remotely freed block and adds them to `free`, decrementing `used` by their number.
///
/// # Safety
/// The caller owns `page` (or holds the lock of the list an unowned page is in).
pub(crate) unsafe fn collect_remote(page: &Page) {
    let head = remote::take::<Block>(&page.xfree);
    if head.is_null() {
        return;
    }
    // SAFETY: the chain was published with Release by the pushers and taken with Acquire; we
    // own it now. Longer than the span's blocks means a cycle: corrupted (double free).
    let Some((tail, n)) = (unsafe { remote::chain_end(page, head, page.reserved()) }) else {
        os::fatal(format_args!(
            "free(): double free or corrupted remote-free list in the span at {:p}",
            page.span_start()
        ))
    };
    // SAFETY: as above.
    unsafe { set_next(tail, page.free.get()) };
    page.free.set(head);
    page.count_collected(n);
}

/// Links list `a` in front of `b` (walks `a`).
///
/// # Safety
/// Both lists are well formed blocks of `page` owned by the caller; `a` is non-null.
unsafe fn append(page: &Page, a: *mut Block, b: *mut Block) {
    let mut t = a;
    let mut n = 0u32;
    // SAFETY: well-formed list (bounded: a cycle would be a double free).
    unsafe {
        loop {
            let next = next_of(page, t);
            if next.is_null() {
                break;
            }
            t = next;
            n += 1;
            if n > page.reserved() {
                os::fatal(format_args!(
                    "free(): double free detected in the span at {:p} (a free list loops)",
                    page.span_start()
                ));
            }
        }
        set_next(t, b);
    }
}

/// Whether `b` is in one of the owner's lists of `page` (double-free confirmation).
///
/// # Safety
/// The caller owns `page`; `b` is a block start of it.
pub(crate) unsafe fn in_free_lists(page: &Page, b: *mut Block) -> bool {
    for head in [page.free.get(), page.local_free.get()] {
        let mut x = head;
        let mut n = 0u32;
        while !x.is_null() && n <= page.reserved() {
            if x == b {
                return true;
            }
            // SAFETY: owned list.
            x = unsafe { next_of(page, x) };
            n += 1;
        }
    }
    false
}

/// Pushes the chain `head..=tail` (linked through `next`) onto `page`'s remote list. Returns
/// true if the page had been given up: the caller must queue it (in its arena).
///
/// # Safety
/// The blocks belong to `page`, are allocated (not in any list), and the chain is well formed.
pub(crate) unsafe fn push_remote(page: &Page, head: *mut Block, tail: *mut Block) -> bool {
    // SAFETY: the caller's contract is `remote::push`'s.
    unsafe { remote::push(&page.xfree, head, tail) }
}

/// Owner: gives a page with no free block up (`owner` cleared, `xfree` FULL). Fails (returns
/// false, keeping the page owned by `me`) if remote frees arrived meanwhile: collect them.
pub(crate) fn give_up(page: &Page, me: usize) -> bool {
    page.last_owner.store(me, Ordering::Relaxed);
    page.owner.store(0, Ordering::Release);
    if remote::try_give_up(&page.xfree) {
        true
    } else {
        page.set_owner(me);
        false
    }
}

/// The heap `me` that gave `page` up frees into it: takes it back (it is ours again, in no list)
/// if no remote free queued it meanwhile.
///
/// # Safety
/// `me` is the calling thread's heap and `page` a live small span head.
pub(crate) unsafe fn reclaim(page: &Page, me: usize) -> bool {
    if page.last_owner.load(Ordering::Relaxed) != me
        || page.owner.load(Ordering::Relaxed) != 0
        || !remote::try_reclaim(&page.xfree)
    {
        return false;
    }
    page.set_owner(me);
    true
}

/// Owner: gives up ownership so that the page can go to an arena or its domain: clears `owner`;
/// both free lists stay (the local one becomes `free` when `free` is empty).
///
/// # Safety
/// The caller owns `page`.
pub(crate) unsafe fn disown(page: &Page) {
    // Both lists go with the page as they are (the next owner's refill merges them when `free`
    // runs out): walking `local_free` here to join them cost every exiting thread a pass over
    // its freed blocks (cache misses) for nothing.
    let local = page.local_free.get();
    if !local.is_null() && page.free.get().is_null() {
        page.free.set(local);
        page.local_free.set(ptr::null_mut());
    }
    page.owner.store(0, Ordering::Release);
}

/// Whether the page (owned, or unowned under its list's lock) has no block in use, counting
/// uncollected remote frees.
///
/// # Safety
/// As [`collect_remote`].
pub(crate) unsafe fn is_unused(page: &Page) -> bool {
    // SAFETY: forwarded.
    unsafe { collect_remote(page) };
    page.used() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor for blocks of `size` bytes starting at `start`, `n` of them (the geometry
    /// `init_small` sets up, without a segment around it).
    fn geometry(start: usize, size: usize, n: usize) -> Page {
        let p = Page::empty();
        p.block_size.set(size as u32);
        p.start.set(start);
        p.limit.set((n * size) as u32);
        p.magic.set(u64::MAX / size as u64 + 1);
        p
    }

    #[test]
    fn block_starts_and_indexes_for_every_small_size() {
        for size in [16usize, 24, 48, 112, 640, 3000, 16384, 20480, 98304] {
            let n = 20;
            let start = 0x7f00_0000_0000usize;
            let p = geometry(start, size, n);
            for i in 0..n {
                let a = start + i * size;
                assert!(p.is_block(a), "block {i} of {size} B");
                assert_eq!(p.block_index(a), i);
                assert_eq!(p.block_at(i) as usize, a);
                for off in [1usize, 8, size / 2, size - 1] {
                    assert!(!p.is_block(a + off), "{size} B: {off} bytes into block {i} taken for a block start");
                }
            }
            assert!(!p.is_block(start + n * size), "{size} B: the end of the span taken for a block");
            assert!(!p.is_block(start - size), "{size} B: before the span taken for a block");
        }
    }

    #[test]
    fn counts_track_used_and_report_the_last_free() {
        let p = Page::empty();
        for _ in 0..3 {
            p.count_alloc();
        }
        assert_eq!(p.used(), 3);
        assert!(!p.count_free());
        assert!(!p.count_free());
        assert!(p.count_free(), "the last free must say the page is empty");
        assert_eq!(p.used(), 0);
        // Three allocations and three owner frees since the last fold; the fold leaves zero.
        assert_eq!(take_counts(&p), (3, 3));
        assert_eq!(take_counts(&p), (0, 0));
        p.count_alloc();
        p.count_alloc();
        p.count_collected(1);
        assert_eq!(p.used(), 1);
    }

    #[test]
    fn homes_and_the_pooled_mark() {
        let p = Page::empty();
        assert_eq!(p.home(3), None);
        p.set_home(3, 5);
        assert_eq!(p.home(3), Some(5));
        assert!(p.mark_pooled(3), "first mark");
        assert!(!p.mark_pooled(3), "a block pooled twice (a double free) must be told");
        assert_eq!(p.home(3), Some(5), "the mark keeps the home");
        p.clear_pooled(3);
        assert!(p.mark_pooled(3));
        // Beyond the recorded blocks nothing is kept and nothing is refused.
        assert_eq!(p.home(MAX_PLACED_BLOCKS), None);
        assert!(p.mark_pooled(MAX_PLACED_BLOCKS));
    }

    #[test]
    fn pop_follows_encoded_links_and_rejects_a_forged_one() {
        // Four blocks of 64 B in a buffer, linked 0 -> 2 -> 1 -> end.
        let mut buf = [0u64; 32];
        let start = buf.as_mut_ptr() as usize;
        let p = geometry(start, 64, 4);
        let b = |i: usize| (start + i * 64) as *mut Block;
        // SAFETY: the blocks are inside `buf`.
        unsafe {
            set_next(b(0), b(2));
            set_next(b(2), b(1));
            set_next(b(1), ptr::null_mut());
            p.free.set(b(0));
            assert_eq!(pop(&p), b(0));
            assert_eq!(pop(&p), b(2));
            assert_eq!(pop(&p), b(1));
            assert!(p.free.get().is_null());
            assert_eq!(p.used(), 3);
            // A freed block's first word is a valid encoding: the double-free screen sees it.
            set_next(b(3), ptr::null_mut());
            assert!(is_freed(&p, b(3)));
            assert!(may_be_freed(&p, b(3), link_key()));
            *(b(3) as *mut u64) = 0x4141_4141_4141_4141;
            assert!(!is_freed(&p, b(3)), "a program's word taken for a free-list link");
        }
    }
}
