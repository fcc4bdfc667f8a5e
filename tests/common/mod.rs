//! Shared by the child-process tests (`misuse.rs`, `quarantine.rs`, `security.rs`, `drop_in.rs`,
//! ...): a case runs in a child process (this test binary started again with `<env_var>=<case>`),
//! watched by a watchdog that kills it if it hangs, and the parent checks how it ended. Also the
//! RSS probe and the fake two-node sysfs tree several tests use.

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

/// How long a child may run before the watchdog kills it: a hang is a failure, never a pass
/// and never a skip. Generous (the cases take milliseconds); it bounds the time a hang costs.
pub const CHILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// What a child process did.
pub struct ChildRun {
    /// Its exit status (after the watchdog's SIGKILL, if it hung).
    pub status: std::process::ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Whether the watchdog killed it (it ran past the timeout).
    pub hung: bool,
}

impl ChildRun {
    /// A description of the run for assertion messages.
    pub fn context(&self, name: &str) -> String {
        format!(
            "case {name}: status {:?}{}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            if self.hung { " (HUNG: killed by the watchdog)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

/// Runs this test binary again as a child for the test `name`, with `env_var=name` and the
/// extra environment `env`, without core files, in a process group of its own; kills the group
/// (SIGKILL: the child and anything it forked) if the child runs longer than `timeout`. stdout
/// and stderr are collected.
pub fn run_child(env_var: &str, name: &str, env: &[(&str, &str)], timeout: std::time::Duration) -> ChildRun {
    use std::io::Read;
    use std::process::Stdio;
    // SAFETY: the pre_exec closure only calls setrlimit and setpgid, which are
    // async-signal-safe.
    let mut child = unsafe {
        Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(env_var, name)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .pre_exec(|| {
                // No core files for the expected crashes.
                let r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::setrlimit(libc::RLIMIT_CORE, &r);
                // Its own process group: the watchdog kills what it forked too.
                libc::setpgid(0, 0);
                Ok(())
            })
            .spawn()
            .unwrap()
    };
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = std::time::Instant::now();
    let mut hung = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > timeout {
            hung = true;
            // SAFETY: a plain syscall; the group is the child's own (setpgid above).
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Anything the child forked and left running holds the pipes open: end the group.
    // SAFETY: as above.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    ChildRun { status, stdout, stderr, hung }
}

/// In the parent: runs the test `name` again in a child with `env_var=name` and the extra
/// environment `env`, and asserts it died as `death` says (a child that hangs is killed after
/// [`CHILD_TIMEOUT`] and fails). In the child (the case named by `env_var`): runs `body`, and
/// prints a marker if it returns (the misuse went undetected).
pub fn case(env_var: &str, name: &str, env: &[(&str, &str)], death: Death<'_>, body: fn()) {
    if let Ok(c) = std::env::var(env_var) {
        if c == name {
            body();
            println!("MISUSE-NOT-DETECTED");
        }
        return;
    }
    let run = run_child(env_var, name, env, CHILD_TIMEOUT);
    let ctx = run.context(name);
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert!(!run.hung, "the child hung (watchdog: killed after {:?}): {ctx}", CHILD_TIMEOUT);
    assert!(!stdout.contains("MISUSE-NOT-DETECTED"), "misuse not detected: {ctx}");
    match death {
        Death::Segv => {
            assert_eq!(run.status.signal(), Some(libc::SIGSEGV), "expected SIGSEGV: {ctx}");
        }
        Death::Abort(what) => {
            assert_eq!(run.status.signal(), Some(libc::SIGABRT), "expected SIGABRT: {ctx}");
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

/// RSS in bytes from /proc/self/statm, without allocating.
pub fn rss_now() -> u64 {
    let mut buf = [0u8; 128];
    // SAFETY: plain syscalls on a stack buffer.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY);
        assert!(fd >= 0);
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    assert!(n > 0);
    let s = std::str::from_utf8(&buf[..n as usize]).unwrap();
    let pages: u64 = s.split(' ').nth(1).unwrap().trim().parse().unwrap();
    pages * 4096
}

/// A fake two-node sysfs tree (CPU 0 = node 0, CPU 1 = node 1, 1 GiB each) for
/// `DOMALLOC_TOPOLOGY_ROOT`, in a directory of its own named after `tag` (tests run in parallel:
/// each scenario needs its own tree). The caller removes it.
pub fn fake_two_nodes(tag: &str) -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("domalloc-fake-2n-{}-{tag}", std::process::id()));
    let n = root.join("devices/system/node");
    std::fs::create_dir_all(root.join("devices/system/cpu")).unwrap();
    std::fs::write(root.join("devices/system/cpu/possible"), "0-1\n").unwrap();
    for (id, dist) in [(0, "10 20"), (1, "20 10")] {
        let d = n.join(format!("node{id}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cpulist"), format!("{id}\n")).unwrap();
        std::fs::write(d.join("distance"), format!("{dist}\n")).unwrap();
        std::fs::write(d.join("meminfo"), format!("Node {id} MemTotal: 1048576 kB\n")).unwrap();
    }
    for f in ["possible", "online", "has_memory"] {
        std::fs::write(n.join(f), "0-1\n").unwrap();
    }
    root
}
