//! The C path in the multi-node QEMU guest: the guest program `numa-guest` built with glibc
//! malloc as its global allocator (`--features system`) and linked dynamically, so that std's
//! System allocator calls `malloc`, `calloc`, `posix_memalign` (alignment 4 KiB), `realloc` and
//! `free` (and pattern 9 `aligned_alloc` and `memalign` itself): under
//! `LD_PRELOAD=libdomalloc.so` (copied into the initramfs with every library it needs by
//! `scripts/qemu/run-guest.sh --preload`) each of those is domalloc's C ABI. The same patterns
//! as the static guest, one implementation; `C_PATH` gives the C path's defaults (one thread per
//! node, THP off in patterns 5 and 9; `scripts/qemu/run-guest.sh --c-program` uses the same).
//!
//! - `c_preload_two_nodes_domalloc`: 2 nodes, every pattern (1-5 and 9) must pass.
//! - `c_preload_four_nodes_unequal_domalloc`: 4 nodes with unequal memory, the same.
//! - `c_negative_control_glibc_fails`: the same program without a preload (glibc malloc) must
//!   fail at least one pattern, or the checks prove nothing; pattern 9 (per-worker first touch)
//!   is measured there and printed beside domalloc's, not checked.
//! - `rust_guest_preload_sweep_domalloc`: pattern 10 (the sweep over every size class) the same
//!   way, on `2n` and `4n-unequal`.
//!
//! Environment: `DOMALLOC_QEMU_TESTS=0` skips; `DOMALLOC_SO` points at a prebuilt
//! libdomalloc.so (else `cargo build --release -p domalloc-ffi` here); `DOMALLOC_QEMU_TIMEOUT`
//! seconds per guest (default 300). Logs: `numa-tests/work/test-c-<topology>-<allocator>.log`.

#![cfg(target_os = "linux")]

use domalloc_numa_tests::qemu::{libdomalloc, skipped, workdir, Boot, Guest};
use domalloc_numa_tests::{GuestReport, Verdict, C_FIRST_TOUCH_APIS};
use std::path::Path;

/// The C path's defaults: one thread per node, THP off in patterns 5 and 9.
const C_PATH: [&str; 6] = ["--tpn", "1", "--thp5", "never", "--thp9", "never"];

/// Boots `topology` (with `transparent_hugepage=thp` when given) and runs the dynamic guest
/// with the C path's defaults under `preload` (`None`: glibc malloc).
fn boot(topology: &str, preload: Option<&Path>, thp: Option<&str>, args: &[&str]) -> GuestReport {
    let args: Vec<&str> = C_PATH.iter().chain(args).copied().collect();
    boot_program(&Guest::Dynamic.binary(), "c", topology, preload, thp, &args)
}

/// Boots `topology` and runs `binary` (named `what` in the log's name) under `preload`.
fn boot_program(
    binary: &Path,
    what: &str,
    topology: &str,
    preload: Option<&Path>,
    thp: Option<&str>,
    args: &[&str],
) -> GuestReport {
    let name = if preload.is_some() { "domalloc" } else { "glibc" };
    let boot = Boot {
        binary: Some(binary.to_path_buf()),
        preload: preload.map(Path::to_path_buf),
        thp: thp.map(str::to_string),
        log: Some(workdir().join(format!("test-{what}-{topology}-{name}.log"))),
        ..Boot::new(topology)
    };
    let (report, _) = boot.args(args).expect(&format!("{what} program, {topology} / {name}"), 300);
    eprintln!("{}", report.pattern_table());
    report
}

fn assert_malloc_from(report: &GuestReport, want: &str) {
    let line = report.info.iter().find(|l| l.starts_with("INFO allocator=")).map(String::as_str).unwrap_or("");
    assert!(line.contains(want), "malloc does not come from {want} in the guest: {line:?}");
}

