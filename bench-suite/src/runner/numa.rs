//! `bench --numa`: the NUMA locality section.
//!
//! For every allocator of the run, boots the 2-node QEMU guest of `numa-tests/` (software
//! emulation, no KVM) through numa-tests' driver (`domalloc_numa_tests::qemu`, i.e.
//! `scripts/qemu/run-guest.sh --c-program --preload <library>`) and runs the guest's locality
//! patterns in it through the C interface (the Rust guest built with the system allocator: plain
//! malloc/calloc/posix_memalign/free) with `LD_PRELOAD=<allocator>` (glibc: no preload). The
//! program asks the guest kernel where each page is (`move_pages` with no target nodes) and
//! prints one `RESULT` line per check; numa-tests folds them per pattern
//! ([`GuestReport::by_pattern`]: the share of pages found on the expected node) and this module
//! renders a Markdown table (rows = patterns, columns = allocators) and CSV rows.
//!
//! Patterns (see numa-tests/README.md): 1 own data, 2 remote free (+ producer/consumer stream
//! with an RSS bound), 3 migration (a thread moves itself A->B), 4 thread turnover (threads on A
//! exit, new ones on B), 5 calloc + parallel first touch. A check passes when >= 99% of its
//! pages are local; a pattern passes when all its checks pass.
//!
//! Environment: `BENCH_NUMA_TOPOLOGY` (default `2n`), `BENCH_NUMA_TIMEOUT` seconds per guest
//! (default 300). Console logs: `numa-tests/work/bench-<topology>-<allocator>.log`.

use std::collections::BTreeMap;

use domalloc_numa_tests::qemu::{self, Boot, Status};
use domalloc_numa_tests::{GuestReport, PatternStats};

use super::allocators::Allocator;

/// Pattern numbers and names, in table order.
const PATTERNS: &[(u32, &str)] = &[
    (1, "1 own data"),
    (2, "2 remote free"),
    (3, "3 migration"),
    (4, "4 thread turnover"),
    (5, "5 calloc + first touch"),
];

/// One allocator's guest run.
#[derive(Clone, Debug)]
pub struct AllocRun {
    /// Allocator name.
    pub name: String,
    /// Per pattern (missing = no checked line for it).
    pub patterns: BTreeMap<u32, PatternStats>,
    /// Why the run is incomplete (guest did not finish, crashes, malloc not replaced), if so.
    pub problem: Option<String>,
    /// Seconds the guest took.
    pub seconds: f64,
}

/// Outcome of the NUMA section, for the Markdown report.
#[derive(Clone, Debug)]
pub enum NumaOutcome {
    /// `--numa` was not given.
    NotRequested,
    /// Requested, but it could not run (with the reason).
    Pending(String),
    /// The guests ran.
    Done {
        /// The topology booted.
        topology: String,
        /// One entry per allocator, in run order.
        runs: Vec<AllocRun>,
    },
}

fn cell_text(c: Option<&PatternStats>) -> String {
    match c {
        None => "-".into(),
        Some(c) if c.failed == 0 => format!("{:.1}% PASS", c.share() * 100.0),
        Some(c) => format!(
            "{:.1}% FAIL ({}/{} checks, worst {:.0}%)",
            c.share() * 100.0,
            c.failed,
            c.passed + c.failed,
            c.min_share * 100.0
        ),
    }
}

impl NumaOutcome {
    /// Markdown paragraph for the report.
    pub fn markdown(&self) -> String {
        match self {
            NumaOutcome::NotRequested => "Not run (pass `--numa`).\n".into(),
            NumaOutcome::Pending(why) => format!("Requested with `--numa` but not run: {why}\n"),
            NumaOutcome::Done { topology, runs } => {
                let mut md = format!(
                    "Locality patterns of the multi-node QEMU guest (`numa-tests/`, topology `{topology}`, TCG), \
run through the C interface (the guest program built with the system allocator) with `LD_PRELOAD=<allocator>` inside the guest. \
Cells: pages on the expected node over all checks of the pattern (move_pages); PASS = every check \
had at least 99% of its pages local. Patterns: see numa-tests/README.md.\n\n"
                );
                md += "| pattern |";
                for r in runs {
                    md += &format!(" {} |", r.name);
                }
                md += "\n| :--- |";
                for _ in runs {
                    md += " ---: |";
                }
                md += "\n";
                for (p, label) in PATTERNS {
                    md += &format!("| {label} |");
                    for r in runs {
                        md += &format!(" {} |", cell_text(r.patterns.get(p)));
                    }
                    md += "\n";
                }
                md += "| patterns passed |";
                for r in runs {
                    let n = PATTERNS
                        .iter()
                        .filter(|(p, _)| r.patterns.get(p).is_some_and(|c| c.failed == 0 && c.passed > 0))
                        .count();
                    md += &format!(" {n}/{} |", PATTERNS.len());
                }
                md += "\n\n";
                for r in runs {
                    md += &format!("- {}: guest {:.0}s", r.name, r.seconds);
                    if let Some(p) = &r.problem {
                        md += &format!("; **{p}**");
                    }
                    md += "\n";
                }
                md
            }
        }
    }

