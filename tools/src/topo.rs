//! `domalloc topo`: the machine's NUMA topology from hwloc next to what domalloc detected by
//! itself (`domalloc::topology::Topology::detect`), and, check by check, whether they agree:
//! which nodes have memory, which node serves each CPU, which CPUs exist, memory per node, and
//! the node distances. A check that cannot be made (hwloc has no distance matrix) says so; it
//! never counts as agreement.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::ObjectType;
use hwlocality::Topology as Hwloc;

use crate::cli::TopoArgs;
use crate::fsroot::SavedTree;
use crate::hardware::distance_matrix;
use crate::{format_list, human_bytes, Failure};

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
    pub distances: BTreeMap<(usize, usize), u32>,
}

/// Reads the topology with hwloc (`HWLOC_FSROOT` must already be set for another tree).
pub fn hwloc_view() -> Result<HwView, Failure> {
    let topo = Hwloc::new().map_err(|e| format!("topo: hwloc cannot load the topology: {e}"))?;
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
                    v.distances.insert((*x, *y), dist.min(u32::MAX as u64) as u32);
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
    /// For each CPU id known to hwloc: whether domalloc knows its node.
    pub placed: BTreeSet<usize>,
    /// Distances between online nodes (absent = unknown).
    pub distances: BTreeMap<(usize, usize), u32>,
    /// The memory tiers as domalloc sees them, one line each (not compared with hwloc).
    pub tiers: Vec<String>,
}

/// Reads domalloc's own detection (`sys_root` replaces `/sys`).
pub fn domalloc_view(sys_root: Option<&Path>, cpus: &BTreeSet<usize>) -> Result<DomView, Failure> {
    let root = sys_root.map(|r| r.as_os_str().as_encoded_bytes());
    let mut t = domalloc::topology::Topology::detect(root)
        .ok_or("topo: domalloc's topology detection failed (cannot map its tables)")?;
    let mut v = DomView { tiers: tier_lines(&mut t, hbw_override().as_deref()), ..DomView::default() };
    for n in t.nodes() {
        v.nodes.insert(n, (t.memory(n), t.cpus_of(n).iter().map(|&c| c as usize).collect()));
    }
    v.memory_nodes = t.memory_nodes().iter().collect();
    for &c in cpus {
        v.home.insert(c, t.home_of_cpu(c));
        if t.cpu_node(c).is_some() {
            v.placed.insert(c);
        }
    }
    let nodes: Vec<usize> = t.nodes().collect();
    for &a in &nodes {
        for &b in &nodes {
            if t.distance(a, b) != 0 {
                v.distances.insert((a, b), t.distance(a, b));
            }
        }
    }
    Ok(v)
}

/// The high-bandwidth node list the allocator would take from the environment:
/// `DOMALLOC_HBW_NODES`, else memkind's `MEMKIND_HBW_NODES`.
fn hbw_override() -> Option<String> {
    ["DOMALLOC_HBW_NODES", "MEMKIND_HBW_NODES"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// The tiers section: each node with memory (tier, HMAT figures and best initiators), then each
/// CPU node's nearest high-bandwidth and capacity nodes. `hbw` overrides the high-bandwidth
/// nodes as `DOMALLOC_HBW_NODES` does.
pub fn tier_lines(t: &mut domalloc::topology::Topology, hbw: Option<&str>) -> Vec<String> {
    use domalloc::topology::Tier;
    let mut out = Vec::new();
    let mut source =
        if t.has_hmat() { "HMAT (access0: best initiators)" } else { "no HMAT: CPU-less nodes are capacity nodes" }
            .to_string();
    if let Some(list) = hbw {
        let mut m = domalloc::NodeMask::empty();
        let nodes = crate::parse_list(list, &[]).filter(|ids| ids.iter().all(|&n| n < domalloc::NodeMask::CAPACITY));
        nodes.iter().flatten().for_each(|&n| m.insert(n));
        if !m.is_empty() {
            t.set_hbw_nodes(&m);
            source = format!("high-bandwidth nodes {list} from the environment");
        }
    }
    out.push(format!("memory tiers (domalloc; {source}):"));
    let nodes: Vec<usize> = t.nodes().collect();
    for &n in &nodes {
        if t.tier(n) == Tier::None {
            continue;
        }
        let perf = match (t.bandwidth(n), t.latency(n)) {
            (0, 0) => "-".to_string(),
            (bw, lat) => {
                let inits: Vec<String> =
                    nodes.iter().filter(|&&i| t.is_initiator(i, n)).map(|i| i.to_string()).collect();
                format!("{bw} MB/s {lat} ns from node {}", inits.join(","))
            }
        };
        out.push(format!(
            "  node {n:>3}  {:<9} {:<5} {perf}",
            t.tier(n).name(),
            if t.cpus_of(n).is_empty() { "-" } else { "cpus" }
        ));
    }
    for &n in &nodes {
        if t.cpus_of(n).is_empty() {
            continue;
        }
        let show = |x: Option<usize>| x.map_or("none".to_string(), |x| x.to_string());
        out.push(format!(
            "  cpu node {n:>3}: nearest high-bandwidth node {}, nearest capacity node {}",
            show(t.hbw_node(n)),
            show(t.capacity_node(n))
        ));
    }
    out
}

/// The outcome of one comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Both agree; what they agree on.
    Agree(String),
    /// They differ; each difference.
    Differ(Vec<String>),
    /// Could not be compared, and why.
    NotCompared(String),
}

/// One named comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was compared.
    pub what: &'static str,
    /// The outcome.
    pub verdict: Verdict,
}

