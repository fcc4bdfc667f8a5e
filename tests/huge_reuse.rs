//! Freed huge blocks are reused from the per-node cache, resized to fit: a smaller request
//! takes a bigger block (its tail is spare capacity that `realloc` grows into without a system
//! call), a bigger one grows a smaller block with `mremap`. Contents, zeroing and usable sizes
//! stay right, and on one node the reuse saves the page faults of fresh mappings.

// SAFETY (all unsafe blocks in this file): raw allocator calls on blocks the test itself
// allocated and still owns; writes stay within the requested sizes.
#![allow(clippy::undocumented_unsafe_blocks)]

use domalloc::raw;

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

const MIB: usize = 1 << 20;

/// The tests run one at a time: `domalloc::collect(true)` in one of them purges the blocks
/// another has just freed and counts the page faults of reusing.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn minor_faults() -> i64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    u.ru_minflt
}

fn touch(p: *mut u8, len: usize, tag: u8) {
    let mut off = 0;
    while off < len {
        unsafe { p.add(off).write(tag ^ (off >> 12) as u8) };
        off += 4096;
    }
}

fn check(p: *const u8, len: usize, tag: u8) {
    let mut off = 0;
    while off < len {
        assert_eq!(unsafe { p.add(off).read() }, tag ^ (off >> 12) as u8, "content lost at {off}");
        off += 4096;
    }
}

/// One round: a 40 MiB block, then a calloc, then a block grown by realloc from 1.5 to 60 MiB.
/// Returns the minor faults of writing the 40 MiB block.
fn round(tag: u8) -> i64 {
    let a = unsafe { raw::malloc(40 * MIB) };
    assert!(!a.is_null());
    assert!(unsafe { raw::usable_size(a) } >= 40 * MIB);
    let f = minor_faults();
    touch(a, 40 * MIB, tag);
    let faults = minor_faults() - f;
    check(a, 40 * MIB, tag);
    unsafe { raw::free(a) };

    // Reuses the dirty 40 MiB block: must read as zero.
    let c = unsafe { raw::calloc(8 * MIB) };
    assert!(!c.is_null());
    let mut off = 0;
    while off < 8 * MIB {
        assert_eq!(unsafe { c.add(off).read() }, 0, "calloc not zero at {off}");
        off += 4093;
    }
    unsafe { raw::free(c) };

    let mut size = 3 * MIB / 2;
    let mut r = unsafe { raw::malloc(size) };
    assert!(!r.is_null());
    touch(r, size, tag);
    while size < 60 * MIB {
        let new = size * 3 / 2;
        r = unsafe { raw::realloc(r, new, 16) };
        assert!(!r.is_null());
        assert!(unsafe { raw::usable_size(r) } >= new);
        check(r, size, tag);
        touch(r, new, tag);
        size = new;
    }
    unsafe { raw::free(r) };
    faults
}

#[test]
fn cached_huge_blocks_are_reused_and_resized() {
    let _serial = serial();
    domalloc::collect(true);
    let f0 = minor_faults();
    let a1 = round(1);
    let f1 = minor_faults();
    let a2 = round(2);
    let f2 = minor_faults();
    let a3 = round(3);
    let f3 = minor_faults();
    eprintln!("minor faults per round: {} {} {} (of them the 40 MiB block: {a1} {a2} {a3})", f1 - f0, f2 - f1, f3 - f2);
    if !domalloc::numa_enabled() && !cfg!(feature = "hardened") {
        // (The hardened build never grows a cached block nor resizes one in place, so this
        // round's growing blocks are fresh mappings there; the quarantine build keeps no huge
        // cache.) The first round's 40 MiB block is fresh; later rounds reuse the cached block
        // the previous round's 60 MiB one left, whose pages are resident (multi-node machines
        // purge cached blocks so first touch places them again). The smaller blocks that reuse
        // a bigger cached one give its unused tail's pages back (`DOMALLOC_PURGE=dontneed`, the
        // default), so the block grown to 60 MiB faults its tail in again: only the 40 MiB
        // block's faults are compared.
        assert!(a3 < a1 / 2, "no reuse: the 40 MiB block faulted {a1} times, then {a3}");
    }
    // A shrink to under half keeps the head (and gives the tail back).
    let r = unsafe { raw::malloc(64 * MIB) };
    touch(r, 64 * MIB, 4);
    let r = unsafe { raw::realloc(r, 5 * MIB, 16) };
    check(r, 5 * MIB, 4);
    assert!(unsafe { raw::usable_size(r) } >= 5 * MIB);
    unsafe { raw::free(r) };
    domalloc::collect(true);
}

