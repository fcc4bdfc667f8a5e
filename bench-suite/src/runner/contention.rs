//! `bench --contention`: the contention report (issue 16 part 4).
//!
//! Runs larson, xmalloc, test-stress and churn at 2, 8, 32 and 64 threads (oversubscribed on small
//! machines) under a domalloc built with `--features contention-stats`, which prints one line
//! to stderr at exit:
//!
//! ```text
//! domalloc: contention: ops=N locks_domain=N locks_process=N locks_arena=N locks_other=N contended=N futex_waits=N cas_retries=N mmap=N munmap=N madvise=N syscalls_under_domain_lock=N
//! ```
//!
//! (space-separated `key=value` pairs; unknown keys are kept and ignored). The report gives
//! every counter per million operations (`ops` from the line) and checks the targets the
//! allocator must meet, stated in the report header ([`TARGETS`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::allocators::Allocator;
use super::compare::Runner;
use super::report::{csv_text, Table};
use super::Settings;

/// The targets, as stated in the report header.
pub const TARGETS: &str = "Targets (issues 16 and 19): at steady state at most one shared-lock acquisition (domain, \
process-wide, arena or other) per 10,000 malloc/free in the larson-, xmalloc- and churn-like workloads \
(`steady/10k` <= 1: the library counts apart the locks taken while a thread starts or exits and while it follows \
a move to another node), flat in the thread count; no system call is made while a domain lock is held \
(`syscalls_under_domain_lock` = 0).";

/// The workloads of the report.
pub const WORKLOADS: [&str; 4] = ["larson", "xmalloc", "test-stress", "churn"];

/// Work multiplier of the contention runs (--quick: a fifth of it).
const SCALE: f64 = 0.2;

/// The counters of one `domalloc: contention:` line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters(pub BTreeMap<String, u64>);

impl Counters {
    /// A counter (0 when absent).
    pub fn get(&self, k: &str) -> u64 {
        self.0.get(k).copied().unwrap_or(0)
    }
    /// Domain + process-wide lock acquisitions.
    pub fn shared_locks(&self) -> u64 {
        self.get("locks_domain") + self.get("locks_process")
    }
    /// Lock acquisitions at steady state (every kind; not while a thread starts, exits or
    /// follows a node move), or all of them from a library that does not split them.
    pub fn steady_locks(&self) -> u64 {
        if self.0.contains_key("locks_steady") {
            self.get("locks_steady")
        } else {
            self.shared_locks() + self.get("locks_arena") + self.get("locks_other")
        }
    }
    /// mmap + munmap + madvise + move_pages + mbind (the last two: 0 from a library that does
    /// not count them).
    pub fn syscalls(&self) -> u64 {
        self.get("mmap") + self.get("munmap") + self.get("madvise") + self.get("move_pages") + self.get("mbind")
    }
    /// `v` per million operations.
    pub fn per_mop(&self, v: u64) -> Option<f64> {
        let ops = self.get("ops");
        (ops > 0).then(|| v as f64 * 1e6 / ops as f64)
    }
}

/// Parses the last `domalloc: contention: ` line of a run's output.
pub fn parse(out: &str) -> Option<Counters> {
    let line = out.lines().rev().find_map(|l| l.split_once("domalloc: contention: ").map(|(_, r)| r))?;
    let mut m = BTreeMap::new();
    for kv in line.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        if let Ok(v) = v.parse::<u64>() {
            m.insert(k.to_string(), v);
        }
    }
    m.contains_key("ops").then_some(Counters(m))
}

/// One row: a workload at a thread count.
#[derive(Clone, Debug)]
pub struct Row {
    /// Workload.
    pub workload: String,
    /// Threads asked for (`--threads`).
    pub threads: u64,
    /// Wall seconds of the run.
    pub wall: f64,
    /// The counters, or why there are none.
    pub counters: Result<Counters, String>,
}

