//! C semantics of the malloc family, in one place, for the `domalloc-ffi` crate's exported shims.
//!
//! Everything a C caller relies on beyond "size in, block out" lives here: 16-byte alignment (as
//! glibc on 64-bit targets), `errno`, overflow checks, `malloc(0)`, `realloc(p, 0)`, the
//! alignment rules of `posix_memalign`/`aligned_alloc`/`memalign`, and the glibc extensions
//! (`malloc_usable_size`, `mallopt`, `malloc_trim`, `mallinfo2`, `malloc_stats`). The `ffi` crate
//! only forwards `#[no_mangle]` symbols to these functions, so the semantics can be tested from
//! Rust and read in one file.
//!
//! Like the rest of the allocator, nothing here allocates through `malloc`, panics or prints with
//! std: these functions *are* malloc.
//!
//! | request | result |
//! |---|---|
//! | `malloc(0)`, `calloc(0, n)` | a unique minimal block |
//! | size above the largest supported, `nmemb * size` overflowing | null, `errno = ENOMEM` |
//! | out of memory | null, `errno = ENOMEM` |
//! | `realloc(NULL, n)` | `malloc(n)` |
//! | `realloc(p, 0)` | frees `p`, returns null (glibc's behaviour), `errno` untouched |
//! | `realloc` failure | null, `errno = ENOMEM`, `p` still valid |
//! | `posix_memalign` bad alignment | returns `EINVAL`, `*memptr` untouched |
//! | `posix_memalign` out of memory | returns `ENOMEM` and sets `errno = ENOMEM` (glibc), `*memptr` untouched |
//! | `aligned_alloc` alignment not a power of two | null, `errno = EINVAL` (glibc 2.38) |
//! | `memalign` alignment not a power of two | rounded up to one (glibc) |

use core::alloc::Layout;
use core::ffi::{c_int, c_void};
use core::ptr;

use crate::api::alloc;
use crate::sys::os::{self, OS_PAGE};

/// Alignment of every block handed to C (glibc's `MALLOC_ALIGNMENT` on 64-bit targets; the core's
/// `malloc` and `calloc` give it for every size).
pub const MIN_ALIGN: usize = 16;

pub(crate) use crate::sys::os::set_errno;

#[cold]
#[inline(never)]
fn fail(e: i32) -> *mut c_void {
    set_errno(e);
    ptr::null_mut()
}

/// Allocates `size` bytes aligned to `align` (a power of two, at least [`MIN_ALIGN`]); null with
/// `errno = ENOMEM` on failure.
#[inline]
fn alloc_aligned(size: usize, align: usize) -> *mut c_void {
    debug_assert!(align.is_power_of_two() && align >= MIN_ALIGN);
    // SAFETY: `align` is a power of two.
    let p = unsafe { alloc::alloc(size, align) };
    if p.is_null() {
        return fail(os::ENOMEM);
    }
    p.cast()
}

/// C `malloc`.
///
/// # Safety
/// None beyond the allocator's contract (always safe to call).
#[inline(always)]
pub unsafe fn malloc(size: usize) -> *mut c_void {
    // SAFETY: no preconditions.
    // (`alloc::malloc` sets errno on failure.)
    unsafe { alloc::malloc(size) }.cast()
}

/// C `free`; null is ignored.
///
/// # Safety
/// `p` is null or a live block returned by this allocator.
#[inline(always)]
pub unsafe fn free(p: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { alloc::free(p.cast()) }
}

/// C `calloc`: zeroed memory for `nmemb * size` bytes. Fresh memory from the OS is not written,
/// so the program's first touch decides where its pages live.
///
/// # Safety
/// None beyond the allocator's contract.
#[inline]
pub unsafe fn calloc(nmemb: usize, size: usize) -> *mut c_void {
    let Some(total) = nmemb.checked_mul(size) else { return fail(os::ENOMEM) };
    // SAFETY: no preconditions.
    let p = unsafe { alloc::calloc(total) };
    if p.is_null() {
        return fail(os::ENOMEM);
    }
    p.cast()
}