/// Several threads grow, move, reuse and free huge blocks at once: every block stays known to
/// the allocator (a move must take the old header off the map before another thread can map
/// something at the old address; found by the C fork test as "free(): invalid pointer").
#[test]
fn concurrent_moves_keep_every_block_known() {
    let _serial = serial();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for _ in 0..150 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let mut size = (2 + (x % 10) as usize) * MIB;
                    let mut p = unsafe { raw::malloc(size) };
                    assert!(!p.is_null());
                    unsafe { p.write(t as u8) };
                    for _ in 0..3 {
                        size += size / 2;
                        p = unsafe { raw::realloc(p, size, 16) };
                        assert!(!p.is_null());
                        assert_eq!(unsafe { p.read() }, t as u8, "content lost in a move");
                        assert!(unsafe { raw::usable_size(p) } >= size);
                    }
                    unsafe { raw::free(p) };
                }
            })
        })
        .collect();
    for h in threads {
        h.join().unwrap();
    }
    domalloc::collect(true);
}

/// On one node a freed large block (a span of 64 KiB pages, 128 KiB to 1 MiB) is reused with
/// its pages resident: writing it again takes no page fault. (Large spans come from first-touch
/// segments on one node too, to keep them out of huge pages; purging such a span before reuse,
/// as multi-node machines must for first touch, cost rptest 692,000 faults instead of 44,000.)
#[test]
fn large_blocks_are_reused_without_faults_on_one_node() {
    let _serial = serial();
    if domalloc::numa_enabled() {
        eprintln!("skipped: NUMA machine (first touch places reused large spans again)");
        return;
    }
    if cfg!(feature = "quarantine") {
        eprintln!("skipped: the quarantine build delays reuse and keeps freed blocks inaccessible");
        return;
    }
    for &size in &[200 << 10, 512 << 10, 900 << 10] {
        // The fewest of three tries: a sweep of the purge thread may purge a segment's dirty
        // pages (the span just freed among them) when an older free's deadline comes due.
        let mut faults = i64::MAX;
        for _ in 0..3 {
            let p = unsafe { raw::malloc(size) };
            assert!(!p.is_null());
            touch(p, size, 1);
            unsafe { raw::free(p) };
            let q = unsafe { raw::malloc(size) };
            assert!(!q.is_null());
            let f = minor_faults();
            touch(q, size, 2);
            faults = faults.min(minor_faults() - f);
            check(q, size, 2);
            unsafe { raw::free(q) };
        }
        assert!(faults < (size / 4096) as i64 / 4, "{size} B: reuse took {faults} page faults ({} pages)", size / 4096);
    }
}

/// A cached huge block reused for a smaller request keeps its unused tail resident (the
/// process's live huge blocks are large enough to pay for it): freed again and reused at its
/// full size, it takes almost no page fault. mimalloc-bench's malloc-large (20 live blocks of
/// 5-25 MiB, replaced at random) took 1.78 M page faults when every such tail was given back at
/// once and faulted in again (mimalloc v3: 0.05 M).
#[test]
fn reused_block_keeps_its_tail_for_the_next_bigger_request() {
    let _serial = serial();
    if cfg!(feature = "quarantine") {
        eprintln!("skipped: the quarantine build keeps no huge cache");
        return;
    }
    domalloc::collect(true);
    // Live huge blocks that pay for the slack (it may be as large as the live huge bytes).
    let keep = unsafe { raw::malloc(40 * MIB) };
    assert!(!keep.is_null());
    touch(keep, 40 * MIB, 9);
    let x = unsafe { raw::malloc(60 * MIB) };
    assert!(!x.is_null());
    touch(x, 60 * MIB, 1);
    unsafe { raw::free(x) };
    // Reuses the 60 MiB block for 30 MiB: the 30 MiB tail stays resident.
    let y = unsafe { raw::malloc(30 * MIB) };
    assert!(!y.is_null());
    touch(y, 30 * MIB, 2);
    unsafe { raw::free(y) };
    let z = unsafe { raw::malloc(60 * MIB) };
    assert!(!z.is_null());
    let f = minor_faults();
    touch(z, 60 * MIB, 3);
    let faults = minor_faults() - f;
    check(z, 60 * MIB, 3);
    unsafe { raw::free(z) };
    check(keep, 40 * MIB, 9);
    unsafe { raw::free(keep) };
    domalloc::collect(true);
    let pages = (60 * MIB / 4096) as i64;
    eprintln!("60 MiB block reused after a 30 MiB request: {faults} page faults ({pages} pages)");
    assert!(faults < pages / 8, "the tail was given back and faulted in again: {faults} page faults ({pages} pages)");
}
