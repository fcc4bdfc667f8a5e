//! Issue 20: memory handed out as fresh for first touch is untouched, whatever the span's history.
//!
//! On a (fake) two-node machine, blocks of 16 KiB and more are placed by the kernel's first
//! touch: the allocator hands them out from a bump pointer over memory it says is fresh and
//! writes nothing into them. That memory must really be untouched: a span that an earlier phase
//! of the program used and freed (parked in its arena, or back in its domain as dirty pages)
//! and that is carved again, for another size class, before the purge delay ran out still has
//! its pages where that phase's threads touched them, so the next user's first touch would place
//! nothing. Here one thread uses and frees every other size class, and large blocks, then
//! allocates the classes and large sizes it never used: `mincore` must report none of their pages
//! resident before they are touched.
//!
//! Pages cannot be on two nodes here (one physical node): residency is what is checked; the
//! guests of numa-tests/ (pattern 10) check where the pages go.

// SAFETY (all unsafe blocks in this file): raw allocator calls on blocks the test itself
// allocated and still owns, and `mincore` on whole pages of such blocks.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
use std::process::Command;

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

mod common;

const PAGE: usize = 4096;

fn pin(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
    std::thread::yield_now();
}

/// Resident pages among the whole pages of `[p, p + len)`.
fn resident(p: *mut u8, len: usize) -> usize {
    let lo = (p as usize).div_ceil(PAGE) * PAGE;
    let hi = (p as usize + len) / PAGE * PAGE;
    if hi <= lo {
        return 0;
    }
    let mut v = vec![0u8; (hi - lo) / PAGE];
    assert_eq!(unsafe { libc::mincore(lo as *mut libc::c_void, hi - lo, v.as_mut_ptr()) }, 0);
    v.iter().filter(|&&b| b & 1 != 0).count()
}

/// The small classes placed by first touch (16 KiB .. 128 KiB), and large sizes.
fn sizes() -> (Vec<usize>, Vec<usize>) {
    use domalloc::size_class::{class_size, CLASSES, PLACED_MIN_CLASS};
    let small = (PLACED_MIN_CLASS..CLASSES).map(class_size).collect();
    // Large blocks (one span of 64 KiB pages each): 3, 4, 5, ... 15 pages.
    let large = (3..=15).map(|p| (p << 16) - 1000).collect();
    (small, large)
}

fn use_and_free(size: usize, n: usize) {
    let l = Layout::from_size_align(size, 16).unwrap();
    let v: Vec<*mut u8> = (0..n).map(|_| unsafe { alloc(l) }).collect();
    for &p in &v {
        assert!(!p.is_null());
        unsafe { std::ptr::write_bytes(p, 0x5a, size) };
    }
    for p in v {
        unsafe { dealloc(p, l) };
    }
}

fn purged() -> u64 {
    domalloc::stats().nodes.iter().map(|n| n.purged_bytes).sum()
}

/// Phase 1 uses and frees every other size; phase 2 allocates the others, which this process
/// never served before: their memory must be untouched (fresh or purged). Small sizes first,
/// then large ones. For the small ones (under 5 MiB used and freed) the `fresh` default purges
/// nothing: new memory is mapped while the used pages wait for the purge schedule (before, a
/// `madvise` per reused span, each a TLB shootdown on every CPU of the process).
fn scenario_fresh_is_untouched() {
    assert!(domalloc::numa_enabled(), "fake topology not picked up");
    pin(0);
    let (small, large) = sizes();
    let mut bad = Vec::new();
    for list in [&small, &large] {
        let (mut used, mut fresh) = (Vec::new(), Vec::new());
        for (i, &s) in list.iter().enumerate() {
            if i % 2 == 0 {
                used.push(s)
            } else {
                fresh.push(s)
            }
        }
        let before = purged();
        phases(&used, &fresh, &mut bad);
        if list == &small && std::env::var("DOMALLOC_FIRST_TOUCH").as_deref() == Ok("fresh") {
            assert_eq!(purged() - before, 0, "spans purged for first touch within the reserve");
        }
    }
    if std::env::var("DOMALLOC_FIRST_TOUCH").as_deref() == Ok("reuse") {
        // The switch off: reused spans keep their resident pages (no madvise, no faults).
        assert!(!bad.is_empty(), "DOMALLOC_FIRST_TOUCH=reuse purged the reused spans anyway");
    } else {
        assert!(bad.is_empty(), "memory handed out as fresh was touched before:\n{}", bad.join("\n"));
    }
}

/// Uses and frees `used`, then allocates `fresh` and notes in `bad` what was resident already.
fn phases(used: &[usize], fresh: &[usize], bad: &mut Vec<String>) {
    for &s in used {
        use_and_free(s, 8);
    }
    for (k, &s) in fresh.iter().enumerate() {
        let l = Layout::from_size_align(s, 16).unwrap();
        let zeroed = k % 2 == 1;
        let v: Vec<*mut u8> = (0..8)
            .map(|_| unsafe {
                if zeroed {
                    alloc_zeroed(l)
                } else {
                    alloc(l)
                }
            })
            .collect();
        let (pages, res): (usize, usize) = v.iter().fold((0, 0), |(a, b), &p| (a + s / PAGE, b + resident(p, s)));
        if res > 0 {
            bad.push(format!(
                "size {s} ({}): {res} of ~{pages} pages already resident",
                if zeroed { "zeroed" } else { "alloc" }
            ));
        }
        for &p in &v {
            unsafe { dealloc(p, l) };
        }
    }
}

