//! The machine's NUMA topology as the allocator sees it: which node each CPU is on, which nodes
//! have memory, and the distances between nodes.
//!
//! Tables are sized by the highest *possible* CPU and node id (not by counts), so sparse node ids,
//! CPU-less (memory-only) nodes, memory-less nodes and CPUs outside the process's cpuset all have
//! a slot. They live in memory mapped straight from the OS: detecting the topology never allocates.
//! A CPU the tables do not know (hot-added later) maps to the node the kernel reports for it at
//! that time, or node 0.
//!
//! Memory tiers come from the kernel too, never from a list of parts: the firmware's HMAT
//! bandwidth and latency of each memory node from its best initiators (Linux:
//! `nodeN/access0/initiators/`). A CPU-less node with more bandwidth than its initiator's own
//! memory is high-bandwidth (HBM on a Xeon Max, a GPU's HBM); one with less bandwidth or more
//! latency is a capacity node (a CXL expander); nodes with CPUs are the standard tier. Without
//! HMAT a CPU-less node is a capacity node, and only `DOMALLOC_HBW_NODES` (or memkind's
//! `MEMKIND_HBW_NODES`) makes a node high-bandwidth; the override replaces the detection.

use core::ptr;

use crate::sys::os::{self, NodeMask, Os, Sys, TopologySink, OS_PAGE};
use crate::sys::SetOnce;

const NO_NODE: u16 = u16::MAX;

/// A node's memory tier.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tier {
    /// No memory.
    None,
    /// Ordinary memory: a node with CPUs, or a CPU-less node as fast as its initiator's own.
    Standard,
    /// A CPU-less node with more bandwidth than its initiator's own memory (HMAT), or named by
    /// `DOMALLOC_HBW_NODES` / `MEMKIND_HBW_NODES`.
    HighBandwidth,
    /// A CPU-less node with less bandwidth or more latency than its initiator's own memory
    /// (HMAT), or any CPU-less node when the firmware gives no HMAT.
    Capacity,
}

impl Tier {
    fn from_u8(v: u8) -> Tier {
        match v {
            1 => Tier::Standard,
            2 => Tier::HighBandwidth,
            3 => Tier::Capacity,
            _ => Tier::None,
        }
    }
    /// A short name (`standard`, `hbw`, `capacity`, `none`).
    pub fn name(self) -> &'static str {
        match self {
            Tier::None => "none",
            Tier::Standard => "standard",
            Tier::HighBandwidth => "hbw",
            Tier::Capacity => "capacity",
        }
    }
}

/// A detected topology. The process-wide one is [`get`]; [`Topology::detect`] makes others.
pub struct Topology {
    cpu_ids: usize,
    node_ids: usize,
    /// Node of each CPU id (`NO_NODE` if unknown).
    cpu_node: *mut u16,
    /// Bytes of memory of each node id (0: none or absent).
    node_mem: *mut u64,
    /// Whether each node id is online.
    node_online: *mut u8,
    /// `node_ids * node_ids` distances (0: unknown).
    distance: *mut u16,
    /// For each node id, the nearest node with memory (itself if it has some).
    node_home: *mut u16,
    /// CPUs grouped by node: `by_node[start[n]..start[n+1]]` are node n's CPUs.
    node_cpu_start: *mut u32,
    cpus_by_node: *mut u32,
    /// HMAT read bandwidth (MB/s) and latency (ns) of each node from its best initiators (0:
    /// not given).
    node_bw: *mut u32,
    node_lat: *mut u32,
    /// `node_ids * node_ids`: `initiator[t * node_ids + i]` is 1 when HMAT names node i a best
    /// initiator of memory node t.
    initiator: *mut u8,
    /// Each node's [`Tier`] (as u8), and for each node its nearest high-bandwidth and capacity
    /// nodes (`NO_NODE`: none).
    node_tier: *mut u8,
    near_hbw: *mut u16,
    near_capacity: *mut u16,
    /// Whether any node has HMAT figures.
    hmat: bool,
    map: *mut u8,
    map_len: usize,
}

