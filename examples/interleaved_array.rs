//! A big array whose pages alternate over every node with memory (for data all threads read,
//! like a lookup table), filled and summed by several threads.
//!
//! ```text
//! cargo run --release --example interleaved_array
//! ```

// allocator-api2's collections, re-exported by domalloc: no dependency of its own needed.
use domalloc::allocator_api2::vec::Vec;

fn main() {
    const LEN: usize = (32 << 20) / 8; // 32 MiB of f64
    let mut table: Vec<f64, _> = Vec::with_capacity_in(LEN, domalloc::Interleaved::all());
    table.resize(LEN, 0.0);
    assert!(domalloc::node_of(table.as_ptr().cast()).is_some(), "the table comes from domalloc");

    // Four threads each fill a quarter.
    let quarter = LEN / 4;
    std::thread::scope(|s| {
        for (t, part) in table.chunks_mut(quarter).enumerate() {
            s.spawn(move || {
                for (i, x) in part.iter_mut().enumerate() {
                    *x = (t * quarter + i) as f64;
                }
            });
        }
    });
    let sum: f64 = table.iter().sum();
    let expected = (LEN as f64 - 1.0) * LEN as f64 / 2.0;
    assert_eq!(sum, expected);
    let topo = domalloc::topology::get();
    println!(
        "interleaved array: {} MiB over {} node(s) with memory, sum {sum}",
        (LEN * 8) >> 20,
        topo.memory_node_count()
    );
}
