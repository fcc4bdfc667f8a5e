//! The host side of the QEMU guests, in one place: building the guest programs and
//! `libdomalloc.so`, booting `scripts/qemu/run-guest.sh` and reading its exit status. The tests
//! of this crate and the comparison suite's guest parts (`bench --numa`, `bench --guest`) boot
//! their guests through [`Boot`].
//!
//! `run-guest.sh` exits 0 when every check passed, 1 when one failed or a run crashed, 2 when the
//! guest did not finish (boot failure, kernel panic, timeout), 3 when a tool is missing and 4 when
//! a build failed; [`Status`] names each.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::GuestReport;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// `numa-tests/work/` (git-ignored), created on first use: guest binaries and console logs.
pub fn workdir() -> PathBuf {
    let w = repo().join("numa-tests/work");
    std::fs::create_dir_all(&w).expect("create numa-tests/work");
    w
}

/// One guest at a time (TCG on a small host is slow when guests overlap).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `DOMALLOC_QEMU_TESTS=0` asks to skip the QEMU tests (says so on stderr).
pub fn skipped() -> bool {
    if std::env::var("DOMALLOC_QEMU_TESTS").map(|v| v == "0").unwrap_or(false) {
        eprintln!("DOMALLOC_QEMU_TESTS=0: QEMU NUMA tests skipped");
        return true;
    }
    false
}

/// `$CARGO_TARGET_DIR`, else `target/` of the repository.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"))
}

/// `cargo build --release ARGS` in the repository into `target_dir`, with `rustflags` as
/// `RUSTFLAGS` and without the variables an outer `cargo test` sets for its own build.
pub fn cargo_build(args: &[&str], target_dir: &Path, rustflags: Option<&str>) -> Result<(), String> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo())
        .args(["build", "--release"])
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_MAKEFLAGS");
    if let Some(flags) = rustflags {
        cmd.env("RUSTFLAGS", flags);
    }
    let t = Instant::now();
    let out = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo build {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
    eprintln!("cargo build {}: {:.0}s", args.join(" "), t.elapsed().as_secs_f64());
    Ok(())
}

/// `$var` when there is one and it is set (it must name a file), else what `build` makes; once
/// per process.
fn cached(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    var: Option<&str>,
    build: impl FnOnce() -> Result<PathBuf, String>,
) -> PathBuf {
    cell.get_or_init(|| match var.and_then(std::env::var_os) {
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!("{}={} is not a file", var.unwrap_or_default(), p.display()))
            }
        }
        None => build(),
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `libdomalloc.so`: `$DOMALLOC_SO`, else a release build of domalloc-ffi.
pub fn libdomalloc() -> PathBuf {
    static SO: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&SO, Some("DOMALLOC_SO"), || {
        cargo_build(&["-p", "domalloc-ffi"], &target_dir(), None)?;
        let so = target_dir().join("release/libdomalloc.so");
        if so.is_file() {
            Ok(so)
        } else {
            Err(format!("{} missing after the build", so.display()))
        }
    })
}

/// The builds of the guest program `numa-guest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// Static, domalloc as the global allocator (`$DOMALLOC_NUMA_GUEST`).
    Domalloc,
    /// Static, glibc malloc (`--features system`): the negative control
    /// (`$DOMALLOC_NUMA_GUEST_SYSTEM`).
    System,
    /// Dynamic, glibc malloc (`--features system`): `LD_PRELOAD` replaces malloc, calloc,
    /// realloc, posix_memalign, aligned_alloc, memalign and free under it: the C path.
    Dynamic,
}