/// Pattern 9 sizes of the C path: 16K and 64K with 8 buffers per worker, 256K and 768K with 4,
/// 1536K and 3M with 2 (fewer pages under TCG; the 64M block runs in the static guest); the
/// aligned APIs (posix_memalign, aligned_alloc, memalign) at 64K.
const P9_SIZES: &str = "16K,64K,256Kx4,768Kx4,1536Kx2,3Mx2";
/// On `4n-unequal` (four workers, one per vCPU) fewer of the bigger ones.
const P9_SIZES_4N: &str = "16K,64K,256Kx4,768Kx2,1536Kx1,3Mx1";

/// Asserts that pattern 9 checked every (phase, api, size) of `spec` (`--sizes9`) for a worker
/// on each of `nodes`.
fn assert_first_touch(topology: &str, report: &GuestReport, spec: &str, nodes: &[usize]) {
    let sizes: Vec<&str> = spec.split(',').map(|s| s.split('x').next().unwrap_or(s)).collect();
    let gaps = report.first_touch_gaps(1, &sizes, &C_FIRST_TOUCH_APIS, nodes);
    assert!(gaps.is_empty(), "{topology}: pattern 9 incomplete:\n{}\n{}", gaps.join("\n"), report.first_touch_table());
    assert!(
        report.info.iter().any(|l| l.starts_with("INFO pattern=9 recycle-faults")),
        "{topology}: no pattern 9 recycle-faults INFO line"
    );
}

fn assert_every_pattern_passes(topology: &str, report: &GuestReport) {
    let by = report.by_pattern();
    for p in [1, 2, 3, 4, 5, 9] {
        let st = by.get(&p).copied().unwrap_or_default();
        assert!(
            st.all_passed(),
            "{topology}: pattern {p} did not pass under LD_PRELOAD=libdomalloc.so\n{}",
            report.render()
        );
    }
    report.assert_passed(topology);
}

#[test]
fn c_preload_two_nodes_domalloc() {
    if skipped() {
        return;
    }
    let so = libdomalloc();
    let report = boot("2n", Some(&so), None, &["--sizes9", P9_SIZES, "1", "2", "3", "4", "5", "9"]);
    assert_malloc_from(&report, "libdomalloc.so");
    assert!(report.info.iter().any(|l| l.contains("cpu_nodes=0,1")), "{:?}", report.info);
    eprintln!("C program, 2n / domalloc:\n{}", report.first_touch_table());
    assert_every_pattern_passes("2n", &report);
    assert_first_touch("2n", &report, P9_SIZES, &[0, 1]);
}

#[test]
fn c_preload_four_nodes_unequal_domalloc() {
    if skipped() {
        return;
    }
    let so = libdomalloc();
    // Fewer stream rounds and no 64 MiB array: the smallest node has 128 MiB.
    let report = boot(
        "4n-unequal",
        Some(&so),
        None,
        &["--rounds", "100", "--large", "2M,8M,32M", "--sizes9", P9_SIZES_4N, "1", "2", "3", "4", "5", "9"],
    );
    assert_malloc_from(&report, "libdomalloc.so");
    assert!(report.info.iter().any(|l| l.contains("cpu_nodes=0,1,2,3")), "{:?}", report.info);
    eprintln!("C program, 4n-unequal / domalloc:\n{}", report.first_touch_table());
    assert_every_pattern_passes("4n-unequal", &report);
    assert_first_touch("4n-unequal", &report, P9_SIZES_4N, &[0, 1, 2, 3]);
}

