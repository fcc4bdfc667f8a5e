//! The `bench` runner: every workload under every allocator, repetitions interleaved, with
//! medians, ratios to the reference (mimalloc v3, else Debian's mimalloc 2), geometric means,
//! and CSV / Markdown / SVG reports under `results/<date>/` (copied to `results/latest.*`).

pub mod allocators;
pub mod measure;
pub mod numa;
pub mod report;
pub mod svg;

use std::fs;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use allocators::{Allocator, Search, Skipped};
use report::{Metric, Record, Summary};

use crate::workloads;

const HELP: &str = "bench: compare allocators on the workloads of this suite (via LD_PRELOAD)

USAGE:
    bench [OPTIONS]            (scripts/bench.sh builds everything first and runs this)

Every workload runs under every allocator, repetitions interleaved (A B C A B C ...). Each run
is one child process measured with wait4: wall time, CPU time (user+sys), peak RSS. Reports
give per workload the medians and their ratio to the reference allocator (mimalloc v3 if it
is available, else Debian's mimalloc 2), plus geometric means; they are written as CSV,
Markdown and SVG under <out>/<date>/ and copied to <out>/latest.{csv,md,svg}.

OPTIONS:
    --quick               about a minute: --scale 0.1 --reps 2 (explicit options win)
    --reps N              repetitions of each (workload, allocator) (default 3)
    --scale F             work multiplier for every workload (default 1.0)
    --threads N           threads for every workload (default: all CPUs)
    --allocators LIST     comma-separated subset of: glibc,jemalloc,mimalloc2,mimalloc3,
                          tcmalloc,domalloc (and --lib names)
    --workloads LIST      comma-separated subset of the workloads (see --list)
    --reference NAME      ratio reference (default mimalloc3, else mimalloc2, else the first)
    --mimalloc3 PATH      libmimalloc3.so (default $MIMALLOC3_SO, else <target>/mimalloc3/)
    --domalloc PATH       libdomalloc.so (default $DOMALLOC_SO, else <target>/release/)
    --lib NAME=PATH       add another allocator (or override a built-in one)
    --skip NAME=REASON    leave an allocator out, reporting REASON (scripts/bench.sh uses it
                          when libdomalloc.so failed to build, so a stale one is not measured)
    --out DIR             results directory (default: <repo>/results)
    --timeout SECS        per-run time limit (default 300, --quick 60)
    --no-pin              do not pin workload threads
    --numa                also run the NUMA locality section: the locality patterns of the
                          2-node QEMU guest (numa-tests/) under each allocator's LD_PRELOAD
                          (about 30 s per allocator; numa.csv + a results.md section)
    --strict              exit 1 if any run failed (default: failures are reported, exit 0)
    --list                show the allocators found and the workloads, run nothing
    -h, --help            this text
";

/// Parsed command line.
#[derive(Clone, Debug)]
pub struct Options {
    reps: usize,
    scale: f64,
    threads: Option<usize>,
    allocators: Option<Vec<String>>,
    workloads: Option<Vec<String>>,
    reference: Option<String>,
    skip: Vec<(String, String)>,
    search: Search,
    out: PathBuf,
    timeout: f64,
    pin: bool,
    numa: bool,
    strict: bool,
    list: bool,
    quick: bool,
    argv: Vec<String>,
}

fn parse_args(args: Vec<String>) -> Result<Option<Options>, String> {
    let default_out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../results");
    let mut reps = None;
    let mut scale = None;
    let mut timeout = None;
    let mut o = Options {
        reps: 3,
        scale: 1.0,
        threads: None,
        allocators: None,
        workloads: None,
        reference: None,
        skip: Vec::new(),
        search: Search::default(),
        out: default_out,
        timeout: 300.0,
        pin: true,
        numa: false,
        strict: false,
        list: false,
        quick: false,
        argv: args.clone(),
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut val = || inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{key} needs a value"));
        let list = |s: String| s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect::<Vec<_>>();
        match key.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            "--quick" => o.quick = true,
            "--reps" => reps = Some(val()?.parse::<usize>().map_err(|e| format!("--reps: {e}"))?.max(1)),
            "--scale" => {
                let s: f64 = val()?.parse().map_err(|e| format!("--scale: {e}"))?;
                if s.is_nan() || s <= 0.0 {
                    return Err("--scale must be positive".into());
                }
                scale = Some(s);
            }
            "--threads" => {
                let t: usize = val()?.parse().map_err(|e| format!("--threads: {e}"))?;
                if t == 0 {
                    return Err("--threads must be at least 1".into());
                }
                o.threads = Some(t);
            }
            "--allocators" => o.allocators = Some(list(val()?)),
            "--workloads" => o.workloads = Some(list(val()?)),
            "--reference" => o.reference = Some(val()?),
            "--mimalloc3" => o.search.mimalloc3 = Some(PathBuf::from(val()?)),
            "--domalloc" => o.search.domalloc = Some(PathBuf::from(val()?)),
            "--lib" => {
                let v = val()?;
                let (n, p) = v.split_once('=').ok_or("--lib takes NAME=PATH")?;
                o.search.extra.push((n.to_string(), PathBuf::from(p)));
            }
            "--skip" => {
                let v = val()?;
                let (n, why) = v.split_once('=').unwrap_or((v.as_str(), "--skip"));
                o.skip.push((n.to_string(), why.to_string()));
            }
            "--out" => o.out = PathBuf::from(val()?),
            "--timeout" => timeout = Some(val()?.parse::<f64>().map_err(|e| format!("--timeout: {e}"))?),
            "--no-pin" => o.pin = false,
            "--numa" => o.numa = true,
            "--strict" => o.strict = true,
            "--list" => o.list = true,
            other => return Err(format!("unknown option {other:?} (see bench --help)")),
        }
    }
    if o.quick {
        o.reps = 2;
        o.scale = 0.1;
        o.timeout = 60.0;
    }
    o.reps = reps.unwrap_or(o.reps);
    o.scale = scale.unwrap_or(o.scale);
    o.timeout = timeout.unwrap_or(o.timeout);
    Ok(Some(o))
}

