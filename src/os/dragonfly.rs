//! DragonFly BSD: `mmap` with `MAP_SIZEALIGN`, `madvise(MADV_FREE)`, zeroing purge by remapping,
//! growth in place with `MAP_TRYFIXED`, placement by running the first touch on the target
//! package, and the topology from sysctls (`hw.cpu_topology.cpuN.physical_id`; parsed in
//! `bsd_sysctl.rs`).
//!
//! DragonFly has no memory-policy API (no `mbind`, no `domainset`): the page allocator colours
//! pages by the package of the CPU that faults them in, best effort (it borrows from other
//! packages' queues when one runs short). A NUMA node is therefore a physical package, and the
//! only way to put a page on a package is to touch it from one of its CPUs. [`Os::place`] accepts
//! only [`Placement::Local`]; [`Os::with_thread_placement`] binds the calling thread to the
//! package's CPUs that its own mask allows, with `pthread_setaffinity_np` (one thread, unlike
//! `sched_setaffinity`, which moves every thread of the process), runs the touch, and puts the
//! thread's mask back.

use core::mem;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use super::bsd_sysctl::{dragonfly as sysctl, SysctlByName};
use super::{posix, Os, Placement, ProcessPolicy, PurgeMode, TopologySink, OS_PAGE};

/// The DragonFly implementation of [`Os`].
pub(crate) struct Sys;

/// `MAP_SIZEALIGN` (`<sys/mman.h>`): align the mapping to its size (a power of two). Missing from
/// the libc crate.
const MAP_SIZEALIGN: libc::c_int = 0x0004_0000;
/// `MAP_TRYFIXED` (`<sys/mman.h>`): map exactly at the hint or fail, never replacing a mapping.
/// Missing from the libc crate.
const MAP_TRYFIXED: libc::c_int = 0x0001_0000;

/// The package of each CPU (`UNKNOWN` if none), filled from the topology sysctls the first time
/// [`Os::read_topology`] or [`Os::with_thread_placement`] needs it. Racing fills write the same
/// values.
static PACKAGE_OF_CPU: [AtomicU16; sysctl::CPUMASK_BITS] = [NO_PACKAGE; sysctl::CPUMASK_BITS];
static PACKAGES_KNOWN: AtomicBool = AtomicBool::new(false);
const UNKNOWN: u16 = u16::MAX;
/// Only the initialiser of `PACKAGE_OF_CPU` (inline `const {}` array items need Rust 1.79).
#[allow(clippy::declare_interior_mutable_const)]
const NO_PACKAGE: AtomicU16 = AtomicU16::new(UNKNOWN);

/// Forwards topology reports to an optional sink and records each CPU's package.
struct RecordPackages<'a> {
    inner: Option<&'a mut dyn TopologySink>,
}

impl TopologySink for RecordPackages<'_> {
    fn possible(&mut self, cpu_ids: usize, node_ids: usize) -> bool {
        self.inner.as_mut().map_or(true, |s| s.possible(cpu_ids, node_ids))
    }
    fn cpu(&mut self, cpu: usize, node: usize) {
        if let (Some(slot), Ok(node)) = (PACKAGE_OF_CPU.get(cpu), u16::try_from(node)) {
            slot.store(node, Ordering::Relaxed);
        }
        if let Some(s) = self.inner.as_mut() {
            s.cpu(cpu, node);
        }
    }
    fn node_memory(&mut self, node: usize, bytes: u64) {
        if let Some(s) = self.inner.as_mut() {
            s.node_memory(node, bytes);
        }
    }
    fn distance(&mut self, from: usize, to: usize, d: u32) {
        if let Some(s) = self.inner.as_mut() {
            s.distance(from, to, d);
        }
    }
}

fn package_of(cpu: usize) -> Option<usize> {
    match PACKAGE_OF_CPU.get(cpu)?.load(Ordering::Relaxed) {
        UNKNOWN => None,
        p => Some(p as usize),
    }
}

/// Restores the thread's saved CPU mask when dropped (also if `touch` unwinds).
struct RestoreAffinity(libc::cpuset_t);

impl Drop for RestoreAffinity {
    fn drop(&mut self) {
        // SAFETY: setting our own thread's mask from a valid `cpuset_t`. If this failed the
        // thread would stay on the package it touched for; there is nothing better to do here.
        unsafe { libc::pthread_setaffinity_np(libc::pthread_self(), mem::size_of::<libc::cpuset_t>(), &self.0) };
    }
}