// SAFETY: the tables are written only while building (single owner), then read-only.
unsafe impl Sync for Topology {}
// SAFETY: as above; the mapping is owned.
unsafe impl Send for Topology {}

impl Topology {
    const fn empty() -> Self {
        Topology {
            cpu_ids: 0,
            node_ids: 0,
            cpu_node: ptr::null_mut(),
            node_mem: ptr::null_mut(),
            node_online: ptr::null_mut(),
            distance: ptr::null_mut(),
            node_home: ptr::null_mut(),
            node_cpu_start: ptr::null_mut(),
            cpus_by_node: ptr::null_mut(),
            node_bw: ptr::null_mut(),
            node_lat: ptr::null_mut(),
            initiator: ptr::null_mut(),
            node_tier: ptr::null_mut(),
            near_hbw: ptr::null_mut(),
            near_capacity: ptr::null_mut(),
            hmat: false,
            map: ptr::null_mut(),
            map_len: 0,
        }
    }

    /// Detects the topology from the OS (`root` replaces `/sys` on Linux). Falls back to one node
    /// holding every CPU when nothing is found. `None` only if the tables cannot be mapped.
    pub fn detect(root: Option<&[u8]>) -> Option<Topology> {
        let mut b = Builder { t: Topology::empty(), failed: false };
        let found = Sys::read_topology(root, &mut b);
        if b.failed {
            return None;
        }
        if !found || b.t.map.is_null() {
            if !b.t.map.is_null() {
                b.t.release();
            }
            b = Builder { t: Topology::empty(), failed: false };
            if !b.possible(1024, 1) {
                return None;
            }
            for c in 0..1024 {
                b.cpu(c, 0);
            }
            b.node_memory(0, 1);
            b.distance(0, 0, 10);
        }
        b.t.finish();
        Some(b.t)
    }

    /// Releases the tables (only for topologies made by `detect`, never the global one).
    fn release(&mut self) {
        if !self.map.is_null() {
            // SAFETY: the mapping is ours.
            unsafe { Sys::unmap(self.map, self.map_len) };
            self.map = ptr::null_mut();
        }
    }

    fn finish(&mut self) {
        // Home node: nearest node with memory (lowest distance, then lowest id).
        for n in 0..self.node_ids {
            let mut best = NO_NODE;
            if self.has_memory(n) {
                best = n as u16;
            } else {
                let mut best_d = u32::MAX;
                for m in 0..self.node_ids {
                    if self.has_memory(m) {
                        let d = match self.distance(n, m) {
                            0 => 255,
                            d => d,
                        };
                        if d < best_d {
                            best_d = d;
                            best = m as u16;
                        }
                    }
                }
            }
            // SAFETY: n < node_ids.
            unsafe { *self.node_home.add(n) = if best == NO_NODE { 0 } else { best } };
        }
        // Group CPUs by node (counting sort).
        let mut count = 0u32;
        for n in 0..self.node_ids {
            // SAFETY: n <= node_ids.
            unsafe { *self.node_cpu_start.add(n) = count };
            for c in 0..self.cpu_ids {
                // SAFETY: c < cpu_ids.
                if unsafe { *self.cpu_node.add(c) } as usize == n {
                    // SAFETY: count < cpu_ids since each CPU is counted once.
                    unsafe { *self.cpus_by_node.add(count as usize) = c as u32 };
                    count += 1;
                }
            }
        }
        // SAFETY: the table has node_ids + 1 entries.
        unsafe { *self.node_cpu_start.add(self.node_ids) = count };
        // SAFETY: we own the tables (building).
        unsafe { self.set_tiers(None) };
    }

