//! The instruction report (`bench --icount`) on one small workload under valgrind, for
//! domalloc and glibc: the preload serves malloc under valgrind, the parsed counts are
//! positive, and the pairs callgrind counted are the mallocs the workload made.
//!
//! Needs valgrind (scripts/test.sh installs it; without it the test says it is skipped) and
//! builds libdomalloc.so as scripts/bench.sh does (`cargo build --release -p domalloc-ffi`, a
//! no-op when it is up to date).

use std::path::{Path, PathBuf};
use std::process::Command;

use domalloc_bench_suite::runner::allocators::{self, Allocator};
use domalloc_bench_suite::runner::callgrind_file::Profile;
use domalloc_bench_suite::runner::icount::{self, Row};

fn workloads() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_workloads"))
}

/// `cargo build --release -p domalloc-ffi` into the target directory of this test's binaries.
fn build_domalloc() -> PathBuf {
    let exe = workloads();
    let target = exe.parent().and_then(Path::parent).expect("<target>/<profile>/workloads");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(["build", "--release", "-p", "domalloc-ffi", "--target-dir"])
        .arg(target)
        .current_dir(&repo)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build --release -p domalloc-ffi failed");
    let lib = target.join("release/libdomalloc.so");
    assert!(lib.is_file(), "{} missing after the build", lib.display());
    lib
}

/// glibc-simple at `scale` (1 thread; its loop makes a fixed number of mallocs, each freed).
fn run(a: &Allocator, scale: f64, dir: &Path) -> (Row, Profile, u64) {
    let file = dir.join(format!("{}.{scale}.callgrind", a.name));
    let row = icount::run_one(&workloads(), "glibc-simple", a, scale, 1, &file, 300.0);
    let p = row.profile.clone().unwrap_or_else(|e| panic!("{} at scale {scale}: {e}", a.name));
    let mallocs = row.workload_ops.expect("ops= on the RESULT line") / 2;
    (row, p, mallocs)
}

#[test]
fn callgrind_counts_the_pairs_the_workload_made() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("skipped: valgrind is not installed (scripts/test.sh installs it)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("domalloc-icount-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut domalloc = Allocator {
        name: "domalloc".into(),
        path: Some(build_domalloc()),
        what: String::new(),
        version: String::new(),
        env: Vec::new(),
    };
    allocators::probe_under(&icount::probe_wrapper(), &workloads(), &mut domalloc)
        .expect("domalloc serves malloc under valgrind");
    let glibc =
        Allocator { name: "glibc".into(), path: None, what: String::new(), version: String::new(), env: Vec::new() };

    let mut pairs = Vec::new();
    let mut calls = Vec::new();
    for a in [&glibc, &domalloc] {
        // glibc-simple's base count is max(500000 * scale, 1600): 1600 and 3200 here.
        let (row, small, m_small) = run(a, 0.0032, &dir);
        let (_, big, m_big) = run(a, 0.0064, &dir);
        assert!(row.section, "{}: no dump of the workload section (client requests)", a.name);
        for p in [&small, &big] {
            assert!(p.alloc.ir > 0 && p.total.ir > p.alloc.ir && p.total.d1 > 0 && p.total.ll > 0, "{}: {p:?}", a.name);
            assert_eq!(p.foreign, 0, "{}: malloc calls that went elsewhere: {p:?}", a.name);
            // Every block is freed (the few extra frees are of blocks made before the workload).
            assert!(p.allocs().abs_diff(p.frees()) < 100, "{}: {p:?}", a.name);
        }
        // The library's own count (preloaded allocators only) includes the malloc+free calls.
        match (&a.path, small.lib) {
            (Some(_), Some(lib)) => assert!(lib.ir >= small.alloc.ir, "{small:?}"),
            (None, None) => {}
            (_, lib) => panic!("{}: library count {lib:?}", a.name),
        }
        // Counted, not assumed: the pairs grow by exactly the mallocs the workload added (the
        // rest, a few dozen, are the thread the workload starts and its buffers).
        assert_eq!(m_big, 2 * m_small, "{}", a.name);
        assert_eq!(big.pairs() - small.pairs(), (m_big - m_small) as f64, "{}: {small:?} {big:?}", a.name);
        assert!(
            small.pairs() >= m_small as f64 && small.pairs() < m_small as f64 + 200.0,
            "{}: {} vs {m_small}",
            a.name,
            small.pairs()
        );
        pairs.push(small.pairs());
        calls.push(small.calls.clone());
    }
    // The same program makes the same calls whichever allocator serves them (give or take the
    // few that libc makes at thread exit, which differ with the allocator).
    assert!((pairs[0] - pairs[1]).abs() <= 10.0, "{calls:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
