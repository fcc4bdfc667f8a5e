//! The thread's heap pointer, in initial-exec TLS (the OS layer's `thread_slot!` defines the
//! word; its initial value in every thread is the shared empty heap, so the fast path needs no
//! null check), and the guard that swaps it for the busy heap while a slow path runs.

use crate::thread::heap::{busy_heap, dead_heap, empty_heap, Heap};

crate::sys::os::tls::thread_slot!(slot, "__domalloc_tls_heap_v1", Heap, crate::thread::heap::EMPTY_HEAP);
crate::sys::os::tls::thread_slot!(saved, "__domalloc_tls_saved_v1", Heap, crate::thread::heap::EMPTY_HEAP);

/// The calling thread's heap (the empty heap before first use, the dead heap after teardown,
/// the busy heap while one of its slow paths runs).
#[inline(always)]
pub(crate) fn heap() -> *mut Heap {
    slot::get()
}

/// Sets the calling thread's heap.
#[inline]
pub(crate) fn set_heap(h: *mut Heap) {
    slot::set(h)
}

/// Whether `h` is the empty or the dead heap (a thread without a heap of its own). The busy heap
/// never gets here: every path that reads the thread's heap pointer serves it aside first
/// (`reentry.rs`), and code inside a slow path asks for [`own_heap`].
#[inline]
pub(crate) fn is_sentinel(h: *mut Heap) -> bool {
    debug_assert!(h != busy_heap(), "the busy heap taken for the thread's own");
    h == empty_heap() || h == dead_heap()
}

/// The thread's own heap, also while a slow path runs (the heap [`SlowPath`] put aside); for
/// code inside a slow path that needs the real heap. A sentinel when the thread has none.
#[inline]
pub(crate) fn own_heap() -> *mut Heap {
    let h = heap();
    if h == busy_heap() {
        saved::get()
    } else {
        h
    }
}

/// Makes `h` the thread's heap (thread start-up): at once, or, inside a slow path, when the
/// slow path's guard drops (until then its calls stay aside as a signal handler's would).
#[inline]
pub(crate) fn install(h: *mut Heap) {
    if heap() == busy_heap() {
        saved::set(h);
    } else {
        set_heap(h);
    }
}

/// While alive, the thread's heap pointer is the busy heap: a signal handler that interrupts
/// this slow path and calls malloc or free is served aside (`reentry.rs`): a shared locked heap
/// for its allocations, a deferred list for its frees, which the next refill frees once the
/// thread's heap is consistent again. Two TLS stores on entry and a load and a store on exit, on
/// slow paths only; the fast paths are unchanged. Inside a slow path (the heap already busy) it does
/// nothing: the outermost guard restores.
pub(crate) struct SlowPath {
    outer: bool,
}

impl SlowPath {
    /// Puts `h` (the thread's heap or a sentinel) aside until the guard drops.
    #[inline]
    pub(crate) fn enter(h: *mut Heap) -> Self {
        if heap() == busy_heap() {
            return SlowPath { outer: false };
        }
        saved::set(h);
        set_heap(busy_heap());
        SlowPath { outer: true }
    }
}

impl SlowPath {
    /// [`Self::enter`] for a caller that knows it is the outermost slow path: `h` is what the
    /// thread's heap pointer holds now, and it is not the busy heap (checked by the caller,
    /// which serves a signal handler's call aside instead). Skips the check.
    #[inline(always)]
    pub(crate) fn enter_outer(h: *mut Heap) -> Self {
        saved::set(h);
        set_heap(busy_heap());
        SlowPath { outer: true }
    }
}

impl Drop for SlowPath {
    #[inline]
    fn drop(&mut self) {
        if self.outer {
            // (`saved` is read only while the heap is busy: it keeps its stale value.)
            set_heap(saved::get());
        }
    }
}
