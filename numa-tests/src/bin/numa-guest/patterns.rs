//! Locality patterns 1-5 (6-8: `policies.rs`, 9: `firsttouch.rs`). Every worker thread pins
//! itself (the test may pin; the allocator never does), allocates through the global allocator,
//! touches what it got, and then asks the kernel where the pages are. Results are printed by the
//! main thread after the workers joined.

use crate::sys::{self, Placement, Topology, PAGE};
use domalloc_numa_tests::format_size;
use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Barrier};
use std::thread;

/// One entry of `--sizes`.
#[derive(Clone, Copy, Debug)]
pub enum SizeSpec {
    /// Every object has this size.
    Fixed(usize),
    /// Sizes drawn log-uniformly from 16 B .. 64 KiB.
    Mixed,
}

impl SizeSpec {
    fn label(&self) -> String {
        match self {
            SizeSpec::Fixed(n) => format_size(*n),
            SizeSpec::Mixed => "mixed".to_string(),
        }
    }
}

/// How worker threads are pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// To all CPUs of their node (what `numactl --cpunodebind` does).
    Node,
    /// To one CPU of their node each (round-robin).
    Cpu,
}

/// Parameters of one run (see the options in `main.rs`).
#[derive(Clone, Debug)]
pub struct Config {
    pub sizes: Vec<SizeSpec>,
    pub large: Vec<usize>,
    pub tpn: usize,
    pub budget: usize,
    pub max_objects: usize,
    pub threshold: f64,
    pub rounds: usize,
    pub batch: usize,
    pub rss_bound: usize,
    pub split: usize,
    pub thp: Option<String>,
    /// `--thp5` / `--thp9`: the THP mode of pattern 5 / 9 runs that do not set their own.
    pub thp5: Option<String>,
    pub thp9: Option<String>,
    pub pin: Pin,
    pub first_pair_only: bool,
    pub info_only: bool,
    /// Pattern 9: buffer sizes, each with its own count of buffers per worker (None: `k9`).
    pub sizes9: Vec<(usize, Option<usize>)>,
    /// Pattern 9: buffers per worker (default 8).
    pub k9: usize,
    /// Pattern 9: the size also allocated with a 4 KiB-aligned `Layout` (0: none).
    pub aligned9: usize,
    /// Pattern 10: the shuffle's seed (None: from the clock, printed).
    pub seed10: Option<u64>,
    /// Pattern 10: the orders run, one sub-run each (`asc`, `desc`, `shuffle`).
    pub orders10: Vec<String>,
    /// Pattern 10: also check the first touch of recycled size classes and the recycle round's
    /// faults (else they are measured, `INFO`).
    pub strict10: bool,
    /// Pattern 10: milliseconds the main thread waits between phases (0: none).
    pub pause10: u64,
    /// Pattern 11: seconds the thread keeps using its buffers on the other node.
    pub secs11: u64,
}

impl Default for Config {
    fn default() -> Self {
        let k = 1024;
        Config {
            sizes: [16, 64, 256, k, 4 * k, 16 * k, 64 * k, 256 * k, k * k, 4 * k * k]
                .into_iter()
                .map(SizeSpec::Fixed)
                .chain([SizeSpec::Mixed])
                .collect(),
            large: vec![2 << 20, 8 << 20, 32 << 20, 64 << 20],
            tpn: 1,
            budget: 1 << 20,
            max_objects: 1024,
            threshold: 0.99,
            rounds: 200,
            batch: 128,
            rss_bound: 64 << 20,
            split: PAGE,
            thp: None,
            thp5: None,
            thp9: None,
            pin: Pin::Node,
            first_pair_only: false,
            info_only: false,
            sizes9: [16 * k, 64 * k, 256 * k, 768 * k, 1536 * k, 3 * k * k]
                .into_iter()
                .map(|s| (s, None))
                .chain([(64 * k * k, Some(1))])
                .collect(),
            k9: 8,
            aligned9: 64 * k,
            seed10: None,
            orders10: vec!["asc".into(), "desc".into(), "shuffle".into()],
            strict10: false,
            pause10: 0,
            secs11: 20,
        }
    }
}

