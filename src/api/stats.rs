//! Statistics: per-node and per-size-class counters ([`stats`]), the report (`DOMALLOC_STATS=1`
//! or `=json`, to stderr or `DOMALLOC_STATS_FILE` with `%p`/`%r`/`%h`) printed at exit and on
//! request, and the start-up banner. Everything is formatted into stack buffers: nothing here
//! allocates.
//!
//! Where the numbers come from: each heap counts the blocks it hands out and the ones it frees
//! into its own pages in the class's bin (one plain add on the fast paths, on a cache line the
//! fast path touches anyway); frees by other threads are counted per batch in the block's
//! domain; large and huge blocks, spans, mappings, purges and peaks in the domains' slow paths.
//! A heap that exits or changes node folds its counts into its node's domain.

use core::fmt::{self, Write};
use core::sync::atomic::Ordering;

use crate::config::options::{self, StatsFormat};
use crate::config::topology;
use crate::layout::size_class::{class_size, CLASSES};
use crate::layout::{PageKind, PAGES, SEG_NORMAL};
use crate::sys::os::{Os, Sys};
use crate::sys::{BufWriter, Bytes};

/// Nodes a [`Stats`] value can describe (node ids at or above are folded into the last slot).
pub const MAX_STAT_NODES: usize = crate::node::COUNTED_NODES;

/// Counters of one NUMA node's domain.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeStats {
    /// The node id.
    pub node: usize,
    /// Segments (4 MiB) currently mapped.
    pub segments: u64,
    /// Bytes mapped from the OS for this node (segments and huge blocks).
    pub mapped_bytes: u64,
    /// High-water mark of `mapped_bytes`.
    pub mapped_peak_bytes: u64,
    /// Bytes of spans handed to size classes or large blocks.
    pub span_bytes_in_use: u64,
    /// Bytes in use: spans handed out plus huge blocks.
    pub in_use_bytes: u64,
    /// High-water mark of `in_use_bytes`.
    pub in_use_peak_bytes: u64,
    /// Resident bytes of the process on this node (`/proc/self/numa_maps`; 0 where unknown).
    pub resident_bytes: u64,
    /// Blocks (all sizes) allocated from this node so far.
    pub allocs: u64,
    /// Blocks of this node freed so far.
    pub frees: u64,
    /// Of `frees`, those by a thread running on another node.
    pub remote_frees: u64,
    /// Blocks sent back to this node's lists by a free on another node.
    pub went_home: u64,
    /// Live large blocks and their bytes.
    pub large_blocks: u64,
    /// Bytes of live large blocks.
    pub large_bytes: u64,
    /// Large blocks allocated and freed so far.
    pub large_allocs: u64,
    /// See `large_allocs`.
    pub large_frees: u64,
    /// Live huge blocks.
    pub huge_blocks: u64,
    /// Bytes of live huge blocks.
    pub huge_bytes: u64,
    /// Huge blocks allocated so far.
    pub huge_total: u64,
    /// Huge blocks freed so far.
    pub huge_frees: u64,
    /// Huge allocations served from (and not served from) the node's cache.
    pub huge_cache_hits: u64,
    /// See `huge_cache_hits`.
    pub huge_cache_misses: u64,
    /// Bytes of freed huge blocks kept for reuse.
    pub huge_cached_bytes: u64,
    /// Bytes given back to the OS so far.
    pub purged_bytes: u64,
    /// Threads that moved to this node and followed it.
    pub migrations_in: u64,
    /// Small blocks in use on this node (page descriptors' counts).
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
    /// Blocks in use as the page descriptors count them (frees by other threads count once
    /// the owner collects them).
    pub in_use: u64,
    /// Blocks allocated so far.
    pub allocs: u64,
    /// Blocks freed so far.
    pub frees: u64,
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
    /// Pages taken from arenas (left by exited or migrated threads, or given up full).
    pub pages_from_arena: u64,
    /// Fresh spans taken from domains for small classes.
    pub pages_fresh: u64,
    /// Heaps that exited threads left with their pages, taken over whole by a new thread of
    /// the same node.
    pub heaps_taken_over: u64,
    /// Threads with a live heap.
    pub live_heaps: usize,
    /// Whether NUMA logic is on.
    pub numa: bool,
    /// Milliseconds since the allocator started.
    pub elapsed_ms: u64,
    /// The process's resident set now and at its peak (`/proc/self/status`; 0 where unknown).
    pub rss_bytes: u64,
    /// See `rss_bytes`.
    pub rss_peak_bytes: u64,
    /// Whether the background purge thread runs.
    pub purge_thread: bool,
    /// Bytes of the blocks the program holds: small blocks at their class's size (requested
    /// sizes are not kept), large and huge blocks at their usable size. jemalloc's `allocated`;
    /// `in_use_bytes` is span occupancy (jemalloc's `active`).
    pub live_bytes: u64,
    /// The high-water mark of `live_bytes` (taken where heaps fold their counts, at refills: it
    /// may miss a peak by the blocks of the spans the threads hold, at most one per class each).
    pub live_peak_bytes: u64,
    /// A snapshot taken in a signal handler that left out what a lock the interrupted thread
    /// holds protects (the counts are then incomplete; `live_bytes` is the folded count).
    pub partial: bool,
}

