//! Pattern 9: per-worker first touch, the most common NUMA idiom of OpenMP codes (issue 10).
//!
//! The main thread, pinned on the first CPU node A, allocates `--k9` buffers (8) for each worker
//! (`--tpn` workers pinned on every CPU node) in interleaved order (buffer i of worker 0, buffer i
//! of worker 1, ...), so neighbouring blocks belong to different workers. Then every worker first
//! touches its own buffers (writes every page; `alloc_zeroed` buffers must read as zero first)
//! and `move_pages` reports the node of every page of every buffer: at least `--threshold` (99%)
//! of each worker's pages must be on the worker's node (`phase=first-touch`, one check per worker,
//! `pair=A>N` for a worker on N). Right after, in the recycle round, each worker frees its own
//! buffers and allocates the same count of the same size again, touches and checks them
//! (`phase=recycle`); its own minor page faults during that round (`getrusage(RUSAGE_THREAD)`,
//! from before the frees to after the touch) are the field `minflt=`, and an INFO line (not a
//! check) compares them to the pages touched: reuse of a block whose pages are already on the
//! worker's node does not fault again.
//!
//! Sizes (`--sizes9`, `SIZE` or `SIZExCOUNT`): 16K, 64K, 256K, 768K, 1536K, 3M (`--k9` buffers
//! each) and `64Mx1`, each through `alloc` and `alloc_zeroed`; the size `--aligned9` (64K) also
//! with a 4 KiB-aligned `Layout` (`api=alloc-align4k`) and, in the system build (the C path),
//! through `aligned_alloc` and `memalign`. A size that needs more than a third of the
//! smallest CPU node's memory (`size x count x tpn x 3`) is skipped with a `SKIP` line.
//!
//! Two neighbouring cases that are right today and must stay so (one buffer per worker and size,
//! the sizes up to 4 MiB):
//! - `remote-free`: the main thread allocates *and touches* the buffers (their pages are on A);
//!   each worker frees the ones meant for it and allocates its own of the same size: they must be
//!   on its node (what another node freed is not reused here);
//! - `realloc-grow`: each worker allocates buffers of the smallest size and grows them with
//!   `realloc` through the others, touching the whole buffer after each step: every step on its node, and
//!   the old contents kept.
//!
//! Every (size, api) case and each of the two cases above runs in a fresh process (a sub-run:
//! `--child=9 --sub=CASE`), so what one case freed cannot be handed out by the next.

use crate::patterns::{pin, report, touch_part, Config, Tally};
use crate::policies::{run_subs, Sub};
use crate::sys::{self, Topology};
use domalloc_numa_tests::{format_size, parse_size};
use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};
use std::sync::{Barrier, Mutex};
use std::thread;

/// Largest size used by `remote-free` and `realloc-grow`.
const SMALL_CASES_MAX: usize = 4 << 20;
/// Buffers per worker and size in `remote-free` and `realloc-grow` (regression guards of cases
/// that are right today; pattern 2 covers remote frees with more objects).
const NEIGHBOUR_BUFFERS: usize = 1;
/// Fill byte of `alloc` buffers (`touch_part` writes 0x77 into zeroed ones).
pub(crate) const FILL: u8 = 0x5a;

/// How a buffer is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// `alloc` with the alignment malloc gives (16).
    Alloc,
    /// `alloc_zeroed`, alignment 16 (std's System allocator calls calloc for it).
    Zeroed,
    /// `alloc` with a 4 KiB-aligned `Layout` (the System allocator: `posix_memalign`).
    Align4K,
    /// `aligned_alloc(4096, size)` (the system build: the C library's or a preloaded one's).
    #[cfg(feature = "system")]
    AlignedAlloc,
    /// `memalign(4096, size)` (the system build).
    #[cfg(feature = "system")]
    Memalign,
}

/// Every API of this build.
const APIS: &[Api] = &[
    Api::Alloc,
    Api::Zeroed,
    Api::Align4K,
    #[cfg(feature = "system")]
    Api::AlignedAlloc,
    #[cfg(feature = "system")]
    Api::Memalign,
];

