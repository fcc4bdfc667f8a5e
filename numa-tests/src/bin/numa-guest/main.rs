//! `numa-guest`: runs inside a QEMU guest with emulated NUMA nodes (as the payload of /init) and
//! checks where the pages of allocated memory really are, with `move_pages(2)`.
//!
//! The global allocator is chosen at compile time: `domalloc::DomAlloc` by default, glibc's
//! malloc (`std::alloc::System`) with `--features system`: the negative control when linked
//! statically, and the C path when linked dynamically and run under `LD_PRELOAD` (std's System
//! allocator calls malloc, calloc, posix_memalign for alignments above 16, realloc and free).
//!
//! ```text
//! numa-guest [options] [RUN...]
//!   RUN            P[:key=value...]  P = pattern 1..11 or `all` (1..10; default: all). Keys override the
//!                  options below for that run: tpn, sizes, large, split, thp, rounds, sizes9, k9,
//!                  aligned9, seed10, orders10, strict10, pause10, secs11, info (=1: results are informational, not checks).
//!   --tpn 1,2      threads per node; each run is repeated for each value (default 1,2)
//!   --sizes L      object sizes for patterns 1-4 (default 16,64,256,1K,4K,16K,64K,256K,1M,4M,mixed)
//!   --large L      array sizes for pattern 5 (default 2M,8M,32M,64M)
//!   --budget B     bytes per thread per phase for patterns 1-4 (default 1M)
//!   --max-objects N  cap on objects per thread per phase (default 1024)
//!   --threshold F  share of pages that must be local (default 0.99)
//!   --rounds N     pattern 2 producer/consumer rounds (default 200)
//!   --batch N      objects per producer batch (default 128)
//!   --rss-bound B  pattern 2 stream: allowed RSS growth (default 64M)
//!   --split G      pattern 5: parts split at multiples of G (default 4K)
//!   --thp MODE     set THP mode (always|madvise|never) before the run
//!   --thp5 MODE, --thp9 MODE  the same for the runs of pattern 5 / 9 only
//!   --pin node|cpu pin worker threads to their node's CPUs (default) or to one CPU each
//!   --pairs all|first  node pairs (A,B) for patterns 2-5: every neighbour pair (default) or one
//!   --child-timeout S  seconds one run may take (default 300)
//!   --sizes9 L     pattern 9 buffer sizes, SIZE or SIZExCOUNT
//!                  (default 16K,64K,256K,768K,1536K,3M,64Mx1)
//!   --k9 N         pattern 9 buffers per worker where the size gives no count (default 8)
//!   --aligned9 S   pattern 9: the size also allocated with a 4 KiB-aligned Layout (default 64K;
//!                  0 = none); with `--features system` also with aligned_alloc and memalign
//!   --seed10 N     pattern 10: the seed of the shuffled order (default: from the clock, printed)
//!   --orders10 L   pattern 10: orders, `+`-separated (default asc+desc+shuffle)
//!   --pause10 MS   pattern 10: wait MS ms between phases (an allocator's purge delay passes)
//!   --strict10 1   pattern 10: also check the phases that reuse a size class and the recycle
//!                  round's faults (default: measured, INFO)
//!   --secs11 S     pattern 11 (NUMA balancing, `balancing.rs`; run by number only): seconds the
//!                  thread keeps using its buffers on the other node (default 20)
//! ```
//! Pattern 9 (per-worker first touch, `firsttouch.rs`) runs each (size, api) case, `remote-free`
//! and `realloc-grow` in a sub-run process of its own.
//! Patterns 6-8 (node API, DOMALLOC_POLICY, confined process / inherited policy) use fixed sizes
//! (64 B x 4096, 64K x 16, 1M x 2, 8M x 1 per thread); 7 and 8 start one more process per case
//! (`--sub=CASE`, internal, like `--child`).
//! Each run executes in a fresh child process (a fresh allocator), so patterns do not feed each
//! other's caches. Output: `INFO`, `RESULT ... PASS|FAIL|INFO|SKIP`, `CRASH`, `SUMMARY` lines.

