//! malloc/free pairs, 16 B to 1 MiB, on 1 and 2 threads and with cross-thread frees, for
//! `DomAlloc`, `System` (glibc) and the `mimalloc` crate, side by side.
//!
//! `cargo bench --bench pairs` (criterion). The allocators are called through `GlobalAlloc`
//! directly, so one binary measures all three under the same conditions.

// SAFETY (all unsafe blocks in this file): raw allocator calls on non-zero layouts; each block
// is freed once, by the allocator that returned it, with its own layout.
#![allow(clippy::undocumented_unsafe_blocks, missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

static DOM: domalloc::DomAlloc = domalloc::DomAlloc::new();
static MI: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn allocators() -> [(&'static str, &'static (dyn GlobalAlloc + Sync)); 3] {
    [("domalloc", &DOM), ("system", &System), ("mimalloc", &MI)]
}

const SIZES: [usize; 6] = [16, 64, 256, 4096, 65536, 1 << 20];
const BATCH: usize = 64;

/// One iteration: allocate BATCH blocks, touch each, free them in allocation order.
fn batch(a: &dyn GlobalAlloc, l: Layout, slots: &mut [*mut u8; BATCH]) {
    for s in slots.iter_mut() {
        let p = unsafe { a.alloc(l) };
        unsafe { p.write(1) };
        *s = black_box(p);
    }
    for &p in slots.iter() {
        unsafe { a.dealloc(p, l) };
    }
}

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("pairs/1-thread");
    g.throughput(Throughput::Elements(BATCH as u64));
    for size in SIZES {
        let l = Layout::from_size_align(size, 8).unwrap();
        for (name, a) in allocators() {
            let mut slots = [std::ptr::null_mut(); BATCH];
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| b.iter(|| batch(a, l, &mut slots)));
        }
    }
    g.finish();
}

fn threads(c: &mut Criterion, nthreads: usize, cross: bool) {
    let label = if cross { "pairs/cross-thread" } else { "pairs/2-threads" };
    let mut g = c.benchmark_group(label);
    g.throughput(Throughput::Elements((BATCH * nthreads) as u64));
    for size in [16usize, 256, 4096, 65536] {
        let l = Layout::from_size_align(size, 8).unwrap();
        for (name, a) in allocators() {
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter_custom(|iters| run_threads(a, l, nthreads, iters, cross))
            });
        }
    }
    g.finish();
}

/// `n` threads each do `iters` batches; with `cross`, thread i frees the blocks thread i+1
/// allocated (ring), so every free is remote.
fn run_threads(a: &'static (dyn GlobalAlloc + Sync), l: Layout, n: usize, iters: u64, cross: bool) -> Duration {
    let barrier = Arc::new(Barrier::new(n + 1));
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| std::sync::mpsc::sync_channel::<Vec<usize>>(4)).unzip();
    let mut rxs: Vec<_> = rxs.into_iter().map(Some).collect();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let b = barrier.clone();
            let tx = txs[(i + 1) % n].clone();
            let rx = rxs[i].take().unwrap();
            std::thread::spawn(move || {
                b.wait();
                let mut slots = [std::ptr::null_mut(); BATCH];
                for _ in 0..iters {
                    if cross {
                        let v: Vec<usize> = (0..BATCH)
                            .map(|_| {
                                let p = unsafe { a.alloc(l) };
                                unsafe { p.write(1) };
                                p as usize
                            })
                            .collect();
                        tx.send(v).unwrap();
                        for p in rx.recv().unwrap() {
                            unsafe { a.dealloc(p as *mut u8, l) };
                        }
                    } else {
                        batch(a, l, &mut slots);
                    }
                }
            })
        })
        .collect();
    drop(txs);
    barrier.wait();
    let t = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    t.elapsed()
}

fn two_threads(c: &mut Criterion) {
    threads(c, 2, false);
}
fn cross_thread(c: &mut Criterion) {
    threads(c, 2, true);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = single_thread, two_threads, cross_thread
}
criterion_main!(benches);
