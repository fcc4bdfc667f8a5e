//! The atomics of the lock-free protocol ([`crate::layout::remote`]), swappable for loom's under
//! `cfg(loom)`.
//!
//! The allocator is built without the cfg and gets `core`'s types, so nothing changes in its
//! code. `loom-model/` compiles this file and `remote.rs` with `--cfg loom` (set by its build
//! script), and loom then controls every atomic access of the real protocol. Never build the
//! allocator itself with `--cfg loom`: loom is not one of its dependencies.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};

/// Counts a CAS retry (contention counters; nothing without the feature or under loom).
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn cas_retry() {
    crate::sys::contention::cas_retry()
}

/// Under loom, nothing to count.
#[cfg(loom)]
#[inline(always)]
pub(crate) fn cas_retry() {}