impl Api {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Api::Alloc => "alloc",
            Api::Zeroed => "alloc_zeroed",
            Api::Align4K => "alloc-align4k",
            #[cfg(feature = "system")]
            Api::AlignedAlloc => "aligned_alloc",
            #[cfg(feature = "system")]
            Api::Memalign => "memalign",
        }
    }

    fn parse(s: &str) -> Option<Api> {
        APIS.iter().copied().find(|a| a.label() == s)
    }

    fn layout(self, size: usize) -> Layout {
        let align = if matches!(self, Api::Alloc | Api::Zeroed) { 16 } else { 4096 };
        Layout::from_size_align(size, align).expect("valid layout")
    }

    pub(crate) fn alloc(self, size: usize) -> Buf {
        let layout = self.layout(size);
        // The C calls' blocks are freed by `dealloc`: the System allocator's is `free`.
        // SAFETY: size > 0 (sizes are parsed as positive); 4096 is a power of two, and the
        // aligned sizes (`--aligned9`) are multiples of it.
        let p = unsafe {
            match self {
                Api::Zeroed => alloc_zeroed(layout),
                #[cfg(feature = "system")]
                Api::AlignedAlloc => libc::aligned_alloc(4096, size).cast(),
                #[cfg(feature = "system")]
                Api::Memalign => libc::memalign(4096, size).cast(),
                _ => alloc(layout),
            }
        };
        assert!(!p.is_null(), "{}({size}) failed", self.label());
        Buf { addr: p as usize, layout }
    }
}

/// A live buffer (an address, so that it can cross threads).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Buf {
    pub(crate) addr: usize,
    pub(crate) layout: Layout,
}

pub(crate) fn free(b: Buf) {
    // SAFETY: allocated through the global allocator with this layout, freed once.
    unsafe { dealloc(b.addr as *mut u8, b.layout) };
}

/// Writes every byte of the buffers. `zeroed`: page by page, first byte first (the first touch
/// places the page), checking that the rest reads as zero; returns the pages that did not.
pub(crate) fn touch(bufs: &[Buf], zeroed: bool) -> u64 {
    let mut nonzero = 0;
    for b in bufs {
        if zeroed {
            nonzero += touch_part(b.addr, b.addr + b.layout.size());
        } else {
            // SAFETY: the buffer is live and `layout.size()` bytes long; this thread owns it.
            unsafe { std::ptr::write_bytes(b.addr as *mut u8, FILL, b.layout.size()) };
        }
    }
    nonzero
}

/// What one worker measured in one round.
#[derive(Clone, Debug, Default)]
pub(crate) struct Round {
    pub(crate) t: Tally,
    /// The worker's minor faults during the round.
    pub(crate) minflt: u64,
    /// The lowest local share of any one buffer.
    pub(crate) worst: f64,
    /// Buffers whose contents did not survive `realloc`.
    bad_content: u64,
}

/// Every page of every buffer, counted local when on `node`.
pub(crate) fn measure(bufs: &[Buf], node: usize) -> Round {
    let mut r = Round { worst: 1.0, ..Default::default() };
    let mut pages = Vec::new();
    for b in bufs {
        pages.clear();
        sys::pages_of(b.addr, b.layout.size(), &mut pages);
        let p = sys::query_pages(&pages).expect("move_pages failed");
        let share = if p.pages == 0 { 0.0 } else { p.on(node) as f64 / p.pages as f64 };
        r.worst = r.worst.min(share);
        r.t.add(&p, node, 1);
    }
    r
}

/// `16K+64K+...` (sizes in a sub-run's name).
fn size_list(sizes: &[usize]) -> String {
    sizes.iter().map(|&s| format_size(s)).collect::<Vec<_>>().join("+")
}

