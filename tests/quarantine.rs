//! The quarantine build (`--features quarantine`): each protection shown working.
//!
//! Misuse cases run in a child process (this test binary started again with
//! `DOMALLOC_CHECKED_CASE=<case>`); the parent checks how the child died (SIGABRT with exactly
//! one `domalloc: error:` line naming the problem and the address, or SIGSEGV for guard pages
//! and unmapped freed huge blocks).
//!
//! Run: `cargo test -p domalloc --features quarantine --tests`.

#![cfg(feature = "quarantine")]
// Every case misuses the allocator on purpose (in a child process that must die): the unsafe
// blocks are the point, not an oversight.
#![allow(clippy::undocumented_unsafe_blocks)]

use domalloc::raw;
use rand::{Rng, SeedableRng};

mod common;
use common::{expect_addr, Death};

const ENV: &str = "DOMALLOC_CHECKED_CASE";

/// Runs `body` in a child process (see `common::case`).
fn case(name: &str, death: Death<'_>, body: fn()) {
    common::case(ENV, name, &[], death, body);
}

// ---- poisoning: writes after free ----

#[test]
fn write_after_free_small_on_collect() {
    case("write_after_free_small_on_collect", Death::Abort(&["write after free", "quarantine build"]), || unsafe {
        let p = raw::malloc(64);
        raw::free(p);
        *p.add(40) = 7; // dangling write
        expect_addr(p.add(40));
        domalloc::collect(false); // flushes the quarantine: verified there
    });
}

#[test]
fn write_after_free_large_on_eviction() {
    case("write_after_free_large_on_eviction", Death::Abort(&["write after free", "offset 5000"]), || unsafe {
        let keep = raw::malloc(200 << 10);
        let p = raw::malloc(200 << 10);
        raw::free(p);
        *p.add(5000) = 1;
        expect_addr(p.add(5000));
        // Push it out of the quarantine (FIFO, 256 blocks) with other frees.
        for _ in 0..1000 {
            raw::free(raw::malloc(32));
        }
        raw::free(keep);
    });
}

#[test]
fn write_after_free_first_word() {
    // The first word (where the free list link goes) is checked too.
    case("write_after_free_first_word", Death::Abort(&["write after free", "offset 0"]), || unsafe {
        let p = raw::malloc(16) as *mut u64;
        raw::free(p.cast());
        *p = 0;
        expect_addr(p.cast());
        domalloc::collect(false);
    });
}

// ---- double frees and uses of quarantined blocks ----

#[test]
fn double_free_small_in_quarantine() {
    case("double_free_small_in_quarantine", Death::Abort(&["free()", "double free", "quarantine"]), || unsafe {
        let p = raw::malloc(24);
        raw::free(p);
        for _ in 0..100 {
            raw::free(raw::malloc(24)); // other frees in between; p still waits
        }
        expect_addr(p);
        raw::free(p);
    });
}

#[test]
fn double_free_small_other_thread() {
    // The quarantine tag is in the block: another thread's double free is caught too.
    case("double_free_small_other_thread", Death::Abort(&["free()", "double free"]), || unsafe {
        let p = raw::malloc(48) as usize;
        raw::free(p as *mut u8);
        expect_addr(p as *const u8);
        std::thread::spawn(move || raw::free(p as *mut u8)).join().unwrap();
    });
}

#[test]
fn double_free_large_in_quarantine() {
    case("double_free_large_in_quarantine", Death::Abort(&["free()", "double free"]), || unsafe {
        let p = raw::malloc(300 << 10);
        raw::free(p);
        expect_addr(p);
        raw::free(p);
    });
}

#[test]
fn realloc_freed_small() {
    case("realloc_freed_small", Death::Abort(&["realloc()", "use after free"]), || unsafe {
        let p = raw::malloc(100);
        raw::free(p);
        expect_addr(p);
        raw::realloc(p, 200, 16);
    });
}

#[test]
fn usable_size_freed_small() {
    case("usable_size_freed_small", Death::Abort(&["malloc_usable_size()", "invalid pointer"]), || unsafe {
        let p = raw::malloc(100);
        raw::free(p);
        expect_addr(p);
        std::hint::black_box(raw::usable_size(p));
    });
}

#[test]
fn free_interior_small() {
    case("free_interior_small", Death::Abort(&["free()", "not a block start"]), || unsafe {
        let p = raw::malloc(64);
        expect_addr(p.add(8));
        raw::free(p.add(8));
    });
}

// ---- encoded free-list links ----

#[test]
fn corrupted_free_list_link_is_reported() {
    // A write after free that lands after the block left the quarantine (it is in a free list
    // now): the link is encoded, so the garbage decodes outside the span and is reported when
    // the list is followed, instead of handing out the written address.
    case("corrupted_free_list_link_is_reported", Death::Abort(&["corrupted free list"]), || unsafe {
        let keep = raw::malloc(64); // keeps the page from being released
        let p = raw::malloc(64);
        raw::free(p);
        domalloc::collect(false); // p leaves the quarantine: now in the page's free list
        expect_addr(p);
        *(p as *mut usize) = 0x4141_4141_4141_4141; // dangling write over the link
        for _ in 0..2000 {
            std::hint::black_box(raw::malloc(64)); // allocation walks the list through p
        }
        raw::free(keep);
    });
}

// ---- guard pages around huge blocks ----

#[test]
fn overflow_past_huge_block_faults() {
    case("overflow_past_huge_block_faults", Death::Segv, || unsafe {
        let p = raw::malloc((4 << 20) + 100);
        let n = raw::usable_size(p);
        std::ptr::write_bytes(p, 1, n); // all of it is usable
        std::ptr::write_volatile(p.add(n), 1); // one past the end: the guard page
    });
}