/// `YYYY-MM-DD_HHMMSS` in local time.
fn timestamp() -> String {
    // SAFETY: time/localtime_r/strftime with valid buffers.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        let mut buf = [0u8; 32];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), c"%Y-%m-%d_%H%M%S".as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    // SAFETY: uname fills the zeroed struct.
    let kernel = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        libc::uname(&mut u);
        std::ffi::CStr::from_ptr(u.release.as_ptr()).to_string_lossy().into_owned()
    };
    format!("{cpu}, {} CPUs, Linux {kernel}", crate::common::default_threads())
}

/// The repository's commit (`+ local changes` when the tree is dirty), for the report.
fn git_describe() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            format!("commit {rev}{}", if dirty { " + local changes" } else { "" })
        }
        None => "unknown (not a git checkout)".into(),
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn secs(s: f64) -> String {
    if s >= 60.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.0}s")
    }
}

/// Parses `RESULT key=value ...` from a workload's output.
fn result_field(out: &str, key: &str) -> Option<String> {
    let line = out.lines().find(|l| l.starts_with("RESULT "))?;
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('='))).map(str::to_string)
}

struct Run<'a> {
    opts: &'a Options,
    bin: PathBuf,
    logs: PathBuf,
}

impl Run<'_> {
    fn one(&self, rep: usize, w: &str, a: &Allocator) -> Record {
        let log = self.logs.join(format!("{w}.{}.{rep}.log", a.name));
        let file = fs::File::create(&log).expect("create log file");
        let mut cmd = Command::new(&self.bin);
        cmd.arg(w).arg("--scale").arg(self.opts.scale.to_string());
        if let Some(t) = self.opts.threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        if !self.opts.pin {
            cmd.arg("--no-pin");
        }
        cmd.env_remove("LD_PRELOAD");
        if let Some(p) = &a.path {
            cmd.env("LD_PRELOAD", p);
        }
        cmd.stdin(Stdio::null()).stdout(file.try_clone().expect("dup log")).stderr(file);
        let m = measure::run(&mut cmd, Duration::from_secs_f64(self.opts.timeout));
        let out = fs::read_to_string(&log).unwrap_or_default();
        let ok = m.exit == measure::Exit::Code(0) && out.lines().any(|l| l.starts_with("RESULT "));
        let status = if ok {
            "ok".to_string()
        } else {
            let why = out.lines().find(|l| l.starts_with("error:")).or_else(|| out.lines().last()).unwrap_or("").trim();
            let why: String = why.chars().take(160).collect();
            if why.is_empty() {
                format!("{}", m.exit)
            } else {
                format!("{}: {why}", m.exit)
            }
        };
        if ok {
            let _ = fs::remove_file(&log);
        }
        Record {
            rep,
            workload: w.to_string(),
            alloc: a.name.clone(),
            ok,
            status,
            wall: m.wall,
            user: m.user,
            sys: m.sys,
            maxrss_kib: m.maxrss_kib,
            work_s: result_field(&out, "elapsed_s").and_then(|v| v.parse().ok()),
            checksum: result_field(&out, "checksum"),
        }
    }
}

