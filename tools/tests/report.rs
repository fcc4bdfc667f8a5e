//! `domalloc report`, by running the real binary on the sample statistics files in
//! tests/data (written to the schema of the allocator's `DOMALLOC_STATS=json` output): the table,
//! the CSV, the SVG chart, the merged JSON, outliers and the `--outlier-factor`, and one clear
//! line naming the file for each kind of malformed file.

mod common;

use std::path::PathBuf;

use common::*;

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name).to_str().unwrap().to_string()
}

fn job4() -> Vec<String> {
    (0..4).map(|r| data(&format!("job4/stats.{r}.json"))).collect()
}

fn report(extra: &[&str], files: &[String]) -> std::process::Output {
    let mut args = vec!["report"];
    args.extend_from_slice(extra);
    args.extend(files.iter().map(String::as_str));
    run(&args, &[])
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("domalloc-report-{}-{name}", std::process::id()))
}

#[test]
fn four_ranks_table_with_the_outlier() {
    // Files in any order: the table is in rank order.
    let mut files = job4();
    files.reverse();
    let o = report(&["--strict"], &files);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.is_empty(), "no warnings on valid files: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "domalloc report: 4 rank(s), 2 node(s), host(s) node17");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>().join(" "),
        "rank node in-use peak mapped peak remote frees purged went home"
    );
    // Ranks x nodes, then each rank's totals.
    let rows: Vec<Vec<&str>> = lines[2..14].iter().map(|l| l.split_whitespace().collect()).collect();
    let keys: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    let mut want = Vec::new();
    for r in ["0", "1", "2", "3"] {
        want.extend([(r, "0"), (r, "1"), (r, "all")]);
    }
    assert_eq!(keys, want);
    assert_eq!(rows[0][2..].join(" "), "212.0 MiB 236.0 MiB 1.2% of 1.8M 310.0 MiB 10.8k", "rank 0 node 0");
    assert_eq!(rows[11][2..].join(" "), "227.9 MiB 256.8 MiB 41.7% of 1.8M 333.0 MiB 749.2k", "rank 3 totals");
    // Exactly one outlier: rank 3, for its remote-free share, with the reason.
    assert_eq!(
        lines[14],
        "outliers (more than 1.5x or under 1/1.5 of the median of the ranks, and more than 3 MADs from it):"
    );
    assert_eq!(
        lines[15],
        "  rank 3: remote-free share 41.7% vs median 2.6% of 4 ranks: 16.2x the median, 397 MADs from it"
    );
    assert_eq!(lines.len(), 16, "{out}");
}

#[test]
fn outlier_factor() {
    let out = text(&report(&["--outlier-factor", "20"], &job4())).0;
    assert!(out.contains("outliers: none (factor 20, 3 MADs)"), "{out}");
    let out = text(&report(&["--outlier-factor=10"], &job4())).0;
    assert!(out.contains("  rank 3: remote-free share"), "{out}");
    for bad in ["1", "0.5", "-3", "inf"] {
        let arg = format!("--outlier-factor={bad}");
        assert_refused(&report(&[&arg], &job4()), "expected a number above 1", bad);
    }
}

#[test]
fn csv_has_a_row_per_rank_and_node_and_the_totals() {
    let path = tmp("t.csv");
    let o = report(&["--csv", path.to_str().unwrap()], &job4());
    assert!(o.status.success());
    assert!(text(&o).0.contains(&format!("csv: {}", path.display())));
    let csv = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 4 * 3);
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(header.len(), 17);
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let row3: Vec<&str> = lines[12].split(',').collect();
    assert_eq!((row3[col("rank")], row3[col("node")]), ("3", "all"));
    assert_eq!(row3[col("remote_frees")], "765647");
    assert_eq!(row3[col("remote_free_share")], "0.417315");
    assert_eq!(row3[col("in_use_peak_bytes")], "239022080");
    assert!(lines.iter().skip(1).all(|l| l.split(',').count() == 17));
    let _ = std::fs::remove_file(path);
}

