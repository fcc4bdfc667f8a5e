//! The SVG chart of `domalloc report --svg`, drawn with plotters' SVG backend: peak memory in use
//! per rank, stacked by node (top), and local vs remote frees per rank with the remote share on
//! each bar (bottom). Outlier ranks carry a `*` under their bar.
//! Drawn with the project's one plotters set-up, the comparison suite's `chart` module.

use domalloc_bench_suite::chart::plotters;
use domalloc_bench_suite::chart::{self, font, legend, swatch, Area};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{short_count, Merged};

const NODE_COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
    RGBColor(227, 119, 194),
];
const LOCAL: RGBColor = RGBColor(31, 119, 180);
const REMOTE: RGBColor = RGBColor(255, 127, 14);
const MIB: f64 = 1048576.0;

fn labels(m: &Merged) -> Vec<String> {
    m.ranks.iter().map(|r| if m.is_outlier(&r.label) { format!("{} *", r.label) } else { r.label.clone() }).collect()
}

/// The chart as an SVG document.
pub fn svg(m: &Merged) -> Result<String, String> {
    let n = m.ranks.len().max(1);
    let width = (160 + 70 * n).clamp(640, 4000) as u32;
    chart::svg((width, 760), |root| {
        let (top, bottom) = root.split_vertically(380);
        memory_panel(&top, m)?;
        frees_panel(&bottom, m)
    })
    .map_err(|e| format!("report: cannot draw the chart: {e:?}"))
}

/// The x axis' last segment: one segment per rank (plotters' integer ranges include their end),
/// and at least two so that a single rank's label stays under its bar.
fn last_rank(m: &Merged) -> u32 {
    m.ranks.len().max(2) as u32 - 1
}

/// The right edge of rank `i`'s segment (the last one ends at the axis' end).
fn right_edge(m: &Merged, i: u32) -> SegmentValue<u32> {
    if i >= last_rank(m) {
        SegmentValue::Last
    } else {
        SegmentValue::Exact(i + 1)
    }
}

fn memory_panel(area: &Area<'_>, m: &Merged) -> Result<(), chart::Error> {
    let n = m.ranks.len() as u32;
    let names = labels(m);
    let stacks: Vec<f64> =
        m.ranks.iter().map(|r| r.doc.nodes.iter().map(|x| x.counters.in_use_peak_bytes as f64 / MIB).sum()).collect();
    let ymax = stacks.iter().copied().fold(0.0, f64::max).max(1.0) * 1.15;
    let outlier_note = if m.outliers.is_empty() { "" } else { "  (* outlier, see the table)" };
    let mut chart = ChartBuilder::on(area)
        .caption(format!("Peak memory in use per rank, by node{outlier_note}"), font(18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d((0..last_rank(m)).into_segmented(), 0.0..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("rank")
        .y_desc("MiB (per-node peaks, stacked)")
        .draw()?;
    for (k, &node) in m.nodes.iter().enumerate() {
        let colour = NODE_COLOURS[k % NODE_COLOURS.len()];
        let bars = m.ranks.iter().enumerate().filter_map(|(i, r)| {
            let below: f64 = r
                .doc
                .nodes
                .iter()
                .filter(|x| m.nodes.iter().position(|&id| id == x.node) < Some(k))
                .map(|x| x.counters.in_use_peak_bytes as f64 / MIB)
                .sum();
            let this = r.doc.nodes.iter().find(|x| x.node == node)?.counters.in_use_peak_bytes as f64 / MIB;
            let i = i as u32;
            let mut bar =
                Rectangle::new([(SegmentValue::Exact(i), below), (right_edge(m, i), below + this)], colour.filled());
            bar.set_margin(0, 0, 8, 8);
            Some(bar)
        });
        chart.draw_series(bars)?.label(format!("node {node}")).legend(swatch(colour));
    }
    legend(&mut chart)
}

fn frees_panel(area: &Area<'_>, m: &Merged) -> Result<(), chart::Error> {
    let n = m.ranks.len() as u32;
    let names = labels(m);
    let ymax = m.ranks.iter().map(|r| r.doc.totals.local_frees + r.doc.totals.remote_frees).max().unwrap_or(0).max(1)
        as f64
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption("Frees per rank: local vs remote (remote share on top)", font(18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d((0..last_rank(m)).into_segmented(), 0.0..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| short_count(*v as u64))
        .x_desc("rank")
        .y_desc("frees")
        .draw()?;
    let bar = |i: usize, lo: f64, hi: f64, c: RGBColor| {
        let i = i as u32;
        let mut r = Rectangle::new([(SegmentValue::Exact(i), lo), (right_edge(m, i), hi)], c.filled());
        r.set_margin(0, 0, 8, 8);
        r
    };
    let t = |i: usize| &m.ranks[i].doc.totals;
    chart
        .draw_series((0..m.ranks.len()).map(|i| bar(i, 0.0, t(i).local_frees as f64, LOCAL)))?
        .label("local frees")
        .legend(swatch(LOCAL));
    chart
        .draw_series((0..m.ranks.len()).map(|i| {
            let local = t(i).local_frees as f64;
            bar(i, local, local + t(i).remote_frees as f64, REMOTE)
        }))?
        .label("remote frees")
        .legend(swatch(REMOTE));
    chart.draw_series((0..m.ranks.len()).filter_map(|i| {
        let share = t(i).remote_share()?;
        let top = (t(i).local_frees + t(i).remote_frees) as f64;
        let pos = (SegmentValue::CenterOf(i as u32), top + ymax * 0.02);
        Some(Text::new(
            format!("{:.1}%", share * 100.0),
            pos,
            font(12).color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom)),
        ))
    }))?;
    legend(&mut chart)
}
