//! `mleak`: threads that end must not leak — the peak RSS must stay bounded however many
//! threads come and go.
//!
//! The run is a series of generations; each starts `threads` fresh threads that allocate
//! about 3 MiB each (20000 blocks of 16–256 B and 8 blocks of 64–512 KiB), free 90% of it
//! themselves and hand the other 10% to the main thread, then exit. The main thread frees the
//! handed-over blocks after the threads are gone (remote frees into dead threads' pages). An
//! allocator that strands the caches, pages or heaps of exited threads grows by megabytes per
//! generation.
//!
//! Checks: the stamps of all blocks, and the memory: the RSS after the first few generations
//! is the baseline; the workload fails if the RSS at the end exceeds 1.5× baseline + 32 MiB
//! or the peak RSS exceeds 2× baseline + 64 MiB (a leak of even 1 MiB per generation trips it).

use rand::Rng;

use super::Workload;
use crate::common::{self, Blk, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "mleak",
    summary: "generations of short-lived threads; RSS must not grow with thread turnover",
    help: "mleak: threads that end must not leak (peak RSS must stay bounded).\n\
\n\
Generations of fresh threads each allocate ~3 MiB (20000 blocks of 16-256 B, 8 blocks of\n\
64-512 KiB), free 90% themselves, hand 10% to the main thread and exit; main frees the rest\n\
after they are gone. The RSS after the first generations is the baseline; the run fails when\n\
the final RSS exceeds 1.5x baseline + 32 MiB or the peak RSS exceeds 2x baseline + 64 MiB.\n\
\n\
Stresses: thread-exit cleanup (caches, heaps, abandoned pages), remote frees into dead\n\
threads' memory, returning memory of dead threads. Checks: stamps and the RSS bounds.\n\
Work: 400 generations at --scale 1.",
    run,
    knobs: &[],
};

const BASE_GENERATIONS: u64 = 400;
const SMALL: usize = 20_000;
const MEDIUM: usize = 8;
const MIB: u64 = 1 << 20;

fn run(p: &Params) -> Result<Outcome, String> {
    let t = p.threads;
    let gens = p.scaled(BASE_GENERATIONS, 10);
    let warm = (gens / 10).clamp(3, 10);
    let mut baseline = 0u64;
    let mut checksum = 0u64;
    for g in 0..gens {
        let handed = common::run_threads(t, |i| {
            let mut rng = common::rng(p.seed, g * 1000 + i as u64);
            let mut v: Vec<Blk> = Vec::with_capacity(SMALL + MEDIUM);
            for _ in 0..SMALL {
                v.push(Blk::new(rng.gen_range(16..=256), rng.gen()));
            }
            for _ in 0..MEDIUM {
                v.push(Blk::new(rng.gen_range(64 << 10..=512 << 10), rng.gen()));
            }
            let mut keep = Vec::with_capacity(v.len() / 10 + 1);
            let mut sum = 0u64;
            for (k, b) in v.into_iter().enumerate() {
                if k % 10 == 3 {
                    keep.push(b);
                } else {
                    // SAFETY: b is live and owned here.
                    sum = sum.wrapping_add(unsafe { b.check_free("mleak") });
                }
            }
            (keep, sum)
        });
        for (keep, sum) in handed {
            checksum = checksum.wrapping_add(sum);
            for b in keep {
                // SAFETY: the exited thread handed b over to main.
                checksum = checksum.wrapping_add(unsafe { b.check_free("mleak") });
            }
        }
        if g + 1 == warm {
            baseline = common::current_rss();
        }
    }
    let end = common::current_rss();
    let peak = common::peak_rss();
    let extra = format!(
        "generations={gens} baseline_rss_mib={:.1} end_rss_mib={:.1} peak_rss_mib={:.1}",
        baseline as f64 / MIB as f64,
        end as f64 / MIB as f64,
        peak as f64 / MIB as f64
    );
    if end > baseline + baseline / 2 + 32 * MIB || peak > 2 * baseline + 64 * MIB {
        return Err(format!("mleak: memory grows with thread turnover: {extra}"));
    }
    Ok(Outcome { ops: gens * t as u64 * 2 * (SMALL + MEDIUM) as u64, checksum, extra })
}
