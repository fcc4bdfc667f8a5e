//! FreeBSD: `mmap` with `MAP_ALIGNED`, `madvise(MADV_FREE)`, zeroing purge by remapping, growth
//! in place with `MAP_FIXED | MAP_EXCL`, per-thread `domainset` policies for placement, and the
//! topology from sysctls (`vm.ndomains`, `dev.cpu.N.%domain`; parsed in `bsd_sysctl.rs`).
//!
//! Placement on FreeBSD is per thread, not per range: a page goes to the domain chosen by the
//! policy of the thread that faults it in (anonymous memory has no object policy of its own). So
//! [`Os::place`] can only accept [`Placement::Local`] (first touch, the default user policy), and
//! node-targeted memory is first touched inside [`Os::with_thread_placement`], which sets the
//! calling thread's policy to `prefer:<node>` and puts the old policy back afterwards. With
//! superpage reservations on (the amd64 default) the first fault in a 2 MiB-aligned run picks the
//! domain of the whole run (`vm_reserv_alloc_page` serves later faults from that reservation
//! whatever their policy), so placement is exact per 2 MiB, not per 4 KiB page: interleaving
//! must step by 2 MiB.
//!
//! Needs FreeBSD 13 or later (`sched_getcpu(3)`); the `domainset` calls exist since 12.0.

use core::ptr;

use super::bsd_sysctl::{self, freebsd as sysctl, SysctlByName};
use super::{posix, Os, Placement, ProcessPolicy, PurgeMode, TopologySink, OS_PAGE};

/// The FreeBSD implementation of [`Os`].
pub(crate) struct Sys;

/// A userland `domainset_t` (`<sys/_domainset.h>`: `DOMAINSET_SETSIZE` = 256 bits). The libc crate
/// declares it only for FreeBSD >= 13 ABIs, and it builds against the 12 ABI by default.
#[repr(C)]
struct DomainSet {
    bits: [u64; sysctl::DOMAINSET_BITS / 64],
}

extern "C" {
    /// `cpuset_getdomain(2)` (FreeBSD 12.0+).
    fn cpuset_getdomain(
        level: libc::cpulevel_t,
        which: libc::cpuwhich_t,
        id: libc::id_t,
        setsize: libc::size_t,
        mask: *mut DomainSet,
        policy: *mut libc::c_int,
    ) -> libc::c_int;
    /// `cpuset_setdomain(2)` (FreeBSD 12.0+).
    fn cpuset_setdomain(
        level: libc::cpulevel_t,
        which: libc::cpuwhich_t,
        id: libc::id_t,
        setsize: libc::size_t,
        mask: *const DomainSet,
        policy: libc::c_int,
    ) -> libc::c_int;
}

/// The calling thread's domain policy and mask (`CPU_LEVEL_WHICH`, `CPU_WHICH_TID`, id -1 = self).
fn thread_domain() -> Option<(DomainSet, libc::c_int)> {
    let mut mask = DomainSet { bits: [0; sysctl::DOMAINSET_BITS / 64] };
    let mut policy = 0;
    // SAFETY: out-pointers to a `domainset_t`-sized value and an int on our stack.
    let r = unsafe {
        cpuset_getdomain(
            libc::CPU_LEVEL_WHICH,
            libc::CPU_WHICH_TID,
            -1,
            core::mem::size_of::<DomainSet>(),
            &mut mask,
            &mut policy,
        )
    };
    if r == 0 { Some((mask, policy)) } else { None }
}

/// Sets the calling thread's domain policy (`CPU_LEVEL_WHICH`, `CPU_WHICH_TID`, id -1 = self).
fn set_thread_domain(mask: &DomainSet, policy: libc::c_int) -> bool {
    // SAFETY: `mask` points to a `domainset_t`-sized value that the kernel only reads.
    let r = unsafe {
        cpuset_setdomain(
            libc::CPU_LEVEL_WHICH,
            libc::CPU_WHICH_TID,
            -1,
            core::mem::size_of::<DomainSet>(),
            mask,
            policy,
        )
    };
    r == 0
}