#[test]
fn svg_chart() {
    let path = tmp("t.svg");
    let o = report(&["--svg", path.to_str().unwrap()], &job4());
    assert!(o.status.success(), "{}", text(&o).1);
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "an SVG document");
    // plotters writes each text on its own line between <text ...> and </text>.
    let texts: Vec<&str> = svg.lines().map(str::trim).collect();
    for want in [
        "Peak memory in use per rank, by node  (* outlier, see the table)",
        "Frees per rank: local vs remote (remote share on top)",
        "node 0",
        "node 1",
        "local frees",
        "remote frees",
        "3 *",
        "41.7%",
        "2.5%",
    ] {
        assert!(texts.contains(&want), "{want:?} in the chart");
    }
    assert!(!texts.contains(&"2 *"), "only rank 3 is marked");
    // 4 ranks x 2 nodes of memory, 4 x 2 of frees, plus background, legend boxes and frames.
    assert!(svg.matches("<rect").count() >= 16, "bars");
    let _ = std::fs::remove_file(path);
}

#[test]
fn merged_json() {
    let o = report(&["--json"], &job4());
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["domalloc_report"], 1);
    assert_eq!(v["files"], 4);
    assert_eq!(v["nodes"], serde_json::json!([0, 1]));
    let ranks = v["ranks"].as_array().unwrap();
    assert_eq!(ranks.iter().map(|r| r["rank"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(ranks[3]["outlier"], true);
    assert_eq!(ranks[0]["outlier"], false);
    assert_eq!(ranks[3]["totals"]["remote_frees"], 765647);
    assert_eq!(ranks[3]["nodes"][1]["node"], 1);
    let outliers = v["outliers"].as_array().unwrap();
    assert_eq!(outliers.len(), 1);
    assert_eq!(outliers[0]["rank"], "3");
    assert_eq!(outliers[0]["metric"], "remote_free_share");
    let median = v["median"]["remote_free_share"].as_f64().unwrap();
    assert!((median - 0.0255).abs() < 0.001, "{median}");
}

#[test]
fn single_process_without_rank_and_unknown_keys() {
    let o = report(&["--strict"], &[data("single.norank.json"), data("extra-keys.json")]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("\n         0     0      7.0 MiB"), "rank 0 first: {out}");
    assert!(out.contains("\n  pid 4242     0      7.0 MiB"), "no rank: labelled by pid: {out}");
    assert!(out.contains("outliers: not looked for (fewer than 3 ranks)"), "{out}");
    // The same rank twice: both kept, told apart, and a warning.
    let o = report(&[], &[data("job4/stats.0.json"), data("job4/stats.0.json")]);
    let (out, err) = text(&o);
    assert!(o.status.success());
    assert!(err.contains("warning: rank 0 appears in 2 files"), "{err}");
    assert!(out.contains("0@node17/pid 31840"), "{out}");
}

#[test]
fn malformed_files_are_rejected_naming_the_file() {
    let cases = [
        ("bad/not-json.json", "not valid JSON: EOF while parsing"),
        ("bad/empty.json", "empty file"),
        ("bad/missing-key.json", "does not follow the statistics schema: missing field `went_home` at line"),
        (
            "bad/wrong-type.json",
            "does not follow the statistics schema: invalid type: string \"many\", expected u64 at line",
        ),
        ("bad/version-2.json", "unsupported \"domalloc_stats\": 2 (this tool reads version 1)"),
        ("bad/not-stats.json", "not a domalloc statistics file (no \"domalloc_stats\" key)"),
        ("bad/no-rank-key.json", "does not follow the statistics schema: missing field `rank`"),
        ("no-such-file.json", "cannot read: No such file"),
    ];
    for (name, want) in cases {
        let file = data(name);
        // A good file first: the bad one still stops the merge.
        let o = report(&[], &[data("job4/stats.0.json"), file.clone()]);
        assert_refused(&o, &format!("domalloc: report: {file}: {want}"), name);
    }
}

#[test]
fn broken_invariants_warn_or_fail_with_strict() {
    let file = data("bad/invariants.json");
    let o = report(&[], std::slice::from_ref(&file));
    let (out, err) = text(&o);
    assert!(o.status.success());
    assert!(out.starts_with("domalloc report: 1 rank(s)"));
    assert!(err.starts_with(&format!("domalloc: report: warning: {file}: breaks the schema's invariants: ")), "{err}");
    for want in [
        "node 0: allocs 52114 - frees 51903 != live_blocks 216",
        "live_blocks: nodes sum to 216, totals say 211",
        "remote_frees: nodes sum to 0, totals say 3",
    ] {
        assert!(err.contains(want), "{want:?} in {err}");
    }
    assert_refused(
        &report(&["--strict"], std::slice::from_ref(&file)),
        &format!("{file}: breaks the schema's invariants"),
        "strict",
    );
}

#[test]
fn no_files_is_a_usage_error() {
    assert_eq!(report(&[], &[]).status.code(), Some(2));
}

#[test]
fn the_chart_needs_no_font_library() {
    // plotters is built without its font features (see bench-suite/Cargo.toml); a crate of the
    // workspace that turned them on again would link fontconfig/freetype into the binary.
    let Ok(o) = std::process::Command::new("ldd").arg(env!("CARGO_BIN_EXE_domalloc")).output() else { return };
    let libs = String::from_utf8_lossy(&o.stdout);
    for lib in ["libfontconfig", "libfreetype", "libexpat"] {
        assert!(!libs.contains(lib), "the domalloc binary links {lib}:\n{libs}");
    }
}

// ---- heap profiles (`--prof`) ----

#[inline(never)]
fn prof_marker_alpha(x: u64) -> u64 {
    std::hint::black_box(x.wrapping_mul(3).wrapping_add(1))
}

#[inline(never)]
fn prof_marker_beta(x: u64) -> u64 {
    std::hint::black_box(x.wrapping_mul(5).wrapping_add(2))
}

/// A profile file as the allocator writes it, with this test binary's own module map and
/// "return addresses" inside two of its functions.
fn write_profile(path: &PathBuf, rank: u32, alpha_bytes: u64, beta_remote: u64) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut text = format!("# domalloc heap profile 1\n# pid {} rank {rank} host h elapsed_ms 5 sample_bytes 524288 live_bytes 0 live_peak_bytes 0\n", 100 + rank);
    for l in maps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 6 && f[1].contains('x') {
            let (s, e) = f[0].split_once('-').unwrap();
            text += &format!("# map 0x{s}-0x{e} 0x{} {}\n", f[2], f[5]);
        }
    }
    let a = prof_marker_alpha as *const () as usize + 5;
    let b = prof_marker_beta as *const () as usize + 5;
    text += "# site samples alloc_bytes live_bytes peak_live_bytes freed_bytes remote_freed_bytes mean_lifetime_ms alloc_bytes_by_node mean_size threads stack\n";
    text += &format!("# site 3 {alpha_bytes} {alpha_bytes} {alpha_bytes} 0 0 0 {alpha_bytes},0,0,0 4000 1 {a:#x}\n");
    text += &format!("# site 2 1048576 0 524288 1048576 {beta_remote} 7 1048576,0,0,0 64 2 {b:#x}\n");
    text += "# sampled live_bytes 0 peak 0 dropped_samples 0\n# view alloc_bytes\n";
    std::fs::write(path, text).unwrap();
}