/// 9: starts one sub-run per case (see the module documentation).
pub fn pattern9(cfg: &Config, topo: &Topology) {
    let min_mem =
        topo.cpu_nodes.iter().map(|n| topo.node_mem_kib.get(n).copied().unwrap_or(0) * 1024).min().unwrap_or(0);
    let mut subs = Vec::new();
    let sub = |name: String| Sub { name, env: None, affinity: None, mempolicy: None };
    let mut small = Vec::new();
    for &(size, count) in &cfg.sizes9 {
        let count = count.unwrap_or(cfg.k9).max(1);
        let need = (size * count * cfg.tpn * 3) as u64;
        if need > min_mem {
            println!(
                "RESULT pattern=9 phase=first-touch pair=- size={} threads_per_node={} note=node_memory_too_small:need={}K:smallest_node={}K SKIP",
                format_size(size),
                cfg.tpn,
                need / 1024,
                min_mem / 1024
            );
            continue;
        }
        let aligned = |a: &&Api| !matches!(a, Api::Alloc | Api::Zeroed);
        for api in APIS.iter().filter(|a| size == cfg.aligned9 || !aligned(a)) {
            subs.push(sub(format!("first-touch:{}:{}:{count}", api.label(), format_size(size))));
        }
        if size <= SMALL_CASES_MAX {
            small.push(size);
        }
    }
    small.sort_unstable();
    small.dedup();
    if !small.is_empty() {
        subs.push(sub(format!("remote-free:{NEIGHBOUR_BUFFERS}:{}", size_list(&small))));
        subs.push(sub(format!("realloc-grow:{NEIGHBOUR_BUFFERS}:{}", size_list(&small))));
    }
    run_subs(cfg, 9, &subs);
}

/// One case, what the main thread and every worker do in it.
#[derive(Clone, Debug)]
enum Case {
    FirstTouch { api: Api, size: usize, count: usize },
    RemoteFree { count: usize, sizes: Vec<usize> },
    ReallocGrow { count: usize, sizes: Vec<usize> },
}

fn parse_case(sub: &str) -> Option<Case> {
    let parts: Vec<&str> = sub.split(':').collect();
    let sizes = |s: &str| s.split('+').map(parse_size).collect::<Option<Vec<usize>>>();
    match parts.as_slice() {
        ["first-touch", api, size, count] => {
            Some(Case::FirstTouch { api: Api::parse(api)?, size: parse_size(size)?, count: count.parse().ok()? })
        }
        ["remote-free", count, s] => Some(Case::RemoteFree { count: count.parse().ok()?, sizes: sizes(s)? }),
        ["realloc-grow", count, s] => Some(Case::ReallocGrow { count: count.parse().ok()?, sizes: sizes(s)? }),
        _ => None,
    }
}

/// Allocates `count` buffers of `size` for each worker, interleaved (buffer i of every worker,
/// then buffer i + 1, ...), touches them when `touch_them`, and hands them to the workers' slots.
fn serial_alloc(api: Api, size: usize, count: usize, slots: &[Mutex<Vec<Buf>>], touch_them: bool) {
    let mut bufs: Vec<Vec<Buf>> = (0..slots.len()).map(|_| Vec::with_capacity(count)).collect();
    for _ in 0..count {
        for b in bufs.iter_mut() {
            b.push(api.alloc(size));
        }
    }
    for (slot, b) in slots.iter().zip(bufs) {
        if touch_them {
            touch(&b, api == Api::Zeroed);
        }
        *slot.lock().unwrap() = b;
    }
}

