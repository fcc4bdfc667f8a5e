//! Patterns 6-8: the node-targeted API, the placement policies (`DOMALLOC_POLICY`), and a
//! process confined to one node / started under an inherited memory policy.
//!
//! Each check measures the distinct pages of the blocks (object size x count per thread, see
//! [`SIZES`]) with `move_pages(2)`. Two kinds of expectation:
//!
//! - a node (`expect=node:B`, or `expect=local`: the node of the thread that allocated): at least
//!   `--threshold` (99%) of the pages are on it;
//! - an interleave set of k nodes (`expect=interleave:0,1`): at least 99% of the pages are on
//!   nodes of the set, each node of the set holds between 1/k - 10% and 1/k + 10% of the present
//!   pages (40-60% on 2 nodes), and at least 90% of the pairs of address-adjacent pages are on
//!   different nodes (`alternation=`: round-robin, not halves). With THP on, a huge page is one
//!   unit of interleaving, so checks of blocks of 2 MiB and more are informational unless THP is
//!   `never`.
//!
//! Patterns 7 and 8 run each policy in a fresh process: the pattern's child re-executes itself
//! (`--child=P --sub=NAME`) with the environment, affinity or memory policy of the case set.

use crate::patterns::{pin, verdict, Config, Pin};
use crate::sys::{self, Placement, Topology, PAGE};
use domalloc_numa_tests::format_size;
use std::alloc::{alloc, dealloc, Layout};
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// (object size, objects per thread): 64 B objects in bulk (256 KiB), 64 KiB, 1 MiB, 8 MiB.
pub const SIZES: &[(usize, usize)] = &[(64, 4096), (64 << 10, 16), (1 << 20, 2), (8 << 20, 1)];

/// Minimum share of address-adjacent page pairs on different nodes for an interleave check.
const MIN_ALTERNATION: f64 = 0.9;
/// Allowed deviation of each node's share from 1/k for an interleave check over k nodes.
const SPREAD_TOLERANCE: f64 = 0.10;

/// Where the pages of one check are expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// On this node.
    Node(usize),
    /// On the node of the thread that allocated.
    Local,
    /// Alternating over these nodes.
    Interleave(Vec<usize>),
}

impl Expect {
    fn label(&self) -> String {
        match self {
            Expect::Node(n) => format!("node:{n}"),
            Expect::Local => "local".to_string(),
            Expect::Interleave(v) => format!("interleave:{}", sys::join(v)),
        }
    }
}

/// Distinct pages of a set of blocks: their nodes, and how often address-adjacent pages differ.
#[derive(Clone, Debug, Default)]
pub struct Spread {
    place: Placement,
    /// Pages on the expected node (node expectations; resolved per thread for `Local`).
    local: u64,
    objects: u64,
    /// Pairs of present pages at adjacent addresses.
    adjacent: u64,
    /// Of those, pairs on different nodes.
    differ: u64,
}

impl Spread {
    /// Measures the blocks `(addr, len)`, counting pages on `expected` as local.
    fn measure(blocks: &[(usize, usize)], expected: Option<usize>) -> Spread {
        let mut pages = Vec::new();
        for &(a, l) in blocks {
            sys::pages_of(a, l, &mut pages);
        }
        pages.sort_unstable();
        pages.dedup();
        let st = sys::query_nodes(&pages).expect("move_pages failed");
        let mut s = Spread { objects: blocks.len() as u64, ..Default::default() };
        for (i, &node) in st.iter().enumerate() {
            s.place.pages += 1;
            if node >= 0 {
                *s.place.by_node.entry(node as usize).or_default() += 1;
                if expected == Some(node as usize) {
                    s.local += 1;
                }
            } else {
                s.place.absent += 1;
            }
            if i > 0 && pages[i] == pages[i - 1] + PAGE && node >= 0 && st[i - 1] >= 0 {
                s.adjacent += 1;
                if node != st[i - 1] {
                    s.differ += 1;
                }
            }
        }
        s
    }

    fn merge(&mut self, o: &Spread) {
        self.place.merge(&o.place);
        self.local += o.local;
        self.objects += o.objects;
        self.adjacent += o.adjacent;
        self.differ += o.differ;
    }
}

