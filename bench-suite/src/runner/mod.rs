//! The `bench` runner: every workload under every allocator, repetitions interleaved, with
//! medians (and min–max), ratios to the reference (mimalloc v3, else Debian's mimalloc 2),
//! geometric means, and CSV / Markdown / SVG reports under `results/<date>/` (copied to
//! `results/latest.*`). Further parts: the NUMA locality section (`--numa`), the contention
//! report (`--contention`), the QEMU guest benchmark (`--guest`), real applications
//! (`--apps`) and the instruction report under callgrind (`--icount`).

pub mod allocators;
pub mod apps;
pub mod callgrind_file;
pub mod compare;
pub mod contention;
pub mod guest;
pub mod hpc;
pub mod icount;
pub mod measure;
pub mod numa;
pub mod report;
pub mod svg;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use allocators::{Allocator, Search, Skipped};
use clap::{Parser, ValueEnum};

const ABOUT: &str = "bench: compare allocators on the workloads of this suite (via LD_PRELOAD)";

const LONG_ABOUT: &str = "bench: compare allocators on the workloads of this suite (via LD_PRELOAD).

scripts/bench.sh builds everything first and runs this. Every workload runs under every
allocator, repetitions interleaved (A B C A B C ...). Each run is one child process measured
with wait4: wall time, CPU time (user+sys), peak RSS. Reports give per workload the medians,
min-max and their ratio to the reference allocator (mimalloc v3 if it is available, else
Debian's mimalloc 2), plus geometric means; they are written as CSV, Markdown and SVG under
<out>/<date>/ and copied to <out>/latest.{csv,md,svg} (--quick: <out>/quick/).

Parts (default: main): main = the comparison; numa = NUMA locality in a 2-node QEMU guest
(with main); contention = shared-lock counts of a contention-stats domalloc at 2-64 threads;
guest = test-stress in QEMU guests 1n8 and 4n2; apps = real programs (hpcc, LAMMPS, sqlite3,
gcc, redis); icount = malloc+free instructions and simulated cache misses per pair under
callgrind (deterministic; default allocators domalloc and mimalloc3). --contention, --guest,
--apps and --icount run only their part unless --part names more.";

/// A part of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// The workload comparison (results.{md,csv,svg}, runs.csv).
    Main,
    /// NUMA locality patterns in a 2-node QEMU guest (a section of results.md; numa.csv).
    Numa,
    /// Contention counters of a `contention-stats` domalloc (contention.{md,csv}).
    Contention,
    /// test-stress in QEMU guests (guest.{md,csv}).
    Guest,
    /// Real applications from Debian packages (apps.{md,csv}).
    Apps,
    /// Instructions and simulated cache misses per malloc/free pair under callgrind
    /// (icount.{md,csv}).
    Icount,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        Ok(_) => Err("must be positive".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn name_path(s: &str) -> Result<(String, PathBuf), String> {
    let (n, p) = s.split_once('=').ok_or("takes NAME=PATH")?;
    Ok((n.to_string(), PathBuf::from(p)))
}

fn name_reason(s: &str) -> Result<(String, String), String> {
    let (n, why) = s.split_once('=').unwrap_or((s, "--skip"));
    Ok((n.to_string(), why.to_string()))
}

/// The command line.
#[derive(Clone, Debug, Parser)]
#[command(name = "bench", about = ABOUT, long_about = LONG_ABOUT)]
pub struct Options {
    /// About two minutes: --scale 0.1 --reps 2 --timeout 60, results under <out>/quick/ (explicit options win)
    #[arg(long)]
    pub quick: bool,
    /// Repetitions of each (workload, allocator) [default: 3]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub reps: Option<u64>,
    /// Work multiplier for every workload [default: 1.0]
    #[arg(long, value_parser = positive)]
    pub scale: Option<f64>,
    /// Threads for every workload [default: all CPUs]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: Option<u64>,
    /// Comma-separated subset of: glibc,jemalloc,mimalloc2,mimalloc3,tcmalloc,domalloc (and --lib names)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub allocators: Option<Vec<String>>,
    /// Comma-separated subset of the workloads (see --list)
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub workloads: Option<Vec<String>>,
    /// Ratio reference [default: mimalloc3, else mimalloc2, else the first]
    #[arg(long, value_name = "NAME")]
    pub reference: Option<String>,
    /// libmimalloc3.so [default: $MIMALLOC3_SO, else <target>/mimalloc3/]
    #[arg(long, value_name = "PATH")]
    pub mimalloc3: Option<PathBuf>,
    /// libdomalloc.so [default: $DOMALLOC_SO, else <target>/release/]
    #[arg(long, value_name = "PATH")]
    pub domalloc: Option<PathBuf>,
    /// Add another allocator (or override a built-in one)
    #[arg(long = "lib", value_name = "NAME=PATH", value_parser = name_path)]
    pub libs: Vec<(String, PathBuf)>,
    /// Another column: allocator BASE run with environment variables, e.g.
    /// `domalloc+prof=domalloc:DOMALLOC_PROF=1` (several: `;`-separated; then name it in --allocators)
    #[arg(long = "variant", value_name = "NAME=BASE:VAR=VALUE")]
    pub variants: Vec<allocators::Variant>,
    /// Leave an allocator out, reporting REASON (scripts/bench.sh uses it when a build failed;
    /// `domalloc-contention=REASON` skips the contention part's library)
    #[arg(long, value_name = "NAME=REASON", value_parser = name_reason)]
    pub skip: Vec<(String, String)>,
    /// Results directory [default: <repo>/results; --quick: <repo>/results/quick]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Per-run time limit in seconds [default: 300, --quick 60]
    #[arg(long, value_name = "SECS", value_parser = positive)]
    pub timeout: Option<f64>,
    /// Pin workload threads round-robin over cores (default: unpinned, as the real programs run)
    #[arg(long, conflicts_with = "no_pin")]
    pub pin: bool,
    /// Do not pin workload threads (the default; kept for older command lines)
    #[arg(long)]
    pub no_pin: bool,
    /// Parts to run (comma-separated) [default: main]
    #[arg(long, value_delimiter = ',', value_enum)]
    pub part: Vec<Part>,
    /// Also run the NUMA locality section: the locality patterns of the 2-node QEMU guest
    /// (numa-tests/) under each allocator's LD_PRELOAD (about 30 s per allocator)
    #[arg(long)]
    pub numa: bool,
    /// Run the contention report (--part contention): larson, xmalloc and test-stress at
    /// 2, 8, 32, 64 threads under a domalloc built with --features contention-stats
    #[arg(long)]
    pub contention: bool,
    /// The contention-stats libdomalloc.so [default: $DOMALLOC_CONTENTION_SO, else
    /// <repo>/target/contention/release/libdomalloc.so]
    #[arg(long, value_name = "PATH")]
    pub domalloc_contention: Option<PathBuf>,
    /// Thread counts of the contention part
    #[arg(long, value_delimiter = ',', value_name = "LIST", default_value = "2,8,32,64")]
    pub contention_threads: Vec<u64>,
    /// Run the guest benchmark (--part guest): test-stress at 8 and 32 threads in QEMU guests
    /// 1n8 and 4n2 under glibc, mimalloc3, domalloc and domalloc with DOMALLOC_NUMA=0
    #[arg(long)]
    pub guest: bool,
    /// Run the real applications (--part apps): hpcc, LAMMPS, sqlite3, gcc, redis
    #[arg(long)]
    pub apps: bool,
    /// Run the instruction report (--part icount): every workload, scaled down, under callgrind
    /// with cache simulation; malloc+free instructions and D1/LL misses per pair, ratio to
    /// mimalloc3 (default allocators mimalloc3,domalloc; threads 2; --scale multiplies the
    /// per-workload scales; --reps N repeats to show the counts do not move)
    #[arg(long)]
    pub icount: bool,
    /// Exit 1 if any run failed (default: failures are reported, exit 0)
    #[arg(long)]
    pub strict: bool,
    /// Show the allocators found and the workloads, run nothing
    #[arg(long)]
    pub list: bool,
}

/// What the options resolve to.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The parsed command line.
    pub opts: Options,
    /// Repetitions.
    pub reps: usize,
    /// Work multiplier.
    pub scale: f64,
    /// Per-run limit, seconds.
    pub timeout: f64,
    /// Results root (`<out>`; `<out>/quick` for --quick without --out).
    pub out: PathBuf,
    /// Parts to run, in order.
    pub parts: Vec<Part>,
    /// Where allocators are looked for.
    pub search: Search,
    /// Pin threads.
    pub pin: bool,
    /// The command line as given (for the report).
    pub argv: Vec<String>,
}

impl Settings {
    /// Resolves `--quick` (explicit options win), the output directory and the parts.
    pub fn new(opts: Options, argv: Vec<String>) -> Settings {
        let q = opts.quick;
        let repo_results = repo().join("results");
        let out = opts.out.clone().unwrap_or_else(|| if q { repo_results.join("quick") } else { repo_results });
        let mut parts = opts.part.clone();
        if parts.is_empty() {
            if !(opts.contention || opts.guest || opts.apps || opts.icount) || opts.numa {
                parts.push(Part::Main);
            }
            for (on, p) in [
                (opts.numa, Part::Numa),
                (opts.contention, Part::Contention),
                (opts.guest, Part::Guest),
                (opts.apps, Part::Apps),
                (opts.icount, Part::Icount),
            ] {
                if on {
                    parts.push(p);
                }
            }
        }
        if parts.contains(&Part::Numa) && !parts.contains(&Part::Main) {
            parts.insert(0, Part::Main); // the NUMA section is part of the main report
        }
        parts.dedup();
        let search = Search {
            mimalloc3: opts.mimalloc3.clone(),
            domalloc: opts.domalloc.clone(),
            extra: opts.libs.clone(),
            variants: opts.variants.clone(),
        };
        Settings {
            reps: opts.reps.map_or(if q { 2 } else { 3 }, |r| r as usize),
            scale: opts.scale.unwrap_or(if q { 0.1 } else { 1.0 }),
            timeout: opts.timeout.unwrap_or(if q { 60.0 } else { 300.0 }),
            pin: opts.pin,
            out,
            parts,
            search,
            argv,
            opts,
        }
    }

    /// Whether a part runs.
    pub fn runs(&self, p: Part) -> bool {
        self.parts.contains(&p)
    }

    /// The reason given with `--skip NAME=REASON`, if any.
    pub fn skip_reason(&self, name: &str) -> Option<&str> {
        self.opts.skip.iter().find(|(n, _)| n == name).map(|(_, w)| w.as_str())
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    let r = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    fs::canonicalize(&r).unwrap_or(r)
}

/// `YYYY-MM-DD_HHMMSS` in local time.
pub fn timestamp() -> String {
    jiff::ZonedDateTime::now().strftime("%Y-%m-%d_%H%M%S").to_string()
}

/// CPU model, CPU count and kernel, for report headers.
pub fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel =
        nix::sys::utsname::uname().map_or_else(|_| String::new(), |u| u.release().to_string_lossy().into_owned());
    format!("{cpu}, {} CPUs, Linux {kernel}", crate::common::default_threads())
}

/// The repository's commit (`+ local changes` when the tree is dirty), for the report.
pub fn git_describe() -> String {
    let root = repo();
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

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `12s` or `3m05s`.
pub fn secs(s: f64) -> String {
    if s >= 60.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.0}s")
    }
}

