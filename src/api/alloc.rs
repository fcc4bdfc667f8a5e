//! The allocator's entry points, shared by the `GlobalAlloc` impl, the C ABI and the node API:
//! size/alignment in, block out; null on failure, never a panic.

use core::ptr;

use crate::layout::size_class::{class_for, class_size, LOOKUP16, LOOKUP8, LOOKUP_MAX};
use crate::layout::{self, PageKind, LARGE_MAX, PAGE_SIZE, SEG_HUGE};
use crate::node;
use crate::sys;
use crate::sys::os;
use crate::thread;

/// Largest size any request may have (isize::MAX less room for alignment arithmetic).
pub(crate) const MAX_ALLOC: usize = (isize::MAX as usize) - (1 << 30) - (4 << 20);
/// Largest alignment supported (1 GiB and more: anything up to 2^40).
pub(crate) const MAX_ALIGN: usize = 1 << 40;

/// Allocates `size` bytes aligned to `align` (a power of two). Null on failure.
///
/// # Safety
/// `align` is a power of two.
#[inline(always)]
pub unsafe fn alloc(size: usize, align: usize) -> *mut u8 {
    sys::op();
    if size <= LOOKUP_MAX && align <= 8 {
        // SAFETY: table entries are valid classes.
        return unsafe { thread::alloc_small(*LOOKUP8.get_unchecked((size + 7) >> 3) as usize) };
    }
    alloc_generic(size, align, false)
}

/// C `malloc`: 16-byte alignment for every size, as glibc. On failure `errno` is set to
/// `ENOMEM` here, so that the C entry point returns whatever this returns: its fast path then
/// ends in a tail call and needs no stack frame.
///
/// # Safety
/// None beyond the allocator's contract.
#[inline(always)]
pub unsafe fn malloc(size: usize) -> *mut u8 {
    sys::op();
    if size <= LOOKUP_MAX {
        // SAFETY: table entries are valid classes.
        return unsafe { thread::alloc_small_or(*LOOKUP16.get_unchecked((size + 7) >> 3) as usize, malloc_refill) };
    }
    malloc_generic(size)
}

/// The slow path of C `malloc` for small sizes (`errno = ENOMEM` on failure).
///
/// # Safety
/// As [`heap::alloc_small_refill`].
#[cold]
#[inline(never)]
unsafe fn malloc_refill(h: *mut thread::Heap, c: usize) -> *mut u8 {
    // SAFETY: forwarded.
    let p = unsafe { thread::alloc_small_refill(h, c) };
    if p.is_null() {
        os::set_errno(os::ENOMEM);
    }
    p
}

/// C `malloc` above the small sizes (`errno = ENOMEM` on failure).
#[cold]
#[inline(never)]
fn malloc_generic(size: usize) -> *mut u8 {
    let p = alloc_generic(size, 16, false);
    if p.is_null() {
        os::set_errno(os::ENOMEM);
    }
    p
}

/// Allocates zeroed memory. Memory that reads as zero because it was never touched (fresh or
/// purged spans of placed blocks, large and huge blocks) is not written, so first touch by the
/// program decides where its pages go.
///
/// # Safety
/// `align` is a power of two.
#[inline]
pub unsafe fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    sys::op();
    if size <= LOOKUP_MAX && align <= 8 {
        // SAFETY: table entries are valid classes; the block holds `size` bytes.
        return unsafe { thread::alloc_small_zeroed(*LOOKUP8.get_unchecked((size + 7) >> 3) as usize, size) };
    }
    alloc_generic(size, align, true)
}

/// C `calloc` after the overflow check: `malloc`'s alignment, zeroed, untouched memory left
/// untouched.
///
/// # Safety
/// None beyond the allocator's contract.
#[inline]
pub unsafe fn calloc(size: usize) -> *mut u8 {
    sys::op();
    if size <= LOOKUP_MAX {
        // SAFETY: table entries are valid classes; the block holds `size` bytes.
        return unsafe { thread::alloc_small_zeroed(*LOOKUP16.get_unchecked((size + 7) >> 3) as usize, size) };
    }
    alloc_generic(size, 16, true)
}

