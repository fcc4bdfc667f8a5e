//! A `Vec` whose memory is on a chosen NUMA node, whichever thread touches it first: the node
//! this thread runs on now, then every other node with memory. Works on a one-node machine too
//! (node 0 is the only one).
//!
//! ```text
//! cargo run --release --example node_local_vec
//! ```

// allocator-api2's collections, re-exported by domalloc: no dependency of its own needed.
use domalloc::allocator_api2::vec::Vec;

fn main() {
    let here = domalloc::current_node();
    let node = domalloc::Node::new(here).expect("the node this thread runs on has memory");
    let mut v: Vec<f64, _> = Vec::new_in(node);
    v.resize(1 << 20, 1.0); // 8 MiB on node `here`
    assert_eq!(domalloc::node_of(v.as_ptr().cast()), Some(here));
    assert_eq!(v.iter().sum::<f64>(), (1 << 20) as f64);
    println!("node-local Vec: {} MiB on node {here} (the current node)", (v.len() * 8) >> 20);

    // Every node with memory; node ids may be sparse.
    let topo = domalloc::topology::get();
    for n in topo.nodes().filter(|&n| topo.has_memory(n)) {
        let node = domalloc::Node::new(n).expect("a node with memory");
        let mut w: Vec<u64, _> = Vec::with_capacity_in(1 << 19, node);
        w.extend(0..1 << 19);
        assert_eq!(domalloc::node_of(w.as_ptr().cast()), Some(n));
        println!("node-local Vec: {} MiB on node {n}", (w.len() * 8) >> 20);
    }
    // A node that does not exist is refused.
    assert!(domalloc::Node::new(usize::MAX).is_none());
}