/// What one worker does in `case` (the main thread meets it at the same barriers).
fn worker(case: &Case, node: usize, slot: &Mutex<Vec<Buf>>, out: &Mutex<Vec<Round>>, barrier: &Barrier) {
    match case {
        Case::FirstTouch { api, size, count } => {
            let zeroed = *api == Api::Zeroed;
            barrier.wait(); // 1: the main thread allocated
            let mine = std::mem::take(&mut *slot.lock().unwrap());
            let f0 = sys::thread_minflt();
            let nonzero = touch(&mine, zeroed);
            let f1 = sys::thread_minflt();
            barrier.wait(); // 2: every worker touched its buffers
            let mut first = measure(&mine, node);
            first.t.nonzero = nonzero;
            first.minflt = f1 - f0;
            // The recycle round: free what it used, allocate the same again.
            let r0 = sys::thread_minflt();
            mine.into_iter().for_each(free);
            let again: Vec<Buf> = (0..*count).map(|_| api.alloc(*size)).collect();
            let nonzero = touch(&again, zeroed);
            let r1 = sys::thread_minflt();
            barrier.wait(); // 3: every worker recycled
            let mut rec = measure(&again, node);
            rec.t.nonzero = nonzero;
            rec.minflt = r1 - r0;
            again.into_iter().for_each(free);
            *out.lock().unwrap() = vec![first, rec];
            barrier.wait(); // 4: results ready
        }
        Case::RemoteFree { count, sizes } => {
            for &size in sizes {
                barrier.wait(); // 1: the main thread allocated and touched
                let theirs = std::mem::take(&mut *slot.lock().unwrap());
                theirs.into_iter().for_each(free);
                let f0 = sys::thread_minflt();
                let mine: Vec<Buf> = (0..*count).map(|_| Api::Alloc.alloc(size)).collect();
                touch(&mine, false);
                let f1 = sys::thread_minflt();
                barrier.wait(); // 2: every worker has its own
                let mut r = measure(&mine, node);
                r.minflt = f1 - f0;
                mine.into_iter().for_each(free);
                *out.lock().unwrap() = vec![r];
                barrier.wait(); // 3: results ready
            }
        }
        Case::ReallocGrow { count, sizes } => {
            let mut grow: Vec<Buf> = Vec::with_capacity(*count);
            let mut prev = 0usize;
            for &size in sizes {
                barrier.wait(); // 1: step starts
                let f0 = sys::thread_minflt();
                let mut bad = 0;
                if prev == 0 {
                    grow.extend((0..*count).map(|_| Api::Alloc.alloc(size)));
                } else {
                    for b in grow.iter_mut() {
                        // SAFETY: a live buffer allocated with `b.layout`; size > 0.
                        let p = unsafe { realloc(b.addr as *mut u8, b.layout, size) };
                        assert!(!p.is_null(), "realloc to {size} failed");
                        let kept = prev.min(size);
                        // SAFETY: `p` is live and at least `kept` bytes long.
                        let ok = unsafe { *p == FILL && *p.add(kept - 1) == FILL };
                        bad += u64::from(!ok);
                        *b = Buf { addr: p as usize, layout: Api::Alloc.layout(size) };
                    }
                }
                touch(&grow, false);
                let f1 = sys::thread_minflt();
                barrier.wait(); // 2: every worker grew and touched
                let mut r = measure(&grow, node);
                r.minflt = f1 - f0;
                r.bad_content = bad;
                *out.lock().unwrap() = vec![r];
                barrier.wait(); // 3: results ready
                prev = size;
            }
            grow.into_iter().for_each(free);
        }
    }
}

/// `none` (under 10% of the pages faulted), `all` (90% or more), else `partly`.
fn refaulted(minflt: u64, pages: u64) -> &'static str {
    if minflt * 10 < pages {
        "none"
    } else if minflt * 10 >= pages * 9 {
        "all"
    } else {
        "partly"
    }
}

