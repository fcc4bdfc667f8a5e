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

/// Zero-size requests at every alignment (up to 1 GiB) get their own block: distinct live
/// pointers, usable size queries and frees that find the block's own metadata, even right after
/// a huge block was freed into the cache next to them.
#[test]
fn zero_size_at_every_alignment() {
    for shift in 3..=30 {
        let align = 1usize << shift;
        let big = unsafe { domalloc::raw::alloc(8 << 20, 1 << 22) };
        assert!(!big.is_null());
        unsafe { domalloc::raw::free(big) };
        let a = unsafe { domalloc::raw::alloc(0, align) };
        let b = unsafe { domalloc::raw::alloc(0, align) };
        assert!(!a.is_null() && !b.is_null() && a != b, "align {align}");
        assert_eq!(a as usize % align, 0);
        assert_eq!(b as usize % align, 0);
        let _ = unsafe { domalloc::raw::usable_size(a) };
        let _ = unsafe { domalloc::raw::usable_size(b) };
        unsafe {
            domalloc::raw::free(a);
            domalloc::raw::free(b);
        }
    }
}
