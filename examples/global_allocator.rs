//! domalloc as the program's global allocator: every `Box`, `Vec`, `String` and `HashMap` below
//! comes from it.
//!
//! ```text
//! cargo run --release --example global_allocator
//! ```

use std::collections::HashMap;

#[global_allocator]
static GLOBAL: domalloc::DomAlloc = domalloc::DomAlloc::new();

fn main() {
    let words: Vec<String> = (0..100_000).map(|i| format!("word{}", i % 1000)).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in &words {
        *counts.entry(w.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), 1000);
    assert!(counts.values().all(|&c| c == 100));

    // Threads allocate from the node they run on and may free each other's blocks.
    let handles: Vec<_> = (0..4)
        .map(|t| std::thread::spawn(move || (0..10_000).map(|i| vec![t as u8; i % 512]).collect::<Vec<_>>()))
        .collect();
    let blocks: Vec<Vec<u8>> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(blocks.len(), 40_000);

    // domalloc knows every block it handed out, and on which node's memory it lives.
    let big = vec![0u8; 8 << 20];
    let node = domalloc::node_of(big.as_ptr()).expect("the Vec's buffer comes from domalloc");
    assert!(domalloc::node_of(words[0].as_ptr()).is_some());
    println!(
        "global allocator: {} words, {} blocks from 4 threads, an 8 MiB buffer on node {node} (this thread runs on node {})",
        words.len(),
        blocks.len(),
        domalloc::current_node()
    );
}
