//! Shared pieces of the multi-node QEMU test harness.
//!
//! The guest program (`src/bin/numa-guest/`) runs inside a QEMU guest with emulated NUMA nodes
//! and prints one `RESULT` line per check and a final `SUMMARY` line; the host-side driver
//! (`tests/guest.rs`) boots the guests through [`qemu`] (`scripts/qemu/run-guest.sh`) and parses
//! those lines with the functions here. The line format is plain `key=value` tokens so that a
//! person reading a serial console log can follow it too:
//!
//! ```text
//! RESULT pattern=2 phase=b-alloc pair=0>1 size=4096 threads_per_node=1 objects=512 pages=512 local=512 absent=0 share=1.0000 nodes=1:512 PASS
//! SUMMARY passed=57 failed=0 info=3 crashed=0
//! ```

use std::collections::BTreeMap;
use std::fmt;

pub mod qemu;

/// Parses a size such as `16`, `4K`, `2M`, `1G` (binary units; `k`/`m`/`g` also accepted).
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1usize << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

/// Formats a byte count the way [`parse_size`] reads it back (exact, largest whole unit).
#[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the workspace MSRV
pub fn format_size(n: usize) -> String {
    if n != 0 && n % (1 << 30) == 0 {
        format!("{}G", n >> 30)
    } else if n != 0 && n % (1 << 20) == 0 {
        format!("{}M", n >> 20)
    } else if n != 0 && n % (1 << 10) == 0 {
        format!("{}K", n >> 10)
    } else {
        n.to_string()
    }
}

/// Verdict of one `RESULT` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The check held.
    Pass,
    /// The check failed.
    Fail,
    /// Informational measurement, not a check (printed as `INFO`).
    Info,
    /// The check could not run on this topology (printed as `SKIP`).
    Skip,
}

/// One parsed `RESULT` line.
#[derive(Clone, Debug)]
pub struct ResultLine {
    /// All `key=value` tokens of the line.
    pub fields: BTreeMap<String, String>,
    /// The final token.
    pub verdict: Verdict,
    /// The line as printed.
    pub raw: String,
}

impl ResultLine {
    /// A field, or `"?"`.
    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or("?")
    }

    /// The pattern number, or 0 when missing.
    pub fn pattern(&self) -> u32 {
        self.get("pattern").parse().unwrap_or(0)
    }

    /// The local share (0..1), or NaN when missing.
    pub fn share(&self) -> f64 {
        self.get("share").parse().unwrap_or(f64::NAN)
    }
}

impl fmt::Display for ResultLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pattern {} phase {} pair {} size {}{} threads/node {}: local share {} ({} of {} pages, absent {}, by node {}){}",
            self.get("pattern"),
            self.get("phase"),
            self.get("pair"),
            self.get("size"),
            match (self.fields.get("api"), self.fields.get("worker")) {
                (Some(a), Some(w)) => format!(" api {a} worker {w}"),
                (Some(a), None) => format!(" api {a}"),
                _ => String::new(),
            },
            self.get("threads_per_node"),
            self.get("share"),
            self.get("local"),
            self.get("pages"),
            self.get("absent"),
            self.get("nodes"),
            match self.fields.get("note") {
                Some(n) => format!(" [{n}]"),
                None => String::new(),
            }
        )
    }
}

/// Parses a `RESULT ...` line (leading garbage from the serial console is skipped).
pub fn parse_result(line: &str) -> Option<ResultLine> {
    let start = line.find("RESULT ")?;
    let body = line[start + "RESULT ".len()..].trim();
    let mut fields = BTreeMap::new();
    let mut verdict = None;
    for tok in body.split_whitespace() {
        if let Some((k, v)) = tok.split_once('=') {
            fields.insert(k.to_string(), v.to_string());
        } else {
            verdict = match tok {
                "PASS" => Some(Verdict::Pass),
                "FAIL" => Some(Verdict::Fail),
                "INFO" => Some(Verdict::Info),
                "SKIP" => Some(Verdict::Skip),
                _ => return None,
            };
        }
    }
    Some(ResultLine { fields, verdict: verdict?, raw: line[start..].trim().to_string() })
}

