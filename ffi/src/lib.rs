//! `libdomalloc.so` / `libdomalloc.a`: the C ABI of domalloc.
//!
//! Only `#[no_mangle]` shims live here; each forwards to `domalloc::c`, which holds the C
//! semantics (errno, overflow checks, alignment rules). Exported: the standard and glibc malloc
//! family, glibc's internal aliases (`__libc_malloc`, ... so that code calling them directly,
//! like some debuggers and hooks, stays on one allocator), C23 `free_sized`/`free_aligned_sized`,
//! the node-aware extras declared in `include/domalloc.h`, and memkind's hbwmalloc(3) interface
//! (`include/hbwmalloc.h`). `ffi/exports.txt` lists every
//! exported name (the ABI: see `docs/ABI.md`); `scripts/test-ffi.sh` checks the list.
//!
//! Use it with `LD_PRELOAD=libdomalloc.so program`, or link with `-ldomalloc` (see
//! `ffi/README.md`).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![allow(clippy::missing_safety_doc)]

use core::ffi::{c_char, c_int, c_void};

use domalloc::{c, hbw};

// The shims carry no `# Safety` sections: each has exactly the contract of the C function it
// exports (and of the `domalloc::c` function it forwards to).

macro_rules! shims {
    ($($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),*) $(-> $r:ty)? = $target:path;)*) => {$(
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) $(-> $r)? {
            // SAFETY: the C caller upholds the C function's contract, which is the target's.
            #[allow(unused_unsafe)]
            unsafe { $target($($a),*) }
        }
    )*};
}

shims! {
    /// C `malloc`.
    fn malloc(size: usize) -> *mut c_void = c::malloc;
    /// C `free`.
    fn free(p: *mut c_void) = c::free;
    /// C `calloc`.
    fn calloc(nmemb: usize, size: usize) -> *mut c_void = c::calloc;
    /// C `realloc`.
    fn realloc(p: *mut c_void, size: usize) -> *mut c_void = c::realloc;
    /// `reallocarray` (glibc 2.26, POSIX 2024).
    fn reallocarray(p: *mut c_void, nmemb: usize, size: usize) -> *mut c_void = c::reallocarray;
    /// POSIX `posix_memalign`.
    fn posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int = c::posix_memalign;
    /// C11 `aligned_alloc`.
    fn aligned_alloc(align: usize, size: usize) -> *mut c_void = c::aligned_alloc;
    /// `memalign`.
    fn memalign(align: usize, size: usize) -> *mut c_void = c::memalign;
    /// `valloc`.
    fn valloc(size: usize) -> *mut c_void = c::valloc;
    /// `pvalloc`.
    fn pvalloc(size: usize) -> *mut c_void = c::pvalloc;
    /// `malloc_usable_size`.
    fn malloc_usable_size(p: *mut c_void) -> usize = c::malloc_usable_size;
    /// C23 `free_sized`.
    fn free_sized(p: *mut c_void, size: usize) = c::free_sized;
    /// C23 `free_aligned_sized`.
    fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) = c::free_aligned_sized;
    /// glibc `mallopt`.
    fn mallopt(param: c_int, value: c_int) -> c_int = c::mallopt;
    /// glibc `malloc_trim`.
    fn malloc_trim(pad: usize) -> c_int = c::malloc_trim;
    /// glibc `mallinfo2`.
    fn mallinfo2() -> c::Mallinfo2 = c::mallinfo2;
    /// glibc `mallinfo` (deprecated; fields clamped to `INT_MAX`).
    fn mallinfo() -> c::Mallinfo = c::mallinfo;
    /// glibc `malloc_stats` (not cancellable).
    fn malloc_stats() = malloc_stats_uncancellable;

    /// glibc alias of `malloc`.
    fn __libc_malloc(size: usize) -> *mut c_void = c::malloc;
    /// glibc alias of `calloc`.
    fn __libc_calloc(nmemb: usize, size: usize) -> *mut c_void = c::calloc;
    /// glibc alias of `realloc`.
    fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void = c::realloc;
    /// glibc alias of `free`.
    fn __libc_free(p: *mut c_void) = c::free;
    /// glibc alias of `memalign`.
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void = c::memalign;
    /// glibc alias of `valloc`.
    fn __libc_valloc(size: usize) -> *mut c_void = c::valloc;
    /// glibc alias of `pvalloc`.
    fn __libc_pvalloc(size: usize) -> *mut c_void = c::pvalloc;
    /// glibc alias of `posix_memalign`.
    fn __posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int = c::posix_memalign;

    /// `size` bytes on node `node` (free with `free`).
    fn domalloc_malloc_on_node(size: usize, node: c_int) -> *mut c_void = c::malloc_on_node;
    /// `size` bytes with pages interleaved over all nodes with memory (free with `free`).
    fn domalloc_malloc_interleaved(size: usize) -> *mut c_void = c::malloc_interleaved;
    /// The node owning block `p`; -1 for null or foreign pointers.
    fn domalloc_node_of(p: *const c_void) -> c_int = c::node_of;
    /// The node of the CPU the calling thread runs on now.
    fn domalloc_current_node() -> c_int = c::current_node;
    /// Number of NUMA nodes with memory (node ids may be sparse).
    fn domalloc_node_count() -> c_int = c::node_count;
    /// Prints the statistics report to stderr (not cancellable).
    fn domalloc_print_stats() = print_stats_uncancellable;

    /// The library's version, e.g. `"0.2.0"` (a static NUL-terminated string).
    fn domalloc_version() -> *const c_char = domalloc::c::version;
    /// Writes the statistics report (text) to file descriptor `fd`; 0 on success, -1 on error
    /// (not cancellable).
    fn domalloc_stats_print(fd: c_int) -> c_int = stats_print_uncancellable;
    /// Writes the statistics as one NUL-terminated JSON document into `buf` if it fits in `len`
    /// bytes; returns the length it needs without the NUL (like `snprintf`).
    fn domalloc_stats_json(buf: *mut c_char, len: usize) -> usize = domalloc::c::stats_json;

    /// memkind's hbwmalloc(3) (`include/hbwmalloc.h`): 0 when a high-bandwidth node exists,
    /// else `ENODEV`.
    fn hbw_check_available() -> c_int = hbw::check_available;
    /// `hbw_malloc`: on the high-bandwidth node nearest the calling thread.
    fn hbw_malloc(size: usize) -> *mut c_void = hbw::malloc;
    /// `hbw_calloc`.
    fn hbw_calloc(nmemb: usize, size: usize) -> *mut c_void = hbw::calloc;
    /// `hbw_realloc`.
    fn hbw_realloc(p: *mut c_void, size: usize) -> *mut c_void = hbw::realloc;
    /// `hbw_free` (from any thread).
    fn hbw_free(p: *mut c_void) = hbw::free;
    /// `hbw_malloc_usable_size`.
    fn hbw_malloc_usable_size(p: *mut c_void) -> usize = hbw::malloc_usable_size;
    /// `hbw_posix_memalign`.
    fn hbw_posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int = hbw::posix_memalign;
    /// `hbw_posix_memalign_psize`.
    fn hbw_posix_memalign_psize(memptr: *mut *mut c_void, align: usize, size: usize, pagesize: c_int) -> c_int = hbw::posix_memalign_psize;
    /// `hbw_get_policy`.
    fn hbw_get_policy() -> c_int = hbw::get_policy;
    /// `hbw_set_policy`.
    fn hbw_set_policy(mode: c_int) -> c_int = hbw::set_policy;
    /// `hbw_verify_memory_region`.
    fn hbw_verify_memory_region(addr: *mut c_void, size: usize, flags: c_int) -> c_int = hbw::verify_memory_region;
    /// Starts the sampling heap profiler (0: the `DOMALLOC_PROF_SAMPLE` interval); 0 or -1.
    fn domalloc_prof_start(sample_bytes: usize) -> c_int = domalloc::c::prof_start;
    /// Stops sampling.
    fn domalloc_prof_stop() = domalloc::c::prof_stop;
    /// Writes the heap profile to `path` (NULL: `DOMALLOC_PROF_FILE`); 0 or -1 (not cancellable).
    fn domalloc_prof_dump(path: *const c_char) -> c_int = prof_dump_uncancellable;
}

