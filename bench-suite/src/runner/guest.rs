//! `bench --guest`: the test-stress and churn workloads inside QEMU guests (issues 16 and 19),
//! with the guest kernel's TLB-shootdown, function-call-interrupt and page-fault counts.
//!
//! The user's measurement that started issue 16: mimalloc's test-stress at 32 threads in a
//! guest with 8 vCPUs (TCG on 2 host cores) took 36 s with glibc, 12 s with mimalloc and
//! 110-228 s with domalloc. This part reproduces the setting with the suite's `test-stress`
//! workload, booting `scripts/qemu/run-guest.sh` (through numa-tests' driver,
//! `domalloc_numa_tests::qemu`) once per topology — `1n8` (one node, 8 vCPUs) and `4n2` (4 nodes
//! x 2 vCPUs) — and running every allocator at 8 and 32 threads in that one boot: glibc,
//! mimalloc v3, domalloc, and domalloc with `DOMALLOC_NUMA=0`.
//!
//! One boot runs several allocators because the guest program is a generated shell script that
//! runs each (workload, threads, allocator) cell, printing one `GUESTBENCH` line per run with the
//! guest-measured seconds (the workload's own `elapsed_s`). The workloads binary and the preload
//! libraries are copied into the guest at their host paths, with every shared library they need
//! (`run-guest.sh --file`); a script payload runs like a static program.
//!
//! Environment: `BENCH_GUEST_LOAD` / `BENCH_GUEST_ITERATIONS` (test-stress's load and rounds;
//! default 2 / 2, --quick 1 / 1), `BENCH_GUEST_THREADS` (default `8,32`), `BENCH_GUEST_TOPOLOGIES`
//! (default `1n8,4n2`), `BENCH_GUEST_TIMEOUT` seconds per guest (default 1200). Console logs:
//! `numa-tests/work/bench-guest/bench-guest-<topology>.log`.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use domalloc_numa_tests::qemu::{self, Boot};

use super::allocators::Allocator;
use super::report::csv_text;
use super::Settings;

/// One guest allocator: its name, preload library (none for glibc) and extra environment.
#[derive(Clone, Debug)]
pub struct GuestAlloc {
    /// Column name.
    pub name: String,
    /// The host library to preload.
    pub lib: Option<PathBuf>,
    /// `K=V` for the run.
    pub env: Option<String>,
}

/// One cell's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// Topology.
    pub topology: String,
    /// Workload.
    pub workload: String,
    /// Threads.
    pub threads: u64,
    /// Allocator column.
    pub alloc: String,
    /// Guest-measured seconds, or what went wrong.
    pub seconds: Result<f64, String>,
    /// Counts the guest kernel kept during the run (deltas of `/proc/interrupts` and
    /// `/proc/vmstat`): TLB shootdowns, function-call interrupts, page faults.
    pub counts: Option<Counts>,
}

/// What the guest kernel counted during one run: counts that noise cannot move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// TLB shootdown interrupts, all CPUs (`TLB:` line).
    pub tlb: u64,
    /// Function-call interrupts, all CPUs (`CAL:` line).
    pub cal: u64,
    /// Page faults (`pgfault`).
    pub faults: u64,
}

/// A workload of the guest runs and its arguments (besides `--threads`).
#[derive(Clone, Debug)]
pub struct GuestWorkload {
    /// Workload name.
    pub name: String,
    /// Its arguments.
    pub args: String,
}

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

