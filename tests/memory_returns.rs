//! Memory goes back: RSS falls near its baseline after a large working set is freed, thread
//! churn stays bounded, and the stats balance (everything freed is accounted for).

// SAFETY (all unsafe blocks in this file): raw allocator calls on blocks the test itself
// allocated and still owns, with the layout it allocated them with.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::sync::Mutex;

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

/// Tests in this file measure process-wide memory: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn small_in_use() -> u64 {
    let s = domalloc::stats();
    s.nodes[..s.node_count].iter().map(|n| n.small_blocks_in_use).sum()
}

#[test]
fn rss_falls_back_after_large_working_set_is_freed() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    domalloc::collect(true);
    let base = rss_bytes();
    let in_use_before = small_in_use();
    // ~400 MiB in small, medium, large and huge blocks, all touched.
    let mut v: Vec<Vec<u8>> = Vec::new();
    let sizes = [24usize, 100, 700, 5000, 40_000, 300_000, 3 << 20];
    let mut total = 0;
    let mut i = 0;
    while total < 400 << 20 {
        let s = sizes[i % sizes.len()];
        v.push(vec![i as u8; s]);
        total += s;
        i += 1;
    }
    let peak = rss_bytes();
    assert!(peak > base + (300 << 20), "working set not resident? base {base} peak {peak}");
    drop(v);
    // After the purge delay (1000 ms by default) for spans and 2x that for cached huge blocks,
    // a non-forced collect returns what is due.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    domalloc::collect(false);
    let after = rss_bytes();
    eprintln!("rss: base {} MiB, peak {} MiB, after free+collect {} MiB", base >> 20, peak >> 20, after >> 20);
    assert!(after < base + (24 << 20), "RSS did not fall back: base {base} after {after}");
    // Everything this test allocated is accounted as freed.
    assert!(
        small_in_use() <= in_use_before + 64,
        "stats: {} small blocks still in use (before: {in_use_before})",
        small_in_use()
    );
}

#[test]
fn thread_churn_stays_bounded() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (tx, rx) = std::sync::mpsc::channel::<Vec<Box<[u8]>>>();
    let mut mapped_after_warmup = 0;
    for round in 0..400 {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut keep = Vec::new();
                    for i in 0..64usize {
                        let b = vec![(t + i) as u8; 16 + (i * 97 + t * 13) % 4000].into_boxed_slice();
                        if i % 2 == 0 {
                            keep.push(b);
                        }
                    }
                    tx.send(keep).unwrap(); // freed by the main thread: cross-thread frees
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        while let Ok(v) = rx.try_recv() {
            for b in &v {
                assert!(b.iter().all(|&x| x == b[0]));
            }
        }
        if round == 50 {
            let s = domalloc::stats();
            mapped_after_warmup = s.nodes[..s.node_count].iter().map(|n| n.mapped_bytes).sum::<u64>();
        }
    }
    let s = domalloc::stats();
    let mapped: u64 = s.nodes[..s.node_count].iter().map(|n| n.mapped_bytes).sum();
    eprintln!(
        "3200 threads: mapped {} MiB (after warm-up {} MiB), live heaps {}",
        mapped >> 20,
        mapped_after_warmup >> 20,
        s.live_heaps
    );
    assert!(
        mapped <= mapped_after_warmup + (16 << 20),
        "memory grows with thread churn: {mapped} vs {mapped_after_warmup}"
    );
    assert!(s.live_heaps < 64, "heaps of dead threads not recycled: {}", s.live_heaps);
    assert!(s.pages_from_arena + s.heaps_taken_over > 0, "pages of exited threads were never reused");
}

#[test]
fn stats_count_blocks_in_use_per_class() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // (`collect` also empties the hardened build's quarantine, whose blocks count as in use.)
    domalloc::collect(false);
    // A class no other test here uses (the thread-churn test frees blocks of up to 4 KiB across
    // threads; their owners collect those frees whenever they refill, which would shift the
    // count of a shared class while this test runs).
    let c = domalloc::size_class::class_of(6000);
    let bs = domalloc::size_class::class_size(c);
    let before = domalloc::stats();
    let v: Vec<Box<[u8; 6000]>> = (0..2_000).map(|_| Box::new([1u8; 6000])).collect();
    let during = domalloc::stats();
    assert!(
        during.classes[c].in_use >= before.classes[c].in_use + 2_000,
        "{} in use after 2000 allocations, {} before",
        during.classes[c].in_use,
        before.classes[c].in_use
    );
    assert_eq!(during.classes[c].block_size as usize, bs);
    drop(v);
    domalloc::collect(false);
    let after = domalloc::stats();
    assert!(
        after.classes[c].in_use <= before.classes[c].in_use + 10,
        "{} vs {}",
        after.classes[c].in_use,
        before.classes[c].in_use
    );
}
