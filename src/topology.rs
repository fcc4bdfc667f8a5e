//! The machine's NUMA topology as the allocator sees it: which node each CPU is on, which nodes
//! have memory, and the distances between nodes.
//!
//! Tables are sized by the highest *possible* CPU and node id (not by counts), so sparse node ids,
//! CPU-less (memory-only) nodes, memory-less nodes and CPUs outside the process's cpuset all have
//! a slot. They live in memory mapped straight from the OS: detecting the topology never allocates.
//! A CPU the tables do not know (hot-added later) maps to the node the kernel reports for it at
//! that time, or node 0.

use core::ptr;

use crate::os::{self, NodeMask, Os, Sys, TopologySink, OS_PAGE};
use crate::util::SetOnce;

const NO_NODE: u16 = u16::MAX;

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
        // SAFETY: bounds checked.
        if n < self.node_ids { unsafe { *self.node_mem.add(n) } } else { 0 }
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
        ];
        let mut offs = [0usize; 7];
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
