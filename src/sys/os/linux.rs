//! Linux: `mmap`/`madvise`/`mremap`, `mbind` for placement and `move_pages` to ask where pages
//! are, futexes, rseq for the current CPU, sysfs for the topology (`/sys/devices/system/node`,
//! read with raw `open`/`read` into stack buffers), and glibc's stdio list lock for fork.

use core::ffi::c_void;
use core::fmt::Write;
use core::ptr;
use core::sync::atomic::AtomicU32;

use super::{posix, Os, Placement, PurgeMode, TopologySink, PAGE_ABSENT};
use crate::sys::util::{for_each_in_list, parse_u64, BufWriter};

/// The Linux implementation of [`Os`].
pub(crate) struct Sys;

const MPOL_PREFERRED: libc::c_long = 1;
const MPOL_BIND: libc::c_long = 2;
const MPOL_INTERLEAVE: libc::c_long = 3;
/// Linux 5.15 and later.
const MPOL_PREFERRED_MANY: libc::c_long = 5;

/// Whether the kernel refused `MPOL_PREFERRED_MANY` once (then the first node of the set is
/// preferred, as `MPOL_PREFERRED`).
static NO_PREFERRED_MANY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// `mbind` of `[ptr, ptr + size)`; whether it worked.
///
/// # Safety
/// The range is the caller's own mapping.
unsafe fn mbind(ptr: *mut u8, size: usize, mode: libc::c_long, mask: &super::NodeMask) -> bool {
    // SAFETY: mbind on the caller's range with a valid 1024-bit mask (maxnode = bits + 1).
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            ptr as usize,
            size,
            mode,
            mask.words().as_ptr(),
            (super::NodeMask::CAPACITY + 1) as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    r == 0
}

impl Os for Sys {
    const NAME: &'static str = "linux";

    unsafe fn purge(ptr: *mut u8, size: usize, mode: PurgeMode) -> bool {
        match mode {
            // SAFETY: forwarded contract.
            PurgeMode::DontNeed => unsafe { posix::madvise(ptr, size, libc::MADV_DONTNEED) },
            PurgeMode::Free => {
                // SAFETY: forwarded contract. MADV_FREE needs Linux 4.5; fall back to DONTNEED.
                if unsafe { posix::madvise(ptr, size, libc::MADV_FREE) } {
                    false
                } else {
                    // SAFETY: as above.
                    unsafe { posix::madvise(ptr, size, libc::MADV_DONTNEED) }
                }
            }
        }
    }

    unsafe fn set_huge_pages(ptr: *mut u8, size: usize, enable: bool) {
        let advice = if enable { libc::MADV_HUGEPAGE } else { libc::MADV_NOHUGEPAGE };
        // SAFETY: forwarded contract; failure only means no THP.
        unsafe { posix::madvise(ptr, size, advice) };
    }

    unsafe fn resize_in_place(ptr: *mut u8, old_size: usize, new_size: usize) -> bool {
        // SAFETY: forwarded contract; without MREMAP_MAYMOVE the mapping stays put or fails.
        let r = unsafe { libc::mremap(ptr.cast(), old_size, new_size, 0) };
        r != libc::MAP_FAILED
    }

    unsafe fn move_mapping(ptr: *mut u8, old_size: usize, new_size: usize, align: usize) -> *mut u8 {
        // Reserve an aligned destination, then let mremap move the pages over it (no copy).
        // SAFETY: fresh mapping.
        let dst = unsafe { posix::map_aligned_trim(new_size, align, 0) };
        if dst.is_null() {
            return dst;
        }
        // SAFETY: [ptr, old_size) is ours (caller) and [dst, new_size) we just mapped.
        let r = unsafe { libc::mremap(ptr.cast(), old_size, new_size, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, dst) };
        if r == libc::MAP_FAILED {
            // SAFETY: dst is still ours.
            unsafe { posix::unmap(dst, new_size) };
            return ptr::null_mut();
        }
        r.cast()
    }

