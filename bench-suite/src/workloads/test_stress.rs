//! `test-stress`: the shape of mimalloc's `test/test-stress.c` (mimalloc-bench's `mstress`),
//! with its `load` (SCALE) and `iterations` (ITER) parameters.
//!
//! Each of `iterations` rounds starts `--threads` threads at once and joins them. Thread `t`
//! makes `100 * load * (t % 8 + 1)` allocations (some threads do up to 8x more) plus half as
//! many *retained* ones that live until the thread ends. Every step: with 50% it callocs an
//! item of 2^(0..4) words into its `data` array (grown with realloc by 100000 slots), else a
//! retained item of 2^(0..6) words; with 66% it frees a random `data` item; with 25% it swaps
//! a random `data` item with a random slot of a global 1000-slot transfer array (atomic
//! exchange), so items migrate between threads and outlive the thread that allocated them.
//! 1% of items are 100x larger, 0.1% 1000x and 0.01% 10000x (up to ~5 MiB). Items are calloc'd
//! and every word is written with `(items - i) ^ cookie` and verified before it is freed. After
//! each round the main thread frees half of the transfer array (all of it after the last).
//!
//! Stresses: many threads started at once (oversubscription: 32 threads on a few cores), thread
//! exit with live blocks that other threads free later, remote frees, calloc and realloc, the
//! occasional large and huge block among small ones: the shape that collapses allocators whose
//! shared locks are taken on the slow paths.

use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::Workload;
use crate::common::{self, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "test-stress",
    summary: "mimalloc's test-stress: threads recreated per round, transfer array, calloc/realloc, rare huge",
    help: "test-stress: the shape of mimalloc's test/test-stress.c (mimalloc-bench's mstress).\n\
\n\
--iterations rounds (default 25), each starting --threads threads at once. Thread t makes\n\
100*load*(t%8+1) allocations (--load, default 50; --scale multiplies it) plus half as many\n\
retained ones kept until it ends: 50% calloc an item of 2^(0..4) words into its data array\n\
(grown by realloc), else a retained item of 2^(0..6) words; 66% free a random data item; 25%\n\
swap a random data item with a slot of a global 1000-slot transfer array (atomic exchange).\n\
1% of items are 100x larger, 0.1% 1000x, 0.01% 10000x. After each round main frees half the\n\
transfer array (all after the last round).\n\
\n\
Stresses: many threads at once (oversubscribed), thread exit with live blocks freed later by\n\
others, remote frees, calloc/realloc, rare large and huge blocks among small ones.\n\
Checks: every word of every item is verified against its pattern before it is freed; the\n\
words freed must equal the words allocated.\n\
Work: 25 rounds, load 50 at --scale 1 (mimalloc-bench runs mstress with load 50, 25 rounds).",
    run,
    knobs: &["load", "iterations"],
};

const TRANSFERS: usize = 1000;
const COOKIE: u64 = 0xbf58_476d_1ce4_e5b9;
const DEFAULT_LOAD: u64 = 50;
const DEFAULT_ITER: u64 = 25;

/// test-stress's RNG: the splitmix64 finalizer applied to the state.
fn pick(r: &mut u64) -> u64 {
    let mut x = *r;
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    *r = x;
    x
}

fn chance(perc: u64, r: &mut u64) -> bool {
    pick(r) % 100 <= perc
}

struct Counters {
    allocated: AtomicU64,
    freed: AtomicU64,
}

fn alloc_items(mut items: u64, r: &mut u64, c: &Counters) -> *mut u64 {
    if chance(1, r) {
        if chance(1, r) {
            items *= 10000; // 0.01% giant
        } else if chance(10, r) {
            items *= 1000; // 0.1% huge
        } else {
            items *= 100; // 1% large
        }
    }
    if items == 40 {
        items += 1; // test-stress avoids the size pthreads uses for stack growth
    }
    let p = common::xcalloc(items as usize, 8) as *mut u64;
    for i in 0..items {
        // SAFETY: p points to `items` zeroed words.
        unsafe { *p.add(i as usize) = (items - i) ^ COOKIE };
    }
    c.allocated.fetch_add(items, Ordering::Relaxed);
    p
}