/// The final `SUMMARY` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Checks that held.
    pub passed: u64,
    /// Checks that failed.
    pub failed: u64,
    /// Informational lines.
    pub info: u64,
    /// Child runs that crashed or timed out.
    pub crashed: u64,
}

/// Parses a `SUMMARY ...` line.
pub fn parse_summary(line: &str) -> Option<Summary> {
    let start = line.find("SUMMARY ")?;
    let mut s = Summary::default();
    let mut seen = false;
    for tok in line[start + "SUMMARY ".len()..].split_whitespace() {
        let (k, v) = tok.split_once('=')?;
        let v: u64 = v.parse().ok()?;
        match k {
            "passed" => {
                s.passed = v;
                seen = true;
            }
            "failed" => s.failed = v,
            "info" => s.info = v,
            "crashed" => s.crashed = v,
            _ => {}
        }
    }
    seen.then_some(s)
}

/// Everything parsed from one guest's console output.
#[derive(Clone, Debug, Default)]
pub struct GuestReport {
    /// `RESULT` lines in order.
    pub results: Vec<ResultLine>,
    /// The `SUMMARY` line, if the guest got that far.
    pub summary: Option<Summary>,
    /// `INFO` lines (topology, allocator, THP mode) as printed.
    pub info: Vec<String>,
    /// `CRASH` lines (a child run died or timed out).
    pub crashes: Vec<String>,
    /// The exit status the guest's /init reported (`GUEST-EXIT rc=N`), if any.
    pub guest_exit: Option<i32>,
}

impl GuestReport {
    /// Parses a whole console log.
    pub fn parse(log: &str) -> Self {
        let mut r = GuestReport::default();
        for line in log.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(res) = parse_result(line) {
                r.results.push(res);
            } else if let Some(s) = parse_summary(line) {
                r.summary = Some(s);
            } else if let Some(i) = line.find("INFO ") {
                r.info.push(line[i..].to_string());
            } else if let Some(i) = line.find("CRASH ") {
                r.crashes.push(line[i..].to_string());
            } else if let Some(i) = line.find("GUEST-EXIT rc=") {
                r.guest_exit = line[i + "GUEST-EXIT rc=".len()..].trim().parse().ok();
            }
        }
        r
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &ResultLine> {
        self.results.iter().filter(|r| r.verdict == Verdict::Fail)
    }

    /// The passed checks.
    pub fn passes(&self) -> impl Iterator<Item = &ResultLine> {
        self.results.iter().filter(|r| r.verdict == Verdict::Pass)
    }

    /// Panics unless the guest finished, no check failed, no run crashed and the program exited
    /// 0 (`what` names the run in the message).
    pub fn assert_passed(&self, what: &str) {
        let s = self.summary.unwrap_or_else(|| panic!("{what}: no SUMMARY line\n{}", self.render()));
        let bad: Vec<String> = self.failures().map(|r| format!("  {r}")).chain(self.crashes.iter().cloned()).collect();
        let counts = format!("{} of {} checks failed, {} runs crashed", s.failed, s.passed + s.failed, s.crashed);
        assert!(bad.is_empty() && s.failed == 0 && s.crashed == 0, "{what}: {counts}:\n{}", bad.join("\n"));
        assert_eq!(self.guest_exit, Some(0), "{what}: guest program exit status");
    }

