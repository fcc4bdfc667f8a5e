//! `bench --icount`: the instruction report (issue 22, item 2), a measurement that machine
//! noise cannot move.
//!
//! Every workload runs once per allocator under callgrind with its cache simulation, at a
//! scaled-down size ([`SCALES`]), with the allocator preloaded as in the main comparison. The
//! workloads binary zeroes callgrind's counters just before the workload starts and dumps them
//! just after it ends ([`crate::callgrind`]), so process start (argument parsing, the hwloc
//! topology) and exit are left out. From that dump the report takes:
//!
//! - **pairs**: the calls of the malloc family made from outside the allocator, counted by
//!   callgrind (`calls=` of the call edges into `malloc`, `free`, `calloc`, `realloc`, the
//!   aligned allocations, operator new/delete): pairs = (allocating calls + freeing calls) / 2,
//!   with `realloc` counted as both;
//! - **allocator instructions**: the inclusive cost of those calls — everything the allocator
//!   executed for them, including what it called (memset for calloc, memcpy for realloc);
//! - **library instructions** (preloaded allocators only): the inclusive cost of every call
//!   into the library from outside, which adds thread start and exit hooks;
//! - **total**: everything the workload executed, allocator included;
//! - D1 and LL misses of the simulated caches ([`CACHES`]: fixed sizes, so that the numbers do
//!   not depend on the machine) for the allocator's calls and for the total;
//!
//! each divided by the pairs, and their ratio to the reference allocator (mimalloc v3).
//! Valgrind runs one thread at a time (`--fair-sched=yes`: in a fixed order) and the runs have
//! no address-space randomisation, so the counts repeat from run to run: exactly for
//! single-threaded workloads; where threads block on each other the interleaving still depends
//! on when the kernel wakes them, and time-based policies (purge delays) on the clock: mostly
//! under 1%, a few percent at worst (bench-suite/README.md). `--reps 2` shows how far they move.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::allocators::{self, Allocator};
use super::callgrind_file::{parse, Cost, Home, Profile};
use super::report::{csv_text, Table};
use super::{measure, Settings};

/// The allocators of the report when `--allocators` does not name them.
pub const DEFAULT_ALLOCATORS: [&str; 2] = ["mimalloc3", "domalloc"];

/// Threads of every workload unless `--threads` says otherwise: a fixed number, so that the
/// counts do not depend on the machine.
pub const THREADS: u64 = 2;

/// The work multiplier of each workload under callgrind (`--scale F` multiplies them): chosen
/// so that each run takes one to three seconds on a 2-core machine and, where the workload
/// allocates at all in its loop, makes 50,000 to 500,000 pairs. `cache-scratch`,
/// `cache-thrash`, `large` and `barnes` make few pairs by design (their time goes into writing
/// memory), so their per-pair numbers carry the cost of the memory the workload touches.
pub const SCALES: &[(&str, f64)] = &[
    ("larson", 0.003),
    ("xmalloc", 0.03),
    ("cache-scratch", 0.004),
    ("cache-thrash", 0.004),
    ("rptest", 0.005),
    ("mstress", 0.005),
    ("cfrac", 0.005),
    ("sh6bench", 0.003),
    ("large", 0.1),
    ("malloc-large", 0.01),
    ("mleak", 0.005),
    ("barnes", 0.01),
    ("espresso", 0.03),
    ("glibc-simple", 0.01),
    ("glibc-thread", 0.01),
    ("alloc-test1", 0.01),
    ("alloc-testN", 0.01),
    ("test-stress", 0.15),
    ("churn", 0.5),
];

/// The simulated caches (callgrind's defaults would copy the host's, which differ between
/// machines): 32 KiB 8-way L1 for instructions and data, 8 MiB 16-way last level, 64-byte lines.
pub const CACHES: [&str; 3] = ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=8388608,16,64"];