impl Stats {
    /// The sum of `f` over the nodes.
    pub fn total(&self, f: impl Fn(&NodeStats) -> u64) -> u64 {
        self.nodes[..self.node_count].iter().map(f).sum()
    }
}

/// Takes a snapshot of the counters. Cost: walks every segment (under each domain's lock) and
/// every live heap (under the heap pool's lock).
pub fn stats() -> Stats {
    snapshot(false)
}

/// [`stats`]; `in_signal`: called from a signal handler, so every part guarded by a lock the
/// calling thread holds (it was interrupted inside the allocator) is left out and the snapshot
/// marked partial; locks other threads hold are waited for (they go on running).
fn snapshot(in_signal: bool) -> Stats {
    let mut s = Stats {
        nodes: [NodeStats::default(); MAX_STAT_NODES],
        node_count: 0,
        classes: [ClassStats::default(); CLASSES],
        remote_frees: 0,
        remote_batches: 0,
        migrations: 0,
        pages_from_arena: 0,
        pages_fresh: 0,
        heaps_taken_over: 0,
        live_heaps: 0,
        numa: false,
        elapsed_ms: 0,
        rss_bytes: 0,
        rss_peak_bytes: 0,
        purge_thread: false,
        live_bytes: 0,
        live_peak_bytes: 0,
        partial: false,
    };
    for (c, cs) in s.classes.iter_mut().enumerate() {
        cs.block_size = class_size(c);
    }
    if !crate::thread::ensure_init() {
        return s;
    }
    s.numa = crate::config::numa_enabled();
    s.elapsed_ms = crate::config::elapsed_ms();
    s.purge_thread = crate::arena::purge_thread_running();
    let topo = topology::get();
    // Node id -> slot in `nodes`.
    let mut slot_of = [usize::MAX; 1024];
    for n in 0..crate::node::domain_slots() {
        let d = crate::node::domain(n);
        if d.node != n || !(topo.has_memory(n) || d.counters.segments.load(Ordering::Relaxed) > 0) {
            continue;
        }
        let slot = s.node_count.min(MAX_STAT_NODES - 1);
        if n < slot_of.len() {
            slot_of[n] = slot;
        }
        node_counters(&mut s, slot, n, in_signal);
        if s.node_count < MAX_STAT_NODES {
            s.node_count += 1;
        }
    }
    // Live heaps' own counts: allocations and own frees on the node each heap serves (its
    // pages'), frees into other pages on those pages' nodes.
    let slot_of_node = |n: usize| slot_of.get(n).copied().unwrap_or(usize::MAX);
    let pool_ok = !(in_signal && crate::thread::pool_held_by_me());
    s.partial |= !pool_ok;
    pool_ok.then(|| {
        crate::thread::for_each_live_heap(|h| {
            let slot = slot_of_node(h.node());
            for c in 0..CLASSES {
                let (a, f, r) = h.bin_counts(c);
                s.classes[c].allocs += a;
                s.classes[c].frees += f + r;
                if slot != usize::MAX {
                    s.nodes[slot].allocs += a;
                    s.nodes[slot].frees += f;
                }
            }
            for (n, c) in h.freed_to.iter().enumerate() {
                let f = c.load(Ordering::Relaxed);
                let to = slot_of_node(n);
                if f != 0 && to != usize::MAX {
                    s.nodes[to].frees += f;
                    if n != h.node() {
                        s.nodes[to].remote_frees += f;
                        s.nodes[to].went_home += f;
                    }
                }
            }
        })
    });
    if pool_ok {
        let (t, live) = crate::thread::heap_totals();
        s.remote_frees = t[0];
        s.remote_batches = t[1];
        s.migrations = t[2];
        s.pages_from_arena = t[3];
        s.pages_fresh = t[4];
        s.live_heaps = live;
    }
    s.heaps_taken_over = crate::thread::heaps_taken_over();
    if !in_signal {
        // (In a signal handler the word may be half-updated by the interrupted code.)
        crate::thread::prof_flush_own_live();
    }
    let (folded, peak) = crate::thread::prof_live_folded();
    s.live_bytes = if s.partial {
        folded
    } else {
        let small: u64 =
            s.classes.iter().map(|c| c.allocs.wrapping_sub(c.frees).wrapping_mul(c.block_size as u64)).sum();
        small.wrapping_add(s.total(|n| n.large_bytes + n.huge_bytes))
    };
    s.live_peak_bytes = peak.max(s.live_bytes);
    process_rss(&mut s);
    node_resident(&mut s, &slot_of);
    s
}

