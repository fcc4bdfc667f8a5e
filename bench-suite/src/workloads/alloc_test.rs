//! `alloc-test1` and `alloc-testN`: the shape of OLogN's allocator tester that mimalloc-bench
//! runs as `alloc-test1` (1 thread) and `alloc-testN` (N threads), randomPos_RandomSize with
//! full memory access.
//!
//! Each thread owns 2^18 / threads slots. Setup fills about half of them. The main loop then
//! picks a slot with an 80/20 Pareto distribution over six nested ranges (26% of the picks go
//! to 0.006% of the slots, 39% to the next 0.15%, ...: a few hot slots take most of the
//! traffic); an occupied slot is read completely (every word summed) and freed, an empty one
//! gets a new block that is written completely (memset). Sizes are power-of-two classes with a
//! geometric weight: half of the blocks are 5-8 bytes, a quarter 9-16, ..., 1/128 are 513-1024.
//! At the end every remaining block is read and freed. All frees are local (no sharing).
//!
//! Stresses: the small-object fast path under a skewed, realistic reuse pattern (hot slots
//! recycled at once, cold ones living long), reading and writing every byte of every block.

use super::Workload;
use crate::common::{self, Outcome, Params};

/// Registry entry for the single-threaded run.
pub const ONE: Workload = Workload {
    name: "alloc-test1",
    summary: "alloc-test, 1 thread: Pareto-hot slots, geometric 5-1024 B sizes, full read+write",
    help: "alloc-test1: OLogN's allocator tester (mimalloc-bench's alloc-test1), one thread.\n\
\n\
2^18 slots; setup fills about half. The main loop picks a slot with an 80/20 Pareto\n\
distribution over nested ranges (a few hot slots get most picks): an occupied slot is read\n\
completely and freed, an empty one gets a new block written completely. Sizes: power-of-two\n\
classes with geometric weight (1/2 are 5-8 B, 1/4 9-16 B, ..., 1/128 513-1024 B).\n\
--threads is ignored (always 1 thread).\n\
\n\
Stresses: the small-object fast path under skewed reuse, full access to every block.\n\
Checks: every block is filled with a value derived from its size and checked when it is read\n\
back before free.\n\
Work: 10M main-loop operations at --scale 1 (alloc-test's: 100M).",
    run: run_one,
    knobs: &[],
};

/// Registry entry for the multi-threaded run.
pub const MANY: Workload = Workload {
    name: "alloc-testN",
    summary: "alloc-test, --threads threads: the same pattern, 2^18/threads slots per thread",
    help: "alloc-testN: OLogN's allocator tester (mimalloc-bench's alloc-testN), --threads threads.\n\
\n\
Each thread runs the alloc-test1 pattern on its own 2^18/threads slots (Pareto-hot slot\n\
choice, geometric 5-1024 B sizes, every block written and read in full); nothing is shared.\n\
\n\
Stresses: per-thread scalability of the small-object fast path. Checks: as alloc-test1.\n\
Work: 10M main-loop operations per thread at --scale 1.",
    run: run_many,
    knobs: &[],
};

const TOTAL_SLOTS: usize = 1 << 18;
const MAX_SIZE_EXP: u32 = 10;
const BASE_ITERS: u64 = 10_000_000;
const PARETO: [f64; 7] = [0.262144, 0.393216, 0.24576, 0.08192, 0.01536, 0.001536, 0.000064];

/// alloc-test's PRNG (xorshift with a multiplicative output).
struct Prng(u64);

impl Prng {
    fn next32(&mut self) -> u32 {
        let ret = self.0.wrapping_mul(0xd989_bcac_c137_dcd5);
        self.0 ^= self.0 >> 11;
        self.0 ^= self.0 << 31;
        self.0 ^= self.0 >> 18;
        (ret >> 32) as u32
    }
    fn next64(&mut self) -> u64 {
        (u64::from(self.next32()) << 32) + u64::from(self.next32())
    }
}

/// calcSizeWithStatsAdjustment: a power-of-two class with geometric weight, then a size in it.
fn size_from(mut r: u64) -> usize {
    let e = MAX_SIZE_EXP - 3;
    let class_base = (r & ((1 << e) - 1)) + 1;
    r >>= e;
    let idx = class_base.trailing_zeros() + 2;
    ((r & ((1 << idx) - 1)) + 1 + (1 << idx)) as usize
}

