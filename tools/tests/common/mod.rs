//! Shared by the tests that run the `domalloc` binary: running it, fake sysfs trees (as in the
//! core's tests/topology.rs) and a harmless library to preload.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `domalloc` binary cargo built for these tests.
pub fn domalloc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_domalloc"));
    c.env_remove("DOMALLOC_TOPOLOGY_ROOT").env_remove("DOMALLOC_POLICY").env_remove("LD_PRELOAD");
    c
}

/// Runs `domalloc ARGS` with `envs`.
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = domalloc();
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run domalloc")
}

/// stdout, stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Asserts a refusal: exit status 1, nothing on stdout, one line on stderr containing `want`.
pub fn assert_refused(o: &Output, want: &str, what: &str) {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(1), "{what}: exit status; stderr: {err}");
    assert!(out.is_empty(), "{what}: stdout should be empty: {out}");
    assert_eq!(err.lines().count(), 1, "{what}: one line on stderr, got: {err}");
    assert!(err.starts_with("domalloc: ") && err.contains(want), "{what}: expected {want:?} in: {err}");
}

/// A library that is safe to preload into anything: the C library this test runs with (already
/// loaded into every dynamically linked program), so `domalloc run` can be tested without
/// building libdomalloc.so.
pub fn harmless_lib() -> String {
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libc.so.6"))
        .expect("libc.so.6 mapped")
        .to_string()
}

/// This process's allowed CPUs (what the launcher started from here may use).
pub fn allowed_cpus() -> Vec<usize> {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")).unwrap();
    parse_cpu_list(line.split(':').nth(1).unwrap())
}

/// `0-2,5` -> [0, 1, 2, 5] (the launcher's own parser; `""` -> []).
pub fn parse_cpu_list(s: &str) -> Vec<usize> {
    domalloc_tools::parse_list(s, &[]).unwrap_or_default()
}

/// One node of a fake tree.
pub struct FakeNode {
    /// Node id.
    pub id: usize,
    /// Its cpulist (`""`: none).
    pub cpus: String,
    /// Memory in kB (0: none).
    pub mem_kb: u64,
    /// Its distance line.
    pub distance: String,
}

/// A fake sysfs tree `<dir>/sys/devices/system/...` (the layout hwloc-gather-topology saves;
/// `DOMALLOC_TOPOLOGY_ROOT` is `<dir>/sys`): the node lists, and each node's cpulist, distance
/// and meminfo (`MemFree` half of `MemTotal`). Returns `<dir>`. The one fake tree of these
/// tests: `tests/topo.rs` adds what hwloc or the HMAT tiers read besides.
pub fn fake_tree(name: &str, cpu_possible: &str, nodes: &[FakeNode]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("domalloc-tools-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let sys = dir.join("sys");
    let node_dir = sys.join("devices/system/node");
    fs::create_dir_all(sys.join("devices/system/cpu")).unwrap();
    fs::create_dir_all(&node_dir).unwrap();
    fs::write(sys.join("devices/system/cpu/possible"), format!("{cpu_possible}\n")).unwrap();
    let cpus: Vec<&str> = nodes.iter().map(|n| n.cpus.as_str()).filter(|c| !c.is_empty()).collect();
    fs::write(sys.join("devices/system/cpu/online"), cpus.join(",") + "\n").unwrap();
    let max = nodes.iter().map(|n| n.id).max().unwrap_or(0);
    fs::write(node_dir.join("possible"), format!("0-{max}\n")).unwrap();
    let ids = |f: &dyn Fn(&FakeNode) -> bool| {
        nodes.iter().filter(|n| f(n)).map(|n| n.id.to_string()).collect::<Vec<_>>().join(",")
    };
    fs::write(node_dir.join("online"), ids(&|_| true) + "\n").unwrap();
    fs::write(node_dir.join("has_memory"), ids(&|n| n.mem_kb > 0) + "\n").unwrap();
    fs::write(node_dir.join("has_cpu"), ids(&|n| !n.cpus.is_empty()) + "\n").unwrap();
    for n in nodes {
        let d = node_dir.join(format!("node{}", n.id));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cpulist"), format!("{}\n", n.cpus)).unwrap();
        fs::write(d.join("distance"), format!("{}\n", n.distance)).unwrap();
        fs::write(
            d.join("meminfo"),
            format!("Node {0} MemTotal:       {1} kB\nNode {0} MemFree:        {2} kB\n", n.id, n.mem_kb, n.mem_kb / 2),
        )
        .unwrap();
    }
    dir
}

/// A fake 4-node machine built around this process's allowed CPUs, so binding to its nodes
/// works for real: node 0 holds the first allowed CPU, node 1 the other allowed ones (if any),
/// node 2 is memory-only, node 3 has CPU 4000 (not allowed) and no memory.
pub fn four_node_tree(name: &str) -> (PathBuf, Vec<usize>) {
    let allowed = allowed_cpus();
    let list = |c: &[usize]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
    let node = |id, cpus: String, mem_kb, distance: &str| FakeNode { id, cpus, mem_kb, distance: distance.into() };
    let nodes = [
        node(0, list(&allowed[..1]), 1 << 20, "10 21 31 41"),
        node(1, list(&allowed[1..]), 2 << 20, "21 10 32 42"),
        node(2, String::new(), 4 << 20, "31 32 10 43"),
        node(3, "4000".into(), 0, "41 42 43 10"),
    ];
    (fake_tree(name, "0-4095", &nodes), allowed)
}

/// The `sys` directory of a fake tree (what `DOMALLOC_TOPOLOGY_ROOT` names).
pub fn sys_of(dir: &Path) -> String {
    dir.join("sys").to_str().unwrap().to_string()
}
