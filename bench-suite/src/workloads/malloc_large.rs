//! `malloc-large`: mimalloc-bench's `malloc-large` program, as it is written.
//!
//! The program (`bench/malloc-large/malloc-large.cpp`) keeps 20 slots; 2000 times it picks a
//! slot and a size uniformly from 5-25 MiB and assigns `std::make_unique<char[]>(size)` to the
//! slot: the new block is allocated (and zero-filled by value-initialisation: every byte
//! written) before the slot's old block is freed, so up to 21 blocks of 5-25 MiB are live, about
//! 300 MiB. One thread. Ours does exactly that (zero-fill with `memset` after `malloc`, as the
//! C++ code compiles), and checks each block's first and last byte before freeing it. What it
//! stresses: huge blocks reused across sizes (mapping, page faults, what is cached and purged),
//! and memory bandwidth (30 GB written at `--scale 1`).
//!
//! `--threads` is ignored: it always runs on one thread.

use rand::Rng;

use super::Workload;
use crate::common::{self, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "malloc-large",
    summary: "mimalloc-bench's malloc-large: 20 slots of 5-25 MiB blocks, zero-filled, replaced at random (1 thread)",
    help: "malloc-large: mimalloc-bench's malloc-large program.\n\
\n\
20 slots; each iteration picks a slot and a size uniformly in 5-25 MiB, allocates the new\n\
block and writes every byte of it (make_unique<char[]> zero-fills), then frees the slot's old\n\
block: up to 21 blocks of 5-25 MiB live. --threads is ignored (1 thread).\n\
\n\
Stresses: huge blocks reused across sizes (page faults, caching, purging), memory bandwidth.\n\
Checks: the first and last byte of every block are still zero when it is freed.\n\
Work: 2000 iterations at --scale 1.",
    run,
    knobs: &[],
};

const MIB: usize = 1 << 20;
const SLOTS: usize = 20;
const ITERATIONS: u64 = 2000;

fn run(p: &Params) -> Result<Outcome, String> {
    let iterations = p.scaled(ITERATIONS, 1);
    let res = common::run_threads(1, |_| {
        let mut rng = common::rng(p.seed, 0);
        let mut slots: [(*mut u8, usize); SLOTS] = [(std::ptr::null_mut(), 0); SLOTS];
        let mut bad = 0u64;
        let mut ops = 0u64;
        let mut sum = 0u64;
        // SAFETY (the block): every slot holds null or a live block of its recorded size.
        let check = |b: *mut u8, n: usize| unsafe { *b != 0 || *b.add(n - 1) != 0 };
        for _ in 0..iterations {
            let slot = rng.gen_range(0..SLOTS);
            let size = rng.gen_range(5 * MIB..=25 * MIB);
            // (Through `black_box`: the compiler would turn malloc + memset(0) into calloc,
            // which writes nothing to fresh pages; the C++ program writes every byte.)
            let b = std::hint::black_box(common::xmalloc(size));
            // SAFETY: `b` has `size` writable bytes.
            unsafe { std::ptr::write_bytes(b, 0, size) };
            ops += 1;
            sum = sum.wrapping_add(size as u64);
            let (old, n) = std::mem::replace(&mut slots[slot], (b, size));
            if !old.is_null() {
                bad += u64::from(check(old, n));
                // SAFETY: a live block of ours, freed once.
                unsafe { libc::free(old.cast()) };
                ops += 1;
            }
        }
        for (b, n) in slots {
            if !b.is_null() {
                bad += u64::from(check(b, n));
                // SAFETY: as above.
                unsafe { libc::free(b.cast()) };
                ops += 1;
            }
        }
        (bad, ops, sum)
    });
    let (bad, ops, sum) = res[0];
    if bad > 0 {
        return Err(format!("malloc-large: {bad} blocks were not zero when freed"));
    }
    Ok(Outcome { ops, checksum: sum, extra: format!("iterations={iterations}") })
}
