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

/// Writes HMAT figures for memory node `target` (as Linux shows them: `access0/initiators/`
/// with the read/write bandwidth in MB/s and latency in ns, and one `nodeI` link per best
/// initiator; a directory with a `cpulist` here).
fn add_hmat(root: &Path, target: usize, initiators: &[usize], bw_mbs: u32, lat_ns: u32) {
    let d = root.join(format!("devices/system/node/node{target}/access0/initiators"));
    fs::create_dir_all(&d).unwrap();
    for (f, v) in
        [("read_bandwidth", bw_mbs), ("write_bandwidth", bw_mbs), ("read_latency", lat_ns), ("write_latency", lat_ns)]
    {
        fs::write(d.join(f), format!("{v}\n")).unwrap();
    }
    for i in initiators {
        fs::create_dir_all(d.join(format!("node{i}"))).unwrap();
        fs::write(d.join(format!("node{i}/cpulist")), "0\n").unwrap();
    }
}

/// The `hmat2s-cxl` guest's tree as its kernel (6.1) shows it: two sockets (DDR nodes 0 and 1
/// with CPUs), a CPU-less HBM-like node near each (2 near 0, 3 near 1), a far CXL-like node 4.
fn hmat_two_sockets(name: &str, cxl: bool) -> PathBuf {
    let mut nodes = vec![
        FakeNode { id: 0, cpus: "0-1", mem_kb: 256 << 10, distance: "10 21 12 23 30" },
        FakeNode { id: 1, cpus: "2-3", mem_kb: 256 << 10, distance: "21 10 23 12 30" },
        FakeNode { id: 2, cpus: "", mem_kb: 128 << 10, distance: "12 23 10 21 30" },
        FakeNode { id: 3, cpus: "", mem_kb: 128 << 10, distance: "23 12 21 10 30" },
    ];
    if cxl {
        nodes.push(FakeNode { id: 4, cpus: "", mem_kb: 256 << 10, distance: "30 30 30 30 10" });
    } else {
        for n in &mut nodes {
            n.distance = &n.distance[..n.distance.len() - 3];
        }
    }
    let root = fake_sysfs(name, "0-3", if cxl { "0-4" } else { "0-3" }, &nodes);
    add_hmat(&root, 0, &[0], 20480, 100);
    add_hmat(&root, 1, &[1], 20480, 100);
    add_hmat(&root, 2, &[0], 81920, 110);
    add_hmat(&root, 3, &[1], 81920, 110);
    if cxl {
        add_hmat(&root, 4, &[0], 5120, 300);
    }
    root
}

#[test]
fn hmat_tiers_two_sockets_with_hbm_and_cxl() {
    use domalloc::topology::Tier;
    let t = detect(&hmat_two_sockets("hmat-cxl", true));
    assert!(t.has_hmat());
    assert_eq!((t.bandwidth(2), t.latency(2)), (81920, 110));
    assert!(t.is_initiator(0, 2) && !t.is_initiator(1, 2));
    let tiers: Vec<Tier> = (0..5).map(|n| t.tier(n)).collect();
    assert_eq!(tiers, [Tier::Standard, Tier::Standard, Tier::HighBandwidth, Tier::HighBandwidth, Tier::Capacity]);
    assert_eq!(t.hbw_node(0), Some(2), "socket 0's HBM");
    assert_eq!(t.hbw_node(1), Some(3), "socket 1's HBM, not socket 0's");
    assert_eq!(t.capacity_node(0), Some(4));
    assert_eq!(t.capacity_node(1), Some(4), "the CXL node is the capacity node of both sockets");
    assert_eq!(t.tier_nodes(Tier::HighBandwidth).iter().collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn hmat_tiers_without_cxl_have_no_capacity_node() {
    let t = detect(&hmat_two_sockets("hmat", false));
    assert_eq!((t.hbw_node(0), t.hbw_node(1)), (Some(2), Some(3)));
    assert_eq!((t.capacity_node(0), t.capacity_node(1)), (None, None));
}

#[test]
fn no_hmat_no_hbw_node_until_named() {
    use domalloc::topology::Tier;
    // The same machine without HMAT: CPU-less nodes are capacity nodes (nothing says which is
    // fast); naming them as DOMALLOC_HBW_NODES does makes them high-bandwidth, each socket
    // getting the nearer one by SLIT distance.
    let root = hmat_two_sockets("nohmat", false);
    for n in 0..4 {
        fs::remove_dir_all(root.join(format!("devices/system/node/node{n}/access0"))).unwrap();
    }
    let mut t = detect(&root);
    assert!(!t.has_hmat());
    assert_eq!((t.tier(2), t.tier(3)), (Tier::Capacity, Tier::Capacity));
    assert_eq!(t.hbw_node(0), None);
    assert_eq!(t.capacity_node(1), Some(3));
    let mut m = domalloc::NodeMask::empty();
    m.insert(2);
    m.insert(3);
    t.set_hbw_nodes(&m);
    assert_eq!((t.tier(2), t.tier(3)), (Tier::HighBandwidth, Tier::HighBandwidth));
    assert_eq!((t.hbw_node(0), t.hbw_node(1)), (Some(2), Some(3)));
    assert_eq!(t.capacity_node(0), None);
}

#[test]
fn no_tiers_on_plain_two_nodes() {
    use domalloc::topology::Tier;
    let root = fake_sysfs(
        "plain-tiers",
        "0-3",
        "0-1",
        &[
            FakeNode { id: 0, cpus: "0-1", mem_kb: 1 << 20, distance: "10 21" },
            FakeNode { id: 1, cpus: "2-3", mem_kb: 1 << 20, distance: "21 10" },
        ],
    );
    let t = detect(&root);
    assert_eq!((t.tier(0), t.tier(1)), (Tier::Standard, Tier::Standard));
    assert_eq!((t.hbw_node(0), t.capacity_node(0)), (None, None));
}