/// Replaces `[ptr, ptr + size)` with fresh zero-fill pages; the old ones are freed at once.
///
/// # Safety
/// The range must be mapped by this layer, page aligned, and hold no live data.
unsafe fn remap_zero(ptr: *mut u8, size: usize) -> bool {
    // SAFETY: MAP_FIXED replaces only pages of a range the caller owns and no longer uses.
    if unsafe { posix::mmap_anon(ptr, size, libc::MAP_FIXED) } == ptr {
        return true;
    }
    // A refusal before the kernel touched the map (the per-process map-entry limit) leaves the
    // old pages; a failure after it removed them leaves a hole. Retry once, then tell them apart.
    // SAFETY: as above.
    if unsafe { posix::mmap_anon(ptr, size, libc::MAP_FIXED) } == ptr {
        return true;
    }
    let mut vec = 0 as libc::c_char;
    // SAFETY: mincore only reports on the page at `ptr` into the one-byte `vec`.
    if unsafe { libc::mincore(ptr.cast(), OS_PAGE, &mut vec) } != 0 {
        crate::util::fatal(format_args!("mmap(MAP_FIXED) failed while purging {size} bytes at {ptr:p}"));
    }
    false // still mapped with its old contents
}

impl Os for Sys {
    const NAME: &'static str = "dragonfly";
    const PLACEMENT_GRANULE: usize = super::OS_PAGE;

