//! Options read from the environment at start-up, each checked in a child process.

// SAFETY (all unsafe blocks in this file): raw allocator calls on blocks the test owns.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::process::Command;

mod common;

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
}

fn child(name: &str) {
    match name {
        "stats_at_exit"
        | "verbose"
        | "malformed"
        | "every_option_every_form"
        | "unknown_option_warns_with_nearest"
        | "policy_naming_a_missing_node_warns_and_is_ignored" => {
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
        "preferred_many" => {
            // preferred:0-1 on a two-node topology (a fake sysfs tree; the kernel's node 1 need
            // not exist: the kernel keeps the online nodes of the set): the segments and huge
            // blocks are placed with MPOL_PREFERRED_MANY (mode 5), not the first node alone.
            let large = vec![1u8; 300_000];
            let huge = vec![1u8; 8 << 20];
            assert_eq!(range_policy(large.as_ptr()), 5, "a large block is not under MPOL_PREFERRED_MANY");
            assert_eq!(range_policy(huge.as_ptr()), 5, "a huge block is not under MPOL_PREFERRED_MANY");
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

/// The memory policy mode of the range holding `p` (0 default, 1 preferred, 2 bind, 3
/// interleave, 5 preferred-many).
fn range_policy(p: *const u8) -> i32 {
    let mut mode: libc::c_int = -1;
    // MPOL_F_ADDR = 2: the policy of the VMA holding `p`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode as *mut libc::c_int,
            std::ptr::null_mut::<u64>(),
            0usize,
            p as usize,
            2usize,
        )
    };
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
    let (so, se) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "child {name} failed:\n{so}\n{se}");
    assert!(so.contains("1 passed"), "child {name} did not run:\n{so}");
    (so, se)
}

/// `DOMALLOC_POLICY=preferred:0-1` (several preferred nodes, as `numactl --preferred-many`) is
/// taken, shown as such, and applied with `MPOL_PREFERRED_MANY`.
#[test]
fn preferred_many() {
    if let Ok(c) = std::env::var("DOMALLOC_TEST_CHILD") {
        if c == "preferred_many" {
            child("preferred_many");
        }
        return;
    }
    let root = common::fake_two_nodes("preferred-many");
    let root_s = root.to_str().unwrap().to_string();
    let (_, se) = run(
        "preferred_many",
        &[
            ("DOMALLOC_TOPOLOGY_ROOT", &root_s),
            ("DOMALLOC_NUMA", "1"),
            ("DOMALLOC_POLICY", "preferred:0-1"),
            ("DOMALLOC_VERBOSE", "1"),
        ],
    );
    let _ = std::fs::remove_dir_all(&root);
    assert!(!se.contains("warning"), "preferred:0-1 was refused:\n{se}");
    assert!(se.contains("preferred:0-1"), "the policy in force is not shown:\n{se}");
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
    assert!(
        se.lines().any(|l| l.split_whitespace().eq([
            "domalloc:",
            "node",
            "in-use",
            "peak",
            "mapped",
            "map-peak",
            "resident",
            "allocs",
            "frees",
            "remote",
            "home",
            "purged",
            "huge-hit"
        ])),
        "no per-node table:\n{se}"
    );
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
    assert!(
        se.contains("domalloc: warning: unknown option DOMALLOC_STAT ignored (did you mean DOMALLOC_STATS?)"),
        "{se}"
    );
});

case!(purge_delay_zero, &[("DOMALLOC_PURGE_DELAY", "0")], |_se| {});

case!(policy_threshold, &[("DOMALLOC_POLICY", "interleave:0@64k"), ("DOMALLOC_VERBOSE", "1")], |se| {
    assert!(se.contains("; placement: interleave:0 for blocks of 64.0 KiB and more"), "policy not shown as set:\n{se}");
});

case!(policy_threshold_small, &[("DOMALLOC_POLICY", "bind:0@512")], |_se| {});

case!(
    policy_naming_a_missing_node_warns_and_is_ignored,
    &[("DOMALLOC_POLICY", "bind:5"), ("DOMALLOC_VERBOSE", "1")],
    |se| {
        assert!(se.contains("domalloc: warning: DOMALLOC_POLICY=bind:5 names node 5, which does not exist or has no memory; using the default (local) placement"), "{se}");
        assert!(se.contains("; placement: local;"), "default not in force:\n{se}");
    }
);

case!(huge_thp_alignment, &[], |_se| {});

/// One child with `env` (plus `DOMALLOC_VERBOSE=1` unless `env` sets it): its stderr.
fn verbose_child(env: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = env.to_vec();
    if !env.iter().any(|(k, _)| *k == "DOMALLOC_VERBOSE") {
        all.push(("DOMALLOC_VERBOSE", "1"));
    }
    run("every_option_every_form", &all).1
}