#[inline(never)]
fn alloc_generic(size: usize, align: usize, zero: bool) -> *mut u8 {
    if size > MAX_ALLOC || align > MAX_ALIGN || !align.is_power_of_two() {
        return ptr::null_mut();
    }
    if let Some(c) = class_for(size, align) {
        // SAFETY: valid class; the block holds `size` bytes.
        return unsafe {
            if zero {
                thread::alloc_small_zeroed(c, size)
            } else {
                thread::alloc_small(c)
            }
        };
    }
    let h = crate::thread::thread_heap();
    let reentered = h == thread::busy_heap();
    let node = if reentered {
        // A signal handler interrupted one of this thread's slow paths: served from the
        // domains as for a thread without a heap, unless that would wait for a lock we hold.
        if crate::thread::reentry_refused() {
            return ptr::null_mut();
        }
        let Some(n) = crate::thread::node_of_this_cpu() else { return ptr::null_mut() };
        Some(n)
    } else {
        None
    };
    let _busy = (!reentered).then(|| crate::thread::SlowPath::enter_outer(h));
    let Some(node) = node.or_else(crate::thread::alloc_node) else { return ptr::null_mut() };
    if crate::node::huge_by_policy(size, false, true) {
        // Blocks above the policy's threshold get their own mapping with the policy applied.
        return alloc_huge(node, size, align.max(os::OS_PAGE), zero, false, true);
    }
    alloc_big_on(node, size, align, zero, false)
}

/// Large or huge allocation from node `node`'s domain; `placed`: bound to the node.
pub(crate) fn alloc_big_on(node: usize, size: usize, align: usize, zero: bool, placed: bool) -> *mut u8 {
    if size <= LARGE_MAX && align <= PAGE_SIZE && !placed {
        let p = crate::thread::alloc_large(node, size, zero);
        big_allocated(p);
        p
    } else {
        let policy = crate::node::huge_by_policy(size, placed, false);
        alloc_huge(node, size, align, zero, placed, policy)
    }
}

/// A huge block from node `node`'s domain (see `huge::alloc`). When the OS refuses the memory,
/// everything free or cached is given back and the allocation is tried once more.
fn alloc_huge(node: usize, size: usize, align: usize, zero: bool, placed: bool, policy: bool) -> *mut u8 {
    let d = crate::node::domain(node);
    let p = crate::thread::retrying_after_release(|| node::huge_alloc(d, size, align, zero, placed, policy));
    big_allocated(p);
    if d.counters.huge_slack.load(core::sync::atomic::Ordering::Relaxed) != 0 {
        // A reused block kept its tail resident: the sweeps give it back if it stays unused.
        crate::arena::purge_wanted();
    }
    p
}

/// Counts a large or huge block just handed out (null: none) in the live bytes and, when the
/// profiler samples it, in the profile.
#[inline]
fn big_allocated(p: *mut u8) {
    if !p.is_null() {
        // SAFETY: a live block of this allocator, just handed out.
        crate::thread::prof_big_allocated(p, unsafe { block_size(p) });
    }
}

/// Frees a block (null is ignored). Invalid and double frees are reported and abort where
/// detected.
///
/// # Safety
/// `p` is null or was returned by this allocator and not freed since.
#[inline(always)]
pub unsafe fn free(p: *mut u8) {
    if p.is_null() {
        return;
    }
    sys::op();
    #[cfg(not(feature = "quarantine"))]
    // SAFETY: forwarded.
    unsafe {
        thread::free(p)
    };
    #[cfg(feature = "quarantine")]
    // SAFETY: forwarded (quarantine build: validate, poison, quarantine).
    unsafe {
        crate::thread::quarantine_free(p)
    };
}

/// Usable size of a live block (at least what was asked for). 0 for null.
///
/// # Safety
/// `p` is null or a live block of this allocator.
pub unsafe fn usable_size(p: *const u8) -> usize {
    if p.is_null() {
        return 0;
    }
    #[cfg(feature = "quarantine")]
    crate::thread::quarantine_check_live(p as *mut u8, "malloc_usable_size");
    // SAFETY: forwarded.
    unsafe { block_size(p) }
}