/// Formats one RESULT line for `s` under `expect` (see the module doc for the criteria).
/// `extra_ok` folds in further conditions (node_of, ...); `info` makes it informational.
#[allow(clippy::too_many_arguments)]
fn line(
    cfg: &Config,
    pattern: u32,
    phase: &str,
    pair: &str,
    size: usize,
    s: &Spread,
    expect: &Expect,
    extra: &str,
    extra_ok: bool,
) -> String {
    let pages = s.place.pages;
    let present = pages - s.place.absent;
    let (local, mut ok, mut more) = match expect {
        Expect::Node(_) | Expect::Local => (s.local, true, String::new()),
        Expect::Interleave(set) => {
            let local: u64 = set.iter().map(|&n| s.place.on(n)).sum();
            let k = set.len().max(1) as f64;
            let (lo, hi) = (1.0 / k - SPREAD_TOLERANCE, 1.0 / k + SPREAD_TOLERANCE);
            let shares: Vec<(usize, f64)> = set
                .iter()
                .map(|&n| (n, if present == 0 { 0.0 } else { s.place.on(n) as f64 / present as f64 }))
                .collect();
            let spread_ok = shares.iter().all(|&(_, x)| x >= lo && x <= hi);
            let alternation = if s.adjacent == 0 { 0.0 } else { s.differ as f64 / s.adjacent as f64 };
            let alt_ok = alternation >= MIN_ALTERNATION;
            let spread = shares.iter().map(|(n, x)| format!("{n}:{x:.3}")).collect::<Vec<_>>().join(",");
            (
                local,
                spread_ok && alt_ok,
                format!(
                    " spread={spread} spread_bounds={lo:.2}-{hi:.2} alternation={alternation:.4} adjacent_pairs={}",
                    s.adjacent
                ),
            )
        }
    };
    let share = if pages == 0 { 0.0 } else { local as f64 / pages as f64 };
    ok = ok && extra_ok && pages > 0 && share >= cfg.threshold;
    let mut info = cfg.info_only;
    if matches!(expect, Expect::Interleave(_)) && size >= 2 << 20 && sys::thp_mode() != "never" {
        // A huge page goes wholly to one node: page-granular alternation is not expected.
        info = true;
        more.push_str(" note=thp_on_interleaves_huge_pages");
    }
    let verdict = verdict(info, ok);
    format!(
        "RESULT pattern={pattern} phase={phase} pair={pair} size={} threads_per_node={} objects={} pages={pages} local={local} absent={} share={share:.4} nodes={} expect={}{more}{}{} {verdict}",
        format_size(size),
        cfg.tpn,
        s.objects,
        s.place.absent,
        s.place.describe(),
        expect.label(),
        if extra.is_empty() { "" } else { " " },
        extra,
    )
}

/// A RESULT line for a yes/no check (no pages: `share` is 1 or 0).
fn check(cfg: &Config, pattern: u32, phase: &str, pair: &str, ok: bool, extra: &str) -> String {
    let verdict = verdict(cfg.info_only, ok);
    format!(
        "RESULT pattern={pattern} phase={phase} pair={pair} size=- threads_per_node={} objects=0 pages=0 local=0 absent=0 share={} nodes=- {extra} {verdict}",
        cfg.tpn,
        if ok { "1.0000" } else { "0.0000" }
    )
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 16).expect("layout")
}

/// Writes every byte of `[p, p + len)`.
fn fill(p: *mut u8, len: usize) {
    assert!(!p.is_null(), "allocation of {len} bytes failed");
    // SAFETY: `p` is a live block of at least `len` bytes the caller owns.
    unsafe { std::ptr::write_bytes(p, 0x5a, len) };
}

/// `count` blocks of `size` bytes from the global allocator, each written in full (first touch
/// by the calling thread), as `(address, size)`.
fn alloc_filled(size: usize, count: usize) -> Vec<(usize, usize)> {
    let l = layout(size);
    (0..count)
        .map(|_| {
            // SAFETY: size > 0.
            let p = unsafe { alloc(l) };
            fill(p, size);
            (p as usize, size)
        })
        .collect()
}

