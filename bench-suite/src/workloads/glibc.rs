//! `glibc-simple` and `glibc-thread`: the two glibc malloc micro-benchmarks that mimalloc-bench
//! runs (`bench/glibc-bench/bench-malloc-simple.c` and `bench-malloc-thread.c`).
//!
//! * `glibc-simple` (one thread): for block sizes 16, 32 and 64 bytes and batch lengths 25,
//!   100, 400 and 1600, mallocs a batch of blocks of one size, writes every 4-byte word of
//!   each, then frees the batch in allocation order (FIFO); repeated so that every batch length
//!   makes the same number of mallocs. Each (size, length) pair runs four times: a warm-up and
//!   a run on the main thread, a run on a second thread (the main thread waits for it), and a
//!   run on the main thread again after that thread has exited (glibc's "main arena with
//!   SINGLE_THREAD_P false"). Stresses the thread-cache fast path and how an allocator behaves
//!   once a process has had a second thread.
//! * `glibc-thread` (`--threads` threads): every thread keeps a working set of 1024 slots and
//!   loops: free the block in a slot, malloc a new one there and write each of its bytes. The
//!   slot and the size come from two tables made once with a seeded RNG and shared by all
//!   threads (4096 slot offsets; 8000 sizes 4..32768 bytes with an inverse-square
//!   distribution, so most are small and a few are large). Each thread walks the same tables.
//!
//! Differences from glibc's: the work is fixed (glibc-thread runs for 2 seconds), and blocks are
//! checked before they are freed.

use std::sync::OnceLock;

use rand::Rng;

use super::Workload;
use crate::common::{self, Outcome, Params};

/// Registry entry for the single-threaded batch benchmark.
pub const SIMPLE: Workload = Workload {
    name: "glibc-simple",
    summary: "glibc bench-malloc-simple (1 thread): FIFO batches of 25-1600 blocks of 16/32/64 B",
    help: "glibc-simple: glibc's bench-malloc-simple (mimalloc-bench's glibc-simple).\n\
\n\
One thread. For sizes 16, 32, 64 and batch lengths 25, 100, 400, 1600: malloc a batch, write\n\
every 4-byte word of each block, free the batch in allocation order; repeated so that each\n\
length makes the same number of mallocs. Every (size, length) runs four times: warm-up and\n\
main thread, on a second thread, and on the main thread again after that thread exited.\n\
\n\
Stresses: the single-thread fast path (thread cache, batch refill and flush) and the cost of a\n\
process that once had a second thread. Checks: the first and last word of every block are\n\
verified before it is freed.\n\
Work: 500000 mallocs per (size, length, run) at --scale 1 (glibc's: 2000000), 24M in all.",
    run: run_simple,
    knobs: &[],
};

/// Registry entry for the multi-threaded random-slot benchmark.
pub const THREAD: Workload = Workload {
    name: "glibc-thread",
    summary: "glibc bench-malloc-thread: per-thread 1024 slots, random free+malloc of 4-32768 B",
    help: "glibc-thread: glibc's bench-malloc-thread (mimalloc-bench's glibc-thread).\n\
\n\
--threads threads, each with a working set of 1024 slots: free the block in a slot, malloc a\n\
new one there and write every byte of it. Slots and sizes come from shared tables made once\n\
with a seeded RNG: 4096 slot offsets and 8000 sizes of 4..32768 bytes, inverse-square\n\
distributed (mostly small, a few large). Every thread walks the same tables.\n\
\n\
Stresses: thread-local random free/malloc across many size classes, the medium/large size\n\
boundary (a few blocks up to 32 KiB), per-thread scalability. Checks: the first and last byte\n\
of every block are verified before it is freed.\n\
Work: 16M free+malloc iterations at --scale 1, split over the threads.",
    run: run_thread,
    knobs: &[],
};

const SIMPLE_ITERS: u64 = 500_000;
const SIMPLE_SIZES: [usize; 3] = [16, 32, 64];
const SIMPLE_BATCHES: [usize; 4] = [25, 100, 400, 1600];

/// One do_benchmark() of bench-malloc-simple: `iters` rounds of a FIFO batch of `n` blocks.
fn simple_batches(arr: *mut *mut u32, size: usize, n: usize, iters: u64) -> u64 {
    let words = size / 4;
    let mut sum = 0u64;
    for _ in 0..iters {
        for i in 0..n {
            let p = common::xmalloc(size) as *mut u32;
            for g in 0..words {
                // SAFETY: p holds `size` bytes = `words` u32s.
                unsafe { *p.add(g) = g as u32 };
            }
            // SAFETY: arr holds 1600 pointers; i < n <= 1600.
            unsafe { *arr.add(i) = p };
        }
        for i in 0..n {
            // SAFETY: slot i holds the live block written above.
            unsafe {
                let p = *arr.add(i);
                if *p != 0 || *p.add(words - 1) != words as u32 - 1 {
                    common::record_error(format!("glibc-simple: block {p:p} of {size} bytes lost its contents"));
                }
                sum += u64::from(*p.add(words - 1));
                libc::free(p.cast());
            }
        }
    }
    sum
}

