//! Pattern 11: the kernel's automatic NUMA balancing (`kernel.numa_balancing=1`, which most HPC
//! kernels run with). Not part of `all`: it changes a kernel setting for its run (restored after)
//! and takes `secs11` seconds (default 20).
//!
//! One thread on CPU node A allocates and writes: placed small blocks (64 KiB x 16, first
//! touch), small blocks below the placed classes (1 KiB x 1024, bound to A's node on a
//! multi-node machine), large blocks (512 KiB x 4, first touch) and a huge block (16 MiB, first
//! touch). It then moves itself to node B's CPUs and keeps writing every page of its buffers
//! for `secs11` seconds, busy (the balancer scans a task's memory per second of its CPU time);
//! every second `move_pages` tells where each kind's pages are. The
//! balancer may move the first-touch pages to B after the fact; bound pages (`mbind`) it leaves
//! alone. Then the thread frees everything and allocates the same again on B: the recycled
//! memory must be on B (at least the threshold), whatever the balancer did, because domalloc
//! asks the kernel where a freed placed or huge block's pages are, and bound spans never move.
//!
//! RESULT lines: `balance-<kind>` (INFO: the share on B at the end and the seconds until 90% were
//! there, `never` if not), `balance-realloc` (the check: the blocks allocated again on B).

use std::time::{Duration, Instant};

use crate::patterns::{pin, verdict, Config};
use crate::sys::{self, Topology};

/// One kind of buffer: its blocks.
struct Kind {
    name: &'static str,
    size: usize,
    count: usize,
    blocks: Vec<*mut u8>,
}

fn layout(size: usize) -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(size, 16).expect("layout")
}

fn write_all(k: &Kind, tag: u8) {
    for &p in &k.blocks {
        let mut off = 0;
        while off < k.size {
            // SAFETY: inside a live block of `k.size` bytes.
            unsafe { p.add(off).write_volatile(tag) };
            off += 4096;
        }
    }
}

fn pages(k: &Kind) -> Vec<usize> {
    let mut v = Vec::new();
    for &p in &k.blocks {
        sys::pages_of(p as usize, k.size, &mut v);
    }
    v
}

/// Share of `k`'s pages on `node`.
fn share_on(k: &Kind, node: usize) -> (f64, String) {
    match sys::query_pages(&pages(k)) {
        Ok(pl) if pl.pages > 0 => (pl.on(node) as f64 / pl.pages as f64, pl.describe()),
        Ok(_) => (0.0, "-".into()),
        Err(e) => (0.0, format!("error:{e}")),
    }
}

fn alloc_kinds(kinds: &mut [Kind]) {
    for k in kinds.iter_mut() {
        k.blocks = (0..k.count)
            .map(|_| {
                // SAFETY: a non-zero size.
                let p = unsafe { std::alloc::alloc(layout(k.size)) };
                assert!(!p.is_null(), "allocation of {} B failed", k.size);
                p
            })
            .collect();
    }
}

fn free_kinds(kinds: &mut [Kind]) {
    for k in kinds.iter_mut() {
        for p in k.blocks.drain(..) {
            // SAFETY: allocated above with this layout.
            unsafe { std::alloc::dealloc(p, layout(k.size)) };
        }
    }
}

pub fn pattern11(cfg: &Config, topo: &Topology) {
    let (a, b) = (topo.cpu_nodes[0], topo.cpu_nodes[1]);
    let before = sys::numa_balancing();
    if std::fs::write("/proc/sys/kernel/numa_balancing", "1").is_err() || sys::numa_balancing() != "1" {
        println!("RESULT pattern=11 phase=balance pair={a}>{b} size=- threads_per_node=1 note=no_numa_balancing_in_this_kernel SKIP");
        return;
    }
    let secs = cfg.secs11;
    let mut kinds = [
        Kind { name: "placed-64K", size: 64 << 10, count: 16, blocks: Vec::new() },
        Kind { name: "bound-1K", size: 1 << 10, count: 1024, blocks: Vec::new() },
        Kind { name: "large-512K", size: 512 << 10, count: 4, blocks: Vec::new() },
        Kind { name: "huge-16M", size: 16 << 20, count: 1, blocks: Vec::new() },
    ];
    let pair = format!("{a}>{b}");
    // In this (child) process's own thread: it moves itself from A to B.
    {
        {
            pin(topo, cfg, a, 0);
            alloc_kinds(&mut kinds);
            for k in &kinds {
                write_all(k, 1);
                let (sh, nodes) = share_on(k, a);
                println!("INFO pattern=11 phase=start kind={} node={a} share={sh:.4} nodes={nodes}", k.name);
            }
            #[cfg(not(feature = "system"))]
            let huge_node_before = domalloc::node_of(kinds[3].blocks[0]);
            pin(topo, cfg, b, 0);
            let t0 = Instant::now();
            let mut reached: Vec<Option<f64>> = vec![None; kinds.len()];
            let mut next_query = Duration::from_secs(1);
            while t0.elapsed() < Duration::from_secs(secs) {
                for k in &kinds {
                    write_all(k, 2);
                }
                if t0.elapsed() >= next_query {
                    next_query += Duration::from_secs(1);
                    let line: Vec<String> = kinds
                        .iter()
                        .enumerate()
                        .map(|(i, k)| {
                            let (sh, _) = share_on(k, b);
                            if sh >= 0.9 && reached[i].is_none() {
                                reached[i] = Some(t0.elapsed().as_secs_f64());
                            }
                            format!("{}={sh:.3}", k.name)
                        })
                        .collect();
                    println!(
                        "INFO pattern=11 phase=timeline t={:.0}s on_node={b} {}",
                        t0.elapsed().as_secs_f64(),
                        line.join(" ")
                    );
                }
            }
            for (i, k) in kinds.iter().enumerate() {
                let (sh, nodes) = share_on(k, b);
                let when = reached[i].map_or("never".to_string(), |t| format!("{t:.0}s"));
                println!(
                    "RESULT pattern=11 phase=balance-{} pair={pair} size={} threads_per_node=1 objects={} share={sh:.4} nodes={nodes} migrated_90pct_after={when} seconds={secs} INFO",
                    k.name, k.size, k.count
                );
            }
            #[cfg(not(feature = "system"))]
            println!(
                "INFO pattern=11 phase=node-of kind=huge-16M before_move={:?} after_balancing={:?}",
                huge_node_before,
                domalloc::node_of(kinds[3].blocks[0])
            );
            // Freed on B and allocated again on B: the memory must be B's.
            free_kinds(&mut kinds);
            alloc_kinds(&mut kinds);
            let mut all = sys::Placement::default();
            for k in &kinds {
                write_all(k, 3);
                if let Ok(pl) = sys::query_pages(&pages(k)) {
                    println!("INFO pattern=11 phase=realloc kind={} node={b} nodes={}", k.name, pl.describe());
                    all.merge(&pl);
                }
            }
            let share = if all.pages > 0 { all.on(b) as f64 / all.pages as f64 } else { 0.0 };
            println!(
                "RESULT pattern=11 phase=balance-realloc pair={pair} size=all threads_per_node=1 objects={} pages={} local={} share={share:.4} nodes={} {}",
                kinds.iter().map(|k| k.count).sum::<usize>(),
                all.pages,
                all.on(b),
                all.describe(),
                verdict(cfg.info_only, share >= cfg.threshold)
            );
            free_kinds(&mut kinds);
        }
    }
    let _ = std::fs::write("/proc/sys/kernel/numa_balancing", if before == "-" { "0".to_string() } else { before });
}
