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
use core::sync::atomic::AtomicU32;

use super::{bsd, posix, Os, ProcessPolicy, PurgeMode, TopologySink};

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
    if r == 0 {
        Some((mask, policy))
    } else {
        None
    }
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

impl Os for Sys {
    const NAME: &'static str = "freebsd";
    const PLACEMENT_GRANULE: usize = 2 << 20;

    unsafe fn map_aligned(size: usize, align: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { bsd::map_aligned(size, align, sysctl::map_aligned_flag(align)) }
    }

    unsafe fn purge(ptr: *mut u8, size: usize, mode: PurgeMode) -> bool {
        // SAFETY: forwarded contract.
        unsafe { bsd::purge(ptr, size, mode) }
    }

    // Superpages are automatic (reservations, vm.pmap.pg_ps_enabled) for aligned runs; there is
    // no per-range switch, so `set_huge_pages` keeps the default no-op.

    unsafe fn resize_in_place(ptr: *mut u8, old_size: usize, new_size: usize) -> bool {
        // SAFETY: forwarded contract; MAP_EXCL makes MAP_FIXED fail instead of replacing.
        unsafe { bsd::resize_in_place(ptr, old_size, new_size, libc::MAP_FIXED | libc::MAP_EXCL) }
    }

    // No mremap (`move_mapping` default) and no per-range policy for anonymous memory (`place`
    // default: first touch, the default user policy, is all it accepts).

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

    fn thread_cpus(mask: &mut [u64; super::CPU_WORDS]) -> bool {
        bsd::thread_cpus(mask)
    }

    fn current_cpu() -> Option<usize> {
        // libc uses rdpid/rdtscp on amd64 where it can, else a syscall.
        bsd::current_cpu()
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

    fn kernel_thread_id() -> u32 {
        let mut id: libc::c_long = 0;
        // SAFETY: thr_self writes the calling thread's id into `id`.
        unsafe { thr_self(&mut id) };
        (id as u32) & ((1 << 30) - 1)
    }

    fn futex_wait(word: &AtomicU32, expected: u32, timeout_ms: Option<u64>) {
        let ts = timeout_ms.map(posix::timespec_ms);
        let (size, tsp) = match &ts {
            Some(t) => (core::mem::size_of::<libc::timespec>(), t as *const libc::timespec as *mut libc::c_void),
            None => (0, ptr::null_mut()),
        };
        // SAFETY: UMTX_OP_WAIT_UINT_PRIVATE sleeps while the word equals `expected`.
        unsafe {
            _umtx_op(
                word.as_ptr().cast(),
                UMTX_OP_WAIT_UINT_PRIVATE,
                expected as libc::c_ulong,
                size as *mut libc::c_void,
                tsp,
            )
        };
    }

    fn futex_wake(word: &AtomicU32, n: u32) {
        // SAFETY: UMTX_OP_WAKE_PRIVATE wakes sleepers on our word.
        unsafe {
            _umtx_op(word.as_ptr().cast(), UMTX_OP_WAKE_PRIVATE, n as libc::c_ulong, ptr::null_mut(), ptr::null_mut())
        };
    }

    fn set_errno(e: i32) {
        posix::set_errno(e)
    }
}

/// `_umtx_op(2)` operations (`<sys/umtx.h>`).
const UMTX_OP_WAIT_UINT_PRIVATE: libc::c_int = 15;
const UMTX_OP_WAKE_PRIVATE: libc::c_int = 16;

extern "C" {
    fn _umtx_op(
        obj: *mut libc::c_void,
        op: libc::c_int,
        val: libc::c_ulong,
        uaddr: *mut libc::c_void,
        uaddr2: *mut libc::c_void,
    ) -> libc::c_int;
    fn thr_self(id: *mut libc::c_long) -> libc::c_int;
}
