//! Topology detection: fake sysfs trees (2 and 4 nodes, sparse ids, a memory-only node, a
//! memory-less CPU node) and agreement with hwloc on this machine.

use std::fs;
use std::path::{Path, PathBuf};

use domalloc::topology::Topology;

struct FakeNode {
    id: usize,
    cpus: &'static str,
    mem_kb: u64,
    distance: &'static str,
}

fn fake_sysfs(name: &str, cpu_possible: &str, node_possible: &str, nodes: &[FakeNode]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("domalloc-sysfs-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let node_dir = root.join("devices/system/node");
    fs::create_dir_all(root.join("devices/system/cpu")).unwrap();
    fs::create_dir_all(&node_dir).unwrap();
    fs::write(root.join("devices/system/cpu/possible"), format!("{cpu_possible}\n")).unwrap();
    fs::write(node_dir.join("possible"), format!("{node_possible}\n")).unwrap();
    let online: Vec<String> = nodes.iter().map(|n| n.id.to_string()).collect();
    fs::write(node_dir.join("online"), online.join(",") + "\n").unwrap();
    let mem: Vec<String> = nodes.iter().filter(|n| n.mem_kb > 0).map(|n| n.id.to_string()).collect();
    fs::write(node_dir.join("has_memory"), mem.join(",") + "\n").unwrap();
    for n in nodes {
        let d = node_dir.join(format!("node{}", n.id));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cpulist"), format!("{}\n", n.cpus)).unwrap();
        fs::write(d.join("distance"), format!("{}\n", n.distance)).unwrap();
        fs::write(
            d.join("meminfo"),
            format!("Node {} MemTotal:       {} kB\nNode {} MemFree:        1000 kB\n", n.id, n.mem_kb, n.id),
        )
        .unwrap();
    }
    root
}

fn detect(root: &Path) -> Topology {
    Topology::detect(Some(root.to_str().unwrap().as_bytes())).expect("detect")
}

#[test]
fn two_nodes() {
    let root = fake_sysfs(
        "two",
        "0-3",
        "0-1",
        &[
            FakeNode { id: 0, cpus: "0-1", mem_kb: 1 << 20, distance: "10 21" },
            FakeNode { id: 1, cpus: "2-3", mem_kb: 1 << 20, distance: "21 10" },
        ],
    );
    let t = detect(&root);
    assert_eq!(t.node_ids(), 2);
    assert_eq!(t.cpu_ids(), 4);
    assert_eq!(t.memory_node_count(), 2);
    assert_eq!((0..4).map(|c| t.home_of_cpu(c)).collect::<Vec<_>>(), [0, 0, 1, 1]);
    assert_eq!(t.distance(0, 1), 21);
    assert_eq!(t.distance(1, 1), 10);
    assert_eq!(t.cpus_of(1), &[2, 3]);
    assert_eq!(t.memory(1), 1 << 30);
}

#[test]
fn four_nodes_unequal_memory_sparse_cpus() {
    let root = fake_sysfs(
        "four",
        "0-63",
        "0-3",
        &[
            FakeNode { id: 0, cpus: "0,4", mem_kb: 4 << 20, distance: "10 20 20 30" },
            FakeNode { id: 1, cpus: "1,5", mem_kb: 1 << 20, distance: "20 10 30 20" },
            FakeNode { id: 2, cpus: "2,6", mem_kb: 1 << 20, distance: "20 30 10 20" },
            FakeNode { id: 3, cpus: "3,7", mem_kb: 2 << 20, distance: "30 20 20 10" },
        ],
    );
    let t = detect(&root);
    assert_eq!(t.node_ids(), 4);
    assert_eq!(t.cpu_ids(), 64, "tables sized by the possible CPU ids");
    assert_eq!(t.home_of_cpu(5), 1);
    assert_eq!(t.home_of_cpu(7), 3);
    assert_eq!(t.cpu_node(40), None, "a possible but offline CPU has no node");
    assert_eq!(t.home_of_cpu(40), 0);
    assert_eq!(t.distance(0, 3), 30);
    assert_eq!(t.memory(0), 4 << 30);
    assert_eq!(t.memory(3), 2 << 30);
}

#[test]
fn sparse_node_ids_and_memory_only_node() {
    // Nodes 0 and 4 have CPUs and memory; node 2 has memory only (CXL-like); node 6 has CPUs
    // but no memory (its CPUs are served by the nearest node with memory).
    let root = fake_sysfs(
        "sparse",
        "0-7",
        "0-7",
        &[
            FakeNode { id: 0, cpus: "0-2", mem_kb: 1 << 20, distance: "10 30 20 25" },
            FakeNode { id: 2, cpus: "", mem_kb: 8 << 20, distance: "30 10 30 30" },
            FakeNode { id: 4, cpus: "3-5", mem_kb: 1 << 20, distance: "20 30 10 15" },
            FakeNode { id: 6, cpus: "6-7", mem_kb: 0, distance: "25 30 15 10" },
        ],
    );
    let t = detect(&root);
    assert_eq!(t.node_ids(), 8);
    assert_eq!(t.nodes().collect::<Vec<_>>(), [0, 2, 4, 6]);
    assert!(t.has_memory(2) && t.cpus_of(2).is_empty(), "memory-only node");
    assert!(!t.has_memory(6));
    assert_eq!(t.home_of_cpu(3), 4);
    assert_eq!(t.home_of_cpu(6), 4, "memory-less node 6 is served by its nearest node (4)");
    assert_eq!(t.home_of_node(2), 2);
    assert_eq!(t.distance(4, 6), 15);
    assert_eq!(t.distance(0, 2), 30);
    assert_eq!(t.memory_node_count(), 3);
}

#[test]
fn no_numa_directory_means_one_node() {
    let root = std::env::temp_dir().join(format!("domalloc-sysfs-{}-flat", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("devices/system/cpu")).unwrap();
    fs::write(root.join("devices/system/cpu/possible"), "0-5\n").unwrap();
    let t = detect(&root);
    assert_eq!(t.node_ids(), 1);
    assert_eq!((0..6).map(|c| t.home_of_cpu(c)).collect::<Vec<_>>(), [0; 6]);
}

#[test]
fn agrees_with_hwloc_on_this_machine() {
    use hwlocality::{object::types::ObjectType, Topology as Hw};
    let hw = Hw::new().expect("hwloc topology");
    let ours = Topology::detect(None).expect("detect");
    let hw_nodes: Vec<_> = hw.objects_with_type(ObjectType::NUMANode).collect();
    assert_eq!(ours.memory_node_count(), hw_nodes.len(), "number of NUMA nodes with memory");
    for n in &hw_nodes {
        let id = n.os_index().expect("node os index");
        assert!(ours.has_memory(id), "hwloc node {id} missing");
        let cpus = n.cpuset().expect("cpuset");
        for cpu in cpus.iter_set() {
            let cpu = usize::from(cpu);
            assert_eq!(ours.cpu_node(cpu), Some(id), "CPU {cpu}: hwloc says node {id}");
        }
    }
    for pu in hw.objects_with_type(ObjectType::PU) {
        let cpu = pu.os_index().unwrap();
        assert!(cpu < ours.cpu_ids(), "CPU {cpu} outside our tables");
    }
}