/// C `realloc`: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and returns null as
/// glibc does; on failure returns null with `errno = ENOMEM` and leaves `p` untouched.
///
/// # Safety
/// `p` is null or a live block returned by this allocator.
#[inline]
pub unsafe fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        // SAFETY: no preconditions.
        return unsafe { malloc(size) };
    }
    if size == 0 {
        // SAFETY: the caller passes a live block.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    // SAFETY: live block, non-zero size, power-of-two alignment.
    let q = unsafe { alloc::realloc(p.cast(), size, MIN_ALIGN) };
    if q.is_null() {
        return fail(os::ENOMEM);
    }
    q.cast()
}

/// C `reallocarray`: `realloc(p, nmemb * size)` with the multiplication checked (overflow: null,
/// `errno = ENOMEM`, `p` untouched).
///
/// # Safety
/// As [`realloc`].
pub unsafe fn reallocarray(p: *mut c_void, nmemb: usize, size: usize) -> *mut c_void {
    let Some(total) = nmemb.checked_mul(size) else { return fail(os::ENOMEM) };
    // SAFETY: forwarded contract.
    unsafe { realloc(p, total) }
}

/// POSIX `posix_memalign`: `EINVAL` unless `align` is a power of two multiple of
/// `sizeof(void *)`, `ENOMEM` on failure; `*memptr` is written only on success. A failure for
/// want of memory also sets `errno` to `ENOMEM`, as glibc does (its tst-malloc-thread-fail reads
/// `errno`): otherwise whatever a system call inside the allocator left there (a futex wait's
/// `EAGAIN`) would read as the error.
///
/// # Safety
/// `memptr` is valid for a pointer write.
pub unsafe fn posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align < core::mem::size_of::<*mut c_void>() {
        return os::EINVAL;
    }
    // SAFETY: power of two.
    let p = unsafe { alloc::alloc(size, align.max(MIN_ALIGN)) };
    if p.is_null() {
        set_errno(os::ENOMEM);
        return os::ENOMEM;
    }
    // SAFETY: the caller passes a writable `memptr`.
    unsafe { *memptr = p.cast() };
    0
}

/// C11 `aligned_alloc`: the alignment must be a power of two (else null with `errno = EINVAL`,
/// as glibc 2.38); the size need not be a multiple of it (C17 DR 460).
///
/// # Safety
/// None beyond the allocator's contract.
pub unsafe fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        return fail(os::EINVAL);
    }
    alloc_aligned(size, align.max(MIN_ALIGN))
}

/// glibc `memalign`: an alignment that is not a power of two is rounded up to one; one above
/// `SIZE_MAX / 2 + 1` is `EINVAL`.
///
/// # Safety
/// None beyond the allocator's contract.
pub unsafe fn memalign(align: usize, size: usize) -> *mut c_void {
    let Some(align) = align.max(MIN_ALIGN).checked_next_power_of_two() else { return fail(os::EINVAL) };
    alloc_aligned(size, align)
}

/// `valloc`: page-aligned `malloc`.
///
/// # Safety
/// None beyond the allocator's contract.
pub unsafe fn valloc(size: usize) -> *mut c_void {
    alloc_aligned(size, OS_PAGE)
}

/// `pvalloc`: page-aligned, size rounded up to whole pages (one page for 0).
///
/// # Safety
/// None beyond the allocator's contract.
pub unsafe fn pvalloc(size: usize) -> *mut c_void {
    let Some(rounded) = size.max(1).checked_add(OS_PAGE - 1) else { return fail(os::ENOMEM) };
    alloc_aligned(rounded & !(OS_PAGE - 1), OS_PAGE)
}

/// glibc `malloc_usable_size`: bytes usable in a live block (at least what was asked for); 0 for
/// null.
///
/// # Safety
/// `p` is null or a live block returned by this allocator.
pub unsafe fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: forwarded contract.
    unsafe { alloc::usable_size(p as *const u8) }
}

/// C23 `free_sized`: `free`, with the size the block was asked for (not needed: the size is
/// recovered from the pointer).
///
/// # Safety
/// As [`free`]; `size` is the size the block was allocated with.
pub unsafe fn free_sized(p: *mut c_void, size: usize) {
    // SAFETY: forwarded contract.
    debug_assert!(p.is_null() || unsafe { malloc_usable_size(p) } >= size);
    // SAFETY: forwarded contract.
    unsafe { free(p) }
}

