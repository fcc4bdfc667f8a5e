//! The thread's heap pointer, in initial-exec TLS.
//!
//! On x86-64 ELF platforms the pointer is a `.tdata` symbol defined with `global_asm!` and read
//! through `@GOTTPOFF`: the initial-exec model, one `fs:`-relative load, which stays fast in a
//! preloaded shared library (a `thread_local!` there would use the general-dynamic model through
//! `__tls_get_addr`, and one holding a type with `Drop` registers a destructor through
//! `__cxa_thread_atexit_impl`, which calls malloc). The initial value is the shared empty heap,
//! so the fast path needs no null check. Elsewhere a const-initialised `thread_local!` holding a
//! raw pointer (no destructor) does the same job.

use crate::heap::{empty_heap, Heap};

#[cfg(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple")))]
mod imp {
    use super::Heap;

    core::arch::global_asm!(
        ".pushsection .tdata,\"awT\",@progbits",
        ".p2align 3",
        ".globl __domalloc_tls_heap_v1",
        ".hidden __domalloc_tls_heap_v1",
        ".type __domalloc_tls_heap_v1, @object",
        ".size __domalloc_tls_heap_v1, 8",
        "__domalloc_tls_heap_v1:",
        ".quad {empty}",
        ".popsection",
        empty = sym crate::heap::EMPTY_HEAP,
    );

    #[inline(always)]
    pub(crate) fn get() -> *mut Heap {
        let h: *mut Heap;
        // SAFETY: reads this thread's TLS slot, which always holds a valid heap pointer.
        unsafe {
            core::arch::asm!(
                "mov {h}, qword ptr [rip + __domalloc_tls_heap_v1@GOTTPOFF]",
                "mov {h}, qword ptr fs:[{h}]",
                h = out(reg) h,
                options(nostack, readonly, preserves_flags),
            );
        }
        h
    }

    #[inline]
    pub(crate) fn set(h: *mut Heap) {
        // SAFETY: writes this thread's TLS slot.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + __domalloc_tls_heap_v1@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {h}",
                t = out(reg) _,
                h = in(reg) h,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple"))))]
mod imp {
    use super::Heap;
    use core::cell::Cell;

    std::thread_local! {
        static HEAP: Cell<*mut Heap> = const { Cell::new(crate::heap::EMPTY_HEAP_PTR as *mut Heap) };
    }

    #[inline(always)]
    pub(crate) fn get() -> *mut Heap {
        HEAP.with(|h| h.get())
    }

    #[inline]
    pub(crate) fn set(h: *mut Heap) {
        HEAP.with(|c| c.set(h))
    }
}

/// The calling thread's heap (the empty heap before first use and after thread teardown).
#[inline(always)]
pub(crate) fn heap() -> *mut Heap {
    imp::get()
}

/// Sets the calling thread's heap.
#[inline]
pub(crate) fn set_heap(h: *mut Heap) {
    imp::set(h)
}

/// Whether `h` is one of the shared sentinel heaps.
#[inline]
pub(crate) fn is_sentinel(h: *mut Heap) -> bool {
    h == empty_heap() || h == crate::heap::dead_heap()
}
