//! Tests of the profiler that start threads (kept out of `prof.rs`, whose code must name nothing
//! of std: `tests/prof.rs`).

use super::*;

/// Threads that come and go find their stack's end without reading every mapping of the
/// process: the first sample of each thread read all of `/proc/self/maps` (larson, whose
/// threads come and go: 15% of all its instructions). Counted, on kernels that answer
/// `PROCMAP_QUERY` (Linux 6.11 and later); elsewhere the maps are still read, once a thread.
#[test]
fn threads_that_come_and_go_find_their_stack_without_reading_the_maps() {
    const THREADS: usize = 16;
    let maps_reads = || crate::sys::os::posix::MAPS_READS.with(|n| n.get());
    let before = maps_reads();
    let supported = Sys::readable_mapping_of(os::stack_pointer()).is_some() && maps_reads() == before;
    let reads: u64 = (0..THREADS)
        .map(|_| {
            std::thread::spawn(move || {
                let before = maps_reads();
                let sp = os::stack_pointer();
                let end = stack_end();
                assert!(end > sp, "the stack's end {end:#x} is not above the stack pointer {sp:#x}");
                assert_eq!(stack_end(), end, "looked up once a thread");
                maps_reads() - before
            })
            .join()
            .unwrap()
        })
        .sum();
    if !supported {
        eprintln!("no PROCMAP_QUERY here: {reads} reads of /proc/self/maps for {THREADS} threads");
        return;
    }
    assert_eq!(reads, 0, "{THREADS} threads read all of /proc/self/maps {reads} times to find their stacks");
}

/// A stack walk reads a bounded window of the stack whatever the program: with no frame
/// record above the allocator (a program built without frame pointers) it used to scan
/// 64 KiB of stack for one, about 200,000 instructions a sample.
#[test]
fn a_walk_without_frame_records_reads_a_bounded_window() {
    std::thread::spawn(|| {
        let pad = core::hint::black_box([0u64; 16 << 10]); // 128 KiB of zeros above the walk
        let end = Sys::readable_mapping_of(os::stack_pointer()).map(|(_, e)| e).unwrap();
        let mut out = [0usize; MAX_FRAMES];
        let before = os::WALK_READS.with(|n| n.get());
        let n = os::frame_walk(&mut out, 0, end, &|_| false, (0, 0));
        let reads = os::WALK_READS.with(|n| n.get()) - before;
        assert_eq!(n, 0, "no code anywhere: no frames");
        let bound = (os::WALK_WINDOW / 8 * 3 / 2 + 2 * MAX_FRAMES) as u64;
        assert!(reads <= bound, "the walk read {reads} stack words (bound {bound})");
        core::hint::black_box(&pad);
    })
    .join()
    .unwrap();
}