/// `n/m` of the blocks for which `domalloc::node_of` says `node`.
#[cfg(not(feature = "system"))]
fn node_of_count(blocks: &[(usize, usize)], node: usize) -> usize {
    blocks.iter().filter(|&&(a, _)| domalloc::node_of(a as *const u8) == Some(node)).count()
}

/// The interleave set of patterns 7/8 and `B`: the first two CPU nodes (`x`, `b`).
fn two_nodes(topo: &Topology) -> Option<(usize, usize)> {
    (topo.cpu_nodes.len() >= 2).then(|| (topo.cpu_nodes[0], topo.cpu_nodes[1]))
}

/// `0-1` for adjacent ids (the spelling of the issue), else `0,3`.
fn node_list(x: usize, y: usize) -> String {
    if y == x + 1 {
        format!("{x}-{y}")
    } else {
        format!("{x},{y}")
    }
}

// ---- pattern 6: the node-targeted API ----------------------------------------------------------

/// 6: the node-targeted API. Per pair (A, B) a thread pinned on A allocates on B through
/// `Vec::new_in(Node)`, `DomAlloc::alloc_on_node` and `domalloc::alloc_on_node` (pages on B,
/// `node_of == Some(B)`), checks `current_node() == A`, allocates through `Interleaved::all()` and
/// `DomAlloc::alloc_interleaved` (pages alternate over the memory nodes), and after freeing the
/// blocks for B (from A) allocates again on B (still on B) and plainly (on A). Once: the topology
/// domalloc detected against /sys/devices/system/node.
#[cfg(not(feature = "system"))]
pub fn pattern6(cfg: &Config, topo: &Topology) {
    println!("{}", topology_check(cfg, topo));
    let mut prs = crate::patterns::pairs(topo, cfg);
    if let Some(&a) = topo.cpu_nodes.first() {
        prs.extend(topo.memory_only.iter().map(|&m| (a, m)));
    }
    let mem_nodes: Vec<usize> = topo.node_mem_kib.iter().filter(|(_, &k)| k > 0).map(|(&n, _)| n).collect();
    for (a, b) in prs {
        let lines: Vec<String> =
            thread::scope(|s| s.spawn(|| node_api_pair(cfg, topo, a, b, &mem_nodes)).join().expect("worker panicked"));
        for l in lines {
            println!("{l}");
        }
    }
}

/// domalloc's topology (`domalloc::topology::get()`) against sysfs: online nodes, each node's
/// CPUs, which nodes have memory, and the distance table.
#[cfg(not(feature = "system"))]
fn topology_check(cfg: &Config, topo: &Topology) -> String {
    let t = domalloc::topology::get();
    let mut bad: Vec<String> = Vec::new();
    let online: Vec<usize> = topo.node_cpus.keys().copied().collect();
    let dnodes: Vec<usize> = t.nodes().collect();
    if dnodes != online {
        bad.push(format!("nodes:{}/{}", sys::join(&dnodes), sys::join(&online)));
    }
    let mut distances = 0;
    for &n in &online {
        let cpus: Vec<usize> = t.cpus_of(n).iter().map(|&c| c as usize).collect();
        if cpus != topo.cpus(n) {
            bad.push(format!("cpus{n}:{}/{}", sys::join(&cpus), sys::join(topo.cpus(n))));
        }
        for &c in topo.cpus(n) {
            if t.cpu_node(c) != Some(n) {
                bad.push(format!("cpu{c}:{:?}/{n}", t.cpu_node(c)));
            }
        }
        let mem = topo.node_mem_kib[&n] > 0;
        if t.has_memory(n) != mem {
            bad.push(format!("mem{n}:{}/{mem}", t.has_memory(n)));
        }
        let row = sys::node_distances(n);
        if row.len() != online.len() {
            bad.push(format!("distance_row{n}:{}", row.len()));
        }
        for (&m, &d) in online.iter().zip(&row) {
            distances += 1;
            if t.distance(n, m) != d {
                bad.push(format!("dist{n}-{m}:{}/{d}", t.distance(n, m)));
            }
        }
    }
    let table: Vec<String> = online
        .iter()
        .map(|&n| online.iter().map(|&m| t.distance(n, m).to_string()).collect::<Vec<_>>().join("+"))
        .collect();
    let extra = format!(
        "online_nodes={} memory_nodes={} distances_checked={distances} distance_table={} mismatches={}",
        sys::join(&dnodes),
        sys::join(&(0..t.node_ids()).filter(|&n| t.has_memory(n)).collect::<Vec<_>>()),
        table.join("/"),
        if bad.is_empty() { "none".to_string() } else { bad.join(",") }
    );
    check(cfg, 6, "topology", "all", bad.is_empty() && !dnodes.is_empty(), &extra)
}

