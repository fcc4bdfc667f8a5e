//! The chart (plotters, SVG backend): grouped bars of each allocator's ratio to the reference,
//! one panel for wall time and one for peak RSS, on a log axis through 1.0 (bars above the
//! line are slower / bigger than the reference, below are faster / smaller). A red `×` marks
//! an allocator whose runs of a workload all failed. Drawn with the one plotters set-up,
//! [`crate::chart`].

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{Metric, Summary};
use crate::chart::{self, font, legend, swatch, Area};

const PALETTE: &[RGBColor] = &[
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
];

/// Renders the chart. `title` goes on top (date, machine).
pub fn chart(s: &Summary, title: &str) -> String {
    let groups: Vec<String> = s.workloads.iter().cloned().chain(std::iter::once("geomean".to_string())).collect();
    let width = (120 + groups.len() * (14 * s.allocs.len().max(1) + 18)) as u32;
    chart::svg((width.max(900), 860), |root| draw(root, s, &groups, title)).unwrap_or_else(|e| {
        format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"40\"><text x=\"10\" y=\"25\">chart failed: {e}</text></svg>\n")
    })
}

fn value(s: &Summary, g: &str, a: &str, m: Metric) -> Option<f64> {
    if g == "geomean" {
        s.geomean(a, m).0
    } else {
        s.ratio(g, a, m)
    }
}

/// Axis range: powers of two around the data, at least [1/2, 2], at most [1/16, 16].
fn range(s: &Summary, groups: &[String], m: Metric) -> (f64, f64) {
    let vals = groups.iter().flat_map(|g| s.allocs.iter().filter_map(move |a| value(s, g, a, m)));
    let (lo, hi) = vals.fold((0.5f64, 2.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (2f64.powf(lo.log2().floor()).max(1.0 / 16.0), 2f64.powf(hi.log2().ceil()).min(16.0))
}

fn draw(root: &Area<'_>, s: &Summary, groups: &[String], title: &str) -> Result<(), chart::Error> {
    let subtitle = format!("ratio to {} (log scale; 1.0 = reference; lower is better; × = failed)", s.reference);
    root.draw(&Text::new(title.to_string(), (60, 8), font(15).style(FontStyle::Bold)))?;
    root.draw(&Text::new(subtitle, (60, 28), font(11).color(&RGBColor(0x55, 0x55, 0x55))))?;
    let panels = root.margin(44, 0, 0, 0).split_evenly((2, 1));
    let n = groups.len() as f64;
    let na = s.allocs.len().max(1) as f64;
    for (pi, (panel, m)) in panels.iter().zip([Metric::Wall, Metric::Rss]).enumerate() {
        let (lo, hi) = range(s, groups, m);
        let mut chart = ChartBuilder::on(panel)
            .caption(m.label(), font(13).style(FontStyle::Bold))
            .margin_right(20)
            .x_label_area_size(95)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n, (lo..hi).log_scale())?;
        chart.configure_mesh().disable_mesh().x_labels(0).y_labels(0).y_label_formatter(&|_| String::new()).draw()?;
        // Grid lines and labels at the powers of two (plotters' log-scale ticks are decimal).
        let base = panel.get_base_pixel();
        let label = font(11).color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
        let mut g = lo;
        while g <= hi * 1.0001 {
            chart.draw_series(std::iter::once(PathElement::new(vec![(0.0, g), (n, g)], RGBColor(0xcc, 0xcc, 0xcc))))?;
            let (x, y) = chart.backend_coord(&(0.0, g));
            let text = if g >= 1.0 { format!("{g:.0}") } else { format!("1/{:.0}", 1.0 / g) };
            panel.draw(&Text::new(text, (x - base.0 - 6, y - base.1), label.clone()))?;
            g *= 2.0;
        }
        chart.draw_series(std::iter::once(PathElement::new(vec![(0.0, 1.0), (n, 1.0)], BLACK)))?;
        for (ai, a) in s.allocs.iter().enumerate() {
            let color = PALETTE[ai % PALETTE.len()];
            let bars = groups.iter().enumerate().filter_map(|(gi, g)| {
                let v = value(s, g, a, m)?.clamp(lo, hi);
                let x0 = gi as f64 + 0.1 + ai as f64 * 0.8 / na;
                // Keep a ratio of ~1.0 (the reference itself) visible as a thin bar.
                let v = if (v.log2()).abs() < 0.02 { 1.03 } else { v };
                Some(Rectangle::new([(x0, 1.0), (x0 + 0.72 / na, v)], color.filled()))
            });
            let series = chart.draw_series(bars)?;
            if pi == 0 {
                series.label(a.as_str()).legend(swatch(color));
            }
            let failed =
                groups.iter().enumerate().filter(|(_, g)| s.cell(g, a).is_some_and(|c| c.runs > 0 && c.ok == 0));
            let red = font(13).color(&RED).pos(Pos::new(HPos::Center, VPos::Bottom));
            chart
                .draw_series(failed.map(|(gi, _)| {
                    Text::new("×", (gi as f64 + 0.1 + (ai as f64 + 0.5) * 0.8 / na, 1.0), red.clone())
                }))?;
        }
        // Workload names under the bars, rotated.
        let names = font(11).transform(FontTransform::Rotate90);
        for (gi, g) in groups.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(gi as f64 + 0.5, lo));
            let style = if g == "geomean" { names.clone().style(FontStyle::Bold) } else { names.clone() };
            panel.draw(&Text::new(
                g.clone(),
                (x - panel.get_base_pixel().0 + 6, y - panel.get_base_pixel().1 + 6),
                style,
            ))?;
        }
        if pi == 0 {
            legend(&mut chart)?;
        }
    }
    Ok(())
}