fn ids(s: &BTreeSet<usize>) -> String {
    format_list(&s.iter().copied().collect::<Vec<_>>())
}

fn verdict(diffs: Vec<String>, agree: String) -> Verdict {
    if diffs.is_empty() {
        Verdict::Agree(agree)
    } else {
        Verdict::Differ(diffs)
    }
}

/// Every comparison between the two views.
pub fn compare(hw: &HwView, dm: &DomView) -> Vec<Check> {
    let hw_nodes: BTreeSet<usize> = hw.nodes.keys().copied().collect();
    let mut checks = vec![Check {
        what: "nodes with memory",
        verdict: if hw_nodes == dm.memory_nodes {
            Verdict::Agree(format!("{{{}}}", ids(&hw_nodes)))
        } else {
            Verdict::Differ(vec![format!("hwloc {{{}}}, domalloc {{{}}}", ids(&hw_nodes), ids(&dm.memory_nodes))])
        },
    }];
    let unplaced: BTreeSet<usize> = hw.cpus.difference(&dm.placed).copied().collect();
    let unplaced = if unplaced.is_empty() {
        vec![]
    } else {
        vec![format!("CPU(s) {} that hwloc lists have no node in domalloc's tables", ids(&unplaced))]
    };
    checks.push(Check {
        what: "CPUs",
        verdict: verdict(unplaced, format!("{} CPU(s) {}", hw.cpus.len(), ids(&hw.cpus))),
    });
    checks.push(Check { what: "CPU -> node", verdict: cpu_nodes(hw, dm) });
    checks.push(Check { what: "memory per node", verdict: memory(hw, dm) });
    checks.push(Check { what: "distances", verdict: distances(hw, dm) });
    checks
}

/// Each CPU: domalloc's home node must be one of the hwloc nodes local to the CPU (hwloc
/// attaches CPUs of a memory-less node to a node with memory; several memory nodes, like DRAM
/// and HBM, may share the same CPUs).
fn cpu_nodes(hw: &HwView, dm: &DomView) -> Verdict {
    let mut bad = Vec::new();
    for (&c, &home) in &dm.home {
        let local: Vec<usize> = hw.nodes.values().filter(|n| n.cpus.contains(&c)).map(|n| n.id).collect();
        if !local.is_empty() && !local.contains(&home) {
            bad.push(format!("cpu {c}: hwloc node(s) {}, domalloc node {home}", format_list(&local)));
        }
    }
    let n = bad.len();
    if n > 8 {
        bad.truncate(8);
        bad.push(format!("... {} more", n - 8));
    }
    verdict(bad, format!("every CPU's memory comes from a node hwloc says is local to it ({} CPUs)", dm.home.len()))
}