    unsafe fn place(ptr: *mut u8, size: usize, placement: Placement<'_>) -> bool {
        let mut single = super::NodeMask::empty();
        let (mode, mask) = match placement {
            Placement::Local => return true,
            Placement::Bind(m) => (MPOL_BIND, m),
            Placement::Interleave(m) => (MPOL_INTERLEAVE, m),
            Placement::Preferred(n) => {
                single.insert(n);
                (MPOL_PREFERRED, &single)
            }
            Placement::PreferredMany(m) => {
                use core::sync::atomic::Ordering::Relaxed;
                // SAFETY: forwarded contract.
                if !NO_PREFERRED_MANY.load(Relaxed) && unsafe { mbind(ptr, size, MPOL_PREFERRED_MANY, m) } {
                    return true;
                }
                if posix::errno() == libc::EINVAL {
                    NO_PREFERRED_MANY.store(true, Relaxed);
                }
                single.insert(m.iter().next().unwrap_or(0));
                (MPOL_PREFERRED, &single)
            }
        };
        // SAFETY: forwarded contract.
        unsafe { mbind(ptr, size, mode, mask) }
    }

    fn page_nodes(addrs: &[usize], nodes: &mut [i32]) -> bool {
        let n = addrs.len().min(nodes.len());
        if n == 0 {
            return true;
        }
        // SAFETY: move_pages(pid 0 = self, count, pages, nodes = NULL: only report, status out).
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_pages,
                0 as libc::c_long,
                n as libc::c_ulong,
                addrs.as_ptr(),
                ptr::null::<i32>(),
                nodes.as_mut_ptr(),
                0 as libc::c_long,
            )
        };
        if r < 0 {
            return false;
        }
        for s in &mut nodes[..n] {
            if *s < 0 {
                *s = PAGE_ABSENT; // -ENOENT: not present; other errors: unknown, as absent
            }
        }
        true
    }

    fn cpu_id_ptr() -> *const u32 {
        rseq_cpu_id_ptr()
    }

    fn thread_cpus(mask: &mut [u64; super::CPU_WORDS]) -> bool {
        // SAFETY: all-zero bytes are an empty `cpu_set_t`.
        let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: the calling thread (0); `set` is a `cpu_set_t` of the size passed.
        if unsafe { libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
            return false;
        }
        *mask = [0; super::CPU_WORDS];
        for cpu in 0..(64 * super::CPU_WORDS).min(libc::CPU_SETSIZE as usize) {
            // SAFETY: `cpu` is below `CPU_SETSIZE`.
            if unsafe { libc::CPU_ISSET(cpu, &set) } {
                mask[cpu / 64] |= 1 << (cpu % 64);
            }
        }
        true
    }

    fn current_cpu() -> Option<usize> {
        // SAFETY: no preconditions (vDSO on x86_64).
        let c = unsafe { libc::sched_getcpu() };
        if c >= 0 {
            Some(c as usize)
        } else {
            None
        }
    }

    fn read_topology(root: Option<&[u8]>, sink: &mut dyn TopologySink) -> bool {
        read_sysfs_topology(root.unwrap_or(b"/sys"), sink)
    }

    fn node_free_memory(node: usize) -> Option<u64> {
        let mut buf = [0u8; 4096];
        let mut pbuf = [0u8; 512];
        let p = path(&mut pbuf, b"/sys", format_args!("/devices/system/node/node{}/meminfo", node));
        posix::read_file(p, &mut buf).and_then(|s| parse_meminfo_field(s, b"MemFree:"))
    }

    fn process_policy() -> Option<super::ProcessPolicy> {
        let mut mode: libc::c_int = 0;
        let mut mask = super::NodeMask::empty();
        // SAFETY: valid out-pointers; a 1024-bit mask (maxnode = bits + 1).
        let r = unsafe {
            libc::syscall(
                libc::SYS_get_mempolicy,
                &mut mode as *mut libc::c_int,
                mask.words_mut().as_mut_ptr(),
                (super::NodeMask::CAPACITY + 1) as libc::c_ulong,
                0usize,
                0 as libc::c_ulong,
            )
        };
        if r != 0 {
            return None;
        }
        // Strip MPOL_F_STATIC_NODES / MPOL_F_RELATIVE_NODES / MPOL_F_NUMA_BALANCING.
        match (mode as libc::c_long) & 0xff {
            MPOL_BIND => Some(super::ProcessPolicy::Bind(mask)),
            MPOL_INTERLEAVE => Some(super::ProcessPolicy::Interleave(mask)),
            MPOL_PREFERRED => mask.iter().next().map(super::ProcessPolicy::Preferred),
            MPOL_PREFERRED_MANY if !mask.is_empty() => Some(super::ProcessPolicy::PreferredMany(mask)),
            _ => None,
        }
    }

    fn kernel_thread_id() -> u32 {
        // SAFETY: no preconditions.
        (unsafe { libc::syscall(libc::SYS_gettid) }) as u32
    }

    fn futex_wait(word: &AtomicU32, expected: u32, timeout_ms: Option<u64>) {
        let ts = timeout_ms.map(posix::timespec_ms);
        let tsp = ts.as_ref().map_or(ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: a futex word of ours; FUTEX_WAIT only reads it and sleeps.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, expected, tsp)
        };
    }

    fn futex_wake(word: &AtomicU32, n: u32) {
        // SAFETY: a futex word of ours.
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, n) };
    }

    fn is_single_threaded() -> bool {
        glibc::single_threaded()
    }

    fn stdio_lock() -> bool {
        glibc::stdio_lock()
    }

    fn stdio_unlock() {
        glibc::stdio_unlock()
    }

    fn random_u64() -> u64 {
        let mut r = 0u64;
        // SAFETY: getrandom into an 8-byte local; GRND_NONBLOCK never blocks at early boot.
        let n = unsafe {
            libc::syscall(libc::SYS_getrandom, &mut r as *mut u64 as *mut c_void, 8usize, libc::GRND_NONBLOCK)
        };
        if n == 8 {
            posix::mix_entropy(r)
        } else {
            posix::random_u64()
        }
    }

    fn set_errno(e: i32) {
        posix::set_errno(e)
    }

    fn readable_mapping_of(addr: usize) -> Option<(usize, usize)> {
        let mut found = None;
        match procmap_query(addr, PROCMAP_QUERY_VMA_READABLE, &mut |m| found = Some((m.start, m.end))) {
            true => found,
            false => posix::readable_mapping_of(addr),
        }
    }

    fn for_each_code_mapping(f: &mut dyn FnMut(super::Mapping<'_>)) -> bool {
        let flags = PROCMAP_QUERY_VMA_READABLE | PROCMAP_QUERY_VMA_EXECUTABLE | PROCMAP_QUERY_COVERING_OR_NEXT_VMA;
        procmap_query(0, flags, f) || super::code_mappings_of_all::<Self>(f)
    }
}

