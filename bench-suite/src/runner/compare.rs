//! The main part: every workload under every allocator, repetitions interleaved, then the
//! terminal report and results.{md,csv,svg} + runs.csv (copied to `<out>/latest.*`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::allocators::{Allocator, Skipped};
use super::report::{self, Metric, Record, Summary};
use super::{measure, numa, svg, Settings};
use crate::workloads;

/// Runs single workload runs and turns them into records.
pub struct Runner<'a> {
    /// Settings (scale, threads, pinning, timeout).
    pub s: &'a Settings,
    /// The workloads binary.
    pub bin: PathBuf,
    /// Where logs of failed runs go.
    pub logs: PathBuf,
}

impl Runner<'_> {
    /// One run of workload `w` under allocator `a` with extra arguments and environment.
    pub fn one_with(
        &self,
        rep: usize,
        w: &str,
        a: &Allocator,
        args: &[String],
        env: &[(String, String)],
    ) -> (Record, String) {
        let log = self.logs.join(format!("{w}.{}.{rep}.log", a.name));
        let file = fs::File::create(&log).expect("create log file");
        let mut cmd = Command::new(&self.bin);
        cmd.arg(w).arg("--scale").arg(self.s.scale.to_string()).args(args);
        if let Some(t) = self.s.opts.threads {
            if !args.iter().any(|x| x == "--threads") {
                cmd.arg("--threads").arg(t.to_string());
            }
        }
        if !self.s.pin {
            cmd.arg("--no-pin");
        }
        a.apply(&mut cmd);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(file.try_clone().expect("dup log")).stderr(file);
        let m = measure::run(&mut cmd, Duration::from_secs_f64(self.s.timeout));
        let out = fs::read_to_string(&log).unwrap_or_default();
        let ok = m.exit == measure::Exit::Code(0) && out.lines().any(|l| l.starts_with("RESULT "));
        let status = if ok { "ok".to_string() } else { failure(&m.exit, &out) };
        if ok {
            let _ = fs::remove_file(&log);
        }
        let rec = Record {
            rep,
            workload: w.to_string(),
            alloc: a.name.clone(),
            ok,
            status,
            wall: m.wall,
            user: m.user,
            sys: m.sys,
            maxrss_kib: m.maxrss_kib,
            work_s: super::result_field(&out, "elapsed_s").and_then(|v| v.parse().ok()),
            checksum: super::result_field(&out, "checksum"),
        };
        (rec, out)
    }

    /// One run with the settings' options only.
    pub fn one(&self, rep: usize, w: &str, a: &Allocator) -> Record {
        self.one_with(rep, w, a, &[], &[]).0
    }
}

/// What went wrong in a run: the exit, and the first `error:` line (else the last line).
pub fn failure(exit: &measure::Exit, out: &str) -> String {
    let why = out.lines().find(|l| l.starts_with("error:")).or_else(|| out.lines().last()).unwrap_or("").trim();
    let why: String = why.chars().take(160).collect();
    if why.is_empty() {
        format!("{exit}")
    } else {
        format!("{exit}: {why}")
    }
}

/// Marks runs whose checksum differs from the checksum most runs of that workload agree on:
/// every workload computes the same checksum under every correct allocator.
pub fn check_checksums(records: &mut [Record]) {
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
                r.status = format!(
                    "checksum {} differs from the other runs' {majority}",
                    r.checksum.clone().unwrap_or_default()
                );
            }
        }
    }
}

/// The workloads asked for (`--workloads`, in report order), else all of them.
pub fn select_workloads(s: &Settings) -> Result<Vec<String>, String> {
    let all: Vec<&str> = workloads::ALL.iter().map(|w| w.name).collect();
    let Some(ws) = &s.opts.workloads else { return Ok(all.iter().map(|s| s.to_string()).collect()) };
    if let Some(w) = ws.iter().find(|w| !all.contains(&w.as_str())) {
        return Err(format!("unknown workload {w:?}; known: {}", all.join(",")));
    }
    Ok(all.iter().filter(|n| ws.iter().any(|w| w == *n)).map(|s| s.to_string()).collect())
}

/// Everything the report is made from.
struct Ctx<'a> {
    s: &'a Settings,
    stamp: &'a str,
    allocs: &'a [Allocator],
    skipped: &'a [Skipped],
    threads: usize,
    took: f64,
    load_start: String,
}

