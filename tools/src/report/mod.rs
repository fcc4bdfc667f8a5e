//! `domalloc report FILE...`: merges per-rank statistics files (`DOMALLOC_STATS=json
//! DOMALLOC_STATS_FILE=stats.%r.json`) into one table (ranks x nodes: peak in use, peak mapped,
//! remote-free share, purged bytes, blocks that went home), a CSV file, an SVG chart and a merged
//! JSON summary, and flags outlier ranks ([`outliers`] says when a rank is one).

pub mod chart;
pub mod outliers;
pub mod prof;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::cli::ReportArgs;
use crate::{human_bytes, Failure};
use outliers::Outlier;
use schema::{Counters, StatsDoc};

/// One file of the merge.
#[derive(Debug, Clone)]
pub struct RankStats {
    /// Where it was read from.
    pub file: PathBuf,
    /// The rank as shown (`3`, or `pid 4242` without a rank; made unique).
    pub label: String,
    /// Its contents.
    pub doc: StatsDoc,
}

/// The merged statistics of all files.
#[derive(Debug, Clone)]
pub struct Merged {
    /// Ranks in order (by rank, then files without a rank, in the order given).
    pub ranks: Vec<RankStats>,
    /// Every node id that appears in some file.
    pub nodes: Vec<u64>,
    /// Outlier ranks and why.
    pub outliers: Vec<Outlier>,
    /// The `--outlier-factor` used.
    pub factor: f64,
}

/// Reads every file (errors name the file) and merges them. Broken invariants are returned as
/// warnings, or are errors when `strict`.
pub fn load_all(files: &[PathBuf], factor: f64, strict: bool) -> Result<(Merged, Vec<String>), Failure> {
    if !(factor > 1.0 && factor.is_finite()) {
        return Err(format!("report: --outlier-factor {factor}: expected a number above 1"));
    }
    let mut warnings = Vec::new();
    let mut ranks = Vec::new();
    for f in files {
        let doc = schema::load(f).map_err(|e| format!("report: {e}"))?;
        let bad = schema::invariant_violations(&doc);
        if !bad.is_empty() {
            let line = format!("{}: breaks the schema's invariants: {}", f.display(), bad.join("; "));
            if strict {
                return Err(format!("report: {line}"));
            }
            warnings.push(line);
        }
        let label = doc.rank.map_or_else(|| format!("pid {}", doc.pid), |r| r.to_string());
        ranks.push(RankStats { file: f.clone(), label, doc });
    }
    ranks.sort_by_key(|r| r.doc.rank.unwrap_or(u64::MAX)); // stable: files without rank keep their order
    unique_labels(&mut ranks, &mut warnings);
    let nodes: BTreeSet<u64> = ranks.iter().flat_map(|r| r.doc.nodes.iter().map(|n| n.node)).collect();
    let mut merged = Merged { ranks, nodes: nodes.into_iter().collect(), outliers: Vec::new(), factor };
    merged.outliers = find_outliers(&merged);
    Ok((merged, warnings))
}

/// Two files of the same rank (two jobs, or two hosts' rank 0) get their host, then their pid,
/// added to the label.
fn unique_labels(ranks: &mut [RankStats], warnings: &mut Vec<String>) {
    let duplicates = |ranks: &[RankStats]| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        ranks.iter().filter(|r| !seen.insert(r.label.clone())).map(|r| r.label.clone()).collect()
    };
    for label in duplicates(ranks) {
        let files: Vec<String> =
            ranks.iter().filter(|r| r.label == label).map(|r| r.file.display().to_string()).collect();
        warnings.push(format!("rank {label} appears in {} files: {}", files.len(), files.join(", ")));
    }
    let dup = duplicates(ranks);
    for r in ranks.iter_mut().filter(|r| dup.contains(&r.label)) {
        r.label = format!("{}@{}", r.label, r.doc.host);
    }
    let dup = duplicates(ranks);
    for r in ranks.iter_mut().filter(|r| dup.contains(&r.label)) {
        r.label = format!("{}/pid {}", r.label, r.doc.pid);
    }
}