/// The counters of domain `n` into `s.nodes[slot]` (and its classes into `s.classes`).
fn node_counters(s: &mut Stats, slot: usize, n: usize, in_signal: bool) {
    let d = crate::node::domain(n);
    let c = &d.counters;
    let ld = |a: &core::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let ns = &mut s.nodes[slot];
    ns.node = n;
    ns.segments += ld(&c.segments);
    ns.mapped_bytes += ld(&c.mapped_bytes);
    ns.mapped_peak_bytes += ld(&c.mapped_peak);
    ns.span_bytes_in_use += ld(&c.pages_in_use) * crate::node::SPAN_UNIT as u64;
    ns.in_use_bytes += c.in_use_bytes();
    ns.in_use_peak_bytes += ld(&c.in_use_peak).max(c.in_use_bytes());
    ns.large_blocks += ld(&c.large_blocks);
    ns.large_bytes += ld(&c.large_bytes);
    ns.large_allocs += ld(&c.large_allocs);
    ns.large_frees += ld(&c.large_frees);
    ns.huge_blocks += ld(&c.huge_blocks);
    ns.huge_bytes += ld(&c.huge_bytes);
    ns.huge_total += ld(&c.huge_total);
    ns.huge_frees += ld(&c.huge_frees);
    ns.huge_cache_hits += ld(&c.huge_cache_hits);
    ns.huge_cache_misses += ld(&c.huge_cache_misses);
    ns.huge_cached_bytes += if in_signal { d.huge_cache.bytes_hint() } else { d.huge_cache.bytes() } as u64;
    ns.purged_bytes += ld(&c.purged_bytes);
    ns.migrations_in += ld(&c.migrations_in);
    ns.remote_frees += ld(&c.remote_node_frees);
    ns.went_home += ld(&c.went_home);
    ns.allocs += ld(&c.large_allocs) + ld(&c.huge_total) + ld(&c.node_allocs);
    ns.frees += ld(&c.large_frees) + ld(&c.huge_frees) + ld(&c.node_frees);
    for cl in 0..CLASSES {
        s.classes[cl].allocs += ld(&c.class_allocs[cl]);
        s.classes[cl].frees += ld(&c.class_frees[cl]);
    }
    if in_signal && d.lock.held_by_me() {
        s.partial = true;
        return;
    }
    let classes = &mut s.classes;
    let mut small_in_use = 0;
    let mut unfolded = (0u64, 0u64);
    d.for_each_segment(|seg| {
        if seg.kind != SEG_NORMAL {
            return;
        }
        for i in 1..PAGES {
            let p = &seg.pages[i];
            if p.kind() == PageKind::Small && p.head_off.get() == 0 {
                let cs = &mut classes[p.class.get() as usize];
                cs.spans += 1;
                cs.capacity += p.reserved() as u64;
                cs.in_use += p.used() as u64;
                small_in_use += p.used() as u64;
                // Counts of owned pages not yet folded into their heaps.
                let (a, f) = p.unfolded_counts();
                let (a, f) = (a as u64, f as u64);
                cs.allocs += a;
                cs.frees += f;
                unfolded.0 += a;
                unfolded.1 += f;
            }
        }
    });
    s.nodes[slot].small_blocks_in_use += small_in_use;
    s.nodes[slot].allocs += unfolded.0;
    s.nodes[slot].frees += unfolded.1;
}

/// `VmRSS` and `VmHWM` from `/proc/self/status`.
fn process_rss(s: &mut Stats) {
    let mut buf = [0u8; 4096];
    let Some(text) = Sys::read_file(b"/proc/self/status\0", &mut buf) else { return };
    for line in text.split(|&c| c == b'\n') {
        let kb = |prefix: &[u8]| -> Option<u64> {
            line.strip_prefix(prefix).and_then(|rest| {
                let t = crate::sys::trim(rest);
                let end = t.iter().position(|c| !c.is_ascii_digit()).unwrap_or(t.len());
                crate::sys::parse_u64(&t[..end])
            })
        };
        if let Some(v) = kb(b"VmRSS:") {
            s.rss_bytes = v * 1024;
        }
        if let Some(v) = kb(b"VmHWM:") {
            s.rss_peak_bytes = v * 1024;
        }
    }
}

/// Resident bytes per node from `/proc/self/numa_maps` (`N<node>=<pages>` per mapping, in units
/// of the mapping's `kernelpagesize_kB`).
fn node_resident(s: &mut Stats, slot_of: &[usize; 1024]) {
    let mut buf = [0u8; 8192];
    let mut line = [0u8; 1024];
    let nodes = &mut s.nodes;
    let mut handle = |l: &[u8]| {
        let mut page_kb = 4u64;
        for tok in l.split(|&c| c == b' ') {
            if let Some(v) = tok.strip_prefix(b"kernelpagesize_kB=") {
                page_kb = crate::sys::parse_u64(v).unwrap_or(4);
            }
        }
        for tok in l.split(|&c| c == b' ') {
            if tok.first() == Some(&b'N') {
                if let Some(eq) = tok.iter().position(|&c| c == b'=') {
                    if let (Some(n), Some(pages)) =
                        (crate::sys::parse_u64(&tok[1..eq]), crate::sys::parse_u64(&tok[eq + 1..]))
                    {
                        if let Some(&slot) = slot_of.get(n as usize) {
                            if slot != usize::MAX {
                                nodes[slot].resident_bytes += pages * page_kb * 1024;
                            }
                        }
                    }
                }
            }
        }
    };
    crate::sys::os::read_file_lines(b"/proc/self/numa_maps\0", &mut buf, &mut line, &mut handle);
}

// ---- writers ----

/// A `fmt::Write` sink that sends its bytes to a file descriptor through a stack buffer.
pub(crate) struct FdWriter {
    fd: i32,
    buf: [u8; 2048],
    len: usize,
    pub(crate) failed: bool,
}

impl FdWriter {
    pub(crate) fn new(fd: i32) -> Self {
        FdWriter { fd, buf: [0; 2048], len: 0, failed: false }
    }
    pub(crate) fn flush(&mut self) {
        if self.len > 0 && !Sys::write_fd(self.fd, &self.buf[..self.len]) {
            self.failed = true;
        }
        self.len = 0;
    }
}