/// The interleaved loop: rep by rep, workload by workload, allocator by allocator.
fn run_all(r: &Runner<'_>, wnames: &[String], allocs: &[Allocator], runs_csv: &Path) -> Result<Vec<Record>, String> {
    let reps = r.s.reps;
    let total = reps * wnames.len() * allocs.len();
    let started = Instant::now();
    let mut records = Vec::new();
    let mut csv = csv::Writer::from_path(runs_csv).map_err(|e| format!("{}: {e}", runs_csv.display()))?;
    csv.write_record(report::RUNS_CSV_HEAD).map_err(|e| e.to_string())?;
    let mut n = 0;
    for rep in 0..reps {
        for w in wnames {
            for a in allocs {
                n += 1;
                let rec = r.one(rep, w, a);
                let el = started.elapsed().as_secs_f64();
                let eta = el / n as f64 * (total - n) as f64;
                println!(
                    "[{n:>3}/{total}] rep {}/{reps} {:<13} {:<10} wall {:>7.3}s cpu {:>7.3}s rss {:>7.1} MiB  {}  (elapsed {}, eta {})",
                    rep + 1,
                    w,
                    a.name,
                    rec.wall,
                    rec.user + rec.sys,
                    rec.maxrss_kib as f64 / 1024.0,
                    if rec.ok { "ok".to_string() } else { format!("FAILED {}", rec.status) },
                    super::secs(el),
                    super::secs(eta)
                );
                let _ = csv.write_record(report::runs_csv_row(&rec)).and_then(|_| Ok(csv.flush()?));
                records.push(rec);
            }
        }
    }
    Ok(records)
}

fn print_report(c: &Ctx<'_>, sum: &Summary, failed: &[&Record], logs: &Path) {
    let reference = &sum.reference;
    println!();
    for w in &sum.workloads {
        println!(
            "== {w} (threads {}, medians and min-max of {} reps; x ref = ratio to {reference}, lower is better)",
            c.threads, c.s.reps
        );
        print!("{}", report::workload_table(sum, w).text());
        println!();
    }
    println!("== wall time relative to {reference} (lower is better; ! = some runs failed)");
    print!("{}", report::ratio_matrix(sum, Metric::Wall).text());
    println!("\n== peak RSS relative to {reference}");
    print!("{}", report::ratio_matrix(sum, Metric::Rss).text());
    println!("\n== geometric means over workloads (ratio to {reference})");
    print!("{}", report::geomean_table(sum).text());
    if !failed.is_empty() {
        println!("\n== FAILED RUNS ({})", failed.len());
        for r in failed {
            println!("  {} under {} (rep {}): {}", r.workload, r.alloc, r.rep + 1, r.status);
        }
        println!("  logs: {}", logs.display());
    }
    println!(
        "\nTotal time {} (load average at start {}, at end {})",
        super::secs(c.took),
        c.load_start,
        super::loadavg()
    );
}

fn warn_if_loaded(load: &str) {
    let load1: f64 = load.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let cpus = crate::common::default_threads();
    if load1 > cpus as f64 * 0.75 {
        println!(
            "WARNING: load average {load} on {cpus} CPUs: other processes compete for the CPUs, so wall times \
             will be noisy (CPU times are steadier); results are still interleaved"
        );
    }
}

/// Runs the main part; returns the number of failed runs.
pub fn run(
    s: &Settings,
    bin: &Path,
    allocs: &[Allocator],
    skipped: &[Skipped],
    dir: &Path,
    stamp: &str,
) -> Result<usize, String> {
    let wnames = select_workloads(s)?;
    let names: Vec<String> = allocs.iter().map(|a| a.name.clone()).collect();
    let reference = super::reference(s, &names)?;
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    let threads = s.opts.threads.map_or_else(crate::common::default_threads, |t| t as usize);
    println!(
        "Running {} workloads x {} allocators x {} reps = {} runs (scale {}, threads {threads}, reference {reference}); results in {}",
        wnames.len(),
        allocs.len(),
        s.reps,
        s.reps * wnames.len() * allocs.len(),
        s.scale,
        dir.display()
    );
    let load_start = super::loadavg();
    warn_if_loaded(&load_start);
    let started = Instant::now();
    let runner = Runner { s, bin: bin.to_path_buf(), logs: logs.clone() };
    let mut records = run_all(&runner, &wnames, allocs, &dir.join("runs.csv"))?;
    let took = started.elapsed().as_secs_f64();
    check_checksums(&mut records);
    super::write(&dir.join("runs.csv"), &report::runs_csv(&records))?;
    let numa = if s.runs(super::Part::Numa) { numa::run_section(allocs) } else { numa::NumaOutcome::NotRequested };
    let sum = Summary::new(&wnames, &names, &reference, &records);
    let failed: Vec<&Record> = records.iter().filter(|r| !r.ok).collect();
    let c = Ctx { s, stamp, allocs, skipped, threads, took, load_start };
    print_report(&c, &sum, &failed, &logs);
    write_files(&c, &sum, &failed, &numa, dir)?;
    if fs::read_dir(&logs).map(|mut d| d.next().is_none()).unwrap_or(false) {
        let _ = fs::remove_dir(&logs);
    }
    Ok(failed.len())
}