#[cfg(target_os = "linux")]
mod balancing;
#[cfg(target_os = "linux")]
mod firsttouch;
#[cfg(target_os = "linux")]
mod patterns;
#[cfg(target_os = "linux")]
mod policies;
#[cfg(target_os = "linux")]
mod sweep;
#[cfg(target_os = "linux")]
mod sys;

#[cfg(not(feature = "system"))]
#[global_allocator]
static ALLOC: domalloc::DomAlloc = domalloc::DomAlloc::new();

#[cfg(feature = "system")]
#[global_allocator]
static ALLOC: std::alloc::System = std::alloc::System;

/// Name of the allocator compiled in.
pub const ALLOCATOR: &str = if cfg!(feature = "system") { "system" } else { "domalloc" };

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("numa-guest runs on Linux only (it uses move_pages and sched_setaffinity)");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match driver::main(args) {
        Ok(code) => code,
        Err(e) => {
            println!("CRASH pattern=- error={}", e.replace(' ', "_"));
            eprintln!("numa-guest: {e}");
            2
        }
    };
    std::process::exit(code);
}

#[cfg(target_os = "linux")]
mod driver {
    use crate::patterns::{self, Config, Pin, SizeSpec};
    use crate::sys;
    use domalloc_numa_tests::{parse_result, parse_size, Verdict};
    use std::io::{BufRead, BufReader, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
    use std::time::{Duration, Instant};

    fn sizes(s: &str) -> Result<Vec<SizeSpec>, String> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(|x| {
                if x == "mixed" {
                    Ok(SizeSpec::Mixed)
                } else {
                    parse_size(x).filter(|n| *n > 0).map(SizeSpec::Fixed).ok_or(format!("bad size {x}"))
                }
            })
            .collect()
    }