    /// A readable multi-line report: summary, then every failed and informational line (not
    /// pattern 9's per-worker `recycle-faults` lines: see [`GuestReport::first_touch_table`]).
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Pattern 9's per-worker fault lines are summed up by `first_touch_table`.
        for i in self
            .info
            .iter()
            .filter(|i| !i.starts_with("INFO pattern=9 recycle-faults") && !i.starts_with("INFO pattern=10 "))
        {
            s.push_str(&format!("  {i}\n"));
        }
        match self.summary {
            Some(sum) => s.push_str(&format!(
                "  summary: {} passed, {} failed, {} informational, {} crashed\n",
                sum.passed, sum.failed, sum.info, sum.crashed
            )),
            None => s.push_str("  summary: MISSING (guest did not finish)\n"),
        }
        for c in &self.crashes {
            s.push_str(&format!("  {c}\n"));
        }
        const SHOW: usize = 40;
        for r in self.failures().take(SHOW) {
            s.push_str(&format!("  FAIL {r}\n"));
        }
        let more = self.failures().count().saturating_sub(SHOW);
        if more > 0 {
            s.push_str(&format!("  ... and {more} more failed checks (see the console log)\n"));
        }
        for r in self.results.iter().filter(|r| r.verdict == Verdict::Info) {
            s.push_str(&format!("  info {r}\n"));
        }
        s
    }
}

/// Per-pattern totals over the checked (`PASS`/`FAIL`) lines of one guest run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PatternStats {
    /// Checks that held.
    pub passed: u64,
    /// Checks that failed.
    pub failed: u64,
    /// Pages measured, over all checks of the pattern.
    pub pages: u64,
    /// Of those, pages on the expected node.
    pub local: u64,
    /// The lowest local share of any one check (1.0 when there were none).
    pub min_share: f64,
}

impl PatternStats {
    /// Local pages / pages over all checks of the pattern (NaN when no pages were measured).
    pub fn share(&self) -> f64 {
        if self.pages == 0 {
            f64::NAN
        } else {
            self.local as f64 / self.pages as f64
        }
    }

    /// True when the pattern was checked and no check failed.
    pub fn all_passed(&self) -> bool {
        self.failed == 0 && self.passed > 0
    }
}

impl GuestReport {
    /// Totals per pattern number over the `PASS`/`FAIL` lines (`INFO`/`SKIP` lines are left out).
    pub fn by_pattern(&self) -> BTreeMap<u32, PatternStats> {
        let mut m: BTreeMap<u32, PatternStats> = BTreeMap::new();
        for r in self.results.iter().filter(|r| matches!(r.verdict, Verdict::Pass | Verdict::Fail)) {
            let e = m.entry(r.pattern()).or_insert(PatternStats { min_share: 1.0, ..Default::default() });
            if r.verdict == Verdict::Pass {
                e.passed += 1;
            } else {
                e.failed += 1;
            }
            e.pages += r.get("pages").parse::<u64>().unwrap_or(0);
            e.local += r.get("local").parse::<u64>().unwrap_or(0);
            let s = r.share();
            if s.is_finite() && s < e.min_share {
                e.min_share = s;
            }
        }
        m
    }

    /// A per-pattern table: checks passed/failed, overall and lowest local share.
    pub fn pattern_table(&self) -> String {
        let mut s = String::from("  pattern  checks  failed  local share (all pages)  lowest check\n");
        for (p, st) in self.by_pattern() {
            s.push_str(&format!(
                "  {p:>7}  {:>6}  {:>6}  {:>22.2}%  {:>11.2}%  {}\n",
                st.passed + st.failed,
                st.failed,
                st.share() * 100.0,
                st.min_share * 100.0,
                if st.all_passed() { "PASS" } else { "FAIL" }
            ));
        }
        s
    }
}