/// The allocators of the guest runs: those of the run that are glibc, mimalloc3 or domalloc
/// (domalloc also with `DOMALLOC_NUMA=0`), and any other `domalloc-*` library given with
/// `--lib` (an older build, or a contention-stats build whose counter line the guest prints).
pub fn guest_allocs(allocs: &[Allocator]) -> Vec<GuestAlloc> {
    let mut v = Vec::new();
    for a in allocs {
        match a.name.as_str() {
            "glibc" | "mimalloc3" => v.push(GuestAlloc { name: a.name.clone(), lib: a.path.clone(), env: None }),
            "domalloc" => {
                v.push(GuestAlloc { name: "domalloc".into(), lib: a.path.clone(), env: None });
                v.push(GuestAlloc {
                    name: "domalloc-nonuma".into(),
                    lib: a.path.clone(),
                    env: Some("DOMALLOC_NUMA=0".into()),
                });
                // More columns of the same library with other options:
                // BENCH_GUEST_VARIANTS="domalloc-reuse:DOMALLOC_FIRST_TOUCH=reuse,...".
                for var in
                    std::env::var("BENCH_GUEST_VARIANTS").unwrap_or_default().split(',').filter(|s| !s.is_empty())
                {
                    if let Some((name, env)) = var.split_once(':') {
                        v.push(GuestAlloc { name: name.into(), lib: a.path.clone(), env: Some(env.replace(';', " ")) });
                    }
                }
            }
            n if n.starts_with("domalloc-") => {
                v.push(GuestAlloc { name: a.name.clone(), lib: a.path.clone(), env: None })
            }
            _ => {}
        }
    }
    v
}

/// The shell commands that run every cell in the guest: each (workload, threads, allocator)
/// once, with the kernel's TLB-shootdown, function-call-interrupt and page-fault counts read
/// before and after.
pub fn guest_script(bin: &Path, allocs: &[GuestAlloc], threads: &[u64], workloads: &[GuestWorkload]) -> String {
    let bin = bin.display();
    let mut s = String::from("#!/bin/sh\n# Generated by `bench --guest`: every cell once (the workloads and libraries are where they are\n# on the host: run-guest.sh --file).\necho \"GUESTBENCH-START cpus=$(nproc)\"\n");
    s += "irq() { awk -v k=\"$1:\" '$1 == k { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i } END { print n + 0 }' /proc/interrupts; }\n";
    s += "counts() { echo \"$(irq TLB) $(irq CAL) $(awk '$1 == \"pgfault\" { print $2 }' /proc/vmstat)\"; }\n";
    for a in allocs {
        let pre = a.lib.as_ref().map_or(String::new(), |l| l.display().to_string());
        let _ = writeln!(s, "echo \"GUESTPROBE alloc={} $(LD_PRELOAD={pre} {bin} probe 2>&1 | tail -n 1)\"", a.name);
    }
    for w in workloads {
        for t in threads {
            for a in allocs {
                let pre = a.lib.as_ref().map_or(String::new(), |l| l.display().to_string());
                let env = a.env.clone().unwrap_or_default();
                let _ = writeln!(
                    s,
                    "set -- $(counts); out=$(env {env} LD_PRELOAD={pre} {bin} {wl} --threads {t} {args} 2>&1); rc=$?\n\
set -- $1 $2 $3 $(counts)\n\
echo \"GUESTBENCH alloc={an} workload={wl} threads={t} rc=$rc tlb=$(($4 - $1)) cal=$(($5 - $2)) faults=$(($6 - $3)) $(echo \"$out\" | grep '^RESULT' | head -n 1)\"\n\
echo \"$out\" | grep '^domalloc: contention:' | sed 's/^/GUESTBENCH-CONTENTION alloc={an} workload={wl} threads={t} /'\n\
[ $rc = 0 ] || echo \"GUESTBENCH-LOG alloc={an} workload={wl} threads={t} $(echo \"$out\" | tail -n 3 | tr '\\n' ' ')\"",
                    wl = w.name,
                    args = w.args,
                    an = a.name,
                );
            }
        }
    }
    s += "echo GUESTBENCH-END\n";
    s
}