/// Memory per node within 10% (the two count reserved memory differently).
fn memory(hw: &HwView, dm: &DomView) -> Verdict {
    let mut bad = Vec::new();
    let mut compared = 0;
    for n in hw.nodes.values() {
        let Some(&(mem, _)) = dm.nodes.get(&n.id) else { continue };
        if n.memory == 0 || mem <= 1 {
            continue; // unknown on one side
        }
        compared += 1;
        let (a, b) = (n.memory as f64, mem as f64);
        if (a - b).abs() / a.max(b) > 0.10 {
            bad.push(format!("node {}: {} (hwloc) vs {} (domalloc)", n.id, human_bytes(n.memory), human_bytes(mem)));
        }
    }
    if compared == 0 && bad.is_empty() {
        return Verdict::NotCompared("no node's size is known to both".into());
    }
    verdict(bad, format!("within 10% on {compared} node(s)"))
}

fn distances(hw: &HwView, dm: &DomView) -> Verdict {
    if hw.distances.is_empty() {
        return Verdict::NotCompared(format!(
            "hwloc has no distance matrix{}",
            if dm.nodes.len() <= 1 { " (one node: nothing to compare)" } else { "" }
        ));
    }
    let mut bad = Vec::new();
    for (&(a, b), &d) in &hw.distances {
        match dm.distances.get(&(a, b)) {
            Some(&e) if e == d => {}
            Some(&e) => bad.push(format!("{a}->{b}: {d} (hwloc) vs {e} (domalloc)")),
            None => bad.push(format!("{a}->{b}: {d} (hwloc), unknown to domalloc")),
        }
    }
    verdict(bad, format!("all {} entries equal", hw.distances.len()))
}

/// The report text.
pub fn report(hw: &HwView, dm: &DomView, checks: &[Check]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "NUMA topology: {} node(s) with memory per hwloc, {} online node(s) ({} with memory) per domalloc",
        hw.nodes.len(),
        dm.nodes.len(),
        dm.memory_nodes.len()
    );
    let _ = writeln!(
        s,
        "{:>5}  {:>12}  {:<20}  {:>12}  {:<20}",
        "node", "hwloc mem", "hwloc cpus", "domalloc mem", "domalloc cpus"
    );
    let all: BTreeSet<usize> = hw.nodes.keys().chain(dm.nodes.keys()).copied().collect();
    for id in all {
        let (hm, hc) =
            hw.nodes.get(&id).map(|n| (human_bytes(n.memory), ids(&n.cpus))).unwrap_or(("-".into(), "-".into()));
        let (dmem, dc) = dm
            .nodes
            .get(&id)
            .map(|(m, c)| {
                let mem = match m {
                    0 => "none".to_string(),
                    1 => "unknown".to_string(),
                    m => human_bytes(*m),
                };
                (mem, format_list(c))
            })
            .unwrap_or(("-".into(), "-".into()));
        let _ = writeln!(s, "{id:>5}  {hm:>12}  {hc:<20}  {dmem:>12}  {dc:<20}");
    }
    let dm_nodes: Vec<usize> = dm.nodes.keys().copied().collect();
    s.push_str(&distance_matrix(&dm_nodes, &dm.distances, "distances (domalloc):"));
    if hw.distances.is_empty() {
        let _ = writeln!(s, "distances (hwloc): none");
    } else {
        let hw_nodes: BTreeSet<usize> = hw.distances.keys().flat_map(|&(a, b)| [a, b]).collect();
        let hw_nodes: Vec<usize> = hw_nodes.into_iter().collect();
        s.push_str(&distance_matrix(&hw_nodes, &hw.distances, "distances (hwloc):"));
    }
    for l in &dm.tiers {
        let _ = writeln!(s, "{l}");
    }
    for c in checks {
        let _ = match &c.verdict {
            Verdict::Agree(what) => writeln!(s, "{:<16} agree: {what}", format!("{}:", c.what)),
            Verdict::NotCompared(why) => writeln!(s, "{:<16} not compared: {why}", format!("{}:", c.what)),
            Verdict::Differ(d) => writeln!(s, "{:<16} DIFFER: {}", format!("{}:", c.what), d.join("; ")),
        };
    }
    let differ = checks.iter().filter(|c| matches!(c.verdict, Verdict::Differ(_))).count();
    let skipped = checks.iter().filter(|c| matches!(c.verdict, Verdict::NotCompared(_))).count();
    let _ = match (differ, skipped) {
        (0, 0) => writeln!(s, "agree: yes (all {} checks)", checks.len()),
        (0, k) => writeln!(s, "agree: yes ({} checks agree, {k} not compared)", checks.len() - k),
        (d, _) => writeln!(s, "agree: NO ({d} of {} checks differ)", checks.len()),
    };
    s
}