impl Write for FdWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

impl Drop for FdWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A `fmt::Write` sink into a caller's buffer that counts every byte it was given, kept or not
/// (snprintf's contract).
pub(crate) struct CountingBuf<'a> {
    buf: &'a mut [u8],
    pub(crate) needed: usize,
}

impl<'a> CountingBuf<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        CountingBuf { buf, needed: 0 }
    }
}

impl Write for CountingBuf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let b = s.as_bytes();
        // What still fits (nothing once the buffer is full: then only `needed` grows).
        if let Some(room) = self.buf.get_mut(self.needed..) {
            let n = room.len().min(b.len());
            room[..n].copy_from_slice(&b[..n]);
        }
        self.needed += b.len();
        Ok(())
    }
}

/// The MPI (or Slurm) rank of this process, from the usual launcher variables.
pub(crate) fn rank() -> Option<u64> {
    for v in [&b"OMPI_COMM_WORLD_RANK"[..], b"PMIX_RANK", b"PMI_RANK", b"MV2_COMM_WORLD_RANK", b"SLURM_PROCID"] {
        if let Some(r) = Sys::environ_find(v).and_then(crate::sys::parse_u64) {
            return Some(r);
        }
    }
    None
}

// ---- the reports ----

/// Writes the text report (aligned columns, one table per node and per class).
pub(crate) fn write_text(w: &mut dyn Write, s: &Stats) -> fmt::Result {
    let mut host = [0u8; 64];
    let hl = Sys::host_name(&mut host);
    write!(w, "domalloc: stats: pid {} rank ", Sys::process_id())?;
    match rank() {
        Some(r) => write!(w, "{r}")?,
        None => w.write_str("-")?,
    }
    writeln!(
        w,
        " host {} elapsed {}.{:03} s rss {} (peak {}) numa {} threads {} purge-thread {}",
        core::str::from_utf8(&host[..hl]).unwrap_or("?"),
        s.elapsed_ms / 1000,
        s.elapsed_ms % 1000,
        Bytes(s.rss_bytes),
        Bytes(s.rss_peak_bytes),
        if s.numa { "on" } else { "off" },
        s.live_heaps,
        if s.purge_thread { "running" } else { "off" },
    )?;
    writeln!(
        w,
        "domalloc: blocks: allocs {} frees {} live {}; remote frees {} in {} batches; migrations {}; pages fresh {} from arenas {}; heaps taken over {}",
        s.total(|n| n.allocs),
        s.total(|n| n.frees),
        s.total(|n| n.allocs).wrapping_sub(s.total(|n| n.frees)),
        s.remote_frees,
        s.remote_batches,
        s.migrations,
        s.pages_fresh,
        s.pages_from_arena,
        s.heaps_taken_over
    )?;
    if let Some((hbw, spilled, spills)) = crate::node::tier_counts() {
        writeln!(
            w,
            "domalloc: tiers: placed on high-bandwidth nodes {}; spilled to the local node {} in {} spills",
            Bytes(hbw),
            Bytes(spilled),
            spills
        )?;
    }
    writeln!(
        w,
        "domalloc: live: {} (peak {}): the blocks the program holds, at their usable size (small blocks at their class's size); in-use below counts whole spans{}",
        Bytes(s.live_bytes),
        Bytes(s.live_peak_bytes),
        if s.partial { "; partial: written in a signal handler that interrupted the allocator" } else { "" }
    )?;
    const NODE_HDR: [&str; 12] = [
        "node", "in-use", "peak", "mapped", "map-peak", "resident", "allocs", "frees", "remote", "home", "purged",
        "huge-hit",
    ];
    w.write_str("domalloc: ")?;
    for (i, h) in NODE_HDR.iter().enumerate() {
        if i == 0 {
            write!(w, "{h:>5}")?
        } else {
            write!(w, " {h:>11}")?
        }
    }
    w.write_str("\n")?;
    for n in &s.nodes[..s.node_count] {
        writeln!(
            w,
            "domalloc: {:>5} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            n.node,
            Bytes(n.in_use_bytes),
            Bytes(n.in_use_peak_bytes),
            Bytes(n.mapped_bytes),
            Bytes(n.mapped_peak_bytes),
            Bytes(n.resident_bytes),
            n.allocs,
            n.frees,
            n.remote_frees,
            n.went_home,
            Bytes(n.purged_bytes),
            n.huge_cache_hits
        )?;
    }
    writeln!(
        w,
        "domalloc: {:>5} {:>11} {:>8} {:>10} {:>10} {:>12} {:>12} {:>10}",
        "class", "block-size", "spans", "capacity", "in-use", "allocs", "frees", "live"
    )?;
    for (c, cs) in s.classes.iter().enumerate() {
        if cs.spans == 0 && cs.allocs == 0 {
            continue;
        }
        writeln!(
            w,
            "domalloc: {:>5} {:>11} {:>8} {:>10} {:>10} {:>12} {:>12} {:>10}",
            c,
            cs.block_size,
            cs.spans,
            cs.capacity,
            cs.in_use,
            cs.allocs,
            cs.frees,
            cs.allocs.wrapping_sub(cs.frees)
        )?;
    }
    // The large and huge rows: blocks in use, allocations, frees, live (no spans or capacity).
    let mut kind_row = |name: &str, in_use: u64, allocs: u64, frees: u64| {
        writeln!(
            w,
            "domalloc: {:>5} {:>11} {:>8} {:>10} {:>10} {:>12} {:>12} {:>10}",
            name,
            "-",
            "-",
            "-",
            in_use,
            allocs,
            frees,
            allocs.wrapping_sub(frees)
        )
    };
    kind_row("large", s.total(|n| n.large_blocks), s.total(|n| n.large_allocs), s.total(|n| n.large_frees))?;
    kind_row("huge", s.total(|n| n.huge_blocks), s.total(|n| n.huge_total), s.total(|n| n.huge_frees))
}

