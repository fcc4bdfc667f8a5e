//! Collection-heavy and thread-heavy work with domalloc as the global allocator.

// SAFETY (all unsafe blocks in this file): raw allocator calls on blocks the test itself
// allocated and still owns, with the layout it allocated them with.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::collections::HashMap;

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

#[test]
fn vec_hashmap_string_churn() {
    let mut total = 0usize;
    for round in 0..50 {
        let mut m: HashMap<String, Vec<u64>> = HashMap::new();
        for i in 0..2000 {
            let k = format!("key-{round}-{i}");
            let v: Vec<u64> = (0..(i % 37) as u64).collect();
            m.insert(k, v);
        }
        for (k, v) in &m {
            assert!(k.starts_with("key-"));
            total += v.len();
        }
        m.retain(|k, _| k.len() % 2 == 0);
    }
    assert!(total > 0);
}

#[test]
fn many_threads_cross_free() {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..20_000usize {
                    let v = vec![(t * 31 + i) as u8; 1 + (i * 7919) % 3000];
                    tx.send(v).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = std::thread::spawn(move || {
        let mut n = 0;
        for v in rx {
            assert!(v.iter().all(|&b| b == v[0]));
            n += 1;
        }
        n
    });
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), 80_000);
}