fn f(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// Whether a row meets the targets (`None` = no counters).
fn verdict(r: &Row) -> Option<&'static str> {
    let c = r.counters.as_ref().ok()?;
    let per10k = c.steady_locks() as f64 * 1e4 / c.get("ops").max(1) as f64;
    let lock_target = r.workload != "test-stress";
    Some(match (lock_target && per10k > 1.0, c.get("syscalls_under_domain_lock") > 0) {
        (false, false) => "ok",
        (true, false) => "OVER (locks)",
        (false, true) => "OVER (syscall under lock)",
        (true, true) => "OVER (locks, syscall under lock)",
    })
}

/// The table: counters per million operations.
pub fn table(rows: &[Row]) -> Table {
    let head = [
        "workload",
        "threads",
        "wall s",
        "Mops",
        "domain/Mop",
        "process/Mop",
        "arena/Mop",
        "other/Mop",
        "shared/10k",
        "steady/10k",
        "start+exit/Mop",
        "contended/Mop",
        "futex waits/Mop",
        "CAS retries/Mop",
        "syscalls/Mop",
        "syscalls_under_domain_lock",
        "target",
    ];
    let rows = rows
        .iter()
        .map(|r| {
            let mut v = vec![r.workload.clone(), r.threads.to_string(), format!("{:.2}", r.wall)];
            match &r.counters {
                Ok(c) => {
                    v.push(format!("{:.2}", c.get("ops") as f64 / 1e6));
                    for k in ["locks_domain", "locks_process", "locks_arena", "locks_other"] {
                        v.push(f(c.per_mop(c.get(k))));
                    }
                    v.push(f(c.per_mop(c.shared_locks()).map(|x| x / 100.0)));
                    v.push(f(c.per_mop(c.steady_locks()).map(|x| x / 100.0)));
                    v.push(f(c.per_mop(c.get("locks_thread_start_exit"))));
                    for k in ["contended", "futex_waits", "cas_retries"] {
                        v.push(f(c.per_mop(c.get(k))));
                    }
                    v.push(f(c.per_mop(c.syscalls())));
                    v.push(c.get("syscalls_under_domain_lock").to_string());
                    v.push(verdict(r).unwrap_or("-").to_string());
                }
                Err(why) => {
                    v.extend(std::iter::repeat_n("-".to_string(), 13));
                    v.push(format!("no counters: {why}"));
                }
            }
            v
        })
        .collect();
    Table { head: head.iter().map(|h| h.to_string()).collect(), rows }
}

/// Per workload: shared locks per op at the most threads over the fewest (1.0 = flat).
pub fn flatness(rows: &[Row]) -> Vec<(String, Option<f64>)> {
    let mut out = Vec::new();
    for w in WORKLOADS {
        let per_op: Vec<(u64, f64)> = rows
            .iter()
            .filter(|r| r.workload == w)
            .filter_map(|r| {
                r.counters.as_ref().ok().map(|c| (r.threads, c.shared_locks() as f64 / c.get("ops").max(1) as f64))
            })
            .collect();
        let lo = per_op.iter().min_by_key(|x| x.0);
        let hi = per_op.iter().max_by_key(|x| x.0);
        let ratio = match (lo, hi) {
            (Some(l), Some(h)) if l.0 != h.0 && l.1 > 0.0 => Some(h.1 / l.1),
            (Some(l), Some(h)) if l.0 != h.0 && h.1 == 0.0 => Some(1.0),
            _ => None,
        };
        out.push((w.to_string(), ratio));
    }
    out
}