    /// Sorts the nodes into tiers and finds each node's nearest high-bandwidth and capacity
    /// nodes; `hbw` (the `DOMALLOC_HBW_NODES` override) names the high-bandwidth nodes instead
    /// of HMAT.
    ///
    /// # Safety
    /// Nothing reads the tier tables meanwhile: the topology is being built, or start-up holds
    /// its lock before publication.
    unsafe fn set_tiers(&self, hbw: Option<&NodeMask>) {
        let n_ids = self.node_ids;
        for t in 0..n_ids {
            let tier = if !self.has_memory(t) {
                Tier::None
            } else if let Some(m) = hbw {
                if m.contains(t) {
                    Tier::HighBandwidth
                } else if self.cpus_of(t).is_empty() {
                    Tier::Capacity
                } else {
                    Tier::Standard
                }
            } else if !self.cpus_of(t).is_empty() {
                Tier::Standard
            } else {
                self.hmat_tier(t)
            };
            // SAFETY: t < node_ids; the caller excludes readers.
            unsafe { *self.node_tier.add(t) = tier as u8 };
        }
        for n in 0..n_ids {
            let hbw = self.nearest_of_tier(n, Tier::HighBandwidth);
            let cap = self.nearest_of_tier(n, Tier::Capacity);
            // SAFETY: n < node_ids; the caller excludes readers.
            unsafe {
                *self.near_hbw.add(n) = hbw;
                *self.near_capacity.add(n) = cap;
            }
        }
    }

    /// The tier of CPU-less memory node `t` from HMAT: compared with the memory of its best
    /// initiators (their own nodes' figures). No figures: capacity.
    fn hmat_tier(&self, t: usize) -> Tier {
        let (bw, lat) = (self.bandwidth(t), self.latency(t));
        if bw == 0 && lat == 0 {
            return Tier::Capacity;
        }
        let (mut ref_bw, mut ref_lat, mut found) = (0u32, u32::MAX, false);
        for i in 0..self.node_ids {
            if i != t && self.is_initiator(i, t) && self.has_memory(i) && self.bandwidth(i) > 0 {
                ref_bw = ref_bw.max(self.bandwidth(i));
                ref_lat = ref_lat.min(self.latency(i).max(1));
                found = true;
            }
        }
        if !found {
            // The initiator's own memory has no figures: nothing to compare with.
            return Tier::Capacity;
        }
        if bw > ref_bw {
            Tier::HighBandwidth
        } else if bw < ref_bw || lat > ref_lat {
            Tier::Capacity
        } else {
            Tier::Standard
        }
    }

    /// The node of tier `tier` nearest `n`: one HMAT names `n` a best initiator of first, then
    /// the lowest SLIT distance, then the lowest id. `NO_NODE` if the tier has no node.
    fn nearest_of_tier(&self, n: usize, tier: Tier) -> u16 {
        let mut best = NO_NODE;
        let mut best_key = (true, u32::MAX);
        for t in 0..self.node_ids {
            if self.tier(t) != tier {
                continue;
            }
            let d = match self.distance(n, t) {
                0 => 255,
                d => d,
            };
            let key = (!self.is_initiator(n, t), d);
            if best == NO_NODE || key < best_key {
                best = t as u16;
                best_key = key;
            }
        }
        best
    }

