//! The thread's heap pointer, in initial-exec TLS (the OS layer's `thread_slot!` defines the
//! word; its initial value in every thread is the shared empty heap, so the fast path needs no
//! null check).

use crate::heap::{dead_heap, empty_heap, Heap};

crate::os::tls::thread_slot!(slot, "__domalloc_tls_heap_v1", Heap, crate::heap::EMPTY_HEAP);

/// The calling thread's heap (the empty heap before first use, the dead heap after teardown).
#[inline(always)]
pub(crate) fn heap() -> *mut Heap {
    slot::get()
}

/// Sets the calling thread's heap.
#[inline]
pub(crate) fn set_heap(h: *mut Heap) {
    slot::set(h)
}

/// Whether `h` is one of the shared sentinel heaps.
#[inline]
pub(crate) fn is_sentinel(h: *mut Heap) -> bool {
    h == empty_heap() || h == dead_heap()
}