/// C23 `free_aligned_sized`: `free` for a block from `aligned_alloc(align, size)`.
///
/// # Safety
/// As [`free`]; `align` and `size` are those the block was allocated with.
pub unsafe fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    debug_assert!(p.is_null() || align == 0 || (p as usize) % align == 0);
    // SAFETY: forwarded contract.
    unsafe { free_sized(p, size) }
}

/// glibc's `mallopt` parameters (`<malloc.h>`).
mod m {
    pub(super) const MXFAST: i32 = 1;
    pub(super) const NLBLKS: i32 = 2;
    pub(super) const GRAIN: i32 = 3;
    pub(super) const KEEP: i32 = 4;
    pub(super) const TRIM_THRESHOLD: i32 = -1;
    pub(super) const TOP_PAD: i32 = -2;
    pub(super) const MMAP_THRESHOLD: i32 = -3;
    pub(super) const MMAP_MAX: i32 = -4;
    pub(super) const CHECK_ACTION: i32 = -5;
    pub(super) const PERTURB: i32 = -6;
    pub(super) const ARENA_TEST: i32 = -7;
    pub(super) const ARENA_MAX: i32 = -8;
}

/// glibc `mallopt`: every parameter glibc knows is accepted (returns 1) and has no effect, since
/// domalloc's tuning comes from `DOMALLOC_*` variables; values glibc would reject (and unknown
/// parameters) return 0.
pub fn mallopt(param: c_int, value: c_int) -> c_int {
    let ok = match param {
        // glibc rejects fastbin sizes above 80 * sizeof(size_t) / 4.
        m::MXFAST => value >= 0 && (value as usize) <= 80 * core::mem::size_of::<usize>() / 4,
        m::NLBLKS | m::GRAIN | m::KEEP | m::TRIM_THRESHOLD | m::TOP_PAD | m::CHECK_ACTION | m::PERTURB => true,
        m::MMAP_THRESHOLD | m::MMAP_MAX => value >= 0,
        m::ARENA_TEST | m::ARENA_MAX => value > 0,
        _ => false,
    };
    ok as c_int
}

/// Bytes the OS holds for the allocator that `malloc_trim` can change: (purged so far, mapped now).
#[inline(never)]
fn release_counters() -> (u64, u64) {
    let s = crate::stats();
    s.nodes[..s.node_count]
        .iter()
        .fold((0u64, 0u64), |(p, m), n| (p.wrapping_add(n.purged_bytes), m.wrapping_add(n.mapped_bytes)))
}

/// glibc `malloc_trim`: returns free memory to the OS now, including memory whose purge delay has
/// not passed and cached huge blocks. Returns 1 if memory was released, 0 otherwise. `pad` is
/// ignored.
pub fn malloc_trim(_pad: usize) -> c_int {
    let (purged, mapped) = release_counters();
    crate::collect(true);
    let (purged_after, mapped_after) = release_counters();
    (purged_after != purged || mapped_after < mapped) as c_int
}

/// glibc's `struct mallinfo2` (all fields `size_t`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mallinfo2 {
    /// Bytes mapped for small and large blocks (segments).
    pub arena: usize,
    /// Free small blocks in spans serving size classes.
    pub ordblks: usize,
    /// Unused (0).
    pub smblks: usize,
    /// Live huge blocks (each its own mapping).
    pub hblks: usize,
    /// Bytes of live huge blocks.
    pub hblkhd: usize,
    /// Unused (0, as glibc).
    pub usmblks: usize,
    /// Unused (0).
    pub fsmblks: usize,
    /// Bytes in live small and large blocks.
    pub uordblks: usize,
    /// `arena - uordblks`: mapped segment bytes not in live blocks.
    pub fordblks: usize,
    /// Bytes of freed huge blocks cached for reuse.
    pub keepcost: usize,
}

/// glibc's deprecated `struct mallinfo` (all fields `int`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mallinfo {
    /// See [`Mallinfo2`].
    pub arena: c_int,
    /// See [`Mallinfo2`].
    pub ordblks: c_int,
    /// See [`Mallinfo2`].
    pub smblks: c_int,
    /// See [`Mallinfo2`].
    pub hblks: c_int,
    /// See [`Mallinfo2`].
    pub hblkhd: c_int,
    /// See [`Mallinfo2`].
    pub usmblks: c_int,
    /// See [`Mallinfo2`].
    pub fsmblks: c_int,
    /// See [`Mallinfo2`].
    pub uordblks: c_int,
    /// See [`Mallinfo2`].
    pub fordblks: c_int,
    /// See [`Mallinfo2`].
    pub keepcost: c_int,
}

