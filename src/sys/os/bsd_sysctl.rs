//! What the FreeBSD and DragonFly ports read from `sysctl(3)`, and the small decisions they make,
//! as pure functions over a [`SysctlSource`].
//!
//! The platform files only supply [`SysctlByName`] (a `sysctlbyname(3)` call into a caller's
//! buffer) and the system calls; everything that interprets values lives here, is compiled on
//! every OS, and is unit-tested on Linux with values in the exact format each kernel prints:
//!
//! - FreeBSD: `vm.ndomains`, `kern.smp.maxid`, `dev.cpu.N.%domain` (ints), `vm.phys_segs` (one
//!   block per physical segment with `start:`/`end:`/`domain:` lines) and `vm.phys_locality`
//!   (`"\n0: 10 21 \n1: 21 10 \n"`, the ACPI SLIT, `-1` when the firmware has none).
//! - DragonFly: `hw.ncpu`, `hw.cpu_topology_phys_ids` (an int: the number of packages) and
//!   `hw.cpu_topology.cpuN.physical_id` (an int per CPU). DragonFly has no memory-policy API; its
//!   page allocator colours pages by the faulting CPU's package, so a NUMA node is a package.
//!
//! Nothing here allocates: names are built in stack buffers and reports are parsed in place.

#![cfg_attr(not(any(target_os = "freebsd", target_os = "dragonfly")), allow(dead_code))]

use super::{NodeMask, ProcessPolicy, TopologySink};
use crate::sys::util::{parse_u64, trim};

/// Highest CPU id + 1 the readers handle (FreeBSD's amd64 `MAXCPU` since 14.0; DragonFly's is 256).
pub(crate) const MAX_CPUS: usize = 1024;

/// Distances reported when the firmware gives none (ACPI's defaults, as Linux uses without SLIT).
const LOCAL_DISTANCE: u32 = 10;
const REMOTE_DISTANCE: u32 = 20;

/// Where sysctl values come from: `sysctlbyname(3)` on the BSDs, a recorded table in tests.
pub(crate) trait SysctlSource {
    /// Copies the value of the NUL-terminated sysctl `name` into `buf` and returns the bytes
    /// written; `None` if it does not exist or does not fit (a truncated report is never used).
    fn read<'a>(&mut self, name: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]>;
}

/// The real source: `sysctlbyname(3)` (a system call, or a name-to-MIB lookup and one; no
/// allocation) into the caller's buffer.
#[cfg(any(target_os = "freebsd", target_os = "dragonfly"))]
pub(crate) struct SysctlByName;

#[cfg(any(target_os = "freebsd", target_os = "dragonfly"))]
impl SysctlSource for SysctlByName {
    fn read<'a>(&mut self, name: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]> {
        if name.last() != Some(&0) {
            return None;
        }
        let mut len = buf.len();
        // SAFETY: `name` is NUL-terminated; `buf` is writable for `len` bytes and the kernel
        // writes at most `len`; no new value is set (null, 0).
        let r = unsafe {
            libc::sysctlbyname(name.as_ptr().cast(), buf.as_mut_ptr().cast(), &mut len, core::ptr::null(), 0)
        };
        if r != 0 || len > buf.len() {
            return None;
        }
        Some(&buf[..len])
    }
}

/// Reads an integer sysctl (`int` or `long`, native endian).
pub(crate) fn read_int(src: &mut dyn SysctlSource, name: &[u8]) -> Option<i64> {
    let mut buf = [0u8; 8];
    let v = src.read(name, &mut buf)?;
    match *v {
        [a, b, c, d] => Some(i32::from_ne_bytes([a, b, c, d]) as i64),
        [a, b, c, d, e, f, g, h] => Some(i64::from_ne_bytes([a, b, c, d, e, f, g, h])),
        _ => None,
    }
}

/// Builds the NUL-terminated name `prefix` + decimal `n` + `suffix` (e.g. `dev.cpu.12.%domain`)
/// in `buf`. Returns `None` if it does not fit.
pub(crate) fn indexed_name<'a>(buf: &'a mut [u8; 64], prefix: &[u8], n: usize, suffix: &[u8]) -> Option<&'a [u8]> {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let digits = &digits[i..];
    let len = prefix.len() + digits.len() + suffix.len();
    if len + 1 > buf.len() {
        return None;
    }
    buf[..prefix.len()].copy_from_slice(prefix);
    buf[prefix.len()..prefix.len() + digits.len()].copy_from_slice(digits);
    buf[prefix.len() + digits.len()..len].copy_from_slice(suffix);
    buf[len] = 0;
    Some(&buf[..=len])
}