#[test]
fn prof_report_symbolises_merges_ranks_and_draws_a_flame_graph() {
    let (f0, f1, svg, col) = (tmp("p0.prof"), tmp("p1.prof"), tmp("flame.svg"), tmp("c.txt"));
    write_profile(&f0, 0, 3 << 20, 0);
    write_profile(&f1, 1, 1 << 20, 786432);
    let o = report(
        &["--prof", "--view", "alloc", "--svg", svg.to_str().unwrap(), "--collapsed", col.to_str().unwrap()],
        &[f0.to_str().unwrap().to_string(), f1.to_str().unwrap().to_string()],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}\n{out}");
    // Merged over the two ranks, by the symbolised stack.
    let alpha =
        out.lines().find(|l| l.contains("prof_marker_alpha")).unwrap_or_else(|| panic!("alpha not symbolised:\n{out}"));
    assert!(
        alpha.contains("4.0 MiB") && alpha.split_whitespace().any(|w| w == "2"),
        "alpha merged over 2 ranks: {alpha}\n{out}"
    );
    // The remote share of beta's freed bytes: 786432 of 2 MiB.
    let beta =
        out.lines().rfind(|l| l.contains("prof_marker_beta")).unwrap_or_else(|| panic!("beta not symbolised:\n{out}"));
    assert!(beta.contains("37.5%"), "beta's remote share: {beta}\n{out}");
    let c = std::fs::read_to_string(&col).unwrap();
    assert!(c.lines().any(|l| l.contains("prof_marker_alpha") && l.ends_with(&format!(" {}", 4 << 20))), "{c}");
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.starts_with("<?xml") && s.contains("prof_marker_alpha"), "not a flame graph of the sites");
    for f in [f0, f1, svg, col] {
        let _ = std::fs::remove_file(f);
    }
    // Keep the markers alive.
    assert_eq!(prof_marker_alpha(1) + prof_marker_beta(1), 11);
}