/// glibc `mallinfo2`, filled from [`crate::api::stats`] (summed over nodes).
pub fn mallinfo2() -> Mallinfo2 {
    let s = crate::stats();
    let mut mi = Mallinfo2::default();
    let (mut mapped, mut huge_mapped) = (0u64, 0u64);
    let mut in_use = 0u64;
    for n in &s.nodes[..s.node_count] {
        mapped = mapped.saturating_add(n.mapped_bytes);
        huge_mapped = huge_mapped.saturating_add(n.huge_bytes);
        in_use = in_use.saturating_add(n.large_bytes);
        mi.hblks = mi.hblks.saturating_add(n.huge_blocks as usize);
        mi.hblkhd = mi.hblkhd.saturating_add(n.huge_bytes as usize);
        mi.keepcost = mi.keepcost.saturating_add(n.huge_cached_bytes as usize);
    }
    let mut free_small = 0u64;
    for c in &s.classes {
        in_use = in_use.saturating_add(c.in_use.saturating_mul(c.block_size as u64));
        free_small = free_small.saturating_add(c.capacity.saturating_sub(c.in_use));
    }
    // Mapped bytes count huge mappings (and cached huge blocks) too; `arena` is the rest.
    let arena = mapped.saturating_sub(huge_mapped).saturating_sub(mi.keepcost as u64);
    mi.arena = arena as usize;
    mi.ordblks = free_small as usize;
    mi.uordblks = in_use as usize;
    mi.fordblks = arena.saturating_sub(in_use) as usize;
    mi
}

/// glibc's deprecated `mallinfo`: [`mallinfo2`] with each field clamped to `INT_MAX`.
pub fn mallinfo() -> Mallinfo {
    let m = mallinfo2();
    let c = |v: usize| v.min(c_int::MAX as usize) as c_int;
    Mallinfo {
        arena: c(m.arena),
        ordblks: c(m.ordblks),
        smblks: c(m.smblks),
        hblks: c(m.hblks),
        hblkhd: c(m.hblkhd),
        usmblks: c(m.usmblks),
        fsmblks: c(m.fsmblks),
        uordblks: c(m.uordblks),
        fordblks: c(m.fordblks),
        keepcost: c(m.keepcost),
    }
}

/// glibc `malloc_stats`: prints domalloc's statistics report to stderr.
pub fn malloc_stats() {
    crate::print_stats()
}

// ---- node-aware extras (`include/domalloc.h`) ----

/// The layout of a C block of `size` bytes, or `None` if no block can be that large.
fn c_layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size, MIN_ALIGN).ok()
}

/// `domalloc_malloc_on_node`: `size` bytes on NUMA node `node`, whichever thread touches them
/// first; free with `free`. Null with `errno = EINVAL` if the node does not exist or has no
/// memory, `ENOMEM` when out of memory.
pub fn malloc_on_node(size: usize, node: c_int) -> *mut c_void {
    let Some(node) = usize::try_from(node).ok().filter(|&n| crate::Node::new(n).is_some()) else {
        return fail(os::EINVAL);
    };
    let Some(layout) = c_layout(size) else { return fail(os::ENOMEM) };
    let p = crate::alloc_on_node(layout, node);
    if p.is_null() {
        return fail(os::ENOMEM);
    }
    p.cast()
}

/// `domalloc_malloc_interleaved`: `size` bytes in a mapping of their own whose pages alternate
/// over every node with memory (for data every thread reads); free with `free`. Null with
/// `errno = ENOMEM` on failure.
pub fn malloc_interleaved(size: usize) -> *mut c_void {
    let Some(layout) = c_layout(size) else { return fail(os::ENOMEM) };
    let p = crate::alloc_interleaved(layout, None);
    if p.is_null() {
        return fail(os::ENOMEM);
    }
    p.cast()
}