fn metric_value(doc: &StatsDoc, key: &str) -> Option<f64> {
    match key {
        "remote_free_share" => doc.totals.remote_share(),
        "in_use_peak_bytes" => Some(doc.totals.in_use_peak_bytes as f64),
        _ => None,
    }
}

fn find_outliers(m: &Merged) -> Vec<Outlier> {
    let mut out = Vec::new();
    for metric in &outliers::METRICS {
        let values: Vec<(String, Option<f64>)> =
            m.ranks.iter().map(|r| (r.label.clone(), metric_value(&r.doc, metric.key))).collect();
        out.extend(outliers::find(metric, &values, m.factor));
    }
    out
}

impl Merged {
    /// Whether rank `label` is an outlier for some metric.
    pub fn is_outlier(&self, label: &str) -> bool {
        self.outliers.iter().any(|o| o.rank == label)
    }
}

/// A count in few characters (`950`, `12.3k`, `4.0M`).
pub fn short_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

fn share_text(c: &Counters) -> String {
    match c.remote_share() {
        Some(s) => format!("{:.1}% of {}", s * 100.0, short_count(c.local_frees + c.remote_frees)),
        None => "- (no frees)".to_string(),
    }
}

fn table_row(s: &mut String, rank: &str, node: &str, c: &Counters) {
    let _ = writeln!(
        s,
        "{rank:>10} {node:>5} {:>12} {:>12} {:>18} {:>11} {:>10}",
        human_bytes(c.in_use_peak_bytes),
        human_bytes(c.mapped_peak_bytes),
        share_text(c),
        human_bytes(c.purged_bytes),
        short_count(c.went_home)
    );
}

/// The text table with the outliers under it.
pub fn table(m: &Merged) -> String {
    let mut s = String::new();
    let hosts: BTreeSet<&str> = m.ranks.iter().map(|r| r.doc.host.as_str()).collect();
    let _ = writeln!(
        s,
        "domalloc report: {} rank(s), {} node(s), host(s) {}",
        m.ranks.len(),
        m.nodes.len(),
        hosts.into_iter().collect::<Vec<_>>().join(",")
    );
    let _ = writeln!(
        s,
        "{:>10} {:>5} {:>12} {:>12} {:>18} {:>11} {:>10}",
        "rank", "node", "in-use peak", "mapped peak", "remote frees", "purged", "went home"
    );
    for r in &m.ranks {
        for n in &r.doc.nodes {
            table_row(&mut s, &r.label, &n.node.to_string(), &n.counters);
        }
        if r.doc.nodes.len() != 1 {
            table_row(&mut s, &r.label, "all", &r.doc.totals);
        }
    }
    if m.ranks.len() < 3 {
        let _ = writeln!(s, "outliers: not looked for (fewer than 3 ranks)");
    } else if m.outliers.is_empty() {
        let _ = writeln!(s, "outliers: none (factor {}, 3 MADs)", m.factor);
    } else {
        let _ = writeln!(
            s,
            "outliers (more than {0}x or under 1/{0} of the median of the ranks, and more than 3 MADs from it):",
            m.factor
        );
        for o in &m.outliers {
            let _ = writeln!(s, "  rank {}: {}", o.rank, o.why);
        }
    }
    s
}

fn csv_row(w: &mut csv::Writer<Vec<u8>>, r: &RankStats, node: &str, c: &Counters) -> csv::Result<()> {
    let share = c.remote_share().map_or(String::new(), |v| format!("{v:.6}"));
    let rank = r.doc.rank.map_or(String::new(), |v| v.to_string());
    let numbers = [
        c.allocs,
        c.frees,
        c.in_use_bytes,
        c.in_use_peak_bytes,
        c.mapped_bytes,
        c.mapped_peak_bytes,
        c.resident_bytes,
        c.local_frees,
        c.remote_frees,
    ]
    .map(|n| n.to_string());
    w.write_field(&r.label)?;
    w.write_field(rank)?;
    w.write_field(&r.doc.host)?;
    w.write_field(r.doc.pid.to_string())?;
    w.write_field(node)?;
    w.write_record(numbers.iter().chain([share, c.purged_bytes.to_string(), c.went_home.to_string()].iter()))
}

