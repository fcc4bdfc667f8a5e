//! Memory tiers in a guest whose kernel knows them from ACPI HMAT (issue 23): a C program
//! written against memkind's hbwmalloc(3) alone (`numa-tests/c/hbw_patterns.c`, `<hbwmalloc.h>`,
//! no domalloc header), linked with `-ldomalloc`, runs in `scripts/qemu/run-guest.sh --topology
//! hmat2s` (two sockets, each a DDR node with CPUs and a CPU-less HBM-like node beside it) and
//! asks the kernel where every page went.
//!
//! - `hbw_two_sockets`: hbw_malloc / hbw_calloc / hbw_posix_memalign from both sockets at 16 B
//!   .. 256 MiB, hbw_realloc growth, hbw_verify_memory_region, frees from the other socket,
//!   PREFERRED past the HBM node (spills to the local DDR node), BIND exhausting it (NULL,
//!   ENOMEM); and, with plain `malloc` under `DOMALLOC_POLICY=hbw:32M<1M` (the tier policy for
//!   unmodified programs), small blocks on the socket's HBM node until the per-process budget is
//!   spent and on its own DDR node after it, big blocks local, the spills in the statistics:
//!   every check at least 99% of the pages on the expected node(s).
//! - `hbw_with_far_cxl_node`: `hmat2s-cxl` (a far CPU-less CXL-like node besides): still each
//!   socket's HBM node (sizes up to 16 MiB).
//! - `hbw_wrong_nodes_fail`: `MEMKIND_HBW_NODES=3` (socket 0 is told to use socket 1's HBM):
//!   socket 0's checks must fail, or they prove nothing.
//!
//! Environment as for `tests/preload.rs` (`DOMALLOC_QEMU_TESTS=0`, `DOMALLOC_SO`,
//! `DOMALLOC_QEMU_TIMEOUT`). Logs: `numa-tests/work/test-hbw-<topology>.log`.

#![cfg(target_os = "linux")]

use domalloc_numa_tests::qemu::{libdomalloc, repo, skipped, workdir, Boot};
use domalloc_numa_tests::{GuestReport, Verdict};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// A folder holding libdomalloc.so and its SONAME link, to link the C program against.
fn libdir() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let so = libdomalloc();
        let dir = workdir().join("hbwlib");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::copy(&so, dir.join("libdomalloc.so")).map_err(|e| format!("{}: {e}", so.display()))?;
        let soname = dir.join("libdomalloc.so.0");
        let _ = std::fs::remove_file(&soname);
        std::os::unix::fs::symlink("libdomalloc.so", &soname).map_err(|e| e.to_string())?;
        Ok(dir)
    })
    .clone()
    .unwrap_or_else(|e| panic!("cannot get libdomalloc.so: {e}"))
}

/// The C program, built with gcc against `include/hbwmalloc.h` and linked with `-ldomalloc`.
fn program() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let lib = libdir();
        let bin = workdir().join("hbw_patterns-test");
        let out = Command::new(std::env::var_os("CC").unwrap_or_else(|| "gcc".into()))
            .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", "-I"])
            .arg(repo().join("include"))
            .arg("-o")
            .arg(&bin)
            .arg(repo().join("numa-tests/c/hbw_patterns.c"))
            .arg("-L")
            .arg(&lib)
            .arg("-ldomalloc")
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .output()
            .map_err(|e| format!("running gcc (install gcc): {e}"))?;
        if out.status.success() {
            Ok(bin)
        } else {
            Err(format!("gcc failed:\n{}", String::from_utf8_lossy(&out.stderr)))
        }
    })
    .clone()
    .unwrap_or_else(|e| panic!("cannot build the hbwmalloc program: {e}"))
}

fn boot(topology: &str, tag: &str, envs: &[&str], args: &[&str]) -> (GuestReport, String) {
    let log = workdir().join(format!("test-hbw-{topology}-{tag}.log"));
    let env = envs.iter().map(|e| e.to_string()).collect();
    let boot = Boot { binary: Some(program()), thp: Some("never".into()), env, log: Some(log), ..Boot::new(topology) };
    let (report, console) = boot.args(args).expect(&format!("hbwmalloc program, {topology} {tag}"), 300);
    (report, console.text)
}

fn phases(report: &GuestReport, phase: &str, pair: &str) -> usize {
    report.results.iter().filter(|r| r.get("phase") == phase && r.get("pair") == pair).count()
}

#[test]
fn hbw_two_sockets() {
    if skipped() {
        return;
    }
    let (r, console) =
        boot("hmat2s", "domalloc", &[], &["--hbm", "0=2,1=3", "sizes", "remote", "preferred", "bind", "tier"]);
    r.assert_passed("hmat2s");
    for pair in ["0>2", "1>3"] {
        // 16 B .. 256 MiB by 4x: 13 sizes.
        assert_eq!(phases(&r, "hbw_malloc", pair), 13, "{pair}");
        assert_eq!(phases(&r, "hbw_calloc", pair), 13, "{pair}");
        assert_eq!(phases(&r, "hbw_posix_memalign4k", pair), 12, "{pair}");
        assert_eq!(phases(&r, "hbw_realloc", pair), 1, "{pair}");
        assert_eq!(phases(&r, "hbw_verify_memory_region", pair), 1, "{pair}");
        assert_eq!(phases(&r, "preferred-overflow", pair), 1, "{pair}");
    }
    for (phase, pair) in [
        ("remote-a-alloc", "0>2"),
        ("remote-b-after-free", "1>3"),
        ("remote-a-again", "0>2"),
        ("bind-exhaust", "1>3"),
        ("tier-small-a", "0>2"),
        ("tier-small-b-budget", "1>3"),
        ("tier-big-a-local", "0>0"),
    ] {
        assert_eq!(phases(&r, phase, pair), 1, "{phase}");
    }
    // The statistics of the tier-policy process: the budget placed, the rest spilled.
    let tiers = console
        .lines()
        .find(|l| l.contains("domalloc: tiers:"))
        .unwrap_or_else(|| panic!("no tiers line in the statistics"));
    assert!(tiers.contains("placed on high-bandwidth nodes 32.0 MiB") && !tiers.contains(" 0 spills"), "{tiers}");
    assert!(r.results.iter().all(|x| x.verdict == Verdict::Pass));
}

#[test]
fn hbw_with_far_cxl_node() {
    if skipped() {
        return;
    }
    let (r, _) = boot("hmat2s-cxl", "domalloc", &[], &["--hbm", "0=2,1=3", "--max", "16M", "sizes"]);
    r.assert_passed("hmat2s-cxl");
    assert_eq!(
        phases(&r, "hbw_malloc", "0>2") + phases(&r, "hbw_malloc", "1>3"),
        22,
        "16 B .. 16 MiB by 4x: 11 sizes per socket"
    );
}

#[test]
fn hbw_wrong_nodes_fail() {
    if skipped() {
        return;
    }
    let (r, _) =
        boot("hmat2s", "memkind-hbw-nodes-3", &["MEMKIND_HBW_NODES=3"], &["--hbm", "0=2,1=3", "--max", "64K", "sizes"]);
    assert!(r.crashes.is_empty(), "{:?}", r.crashes);
    let socket0 = r.results.iter().filter(|x| x.get("pair") == "0>2" && x.get("phase") == "hbw_malloc");
    assert!(
        socket0.clone().count() > 0 && socket0.clone().all(|x| x.verdict == Verdict::Fail),
        "socket 0 told to use node 3 must fail:\n{}",
        r.render()
    );
    assert!(r.results.iter().filter(|x| x.get("pair") == "1>3").all(|x| x.verdict == Verdict::Pass));
}