impl Guest {
    /// The binary, built once per process (or taken from the environment variable above, where
    /// there is one).
    pub fn binary(self) -> PathBuf {
        static CELLS: [OnceLock<Result<PathBuf, String>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let (var, name) = match self {
            Guest::Domalloc => (Some("DOMALLOC_NUMA_GUEST"), "numa-guest-domalloc"),
            Guest::System => (Some("DOMALLOC_NUMA_GUEST_SYSTEM"), "numa-guest-system"),
            Guest::Dynamic => (None, "numa-guest-dynamic-system"),
        };
        cached(&CELLS[self as usize], var, || {
            // The static builds share target/x86_64-unknown-linux-gnu/release/numa-guest: one
            // build and copy at a time. The dynamic one has a target directory of its own (its
            // RUSTFLAGS differ).
            static BUILD: Mutex<()> = Mutex::new(());
            let _one_build = BUILD.lock().unwrap_or_else(|e| e.into_inner());
            let mut args = vec!["-p", "domalloc-numa-tests", "--bin", "numa-guest"];
            if self != Guest::Domalloc {
                args.extend(["--features", "system"]);
            }
            let built = if self == Guest::Dynamic {
                let dir = target_dir().join("dynamic-guest");
                cargo_build(&args, &dir, None)?;
                dir.join("release/numa-guest")
            } else {
                args.extend(["--target", "x86_64-unknown-linux-gnu"]);
                cargo_build(&args, &target_dir(), Some("-C target-feature=+crt-static"))?;
                target_dir().join("x86_64-unknown-linux-gnu/release/numa-guest")
            };
            let dest = workdir().join(name);
            std::fs::copy(&built, &dest).map_err(|e| format!("copy {}: {e}", built.display()))?;
            Ok(dest)
        })
    }
}

/// How a boot ended (`run-guest.sh`'s exit status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// 0: the program ran and exited 0 (every check passed).
    Passed,
    /// 1: the program ran and exited non-zero (a check failed or a run crashed).
    Failed,
    /// 2: the guest did not finish (boot failure, kernel panic, timeout).
    DidNotFinish,
    /// 3 (a tool is missing) or 4 (a build failed): the script's last words.
    Unavailable(String),
    /// Any other status, or none (killed by a signal).
    Other(Option<i32>),
}

/// One boot of `scripts/qemu/run-guest.sh`.
#[derive(Clone, Debug, Default)]
pub struct Boot {
    /// `--topology`.
    pub topology: String,
    /// `--binary`, or none: `--alloc domalloc` (the script builds the static guest).
    pub binary: Option<PathBuf>,
    /// `--c-program`: the script builds the C path's guest (dynamic, glibc malloc) and passes
    /// its defaults (one thread per node, THP off in patterns 5 and 9) before `args`.
    pub c_program: bool,
    /// `--preload`: a library in `LD_PRELOAD` (a dynamic program only).
    pub preload: Option<PathBuf>,
    /// `--thp`: the guest kernel's transparent huge page mode.
    pub thp: Option<String>,
    /// `--env K=V` for the guest program.
    pub env: Vec<String>,
    /// `--file`: files the program uses, copied into the guest at the same paths with the
    /// shared libraries they need.
    pub files: Vec<PathBuf>,
    /// `--timeout` in seconds (none: the script's default).
    pub timeout_s: Option<String>,
    /// `--workdir` (none: `numa-tests/work`).
    pub workdir: Option<PathBuf>,
    /// `--log`: the console log.
    pub log: Option<PathBuf>,
    /// The program's arguments (after `--`).
    pub args: Vec<String>,
}

/// What a boot printed, and how it ended.
#[derive(Clone, Debug)]
pub struct Console {
    /// The guest's console (the program's output among the kernel's).
    pub text: String,
    /// The script's own messages.
    pub stderr: String,
    /// How it ended.
    pub status: Status,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl Boot {
    /// A boot of `topology` with everything else the script's default.
    pub fn new(topology: &str) -> Boot {
        Boot { topology: topology.to_string(), ..Boot::default() }
    }

    /// The program's arguments.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Boot {
        self.args.extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// The command line.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(repo().join("scripts/qemu/run-guest.sh"));
        cmd.arg("--topology").arg(&self.topology).env_remove("LD_PRELOAD");
        if self.c_program {
            cmd.arg("--c-program");
        }
        let paths = [
            ("--binary", &self.binary),
            ("--preload", &self.preload),
            ("--workdir", &self.workdir),
            ("--log", &self.log),
        ];
        for (flag, path) in paths {
            if let Some(p) = path {
                cmd.arg(flag).arg(p);
            }
        }
        for (flag, value) in [("--thp", &self.thp), ("--timeout", &self.timeout_s)] {
            if let Some(v) = value {
                cmd.arg(flag).arg(v);
            }
        }
        for e in &self.env {
            cmd.arg("--env").arg(e);
        }
        for f in &self.files {
            cmd.arg("--file").arg(f);
        }
        cmd.arg("--").args(&self.args);
        cmd
    }

