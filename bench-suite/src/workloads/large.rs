//! `large`: blocks of several MiB, calloc of large blocks and realloc growth.
//!
//! Every thread repeats: malloc a 1–16 MiB block, write one word into every page and read them
//! all back, free it; calloc a 1–8 MiB block, check that sampled words are zero, free it; grow a
//! block with realloc from 64 KiB by 1.5× steps up to 48 MiB, writing every new page and
//! checking that the old contents survived every move.
//!
//! Stresses: the large-object path (mmap/munmap or cached spans), page-fault costs, whether
//! calloc avoids clearing fresh pages, realloc in place vs copy (mremap), returning memory to
//! the OS. Checks: every page's word verified; calloc memory checked for zeros; contents
//! preserved across realloc.

use rand::Rng;

use super::Workload;
use crate::common::{self, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "large",
    summary: "1-16 MiB malloc/free, large calloc, realloc growth 64 KiB -> 48 MiB",
    help: "large: blocks of several MiB and realloc growth.\n\
\n\
Every thread repeats: malloc a 1-16 MiB block, write a word into every 4 KiB page and read\n\
them back, free; calloc 1-8 MiB and check sampled words are zero, free; grow a block from\n\
64 KiB by 1.5x reallocs up to 48 MiB, writing each new page and checking the old contents\n\
survived each move.\n\
\n\
Stresses: large-object path, page faults, calloc of fresh memory, realloc (in place, copy or\n\
mremap), returning memory to the OS. Checks: page words, zeroed calloc memory, contents\n\
preserved by realloc.\n\
Work: 40 rounds at --scale 1, split over the threads.",
    run,
    knobs: &[],
};

const PAGE: usize = 4096;
const BASE_ROUNDS: u64 = 40;
const MIB: usize = 1 << 20;

/// Writes `tag ^ offset` into the first word of every page of `[p, p+to)` that
/// `write_pages(p, 0, from, tag)` did not already write (pages whose word ends past `from`).
///
/// # Safety
/// `p` must point to at least `to` writable bytes.
unsafe fn write_pages(p: *mut u8, from: usize, to: usize, tag: u64) {
    let mut off = from / PAGE * PAGE;
    if off + 8 <= from {
        off += PAGE;
    }
    while off + 8 <= to {
        // SAFETY: off + 8 <= to, inside the block.
        unsafe { (p.add(off) as *mut u64).write(tag ^ off as u64) };
        off += PAGE;
    }
}

/// Counts pages of `[p, p+to)` whose first word is not `tag ^ offset`.
///
/// # Safety
/// `p` must point to at least `to` readable bytes.
unsafe fn check_pages(p: *const u8, to: usize, tag: u64) -> u64 {
    let mut bad = 0;
    let mut off = 0;
    while off + 8 <= to {
        // SAFETY: off + 8 <= to, inside the block.
        if unsafe { (p.add(off) as *const u64).read() } != tag ^ off as u64 {
            bad += 1;
        }
        off += PAGE;
    }
    bad
}

fn run(p: &Params) -> Result<Outcome, String> {
    let t = p.threads;
    let rounds = p.scaled(BASE_ROUNDS, t as u64);
    let res = common::run_threads(t, |i| {
        let mut rng = common::rng(p.seed, i as u64);
        let mut bad = 0u64;
        let mut ops = 0u64;
        let mut sum = 0u64;
        for _ in 0..common::share(rounds, t, i) {
            // 1. malloc a big block, touch every page, verify, free.
            let size = rng.gen_range(MIB..=16 * MIB);
            let tag: u64 = rng.gen();
            let b = common::xmalloc(size);
            // SAFETY: b has size bytes.
            unsafe {
                write_pages(b, 0, size, tag);
                bad += check_pages(b, size, tag);
                libc::free(b.cast());
            }
            sum = sum.wrapping_add(size as u64);
            ops += 2;

            // 2. calloc: must be zero; then use it.
            let n = rng.gen_range(MIB / 8..=MIB);
            let c = common::xcalloc(n, 8);
            // SAFETY: c has n * 8 bytes.
            unsafe {
                let w = c as *mut u64;
                let mut k = 0;
                while k < n {
                    if *w.add(k) != 0 || *w.add(n - 1 - k) != 0 {
                        bad += 1;
                    }
                    k += PAGE / 8 / 2 + 7;
                }
                write_pages(c, 0, n * 8, tag);
                bad += check_pages(c, n * 8, tag);
                libc::free(c.cast());
            }
            sum = sum.wrapping_add(n as u64);
            ops += 2;

            // 3. realloc growth with content checks.
            let mut cap = 64 << 10;
            let mut r = common::xmalloc(cap);
            // SAFETY: r has cap bytes; after each realloc it has the new cap.
            unsafe {
                write_pages(r, 0, cap, tag);
                while cap < 48 * MIB {
                    let new = cap + cap / 2 + rng.gen_range(0..PAGE);
                    r = common::xrealloc(r, new);
                    bad += check_pages(r, cap, tag);
                    write_pages(r, cap, new, tag);
                    cap = new;
                    ops += 1;
                }
                bad += check_pages(r, cap, tag);
                libc::free(r.cast());
            }
            sum = sum.wrapping_add(cap as u64);
            ops += 2;
        }
        (bad, ops, sum)
    });
    let bad: u64 = res.iter().map(|r| r.0).sum();
    if bad > 0 {
        return Err(format!("large: {bad} pages or words had wrong contents"));
    }
    let ops = res.iter().map(|r| r.1).sum();
    let checksum = res.iter().fold(0u64, |a, r| a.wrapping_add(r.2));
    Ok(Outcome { ops, checksum, extra: format!("rounds={rounds}") })
}