/// Writes the JSON document (the schema is in the README's observability section).
pub(crate) fn write_json(w: &mut dyn Write, s: &Stats) -> fmt::Result {
    let mut host = [0u8; 64];
    let hl = Sys::host_name(&mut host);
    w.write_str("{\"domalloc_stats\":1,\"version\":\"")?;
    w.write_str(env!("CARGO_PKG_VERSION"))?;
    write!(w, "\",\"pid\":{},\"rank\":", Sys::process_id())?;
    match rank() {
        Some(r) => write!(w, "{r}")?,
        None => w.write_str("null")?,
    }
    w.write_str(",\"host\":\"")?;
    for &b in &host[..hl] {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' {
            w.write_char(b as char)?;
        }
    }
    write!(
        w,
        "\",\"elapsed_s\":{}.{:03},\"numa\":{},\"partial\":{},\"process\":{{\"rss_bytes\":{},\"rss_peak_bytes\":{}}},\"live_bytes\":{},\"live_peak_bytes\":{},",
        s.elapsed_ms / 1000,
        s.elapsed_ms % 1000,
        s.numa,
        s.partial,
        s.rss_bytes,
        s.rss_peak_bytes,
        s.live_bytes,
        s.live_peak_bytes
    )?;
    if let Some((hbw, spilled, spills)) = crate::node::tier_counts() {
        write!(w, "\"tiers\":{{\"hbw_bytes\":{hbw},\"spilled_bytes\":{spilled},\"spills\":{spills}}},")?;
    }
    w.write_str("\"totals\":")?;
    let mut total = NodeStats::default();
    for n in &s.nodes[..s.node_count] {
        add_node(&mut total, n);
    }
    write_node_fields(w, &total, None)?;
    w.write_str(",\"nodes\":[")?;
    for (i, n) in s.nodes[..s.node_count].iter().enumerate() {
        if i > 0 {
            w.write_str(",")?;
        }
        write_node_fields(w, n, Some(n.node))?;
    }
    w.write_str("],\"classes\":[")?;
    let mut first = true;
    for (c, cs) in s.classes.iter().enumerate() {
        if cs.spans == 0 && cs.allocs == 0 {
            continue;
        }
        if !first {
            w.write_str(",")?;
        }
        first = false;
        let live = cs.allocs.wrapping_sub(cs.frees);
        write!(
            w,
            "{{\"class\":{},\"block_size\":{},\"allocs\":{},\"frees\":{},\"live_blocks\":{},\"in_use_bytes\":{},\"spans\":{},\"capacity_blocks\":{}}}",
            c,
            cs.block_size,
            cs.allocs,
            cs.frees,
            live,
            live.wrapping_mul(cs.block_size as u64),
            cs.spans,
            cs.capacity
        )?;
    }
    let kind = |w: &mut dyn Write, name: &str, a: u64, f: u64, bytes: u64| {
        write!(
            w,
            ",\"{name}\":{{\"allocs\":{a},\"frees\":{f},\"live_blocks\":{},\"in_use_bytes\":{bytes}}}",
            a.wrapping_sub(f)
        )
    };
    w.write_str("]")?;
    kind(w, "large", total.large_allocs, total.large_frees, total.large_bytes)?;
    kind(w, "huge", total.huge_total, total.huge_frees, total.huge_bytes)?;
    w.write_str("}\n")
}

fn add_node(t: &mut NodeStats, n: &NodeStats) {
    t.allocs += n.allocs;
    t.frees += n.frees;
    t.in_use_bytes += n.in_use_bytes;
    t.in_use_peak_bytes += n.in_use_peak_bytes;
    t.mapped_bytes += n.mapped_bytes;
    t.mapped_peak_bytes += n.mapped_peak_bytes;
    t.resident_bytes += n.resident_bytes;
    t.remote_frees += n.remote_frees;
    t.went_home += n.went_home;
    t.purged_bytes += n.purged_bytes;
    t.huge_cache_hits += n.huge_cache_hits;
    t.huge_cache_misses += n.huge_cache_misses;
    t.large_allocs += n.large_allocs;
    t.large_frees += n.large_frees;
    t.large_bytes += n.large_bytes;
    t.huge_total += n.huge_total;
    t.huge_frees += n.huge_frees;
    t.huge_bytes += n.huge_bytes;
}