    /// Highest possible CPU id + 1.
    pub fn cpu_ids(&self) -> usize {
        self.cpu_ids
    }
    /// Highest possible node id + 1.
    pub fn node_ids(&self) -> usize {
        self.node_ids
    }
    /// Whether node `n` is online.
    pub fn is_online(&self, n: usize) -> bool {
        // SAFETY: bounds checked.
        n < self.node_ids && unsafe { *self.node_online.add(n) } != 0
    }
    /// Whether node `n` has memory.
    pub fn has_memory(&self, n: usize) -> bool {
        // SAFETY: bounds checked.
        n < self.node_ids && unsafe { *self.node_mem.add(n) } != 0
    }
    /// Bytes of memory on node `n` (as the OS reports; 1 when present but of unknown size).
    pub fn memory(&self, n: usize) -> u64 {
        if n < self.node_ids {
            // SAFETY: bounds checked.
            unsafe { *self.node_mem.add(n) }
        } else {
            0
        }
    }
    /// The node CPU `cpu` belongs to, if known.
    pub fn cpu_node(&self, cpu: usize) -> Option<usize> {
        if cpu >= self.cpu_ids {
            return None;
        }
        // SAFETY: bounds checked.
        match unsafe { *self.cpu_node.add(cpu) } {
            NO_NODE => None,
            n => Some(n as usize),
        }
    }
    /// The node whose memory serves CPU `cpu`: its own node, or the nearest node with memory when
    /// its node has none. Unknown CPUs map to node 0's home.
    #[inline]
    pub fn home_of_cpu(&self, cpu: usize) -> usize {
        let n = self.cpu_node(cpu).unwrap_or(0);
        self.home_of_node(n)
    }
    /// The nearest node with memory to `n` (itself if it has memory).
    pub fn home_of_node(&self, n: usize) -> usize {
        if n >= self.node_ids {
            return 0;
        }
        // SAFETY: bounds checked.
        unsafe { *self.node_home.add(n) as usize }
    }
    /// The distance from `a` to `b` (10 = local; 0 = unknown).
    pub fn distance(&self, a: usize, b: usize) -> u32 {
        if a >= self.node_ids || b >= self.node_ids {
            return 0;
        }
        // SAFETY: bounds checked.
        unsafe { *self.distance.add(a * self.node_ids + b) as u32 }
    }
    /// The CPUs of node `n`, ascending.
    pub fn cpus_of(&self, n: usize) -> &[u32] {
        if n >= self.node_ids {
            return &[];
        }
        // SAFETY: start table has node_ids + 1 entries, all within cpus_by_node.
        unsafe {
            let s = *self.node_cpu_start.add(n) as usize;
            let e = *self.node_cpu_start.add(n + 1) as usize;
            core::slice::from_raw_parts(self.cpus_by_node.add(s), e - s)
        }
    }
    /// Online node ids, ascending.
    pub fn nodes(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.node_ids).filter(move |&n| self.is_online(n))
    }
    /// Nodes that have memory.
    pub fn memory_nodes(&self) -> NodeMask {
        let mut m = NodeMask::empty();
        for n in 0..self.node_ids {
            if self.has_memory(n) {
                m.insert(n);
            }
        }
        m
    }
    /// Node `n`'s memory tier.
    pub fn tier(&self, n: usize) -> Tier {
        if n < self.node_ids {
            // SAFETY: bounds checked.
            Tier::from_u8(unsafe { *self.node_tier.add(n) })
        } else {
            Tier::None
        }
    }
    /// HMAT read bandwidth of node `n` from its best initiators, MB/s (0: not given).
    pub fn bandwidth(&self, n: usize) -> u32 {
        if n < self.node_ids {
            // SAFETY: bounds checked.
            unsafe { *self.node_bw.add(n) }
        } else {
            0
        }
    }
    /// HMAT read latency of node `n` from its best initiators, ns (0: not given).
    pub fn latency(&self, n: usize) -> u32 {
        if n < self.node_ids {
            // SAFETY: bounds checked.
            unsafe { *self.node_lat.add(n) }
        } else {
            0
        }
    }
    /// Whether HMAT names node `i` a best initiator of memory node `t`.
    pub fn is_initiator(&self, i: usize, t: usize) -> bool {
        // SAFETY: bounds checked.
        i < self.node_ids && t < self.node_ids && unsafe { *self.initiator.add(t * self.node_ids + i) } != 0
    }
    /// Whether the firmware gave HMAT figures for any node.
    pub fn has_hmat(&self) -> bool {
        self.hmat
    }
    /// The high-bandwidth node nearest node `n` (see [`Tier::HighBandwidth`]), if any.
    pub fn hbw_node(&self, n: usize) -> Option<usize> {
        // SAFETY: bounds checked.
        match if n < self.node_ids { unsafe { *self.near_hbw.add(n) } } else { NO_NODE } {
            NO_NODE => None,
            h => Some(h as usize),
        }
    }
    /// The capacity node nearest node `n` (see [`Tier::Capacity`]), if any.
    pub fn capacity_node(&self, n: usize) -> Option<usize> {
        // SAFETY: bounds checked.
        match if n < self.node_ids { unsafe { *self.near_capacity.add(n) } } else { NO_NODE } {
            NO_NODE => None,
            h => Some(h as usize),
        }
    }
    /// The nodes of tier `tier`.
    pub fn tier_nodes(&self, tier: Tier) -> NodeMask {
        let mut m = NodeMask::empty();
        for n in 0..self.node_ids {
            if self.tier(n) == tier {
                m.insert(n);
            }
        }
        m
    }
    /// Replaces the detected high-bandwidth nodes with `hbw` (nodes without memory are
    /// ignored), as `DOMALLOC_HBW_NODES` does.
    pub fn set_hbw_nodes(&mut self, hbw: &NodeMask) {
        // SAFETY: `&mut self`: no reader.
        unsafe { self.set_tiers(Some(hbw)) };
    }
    /// Number of nodes with memory.
    pub fn memory_node_count(&self) -> usize {
        (0..self.node_ids).filter(|&n| self.has_memory(n)).count()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.release();
    }
}

