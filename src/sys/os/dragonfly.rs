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
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};

use super::bsd_sysctl::{dragonfly as sysctl, SysctlByName};
use super::{bsd, posix, Os, ProcessPolicy, PurgeMode, TopologySink};

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

impl Os for Sys {
    const NAME: &'static str = "dragonfly";

    unsafe fn map_aligned(size: usize, align: usize) -> *mut u8 {
        let flag = sysctl::size_align_applies(size, align).then_some(MAP_SIZEALIGN);
        // SAFETY: forwarded contract.
        unsafe { bsd::map_aligned(size, align, flag) }
    }

    unsafe fn purge(ptr: *mut u8, size: usize, mode: PurgeMode) -> bool {
        // MADV_DONTNEED only deactivates the pages on DragonFly; zeroing needs new pages.
        // SAFETY: forwarded contract.
        unsafe { bsd::purge(ptr, size, mode) }
    }

    // No transparent huge pages for anonymous memory (the kernel aligns big mappings to 2 MiB and
    // shares page-table pages instead): `set_huge_pages` keeps the default no-op.

    unsafe fn resize_in_place(ptr: *mut u8, old_size: usize, new_size: usize) -> bool {
        // SAFETY: forwarded contract; MAP_TRYFIXED maps at the hint only if nothing is there.
        unsafe { bsd::resize_in_place(ptr, old_size, new_size, MAP_TRYFIXED) }
    }

    // No mremap (`move_mapping` default); no per-range policy (`place` default: first touch by
    // package is what the kernel does by itself).

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

    fn thread_cpus(mask: &mut [u64; super::CPU_WORDS]) -> bool {
        bsd::thread_cpus(mask)
    }

    fn current_cpu() -> Option<usize> {
        bsd::current_cpu() // a system call on DragonFly
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

    fn kernel_thread_id() -> u32 {
        // SAFETY: no preconditions.
        (unsafe { lwp_gettid() } as u32) & ((1 << 30) - 1)
    }

    fn futex_wait(word: &AtomicU32, expected: u32, timeout_ms: Option<u64>) {
        // umtx_sleep's timeout is in microseconds, 0 = none; it fits an int for our short waits.
        let us = timeout_ms.map_or(0, |ms| (ms.saturating_mul(1000)).min(i32::MAX as u64) as libc::c_int);
        // SAFETY: sleeps while the word equals `expected`.
        unsafe { umtx_sleep(word.as_ptr().cast(), expected as libc::c_int, us) };
    }

    fn futex_wake(word: &AtomicU32, n: u32) {
        // SAFETY: wakes sleepers on our word.
        unsafe { umtx_wakeup(word.as_ptr().cast(), n as libc::c_int) };
    }

    fn set_errno(e: i32) {
        posix::set_errno(e)
    }
}

extern "C" {
    fn umtx_sleep(ptr: *const libc::c_int, value: libc::c_int, timeout: libc::c_int) -> libc::c_int;
    fn umtx_wakeup(ptr: *const libc::c_int, count: libc::c_int) -> libc::c_int;
    fn lwp_gettid() -> libc::lwpid_t;
}