/// Parses `RESULT key=value ...` from a workload's output.
pub fn result_field(out: &str, key: &str) -> Option<String> {
    let line = out.lines().find(|l| l.starts_with("RESULT "))?;
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('='))).map(str::to_string)
}

/// The command that reproduces the run (scripts/bench.sh sets BENCH_COMMAND).
pub fn command_line(s: &Settings) -> String {
    std::env::var("BENCH_COMMAND").unwrap_or_else(|_| format!("bench {}", s.argv.join(" "))).trim().to_string()
}

/// Writes a file, saying which one failed.
pub fn write(path: &Path, body: &str) -> Result<(), String> {
    fs::write(path, body).map_err(|e| format!("write {}: {e}", path.display()))
}

/// The workloads binary next to this one.
pub fn workloads_bin() -> Result<PathBuf, String> {
    let bin = allocators::exe_dir().join("workloads");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} not found: build with `cargo build --release -p domalloc-bench-suite`", bin.display()))
    }
}

/// Finds, filters (`--allocators`, `--skip`) and probes the allocators.
pub fn select_allocators(s: &Settings, bin: &Path) -> Result<(Vec<Allocator>, Vec<Skipped>), String> {
    let (found, mut skipped) = allocators::discover(&s.search);
    let known: Vec<String> =
        found.iter().map(|a| a.name.clone()).chain(skipped.iter().map(|s| s.name.clone())).collect();
    let wanted = |n: &str| s.opts.allocators.as_ref().is_none_or(|l| l.iter().any(|x| x == n));
    for n in s.opts.allocators.iter().flatten() {
        if !known.contains(n) {
            return Err(format!("unknown allocator {n:?}; known: {}", known.join(",")));
        }
    }
    skipped.retain(|sk| wanted(&sk.name));
    for sk in skipped.iter_mut() {
        if let Some(why) = s.skip_reason(&sk.name) {
            sk.why = why.to_string();
        }
    }
    let mut allocs = Vec::new();
    for mut a in found.into_iter().filter(|a| wanted(&a.name)) {
        if let Some(why) = s.skip_reason(&a.name) {
            skipped.push(Skipped { name: a.name.clone(), why: why.to_string() });
            continue;
        }
        match allocators::probe(bin, &mut a) {
            Ok(()) => allocs.push(a),
            Err(why) => skipped.push(Skipped { name: a.name.clone(), why }),
        }
    }
    Ok((allocs, skipped))
}

