//! Statistics: per-node and per-size-class counters ([`stats`]) and the report printed at exit
//! with `DOMALLOC_STATS=1` (formatted into a stack buffer, never allocating).

use core::fmt::Write;
use core::sync::atomic::Ordering;

use crate::global;
use crate::options;
use crate::os::{Os, Sys};
use crate::segment::{PageKind, PAGES, SEG_NORMAL};
use crate::size_class::{class_size, CLASSES};
use crate::topology;
use crate::util::{eprint, BufWriter, Bytes};

/// Nodes a [`Stats`] value can describe (node ids at or above are folded into the last slot).
pub const MAX_STAT_NODES: usize = 64;

/// Counters of one NUMA node's domain.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeStats {
    /// The node id.
    pub node: usize,
    /// Segments (4 MiB) currently mapped.
    pub segments: u64,
    /// Bytes mapped from the OS for this node (segments and huge blocks).
    pub mapped_bytes: u64,
    /// Bytes of spans handed to size classes or large blocks.
    pub span_bytes_in_use: u64,
    /// Live large blocks and their bytes.
    pub large_blocks: u64,
    /// Bytes of live large blocks.
    pub large_bytes: u64,
    /// Live huge blocks.
    pub huge_blocks: u64,
    /// Bytes of live huge blocks.
    pub huge_bytes: u64,
    /// Huge blocks allocated so far.
    pub huge_total: u64,
    /// Bytes of freed huge blocks kept for reuse.
    pub huge_cached_bytes: u64,
    /// Bytes given back to the OS so far.
    pub purged_bytes: u64,
    /// Threads that moved to this node and followed it.
    pub migrations_in: u64,
    /// Small blocks in use on this node.
    pub small_blocks_in_use: u64,
}

/// Counters of one size class, over all nodes.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClassStats {
    /// Block size.
    pub block_size: usize,
    /// Spans serving the class.
    pub spans: u64,
    /// Blocks those spans hold.
    pub capacity: u64,
    /// Blocks in use (including frees not yet collected by their owner).
    pub in_use: u64,
}

/// A snapshot of the allocator's counters.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Per node, `nodes[..node_count]`.
    pub nodes: [NodeStats; MAX_STAT_NODES],
    /// Valid entries in `nodes`.
    pub node_count: usize,
    /// Per size class.
    pub classes: [ClassStats; CLASSES],
    /// Blocks freed by a thread other than their page's owner.
    pub remote_frees: u64,
    /// Batches those remote frees travelled home in.
    pub remote_batches: u64,
    /// Times a thread followed a move to another node.
    pub migrations: u64,
    /// Pages taken from arenas (left by exited or migrated threads).
    pub pages_from_arena: u64,
    /// Fresh spans taken from domains for small classes.
    pub pages_fresh: u64,
    /// Threads with a live heap.
    pub live_heaps: usize,
    /// Whether NUMA logic is on.
    pub numa: bool,
}

/// Takes a snapshot of the counters. Cost: walks every segment (under each domain's lock).
pub fn stats() -> Stats {
    let mut s = Stats {
        nodes: [NodeStats::default(); MAX_STAT_NODES],
        node_count: 0,
        classes: [ClassStats::default(); CLASSES],
        remote_frees: 0,
        remote_batches: 0,
        migrations: 0,
        pages_from_arena: 0,
        pages_fresh: 0,
        live_heaps: 0,
        numa: false,
    };
    for (c, cs) in s.classes.iter_mut().enumerate() {
        cs.block_size = class_size(c);
    }
    if !global::ensure_init() {
        return s;
    }
    s.numa = global::numa_enabled();
    let topo = topology::get();
    for n in 0..global::domain_slots() {
        let d = global::domain(n);
        if d.node != n || !(topo.has_memory(n) || d.counters.segments.load(Ordering::Relaxed) > 0) {
            continue;
        }
        let slot = s.node_count.min(MAX_STAT_NODES - 1);
        let ns = &mut s.nodes[slot];
        let c = &d.counters;
        ns.node = n;
        ns.segments += c.segments.load(Ordering::Relaxed);
        ns.mapped_bytes += c.mapped_bytes.load(Ordering::Relaxed);
        ns.span_bytes_in_use += c.pages_in_use.load(Ordering::Relaxed) * crate::domain::SPAN_UNIT as u64;
        ns.large_blocks += c.large_blocks.load(Ordering::Relaxed);
        ns.large_bytes += c.large_bytes.load(Ordering::Relaxed);
        ns.huge_blocks += c.huge_blocks.load(Ordering::Relaxed);
        ns.huge_bytes += c.huge_bytes.load(Ordering::Relaxed);
        ns.huge_total += c.huge_total.load(Ordering::Relaxed);
        ns.huge_cached_bytes += d.huge_cache.bytes() as u64;
        ns.purged_bytes += c.purged_bytes.load(Ordering::Relaxed);
        ns.migrations_in += c.migrations_in.load(Ordering::Relaxed);
        let classes = &mut s.classes;
        let mut small_in_use = 0;
        d.for_each_segment(|seg| {
            if seg.kind != SEG_NORMAL {
                return;
            }
            for i in 1..PAGES {
                let p = &seg.pages[i];
                if p.kind() == PageKind::Small && p.head_off.get() == 0 {
                    let cs = &mut classes[p.class.get() as usize];
                    cs.spans += 1;
                    cs.capacity += p.reserved.get() as u64;
                    cs.in_use += p.used() as u64;
                    small_in_use += p.used() as u64;
                }
            }
        });
        s.nodes[slot].small_blocks_in_use += small_in_use;
        if s.node_count < MAX_STAT_NODES {
            s.node_count += 1;
        }
    }
    let (t, live) = global::heap_totals();
    s.remote_frees = t[0];
    s.remote_batches = t[1];
    s.migrations = t[2];
    s.pages_from_arena = t[3];
    s.pages_fresh = t[4];
    s.live_heaps = live;
    s
}

