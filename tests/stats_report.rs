//! The statistics report at exit, read as a user reads it: a child process runs a workload
//! (small blocks of many classes, large and huge blocks, frees by another thread, blocks still
//! live at exit) with `DOMALLOC_STATS` and `DOMALLOC_STATS_FILE`, and the test reads the file.
//!
//! * JSON: parses; allocations - frees = live blocks in the totals, every node, every class,
//!   large and huge; the nodes add up to the totals; every peak is at least its current value;
//!   the totals' allocations are the classes' plus large plus huge; local + remote frees = frees;
//!   on one node nothing is a remote free; the workload's own blocks are all there.
//! * Text: every table's columns line up under their headers (right-aligned: each header ends
//!   in the column where its values end).
//! * The file name: `%p` the pid, `%r` the MPI rank from each launcher's variable (`norank`
//!   without one), `%h` the host name, `%%` a percent sign.
//! * Live bytes: the blocks the program holds (classes' live blocks at their size, large and
//!   huge blocks' bytes) add up to `live_bytes`; a peak the program freed again stays in
//!   `live_peak_bytes`.
//! * A walltime kill: a process SIGTERM'd mid-run leaves its report and still dies of SIGTERM.

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

const CASE: &str = "DOMALLOC_TEST_STATS_CASE";

/// Blocks the workload allocates in its first loop (the report must count at least these).
const SMALL_BLOCKS: u64 = 20_000;

/// In the child: the workload, then a normal exit (the report is written at exit).
fn workload() {
    let mut keep = Vec::new();
    for i in 0..SMALL_BLOCKS as usize {
        let v = vec![i as u8; 16 + (i % 64) * 24];
        if i % 10 == 0 {
            keep.push(v);
        }
    }
    let large: Vec<Vec<u8>> = (0..8).map(|i| vec![1u8; 200_000 + i * 4096]).collect();
    let huge = vec![2u8; 8 << 20];
    let boxed: Vec<Box<[u8; 48]>> = (0..5000).map(|i| Box::new([i as u8; 48])).collect();
    std::thread::spawn(move || drop(boxed)).join().unwrap();
    drop(large);
    std::mem::forget(keep);
    std::mem::forget(huge);
}

fn in_child(name: &str) -> bool {
    if std::env::var(CASE).as_deref() == Ok(name) {
        workload();
        return true;
    }
    false
}

/// A fresh, empty directory for one test's report files.
fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("domalloc-stats-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the child and returns the one file it wrote into `dir`.
fn run(name: &str, dir: &Path, env: &[(&str, &str)]) -> (String, String) {
    let r = common::run_child(CASE, name, env, common::CHILD_TIMEOUT);
    assert!(r.status.success() && !r.hung, "{}", r.context(name));
    let files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "expected one report file in {}: {files:?}\n{}", dir.display(), r.context(name));
    let file = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    (file, text)
}

fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: a buffer of the size given.
    assert_eq!(unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) }, 0);
    let n = buf.iter().position(|&b| b == 0).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or_else(|| panic!("no unsigned `{key}` in {v}"))
}

/// The counters every node object and the totals carry, and that add up over the nodes.
const SUMMED: &[&str] = &[
    "allocs",
    "frees",
    "live_blocks",
    "in_use_bytes",
    "mapped_bytes",
    "resident_bytes",
    "local_frees",
    "remote_frees",
    "went_home",
    "purged_bytes",
    "huge_cache_hits",
    "huge_cache_misses",
];