#[test]
fn fresh_is_untouched() {
    run("fresh_is_untouched", "fresh");
}

/// `DOMALLOC_FIRST_TOUCH=reuse` hands reused spans out as they are.
#[test]
fn reuse_keeps_resident_pages() {
    run("reuse_keeps_resident_pages", "reuse");
}

/// Recycled *blocks* (a span still in use, its freed blocks handed out again): resident where
/// the earlier phase touched them, unless `DOMALLOC_FIRST_TOUCH=always@<size>`, which purges
/// each block of at least `<size>` before handing it out again (first touch decides again).
/// Blocks of every placed class from 64 KiB, freed and allocated again with one block of the span
/// kept in use (so the span is not emptied and parked).
fn scenario_recycled_blocks() {
    assert!(domalloc::numa_enabled(), "fake topology not picked up");
    pin(0);
    use domalloc::size_class::{class_size, CLASSES, PLACED_MIN_CLASS};
    let always = std::env::var("DOMALLOC_FIRST_TOUCH").as_deref() == Ok("always@64K");
    let mut report = Vec::new();
    for s in (PLACED_MIN_CLASS..CLASSES).map(class_size) {
        let l = Layout::from_size_align(s, 16).unwrap();
        let keep = unsafe { alloc(l) };
        let v: Vec<*mut u8> = (0..4).map(|_| unsafe { alloc(l) }).collect();
        for &p in &v {
            unsafe { std::ptr::write_bytes(p, 0x5a, s) };
        }
        for &p in &v {
            unsafe { dealloc(p, l) };
        }
        let again: Vec<*mut u8> = (0..4)
            .map(|k| unsafe {
                if k % 2 == 0 {
                    alloc(l)
                } else {
                    alloc_zeroed(l)
                }
            })
            .collect();
        let res: usize = again.iter().map(|&p| resident(p, s)).sum();
        for (k, &p) in again.iter().enumerate() {
            if k % 2 == 1 {
                let z = unsafe { std::slice::from_raw_parts(p, s) };
                assert!(z.iter().all(|&b| b == 0), "alloc_zeroed of {s} B not zero");
            }
        }
        // A recycled block must be recycled (same blocks), else the check proves nothing.
        let recycled = again.iter().filter(|p| v.contains(p)).count();
        report.push((s, res, recycled));
        for p in again {
            unsafe { dealloc(p, l) };
        }
        unsafe { dealloc(keep, l) };
    }
    let tested: Vec<_> = report.iter().filter(|r| r.0 >= 64 << 10 && r.2 > 0).collect();
    assert!(tested.len() >= 4, "too few classes recycled their blocks: {report:?}");
    for &&(s, res, _) in &tested {
        if always {
            assert_eq!(res, 0, "{s} B: recycled blocks handed out resident under always@64K: {report:?}");
        } else {
            assert!(res > 0, "{s} B: recycled blocks were purged without always@: {report:?}");
        }
    }
    // Below the threshold nothing changes (where blocks below it were recycled at all: the
    // quarantine build delays their reuse).
    let below: Vec<_> = report.iter().filter(|r| r.0 < 64 << 10 && r.2 > 0).collect();
    if always && !below.is_empty() {
        assert!(below.iter().any(|r| r.1 > 0), "blocks below 64 KiB were purged too: {report:?}");
    }
}

/// `DOMALLOC_FIRST_TOUCH=always@64K`: recycled blocks of 64 KiB and more are purged first.
#[test]
fn always_purges_recycled_blocks() {
    run("always_purges_recycled_blocks", "always@64K");
}

/// The default keeps recycled blocks resident (the multi-phase limitation the switch is for).
#[test]
fn fresh_recycles_blocks_resident() {
    run("fresh_recycles_blocks_resident", "fresh");
}

fn run(name: &str, first_touch: &str) {
    if std::env::var("DOMALLOC_TEST_SCENARIO").is_ok() {
        if name.contains("recycle") || name.contains("always") {
            scenario_recycled_blocks();
        } else {
            scenario_fresh_is_untouched();
        }
        return;
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipping: needs 2 CPUs");
        return;
    }
    let root = common::fake_two_nodes(name);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("DOMALLOC_TEST_SCENARIO", name)
        .env("DOMALLOC_TOPOLOGY_ROOT", &root)
        .env("DOMALLOC_NUMA", "1")
        .env("DOMALLOC_FIRST_TOUCH", first_touch)
        // Freed spans stay unpurged through the test (the window where they were reused as fresh).
        .env("DOMALLOC_PURGE_DELAY", "never")
        .env("DOMALLOC_PURGE_THREAD", "0")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        out.status.success(),
        "scenario failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "scenario did not run");
}