fn write_node_fields(w: &mut dyn Write, n: &NodeStats, node: Option<usize>) -> fmt::Result {
    w.write_str("{")?;
    if let Some(id) = node {
        write!(w, "\"node\":{id},")?;
    }
    write!(
        w,
        "\"allocs\":{},\"frees\":{},\"live_blocks\":{},\"in_use_bytes\":{},\"in_use_peak_bytes\":{},\"mapped_bytes\":{},\"mapped_peak_bytes\":{},\"resident_bytes\":{},\"local_frees\":{},\"remote_frees\":{},\"went_home\":{},\"purged_bytes\":{},\"huge_cache_hits\":{},\"huge_cache_misses\":{}}}",
        n.allocs,
        n.frees,
        n.allocs.wrapping_sub(n.frees),
        n.in_use_bytes,
        n.in_use_peak_bytes.max(n.in_use_bytes),
        n.mapped_bytes,
        n.mapped_peak_bytes.max(n.mapped_bytes),
        n.resident_bytes,
        n.frees.saturating_sub(n.remote_frees),
        n.remote_frees,
        n.went_home,
        n.purged_bytes,
        n.huge_cache_hits,
        n.huge_cache_misses
    )
}

/// Prints the text report to stderr.
pub fn print() {
    let _ = print_to(2, StatsFormat::Text);
}

/// Writes the report in `format` to `fd`; false if writing failed.
pub(crate) fn print_to(fd: i32, format: StatsFormat) -> bool {
    print_snapshot(fd, format, false)
}

/// [`print_to`], from a signal handler when `in_signal` (see [`snapshot`]).
fn print_snapshot(fd: i32, format: StatsFormat, in_signal: bool) -> bool {
    let s = snapshot(in_signal);
    let mut w = FdWriter::new(fd);
    let r = match format {
        StatsFormat::Json => write_json(&mut w, &s),
        _ => write_text(&mut w, &s),
    };
    w.flush();
    r.is_ok() && !w.failed
}

/// Expands a `DOMALLOC_STATS_FILE` template (`%p`, `%r`, `%h`, `%%`) into `out`, NUL-terminated;
/// the path's length (without the NUL), or `None` if it does not fit.
pub(crate) fn expand_path(template: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut w = BufWriter::new(out);
    let mut i = 0;
    while i < template.len() {
        let c = template[i];
        if c == b'%' && i + 1 < template.len() {
            i += 1;
            match template[i] {
                b'p' => write!(w, "{}", Sys::process_id()).ok()?,
                b'r' => match rank() {
                    Some(r) => write!(w, "{r}").ok()?,
                    None => w.write_str("norank").ok()?,
                },
                b'h' => {
                    let mut host = [0u8; 64];
                    let n = Sys::host_name(&mut host);
                    w.write_str(core::str::from_utf8(&host[..n]).unwrap_or("host")).ok()?
                }
                b'%' => w.write_str("%").ok()?,
                other => {
                    w.write_char('%').ok()?;
                    w.write_char(other as char).ok()?;
                }
            }
        } else {
            w.write_char(c as char).ok()?;
        }
        i += 1;
    }
    w.write_char('\0').ok()?;
    if w.truncated {
        return None;
    }
    Some(w.as_bytes().len() - 1)
}

/// The report asked for by `DOMALLOC_STATS`, to its file or stderr; `in_signal`: from the
/// SIGTERM handler (see [`snapshot`]).
fn write_report(in_signal: bool) {
    let o = options::get();
    if o.stats == StatsFormat::Off {
        return;
    }
    let mut path = [0u8; 512];
    match o.stats_file.and_then(|t| expand_path(t, &mut path)) {
        Some(_) => {
            let fd = Sys::create_file(&path);
            if fd >= 0 {
                print_snapshot(fd, o.stats, in_signal);
                Sys::close_fd(fd);
            } else {
                crate::sys::os::eprint(format_args!(
                    "domalloc: warning: cannot write the statistics file {}\n",
                    core::str::from_utf8(&path).unwrap_or("?").trim_end_matches('\0')
                ));
            }
        }
        None => {
            print_snapshot(2, o.stats, in_signal);
        }
    }
}