/// [`usable_size`] from the allocator's metadata alone: never reads the block (a block just
/// handed out for first touch must stay untouched; the quarantine build's check reads its
/// first word).
///
/// # Safety
/// `p` is a live block of this allocator.
unsafe fn block_size(p: *const u8) -> usize {
    let Some((seg, page)) = layout::lookup(p) else {
        os::fatal(format_args!("malloc_usable_size(): invalid pointer {:p}", p));
    };
    // SAFETY: live segment (lookup checked the map).
    unsafe {
        if (*seg).kind == SEG_HUGE {
            node::huge_check_live(seg, p, "malloc_usable_size");
            return (*seg).huge_size.get();
        }
        match (*page).kind() {
            PageKind::Small => (*page).block_size.get() as usize,
            PageKind::Large if (*page).used() == 1 && ptr::eq((*page).span_start(), p) => {
                (*page).block_size.get() as usize
            }
            _ => os::fatal(format_args!("malloc_usable_size(): invalid pointer or freed block {:p}", p)),
        }
    }
}

/// Resizes a block, in place where possible (huge blocks by moving pages with `mremap`). On
/// failure returns null and leaves the block untouched.
///
/// # Safety
/// `p` is a live block of this allocator; `new_size > 0`; `align` is a power of two (the
/// original alignment).
pub unsafe fn realloc(p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    if new_size > MAX_ALLOC {
        return ptr::null_mut();
    }
    #[cfg(feature = "quarantine")]
    crate::thread::quarantine_check_live(p, "realloc");
    let Some((seg, page)) = layout::lookup(p) else {
        os::fatal(format_args!("realloc(): invalid pointer {:p}", p));
    };
    // SAFETY: live segment; the caller owns the block.
    let old = unsafe {
        if (*seg).kind == SEG_HUGE {
            node::huge_check_live(seg, p, "realloc");
            let before = (*seg).huge_size.get();
            let h = crate::thread::thread_heap();
            let q = if h == thread::busy_heap() && crate::thread::reentry_refused() {
                ptr::null_mut()
            } else {
                let _busy = crate::thread::SlowPath::enter_outer(h);
                node::huge_realloc(seg, p, new_size)
            };
            if !q.is_null() {
                crate::thread::prof_big_freed(p, before);
                big_allocated(q);
                return q;
            }
            (*seg).huge_size.get()
        } else {
            match (*page).kind() {
                PageKind::Small => {
                    let bs = (*page).block_size.get() as usize;
                    // Same or next-smaller class: stay.
                    if new_size <= bs
                        && (new_size > bs / 2 || bs <= 16 || class_for(new_size, align).map(class_size) == Some(bs))
                    {
                        return p;
                    }
                    bs
                }
                PageKind::Large if (*page).used() == 1 => {
                    let bs = (*page).block_size.get() as usize;
                    if new_size <= bs && new_size > bs / 2 {
                        return p;
                    }
                    bs
                }
                _ => os::fatal(format_args!("realloc(): invalid pointer or double free {:p}", p)),
            }
        }
    };
    // SAFETY: align is a power of two.
    let q = unsafe { alloc(new_size, align) };
    if q.is_null() {
        return q;
    }
    // SAFETY: both blocks are live and at least min(old, new_size) long; they do not overlap.
    unsafe {
        ptr::copy_nonoverlapping(p, q, old.min(new_size));
        free(p);
    }
    q
}

/// The node block `p` is on: for a placed block whose home is known, where its pages are; else
/// the node whose domain owns its memory (huge blocks: where their pages were found when last
/// freed, else the node they were allocated for). `None` for foreign pointers.
pub fn node_of(p: *const u8) -> Option<usize> {
    if p.is_null() {
        return None;
    }
    let (seg, page) = layout::lookup(p)?;
    // SAFETY: live segment and descriptor.
    unsafe {
        let pg = &*page;
        if (*seg).kind != SEG_HUGE {
            let home = match pg.kind() {
                PageKind::Small if pg.is_block(p as usize) => pg.home(pg.block_index(p as usize)),
                PageKind::Large => pg.home(0),
                _ => None,
            };
            if let Some(n) = home {
                return Some(n);
            }
        }
        Some((*seg).node())
    }
}
