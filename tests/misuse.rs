//! Heap misuse: what domalloc detects, in which mode, and how it reports it.
//!
//! Every detected misuse prints exactly one line `domalloc: error: <what>(): <problem> <address>`
//! to stderr and aborts (SIGABRT). Each case below runs in a child process (this test binary,
//! started again with `DOMALLOC_MISUSE_CASE=<case>`), and the parent checks the signal, the one
//! line, the problem named and the address.
//!
//! | misuse                                              | default build          | `--features debug-invariants`     |
//! |-----------------------------------------------------|------------------------|------------------------|
//! | double free, large block (> 128 KiB, <= 1 MiB) (0)  | detected               | detected               |
//! | double free, huge block (> 1 MiB), cached or not    | detected (1)           | detected (1)           |
//! | free of a foreign pointer (stack/static/mmap/libc)  | detected               | detected               |
//! | free of an interior pointer of a large/huge block   | detected               | detected               |
//! | realloc / malloc_usable_size of a freed large block | detected               | detected               |
//! | realloc / malloc_usable_size of a freed huge block  | detected (2)           | detected (2)           |
//! | double free, small block, by the owning thread      | NOT detected (3)       | detected               |
//! | free of an interior pointer of a small block        | NOT detected (3)       | detected               |
//! | double free, small block, by another thread         | NOT detected (3)       | NOT detected (4)       |
//! | free after the block was reused by a new allocation | NOT detected (5)       | NOT detected (5)       |
//!
//! `--features quarantine` (quarantine build, `tests/quarantine.rs`) detects everything above except
//! the last row (5), and the small-block double free only while the block waits in a
//! quarantine (the thread's last 256 frees / 256 KiB, any thread); freed huge blocks stay
//! inaccessible for a while, so their double free says "double free" even without the cache.
//!
//! 0. "Large" is above the biggest small class (128 KiB): a 100 KiB block is a small block.
//! 1. While the freed block sits in the huge cache (default) the error says "double free"; once
//!    its mapping is gone (`DOMALLOC_HUGE_CACHE=0`) it says "not allocated by domalloc".
//! 2. While the freed block sits in the huge cache, `realloc` and `malloc_usable_size` check the
//!    header's `freed` flag ("double free or use after free"); once its mapping is gone, the
//!    pointer is "not allocated by domalloc". (`realloc_freed_huge` found the gap; fixed.)
//! 3. The fast path does no check: the block enters the free list twice (or a non-block
//!    address enters it), and a later allocation returns memory in use. Build with
//!    `--features debug-invariants` while hunting such bugs.
//! 4. Remote frees go onto a lock-free list without looking at it; debug-invariants build walks only the
//!    owner's lists.
//! 5. Once a freed block has been handed out again, a second free is indistinguishable from a
//!    legitimate one.

// Every case misuses the allocator on purpose (in a child process that must abort): the
// unsafe blocks are the point, not an oversight.
#![allow(clippy::undocumented_unsafe_blocks)]

use domalloc::raw;

mod common;
use common::{expect_addr, Death};

const ENV: &str = "DOMALLOC_MISUSE_CASE";

/// Runs `body` in a child process (see `common::case`); it must abort with one error line that
/// names the address and says each of `what`.
fn case(name: &str, env: &[(&str, &str)], what: &[&str], body: fn()) {
    common::case(ENV, name, env, Death::Abort(what), body);
}

fn check_mode_only() -> bool {
    if !cfg!(feature = "debug-invariants") {
        eprintln!("skipped: needs `--features debug-invariants`");
        return false;
    }
    true
}

// ---- large and huge blocks: always detected ----

#[test]
fn double_free_large() {
    case(
        "double_free_large",
        &[],
        &["free()", "double free"],
        || unsafe {
            let keep = raw::malloc(200 << 10); // keeps the span's segment busy
            let p = raw::malloc(200 << 10);
            raw::free(p);
            expect_addr(p);
            raw::free(p);
            raw::free(keep);
        },
    );
}

#[test]
fn double_free_huge_cached() {
    case(
        "double_free_huge_cached",
        &[],
        &["free()", "double free"],
        || unsafe {
            let p = raw::malloc(4 << 20);
            *p = 1;
            raw::free(p);
            expect_addr(p);
            raw::free(p);
        },
    );
}

#[test]
fn double_free_huge_uncached() {
    case(
        "double_free_huge_uncached",
        &[("DOMALLOC_HUGE_CACHE", "0")],
        // Checked mode keeps freed huge mappings (inaccessible) for a while: still "double free".
        if cfg!(feature = "quarantine") { &["free()", "double free"] } else { &["free()", "not allocated by domalloc"] },
        || unsafe {
            let p = raw::malloc(4 << 20);
            *p = 1;
            raw::free(p);
            expect_addr(p);
            raw::free(p);
        },
    );
}

#[test]
fn free_interior_large() {
    case(
        "free_interior_large",
        &[],
        &["free()", "inside a large block"],
        || unsafe {
            let p = raw::malloc(200 << 10);
            let q = p.add(4096 + 8);
            expect_addr(q);
            raw::free(q);
        },
    );
}

#[test]
fn free_interior_huge() {
    case(
        "free_interior_huge",
        &[],
        &["free()", "inside a huge block"],
        || unsafe {
            let p = raw::malloc(4 << 20);
            let q = p.add(4096);
            expect_addr(q);
            raw::free(q);
        },
    );
}