#[derive(Clone, Copy)]
struct Arr(*mut *mut u32);
// SAFETY: the batch array is used by one thread at a time (the main thread waits for the other).
unsafe impl Send for Arr {}
// SAFETY: as above.
unsafe impl Sync for Arr {}

fn run_simple(p: &Params) -> Result<Outcome, String> {
    let base = p.scaled(SIMPLE_ITERS, 1600);
    let mut sum = 0u64;
    let mut mallocs = 0u64;
    for size in SIMPLE_SIZES {
        let arr = Arr(common::xmalloc(1600 * std::mem::size_of::<*mut u32>()) as *mut *mut u32);
        let iters = move |n: usize| base / n as u64;
        // Warm-up, then the main thread.
        for _ in 0..2 {
            for n in SIMPLE_BATCHES {
                sum += simple_batches(arr.0, size, n, iters(n));
                mallocs += iters(n) * n as u64;
            }
        }
        // A second thread (glibc: a thread arena); the main thread waits for it.
        let t = std::thread::spawn(move || {
            let a = arr;
            crate::pin::pin_current(0);
            SIMPLE_BATCHES.iter().map(|&n| simple_batches(a.0, size, n, iters(n))).sum::<u64>()
        });
        sum += t.join().map_err(|_| "glibc-simple: the second thread panicked")?;
        mallocs += SIMPLE_BATCHES.iter().map(|&n| iters(n) * n as u64).sum::<u64>();
        // The main thread again, now that the process has had a second thread.
        for n in SIMPLE_BATCHES {
            sum += simple_batches(arr.0, size, n, iters(n));
            mallocs += iters(n) * n as u64;
        }
        // SAFETY: arr came from malloc; all its blocks are freed.
        unsafe { libc::free(arr.0.cast()) };
    }
    Ok(Outcome { ops: 2 * mallocs, checksum: sum, extra: format!("mallocs={mallocs}") })
}

const WORKING_SET: usize = 1024;
const NUM_SIZES: usize = 8000;
const NUM_OFFSETS: usize = WORKING_SET * 4;
const MIN_SIZE: f64 = 4.0;
const MAX_SIZE: f64 = 32768.0;
const THREAD_ITERS: u64 = 16_000_000;

struct Tables {
    sizes: Vec<u32>,
    offsets: Vec<u16>,
}

/// The shared random tables (glibc's init_random_values), made once per seed.
fn tables(seed: u64) -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut rng = common::rng(seed, 88);
        // Inverse square: x = ((max^-1 - min^-1) r + min^-1)^-1.
        let (lo, hi) = (MIN_SIZE.powi(-1), MAX_SIZE.powi(-1));
        let sizes = (0..NUM_SIZES).map(|_| (1.0 / ((hi - lo) * rng.gen::<f64>() + lo)) as u32).collect();
        let offsets = (0..NUM_OFFSETS).map(|_| rng.gen_range(0..WORKING_SET) as u16).collect();
        Tables { sizes, offsets }
    })
}

fn thread_loop(t: &Tables, iters: u64) -> u64 {
    let mut set = [(std::ptr::null_mut::<u8>(), 0usize); WORKING_SET];
    let (mut oi, mut si) = (0usize, 0usize);
    let mut sum = 0u64;
    let free = |(p, n): (*mut u8, usize), sum: &mut u64| {
        if p.is_null() {
            return;
        }
        // SAFETY: p is a live block of n >= 1 bytes written by this thread.
        unsafe {
            if *p != 0 || *p.add(n - 1) != (n - 1) as u8 {
                common::record_error(format!("glibc-thread: block {p:p} of {n} bytes lost its contents"));
            }
            libc::free(p.cast());
        }
        *sum += n as u64;
    };
    for _ in 0..iters {
        oi = if oi >= NUM_OFFSETS - 1 { 0 } else { oi + 1 };
        si = if si >= NUM_SIZES - 1 { 0 } else { si + 1 };
        let slot = t.offsets[oi] as usize;
        let n = t.sizes[si].max(1) as usize;
        free(set[slot], &mut sum);
        let p = common::xmalloc(n);
        for i in 0..n {
            // SAFETY: p holds n bytes.
            unsafe { *p.add(i) = i as u8 };
        }
        set[slot] = (p, n);
    }
    for b in set {
        free(b, &mut sum);
    }
    sum
}

fn run_thread(p: &Params) -> Result<Outcome, String> {
    let t = tables(p.seed);
    let total = p.scaled(THREAD_ITERS, p.threads as u64);
    let sums = common::run_threads(p.threads, |i| thread_loop(t, common::share(total, p.threads, i)));
    Ok(Outcome { ops: 2 * total, checksum: sums.iter().sum(), extra: format!("iterations={total}") })
}
