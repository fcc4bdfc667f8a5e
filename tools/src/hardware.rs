//! The machine as the launcher sees it (domalloc's own topology detection, the online CPUs and
//! this process's allowed CPUs), and the two reports numactl users know: `-H` (nodes, CPUs,
//! memory, distances) and `--show` (the policy and binding the program would get).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::{format_list, parse_list, Failure};

/// Nodes and CPUs, from `domalloc::topology::Topology::detect` on a sysfs root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// The sysfs root read (`/sys`, or `DOMALLOC_TOPOLOGY_ROOT`).
    pub root: PathBuf,
    /// Online node ids, ascending.
    pub nodes: Vec<usize>,
    /// Bytes of memory per online node (0: none; 1: present, size unknown).
    pub memory: BTreeMap<usize, u64>,
    /// Bytes free per node, where the tree says (`nodeN/meminfo`).
    pub free: BTreeMap<usize, u64>,
    /// CPUs of each online node, ascending.
    pub cpus_of: BTreeMap<usize, Vec<usize>>,
    /// CPUs that exist (online), ascending.
    pub cpus: Vec<usize>,
    /// The CPUs this process may run on now (its affinity), ascending.
    pub allowed: Vec<usize>,
    /// Node distances (10 = local; absent = unknown).
    pub distance: BTreeMap<(usize, usize), u32>,
}

impl Machine {
    /// Detects the machine below `root` (default `/sys`).
    pub fn detect(root: Option<&Path>) -> Result<Machine, Failure> {
        let root = root.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/sys"));
        let t = domalloc::topology::Topology::detect(Some(root.as_os_str().as_encoded_bytes()))
            .ok_or("topology detection failed (cannot map its tables)")?;
        let mut m = Machine { root: root.clone(), ..Machine::default() };
        m.nodes = t.nodes().collect();
        for &n in &m.nodes {
            m.memory.insert(n, t.memory(n));
            m.cpus_of.insert(n, t.cpus_of(n).iter().map(|&c| c as usize).collect());
            for &k in &m.nodes {
                if t.distance(n, k) != 0 {
                    m.distance.insert((n, k), t.distance(n, k));
                }
            }
            if let Some(free) = node_free(&root, n) {
                m.free.insert(n, free);
            }
        }
        let mut cpus: Vec<usize> = m.cpus_of.values().flatten().copied().collect();
        cpus.sort_unstable();
        // Without a node directory the topology puts 1024 possible CPUs on node 0: keep the
        // online ones.
        if let Ok(online) = std::fs::read_to_string(root.join("devices/system/cpu/online")) {
            if let Some(online) = parse_list(&online, &[]) {
                cpus.retain(|c| online.binary_search(c).is_ok());
                for list in m.cpus_of.values_mut() {
                    list.retain(|c| online.binary_search(c).is_ok());
                }
            }
        }
        m.cpus = cpus;
        m.allowed = crate::affinity::current()?;
        Ok(m)
    }

    /// Nodes with memory, ascending.
    pub fn memory_nodes(&self) -> Vec<usize> {
        self.nodes.iter().copied().filter(|n| self.memory.get(n).copied().unwrap_or(0) > 0).collect()
    }

    /// Nodes with CPUs, ascending.
    pub fn cpu_nodes(&self) -> Vec<usize> {
        self.nodes.iter().copied().filter(|n| self.cpus_of.get(n).is_some_and(|c| !c.is_empty())).collect()
    }

    /// The node CPU `cpu` belongs to.
    pub fn node_of_cpu(&self, cpu: usize) -> Option<usize> {
        self.cpus_of.iter().find(|(_, cpus)| cpus.binary_search(&cpu).is_ok()).map(|(&n, _)| n)
    }
}

/// `MemFree` of `nodeN/meminfo` in bytes.
fn node_free(root: &Path, node: usize) -> Option<u64> {
    let text = std::fs::read_to_string(root.join(format!("devices/system/node/node{node}/meminfo"))).ok()?;
    let line = text.lines().find(|l| l.contains("MemFree:"))?;
    let kb: u64 = line.split_whitespace().rev().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn spaced(ids: &[usize]) -> String {
    ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
}

/// `domalloc run -H`: the layout of `numactl -H`.
pub fn hardware_report(m: &Machine) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "available: {} nodes ({})", m.nodes.len(), format_list(&m.nodes));
    for &n in &m.nodes {
        let cpus = m.cpus_of.get(&n).map(Vec::as_slice).unwrap_or(&[]);
        let _ = writeln!(s, "node {n} cpus: {}", spaced(cpus));
        let size = match m.memory.get(&n).copied().unwrap_or(0) {
            1 => "unknown".to_string(),
            b => format!("{} MB", b >> 20),
        };
        let _ = writeln!(s, "node {n} size: {size}");
        let free = m.free.get(&n).map_or("unknown".to_string(), |b| format!("{} MB", b >> 20));
        let _ = writeln!(s, "node {n} free: {free}");
    }
    s.push_str(&distance_matrix(&m.nodes, &m.distance, "node distances:"));
    s
}

/// A distance matrix in numactl's layout (`-` where unknown).
pub fn distance_matrix(nodes: &[usize], d: &BTreeMap<(usize, usize), u32>, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{title}");
    let _ = write!(s, "node ");
    for n in nodes {
        let _ = write!(s, "{n:>4}");
    }
    s.push('\n');
    for a in nodes {
        let _ = write!(s, "{:>4}:", a);
        for b in nodes {
            match d.get(&(*a, *b)) {
                Some(v) => {
                    let _ = write!(s, "{v:>4}");
                }
                None => s.push_str("   -"),
            }
        }
        s.push('\n');
    }
    s
}