/// Restores a thread's saved domain policy when dropped (also if `touch` unwinds).
struct RestoreDomain {
    mask: DomainSet,
    policy: libc::c_int,
}

impl Drop for RestoreDomain {
    fn drop(&mut self) {
        // Nothing useful to do if this fails: the thread keeps preferring the node it touched for.
        let _ = set_thread_domain(&self.mask, self.policy);
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
    // The kernel deletes the old entries before inserting the new one; if the insert failed
    // (resource shortage) the range may now be a hole. Retry once, then tell the two cases apart.
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
    const NAME: &'static str = "freebsd";
    const PLACEMENT_GRANULE: usize = 2 << 20;

    unsafe fn map_aligned(size: usize, align: usize) -> *mut u8 {
        if align <= OS_PAGE {
            // SAFETY: forwarded contract.
            return unsafe { posix::mmap_anon(ptr::null_mut(), size, 0) };
        }
        if let Some(flag) = sysctl::map_aligned_flag(align) {
            // SAFETY: plain anonymous mapping; MAP_ALIGNED only constrains where it goes.
            let p = unsafe { posix::mmap_anon(ptr::null_mut(), size, flag) };
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
            // MADV_DONTNEED keeps the data on FreeBSD; zeroing needs new pages.
            // SAFETY: forwarded contract.
            PurgeMode::DontNeed => unsafe { remap_zero(ptr, size) },
        }
    }

    unsafe fn protect_none(ptr: *mut u8, size: usize) -> bool {
        // SAFETY: forwarded contract.
        unsafe { posix::protect_none(ptr, size) }
    }

    unsafe fn set_huge_pages(_ptr: *mut u8, _size: usize, _enable: bool) {
        // Superpages are automatic (reservations, vm.pmap.pg_ps_enabled) for aligned runs; there
        // is no per-range switch.
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
        // SAFETY: MAP_EXCL makes MAP_FIXED fail instead of replacing anything already mapped.
        let p = unsafe { posix::mmap_anon(end, new_size - old_size, libc::MAP_FIXED | libc::MAP_EXCL) };
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
        // No per-range policy for anonymous memory; first touch is the default user policy.
        matches!(placement, Placement::Local)
    }

    fn with_thread_placement(node: usize, touch: &mut dyn FnMut()) -> bool {
        let Some(bits) = sysctl::domain_mask(node) else { return false };
        let Some((mask, policy)) = thread_domain() else { return false };
        // Stay inside a restriction set from outside (`cpuset -n first-touch:0`); for `prefer`
        // the kernel reports only the preferred domain, which then is the only node we touch for.
        if mask.bits[node / 64] & (1 << (node % 64)) == 0 {
            return false;
        }
        // The kernel rejects a node that is not a VM domain (EINVAL): nothing was changed then.
        if !set_thread_domain(&DomainSet { bits }, sysctl::DOMAINSET_POLICY_PREFER) {
            return false;
        }
        let _restore = RestoreDomain { mask, policy };
        touch();
        true
    }

    fn cpu_id_ptr() -> *const u32 {
        ptr::null() // no rseq
    }

    fn current_cpu() -> Option<usize> {
        // SAFETY: no preconditions (libc uses rdpid/rdtscp on amd64 where it can, else a syscall).
        let c = unsafe { libc::sched_getcpu() };
        if c >= 0 { Some(c as usize) } else { None }
    }

    fn read_topology(_root: Option<&[u8]>, sink: &mut dyn TopologySink) -> bool {
        sysctl::read_topology(&mut SysctlByName, sink)
    }

    fn process_policy() -> Option<ProcessPolicy> {
        // `cpuset -n` before exec sets every thread's policy; the main thread's is the process's.
        let (mask, policy) = thread_domain()?;
        let domains = bsd_sysctl::read_int(&mut SysctlByName, b"vm.ndomains\0").map_or(1, |n| n.max(1) as usize);
        sysctl::process_policy(policy, &mask.bits, domains)
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
        // SAFETY: `__error()` is the calling thread's errno location.
        unsafe { *libc::__error() = e };
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
