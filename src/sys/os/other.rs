//! Any other Unix: POSIX `mmap`/`madvise`, no placement control, one node, no futex (waits
//! yield instead), `pthread_self` as the thread id.

use core::sync::atomic::AtomicU32;

use super::{posix, Os, PurgeMode};

/// The generic POSIX implementation of [`Os`].
pub(crate) struct Sys;

impl Os for Sys {
    const NAME: &'static str = "unix";

    unsafe fn purge(ptr: *mut u8, size: usize, _mode: PurgeMode) -> bool {
        // SAFETY: forwarded contract. POSIX DONTNEED is advisory and keeps contents.
        unsafe { posix::madvise(ptr, size, libc::MADV_DONTNEED) };
        false
    }

    fn kernel_thread_id() -> u32 {
        // SAFETY: no preconditions. Not a kernel id, but unique among live threads (mixed down).
        let t = unsafe { libc::pthread_self() } as usize as u64;
        ((t ^ (t >> 30)) as u32 & ((1 << 30) - 1)).max(1)
    }

    fn futex_wait(_word: &AtomicU32, _expected: u32, _timeout_ms: Option<u64>) {
        posix::yield_now()
    }

    fn futex_wake(_word: &AtomicU32, _n: u32) {}

    fn set_errno(e: i32) {
        posix::set_errno(e)
    }
}
