//! `bench --apps`: real programs from Debian packages under every allocator (issue 14 item 4,
//! the benchmark half). Each app runs with `LD_PRELOAD=<allocator>` (glibc: none) and is timed
//! with `wait4` (peak RSS = the largest of the process and the children it waited for); every
//! run verifies its output, and a run whose output is wrong shows as FAIL.
//!
//! | app | what runs | verified by |
//! | --- | --- | --- |
//! | hpcc | HPC Challenge on 2 MPI ranks, N=1000 (`runner::hpc`: inputs, command line and checks shared with `scripts/test-apps.sh`) | every verification passes (`Success=1`, residual checks `PASSED`, no `FAILED`, no errors); the deterministic results (norms, residuals, sizes) are identical to the reference run's |
//! | lammps | LAMMPS `lmp` on 2 MPI ranks, the classic `in.lj` Lennard-Jones melt (4000 atoms, 100 steps; `runner::hpc`) | the 6 thermo rows (step, temperature, energies, pressure) are identical to the reference run's |
//! | sqlite3 | the sqlite3 shell on a scripted workload: 100000 rows, an index, aggregates, a join, sorting | the query results are the expected ones and identical to the reference run's |
//! | gcc | `gcc -O2 -c` of the project's C sources (numa-tests/c, tests/c) | every object file is byte-identical to the reference run's |
//! | redis | `redis-server` (the program under the allocator) on 127.0.0.1 and a random free port, driven by `redis-benchmark` (10000 requests per test, not preloaded); then `SHUTDOWN NOSAVE` | no error in the benchmark output, every test reported, the server exits 0 |
//!
//! The reference run is glibc's when glibc is among the allocators, else the first successful
//! run. Times are the app's wall time (redis: the benchmark's); RSS is the server's `VmHWM` for
//! redis. Missing programs are reported as SKIPPED (scripts/bench.sh installs the packages:
//! hpcc, lammps, sqlite3, redis-server, redis-tools, openmpi-bin, gcc).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::allocators::Allocator;
use super::hpc::{self, Outcome};
use super::measure;
use super::report::{csv_text, median, range, Table};
use super::Settings;

/// MPI ranks of hpcc and LAMMPS.
const RANKS: u32 = 2;

/// The apps, in report order.
pub const APPS: [&str; 5] = ["hpcc", "lammps", "sqlite3", "gcc", "redis"];

/// One run of an app.
#[derive(Clone, Debug)]
pub struct AppRun {
    /// App.
    pub app: String,
    /// Allocator.
    pub alloc: String,
    /// Wall seconds.
    pub wall: f64,
    /// Peak RSS, KiB.
    pub rss_kib: u64,
    /// `Ok(what was verified)` or `Err(why it is FAIL)`.
    pub verdict: Result<String, String>,
    /// What the output check compares across allocators (thermo lines, query results, object hashes).
    pub fingerprint: String,
}

/// The programs an app needs that are not installed.
fn missing(app: &str) -> Vec<&'static str> {
    let needs: &[&'static str] = match app {
        "hpcc" => return hpc::Run::new(hpc::App::Hpcc, RANKS).missing(),
        "lammps" => return hpc::Run::new(hpc::App::Lammps, RANKS).missing(),
        "sqlite3" => &["sqlite3"],
        "gcc" => &["gcc"],
        _ => &["redis-server", "redis-benchmark", "redis-cli"],
    };
    needs.iter().copied().filter(|p| !hpc::have(p)).collect()
}

const ROWS: u64 = 100_000;

fn sql_script() -> String {
    format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v INTEGER, s TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {ROWS})
