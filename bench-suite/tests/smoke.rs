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
    assert!(names.lines().count() >= 10, "{names}");
    for name in names.lines() {
        let out = workloads()
            .args([name, "--scale", "0.002", "--threads", "2"])
            .env_remove("LD_PRELOAD")
            .output()
            .unwrap();
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
    for name in ["larson", "xmalloc", "cache-scratch", "cache-thrash", "rptest", "mstress", "cfrac", "sh6bench", "large", "mleak"] {
        let out = workloads().args([name, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("Stresses"), "{name}: {text}");
    }
    assert!(!workloads().arg("nope").output().unwrap().status.success());
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