/// What `--show` needs to know about the program's start.
#[derive(Debug, Clone, Default)]
pub struct ShowInput<'a> {
    /// The effective `DOMALLOC_POLICY` (set by the options, or inherited), if any.
    pub policy: Option<&'a str>,
    /// The CPUs the program will run on.
    pub cpus: &'a [usize],
    /// The variables set for the program (`LD_PRELOAD` first).
    pub env: &'a [(String, String)],
}

/// `domalloc run --show`: the policy and binding the program would get, in numactl's words.
pub fn show_report(m: &Machine, input: &ShowInput<'_>) -> String {
    let mut s = String::new();
    let parsed =
        input.policy.and_then(|p| domalloc::options::parse_policy(p.as_bytes()).map(|(pol, min)| (p, pol, min)));
    let mem = m.memory_nodes();
    let list_of = |mask: &domalloc::NodeMask| mask.iter().collect::<Vec<usize>>();
    use domalloc::options::Policy;
    let (name, preferred, membind, interleave) = match &parsed {
        None => ("default", "current".to_string(), mem.clone(), None),
        Some((_, Policy::Local, _)) => ("local", "current".to_string(), mem.clone(), None),
        Some((_, Policy::Bind(mask), _)) => ("bind", "current".to_string(), list_of(mask), None),
        Some((_, Policy::Preferred(n), _)) => ("preferred", n.to_string(), mem.clone(), None),
        Some((_, Policy::PreferredMany(mask), _)) => ("preferred-many", spaced(&list_of(mask)), mem.clone(), None),
        Some((_, Policy::Interleave(mask), _)) => {
            ("interleave", "current".to_string(), mem.clone(), Some(list_of(mask)))
        }
    };
    // The tier policy is not one of numactl's: shown as written.
    let name = match input.policy.filter(|p| domalloc::options::parse_tier(p.as_bytes()).is_some()) {
        Some(tier) => tier,
        None => name,
    };
    let _ = writeln!(s, "policy: {name}");
    let _ = writeln!(s, "preferred node: {preferred}");
    if let Some(il) = interleave {
        let _ = writeln!(s, "interleavemask: {}", spaced(&il));
    }
    if let Some((_, _, min)) = parsed.filter(|(_, _, min)| *min > 0) {
        let _ = writeln!(
            s,
            "policy applies to: blocks of {} and more (smaller blocks: local)",
            crate::human_bytes(min as u64)
        );
    }
    let _ = writeln!(s, "physcpubind: {}", spaced(input.cpus));
    let mut nodes: Vec<usize> = input.cpus.iter().filter_map(|&c| m.node_of_cpu(c)).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let _ = writeln!(s, "cpubind: {}", spaced(&nodes));
    let _ = writeln!(s, "nodebind: {}", spaced(&nodes));
    let _ = writeln!(s, "membind: {}", spaced(&membind));
    if let Some((text, _, _)) = parsed {
        let _ = writeln!(s, "DOMALLOC_POLICY={text}");
    }
    for (n, v) in input.env {
        if n != "DOMALLOC_POLICY" {
            let _ = writeln!(s, "{n}={v}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn two_nodes() -> Machine {
        Machine {
            root: "/fake".into(),
            nodes: vec![0, 1, 2],
            memory: [(0, 1 << 30), (1, 2 << 30), (2, 0)].into(),
            free: [(0, 512 << 20)].into(),
            cpus_of: [(0, vec![0, 1]), (1, vec![2, 3]), (2, vec![])].into(),
            cpus: vec![0, 1, 2, 3],
            allowed: vec![0, 1, 2, 3],
            distance: [((0, 0), 10), ((0, 1), 21), ((1, 0), 21), ((1, 1), 10)].into(),
        }
    }

    #[test]
    fn hardware_like_numactl() {
        let r = hardware_report(&two_nodes());
        assert!(
            r.starts_with("available: 3 nodes (0-2)\nnode 0 cpus: 0 1\nnode 0 size: 1024 MB\nnode 0 free: 512 MB\n"),
            "{r}"
        );
        assert!(r.contains("node 1 free: unknown\n"), "{r}");
        assert!(r.contains("node distances:\nnode    0   1   2\n   0:  10  21   -\n"), "{r}");
    }

    #[test]
    fn show_policies() {
        let m = two_nodes();
        let env = vec![("LD_PRELOAD".to_string(), "/x.so".to_string())];
        let r = show_report(&m, &ShowInput { policy: Some("interleave:0-1@1M"), cpus: &[2, 3], env: &env });
        assert!(r.contains("policy: interleave\n") && r.contains("interleavemask: 0 1\n"), "{r}");
        assert!(r.contains("blocks of 1.0 MiB and more"), "{r}");
        assert!(r.contains("physcpubind: 2 3\ncpubind: 1\nnodebind: 1\nmembind: 0 1\n"), "{r}");
        assert!(r.contains("DOMALLOC_POLICY=interleave:0-1@1M\nLD_PRELOAD=/x.so\n"), "{r}");
        let r = show_report(&m, &ShowInput { policy: None, cpus: &[0], env: &[] });
        assert!(r.starts_with("policy: default\npreferred node: current\nphyscpubind: 0\n"), "{r}");
        let r = show_report(&m, &ShowInput { policy: Some("preferred:1"), cpus: &[0], env: &[] });
        assert!(r.contains("policy: preferred\npreferred node: 1\n"), "{r}");
        let r = show_report(&m, &ShowInput { policy: Some("bind:1"), cpus: &[0], env: &[] });
        assert!(r.contains("membind: 1\n"), "{r}");
    }
}