fn warnings(se: &str) -> Vec<&str> {
    se.lines().filter(|l| l.starts_with("domalloc: warning:")).collect()
}

/// The `DOMALLOC_VERBOSE=1` line of option `name`.
fn option_line<'a>(se: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("domalloc: option {name}=");
    se.lines().find(|l| l.starts_with(&prefix))
}

/// Every option of the README's table, each value form it shows (the value in force then, as
/// `DOMALLOC_VERBOSE=1` lists it), and malformed values of each: exactly one warning naming the
/// value, and the default in force (listed as the default). 9545c7b fails here: it lists no
/// options (one summary line), and takes `DOMALLOC_PURGE_DELAY=-1`, ` 100`, `DOMALLOC_THP=yes`,
/// `DOMALLOC_NUMA=on`... without a warning, and refuses `interleave:all`.
#[test]
fn every_option_every_form() {
    if let Ok(c) = std::env::var("DOMALLOC_TEST_CHILD") {
        if c == "every_option_every_form" {
            child("every_option_every_form");
        }
        return;
    }
    let dir = std::env::temp_dir().join(format!("domalloc-opts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stats_file = format!("{}/stats-%p.txt", dir.display());
    // (option, value, the value listed as in force)
    let good: &[(&str, &str, &str)] = &[
        ("DOMALLOC_PURGE_DELAY", "0", "0"),
        ("DOMALLOC_PURGE_DELAY", "250", "250"),
        ("DOMALLOC_PURGE_DELAY", "never", "never"),
        ("DOMALLOC_PURGE", "dontneed", "dontneed"),
        ("DOMALLOC_PURGE", "free", "free"),
        ("DOMALLOC_FIRST_TOUCH", "fresh", "fresh"),
        ("DOMALLOC_FIRST_TOUCH", "reuse", "reuse"),
        ("DOMALLOC_FIRST_TOUCH", "always", "always@16k"),
        ("DOMALLOC_FIRST_TOUCH", "always@64K", "always@64k"),
        ("DOMALLOC_FIRST_TOUCH", "always@1k", "always@16k"),
        ("DOMALLOC_THP", "segments", "segments"),
        ("DOMALLOC_THP", "1", "1"),
        ("DOMALLOC_THP", "0", "0"),
        ("DOMALLOC_NUMA", "auto", "auto"),
        ("DOMALLOC_NUMA", "0", "0"),
        ("DOMALLOC_NUMA", "1", "1"),
        ("DOMALLOC_POLICY", "local", "local"),
        ("DOMALLOC_POLICY", "bind:0", "bind:0"),
        ("DOMALLOC_POLICY", "preferred:0", "preferred:0"),
        ("DOMALLOC_POLICY", "preferred:all", "preferred:0"),
        ("DOMALLOC_POLICY", "interleave:0", "interleave:0"),
        ("DOMALLOC_POLICY", "interleave:0@1M", "interleave:0@1M"),
        ("DOMALLOC_TOPOLOGY_ROOT", "/sys", "/sys"),
        ("DOMALLOC_STATS", "0", "0"),
        ("DOMALLOC_STATS", "1", "text"),
        ("DOMALLOC_STATS", "text", "text"),
        ("DOMALLOC_STATS", "json", "json"),
        ("DOMALLOC_STATS_FILE", &stats_file, &stats_file),
        ("DOMALLOC_VERBOSE", "1", "1"),
        ("DOMALLOC_PURGE_THREAD", "auto", "auto"),
        ("DOMALLOC_PURGE_THREAD", "1", "1"),
        ("DOMALLOC_PURGE_THREAD", "0", "0"),
        ("DOMALLOC_HUGE_CACHE", "0", "0"),
        ("DOMALLOC_HUGE_CACHE", "64k", "64k"),
        ("DOMALLOC_HUGE_CACHE", "128M", "128M"),
        ("DOMALLOC_HUGE_CACHE", "1G", "1G"),
        ("DOMALLOC_HUGE_CACHE", "1000", "1000"),
        ("DOMALLOC_FAIL_MAP_EVERY", "0", "0"),
        ("DOMALLOC_FAIL_MAP_EVERY", "1000000", "1000000"),
        ("DOMALLOC_FAIL_MAP_AFTER", "0", "0"),
        ("DOMALLOC_FAIL_MAP_AFTER", "1000000", "1000000"),
    ];
    // (option, malformed value, the default listed)
    let bad: &[(&str, &str, &str)] = &[
        ("DOMALLOC_PURGE_DELAY", "-1", "1000"),
        ("DOMALLOC_POLICY", "preferred:x", "local"),
        ("DOMALLOC_PURGE_DELAY", " 100", "1000"),
        ("DOMALLOC_PURGE_DELAY", "100 ", "1000"),
        ("DOMALLOC_PURGE_DELAY", "18446744073709551616", "1000"),
        ("DOMALLOC_PURGE_DELAY", "soon", "1000"),
        ("DOMALLOC_PURGE", "DONTNEED", "dontneed"),
        ("DOMALLOC_FIRST_TOUCH", "always@", "fresh"),
        ("DOMALLOC_FIRST_TOUCH", "sometimes", "fresh"),
        ("DOMALLOC_THP", "yes", "segments"),
        ("DOMALLOC_THP", "2", "segments"),
        ("DOMALLOC_NUMA", "on", "auto"),
        ("DOMALLOC_POLICY", "interleave:", "local"),
        ("DOMALLOC_POLICY", "bind:0@", "local"),
        ("DOMALLOC_POLICY", "interleave:0@99999999999999999999", "local"),
        ("DOMALLOC_POLICY", "interleave:0@20000000000G", "local"),
        ("DOMALLOC_POLICY", " local", "local"),
        ("DOMALLOC_STATS", "yes", "0"),
        ("DOMALLOC_PURGE_THREAD", "on", "auto"),
        ("DOMALLOC_HUGE_CACHE", "-1", "128M"),
        ("DOMALLOC_HUGE_CACHE", "64 k", "128M"),
        ("DOMALLOC_HUGE_CACHE", "1T", "128M"),
        ("DOMALLOC_HUGE_CACHE", "18446744073709551616", "128M"),
        ("DOMALLOC_FAIL_MAP_EVERY", "-1", "0"),
        ("DOMALLOC_FAIL_MAP_AFTER", "x", "0"),
    ];
    let mut failures = Vec::new();
    for &(name, value, shown) in good {
        let se = verbose_child(&[(name, value)]);
        let line = option_line(&se, name).unwrap_or("(none)");
        let want = format!("domalloc: option {name}={shown} (environment");
        if !line.starts_with(&want) || !warnings(&se).is_empty() {
            failures.push(format!(
                "{name}={value:?}: expected a line starting {want:?} and no warning; got {line:?}, warnings {:?}",
                warnings(&se)
            ));
        }
        // The other options are listed with their defaults.
        let n = se.lines().filter(|l| l.starts_with("domalloc: option DOMALLOC_") && l.ends_with(" (default)")).count();
        let want_n = domalloc::options::TABLE.len() - if name == "DOMALLOC_VERBOSE" { 1 } else { 2 };
        if n != want_n {
            failures.push(format!("{name}={value:?}: {n} options listed as defaults, not {want_n}"));
        }
    }
    for &(name, value, default) in bad {
        let se = verbose_child(&[(name, value)]);
        let w = warnings(&se);
        let line = option_line(&se, name).unwrap_or("(none)");
        let want_warning = format!("domalloc: warning: ignoring {name}={value} (malformed; using the default)");
        let want = format!("domalloc: option {name}={default} (default; ");
        if w.len() != 1 || w[0] != want_warning || !line.starts_with(&want) {
            failures.push(format!("{name}={value:?}: expected one warning {want_warning:?} and {want:?}...; got warnings {w:?}, line {line:?}"));
        }
    }
    // DOMALLOC_VERBOSE malformed: one warning, and no listing (its default is off).
    let se = verbose_child(&[("DOMALLOC_VERBOSE", "yes")]);
    if warnings(&se) != ["domalloc: warning: ignoring DOMALLOC_VERBOSE=yes (malformed; using the default)"]
        || option_line(&se, "DOMALLOC_VERBOSE").is_some()
    {
        failures.push(format!("DOMALLOC_VERBOSE=yes: {se}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        good.len() + bad.len() + 1,
        failures.join("\n")
    );
}

/// `DOMALLOC_POLICY=interleave:all`, `bind:all` and `interleave:all@1M` (the README's
/// `mpirun -x DOMALLOC_POLICY=interleave:all` recipe) work in the allocator itself, as under
/// `LD_PRELOAD`: `all` is every node with memory. 9545c7b refuses them as malformed (only the
/// launcher expanded `all`).
#[test]
fn policy_all_nodes() {
    if let Ok(c) = std::env::var("DOMALLOC_TEST_CHILD") {
        if c == "every_option_every_form" {
            child("every_option_every_form");
        }
        return;
    }
    let t = domalloc::topology::Topology::detect(None).unwrap();
    let nodes: Vec<String> = t.memory_nodes().iter().map(|n| n.to_string()).collect();
    let list = nodes.join(",");
    for (value, kind, min) in
        [("interleave:all", "interleave", ""), ("bind:all", "bind", ""), ("interleave:all@1M", "interleave", "@1M")]
    {
        let se = verbose_child(&[("DOMALLOC_POLICY", value)]);
        assert!(warnings(&se).is_empty(), "{value}: {se}");
        let line = option_line(&se, "DOMALLOC_POLICY").unwrap_or("");
        // The list as the policy prints it (ranges): compare the nodes it names.
        let shown = line
            .strip_prefix(&format!("domalloc: option DOMALLOC_POLICY={kind}:"))
            .and_then(|r| r.split(' ').next())
            .unwrap_or("?");
        let shown = shown.strip_suffix(min).unwrap_or("?");
        let mut named = Vec::new();
        for part in shown.split(',') {
            match part.split_once('-') {
                Some((a, b)) => named.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
                None => named.push(part.parse::<usize>().unwrap_or(usize::MAX)),
            }
        }
        let want: Vec<usize> = t.memory_nodes().iter().collect();
        assert_eq!(named, want, "{value}: nodes {list} expected: {line}\n{se}");
        assert!(line.ends_with(&format!("(environment: {value})")), "{value}: {line}");
        assert!(se.contains(&format!("; placement: {kind}:")), "{value}: not in force:\n{se}");
    }
}

/// A `DOMALLOC_TOPOLOGY_ROOT` that holds no topology: one warning, and the machine's topology
/// (not a made-up one of 1024 CPUs and 1 byte of memory, as 9545c7b used).
#[test]
fn unreadable_topology_root_falls_back_to_the_machine() {
    if let Ok(c) = std::env::var("DOMALLOC_TEST_CHILD") {
        if c == "every_option_every_form" {
            child("every_option_every_form");
        }
        return;
    }
    let real = verbose_child(&[]);
    let se = verbose_child(&[("DOMALLOC_TOPOLOGY_ROOT", "/nonexistent/domalloc-test")]);
    let w = warnings(&se);
    assert_eq!(w.len(), 1, "{se}");
    assert!(
        w[0].starts_with(
            "domalloc: warning: ignoring DOMALLOC_TOPOLOGY_ROOT=/nonexistent/domalloc-test (no topology there"
        ),
        "{se}"
    );
    let nodes = |s: &str| s.lines().filter(|l| l.starts_with("domalloc: node ")).map(String::from).collect::<Vec<_>>();
    assert_eq!(nodes(&se), nodes(&real), "not the machine's topology:\n{se}");
    assert!(!se.contains("1.0 B of memory") && !se.contains(" 1 B of memory"), "{se}");
    assert!(
        option_line(&se, "DOMALLOC_TOPOLOGY_ROOT")
            .unwrap_or("")
            .starts_with("domalloc: option DOMALLOC_TOPOLOGY_ROOT=/sys (default; "),
        "{se}"
    );
}

/// Unknown `%` sequences of `DOMALLOC_STATS_FILE`: one warning saying what is written, and the
/// report written there (9545c7b wrote them without a word).
#[test]
fn stats_file_unknown_percent_warns() {
    if let Ok(c) = std::env::var("DOMALLOC_TEST_CHILD") {
        if c == "every_option_every_form" {
            child("every_option_every_form");
        }
        return;
    }
    let dir = std::env::temp_dir().join(format!("domalloc-pct-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = format!("{}/s-%q-%p.txt", dir.display());
    let se = verbose_child(&[("DOMALLOC_STATS_FILE", &path), ("DOMALLOC_VERBOSE", "0")]);
    let w = warnings(&se);
    assert_eq!(w.len(), 1, "{se}");
    assert!(w[0].contains("unknown sequence %q") && w[0].contains("is written as it is: \"%q\""), "{se}");
    let files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(files.len() == 1 && files[0].starts_with("s-%q-") && !files[0].contains("%p"), "{files:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `DOMALLOC_VERBOSE=1` writes CPU lists as the kernel does (`0-3`), not Rust's `0..3`.
#[test]
fn verbose_cpu_lists_in_kernel_syntax() {
    if let Ok(c) = std::env::var("DOMALLOC_TEST_CHILD") {
        if c == "every_option_every_form" {
            child("every_option_every_form");
        }
        return;
    }
    let se = verbose_child(&[]);
    let line = se.lines().find(|l| l.starts_with("domalloc: node ")).unwrap_or("");
    assert!(!line.contains(".."), "{line}");
    let list = line.rsplit_once('(').map(|(_, r)| r.trim_end_matches(')')).unwrap_or("");
    assert!(!list.is_empty() && list.chars().all(|c| c.is_ascii_digit() || c == '-' || c == ','), "{line}");
}
