//! A thread that only frees (the consumer of a producer/consumer pipeline, xmalloc-test's
//! `mem_releaser`) never calls malloc, so it had no heap: each of its frees went home alone, with
//! one CAS, shared counter adds and a CPU query per block, and xmalloc-testN ran 2.4x slower than
//! mimalloc v3. It now gets a heap on its first remote free and batches like any other thread.

// SAFETY (all unsafe blocks in this file): raw allocator calls on blocks this test allocated
// with the layout it frees them with; the thread gets sole ownership of the blocks it frees.
#![allow(clippy::undocumented_unsafe_blocks)]

use core::alloc::{GlobalAlloc, Layout};

static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

const BLOCKS: usize = 64 * 1024;

struct Job {
    blocks: *mut *mut u8,
    n: usize,
}

extern "C" fn free_all(arg: *mut libc::c_void) -> *mut libc::c_void {
    // A raw pthread that calls nothing but the allocator's free: no heap before its first free.
    let job = unsafe { &*(arg as *const Job) };
    let layout = Layout::from_size_align(64, 8).unwrap();
    for i in 0..job.n {
        unsafe { A.dealloc(*job.blocks.add(i), layout) };
    }
    core::ptr::null_mut()
}

#[test]
fn a_thread_that_only_frees_batches_its_remote_frees() {
    let layout = Layout::from_size_align(64, 8).unwrap();
    let table = unsafe { A.alloc(Layout::array::<*mut u8>(BLOCKS).unwrap()) } as *mut *mut u8;
    assert!(!table.is_null());
    for i in 0..BLOCKS {
        let p = unsafe { A.alloc(layout) };
        assert!(!p.is_null());
        unsafe { p.write_bytes(0x5a, 64) };
        unsafe { *table.add(i) = p };
    }
    let before = domalloc::stats();
    let job = Job { blocks: table, n: BLOCKS };
    let mut t: libc::pthread_t = 0;
    let rc =
        unsafe { libc::pthread_create(&mut t, core::ptr::null(), free_all, &job as *const Job as *mut libc::c_void) };
    assert_eq!(rc, 0);
    assert_eq!(unsafe { libc::pthread_join(t, core::ptr::null_mut()) }, 0);
    let after = domalloc::stats();
    let frees = after.remote_frees - before.remote_frees;
    let batches = after.remote_batches - before.remote_batches;
    assert_eq!(frees, BLOCKS as u64, "every free of the other thread is a remote free");
    // Blocks of one page arrive in batches of up to 32: allow a generous margin.
    assert!(batches * 8 <= frees, "{frees} remote frees went home in {batches} batches (one per block: no heap)");
    unsafe { A.dealloc(table as *mut u8, Layout::array::<*mut u8>(BLOCKS).unwrap()) };
}