/// The CSV: every counter of the line, raw and per million ops.
pub fn csv(rows: &[Row]) -> String {
    let mut keys: Vec<String> =
        rows.iter().filter_map(|r| r.counters.as_ref().ok()).flat_map(|c| c.0.keys().cloned()).collect();
    for k in [
        "ops",
        "locks_domain",
        "locks_process",
        "locks_arena",
        "locks_other",
        "contended",
        "futex_waits",
        "cas_retries",
        "mmap",
        "munmap",
        "madvise",
        "syscalls_under_domain_lock",
    ] {
        keys.push(k.to_string());
    }
    keys.sort();
    keys.dedup();
    let mut head: Vec<String> = ["workload", "threads", "wall_s", "status"].map(String::from).to_vec();
    head.extend(keys.iter().cloned());
    head.extend(keys.iter().filter(|k| *k != "ops").map(|k| format!("{k}_per_mop")));
    head.push("target".into());
    let data = rows.iter().map(|r| {
        let mut v = vec![r.workload.clone(), r.threads.to_string(), format!("{:.4}", r.wall)];
        match &r.counters {
            Ok(c) => {
                v.push("ok".into());
                v.extend(keys.iter().map(|k| c.get(k).to_string()));
                v.extend(
                    keys.iter()
                        .filter(|k| *k != "ops")
                        .map(|k| c.per_mop(c.get(k)).map_or(String::new(), |x| format!("{x:.3}"))),
                );
                v.push(verdict(r).unwrap_or("").to_string());
            }
            Err(why) => {
                v.push(why.clone());
                v.extend(std::iter::repeat_n(String::new(), 2 * keys.len()));
            }
        }
        v
    });
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    csv_text(&head, data)
}

/// The Markdown report.
pub fn markdown(s: &Settings, lib: &str, rows: &[Row]) -> String {
    let mut md = format!(
        "# Contention report — {}\n\n{TARGETS}\n\n- Command: `{}`\n- Source: {}\n- Machine: {}\n- Library: `{lib}` (built with `--features contention-stats`)\n\
- Workloads at scale {}: larson-, xmalloc- (N producers + N consumers), test-stress-like (5 rounds) and churn; counters per million \
malloc/free operations (`ops` from the library's line). `steady/10k` = lock acquisitions of every kind at steady state (not while \
a thread starts, exits or follows a node move) per 10,000 operations; `start+exit/Mop` the locks of thread start and exit. \
`shared/10k` = domain + process-wide lock acquisitions per \
10,000 operations. The lock target applies to larson, xmalloc and churn.\n\n",
        super::timestamp(),
        super::command_line(s),
        super::git_describe(),
        super::machine(),
        contention_scale(s)
    );
    md += &table(rows).markdown();
    md += "\nShared locks per operation at the most threads relative to the fewest (1.00 = flat):\n\n";
    for (w, r) in flatness(rows) {
        md += &format!("- {w}: {}\n", r.map_or("-".to_string(), |r| format!("{r:.2}")));
    }
    md
}

fn contention_scale(s: &Settings) -> f64 {
    if s.opts.scale.is_some() {
        s.scale
    } else if s.opts.quick {
        SCALE / 5.0
    } else {
        SCALE
    }
}

/// The contention-stats library: `--domalloc-contention`, `$DOMALLOC_CONTENTION_SO`, or
/// `<repo>/target/contention/release/libdomalloc.so`.
pub fn library(s: &Settings) -> PathBuf {
    s.opts
        .domalloc_contention
        .clone()
        .or_else(|| std::env::var_os("DOMALLOC_CONTENTION_SO").map(PathBuf::from))
        .unwrap_or_else(|| super::repo().join("target/contention/release/libdomalloc.so"))
}