/// `domalloc topo [--fsroot PATH]`: prints the report; exit status 0 when they agree, 1 when not.
pub fn main(args: &TopoArgs) -> Result<u8, Failure> {
    // Kept until the report is printed: an unpacked tarball is removed when it is dropped.
    let tree = args.fsroot.as_deref().map(SavedTree::open).transpose()?;
    if let Some(t) = &tree {
        // hwloc's Linux backend reads /sys and /proc below this root.
        std::env::set_var("HWLOC_FSROOT", t.root());
    }
    let hw = hwloc_view()?;
    let dm = domalloc_view(tree.as_ref().map(SavedTree::sys), &hw.cpus)?;
    let checks = compare(&hw, &dm);
    print!("{}", report(&hw, &dm, &checks));
    Ok(if checks.iter().any(|c| matches!(c.verdict, Verdict::Differ(_))) { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_nodes() -> (HwView, DomView) {
        let mut hw = HwView::default();
        hw.nodes.insert(0, HwNode { id: 0, memory: 1 << 30, cpus: [0, 1].into() });
        hw.nodes.insert(1, HwNode { id: 1, memory: 1 << 30, cpus: [2, 3].into() });
        hw.cpus = [0, 1, 2, 3].into();
        hw.distances = [((0, 0), 10), ((0, 1), 21), ((1, 0), 21), ((1, 1), 10)].into();
        let mut dm = DomView::default();
        dm.nodes.insert(0, (1 << 30, vec![0, 1]));
        dm.nodes.insert(1, (1 << 30, vec![2, 3]));
        dm.memory_nodes = [0, 1].into();
        dm.home = [(0, 0), (1, 0), (2, 1), (3, 1)].into();
        dm.placed = [0, 1, 2, 3].into();
        dm.distances = hw.distances.clone();
        (hw, dm)
    }

    fn differing(checks: &[Check]) -> Vec<&'static str> {
        checks.iter().filter(|c| matches!(c.verdict, Verdict::Differ(_))).map(|c| c.what).collect()
    }

    #[test]
    fn agreement_and_each_difference() {
        let (hw, mut dm) = two_nodes();
        let checks = compare(&hw, &dm);
        assert!(differing(&checks).is_empty());
        let r = report(&hw, &dm, &checks);
        assert!(r.contains("agree: yes (all 5 checks)"), "{r}");
        assert!(r.contains("distances (hwloc):\nnode    0   1\n   0:  10  21\n"), "{r}");
        dm.home.insert(3, 0);
        assert_eq!(differing(&compare(&hw, &dm)), ["CPU -> node"]);
        dm.memory_nodes.remove(&1);
        dm.distances.insert((0, 1), 20);
        dm.nodes.insert(1, (3 << 30, vec![2, 3]));
        dm.placed.remove(&2);
        let checks = compare(&hw, &dm);
        assert_eq!(differing(&checks), ["nodes with memory", "CPUs", "CPU -> node", "memory per node", "distances"]);
        let r = report(&hw, &dm, &checks);
        assert!(r.contains("distances:       DIFFER: 0->1: 21 (hwloc) vs 20 (domalloc)"), "{r}");
        assert!(r.contains("agree: NO (5 of 5 checks differ)"), "{r}");
    }

    #[test]
    fn missing_distances_are_not_agreement() {
        let (mut hw, dm) = two_nodes();
        hw.distances.clear();
        let checks = compare(&hw, &dm);
        assert_eq!(checks[4].verdict, Verdict::NotCompared("hwloc has no distance matrix".into()));
        assert!(report(&hw, &dm, &checks).contains("agree: yes (4 checks agree, 1 not compared)"));
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