/// The callgrind command line before the output file and the program.
pub fn valgrind_args() -> Vec<String> {
    let mut v: Vec<String> =
        ["--tool=callgrind", "--cache-sim=yes", "--fair-sched=yes", "--compress-strings=no", "--compress-pos=no"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    v.extend(CACHES.iter().map(|s| s.to_string()));
    v
}

/// How the probe runs under valgrind ([`allocators::probe_under`]): does the preload still take
/// over `malloc` there?
pub fn probe_wrapper() -> Vec<String> {
    ["valgrind", "-q", "--tool=callgrind", "--callgrind-out-file=/dev/null"].iter().map(|s| s.to_string()).collect()
}

/// The base work multiplier of a workload under callgrind.
pub fn base_scale(workload: &str) -> f64 {
    SCALES.iter().find(|(w, _)| *w == workload).map_or(0.01, |(_, s)| *s)
}

// ---- Running ---------------------------------------------------------------------------------

/// One run: a workload under an allocator.
#[derive(Clone, Debug)]
pub struct Row {
    /// Workload.
    pub workload: String,
    /// Allocator.
    pub alloc: String,
    /// Repetition (0-based).
    pub rep: usize,
    /// Work multiplier used.
    pub scale: f64,
    /// Wall seconds of the valgrind run.
    pub wall: f64,
    /// The workload's checksum.
    pub checksum: Option<String>,
    /// The operations the workload says it made (`ops=` of its RESULT line: mallocs + frees,
    /// exactly for most workloads, roughly for a few).
    pub workload_ops: Option<u64>,
    /// Whether the counts cover the workload only (else the whole process).
    pub section: bool,
    /// The counts, or why there are none.
    pub profile: Result<Profile, String>,
}

/// The callgrind output file of a run (the workload's dump is this name + `.1`).
fn out_file(cg_dir: &Path, w: &str, a: &str, rep: usize) -> PathBuf {
    cg_dir.join(format!("{w}.{a}.{}.callgrind", rep + 1))
}

/// Runs workload `w` under allocator `a` in callgrind and reads its counts.
pub fn run_one(bin: &Path, w: &str, a: &Allocator, scale: f64, threads: u64, cg_file: &Path, timeout: f64) -> Row {
    let log = cg_file.with_extension("log");
    let _ = fs::remove_file(cg_file);
    let part = PathBuf::from(format!("{}.1", cg_file.display()));
    let _ = fs::remove_file(&part);
    let mut row = Row {
        workload: w.into(),
        alloc: a.name.clone(),
        rep: 0,
        scale,
        wall: 0.0,
        checksum: None,
        workload_ops: None,
        section: false,
        profile: Err(String::new()),
    };
    let file = match fs::File::create(&log) {
        Ok(f) => f,
        Err(e) => {
            row.profile = Err(format!("cannot create {}: {e}", log.display()));
            return row;
        }
    };
    let mut cmd = Command::new("valgrind");
    cmd.args(valgrind_args()).arg(format!("--callgrind-out-file={}", cg_file.display())).arg(bin);
    cmd.args([w, "--scale", &scale.to_string(), "--threads", &threads.to_string(), "--no-pin"]);
    a.apply(&mut cmd);
    // SAFETY: personality(2) is a plain system call, safe between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // No address-space randomisation (`setarch -R`): the simulated caches see the same
            // addresses in every run, so the miss counts repeat too. Best effort.
            libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong);
            Ok(())
        });
    }
    match file.try_clone() {
        Ok(f2) => cmd.stdin(Stdio::null()).stdout(f2).stderr(file),
        Err(e) => {
            row.profile = Err(format!("cannot dup the log file: {e}"));
            return row;
        }
    };
    let m = measure::run(&mut cmd, Duration::from_secs_f64(timeout));
    row.wall = m.wall;
    let out = fs::read_to_string(&log).unwrap_or_default();
    row.checksum = super::result_field(&out, "checksum");
    row.workload_ops = super::result_field(&out, "ops").and_then(|v| v.parse().ok());
    if m.exit != measure::Exit::Code(0) || !out.lines().any(|l| l.starts_with("RESULT ")) {
        row.profile = Err(super::compare::failure(&m.exit, &out));
        return row;
    }
    let _ = fs::remove_file(&log);
    row.section = part.is_file();
    let path = if row.section { &part } else { cg_file };
    row.profile =
        fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display())).and_then(|t| parse(&t, &Home::of(a)));
    if let Ok(p) = &row.profile {
        if p.pairs() == 0.0 {
            row.profile = Err("no malloc/free calls counted into the allocator".into());
        }
    }
    row
}

