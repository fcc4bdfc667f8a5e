//! Summaries (medians, ratios to the reference, geometric means) and the text, CSV and
//! Markdown renderings.

use std::collections::HashMap;
use std::fmt::Write as _;

/// One run of one workload under one allocator.
#[derive(Clone, Debug)]
pub struct Record {
    /// Repetition index (0-based).
    pub rep: usize,
    /// Workload name.
    pub workload: String,
    /// Allocator name.
    pub alloc: String,
    /// Whether the run succeeded (exit 0, its checks passed, checksum agreed).
    pub ok: bool,
    /// `ok`, or what went wrong.
    pub status: String,
    /// Wall seconds.
    pub wall: f64,
    /// User CPU seconds.
    pub user: f64,
    /// System CPU seconds.
    pub sys: f64,
    /// Peak RSS in KiB.
    pub maxrss_kib: u64,
    /// The workload's own timing of its work (without process start-up), if reported.
    pub work_s: Option<f64>,
    /// The workload's checksum, if reported.
    pub checksum: Option<String>,
}

/// Medians of one (workload, allocator) pair.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    /// Runs made.
    pub runs: usize,
    /// Runs that succeeded.
    pub ok: usize,
    /// Median wall seconds of the successful runs.
    pub wall: Option<f64>,
    /// Median CPU (user + sys) seconds.
    pub cpu: Option<f64>,
    /// Median peak RSS, MiB.
    pub rss: Option<f64>,
    /// Fastest and slowest successful run, wall seconds.
    pub wall_range: Option<(f64, f64)>,
    /// Lowest and highest CPU seconds.
    pub cpu_range: Option<(f64, f64)>,
    /// Lowest and highest peak RSS, MiB.
    pub rss_range: Option<(f64, f64)>,
    /// Distinct failure descriptions.
    pub failures: Vec<String>,
}

/// The metrics reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Wall time.
    Wall,
    /// CPU time (user + sys).
    Cpu,
    /// Peak RSS.
    Rss,
}

impl Metric {
    /// Table heading.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Wall => "wall time",
            Metric::Cpu => "CPU time (user+sys)",
            Metric::Rss => "peak RSS",
        }
    }
}

/// Everything the reports are made from.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Workloads in report order.
    pub workloads: Vec<String>,
    /// Allocators in report order.
    pub allocs: Vec<String>,
    /// The reference allocator (ratios are relative to it).
    pub reference: String,
    /// Cells by (workload, allocator).
    pub cells: HashMap<(String, String), Cell>,
}

/// Smallest and largest value of a slice (`None` when empty).
pub fn range(v: &[f64]) -> Option<(f64, f64)> {
    let lo = v.iter().copied().reduce(f64::min)?;
    Some((lo, v.iter().copied().fold(lo, f64::max)))
}

/// Median of a non-empty slice (mean of the middle two for even lengths).
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

impl Summary {
    /// Builds the summary from all records.
    pub fn new(workloads: &[String], allocs: &[String], reference: &str, records: &[Record]) -> Summary {
        let mut cells = HashMap::new();
        for w in workloads {
            for a in allocs {
                let rs: Vec<&Record> = records.iter().filter(|r| &r.workload == w && &r.alloc == a).collect();
                let good: Vec<&&Record> = rs.iter().filter(|r| r.ok).collect();
                let mut failures: Vec<String> = Vec::new();
                for r in rs.iter().filter(|r| !r.ok) {
                    if !failures.contains(&r.status) {
                        failures.push(r.status.clone());
                    }
                }
                let mut wall: Vec<f64> = good.iter().map(|r| r.wall).collect();
                let mut cpu: Vec<f64> = good.iter().map(|r| r.user + r.sys).collect();
                let mut rss: Vec<f64> = good.iter().map(|r| r.maxrss_kib as f64 / 1024.0).collect();
                let cell = Cell {
                    runs: rs.len(),
                    ok: good.len(),
                    wall_range: range(&wall),
                    cpu_range: range(&cpu),
                    rss_range: range(&rss),
                    wall: median(&mut wall),
                    cpu: median(&mut cpu),
                    rss: median(&mut rss),
                    failures,
                };
                cells.insert((w.clone(), a.clone()), cell);
            }
        }
        Summary { workloads: workloads.to_vec(), allocs: allocs.to_vec(), reference: reference.to_string(), cells }
    }

    /// The cell of a pair.
    pub fn cell(&self, w: &str, a: &str) -> Option<&Cell> {
        self.cells.get(&(w.to_string(), a.to_string()))
    }

    /// A median.
    pub fn value(&self, w: &str, a: &str, m: Metric) -> Option<f64> {
        let c = self.cell(w, a)?;
        match m {
            Metric::Wall => c.wall,
            Metric::Cpu => c.cpu,
            Metric::Rss => c.rss,
        }
    }