// ---- printing the report: not a cancellation point ----

extern "C" {
    // POSIX; the `libc` crate does not declare it for every target.
    fn pthread_setcancelstate(state: c_int, oldstate: *mut c_int) -> c_int;
}

/// `PTHREAD_CANCEL_DISABLE` (1 in glibc, musl and the BSDs).
const PTHREAD_CANCEL_DISABLE: c_int = 1;

/// Runs `f` with the calling thread's cancellation disabled, and restores the state it had. The
/// report's `write` calls are cancellation points: a deferred `pthread_cancel` acting there would
/// unwind through the allocator in the middle of a report (glibc's tst-malloc-stats-cancellation);
/// glibc's `malloc_stats` disables cancellation the same way. A cancel that arrives meanwhile stays
/// pending and acts at the thread's next cancellation point.
fn uncancellable<R>(f: impl FnOnce() -> R) -> R {
    let mut old: c_int = PTHREAD_CANCEL_DISABLE;
    // SAFETY: a plain libc call with a valid out-pointer; it fails only for an invalid state.
    let changed = unsafe { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &mut old) } == 0;
    let r = f();
    if changed {
        let mut ignored: c_int = 0;
        // SAFETY: as above; `old` is the state the call returned.
        unsafe { pthread_setcancelstate(old, &mut ignored) };
    }
    r
}

fn malloc_stats_uncancellable() {
    uncancellable(c::malloc_stats)
}

fn print_stats_uncancellable() {
    uncancellable(c::print_stats)
}

fn stats_print_uncancellable(fd: c_int) -> c_int {
    uncancellable(|| c::stats_print(fd))
}

/// # Safety
/// `path` is null or a NUL-terminated string.
unsafe fn prof_dump_uncancellable(path: *const c_char) -> c_int {
    // SAFETY: forwarded.
    uncancellable(|| unsafe { c::prof_dump(path) })
}