/// Reports 10 between a node and itself and 20 between distinct nodes, for nodes `is_node` keeps.
fn report_default_distances(sink: &mut dyn TopologySink, is_node: impl Fn(usize) -> bool) {
    let nodes = (0..NodeMask::CAPACITY).filter(|&n| is_node(n));
    for a in nodes.clone() {
        for b in nodes.clone() {
            sink.distance(a, b, if a == b { LOCAL_DISTANCE } else { REMOTE_DISTANCE });
        }
    }
}

/// FreeBSD: topology from `vm.ndomains` / `dev.cpu.N.%domain` / `vm.phys_segs` /
/// `vm.phys_locality`, `MAP_ALIGNED`, `domainset` masks and policies.
#[cfg_attr(not(target_os = "freebsd"), allow(dead_code))]
pub(crate) mod freebsd {
    use super::*;

    /// Bits in a userland `domainset_t` (`DOMAINSET_SETSIZE`, `<sys/_domainset.h>`): 4 words.
    pub(crate) const DOMAINSET_BITS: usize = 256;
    /// FreeBSD's `DOMAINSET_POLICY_*` (`<sys/domainset.h>`).
    pub(crate) const DOMAINSET_POLICY_ROUNDROBIN: i32 = 1;
    pub(crate) const DOMAINSET_POLICY_FIRSTTOUCH: i32 = 2;
    pub(crate) const DOMAINSET_POLICY_PREFER: i32 = 3;
    pub(crate) const DOMAINSET_POLICY_INTERLEAVE: i32 = 4;
    /// FreeBSD's `MAP_ALIGNMENT_SHIFT` (`<sys/mman.h>`): `MAP_ALIGNED(n)` is `n << 24`.
    const MAP_ALIGNMENT_SHIFT: i32 = 24;
    /// The page shift below which FreeBSD rejects `MAP_ALIGNED(n)` with `EINVAL`.
    const PAGE_SHIFT: u32 = 12;