/// The per-pair work of pattern 6, on a thread pinned to `a`. Returns the RESULT lines.
#[cfg(not(feature = "system"))]
fn node_api_pair(cfg: &Config, topo: &Topology, a: usize, b: usize, mem_nodes: &[usize]) -> Vec<String> {
    use domalloc::Node;
    pin(topo, cfg, a, 0);
    let pair = format!("{a}>{b}");
    let mut out = Vec::new();
    let cur = domalloc::current_node();
    out.push(check(
        cfg,
        6,
        "current-node",
        &pair,
        cur == a && sys::current_node() == a,
        &format!("current_node={cur} getcpu_node={} pinned={a}", sys::current_node()),
    ));
    let node = Node::new(b).expect("Node::new(B) for a node with memory");
    let node_ok = node.id() == b && Node::new(usize::MAX / 2).is_none();
    for &(size, count) in SIZES {
        out.extend(node_api_targeted(cfg, &pair, b, node, node_ok, size, count));
        out.extend(node_api_home(cfg, &pair, a, b, size, count));
        // Interleaved (each block a mapping of its own: sizes from 64 KiB).
        if size >= 64 << 10 && mem_nodes.len() >= 2 {
            out.extend(node_api_interleaved(cfg, &pair, mem_nodes, size, count));
        }
    }
    out
}

/// `node_of_ok=k/n` for the blocks (k of them on `b` by `domalloc::node_of`), and whether all are.
#[cfg(not(feature = "system"))]
fn node_of_extra(blocks: &[(usize, usize)], b: usize) -> (String, bool) {
    let k = node_of_count(blocks, b);
    (format!("node_of_ok={k}/{}", blocks.len()), k == blocks.len())
}

/// Pattern 6, `count` blocks of `size` bytes for node `b` (the handle `node`) allocated by the
/// thread on A: `Vec::new_in(Node)`, `DomAlloc::alloc_on_node`, `domalloc::alloc_on_node`, each
/// freed from A. Returns the RESULT lines (`node_ok`: the handle's own checks passed).
#[cfg(not(feature = "system"))]
fn node_api_targeted(
    cfg: &Config,
    pair: &str,
    b: usize,
    node: domalloc::Node,
    node_ok: bool,
    size: usize,
    count: usize,
) -> Vec<String> {
    use allocator_api2::vec::Vec as AVec;
    let l = layout(size);
    let mut out = Vec::new();
    // Vec::new_in(Node::new(B)), filled by the thread on A.
    let vecs: Vec<AVec<u8, domalloc::Node>> = (0..count)
        .map(|_| {
            let mut v = AVec::new_in(node);
            v.resize(size, 0x5au8);
            v
        })
        .collect();
    let blocks: Vec<(usize, usize)> = vecs.iter().map(|v| (v.as_ptr() as usize, v.len())).collect();
    let (e, ok) = node_of_extra(&blocks, b);
    let s = Spread::measure(&blocks, Some(b));
    out.push(line(
        cfg,
        6,
        "vec-node",
        pair,
        size,
        &s,
        &Expect::Node(b),
        &format!("{e} node_handle_ok={node_ok}"),
        ok && node_ok,
    ));
    drop(vecs); // freed by the thread on A: the blocks go home to B

    // DomAlloc::alloc_on_node, then domalloc::alloc_on_node.
    for (phase, via_global) in [("domalloc-alloc-on-node", true), ("alloc-on-node", false)] {
        let blocks: Vec<(usize, usize)> = (0..count)
            .map(|_| {
                let p = if via_global { crate::ALLOC.alloc_on_node(l, b) } else { domalloc::alloc_on_node(l, b) };
                fill(p, size);
                (p as usize, size)
            })
            .collect();
        let (e, ok) = node_of_extra(&blocks, b);
        let s = Spread::measure(&blocks, Some(b));
        out.push(line(cfg, 6, phase, pair, size, &s, &Expect::Node(b), &e, ok));
        for &(p, _) in &blocks {
            // SAFETY: allocated above with layout `l`, freed once (from node A).
            unsafe { dealloc(p as *mut u8, l) };
        }
    }
    out
}

