//! `rptest`: random sizes with a realistic distribution (many small, few large) across
//! threads, in the style of rpmalloc's benchmark.
//!
//! Every thread keeps a working set of 2000 slots; an operation frees the block in a random
//! slot (if any) and allocates a new one whose size is drawn from a skewed distribution:
//! 70% 16–128 B, 20% 129 B–1 KiB, 8% 1–16 KiB, 1.8% 16–256 KiB, 0.2% 256 KiB–2 MiB. Every 256
//! operations a thread passes 32 of its blocks to the next thread's mailbox (bounded: a full
//! mailbox makes the sender free them itself) and frees whatever its own mailbox holds.
//!
//! Stresses: the whole size-class range at once (small, medium and large paths, and the
//! transitions between them), fragmentation, a modest stream of cross-thread frees.
//! Checks: head/tail stamps verified before every free.

use std::sync::Mutex;

use rand::rngs::SmallRng;
use rand::Rng;

use super::Workload;
use crate::common::{self, Blk, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "rptest",
    summary: "skewed random sizes 16 B..2 MiB, working sets per thread, some cross-thread frees",
    help: "rptest: random sizes with a realistic distribution across threads (rpmalloc-style).\n\
\n\
Each thread keeps 2000 slots; an operation frees a random slot's block and allocates a new\n\
one with a size drawn from: 70% 16-128 B, 20% 129 B-1 KiB, 8% 1-16 KiB, 1.8% 16-256 KiB,\n\
0.2% 256 KiB-2 MiB. Every 256 operations a thread hands 32 blocks to the next thread, which\n\
frees them.\n\
\n\
Stresses: all size classes and large blocks mixed, fragmentation, some remote frees.\n\
Checks: head/tail stamps verified before every free.\n\
Work: 32M operations at --scale 1, split over the threads.",
    run,
    knobs: &[],
};

const SLOTS: usize = 2000;
const BASE_OPS: u64 = 32_000_000;
const HANDOFF_EVERY: u64 = 256;
const HANDOFF: usize = 32;
/// A mailbox holds at most this many blocks; beyond it the sender frees its blocks itself.
const MAILBOX_MAX: usize = 8 * HANDOFF;

/// Draws a size from the skewed distribution.
pub fn pick_size(rng: &mut SmallRng) -> usize {
    match rng.gen_range(0..1000) {
        0..=699 => rng.gen_range(16..=128),
        700..=899 => rng.gen_range(129..=1024),
        900..=979 => rng.gen_range(1025..=16 << 10),
        980..=997 => rng.gen_range((16 << 10) + 1..=256 << 10),
        _ => rng.gen_range((256 << 10) + 1..=2 << 20),
    }
}

fn run(p: &Params) -> Result<Outcome, String> {
    let t = p.threads;
    let total = p.scaled(BASE_OPS, t as u64 * HANDOFF_EVERY);
    let mailboxes: Vec<Mutex<Vec<Blk>>> = (0..t).map(|_| Mutex::new(Vec::new())).collect();

    let sums = common::run_threads(t, |i| {
        let mut rng = common::rng(p.seed, i as u64);
        let mut slots = vec![Blk::NULL; SLOTS];
        let mut sum = 0u64;
        let n = common::share(total, t, i);
        for op in 1..=n {
            let k = rng.gen_range(0..SLOTS);
            let old = std::mem::replace(&mut slots[k], Blk::NULL);
            if old.is_some() {
                // SAFETY: the slot owned a live block.
                sum = sum.wrapping_add(unsafe { old.check_free("rptest") });
            }
            let size = pick_size(&mut rng);
            slots[k] = Blk::new(size, rng.gen());
            if op % HANDOFF_EVERY == 0 && t > 1 {
                let mut out = Vec::with_capacity(HANDOFF);
                for _ in 0..HANDOFF {
                    let j = rng.gen_range(0..SLOTS);
                    if slots[j].is_some() {
                        out.push(std::mem::replace(&mut slots[j], Blk::NULL));
                    }
                }
                {
                    // Bounded: a thread that is behind (or done) does not let blocks pile up.
                    let mut target = mailboxes[(i + 1) % t].lock().unwrap();
                    if target.len() < MAILBOX_MAX {
                        target.append(&mut out);
                    }
                }
                for b in out {
                    // SAFETY: blocks taken out of this thread's slots.
                    sum = sum.wrapping_add(unsafe { b.check_free("rptest") });
                }
                let mine = std::mem::take(&mut *mailboxes[i].lock().unwrap());
                for b in mine {
                    // SAFETY: blocks in a mailbox belong to the mailbox's thread.
                    sum = sum.wrapping_add(unsafe { b.check_free("rptest") });
                }
            }
        }
        for b in slots.into_iter().filter(Blk::is_some) {
            // SAFETY: live blocks owned by this thread.
            sum = sum.wrapping_add(unsafe { b.check_free("rptest") });
        }
        sum
    });
    let mut checksum = sums.into_iter().fold(0u64, u64::wrapping_add);
    for m in &mailboxes {
        for b in m.lock().unwrap().drain(..) {
            // SAFETY: leftover handed-off blocks, now owned by main.
            checksum = checksum.wrapping_add(unsafe { b.check_free("rptest") });
        }
    }
    Ok(Outcome { ops: 2 * total, checksum, extra: String::new() })
}