/// `domalloc_node_of`: the node whose domain owns the block `p`, or -1 for null and pointers
/// domalloc did not hand out.
pub fn node_of(p: *const c_void) -> c_int {
    match crate::node_of(p.cast()) {
        Some(n) => n.min(c_int::MAX as usize) as c_int,
        None => -1,
    }
}

/// `domalloc_current_node`: the node of the CPU the calling thread runs on now (the node whose
/// memory `malloc` hands it).
pub fn current_node() -> c_int {
    crate::current_node().min(c_int::MAX as usize) as c_int
}

/// `domalloc_node_count`: the number of NUMA nodes with memory (at least 1). Node ids may be
/// sparse: ids go up to the highest possible node id, not to this count.
pub fn node_count() -> c_int {
    if !crate::thread::ensure_init() {
        return 1;
    }
    crate::config::topology::get().memory_node_count().clamp(1, c_int::MAX as usize) as c_int
}

/// `domalloc_print_stats`: prints the statistics report to stderr.
pub fn print_stats() {
    crate::print_stats()
}

/// `domalloc_version`: the library's version, a NUL-terminated static string ("0.2.0").
pub fn version() -> *const core::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// `domalloc_stats_print`: the text statistics report to file descriptor `fd`; 0 on success,
/// -1 if writing failed.
pub fn stats_print(fd: c_int) -> c_int {
    if crate::api::stats::print_to(fd, crate::config::options::StatsFormat::Text) {
        0
    } else {
        -1
    }
}

/// `domalloc_stats_json`: writes the JSON statistics document into `buf` (`size` bytes),
/// NUL-terminated, if it fits; returns the length it needs without the NUL (as `snprintf`).
///
/// # Safety
/// `buf` is valid for `size` bytes of writes (or `size` is 0).
pub unsafe fn stats_json(buf: *mut core::ffi::c_char, size: usize) -> usize {
    let mut dummy = [0u8; 0];
    let out: &mut [u8] = if buf.is_null() || size == 0 {
        &mut dummy
    } else {
        // SAFETY: the caller's buffer of `size` bytes.
        unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), size) }
    };
    let s = crate::stats();
    let len = out.len();
    let mut w = crate::api::stats::CountingBuf::new(&mut out[..len.saturating_sub(1)]);
    let _ = crate::api::stats::write_json(&mut w, &s);
    let needed = w.needed;
    if len > 0 {
        out[needed.min(len - 1)] = 0;
    }
    needed
}

/// `domalloc_prof_start`: starts the sampling heap profiler, one sample per `sample_bytes`
/// allocated on average (0: `DOMALLOC_PROF_SAMPLE`); 0 on success, -1 if its tables cannot be
/// mapped.
pub fn prof_start(sample_bytes: usize) -> c_int {
    if crate::api::stats::prof_start(sample_bytes as u64) {
        0
    } else {
        -1
    }
}

/// `domalloc_prof_stop`: stops sampling (blocks sampled so far are still followed).
pub fn prof_stop() {
    crate::api::stats::prof_stop()
}

