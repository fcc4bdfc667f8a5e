//! domalloc: a NUMA-aware memory allocator.
//!
//! Memory handed to a thread comes from the NUMA node the thread runs on *now*: after other
//! threads freed memory to it, after it migrated, after a thread pool was replaced by threads on
//! another node, and for big arrays that workers first-touch in parallel. A block freed on a node
//! that does not own it goes home and is never reused there.
//!
//! ```no_run
//! #[global_allocator]
//! static A: domalloc::DomAlloc = domalloc::DomAlloc::new();
//! ```
//!
//! # Layers
//! `src/` is seven layers, one folder each. A file uses only its own layer and the layers below
//! it; another layer is used only through its face, the folder's `mod.rs`: the modules inside are
//! private (the compiler enforces it) except the few the face names as its own (`os`, and the
//! public `options`, `topology`, `size_class`, `c`, `stats`). `tests/layers.rs` reads this table
//! and checks every `crate::` path of `src/` against it, and that each face keeps its insides
//! private. The one way up is start-up: the first allocation's slow path calls
//! `thread::ensure_init`, which sets up every layer below; lower layers never call it.
//!
//! | layer | folder | faces beside `mod.rs` | job |
//! |---|---|---|---|
//! | 1. API | `api/` | `alloc`, `c`, `node_api`, `stats` | entry points: `GlobalAlloc` (`lib.rs`), shared entry points, C semantics, node-targeted API, statistics |
//! | 2. thread cache | `thread/` | | per-thread heaps: fast paths, refill, every free in one file (`free.rs`), large blocks, calls re-entered from signal handlers, start-up, teardown and fork, the sampling heap profiler |
//! | 3. arenas | `arena/` | | per-CPU and per-node queues of unowned pages and empty spans; returning memory (sweep, purge thread) |
//! | 4. nodes | `node/` | | per-node domains: segments and spans, purging, huge blocks, placement and homes, home pools |
//! | 5. layout | `layout/` | `size_class` | segment and page descriptors, encoded free lists, remote-free protocol, size classes, intrusive list |
//! | 6. configuration | `config/` | `options`, `topology` | what start-up decided, the `DOMALLOC_*` options, CPUs, nodes and tiers; read-only after start-up |
//! | 7. platform | `sys/` | `os` | futex lock, atomics, contention counters, no-alloc helpers, the one `Os` trait and its implementations |
//!
//! # Rules inside the allocator
//! No allocation, no panic, no std I/O, no lock that may allocate. Every `unsafe` block says why
//! it is sound (`// SAFETY:`); every unsafe fn has a `# Safety` section.

#![warn(missing_docs, unreachable_pub)]
#![deny(unsafe_op_in_unsafe_fn)]

mod api;
mod arena;
mod config;
mod layout;
mod node;
mod sys;
mod thread;

pub use api::{c, stats};
pub use config::{options, topology};
pub use layout::size_class;

/// The `allocator_api2` crate the node-aware allocators implement (`Node`, `Interleaved`), so
/// `domalloc::allocator_api2::vec::Vec::new_in(node)` works without naming it as a dependency.
pub use allocator_api2;

use core::alloc::{GlobalAlloc, Layout};

pub use crate::api::node_api::{alloc_interleaved, alloc_on_node, hbw, HighBandwidth, Interleaved, Node};
pub use crate::api::stats::{prof_dump, prof_start, prof_stop, stats, ClassStats, NodeStats, Stats};
pub use crate::sys::os::{NodeMask, PurgeMode, Signal};

use api::{alloc, node_api};
use sys::os;

/// The allocator, for `#[global_allocator]`. A zero-sized handle: all state is process-wide.
#[derive(Clone, Copy, Debug, Default)]
pub struct DomAlloc;

impl DomAlloc {
    /// The allocator handle.
    pub const fn new() -> Self {
        DomAlloc
    }

    /// Allocates `layout` on NUMA node `node` (see [`alloc_on_node`]). Free it with `dealloc`
    /// as any other block, from any thread.
    pub fn alloc_on_node(&self, layout: Layout, node: usize) -> *mut u8 {
        node_api::alloc_on_node(layout, node)
    }

    /// Allocates `layout` with its pages interleaved over all nodes with memory.
    pub fn alloc_interleaved(&self, layout: Layout) -> *mut u8 {
        node_api::alloc_interleaved(layout, None)
    }
}

// SAFETY: blocks are valid for `layout` (size and alignment) until deallocated; null signals
// failure; deallocate/realloc accept exactly the pointers this impl returned.
unsafe impl GlobalAlloc for DomAlloc {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: Layout alignment is a power of two.
        unsafe { alloc::alloc(layout.size(), layout.align()) }
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block of ours.
        unsafe { alloc::free(ptr) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: Layout alignment is a power of two.
        unsafe { alloc::alloc_zeroed(layout.size(), layout.align()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a live block of ours and a non-zero new size.
        unsafe { alloc::realloc(ptr, new_size, layout.align()) }
    }
}

/// The raw allocation entry points, for the C ABI crate and tools. C semantics (errno, overflow
/// checks, `malloc(0)`) are not applied here.
#[doc(hidden)]
pub mod raw {
    pub use crate::api::alloc::{alloc, alloc_zeroed, calloc, free, malloc, node_of, realloc, usable_size};
}

/// The NUMA node of the CPU the calling thread runs on now (the node whose memory it gets).
pub fn current_node() -> usize {
    if !crate::thread::ensure_init() {
        return 0;
    }
    use crate::sys::os::Os;
    crate::node::node_of_cpu(os::Sys::current_cpu().unwrap_or(0))
}

/// The node whose domain owns block `ptr` (huge blocks: the node they were allocated for; their
/// pages are placed by first touch). `None` for pointers domalloc did not hand out.
pub fn node_of(ptr: *const u8) -> Option<usize> {
    alloc::node_of(ptr)
}

/// Whether domalloc runs its NUMA logic (more than one node with memory, or `DOMALLOC_NUMA=1`).
pub fn numa_enabled() -> bool {
    crate::thread::ensure_init() && crate::config::numa_enabled()
}

/// Returns memory that is free but not yet given back to the OS. With `force`, also memory
/// whose purge delay has not passed, and cached huge blocks.
pub fn collect(force: bool) {
    // Quarantine build: blocks waiting in the calling thread's quarantine are really freed first.
    #[cfg(feature = "quarantine")]
    crate::thread::quarantine_flush();
    // Hardened builds: freed huge blocks kept inaccessible for a while are unmapped now.
    #[cfg(feature = "hardened")]
    if force {
        crate::node::huge_flush_retired();
    }
    crate::thread::collect(force)
}

/// Fault injection for tests: make every `every`-th OS mapping fail, and every mapping after
/// the next `after` (0 = off). Allocations then return null (C: `NULL` with `ENOMEM`); nothing
/// already allocated is affected. `set_fault_injection(0, 0)` lets memory "come back".
pub fn set_fault_injection(every: u64, after: u64) {
    os::set_fault_injection(every, after)
}

/// Prints the statistics report to stderr (what `DOMALLOC_STATS=1` prints at exit).
pub fn print_stats() {
    stats::print()
}
