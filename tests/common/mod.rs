//! Shared by the misuse tests (`misuse.rs`, `checked.rs`): a misuse case runs in a child process
//! (this test binary started again with `<env_var>=<case>`) and the parent checks how it died.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

/// Prints the address the error must name (the parent reads it from stdout).
pub fn expect_addr(p: *const u8) {
    println!("MISUSE-ADDRESS {:p}", p);
}

/// How a misuse case must end.
pub enum Death<'a> {
    /// SIGABRT and exactly one `domalloc: error:` line holding the printed address and these
    /// words.
    Abort(&'a [&'a str]),
    /// SIGSEGV (a guard page or an unmapped freed block).
    Segv,
}

/// In the parent: runs the test `name` again in a child with `env_var=name` and the extra
/// environment `env`, and asserts it died as `death` says. In the child (the case named by
/// `env_var`): runs `body`, and prints a marker if it returns (the misuse went undetected).
pub fn case(env_var: &str, name: &str, env: &[(&str, &str)], death: Death<'_>, body: fn()) {
    if let Ok(c) = std::env::var(env_var) {
        if c == name {
            body();
            println!("MISUSE-NOT-DETECTED");
        }
        return;
    }
    // SAFETY: the pre_exec closure only calls setrlimit, which is async-signal-safe.
    let out = unsafe {
        Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(env_var, name)
            .envs(env.iter().copied())
            .pre_exec(|| {
                // No core files for the expected crashes.
                let r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::setrlimit(libc::RLIMIT_CORE, &r);
                Ok(())
            })
            .output()
            .unwrap()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx = format!("case {name}: status {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
    assert!(!stdout.contains("MISUSE-NOT-DETECTED"), "misuse not detected: {ctx}");
    match death {
        Death::Segv => {
            assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "expected SIGSEGV: {ctx}");
        }
        Death::Abort(what) => {
            assert_eq!(out.status.signal(), Some(libc::SIGABRT), "expected SIGABRT: {ctx}");
            let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("domalloc: error:")).collect();
            assert_eq!(errors.len(), 1, "expected exactly one error line: {ctx}");
            let line = errors[0];
            let addr = stdout
                .lines()
                .find_map(|l| l.split_once("MISUSE-ADDRESS ").map(|(_, a)| a.trim()))
                .unwrap_or_else(|| panic!("child printed no address: {ctx}"));
            assert!(line.contains(addr), "error line does not name {addr}: {ctx}");
            for w in what {
                assert!(line.contains(w), "error line does not say {w:?}: {ctx}");
            }
        }
    }
}