struct Builder {
    t: Topology,
    failed: bool,
}

impl TopologySink for Builder {
    fn possible(&mut self, cpu_ids: usize, node_ids: usize) -> bool {
        let cpu_ids = cpu_ids.clamp(1, 1 << 16);
        let node_ids = node_ids.clamp(1, NodeMask::CAPACITY);
        let sizes = [
            cpu_ids * 2,
            node_ids * 8,
            node_ids,
            node_ids * node_ids * 2,
            node_ids * 2,
            (node_ids + 1) * 4,
            cpu_ids * 4,
            node_ids * 4,
            node_ids * 4,
            node_ids * node_ids,
            node_ids,
            node_ids * 2,
            node_ids * 2,
        ];
        let mut offs = [0usize; 13];
        let mut total = 0;
        for (i, s) in sizes.iter().enumerate() {
            offs[i] = total;
            total = (total + s + 7) & !7;
        }
        let len = (total + OS_PAGE - 1) & !(OS_PAGE - 1);
        // SAFETY: non-zero page multiple, page alignment.
        let map = unsafe { os::map_aligned(len, OS_PAGE) };
        if map.is_null() {
            self.failed = true;
            return false;
        }
        let t = &mut self.t;
        t.cpu_ids = cpu_ids;
        t.node_ids = node_ids;
        t.map = map;
        t.map_len = len;
        // SAFETY: all offsets lie within the fresh mapping and are 8-aligned.
        unsafe {
            t.cpu_node = map.add(offs[0]).cast();
            t.node_mem = map.add(offs[1]).cast();
            t.node_online = map.add(offs[2]);
            t.distance = map.add(offs[3]).cast();
            t.node_home = map.add(offs[4]).cast();
            t.node_cpu_start = map.add(offs[5]).cast();
            t.cpus_by_node = map.add(offs[6]).cast();
            t.node_bw = map.add(offs[7]).cast();
            t.node_lat = map.add(offs[8]).cast();
            t.initiator = map.add(offs[9]);
            t.node_tier = map.add(offs[10]);
            t.near_hbw = map.add(offs[11]).cast();
            t.near_capacity = map.add(offs[12]).cast();
            for c in 0..cpu_ids {
                *t.cpu_node.add(c) = NO_NODE;
            }
        }
        true
    }
    fn cpu(&mut self, cpu: usize, node: usize) {
        let t = &mut self.t;
        if cpu < t.cpu_ids && node < t.node_ids {
            // SAFETY: bounds checked.
            unsafe {
                *t.cpu_node.add(cpu) = node as u16;
                *t.node_online.add(node) = 1;
            }
        }
    }
    fn node_memory(&mut self, node: usize, bytes: u64) {
        let t = &mut self.t;
        if node < t.node_ids {
            // SAFETY: bounds checked.
            unsafe {
                *t.node_mem.add(node) = bytes;
                *t.node_online.add(node) = 1;
            }
        }
    }
    fn distance(&mut self, from: usize, to: usize, d: u32) {
        let t = &mut self.t;
        if from < t.node_ids && to < t.node_ids {
            // SAFETY: bounds checked.
            unsafe { *t.distance.add(from * t.node_ids + to) = d.min(u16::MAX as u32) as u16 };
        }
    }
    fn access(&mut self, target: usize, initiator: usize, bandwidth_mbs: u32, latency_ns: u32) {
        let t = &mut self.t;
        if target < t.node_ids && initiator < t.node_ids {
            // SAFETY: bounds checked.
            unsafe {
                *t.node_bw.add(target) = bandwidth_mbs;
                *t.node_lat.add(target) = latency_ns;
                *t.initiator.add(target * t.node_ids + initiator) = 1;
            }
            t.hmat = true;
        }
    }
}

