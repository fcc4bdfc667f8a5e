//! `domalloc topo`, by running the real binary: `--fsroot` must be a sysfs tree (else one line,
//! exit 1), a tree complete enough for hwloc is compared check by check (both distance matrices
//! shown), and a tree where the two detections differ says what differs and exits 1.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// A two-node, four-CPU tree with what hwloc's Linux backend needs besides what domalloc reads
/// (per-CPU topology masks, /proc/cpuinfo). `has_memory` is the list domalloc trusts.
fn hwloc_tree(name: &str, has_memory: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("domalloc-topo-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let sys = dir.join("sys/devices/system");
    let w = |p: &Path, s: &str| {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("{s}\n")).unwrap();
    };
    for (f, v) in [("possible", "0-3"), ("online", "0-3")] {
        w(&sys.join("cpu").join(f), v);
    }
    for (f, v) in [("possible", "0-1"), ("online", "0-1"), ("has_cpu", "0-1"), ("has_memory", has_memory)] {
        w(&sys.join("node").join(f), v);
    }
    for (n, cpus, mask, dist) in [(0, "0-1", "3", "10 21"), (1, "2-3", "c", "21 10")] {
        let d = sys.join(format!("node/node{n}"));
        w(&d.join("cpulist"), cpus);
        w(&d.join("cpumap"), mask);
        w(&d.join("distance"), dist);
        w(&d.join("meminfo"), &format!("Node {n} MemTotal:       1048576 kB\nNode {n} MemFree:        524288 kB"));
    }
    let mut cpuinfo = String::new();
    for c in 0..4usize {
        let t = sys.join(format!("cpu/cpu{c}/topology"));
        let (pkg, pkg_mask, own) = (c / 2, if c < 2 { "3" } else { "c" }, format!("{:x}", 1 << c));
        for (f, v) in [
            ("physical_package_id", pkg.to_string()),
            ("core_id", (c % 2).to_string()),
            ("package_cpus", pkg_mask.into()),
            ("core_siblings", pkg_mask.into()),
            ("core_cpus", own.clone()),
            ("thread_siblings", own),
        ] {
            w(&t.join(f), &v);
        }
        w(&sys.join(format!("cpu/cpu{c}/online")), "1");
        cpuinfo += &format!("processor\t: {c}\nphysical id\t: {pkg}\ncore id\t\t: {}\n\n", c % 2);
    }
    w(&dir.join("proc/cpuinfo"), &cpuinfo);
    dir
}

#[test]
fn fsroot_that_is_not_a_sysfs_tree_is_an_error() {
    let base = std::env::temp_dir().join(format!("domalloc-topo-{}-bad", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let missing = base.join("missing");
    let o = run(&["topo", "--fsroot", missing.to_str().unwrap()], &[]);
    assert_refused(&o, "no such directory", "missing");
    fs::create_dir_all(base.join("empty")).unwrap();
    let o = run(&["topo", "--fsroot", base.join("empty").to_str().unwrap()], &[]);
    assert_refused(&o, "not a sysfs tree (no sys/devices/system/cpu/possible below it)", "empty");
    let tree = hwloc_tree("sysitself", "0-1");
    let o = run(&["topo", "--fsroot", tree.join("sys").to_str().unwrap()], &[]);
    assert_refused(&o, "this is a sys directory itself", "sys itself");
    let _ = fs::remove_dir_all(base);
    let _ = fs::remove_dir_all(tree);
}

#[test]
fn a_complete_tree_agrees_and_shows_both_matrices() {
    let tree = hwloc_tree("agree", "0-1");
    let o = run(&["topo", "--fsroot", tree.to_str().unwrap()], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let matrix = "node    0   1\n   0:  10  21\n   1:  21  10\n";
    assert!(out.contains(&format!("distances (domalloc):\n{matrix}")), "{out}");
    assert!(out.contains(&format!("distances (hwloc):\n{matrix}")), "{out}");
    for line in [
        "nodes with memory: agree: {0-1}",
        "CPUs:            agree: 4 CPU(s) 0-3",
        "memory per node: agree: within 10% on 2 node(s)",
        "distances:       agree: all 4 entries equal",
        "agree: yes (all 5 checks)",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    let _ = fs::remove_dir_all(tree);
}

#[test]
fn a_disagreement_is_named_and_exits_1() {
    // domalloc trusts has_memory (node 1 has none); hwloc sizes node 1 from its meminfo.
    let tree = hwloc_tree("differ", "0");
    let o = run(&["topo", "--fsroot", tree.to_str().unwrap()], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("nodes with memory: DIFFER: hwloc {0-1}, domalloc {0}"), "{out}");
    assert!(out.contains("CPU -> node:     DIFFER: cpu 2: hwloc node(s) 1, domalloc node 0; cpu 3:"), "{out}");
    assert!(out.contains("agree: NO (2 of 5 checks differ)"), "{out}");
    let _ = fs::remove_dir_all(tree);
}

#[test]
fn this_machine_verdict_matches_exit_status() {
    let o = run(&["topo"], &[]);
    let (out, err) = text(&o);
    assert!(out.contains("distances (domalloc):"), "{out}{err}");
    let agree = out.lines().last().unwrap_or("").starts_with("agree: yes");
    assert_eq!(o.status.code(), Some(if agree { 0 } else { 1 }), "{out}");
}