/// The table as CSV: one row per rank and node, and one per rank with node `all` (the totals).
pub fn csv(m: &Merged) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    csv_rows(&mut w, m).expect("CSV into memory");
    String::from_utf8(w.into_inner().expect("CSV into memory")).expect("the fields are UTF-8")
}

fn csv_rows(w: &mut csv::Writer<Vec<u8>>, m: &Merged) -> csv::Result<()> {
    w.write_record(
        "label,rank,host,pid,node,allocs,frees,in_use_bytes,in_use_peak_bytes,mapped_bytes,mapped_peak_bytes,\
         resident_bytes,local_frees,remote_frees,remote_free_share,purged_bytes,went_home"
            .split(','),
    )?;
    for r in &m.ranks {
        for n in &r.doc.nodes {
            csv_row(w, r, &n.node.to_string(), &n.counters)?;
        }
        csv_row(w, r, "all", &r.doc.totals)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct NodeSummary<'a> {
    node: Option<u64>,
    #[serde(flatten)]
    counters: &'a Counters,
    remote_free_share: Option<f64>,
}

#[derive(Serialize)]
struct RankSummary<'a> {
    label: &'a str,
    rank: Option<u64>,
    host: &'a str,
    pid: u64,
    file: String,
    elapsed_s: f64,
    rss_peak_bytes: u64,
    outlier: bool,
    totals: NodeSummary<'a>,
    nodes: Vec<NodeSummary<'a>>,
}

/// The merged summary as one JSON document (`"domalloc_report": 1`).
pub fn json(m: &Merged) -> String {
    let ranks: Vec<RankSummary> = m
        .ranks
        .iter()
        .map(|r| RankSummary {
            label: &r.label,
            rank: r.doc.rank,
            host: &r.doc.host,
            pid: r.doc.pid,
            file: r.file.display().to_string(),
            elapsed_s: r.doc.elapsed_s,
            rss_peak_bytes: r.doc.process.rss_peak_bytes,
            outlier: m.is_outlier(&r.label),
            totals: NodeSummary { node: None, counters: &r.doc.totals, remote_free_share: r.doc.totals.remote_share() },
            nodes: r
                .doc
                .nodes
                .iter()
                .map(|n| NodeSummary {
                    node: Some(n.node),
                    counters: &n.counters,
                    remote_free_share: n.counters.remote_share(),
                })
                .collect(),
        })
        .collect();
    let mut medians = BTreeMap::new();
    for metric in &outliers::METRICS {
        let v: Vec<f64> = m.ranks.iter().filter_map(|r| metric_value(&r.doc, metric.key)).collect();
        medians.insert(metric.key, (!v.is_empty()).then(|| outliers::median(&v)));
    }
    let doc = serde_json::json!({
        "domalloc_report": 1,
        "files": m.ranks.len(),
        "nodes": m.nodes,
        "outlier_factor": m.factor,
        "median": medians,
        "outliers": m.outliers,
        "ranks": ranks,
    });
    serde_json::to_string_pretty(&doc).expect("a report serialises") + "\n"
}

/// `domalloc report`.
pub fn main(args: &ReportArgs) -> Result<u8, Failure> {
    if args.prof {
        return prof::main(args);
    }
    let (merged, warnings) = load_all(&args.files, args.outlier_factor, args.strict)?;
    for w in &warnings {
        eprintln!("domalloc: report: warning: {w}");
    }
    let write = |path: &PathBuf, what: &str, text: String| {
        std::fs::write(path, text).map_err(|e| format!("report: cannot write the {what} to {}: {e}", path.display()))
    };
    if let Some(p) = &args.csv {
        write(p, "CSV", csv(&merged))?;
    }
    if let Some(p) = &args.svg {
        write(p, "chart", chart::svg(&merged)?)?;
    }
    if args.json {
        print!("{}", json(&merged));
    } else {
        print!("{}", table(&merged));
        for (p, what) in [(&args.csv, "csv"), (&args.svg, "chart")] {
            if let Some(p) = p {
                println!("{what}: {}", p.display());
            }
        }
    }
    Ok(0)
}
