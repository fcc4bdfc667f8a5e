//! A plugin that carries its own copy of domalloc survives `dlclose` (issue 26 item 1): a Rust
//! `cdylib` with `#[global_allocator] static A: domalloc::DomAlloc` is built here (rustc, against
//! the `domalloc` rlib this test links), and a host process (this binary, in a child process)
//! `dlopen`s it and:
//!
//! * `purge`: lets it allocate enough to start its purge thread (4 threads x 4096 x 4 KiB, one
//!   64 MiB block), `dlclose`s it and sleeps 1.5 s (the purge thread wakes up meanwhile);
//! * `thread`: a thread allocates through it; the main thread `dlclose`s it; the thread exits
//!   (the plugin's thread-exit destructor runs).
//!
//! 10 runs each. b541f39 (and 9545c7b) died with SIGSEGV in both: the purge thread and the
//! destructor ran code of the unmapped object. The C twin (a `.so` linked with `libdomalloc.a`
//! and `-Wl,--exclude-libs,ALL`) is `tests/c/dlclose_plugin.c` + `tests/c/dlclose_host.c`, run by
//! `tests/c/dlclose.sh`.

// The quarantine build keeps each thread's quarantine (SLOTS pointers and sizes) in a
// `thread_local!`, which in a cdylib lands in the static TLS block: `dlopen` of such a plugin
// fails with "cannot allocate memory in static TLS block". That debugging build is not for
// plugins (the README says so); the other builds run these tests.
#![cfg(not(feature = "quarantine"))]
// SAFETY (all unsafe blocks in this file): dlopen/dlsym/dlclose of the plugin built here, whose
// two functions have the signatures declared; plain libc calls.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

mod common;

const ENV: &str = "DLCLOSE_TEST_CASE";
const PLUGIN_ENV: &str = "DLCLOSE_TEST_PLUGIN";
const RUNS: usize = 10;

const PLUGIN_SRC: &str = r#"
#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

extern "C" {
    fn pthread_create(t: *mut usize, attr: *const u8, f: extern "C" fn(*mut u8) -> *mut u8, arg: *mut u8) -> i32;
    fn pthread_join(t: usize, ret: *mut *mut u8) -> i32;
}

// Threads of the C library, not `std::thread`: std registers thread-local destructors in the
// spawning thread, which keeps the object loaded while that thread lives and would hide the bug.
extern "C" fn churn(_: *mut u8) -> *mut u8 {
    let v: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 4096]).collect();
    std::hint::black_box(&v);
    std::ptr::null_mut()
}

#[no_mangle]
pub extern "C" fn plugin_churn() -> i32 {
    let mut t = [0usize; 4];
    for x in t.iter_mut() {
        if unsafe { pthread_create(x, std::ptr::null(), churn, std::ptr::null_mut()) } != 0 {
            return 1;
        }
    }
    for x in t {
        unsafe { pthread_join(x, std::ptr::null_mut()) };
    }
    let big = vec![1u8; 64 << 20];
    if big[(64 << 20) - 1] != 1 {
        return 1;
    }
    0
}

#[no_mangle]
pub extern "C" fn plugin_touch() -> i32 {
    let v = vec![3u8; 100];
    if v[99] == 3 { 0 } else { 1 }
}
"#;

/// Builds the plugin once (per test process) in a temporary directory; returns its path.
fn plugin() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
        // A domalloc rlib of this profile: the newest in the test binary's directory that is not
        // a quarantine build (those cannot be dlopen'ed, see the top of this file; test.sh builds
        // every variant into the same directory, in turn).
        let rlib = std::fs::read_dir(&deps)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("libdomalloc-") && n.ends_with(".rlib")
            })
            .filter(|p| {
                const QUARANTINE: &[u8] = b"8domalloc10quarantine"; // a mangled path in its symbols
                let bytes = std::fs::read(p).unwrap_or_default();
                !bytes.windows(QUARANTINE.len()).any(|w| w == QUARANTINE)
            })
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).unwrap())
            .expect("no libdomalloc-*.rlib next to the test binary");
        let dir = std::env::temp_dir().join(format!("domalloc-dlclose-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("plugin.rs");
        std::fs::write(&src, PLUGIN_SRC).unwrap();
        let out = dir.join("libplugin.so");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let o = Command::new(rustc)
            .args(["--edition", "2021", "--crate-type", "cdylib", "-C", "opt-level=1", "-L"])
            .arg(format!("dependency={}", deps.display()))
            .arg("--extern")
            .arg(format!("domalloc={}", rlib.display()))
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .output()
            .expect("rustc not found");
        assert!(o.status.success(), "building the plugin failed:\n{}", String::from_utf8_lossy(&o.stderr));
        out
    })
}

fn host_purge(path: &str) {
    let c = std::ffi::CString::new(path).unwrap();
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!h.is_null(), "dlopen failed: {}", std::ffi::CStr::from_ptr(libc::dlerror()).to_string_lossy());
        let f = libc::dlsym(h, c"plugin_churn".as_ptr());
        assert!(!f.is_null());
        let churn: extern "C" fn() -> i32 = std::mem::transmute(f);
        assert_eq!(churn(), 0);
        assert_eq!(libc::dlclose(h), 0);
    }
    std::thread::sleep(Duration::from_millis(1500));
}

fn host_thread(path: &str) {
    let c = std::ffi::CString::new(path).unwrap();
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null(), "dlopen failed: {}", unsafe { std::ffi::CStr::from_ptr(libc::dlerror()) }.to_string_lossy());
    let f = unsafe { libc::dlsym(h, c"plugin_touch".as_ptr()) };
    assert!(!f.is_null());
    let touch: extern "C" fn() -> i32 = unsafe { std::mem::transmute(f) };
    let (touched_tx, touched_rx) = std::sync::mpsc::channel();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        assert_eq!(touch(), 0);
        touched_tx.send(()).unwrap();
        closed_rx.recv().unwrap();
        // Returning: the plugin's thread-exit destructor runs.
    });
    touched_rx.recv().unwrap();
    assert_eq!(unsafe { libc::dlclose(h) }, 0);
    closed_tx.send(()).unwrap();
    t.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
}

fn case(name: &str, body: fn(&str)) {
    if let Ok(c) = std::env::var(ENV) {
        if c == name {
            body(&std::env::var(PLUGIN_ENV).unwrap());
            println!("DLCLOSE-OK");
        }
        return;
    }
    let path = plugin().to_str().unwrap().to_owned();
    let mut failed = Vec::new();
    for i in 0..RUNS {
        let run = common::run_child(ENV, name, &[(PLUGIN_ENV, &path)], Duration::from_secs(30));
        if !(run.status.success() && run.stdout.contains("DLCLOSE-OK")) {
            failed.push(format!("run {i}: {}", run.context(name)));
        }
    }
    assert!(failed.is_empty(), "{} of {RUNS} runs failed; the first:\n{}", failed.len(), failed[0]);
    eprintln!("{name}: {RUNS} of {RUNS} runs survived dlclose");
}

#[test]
fn purge_thread_survives_dlclose_of_its_plugin() {
    case("purge_thread_survives_dlclose_of_its_plugin", host_purge);
}

#[test]
fn thread_exit_after_dlclose_of_the_plugin_it_used() {
    case("thread_exit_after_dlclose_of_the_plugin_it_used", host_thread);
}
