//! Any other Unix: POSIX `mmap`/`madvise`, no placement control, one node.

use super::{posix, Os, Placement, PurgeMode, TopologySink};

/// The generic POSIX implementation of [`Os`].
pub(crate) struct Sys;

impl Os for Sys {
    const NAME: &'static str = "unix";
    const PLACEMENT_GRANULE: usize = super::OS_PAGE;

    unsafe fn map_aligned(size: usize, align: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { posix::map_aligned_trim(size, align, 0) }
    }
    unsafe fn unmap(ptr: *mut u8, size: usize) {
        // SAFETY: forwarded contract.
        unsafe { posix::unmap(ptr, size) }
    }
    unsafe fn purge(ptr: *mut u8, size: usize, _mode: PurgeMode) -> bool {
        // SAFETY: forwarded contract. POSIX DONTNEED is advisory and keeps contents.
        unsafe { posix::madvise(ptr, size, libc::MADV_DONTNEED) };
        false
    }
    unsafe fn protect_none(ptr: *mut u8, size: usize) -> bool {
        // SAFETY: forwarded contract.
        unsafe { posix::protect_none(ptr, size) }
    }

    unsafe fn set_huge_pages(_ptr: *mut u8, _size: usize, _enable: bool) {}
    unsafe fn resize_in_place(_ptr: *mut u8, _old: usize, _new: usize) -> bool {
        false
    }
    unsafe fn move_mapping(_ptr: *mut u8, _old: usize, _new: usize, _align: usize) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn place(_ptr: *mut u8, _size: usize, placement: Placement<'_>) -> bool {
        matches!(placement, Placement::Local)
    }
    fn with_thread_placement(_node: usize, _touch: &mut dyn FnMut()) -> bool {
        false
    }
    fn cpu_id_ptr() -> *const u32 {
        core::ptr::null()
    }
    fn current_cpu() -> Option<usize> {
        None
    }
    fn read_topology(_root: Option<&[u8]>, _sink: &mut dyn TopologySink) -> bool {
        false
    }
    fn process_policy() -> Option<super::ProcessPolicy> {
        None
    }
    fn environ_find(name: &[u8]) -> Option<&'static [u8]> {
        posix::environ_find(name)
    }
    fn write_stderr(bytes: &[u8]) {
        posix::write_stderr(bytes)
    }
    fn abort() -> ! {
        posix::abort()
    }
    fn yield_now() {
        posix::yield_now()
    }
    fn now_ms() -> u64 {
        posix::now_ms()
    }
    fn set_errno(e: i32) {
        let _ = e; // errno access differs per libc; the C ABI sets it through its own path.
    }
    fn thread_key_create(dtor: unsafe extern "C" fn(*mut libc::c_void)) -> Option<libc::pthread_key_t> {
        posix::thread_key_create(dtor)
    }
    fn thread_key_set(key: libc::pthread_key_t, value: *mut libc::c_void) {
        posix::thread_key_set(key, value)
    }
    fn atfork(prepare: unsafe extern "C" fn(), parent: unsafe extern "C" fn(), child: unsafe extern "C" fn()) -> bool {
        posix::atfork(prepare, parent, child)
    }
}
