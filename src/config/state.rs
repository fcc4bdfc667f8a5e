//! What start-up decided and nothing changes afterwards: whether the NUMA logic runs, whether
//! the kernel may be asked where pages are, the placement policy in force, and when the process
//! started. Written once by `init` before the allocator is published as ready; read-only (plain
//! loads, no lock) from then on.

use core::fmt::Write;

use crate::config::options::{self, Policy};
use crate::config::topology;
use crate::sys::os::{Os, Sys};
use crate::sys::{BufWriter, Bytes, SetOnce};

/// The decisions of start-up.
#[derive(Clone, Copy)]
pub(crate) struct Config {
    /// NUMA logic on (more than one node with memory, or `DOMALLOC_NUMA=1`).
    pub(crate) numa: bool,
    /// The kernel's answers about page placement match the topology in use (not when the
    /// topology comes from a fake sysfs tree, `DOMALLOC_TOPOLOGY_ROOT`).
    pub(crate) page_queries: bool,
    /// The placement policy in force: `DOMALLOC_POLICY`, else the one the process was started
    /// with (numactl), else local.
    pub(crate) policy: Policy,
    /// Blocks below this size are not subject to `policy` (0 = all; small sizes: per class).
    pub(crate) policy_min_size: usize,
    /// `policy` came from outside (numactl) rather than `DOMALLOC_POLICY`.
    pub(crate) policy_external: bool,
    /// When start-up finished (ms, monotonic).
    pub(crate) start_ms: u64,
}

impl Config {
    /// Before start-up: one node, local placement.
    const UNSET: Config = Config {
        numa: false,
        page_queries: false,
        policy: Policy::Local,
        policy_min_size: 0,
        policy_external: false,
        start_ms: 0,
    };
}

static CONFIG: SetOnce<Config> = SetOnce::new(Config::UNSET);

/// Records the decisions of start-up.
///
/// # Safety
/// Called only by start-up, under its lock, before the allocator is published as ready.
pub(crate) unsafe fn set(c: Config) {
    // SAFETY: the caller's contract is `SetOnce::set`'s.
    unsafe { CONFIG.set(c) }
}

#[inline(always)]
fn get() -> &'static Config {
    CONFIG.get()
}

/// Whether NUMA logic is on (more than one node with memory, or forced).
#[inline]
pub(crate) fn numa_enabled() -> bool {
    get().numa
}

/// Whether the kernel may be asked where pages are (NUMA on, the real topology).
#[inline]
pub(crate) fn page_queries() -> bool {
    get().page_queries
}

/// The placement policy in force and its size threshold.
#[inline]
pub(crate) fn policy() -> (Policy, usize) {
    let c = get();
    (c.policy, c.policy_min_size)
}

/// Whether the policy in force was inherited from the process (numactl) rather than set by
/// `DOMALLOC_POLICY`.
pub(crate) fn policy_is_external() -> bool {
    get().policy_external
}

/// Milliseconds since start-up.
pub(crate) fn elapsed_ms() -> u64 {
    Sys::now_ms().saturating_sub(get().start_ms)
}

/// Ascending CPU ids written as the kernel writes lists: `0-3,8,10-11`.
struct CpuList<'a>(&'a [u32]);

impl core::fmt::Display for CpuList<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut i = 0;
        while i < self.0.len() {
            let first = self.0[i];
            let mut last = first;
            while i + 1 < self.0.len() && self.0[i + 1] == last + 1 {
                i += 1;
                last = self.0[i];
            }
            if first != self.0[0] {
                f.write_str(",")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// Prints the decisions of start-up in plain words, every option with its value and where it
/// came from, and the topology (for `DOMALLOC_VERBOSE=1`).
pub(crate) fn print_banner() {
    let o = options::get();
    let t = topology::get();
    let (policy, min) = policy();
    let mut buf = [0u8; 512];
    let mut w = BufWriter::new(&mut buf);
    let _ = write!(w, "domalloc: {} on {}: ", env!("CARGO_PKG_VERSION"), <Sys as Os>::NAME);
    let _ = if numa_enabled() {
        write!(w, "NUMA on, {} nodes with memory", t.memory_node_count())
    } else {
        write!(w, "NUMA off (one domain)")
    };
    let _ = write!(
        w,
        "; CPU ids 0-{}, node ids 0-{}; placement: {}",
        t.cpu_ids().saturating_sub(1),
        t.node_ids().saturating_sub(1),
        policy
    );
    if min > 0 {
        let _ = write!(w, " for blocks of {} and more", Bytes(min as u64));
    }
    if policy_is_external() {
        let _ = write!(w, " (inherited from the process, e.g. numactl)");
    }
    let _ = match o.purge_delay_ms {
        u64::MAX => write!(w, "; free memory is kept (never purged)"),
        ms => write!(
            w,
            "; free memory goes back to the OS after {} ms ({})",
            ms,
            match o.purge_mode {
                crate::sys::os::PurgeMode::DontNeed => "MADV_DONTNEED",
                crate::sys::os::PurgeMode::Free => "MADV_FREE",
            }
        ),
    };
    let _ = writeln!(
        w,
        "; huge pages: {}",
        match (o.thp, o.segment_thp) {
            (true, _) => "on segments and huge blocks",
            (false, true) => "on segments",
            (false, false) => "off",
        }
    );
    Sys::write_fd(2, w.as_bytes());
    options::print_all(&mut |line| {
        Sys::write_fd(2, line);
    });
    for n in t.nodes() {
        let cpus = t.cpus_of(n);
        let mut buf = [0u8; 256];
        let mut w = BufWriter::new(&mut buf);
        let _ = write!(w, "domalloc: node {}: {} of memory, {} CPUs", n, Bytes(t.memory(n)), cpus.len());
        if !cpus.is_empty() {
            let _ = write!(w, " ({})", CpuList(cpus));
        }
        if t.home_of_node(n) != n {
            let _ = write!(w, ", gets memory from node {}", t.home_of_node(n));
        }
        let _ = writeln!(w);
        Sys::write_fd(2, w.as_bytes());
    }
}