    /// CSV rows (`allocator,topology,pattern,checks,failed,pages,local,share,min_share,pass`),
    /// or `None` when the section did not run.
    pub fn csv(&self) -> Option<String> {
        let NumaOutcome::Done { topology, runs } = self else { return None };
        let head =
            ["allocator", "topology", "pattern", "checks", "failed", "pages", "local", "share", "min_share", "pass"];
        let rows = runs.iter().flat_map(|r| {
            r.patterns.iter().map(move |(p, c)| {
                vec![
                    r.name.clone(),
                    topology.clone(),
                    p.to_string(),
                    (c.passed + c.failed).to_string(),
                    c.failed.to_string(),
                    c.pages.to_string(),
                    c.local.to_string(),
                    format!("{:.4}", c.share()),
                    format!("{:.4}", c.min_share),
                    (c.failed == 0).to_string(),
                ]
            })
        });
        Some(super::report::csv_text(&head, rows))
    }
}

/// Runs the NUMA locality patterns for every allocator in the 2-node QEMU guest.
pub fn run_section(allocs: &[Allocator]) -> NumaOutcome {
    let topology = std::env::var("BENCH_NUMA_TOPOLOGY").unwrap_or_else(|_| "2n".into());
    let timeout = std::env::var("BENCH_NUMA_TIMEOUT").unwrap_or_else(|_| "300".into());
    let workdir = qemu::workdir();
    let mut runs = Vec::new();
    println!("\n== NUMA section: topology {topology}, allocators {}", allocs.len());
    // (`--variant` columns are left out: their variables do not reach the guest.)
    for a in allocs.iter().filter(|a| a.env.is_empty()) {
        let log = workdir.join(format!("bench-{topology}-{}.log", a.name));
        let boot = Boot {
            c_program: true,
            preload: a.path.clone(),
            timeout_s: Some(timeout.clone()),
            workdir: Some(workdir.clone()),
            log: Some(log.clone()),
            ..Boot::new(&topology)
        }
        .args(&["1", "2", "3", "4", "5"]);
        let c = match boot.run() {
            Ok(c) => c,
            Err(e) => return NumaOutcome::Pending(e),
        };
        if let Status::Unavailable(why) = &c.status {
            return NumaOutcome::Pending(format!("run-guest.sh could not run under {}: {why}", a.name));
        }
        let report = GuestReport::parse(&c.text);
        let patterns = report.by_pattern();
        let mut problems = Vec::new();
        if c.status == Status::DidNotFinish || report.summary.is_none() {
            problems.push(format!("guest did not finish (log {})", log.display()));
        }
        if !report.crashes.is_empty() {
            problems.push(format!("{} pattern runs crashed", report.crashes.len()));
        }
        if let Some(p) = &a.path {
            let file = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let from = report.info.iter().find(|l| l.starts_with("INFO allocator=")).map_or("", |l| l.as_str());
            if !from.contains(&format!("malloc_from=/preload/{file}")) {
                problems.push(format!("malloc did not come from the preloaded {file}: {}", from.trim()));
            }
        }
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        let line: Vec<String> = PATTERNS.iter().map(|(p, _)| format!("p{p} {}", cell_text(patterns.get(p)))).collect();
        println!(
            "  {:<10} {:>4.0}s  {}{}",
            a.name,
            c.seconds,
            line.join("  "),
            problem.as_deref().map(|p| format!("  [{p}]")).unwrap_or_default()
        );
        runs.push(AllocRun { name: a.name.clone(), patterns, problem, seconds: c.seconds });
    }
    NumaOutcome::Done { topology, runs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_results_per_pattern() {
        let log = "junk\nRESULT pattern=2 phase=b-alloc pair=0>1 size=4K threads_per_node=1 objects=1 pages=10 local=9 absent=0 share=0.9000 nodes=0:1,1:9 FAIL\n\
RESULT pattern=2 phase=a-alloc pair=0>1 size=4K threads_per_node=1 objects=1 pages=10 local=10 absent=0 share=1.0000 nodes=0:10 PASS\n\
RESULT pattern=1 phase=own pair=all size=16 threads_per_node=1 objects=1 pages=4 local=4 absent=0 share=1.0000 nodes=0:4 PASS\n\
RESULT pattern=3 phase=- pair=- size=- threads_per_node=1 note=x SKIP\nSUMMARY passed=2 failed=1 info=0 crashed=0\n";
        let m = GuestReport::parse(log).by_pattern();
        assert_eq!(m.len(), 2);
        assert_eq!((m[&2].passed, m[&2].failed, m[&2].pages, m[&2].local), (1, 1, 20, 19));
        assert!((m[&2].min_share - 0.9).abs() < 1e-9);
        let out = NumaOutcome::Done {
            topology: "2n".into(),
            runs: vec![AllocRun { name: "x".into(), patterns: m, problem: None, seconds: 1.0 }],
        };
        let md = out.markdown();
        assert!(md.contains("| 1 own data | 100.0% PASS |"), "{md}");
        assert!(md.contains("95.0% FAIL (1/2 checks, worst 90%)"), "{md}");
        assert!(md.contains("| patterns passed | 1/5 |"), "{md}");
        assert!(out.csv().unwrap().contains("x,2n,2,2,1,20,19,0.9500,0.9000,false"));
    }
}
