//! Thread pinning through hwloc (hwlocality): worker `i` is bound to core `i % cores`.
//!
//! hwloc is only used by the benchmark tooling, never inside an allocator. Loading the
//! topology allocates through whatever malloc is preloaded, which is fine (and the same for
//! every allocator). If hwloc is unavailable or binding fails, threads run unpinned and a
//! single warning is printed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use hwlocality::cpu::binding::CpuBindingFlags;
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::object::types::ObjectType;
use hwlocality::Topology;

struct Pinner {
    topology: Topology,
    /// The cpuset of each core (of each PU if hwloc reports no cores), in logical order.
    cores: Vec<CpuSet>,
}

static PINNER: OnceLock<Option<Pinner>> = OnceLock::new();
static WARNED: AtomicBool = AtomicBool::new(false);

fn warn_once(msg: &str) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!("warning: {msg}; threads run unpinned");
    }
}

/// Loads the topology (when `enabled`) so that [`pin_current`] can bind threads. Call once,
/// before starting workers. Returns the number of cores threads are spread over (0: no pinning).
pub fn init(enabled: bool) -> usize {
    let p = PINNER.get_or_init(|| {
        if !enabled {
            return None;
        }
        let topology = match Topology::new() {
            Ok(t) => t,
            Err(e) => {
                warn_once(&format!("hwloc topology failed to load ({e})"));
                return None;
            }
        };
        let mut cores: Vec<CpuSet> = topology
            .objects_with_type(ObjectType::Core)
            .filter_map(|o| o.cpuset().map(|c| c.clone_target()))
            .filter(|c| !c.is_empty())
            .collect();
        if cores.is_empty() {
            cores = topology
                .objects_with_type(ObjectType::PU)
                .filter_map(|o| o.cpuset().map(|c| c.clone_target()))
                .collect();
        }
        // Only cores this process may run on (cpusets, taskset).
        let allowed = topology.allowed_cpuset().clone_target();
        cores.retain(|c| c.intersects(&allowed));
        if cores.is_empty() {
            warn_once("hwloc reported no usable cores");
            return None;
        }
        Some(Pinner { topology, cores })
    });
    p.as_ref().map_or(0, |p| p.cores.len())
}

/// Binds the calling thread to core `index % cores` (no-op when pinning is off).
pub fn pin_current(index: usize) {
    let Some(Some(p)) = PINNER.get() else { return };
    let set = &p.cores[index % p.cores.len()];
    if let Err(e) = p.topology.bind_cpu(set, CpuBindingFlags::THREAD) {
        warn_once(&format!("hwloc could not bind a thread ({e})"));
    }
}
