//! Running one child and measuring it with `wait4`: wall time, user and system CPU time and
//! peak RSS of exactly that process.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How a child ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Killed by the runner after the time limit.
    Timeout,
    /// Could not be started.
    Spawn(String),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit {c}"),
            Exit::Signal(s) => {
                // SAFETY: strsignal returns a static (or thread-local) NUL-terminated string.
                let name = unsafe { std::ffi::CStr::from_ptr(libc::strsignal(*s)) }.to_string_lossy().into_owned();
                write!(f, "signal {s} ({name})")
            }
            Exit::Timeout => write!(f, "timeout"),
            Exit::Spawn(e) => write!(f, "spawn failed: {e}"),
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// How it ended.
    pub exit: Exit,
    /// Wall-clock seconds from spawn to reap.
    pub wall: f64,
    /// User CPU seconds (all threads).
    pub user: f64,
    /// System CPU seconds (all threads).
    pub sys: f64,
    /// Peak resident set size, KiB.
    pub maxrss_kib: u64,
}

impl Measured {
    /// A run that did not start (`why`).
    pub fn failed(why: String) -> Measured {
        Measured { exit: Exit::Spawn(why), wall: 0.0, user: 0.0, sys: 0.0, maxrss_kib: 0 }
    }
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 * 1e-6
}

/// Spawns `cmd`, waits for it with `wait4` and returns its measurements; kills it (SIGKILL)
/// after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Measured {
    let start = Instant::now();
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Measured::failed(e.to_string());
        }
    };
    let pid = child.id() as libc::pid_t;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let timed_out = Arc::new(AtomicBool::new(false));
    let flag = timed_out.clone();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
            flag.store(true, Ordering::SeqCst);
            // SAFETY: the child has not been reaped yet (the main thread signals `done` right
            // after wait4 returns), so pid still names it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        let e = std::io::Error::last_os_error();
        drop(done_tx);
        let _ = watchdog.join();
        return Measured::failed(format!("wait4: {e}"));
    }
    let wall = start.elapsed().as_secs_f64();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    // The child is reaped; std's handle must not try again (dropping a Child does not wait).
    drop(child);
    let exit = if timed_out.load(Ordering::SeqCst) {
        Exit::Timeout
    } else if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(-1)
    };
    Measured { exit, wall, user: tv(ru.ru_utime), sys: tv(ru.ru_stime), maxrss_kib: ru.ru_maxrss as u64 }
}

/// [`run`] in `dir`, stdin empty, stdout and stderr to `dir/output.txt`; with what it printed.
pub fn run_in(cmd: &mut Command, dir: &Path, timeout: Duration) -> (Measured, String) {
    let log = dir.join("output.txt");
    let m = match fs::File::create(&log).and_then(|f| Ok((f.try_clone()?, f))) {
        Ok((out, err)) => run(cmd.current_dir(dir).stdin(Stdio::null()).stdout(out).stderr(err), timeout),
        Err(e) => Measured::failed(format!("{}: {e}", log.display())),
    };
    (m, fs::read_to_string(&log).unwrap_or_default())
}
