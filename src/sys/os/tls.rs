//! Per-thread words in initial-exec TLS.
//!
//! On x86-64 ELF platforms each word is a `.tdata` symbol defined with `global_asm!` and read
//! through `@GOTTPOFF`: the initial-exec model, one `fs:`-relative load, which stays fast in a
//! preloaded shared library (a `thread_local!` there would use the general-dynamic model through
//! `__tls_get_addr`, and one holding a type with `Drop` registers a destructor through
//! `__cxa_thread_atexit_impl`, which calls malloc). Elsewhere a const-initialised
//! `thread_local!` holding a plain word (no destructor) does the same job.
//!
//! [`thread_slot!`] defines such a word for a layer above (the thread cache keeps its heap
//! pointer in one, initialised to the address of its shared empty heap, so the fast path needs
//! no null check); this file keeps the cached thread id of [`super::thread_id`].

/// Defines `mod $name { fn get() -> *mut $ty; fn set(*mut $ty) }`: a per-thread pointer whose
/// initial value in every thread is the address of the static `$init` (a `SyncHeap`-like static
/// of a layer above: the macro names it, this layer does not).
macro_rules! thread_slot {
    ($name:ident, $sym:literal, $ty:ty, $init:path) => {
        pub(crate) mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[cfg(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple")))]
            core::arch::global_asm!(
                ".pushsection .tdata,\"awT\",@progbits",
                ".p2align 3",
                concat!(".globl ", $sym),
                concat!(".hidden ", $sym),
                concat!(".type ", $sym, ", @object"),
                concat!(".size ", $sym, ", 8"),
                concat!($sym, ":"),
                ".quad {init}",
                ".popsection",
                init = sym $init,
            );

            /// This thread's value.
            #[cfg(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple")))]
            #[inline(always)]
            pub(crate) fn get() -> *mut $ty {
                let h: *mut $ty;
                // SAFETY: reads this thread's TLS slot, which always holds a valid pointer.
                unsafe {
                    core::arch::asm!(
                        concat!("mov {h}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                        "mov {h}, qword ptr fs:[{h}]",
                        h = out(reg) h,
                        options(nostack, readonly, preserves_flags),
                    );
                }
                h
            }

            /// Sets this thread's value.
            #[cfg(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple")))]
            #[inline]
            pub(crate) fn set(h: *mut $ty) {
                // SAFETY: writes this thread's TLS slot.
                unsafe {
                    core::arch::asm!(
                        concat!("mov {t}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                        "mov qword ptr fs:[{t}], {h}",
                        t = out(reg) _,
                        h = in(reg) h,
                        options(nostack, preserves_flags),
                    );
                }
            }

            #[cfg(not(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple"))))]
            std::thread_local! {
                static SLOT: core::cell::Cell<*mut $ty> =
                    const { core::cell::Cell::new(&$init as *const _ as *mut $ty) };
            }

            /// This thread's value.
            #[cfg(not(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple"))))]
            #[inline(always)]
            pub(crate) fn get() -> *mut $ty {
                SLOT.with(|s| s.get())
            }

            /// Sets this thread's value.
            #[cfg(not(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple"))))]
            #[inline]
            pub(crate) fn set(h: *mut $ty) {
                SLOT.with(|s| s.set(h))
            }
        }
    };
}
pub(crate) use thread_slot;

#[cfg(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple")))]
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 2",
    ".globl __domalloc_tls_tid_v1",
    ".hidden __domalloc_tls_tid_v1",
    ".type __domalloc_tls_tid_v1, @object",
    ".size __domalloc_tls_tid_v1, 4",
    "__domalloc_tls_tid_v1:",
    ".zero 4",
    ".popsection",
);

/// The cached thread id (0 = not fetched yet).
#[cfg(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple")))]
#[inline(always)]
pub(crate) fn thread_id() -> u32 {
    let t: u32;
    // SAFETY: reads this thread's TLS word.
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr [rip + __domalloc_tls_tid_v1@GOTTPOFF]",
            "mov {t:e}, dword ptr fs:[{p}]",
            p = out(reg) _,
            t = out(reg) t,
            options(nostack, readonly, preserves_flags),
        );
    }
    t
}

/// Caches the thread id.
#[cfg(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple")))]
#[inline]
pub(crate) fn set_thread_id(t: u32) {
    // SAFETY: writes this thread's TLS word.
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr [rip + __domalloc_tls_tid_v1@GOTTPOFF]",
            "mov dword ptr fs:[{p}], {t:e}",
            p = out(reg) _,
            t = in(reg) t,
            options(nostack, preserves_flags),
        );
    }
}

#[cfg(not(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple"))))]
std::thread_local! {
    static TID: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

/// The cached thread id (0 = not fetched yet).
#[cfg(not(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple"))))]
#[inline(always)]
pub(crate) fn thread_id() -> u32 {
    TID.with(|t| t.get())
}

/// Caches the thread id.
#[cfg(not(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple"))))]
#[inline]
pub(crate) fn set_thread_id(t: u32) {
    TID.with(|c| c.set(t))
}

// ---- the heap profiler's per-thread words ----

/// Words of the heap profiler (a layer above names their meaning), zero in every new thread.
pub(crate) const PROF_WORDS: usize = 4;

#[cfg(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple")))]
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".globl __domalloc_tls_prof_v1",
    ".hidden __domalloc_tls_prof_v1",
    ".type __domalloc_tls_prof_v1, @object",
    ".size __domalloc_tls_prof_v1, 32",
    "__domalloc_tls_prof_v1:",
    ".zero 32",
    ".popsection",
);

/// This thread's profiler words (valid for the thread's life, only this thread uses them).
#[cfg(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple")))]
#[inline]
pub(crate) fn prof_words() -> *mut [u64; PROF_WORDS] {
    let p: usize;
    // SAFETY: the TLS offset of the block plus the thread pointer (at `fs:0` on x86-64 ELF) is
    // the block's address in this thread.
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr [rip + __domalloc_tls_prof_v1@GOTTPOFF]",
            "add {p}, qword ptr fs:0",
            p = out(reg) p,
            options(nostack, readonly),
        );
    }
    p as *mut [u64; PROF_WORDS]
}

#[cfg(not(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple"))))]
std::thread_local! {
    static PROF: core::cell::UnsafeCell<[u64; PROF_WORDS]> = const { core::cell::UnsafeCell::new([0; PROF_WORDS]) };
}

/// This thread's profiler words (valid for the thread's life, only this thread uses them).
#[cfg(not(all(target_arch = "x86_64", target_family = "unix", not(target_vendor = "apple"))))]
#[inline]
pub(crate) fn prof_words() -> *mut [u64; PROF_WORDS] {
    PROF.with(|w| w.get())
}
