//! Lock counts of the contention-stats build (`--features contention-stats`; nothing to run
//! without it), counted, not timed: a producer/consumer pipeline of xmalloc-testN's shape (the
//! producer mallocs 64-byte blocks in batches of 4096, the consumer frees them) takes no arena
//! lock per page in steady state. Each of the producer's pages makes a round trip: given up full,
//! queued in its arena by the consumer's first free into it, adopted again by the producer. At
//! ae71cce both ends took the arena's lock: 1717 arena locks in 2 M operations (8.6 per 10,000);
//! the arenas' lock-free inboxes take none.

#![cfg(feature = "contention-stats")]
// SAFETY (all unsafe blocks in this file): raw allocator calls on blocks this test allocated
// with the layout it frees them with; each block is freed once, by the consumer.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Condvar, Mutex};

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

const ENV: &str = "DOMALLOC_CONTENTION_CASE";
const BATCH: usize = 4096;
const BATCHES: usize = 256;

struct Batch([usize; BATCH]);

fn pipeline() {
    let layout = Layout::from_size_align(64, 8).unwrap();
    let stack: Mutex<Vec<Box<Batch>>> = Mutex::new(Vec::with_capacity(BATCHES));
    let ready = Condvar::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..BATCHES {
                let mut b = Box::new(Batch([0; BATCH]));
                for slot in b.0.iter_mut() {
                    let p = unsafe { A.alloc(layout) };
                    assert!(!p.is_null());
                    unsafe { p.write_bytes(0x5a, 64) };
                    *slot = p as usize;
                }
                let mut g = stack.lock().unwrap();
                while g.len() >= 8 {
                    g = ready.wait(g).unwrap();
                }
                g.push(b);
                ready.notify_all();
            }
        });
        s.spawn(|| {
            for _ in 0..BATCHES {
                let b = {
                    let mut g = stack.lock().unwrap();
                    loop {
                        if let Some(b) = g.pop() {
                            ready.notify_all();
                            break b;
                        }
                        g = ready.wait(g).unwrap();
                    }
                };
                for &p in b.0.iter() {
                    unsafe { A.dealloc(p as *mut u8, layout) };
                }
            }
        });
    });
}

/// The value of `key=` in the contention line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn producer_consumer_pages_return_without_arena_locks() {
    const NAME: &str = "producer_consumer_pages_return_without_arena_locks";
    if std::env::var(ENV).is_ok_and(|c| c == NAME) {
        pipeline();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV, NAME)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the pipeline failed: {stderr}");
    let line = stderr.lines().find(|l| l.starts_with("domalloc: contention:")).expect("no contention line");
    let (ops, arena, steady) = (field(line, "ops"), field(line, "locks_arena"), field(line, "locks_steady"));
    eprintln!("{line}");
    eprintln!(
        "per 10,000 operations: arena locks {:.2}, steady-state locks {:.2}",
        arena as f64 * 1e4 / ops as f64,
        steady as f64 * 1e4 / ops as f64
    );
    assert!(ops >= (2 * BATCH * BATCHES) as u64, "ops={ops}: the counters missed the pipeline");
    // 256 batches of 4096 blocks fill ~1000 pages; one lock per round trip would be ~2000.
    assert!(arena * 10_000 <= ops, "{arena} arena locks in {ops} operations: more than 1 per 10,000");
}