/// glibc malloc (no preload) must fail somewhere: it reuses what another node freed (pattern 2),
/// hands an exited thread's arena to the next new thread (pattern 4), keeps a migrated thread
/// on its arena (pattern 3) and serves a freed big block from its heap (pattern 5).
///
/// The guest boots with THP off: pattern 1 is the harness's own check (each thread touches what
/// it allocated), and with THP on, glibc's adjacent 4 MiB mmaps of two threads merge into one
/// VMA whose 2 MiB huge page across the seam goes to whichever thread touches it first, so
/// glibc's pattern 1 would hinge on timing.
#[test]
fn c_negative_control_glibc_fails() {
    if skipped() {
        return;
    }
    // Pattern 9 is measured (`9:info`) and printed for comparison, not checked.
    let report = boot("2n", None, Some("never"), &["--sizes9", P9_SIZES, "1", "2", "3", "4", "5", "9:info"]);
    assert!(report.summary.is_some(), "negative control did not finish:\n{}", report.render());
    assert!(report.crashes.is_empty(), "negative control crashed: {:?}", report.crashes);
    assert_malloc_from(&report, "libc.so");
    eprintln!("C program, 2n / glibc malloc (informational):\n{}", report.first_touch_table());
    assert!(
        report.results.iter().any(|r| r.pattern() == 9)
            && report
                .results
                .iter()
                .filter(|r| r.pattern() == 9)
                .all(|r| matches!(r.verdict, Verdict::Info | Verdict::Skip)),
        "pattern 9 of the glibc control must be measured and informational only"
    );
    let by = report.by_pattern();
    assert!(
        by.get(&1).is_some_and(|s| s.all_passed()),
        "pattern 1 failed with glibc: the harness is broken\n{}",
        report.render()
    );
    let failed: Vec<u32> = by.iter().filter(|(_, s)| !s.all_passed()).map(|(p, _)| *p).collect();
    eprintln!("glibc malloc (C program, no preload) fails patterns {failed:?}");
    assert!(!failed.is_empty(), "glibc malloc passed every pattern: the checks cannot fail\n{}", report.render());
}

/// Pattern 10 (issue 20, the sweep over every size class in one process) through the C
/// interface: the Rust guest linked dynamically with glibc malloc as its allocator, run under
/// `LD_PRELOAD=libdomalloc.so` on `2n` (1 and 2 workers per node) and `4n-unequal`; the
/// checks are those of `tests/guest.rs` (first touch and recycle of every phase whose size class
/// is new to the process). glibc (no preload) is measured beside it, not checked.
#[test]
fn rust_guest_preload_sweep_domalloc() {
    if skipped() {
        return;
    }
    let so = libdomalloc();
    let guest = Guest::Dynamic.binary();
    let checks = ["sweep-first-touch", "sweep-recycle"];
    for (topology, tpn, tpns, nodes) in
        [("2n", "1,2", &[1usize, 2][..], &[0usize, 1][..]), ("4n-unequal", "1", &[1][..], &[0, 1, 2, 3][..])]
    {
        let report = boot_program(&guest, "rust-dynamic", topology, Some(&so), None, &["--tpn", tpn, "10:thp=never"]);
        assert_malloc_from(&report, "libdomalloc.so");
        eprintln!("Rust guest under LD_PRELOAD, {topology} / domalloc:\n{}", report.sweep_table());
        for &t in tpns {
            let gaps = report.sweep_gaps(t, &checks, nodes);
            assert!(
                gaps.is_empty(),
                "{topology}: pattern 10 under LD_PRELOAD:\n{}\n{}",
                gaps.join("\n"),
                report.sweep_table()
            );
        }
        let s = report.summary.unwrap_or_else(|| panic!("{topology}: no SUMMARY line\n{}", report.render()));
        assert!(
            s.failed == 0 && s.crashed == 0 && report.crashes.is_empty(),
            "{topology}: {}\n{}",
            report.render(),
            report.sweep_table()
        );
    }
    let glibc = boot_program(&guest, "rust-dynamic", "2n", None, None, &["--tpn", "1", "10:thp=never:info"]);
    eprintln!("Rust guest, 2n / glibc malloc (informational):\n{}", glibc.sweep_table());
    assert!(glibc.results.iter().any(|r| r.pattern() == 10), "the glibc sweep produced no result\n{}", glibc.render());
}
