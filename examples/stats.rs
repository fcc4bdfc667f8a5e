//! Reading domalloc's statistics from Rust: a snapshot with [`domalloc::stats`], and the report
//! that `DOMALLOC_STATS=1` prints at exit with [`domalloc::print_stats`].
//!
//! ```text
//! cargo run --release --example stats
//! ```

#[global_allocator]
static GLOBAL: domalloc::DomAlloc = domalloc::DomAlloc::new();

fn main() {
    let small: Vec<Vec<u8>> = (0..1000).map(|i| vec![1u8; 16 + i % 1000]).collect();
    let big = vec![1u8; 64 << 20];

    let s = domalloc::stats();
    let nodes = &s.nodes[..s.node_count];
    let mapped: u64 = nodes.iter().map(|n| n.mapped_bytes).sum();
    assert!(mapped >= big.len() as u64, "the 64 MiB buffer is mapped ({mapped} bytes)");
    for n in nodes {
        println!(
            "node {}: {} MiB mapped (peak {} MiB), {} blocks allocated, {} freed, {} freed from another node",
            n.node,
            n.mapped_bytes >> 20,
            n.mapped_peak_bytes >> 20,
            n.allocs,
            n.frees,
            n.remote_frees
        );
    }
    let live = s.total(|n| n.allocs) - s.total(|n| n.frees);
    assert!(live > small.len() as u64, "at least the blocks we hold are live ({live})");
    println!(
        "stats: {} node(s), NUMA logic {}, {} small blocks kept",
        nodes.len(),
        if s.numa { "on" } else { "off" },
        small.len()
    );
    domalloc::print_stats(); // the text report, on stderr
}