#[test]
fn prof_report_refuses_a_file_that_is_not_a_profile() {
    let o = report(&["--prof"], &[data("job4/stats.0.json")]);
    assert_refused(&o, "not a domalloc heap profile", "a statistics file given as a profile");
}

/// A return address past the end of the symbol before it (a function the symbol table does not
/// list: the dynamic loader and stripped libraries export a few of theirs) is shown as
/// `module+0xoffset`, not as that symbol: Open MPI's ranks showed allocations "in"
/// `_dl_debug_state`, a one-byte function of the loader.
#[test]
fn prof_report_names_no_symbol_that_does_not_cover_the_address() {
    use object::{Object, ObjectSegment, ObjectSymbol};
    let lib = "/lib64/ld-linux-x86-64.so.2";
    let Ok(data) = std::fs::read(lib) else {
        eprintln!("skipped: no {lib}");
        return;
    };
    let file = object::File::parse(&*data).unwrap();
    let sym =
        file.dynamic_symbols().find(|s| s.name() == Ok("_dl_debug_state")).expect("ld.so exports _dl_debug_state");
    assert!(sym.size() < 16, "_dl_debug_state is a tiny function (size {})", sym.size());
    let seg = file.segments().find(|s| s.address() <= sym.address() && sym.address() < s.address() + s.size()).unwrap();
    let file_off = sym.address() - seg.address() + seg.file_range().0;
    // Past the symbol, and not inside any other exported one.
    let inside = |a: u64| file.dynamic_symbols().any(|s| s.address() <= a && a < s.address() + s.size());
    let delta = (0x20..0x400).find(|d| !inside(sym.address() + d)).unwrap();
    let (start, ra) = (0x10_0000u64, 0x10_0000 + file_off + delta + 1);
    let path = tmp("ldso.prof");
    let body = format!(
        "# domalloc heap profile 1\n# pid 7 rank 0 host h elapsed_ms 5 sample_bytes 524288 live_bytes 0 live_peak_bytes 0\n\
         # map {start:#x}-{:#x} 0x0 {lib}\n\
         # site 1 524288 524288 524288 0 0 0 524288,0,0,0 64 1 {ra:#x}\n# sampled live_bytes 524288 peak 524288 dropped_samples 0\n",
        start + data.len() as u64
    );
    std::fs::write(&path, body).unwrap();
    let o = report(&["--prof"], &[path.to_str().unwrap().to_string()]);
    let _ = std::fs::remove_file(&path);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        !out.contains("_dl_debug_state"),
        "an address {delta:#x} past the one-byte _dl_debug_state is named after it:\n{out}"
    );
    assert!(
        out.contains(&format!("ld-linux-x86-64.so.2+{:#x}", file_off + delta + 1)),
        "not shown as module+offset:\n{out}"
    );
}