/// A live allocation. Raw pointers cross threads on purpose (remote frees).
struct Obj {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: an `Obj` is an owned heap block; handing it to another thread to read or free is what
// the patterns test, and the global allocator is thread-safe.
unsafe impl Send for Obj {}

/// xorshift64*: deterministic sizes without allocating.
struct Rng(u64);

impl Rng {
    fn new(seed: usize) -> Rng {
        Rng((seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Log-uniform in 16 ..= 64 KiB.
    fn mixed_size(&mut self) -> usize {
        let exp = 4 + (self.next() % 12) as u32; // 2^4 .. 2^15
        let base = 1usize << exp;
        (base + (self.next() as usize % base)).min(64 * 1024)
    }
}

fn object_count(cfg: &Config, spec: SizeSpec) -> usize {
    match spec {
        SizeSpec::Fixed(s) => (cfg.budget / s).clamp(1, cfg.max_objects),
        SizeSpec::Mixed => (cfg.max_objects / 2).max(1),
    }
}

fn layout_for(size: usize) -> Layout {
    let align = size.next_power_of_two().clamp(1, 16);
    Layout::from_size_align(size, align).expect("valid layout")
}

/// Allocates `n` objects through the global allocator.
fn alloc_objs(spec: SizeSpec, n: usize, rng: &mut Rng) -> Vec<Obj> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let size = match spec {
            SizeSpec::Fixed(s) => s,
            SizeSpec::Mixed => rng.mixed_size(),
        };
        let layout = layout_for(size);
        // SAFETY: size > 0.
        let ptr = unsafe { alloc(layout) };
        assert!(!ptr.is_null(), "allocation of {size} bytes failed");
        v.push(Obj { ptr, layout });
    }
    v
}

/// Writes every byte of every object.
fn touch(objs: &[Obj]) {
    for o in objs {
        // SAFETY: the object is live and `layout.size()` bytes long.
        unsafe { std::ptr::write_bytes(o.ptr, 0x5a, o.layout.size()) };
    }
}

/// Reads one byte of each object (a consumer looking at what it got).
fn read_first(objs: &[Obj]) -> u64 {
    let mut sum = 0u64;
    for o in objs {
        // SAFETY: live object of at least one byte.
        sum += unsafe { std::ptr::read_volatile(o.ptr) } as u64;
    }
    sum
}

fn free_objs(objs: Vec<Obj>) {
    for o in objs {
        // SAFETY: allocated by `alloc_objs` with this layout, freed once.
        unsafe { dealloc(o.ptr, o.layout) };
    }
}

/// Where the objects' pages are (each object counts the pages it spans).
fn measure(objs: &[Obj]) -> Placement {
    let mut pages = Vec::with_capacity(objs.len());
    for o in objs {
        sys::pages_of(o.ptr as usize, o.layout.size(), &mut pages);
    }
    sys::query_pages(&pages).expect("move_pages failed")
}

/// Pages, local pages and objects behind one RESULT line.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    pub(crate) place: Placement,
    pub(crate) local: u64,
    pub(crate) objects: u64,
    pub(crate) nonzero: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, p: &Placement, expected: usize, objects: usize) {
        self.place.merge(p);
        self.local += p.on(expected);
        self.objects += objects as u64;
    }
    pub(crate) fn merge(&mut self, o: &Tally) {
        self.place.merge(&o.place);
        self.local += o.local;
        self.objects += o.objects;
        self.nonzero += o.nonzero;
    }
    pub(crate) fn share(&self) -> f64 {
        if self.place.pages == 0 {
            0.0
        } else {
            self.local as f64 / self.place.pages as f64
        }
    }
}

/// The last word of a RESULT line: `INFO` for a measurement only, else `PASS` or `FAIL`.
pub fn verdict(info_only: bool, ok: bool) -> &'static str {
    if info_only {
        "INFO"
    } else if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

#[allow(clippy::too_many_arguments)]
/// Prints one RESULT line. `extra_ok` folds in a non-locality condition (RSS bound, zeroing).
pub(crate) fn report(
    cfg: &Config,
    pattern: u32,
    phase: &str,
    pair: &str,
    size: &str,
    t: &Tally,
    extra: &str,
    extra_ok: bool,
) {
    let ok = t.place.pages > 0 && t.share() >= cfg.threshold && extra_ok;
    let verdict = verdict(cfg.info_only, ok);
    println!(
        "RESULT pattern={pattern} phase={phase} pair={pair} size={size} threads_per_node={} objects={} pages={} local={} absent={} share={:.4} nodes={}{}{} {verdict}",
        cfg.tpn,
        t.objects,
        t.place.pages,
        t.local,
        t.place.absent,
        t.share(),
        t.place.describe(),
        if extra.is_empty() { "" } else { " " },
        extra
    );
}