struct Pareto {
    ranges: [u32; 6],
    offsets: [u32; 8],
}

impl Pareto {
    fn new(items: u32) -> Pareto {
        let mut ranges = [0u32; 6];
        ranges[0] = (u32::MAX as f64 * PARETO[0]) as u32;
        ranges[5] = (u32::MAX as f64 * (1.0 - PARETO[6])) as u32;
        for i in 1..5 {
            ranges[i] = ranges[i - 1] + (u32::MAX as f64 * PARETO[i]) as u32;
        }
        let mut offsets = [0u32; 8];
        offsets[7] = items;
        for i in 0..6 {
            offsets[i + 1] = offsets[i] + (items as f64 * PARETO[6 - i]) as u32;
        }
        Pareto { ranges, offsets }
    }
    fn pick(&self, r1: u32, r2: u32) -> usize {
        let idx = self.ranges.iter().position(|&lim| r1 < lim).unwrap_or(6);
        let range = (self.offsets[idx + 1] - self.offsets[idx]).max(1);
        (self.offsets[idx] + r2 % range) as usize
    }
}

/// Reads a block completely (alloc-test's "full" access) and checks the fill byte.
fn read_free(p: *mut u8, size: usize) -> u64 {
    let fill = size as u8;
    // SAFETY: p is a live block of `size` bytes filled with `fill`.
    let sum: u64 = unsafe { std::slice::from_raw_parts(p, size) }.iter().map(|&b| u64::from(b)).sum();
    if sum != u64::from(fill) * size as u64 {
        common::record_error(format!("alloc-test: block {p:p} of {size} bytes lost its contents"));
    }
    // SAFETY: the block came from malloc and this thread owns it.
    unsafe { libc::free(p.cast()) };
    sum
}

fn alloc_fill(size: usize) -> *mut u8 {
    let p = common::xmalloc(size);
    // SAFETY: p holds `size` bytes.
    unsafe { std::ptr::write_bytes(p, size as u8, size) };
    p
}

fn one_thread(items: usize, iters: u64, seed: u64) -> u64 {
    let pareto = Pareto::new(items as u32);
    let slots = common::xcalloc(items, std::mem::size_of::<(usize, usize)>()) as *mut (*mut u8, usize);
    // SAFETY (whole loop bodies): every index is < items, the slot array holds `items` entries.
    let slot = |i: usize| unsafe { &mut *slots.add(i) };
    let mut rng = Prng(seed);
    let mut sum = 0u64;
    for i in 0..items / 32 {
        let bits = rng.next32();
        for j in 0..32 {
            if bits >> j & 1 == 1 {
                let size = size_from(rng.next64());
                *slot(i * 32 + j) = (alloc_fill(size), size);
            }
        }
    }
    for _ in 0..iters {
        let (r1, r2) = (rng.next32(), rng.next32());
        let s = slot(pareto.pick(r1, r2));
        if !s.0.is_null() {
            sum = sum.wrapping_add(read_free(s.0, s.1));
            s.0 = std::ptr::null_mut();
        } else {
            let size = size_from(rng.next64());
            *s = (alloc_fill(size), size);
        }
    }
    for i in 0..items {
        let s = slot(i);
        if !s.0.is_null() {
            sum = sum.wrapping_add(read_free(s.0, s.1));
        }
    }
    // SAFETY: slots came from calloc.
    unsafe { libc::free(slots.cast()) };
    sum
}

fn run_n(p: &Params, threads: usize) -> Result<Outcome, String> {
    let iters = p.scaled(BASE_ITERS, 32);
    let items = TOTAL_SLOTS / threads;
    let sums = common::run_threads(threads, |i| one_thread(items, iters, 41 ^ common::mix(p.seed + i as u64)));
    Ok(Outcome {
        ops: iters * threads as u64,
        checksum: sums.iter().fold(0, |a, s| a ^ s),
        extra: format!("threads={threads} slots_per_thread={items}"),
    })
}

fn run_one(p: &Params) -> Result<Outcome, String> {
    run_n(p, 1)
}

fn run_many(p: &Params) -> Result<Outcome, String> {
    run_n(p, p.threads)
}
