//! `mstress`: power-of-two sizes, threads that are torn down and recreated while other threads
//! still hold their blocks (after mimalloc's test-stress).
//!
//! The run is 10 rounds; each round starts fresh threads. A thread allocates items of 2^k words
//! (8 B–1 KiB, with 1% of them 64× and 0.1% 1024× larger), frees random ones, and swaps
//! random items with a global transfer array of 1000 slots (atomic exchange), so items move
//! between threads. When a thread ends it frees its own items but leaves a quarter of them as
//! *survivors* in a global list; the next round's threads free the survivors and, after every
//! round, the main thread frees half of the transfer array. Pages whose owner thread is gone
//! therefore keep live blocks and get freed into from other threads.
//!
//! Stresses: thread exit with live blocks (abandoned pages/segments and their reclamation),
//! remote frees into dead threads' memory, power-of-two size classes.
//! Checks: every word of every item holds a pattern derived from its size and a cookie; all
//! words are verified before the item is freed.

use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use rand::rngs::SmallRng;
use rand::Rng;

use super::Workload;
use crate::common::{self, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "mstress",
    summary: "power-of-two sizes, threads recreated each round while survivors stay live",
    help: "mstress: power-of-two sizes with threads killed and recreated while holding survivors\n\
(after mimalloc's test-stress).\n\
\n\
10 rounds, each with fresh threads. Threads allocate items of 2^k words (8 B-1 KiB; 1% are\n\
64x and 0.1% 1024x larger), free random ones and swap items with a global 1000-slot transfer\n\
array. An ending thread leaves a quarter of its items as survivors that the next round's\n\
threads free; main frees half the transfer array after each round.\n\
\n\
Stresses: thread exit with live blocks (abandoned pages and their reclamation), remote frees\n\
into a dead thread's memory, power-of-two size classes. Checks: every word of every item is\n\
verified against its pattern before it is freed.\n\
Work: 20M item allocations at --scale 1, split over rounds and threads.",
    run,
    knobs: &[],
};

const ROUNDS: u64 = 10;
const TRANSFERS: usize = 1000;
const BASE_ALLOCS: u64 = 20_000_000;
/// Live items per thread are capped (steady state), so memory stays modest.
const MAX_LIVE: usize = 4096;
const COOKIE: usize = 0xbf58_476d_1ce4_e5b9;

/// Allocates an item of `words` words: word 0 holds the length, word i holds `(words - i) ^
/// COOKIE`.
fn alloc_item(words: usize) -> *mut usize {
    let p = common::xmalloc(words * 8) as *mut usize;
    // SAFETY: p points to `words` writable words.
    unsafe {
        *p = words;
        for i in 1..words {
            *p.add(i) = (words - i) ^ COOKIE;
        }
    }
    p
}

/// Verifies and frees an item; returns its length (0 for NULL).
fn free_item(p: *mut usize) -> u64 {
    if p.is_null() {
        return 0;
    }
    // SAFETY: p is a live item from alloc_item owned by the caller.
    unsafe {
        let words = *p;
        let ok = words > 0 && words <= (1 << 17) && (1..words).all(|i| *p.add(i) == (words - i) ^ COOKIE);
        if !ok {
            common::record_error(format!("mstress: item {p:p} ({words} words) is corrupt"));
        }
        libc::free(p.cast());
        words as u64
    }
}

fn pick_words(rng: &mut SmallRng) -> usize {
    let mut w = 1usize << rng.gen_range(0..=7);
    if rng.gen_ratio(1, 100) {
        w *= if rng.gen_ratio(1, 10) { 1024 } else { 64 };
    }
    w
}

struct Item(*mut usize);
// SAFETY: ownership of the item moves with the value.
unsafe impl Send for Item {}

fn run(p: &Params) -> Result<Outcome, String> {
    let t = p.threads;
    let transfer: Vec<AtomicPtr<usize>> = (0..TRANSFERS).map(|_| AtomicPtr::new(null_mut())).collect();
    let survivors: Mutex<Vec<Item>> = Mutex::new(Vec::new());
    let per_round = p.scaled(BASE_ALLOCS, ROUNDS * t as u64) / ROUNDS;
    let mut freed_words = 0u64;
    let mut main_rng = common::rng(p.seed, u64::MAX);

    for round in 0..ROUNDS {
        let counts = common::run_threads(t, |i| {
            let mut rng = common::rng(p.seed, round * 1000 + i as u64);
            let mut words = 0u64;
            // Free this thread's share of the previous round's survivors.
            let adopted: Vec<Item> = {
                let mut s = survivors.lock().unwrap();
                let n = s.len() / (t - i);
                let at = s.len() - n;
                s.split_off(at)
            };
            for it in adopted {
                words += free_item(it.0);
            }
            let mut data: Vec<*mut usize> = Vec::new();
            let allocs = common::share(per_round, t, i);
            for _ in 0..allocs {
                data.push(alloc_item(pick_words(&mut rng)));
                if data.len() > MAX_LIVE || rng.gen_ratio(2, 3) {
                    let k = rng.gen_range(0..data.len());
                    words += free_item(data.swap_remove(k));
                }
                if rng.gen_ratio(1, 4) && !data.is_empty() {
                    let k = rng.gen_range(0..data.len());
                    let slot = &transfer[rng.gen_range(0..TRANSFERS)];
                    data[k] = slot.swap(data[k], Ordering::AcqRel);
                    if data[k].is_null() {
                        data.swap_remove(k);
                    }
                }
            }
            // The thread ends: it frees most of its items but a quarter survive it.
            let mut keep = Vec::new();
            for (j, it) in data.into_iter().enumerate() {
                if j % 4 == 0 {
                    keep.push(Item(it));
                } else {
                    words += free_item(it);
                }
            }
            survivors.lock().unwrap().append(&mut keep);
            words
        });
        freed_words += counts.iter().sum::<u64>();
        for slot in &transfer {
            if round + 1 == ROUNDS || main_rng.gen_ratio(1, 2) {
                freed_words += free_item(slot.swap(null_mut(), Ordering::AcqRel));
            }
        }
    }
    for it in survivors.into_inner().unwrap() {
        freed_words += free_item(it.0);
    }
    // The total number of words freed depends on thread interleaving (transfer swaps), so it
    // is reported but is not a cross-allocator checksum.
    Ok(Outcome {
        ops: 2 * per_round * ROUNDS,
        checksum: 0,
        extra: format!("rounds={ROUNDS} freed_words={freed_words}"),
    })
}