/// Runs the part; returns the number of failed runs.
pub fn run(s: &Settings, bin: &Path, dir: &Path) -> Result<usize, String> {
    let lib = library(s);
    println!("\n== Contention report ({})", lib.display());
    if let Some(why) = s.skip_reason("domalloc-contention") {
        println!("  SKIPPED: {why}");
        super::write(&dir.join("contention.md"), &format!("# Contention report\n\n{TARGETS}\n\nNot run: {why}\n"))?;
        return Ok(0);
    }
    if !lib.is_file() {
        let why = format!(
            "{} not found (build it: CARGO_TARGET_DIR=target/contention cargo build --release -p domalloc-ffi --features contention-stats)",
            lib.display()
        );
        println!("  SKIPPED: {why}");
        super::write(&dir.join("contention.md"), &format!("# Contention report\n\n{TARGETS}\n\nNot run: {why}\n"))?;
        return Ok(0);
    }
    let scale = contention_scale(s);
    let mut settings = s.clone();
    settings.scale = scale;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let runner = Runner { s: &settings, bin: bin.to_path_buf(), logs };
    let a = Allocator {
        name: "domalloc-contention".into(),
        path: Some(lib.clone()),
        what: String::new(),
        version: String::new(),
        env: Vec::new(),
    };
    let mut rows = Vec::new();
    let mut failed = 0;
    for w in WORKLOADS {
        for &t in &s.opts.contention_threads {
            let mut args = vec!["--threads".to_string(), t.to_string()];
            if w == "test-stress" {
                // 5 rounds of thread creation instead of 25: 64 oversubscribed threads stay short.
                args.extend(["--iterations".to_string(), "5".to_string()]);
            }
            let (rec, out) = runner.one_with(0, w, &a, &args, &[]);
            let counters = if !rec.ok {
                failed += 1;
                Err(format!("run failed: {}", rec.status))
            } else {
                parse(&out).ok_or_else(|| {
                    "no `domalloc: contention:` line (library built without --features contention-stats?)".to_string()
                })
            };
            let row = Row { workload: w.into(), threads: t, wall: rec.wall, counters };
            print!(
                "{}",
                table(std::slice::from_ref(&row)).text().lines().nth(1).map(|l| format!("  {l}\n")).unwrap_or_default()
            );
            rows.push(row);
        }
    }
    println!("\n{}", table(&rows).text());
    println!("{TARGETS}");
    super::write(&dir.join("contention.md"), &markdown(s, &lib.display().to_string(), &rows))?;
    super::write(&dir.join("contention.csv"), &csv(&rows))?;
    println!("Wrote {0}/contention.md and {0}/contention.csv", dir.display());
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str =
        "domalloc: contention: ops=2000000 locks_domain=150 locks_process=50 locks_arena=1000 locks_other=3 \
contended=20 futex_waits=7 cas_retries=400 mmap=10 munmap=4 madvise=6 syscalls_under_domain_lock=2 new_key=9 \
locks_steady=200 locks_thread_start_exit=1003";

    #[test]
    fn parses_the_documented_line_and_unknown_keys() {
        let out = format!("RESULT workload=larson ...\n{LINE}\n");
        let c = parse(&out).unwrap();
        assert_eq!((c.get("ops"), c.shared_locks(), c.syscalls(), c.get("new_key")), (2_000_000, 200, 20, 9));
        assert_eq!(c.per_mop(c.get("futex_waits")), Some(3.5));
        assert!(parse("domalloc: contention: locks_domain=1\n").is_none(), "a line without ops is not usable");
        assert!(parse("no line here\n").is_none());
    }

    #[test]
    fn table_csv_and_targets() {
        let c = parse(LINE).unwrap();
        let ok = Counters(
            c.0.iter().map(|(k, v)| (k.clone(), if k == "syscalls_under_domain_lock" { 0 } else { *v })).collect(),
        );
        let rows = vec![
            Row { workload: "larson".into(), threads: 2, wall: 1.0, counters: Ok(ok.clone()) },
            Row { workload: "larson".into(), threads: 64, wall: 2.0, counters: Ok(c.clone()) },
            Row { workload: "xmalloc".into(), threads: 2, wall: 1.0, counters: Err("run failed".into()) },
        ];
        let t = table(&rows).text();
        // 200 shared locks per 2M ops = 100 per Mop = 1.00 per 10k: on the target.
        assert!(
            t.contains("larson")
                && t.contains("1.00")
                && t.contains("75.00")
                && t.contains("OVER (syscall under lock)"),
            "{t}"
        );
        assert!(t.lines().nth(1).unwrap().ends_with("ok"), "{t}");
        assert!(t.contains("no counters: run failed"), "{t}");
        assert_eq!(flatness(&rows)[0], ("larson".to_string(), Some(1.0)));
        let csv = csv(&rows);
        assert!(csv.lines().next().unwrap().contains("locks_domain_per_mop") && csv.contains("new_key"), "{csv}");
        assert!(csv.contains("larson,64,2.0000,ok,"), "{csv}");
    }
}