    fn sizes9(s: &str) -> Result<Vec<(usize, Option<usize>)>, String> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(|x| {
                let (size, count) = match x.split_once('x') {
                    Some((s, c)) => {
                        (s, Some(c.parse::<usize>().ok().filter(|c| *c > 0).ok_or(format!("bad count in {x}"))?))
                    }
                    None => (x, None),
                };
                let size = parse_size(size).filter(|n| *n > 0).ok_or(format!("bad size {x}"))?;
                Ok((size, count))
            })
            .collect()
    }

    fn large(s: &str) -> Result<Vec<usize>, String> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(|x| parse_size(x).filter(|n| *n > 0).ok_or(format!("bad size {x}")))
            .collect()
    }

    /// Applies one `key=value` setting to `cfg`.
    fn apply(cfg: &mut Config, key: &str, val: &str) -> Result<(), String> {
        let num = |v: &str| v.parse::<usize>().map_err(|_| format!("bad number for {key}: {v}"));
        let size = |v: &str| parse_size(v).ok_or(format!("bad size for {key}: {v}"));
        match key {
            "sizes" => cfg.sizes = sizes(val)?,
            "large" => cfg.large = large(val)?,
            "budget" => cfg.budget = size(val)?,
            "max-objects" => cfg.max_objects = num(val)?.max(1),
            "threshold" => cfg.threshold = val.parse().map_err(|_| format!("bad threshold {val}"))?,
            "rounds" => cfg.rounds = num(val)?,
            "batch" => cfg.batch = num(val)?.max(1),
            "rss-bound" => cfg.rss_bound = size(val)?,
            "split" => cfg.split = size(val)?.max(sys::PAGE) / sys::PAGE * sys::PAGE,
            "thp" => cfg.thp = Some(val.to_string()),
            "thp5" => cfg.thp5 = Some(val.to_string()),
            "thp9" => cfg.thp9 = Some(val.to_string()),
            "pin" => {
                cfg.pin = match val {
                    "node" => Pin::Node,
                    "cpu" => Pin::Cpu,
                    _ => return Err(format!("bad pin {val}")),
                }
            }
            "pairs" => cfg.first_pair_only = val == "first",
            "info" => cfg.info_only = val != "0",
            "tpn" => cfg.tpn = num(val)?.max(1),
            "sizes9" => cfg.sizes9 = sizes9(val)?,
            "k9" => cfg.k9 = num(val)?.max(1),
            "aligned9" => cfg.aligned9 = size(val)?,
            "strict10" => cfg.strict10 = val != "0",
            "pause10" => cfg.pause10 = val.parse().map_err(|_| format!("bad pause10 {val}"))?,
            "secs11" => cfg.secs11 = val.parse().map_err(|_| format!("bad secs11 {val}"))?,
            "seed10" => cfg.seed10 = Some(val.parse().map_err(|_| format!("bad seed10 {val}"))?),
            "orders10" => {
                cfg.orders10 = val.split('+').map(str::to_string).collect();
                if let Some(o) = cfg.orders10.iter().find(|o| !matches!(o.as_str(), "asc" | "desc" | "shuffle")) {
                    return Err(format!("bad order {o} in orders10 (asc, desc, shuffle)"));
                }
            }
            _ => return Err(format!("unknown option {key}")),
        }
        Ok(())
    }

    /// What the command line asks for.
    struct Options {
        /// The configuration after all options (the parent's; a child's own with its overrides).
        cfg: Config,
        /// `--tpn`: threads per node, one run each.
        tpns: Vec<usize>,
        /// The RUN arguments.
        runs: Vec<String>,
        /// `--child=P`: this process is the child running pattern P.
        child: Option<u32>,
        /// `--sub=CASE`: this child runs one case of pattern 7 or 8.
        sub: Option<String>,
        /// `--child-timeout`: seconds one run may take.
        child_timeout: u64,
    }

    /// Parses the command line: `--key value` or `--key=value` options and RUN arguments.
    fn parse_args(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            cfg: Config::default(),
            tpns: vec![1usize, 2],
            runs: Vec::new(),
            child: None,
            sub: None,
            child_timeout: 300u64,
        };
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            if let Some(key) = a.strip_prefix("--") {
                let (key, val) = match key.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => {
                        i += 1;
                        (key.to_string(), args.get(i).cloned().ok_or(format!("{a} needs a value"))?)
                    }
                };
                match key.as_str() {
                    "child" => o.child = Some(val.parse().map_err(|_| "bad --child".to_string())?),
                    "sub" => o.sub = Some(val),
                    "tpn" => {
                        o.tpns = val
                            .split(',')
                            .map(|v| v.parse::<usize>().map_err(|_| format!("bad tpn {v}")))
                            .collect::<Result<_, _>>()?;
                        o.tpns.retain(|t| *t > 0);
                        o.cfg.tpn = o.tpns.first().copied().unwrap_or(1);
                    }
                    "child-timeout" => o.child_timeout = val.parse().map_err(|_| "bad --child-timeout")?,
                    _ => apply(&mut o.cfg, &key, &val)?,
                }
            } else {
                o.runs.push(a.clone());
            }
            i += 1;
        }
        Ok(o)
    }

    /// Prints the `INFO` lines that describe the machine (kernel, topology, THP, memory).
    fn describe_machine(topo: &sys::Topology) {
        let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        println!("INFO allocator={} malloc_from={} kernel={}", crate::ALLOCATOR, sys::malloc_from(), uname.trim());
        println!("INFO topology {}", topo.describe());
        println!(
            "INFO thp={} numa_balancing={} rss_now={}K",
            sys::thp_mode(),
            sys::numa_balancing(),
            sys::rss_bytes() / 1024
        );
        println!("INFO memfree {}", sys::node_free());
        #[cfg(not(feature = "system"))]
        println!("INFO domalloc numa_enabled={} current_node={}", domalloc::numa_enabled(), domalloc::current_node());
        let _ = std::io::stdout().flush();
    }

    /// One planned run: a pattern and the `key=value` overrides of its RUN argument.
    type Run = (u32, Vec<(String, String)>);

    /// Expands the RUN arguments (default `all`) into (pattern, overrides) pairs.
    fn plan(runs: &[String]) -> Result<Vec<Run>, String> {
        let all = ["all".to_string()];
        let runs = if runs.is_empty() { &all[..] } else { runs };
        let mut plan: Vec<Run> = Vec::new();
        for r in runs {
            let mut parts = r.split(':');
            let pat = parts.next().unwrap_or("all");
            let kv: Vec<(String, String)> = parts
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (p.to_string(), "1".to_string()),
                })
                .collect();
            let pats: Vec<u32> = if pat == "all" {
                vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
            } else {
                vec![pat.parse().map_err(|_| format!("bad run {r}"))?]
            };
            for p in pats {
                if !(1..=11).contains(&p) {
                    return Err(format!("no pattern {p}"));
                }
                plan.push((p, kv.clone()));
            }
        }
        Ok(plan)
    }

    /// PASS, FAIL, INFO and crashed counts over all runs.
    #[derive(Default)]
    struct Totals {
        passed: u64,
        failed: u64,
        info: u64,
        crashed: u64,
    }

    /// What every run of the parent shares: the binary, the command line, the options and the
    /// THP mode to restore after a run that set its own.
    struct Parent<'a> {
        exe: PathBuf,
        args: &'a [String],
        opts: &'a Options,
        original_thp: String,
    }

    /// The parent: describes the machine, runs each (pattern, threads per node) in a child
    /// process and prints the `SUMMARY`. Exit code 0 when something passed and nothing failed
    /// or crashed.
    fn parent(args: &[String], opts: &Options, topo: &sys::Topology) -> Result<i32, String> {
        describe_machine(topo);
        let plan = plan(&opts.runs)?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let ctx = Parent { exe, args, opts, original_thp: sys::thp_mode() };
        let mut totals = Totals::default();
        for (p, kv) in plan {
            let run_tpns: Vec<usize> = match kv.iter().find(|(k, _)| k == "tpn") {
                Some((_, v)) => v.split('+').filter_map(|x| x.parse().ok()).collect(),
                None => opts.tpns.clone(),
            };
            for tpn in run_tpns {
                run_one(&ctx, p, &kv, tpn, &mut totals)?;
            }
        }
        let Totals { passed, failed, info, crashed } = totals;
        println!("SUMMARY passed={passed} failed={failed} info={info} crashed={crashed}");
        let _ = std::io::stdout().flush();
        Ok(if failed == 0 && crashed == 0 && passed > 0 { 0 } else { 1 })
    }

    /// The parent's options to pass on to every child: all but `--tpn` and `--child-timeout`.
    fn passthrough_args(args: &[String]) -> Vec<String> {
        let mut cargs: Vec<String> = Vec::new();
        let mut j = 0;
        while j < args.len() {
            let a = &args[j];
            if a.starts_with("--") {
                let has_inline = a.contains('=');
                let key = a.trim_start_matches("--").split('=').next().unwrap_or("").to_string();
                let skip = matches!(key.as_str(), "tpn" | "child-timeout");
                if !skip {
                    cargs.push(a.clone());
                    if !has_inline {
                        if let Some(v) = args.get(j + 1) {
                            cargs.push(v.clone());
                        }
                    }
                }
                if !has_inline {
                    j += 1;
                }
            }
            j += 1;
        }
        cargs
    }

    /// The command line of the child for pattern `p` with `tpn` threads per node and the run's
    /// overrides `kv` (validated here, so a typo fails loudly in the parent), and the THP mode
    /// the run wants set, if any.
    fn child_args(
        ctx: &Parent,
        p: u32,
        kv: &[(String, String)],
        tpn: usize,
    ) -> Result<(Vec<String>, Option<String>), String> {
        // Pass every option through, then this run's overrides.
        let mut cargs = passthrough_args(ctx.args);
        let cfg = &ctx.opts.cfg;
        let mut thp = match p {
            5 => cfg.thp5.clone().or(cfg.thp.clone()),
            9 => cfg.thp9.clone().or(cfg.thp.clone()),
            _ => cfg.thp.clone(),
        };
        for (k, v) in kv {
            if k == "tpn" {
                continue;
            }
            if k == "thp" {
                thp = Some(v.clone());
            }
            // Validate here so a typo fails loudly in the parent.
            apply(&mut ctx.opts.cfg.clone(), k, v)?;
            cargs.push(format!("--{k}={v}"));
        }
        cargs.push(format!("--tpn={tpn}"));
        cargs.push(format!("--child={p}"));
        Ok((cargs, thp))
    }

    /// Runs pattern `p` with `tpn` threads per node and the overrides `kv` in a child process
    /// (under the run's THP mode), echoes its output and adds its verdicts to `totals`.
    fn run_one(ctx: &Parent, p: u32, kv: &[(String, String)], tpn: usize, totals: &mut Totals) -> Result<(), String> {
        let (cargs, thp) = child_args(ctx, p, kv, tpn)?;
        if let Some(mode) = &thp {
            if let Err(e) = sys::set_thp_mode(mode) {
                println!("CRASH pattern={p} threads_per_node={tpn} error=cannot_set_thp_{mode}:{}", e.kind());
                totals.crashed += 1;
                return Ok(());
            }
        }
        let ChildRun { status, counts: (p_ok, p_fail, p_info), secs } =
            run_child(&ctx.exe, &cargs, ctx.opts.child_timeout)?;
        totals.passed += p_ok;
        totals.failed += p_fail;
        totals.info += p_info;
        match status {
            Some(s) if s.success() => {
                println!("INFO run pattern={p} threads_per_node={tpn} seconds={secs:.1}")
            }
            Some(s) => {
                totals.crashed += 1;
                println!("CRASH pattern={p} threads_per_node={tpn} status={s:?} seconds={secs:.1}")
            }
            None => {
                totals.crashed += 1;
                println!("CRASH pattern={p} threads_per_node={tpn} status=timeout seconds={secs:.1}")
            }
        }
        if thp.is_some() {
            let _ = sys::set_thp_mode(&ctx.original_thp);
        }
        let _ = std::io::stdout().flush();
        Ok(())
    }

    /// How one child process ended.
    struct ChildRun {
        /// Its exit status; None: killed after the timeout.
        status: Option<ExitStatus>,
        /// Its (PASS, FAIL, INFO) RESULT lines.
        counts: (u64, u64, u64),
        /// Seconds from its start until its output ended.
        secs: f64,
    }

    /// Starts `exe` with `cargs`, echoes its stdout and waits for it (killing it after
    /// `timeout_s` seconds).
    fn run_child(exe: &Path, cargs: &[String], timeout_s: u64) -> Result<ChildRun, String> {
        let mut c = Command::new(exe)
            .args(cargs)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn child: {e}"))?;
        let out = c.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || echo_and_count(out));
        let start = Instant::now();
        let status = wait_with_timeout(&mut c, start, Duration::from_secs(timeout_s))?;
        let counts = reader.join().unwrap_or_default();
        Ok(ChildRun { status, counts, secs: start.elapsed().as_secs_f64() })
    }

    /// Prints every line of a child's stdout and counts its PASS, FAIL and INFO results.
    fn echo_and_count(out: ChildStdout) -> (u64, u64, u64) {
        let mut counts = (0u64, 0u64, 0u64);
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(r) = parse_result(&line) {
                match r.verdict {
                    Verdict::Pass => counts.0 += 1,
                    Verdict::Fail => counts.1 += 1,
                    Verdict::Info => counts.2 += 1,
                    Verdict::Skip => {}
                }
            }
        }
        counts
    }

    /// Waits for `c` to exit; kills it once `timeout` has passed since `start` (then None).
    fn wait_with_timeout(c: &mut Child, start: Instant, timeout: Duration) -> Result<Option<ExitStatus>, String> {
        loop {
            match c.try_wait() {
                Ok(Some(s)) => return Ok(Some(s)),
                Ok(None) if start.elapsed() > timeout => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return Ok(None);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
    }

    /// Runs numa-guest with `args`: as a child (`--child`), one pattern in this process; else as
    /// the parent of one child per run. Returns the exit code.
    pub fn main(args: Vec<String>) -> Result<i32, String> {
        let opts = parse_args(&args)?;
        let topo = sys::Topology::discover();
        if let Some(p) = opts.child {
            if let Some(case) = &opts.sub {
                return crate::policies::run_sub(p, case, &opts.cfg, &topo).map(|_| 0);
            }
            return patterns::run(p, &opts.cfg, &topo).map(|_| 0);
        }
        parent(&args, &opts, &topo)
    }
}