/// Written once by `init` before start-up is published, read-only afterwards.
static TOPOLOGY: SetOnce<Topology> = SetOnce::new(Topology::empty());

/// The process-wide topology (detected at initialisation).
#[inline]
pub fn get() -> &'static Topology {
    TOPOLOGY.get()
}

/// Whether [`TOPOLOGY`] holds the detected topology (start-up's lock orders the accesses).
static DETECTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Detects the process topology, once: a second call (start-up after `options::init` needed the
/// topology) finds it done. Called by global initialisation, under its lock.
pub(crate) fn init(root: Option<&[u8]>) -> bool {
    use core::sync::atomic::Ordering::Relaxed;
    if DETECTED.load(Relaxed) {
        return true;
    }
    match Topology::detect(root) {
        Some(t) => {
            // SAFETY: called by start-up, under its lock, before publication; not set before
            // (`DETECTED`).
            unsafe { TOPOLOGY.set(t) };
            DETECTED.store(true, Relaxed);
            true
        }
        None => false,
    }
}

/// Makes the nodes of `hbw` the high-bandwidth tier of the process topology (the
/// `DOMALLOC_HBW_NODES` / `MEMKIND_HBW_NODES` override). Called by `options::init` once the
/// topology is detected, under the start-up lock, before start-up is published.
pub(crate) fn override_hbw_nodes(hbw: &NodeMask) {
    use core::sync::atomic::Ordering::Relaxed;
    if DETECTED.load(Relaxed) {
        // SAFETY: start-up holds its lock and has not published the topology: no reader.
        unsafe { get().set_tiers(Some(hbw)) };
    }
}

/// Detects the process topology from the tree at `root` (`DOMALLOC_TOPOLOGY_ROOT`), once. False
/// if `root` holds no topology the OS layer can read: then nothing is set, and the caller
/// warns and falls back to the machine's own. A failure to map the tables also returns true
/// here (start-up's `init` retries and fails as it would have).
pub(crate) fn init_from_root(root: &[u8]) -> bool {
    use core::sync::atomic::Ordering::Relaxed;
    if DETECTED.load(Relaxed) {
        return true;
    }
    let mut b = Builder { t: Topology::empty(), failed: false };
    let found = Sys::read_topology(Some(root), &mut b);
    if b.failed {
        return true;
    }
    if !found || b.t.map.is_null() {
        return false;
    }
    b.t.finish();
    // SAFETY: called by start-up (options), under its lock, before publication; not set before.
    unsafe { TOPOLOGY.set(b.t) };
    DETECTED.store(true, Relaxed);
    true
}