/// Pattern 6, after the frees from A: a fresh block for B (`domalloc::alloc_on_node`) is on B,
/// a plain one (global allocator) on A. Returns the RESULT lines.
#[cfg(not(feature = "system"))]
fn node_api_home(cfg: &Config, pair: &str, a: usize, b: usize, size: usize, count: usize) -> Vec<String> {
    let l = layout(size);
    let mut out = Vec::new();
    let fresh: Vec<(usize, usize)> = (0..count)
        .map(|_| {
            let p = domalloc::alloc_on_node(l, b);
            fill(p, size);
            (p as usize, size)
        })
        .collect();
    let plain = alloc_filled(size, count);
    let (e, ok) = node_of_extra(&fresh, b);
    let s = Spread::measure(&fresh, Some(b));
    out.push(line(cfg, 6, "home-on-node", pair, size, &s, &Expect::Node(b), &e, ok));
    let k = plain.iter().filter(|&&(p, _)| domalloc::node_of(p as *const u8) == Some(a)).count();
    let s = Spread::measure(&plain, Some(a));
    let extra = format!("node_of_ok={k}/{}", plain.len());
    out.push(line(cfg, 6, "home-plain", pair, size, &s, &Expect::Node(a), &extra, k == plain.len()));
    for &(p, _) in fresh.iter().chain(&plain) {
        // SAFETY: allocated above with layout `l`, freed once.
        unsafe { dealloc(p as *mut u8, l) };
    }
    out
}

/// Pattern 6, interleaved blocks over `mem_nodes`: `Vec::with_capacity_in(Interleaved::all())`,
/// then `DomAlloc::alloc_interleaved`. Returns the RESULT lines.
#[cfg(not(feature = "system"))]
fn node_api_interleaved(cfg: &Config, pair: &str, mem_nodes: &[usize], size: usize, count: usize) -> Vec<String> {
    use allocator_api2::vec::Vec as AVec;
    use domalloc::Interleaved;
    let l = layout(size);
    let mut out = Vec::new();
    let il = Expect::Interleave(mem_nodes.to_vec());
    let vecs: Vec<AVec<u8, Interleaved>> = (0..count)
        .map(|_| {
            let mut v = AVec::with_capacity_in(size, Interleaved::all());
            v.resize(size, 0x5au8);
            v
        })
        .collect();
    let blocks: Vec<(usize, usize)> = vecs.iter().map(|v| (v.as_ptr() as usize, v.len())).collect();
    out.push(line(cfg, 6, "interleaved-vec", pair, size, &Spread::measure(&blocks, None), &il, "", true));
    drop(vecs);
    let blocks: Vec<(usize, usize)> = (0..count)
        .map(|_| {
            let p = crate::ALLOC.alloc_interleaved(l);
            fill(p, size);
            (p as usize, size)
        })
        .collect();
    out.push(line(cfg, 6, "domalloc-alloc-interleaved", pair, size, &Spread::measure(&blocks, None), &il, "", true));
    for &(p, _) in &blocks {
        // SAFETY: allocated above with layout `l`, freed once.
        unsafe { dealloc(p as *mut u8, l) };
    }
    out
}

// ---- the workload of patterns 7 and 8 ----------------------------------------------------------

/// One worker of [`workload`]: pinned to a node, or left with the affinity it inherited.
#[derive(Clone, Copy, Debug)]
enum Worker {
    Pinned(usize, usize),
    Unpinned,
}