/// Set while a signal handler writes the report (a second SIGTERM on another thread meanwhile
/// goes straight on to the default action).
static SIGNAL_REPORT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The SIGTERM hook (a batch system's walltime kill): the report, then the program's own handler
/// or the default action (`Os::catch_signal`). Async-signal-safe: stack buffers, `open`/`write`,
/// and no lock the interrupted thread holds ([`snapshot`]).
fn on_term() {
    if SIGNAL_REPORT.swap(true, Ordering::AcqRel) {
        return;
    }
    write_report(true);
    crate::thread::prof_stop_periodic(true);
    if crate::thread::prof_active() {
        dump_profile(None, true);
    }
    SIGNAL_REPORT.store(false, Ordering::Release);
}

/// Runs at load (from `.init_array`): when a report or the profiler is asked for, start-up now,
/// the profiler, and the signal hooks, chained to whatever the process has for the signal at
/// start-up (an ignored signal stays ignored; a handler the program installs later replaces
/// ours, its choice).
extern "C" fn at_load() {
    let asked = |name: &[u8]| Sys::environ_find(name).is_some();
    if !(asked(b"DOMALLOC_STATS") || asked(b"DOMALLOC_STATS_FILE") || asked(b"DOMALLOC_PROF")) {
        return;
    }
    if !crate::thread::ensure_init() {
        return;
    }
    let o = options::get();
    if o.prof && crate::thread::prof_start(0) {
        crate::thread::prof_start_periodic(dump_numbered);
    }
    if o.stats != StatsFormat::Off || o.prof {
        Sys::catch_signal(crate::sys::os::Signal::Term, on_term, true);
    }
    if let Some(sig) = o.prof_signal {
        Sys::catch_signal(sig, on_prof_signal, false);
    }
}

/// The `DOMALLOC_PROF_SIGNAL` hook: the profile, then the program goes on.
fn on_prof_signal() {
    if SIGNAL_REPORT.swap(true, Ordering::AcqRel) {
        return;
    }
    dump_profile(None, true);
    SIGNAL_REPORT.store(false, Ordering::Release);
}

// ---- the heap profile ----

/// Starts the sampling heap profiler: one sample every `sample_bytes` allocated on average (0:
/// `DOMALLOC_PROF_SAMPLE`). False if its tables (about 4.5 MiB, mapped once) cannot be mapped.
/// With `DOMALLOC_PROF_INTERVAL` set, also starts the thread that writes the periodic profiles
/// (creating it allocates: not from a signal handler).
pub fn prof_start(sample_bytes: u64) -> bool {
    let started = crate::thread::ensure_init() && crate::thread::prof_start(sample_bytes);
    if started {
        crate::thread::prof_start_periodic(dump_numbered);
    }
    started
}

/// Stops sampling; the blocks sampled so far are still followed to their free.
pub fn prof_stop() {
    crate::thread::prof_stop()
}

/// Writes the heap profile to `path` (`None`: `DOMALLOC_PROF_FILE`, with its `%p`, `%r`, `%h`
/// patterns). False if there is no profile (never started) or the file cannot be written.
pub fn prof_dump(path: Option<&str>) -> bool {
    match path {
        None => dump_profile(None, false),
        Some(p) => {
            let mut buf = [0u8; 512];
            if p.len() >= buf.len() || p.as_bytes().contains(&0) {
                return false;
            }
            buf[..p.len()].copy_from_slice(p.as_bytes());
            dump_profile(Some(&buf[..p.len() + 1]), false)
        }
    }
}

/// Writes the profile to `path` (NUL-terminated) or to `DOMALLOC_PROF_FILE`'s expansion.
pub(crate) fn dump_profile(path: Option<&[u8]>, in_signal: bool) -> bool {
    let mut expanded = [0u8; 512];
    let path = match path {
        Some(p) => p,
        None => match expand_path(options::get().prof_file, &mut expanded) {
            Some(n) => &expanded[..n + 1],
            None => return false,
        },
    };
    let fd = Sys::create_file(path);
    if fd < 0 {
        crate::sys::os::eprint(format_args!(
            "domalloc: warning: cannot write the heap profile {}\n",
            core::str::from_utf8(path).unwrap_or("?").trim_end_matches('\0')
        ));
        return false;
    }
    let mut w = FdWriter::new(fd);
    let ok = write_profile(&mut w, in_signal).is_ok();
    w.flush();
    Sys::close_fd(fd);
    ok && !w.failed
}

/// Periodic dump number `n` (`DOMALLOC_PROF_INTERVAL`): to `DOMALLOC_PROF_FILE`'s expansion
/// with `.0001` (`n` in four digits or more) appended.
fn dump_numbered(n: u32) -> bool {
    let mut path = [0u8; 512];
    let Some(len) = expand_path(options::get().prof_file, &mut path) else { return false };
    let mut w = BufWriter::new(&mut path[len..]);
    let _ = write!(w, ".{n:04}\0");
    if w.truncated {
        return false;
    }
    let end = len + w.as_bytes().len();
    dump_profile(Some(&path[..end]), false)
}

/// The profile's views, each a collapsed-stack section (`frame;frame;frame value`).
const PROF_VIEWS: [&str; 4] = ["alloc_bytes", "live_bytes", "peak_live_bytes", "remote_freed_bytes"];

/// Writes the heap profile: a header, the module map (executable mappings, so addresses can be
/// symbolised elsewhere), one `# site` line per call site with all its figures, then one
/// collapsed-stack section per view (outermost frame first, raw hexadecimal addresses).
pub(crate) fn write_profile(w: &mut dyn Write, in_signal: bool) -> fmt::Result {
    let mut host = [0u8; 64];
    let hl = Sys::host_name(&mut host);
    write!(w, "# domalloc heap profile 1\n# pid {} rank ", Sys::process_id())?;
    match rank() {
        Some(r) => write!(w, "{r}")?,
        None => w.write_str("-")?,
    }
    let (live, peak) = crate::thread::prof_live_folded();
    writeln!(
        w,
        " host {} elapsed_ms {} sample_bytes {} live_bytes {} live_peak_bytes {}",
        core::str::from_utf8(&host[..hl]).unwrap_or("?"),
        crate::config::elapsed_ms(),
        crate::thread::prof_interval(),
        live,
        peak
    )?;
    let mut r = Ok(());
    Sys::for_each_mapping(&mut |m| {
        if m.executable && !m.path.is_empty() && r.is_ok() {
            r = writeln!(
                w,
                "# map {:#x}-{:#x} {:#x} {}",
                m.start,
                m.end,
                m.offset,
                core::str::from_utf8(m.path).unwrap_or("?")
            );
        }
    });
    r?;
    w.write_str("# site samples alloc_bytes live_bytes peak_live_bytes freed_bytes remote_freed_bytes mean_lifetime_ms alloc_bytes_by_node mean_size threads stack\n")?;
    let mut r = Ok(());
    let totals = crate::thread::prof_for_each_site(in_signal, &mut |s| {
        if r.is_ok() {
            r = (|| {
                write!(
                    w,
                    "# site {} {} {} {} {} {} {} {},{},{},{} {} {} ",
                    s.samples,
                    s.alloc_bytes,
                    s.live_bytes,
                    s.peak_bytes,
                    s.freed_bytes,
                    s.remote_bytes,
                    s.lifetime_ms.checked_div(s.freed_samples).unwrap_or(0),
                    s.node_bytes[0],
                    s.node_bytes[1],
                    s.node_bytes[2],
                    s.node_bytes[3],
                    s.sizes.checked_div(s.samples).unwrap_or(0),
                    s.threads.count_ones()
                )?;
                write_stack(w, s)?;
                w.write_str("\n")
            })();
        }
    });
    r?;
    let Some((sampled_live, sampled_peak, dropped)) = totals else {
        return w.write_str(
            "# no profile: the profiler was never started, or its lock is held by the interrupted thread\n",
        );
    };
    writeln!(w, "# sampled live_bytes {sampled_live} peak {sampled_peak} dropped_samples {dropped}")?;
    for (v, name) in PROF_VIEWS.iter().enumerate() {
        writeln!(w, "# view {name}")?;
        let mut r = Ok(());
        crate::thread::prof_for_each_site(in_signal, &mut |s| {
            let value = [s.alloc_bytes, s.live_bytes, s.peak_bytes, s.remote_bytes][v];
            if value != 0 && r.is_ok() {
                r = write_stack(w, s).and_then(|_| writeln!(w, " {value}"));
            }
        });
        r?;
    }
    Ok(())
}

/// A site's stack, outermost frame first, `;`-separated (`[unknown]` without frames).
fn write_stack(w: &mut dyn Write, s: &crate::thread::ProfSite) -> fmt::Result {
    let frames = &s.frames[..(s.depth as usize).min(s.frames.len())];
    if frames.is_empty() {
        return w.write_str("[unknown]");
    }
    for (i, f) in frames.iter().rev().enumerate() {
        if i > 0 {
            w.write_str(";")?;
        }
        write!(w, "{f:#x}")?;
    }
    Ok(())
}

#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;

/// Runs at process exit (from `.fini_array`): the report, if asked for, the heap profile if the
/// profiler runs, and the contention line.
extern "C" fn at_exit() {
    // A SIGTERM from now on (the process is exiting) writes nothing: its report would truncate
    // the file this one is being written to.
    SIGNAL_REPORT.store(true, Ordering::Release);
    crate::thread::prof_stop_periodic(false);
    write_report(false);
    if crate::thread::prof_active() {
        dump_profile(None, false);
    }
    let mut buf = [0u8; 512];
    let mut w = BufWriter::new(&mut buf);
    if crate::sys::report_line(&mut w) {
        let _ = w.write_str("\n");
        Sys::write_fd(2, w.as_bytes());
    }
}

#[used]
#[link_section = ".fini_array"]
static AT_EXIT: extern "C" fn() = at_exit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_file_templates_expand() {
        let mut out = [0u8; 128];
        let n = expand_path(b"/tmp/s.%p.%%.json", &mut out).unwrap();
        let s = core::str::from_utf8(&out[..n]).unwrap();
        assert_eq!(s, format!("/tmp/s.{}.%.json", std::process::id()));
        assert_eq!(out[n], 0);
        let n = expand_path(b"%h-%r", &mut out).unwrap();
        let s = core::str::from_utf8(&out[..n]).unwrap();
        assert!(s.ends_with("-norank") || s.contains('-'), "{s}");
        assert!(expand_path(&[b'x'; 600], &mut out).is_none());
    }

    /// What the SIGTERM handler takes: a lock the interrupted thread (here: this one) holds is
    /// skipped, not waited for (waiting would never end), and the snapshot says it is partial.
    #[test]
    fn a_snapshot_in_a_signal_handler_skips_a_lock_this_thread_holds() {
        assert!(crate::thread::ensure_init());
        let n = (0..crate::node::domain_slots()).find(|&n| crate::node::domain(n).node == n).unwrap();
        let held = crate::node::domain(n).lock.lock();
        let s = snapshot(true);
        drop(held);
        assert!(s.partial, "a snapshot that skipped a held lock must say so");
        let mut out = [0u8; 4096];
        let mut w = CountingBuf::new(&mut out);
        write_text(&mut w, &s).unwrap();
        let n = w.needed.min(4096);
        let text = core::str::from_utf8(&out[..n]).unwrap();
        assert!(text.contains("partial"), "{text}");
        assert!(!snapshot(true).partial, "nothing held: complete");
    }

    #[test]
    fn counting_buffer_reports_the_length_it_needs() {
        let mut b = [0u8; 4];
        let mut w = CountingBuf::new(&mut b);
        w.write_str("abcdef").unwrap();
        assert_eq!(w.needed, 6);
        assert_eq!(&b, b"abcd");
    }
}
