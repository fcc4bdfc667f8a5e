//! Pattern 10: the per-worker first touch of pattern 9 at *every* size, phase after phase in one
//! process (issue 20).
//!
//! A code with several phases runs pattern 9's idiom once per phase, each phase with its own
//! buffer size, in one process: what one phase freed is there when the next allocates. Per
//! phase: the main thread, pinned on the first CPU node A, allocates `count` buffers for each
//! worker (`--tpn` per CPU node), interleaved; every worker first touches its own (writes every
//! page; zeroed buffers must read as zero first), then frees them, allocates the same again and
//! touches them (the recycle round, with its minor faults), and frees everything before the next
//! phase starts. `move_pages` reports the node of every page of every buffer.
//!
//! Sizes: every small class from 16 KiB (the first class placed by first touch) to the largest
//! (`domalloc::size_class`), each also minus and plus one byte, then large and huge blocks at
//! irregular sizes (136K x8, 900K x4, 1.25M x4, 7M x2, 33M x1): 68 phases. One sub-run process
//! per order: `asc`, `desc` and `shuffle-SEED` (a seeded shuffle; the seed is printed, `seed10=`
//! fixes it). `asc` uses `alloc`, `desc` `alloc_zeroed`, `shuffle` alternates.
//!
//! A phase is *fresh* when no earlier phase of the process used its size class (for large
//! blocks: a span of as many 64 KiB pages; every huge size counts as one kind), else it
//! *reuses*. One RESULT line per (order, check, worker), over the phases of the check:
//! - `sweep-first-touch`, `sweep-recycle` (fresh phases): every phase must have at least
//!   `--threshold` (99%) of the worker's pages on its node, zeroed buffers reading as zero.
//!   Memory the allocator hands out for a size class it never served before in this process is
//!   fresh or recycled from other classes: it must be placed by the worker's first touch.
//! - `sweep-reuse-first-touch`, `sweep-reuse-recycle` (reusing phases) and
//!   `sweep-recycle-faults` (every phase: the recycle round's minor faults under 10% of the pages
//!   it touched): measured (`INFO`) unless `strict10`. A reusing phase's serial region may get
//!   blocks the previous phase's workers touched and freed: issue 20 item 3.
//!
//! `pause10=MS`: the main thread waits MS ms between phases (after everything was freed), so
//! that an allocator's purge delay has passed when the next phase allocates (issue 20 item 3).
//!
//! Each phase that misses prints an `INFO pattern=10 miss ...` line with its figures.

use crate::firsttouch::{free, measure, touch, Api, Buf, Round};
use crate::patterns::{pin, report, Config, Tally};
use crate::policies::{run_subs, Sub};
use crate::sys::{self, Topology};
use domalloc::size_class::{class_of, class_size, CLASSES, PLACED_MIN_CLASS, SMALL_MAX};
use domalloc_numa_tests::format_size;
use std::sync::{Barrier, Mutex};
use std::thread;

/// Large and huge sizes (with buffers per worker) after the small classes.
const BIG: &[(usize, usize)] = &[(136 << 10, 8), (900 << 10, 4), (1280 << 10, 4), (7 << 20, 2), (33 << 20, 1)];
/// Buffers per worker for the small sizes (the idiom: 8).
const SMALL_COUNT: usize = 8;

/// Every size of the sweep with its buffer count, ascending.
pub(crate) fn sweep_sizes() -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = Vec::new();
    for c in PLACED_MIN_CLASS..CLASSES {
        let s = class_size(c);
        v.extend([(s - 1, SMALL_COUNT), (s, SMALL_COUNT), (s + 1, SMALL_COUNT)]);
    }
    v.extend_from_slice(BIG);
    v.sort_unstable();
    v.dedup_by_key(|x| x.0);
    v
}

/// What serves a block of `size` bytes: its small class, a large span of so many 64 KiB pages,
/// or a huge block (one mapping, cached per node and resized: every huge size is one kind).
fn block_kind(size: usize) -> (u8, usize) {
    /// domalloc's largest large block (`segment::LARGE_MAX`; bigger ones are huge).
    const LARGE_MAX: usize = 1 << 20;
    if size <= SMALL_MAX {
        (0, class_of(size))
    } else if size <= LARGE_MAX {
        (1, size.div_ceil(64 << 10))
    } else {
        (2, 0)
    }
}

/// xorshift64*: the seeded shuffle.
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        v.swap(i, (r % (i as u64 + 1)) as usize);
    }
}

