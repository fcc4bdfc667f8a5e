//! `cache-scratch` and `cache-thrash`: false sharing induced by the allocator (from Hoard).
//!
//! Each thread repeatedly allocates a tiny object (8 bytes), writes and re-reads every byte of
//! it many times, and frees it. If the allocator hands objects that share a cache line to
//! threads on different cores, those writes ping-pong the line between cores and the run
//! slows down many times.
//!
//! * `cache-thrash` — *active* false sharing: the threads allocate concurrently from the
//!   start; an allocator that carves one cache line into objects for several threads causes it.
//! * `cache-scratch` — *passive* false sharing: the main thread allocates one object per
//!   thread back to back (so they share cache lines) and hands one to each worker, which frees
//!   it first. An allocator that lets a thread reuse a block it freed but does not own (a
//!   remote free straight into the freeing thread's cache) keeps the workers writing into the
//!   shared line.
//!
//! Checks: the bytes read back after every pass are summed and compared with the expected sum.

use std::ptr::{read_volatile, write_volatile};

use super::Workload;
use crate::common::{self, Outcome, Params};

/// Registry entry for passive false sharing.
pub const SCRATCH: Workload = Workload {
    name: "cache-scratch",
    summary: "passive false sharing: workers free main's adjacent objects, then malloc/write/free",
    help: "cache-scratch: passive false sharing (Hoard).\n\
\n\
The main thread allocates one 8-byte object per thread back to back and hands one to each\n\
worker; the worker frees it, then repeats: malloc 8 bytes, write and re-read every byte\n\
20480 times, free. If a freed remote object is reused by the freeing thread, workers on\n\
different cores keep writing into the same cache line.\n\
\n\
Stresses: reuse policy for remotely freed small blocks, cache-line separation between threads.\n\
Checks: bytes read back are summed and compared with the expected value.\n\
Work: 50000 malloc/write/free rounds at --scale 1, split over the threads.",
    run: run_scratch,
    knobs: &[],
};

/// Registry entry for active false sharing.
pub const THRASH: Workload = Workload {
    name: "cache-thrash",
    summary: "active false sharing: concurrent tiny malloc/write/free on every thread",
    help: "cache-thrash: active false sharing (Hoard).\n\
\n\
Every worker repeats: malloc 8 bytes, write and re-read every byte 20480 times, free. An\n\
allocator that hands objects in one cache line to threads on different cores makes those\n\
writes bounce the line between cores.\n\
\n\
Stresses: cache-line separation of concurrently allocated small objects.\n\
Checks: bytes read back are summed and compared with the expected value.\n\
Work: 50000 malloc/write/free rounds at --scale 1, split over the threads.",
    run: run_thrash,
    knobs: &[],
};

const OBJ: usize = 8;
const REPS: u64 = 256 * 80;
const BASE_ROUNDS: u64 = 50_000;

/// The write/re-read loop on one object; returns the sum of the bytes read back.
fn hammer(obj: *mut u8, round: u64) -> u64 {
    let mut sum = 0u64;
    for r in 0..REPS {
        for l in 0..OBJ {
            let v = (l as u64 ^ r ^ round) as u8;
            // SAFETY: obj points to OBJ writable bytes owned by this thread.
            unsafe {
                write_volatile(obj.add(l), v);
                sum += u64::from(read_volatile(obj.add(l)));
            }
        }
    }
    sum
}

/// The sum `hammer` must read back: REPS is a multiple of 256, so for each byte the values
/// `(l ^ r ^ round) as u8` run over all of 0..=255 exactly REPS/256 times, whatever the round.
const EXPECTED: u64 = OBJ as u64 * (REPS / 256) * (255 * 256 / 2);

fn run_common(p: &Params, scratch: bool) -> Result<Outcome, String> {
    let t = p.threads;
    let rounds = p.scaled(BASE_ROUNDS, t as u64);
    // Passive: objects allocated back to back by the main thread, one per worker.
    let initial: Vec<usize> =
        if scratch { (0..t).map(|_| common::xmalloc(OBJ) as usize).collect() } else { Vec::new() };
    let results = common::run_threads(t, |i| {
        if scratch {
            // SAFETY: main gave this worker sole ownership of its initial object.
            unsafe { libc::free(initial[i] as *mut libc::c_void) };
        }
        let mut bad = 0u64;
        let mut sum = 0u64;
        let n = common::share(rounds, t, i);
        for k in 0..n {
            let round = (i as u64) << 32 | k;
            let obj = common::xmalloc(OBJ);
            let s = hammer(obj, round);
            // SAFETY: obj came from malloc above.
            unsafe { libc::free(obj.cast()) };
            if s != EXPECTED {
                bad += 1;
            }
            sum = sum.wrapping_add(s);
        }
        (sum, bad)
    });
    let bad: u64 = results.iter().map(|r| r.1).sum();
    if bad > 0 {
        return Err(format!("{bad} rounds read back wrong bytes"));
    }
    let checksum = results.iter().fold(0u64, |a, r| a.wrapping_add(r.0));
    Ok(Outcome { ops: 2 * rounds, checksum, extra: format!("rounds={rounds}") })
}

fn run_scratch(p: &Params) -> Result<Outcome, String> {
    run_common(p, true)
}

fn run_thrash(p: &Params) -> Result<Outcome, String> {
    run_common(p, false)
}
