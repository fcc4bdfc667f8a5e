//! What FreeBSD and DragonFly BSD do alike: `MADV_DONTNEED` keeps the data there, so a zeroing
//! purge maps fresh pages over the range; `MADV_FREE` is the lazy purge; growth in place maps
//! the tail with a flag that never replaces an existing mapping.

use super::{posix, PurgeMode, OS_PAGE};

/// Replaces `[ptr, ptr + size)` with fresh zero-fill pages; the old ones are freed at once.
///
/// # Safety
/// The range must be mapped by this layer, page aligned, and hold no live data.
pub(super) unsafe fn remap_zero(ptr: *mut u8, size: usize) -> bool {
    // SAFETY: MAP_FIXED replaces only pages of a range the caller owns and no longer uses.
    if unsafe { posix::mmap_anon(ptr, size, libc::MAP_FIXED) } == ptr {
        return true;
    }
    // A refusal before the kernel touched the map (resource limits) leaves the old pages; a
    // failure after it removed them leaves a hole. Retry once, then tell the two cases apart.
    // SAFETY: as above.
    if unsafe { posix::mmap_anon(ptr, size, libc::MAP_FIXED) } == ptr {
        return true;
    }
    let mut vec = 0 as libc::c_char;
    // SAFETY: mincore only reports on the page at `ptr` into the one-byte `vec`.
    if unsafe { libc::mincore(ptr.cast(), OS_PAGE, &mut vec) } != 0 {
        super::fatal(format_args!("mmap(MAP_FIXED) failed while purging {size} bytes at {ptr:p}"));
    }
    false // still mapped with its old contents
}

/// The BSD purge: `MADV_FREE` (lazy, never zero) or fresh pages (zero).
///
/// # Safety
/// As [`super::Os::purge`].
pub(super) unsafe fn purge(ptr: *mut u8, size: usize, mode: PurgeMode) -> bool {
    match mode {
        PurgeMode::Free => {
            // SAFETY: forwarded contract. Lazy: contents undefined until reused, never zero.
            unsafe { posix::madvise(ptr, size, libc::MADV_FREE) };
            false
        }
        // SAFETY: forwarded contract.
        PurgeMode::DontNeed => unsafe { remap_zero(ptr, size) },
    }
}

/// Maps with a platform alignment flag when there is one for `align` (else trims).
///
/// # Safety
/// As [`super::Os::map_aligned`].
pub(super) unsafe fn map_aligned(size: usize, align: usize, flag: Option<libc::c_int>) -> *mut u8 {
    if align <= OS_PAGE {
        // SAFETY: forwarded contract.
        return unsafe { posix::mmap_anon(core::ptr::null_mut(), size, 0) };
    }
    if let Some(flag) = flag {
        // SAFETY: plain anonymous mapping; the flag only constrains where it goes.
        let p = unsafe { posix::mmap_anon(core::ptr::null_mut(), size, flag) };
        if !p.is_null() && p as usize % align == 0 {
            return p;
        }
        if !p.is_null() {
            // SAFETY: we just mapped it.
            unsafe { posix::unmap(p, size) };
        }
    }
    // SAFETY: forwarded contract.
    unsafe { posix::map_aligned_trim(size, align, 0) }
}

/// Shrinks by unmapping the tail; grows by mapping the tail with `no_replace_flag` (FreeBSD
/// `MAP_FIXED | MAP_EXCL`, DragonFly `MAP_TRYFIXED`), which fails instead of replacing.
///
/// # Safety
/// As [`super::Os::resize_in_place`].
pub(super) unsafe fn resize_in_place(
    ptr: *mut u8,
    old_size: usize,
    new_size: usize,
    no_replace_flag: libc::c_int,
) -> bool {
    if new_size <= old_size {
        if new_size < old_size {
            // SAFETY: the tail belongs to the caller's mapping and is no longer used.
            unsafe { posix::unmap(ptr.add(new_size), old_size - new_size) };
        }
        return true;
    }
    // SAFETY: `ptr + old_size` is the end of the caller's mapping.
    let end = unsafe { ptr.add(old_size) };
    // SAFETY: the flag makes the kernel fail rather than replace anything already mapped.
    let p = unsafe { posix::mmap_anon(end, new_size - old_size, no_replace_flag) };
    if p == end {
        return true;
    }
    if !p.is_null() {
        // SAFETY: a mapping we just made (somewhere else).
        unsafe { posix::unmap(p, new_size - old_size) };
    }
    false
}

/// The calling thread's affinity (`pthread_getaffinity_np`) as [`super::Os::thread_cpus`] wants it.
pub(super) fn thread_cpus(mask: &mut [u64; super::CPU_WORDS]) -> bool {
    let size = core::mem::size_of::<libc::cpuset_t>();
    // SAFETY: all-zero bytes are an empty set.
    let mut set: libc::cpuset_t = unsafe { core::mem::zeroed() };
    // SAFETY: our own thread; `set` is a `cpuset_t` of the size passed.
    if unsafe { libc::pthread_getaffinity_np(libc::pthread_self(), size, &mut set) } != 0 {
        return false;
    }
    *mask = [0; super::CPU_WORDS];
    for cpu in 0..(64 * super::CPU_WORDS).min(8 * size) {
        // SAFETY: `cpu` is below the set's size in bits.
        if unsafe { libc::CPU_ISSET(cpu, &set) } {
            mask[cpu / 64] |= 1 << (cpu % 64);
        }
    }
    true
}

/// `sched_getcpu` (FreeBSD 13+, DragonFly).
pub(super) fn current_cpu() -> Option<usize> {
    // SAFETY: no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    if c >= 0 {
        Some(c as usize)
    } else {
        None
    }
}