/// `struct procmap_query` of `<linux/fs.h>` (Linux 6.11).
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: libc::c_ulong =
    (3 << 30) | ((core::mem::size_of::<ProcmapQuery>() as libc::c_ulong) << 16) | ((b'f' as libc::c_ulong) << 8) | 17;
/// `PROCMAP_QUERY_VMA_READABLE`: only a readable mapping answers.
const PROCMAP_QUERY_VMA_READABLE: u64 = 0x01;
/// `PROCMAP_QUERY_VMA_EXECUTABLE`: only an executable one.
const PROCMAP_QUERY_VMA_EXECUTABLE: u64 = 0x04;
/// `PROCMAP_QUERY_COVERING_OR_NEXT_VMA`: the mapping holding the address, else the next one.
const PROCMAP_QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;
/// The kernel refused `PROCMAP_QUERY` once (older than 6.11): not asked again.
static NO_PROCMAP_QUERY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Asks the kernel for the mapping holding `addr` that `flags` accept (`PROCMAP_QUERY`) and
/// calls `f` with it; with `PROCMAP_QUERY_COVERING_OR_NEXT_VMA` in `flags`, for every such
/// mapping from `addr` on. False where the kernel cannot be asked (then nothing was called:
/// read `/proc/self/maps` instead). One open and close, one ioctl per mapping; no allocation,
/// async-signal-safe, and `errno` is left as it was (the caller may be a `malloc` that
/// succeeds).
fn procmap_query(addr: usize, flags: u64, f: &mut dyn FnMut(super::Mapping<'_>)) -> bool {
    use core::sync::atomic::Ordering;
    if NO_PROCMAP_QUERY.load(Ordering::Relaxed) {
        return false;
    }
    let saved = posix::errno();
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(b"/proc/self/maps\0".as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        posix::set_errno(saved);
        return false;
    }
    let mut name = [0u8; 512];
    let (mut at, mut asked) = (addr as u64, false);
    // (A bound on the mappings listed, as the kernel's own: `vm.max_map_count`'s default.)
    for _ in 0..65_530 {
        let mut q = ProcmapQuery {
            size: core::mem::size_of::<ProcmapQuery>() as u64,
            query_flags: flags,
            query_addr: at,
            vma_name_size: name.len() as u32,
            vma_name_addr: name.as_mut_ptr() as u64,
            ..ProcmapQuery::default()
        };
        // SAFETY: the ioctl reads and writes `q`, and writes at most `vma_name_size` bytes of
        // `name`.
        let r = unsafe { libc::ioctl(fd, PROCMAP_QUERY as _, &mut q as *mut ProcmapQuery) };
        if r != 0 {
            if posix::errno() != libc::ENOENT {
                // Not this kernel's (ENOTTY, EINVAL): the caller reads the file. (A mapping
                // listed already is not listed twice: this happens at the first question.)
                if !asked {
                    NO_PROCMAP_QUERY.store(true, Ordering::Relaxed);
                    posix::close_fd(fd);
                    posix::set_errno(saved);
                    return false;
                }
            }
            break; // ENOENT: no (further) mapping
        }
        asked = true;
        let len = (q.vma_name_size as usize).min(name.len()).saturating_sub(1); // less its NUL
        f(super::Mapping {
            start: q.vma_start as usize,
            end: q.vma_end as usize,
            readable: q.vma_flags & PROCMAP_QUERY_VMA_READABLE != 0,
            executable: q.vma_flags & PROCMAP_QUERY_VMA_EXECUTABLE != 0,
            offset: q.vma_offset,
            path: &name[..len],
        });
        if flags & PROCMAP_QUERY_COVERING_OR_NEXT_VMA == 0 || q.vma_end <= at {
            break;
        }
        at = q.vma_end;
    }
    posix::close_fd(fd);
    posix::set_errno(saved);
    true
}

/// glibc's hooks: its single-thread flag and its stdio list lock (exported since 2.32 and 2.2.5).
#[cfg(target_env = "gnu")]
mod glibc {
    extern "C" {
        static __libc_single_threaded: libc::c_char;
        fn _IO_list_lock();
        fn _IO_list_unlock();
    }

    pub(super) fn single_threaded() -> bool {
        // SAFETY: a byte glibc keeps; a racy read only errs towards "multi-threaded" later.
        unsafe { core::ptr::read_volatile(&__libc_single_threaded) != 0 }
    }

    pub(super) fn stdio_lock() -> bool {
        // SAFETY: glibc's recursive stdio list lock, taken in fork's order (before malloc's).
        unsafe { _IO_list_lock() };
        true
    }

    pub(super) fn stdio_unlock() {
        // SAFETY: releases our own hold of the recursive lock taken by `stdio_lock`.
        unsafe { _IO_list_unlock() };
    }
}

#[cfg(not(target_env = "gnu"))]
mod glibc {
    pub(super) fn single_threaded() -> bool {
        false
    }
    pub(super) fn stdio_lock() -> bool {
        false
    }
    pub(super) fn stdio_unlock() {}
}

#[cfg(all(target_env = "gnu", any(target_arch = "x86_64", target_arch = "aarch64")))]
fn rseq_cpu_id_ptr() -> *const u32 {
    extern "C" {
        // glibc >= 2.35: offset of the registered `struct rseq` from the thread pointer, and its
        // size (0 when glibc did not register rseq, e.g. GLIBC_TUNABLES=glibc.pthread.rseq=0).
        static __rseq_offset: isize;
        static __rseq_size: u32;
    }
    // SAFETY: both are constant after startup.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return ptr::null();
    }
    let tp: usize;
    // SAFETY: reading the thread pointer has no side effects.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    // SAFETY: reading the thread pointer has no side effects.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags))
    };
    // `struct rseq { u32 cpu_id_start; u32 cpu_id; ... }`: cpu_id is at byte 4.
    (tp as isize + off + 4) as *const u32
}