fn check_adds_up(doc: &Value) {
    let totals = &doc["totals"];
    let nodes = doc["nodes"].as_array().expect("nodes is an array");
    assert!(!nodes.is_empty());
    let classes = doc["classes"].as_array().expect("classes is an array");
    let mut parts: Vec<(&str, &Value)> = vec![("totals", totals), ("large", &doc["large"]), ("huge", &doc["huge"])];
    parts.extend(nodes.iter().map(|n| ("node", n)));
    parts.extend(classes.iter().map(|c| ("class", c)));
    for (what, v) in &parts {
        assert_eq!(u(v, "allocs") - u(v, "frees"), u(v, "live_blocks"), "{what}: allocs - frees != live_blocks: {v}");
    }
    for k in SUMMED {
        let sum: u64 = nodes.iter().map(|n| u(n, k)).sum();
        assert_eq!(sum, u(totals, k), "the nodes' {k} do not add up to the totals");
    }
    for v in std::iter::once(totals).chain(nodes) {
        assert!(u(v, "in_use_peak_bytes") >= u(v, "in_use_bytes"), "in-use peak below current: {v}");
        assert!(u(v, "mapped_peak_bytes") >= u(v, "mapped_bytes"), "mapped peak below current: {v}");
        assert_eq!(u(v, "local_frees") + u(v, "remote_frees"), u(v, "frees"), "local + remote != frees: {v}");
    }
    if doc["nodes"].as_array().unwrap().len() == 1 {
        // One node: no free comes from another node (the freeing thread here has no heap).
        assert_eq!(u(totals, "remote_frees"), 0, "remote frees on a one-node machine: {totals}");
    }
    let p = &doc["process"];
    assert!(u(p, "rss_peak_bytes") >= u(p, "rss_bytes"));
    let by_kind: u64 =
        classes.iter().map(|c| u(c, "allocs")).sum::<u64>() + u(&doc["large"], "allocs") + u(&doc["huge"], "allocs");
    assert_eq!(by_kind, u(totals, "allocs"), "classes + large + huge != total allocations");
    // The workload's own blocks.
    assert!(u(totals, "allocs") > SMALL_BLOCKS + 5000 + 8, "too few allocations counted: {totals}");
    assert!(u(totals, "live_blocks") > SMALL_BLOCKS / 10, "the blocks kept live are not counted: {totals}");
    assert!(u(&doc["large"], "allocs") >= 8 && u(&doc["huge"], "live_blocks") >= 1);
    assert!(u(totals, "in_use_bytes") >= 8 << 20, "the live 8 MiB block is not in use: {totals}");
    assert!(u(totals, "mapped_peak_bytes") >= u(totals, "in_use_peak_bytes"));
    assert!(doc["elapsed_s"].as_f64().unwrap() >= 0.0);
    check_live_bytes(doc);
}

/// `live_bytes` is the classes' live blocks at their block size plus the large and huge bytes;
/// its peak is at least it; spans hold at least the blocks in them.
fn check_live_bytes(doc: &Value) {
    let classes = doc["classes"].as_array().expect("classes is an array");
    let small: u64 = classes.iter().map(|c| u(c, "live_blocks") * u(c, "block_size")).sum();
    let big = u(&doc["large"], "in_use_bytes") + u(&doc["huge"], "in_use_bytes");
    assert_eq!(u(doc, "live_bytes"), small + big, "live_bytes is not the classes' live bytes + large + huge: {doc}");
    assert!(u(doc, "live_peak_bytes") >= u(doc, "live_bytes"), "live peak below current: {doc}");
    assert!(u(doc, "live_bytes") <= u(&doc["totals"], "in_use_bytes"), "more live bytes than spans in use: {doc}");
    assert_eq!(doc["partial"], false);
}

#[test]
fn json_report_parses_adds_up_and_names_its_file() {
    let name = "json_report_parses_adds_up_and_names_its_file";
    if in_child(name) {
        return;
    }
    let dir = fresh_dir("json");
    let pattern = dir.join("s.%p.%r.%h.%%.json");
    let (file, text) = run(
        name,
        &dir,
        &[
            ("DOMALLOC_STATS", "json"),
            ("DOMALLOC_STATS_FILE", pattern.to_str().unwrap()),
            ("OMPI_COMM_WORLD_RANK", "3"),
        ],
    );
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{text}"));
    assert_eq!(doc["domalloc_stats"], 1);
    assert_eq!(doc["rank"], 3);
    assert_eq!(doc["host"], host().as_str());
    let pid = u(&doc, "pid");
    assert_eq!(file, format!("s.{pid}.3.{}.%.json", host()));
    check_adds_up(&doc);
}

/// For each table of the text report (a header line, then its rows), the end column of every
/// header field is the end column of the field below it in every row.
fn check_columns(text: &str) {
    let lines: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("domalloc:")).collect();
    // End columns of the fields of a line; a number and its unit ("15.1 MiB") are one field.
    let ends = |l: &str| -> Vec<usize> {
        let mut tokens: Vec<(usize, &str)> = Vec::new();
        let mut start = None;
        for (i, ch) in l.char_indices().chain(std::iter::once((l.len(), ' '))) {
            match (ch == ' ', start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    tokens.push((i, &l[s..i]));
                    start = None;
                }
                _ => {}
            }
        }
        let unit = |t: &str| matches!(t, "B" | "KiB" | "MiB" | "GiB" | "TiB");
        let mut out: Vec<usize> = Vec::new();
        for (end, t) in tokens {
            if unit(t) && !out.is_empty() {
                *out.last_mut().unwrap() = end;
            } else {
                out.push(end);
            }
        }
        out
    };
    let mut tables = 0;
    let mut i = 0;
    while i < lines.len() {
        let first = lines[i].split_whitespace().next().unwrap_or("");
        if first == "node" || first == "class" {
            tables += 1;
            let head = ends(lines[i]);
            let mut rows = 0;
            let mut j = i + 1;
            while j < lines.len() && ends(lines[j]).len() == head.len() {
                let first = lines[j].split_whitespace().next().unwrap_or("");
                if first == "node" || first == "class" {
                    break;
                }
                assert_eq!(ends(lines[j]), head, "columns do not line up:\n{}\n{}", lines[i], lines[j]);
                rows += 1;
                j += 1;
            }
            assert!(rows >= 1, "a table without rows after:\n{}\n{text}", lines[i]);
            i = j;
        } else {
            i += 1;
        }
    }
    assert!(tables >= 2, "expected the node and class tables:\n{text}");
}