    /// Parses a C integer as `printf` writes it: decimal, `-` allowed, or `%#x` hex (`0x...`, and a
    /// bare `0`, which `%#x` prints without the prefix).
    pub(super) fn parse_c_int(s: &[u8]) -> Option<i64> {
        let s = trim(s);
        if let Some(hex) = s.strip_prefix(b"0x").or_else(|| s.strip_prefix(b"0X")) {
            if hex.is_empty() || hex.len() > 16 {
                return None;
            }
            let mut v: u64 = 0;
            for &c in hex {
                let d = (c as char).to_digit(16)? as u64;
                v = (v << 4) | d;
            }
            return i64::try_from(v).ok();
        }
        match s.strip_prefix(b"-") {
            Some(rest) => parse_u64(rest).and_then(|v| i64::try_from(v).ok()).map(|v| -v),
            None => parse_u64(s).and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// Reads a string sysctl into `buf`, without its terminating NUL.
    pub(crate) fn read_str<'a>(src: &mut dyn SysctlSource, name: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]> {
        let v = src.read(name, buf)?;
        Some(match v {
            [rest @ .., 0] => rest,
            _ => v,
        })
    }

    /// Parses FreeBSD's `vm.phys_segs` report and calls `add(domain, bytes)` for each segment.
    /// Returns whether at least one complete segment was found.
    ///
    /// The kernel prints, per segment (`sys/vm/vm_phys.c`, `sysctl_vm_phys_segs`):
    /// `"\nSEGMENT %d:\n\nstart:     %#jx\nend:       %#jx\ndomain:    %d\nfree list: %p\n"`.
    pub(crate) fn parse_phys_segs(s: &[u8], mut add: impl FnMut(usize, u64)) -> bool {
        let mut found = false;
        let (mut start, mut end, mut domain) = (None, None, None);
        let mut flush = |start: &mut Option<i64>, end: &mut Option<i64>, domain: &mut Option<i64>| {
            if let (Some(a), Some(b), Some(d)) = (*start, *end, *domain) {
                if b >= a && d >= 0 {
                    add(d as usize, (b - a) as u64);
                    found = true;
                }
            }
            (*start, *end, *domain) = (None, None, None);
        };
        for line in s.split(|&c| c == b'\n') {
            let line = trim(line);
            if line.starts_with(b"SEGMENT") {
                flush(&mut start, &mut end, &mut domain);
            } else if let Some(v) = line.strip_prefix(b"start:") {
                start = parse_c_int(v);
            } else if let Some(v) = line.strip_prefix(b"end:") {
                end = parse_c_int(v);
            } else if let Some(v) = line.strip_prefix(b"domain:") {
                domain = parse_c_int(v);
            }
        }
        flush(&mut start, &mut end, &mut domain);
        found
    }

    /// Parses FreeBSD's `vm.phys_locality` (one line `"from: d0 d1 ... "` per domain) and calls
    /// `f(from, to, distance)` for each known entry (the kernel prints `-1` when there is no SLIT).
    pub(crate) fn parse_phys_locality(s: &[u8], mut f: impl FnMut(usize, usize, u32)) {
        for line in s.split(|&c| c == b'\n') {
            let Some(colon) = line.iter().position(|&c| c == b':') else { continue };
            let Some(from) = parse_u64(trim(&line[..colon])) else { continue };
            let fields = line[colon + 1..].split(|c| c.is_ascii_whitespace()).filter(|t| !t.is_empty());
            for (to, field) in fields.enumerate() {
                if let Some(d) = parse_c_int(field) {
                    if d > 0 && d <= u16::MAX as i64 {
                        f(from as usize, to, d as u32);
                    }
                }
            }
        }
    }

    /// Reads the topology of a FreeBSD machine: one node per VM domain (`vm.ndomains`), each CPU's
    /// domain from `dev.cpu.N.%domain`, memory per domain summed from `vm.phys_segs` (1 byte, "has
    /// memory", when that report is unavailable), distances from `vm.phys_locality` (10/20 when the
    /// firmware has no SLIT). Returns false if not even `hw.ncpu` could be read.
    pub(crate) fn read_topology(src: &mut dyn SysctlSource, sink: &mut dyn TopologySink) -> bool {
        let Some(ncpu) = read_int(src, b"hw.ncpu\0").filter(|&n| n > 0) else { return false };
        let ncpu = ncpu as usize;
        // CPU ids may have holes (absent CPUs); kern.smp.maxid is the highest one.
        let cpu_ids = read_int(src, b"kern.smp.maxid\0")
            .filter(|&m| m >= 0)
            .map_or(ncpu, |m| (m as usize + 1).max(ncpu))
            .min(MAX_CPUS);
        let domains = read_int(src, b"vm.ndomains\0").filter(|&n| n >= 1).map_or(1, |n| n as usize).min(DOMAINSET_BITS);
        if !sink.possible(cpu_ids, domains) {
            return false;
        }

        let mut name = [0u8; 64];
        for cpu in 0..cpu_ids {
            let domain = indexed_name(&mut name, b"dev.cpu.", cpu, b".%domain").and_then(|n| read_int(src, n));
            match domain {
                Some(d) if d >= 0 && (d as usize) < domains => sink.cpu(cpu, d as usize),
                // No %domain (a kernel without NUMA, or an absent CPU id): only a guess on one node.
                _ if domains == 1 => sink.cpu(cpu, 0),
                _ => {}
            }
        }

        let mut buf = [0u8; 8192];
        let mut mem = [0u64; DOMAINSET_BITS];
        let mem_known = match read_str(src, b"vm.phys_segs\0", &mut buf) {
            Some(s) => parse_phys_segs(s, |d, bytes| {
                if d < mem.len() {
                    mem[d] = mem[d].saturating_add(bytes);
                }
            }),
            None => false,
        };
        for (d, &bytes) in mem.iter().enumerate().take(domains) {
            sink.node_memory(d, if mem_known { bytes } else { 1 });
        }

        let mut slit = false;
        if domains > 1 {
            if let Some(s) = read_str(src, b"vm.phys_locality\0", &mut buf) {
                parse_phys_locality(s, |from, to, d| {
                    if from < domains && to < domains {
                        sink.distance(from, to, d);
                        slit = true;
                    }
                });
            }
        }
        if !slit {
            report_default_distances(sink, |d| d < domains);
        }
        true
    }

    /// The `mmap` flag `MAP_ALIGNED(log2(align))`, or `None` where the kernel would reject it
    /// (alignment not a power of two, below the page size, or beyond the address width).
    pub(crate) fn map_aligned_flag(align: usize) -> Option<i32> {
        if !align.is_power_of_two() {
            return None;
        }
        let shift = align.trailing_zeros();
        if !(PAGE_SHIFT..usize::BITS).contains(&shift) {
            return None;
        }
        Some((shift as i32) << MAP_ALIGNMENT_SHIFT)
    }

    /// The `domainset_t` words holding only `node`, or `None` if it does not fit.
    pub(crate) fn domain_mask(node: usize) -> Option<[u64; DOMAINSET_BITS / 64]> {
        if node >= DOMAINSET_BITS {
            return None;
        }
        let mut w = [0u64; DOMAINSET_BITS / 64];
        w[node / 64] = 1 << (node % 64);
        Some(w)
    }

    /// The policy a thread's `cpuset_getdomain(2)` result (`policy`, `mask`) stands for,
    /// given `domains` = `vm.ndomains`; `None` for the default, first touch over every domain (the
    /// kernel's `domainset0`), and on a single domain, where there is nothing to follow.
    ///
    /// `cpuset -n` sets these: `first-touch:<list>` restricts first touch to some domains (Linux's
    /// `--membind`: nearest allowed node first), `prefer:<d>` (the kernel reports only `d` in the
    /// mask), `round-robin:<list>` / `interleave:<list>`; round-robin over one domain is FreeBSD's
    /// "fixed" domain, i.e. a bind.
    pub(crate) fn process_policy(
        policy: i32,
        mask: &[u64; DOMAINSET_BITS / 64],
        domains: usize,
    ) -> Option<ProcessPolicy> {
        if domains <= 1 {
            return None;
        }
        let mut nodes = NodeMask::empty();
        let mut all = true;
        for d in 0..DOMAINSET_BITS.min(NodeMask::CAPACITY) {
            let set = mask[d / 64] & (1 << (d % 64)) != 0;
            if set {
                nodes.insert(d);
            } else if d < domains {
                all = false;
            }
        }
        if nodes.is_empty() {
            return None;
        }
        match policy {
            DOMAINSET_POLICY_FIRSTTOUCH if all => None,
            DOMAINSET_POLICY_FIRSTTOUCH => Some(ProcessPolicy::Bind(nodes)),
            DOMAINSET_POLICY_PREFER => nodes.iter().next().map(ProcessPolicy::Preferred),
            DOMAINSET_POLICY_ROUNDROBIN | DOMAINSET_POLICY_INTERLEAVE if nodes.len() == 1 => {
                Some(ProcessPolicy::Bind(nodes))
            }
            DOMAINSET_POLICY_ROUNDROBIN | DOMAINSET_POLICY_INTERLEAVE => Some(ProcessPolicy::Interleave(nodes)),
            _ => None,
        }
    }
}

/// DragonFly: topology from `hw.cpu_topology*`, `MAP_SIZEALIGN`, package CPU masks.
#[cfg_attr(not(target_os = "dragonfly"), allow(dead_code))]
pub(crate) mod dragonfly {
    use super::*;

