//! Linux plumbing for the guest: topology from sysfs, pinning, `move_pages`, RSS, THP mode.

use std::collections::BTreeMap;
use std::fs;
use std::io;

/// Page size used to enumerate an object's pages (x86-64 base pages).
pub const PAGE: usize = 4096;

/// The NUMA topology as the guest kernel reports it.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Online node id -> its CPUs (empty for memory-only nodes).
    pub node_cpus: BTreeMap<usize, Vec<usize>>,
    /// Online node id -> MemTotal in KiB.
    pub node_mem_kib: BTreeMap<usize, u64>,
    /// Nodes that have CPUs, ascending.
    pub cpu_nodes: Vec<usize>,
    /// Nodes with memory and no CPUs.
    pub memory_only: Vec<usize>,
    /// `/sys/devices/system/node/possible`.
    pub possible: String,
    /// `/sys/devices/system/node/online`.
    pub online: String,
}

/// Parses a kernel cpulist/nodelist such as `0-3,8,10-11`.
pub fn parse_list(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(a) = part.parse() {
                    out.push(a);
                }
            }
        }
    }
    out
}

fn read(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

impl Topology {
    /// Reads `/sys/devices/system/node`.
    pub fn discover() -> Topology {
        let online = read("/sys/devices/system/node/online").trim().to_string();
        let possible = read("/sys/devices/system/node/possible").trim().to_string();
        let mut node_cpus = BTreeMap::new();
        let mut node_mem_kib = BTreeMap::new();
        let mut ids = parse_list(&online);
        if ids.is_empty() {
            ids.push(0);
        }
        for n in ids {
            let cpus = parse_list(&read(&format!("/sys/devices/system/node/node{n}/cpulist")));
            let mem = read(&format!("/sys/devices/system/node/node{n}/meminfo"))
                .lines()
                .find(|l| l.contains("MemTotal:"))
                .and_then(|l| l.split_whitespace().rev().nth(1).and_then(|v| v.parse().ok()))
                .unwrap_or(0);
            node_cpus.insert(n, cpus);
            node_mem_kib.insert(n, mem);
        }
        let cpu_nodes = node_cpus.iter().filter(|(_, c)| !c.is_empty()).map(|(n, _)| *n).collect();
        let memory_only =
            node_cpus.iter().filter(|(n, c)| c.is_empty() && node_mem_kib[*n] > 0).map(|(n, _)| *n).collect();
        Topology { node_cpus, node_mem_kib, cpu_nodes, memory_only, possible, online }
    }

    /// The CPUs of `node`.
    pub fn cpus(&self, node: usize) -> &[usize] {
        self.node_cpus.get(&node).map(Vec::as_slice).unwrap_or(&[])
    }

    /// One-line description for the `INFO` line.
    pub fn describe(&self) -> String {
        let nodes: Vec<String> = self
            .node_cpus
            .iter()
            .map(|(n, c)| {
                let cpus = if c.is_empty() {
                    "none".to_string()
                } else {
                    c.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("+")
                };
                format!("{n}:cpus={cpus}:mem={}M", self.node_mem_kib[n] / 1024)
            })
            .collect();
        format!(
            "online={} possible={} cpu_nodes={} memory_only={} nodes={}",
            self.online,
            self.possible,
            join(&self.cpu_nodes),
            if self.memory_only.is_empty() { "none".to_string() } else { join(&self.memory_only) },
            nodes.join(",")
        )
    }
}

/// `node:MiB,...`: each online node's MemFree now (from its sysfs meminfo).
pub fn node_free() -> String {
    let online = parse_list(&read("/sys/devices/system/node/online"));
    online
        .iter()
        .map(|n| {
            let kib: u64 = read(&format!("/sys/devices/system/node/node{n}/meminfo"))
                .lines()
                .find(|l| l.contains("MemFree:"))
                .and_then(|l| l.split_whitespace().rev().nth(1).and_then(|v| v.parse().ok()))
                .unwrap_or(0);
            format!("{n}:{}M", kib / 1024)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `a,b,c`.
pub fn join(v: &[usize]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

/// Restricts the calling thread to `cpus` and waits until it runs on one of them.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    let set = cpu_set(cpus);
    // SAFETY: pid 0 = the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // The kernel migrates the caller before sched_setaffinity returns; double-check.
    for _ in 0..10_000 {
        if cpus.contains(&current_cpu()) {
            return Ok(());
        }
        // SAFETY: no preconditions.
        unsafe { libc::sched_yield() };
    }
    Err(io::Error::other("thread did not move to its new CPUs"))
}

/// The CPU the calling thread runs on.
pub fn current_cpu() -> usize {
    // SAFETY: no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    c.max(0) as usize
}

/// The node of the CPU the calling thread runs on (`getcpu(2)`).
pub fn current_node() -> usize {
    let mut cpu: libc::c_uint = 0;
    let mut node: libc::c_uint = 0;
    // SAFETY: both out-pointers are valid; the third argument is unused by the kernel.
    unsafe { libc::syscall(libc::SYS_getcpu, &mut cpu, &mut node, std::ptr::null_mut::<u8>()) };
    node as usize
}

/// Where pages are: the count of pages per node, and of pages not present (never touched,
/// or an error).
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// Pages counted.
    pub pages: u64,
    /// Node -> pages on it.
    pub by_node: BTreeMap<usize, u64>,
    /// Pages the kernel reported as not present or failing (`-ENOENT`, `-EFAULT`, ...).
    pub absent: u64,
}

impl Placement {
    /// Adds `other`.
    pub fn merge(&mut self, other: &Placement) {
        self.pages += other.pages;
        self.absent += other.absent;
        for (n, c) in &other.by_node {
            *self.by_node.entry(*n).or_default() += c;
        }
    }

    /// Pages on `node`.
    pub fn on(&self, node: usize) -> u64 {
        self.by_node.get(&node).copied().unwrap_or(0)
    }

    /// `n:count,...` for the report.
    pub fn describe(&self) -> String {
        if self.by_node.is_empty() {
            return "-".to_string();
        }
        self.by_node.iter().map(|(n, c)| format!("{n}:{c}")).collect::<Vec<_>>().join(",")
    }
}

/// Asks the kernel which node each page in `pages` (page-aligned addresses) is on, with
/// `move_pages(2)` in query mode (pid 0, nodes = NULL).
pub fn query_pages(pages: &[usize]) -> io::Result<Placement> {
    let mut p = Placement::default();
    for s in query_nodes(pages)? {
        p.pages += 1;
        if s >= 0 {
            *p.by_node.entry(s as usize).or_default() += 1;
        } else {
            p.absent += 1;
        }
    }
    Ok(p)
}

/// The `move_pages(2)` status of each page in `pages`, in order: its node, or a negative errno
/// (`-ENOENT`: not present).
pub fn query_nodes(pages: &[usize]) -> io::Result<Vec<i32>> {
    let mut out = Vec::with_capacity(pages.len());
    const CHUNK: usize = 16 * 1024;
    let mut status = vec![0i32; CHUNK.min(pages.len())];
    for chunk in pages.chunks(CHUNK) {
        let ptrs: Vec<*mut libc::c_void> = chunk.iter().map(|&a| a as *mut libc::c_void).collect();
        // SAFETY: `ptrs` and `status` hold `chunk.len()` elements; nodes = NULL asks for the
        // status only and moves nothing.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_pages,
                0 as libc::c_long,
                chunk.len() as libc::c_ulong,
                ptrs.as_ptr(),
                std::ptr::null::<libc::c_int>(),
                status.as_mut_ptr(),
                0 as libc::c_int,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        out.extend_from_slice(&status[..chunk.len()]);
    }
    Ok(out)
}

/// A `cpu_set_t` holding `cpus`.
pub fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` is below CPU_SETSIZE for any CPU the kernel reports here.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// The calling thread's affinity mask (`sched_getaffinity`), as ascending CPU ids.
pub fn affinity() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 = the calling thread; `set` is a writable cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `set` is initialised; CPU_ISSET only reads it.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// `MPOL_PREFERRED`, `MPOL_BIND`, `MPOL_INTERLEAVE` (`<linux/mempolicy.h>`).
pub const MPOL_PREFERRED: i32 = 1;
/// See [`MPOL_PREFERRED`].
pub const MPOL_BIND: i32 = 2;
/// See [`MPOL_PREFERRED`].
pub const MPOL_INTERLEAVE: i32 = 3;

/// A node mask for `set_mempolicy` (nodes below 128; `maxnode` = 129).
pub fn node_mask(nodes: &[usize]) -> [libc::c_ulong; 2] {
    let mut m = [0 as libc::c_ulong; 2];
    for &n in nodes.iter().filter(|&&n| n < 128) {
        m[n / 64] |= 1 << (n % 64);
    }
    m
}

/// `set_mempolicy(mode, mask)` for the calling thread (inherited by children and kept across
/// `execve`, as `numactl` uses it). Makes no allocation: usable between fork and exec.
pub fn set_mempolicy(mode: i32, mask: &[libc::c_ulong; 2]) -> io::Result<()> {
    // SAFETY: the mask holds 128 bits, and maxnode = 129 tells the kernel to read 128 of them.
    let rc =
        unsafe { libc::syscall(libc::SYS_set_mempolicy, mode as libc::c_long, mask.as_ptr(), 129 as libc::c_ulong) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `get_mempolicy` of the calling thread: (mode, nodes of the mask).
pub fn get_mempolicy() -> io::Result<(i32, Vec<usize>)> {
    let mut mode: libc::c_int = 0;
    let mut mask = [0 as libc::c_ulong; 16];
    // SAFETY: out-pointers are valid; the mask holds 1024 bits and maxnode = 1025; addr = NULL and
    // flags = 0 ask for the thread's policy.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode as *mut libc::c_int,
            mask.as_mut_ptr(),
            1025 as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let nodes = (0..1024).filter(|&n| mask[n / 64] & (1 << (n % 64)) != 0).collect();
    Ok((mode, nodes))
}

/// `/sys/devices/system/node/node<n>/distance`: the distances from `n` to each online node, in
/// the order of the online list.
#[cfg_attr(feature = "system", allow(dead_code))] // pattern 6 only (not in the glibc build)
pub fn node_distances(n: usize) -> Vec<u32> {
    read(&format!("/sys/devices/system/node/node{n}/distance"))
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// Appends the pages `[addr, addr + len)` spans (for small objects: the page holding it).
pub fn pages_of(addr: usize, len: usize, out: &mut Vec<usize>) {
    let first = addr & !(PAGE - 1);
    let last = (addr + len.max(1) - 1) & !(PAGE - 1);
    let mut p = first;
    while p <= last {
        out.push(p);
        p += PAGE;
    }
}

/// Resident set size in bytes (`/proc/self/statm`).
pub fn rss_bytes() -> usize {
    read("/proc/self/statm").split_whitespace().nth(1).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0) * PAGE
}

/// The current THP mode (`always`, `madvise`, `never`), or `unavailable`.
pub fn thp_mode() -> String {
    let s = read("/sys/kernel/mm/transparent_hugepage/enabled");
    match (s.find('['), s.find(']')) {
        (Some(a), Some(b)) if b > a => s[a + 1..b].to_string(),
        _ => "unavailable".to_string(),
    }
}

/// Sets the THP mode (needs root, as in the guest).
pub fn set_thp_mode(mode: &str) -> io::Result<()> {
    fs::write("/sys/kernel/mm/transparent_hugepage/enabled", mode)
}

/// `/proc/sys/kernel/numa_balancing`, or `-`.
pub fn numa_balancing() -> String {
    let s = read("/proc/sys/kernel/numa_balancing");
    if s.is_empty() {
        "-".to_string()
    } else {
        s.trim().to_string()
    }
}

/// Minor page faults of the calling thread so far (`getrusage(RUSAGE_THREAD).ru_minflt`).
pub fn thread_minflt() -> u64 {
    // SAFETY: rusage is plain data; zeroed is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a writable rusage; RUSAGE_THREAD asks for the calling thread only.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if rc != 0 {
        return 0;
    }
    ru.ru_minflt as u64
}

/// The file that provides `malloc` to this process (`dladdr`): the program itself when it is
/// linked statically, `libc.so.6`, or a library preloaded in front of it (`libdomalloc.so`).
pub fn malloc_from() -> String {
    // SAFETY: `Dl_info` is plain data (pointers and integers): all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address and fills `info`; `malloc` is a function of this process.
    let ok = unsafe { libc::dladdr(libc::malloc as *const libc::c_void, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return "-".to_string();
    }
    // SAFETY: a NUL-terminated path owned by the dynamic loader.
    unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }.to_string_lossy().replace(' ', "_")
}