    /// A median relative to the reference's median.
    pub fn ratio(&self, w: &str, a: &str, m: Metric) -> Option<f64> {
        let v = self.value(w, a, m)?;
        let r = self.value(w, &self.reference, m)?;
        (r > 0.0).then(|| v / r)
    }

    /// Geometric mean of the ratios over the workloads where both have a result, and how many
    /// workloads that is.
    pub fn geomean(&self, a: &str, m: Metric) -> (Option<f64>, usize) {
        let rs: Vec<f64> = self.workloads.iter().filter_map(|w| self.ratio(w, a, m)).filter(|r| *r > 0.0).collect();
        if rs.is_empty() {
            return (None, 0);
        }
        ((rs.iter().map(|r| r.ln()).sum::<f64>() / rs.len() as f64).exp().into(), rs.len())
    }
}

fn f2(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn f3(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| if v >= 100.0 { format!("{v:.1}") } else { format!("{v:.3}") })
}

fn fmib(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// `min–max` of a range, formatted like its median.
fn frange(r: Option<(f64, f64)>, f: fn(Option<f64>) -> String) -> String {
    r.map_or("-".into(), |(lo, hi)| format!("{}–{}", f(Some(lo)), f(Some(hi))))
}

/// A simple table: rendered as aligned text or Markdown.
pub struct Table {
    /// Column headings.
    pub head: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Aligned plain text (first column left-aligned, the others right-aligned, two spaces
    /// between columns).
    pub fn text(&self) -> String {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING).set_header(&self.head).add_rows(&self.rows);
        for (i, c) in t.column_iter_mut().enumerate() {
            if i > 0 {
                c.set_padding((2, 0)).set_cell_alignment(comfy_table::CellAlignment::Right);
            } else {
                c.set_padding((0, 0));
            }
        }
        t.to_string() + "\n"
    }

    /// GitHub-flavoured Markdown, with the same alignment (the `:---`/`---:` row, which
    /// comfy-table's Markdown preset does not write).
    pub fn markdown(&self) -> String {
        let mut s = format!("| {} |\n|", self.head.join(" | "));
        for i in 0..self.head.len() {
            s += if i == 0 { " :--- |" } else { " ---: |" };
        }
        s.push('\n');
        for row in &self.rows {
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
        s
    }
}

/// Per-workload table: medians and ratios of every allocator.
pub fn workload_table(s: &Summary, w: &str) -> Table {
    let r = &s.reference;
    let head = [
        "allocator",
        "wall s",
        "min–max",
        "x ref",
        "cpu s",
        "min–max",
        "x ref",
        "peak RSS MiB",
        "min–max",
        "x ref",
        "ok/runs",
    ];
    let rows = s
        .allocs
        .iter()
        .map(|a| {
            let c = s.cell(w, a).cloned().unwrap_or_default();
            let name = if a == r { format!("{a} (ref)") } else { a.clone() };
            let okruns =
                if c.ok == c.runs { format!("{}/{}", c.ok, c.runs) } else { format!("{}/{} FAIL", c.ok, c.runs) };
            vec![
                name,
                f3(c.wall),
                frange(c.wall_range, f3),
                f2(s.ratio(w, a, Metric::Wall)),
                f3(c.cpu),
                frange(c.cpu_range, f3),
                f2(s.ratio(w, a, Metric::Cpu)),
                fmib(c.rss),
                frange(c.rss_range, fmib),
                f2(s.ratio(w, a, Metric::Rss)),
                okruns,
            ]
        })
        .collect();
    Table { head: head.iter().map(|h| h.to_string()).collect(), rows }
}

/// Workloads x allocators matrix of ratios for one metric, with a geometric-mean row.
pub fn ratio_matrix(s: &Summary, m: Metric) -> Table {
    let mut head = vec!["workload".to_string()];
    head.extend(s.allocs.iter().cloned());
    let mut rows: Vec<Vec<String>> = s
        .workloads
        .iter()
        .map(|w| {
            let mut row = vec![w.clone()];
            for a in &s.allocs {
                let c = s.cell(w, a).cloned().unwrap_or_default();
                row.push(match s.ratio(w, a, m) {
                    Some(r) if c.ok < c.runs => format!("{r:.2}!"),
                    Some(r) => format!("{r:.2}"),
                    None if c.runs > 0 && c.ok == 0 => "FAIL".into(),
                    None => "-".into(),
                });
            }
            row
        })
        .collect();
    let mut g = vec!["geomean".to_string()];
    for a in &s.allocs {
        let (v, n) = s.geomean(a, m);
        g.push(match v {
            Some(v) if n < s.workloads.len() => format!("{v:.2} ({n}/{})", s.workloads.len()),
            Some(v) => format!("{v:.2}"),
            None => "-".into(),
        });
    }
    rows.push(g);
    Table { head, rows }
}

/// Geometric means of every allocator for every metric.
pub fn geomean_table(s: &Summary) -> Table {
    let head = ["allocator", "wall x ref", "cpu x ref", "peak RSS x ref", "workloads", "failed runs"];
    let rows = s
        .allocs
        .iter()
        .map(|a| {
            let (w, n) = s.geomean(a, Metric::Wall);
            let failed: usize = s.workloads.iter().filter_map(|w| s.cell(w, a)).map(|c| c.runs - c.ok).sum();
            vec![
                if a == &s.reference { format!("{a} (ref)") } else { a.clone() },
                f2(w),
                f2(s.geomean(a, Metric::Cpu).0),
                f2(s.geomean(a, Metric::Rss).0),
                format!("{n}/{}", s.workloads.len()),
                failed.to_string(),
            ]
        })
        .collect();
    Table { head: head.iter().map(|h| h.to_string()).collect(), rows }
}

/// Writes rows to CSV text with the `csv` crate (quoting as needed).
pub fn csv_text<R: IntoIterator<Item = Vec<String>>>(head: &[&str], rows: R) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(head).expect("write to memory");
    for r in rows {
        w.write_record(&r).expect("write to memory");
    }
    String::from_utf8(w.into_inner().expect("flush to memory")).expect("CSV of UTF-8 strings")
}

fn o6(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.6}"))
}