impl GuestReport {
    /// Pattern 9 (per-worker first touch) as a table: one row per (threads per node, phase, api,
    /// size), one column per worker node (from `pair=A>N`): the share of that node's workers'
    /// pages found on it, and `[minor faults/pages]` of those workers in that round. The last
    /// column is `PASS`/`FAIL` (over the row's checks) or `info`. Empty when there is no pattern 9.
    pub fn first_touch_table(&self) -> String {
        type Cell = (u64, u64, u64); // pages, local, minflt
                                     // (tpn, phase, api, size), worker node -> cell, [passed, failed, info]
        type Row = ([String; 4], BTreeMap<usize, Cell>, [u64; 3]);
        let mut rows: Vec<Row> = Vec::new();
        let mut nodes = std::collections::BTreeSet::new();
        for r in self.results.iter().filter(|r| r.pattern() == 9 && r.verdict != Verdict::Skip) {
            let Some(node) = r.get("pair").split_once('>').and_then(|(_, n)| n.parse::<usize>().ok()) else { continue };
            let key = [r.get("threads_per_node"), r.get("phase"), r.get("api"), r.get("size")].map(str::to_string);
            let i = match rows.iter().position(|(k, _, _)| *k == key) {
                Some(i) => i,
                None => {
                    rows.push((key, BTreeMap::new(), [0; 3]));
                    rows.len() - 1
                }
            };
            let num = |k: &str| r.get(k).parse::<u64>().unwrap_or(0);
            let c = rows[i].1.entry(node).or_default();
            c.0 += num("pages");
            c.1 += num("local");
            c.2 += num("minflt");
            rows[i].2[match r.verdict {
                Verdict::Pass => 0,
                Verdict::Fail => 1,
                _ => 2,
            }] += 1;
            nodes.insert(node);
        }
        if rows.is_empty() {
            return String::new();
        }
        let mut s = String::from(
            "  pattern 9, per-worker first touch: share of each worker node's pages on that node [minor faults/pages]\n",
        );
        s.push_str(&format!("  {:>3}  {:<13} {:<15} {:>6}", "tpn", "phase", "api", "size"));
        for n in &nodes {
            s.push_str(&format!("  {:>22}", format!("node {n}")));
        }
        s.push_str("  verdict\n");
        for (k, cells, v) in &rows {
            s.push_str(&format!("  {:>3}  {:<13} {:<15} {:>6}", k[0], k[1], k[2], k[3]));
            for n in &nodes {
                let cell = match cells.get(n) {
                    Some(&(pages, local, minflt)) if pages > 0 => {
                        format!("{:.2}% [{minflt}/{pages}]", local as f64 * 100.0 / pages as f64)
                    }
                    _ => "-".to_string(),
                };
                s.push_str(&format!("  {cell:>22}"));
            }
            let verdict = if v[1] > 0 {
                "FAIL"
            } else if v[0] > 0 {
                "PASS"
            } else {
                "info"
            };
            s.push_str(&format!("  {verdict}\n"));
        }
        s
    }
}

/// The API names one guest program uses in pattern 9 (`api=` of its RESULT lines).
#[derive(Clone, Copy, Debug)]
pub struct FirstTouchApis<'a> {
    /// Checked at every size, in the first-touch and recycle rounds (`alloc`, `alloc_zeroed`).
    pub plain: &'a [&'a str],
    /// Checked at `aligned_size` only (`alloc-align4k`; C: `posix_memalign`, ...).
    pub aligned: &'a [&'a str],
    /// The size of the aligned cases (`64K`).
    pub aligned_size: &'a str,
    /// The `api=` of the remote-free phase (`alloc` / `malloc`).
    pub remote: &'a str,
}

/// The Rust guest's pattern 9 APIs.
pub const RUST_FIRST_TOUCH_APIS: FirstTouchApis<'static> = FirstTouchApis {
    plain: &["alloc", "alloc_zeroed"],
    aligned: &["alloc-align4k"],
    aligned_size: "64K",
    remote: "alloc",
};
/// The pattern 9 APIs of the C path, the guest built with the System allocator: `alloc` is
/// `malloc`, `alloc_zeroed` `calloc` and `alloc-align4k` `posix_memalign`; `aligned_alloc` and
/// `memalign` are called as they are.
pub const C_FIRST_TOUCH_APIS: FirstTouchApis<'static> = FirstTouchApis {
    plain: &["alloc", "alloc_zeroed"],
    aligned: &["alloc-align4k", "aligned_alloc", "memalign"],
    aligned_size: "64K",
    remote: "alloc",
};

