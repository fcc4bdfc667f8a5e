//! Thread pinning: worker `i` is bound to core `i % cores`.
//!
//! With the default `hwloc` feature the cores come from hwloc (hwlocality). hwloc is only used
//! by the benchmark tooling, never inside an allocator. Loading the topology allocates through
//! whatever malloc is preloaded, which is fine (and the same for every allocator). Without the
//! feature (the build `scripts/scaling.sh` carries to machines that have no libhwloc)
//! the cores are read from sysfs (`topology/core_id` and `physical_package_id` of every CPU this
//! process may run on) and threads are bound with `sched_setaffinity` (nix's wrapper).
//! If the topology is unavailable or binding fails, threads run unpinned and a single warning is
//! printed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

#[cfg(feature = "hwloc")]
pub use with_hwloc::{init, pin_current};
#[cfg(not(feature = "hwloc"))]
pub use with_sysfs::{init, pin_current};

static WARNED: AtomicBool = AtomicBool::new(false);

fn warn_once(msg: &str) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!("warning: {msg}; threads run unpinned");
    }
}

#[cfg(not(feature = "hwloc"))]
mod with_sysfs {
    use super::{warn_once, OnceLock};
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;

    /// The CPUs of each core, in (package, core id) order.
    static CORES: OnceLock<Vec<Vec<usize>>> = OnceLock::new();

    fn read_id(cpu: usize, what: &str) -> Option<i64> {
        std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu{cpu}/topology/{what}")).ok()?.trim().parse().ok()
    }

    /// Reads the cores (see [`super::pin_current`]); returns how many (0: no pinning).
    pub fn init(enabled: bool) -> usize {
        CORES
            .get_or_init(|| {
                if !enabled {
                    return Vec::new();
                }
                let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else {
                    warn_once("sched_getaffinity failed");
                    return Vec::new();
                };
                let mut cores: Vec<((i64, i64), Vec<usize>)> = Vec::new();
                for cpu in (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)) {
                    let key = (
                        read_id(cpu, "physical_package_id").unwrap_or(0),
                        read_id(cpu, "core_id").unwrap_or(cpu as i64),
                    );
                    match cores.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, v)) => v.push(cpu),
                        None => cores.push((key, vec![cpu])),
                    }
                }
                cores.sort_by_key(|(k, _)| *k);
                cores.into_iter().map(|(_, v)| v).collect()
            })
            .len()
    }

    /// Binds the calling thread to core `index % cores` (no-op when pinning is off).
    pub fn pin_current(index: usize) {
        let Some(cores) = CORES.get().filter(|c| !c.is_empty()) else { return };
        let mut set = CpuSet::new();
        for &cpu in &cores[index % cores.len()] {
            // Every CPU came from `set.is_set` over `0..CpuSet::count()`: setting it cannot fail.
            let _ = set.set(cpu);
        }
        if sched_setaffinity(Pid::from_raw(0), &set).is_err() {
            warn_once("sched_setaffinity failed");
        }
    }
}

#[cfg(feature = "hwloc")]
mod with_hwloc {
    use super::{warn_once, OnceLock};
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
}
