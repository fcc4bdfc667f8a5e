//! Layer 2, the thread cache: per-thread heaps.
//!
//! Promises: the malloc and free fast paths touch only the calling thread's heap (`heap`); refills
//! and page queues (`refill`); every free that is not the owner's fast path, in one file (`free`:
//! blocks of other heaps, heapless threads, placed blocks, large and huge blocks, double and
//! invalid frees); large blocks (`large`); the thread's heap pointer and the slow-path guard
//! (`tls`); calls re-entered from signal handlers (`reentry`); process and thread start-up and
//! teardown, heap pool, fork (`init`); the quarantine build (`quarantine`); live bytes and the
//! sampling profiler (`prof`). Other layers use only what this file re-exports.

mod free;
mod heap;
mod init;
mod large;
mod prof;
#[cfg(feature = "quarantine")]
mod quarantine;
mod reentry;
mod refill;
mod tls;

#[cfg(not(feature = "quarantine"))]
pub(crate) use free::free;
pub(crate) use heap::{alloc_small, alloc_small_or, alloc_small_refill, alloc_small_zeroed, busy_heap, Heap};
pub(crate) use init::{
    alloc_node, collect, ensure_init, for_each_live_heap, heap_acquire, heap_totals, heaps_taken_over, node_heap,
    node_of_this_cpu, pool_held_by_me, retrying_after_release,
};
pub(crate) use large::alloc as alloc_large;
pub(crate) use prof::{
    active as prof_active, big_allocated as prof_big_allocated, big_freed as prof_big_freed,
    flush_own_live as prof_flush_own_live, for_each_site as prof_for_each_site, interval as prof_interval,
    live_folded as prof_live_folded, start as prof_start, start_periodic as prof_start_periodic, stop as prof_stop,
    stop_periodic as prof_stop_periodic, Site as ProfSite,
};
#[cfg(feature = "quarantine")]
pub(crate) use quarantine::{check_live as quarantine_check_live, flush as quarantine_flush, free as quarantine_free};
pub(crate) use reentry::refused as reentry_refused;
pub(crate) use tls::{heap as thread_heap, SlowPath};