/// Marks runs whose checksum differs from the checksum most runs of that workload agree on:
/// every workload computes the same checksum under every correct allocator.
fn check_checksums(records: &mut [Record]) {
    let mut names: Vec<String> = records.iter().map(|r| r.workload.clone()).collect();
    names.sort();
    names.dedup();
    for w in names {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for r in records.iter().filter(|r| r.workload == w && r.ok) {
            let c = r.checksum.clone().unwrap_or_default();
            match counts.iter_mut().find(|(k, _)| *k == c) {
                Some(e) => e.1 += 1,
                None => counts.push((c, 1)),
            }
        }
        let Some((majority, _)) = counts.iter().max_by_key(|(_, n)| *n).cloned() else { continue };
        for r in records.iter_mut().filter(|r| r.workload == w && r.ok) {
            if r.checksum.as_deref().unwrap_or("") != majority {
                r.ok = false;
                r.status = format!("checksum {} differs from the other runs' {majority}", r.checksum.clone().unwrap_or_default());
            }
        }
    }
}

/// Entry point of `bench`.
pub fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1).collect()) {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    match run(&opts) {
        Ok(failed) if failed > 0 && opts.strict => ExitCode::FAILURE,
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> Result<usize, String> {
    let bin = allocators::exe_dir().join("workloads");
    if !bin.is_file() {
        return Err(format!("{} not found: build with `cargo build --release -p domalloc-bench-suite`", bin.display()));
    }

    // Workloads.
    let all: Vec<&str> = workloads::ALL.iter().map(|w| w.name).collect();
    let wnames: Vec<String> = match &opts.workloads {
        Some(ws) => {
            for w in ws {
                if !all.contains(&w.as_str()) {
                    return Err(format!("unknown workload {w:?}; known: {}", all.join(",")));
                }
            }
            all.iter().filter(|n| ws.iter().any(|w| w == *n)).map(|s| s.to_string()).collect()
        }
        None => all.iter().map(|s| s.to_string()).collect(),
    };

    // Allocators: discover, filter, probe.
    let (found, mut skipped) = allocators::discover(&opts.search);
    let known: Vec<String> = found.iter().map(|a| a.name.clone()).chain(skipped.iter().map(|s| s.name.clone())).collect();
    let wanted = |n: &str| opts.allocators.as_ref().is_none_or(|l| l.iter().any(|x| x == n));
    if let Some(l) = &opts.allocators {
        for n in l {
            if !known.contains(n) {
                return Err(format!("unknown allocator {n:?}; known: {}", known.join(",")));
            }
        }
    }
    skipped.retain(|s| wanted(&s.name));
    for s in skipped.iter_mut() {
        if let Some((_, why)) = opts.skip.iter().find(|(n, _)| *n == s.name) {
            s.why = why.clone();
        }
    }
    let mut allocs: Vec<Allocator> = Vec::new();
    for mut a in found.into_iter().filter(|a| wanted(&a.name)) {
        if let Some((_, why)) = opts.skip.iter().find(|(n, _)| *n == a.name) {
            skipped.push(Skipped { name: a.name.clone(), why: why.clone() });
            continue;
        }
        match allocators::probe(&bin, &mut a) {
            Ok(()) => allocs.push(a),
            Err(why) => skipped.push(Skipped { name: a.name.clone(), why }),
        }
    }
    println!("Allocators:");
    for a in &allocs {
        let path = a.path.as_ref().map_or("(no preload)".into(), |p| p.display().to_string());
        println!("  {:<10} {:<12} {}  [{}]", a.name, a.version, path, a.what);
    }
    for s in &skipped {
        println!("  SKIPPED {}: {}", s.name, s.why);
    }
    if opts.list {
        println!("Workloads:");
        for w in workloads::ALL {
            println!("  {:<14} {}", w.name, w.summary);
        }
        return Ok(0);
    }
    if allocs.is_empty() {
        return Err("no allocator to run".into());
    }
    let names: Vec<String> = allocs.iter().map(|a| a.name.clone()).collect();
    let reference = match &opts.reference {
        Some(r) if names.contains(r) => r.clone(),
        Some(r) => return Err(format!("--reference {r} is not among the allocators run")),
        None => ["mimalloc3", "mimalloc2"].iter().find(|n| names.iter().any(|x| x == *n)).map_or(names[0].clone(), |s| s.to_string()),
    };

    // Output directory.
    let stamp = timestamp();
    let dir = opts.out.join(&stamp);
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    let mut runs_csv = fs::File::create(dir.join("runs.csv")).map_err(|e| e.to_string())?;
    let _ = runs_csv.write_all(report::RUNS_CSV_HEAD.as_bytes());

    let threads = opts.threads.unwrap_or_else(crate::common::default_threads);
    let total = opts.reps * wnames.len() * allocs.len();
    println!(
        "Running {} workloads x {} allocators x {} reps = {total} runs (scale {}, threads {threads}, reference {reference}); results in {}",
        wnames.len(),
        allocs.len(),
        opts.reps,
        opts.scale,
        dir.display()
    );
    let load_start = loadavg();
    let load1: f64 = load_start.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    if load1 > crate::common::default_threads() as f64 * 0.75 {
        println!(
            "WARNING: load average {load_start} on {} CPUs: other processes compete for the CPUs, so wall times \
             will be noisy (CPU times are steadier); results are still interleaved",
            crate::common::default_threads()
        );
    }
    let started = Instant::now();
    let runner = Run { opts, bin: bin.clone(), logs: logs.clone() };
    let mut records = Vec::new();
    let mut n = 0;
    for rep in 0..opts.reps {
        for w in &wnames {
            for a in &allocs {
                n += 1;
                let r = runner.one(rep, w, a);
                let el = started.elapsed().as_secs_f64();
                let eta = el / n as f64 * (total - n) as f64;
                println!(
                    "[{n:>3}/{total}] rep {}/{} {:<13} {:<10} wall {:>7.3}s cpu {:>7.3}s rss {:>7.1} MiB  {}  (elapsed {}, eta {})",
                    rep + 1,
                    opts.reps,
                    w,
                    a.name,
                    r.wall,
                    r.user + r.sys,
                    r.maxrss_kib as f64 / 1024.0,
                    if r.ok { "ok".to_string() } else { format!("FAILED {}", r.status) },
                    secs(el),
                    secs(eta)
                );
                let _ = runs_csv.write_all(report::runs_csv_line(&r).as_bytes());
                records.push(r);
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    check_checksums(&mut records);
    // Rewrite runs.csv with the checksum verdicts.
    let mut csv = report::RUNS_CSV_HEAD.to_string();
    for r in &records {
        csv += &report::runs_csv_line(r);
    }
    fs::write(dir.join("runs.csv"), csv).map_err(|e| e.to_string())?;

    let numa = if opts.numa { numa::run_section(&allocs) } else { numa::NumaOutcome::NotRequested };

    let summary = Summary::new(&wnames, &names, &reference, &records);
    let failed: Vec<&Record> = records.iter().filter(|r| !r.ok).collect();

    // Terminal report.
    println!();
    for w in &wnames {
        println!("== {w} (threads {threads}, medians of {} reps; x ref = ratio to {reference}, lower is better)", opts.reps);
        print!("{}", report::workload_table(&summary, w).text());
        println!();
    }
    println!("== wall time relative to {reference} (lower is better; ! = some runs failed)");
    print!("{}", report::ratio_matrix(&summary, Metric::Wall).text());
    println!("\n== peak RSS relative to {reference}");
    print!("{}", report::ratio_matrix(&summary, Metric::Rss).text());
    println!("\n== geometric means over workloads (ratio to {reference})");
    print!("{}", report::geomean_table(&summary).text());
    if !failed.is_empty() {
        println!("\n== FAILED RUNS ({})", failed.len());
        for r in &failed {
            println!("  {} under {} (rep {}): {}", r.workload, r.alloc, r.rep + 1, r.status);
        }
        println!("  logs: {}", logs.display());
    }
    println!("\nTotal time {} (load average at start {load_start}, at end {})", secs(took), loadavg());

    // Files.
    let md = markdown(opts, &stamp, &allocs, &skipped, &summary, &failed, &numa, took, &load_start, threads);
    let title = format!("Allocator comparison {stamp} — {}", machine());
    let files = [
        ("results.csv", report::summary_csv(&summary), "latest.csv"),
        ("results.md", md, "latest.md"),
        ("results.svg", svg::chart(&summary, &title), "latest.svg"),
    ];
    for (name, body, latest) in &files {
        fs::write(dir.join(name), body).map_err(|e| format!("write {name}: {e}"))?;
        fs::write(opts.out.join(latest), body).map_err(|e| format!("write {latest}: {e}"))?;
    }
    if let Some(csv) = numa.csv() {
        fs::write(dir.join("numa.csv"), &csv).map_err(|e| format!("write numa.csv: {e}"))?;
    }
    if fs::read_dir(&logs).map(|mut d| d.next().is_none()).unwrap_or(false) {
        let _ = fs::remove_dir(&logs);
    }
    println!("Wrote {0}/results.{{csv,md,svg}}, {0}/runs.csv and {1}/latest.{{csv,md,svg}}", dir.display(), opts.out.display());
    Ok(failed.len())
}

#[allow(clippy::too_many_arguments)]
fn markdown(
    opts: &Options,
    stamp: &str,
    allocs: &[Allocator],
    skipped: &[Skipped],
    s: &Summary,
    failed: &[&Record],
    numa: &numa::NumaOutcome,
    took: f64,
    load_start: &str,
    threads: usize,
) -> String {
    let r = &s.reference;
    let mut md = format!("# Allocator comparison — {stamp}\n\n");
    md += &format!(
        "- Command: `{}`\n- Source: {}\n- Machine: {}\n- Settings: {} reps interleaved, scale {}, threads {threads}, pinning {}\n\
- Took {}; load average at start {load_start}, at end {} (other work on the machine skews times)\n\
- Ratios are medians relative to **{r}**; lower is better. `!` = some runs failed, `FAIL` = all failed.\n\n",
        std::env::var("BENCH_COMMAND").unwrap_or_else(|_| format!("bench {}", opts.argv.join(" "))).trim(),
        git_describe(),
        machine(),
        opts.reps,
        opts.scale,
        if opts.pin { "round-robin over cores (hwloc)" } else { "off" },
        secs(took),
        loadavg()
    );
    md += "## Allocators\n\n| name | version | preloaded library | what |\n| :--- | :--- | :--- | :--- |\n";
    for a in allocs {
        let path = a.path.as_ref().map_or("(none)".into(), |p| format!("`{}`", p.display()));
        let version = if a.version.is_empty() { "-" } else { a.version.as_str() };
        md += &format!("| {} | {version} | {path} | {} |\n", a.name, a.what);
    }
    for sk in skipped {
        md += &format!("| {} | SKIPPED | | {} |\n", sk.name, sk.why);
    }
    md += &format!("\n## Wall time relative to {r}\n\n{}", report::ratio_matrix(s, Metric::Wall).markdown());
    md += &format!("\n## CPU time relative to {r}\n\n{}", report::ratio_matrix(s, Metric::Cpu).markdown());
    md += &format!("\n## Peak RSS relative to {r}\n\n{}", report::ratio_matrix(s, Metric::Rss).markdown());
    md += &format!("\n## Geometric means\n\n{}", report::geomean_table(s).markdown());
    md += "\n## Per workload\n\n";
    for w in &s.workloads {
        let summary = workloads::find(w).map_or("", |x| x.summary);
        md += &format!("### {w}\n\n{summary}\n\n{}\n", report::workload_table(s, w).markdown());
    }
    md += "## Failed runs\n\n";
    if failed.is_empty() {
        md += "None.\n";
    } else {
        for f in failed {
            md += &format!("- {} under {} (rep {}): {}\n", f.workload, f.alloc, f.rep + 1, f.status);
        }
    }
    md += &format!("\n## NUMA locality\n\n{}", numa.markdown());
    md += "\n![chart](results.svg)\n";
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even() {
        assert_eq!(report::median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(report::median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(report::median(&mut []), None);
    }

    #[test]
    fn result_line_fields() {
        let out = "noise\nRESULT workload=x elapsed_s=1.5 checksum=0x10 extra=1\n";
        assert_eq!(result_field(out, "elapsed_s").as_deref(), Some("1.5"));
        assert_eq!(result_field(out, "checksum").as_deref(), Some("0x10"));
        assert_eq!(result_field(out, "check"), None);
    }

    #[test]
    fn quick_defaults_and_overrides() {
        let o = parse_args(vec!["--quick".into(), "--reps=5".into()]).unwrap().unwrap();
        assert_eq!((o.reps, o.scale), (5, 0.1));
        assert!(parse_args(vec!["--bogus".into()]).is_err());
    }

    fn rec(w: &str, a: &str, wall: f64, ok: bool) -> Record {
        Record {
            rep: 0,
            workload: w.into(),
            alloc: a.into(),
            ok,
            status: if ok { "ok".into() } else { "exit 1".into() },
            wall,
            user: wall,
            sys: 0.0,
            maxrss_kib: 1024,
            work_s: None,
            checksum: Some("0x1".into()),
        }
    }

    #[test]
    fn ratios_and_geomean() {
        let ws = vec!["a".to_string(), "b".to_string()];
        let al = vec!["ref".to_string(), "x".to_string()];
        let recs = vec![rec("a", "ref", 1.0, true), rec("a", "x", 2.0, true), rec("b", "ref", 2.0, true), rec("b", "x", 1.0, true)];
        let s = Summary::new(&ws, &al, "ref", &recs);
        assert_eq!(s.ratio("a", "x", Metric::Wall), Some(2.0));
        let (g, n) = s.geomean("x", Metric::Wall);
        assert!((g.unwrap() - 1.0).abs() < 1e-12 && n == 2);
        let svg = svg::chart(&s, "t");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn checksum_outlier_is_marked_failed() {
        let mut recs = vec![rec("a", "p", 1.0, true), rec("a", "q", 1.0, true), rec("a", "r", 1.0, true)];
        recs[2].checksum = Some("0x2".into());
        check_checksums(&mut recs);
        assert!(recs[0].ok && recs[1].ok && !recs[2].ok);
    }
}