impl GuestReport {
    /// Pattern 10 (the sweep of issue 20): what is missing for `tpn` workers per node on each of
    /// `nodes`: a passing `checks` line (e.g. `sweep-first-touch`, `sweep-recycle`) for every order
    /// (asc, desc, shuffle). Each missing one is described in one string; empty = complete.
    pub fn sweep_gaps(&self, tpn: usize, checks: &[&str], nodes: &[usize]) -> Vec<String> {
        let tpn = tpn.to_string();
        let mut gaps = Vec::new();
        for order in ["asc", "desc", "shuffle"] {
            for check in checks {
                for node in nodes {
                    let found = self.passes().any(|r| {
                        r.pattern() == 10
                            && r.get("threads_per_node") == tpn
                            && r.get("phase") == *check
                            && r.get("order") == order
                            && r.get("pair").rsplit('>').next() == Some(node.to_string().as_str())
                    });
                    if !found {
                        gaps.push(format!("tpn={tpn} order={order} {check} worker node {node}: no passing check"));
                    }
                }
            }
        }
        gaps
    }

    /// Pattern 10 as a table: one row per (threads per node, order, check, worker): the local
    /// share of all its pages, the worst size's share, how many sizes missed, faults per page.
    pub fn sweep_table(&self) -> String {
        let mut s = String::from("  tpn  order    check                    worker  local    worst (size)        misses/phases  faults/page  verdict\n");
        for r in self.results.iter().filter(|r| r.pattern() == 10 && r.get("size") == "sweep") {
            s.push_str(&format!(
                "  {:>3}  {:<7}  {:<23}  {:>6}  {:>6.2}%  {:>6.2}% ({:<8})  {:>6}/{:<6}  {:>11}  {:?}\n",
                r.get("threads_per_node"),
                r.get("order"),
                r.get("phase"),
                r.get("worker"),
                r.share() * 100.0,
                r.get("worst_share").parse::<f64>().unwrap_or(f64::NAN) * 100.0,
                r.get("worst_size"),
                r.get("misses"),
                r.get("phases"),
                r.get("faults_per_page"),
                r.verdict
            ));
        }
        for l in self.info.iter().filter(|l| l.starts_with("INFO pattern=10 order=")) {
            s.push_str(&format!("  {}\n", l.split(" sizes=").next().unwrap_or(l)));
        }
        s
    }
}

