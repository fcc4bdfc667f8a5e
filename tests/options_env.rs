//! Options read from the environment at start-up, each checked in a child process.

// SAFETY (all unsafe blocks in this file): raw allocator calls on blocks the test owns.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::process::Command;

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
}

fn child(name: &str) {
    match name {
        "stats_at_exit" | "verbose" | "malformed" | "unknown_option_warns_with_nearest" | "policy_naming_a_missing_node_warns_and_is_ignored" => {
            let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![1u8; 10 + i]).collect();
            std::hint::black_box(&v);
        }
        "purge_delay_zero" => {
            let base = rss();
            let v: Vec<Vec<u8>> = (0..2000).map(|_| vec![1u8; 100_000]).collect(); // large spans
            let peak = rss();
            drop(v);
            let after = rss();
            assert!(peak > base + (150 << 20));
            assert!(after < base + (16 << 20), "not purged at once: base {base} after {after}");
        }
        "policy_threshold" => {
            // interleave:0@64k: small blocks of classes from 64 KiB come from segments with the
            // policy applied, smaller ones not; big ones get their own mapping with it. Asked of
            // the kernel (get_mempolicy with MPOL_F_ADDR): the policy of the block's range.
            let small = vec![1u8; 1000];
            let at_threshold = vec![1u8; 100_000];
            let big = vec![1u8; 300_000];
            assert_eq!(range_policy(small.as_ptr()), 0, "a 1000 B block is under the policy");
            assert_eq!(range_policy(at_threshold.as_ptr()), 3, "a 100000 B block is not interleaved");
            assert_eq!(range_policy(big.as_ptr()), 3, "a 300000 B block is not interleaved");
        }
        "policy_threshold_small" => {
            // The case: bind:0@512, malloc(600) must be bound, malloc(100) not.
            let p600 = unsafe { libc::malloc(600) } as *const u8;
            let p100 = unsafe { libc::malloc(100) } as *const u8;
            let r600 = unsafe { domalloc::raw::malloc(600) };
            let r100 = unsafe { domalloc::raw::malloc(100) };
            assert_eq!(range_policy(r600), 2, "malloc(600) not placed by bind:0@512");
            assert_eq!(range_policy(r100), 0, "malloc(100) placed by the policy");
            unsafe {
                libc::free(p600 as *mut _);
                libc::free(p100 as *mut _);
                domalloc::raw::free(r600);
                domalloc::raw::free(r100);
            }
        }
        "huge_thp_alignment" => {
            for mb in [2usize, 3, 8, 33] {
                let v = vec![0u8; mb << 20];
                assert_eq!(v.as_ptr() as usize % (2 << 20), 0, "{mb} MiB block not 2 MiB aligned");
            }
        }
        other => panic!("unknown child {other}"),
    }
}

/// The memory policy mode of the range holding `p` (0 default, 2 bind, 3 interleave).
fn range_policy(p: *const u8) -> i32 {
    let mut mode: libc::c_int = -1;
    // MPOL_F_ADDR = 2: the policy of the VMA holding `p`.
    let r = unsafe { libc::syscall(libc::SYS_get_mempolicy, &mut mode as *mut libc::c_int, std::ptr::null_mut::<u64>(), 0usize, p as usize, 2usize) };
    assert_eq!(r, 0, "get_mempolicy");
    mode & 0xff
}

fn run(name: &str, env: &[(&str, &str)]) -> (String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("DOMALLOC_TEST_CHILD", name)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let (so, se) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "child {name} failed:\n{so}\n{se}");
    assert!(so.contains("1 passed"), "child {name} did not run:\n{so}");
    (so, se)
}

macro_rules! case {
    ($name:ident, $env:expr, |$se:ident| $check:block) => {
        #[test]
        fn $name() {
            if let Ok(c) = std::env::var("DOMALLOC_TEST_CHILD") {
                if c == stringify!($name) {
                    child(stringify!($name));
                }
                return;
            }
            let (_, $se) = run(stringify!($name), $env);
            $check
        }
    };
}

case!(stats_at_exit, &[("DOMALLOC_STATS", "1")], |se| {
    assert!(se.contains("domalloc: stats: pid "), "no report:\n{se}");
    assert!(se.contains(" numa off ") || se.contains(" numa on "), "no NUMA state:\n{se}");
    assert!(se.lines().any(|l| l.split_whitespace().eq(["domalloc:", "node", "in-use", "peak", "mapped", "map-peak", "resident", "allocs", "frees", "remote", "home", "purged", "huge-hit"])), "no per-node table:\n{se}");
    assert!(se.contains("domalloc: class  block-size"), "no per-class table:\n{se}");
});

case!(verbose, &[("DOMALLOC_VERBOSE", "1")], |se| {
    assert!(se.contains("domalloc: 0.") && se.contains(" on linux: "), "no banner:\n{se}");
    assert!(se.contains("domalloc: node 0: "), "no topology:\n{se}");
    assert!(se.contains("; placement: local;"), "policy not in plain words:\n{se}");
    assert!(se.contains("; huge pages: on segments"), "THP default not shown:\n{se}");
    assert!(!se.contains("Some(") && !se.contains("DontNeed"), "Rust Debug text in the banner:\n{se}");
});

case!(malformed, &[("DOMALLOC_PURGE_DELAY", "soon"), ("DOMALLOC_VERBOSE", "1")], |se| {
    assert!(se.contains("domalloc: warning: ignoring DOMALLOC_PURGE_DELAY=soon"), "{se}");
    assert!(se.contains("goes back to the OS after 1000 ms"), "default kept:\n{se}");
});

case!(unknown_option_warns_with_nearest, &[("DOMALLOC_STAT", "1")], |se| {
    assert!(se.contains("domalloc: warning: unknown option DOMALLOC_STAT ignored (did you mean DOMALLOC_STATS?)"), "{se}");
});

case!(purge_delay_zero, &[("DOMALLOC_PURGE_DELAY", "0")], |_se| {});

case!(policy_threshold, &[("DOMALLOC_POLICY", "interleave:0@64k"), ("DOMALLOC_VERBOSE", "1")], |se| {
    assert!(se.contains("; placement: interleave:0 for blocks of 64.0 KiB and more"), "policy not shown as set:\n{se}");
});

case!(policy_threshold_small, &[("DOMALLOC_POLICY", "bind:0@512")], |_se| {});

case!(policy_naming_a_missing_node_warns_and_is_ignored, &[("DOMALLOC_POLICY", "bind:5"), ("DOMALLOC_VERBOSE", "1")], |se| {
    assert!(se.contains("domalloc: warning: DOMALLOC_POLICY=bind:5 names node 5, which does not exist or has no memory; using the default (local) placement"), "{se}");
    assert!(se.contains("; placement: local;"), "default not in force:\n{se}");
});

case!(huge_thp_alignment, &[], |_se| {});