#[cfg(not(all(target_env = "gnu", any(target_arch = "x86_64", target_arch = "aarch64"))))]
fn rseq_cpu_id_ptr() -> *const u32 {
    ptr::null()
}

/// Formats `root` + suffix into `out` (NUL-terminated), returning the path bytes with the NUL.
fn path<'a>(out: &'a mut [u8; 512], root: &[u8], args: core::fmt::Arguments<'_>) -> &'a [u8] {
    let n = root.len().min(400);
    out[..n].copy_from_slice(&root[..n]);
    let mut w = BufWriter::new(&mut out[n..511]);
    let _ = w.write_fmt(args);
    let m = w.as_bytes().len();
    out[n + m] = 0;
    &out[..n + m + 1]
}

fn max_in_list(s: &[u8]) -> Option<usize> {
    let mut max = None;
    if !for_each_in_list(s, |i| max = Some(max.map_or(i, |m: usize| m.max(i)))) {
        return None;
    }
    max
}

/// Parses a Linux sysfs tree rooted at `root` (normally `/sys`).
pub(crate) fn read_sysfs_topology(root: &[u8], sink: &mut dyn TopologySink) -> bool {
    let mut buf = [0u8; 8192];
    let mut pbuf = [0u8; 512];
    let read = posix::read_file;

    let cpu_ids = read(path(&mut pbuf, root, format_args!("/devices/system/cpu/possible")), &mut buf)
        .and_then(max_in_list)
        .map(|m| m + 1);
    let node_possible = read(path(&mut pbuf, root, format_args!("/devices/system/node/possible")), &mut buf)
        .and_then(max_in_list)
        .map(|m| m + 1);

    let Some(cpu_ids) = cpu_ids else { return false };
    let Some(node_ids) = node_possible else {
        // No NUMA support in this kernel: one node holding every CPU.
        if !sink.possible(cpu_ids, 1) {
            return false;
        }
        for c in 0..cpu_ids {
            sink.cpu(c, 0);
        }
        sink.node_memory(0, 0);
        sink.distance(0, 0, 10);
        return true;
    };
    if !sink.possible(cpu_ids, node_ids) {
        return false;
    }

    // Online nodes, in id order: `distance` files list one entry per online node, in this order.
    let mut online = [0u16; 1024];
    let mut n_online = 0;
    if let Some(s) = read(path(&mut pbuf, root, format_args!("/devices/system/node/online")), &mut buf) {
        for_each_in_list(s, |i| {
            if n_online < online.len() && i < node_ids {
                online[n_online] = i as u16;
                n_online += 1;
            }
        });
    }
    let mut has_memory = crate::sys::os::NodeMask::empty();
    let mem_list_known = match read(path(&mut pbuf, root, format_args!("/devices/system/node/has_memory")), &mut buf) {
        Some(s) => {
            for_each_in_list(s, |i| has_memory.insert(i));
            true
        }
        None => false,
    };

    for &node in &online[..n_online] {
        let node = node as usize;
        if let Some(s) =
            read(path(&mut pbuf, root, format_args!("/devices/system/node/node{}/cpulist", node)), &mut buf)
        {
            for_each_in_list(s, |c| {
                if c < cpu_ids {
                    sink.cpu(c, node)
                }
            });
        }
        let mut mem = 0u64;
        if let Some(s) =
            read(path(&mut pbuf, root, format_args!("/devices/system/node/node{}/meminfo", node)), &mut buf)
        {
            mem = parse_meminfo_total(s).unwrap_or(0);
        }
        if mem_list_known && !has_memory.contains(node) {
            mem = 0;
        } else if mem == 0 && (!mem_list_known || has_memory.contains(node)) {
            mem = 1; // has memory, size unknown
        }
        sink.node_memory(node, mem);
        if let Some(s) =
            read(path(&mut pbuf, root, format_args!("/devices/system/node/node{}/distance", node)), &mut buf)
        {
            for (i, d) in s.split(|c| c.is_ascii_whitespace()).filter(|t| !t.is_empty()).enumerate() {
                if i < n_online {
                    if let Some(d) = parse_u64(d) {
                        sink.distance(node, online[i] as usize, d as u32);
                    }
                }
            }
        }
    }
    read_hmat_access(root, &online[..n_online], sink);
    n_online > 0
}