/// Runs one case of pattern 9 in this (sub-run) process.
pub fn run_sub(cfg: &Config, topo: &Topology, sub: &str) -> Result<(), String> {
    let case = parse_case(sub).ok_or(format!("no case {sub} in pattern 9"))?;
    let a = topo.cpu_nodes[0];
    // The serial region runs on the first CPU node.
    pin(topo, cfg, a, 0);
    let workers: Vec<(usize, usize)> = topo.cpu_nodes.iter().flat_map(|&n| (0..cfg.tpn).map(move |i| (n, i))).collect();
    let nw = workers.len();
    let slots: Vec<Mutex<Vec<Buf>>> = (0..nw).map(|_| Mutex::new(Vec::new())).collect();
    let outs: Vec<Mutex<Vec<Round>>> = (0..nw).map(|_| Mutex::new(Vec::new())).collect();
    let barrier = Barrier::new(nw + 1);
    let memfree = sys::node_free();
    let steps = match &case {
        Case::FirstTouch { .. } => 1,
        Case::RemoteFree { sizes, .. } | Case::ReallocGrow { sizes, .. } => sizes.len(),
    };
    let mut results: Vec<Vec<Vec<Round>>> = Vec::with_capacity(steps);
    thread::scope(|s| {
        for (w, &(node, i)) in workers.iter().enumerate() {
            let (case, slots, outs, barrier) = (&case, &slots, &outs, &barrier);
            s.spawn(move || {
                pin(topo, cfg, node, i);
                worker(case, node, &slots[w], &outs[w], barrier);
            });
        }
        // The main thread: the serial region of each step, then wait for the workers.
        for step in 0..steps {
            let waits = match &case {
                Case::FirstTouch { api, size, count } => {
                    serial_alloc(*api, *size, *count, &slots, false);
                    4
                }
                Case::RemoteFree { count, sizes } => {
                    serial_alloc(Api::Alloc, sizes[step], *count, &slots, true);
                    3
                }
                Case::ReallocGrow { .. } => 3,
            };
            for _ in 0..waits {
                barrier.wait();
            }
            results.push(outs.iter().map(|o| std::mem::take(&mut *o.lock().unwrap())).collect());
        }
    });
    for (step, per_worker) in results.iter().enumerate() {
        for (w, &(node, i)) in workers.iter().enumerate() {
            // Who allocated > who uses (realloc-grow: the worker does both).
            let pair =
                if matches!(case, Case::ReallocGrow { .. }) { format!("{node}>{node}") } else { format!("{a}>{node}") };
            let rs = &per_worker[w];
            match &case {
                Case::FirstTouch { api, size, .. } => {
                    for (phase, r) in [("first-touch", &rs[0]), ("recycle", &rs[1])] {
                        let extra = format!(
                            "api={} worker={node}:{i} minflt={} worst_buffer={:.4} nonzero_pages={} memfree={memfree}",
                            api.label(),
                            r.minflt,
                            r.worst,
                            r.t.nonzero
                        );
                        report(cfg, 9, phase, &pair, &format_size(*size), &r.t, &extra, r.t.nonzero == 0);
                    }
                    let pages = rs[1].t.place.pages;
                    println!(
                        "INFO pattern=9 recycle-faults threads_per_node={} size={} api={} worker={node}:{i} pages_touched={pages} minflt={} faults_per_page={:.2} refaulted={} first_touch_minflt={}",
                        cfg.tpn,
                        format_size(*size),
                        api.label(),
                        rs[1].minflt,
                        rs[1].minflt as f64 / pages.max(1) as f64,
                        refaulted(rs[1].minflt, pages),
                        rs[0].minflt
                    );
                }
                Case::RemoteFree { sizes, .. } => {
                    let r = &rs[0];
                    let extra = format!("api=alloc worker={node}:{i} minflt={} worst_buffer={:.4}", r.minflt, r.worst);
                    report(cfg, 9, "remote-free", &pair, &format_size(sizes[step]), &r.t, &extra, true);
                }
                Case::ReallocGrow { sizes, .. } => {
                    let r = &rs[0];
                    let from = if step == 0 { "-".to_string() } else { format_size(sizes[step - 1]) };
                    let extra = format!(
                        "api=realloc from={from} worker={node}:{i} minflt={} worst_buffer={:.4} bad_content={}",
                        r.minflt, r.worst, r.bad_content
                    );
                    report(cfg, 9, "realloc-grow", &pair, &format_size(sizes[step]), &r.t, &extra, r.bad_content == 0);
                }
            }
        }
    }
    Ok(())
}