/// Runs `workers` threads; each allocates [`SIZES`] through the global allocator (`count`
/// objects at a time, written, measured, freed) and checks afterwards that its affinity is what
/// it was after it pinned itself (or when it started). `expect(thread node, size)` says where the
/// pages belong. Returns the RESULT lines: one per size (and expectation), then `affinity-kept`.
fn workload(
    cfg: &Config,
    topo: &Topology,
    pattern: u32,
    phase: &str,
    workers: &[Worker],
    expect: &(dyn Fn(usize, usize) -> Expect + Sync),
) -> Vec<String> {
    let barrier = Barrier::new(workers.len());
    type Out = (Vec<(Expect, Spread)>, bool, String);
    let outs: Vec<Out> = thread::scope(|s| {
        let hs: Vec<_> = workers
            .iter()
            .map(|&w| {
                let barrier = &barrier;
                s.spawn(move || {
                    if let Worker::Pinned(node, i) = w {
                        pin(topo, cfg, node, i);
                    }
                    let set = sys::affinity().expect("sched_getaffinity");
                    let mut res = Vec::new();
                    for &(size, count) in SIZES {
                        barrier.wait();
                        let node = sys::current_node();
                        let e = expect(node, size);
                        let blocks = alloc_filled(size, count);
                        let want = match e {
                            Expect::Node(n) => Some(n),
                            Expect::Local => Some(node),
                            Expect::Interleave(_) => None,
                        };
                        res.push((e, Spread::measure(&blocks, want)));
                        for &(p, size) in &blocks {
                            // SAFETY: allocated by alloc_filled with layout(size), freed once.
                            unsafe { dealloc(p as *mut u8, layout(size)) };
                        }
                    }
                    let after = sys::affinity().expect("sched_getaffinity");
                    let note = format!("{}->{}", sys::join(&set), sys::join(&after));
                    (res, after == set, note)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("worker panicked")).collect()
    });
    let mut lines = Vec::new();
    for (k, &(size, _)) in SIZES.iter().enumerate() {
        // Group the threads by expectation (`Local` is one group: each thread its own node).
        let mut groups: Vec<(Expect, Spread)> = Vec::new();
        for o in &outs {
            let (e, s) = &o.0[k];
            match groups.iter_mut().find(|(g, _)| g == e) {
                Some((_, acc)) => acc.merge(s),
                None => groups.push((e.clone(), s.clone())),
            }
        }
        for (e, s) in &groups {
            lines.push(line(cfg, pattern, phase, "all", size, s, e, "", true));
        }
    }
    let changed: Vec<&str> = outs.iter().filter(|o| !o.1).map(|o| o.2.as_str()).collect();
    let extra = format!(
        "case={phase} threads={} changed={} masks={}",
        outs.len(),
        changed.len(),
        outs.iter().map(|o| o.2.as_str()).collect::<Vec<_>>().join(";")
    );
    lines.push(check(cfg, pattern, "affinity-kept", "all", changed.is_empty(), &extra));
    lines
}

/// One worker pinned to each CPU node (`tpn` per node).
fn pinned_everywhere(cfg: &Config, topo: &Topology) -> Vec<Worker> {
    topo.cpu_nodes.iter().flat_map(|&n| (0..cfg.tpn).map(move |i| Worker::Pinned(n, i))).collect()
}

/// What a sub-run process needs to be started: its case name and how to prepare the command.
pub(crate) struct Sub {
    pub(crate) name: String,
    pub(crate) env: Option<String>,
    pub(crate) affinity: Option<Vec<usize>>,
    pub(crate) mempolicy: Option<(i32, Vec<usize>)>,
}

/// Starts `exe --child=P --sub=NAME` per case, its output going straight to ours; a sub-run that
/// fails or hangs gives a FAIL line.
pub(crate) fn run_subs(cfg: &Config, pattern: u32, subs: &[Sub]) {
    let exe = std::env::current_exe().expect("current_exe");
    for sub in subs {
        let mut cmd = Command::new(&exe);
        cmd.arg(format!("--tpn={}", cfg.tpn))
            .arg(format!("--threshold={}", cfg.threshold))
            .arg(format!("--pin={}", if cfg.pin == Pin::Cpu { "cpu" } else { "node" }))
            .arg(format!("--child={pattern}"))
            .arg(format!("--sub={}", sub.name))
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .env_remove("DOMALLOC_POLICY");
        if cfg.info_only {
            cmd.arg("--info=1");
        }
        if let Some(p) = &sub.env {
            cmd.env("DOMALLOC_POLICY", p);
        }
        let set = sub.affinity.as_ref().map(|c| sys::cpu_set(c));
        let pol = sub.mempolicy.as_ref().map(|(mode, nodes)| (*mode, sys::node_mask(nodes)));
        if set.is_some() || pol.is_some() {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs between fork and exec in the child; it only makes two
            // system calls on data prepared before the fork (no allocation, no locks).
            unsafe {
                cmd.pre_exec(move || {
                    if let Some(set) = &set {
                        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    if let Some((mode, mask)) = &pol {
                        sys::set_mempolicy(*mode, mask)?;
                    }
                    Ok(())
                })
            };
        }
        let start = Instant::now();
        let status: Result<(), String> = match cmd.spawn() {
            Ok(mut c) => loop {
                match c.try_wait() {
                    Ok(Some(s)) if s.success() => break Ok(()),
                    Ok(Some(s)) => break Err(format!("{s}").replace(' ', "_")),
                    Ok(None) if start.elapsed() > Duration::from_secs(240) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break Err("timeout".to_string());
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                    Err(e) => break Err(format!("wait_error:{}", e.kind())),
                }
            },
            Err(e) => Err(format!("spawn_error:{}", e.kind())),
        };
        if let Err(status) = status {
            println!("{}", check(cfg, pattern, &sub.name, "-", false, &format!("note=sub_run_status:{status}")));
        }
        println!("INFO sub-run pattern={pattern} case={} seconds={:.1}", sub.name, start.elapsed().as_secs_f64());
    }
}

// ---- pattern 7: DOMALLOC_POLICY -----------------------------------------------------------------

/// 7: each policy in a fresh process with `DOMALLOC_POLICY` set: `bind:B`, `preferred:B`,
/// `interleave:X-B` and `interleave:X-B@1M` (X, B: the first two CPU nodes), threads pinned on
/// every node.
pub fn pattern7(cfg: &Config, topo: &Topology) {
    let (x, b) = two_nodes(topo).expect("checked by the caller");
    let il = node_list(x, b);
    let subs: Vec<Sub> =
        [format!("bind:{b}"), format!("preferred:{b}"), format!("interleave:{il}"), format!("interleave:{il}@1M")]
            .into_iter()
            .map(|p| Sub { name: p.clone(), env: Some(p), affinity: None, mempolicy: None })
            .collect();
    run_subs(cfg, 7, &subs);
}

/// The expectation for a `DOMALLOC_POLICY` value: (expectation for blocks at or above the
/// threshold, threshold).
fn policy_expect(p: &str) -> Option<(Expect, usize)> {
    let (body, min) = match p.split_once('@') {
        Some((b, m)) => (b, domalloc_numa_tests::parse_size(m)?),
        None => (p, 0),
    };
    let (kind, arg) = body.split_once(':')?;
    let nodes = sys::parse_list(arg);
    let e = match kind {
        "bind" if nodes.len() == 1 => Expect::Node(nodes[0]),
        "preferred" => Expect::Node(arg.parse().ok()?),
        "interleave" => Expect::Interleave(nodes),
        _ => return None,
    };
    Some((e, min))
}

fn pattern7_sub(cfg: &Config, topo: &Topology, sub: &str) -> Result<(), String> {
    let env = std::env::var("DOMALLOC_POLICY").unwrap_or_default();
    if env != sub {
        return Err(format!("DOMALLOC_POLICY={env:?} in the sub-run for {sub}"));
    }
    let (e, min) = policy_expect(sub).ok_or(format!("cannot read policy {sub}"))?;
    let expect = move |_node: usize, size: usize| if size >= min { e.clone() } else { Expect::Local };
    for l in workload(cfg, topo, 7, sub, &pinned_everywhere(cfg, topo), &expect) {
        println!("{l}");
    }
    Ok(())
}

// ---- pattern 8: a confined process, an inherited policy ---------------------------------------

/// 8: (a) a process confined to node B's CPUs (it sets its own affinity before it starts threads:
/// `confined-self`; or it is started with that affinity, as by `numactl --cpunodebind=B`:
/// `confined-exec`), its unpinned threads get B's memory; (b) a process started under a memory
/// policy set with `set_mempolicy` before exec, as by `numactl --membind/--preferred/--interleave`
/// (`inherit-bind`, `inherit-preferred`, `inherit-interleave`), without `DOMALLOC_POLICY`: its
/// allocations follow that policy; (c) every case checks that no thread's affinity changed.
pub fn pattern8(cfg: &Config, topo: &Topology) {
    let (x, b) = two_nodes(topo).expect("checked by the caller");
    let cpus_b = topo.cpus(b).to_vec();
    let sub = |name: &str, affinity: Option<Vec<usize>>, mempolicy: Option<(i32, Vec<usize>)>| Sub {
        name: name.to_string(),
        env: None,
        affinity,
        mempolicy,
    };
    let subs = vec![
        sub("confined-self", None, None),
        sub("confined-exec", Some(cpus_b), None),
        sub("inherit-bind", None, Some((sys::MPOL_BIND, vec![b]))),
        sub("inherit-preferred", None, Some((sys::MPOL_PREFERRED, vec![b]))),
        sub("inherit-interleave", None, Some((sys::MPOL_INTERLEAVE, vec![x, b]))),
    ];
    run_subs(cfg, 8, &subs);
}

fn pattern8_sub(cfg: &Config, topo: &Topology, sub: &str) -> Result<(), String> {
    let (x, b) = two_nodes(topo).ok_or("needs two CPU nodes")?;
    let cpus_b = topo.cpus(b).to_vec();
    let (mode, nodes) = sys::get_mempolicy().map_err(|e| format!("get_mempolicy: {e}"))?;
    println!(
        "INFO sub-run pattern=8 case={sub} mempolicy_mode={mode} mempolicy_nodes={} affinity={}",
        sys::join(&nodes),
        sys::join(&sys::affinity().unwrap_or_default())
    );
    let unpinned = vec![Worker::Unpinned; 2 * cfg.tpn];
    let lines = match sub {
        "confined-self" | "confined-exec" => {
            if sub == "confined-self" {
                // The program confines itself before it starts threads.
                sys::pin_current_thread(&cpus_b).map_err(|e| format!("sched_setaffinity: {e}"))?;
            }
            let now = sys::affinity().map_err(|e| e.to_string())?;
            let mut lines = vec![check(
                cfg,
                8,
                &format!("{sub}-mask"),
                "all",
                now == cpus_b,
                &format!("affinity={} node_cpus={}", sys::join(&now), sys::join(&cpus_b)),
            )];
            lines.extend(workload(cfg, topo, 8, sub, &unpinned, &|_, _| Expect::Node(b)));
            lines
        }
        "inherit-bind" | "inherit-preferred" | "inherit-interleave" => {
            let (want_mode, want_nodes, e) = match sub {
                "inherit-bind" => (sys::MPOL_BIND, vec![b], Expect::Node(b)),
                "inherit-preferred" => (sys::MPOL_PREFERRED, vec![b], Expect::Node(b)),
                _ => (sys::MPOL_INTERLEAVE, vec![x, b], Expect::Interleave(vec![x, b])),
            };
            let mut lines = vec![check(
                cfg,
                8,
                &format!("{sub}-policy"),
                "all",
                mode == want_mode && nodes == want_nodes,
                &format!(
                    "mode={mode} nodes={} want_mode={want_mode} want_nodes={}",
                    sys::join(&nodes),
                    sys::join(&want_nodes)
                ),
            )];
            lines.extend(workload(cfg, topo, 8, sub, &pinned_everywhere(cfg, topo), &move |_, _| e.clone()));
            lines
        }
        _ => return Err(format!("no case {sub} in pattern 8")),
    };
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// Runs case `sub` of pattern `p` (in a sub-run process started by [`run_subs`]).
pub fn run_sub(p: u32, sub: &str, cfg: &Config, topo: &Topology) -> Result<(), String> {
    if p == 9 {
        // Runs on any topology (one CPU node: every worker is local); the parent skips it there.
        return crate::firsttouch::run_sub(cfg, topo, sub);
    }
    if p == 10 {
        return crate::sweep::run_sub(cfg, topo, sub);
    }
    if two_nodes(topo).is_none() {
        return Err("needs two CPU nodes".to_string());
    }
    match p {
        7 => pattern7_sub(cfg, topo, sub),
        8 => pattern8_sub(cfg, topo, sub),
        _ => Err(format!("pattern {p} has no sub-runs")),
    }
}
