//! The atomics and the spin-wait hint of the lock-free protocol ([`crate::remote`]), swappable
//! for loom's under `cfg(loom)`.
//!
//! The allocator is built without the cfg and gets `core`'s types, so nothing changes in its
//! code. `loom-model/` compiles this file and `remote.rs` with `--cfg loom` (set by its build
//! script), and loom then controls every atomic access and every wait of the real protocol.
//! Never build the allocator itself with `--cfg loom`: loom is not one of its dependencies.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Waits a moment for another thread's few instructions (a spin loop's body): a CPU hint for the
/// first 63 calls of a wait, then the OS scheduler's yield.
#[cfg(not(loom))]
pub(crate) fn spin_wait(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        core::hint::spin_loop();
    } else {
        crate::os::yield_now();
    }
}

/// Waits a moment for another thread: under loom, a yield, which tells loom's scheduler to run
/// the others (a spin loop without one never ends in a model).
#[cfg(loom)]
pub(crate) fn spin_wait(spins: &mut u32) {
    *spins += 1;
    loom::thread::yield_now();
}