/// The summary CSV: one row per (workload, allocator) plus `geomean` rows. The min/max
/// columns come last, after the columns of earlier versions.
pub fn summary_csv(s: &Summary) -> String {
    let head = [
        "workload",
        "allocator",
        "reference",
        "runs",
        "ok",
        "wall_median_s",
        "cpu_median_s",
        "peak_rss_median_mib",
        "wall_ratio",
        "cpu_ratio",
        "peak_rss_ratio",
        "failures",
        "wall_min_s",
        "wall_max_s",
        "cpu_min_s",
        "cpu_max_s",
        "peak_rss_min_mib",
        "peak_rss_max_mib",
    ];
    let lo = |r: Option<(f64, f64)>| o6(r.map(|r| r.0));
    let hi = |r: Option<(f64, f64)>| o6(r.map(|r| r.1));
    let mut rows = Vec::new();
    for w in &s.workloads {
        for a in &s.allocs {
            let c = s.cell(w, a).cloned().unwrap_or_default();
            rows.push(vec![
                w.clone(),
                a.clone(),
                s.reference.clone(),
                c.runs.to_string(),
                c.ok.to_string(),
                o6(c.wall),
                o6(c.cpu),
                o6(c.rss),
                o6(s.ratio(w, a, Metric::Wall)),
                o6(s.ratio(w, a, Metric::Cpu)),
                o6(s.ratio(w, a, Metric::Rss)),
                c.failures.join("; "),
                lo(c.wall_range),
                hi(c.wall_range),
                lo(c.cpu_range),
                hi(c.cpu_range),
                lo(c.rss_range),
                hi(c.rss_range),
            ]);
        }
    }
    for a in &s.allocs {
        let mut row = vec!["geomean".to_string(), a.clone(), s.reference.clone(), String::new(), String::new()];
        row.extend([String::new(), String::new(), String::new()]);
        row.extend([Metric::Wall, Metric::Cpu, Metric::Rss].map(|m| o6(s.geomean(a, m).0)));
        row.extend(std::iter::repeat_n(String::new(), 7));
        rows.push(row);
    }
    csv_text(&head, rows)
}

/// Columns of the per-run CSV.
pub const RUNS_CSV_HEAD: [&str; 10] =
    ["rep", "workload", "allocator", "status", "wall_s", "user_s", "sys_s", "peak_rss_kib", "work_s", "checksum"];

/// One row of the per-run CSV.
pub fn runs_csv_row(r: &Record) -> Vec<String> {
    vec![
        r.rep.to_string(),
        r.workload.clone(),
        r.alloc.clone(),
        r.status.clone(),
        format!("{:.6}", r.wall),
        format!("{:.6}", r.user),
        format!("{:.6}", r.sys),
        r.maxrss_kib.to_string(),
        o6(r.work_s),
        r.checksum.clone().unwrap_or_default(),
    ]
}

/// The per-run CSV of all records.
pub fn runs_csv(records: &[Record]) -> String {
    csv_text(&RUNS_CSV_HEAD, records.iter().map(runs_csv_row))
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn table_text_and_markdown() {
        let cells = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let t = Table {
            head: cells(&["allocator", "wall s", "min–max"]),
            rows: vec![cells(&["glibc (ref)", "2.500", "2.000–3.000"]), cells(&["domalloc", "12.1", ""])],
        };
        assert_eq!(
            t.text(),
            "allocator    wall s      min–max\nglibc (ref)   2.500  2.000–3.000\ndomalloc       12.1             \n"
        );
        assert_eq!(
            t.markdown(),
            "| allocator | wall s | min–max |\n| :--- | ---: | ---: |\n| glibc (ref) | 2.500 | 2.000–3.000 |\n| domalloc | 12.1 |  |\n"
        );
    }
}