/// Pins the calling worker to `node` (all its CPUs, or CPU number `idx` of it).
pub(crate) fn pin(topo: &Topology, cfg: &Config, node: usize, idx: usize) {
    let cpus = topo.cpus(node);
    assert!(!cpus.is_empty(), "node {node} has no CPUs");
    let set: Vec<usize> = match cfg.pin {
        Pin::Node => cpus.to_vec(),
        Pin::Cpu => vec![cpus[idx % cpus.len()]],
    };
    sys::pin_current_thread(&set).unwrap_or_else(|e| panic!("pinning to node {node} cpus {set:?}: {e}"));
    let now = sys::current_node();
    assert_eq!(now, node, "thread pinned to node {node} runs on node {now}");
}

/// Node pairs (A, B) for patterns 2-5: each CPU node and its successor (both ways on 2 nodes).
pub(crate) fn pairs(topo: &Topology, cfg: &Config) -> Vec<(usize, usize)> {
    let n = &topo.cpu_nodes;
    let mut v: Vec<(usize, usize)> = match n.len() {
        0 | 1 => Vec::new(),
        2 => vec![(n[0], n[1]), (n[1], n[0])],
        k => (0..k).map(|i| (n[i], n[(i + 1) % k])).collect(),
    };
    if cfg.first_pair_only {
        v.truncate(1);
    }
    v
}

