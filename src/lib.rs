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
//! Each file uses only files of its own layer or of the layers below it (`tests/layers.rs`
//! reads this table and checks every `crate::` path of `src/` against it). Within a layer,
//! files may use each other. The one way up is start-up: the first allocation's slow path calls
//! `init::ensure_init` (layer 2), which sets up every layer below; lower layers never call it.
//!
//! | layer | files | job |
//! |---|---|---|
//! | 1. API | `lib.rs`, `alloc.rs`, `c.rs`, `targeted.rs`, `stats.rs` | entry points: `GlobalAlloc`, C semantics, node-targeted API, statistics |
//! | 2. thread cache | `heap.rs`, `refill.rs`, `foreign.rs`, `large.rs`, `tls.rs`, `reentry.rs`, `init.rs`, `quarantine.rs`, `prof.rs` | per-thread heaps: fast paths; refill and page queues; frees of blocks the thread does not own (remote batches, home pools); large blocks; calls re-entered from signal handlers; process and thread start-up and teardown, heap pool, fork; live bytes and the sampling heap profiler |
//! | 3. arenas | `arena.rs`, `sweep.rs` | per-CPU and per-node queues of unowned pages and empty spans; the maintenance sweep and purge thread |
//! | 4. domains | `domain.rs`, `huge.rs`, `placement.rs`, `home_pool.rs` | per-node segments and spans, purging, huge blocks, placement policy and homes, home pools |
//! | 5. layout | `segment.rs`, `page.rs`, `remote.rs`, `size_class.rs`, `list.rs` | segment and page descriptors, encoded free lists, remote-free protocol, classes, intrusive list |
//! | 6. configuration | `config.rs`, `options.rs`, `topology.rs` | what start-up decided, the `DOMALLOC_*` options, CPUs and nodes; read-only after start-up |
//! | 7. platform | `lock.rs`, `sync.rs`, `contention.rs`, `util.rs`, `os/` | futex lock, atomics, contention counters, no-alloc helpers, the one `Os` trait and its implementations |
//!
//! # Rules inside the allocator
//! No allocation, no panic, no std I/O, no lock that may allocate. Every `unsafe` block says why
//! it is sound (`// SAFETY:`); every unsafe fn has a `# Safety` section.

#![warn(missing_docs, unreachable_pub)]
#![deny(unsafe_op_in_unsafe_fn)]

mod alloc;
mod arena;
pub mod c;
mod contention;
mod domain;
mod foreign;
mod config;
mod init;
mod heap;
mod home_pool;
mod huge;
mod large;
mod list;
mod lock;
mod targeted;
pub mod options;
mod os;
mod page;
mod placement;
mod prof;
#[cfg(feature = "quarantine")]
mod quarantine;
mod reentry;
mod refill;
mod remote;
mod segment;
pub mod size_class;
mod sync;
pub mod stats;
mod sweep;
mod tls;
pub mod topology;
mod util;

/// The `allocator_api2` crate the node-aware allocators implement (`Node`, `Interleaved`), so
/// `domalloc::allocator_api2::vec::Vec::new_in(node)` works without naming it as a dependency.
pub use allocator_api2;

use core::alloc::{GlobalAlloc, Layout};

pub use crate::targeted::{alloc_interleaved, alloc_on_node, hbw, HighBandwidth, Interleaved, Node};
pub use crate::os::{NodeMask, PurgeMode, Signal};
pub use crate::stats::{prof_dump, prof_start, prof_stop, stats, ClassStats, NodeStats, Stats};

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
        targeted::alloc_on_node(layout, node)
    }

    /// Allocates `layout` with its pages interleaved over all nodes with memory.
    pub fn alloc_interleaved(&self, layout: Layout) -> *mut u8 {
        targeted::alloc_interleaved(layout, None)
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
    pub use crate::alloc::{alloc, alloc_zeroed, calloc, free, malloc, node_of, realloc, usable_size};
}

/// The NUMA node of the CPU the calling thread runs on now (the node whose memory it gets).
pub fn current_node() -> usize {
    if !crate::init::ensure_init() {
        return 0;
    }
    use crate::os::Os;
    crate::domain::node_of_cpu(os::Sys::current_cpu().unwrap_or(0))
}

/// The node whose domain owns block `ptr` (huge blocks: the node they were allocated for; their
/// pages are placed by first touch). `None` for pointers domalloc did not hand out.
pub fn node_of(ptr: *const u8) -> Option<usize> {
    alloc::node_of(ptr)
}

/// Whether domalloc runs its NUMA logic (more than one node with memory, or `DOMALLOC_NUMA=1`).
pub fn numa_enabled() -> bool {
    crate::init::ensure_init() && crate::config::numa_enabled()
}

/// Returns memory that is free but not yet given back to the OS. With `force`, also memory
/// whose purge delay has not passed, and cached huge blocks.
pub fn collect(force: bool) {
    // Quarantine build: blocks waiting in the calling thread's quarantine are really freed first.
    #[cfg(feature = "quarantine")]
    quarantine::flush();
    // Hardened builds: freed huge blocks kept inaccessible for a while are unmapped now.
    #[cfg(feature = "hardened")]
    if force {
        crate::huge::flush_retired();
    }
    crate::init::collect(force)
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
