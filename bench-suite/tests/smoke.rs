//! Every workload runs at a tiny scale and passes its own checks (under the system malloc),
//! the probe finds libc, and the runner's `--list` works.

use std::process::Command;

fn workloads() -> Command {
    Command::new(env!("CARGO_BIN_EXE_workloads"))
}

#[test]
fn every_workload_passes_its_checks_at_tiny_scale() {
    let out = workloads().arg("list").output().unwrap();
    let names = String::from_utf8(out.stdout).unwrap();
    assert!(names.lines().count() >= 17, "{names}");
    for name in names.lines() {
        let out =
            workloads().args([name, "--scale", "0.002", "--threads", "2"]).env_remove("LD_PRELOAD").output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("RESULT "),
            "{name}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // Same seed, same work: the checksum does not depend on thread count or timing.
        let again = workloads()
            .args([name, "--scale", "0.002", "--threads", "2", "--no-pin"])
            .env_remove("LD_PRELOAD")
            .output()
            .unwrap();
        let field = |s: &str| s.split_whitespace().find(|kv| kv.starts_with("checksum=")).map(str::to_string);
        assert_eq!(field(&stdout), field(&String::from_utf8_lossy(&again.stdout)), "{name}");
    }
}

#[test]
fn every_workload_has_help() {
    let out = workloads().arg("list").output().unwrap();
    let names = String::from_utf8(out.stdout).unwrap();
    for new in ["barnes", "espresso", "glibc-simple", "glibc-thread", "alloc-test1", "alloc-testN", "test-stress"] {
        assert!(names.lines().any(|n| n == new), "{new} missing from {names}");
    }
    for name in names.lines() {
        let out = workloads().args([name, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("Stresses"), "{name}: {text}");
    }
    assert!(!workloads().arg("nope").output().unwrap().status.success());
    // A knob a workload does not take is an error, not silently ignored.
    assert!(!workloads().args(["larson", "--load", "3"]).output().unwrap().status.success());
}

/// xmalloc has xmalloc-testN's shape: --threads N = N producers + N consumers, 64-byte objects
/// by default, and xmalloc-test's mixed sizes with --object-size -1.
#[test]
fn xmalloc_shape() {
    let run = |extra: &[&str]| {
        let out = workloads()
            .args(["xmalloc", "--scale", "0.002", "--threads", "3", "--no-pin"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let s = run(&[]);
    assert!(s.contains("producers=3 consumers=3") && s.contains("object_size=64"), "{s}");
    assert!(run(&["--object-size", "-1"]).contains("object_size=mixed"));
}

/// test-stress takes its load and iterations; the checksum (words allocated) follows them.
#[test]
fn test_stress_knobs() {
    let sum = |load: &str| {
        let out = workloads()
            .args(["test-stress", "--threads", "4", "--load", load, "--iterations", "2", "--no-pin"])
            .output()
            .unwrap();
        let s = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success() && s.contains(&format!("load={load} iterations=2")), "{s}");
        s.split_whitespace().find(|kv| kv.starts_with("checksum=")).unwrap().to_string()
    };
    assert_ne!(sum("1"), sum("2"));
}

#[test]
fn probe_reports_libc_without_preload() {
    let out = workloads().arg("probe").env_remove("LD_PRELOAD").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && s.contains("malloc_from=") && s.contains("libc.so"), "{s}");
}

#[test]
fn runner_lists_without_running() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench")).arg("--list").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && s.contains("glibc") && s.contains("larson"), "{s}");
}