INSERT INTO t SELECT x, printf('key%08d', (x * 7919) % {ROWS}), (x * 31) % 1000, substr('abcdefghijklmnopqrstuvwxyz0123456789', 1 + x % 17, 1 + x % 19) FROM c;
CREATE INDEX tk ON t(k);
CREATE TABLE u AS SELECT v, count(*) AS n, group_concat(substr(s, 1, 2), '') AS g FROM t GROUP BY v;
SELECT 'count', count(*), sum(v), count(DISTINCT k) FROM t;
SELECT 'top', v, n FROM u ORDER BY n DESC, v LIMIT 3;
SELECT 'range', count(*), sum(length(s)) FROM t WHERE k BETWEEN 'key00010000' AND 'key00020000';
SELECT 'join', count(*), sum(u.n) FROM t JOIN u ON t.v = u.v WHERE t.id % 97 = 0;
SELECT 'sort', k FROM t ORDER BY s DESC, k LIMIT 1 OFFSET 1000;
SELECT 'glen', sum(length(g)) FROM u;
"
    )
}

/// The `count` line the script must print (computed here, independently of sqlite).
fn sql_expected_count() -> String {
    let sum: u64 = (1..=ROWS).map(|x| x * 31 % 1000).sum();
    let mut keys: Vec<u64> = (1..=ROWS).map(|x| x * 7919 % ROWS).collect();
    keys.sort_unstable();
    keys.dedup();
    format!("count|{ROWS}|{sum}|{}", keys.len())
}