#[test]
fn underflow_before_huge_block_faults() {
    case("underflow_before_huge_block_faults", Death::Segv, || unsafe {
        let p = raw::malloc(3 << 20);
        *p = 1;
        std::ptr::write_volatile(p.sub(1), 1);
    });
}

#[test]
fn overflow_past_aligned_huge_block_faults() {
    case("overflow_past_aligned_huge_block_faults", Death::Segv, || unsafe {
        let p = raw::alloc(2 << 20, 8 << 20);
        assert_eq!(p as usize % (8 << 20), 0);
        let n = raw::usable_size(p);
        std::ptr::write_volatile(p.add(n - 1), 1);
        std::ptr::write_volatile(p.add(n), 1);
    });
}

#[test]
fn use_after_free_huge_faults() {
    // Freed huge blocks are unmapped at once (no cache in quarantine build).
    case("use_after_free_huge_faults", Death::Segv, || unsafe {
        let p = raw::malloc(4 << 20);
        *p = 1;
        raw::free(p);
        std::ptr::write_volatile(p, 2);
    });
}

// ---- delayed reuse (in process) ----

#[test]
fn freed_blocks_are_not_reused_at_once() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    unsafe {
        let p = raw::malloc(80);
        raw::free(p);
        let mut got = Vec::new();
        for _ in 0..200 {
            let q = raw::malloc(80);
            assert_ne!(q, p, "freed block handed out again while in quarantine");
            got.push(q);
        }
        // Freed blocks read as poison (beyond the tag word) while they wait.
        let q = got.pop().unwrap();
        raw::free(q);
        assert!((8..80).all(|i| *q.add(i) == 0xdf));
        for q in got {
            raw::free(q);
        }
        // Once out of the quarantine, blocks are reused.
        domalloc::collect(false);
        let r = raw::malloc(80);
        assert!(!r.is_null());
        raw::free(r);
    }
}

#[test]
fn huge_realloc_moves_and_keeps_contents() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    unsafe {
        let p = raw::malloc(3 << 20);
        for i in 0..(3 << 20) {
            *p.add(i) = (i % 251) as u8;
        }
        let q = raw::realloc(p, 6 << 20, 16);
        assert!(!q.is_null());
        assert!((0..(3 << 20)).all(|i| *q.add(i) == (i % 251) as u8));
        std::ptr::write_bytes(q, 0, raw::usable_size(q));
        let r = raw::realloc(q, 2 << 20, 16);
        assert!(!r.is_null());
        raw::free(r);
    }
}

// ---- randomized stress ----

/// Random malloc/calloc/realloc/free over all size ranges on several threads, blocks passed
/// between threads, contents checked: no false report, no corruption.
#[test]
fn random_stress_checked() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    const SIZES: [usize; 5] = [64, 1024, 64 << 10, 600 << 10, 3 << 20];
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(usize, usize, u8)>::new()));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(0xc0ffee + t);
                let mut live: Vec<(usize, usize, u8)> = Vec::new();
                let check = |p: usize, n: usize, v: u8| unsafe {
                    let s = std::slice::from_raw_parts(p as *const u8, n.min(4096));
                    assert!(s.iter().all(|&b| b == v), "block {p:#x} corrupted");
                };
                for i in 0..20_000u32 {
                    let op = rng.gen_range(0..100);
                    if op < 45 || live.is_empty() {
                        let cls = rng.gen_range(0..if i % 50 == 0 { 5 } else { 4 });
                        let max = SIZES[cls];
                        let n = rng.gen_range(1..=max);
                        let v = rng.gen::<u8>();
                        let p = unsafe {
                            if rng.gen_bool(0.2) {
                                let p = raw::calloc(n);
                                assert!((0..n.min(4096)).all(|k| *p.add(k) == 0), "calloc not zero");
                                p
                            } else {
                                raw::malloc(n)
                            }
                        };
                        assert!(!p.is_null());
                        unsafe { std::ptr::write_bytes(p, v, n.min(4096)) };
                        live.push((p as usize, n, v));
                    } else if op < 60 {
                        let k = rng.gen_range(0..live.len());
                        let (p, n, v) = live.swap_remove(k);
                        check(p, n, v);
                        let cls = rng.gen_range(0..4);
                        let m = rng.gen_range(1..=SIZES[cls]);
                        let q = unsafe { raw::realloc(p as *mut u8, m, 16) };
                        assert!(!q.is_null());
                        check(q as usize, n.min(m), v);
                        unsafe { std::ptr::write_bytes(q, v, m.min(4096)) };
                        live.push((q as usize, m, v));
                    } else if op < 65 {
                        // Hand a block to another thread.
                        let k = rng.gen_range(0..live.len());
                        shared.lock().unwrap().push(live.swap_remove(k));
                    } else {
                        let k = rng.gen_range(0..live.len());
                        let (p, n, v) = live.swap_remove(k);
                        check(p, n, v);
                        unsafe { raw::free(p as *mut u8) };
                    }
                    if i % 100 == 0 {
                        if let Some(b) = shared.lock().unwrap().pop() {
                            live.push(b);
                        }
                    }
                }
                for (p, n, v) in live {
                    check(p, n, v);
                    unsafe { raw::free(p as *mut u8) };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for (p, n, v) in shared.lock().unwrap().drain(..) {
        unsafe {
            assert!(std::slice::from_raw_parts(p as *const u8, n.min(4096)).iter().all(|&b| b == v));
            raw::free(p as *mut u8);
        }
    }
    domalloc::collect(true);
}
