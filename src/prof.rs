//! Live bytes and heap profiling: what the program holds, counted off the fast paths.
//!
//! # Live bytes
//! The usable size of every block the program holds (jemalloc's `allocated`, beside the
//! statistics' `in_use_bytes`, which is span occupancy: jemalloc's `active`). Requested sizes of
//! small blocks are not kept anywhere, so small blocks count their class's size; large and huge
//! blocks their usable size. Nothing is added to the fast paths: the owner's allocations and
//! frees are counted in the page's counts already, and reach [`LIVE`] when the page's counts are
//! folded into its heap (at every refill: one add per page's worth of blocks); frees by a heap
//! that does not own the page are counted per batch where the heap counts them; large and huge
//! blocks in their slow paths. The high-water mark [`LIVE_PEAK`] is taken at those moments, so
//! it may miss a peak by the blocks of the pages heaps hold unfolded (at most a span per class
//! per thread). The statistics' current value is exact (read from every heap and page).

use core::sync::atomic::{AtomicI64, Ordering};

use crate::size_class::class_size;

/// Live bytes as folded so far (signed: a remote free may be counted before the owner folds the
/// block's allocation).
static LIVE: AtomicI64 = AtomicI64::new(0);
/// The highest value [`LIVE`] has had.
static LIVE_PEAK: AtomicI64 = AtomicI64::new(0);

#[inline]
fn live_add(delta: i64) {
    let now = LIVE.fetch_add(delta, Ordering::Relaxed).wrapping_add(delta);
    if delta > 0 && now > LIVE_PEAK.load(Ordering::Relaxed) {
        LIVE_PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

/// A page's counts folded into its owner's heap: `allocs` blocks of class `c` handed out and
/// `frees` freed by the owner since the last fold.
#[inline]
pub(crate) fn fold_small(c: usize, allocs: u32, frees: u32) {
    live_add((allocs as i64 - frees as i64) * class_size(c) as i64);
}

/// `n` blocks of class `c` freed by a heap that does not own their page (or a heapless thread).
#[inline]
pub(crate) fn freed_small(c: usize, n: u64) {
    live_add(-((n * class_size(c) as u64) as i64));
}

/// A large or huge block of `bytes` (usable size) handed out.
#[inline]
pub(crate) fn big_allocated(bytes: usize) {
    live_add(bytes as i64);
}

/// A large or huge block of `bytes` (usable size) freed.
#[inline]
pub(crate) fn big_freed(bytes: usize) {
    live_add(-(bytes as i64));
}

/// The live bytes as folded so far and their high-water mark (see the module documentation).
pub(crate) fn live_folded() -> (u64, u64) {
    (LIVE.load(Ordering::Relaxed).max(0) as u64, LIVE_PEAK.load(Ordering::Relaxed).max(0) as u64)
}
