//! `larson`: multi-threaded server churn where *other* threads free the objects.
//!
//! Modelled on Larson & Krishnan's server benchmark. Each thread owns an array of slots
//! holding blocks of 8–1000 bytes; an operation frees the block in a random slot and puts a
//! fresh one there. Work runs in epochs; at each epoch new threads are started (servers come
//! and go) and every array moves on to the next thread, so nearly every block is freed by a
//! thread other than the one that allocated it, usually one on another core. The main thread
//! allocates the initial blocks and frees the survivors.
//!
//! Stresses: remote (cross-thread) frees under steady churn, thread start/exit, the
//! allocator's ability to reuse memory freed by other threads without serialising.
//! Checks: every block is stamped (head and tail) with a random tag that is verified before it
//! is freed.

use std::sync::Mutex;

use rand::Rng;

use super::Workload;
use crate::common::{self, Blk, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "larson",
    summary: "server churn: random-slot free+malloc, arrays handed to new threads each epoch",
    help: "larson: multi-threaded server churn where other threads free the objects.\n\
\n\
Each thread owns 1000 slots of 8..1000-byte blocks and repeatedly frees the block in a random\n\
slot and allocates a new one there. Work runs in 50 epochs; each epoch starts new threads and\n\
hands every slot array to the next thread, so almost every block is freed by a thread (and\n\
core) other than the one that allocated it.\n\
\n\
Stresses: remote frees under steady churn, thread start/exit, reuse of memory freed by other\n\
threads. Checks: head/tail stamps of every block are verified before it is freed.\n\
Work: 150M free+malloc pairs at --scale 1, split over the threads.",
    run,
    knobs: &[],
};

const SLOTS: usize = 1000;
const MIN: usize = 8;
const MAX: usize = 1000;
const EPOCHS: u64 = 50;
const BASE_OPS: u64 = 150_000_000;

fn run(p: &Params) -> Result<Outcome, String> {
    let t = p.threads;
    let total = p.scaled(BASE_OPS, EPOCHS * t as u64);
    let per_epoch = total / EPOCHS;

    // The main thread allocates the initial blocks (the workers will free them).
    let mut init = common::rng(p.seed, u64::MAX);
    let arrays: Vec<Mutex<Vec<Blk>>> = (0..t)
        .map(|_| Mutex::new((0..SLOTS).map(|_| Blk::new(init.gen_range(MIN..=MAX), init.gen())).collect()))
        .collect();

    let mut checksum = 0u64;
    for epoch in 0..EPOCHS {
        let sums = common::run_threads(t, |i| {
            let mut rng = common::rng(p.seed, epoch * 1_000_003 + i as u64);
            let mut arr = arrays[(i + epoch as usize) % t].lock().unwrap();
            let mut sum = 0u64;
            for _ in 0..common::share(per_epoch, t, i) {
                let k = rng.gen_range(0..SLOTS);
                let size = rng.gen_range(MIN..=MAX);
                let tag = rng.gen();
                let old = std::mem::replace(&mut arr[k], Blk::NULL);
                // SAFETY: the slot's block is live and owned by this array.
                sum = sum.wrapping_add(unsafe { old.check_free("larson") });
                arr[k] = Blk::new(size, tag);
            }
            sum
        });
        checksum = sums.into_iter().fold(checksum, u64::wrapping_add);
    }
    for a in &arrays {
        for b in a.lock().unwrap().drain(..) {
            // SAFETY: every remaining slot holds a live block.
            checksum = checksum.wrapping_add(unsafe { b.check_free("larson") });
        }
    }
    Ok(Outcome { ops: 2 * total, checksum, extra: format!("epochs={EPOCHS}") })
}