/// Folds the `GUESTBENCH` lines of a console log into cells.
pub fn parse_console(topology: &str, console: &str) -> Vec<Cell> {
    let mut cells = Vec::new();
    for line in console.lines() {
        let Some(i) = line.find("GUESTBENCH alloc=") else { continue };
        let toks: Vec<&str> = line[i + 11..].split_whitespace().collect();
        let field = |k: &str| toks.iter().find_map(|t| t.strip_prefix(k)?.strip_prefix('='));
        let (Some(alloc), Some(threads)) = (field("alloc"), field("threads").and_then(|t| t.parse().ok())) else {
            continue;
        };
        let seconds = match (field("rc"), field("elapsed_s").and_then(|v| v.parse::<f64>().ok())) {
            (Some("0"), Some(s)) => Ok(s),
            (rc, _) => Err(format!("FAIL (exit {})", rc.unwrap_or("?"))),
        };
        let num = |k: &str| field(k).and_then(|v| v.parse::<u64>().ok());
        let counts = match (num("tlb"), num("cal"), num("faults")) {
            (Some(tlb), Some(cal), Some(faults)) => Some(Counts { tlb, cal, faults }),
            _ => None,
        };
        let workload = field("workload").unwrap_or("test-stress").to_string();
        cells.push(Cell { topology: topology.into(), workload, threads, alloc: alloc.into(), seconds, counts });
    }
    cells
}

fn cell<'a>(cells: &'a [Cell], topo: &str, w: &str, t: u64, a: &str) -> Option<&'a Cell> {
    cells.iter().find(|c| c.topology == topo && c.workload == w && c.threads == t && c.alloc == a)
}

/// Markdown table: rows (topology, workload, threads), columns allocators: seconds and ratio to
/// mimalloc3, then the kernel's counts (TLB shootdowns / function-call interrupts / page faults).
pub fn markdown_table(cells: &[Cell], allocs: &[String]) -> String {
    let mut rows: Vec<(String, String, u64)> =
        cells.iter().map(|c| (c.topology.clone(), c.workload.clone(), c.threads)).collect();
    rows.dedup();
    let mut head = vec!["topology".to_string(), "workload".to_string(), "threads".to_string()];
    head.extend(allocs.iter().cloned());
    head.extend(allocs.iter().map(|a| format!("{a}: TLB / CAL / faults")));
    let body = rows
        .iter()
        .map(|(topo, w, t)| {
            let reference = cell(cells, topo, w, *t, "mimalloc3").and_then(|c| c.seconds.clone().ok());
            let mut r = vec![topo.clone(), w.clone(), t.to_string()];
            for a in allocs {
                r.push(match cell(cells, topo, w, *t, a).map(|c| &c.seconds) {
                    None => "-".into(),
                    Some(Err(e)) => e.clone(),
                    Some(Ok(s)) => match reference {
                        Some(m) if m > 0.0 => format!("{s:.2} s ({:.2}x)", s / m),
                        _ => format!("{s:.2} s"),
                    },
                });
            }
            for a in allocs {
                r.push(match cell(cells, topo, w, *t, a).and_then(|c| c.counts) {
                    None => "-".into(),
                    Some(k) => format!("{} / {} / {}", k.tlb, k.cal, k.faults),
                });
            }
            r
        })
        .collect();
    super::report::Table { head, rows: body }.markdown()
}