/// HMAT performance (Linux 5.2+, `CONFIG_HMEM_REPORTING`): `nodeT/access0/initiators/` holds the
/// read/write bandwidth (MB/s) and latency (ns) of memory node T from its *best* initiators, and
/// one link `nodeI` per such initiator. The kernel gives no figures for the other initiators.
/// A link is found by reading through it (`nodeT/access0/initiators/nodeI/cpulist`): no
/// directory listing, no allocation.
fn read_hmat_access(root: &[u8], online: &[u16], sink: &mut dyn TopologySink) {
    let mut buf = [0u8; 256];
    let mut pbuf = [0u8; 512];
    let read = posix::read_file;
    let mut value = |node: usize, what: &str, buf: &mut [u8]| -> Option<u32> {
        let p = path(&mut pbuf, root, format_args!("/devices/system/node/node{}/access0/initiators/{}", node, what));
        read(p, buf).and_then(|s| parse_u64(crate::sys::util::trim(s))).map(|v| v.min(u32::MAX as u64) as u32)
    };
    for &t in online {
        let t = t as usize;
        let bw = value(t, "read_bandwidth", &mut buf);
        let lat = value(t, "read_latency", &mut buf);
        if bw.is_none() && lat.is_none() {
            continue;
        }
        for &i in online {
            let mut ipath = [0u8; 512];
            let p = path(
                &mut ipath,
                root,
                format_args!("/devices/system/node/node{}/access0/initiators/node{}/cpulist", t, i),
            );
            if read(p, &mut buf).is_some() {
                sink.access(t, i as usize, bw.unwrap_or(0), lat.unwrap_or(0));
            }
        }
    }
}