#[test]
fn text_report_columns_line_up() {
    let name = "text_report_columns_line_up";
    if in_child(name) {
        return;
    }
    let dir = fresh_dir("text");
    let pattern = dir.join("t.%p.%r.txt");
    let (file, text) = run(name, &dir, &[("DOMALLOC_STATS", "1"), ("DOMALLOC_STATS_FILE", pattern.to_str().unwrap())]);
    check_columns(&text);
    let pid: u64 = text
        .split_whitespace()
        .skip_while(|w| *w != "pid")
        .nth(1)
        .and_then(|w| w.parse().ok())
        .expect("a pid in the report");
    assert_eq!(file, format!("t.{pid}.norank.txt"), "no rank variable: %r is `norank`");
    assert!(text.contains("huge"), "{text}");
}

#[test]
fn rank_comes_from_each_launchers_variable() {
    let name = "rank_comes_from_each_launchers_variable";
    if in_child(name) {
        return;
    }
    for (var, rank) in [("PMIX_RANK", "5"), ("PMI_RANK", "6"), ("MV2_COMM_WORLD_RANK", "7"), ("SLURM_PROCID", "8")] {
        let dir = fresh_dir(var);
        let pattern = dir.join("r.%r.json");
        let (file, text) = run(
            name,
            &dir,
            &[("DOMALLOC_STATS", "json"), ("DOMALLOC_STATS_FILE", pattern.to_str().unwrap()), (var, rank)],
        );
        assert_eq!(file, format!("r.{rank}.json"), "{var}");
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["rank"].as_u64(), rank.parse().ok(), "{var}");
    }
}

/// A peak the program frees again before exit: `live_peak_bytes` keeps it, `live_bytes` does not.
#[test]
fn live_peak_keeps_a_freed_peak() {
    let name = "live_peak_keeps_a_freed_peak";
    const PEAK: usize = 48 << 20;
    if std::env::var(CASE).as_deref() == Ok(name) {
        // 4 KiB blocks (a small class) and a few large ones, all freed before exit.
        let small: Vec<Vec<u8>> = (0..PEAK / 2 / 4096).map(|i| vec![i as u8; 4096]).collect();
        let large: Vec<Vec<u8>> = (0..PEAK / 2 / (256 << 10)).map(|i| vec![i as u8; 256 << 10]).collect();
        drop(small);
        drop(large);
        return;
    }
    let dir = fresh_dir("peak");
    let pattern = dir.join("p.%p.json");
    let (_, text) = run(name, &dir, &[("DOMALLOC_STATS", "json"), ("DOMALLOC_STATS_FILE", pattern.to_str().unwrap())]);
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{text}"));
    let (live, peak) = (u(&doc, "live_bytes"), u(&doc, "live_peak_bytes"));
    // The peak may miss the blocks of the spans the thread held unfolded (one per class).
    assert!(peak >= (PEAK - (4 << 20)) as u64, "live peak {peak} below the {PEAK} bytes held at once: {doc}");
    assert!(live < (8 << 20), "live bytes {live} after everything was freed: {doc}");
}

/// A batch system's walltime kill: SIGTERM mid-run. The report is written from the signal
/// handler, complete, and the process still dies of SIGTERM.
#[test]
fn sigterm_mid_run_leaves_the_report() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let name = "sigterm_mid_run_leaves_the_report";
    if std::env::var(CASE).as_deref() == Ok(name) {
        workload();
        println!("READY");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    let dir = fresh_dir("term");
    let pattern = dir.join("k.%p.json");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CASE, name)
        .env("DOMALLOC_STATS", "json")
        .env("DOMALLOC_STATS_FILE", pattern.to_str().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let watchdog_pid = child.id() as libc::pid_t;
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(common::CHILD_TIMEOUT);
        // SAFETY: a plain syscall (the child is ours; if it is gone this fails harmlessly).
        unsafe { libc::kill(watchdog_pid, libc::SIGKILL) };
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.map(|l| l.contains("READY")).unwrap_or(false)), "the child never got ready");
    // SAFETY: a plain syscall on our child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    drop(watchdog);
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "the child did not die of SIGTERM: {status:?}\n{err}");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "expected one report file after SIGTERM in {}: {files:?}\n{err}", dir.display());
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{text}"));
    check_adds_up(&doc);
}