#[test]
fn realloc_freed_large() {
    case(
        "realloc_freed_large",
        &[],
        &["realloc()", "double free"],
        || unsafe {
            let keep = raw::malloc(200 << 10);
            let p = raw::malloc(200 << 10);
            raw::free(p);
            expect_addr(p);
            raw::realloc(p, 200 << 10, 16);
            raw::free(keep);
        },
    );
}

#[test]
fn usable_size_freed_large() {
    case(
        "usable_size_freed_large",
        &[],
        &["malloc_usable_size()", "invalid pointer"],
        || unsafe {
            let keep = raw::malloc(200 << 10);
            let p = raw::malloc(200 << 10);
            raw::free(p);
            expect_addr(p);
            std::hint::black_box(raw::usable_size(p));
            raw::free(keep);
        },
    );
}

// ---- pointers domalloc never returned ----

#[test]
fn free_stack_pointer() {
    case(
        "free_stack_pointer",
        &[],
        &["free()", "not allocated by domalloc"],
        || unsafe {
            let mut x = [0u8; 64];
            let p = std::hint::black_box(x.as_mut_ptr());
            expect_addr(p);
            raw::free(p);
        },
    );
}

static mut STATIC_BUF: [u64; 8] = [0; 8];

#[test]
fn free_static_pointer() {
    case(
        "free_static_pointer",
        &[],
        &["free()", "not allocated by domalloc"],
        || unsafe {
            let p = std::hint::black_box(std::ptr::addr_of_mut!(STATIC_BUF) as *mut u8);
            expect_addr(p);
            raw::free(p);
        },
    );
}

#[test]
fn free_mmap_pointer() {
    case(
        "free_mmap_pointer",
        &[],
        &["free()", "not allocated by domalloc"],
        || unsafe {
            // Make sure domalloc has segments around, so the map is not empty.
            let keep = raw::malloc(64);
            let len = 8 << 20;
            let m = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(m, libc::MAP_FAILED);
            // A 4 MiB-aligned address inside the mapping: the form huge blocks take, so the
            // look-up must reject it by the segment map, not by alignment.
            let p = ((m as usize + (4 << 20) - 1) & !((4 << 20) - 1)) as *mut u8;
            expect_addr(p);
            raw::free(p);
            raw::free(keep);
        },
    );
}

#[test]
fn free_libc_malloc_pointer() {
    case(
        "free_libc_malloc_pointer",
        &[],
        &["free()", "not allocated by domalloc"],
        || unsafe {
            let p = libc::malloc(100) as *mut u8;
            expect_addr(p);
            raw::free(p);
        },
    );
}

#[test]
fn realloc_foreign_pointer() {
    case(
        "realloc_foreign_pointer",
        &[],
        &["realloc()", "invalid pointer"],
        || unsafe {
            let mut x = [0u8; 64];
            let p = std::hint::black_box(x.as_mut_ptr());
            expect_addr(p);
            raw::realloc(p, 128, 8);
        },
    );
}

#[test]
fn usable_size_foreign_pointer() {
    case(
        "usable_size_foreign_pointer",
        &[],
        &["malloc_usable_size()", "invalid pointer"],
        || unsafe {
            let mut x = [0u8; 64];
            let p = std::hint::black_box(x.as_mut_ptr());
            expect_addr(p);
            std::hint::black_box(raw::usable_size(p));
        },
    );
}

// ---- small blocks: detected with `--features debug-invariants` only (owner thread) ----

#[test]
fn double_free_small_check_mode() {
    if std::env::var(ENV).is_err() && !check_mode_only() {
        return;
    }
    case(
        "double_free_small_check_mode",
        &[],
        &["free()", "double free", "debug-invariants build"],
        || unsafe {
            let keep = raw::malloc(64);
            let p = raw::malloc(64);
            raw::free(p);
            expect_addr(p);
            raw::free(p);
            raw::free(keep);
        },
    );
}

#[test]
fn free_interior_small_check_mode() {
    if std::env::var(ENV).is_err() && !check_mode_only() {
        return;
    }
    case(
        "free_interior_small_check_mode",
        &[],
        &["free()", "not a block start", "debug-invariants build"],
        || unsafe {
            let p = raw::malloc(64);
            let q = p.add(8);
            expect_addr(q);
            raw::free(q);
        },
    );
}

// ---- known gap: realloc of a freed huge block ----

/// Reproducer for a gap in the core: `realloc` on a freed huge block (still in the huge cache)
/// is not detected, because the header's `freed` flag is only checked by `free`. Today the
/// child gets the freed block back from `realloc` while the cache still holds it, and the next
/// 4 MiB `malloc` returns the same address: two owners of one block. Ignored until the core
/// checks `freed` in `realloc` (and `malloc_usable_size`); then remove the `ignore`.
#[test]
fn realloc_freed_huge() {
    case(
        "realloc_freed_huge",
        &[],
        &["realloc()", "double free"],
        || unsafe {
            let p = raw::malloc(4 << 20);
            *p = 7;
            raw::free(p);
            expect_addr(p);
            let q = raw::realloc(p, 3 << 20, 16);
            let r = raw::malloc(4 << 20);
            println!("realloc of the freed block returned {q:p}; the next 4 MiB block is {r:p}");
        },
    );
}