    /// Bits in DragonFly's `cpumask_t` (`__cpumask_t { __uint64_t ary[4]; }`).
    pub(crate) const CPUMASK_BITS: usize = 256;

    /// Reads the topology of a DragonFly machine: one node per physical package, numbered by the
    /// package id (`hw.cpu_topology.cpuN.physical_id`; ids may be sparse). DragonFly does not report
    /// memory per package, so each node with CPUs is reported as having memory (1 byte); distances are
    /// ACPI's defaults (10 local, 20 remote). Returns false if not even `hw.ncpu` could be read.
    pub(crate) fn read_topology(src: &mut dyn SysctlSource, sink: &mut dyn TopologySink) -> bool {
        const UNKNOWN: u16 = u16::MAX;
        let Some(ncpu) = read_int(src, b"hw.ncpu\0").filter(|&n| n > 0) else { return false };
        let cpu_ids = (ncpu as usize).min(MAX_CPUS);
        let packages = read_int(src, b"hw.cpu_topology_phys_ids\0").filter(|&n| n >= 1).map_or(1, |n| n as usize);

        let mut package = [UNKNOWN; MAX_CPUS];
        let mut max_id = None;
        let mut name = [0u8; 64];
        for (cpu, slot) in package.iter_mut().enumerate().take(cpu_ids) {
            let key = indexed_name(&mut name, b"hw.cpu_topology.cpu", cpu, b".physical_id");
            let id = key.and_then(|k| read_int(src, k));
            if let Some(id) = id.filter(|&id| id >= 0 && (id as usize) < NodeMask::CAPACITY) {
                *slot = id as u16;
                max_id = Some(max_id.map_or(id as usize, |m: usize| m.max(id as usize)));
            }
        }
        let node_ids = max_id.map_or(1, |m| m + 1).max(packages).min(NodeMask::CAPACITY);
        if !sink.possible(cpu_ids, node_ids) {
            return false;
        }
        let mut nodes = NodeMask::empty();
        for (cpu, &p) in package.iter().enumerate().take(cpu_ids) {
            if p != UNKNOWN {
                sink.cpu(cpu, p as usize);
                nodes.insert(p as usize);
            } else if max_id.is_none() {
                // No package ids at all (one CPU, or an old kernel): one node.
                sink.cpu(cpu, 0);
                nodes.insert(0);
            }
        }
        for n in nodes.iter() {
            sink.node_memory(n, 1);
        }
        report_default_distances(sink, |n| nodes.contains(n));
        true
    }