/// `valgrind --version`, or why it cannot run.
pub fn valgrind_version() -> Result<String, String> {
    let out = Command::new("valgrind").arg("--version").output().map_err(|e| {
        format!(
            "valgrind not found ({e}): install it (Debian: apt-get install valgrind; scripts/bench.sh --icount does)"
        )
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// ---- The report ------------------------------------------------------------------------------

/// Per-pair values of one (workload, allocator): the first run that succeeded, with the largest
/// relative difference of the other repetitions.
#[derive(Clone, Debug)]
pub struct Cell {
    /// The run reported.
    pub row: Row,
    /// Largest relative difference of another repetition's per-pair counts (alloc Ir, total Ir,
    /// total D1 misses), if there were more.
    pub spread: Option<f64>,
}

impl Cell {
    fn profile(&self) -> &Profile {
        self.row.profile.as_ref().expect("cells hold successful runs")
    }
    /// Pairs.
    pub fn pairs(&self) -> f64 {
        self.profile().pairs()
    }
    /// Per pair: allocator, library, total.
    pub fn per_pair(&self) -> (Cost, Option<Cost>, Cost) {
        let p = self.profile();
        (p.alloc, p.lib, p.total)
    }
    /// `v` per pair.
    pub fn pp(&self, v: u64) -> f64 {
        v as f64 / self.pairs()
    }
}

/// Which value a ratio compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Allocator instructions per pair.
    AllocIr,
    /// Total instructions per pair.
    TotalIr,
    /// Total D1 misses per pair.
    TotalD1,
    /// Total LL misses per pair.
    TotalLl,
}

impl Measure {
    fn of(self, c: &Cell) -> f64 {
        let p = c.profile();
        let v = match self {
            Measure::AllocIr => p.alloc.ir,
            Measure::TotalIr => p.total.ir,
            Measure::TotalD1 => p.total.d1,
            Measure::TotalLl => p.total.ll,
        };
        c.pp(v)
    }
    /// Column label.
    pub fn label(self) -> &'static str {
        match self {
            Measure::AllocIr => "malloc+free Ir/pair",
            Measure::TotalIr => "total Ir/pair",
            Measure::TotalD1 => "total D1 misses/pair",
            Measure::TotalLl => "total LL misses/pair",
        }
    }
}

/// All runs, arranged by workload and allocator.
pub struct Report {
    /// Workloads in order.
    pub workloads: Vec<String>,
    /// Allocators in order.
    pub allocs: Vec<String>,
    /// The ratio reference.
    pub reference: String,
    /// Every run.
    pub rows: Vec<Row>,
    cells: BTreeMap<(String, String), Cell>,
}

fn rel(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        if a == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (a - b).abs() / b
    }
}

impl Report {
    /// Arranges the runs; a checksum that differs from another allocator's fails the run.
    pub fn new(workloads: Vec<String>, allocs: Vec<String>, reference: String, mut rows: Vec<Row>) -> Report {
        for w in &workloads {
            let sums: Vec<String> = rows
                .iter()
                .filter(|r| &r.workload == w && r.profile.is_ok())
                .filter_map(|r| r.checksum.clone())
                .collect();
            if let Some(first) = sums.first().cloned() {
                if sums.iter().any(|s| *s != first) {
                    for r in rows.iter_mut().filter(|r| &r.workload == w && r.profile.is_ok()) {
                        r.profile = Err(format!("checksums differ between runs ({}): a wrong result", sums.join(", ")));
                    }
                }
            }
        }
        let mut cells = BTreeMap::new();
        for w in &workloads {
            for a in &allocs {
                let ok: Vec<&Row> =
                    rows.iter().filter(|r| &r.workload == w && &r.alloc == a && r.profile.is_ok()).collect();
                let Some(first) = ok.first() else { continue };
                let mut cell = Cell { row: (*first).clone(), spread: None };
                for other in &ok[1..] {
                    let o = Cell { row: (*other).clone(), spread: None };
                    let d = [Measure::AllocIr, Measure::TotalIr, Measure::TotalD1]
                        .iter()
                        .map(|m| rel(m.of(&o), m.of(&cell)))
                        .chain(std::iter::once(rel(o.pairs(), cell.pairs())))
                        .fold(0.0, f64::max);
                    cell.spread = Some(cell.spread.unwrap_or(0.0).max(d));
                }
                cells.insert((w.clone(), a.clone()), cell);
            }
        }
        Report { workloads, allocs, reference, rows, cells }
    }

