//! A hand-written SVG chart: grouped bars of each allocator's ratio to the reference, one
//! panel for wall time and one for peak RSS, on a log2 axis centred on 1.0 (bars above the
//! line are slower / bigger than the reference, below are faster / smaller).

use std::fmt::Write as _;

use super::report::{Metric, Summary};

const PALETTE: &[&str] = &["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Renders the chart. `title` goes on top (date, machine).
pub fn chart(s: &Summary, title: &str) -> String {
    let groups: Vec<String> = s.workloads.iter().cloned().chain(std::iter::once("geomean".to_string())).collect();
    let na = s.allocs.len().max(1);
    let bar = 12.0;
    let gap = 18.0;
    let group_w = na as f64 * bar + gap;
    let left = 60.0;
    let plot_w = groups.len() as f64 * group_w;
    let width = left + plot_w + 20.0;
    let panel_h = 240.0;
    let label_h = 70.0;
    let top = 70.0;
    let metrics = [Metric::Wall, Metric::Rss];
    let height = top + metrics.len() as f64 * (panel_h + label_h + 30.0);

    let value = |g: &str, a: &str, m: Metric| -> Option<f64> {
        if g == "geomean" {
            s.geomean(a, m).0
        } else {
            s.ratio(g, a, m)
        }
    };
    // Axis range per panel: powers of two around the data, at least [1/2, 2], at most [1/16, 16].
    let range = |m: Metric| -> (f64, f64) {
        let (mut lo, mut hi) = (0.5f64, 2.0f64);
        for g in &groups {
            for a in &s.allocs {
                if let Some(v) = value(g, a, m) {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
        }
        (2f64.powf(lo.log2().floor()).max(1.0 / 16.0), 2f64.powf(hi.log2().ceil()).min(16.0))
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"##
    );
    let _ = writeln!(o, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(o, r##"<text x="{left}" y="18" font-size="14" font-weight="bold">{}</text>"##, esc(title));
    let _ = writeln!(
        o,
        r##"<text x="{left}" y="34" fill="#555">ratio to {} (log scale; 1.0 = reference; lower is better; × = failed)</text>"##,
        esc(&s.reference)
    );
    // Legend.
    let mut lx = left;
    for (i, a) in s.allocs.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let _ = writeln!(o, r##"<rect x="{lx:.0}" y="44" width="12" height="12" fill="{c}"/>"##);
        let _ = writeln!(o, r##"<text x="{:.0}" y="54">{}</text>"##, lx + 16.0, esc(a));
        lx += 24.0 + 7.0 * a.len() as f64;
    }

    for (pi, m) in metrics.iter().enumerate() {
        let y0 = top + pi as f64 * (panel_h + label_h + 30.0) + 20.0;
        let (lo, hi) = range(*m);
        let ymap = |v: f64| -> f64 {
            let v = v.clamp(lo, hi);
            y0 + panel_h * (hi.log2() - v.log2()) / (hi.log2() - lo.log2())
        };
        let _ = writeln!(o, r##"<text x="{left}" y="{:.0}" font-size="13" font-weight="bold">{}</text>"##, y0 - 6.0, m.label());
        // Grid lines at powers of two.
        let mut g = lo;
        while g <= hi * 1.0001 {
            let y = ymap(g);
            let (stroke, dash) = if (g - 1.0).abs() < 1e-9 { ("#000", "") } else { ("#ccc", r##" stroke-dasharray="3,3""##) };
            let _ = writeln!(o, r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{stroke}"{dash}/>"##, left + plot_w);
            let lbl = if g >= 1.0 { format!("{g:.0}") } else { format!("1/{:.0}", 1.0 / g) };
            let _ = writeln!(o, r##"<text x="{:.0}" y="{:.1}" text-anchor="end">{lbl}</text>"##, left - 6.0, y + 4.0);
            g *= 2.0;
        }
        let base = ymap(1.0);
        for (gi, gname) in groups.iter().enumerate() {
            let gx = left + gi as f64 * group_w + gap / 2.0;
            for (ai, a) in s.allocs.iter().enumerate() {
                let x = gx + ai as f64 * bar;
                let c = PALETTE[ai % PALETTE.len()];
                match value(gname, a, *m) {
                    Some(v) => {
                        let y = ymap(v);
                        let (ytop, h) = if y < base { (y, base - y) } else { (base, y - base) };
                        // Keep bars at ~1.0 (the reference itself) visible as a small tick.
                        let (ytop, h) = if h < 3.0 { (base - 1.5, 3.0) } else { (ytop, h) };
                        let _ = writeln!(
                            o,
                            r##"<rect x="{x:.1}" y="{ytop:.1}" width="{:.1}" height="{:.1}" fill="{c}"><title>{} / {}: {v:.3}</title></rect>"##,
                            bar - 1.0,
                            h,
                            esc(gname),
                            esc(a)
                        );
                    }
                    None => {
                        let failed = gname != "geomean" && s.cell(gname, a).is_some_and(|c| c.runs > 0 && c.ok == 0);
                        if failed {
                            let _ = writeln!(
                                o,
                                r##"<text x="{:.1}" y="{:.1}" fill="#d00" text-anchor="middle" font-weight="bold">×<title>{} / {}: failed</title></text>"##,
                                x + bar / 2.0,
                                base - 3.0,
                                esc(gname),
                                esc(a)
                            );
                        }
                    }
                }
            }
            let lx = gx + na as f64 * bar / 2.0;
            let ly = y0 + panel_h + 12.0;
            let weight = if gname == "geomean" { r##" font-weight="bold""## } else { "" };
            let _ = writeln!(
                o,
                r##"<text x="{lx:.1}" y="{ly:.1}" text-anchor="end" transform="rotate(-35 {lx:.1} {ly:.1})"{weight}>{}</text>"##,
                esc(gname)
            );
        }
    }
    o.push_str("</svg>\n");
    o
}