    /// Boots the guest and waits for it.
    pub fn run(&self) -> Result<Console, String> {
        let t = Instant::now();
        let out = self.command().output().map_err(|e| format!("cannot run scripts/qemu/run-guest.sh: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let status = match out.status.code() {
            Some(0) => Status::Passed,
            Some(1) => Status::Failed,
            Some(2) => Status::DidNotFinish,
            Some(3 | 4) => Status::Unavailable(last_words(&stderr).to_string()),
            other => Status::Other(other),
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(Console { text, stderr, status, seconds: t.elapsed().as_secs_f64() })
    }

    /// Boots the guest, one at a time in this process, and parses the console of a guest that
    /// finished; anything else is an error that says why (with the console's last lines).
    pub fn report(&self) -> Result<(GuestReport, Console), String> {
        let _one_at_a_time = serial();
        let c = self.run()?;
        let log = self.log.as_deref().map_or("-".into(), |l| l.display().to_string());
        match &c.status {
            Status::Passed | Status::Failed => Ok((GuestReport::parse(&c.text), c)),
            Status::DidNotFinish => Err(format!(
                "{}: the guest did not finish (boot failure, panic or timeout); log {log}\n{}\n--- console tail ---\n{}",
                self.topology,
                c.stderr,
                tail(&c.text, 40)
            )),
            other => Err(format!("{}: run-guest.sh failed ({other:?}); log {log}\n{}", self.topology, c.stderr)),
        }
    }
}

impl Boot {
    /// For the tests: [`Boot::report`] with the timeout `$DOMALLOC_QEMU_TIMEOUT` (else
    /// `timeout` seconds); prints `== WHAT: seconds, log` and the report; panics with the
    /// reason when the guest did not finish.
    pub fn expect(mut self, what: &str, timeout: u64) -> (GuestReport, Console) {
        self.timeout_s = Some(std::env::var("DOMALLOC_QEMU_TIMEOUT").unwrap_or_else(|_| timeout.to_string()));
        let log = self.log.as_deref().map_or("-".into(), |l| l.display().to_string());
        let (report, console) = self.report().unwrap_or_else(|e| panic!("{what}: {e}"));
        eprintln!("== {what}: {:.0}s, log {log}\n{}", console.seconds, report.render());
        (report, console)
    }
}

impl Console {
    /// The script's last line of its own (`run-guest: ...`): why it stopped, when it did.
    pub fn last_words(&self) -> &str {
        last_words(&self.stderr)
    }
}

fn last_words(stderr: &str) -> &str {
    stderr.lines().rev().find(|l| l.starts_with("run-guest")).unwrap_or("")
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let boot = Boot {
            c_program: true,
            preload: Some("/l/libx.so".into()),
            thp: Some("never".into()),
            env: vec!["A=1".into()],
            timeout_s: Some("30".into()),
            log: Some("/w/x.log".into()),
            ..Boot::new("4n-unequal")
        };
        let cmd = boot.args(&["--tpn", "1", "2"]).command();
        assert!(cmd.get_program().to_string_lossy().ends_with("scripts/qemu/run-guest.sh"));
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args.join(" "),
            "--topology 4n-unequal --c-program --preload /l/libx.so --log /w/x.log --thp never --timeout 30 \
             --env A=1 -- --tpn 1 2"
        );
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
    }
}