/// Prints the statistics report to stderr (no allocation).
pub fn print() {
    let s = stats();
    let mut buf = [0u8; 1024];
    let mut w = BufWriter::new(&mut buf);
    let line = |w: &mut BufWriter<'_>| {
        Sys::write_stderr(w.as_bytes());
        w.clear();
    };
    let _ = writeln!(
        w,
        "domalloc: stats: numa={} live_threads={} remote_frees={} (in {} batches) migrations={} pages: fresh={} from_arenas={}",
        s.numa, s.live_heaps, s.remote_frees, s.remote_batches, s.migrations, s.pages_fresh, s.pages_from_arena
    );
    line(&mut w);
    let _ = writeln!(w, "domalloc: node   segments     mapped    in spans  small-blocks  large(n/bytes)      huge(n/bytes)   huge-cached      purged  migr-in");
    line(&mut w);
    for ns in &s.nodes[..s.node_count] {
        let _ = writeln!(
            w,
            "domalloc: {:>4} {:>10} {:>10} {:>11} {:>13} {:>6}/{:<10} {:>6}/{:<10} {:>11} {:>11} {:>8}",
            ns.node,
            ns.segments,
            Bytes(ns.mapped_bytes),
            Bytes(ns.span_bytes_in_use),
            ns.small_blocks_in_use,
            ns.large_blocks,
            Bytes(ns.large_bytes),
            ns.huge_blocks,
            Bytes(ns.huge_bytes),
            Bytes(ns.huge_cached_bytes),
            Bytes(ns.purged_bytes),
            ns.migrations_in
        );
        line(&mut w);
    }
    let _ = writeln!(w, "domalloc: class  block-size  spans   capacity     in-use");
    line(&mut w);
    for (c, cs) in s.classes.iter().enumerate() {
        if cs.spans == 0 {
            continue;
        }
        let _ = writeln!(w, "domalloc: {:>5} {:>11} {:>6} {:>10} {:>10}", c, cs.block_size, cs.spans, cs.capacity, cs.in_use);
        line(&mut w);
    }
}

/// Prints options and topology (for `DOMALLOC_VERBOSE=1`).
pub(crate) fn print_banner() {
    let o = options::get();
    let t = topology::get();
    eprint(format_args!(
        "domalloc: {} numa={} nodes-with-memory={} cpu-ids={} node-ids={} purge-delay={}ms purge={:?} thp={} policy={} min-size={}{}\n",
        <Sys as Os>::NAME,
        global::numa_enabled(),
        t.memory_node_count(),
        t.cpu_ids(),
        t.node_ids(),
        o.purge_delay_ms,
        o.purge_mode,
        match (o.thp, o.segment_thp) {
            (true, _) => "1",
            (false, true) => "segments",
            (false, false) => "0",
        },
        global::policy().0,
        global::policy().1,
        if global::policy_is_external() { " (inherited from the process, e.g. numactl)" } else { "" }
    ));
    for n in t.nodes() {
        let cpus = t.cpus_of(n);
        eprint(format_args!(
            "domalloc: node {} memory {} cpus {} (first {:?}) home {}\n",
            n,
            Bytes(t.memory(n)),
            cpus.len(),
            cpus.first(),
            t.home_of_node(n)
        ));
    }
}

/// Runs at process exit (from `.fini_array`): the report, if asked for.
extern "C" fn at_exit() {
    if options::get().stats {
        print();
    }
}

#[used]
#[link_section = ".fini_array"]
static AT_EXIT: extern "C" fn() = at_exit;
