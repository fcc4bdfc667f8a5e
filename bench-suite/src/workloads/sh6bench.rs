//! `sh6bench`: batches freed in LIFO order and in allocation (reverse-of-LIFO) order, after
//! MicroQuill's SmartHeap sh6bench.
//!
//! Every thread repeats three patterns on batches of 1500 blocks of 1–1000 bytes:
//! allocate the batch and free it last-in-first-out; allocate it and free it first-in-first-out
//! (in allocation order); allocate it and free the even-indexed blocks from the back, then the
//! odd-indexed blocks from the front (interleaved holes).
//!
//! Stresses: free-list ordering and coalescing behaviour, how well an allocator reuses memory
//! in whatever order it comes back, per-thread throughput without sharing.
//! Checks: head/tail stamps verified before every free.

use rand::Rng;

use super::Workload;
use crate::common::{self, Blk, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "sh6bench",
    summary: "batches of 1-1000 B blocks freed LIFO, FIFO and in interleaved orders",
    help: "sh6bench: LIFO and reverse-order frees (after SmartHeap's sh6bench).\n\
\n\
Every thread repeats: allocate 1500 blocks of 1-1000 bytes and free them last-in-first-out;\n\
allocate 1500 and free them in allocation order; allocate 1500 and free the even-indexed ones\n\
from the back, then the odd-indexed ones from the front.\n\
\n\
Stresses: free-list ordering, reuse of memory returned in different orders, per-thread\n\
throughput. Checks: head/tail stamps verified before every free.\n\
Work: 20000 rounds (90M malloc/free pairs) at --scale 1, split over the threads.",
    run,
    knobs: &[],
};

const BATCH: usize = 1500;
const BASE_ROUNDS: u64 = 20_000;

fn run(p: &Params) -> Result<Outcome, String> {
    let t = p.threads;
    let rounds = p.scaled(BASE_ROUNDS, t as u64);
    let sums = common::run_threads(t, |i| {
        let mut rng = common::rng(p.seed, i as u64);
        let mut v: Vec<Blk> = Vec::with_capacity(BATCH);
        let mut sum = 0u64;
        let fill = |v: &mut Vec<Blk>, rng: &mut rand::rngs::SmallRng| {
            v.clear();
            for _ in 0..BATCH {
                v.push(Blk::new(rng.gen_range(1..=1000), rng.gen()));
            }
        };
        for _ in 0..common::share(rounds, t, i) {
            // LIFO
            fill(&mut v, &mut rng);
            for b in v.iter().rev() {
                // SAFETY: each block is freed exactly once.
                sum = sum.wrapping_add(unsafe { b.check_free("sh6bench lifo") });
            }
            // FIFO (allocation order)
            fill(&mut v, &mut rng);
            for b in v.iter() {
                // SAFETY: as above.
                sum = sum.wrapping_add(unsafe { b.check_free("sh6bench fifo") });
            }
            // Even ones from the back, then odd ones from the front.
            fill(&mut v, &mut rng);
            for b in v.iter().step_by(2).rev() {
                // SAFETY: as above.
                sum = sum.wrapping_add(unsafe { b.check_free("sh6bench holes") });
            }
            for b in v.iter().skip(1).step_by(2) {
                // SAFETY: as above.
                sum = sum.wrapping_add(unsafe { b.check_free("sh6bench holes") });
            }
        }
        sum
    });
    let checksum = sums.into_iter().fold(0u64, u64::wrapping_add);
    Ok(Outcome { ops: rounds * 6 * BATCH as u64, checksum, extra: String::new() })
}
