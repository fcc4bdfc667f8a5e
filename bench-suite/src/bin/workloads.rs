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

use clap::{Args, Command, FromArgMatches};
use domalloc_bench_suite::callgrind;
use domalloc_bench_suite::common::{self, Knobs, Params};
use domalloc_bench_suite::pin;
use domalloc_bench_suite::workloads::{self, Workload};

/// The options every workload takes (plus the few workload-specific knobs).
#[derive(Args, Debug)]
struct WorkloadArgs {
    /// Worker threads (default: the CPUs this process may use)
    #[arg(short, long, value_parser = clap::value_parser!(u64).range(1..))]
    threads: Option<u64>,
    /// Work multiplier (the runner's --quick uses 0.1)
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    scale: f64,
    /// RNG seed; every thread derives its own stream
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Pin threads round-robin over cores (default: unpinned, as the real programs run)
    #[arg(long, conflicts_with = "no_pin")]
    pin: bool,
    /// Do not pin threads (the default; kept for older command lines)
    #[arg(long)]
    no_pin: bool,
    /// Per-thread load (test-stress.c's SCALE; default 50)
    #[arg(long)]
    load: Option<u64>,
    /// Rounds, each creating and joining all threads (test-stress.c's ITER; default 25)
    #[arg(long)]
    iterations: Option<u64>,
    /// Object size in bytes, -1 = xmalloc-test's mixed sizes (default 64)
    #[arg(long, allow_negative_numbers = true)]
    object_size: Option<i64>,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        Ok(_) => Err("must be positive".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl WorkloadArgs {
    /// The workload's parameters; a knob the workload does not take is an error.
    fn params(self, w: &Workload) -> Result<Params, String> {
        let given = [
            ("load", self.load.is_some()),
            ("iterations", self.iterations.is_some()),
            ("object-size", self.object_size.is_some()),
        ];
        if let Some((k, _)) = given.iter().find(|(k, on)| *on && !w.knobs.contains(k)) {
            return Err(format!("--{k} does not apply to {} (see `workloads {} --help`)", w.name, w.name));
        }
        Ok(Params {
            threads: self.threads.map_or_else(common::default_threads, |t| t as usize),
            scale: self.scale,
            seed: self.seed,
            pin: self.pin,
            knobs: Knobs { load: self.load, iterations: self.iterations, object_size: self.object_size },
        })
    }
}

fn cli() -> Command {
    let mut c = Command::new("workloads")
        .about("allocator stress programs (run them under LD_PRELOAD=<allocator.so>)")
        .long_about(
            "allocator stress programs (run them under LD_PRELOAD=<allocator.so>).\n\n\
On success a workload prints one line `RESULT workload=<name> threads=<n> elapsed_s=<s> ops=<n> \
checksum=<hex> ...` and exits 0; a failed self-check prints `FAILED ...` and exits 1 (2 when \
malloc returns NULL).",
        )
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(Command::new("list").about("Print the workload names, one per line"))
        .subcommand(
            Command::new("probe").about("Print which library provides malloc (checks that LD_PRELOAD took effect)"),
        );
    for w in workloads::ALL {
        // augment_args sets the struct's doc as the about text: the workload's own comes after.
        let mut sub = WorkloadArgs::augment_args(Command::new(w.name)).about(w.summary).long_about(w.help);
        for (id, knob) in [("load", "load"), ("iterations", "iterations"), ("object_size", "object-size")] {
            if !w.knobs.contains(&knob) {
                sub = sub.mut_arg(id, |a| a.hide(true));
            }
        }
        c = c.subcommand(sub);
    }
    c
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
            let (maj, min, pat) =
                if v >= 10000 { (v / 10000, v / 100 % 100, v % 100) } else { (v / 100, v / 10 % 10, v % 10) };
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
        let dom = libc::dlsym(libc::RTLD_DEFAULT, c"domalloc_version".as_ptr());
        if !dom.is_null() {
            let f: extern "C" fn() -> *const c_char = std::mem::transmute(dom);
            let s = f();
            if !s.is_null() {
                line += &format!(" version=domalloc-{}", CStr::from_ptr(s).to_string_lossy());
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
    let matches = cli().get_matches();
    let (name, sub) = matches.subcommand().expect("subcommand_required");
    match name {
        "list" => {
            for w in workloads::ALL {
                println!("{}", w.name);
            }
            return ExitCode::SUCCESS;
        }
        "probe" => return probe(),
        _ => {}
    }
    let w = workloads::find(name).expect("clap only accepts known workloads");
    let p = match WorkloadArgs::from_arg_matches(sub).map_err(|e| e.to_string()).and_then(|a| a.params(w)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    let cores = pin::init(p.pin);
    let start = Instant::now();
    callgrind::start_measuring();
    let result = (w.run)(&p);
    callgrind::stop_measuring();
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