fn free_items(p: *mut u64, c: &Counters) {
    if p.is_null() {
        return;
    }
    // SAFETY: p is a live item from alloc_items owned by the caller: word 0 holds its length.
    unsafe {
        let items = *p ^ COOKIE;
        let ok = items > 0 && items <= 64 * 10000 && (0..items).all(|i| *p.add(i as usize) ^ COOKIE == items - i);
        if !ok {
            common::record_error(format!("test-stress: item {p:p} ({items} words) is corrupt"));
        } else {
            c.freed.fetch_add(items, Ordering::Relaxed);
        }
        libc::free(p.cast());
    }
}

fn stress(tid: u64, seed: u64, load: u64, transfer: &[AtomicPtr<u64>], c: &Counters) {
    let mut r = tid.wrapping_mul(43) ^ common::mix(seed);
    let max_item_shift = 5; // 2^0..2^4 words
    let max_item_retained_shift = max_item_shift + 2;
    let mut allocs = 100 * load * (tid % 8 + 1);
    let mut retain = allocs / 2;
    let mut data: *mut *mut u64 = null_mut();
    let mut data_size = 0usize;
    let mut data_top = 0usize;
    let retained = common::xcalloc(retain.max(1) as usize, 8) as *mut *mut u64;
    let mut retain_top = 0usize;
    while allocs > 0 || retain > 0 {
        if retain == 0 || (chance(50, &mut r) && allocs > 0) {
            allocs -= 1;
            if data_top >= data_size {
                data_size += 100_000;
                // SAFETY: data is NULL or the live array from the previous realloc.
                data = unsafe { common::xrealloc(data.cast(), data_size * 8) } as *mut *mut u64;
            }
            let it = alloc_items(1 << (pick(&mut r) % max_item_shift), &mut r, c);
            // SAFETY: data_top < data_size.
            unsafe { *data.add(data_top) = it };
            data_top += 1;
        } else {
            let it = alloc_items(1 << (pick(&mut r) % max_item_retained_shift), &mut r, c);
            // SAFETY: retain_top < the initial retain count.
            unsafe { *retained.add(retain_top) = it };
            retain_top += 1;
            retain -= 1;
        }
        if chance(66, &mut r) && data_top > 0 {
            let idx = (pick(&mut r) % data_top as u64) as usize;
            // SAFETY: idx < data_top; the slot holds NULL or an item this thread owns.
            unsafe {
                free_items(*data.add(idx), c);
                *data.add(idx) = null_mut();
            }
        }
        if chance(25, &mut r) && data_top > 0 {
            let idx = (pick(&mut r) % data_top as u64) as usize;
            let slot = &transfer[(pick(&mut r) % TRANSFERS as u64) as usize];
            // SAFETY: idx < data_top; ownership of the items moves through the atomic swap.
            unsafe { *data.add(idx) = slot.swap(*data.add(idx), Ordering::AcqRel) };
        }
    }
    // SAFETY: every slot below the tops holds NULL or an item this thread owns.
    unsafe {
        for i in 0..retain_top {
            free_items(*retained.add(i), c);
        }
        for i in 0..data_top {
            free_items(*data.add(i), c);
        }
        libc::free(retained.cast());
        libc::free(data.cast());
    }
}

fn run(p: &Params) -> Result<Outcome, String> {
    let load = ((p.knobs.load.unwrap_or(DEFAULT_LOAD) as f64 * p.scale).round() as u64).max(1);
    let iterations = p.knobs.iterations.unwrap_or(DEFAULT_ITER).max(1);
    let transfer: Vec<AtomicPtr<u64>> = (0..TRANSFERS).map(|_| AtomicPtr::new(null_mut())).collect();
    let c = Counters { allocated: AtomicU64::new(0), freed: AtomicU64::new(0) };
    let mut r = common::mix(p.seed ^ 0x7feb_352d);
    for n in 0..iterations {
        common::run_threads(p.threads, |i| stress(i as u64, p.seed, load, &transfer, &c));
        for slot in &transfer {
            if chance(50, &mut r) || n + 1 == iterations {
                free_items(slot.swap(null_mut(), Ordering::AcqRel), &c);
            }
        }
    }
    let (allocated, freed) = (c.allocated.load(Ordering::Relaxed), c.freed.load(Ordering::Relaxed));
    if allocated != freed {
        return Err(format!("test-stress: {freed} words freed != {allocated} allocated"));
    }
    let per_round: u64 = (0..p.threads as u64).map(|t| 100 * load * (t % 8 + 1) * 3 / 2).sum();
    Ok(Outcome {
        ops: 2 * per_round * iterations,
        checksum: allocated,
        extra: format!("load={load} iterations={iterations}"),
    })
}