/// Runs pattern `p` in this (child) process and prints its RESULT lines.
pub fn run(p: u32, cfg: &Config, topo: &Topology) -> Result<(), String> {
    let prs = pairs(topo, cfg);
    if p >= 2 && prs.is_empty() {
        println!("RESULT pattern={p} phase=- pair=- size=- threads_per_node={} note=needs_two_cpu_nodes SKIP", cfg.tpn);
        return Ok(());
    }
    match p {
        1 => pattern1(cfg, topo),
        2 => prs.iter().for_each(|&(a, b)| pattern2(cfg, topo, a, b)),
        3 => prs.iter().for_each(|&(a, b)| pattern3(cfg, topo, a, b)),
        4 => prs.iter().for_each(|&(a, b)| pattern4(cfg, topo, a, b)),
        5 => {
            prs.iter().for_each(|&(a, b)| pattern5(cfg, topo, a, b));
            // Not a check: how much freed memory the allocator still holds resident once all
            // arrays are freed and its purge delay has passed (held pages crowd small nodes).
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut rng = Rng::new(99);
            for _ in 0..10 {
                free_objs(alloc_objs(SizeSpec::Mixed, 64, &mut rng));
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            println!(
                "INFO pattern=5 threads_per_node={} retained_rss_after_free={}K memfree={}",
                cfg.tpn,
                sys::rss_bytes() / 1024,
                sys::node_free()
            );
        }
        6 if cfg!(feature = "system") => {
            println!("RESULT pattern=6 phase=- pair=- size=- threads_per_node={} note=needs_domalloc_api SKIP", cfg.tpn)
        }
        #[cfg(not(feature = "system"))]
        6 => crate::policies::pattern6(cfg, topo),
        // With glibc malloc (`--features system`) DOMALLOC_POLICY means nothing: pattern 7 runs
        // all the same, as a negative control (its bind/preferred/interleave checks must fail).
        7 => crate::policies::pattern7(cfg, topo),
        8 => crate::policies::pattern8(cfg, topo),
        9 => crate::firsttouch::pattern9(cfg, topo),
        10 => crate::sweep::pattern10(cfg, topo),
        11 => crate::balancing::pattern11(cfg, topo),
        _ => return Err(format!("no pattern {p}")),
    }
    Ok(())
}

/// 1: threads on every node allocate and touch their own data.
fn pattern1(cfg: &Config, topo: &Topology) {
    let workers: Vec<(usize, usize)> = topo.cpu_nodes.iter().flat_map(|&n| (0..cfg.tpn).map(move |i| (n, i))).collect();
    let barrier = Barrier::new(workers.len());
    let per_thread: Vec<Vec<Tally>> = thread::scope(|s| {
        let hs: Vec<_> = workers
            .iter()
            .map(|&(node, i)| {
                let barrier = &barrier;
                s.spawn(move || {
                    pin(topo, cfg, node, i);
                    let mut rng = Rng::new(node * 1000 + i + 1);
                    let mut out = Vec::new();
                    for &spec in &cfg.sizes {
                        barrier.wait();
                        let objs = alloc_objs(spec, object_count(cfg, spec), &mut rng);
                        touch(&objs);
                        barrier.wait();
                        let mut t = Tally::default();
                        t.add(&measure(&objs), node, objs.len());
                        free_objs(objs);
                        out.push(t);
                    }
                    out
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("worker panicked")).collect()
    });
    for (k, spec) in cfg.sizes.iter().enumerate() {
        let mut t = Tally::default();
        per_thread.iter().for_each(|v| t.merge(&v[k]));
        report(cfg, 1, "own", "all", &spec.label(), &t, "", true);
    }
}

/// 2: A allocates, B frees A's objects, then B allocates (must be on B, not A's memory), then
/// A allocates again (on A). Then a bounded producer/consumer stream A -> B: A's batches stay
/// on A and the RSS stays under `rss_bound`.
fn pattern2(cfg: &Config, topo: &Topology, a: usize, b: usize) {
    let barrier = Barrier::new(2 * cfg.tpn);
    let outs: Vec<P2Out> = thread::scope(|s| {
        let mut hs = Vec::new();
        for i in 0..cfg.tpn {
            let (tx, rx) = mpsc::channel::<Vec<Obj>>();
            let (stx, srx) = mpsc::sync_channel::<Vec<Obj>>(4);
            let barrier = &barrier;
            hs.push(s.spawn(move || p2_producer(cfg, topo, a, i, barrier, tx, stx)));
            hs.push(s.spawn(move || p2_consumer(cfg, topo, b, i, barrier, rx, srx)));
        }
        hs.into_iter().map(|h| h.join().expect("worker panicked")).collect()
    });
    p2_report(cfg, &format!("{a}>{b}"), &outs);
}

/// What one thread of pattern 2 returns: [a-alloc, b-alloc, a-again] tallies per size (A
/// threads fill 0 and 2, B fills 1), the stream's tally (A) and, from thread 0 on A, the
/// stream's (rss at start, rss max, rss at end, bytes streamed).
type P2Out = (Vec<[Tally; 3]>, Tally, Option<(usize, usize, usize, u64)>);

/// Pattern 2, producer `i` on A: per size, allocates and hands the objects to its consumer,
/// then allocates again after the consumer freed them and allocated its own; then streams
/// batches to the consumer.
fn p2_producer(
    cfg: &Config,
    topo: &Topology,
    a: usize,
    i: usize,
    barrier: &Barrier,
    tx: mpsc::Sender<Vec<Obj>>,
    stx: mpsc::SyncSender<Vec<Obj>>,
) -> P2Out {
    pin(topo, cfg, a, i);
    let mut rng = Rng::new(a * 1000 + i + 7);
    let mut res = vec![<[Tally; 3]>::default(); cfg.sizes.len()];
    for (k, &spec) in cfg.sizes.iter().enumerate() {
        let objs = alloc_objs(spec, object_count(cfg, spec), &mut rng);
        touch(&objs);
        res[k][0].add(&measure(&objs), a, objs.len());
        tx.send(objs).expect("send");
        barrier.wait(); // B freed A's objects
        barrier.wait(); // B allocated its own
        let again = alloc_objs(spec, object_count(cfg, spec), &mut rng);
        touch(&again);
        res[k][2].add(&measure(&again), a, again.len());
        barrier.wait();
        free_objs(again);
        barrier.wait();
    }
    let (stream, rss) = p2_stream(cfg, a, i, barrier, &mut rng, stx);
    (res, stream, rss)
}

/// The stream of pattern 2, producer `i` on A: `rounds` batches of mixed sizes sent to the
/// consumer (every tenth measured). Returns the tally and, from thread 0, the RSS figures.
fn p2_stream(
    cfg: &Config,
    a: usize,
    i: usize,
    barrier: &Barrier,
    rng: &mut Rng,
    stx: mpsc::SyncSender<Vec<Obj>>,
) -> (Tally, Option<(usize, usize, usize, u64)>) {
    let mut stream = Tally::default();
    barrier.wait();
    let rss0 = sys::rss_bytes();
    let mut rss_max = rss0;
    let mut streamed = 0u64;
    for r in 0..cfg.rounds {
        let batch = alloc_objs(SizeSpec::Mixed, cfg.batch, rng);
        touch(&batch);
        streamed += batch.iter().map(|o| o.layout.size() as u64).sum::<u64>();
        if r % 10 == 0 {
            stream.add(&measure(&batch), a, batch.len());
            if i == 0 {
                rss_max = rss_max.max(sys::rss_bytes());
            }
        }
        stx.send(batch).expect("send");
    }
    drop(stx);
    barrier.wait();
    let rss_end = sys::rss_bytes();
    rss_max = rss_max.max(rss_end);
    (stream, (i == 0).then_some((rss0, rss_max, rss_end, streamed)))
}

/// Pattern 2, consumer `i` on B: per size, frees the producer's objects and allocates its own;
/// then reads and frees the streamed batches.
fn p2_consumer(
    cfg: &Config,
    topo: &Topology,
    b: usize,
    i: usize,
    barrier: &Barrier,
    rx: mpsc::Receiver<Vec<Obj>>,
    srx: mpsc::Receiver<Vec<Obj>>,
) -> P2Out {
    pin(topo, cfg, b, i);
    let mut rng = Rng::new(b * 1000 + i + 13);
    let mut res = vec![<[Tally; 3]>::default(); cfg.sizes.len()];
    for (k, &spec) in cfg.sizes.iter().enumerate() {
        let theirs = rx.recv().expect("recv");
        free_objs(theirs);
        barrier.wait();
        let mine = alloc_objs(spec, object_count(cfg, spec), &mut rng);
        touch(&mine);
        res[k][1].add(&measure(&mine), b, mine.len());
        barrier.wait();
        barrier.wait();
        free_objs(mine);
        barrier.wait();
    }
    barrier.wait();
    let mut sink = 0u64;
    while let Ok(batch) = srx.recv() {
        sink = sink.wrapping_add(read_first(&batch));
        free_objs(batch);
    }
    std::hint::black_box(sink);
    barrier.wait();
    (res, Tally::default(), None)
}

/// Prints pattern 2's RESULT lines for `pair`: three phases per size, then the stream (local
/// and under `rss_bound`).
fn p2_report(cfg: &Config, pair: &str, outs: &[P2Out]) {
    for (k, spec) in cfg.sizes.iter().enumerate() {
        for (phase, idx) in [("a-alloc", 0), ("b-alloc", 1), ("a-again", 2)] {
            let mut t = Tally::default();
            outs.iter().for_each(|o| t.merge(&o.0[k][idx]));
            report(cfg, 2, phase, pair, &spec.label(), &t, "", true);
        }
    }
    let mut t = Tally::default();
    outs.iter().for_each(|o| t.merge(&o.1));
    if let Some((rss0, rss_max, rss_end, _)) = outs.iter().find_map(|o| o.2) {
        let streamed: u64 = outs.iter().filter_map(|o| o.2.map(|x| x.3)).sum::<u64>() * cfg.tpn as u64;
        let growth = rss_max.saturating_sub(rss0);
        let extra = format!(
            "rounds={} streamed={}K rss_start={}K rss_max={}K rss_end={}K rss_growth={}K rss_bound={}K",
            cfg.rounds,
            streamed / 1024,
            rss0 / 1024,
            rss_max / 1024,
            rss_end / 1024,
            growth / 1024,
            cfg.rss_bound / 1024
        );
        report(cfg, 2, "stream", pair, "mixed", &t, &extra, growth <= cfg.rss_bound);
    }
}

/// 3: a thread on A allocates (and frees half, so its caches hold A's memory), moves itself to
/// B by changing its own affinity, and allocates again: the new objects must be on B.
fn pattern3(cfg: &Config, topo: &Topology, a: usize, b: usize) {
    let pair = format!("{a}>{b}");
    let barrier = Barrier::new(cfg.tpn);
    let outs: Vec<Vec<[Tally; 2]>> = thread::scope(|s| {
        let hs: Vec<_> = (0..cfg.tpn)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut rng = Rng::new(a * 1000 + i + 21);
                    let mut res = Vec::new();
                    for &spec in &cfg.sizes {
                        let mut r = <[Tally; 2]>::default();
                        pin(topo, cfg, a, i);
                        barrier.wait();
                        let mut objs = alloc_objs(spec, object_count(cfg, spec), &mut rng);
                        touch(&objs);
                        r[0].add(&measure(&objs), a, objs.len());
                        // Free every other object: the thread's caches now hold A's memory.
                        let mut keep = Vec::new();
                        let mut drop_now = Vec::new();
                        for (j, o) in objs.drain(..).enumerate() {
                            if j % 2 == 0 {
                                drop_now.push(o)
                            } else {
                                keep.push(o)
                            }
                        }
                        free_objs(drop_now);
                        pin(topo, cfg, b, i);
                        let after = alloc_objs(spec, object_count(cfg, spec), &mut rng);
                        touch(&after);
                        r[1].add(&measure(&after), b, after.len());
                        free_objs(keep);
                        free_objs(after);
                        res.push(r);
                    }
                    res
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("worker panicked")).collect()
    });
    for (k, spec) in cfg.sizes.iter().enumerate() {
        for (phase, idx) in [("before-move", 0), ("after-move", 1)] {
            let mut t = Tally::default();
            outs.iter().for_each(|o| t.merge(&o[k][idx]));
            report(cfg, 3, phase, &pair, &spec.label(), &t, "", true);
        }
    }
}

/// 4: threads on A allocate, free and exit; then new threads on B allocate: local to B.
fn pattern4(cfg: &Config, topo: &Topology, a: usize, b: usize) {
    let pair = format!("{a}>{b}");
    for &spec in &cfg.sizes {
        let mut res = [Tally::default(), Tally::default()];
        for (idx, node) in [(0usize, a), (1, b)] {
            let barrier = Barrier::new(cfg.tpn);
            let ts: Vec<Tally> = thread::scope(|s| {
                let hs: Vec<_> = (0..cfg.tpn)
                    .map(|i| {
                        let barrier = &barrier;
                        s.spawn(move || {
                            pin(topo, cfg, node, i);
                            let mut rng = Rng::new(node * 1000 + i + 31);
                            barrier.wait();
                            let objs = alloc_objs(spec, object_count(cfg, spec), &mut rng);
                            touch(&objs);
                            let mut t = Tally::default();
                            t.add(&measure(&objs), node, objs.len());
                            free_objs(objs);
                            t
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().expect("worker panicked")).collect()
            });
            ts.iter().for_each(|t| res[idx].merge(t));
        }
        report(cfg, 4, "a-threads", &pair, &spec.label(), &res[0], "", true);
        report(cfg, 4, "b-new-threads", &pair, &spec.label(), &res[1], "", true);
    }
}

/// Touches `[lo, hi)` page by page: writes the first byte (the first touch places the page),
/// checks the rest of the page reads as zero, then writes it all. Returns the pages that were
/// not zero (calloc must give zeroed memory).
pub(crate) fn touch_part(lo: usize, hi: usize) -> u64 {
    let mut nonzero = 0;
    let mut addr = lo;
    while addr < hi {
        let end = ((addr & !(PAGE - 1)) + PAGE).min(hi);
        // SAFETY: [addr, end) lies inside the live zeroed array this thread owns a part of.
        unsafe {
            std::ptr::write_volatile(addr as *mut u8, 0x77);
            let rest = std::slice::from_raw_parts((addr + 1) as *const u8, end - addr - 1);
            if rest.iter().any(|&x| x != 0) {
                nonzero += 1;
            }
            std::ptr::write_bytes(addr as *mut u8, 0x77, end - addr);
        }
        addr = end;
    }
    nonzero
}

/// 5: a thread on A `alloc_zeroed`s a large array; threads on every node first-touch their
/// contiguous parts in parallel: each page must be on its toucher's node. Then the array is
/// freed, a thread on B allocates the same size and the parts are touched with the roles swapped.
fn pattern5(cfg: &Config, topo: &Topology, a: usize, b: usize) {
    let pair = format!("{a}>{b}");
    // Part order: A's threads first, B's last, the other nodes in between.
    let mut order: Vec<(usize, usize)> = (0..cfg.tpn).map(|i| (a, i)).collect();
    for &n in topo.cpu_nodes.iter().filter(|&&n| n != a && n != b) {
        order.extend((0..cfg.tpn).map(|i| (n, i)));
    }
    order.extend((0..cfg.tpn).map(|i| (b, i)));
    let nt = order.len();
    let barrier = Barrier::new(nt);
    let shared = AtomicUsize::new(0);
    let split = cfg.split.max(PAGE);
    // MemFree per node seen by the allocating thread just before each touch (a node short of
    // free memory makes the kernel place pages elsewhere, whatever the allocator does).
    let free_seen: Vec<std::sync::Mutex<String>> =
        (0..cfg.large.len() * 2).map(|_| std::sync::Mutex::new(String::new())).collect();
    let outs: Vec<Vec<[Tally; 2]>> = thread::scope(|s| {
        let free_seen = &free_seen;
        let hs: Vec<_> = order
            .iter()
            .enumerate()
            .map(|(t, &(node, i))| {
                let (barrier, shared) = (&barrier, &shared);
                s.spawn(move || {
                    pin(topo, cfg, node, i);
                    let mut res = Vec::new();
                    for (k, &size) in cfg.large.iter().enumerate() {
                        let mut r = <[Tally; 2]>::default();
                        for round in 0..2 {
                            let allocator = if round == 0 { (a, 0) } else { (b, 0) };
                            // Alignment 16 (what malloc gives): a larger one makes std's System allocator
                            // memset instead of calling calloc.
                            let layout = Layout::from_size_align(size, 16).expect("layout");
                            if (node, i) == allocator {
                                // SAFETY: size > 0.
                                let p = unsafe { alloc_zeroed(layout) };
                                assert!(!p.is_null(), "alloc_zeroed({size}) failed");
                                shared.store(p as usize, Ordering::SeqCst);
                                *free_seen[2 * k + round].lock().unwrap() =
                                    format!("{} rss_before={}K", sys::node_free(), sys::rss_bytes() / 1024);
                            }
                            barrier.wait();
                            let p = shared.load(Ordering::SeqCst);
                            // Unit boundaries: the array ends and every multiple of `split`.
                            let mut bounds = vec![p];
                            let mut x = (p / split + 1) * split;
                            while x < p + size {
                                bounds.push(x);
                                x += split;
                            }
                            bounds.push(p + size);
                            let units = bounds.len() - 1;
                            let part = if round == 0 { t } else { nt - 1 - t };
                            let (u0, u1) = (part * units / nt, (part + 1) * units / nt);
                            let (lo, hi) = (bounds[u0], bounds[u1]);
                            let nonzero = if lo < hi { touch_part(lo, hi) } else { 0 };
                            barrier.wait();
                            if lo < hi {
                                let mut pages = Vec::new();
                                sys::pages_of(lo, hi - lo, &mut pages);
                                let pl = sys::query_pages(&pages).expect("move_pages failed");
                                r[round].add(&pl, node, 1);
                            }
                            r[round].nonzero += nonzero;
                            barrier.wait();
                            if (node, i) == allocator {
                                // SAFETY: allocated above with this layout; all touchers are done.
                                unsafe { dealloc(p as *mut u8, layout) };
                            }
                        }
                        res.push(r);
                    }
                    res
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("worker panicked")).collect()
    });
    for (k, &size) in cfg.large.iter().enumerate() {
        for (phase, idx) in [("a-calloc", 0), ("b-calloc", 1)] {
            let mut t = Tally::default();
            outs.iter().for_each(|o| t.merge(&o[k][idx]));
            let extra = format!(
                "split={} thp={} nonzero_pages={} memfree_before={}",
                format_size(split),
                sys::thp_mode(),
                t.nonzero,
                free_seen[2 * k + idx].lock().unwrap()
            );
            report(cfg, 5, phase, &pair, &format_size(size), &t, &extra, t.nonzero == 0);
        }
    }
}