/// Runs the part; returns the number of failed cells.
pub fn run(s: &Settings, bin: &Path, allocs: &[Allocator], dir: &Path) -> Result<usize, String> {
    let gallocs = guest_allocs(allocs);
    println!("\n== Guest benchmark: test-stress in QEMU guests ({} allocators)", gallocs.len());
    let quick = s.opts.quick;
    let load: u64 = env_or("BENCH_GUEST_LOAD", if quick { "1" } else { "2" })
        .parse()
        .map_err(|e| format!("BENCH_GUEST_LOAD: {e}"))?;
    let iterations: u64 = env_or("BENCH_GUEST_ITERATIONS", if quick { "1" } else { "2" })
        .parse()
        .map_err(|e| format!("BENCH_GUEST_ITERATIONS: {e}"))?;
    let churn_rounds = env_or("BENCH_GUEST_CHURN_ROUNDS", if quick { "1" } else { "5" });
    let workloads: Vec<GuestWorkload> = env_or("BENCH_GUEST_WORKLOADS", "test-stress,churn")
        .split(',')
        .map(|w| match w.trim() {
            "test-stress" => Ok(GuestWorkload {
                name: "test-stress".into(),
                args: format!("--load {load} --iterations {iterations}"),
            }),
            "churn" => {
                Ok(GuestWorkload { name: "churn".into(), args: format!("--load 20 --iterations {churn_rounds}") })
            }
            other => Err(format!("BENCH_GUEST_WORKLOADS: {other}: the guest part runs test-stress and churn")),
        })
        .collect::<Result<_, _>>()?;
    let threads: Vec<u64> =
        env_or("BENCH_GUEST_THREADS", "8,32").split(',').filter_map(|t| t.trim().parse().ok()).collect();
    let topologies: Vec<String> =
        env_or("BENCH_GUEST_TOPOLOGIES", "1n8,4n2").split(',').map(|t| t.trim().to_string()).collect();
    let timeout = env_or("BENCH_GUEST_TIMEOUT", "1200");
    let work = qemu::workdir().join("bench-guest");
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let payload = work.join("guest-bench.sh");
    super::write(&payload, &guest_script(bin, &gallocs, &threads, &workloads))?;
    fs::set_permissions(&payload, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let mut files = vec![bin.to_path_buf()];
    files.extend(gallocs.iter().filter_map(|a| a.lib.clone()));
    let mut cells = Vec::new();
    let mut notes = Vec::new();
    for topo in &topologies {
        let log = work.join(format!("bench-guest-{topo}.log"));
        let boot = Boot {
            binary: Some(payload.clone()),
            files: files.clone(),
            timeout_s: Some(timeout.clone()),
            log: Some(log.clone()),
            workdir: Some(work.clone()),
            ..Boot::new(topo)
        };
        let out = boot.run()?;
        let console = &out.text;
        let got = parse_console(topo, console);
        let took = out.seconds;
        let cpus =
            console.lines().find_map(|l| l.split("GUESTBENCH-START cpus=").nth(1)).unwrap_or("?").trim().to_string();
        let probes: Vec<String> =
            console.lines().filter(|l| l.contains("GUESTPROBE")).map(|l| l.trim().to_string()).collect();
        if !console.contains("GUESTBENCH-END") {
            notes.push(format!("{topo}: guest did not finish ({}; log {})", out.last_words(), log.display()));
        }
        for c in &got {
            let v = c.seconds.as_ref().map_or_else(|e| e.clone(), |s| format!("{s:.2} s"));
            let k = c.counts.map_or(String::new(), |k| format!("  TLB {} CAL {} faults {}", k.tlb, k.cal, k.faults));
            println!("  {topo:<4} {:<11} threads {:>2}  {:<16} {v}{k}", c.workload, c.threads, c.alloc);
        }
        notes.push(format!("{topo}: one boot, {cpus} vCPUs, {took:.0} s in all; {}", probes.join("; ")));
        cells.extend(got);
    }
    let names: Vec<String> = gallocs.iter().map(|a| a.name.clone()).collect();
    let table = markdown_table(&cells, &names);
    let mut md = format!(
        "# Guest benchmark — {}\n\n- Command: `{}`\n- Source: {}\n- Host: {}\n\
- {} in QEMU guests, threads unpinned (TCG: software emulation, so \
absolute times are slow; compare ratios), each topology one boot running every cell once. Cells: guest-measured \
seconds (the workload's own clock) and the ratio to mimalloc3; then what the guest kernel counted during the run \
(`/proc/interrupts` TLB shootdowns and function-call interrupts summed over CPUs, `/proc/vmstat` pgfault). \
`domalloc-nonuma` = domalloc with `DOMALLOC_NUMA=0`.\n\n",
        workloads.iter().map(|w| format!("`{} {}`", w.name, w.args)).collect::<Vec<_>>().join(", "),
        super::timestamp(),
        super::command_line(s),
        super::git_describe(),
        super::machine()
    );
    md += &table;
    md += "\n";
    for n in &notes {
        md += &format!("- {n}\n");
    }
    println!("\n{table}");
    let rows = cells.iter().map(|c| {
        let k = |f: fn(&Counts) -> u64| c.counts.as_ref().map_or(String::new(), |k| f(k).to_string());
        vec![
            c.topology.clone(),
            c.workload.clone(),
            c.threads.to_string(),
            c.alloc.clone(),
            c.seconds.as_ref().map_or(String::new(), |s| format!("{s:.4}")),
            c.seconds.as_ref().err().cloned().unwrap_or_else(|| "ok".into()),
            k(|k| k.tlb),
            k(|k| k.cal),
            k(|k| k.faults),
        ]
    });
    super::write(
        &dir.join("guest.csv"),
        &csv_text(
            &[
                "topology",
                "workload",
                "threads",
                "allocator",
                "guest_seconds",
                "status",
                "tlb_shootdowns",
                "call_interrupts",
                "page_faults",
            ],
            rows,
        ),
    )?;
    super::write(&dir.join("guest.md"), &md)?;
    println!("Wrote {0}/guest.md and {0}/guest.csv", dir.display());
    let expected = topologies.len() * workloads.len() * threads.len() * gallocs.len();
    Ok(expected - cells.iter().filter(|c| c.seconds.is_ok()).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cells_and_renders_ratios() {
        let console = "GUESTBENCH-START cpus=8\n\
GUESTBENCH alloc=glibc workload=churn threads=8 rc=0 tlb=12 cal=30 faults=900 RESULT workload=churn threads=8 scale=1 pinned_cores=0 elapsed_s=3.0000 ops=1 checksum=0x1\n\
GUESTBENCH alloc=mimalloc3 workload=churn threads=8 rc=0 tlb=5 cal=7 faults=1000 RESULT workload=churn threads=8 elapsed_s=1.5000 ops=1\n\
GUESTBENCH alloc=domalloc workload=churn threads=8 rc=134 tlb=1 cal=2 faults=3 \nGUESTBENCH-END\n";
        let cells = parse_console("1n8", console);
        assert_eq!(cells.len(), 3);
        assert_eq!(cells[0].seconds, Ok(3.0));
        assert_eq!(cells[0].counts, Some(Counts { tlb: 12, cal: 30, faults: 900 }));
        assert_eq!(cells[2].seconds, Err("FAIL (exit 134)".into()));
        let md = markdown_table(&cells, &["glibc".into(), "mimalloc3".into(), "domalloc".into()]);
        assert!(md.contains("| 1n8 | churn | 8 | 3.00 s (2.00x) | 1.50 s (1.00x) | FAIL (exit 134) | 12 / 30 / 900 | 5 / 7 / 1000 | 1 / 2 / 3 |"), "{md}");
    }

    #[test]
    fn script_runs_every_cell() {
        let a = vec![
            GuestAlloc { name: "glibc".into(), lib: None, env: None },
            GuestAlloc {
                name: "domalloc-nonuma".into(),
                lib: Some("/x/libdomalloc.so".into()),
                env: Some("DOMALLOC_NUMA=0".into()),
            },
        ];
        let w = vec![
            GuestWorkload { name: "test-stress".into(), args: "--load 5 --iterations 5".into() },
            GuestWorkload { name: "churn".into(), args: "--load 20 --iterations 5".into() },
        ];
        let s = guest_script(Path::new("/t/workloads"), &a, &[8, 32], &w);
        assert_eq!(s.matches("test-stress --threads").count(), 4);
        assert_eq!(s.matches("churn --threads").count(), 4);
        assert!(
            s.contains(
                "env DOMALLOC_NUMA=0 LD_PRELOAD=/x/libdomalloc.so /t/workloads test-stress --threads 32 --load 5"
            ),
            "{s}"
        );
        assert!(s.contains("tlb=$(($4 - $1))"), "{s}");
    }
}