/// Finds `MemTotal: N kB` in a node's meminfo.
fn parse_meminfo_total(s: &[u8]) -> Option<u64> {
    parse_meminfo_field(s, b"MemTotal:")
}

/// A `kB` field of a node's `meminfo` (`Node 1 MemFree:   3 kB`), in bytes.
fn parse_meminfo_field(s: &[u8], field: &[u8]) -> Option<u64> {
    for line in s.split(|&c| c == b'\n') {
        if let Some(pos) = line.windows(field.len()).position(|w| w == field) {
            let rest = &line[pos + field.len()..];
            let digits: &[u8] = {
                let t = crate::sys::util::trim(rest);
                let end = t.iter().position(|c| !c.is_ascii_digit()).unwrap_or(t.len());
                &t[..end]
            };
            return parse_u64(digits).map(|kb| kb * 1024);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total() {
        let s = b"Node 1 MemTotal:       16314468 kB\nNode 1 MemFree: 3 kB\n";
        assert_eq!(parse_meminfo_total(s), Some(16314468 * 1024));
        assert_eq!(parse_meminfo_total(b"nothing"), None);
        assert_eq!(parse_meminfo_field(s, b"MemFree:"), Some(3 * 1024));
    }

    /// What `PROCMAP_QUERY` answers is what `/proc/self/maps` lists: the stack's mapping, and
    /// the executable mappings with their paths (where the kernel answers; else both are the
    /// file's).
    #[test]
    fn the_kernels_answers_match_the_maps_file() {
        let local = 0u8;
        let here = &local as *const u8 as usize;
        assert_eq!(Sys::readable_mapping_of(here), posix::readable_mapping_of(here));
        assert!(Sys::readable_mapping_of(here).is_some_and(|(s, e)| s <= here && here < e));
        assert_eq!(Sys::readable_mapping_of(8), None, "nothing is mapped at address 8");
        let mut asked: std::vec::Vec<(usize, usize, u64, std::vec::Vec<u8>)> = std::vec::Vec::new();
        assert!(Sys::for_each_code_mapping(&mut |m| asked.push((m.start, m.end, m.offset, m.path.to_vec()))));
        let mut read = std::vec::Vec::new();
        posix::for_each_mapping(&mut |m| {
            if m.readable && m.executable {
                read.push((m.start, m.end, m.offset, m.path.to_vec()));
            }
        });
        assert_eq!(asked, read);
        let code = Sys::readable_mapping_of as *const () as usize;
        assert!(asked.iter().any(|&(s, e, _, _)| s <= code && code < e), "this code's mapping is listed");
    }

    #[test]
    fn rseq_pointer_matches_sched_getcpu() {
        let p = Sys::cpu_id_ptr();
        if p.is_null() {
            return; // glibc did not register rseq here; the fallback path is tested elsewhere
        }
        // SAFETY: the pointer is into this thread's rseq area.
        let a = unsafe { p.read_volatile() } as usize;
        let b = Sys::current_cpu().unwrap();
        // SAFETY: as above.
        let c = unsafe { p.read_volatile() } as usize;
        assert!(a == b || b == c, "rseq cpu {a}/{c} vs sched_getcpu {b}");
    }

    #[test]
    fn page_nodes_reports_touched_and_absent_pages() {
        // SAFETY: a private mapping of ours.
        let p = unsafe { posix::mmap_anon(ptr::null_mut(), 2 * super::super::OS_PAGE, 0) };
        assert!(!p.is_null());
        // SAFETY: inside the mapping.
        unsafe { p.write_volatile(1) };
        let addrs = [p as usize, p as usize + super::super::OS_PAGE];
        let mut nodes = [7i32; 2];
        if Sys::page_nodes(&addrs, &mut nodes) {
            assert!(nodes[0] >= 0, "touched page: {nodes:?}");
            assert_eq!(nodes[1], PAGE_ABSENT, "untouched page: {nodes:?}");
        }
        // SAFETY: ours.
        unsafe { posix::unmap(p, 2 * super::super::OS_PAGE) };
    }

    #[test]
    fn futex_wait_returns_on_mismatch_and_timeout() {
        let w = AtomicU32::new(5);
        Sys::futex_wait(&w, 4, None); // value differs: returns at once
        Sys::futex_wait(&w, 5, Some(1)); // times out
        Sys::futex_wake(&w, 1);
        assert!(Sys::kernel_thread_id() > 0);
    }
}
