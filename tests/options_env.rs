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
        "stats_at_exit" | "verbose" | "malformed" => {
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
            let before = domalloc::stats();
            let huge_before: u64 = before.nodes[..before.node_count].iter().map(|n| n.huge_total).sum();
            let v: Vec<Vec<u8>> = (0..10).map(|_| vec![1u8; 100_000]).collect();
            let after = domalloc::stats();
            let huge_after: u64 = after.nodes[..after.node_count].iter().map(|n| n.huge_total).sum();
            assert!(huge_after >= huge_before + 10, "blocks above the policy threshold get their own mapping");
            drop(v);
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
    assert!(se.contains("domalloc: stats: numa="), "no report:\n{se}");
    assert!(se.contains("domalloc: node   segments"), "no per-node table:\n{se}");
    assert!(se.contains("domalloc: class  block-size"), "no per-class table:\n{se}");
});

case!(verbose, &[("DOMALLOC_VERBOSE", "1")], |se| {
    assert!(se.contains("domalloc: linux numa="), "no banner:\n{se}");
    assert!(se.contains("domalloc: node 0 memory"), "no topology:\n{se}");
    assert!(se.contains(" policy=local min-size=0"), "policy not in option syntax:\n{se}");
    assert!(se.contains(" thp=segments "), "THP default not shown:\n{se}");
});

case!(malformed, &[("DOMALLOC_PURGE_DELAY", "soon"), ("DOMALLOC_VERBOSE", "1")], |se| {
    assert!(se.contains("domalloc: warning: ignoring DOMALLOC_PURGE_DELAY=soon"), "{se}");
    assert!(se.contains("purge-delay=100ms"), "default kept:\n{se}");
});

case!(purge_delay_zero, &[("DOMALLOC_PURGE_DELAY", "0")], |_se| {});

case!(policy_threshold, &[("DOMALLOC_POLICY", "interleave:0@64k"), ("DOMALLOC_VERBOSE", "1")], |se| {
    assert!(se.contains(" policy=interleave:0 min-size=65536"), "policy not shown as set:\n{se}");
});

case!(huge_thp_alignment, &[], |_se| {});