    /// The cell of a (workload, allocator), if a run succeeded.
    pub fn cell(&self, w: &str, a: &str) -> Option<&Cell> {
        self.cells.get(&(w.to_string(), a.to_string()))
    }

    /// `m` of allocator `a` over the reference's, on workload `w`.
    pub fn ratio(&self, w: &str, a: &str, m: Measure) -> Option<f64> {
        let x = m.of(self.cell(w, a)?);
        let r = m.of(self.cell(w, &self.reference)?);
        (r > 0.0).then(|| x / r)
    }

    /// Geometric mean of the ratios over the workloads where both ran; with their count.
    pub fn geomean(&self, a: &str, m: Measure) -> (Option<f64>, usize) {
        let v: Vec<f64> = self.workloads.iter().filter_map(|w| self.ratio(w, a, m)).filter(|r| *r > 0.0).collect();
        if v.is_empty() {
            return (None, 0);
        }
        ((v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp().into(), v.len())
    }

    /// Runs that failed.
    pub fn failed(&self) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.profile.is_err()).collect()
    }
}

fn num(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn miss(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("-".into(), |r| format!("{r:.3}"))
}

/// The headline table: malloc+free instructions per pair of each allocator and the ratios.
pub fn ir_table(r: &Report) -> Table {
    let others: Vec<&String> = r.allocs.iter().filter(|a| **a != r.reference).collect();
    let mut head = vec!["workload".to_string(), "scale".into(), "pairs".into()];
    head.extend(r.allocs.iter().map(|a| format!("{a} Ir/pair")));
    head.extend(others.iter().map(|a| format!("{a} / {}", r.reference)));
    let mut rows = Vec::new();
    for w in &r.workloads {
        let any = r.allocs.iter().find_map(|a| r.cell(w, a));
        let mut v = vec![
            w.clone(),
            any.map_or("-".into(), |c| format!("{}", c.row.scale)),
            r.cell(w, &r.reference).or(any).map_or("-".into(), |c| format!("{:.0}", c.pairs())),
        ];
        v.extend(r.allocs.iter().map(|a| r.cell(w, a).map_or("FAIL".into(), |c| num(Measure::AllocIr.of(c)))));
        v.extend(others.iter().map(|a| ratio(r.ratio(w, a, Measure::AllocIr))));
        rows.push(v);
    }
    let mut g = vec!["geomean".to_string(), String::new(), String::new()];
    g.extend(r.allocs.iter().map(|_| String::new()));
    g.extend(others.iter().map(|a| ratio(r.geomean(a, Measure::AllocIr).0)));
    rows.push(g);
    Table { head, rows }
}

/// Every (workload, allocator): the per-pair counts and ratios.
pub fn detail_table(r: &Report) -> Table {
    let head = [
        "workload",
        "allocator",
        "pairs",
        "malloc+free Ir",
        "library Ir",
        "total Ir",
        "malloc+free D1",
        "total D1",
        "malloc+free LL",
        "total LL",
        "x ref malloc+free Ir",
        "x ref total Ir",
        "x ref total D1",
        "run s",
        "rep spread",
    ];
    let mut rows = Vec::new();
    for w in &r.workloads {
        for a in &r.allocs {
            let Some(c) = r.cell(w, a) else {
                let why = r
                    .rows
                    .iter()
                    .find(|x| &x.workload == w && &x.alloc == a)
                    .and_then(|x| x.profile.as_ref().err().cloned());
                let mut v = vec![w.clone(), a.clone()];
                v.extend(std::iter::repeat_n("-".to_string(), head.len() - 3));
                v.push(format!("FAIL: {}", why.unwrap_or_else(|| "not run".into())));
                rows.push(v);
                continue;
            };
            let (al, lib, tot) = c.per_pair();
            rows.push(vec![
                w.clone(),
                a.clone(),
                format!("{:.0}", c.pairs()),
                num(c.pp(al.ir)),
                lib.map_or("-".into(), |l| num(c.pp(l.ir))),
                num(c.pp(tot.ir)),
                miss(c.pp(al.d1)),
                miss(c.pp(tot.d1)),
                miss(c.pp(al.ll)),
                miss(c.pp(tot.ll)),
                ratio(r.ratio(w, a, Measure::AllocIr)),
                ratio(r.ratio(w, a, Measure::TotalIr)),
                ratio(r.ratio(w, a, Measure::TotalD1)),
                format!("{:.1}", c.row.wall),
                c.spread.map_or("-".into(), |s| format!("{:.3}%", s * 100.0)),
            ]);
        }
    }
    Table { head: head.iter().map(|h| h.to_string()).collect(), rows }
}

/// Geometric means of the ratios, one line per allocator.
pub fn geomean_lines(r: &Report) -> Vec<String> {
    let ms = [Measure::AllocIr, Measure::TotalIr, Measure::TotalD1, Measure::TotalLl];
    r.allocs
        .iter()
        .filter(|a| **a != r.reference)
        .map(|a| {
            let parts: Vec<String> = ms
                .iter()
                .map(|m| {
                    let (g, n) = r.geomean(a, *m);
                    format!("{} {} ({n} workloads)", m.label(), ratio(g))
                })
                .collect();
            format!("{a} / {}: {}", r.reference, parts.join(", "))
        })
        .collect()
}

/// icount.csv: one row per (workload, allocator, rep) with raw counts and per-pair values, then
/// `geomean` rows.
pub fn csv(r: &Report) -> String {
    let head = [
        "workload",
        "allocator",
        "rep",
        "reference",
        "scale",
        "status",
        "counted",
        "allocs",
        "frees",
        "pairs",
        "alloc_ir",
        "alloc_d1",
        "alloc_ll",
        "lib_ir",
        "lib_d1",
        "lib_ll",
        "total_ir",
        "total_d1",
        "total_ll",
        "alloc_ir_per_pair",
        "lib_ir_per_pair",
        "total_ir_per_pair",
        "alloc_d1_per_pair",
        "total_d1_per_pair",
        "alloc_ll_per_pair",
        "total_ll_per_pair",
        "ratio_alloc_ir",
        "ratio_total_ir",
        "ratio_total_d1",
        "ratio_total_ll",
        "wall_s",
        "checksum",
        "workload_ops",
    ];
    let f6 = |v: f64| format!("{v:.6}");
    let o6 = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    let mut rows = Vec::new();
    for x in &r.rows {
        let mut v = vec![
            x.workload.clone(),
            x.alloc.clone(),
            (x.rep + 1).to_string(),
            r.reference.clone(),
            x.scale.to_string(),
        ];
        match &x.profile {
            Ok(p) => {
                let pairs = p.pairs();
                let pp = |n: u64| f6(n as f64 / pairs);
                let reported = r.cell(&x.workload, &x.alloc).is_some_and(|c| c.row.rep == x.rep);
                let rt = |m| if reported { o6(r.ratio(&x.workload, &x.alloc, m)) } else { String::new() };
                let lib = p.lib.unwrap_or_default();
                let lib_s = |n: u64| if p.lib.is_some() { n.to_string() } else { String::new() };
                v.extend([
                    "ok".to_string(),
                    if x.section { "workload" } else { "process" }.to_string(),
                    p.allocs().to_string(),
                    p.frees().to_string(),
                    format!("{pairs:.1}"),
                    p.alloc.ir.to_string(),
                    p.alloc.d1.to_string(),
                    p.alloc.ll.to_string(),
                    lib_s(lib.ir),
                    lib_s(lib.d1),
                    lib_s(lib.ll),
                    p.total.ir.to_string(),
                    p.total.d1.to_string(),
                    p.total.ll.to_string(),
                    pp(p.alloc.ir),
                    if p.lib.is_some() { pp(lib.ir) } else { String::new() },
                    pp(p.total.ir),
                    pp(p.alloc.d1),
                    pp(p.total.d1),
                    pp(p.alloc.ll),
                    pp(p.total.ll),
                    rt(Measure::AllocIr),
                    rt(Measure::TotalIr),
                    rt(Measure::TotalD1),
                    rt(Measure::TotalLl),
                ]);
            }
            Err(why) => {
                v.push(why.clone());
                v.extend(std::iter::repeat_n(String::new(), head.len() - 8));
            }
        }
        v.push(format!("{:.3}", x.wall));
        v.push(x.checksum.clone().unwrap_or_default());
        v.push(x.workload_ops.map_or(String::new(), |n| n.to_string()));
        rows.push(v);
    }
    for a in r.allocs.iter().filter(|a| **a != r.reference) {
        let mut v = vec!["geomean".to_string(), a.clone(), String::new(), r.reference.clone()];
        v.extend(std::iter::repeat_n(String::new(), 22));
        for m in [Measure::AllocIr, Measure::TotalIr, Measure::TotalD1, Measure::TotalLl] {
            v.push(o6(r.geomean(a, m).0));
        }
        v.extend([String::new(), String::new(), String::new()]);
        rows.push(v);
    }
    csv_text(&head, rows)
}

/// Facts for the Markdown header.
pub struct Header {
    /// Run stamp.
    pub stamp: String,
    /// Command line.
    pub command: String,
    /// Commit.
    pub source: String,
    /// Machine.
    pub machine: String,
    /// valgrind --version.
    pub valgrind: String,
    /// Threads per workload.
    pub threads: u64,
    /// Repetitions.
    pub reps: usize,
    /// `--scale` multiplier of the base scales.
    pub multiplier: f64,
    /// Where the callgrind files are.
    pub cg_dir: PathBuf,
    /// Allocators (name, version, library).
    pub allocs: Vec<(String, String, String)>,
    /// Seconds the report took.
    pub took: f64,
}

/// icount.md.
pub fn markdown(h: &Header, r: &Report) -> String {
    let mut md = format!("# Instruction report (callgrind) — {}\n\n", h.stamp);
    let _ = write!(
        md,
        "- Command: `{}`\n- Source: {}\n- Machine: {} (the counts do not depend on it)\n- {}; `{}`\n\
- Threads {}, {} run(s) per workload and allocator, scales below (`--scale` multiplier {}); took {}\n\
- Counted: the workload itself (callgrind zeroes its counters when the workload starts and dumps \
them when it ends); pairs = (allocating + freeing calls into the allocator from outside it) / 2, \
realloc counting as both; `malloc+free` = inclusive cost of those calls; `library` = every call \
into the preloaded library; `total` = everything the workload executed. D1 = data misses of the \
first level, LL = last-level misses (instructions and data), simulated caches {}.\n\
- Callgrind files (not tracked): `{}` (`callgrind_annotate --inclusive=yes FILE.1`)\n\n",
        h.command,
        h.source,
        h.machine,
        h.valgrind,
        valgrind_args().join(" "),
        h.threads,
        h.reps,
        h.multiplier,
        super::secs(h.took),
        CACHES.join(" "),
        h.cg_dir.display()
    );
    md += "| allocator | version | preloaded library |\n| :--- | :--- | :--- |\n";
    for (n, v, p) in &h.allocs {
        let _ = writeln!(md, "| {n} | {} | {p} |", if v.is_empty() { "-" } else { v });
    }
    let _ =
        write!(md, "\n## malloc+free instructions per pair (ratio to {})\n\n{}", r.reference, ir_table(r).markdown());
    md += "\n## Geometric means of the ratios\n\n";
    for l in geomean_lines(r) {
        let _ = writeln!(md, "- {l}");
    }
    let _ = write!(
        md,
        "\n## Per workload and allocator (per pair; x ref = ratio to {}; rep spread = largest difference between repetitions)\n\n{}",
        r.reference,
        detail_table(r).markdown()
    );
    md += "\n## Failed runs\n\n";
    let failed = r.failed();
    if failed.is_empty() {
        md += "None.\n";
    }
    for f in failed {
        let _ = writeln!(
            md,
            "- {} under {} (run {}): {}",
            f.workload,
            f.alloc,
            f.rep + 1,
            f.profile.as_ref().err().map_or("", |s| s.as_str())
        );
    }
    if r.rows.iter().any(|x| x.profile.is_ok() && !x.section) {
        md += "\nSome runs counted the whole process (no dump of the workload section: client requests are \
implemented for x86_64 only).\n";
    }
    md
}

/// Runs the report; returns the number of failed runs.
pub fn run(s: &Settings, bin: &Path, found: &[Allocator], dir: &Path, stamp: &str) -> Result<usize, String> {
    let valgrind = valgrind_version()?;
    let wnames = super::compare::select_workloads(s)?;
    let wanted = |n: &str| match &s.opts.allocators {
        Some(l) => l.iter().any(|x| x == n),
        None => DEFAULT_ALLOCATORS.contains(&n),
    };
    let wrapper = probe_wrapper();
    let mut allocs = Vec::new();
    for a in found.iter().filter(|a| wanted(&a.name)) {
        let mut a = a.clone();
        match allocators::probe_under(&wrapper, bin, &mut a) {
            Ok(()) => allocs.push(a),
            Err(why) => println!("  SKIPPED {} under valgrind: {why}", a.name),
        }
    }
    if allocs.is_empty() {
        return Err("--icount: no allocator left to run (see above)".into());
    }
    let names: Vec<String> = allocs.iter().map(|a| a.name.clone()).collect();
    let reference = super::reference(s, &names)?;
    let threads = s.opts.threads.unwrap_or(THREADS);
    let reps = s.opts.reps.map_or(1, |r| r as usize);
    let multiplier = s.opts.scale.unwrap_or(1.0);
    let target = allocators::exe_dir().parent().map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
    let cg_dir = target.join("icount").join(stamp);
    fs::create_dir_all(&cg_dir).map_err(|e| format!("cannot create {}: {e}", cg_dir.display()))?;
    let total = wnames.len() * names.len() * reps;
    println!(
        "Instruction report: {} workloads x {} allocators x {reps} = {total} callgrind runs (threads {threads}, reference {reference}); callgrind files in {}",
        wnames.len(),
        names.len(),
        cg_dir.display()
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for rep in 0..reps {
        for w in &wnames {
            let scale = base_scale(w) * multiplier;
            for a in &allocs {
                let mut row = run_one(bin, w, a, scale, threads, &out_file(&cg_dir, w, &a.name, rep), s.timeout);
                row.rep = rep;
                let what = match &row.profile {
                    Ok(p) => format!(
                        "pairs {:>9.0}  malloc+free {:>8} Ir/pair  total {:>8} Ir/pair",
                        p.pairs(),
                        num(p.alloc.ir as f64 / p.pairs()),
                        num(p.total.ir as f64 / p.pairs())
                    ),
                    Err(why) => format!("FAILED {why}"),
                };
                println!("[{:>3}/{total}] {w:<13} {:<10} {:>5.1}s  {what}", rows.len() + 1, a.name, row.wall);
                rows.push(row);
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    let report = Report::new(wnames, names, reference, rows);
    println!("\n== malloc+free instructions per pair (callgrind; ratio to {})", report.reference);
    print!("{}", ir_table(&report).text());
    for l in geomean_lines(&report) {
        println!("  {l}");
    }
    println!("\n== per pair, every allocator");
    print!("{}", detail_table(&report).text());
    let header = Header {
        stamp: stamp.to_string(),
        command: super::command_line(s),
        source: super::git_describe(),
        machine: super::machine(),
        valgrind,
        threads,
        reps,
        multiplier,
        cg_dir: cg_dir.clone(),
        allocs: allocs
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    a.version.clone(),
                    a.path.as_ref().map_or("(none)".into(), |p| format!("`{}`", p.display())),
                )
            })
            .collect(),
        took,
    };
    super::write(&dir.join("icount.md"), &markdown(&header, &report))?;
    super::write(&dir.join("icount.csv"), &csv(&report))?;
    println!("Wrote {0}/icount.md and {0}/icount.csv (took {1})", dir.display(), super::secs(took));
    Ok(report.failed().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_has_a_scale() {
        assert!(SCALES.iter().all(|(w, _)| crate::workloads::find(w).is_some()));
        assert_eq!(SCALES.len(), crate::workloads::ALL.len());
    }

    /// A hand-written dump in callgrind's format: compressed names, a program calling into a
    fn row(w: &str, a: &str, rep: usize, alloc_ir: u64, total_ir: u64, pairs: u64) -> Row {
        let mut p = Profile::default();
        p.calls.insert("malloc".into(), pairs);
        p.calls.insert("free".into(), pairs);
        p.alloc = Cost { ir: alloc_ir, d1: pairs, ll: 0 };
        p.total = Cost { ir: total_ir, d1: 2 * pairs, ll: 0 };
        Row {
            workload: w.into(),
            alloc: a.into(),
            rep,
            scale: 0.01,
            wall: 1.0,
            checksum: Some("0x1".into()),
            workload_ops: Some(2 * pairs),
            section: true,
            profile: Ok(p),
        }
    }

    #[test]
    fn ratios_geomean_spread_and_files() {
        let rows = vec![
            row("a", "ref", 0, 1000, 5000, 10),
            row("a", "x", 0, 2000, 6000, 10),
            row("b", "ref", 0, 1000, 5000, 10),
            row("b", "x", 0, 500, 5000, 10),
            row("b", "x", 1, 505, 5000, 10),
        ];
        let r = Report::new(vec!["a".into(), "b".into()], vec!["ref".into(), "x".into()], "ref".into(), rows);
        assert_eq!(r.ratio("a", "x", Measure::AllocIr), Some(2.0));
        assert_eq!(r.ratio("b", "x", Measure::AllocIr), Some(0.5));
        let (g, n) = r.geomean("x", Measure::AllocIr);
        assert!((g.unwrap() - 1.0).abs() < 1e-12 && n == 2);
        assert!((r.cell("b", "x").unwrap().spread.unwrap() - 0.01).abs() < 1e-12);
        let t = ir_table(&r).text();
        assert!(t.contains("x / ref") && t.contains("2.000") && t.contains("geomean"), "{t}");
        let c = csv(&r);
        assert!(c.starts_with("workload,allocator,rep,reference,scale,status,counted,allocs,frees,pairs,"), "{c}");
        assert!(c.contains("a,x,1,ref,0.01,ok,workload,10,10,10.0,2000,"), "{c}");
        assert!(c.lines().any(|l| l.starts_with("geomean,x,,ref,") && l.contains(",1.000000,")), "{c}");
        let d = detail_table(&r).markdown();
        assert!(d.contains("| b | x | 10 | 50.0 |") && d.contains("1.000%"), "{d}");
    }

    #[test]
    fn differing_checksums_fail_the_workload() {
        let mut rows = vec![row("a", "ref", 0, 1000, 5000, 10), row("a", "x", 0, 2000, 6000, 10)];
        rows[1].checksum = Some("0x2".into());
        let r = Report::new(vec!["a".into()], vec!["ref".into(), "x".into()], "ref".into(), rows);
        assert_eq!(r.failed().len(), 2);
        assert_eq!(r.ratio("a", "x", Measure::AllocIr), None);
    }
}
