//! `churn`: the stress family of issue 19 — many short-lived threads, blocks handed between
//! threads through shared slots, sizes from 8 B to 68 KiB, threads restarted every round with
//! their surviving blocks handed to the next generation.
//!
//! Each of `--iterations` rounds (default 5) starts `--threads` threads at once (unpinned by
//! default: the scheduler moves them, as in a real program; more threads than CPUs is the
//! point). Thread `t` takes over the live blocks its predecessor of the previous round left in
//! slot array `t` (256 slots), then does `--load` thousand steps (default 20). A step picks a
//! random slot: the block there (if any) is checked and freed, and a new block is allocated,
//! filled and put there. One step in eight then swaps that block with a random slot of a global
//! array of 1024 slots (atomic exchange), so blocks move between threads and are freed by a
//! thread other than their allocator, often after that allocator exited. Sizes: 90% 8-264 B,
//! 9% 264 B-4 KiB, 1% 4-68 KiB. When a thread ends it leaves its blocks in its slots. After the
//! last round the main thread frees everything.
//!
//! Stresses: thread start and exit under load, remote frees to pages whose owner exited, pages
//! adopted by the next generation, oversubscription (threads preempted inside the allocator),
//! and — on several NUMA nodes — threads that start on one node and are moved to another.
//! Checks: each block carries its size and a tag derived from its address in its first word
//! and its size's low byte in its last byte; both are verified before every free. The checksum
//! is the sum of the sizes allocated (independent of scheduling).

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use rand::Rng;

use super::Workload;
use crate::common::{self, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "churn",
    summary: "threads restarted every round, blocks 8 B-68 KiB handed over through shared slots",
    help: "churn: the thread-churn stress family (issue 19).\n\
\n\
--iterations rounds (default 5), each starting --threads threads at once (unpinned unless\n\
--pin). Thread t takes over the 256 live-block slots its predecessor left, then does --load\n\
thousand steps (default 20; --scale multiplies): free the block in a random slot (after\n\
checking it) and put a new one there; every eighth step swap that block with a random slot of\n\
a global 1024-slot array (atomic exchange), so blocks are freed by other threads, often after\n\
their allocator exited. Sizes: 90% 8-264 B, 9% to 4 KiB, 1% 4-68 KiB. After the last round\n\
the main thread frees everything.\n\
\n\
Stresses: thread start/exit under load, remote frees to pages of exited threads, adoption,\n\
oversubscription, and on NUMA machines threads moved between nodes.\n\
Checks: size and address tag in the first word, size byte in the last byte (blocks over 8 B), verified before\n\
every free; the checksum (sum of sizes allocated) is the same under every allocator.",
    run,
    knobs: &["load", "iterations"],
};

const SLOTS: usize = 256;
const SHARED: usize = 1024;
const DEFAULT_LOAD: u64 = 20;
const DEFAULT_ITER: u64 = 5;
const TAG: u64 = 0x9e37_79b9;

fn pick_size(r: &mut impl Rng) -> usize {
    match r.gen_range(0..100u32) {
        0 => r.gen_range(4096..=68 * 1024),
        1..=9 => r.gen_range(265..=4096),
        _ => r.gen_range(8..=264),
    }
}

fn new_block(size: usize) -> *mut u8 {
    let p = common::xmalloc(size);
    // SAFETY: p has `size` >= 8 writable bytes.
    unsafe {
        (p as *mut u64).write_unaligned((size as u64) << 32 | ((p as u64 >> 3) ^ TAG) & 0xffff_ffff);
        if size > 8 {
            *p.add(size - 1) = size as u8;
        }
    }
    p
}

/// Checks and frees a block made by [`new_block`]; returns its size.
fn free_block(p: *mut u8) -> u64 {
    // SAFETY: p came from new_block and is owned by the caller.
    unsafe {
        let w = (p as *const u64).read_unaligned();
        let size = (w >> 32) as usize;
        if w & 0xffff_ffff != ((p as u64 >> 3) ^ TAG) & 0xffff_ffff
            || !(8..=68 * 1024).contains(&size)
            || (size > 8 && *p.add(size - 1) != size as u8)
        {
            common::record_error(format!("churn: block {p:p} lost its contents (word {w:#x})"));
            return 0;
        }
        libc::free(p.cast());
        size as u64
    }
}

fn run(p: &Params) -> Result<Outcome, String> {
    let threads = p.threads;
    let load = p.knobs.load.unwrap_or(DEFAULT_LOAD);
    let rounds = p.knobs.iterations.unwrap_or(DEFAULT_ITER).max(1);
    let steps = p.scaled(load * 1000, 100);
    let slots: Vec<Vec<AtomicPtr<u8>>> =
        (0..threads).map(|_| (0..SLOTS).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect()).collect();
    let shared: Vec<AtomicPtr<u8>> = (0..SHARED).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect();
    let allocated = AtomicU64::new(0);
    let freed = AtomicU64::new(0);
    let mut ops = 0u64;
    for round in 0..rounds {
        let per = common::run_threads(threads, |t| {
            let mut r = common::rng(p.seed, round << 20 | t as u64);
            let mine = &slots[t];
            let (mut a, mut f, mut n) = (0u64, 0u64, 0u64);
            for _ in 0..steps {
                let i = r.gen_range(0..SLOTS);
                let old = mine[i].swap(std::ptr::null_mut(), Ordering::Relaxed);
                if !old.is_null() {
                    f += free_block(old);
                    n += 1;
                }
                let size = pick_size(&mut r);
                a += size as u64;
                n += 1;
                let mut b = new_block(size);
                if r.gen_range(0..8u32) == 0 {
                    b = shared[r.gen_range(0..SHARED)].swap(b, Ordering::AcqRel);
                }
                mine[i].store(b, Ordering::Relaxed);
            }
            allocated.fetch_add(a, Ordering::Relaxed);
            freed.fetch_add(f, Ordering::Relaxed);
            n
        });
        ops += per.iter().sum::<u64>();
    }
    let mut f = 0;
    for s in slots.iter().flatten().chain(shared.iter()) {
        let b = s.swap(std::ptr::null_mut(), Ordering::Relaxed);
        if !b.is_null() {
            f += free_block(b);
            ops += 1;
        }
    }
    let (a, f) = (allocated.load(Ordering::Relaxed), freed.load(Ordering::Relaxed) + f);
    if a != f {
        return Err(format!("churn: {a} bytes allocated, {f} freed"));
    }
    Ok(Outcome { ops, checksum: a, extra: format!("threads={threads} rounds={rounds} steps={steps}") })
}