    unsafe fn map_aligned(size: usize, align: usize) -> *mut u8 {
        if align <= OS_PAGE {
            // SAFETY: forwarded contract.
            return unsafe { posix::mmap_anon(ptr::null_mut(), size, 0) };
        }
        if sysctl::size_align_applies(size, align) {
            // SAFETY: plain anonymous mapping; MAP_SIZEALIGN only constrains where it goes.
            let p = unsafe { posix::mmap_anon(ptr::null_mut(), size, MAP_SIZEALIGN) };
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

    unsafe fn unmap(ptr: *mut u8, size: usize) {
        // SAFETY: forwarded contract.
        unsafe { posix::unmap(ptr, size) }
    }

    unsafe fn purge(ptr: *mut u8, size: usize, mode: PurgeMode) -> bool {
        match mode {
            PurgeMode::Free => {
                // SAFETY: forwarded contract. Lazy: contents undefined until reused, never zero.
                unsafe { posix::madvise(ptr, size, libc::MADV_FREE) };
                false
            }
            // MADV_DONTNEED only deactivates the pages on DragonFly; zeroing needs new pages.
            // SAFETY: forwarded contract.
            PurgeMode::DontNeed => unsafe { remap_zero(ptr, size) },
        }
    }

    unsafe fn protect_none(ptr: *mut u8, size: usize) -> bool {
        // SAFETY: forwarded contract.
        unsafe { posix::protect_none(ptr, size) }
    }

    unsafe fn set_huge_pages(_ptr: *mut u8, _size: usize, _enable: bool) {
        // No transparent huge pages for anonymous memory (the kernel aligns big mappings to 2 MiB
        // and shares page-table pages instead); nothing to ask for.
    }

    unsafe fn resize_in_place(ptr: *mut u8, old_size: usize, new_size: usize) -> bool {
        if new_size <= old_size {
            if new_size < old_size {
                // SAFETY: the tail belongs to the caller's mapping and is no longer used.
                unsafe { posix::unmap(ptr.add(new_size), old_size - new_size) };
            }
            return true;
        }
        // SAFETY: `ptr + old_size` is the end of the caller's mapping.
        let end = unsafe { ptr.add(old_size) };
        // SAFETY: MAP_TRYFIXED maps at `end` only if nothing is there; it never replaces.
        let p = unsafe { posix::mmap_anon(end, new_size - old_size, MAP_TRYFIXED) };
        if p == end {
            return true;
        }
        if !p.is_null() {
            // SAFETY: a mapping we just made (somewhere else).
            unsafe { posix::unmap(p, new_size - old_size) };
        }
        false
    }

    unsafe fn move_mapping(_ptr: *mut u8, _old: usize, _new: usize, _align: usize) -> *mut u8 {
        ptr::null_mut() // no mremap
    }

    unsafe fn place(_ptr: *mut u8, _size: usize, placement: Placement<'_>) -> bool {
        // No per-range policy; first touch by package is what the kernel does by itself.
        matches!(placement, Placement::Local)
    }

    fn with_thread_placement(node: usize, touch: &mut dyn FnMut()) -> bool {
        if !PACKAGES_KNOWN.load(Ordering::Acquire) {
            let mut record = RecordPackages { inner: None };
            if sysctl::read_topology(&mut SysctlByName, &mut record) {
                PACKAGES_KNOWN.store(true, Ordering::Release);
            }
        }
        let words = sysctl::package_cpu_mask(node, package_of);
        let size = mem::size_of::<libc::cpuset_t>();
        // SAFETY: `cpuset_t` is plain bits; all-zero is the empty set.
        let mut saved: libc::cpuset_t = unsafe { mem::zeroed() };
        // SAFETY: our own thread; `saved` is a `cpuset_t` of the size passed.
        if unsafe { libc::pthread_getaffinity_np(libc::pthread_self(), size, &mut saved) } != 0 {
            return false;
        }
        // Only the package's CPUs that the thread may already use: the program's (or a
        // launcher's) affinity is honoured, never widened.
        // SAFETY: as above.
        let mut target: libc::cpuset_t = unsafe { mem::zeroed() };
        let mut any = false;
        for cpu in 0..sysctl::CPUMASK_BITS {
            // SAFETY: cpu < CPU_SETSIZE (256), the number of bits in a `cpuset_t`.
            if words[cpu / 64] & (1 << (cpu % 64)) != 0 && unsafe { libc::CPU_ISSET(cpu, &saved) } {
                // SAFETY: as above.
                unsafe { libc::CPU_SET(cpu, &mut target) };
                any = true;
            }
        }
        if !any {
            return false; // no allowed CPU on that node (or an unknown node): nowhere to touch from
        }
        // SAFETY: our own thread; `target` is a `cpuset_t` of the size passed.
        if unsafe { libc::pthread_setaffinity_np(libc::pthread_self(), size, &target) } != 0 {
            return false;
        }
        // The kernel migrates a thread that leaves its own CPU's mask at once, so `touch` runs on
        // the package from here on.
        let _restore = RestoreAffinity(saved);
        touch();
        true
    }

    fn cpu_id_ptr() -> *const u32 {
        ptr::null() // no rseq
    }

    fn current_cpu() -> Option<usize> {
        // SAFETY: no preconditions (a system call on DragonFly).
        let c = unsafe { libc::sched_getcpu() };
        if c >= 0 { Some(c as usize) } else { None }
    }

    fn read_topology(_root: Option<&[u8]>, sink: &mut dyn TopologySink) -> bool {
        let mut record = RecordPackages { inner: Some(sink) };
        let found = sysctl::read_topology(&mut SysctlByName, &mut record);
        if found {
            PACKAGES_KNOWN.store(true, Ordering::Release);
        }
        found
    }

    fn process_policy() -> Option<ProcessPolicy> {
        None // DragonFly has no memory policies to inherit
    }

    fn environ_find(name: &[u8]) -> Option<&'static [u8]> {
        posix::environ_find(name)
    }
    fn write_stderr(bytes: &[u8]) {
        posix::write_stderr(bytes)
    }
    fn abort() -> ! {
        posix::abort()
    }
    fn yield_now() {
        posix::yield_now()
    }
    fn now_ms() -> u64 {
        posix::now_ms()
    }
    fn set_errno(e: i32) {
        // SAFETY: `__errno_location()` is the calling thread's errno location.
        unsafe { *libc::__errno_location() = e };
    }
    fn thread_key_create(dtor: unsafe extern "C" fn(*mut libc::c_void)) -> Option<libc::pthread_key_t> {
        posix::thread_key_create(dtor)
    }
    fn thread_key_set(key: libc::pthread_key_t, value: *mut libc::c_void) {
        posix::thread_key_set(key, value)
    }
    fn atfork(prepare: unsafe extern "C" fn(), parent: unsafe extern "C" fn(), child: unsafe extern "C" fn()) -> bool {
        posix::atfork(prepare, parent, child)
    }
}