    /// Whether `MAP_SIZEALIGN` (the mapping is aligned to its own size, which must be a
    /// power of two) gives the requested alignment. It over-aligns when `align < size`, which costs
    /// only address space, and cannot help when `align > size`.
    pub(crate) fn size_align_applies(size: usize, align: usize) -> bool {
        size.is_power_of_two() && align <= size
    }

    /// The `cpumask_t` words of the CPUs whose package is `node`, given `package_of(cpu)`.
    /// Empty when the node has no CPU (the caller then cannot place memory there).
    pub(crate) fn package_cpu_mask(
        node: usize,
        package_of: impl Fn(usize) -> Option<usize>,
    ) -> [u64; CPUMASK_BITS / 64] {
        let mut w = [0u64; CPUMASK_BITS / 64];
        for cpu in 0..CPUMASK_BITS {
            if package_of(cpu) == Some(node) {
                w[cpu / 64] |= 1 << (cpu % 64);
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::dragonfly::{package_cpu_mask, size_align_applies};
    use super::freebsd::*;
    use super::*;

    /// A recorded machine: sysctl names (without NUL) and their raw values.
    struct Recorded {
        ints: Vec<(String, i64)>,
        strs: Vec<(String, String)>,
        /// How sysctl would hand back an int: 4 bytes (`int`) or 8 (`long`).
        int_width: usize,
    }

    impl Recorded {
        fn new(ints: &[(&str, i64)], strs: &[(&str, &str)], int_width: usize) -> Self {
            Recorded {
                ints: ints.iter().map(|&(n, v)| (n.to_string(), v)).collect(),
                strs: strs.iter().map(|&(n, v)| (n.to_string(), v.to_string())).collect(),
                int_width,
            }
        }
    }

    impl SysctlSource for Recorded {
        fn read<'a>(&mut self, name: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]> {
            let name = name.strip_suffix(b"\0").expect("sysctl names are NUL-terminated");
            if let Some(&(_, v)) = self.ints.iter().find(|(n, _)| n.as_bytes() == name) {
                let bytes = v.to_ne_bytes();
                let raw: &[u8] = if self.int_width == 4 { &(v as i32).to_ne_bytes()[..] } else { &bytes[..] };
                let n = raw.len();
                if n > buf.len() {
                    return None;
                }
                buf[..n].copy_from_slice(raw);
                return Some(&buf[..n]);
            }
            if let Some((_, v)) = self.strs.iter().find(|(n, _)| n.as_bytes() == name) {
                let n = v.len() + 1; // the kernel copies out the NUL too
                if n > buf.len() {
                    return None; // ENOMEM: sysctl(3) would truncate; we never use a partial report
                }
                buf[..v.len()].copy_from_slice(v.as_bytes());
                buf[v.len()] = 0;
                return Some(&buf[..n]);
            }
            None
        }
    }

    #[derive(Default)]
    struct Sink {
        possible: Option<(usize, usize)>,
        cpus: Vec<(usize, usize)>,
        mem: Vec<(usize, u64)>,
        dist: Vec<(usize, usize, u32)>,
    }

    impl TopologySink for Sink {
        fn possible(&mut self, cpu_ids: usize, node_ids: usize) -> bool {
            self.possible = Some((cpu_ids, node_ids));
            true
        }
        fn cpu(&mut self, cpu: usize, node: usize) {
            self.cpus.push((cpu, node));
        }
        fn node_memory(&mut self, node: usize, bytes: u64) {
            self.mem.push((node, bytes));
        }
        fn distance(&mut self, from: usize, to: usize, d: u32) {
            self.dist.push((from, to, d));
        }
    }

    impl Sink {
        fn node_of(&self, cpu: usize) -> Option<usize> {
            self.cpus.iter().find(|&&(c, _)| c == cpu).map(|&(_, n)| n)
        }
        fn distance(&self, a: usize, b: usize) -> Option<u32> {
            self.dist.iter().find(|&&(x, y, _)| x == a && y == b).map(|&(_, _, d)| d)
        }
    }

    /// `vm.phys_segs` of a 2-socket amd64 machine with 64 GiB per socket, in the kernel's format
    /// (low memory split at 1 MiB/16 MiB/4 GiB as amd64's free lists do; zero printed as `0`).
    const FREEBSD_2S_PHYS_SEGS: &str = "\nSEGMENT 0:\n\nstart:     0x10000\nend:       0x9f000\n\
domain:    0\nfree list: 0xffffffff81f1d8c0\n\nSEGMENT 1:\n\nstart:     0x100000\nend:       0x1000000\n\
domain:    0\nfree list: 0xffffffff81f1d8c0\n\nSEGMENT 2:\n\nstart:     0x1000000\nend:       0x7c000000\n\
domain:    0\nfree list: 0xffffffff81f1d200\n\nSEGMENT 3:\n\nstart:     0x100000000\nend:       0x1080000000\n\
domain:    0\nfree list: 0xffffffff81f1ca40\n\nSEGMENT 4:\n\nstart:     0x1080000000\nend:       0x2000000000\n\
domain:    1\nfree list: 0xffffffff81f1cb80\n";

    /// 2 sockets x 8 cores x 2 threads; FreeBSD numbers CPUs by APIC id, so socket 0 is 0-15.
    fn freebsd_2s_ints() -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> =
            [("hw.ncpu", 32), ("kern.smp.maxid", 31), ("vm.ndomains", 2)].map(|(n, v)| (n.to_string(), v)).into();
        v.extend((0..32).map(|cpu| (format!("dev.cpu.{cpu}.%domain"), (cpu / 16) as i64)));
        v
    }

    #[test]
    fn names_are_built_nul_terminated() {
        let mut b = [0u8; 64];
        assert_eq!(indexed_name(&mut b, b"dev.cpu.", 0, b".%domain"), Some(&b"dev.cpu.0.%domain\0"[..]));
        assert_eq!(
            indexed_name(&mut b, b"hw.cpu_topology.cpu", 255, b".physical_id"),
            Some(&b"hw.cpu_topology.cpu255.physical_id\0"[..])
        );
        assert_eq!(indexed_name(&mut b, &[b'x'; 60], 1234, b""), None);
    }

    #[test]
    fn c_integers_as_printf_writes_them() {
        assert_eq!(parse_c_int(b"  0x1080000000"), Some(0x10_8000_0000));
        assert_eq!(parse_c_int(b"0"), Some(0)); // %#jx of zero has no 0x
        assert_eq!(parse_c_int(b"-1"), Some(-1));
        assert_eq!(parse_c_int(b"21 "), Some(21));
        assert_eq!(parse_c_int(b"0x"), None);
        assert_eq!(parse_c_int(b"0xffffffffffffffff"), None); // does not fit i64
        assert_eq!(parse_c_int(b"ten"), None);
    }

    #[test]
    fn int_sysctls_of_either_width() {
        for width in [4, 8] {
            let mut src = Recorded::new(&[("vm.ndomains", 2)], &[], width);
            assert_eq!(read_int(&mut src, b"vm.ndomains\0"), Some(2));
            assert_eq!(read_int(&mut src, b"vm.nothere\0"), None);
        }
        let mut src = Recorded::new(&[], &[("kern.ostype", "DragonFly")], 4);
        assert_eq!(read_int(&mut src, b"kern.ostype\0"), None); // 10 bytes: not an int
        let mut buf = [0u8; 16];
        assert_eq!(read_str(&mut src, b"kern.ostype\0", &mut buf), Some(&b"DragonFly"[..]));
        assert_eq!(read_str(&mut src, b"kern.ostype\0", &mut buf[..4]), None); // never truncated
    }

    #[test]
    fn phys_segs_sum_per_domain() {
        let mut mem = [0u64; 4];
        assert!(parse_phys_segs(FREEBSD_2S_PHYS_SEGS.as_bytes(), |d, b| mem[d] += b));
        let low = (0x9f000 - 0x10000) + (0x100_0000 - 0x10_0000) + (0x7c00_0000 - 0x100_0000);
        assert_eq!(mem[0], low + (0x10_8000_0000 - 0x1_0000_0000));
        assert_eq!(mem[1], 0x20_0000_0000 - 0x10_8000_0000);
        assert_eq!(mem[2], 0);
        // A segment that starts at physical 0 ("%#jx" prints plain 0).
        let mut total = 0;
        let from_zero = b"\nSEGMENT 0:\n\nstart:     0\nend:       0x9f000\ndomain:    0\n";
        assert!(parse_phys_segs(from_zero, |_, b| total += b));
        assert_eq!(total, 0x9f000);
        assert!(!parse_phys_segs(b"", |_, _| panic!()));
        assert!(!parse_phys_segs(b"\nSEGMENT 0:\n\nstart:     0x1000\n", |_, _| panic!()));
    }

    #[test]
    fn phys_locality_with_and_without_slit() {
        let mut d = Vec::new();
        parse_phys_locality(b"\n0: 10 21 \n1: 21 10 \n", |a, b, x| d.push((a, b, x)));
        assert_eq!(d, vec![(0, 0, 10), (0, 1, 21), (1, 0, 21), (1, 1, 10)]);
        d.clear();
        parse_phys_locality(b"\n0: -1 -1 \n1: -1 -1 \n", |a, b, x| d.push((a, b, x)));
        assert!(d.is_empty());
    }

    #[test]
    fn freebsd_two_socket_machine() {
        let strs = [("vm.phys_segs", FREEBSD_2S_PHYS_SEGS), ("vm.phys_locality", "\n0: 10 21 \n1: 21 10 \n")];
        let mut src = Recorded::new(&[], &strs, 4);
        src.ints = freebsd_2s_ints();
        let mut sink = Sink::default();
        assert!(freebsd::read_topology(&mut src, &mut sink));
        assert_eq!(sink.possible, Some((32, 2)));
        assert_eq!(sink.cpus.len(), 32);
        assert_eq!(sink.node_of(0), Some(0));
        assert_eq!(sink.node_of(15), Some(0));
        assert_eq!(sink.node_of(16), Some(1));
        assert_eq!(sink.node_of(31), Some(1));
        assert_eq!(sink.mem.len(), 2);
        assert!(sink.mem.iter().all(|&(_, b)| b > 60 << 30), "{:?}", sink.mem);
        assert_eq!(sink.distance(0, 1), Some(21));
        assert_eq!(sink.distance(1, 1), Some(10));
    }

    #[test]
    fn freebsd_without_numa_reports() {
        // A GENERIC kernel on one domain: no %domain, no phys_locality, phys_segs too big to read.
        let big = "x".repeat(10_000);
        let strs = [("vm.phys_segs", big.as_str())];
        let mut src = Recorded::new(&[("hw.ncpu", 4), ("vm.ndomains", 1)], &strs, 4);
        let mut sink = Sink::default();
        assert!(freebsd::read_topology(&mut src, &mut sink));
        assert_eq!(sink.possible, Some((4, 1)));
        assert_eq!(sink.cpus, vec![(0, 0), (1, 0), (2, 0), (3, 0)]);
        assert_eq!(sink.mem, vec![(0, 1)]); // present, size unknown
        assert_eq!(sink.dist, vec![(0, 0, 10)]);
        // Nothing at all: the caller falls back to one node.
        let mut empty = Recorded::new(&[], &[], 4);
        assert!(!freebsd::read_topology(&mut empty, &mut Sink::default()));
    }

    #[test]
    fn freebsd_sparse_cpu_ids_and_unknown_domains() {
        // CPU 2 is absent (hole below kern.smp.maxid); CPU 3 has no %domain on a 2-domain kernel.
        let ints = [
            ("hw.ncpu", 3),
            ("kern.smp.maxid", 3),
            ("vm.ndomains", 2),
            ("dev.cpu.0.%domain", 0),
            ("dev.cpu.1.%domain", 1),
        ];
        let mut src = Recorded::new(&ints, &[], 8);
        let mut sink = Sink::default();
        assert!(freebsd::read_topology(&mut src, &mut sink));
        assert_eq!(sink.possible, Some((4, 2)));
        assert_eq!(sink.cpus, vec![(0, 0), (1, 1)]);
        assert_eq!(sink.mem, vec![(0, 1), (1, 1)]);
        assert_eq!(sink.distance(0, 1), Some(20)); // no SLIT: ACPI's default
    }

    fn dragonfly(ncpu: usize, packages: i64, package_of: impl Fn(usize) -> i64) -> Recorded {
        let mut src = Recorded::new(&[("hw.ncpu", ncpu as i64), ("hw.cpu_topology_phys_ids", packages)], &[], 4);
        src.ints.extend((0..ncpu).map(|cpu| (format!("hw.cpu_topology.cpu{cpu}.physical_id"), package_of(cpu))));
        src
    }

    #[test]
    fn dragonfly_two_socket_machine() {
        // 2 packages x 4 cores x 2 threads, numbered package by package as DragonFly's APIC order.
        let mut src = dragonfly(16, 2, |c| (c / 8) as i64);
        let mut sink = Sink::default();
        assert!(dragonfly::read_topology(&mut src, &mut sink));
        assert_eq!(sink.possible, Some((16, 2)));
        assert_eq!(sink.node_of(7), Some(0));
        assert_eq!(sink.node_of(8), Some(1));
        assert_eq!(sink.mem, vec![(0, 1), (1, 1)]);
        assert_eq!(sink.distance(0, 1), Some(20));
        assert_eq!(sink.distance(1, 1), Some(10));
    }

    #[test]
    fn dragonfly_interleaved_and_sparse_packages() {
        // Firmware that enumerates sockets alternately and names them 0 and 2.
        let mut src = dragonfly(8, 2, |c| if c % 2 == 0 { 0 } else { 2 });
        let mut sink = Sink::default();
        assert!(dragonfly::read_topology(&mut src, &mut sink));
        assert_eq!(sink.possible, Some((8, 3)));
        assert_eq!(sink.node_of(1), Some(2));
        assert_eq!(sink.node_of(2), Some(0));
        assert_eq!(sink.mem, vec![(0, 1), (2, 1)]); // node 1 does not exist
        assert_eq!(sink.distance(1, 1), None);
    }

    #[test]
    fn dragonfly_without_topology_tree() {
        let mut src = Recorded::new(&[("hw.ncpu", 2)], &[], 4);
        let mut sink = Sink::default();
        assert!(dragonfly::read_topology(&mut src, &mut sink));
        assert_eq!(sink.possible, Some((2, 1)));
        assert_eq!(sink.cpus, vec![(0, 0), (1, 0)]);
        assert_eq!(sink.mem, vec![(0, 1)]);
    }

    #[test]
    fn freebsd_alignment_flags() {
        assert_eq!(map_aligned_flag(4096), Some(12 << 24));
        assert_eq!(map_aligned_flag(2 << 20), Some(21 << 24));
        assert_eq!(map_aligned_flag(1 << 30), Some(30 << 24));
        assert_eq!(map_aligned_flag(2048), None);
        assert_eq!(map_aligned_flag(3 << 20), None);
        assert_eq!(map_aligned_flag(0), None);
    }

    #[test]
    fn dragonfly_size_alignment() {
        assert!(size_align_applies(4 << 20, 4 << 20));
        assert!(size_align_applies(4 << 20, 2 << 20));
        assert!(!size_align_applies(6 << 20, 2 << 20));
        assert!(!size_align_applies(2 << 20, 4 << 20));
    }

    #[test]
    fn freebsd_policies_from_cpuset() {
        let both = [0b11, 0, 0, 0];
        let second = [0b10, 0, 0, 0];
        // The default (first touch over all domains), and anything on a one-domain machine.
        assert_eq!(process_policy(DOMAINSET_POLICY_FIRSTTOUCH, &both, 2), None);
        assert_eq!(process_policy(DOMAINSET_POLICY_INTERLEAVE, &[1, 0, 0, 0], 1), None);
        let mut one = NodeMask::empty();
        one.insert(1);
        let mut two = one;
        two.insert(0);
        // cpuset -n first-touch:1
        assert_eq!(process_policy(DOMAINSET_POLICY_FIRSTTOUCH, &second, 2), Some(ProcessPolicy::Bind(one)));
        // cpuset -n prefer:1 (the kernel reports the preferred domain alone)
        assert_eq!(process_policy(DOMAINSET_POLICY_PREFER, &second, 2), Some(ProcessPolicy::Preferred(1)));
        // cpuset -n interleave:all, round-robin:all, round-robin:1 (a fixed domain)
        assert_eq!(process_policy(DOMAINSET_POLICY_INTERLEAVE, &both, 2), Some(ProcessPolicy::Interleave(two)));
        assert_eq!(process_policy(DOMAINSET_POLICY_ROUNDROBIN, &both, 2), Some(ProcessPolicy::Interleave(two)));
        assert_eq!(process_policy(DOMAINSET_POLICY_ROUNDROBIN, &second, 2), Some(ProcessPolicy::Bind(one)));
        assert_eq!(process_policy(0, &both, 2), None);
        assert_eq!(process_policy(DOMAINSET_POLICY_INTERLEAVE, &[0; 4], 2), None);
    }

    #[test]
    fn masks() {
        assert_eq!(domain_mask(0), Some([1, 0, 0, 0]));
        assert_eq!(domain_mask(65), Some([0, 2, 0, 0]));
        assert_eq!(domain_mask(256), None);
        let m = package_cpu_mask(1, |c| if c < 16 { Some(c / 8) } else { None });
        assert_eq!(m, [0xff00, 0, 0, 0]);
        assert_eq!(package_cpu_mask(5, |_| Some(0)), [0; 4]);
    }
}