/// Prints the allocators found and skipped.
pub fn print_allocators(allocs: &[Allocator], skipped: &[Skipped]) {
    println!("Allocators:");
    for a in allocs {
        let path = a.path.as_ref().map_or("(no preload)".into(), |p| p.display().to_string());
        println!("  {:<10} {:<12} {}  [{}]", a.name, a.version, path, a.what);
    }
    for sk in skipped {
        println!("  SKIPPED {}: {}", sk.name, sk.why);
    }
}

/// The ratio reference: `--reference`, else mimalloc3, else mimalloc2, else the first.
pub fn reference(s: &Settings, names: &[String]) -> Result<String, String> {
    match &s.opts.reference {
        Some(r) if names.contains(r) => Ok(r.clone()),
        Some(r) => Err(format!("--reference {r} is not among the allocators run")),
        None => Ok(["mimalloc3", "mimalloc2"]
            .iter()
            .find(|n| names.iter().any(|x| x == *n))
            .map_or(names[0].clone(), |s| s.to_string())),
    }
}

/// Entry point of `bench`.
pub fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let s = Settings::new(Options::parse(), argv);
    match run(&s) {
        Ok(failed) if failed > 0 && s.opts.strict => ExitCode::FAILURE,
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the parts; returns the number of failed runs.
fn run(s: &Settings) -> Result<usize, String> {
    let bin = workloads_bin()?;
    let (allocs, skipped) = select_allocators(s, &bin)?;
    print_allocators(&allocs, &skipped);
    if s.opts.list {
        println!("Workloads (the default set, in report order):");
        for w in crate::workloads::ALL {
            println!("  {:<14} {}", w.name, w.summary);
        }
        let parts: Vec<String> = s.parts.iter().map(|p| format!("{p:?}").to_lowercase()).collect();
        println!("Parts that would run: {}", parts.join(", "));
        return Ok(0);
    }
    if allocs.is_empty() {
        return Err("no allocator to run".into());
    }
    let stamp = timestamp();
    let dir = s.out.join(&stamp);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut failed = 0;
    if s.runs(Part::Main) {
        failed += compare::run(s, &bin, &allocs, &skipped, &dir, &stamp)?;
    }
    if s.runs(Part::Contention) {
        failed += contention::run(s, &bin, &dir)?;
    }
    if s.runs(Part::Guest) {
        failed += guest::run(s, &bin, &allocs, &dir)?;
    }
    if s.runs(Part::Apps) {
        failed += apps::run(s, &allocs, &dir)?;
    }
    if s.runs(Part::Icount) {
        failed += icount::run(s, &bin, &allocs, &dir, &stamp)?;
    }
    println!("Results of this run: {}", dir.display());
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_and_kernel() {
        let t = timestamp();
        let shape: String = t.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect();
        assert_eq!(shape, "9999-99-99_999999", "{t}");
        let m = machine();
        assert!(m.contains(", Linux ") && !m.ends_with("Linux "), "{m}");
    }

    fn settings(args: &[&str]) -> Settings {
        let o = Options::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).unwrap();
        Settings::new(o, args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn quick_defaults_and_overrides() {
        let s = settings(&["--quick", "--reps=5"]);
        assert_eq!((s.reps, s.scale, s.timeout), (5, 0.1, 60.0));
        assert!(s.out.ends_with("results/quick"), "{}", s.out.display());
        let s = settings(&["--quick", "--out", "/tmp/x"]);
        assert_eq!(s.out, PathBuf::from("/tmp/x"));
        assert!(Options::try_parse_from(["bench", "--bogus"]).is_err());
        assert!(Options::try_parse_from(["bench", "--scale", "0"]).is_err());
    }

    #[test]
    fn parts() {
        assert_eq!(settings(&[]).parts, vec![Part::Main]);
        assert_eq!(settings(&["--numa"]).parts, vec![Part::Main, Part::Numa]);
        assert_eq!(settings(&["--contention"]).parts, vec![Part::Contention]);
        assert_eq!(settings(&["--guest", "--apps"]).parts, vec![Part::Guest, Part::Apps]);
        assert_eq!(settings(&["--icount"]).parts, vec![Part::Icount]);
        assert_eq!(settings(&["--part", "main,icount"]).parts, vec![Part::Main, Part::Icount]);
        assert_eq!(settings(&["--part", "main,contention"]).parts, vec![Part::Main, Part::Contention]);
        assert_eq!(settings(&["--part", "numa"]).parts, vec![Part::Main, Part::Numa]);
        let s = settings(&["--lib", "x=/a/b", "--skip", "y=why", "--skip", "z", "--workloads", "a,b"]);
        assert_eq!(s.search.extra, vec![("x".to_string(), PathBuf::from("/a/b"))]);
        assert_eq!((s.skip_reason("y"), s.skip_reason("z")), (Some("why"), Some("--skip")));
        assert_eq!(s.opts.workloads, Some(vec!["a".to_string(), "b".to_string()]));
        let s = settings(&["--variant", "domalloc+prof=domalloc:DOMALLOC_PROF=1;DOMALLOC_PROF_SAMPLE=1M"]);
        let v = &s.search.variants[0];
        assert_eq!((v.name.as_str(), v.base.as_str()), ("domalloc+prof", "domalloc"));
        assert_eq!(v.env, [("DOMALLOC_PROF".into(), "1".into()), ("DOMALLOC_PROF_SAMPLE".into(), "1M".into())]);
        for bad in ["x", "x=domalloc", "x=domalloc:", "x=domalloc:A", "domalloc=domalloc:A=1"] {
            assert!(Options::try_parse_from(["bench", "--variant", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn result_line_fields() {
        let out = "noise\nRESULT workload=x elapsed_s=1.5 checksum=0x10 extra=1\n";
        assert_eq!(result_field(out, "elapsed_s").as_deref(), Some("1.5"));
        assert_eq!(result_field(out, "checksum").as_deref(), Some("0x10"));
        assert_eq!(result_field(out, "check"), None);
    }
}