fn write_files(
    c: &Ctx<'_>,
    sum: &Summary,
    failed: &[&Record],
    numa: &numa::NumaOutcome,
    dir: &Path,
) -> Result<(), String> {
    let title = format!("Allocator comparison {} — {}", c.stamp, super::machine());
    let files = [
        ("results.csv", report::summary_csv(sum), "latest.csv"),
        ("results.md", markdown(c, sum, failed, numa), "latest.md"),
        ("results.svg", svg::chart(sum, &title), "latest.svg"),
    ];
    for (name, body, latest) in &files {
        super::write(&dir.join(name), body)?;
        super::write(&c.s.out.join(latest), body)?;
    }
    if let Some(csv) = numa.csv() {
        super::write(&dir.join("numa.csv"), &csv)?;
    }
    println!(
        "Wrote {0}/results.{{csv,md,svg}}, {0}/runs.csv and {1}/latest.{{csv,md,svg}}",
        dir.display(),
        c.s.out.display()
    );
    Ok(())
}

fn markdown(c: &Ctx<'_>, s: &Summary, failed: &[&Record], numa: &numa::NumaOutcome) -> String {
    let r = &s.reference;
    let mut md = format!("# Allocator comparison — {}\n\n", c.stamp);
    md += &format!(
        "- Command: `{}`\n- Source: {}\n- Machine: {}\n- Settings: {} reps interleaved, scale {}, threads {}, pinning {}\n\
- Took {}; load average at start {}, at end {} (other work on the machine skews times)\n\
- Ratios are medians relative to **{r}**; lower is better. `!` = some runs failed, `FAIL` = all failed. \
Per-workload tables give the median and the min–max of the runs.\n\n",
        super::command_line(c.s),
        super::git_describe(),
        super::machine(),
        c.s.reps,
        c.s.scale,
        c.threads,
        if c.s.pin { "round-robin over cores (hwloc)" } else { "off" },
        super::secs(c.took),
        c.load_start,
        super::loadavg()
    );
    md += "## Allocators\n\n| name | version | preloaded library | what |\n| :--- | :--- | :--- | :--- |\n";
    for a in c.allocs {
        let path = a.path.as_ref().map_or("(none)".into(), |p| format!("`{}`", p.display()));
        let version = if a.version.is_empty() { "-" } else { a.version.as_str() };
        md += &format!("| {} | {version} | {path} | {} |\n", a.name, a.what);
    }
    for sk in c.skipped {
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
    fn median_odd_even() {
        assert_eq!(report::median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(report::median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(report::median(&mut []), None);
    }

    #[test]
    fn ratios_geomean_ranges_and_files() {
        let ws = vec!["a".to_string(), "b".to_string()];
        let al = vec!["ref".to_string(), "x".to_string()];
        let mut recs = vec![
            rec("a", "ref", 1.0, true),
            rec("a", "x", 2.0, true),
            rec("b", "ref", 2.0, true),
            rec("b", "x", 1.0, true),
        ];
        recs.push(Record { rep: 1, ..rec("a", "x", 3.0, true) });
        recs.push(rec("b", "x", 9.0, false));
        let s = Summary::new(&ws, &al, "ref", &recs);
        assert_eq!(s.ratio("a", "x", Metric::Wall), Some(2.5));
        assert_eq!(s.cell("a", "x").unwrap().wall_range, Some((2.0, 3.0)));
        let (g, n) = s.geomean("x", Metric::Wall);
        assert!((g.unwrap() - (2.5f64 * 0.5).sqrt()).abs() < 1e-12 && n == 2);
        let t = report::workload_table(&s, "a").text();
        assert!(t.contains("2.000–3.000") && t.contains("min–max"), "{t}");
        let csv = report::summary_csv(&s);
        assert!(csv.starts_with("workload,allocator,reference,runs,ok,wall_median_s,"), "{csv}");
        assert!(csv.contains("a,x,ref,2,2,2.500000,") && csv.contains(",2.000000,3.000000,"), "{csv}");
        assert!(csv.contains("b,x,ref,2,1,") && csv.contains("exit 1"), "{csv}");
        let runs = report::runs_csv(&recs);
        assert!(runs.starts_with("rep,workload,allocator,status,wall_s,") && runs.lines().count() == 7, "{runs}");
        let svg = svg::chart(&s, "t");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.contains("geomean"), "{svg}");
    }

    #[test]
    fn checksum_outlier_is_marked_failed() {
        let mut recs = vec![rec("a", "p", 1.0, true), rec("a", "q", 1.0, true), rec("a", "r", 1.0, true)];
        recs[2].checksum = Some("0x2".into());
        check_checksums(&mut recs);
        assert!(recs[0].ok && recs[1].ok && !recs[2].ok);
    }
}
