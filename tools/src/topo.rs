//! `domalloc topo`: the machine's NUMA topology from hwloc next to what domalloc detected by
//! itself (`domalloc::topology::Topology::detect`), and whether they agree on which nodes have
//! memory, which node serves each CPU, and the node distances.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::ObjectType;
use hwlocality::Topology as Hwloc;

use crate::format_list;

/// One NUMA node as hwloc reports it.
#[derive(Debug, Clone, Default)]
pub struct HwNode {
    /// OS node id.
    pub id: usize,
    /// Local memory in bytes.
    pub memory: u64,
    /// OS ids of the CPUs local to the node.
    pub cpus: BTreeSet<usize>,
}

/// What hwloc found.
#[derive(Debug, Clone, Default)]
pub struct HwView {
    /// NUMA nodes by id.
    pub nodes: BTreeMap<usize, HwNode>,
    /// OS ids of all PUs.
    pub cpus: BTreeSet<usize>,
    /// Node distances `(from, to) -> d`, when hwloc has a NUMA distance matrix.
    pub distances: BTreeMap<(usize, usize), u64>,
}

/// Reads the topology with hwloc.
pub fn hwloc_view() -> Result<HwView, String> {
    let topo = Hwloc::new().map_err(|e| format!("hwloc: cannot load the topology: {e}"))?;
    let mut v = HwView::default();
    for n in topo.objects_with_type(ObjectType::NUMANode) {
        let Some(id) = n.os_index() else { continue };
        let memory = match n.attributes() {
            Some(ObjectAttributes::NUMANode(a)) => a.local_memory().map_or(0, |m| m.get()),
            _ => 0,
        };
        let cpus = n.cpuset().map(|s| s.iter_set().map(usize::from).collect()).unwrap_or_default();
        v.nodes.insert(id, HwNode { id, memory, cpus });
    }
    for pu in topo.objects_with_type(ObjectType::PU) {
        if let Some(id) = pu.os_index() {
            v.cpus.insert(id);
        }
    }
    if let Ok(list) = topo.distances_with_type(None, ObjectType::NUMANode) {
        if let Some(d) = list.first() {
            let ids: Vec<Option<usize>> = d.objects().map(|o| o.and_then(|o| o.os_index())).collect();
            for ((a, b), dist) in d.enumerate_distances() {
                if let (Some(Some(x)), Some(Some(y))) = (ids.get(a), ids.get(b)) {
                    v.distances.insert((*x, *y), dist);
                }
            }
        }
    }
    Ok(v)
}

/// What domalloc detected.
#[derive(Debug, Clone, Default)]
pub struct DomView {
    /// Online nodes: id -> (memory bytes, CPUs).
    pub nodes: BTreeMap<usize, (u64, Vec<usize>)>,
    /// Nodes with memory.
    pub memory_nodes: BTreeSet<usize>,
    /// For each CPU id known to hwloc: the node whose memory domalloc gives it.
    pub home: BTreeMap<usize, usize>,
    /// Distances between online nodes (0 = unknown).
    pub distances: BTreeMap<(usize, usize), u64>,
}

/// Reads domalloc's own detection (`sys_root` replaces `/sys`).
pub fn domalloc_view(sys_root: Option<&str>, cpus: &BTreeSet<usize>) -> Result<DomView, String> {
    let t = domalloc::topology::Topology::detect(sys_root.map(str::as_bytes))
        .ok_or("domalloc: topology detection failed (cannot map its tables)")?;
    let mut v = DomView::default();
    for n in t.nodes() {
        v.nodes.insert(n, (t.memory(n), t.cpus_of(n).iter().map(|&c| c as usize).collect()));
    }
    v.memory_nodes = t.memory_nodes().iter().collect();
    for &c in cpus {
        v.home.insert(c, t.home_of_cpu(c));
    }
    let nodes: Vec<usize> = t.nodes().collect();
    for &a in &nodes {
        for &b in &nodes {
            v.distances.insert((a, b), t.distance(a, b) as u64);
        }
    }
    Ok(v)
}

/// Differences between the two views (empty: they agree).
pub fn compare(hw: &HwView, dm: &DomView) -> Vec<String> {
    let mut out = Vec::new();
    let hw_nodes: BTreeSet<usize> = hw.nodes.keys().copied().collect();
    if hw_nodes != dm.memory_nodes {
        out.push(format!(
            "nodes with memory: hwloc {{{}}}, domalloc {{{}}}",
            format_list(&hw_nodes.iter().copied().collect::<Vec<_>>()),
            format_list(&dm.memory_nodes.iter().copied().collect::<Vec<_>>())
        ));
    }
    // Each CPU: domalloc's home node must be one of the hwloc nodes local to the CPU (hwloc
    // attaches CPUs of a memory-less node to a node with memory; several memory nodes, like DRAM
    // and HBM, may share the same CPUs).
    let mut bad_cpus = Vec::new();
    for (&c, &home) in &dm.home {
        let local: Vec<usize> = hw.nodes.values().filter(|n| n.cpus.contains(&c)).map(|n| n.id).collect();
        if !local.is_empty() && !local.contains(&home) {
            bad_cpus.push(format!("cpu {c}: hwloc node(s) {local:?}, domalloc node {home}"));
        }
    }
    if !bad_cpus.is_empty() {
        let n = bad_cpus.len();
        bad_cpus.truncate(8);
        out.push(format!("{n} CPU(s) on different nodes: {}", bad_cpus.join("; ")));
    }
    for n in hw.nodes.values() {
        if let Some((mem, _)) = dm.nodes.get(&n.id) {
            let (a, b) = (n.memory as f64, *mem as f64);
            if a > 0.0 && b > 1.0 && (a - b).abs() / a.max(b) > 0.10 {
                out.push(format!("node {}: memory {} (hwloc) vs {} (domalloc)", n.id, human(n.memory), human(*mem)));
            }
        }
    }
    for (&(a, b), &d) in &hw.distances {
        if let Some(&e) = dm.distances.get(&(a, b)) {
            if e != 0 && e != d {
                out.push(format!("distance {a}->{b}: {d} (hwloc) vs {e} (domalloc)"));
            }
        }
    }
    out
}

fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

/// The report text.
pub fn report(hw: &HwView, dm: &DomView, diffs: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "NUMA topology: {} node(s) per hwloc, {} with memory per domalloc", hw.nodes.len(), dm.memory_nodes.len());
    let _ = writeln!(s, "{:>5}  {:>12}  {:<24}  {:>12}  {:<24}", "node", "hwloc mem", "hwloc cpus", "domalloc mem", "domalloc cpus");
    let ids: BTreeSet<usize> = hw.nodes.keys().chain(dm.nodes.keys()).copied().collect();
    for id in ids {
        let (hm, hc) = hw
            .nodes
            .get(&id)
            .map(|n| (human(n.memory), format_list(&n.cpus.iter().copied().collect::<Vec<_>>())))
            .unwrap_or(("-".into(), "-".into()));
        let (dmem, dc) = dm
            .nodes
            .get(&id)
            .map(|(m, c)| (if *m == 0 { "none".to_string() } else { human(*m) }, if c.is_empty() { "none".into() } else { format_list(c) }))
            .unwrap_or(("-".into(), "-".into()));
        let _ = writeln!(s, "{id:>5}  {hm:>12}  {hc:<24}  {dmem:>12}  {dc:<24}");
    }
    if !dm.distances.is_empty() && dm.nodes.len() > 1 {
        let _ = writeln!(s, "distances (domalloc; hwloc's where they differ are listed below):");
        let ids: Vec<usize> = dm.nodes.keys().copied().collect();
        let _ = write!(s, "{:>5}", "");
        for b in &ids {
            let _ = write!(s, " {b:>4}");
        }
        s.push('\n');
        for a in &ids {
            let _ = write!(s, "{a:>5}");
            for b in &ids {
                let _ = write!(s, " {:>4}", dm.distances.get(&(*a, *b)).copied().unwrap_or(0));
            }
            s.push('\n');
        }
    }
    if diffs.is_empty() {
        let _ = writeln!(s, "agree: yes (hwloc and domalloc see the same nodes, CPU placement and distances)");
    } else {
        let _ = writeln!(s, "agree: NO");
        for d in diffs {
            let _ = writeln!(s, "  {d}");
        }
    }
    s
}

/// `domalloc topo [--fsroot DIR]`: prints the report; exit status 0 when they agree, 1 when not.
pub fn main(args: &[String]) -> Result<u8, String> {
    let mut fsroot: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].split_once('=') {
            Some(("--fsroot", v)) => fsroot = Some(v.to_string()),
            _ if args[i] == "--fsroot" => {
                i += 1;
                fsroot = Some(args.get(i).cloned().ok_or("--fsroot needs a directory")?);
            }
            _ => return Err(format!("topo: unknown argument {:?}\n{}", args[i], crate::USAGE)),
        }
        i += 1;
    }
    let sys_root = fsroot.as_ref().map(|r| format!("{}/sys", r.trim_end_matches('/')));
    if let Some(r) = &fsroot {
        // hwloc's Linux backend reads /sys and /proc below this root.
        std::env::set_var("HWLOC_FSROOT", r);
    }
    let hw = hwloc_view()?;
    let dm = domalloc_view(sys_root.as_deref(), &hw.cpus)?;
    let diffs = compare(&hw, &dm);
    print!("{}", report(&hw, &dm, &diffs));
    Ok(if diffs.is_empty() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_nodes() -> (HwView, DomView) {
        let mut hw = HwView::default();
        hw.nodes.insert(0, HwNode { id: 0, memory: 1 << 30, cpus: [0, 1].into() });
        hw.nodes.insert(1, HwNode { id: 1, memory: 1 << 30, cpus: [2, 3].into() });
        hw.cpus = [0, 1, 2, 3].into();
        let mut dm = DomView::default();
        dm.nodes.insert(0, (1 << 30, vec![0, 1]));
        dm.nodes.insert(1, (1 << 30, vec![2, 3]));
        dm.memory_nodes = [0, 1].into();
        dm.home = [(0, 0), (1, 0), (2, 1), (3, 1)].into();
        (hw, dm)
    }

    #[test]
    fn agreement_and_differences() {
        let (hw, mut dm) = two_nodes();
        assert!(compare(&hw, &dm).is_empty());
        assert!(report(&hw, &dm, &[]).contains("agree: yes"));
        dm.home.insert(3, 0);
        let d = compare(&hw, &dm);
        assert_eq!(d.len(), 1);
        assert!(d[0].contains("cpu 3"));
        dm.memory_nodes.remove(&1);
        assert_eq!(compare(&hw, &dm).len(), 2);
    }

    #[test]
    fn this_machine() {
        // Whatever the machine, both detections run and the report renders.
        let hw = hwloc_view().unwrap();
        let dm = domalloc_view(None, &hw.cpus).unwrap();
        let r = report(&hw, &dm, &compare(&hw, &dm));
        assert!(r.contains("agree:"));
    }
}