/// The C sources the gcc app compiles.
fn c_sources() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["numa-tests/c", "tests/c"]
        .iter()
        .filter_map(|d| fs::read_dir(super::repo().join(d)).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        // MPI programs need mpicc's flags; the others compile with plain gcc.
        .filter(|p| !fs::read_to_string(p).unwrap_or_default().contains("<mpi.h>"))
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

fn hash_file(p: &Path) -> u64 {
    fs::read(p)
        .unwrap_or_default()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn sqlite(dir: &Path, a: &Allocator, timeout: Duration) -> Outcome {
    let _ = fs::write(dir.join("script.sql"), sql_script());
    let _ = fs::remove_file(dir.join("bench.db"));
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("sqlite3 -batch bench.db < script.sql");
    a.apply(&mut cmd);
    let o = Outcome::run(cmd, dir, timeout, |out| {
        let want = sql_expected_count();
        if out.lines().next() != Some(want.as_str()) {
            Err(format!("first result {:?}, expected {want:?}", out.lines().next().unwrap_or("")))
        } else if out.lines().count() != 8 {
            Err(format!("{} result lines, expected 8", out.lines().count()))
        } else {
            Ok(("query results".to_string(), out.to_string()))
        }
    });
    let _ = fs::remove_file(dir.join("bench.db"));
    o
}

fn gcc(dir: &Path, a: &Allocator, timeout: Duration) -> Outcome {
    let srcs = c_sources();
    let mut script = String::from("set -e\n");
    let include = super::repo().join("include");
    for (i, s) in srcs.iter().enumerate() {
        let dir = s.parent().unwrap_or(Path::new("."));
        script += &format!(
            "gcc -O2 -g0 -pthread -frandom-seed=bench -w -I '{}' -I '{}' -c '{}' -o obj{i}.o\n",
            include.display(),
            dir.display(),
            s.display()
        );
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(&script);
    a.apply(&mut cmd);
    Outcome::run(cmd, dir, timeout, |_| {
        if srcs.is_empty() {
            return Err("no C sources found".into());
        }
        let hashes: Vec<String> =
            (0..srcs.len()).map(|i| format!("{:016x}", hash_file(&dir.join(format!("obj{i}.o"))))).collect();
        Ok((format!("{} object files", srcs.len()), hashes.join(" ")))
    })
}

fn free_port() -> Option<u16> {
    TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok().map(|a| a.port())
}

fn vm_hwm_kib(pid: u32) -> u64 {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

fn redis(dir: &Path, a: &Allocator, timeout: Duration) -> Outcome {
    let fail = Outcome::failed;
    let Some(port) = free_port() else { return fail("no free port on 127.0.0.1".into()) };
    let p = port.to_string();
    let mut srv = Command::new("redis-server");
    srv.args([
        "--port",
        &p,
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ]);
    srv.current_dir(dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    a.apply(&mut srv);
    let mut child = match srv.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("redis-server: {e}")),
    };
    let cli = |args: &[&str]| {
        Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &p]).args(args).env_remove("LD_PRELOAD").output()
    };
    let t0 = Instant::now();
    while !cli(&["ping"]).is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG")) {
        if t0.elapsed() > Duration::from_secs(20) || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return fail("redis-server did not answer PING within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut bench = Command::new("redis-benchmark");
    bench.args([
        "-h",
        "127.0.0.1",
        "-p",
        &p,
        "-n",
        "10000",
        "-c",
        "20",
        "-d",
        "100",
        "-q",
        "-t",
        "set,get,incr,lpush,lpop,sadd,hset,lrange_100",
    ]);
    bench.env_remove("LD_PRELOAD");
    let (mut measured, output) = measure::run_in(&mut bench, dir, timeout);
    let rss = vm_hwm_kib(child.id());
    let _ = cli(&["shutdown", "nosave"]);
    let t1 = Instant::now();
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if t1.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    measured.maxrss_kib = rss;
    let tests = output.lines().filter(|l| l.contains("requests per second")).count();
    let err = output.lines().find(|l| l.contains("ERR") || l.to_lowercase().contains("error"));
    let check = match (err, status) {
        _ if measured.exit != measure::Exit::Code(0) => Err(super::compare::failure(&measured.exit, &output)),
        (Some(e), _) => Err(format!("redis-benchmark: {}", e.trim())),
        (None, None) => Err("redis-server did not exit after SHUTDOWN NOSAVE (killed)".into()),
        (None, Some(st)) if !st.success() => Err(format!("redis-server exited with {st}")),
        _ if tests < 8 => Err(format!("redis-benchmark reported {tests} of 8 tests")),
        _ => Ok((format!("{tests} tests, no errors"), String::new())),
    };
    Outcome { measured, output, check }
}

/// One run of one app under one allocator, in a fresh directory.
fn run_app(app: &str, a: &Allocator, work: &Path, timeout: f64) -> AppRun {
    let dir = work.join(format!("{app}-{}", a.name));
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::create_dir_all(&dir);
    let timeout = Duration::from_secs_f64(timeout);
    // hpcc and LAMMPS: `runner::hpc` on [`RANKS`] ranks, the allocator preloaded in each.
    let mpi = |app| hpc::Run { preload: a.path.clone(), env: a.env.clone(), ..hpc::Run::new(app, RANKS) };
    let r = match app {
        "hpcc" => mpi(hpc::App::Hpcc).run(&dir, timeout),
        "lammps" => mpi(hpc::App::Lammps).run(&dir, timeout),
        "sqlite3" => sqlite(&dir, a, timeout),
        "gcc" => gcc(&dir, a, timeout),
        _ => redis(&dir, a, timeout),
    };
    let (verdict, fingerprint) = match r.check {
        Ok((what, fp)) => (Ok(what), fp),
        Err(e) => (Err(e), String::new()),
    };
    if verdict.is_ok() {
        let _ = fs::remove_dir_all(&dir);
    }
    AppRun {
        app: app.into(),
        alloc: a.name.clone(),
        wall: r.measured.wall,
        rss_kib: r.measured.maxrss_kib,
        verdict,
        fingerprint,
    }
}

/// Marks runs whose fingerprint differs from the reference run's (glibc's, else the first good one).
pub fn compare_outputs(runs: &mut [AppRun]) {
    for app in APPS {
        let reference = runs
            .iter()
            .filter(|r| r.app == app && r.verdict.is_ok())
            .min_by_key(|r| r.alloc != "glibc")
            .map(|r| (r.alloc.clone(), r.fingerprint.clone()));
        let Some((ref_alloc, fp)) = reference else { continue };
        for r in runs.iter_mut().filter(|r| r.app == app && r.verdict.is_ok() && r.fingerprint != fp) {
            r.verdict = Err(format!("output differs from the {ref_alloc} run's"));
        }
    }
}

/// The good runs of one (app, allocator): medians, the wall time's min–max, counts.
struct Stats {
    wall: Option<f64>,
    span: Option<(f64, f64)>,
    rss: Option<f64>,
    good: usize,
    runs: usize,
}

fn cell(runs: &[AppRun], app: &str, alloc: &str) -> Stats {
    let rs: Vec<&AppRun> = runs.iter().filter(|r| r.app == app && r.alloc == alloc).collect();
    let good: Vec<&&AppRun> = rs.iter().filter(|r| r.verdict.is_ok()).collect();
    let mut wall: Vec<f64> = good.iter().map(|r| r.wall).collect();
    let mut rss: Vec<f64> = good.iter().map(|r| r.rss_kib as f64 / 1024.0).collect();
    let span = range(&wall);
    Stats { wall: median(&mut wall), span, rss: median(&mut rss), good: good.len(), runs: rs.len() }
}

/// Ratio tables (time and peak RSS relative to the reference) and per-app detail.
pub fn tables(runs: &[AppRun], allocs: &[String], reference: &str) -> (Table, Table, Table) {
    let mut head = vec!["app".to_string()];
    head.extend(allocs.iter().cloned());
    let ratio = |metric: usize| -> Vec<Vec<String>> {
        APPS.iter()
            .filter(|app| runs.iter().any(|r| r.app == **app))
            .map(|app| {
                let rv = cell(runs, app, reference);
                let base = if metric == 0 { rv.wall } else { rv.rss };
                let mut row = vec![app.to_string()];
                for a in allocs {
                    let c = cell(runs, app, a);
                    let v = if metric == 0 { c.wall } else { c.rss };
                    row.push(match (v, base) {
                        _ if c.runs > 0 && c.good == 0 => "FAIL".into(),
                        (Some(v), Some(b)) if b > 0.0 => {
                            format!("{:.2}{}", v / b, if c.good < c.runs { "!" } else { "" })
                        }
                        _ => "-".into(),
                    });
                }
                row
            })
            .collect()
    };
    let time = Table { head: head.clone(), rows: ratio(0) };
    let rss = Table { head: head.clone(), rows: ratio(1) };
    let dhead = ["app", "allocator", "wall s", "min–max", "peak RSS MiB", "ok/runs", "check"];
    let drows = APPS
        .iter()
        .flat_map(|app| allocs.iter().map(move |a| (app, a)))
        .filter(|(app, a)| runs.iter().any(|r| r.app == **app && &r.alloc == *a))
        .map(|(app, a)| {
            let c = cell(runs, app, a);
            let check = runs
                .iter()
                .rfind(|r| r.app == *app && &r.alloc == a)
                .map(|r| r.verdict.clone().unwrap_or_else(|e| format!("FAIL: {e}")))
                .unwrap_or_default();
            vec![
                app.to_string(),
                a.clone(),
                c.wall.map_or("-".into(), |v| format!("{v:.3}")),
                c.span.map_or("-".into(), |(lo, hi)| format!("{lo:.3}–{hi:.3}")),
                c.rss.map_or("-".into(), |v| format!("{v:.1}")),
                format!("{}/{}", c.good, c.runs),
                check,
            ]
        })
        .collect();
    (time, rss, Table { head: dhead.iter().map(|h| h.to_string()).collect(), rows: drows })
}

/// Runs the part; returns the number of failed runs.
pub fn run(s: &Settings, allocs: &[Allocator], dir: &Path) -> Result<usize, String> {
    let reps = s.opts.reps.map_or(1, |r| r as usize);
    let names: Vec<String> = allocs.iter().map(|a| a.name.clone()).collect();
    let reference = super::reference(s, &names)?;
    println!("\n== Apps: {} under {} allocators, {reps} rep(s), reference {reference}", APPS.join(", "), allocs.len());
    let work = dir.join("apps-work");
    fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for app in APPS {
        let missing = missing(app);
        if !missing.is_empty() {
            println!(
                "  SKIPPED {app}: {} not found (scripts/bench.sh --apps installs the Debian packages)",
                missing.join(", ")
            );
            skipped.push(format!("{app}: {} not found", missing.join(", ")));
            continue;
        }
        for rep in 0..reps {
            for a in allocs {
                let r = run_app(app, a, &work, s.timeout.max(120.0));
                let v = r.verdict.as_ref().map_or_else(|e| format!("FAIL {e}"), |w| format!("ok ({w})"));
                println!(
                    "  {app:<8} rep {}/{reps} {:<10} wall {:>7.3}s rss {:>7.1} MiB  {v}",
                    rep + 1,
                    a.name,
                    r.wall,
                    r.rss_kib as f64 / 1024.0
                );
                runs.push(r);
            }
        }
    }
    compare_outputs(&mut runs);
    let (time, rss, detail) = tables(&runs, &names, &reference);
    println!(
        "\n== app wall time relative to {reference}\n{}\n== app peak RSS relative to {reference}\n{}\n{}",
        time.text(),
        rss.text(),
        detail.text()
    );
    let mut md = format!(
        "# Real applications — {}\n\n- Command: `{}`\n- Source: {}\n- Machine: {}\n- {reps} run(s) per app and allocator; ratios of \
medians to **{reference}**, lower is better; `FAIL` = the app's output check failed (see the detail table).\n\n",
        super::timestamp(),
        super::command_line(s),
        super::git_describe(),
        super::machine()
    );
    md += &format!(
        "## Wall time relative to {reference}\n\n{}\n## Peak RSS relative to {reference}\n\n{}\n## Detail\n\n{}",
        time.markdown(),
        rss.markdown(),
        detail.markdown()
    );
    for sk in &skipped {
        md += &format!("\n- SKIPPED {sk}");
    }
    md += "\n";
    super::write(&dir.join("apps.md"), &md)?;
    let rows = runs.iter().map(|r| {
        vec![
            r.app.clone(),
            r.alloc.clone(),
            format!("{:.6}", r.wall),
            r.rss_kib.to_string(),
            r.verdict.as_ref().map_or_else(|e| format!("FAIL: {e}"), |w| format!("ok: {w}")),
        ]
    });
    super::write(&dir.join("apps.csv"), &csv_text(&["app", "allocator", "wall_s", "peak_rss_kib", "status"], rows))?;
    if fs::read_dir(&work).map(|mut d| d.next().is_none()).unwrap_or(false) {
        let _ = fs::remove_dir(&work);
    }
    println!("Wrote {0}/apps.md and {0}/apps.csv", dir.display());
    Ok(runs.iter().filter(|r| r.verdict.is_err()).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(app: &str, alloc: &str, wall: f64, fp: &str) -> AppRun {
        AppRun {
            app: app.into(),
            alloc: alloc.into(),
            wall,
            rss_kib: 2048,
            verdict: Ok("x".into()),
            fingerprint: fp.into(),
        }
    }

    #[test]
    fn different_output_is_a_failure_and_ratios_follow_the_reference() {
        let mut runs = vec![
            run("lammps", "mimalloc3", 2.0, "a"),
            run("lammps", "glibc", 1.0, "a"),
            run("lammps", "domalloc", 3.0, "b"),
        ];
        compare_outputs(&mut runs);
        assert!(runs[0].verdict.is_ok() && runs[1].verdict.is_ok());
        assert_eq!(runs[2].verdict, Err("output differs from the glibc run's".into()));
        let names = vec!["glibc".to_string(), "mimalloc3".to_string(), "domalloc".to_string()];
        let (time, rss, detail) = tables(&runs, &names, "mimalloc3");
        assert_eq!(time.rows[0], vec!["lammps", "0.50", "1.00", "FAIL"]);
        assert_eq!(rss.rows[0][2], "1.00");
        assert!(detail.text().contains("FAIL: output differs"), "{}", detail.text());
    }

    #[test]
    fn inputs() {
        assert!(sql_expected_count().starts_with("count|100000|"));
    }
}