/// 10: one sub-run per order (see the module documentation).
pub fn pattern10(cfg: &Config, topo: &Topology) {
    let seed = cfg.seed10.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
            % 1_000_000_007
    });
    let _ = topo;
    let subs: Vec<Sub> = cfg
        .orders10
        .iter()
        .map(|o| Sub {
            name: format!(
                "{}{}",
                if o == "shuffle" { format!("shuffle-{seed}") } else { o.clone() },
                if cfg.strict10 { ":strict" } else { "" }
            ) + &if cfg.pause10 > 0 { format!(":pause={}", cfg.pause10) } else { String::new() },
            env: None,
            affinity: None,
            mempolicy: None,
        })
        .collect();
    run_subs(cfg, 10, &subs);
}

/// What one worker measured in one phase: first touch, recycle.
type Phase = [Round; 2];

/// Runs one order of pattern 10 in this (sub-run) process.
pub fn run_sub(cfg: &Config, topo: &Topology, sub: &str) -> Result<(), String> {
    let mut sizes = sweep_sizes();
    let (sub, pause) = match sub.rsplit_once(":pause=") {
        Some((s, ms)) => (s, ms.parse::<u64>().map_err(|_| format!("bad pause in {sub}"))?),
        None => (sub, 0),
    };
    let (sub, strict) = match sub.strip_suffix(":strict") {
        Some(s) => (s, true),
        None => (sub, false),
    };
    let cfg = &Config { strict10: strict, pause10: pause, ..cfg.clone() };
    let (order, seed) = match sub.split_once('-') {
        Some(("shuffle", s)) => ("shuffle", Some(s.parse::<u64>().map_err(|_| format!("bad seed in {sub}"))?)),
        _ if sub == "asc" || sub == "desc" => (sub, None),
        _ => return Err(format!("no case {sub} in pattern 10")),
    };
    match (order, seed) {
        ("desc", _) => sizes.reverse(),
        ("shuffle", Some(s)) => shuffle(&mut sizes, s),
        _ => {}
    }
    let min_mem =
        topo.cpu_nodes.iter().map(|n| topo.node_mem_kib.get(n).copied().unwrap_or(0) * 1024).min().unwrap_or(0);
    let mut phases: Vec<(usize, usize, Api)> = Vec::new();
    for (i, &(size, count)) in sizes.iter().enumerate() {
        if (size * count * cfg.tpn * 3) as u64 > min_mem {
            println!(
                "RESULT pattern=10 phase=sweep-first-touch pair=- size={} threads_per_node={} note=node_memory_too_small SKIP",
                format_size(size),
                cfg.tpn
            );
            continue;
        }
        let api = match order {
            "asc" => Api::Alloc,
            "desc" => Api::Zeroed,
            _ if i % 2 == 0 => Api::Alloc,
            _ => Api::Zeroed,
        };
        phases.push((size, count, api));
    }
    println!(
        "INFO pattern=10 order={order} seed={} threads_per_node={} pause_ms={} phases={} sizes={}",
        seed.map_or("-".to_string(), |s| s.to_string()),
        cfg.tpn,
        cfg.pause10,
        phases.len(),
        phases.iter().map(|p| format_size(p.0)).collect::<Vec<_>>().join(",")
    );
    let a = topo.cpu_nodes[0];
    pin(topo, cfg, a, 0);
    let workers: Vec<(usize, usize)> = topo.cpu_nodes.iter().flat_map(|&n| (0..cfg.tpn).map(move |i| (n, i))).collect();
    let nw = workers.len();
    let slots: Vec<Mutex<Vec<Buf>>> = (0..nw).map(|_| Mutex::new(Vec::new())).collect();
    let outs: Vec<Mutex<Vec<Phase>>> = (0..nw).map(|_| Mutex::new(Vec::new())).collect();
    let barrier = Barrier::new(nw + 1);
    thread::scope(|s| {
        for (w, &(node, i)) in workers.iter().enumerate() {
            let (phases, slots, outs, barrier) = (&phases, &slots, &outs, &barrier);
            s.spawn(move || {
                pin(topo, cfg, node, i);
                for &(size, count, api) in phases {
                    let zeroed = api == Api::Zeroed;
                    barrier.wait(); // 1: the main thread allocated this phase's buffers
                    let mine = std::mem::take(&mut *slots[w].lock().unwrap());
                    let f0 = sys::thread_minflt();
                    let nonzero = touch(&mine, zeroed);
                    let f1 = sys::thread_minflt();
                    let mut first = measure(&mine, node);
                    first.t.nonzero = nonzero;
                    first.minflt = f1 - f0;
                    // Recycle: free what it used, allocate the same again, touch.
                    let r0 = sys::thread_minflt();
                    mine.into_iter().for_each(free);
                    let again: Vec<Buf> = (0..count).map(|_| api.alloc(size)).collect();
                    let nonzero = touch(&again, zeroed);
                    let r1 = sys::thread_minflt();
                    let mut rec = measure(&again, node);
                    rec.t.nonzero = nonzero;
                    rec.minflt = r1 - r0;
                    // The phase ends: everything freed.
                    again.into_iter().for_each(free);
                    outs[w].lock().unwrap().push([first, rec]);
                    barrier.wait(); // 2: phase done
                }
            });
        }
        for &(size, count, api) in &phases {
            let mut bufs: Vec<Vec<Buf>> = (0..nw).map(|_| Vec::with_capacity(count)).collect();
            for _ in 0..count {
                for b in bufs.iter_mut() {
                    b.push(api.alloc(size));
                }
            }
            for (slot, b) in slots.iter().zip(bufs) {
                *slot.lock().unwrap() = b;
            }
            barrier.wait(); // 1
            barrier.wait(); // 2
            if cfg.pause10 > 0 {
                // The next phase starts after the allocator's purge delay (`pause10=`).
                thread::sleep(std::time::Duration::from_millis(cfg.pause10));
            }
        }
    });
    let label = match seed {
        Some(s) => format!("order={order} seed={s}"),
        None => format!("order={order}"),
    };
    // Which phases find their size class (or large span size, or any huge block) already used
    // by an earlier phase of this process: their blocks may be recycled ones.
    let mut seen = std::collections::HashSet::new();
    let reuse: Vec<bool> = phases.iter().map(|p| !seen.insert(block_kind(p.0))).collect();
    for (w, &(node, i)) in workers.iter().enumerate() {
        let per_phase = std::mem::take(&mut *outs[w].lock().unwrap());
        // (check, round: 0 first touch / 1 recycle, which phases, checked without strict10)
        let checks: [(&str, usize, Option<bool>, bool); 5] = [
            ("sweep-first-touch", 0, Some(false), true),
            ("sweep-recycle", 1, Some(false), true),
            ("sweep-reuse-first-touch", 0, Some(true), false),
            ("sweep-reuse-recycle", 1, Some(true), false),
            ("sweep-recycle-faults", 1, None, false),
        ];
        for (check, k, which, checked) in checks {
            let faults = check == "sweep-recycle-faults";
            let mut all = Tally::default();
            let (mut below, mut minflt, mut worst, mut worst_size, mut n) = (0u64, 0u64, 1.0f64, 0usize, 0usize);
            for ((&(size, _, api), ph), &re) in phases.iter().zip(&per_phase).zip(&reuse) {
                if which.is_some_and(|x| x != re) {
                    continue;
                }
                n += 1;
                let r = &ph[k];
                all.merge(&r.t);
                minflt += r.minflt;
                let share = r.t.share();
                if share < worst {
                    worst = share;
                    worst_size = size;
                }
                let miss = if faults {
                    r.minflt * 10 >= r.t.place.pages.max(1)
                } else {
                    share < cfg.threshold || r.t.nonzero > 0
                };
                if miss {
                    below += 1;
                    println!(
                        "INFO pattern=10 miss {label} phase={check} size={} api={} reuse={} worker={node}:{i} threads_per_node={} pages={} local={} share={:.4} worst_buffer={:.4} nodes={} minflt={} nonzero_pages={}",
                        format_size(size),
                        api.label(),
                        u8::from(re),
                        cfg.tpn,
                        r.t.place.pages,
                        r.t.local,
                        share,
                        r.worst,
                        r.t.place.describe(),
                        r.minflt,
                        r.t.nonzero
                    );
                }
            }
            if n == 0 {
                continue;
            }
            let pages = all.place.pages;
            let extra = format!(
                "{label} worker={node}:{i} phases={n} misses={below} worst_size={} worst_share={worst:.4} minflt={minflt} faults_per_page={:.3} nonzero_pages={}",
                format_size(worst_size),
                minflt as f64 / pages.max(1) as f64,
                all.nonzero
            );
            let pair = format!("{a}>{node}");
            let mut c = cfg.clone();
            c.info_only = cfg.info_only || !(checked || cfg.strict10);
            if faults {
                // Placement is the other lines' business: this one counts faults only.
                all.local = all.place.pages;
            }
            report(&c, 10, check, &pair, "sweep", &all, &extra, below == 0 && all.nonzero == 0);
        }
    }
    Ok(())
}