impl GuestReport {
    /// The pattern 9 checks missing from a run with `tpn` threads per node: for each of `nodes`,
    /// a passing line of a worker on it for every (phase, api, size) the run was asked for:
    /// first-touch and recycle for every size of `sizes` and api of `apis.plain` (and the aligned
    /// apis at their size, when `sizes` has it), remote-free and realloc-grow for the sizes up
    /// to 4 MiB. Each missing one is described in one string; empty = complete.
    pub fn first_touch_gaps(
        &self,
        tpn: usize,
        sizes: &[&str],
        apis: &FirstTouchApis<'_>,
        nodes: &[usize],
    ) -> Vec<String> {
        let tpn = tpn.to_string();
        let mut want: Vec<(&str, &str, &str)> = Vec::new();
        for &size in sizes {
            for phase in ["first-touch", "recycle"] {
                want.extend(apis.plain.iter().map(|&a| (phase, a, size)));
                if size == apis.aligned_size {
                    want.extend(apis.aligned.iter().map(|&a| (phase, a, size)));
                }
            }
            if parse_size(size).is_some_and(|n| n <= 4 << 20) {
                want.push(("remote-free", apis.remote, size));
                want.push(("realloc-grow", "realloc", size));
            }
        }
        let mut gaps = Vec::new();
        for (phase, api, size) in want {
            for &node in nodes {
                let found = self.passes().any(|r| {
                    r.pattern() == 9
                        && r.get("threads_per_node") == tpn
                        && r.get("phase") == phase
                        && r.get("api") == api
                        && r.get("size") == size
                        && r.get("pair").rsplit('>').next() == Some(node.to_string().as_str())
                });
                if !found {
                    gaps.push(format!(
                        "tpn={tpn} phase={phase} api={api} size={size} worker node {node}: no passing check"
                    ));
                }
            }
        }
        gaps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip() {
        for n in [16, 4096, 2 << 20, 64 << 20, 1000, 1 << 30] {
            assert_eq!(parse_size(&format_size(n)), Some(n));
        }
        assert_eq!(parse_size("2m"), Some(2 << 20));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn parses_lines() {
        let log = "\x1b[2Jjunk\r\nINFO allocator=system nodes=0,1\r\n\
            RESULT pattern=2 phase=b-alloc pair=0>1 size=4096 threads_per_node=1 pages=10 local=9 absent=0 share=0.9000 nodes=0:1,1:9 FAIL\r\n\
            RESULT pattern=1 phase=own pair=- size=16 threads_per_node=1 pages=10 local=10 absent=0 share=1.0000 nodes=0:10 PASS\n\
            SUMMARY passed=1 failed=1 info=0 crashed=0\nGUEST-EXIT rc=1\n";
        let r = GuestReport::parse(log);
        assert_eq!(r.results.len(), 2);
        assert_eq!(r.failures().count(), 1);
        assert_eq!(r.results[0].pattern(), 2);
        assert!((r.results[0].share() - 0.9).abs() < 1e-9);
        assert_eq!(r.summary, Some(Summary { passed: 1, failed: 1, info: 0, crashed: 0 }));
        assert_eq!(r.guest_exit, Some(1));
        assert_eq!(r.info.len(), 1);
        assert!(r.render().contains("FAIL pattern 2 phase b-alloc"));
        let by = r.by_pattern();
        assert_eq!(by[&2].failed, 1);
        assert!(by[&1].all_passed() && !by[&2].all_passed());
        assert!((by[&2].min_share - 0.9).abs() < 1e-9);
        assert!(r.pattern_table().contains("FAIL"));
        assert_eq!(r.first_touch_table(), "");
    }

    #[test]
    fn first_touch_table_per_worker_node() {
        let log = "RESULT pattern=9 phase=first-touch pair=0>0 size=16K threads_per_node=2 objects=8 pages=32 local=32 absent=0 share=1.0000 nodes=0:32 api=alloc worker=0:0 minflt=32 PASS\n\
            RESULT pattern=9 phase=first-touch pair=0>1 size=16K threads_per_node=2 objects=8 pages=32 local=0 absent=0 share=0.0000 nodes=0:32 api=alloc worker=1:0 minflt=0 FAIL\n\
            RESULT pattern=9 phase=first-touch pair=0>1 size=16K threads_per_node=2 objects=8 pages=32 local=32 absent=0 share=1.0000 nodes=1:32 api=alloc worker=1:1 minflt=32 PASS\n\
            RESULT pattern=9 phase=recycle pair=0>1 size=16K threads_per_node=2 objects=8 pages=32 local=32 absent=0 share=1.0000 nodes=1:32 api=alloc worker=1:0 minflt=3 INFO\n\
            RESULT pattern=9 phase=first-touch pair=- size=64M threads_per_node=2 note=node_memory_too_small SKIP\n";
        let t = GuestReport::parse(log).first_touch_table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[1].contains("node 0") && lines[1].contains("node 1"), "{t}");
        assert!(
            lines[2].contains("100.00% [32/32]") && lines[2].contains("50.00% [32/64]") && lines[2].ends_with("FAIL"),
            "{t}"
        );
        assert!(
            lines[3].contains("recycle") && lines[3].contains("100.00% [3/32]") && lines[3].ends_with("info"),
            "{t}"
        );
        let r = GuestReport::parse(log);
        let apis = FirstTouchApis { plain: &["alloc"], aligned: &[], aligned_size: "64K", remote: "alloc" };
        let gaps = r.first_touch_gaps(2, &["16K"], &apis, &[0, 1]);
        // Missing: recycle on node 0 (none), recycle on node 1 (INFO only), remote-free and realloc-grow.
        assert_eq!(gaps.len(), 6, "{gaps:?}");
        assert!(!gaps.iter().any(|g| g.contains("first-touch")), "{gaps:?}");
    }
}
