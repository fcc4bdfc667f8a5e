//! `workloads`: the allocator stress programs of the comparison suite, one per subcommand.
//!
//! Run `workloads --help` for the list, `workloads <name> --help` for what one stresses.
//! Every allocation goes to the C malloc (no global allocator is set), so
//! `LD_PRELOAD=/path/to/libjemalloc.so.2 workloads larson` measures jemalloc.
//!
//! On success a workload prints one line
//! `RESULT workload=<name> threads=<n> elapsed_s=<s> ops=<n> checksum=<hex> ...` and exits 0;
//! a failed self-check prints `FAILED ...` and exits 1 (2 when malloc returns NULL).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::process::ExitCode;
use std::time::Instant;

use domalloc_bench_suite::common::{self, Params};
use domalloc_bench_suite::pin;
use domalloc_bench_suite::workloads::{self, Workload};

fn usage() -> String {
    let mut s = String::from(
        "workloads: allocator stress programs (run them under LD_PRELOAD=<allocator.so>)\n\n\
USAGE:\n    workloads <WORKLOAD> [OPTIONS]\n    workloads <WORKLOAD> --help\n    \
workloads list | probe | --help\n\nWORKLOADS:\n",
    );
    for w in workloads::ALL {
        s += &format!("    {:<14} {}\n", w.name, w.summary);
    }
    s += "\nOTHER COMMANDS:\n    list           print the workload names, one per line\n    \
probe          print which library provides malloc (checks that LD_PRELOAD took effect)\n";
    s += OPTIONS;
    s
}

const OPTIONS: &str = "\nOPTIONS (every workload):\n    \
--threads N    worker threads (default: the CPUs this process may use)\n    \
--scale F      work multiplier (default 1.0; the runner's --quick uses 0.1)\n    \
--seed S       RNG seed (default 42); every thread derives its own stream\n    \
--no-pin       do not pin threads (default: round-robin over cores with hwloc)\n    \
-h, --help     this text\n";

fn parse(w: &Workload, args: &[String]) -> Result<Option<Params>, String> {
    let mut p = Params { threads: common::default_threads(), scale: 1.0, seed: 42, pin: true };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{}\n\nUSAGE:\n    workloads {} [OPTIONS]\n{OPTIONS}", w.help, w.name);
                return Ok(None);
            }
            "--threads" | "-t" => {
                p.threads = val(a)?.parse().map_err(|e| format!("--threads: {e}"))?;
                if p.threads == 0 {
                    return Err("--threads must be at least 1".into());
                }
            }
            "--scale" => {
                p.scale = val(a)?.parse().map_err(|e| format!("--scale: {e}"))?;
                if p.scale.is_nan() || p.scale <= 0.0 {
                    return Err("--scale must be positive".into());
                }
            }
            "--seed" => p.seed = val(a)?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--no-pin" => p.pin = false,
            other => return Err(format!("unknown option {other:?} (see `workloads {} --help`)", w.name)),
        }
    }
    Ok(Some(p))
}

/// Prints the shared object that provides `malloc` and any allocator version it exports.
fn probe() -> ExitCode {
    // SAFETY: dlsym/dladdr on the default namespace with valid NUL-terminated names; the
    // version functions are called with the signatures their libraries document.
    unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
        let mut info: libc::Dl_info = std::mem::zeroed();
        let lib = if !sym.is_null() && libc::dladdr(sym, &mut info) != 0 && !info.dli_fname.is_null() {
            CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned()
        } else {
            "unknown".to_string()
        };
        let mut line = format!("PROBE malloc_from={lib}");
        let mi = libc::dlsym(libc::RTLD_DEFAULT, c"mi_version".as_ptr());
        if !mi.is_null() {
            let f: extern "C" fn() -> c_int = std::mem::transmute(mi);
            let v = f();
            // 3.3.2 is 30302; releases before 2.1 encoded 2.0.9 as 209.
            let (maj, min, pat) = if v >= 10000 { (v / 10000, v / 100 % 100, v % 100) } else { (v / 100, v / 10 % 10, v % 10) };
            line += &format!(" version=mimalloc-{maj}.{min}.{pat}");
        }
        let je = libc::dlsym(libc::RTLD_DEFAULT, c"mallctl".as_ptr());
        if !je.is_null() {
            type Mallctl = extern "C" fn(*const c_char, *mut c_void, *mut usize, *mut c_void, usize) -> c_int;
            let f: Mallctl = std::mem::transmute(je);
            let mut v: *const c_char = std::ptr::null();
            let mut len = std::mem::size_of::<*const c_char>();
            if f(c"version".as_ptr(), (&mut v as *mut *const c_char).cast(), &mut len, std::ptr::null_mut(), 0) == 0
                && !v.is_null()
            {
                let full = CStr::from_ptr(v).to_string_lossy();
                line += &format!(" version=jemalloc-{}", full.split('-').next().unwrap_or(&full));
            }
        }
        let tc = libc::dlsym(libc::RTLD_DEFAULT, c"tc_version".as_ptr());
        if !tc.is_null() {
            let f: extern "C" fn(*mut c_int, *mut c_int, *mut *const c_char) -> *const c_char = std::mem::transmute(tc);
            let s = f(std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
            if !s.is_null() {
                line += &format!(" version={}", CStr::from_ptr(s).to_string_lossy().replace(' ', "-"));
            }
        }
        // Exercise the allocator a little: a preloaded library that breaks basic use fails here.
        let p = libc::malloc(100) as *mut u8;
        let q = libc::realloc(p.cast(), 100_000) as *mut u8;
        let ok = !q.is_null();
        libc::free(q.cast());
        println!("{line}");
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprint!("{}", usage());
        return ExitCode::from(64);
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => {
            if let Some(w) = args.get(1).and_then(|n| workloads::find(n)) {
                println!("{}", w.help);
            } else {
                print!("{}", usage());
            }
            return ExitCode::SUCCESS;
        }
        "list" => {
            for w in workloads::ALL {
                println!("{}", w.name);
            }
            return ExitCode::SUCCESS;
        }
        "probe" => return probe(),
        _ => {}
    }
    let Some(w) = workloads::find(cmd) else {
        eprintln!("error: unknown workload {cmd:?}\n\n{}", usage());
        return ExitCode::from(64);
    };
    let p = match parse(w, &args[1..]) {
        Ok(Some(p)) => p,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    let cores = pin::init(p.pin);
    let start = Instant::now();
    let result = (w.run)(&p);
    let elapsed = start.elapsed().as_secs_f64();
    let (nerr, msgs) = common::errors();
    for m in &msgs {
        eprintln!("error: {m}");
    }
    match result {
        Ok(o) if nerr == 0 => {
            println!(
                "RESULT workload={} threads={} scale={} pinned_cores={cores} elapsed_s={elapsed:.4} ops={} checksum={:#018x} {}",
                w.name, p.threads, p.scale, o.ops, o.checksum, o.extra
            );
            ExitCode::SUCCESS
        }
        Ok(_) => {
            println!("FAILED workload={} errors={nerr}", w.name);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            println!("FAILED workload={} errors={}", w.name, nerr.max(1));
            ExitCode::FAILURE
        }
    }
}