/// `domalloc_prof_dump`: writes the heap profile to `path` (NUL-terminated; null:
/// `DOMALLOC_PROF_FILE`); 0 on success, -1 if there is no profile or the file cannot be written.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
pub unsafe fn prof_dump(path: *const core::ffi::c_char) -> c_int {
    let ok = if path.is_null() {
        crate::api::stats::dump_profile(None, false)
    } else {
        // SAFETY: the caller's NUL-terminated string.
        let p = unsafe { core::ffi::CStr::from_ptr(path) };
        crate::api::stats::dump_profile(Some(p.to_bytes_with_nul()), false)
    };
    if ok {
        0
    } else {
        -1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_json_measures_and_truncates() {
        // SAFETY: null with size 0 only asks for the length; the buffers are ours and valid.
        unsafe {
            let needed = stats_json(ptr::null_mut(), 0);
            assert!(needed > 100, "the document's length: {needed}");
            let mut small = [0x55u8; 10];
            let n = stats_json(small.as_mut_ptr().cast(), small.len());
            assert!(n > 100, "the length again, whatever the buffer: {n}");
            assert_eq!(small[9], 0, "truncated and terminated (snprintf's contract)");
            assert_eq!(&small[..1], b"{");
            let mut big = vec![0u8; n + 4096];
            let m = stats_json(big.as_mut_ptr().cast(), big.len());
            assert!(m < big.len());
            let text = std::str::from_utf8(&big[..m]).unwrap();
            assert!(text.starts_with('{') && text.trim_end().ends_with('}'), "{text}");
            assert_eq!(big[m], 0);
        }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn calloc_overflow_is_enomem() {
        // SAFETY: plain calls.
        unsafe {
            set_errno(0);
            assert!(calloc(usize::MAX / 2, 3).is_null());
            assert_eq!(errno(), os::ENOMEM);
            let p = calloc(10, 10);
            assert!(!p.is_null());
            assert!(core::slice::from_raw_parts(p as *const u8, 100).iter().all(|&b| b == 0));
            free(p);
        }
    }

    #[test]
    fn realloc_edge_cases() {
        // SAFETY: plain calls on our own blocks.
        unsafe {
            let p = realloc(ptr::null_mut(), 10);
            assert!(!p.is_null());
            assert!(realloc(p, 0).is_null());
            let p = malloc(10);
            set_errno(0);
            assert!(realloc(p, usize::MAX).is_null());
            assert_eq!(errno(), os::ENOMEM);
            free(p);
            assert!(reallocarray(ptr::null_mut(), usize::MAX, 2).is_null());
        }
    }

    #[test]
    fn alignment_rules() {
        // SAFETY: plain calls on our own blocks.
        unsafe {
            let mut out: *mut c_void = 1 as *mut c_void;
            assert_eq!(posix_memalign(&mut out, 3, 8), os::EINVAL);
            assert_eq!(posix_memalign(&mut out, 4, 8), os::EINVAL);
            assert_eq!(posix_memalign(&mut out, 0, 8), os::EINVAL);
            assert_eq!(out as usize, 1);
            // A failure reads ENOMEM in errno too (glibc's tst-malloc-thread-fail checks errno),
            // whatever an earlier system call left there.
            set_errno(libc::EAGAIN);
            assert_eq!(posix_memalign(&mut out, 1 << 20, usize::MAX / 2), os::ENOMEM);
            assert_eq!(errno(), os::ENOMEM);
            assert_eq!(out as usize, 1);
            assert_eq!(posix_memalign(&mut out, 4096, 8), 0);
            assert_eq!(out as usize % 4096, 0);
            free(out);
            set_errno(0);
            assert!(aligned_alloc(24, 8).is_null());
            assert_eq!(errno(), os::EINVAL);
            let p = memalign(24, 8);
            assert_eq!(p as usize % 32, 0);
            free(p);
            let p = pvalloc(0);
            assert_eq!(p as usize % OS_PAGE, 0);
            assert!(malloc_usable_size(p) >= OS_PAGE);
            free(p);
            let p = malloc(3);
            assert_eq!(p as usize % MIN_ALIGN, 0);
            free_sized(p, 3);
        }
    }

    #[test]
    fn mallopt_and_info() {
        assert_eq!(mallopt(m::MMAP_THRESHOLD, 1 << 20), 1);
        assert_eq!(mallopt(m::MXFAST, 1 << 20), 0);
        assert_eq!(mallopt(12345, 0), 0);
        // SAFETY: plain calls.
        let p = unsafe { malloc(100) };
        let mi = mallinfo2();
        assert!(mi.uordblks >= 100);
        assert!(mi.arena >= mi.uordblks);
        assert!(node_of(p) >= 0);
        assert_eq!(node_of(ptr::null()), -1);
        assert!(node_count() >= 1);
        let here = current_node();
        let q = malloc_on_node(5000, here);
        assert!(!q.is_null());
        assert_eq!(node_of(q), here);
        set_errno(0);
        assert!(malloc_on_node(10, -1).is_null());
        assert_eq!(errno(), os::EINVAL);
        assert!(malloc_on_node(10, 100_000).is_null());
        assert!(malloc_on_node(usize::MAX, here).is_null());
        assert_eq!(errno(), os::ENOMEM);
        let r = malloc_interleaved(3 << 20);
        assert!(!r.is_null());
        assert!(malloc_interleaved(usize::MAX / 2).is_null());
        // SAFETY: our own blocks.
        unsafe {
            free(q);
            free(r);
        }
        // SAFETY: our own block.
        unsafe { free(p) };
        let _ = malloc_trim(0);
    }
}
