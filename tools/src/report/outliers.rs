//! Outlier ranks. A rank is flagged for a metric when its value is far from the median of all
//! ranks in both senses at once:
//!
//! - relative: more than `factor` times the median, or less than the median / `factor`
//!   (`--outlier-factor`, default 1.5);
//! - robust spread: more than 3 MADs from the median (MAD: the median of the ranks' absolute
//!   distances from the median; 0 when most ranks are equal, and then any rank off the median is
//!   beyond it);
//! - and by at least a floor that keeps noise out (5 percentage points of remote-free share,
//!   1 MiB of peak), since with most ranks at 0% remote frees a rank at 0.1% is 'infinitely' far.
//!
//! Both tests are needed: the ratio alone flags the high one of two tight clusters' noise (MAD 0
//! and 1.02x is not an outlier), the MAD alone flags 5% deviations when the ranks are very
//! regular. With fewer than 3 ranks there is no majority to differ from, so nothing is flagged.

use serde::Serialize;

/// One flagged rank and metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outlier {
    /// The rank's label.
    pub rank: String,
    /// The metric's key (`remote_free_share`, `in_use_peak_bytes`).
    pub metric: &'static str,
    /// The rank's value.
    pub value: f64,
    /// The median over the ranks.
    pub median: f64,
    /// `value / median` (`None` when the median is 0).
    pub ratio: Option<f64>,
    /// Distance from the median in MADs (`None` when the MAD is 0).
    pub mads: Option<f64>,
    /// The reason, in words.
    pub why: String,
}

/// A metric to look for outliers in.
pub struct Metric {
    /// Its key.
    pub key: &'static str,
    /// Its name in words.
    pub name: &'static str,
    /// The smallest distance from the median that can count.
    pub floor: f64,
    /// Formats a value.
    pub show: fn(f64) -> String,
}

/// The metrics the report checks.
pub const METRICS: [Metric; 2] = [
    Metric { key: "remote_free_share", name: "remote-free share", floor: 0.05, show: |v| format!("{:.1}%", v * 100.0) },
    Metric { key: "in_use_peak_bytes", name: "in-use peak", floor: 1048576.0, show: |v| crate::human_bytes(v as u64) },
];

/// The median (mean of the two middle values for an even count). `values` must not be empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The outliers of `metric` among `(rank label, value)` (ranks without a value are left out).
pub fn find(metric: &Metric, values: &[(String, Option<f64>)], factor: f64) -> Vec<Outlier> {
    let present: Vec<(&String, f64)> = values.iter().filter_map(|(l, v)| v.map(|v| (l, v))).collect();
    if present.len() < 3 {
        return Vec::new();
    }
    let xs: Vec<f64> = present.iter().map(|p| p.1).collect();
    let m = median(&xs);
    let mad = median(&xs.iter().map(|x| (x - m).abs()).collect::<Vec<_>>());
    let mut out = Vec::new();
    for (label, x) in present {
        let dist = (x - m).abs();
        let relative = x > factor * m || x < m / factor;
        let spread = dist > 3.0 * mad;
        if !(relative && spread && dist >= metric.floor) {
            continue;
        }
        let ratio = (m > 0.0).then(|| x / m);
        let mads = (mad > 0.0).then(|| dist / mad);
        let rel = match ratio {
            Some(r) if r >= 1.0 => format!("{r:.1}x the median"),
            Some(r) => format!("1/{:.1} of the median", 1.0 / r.max(f64::MIN_POSITIVE)),
            None => "the median is 0".to_string(),
        };
        let spread = match mads {
            Some(k) => format!("{k:.0} MADs from it"),
            None => "the other ranks are at the median (MAD 0)".to_string(),
        };
        let why = format!(
            "{} {} vs median {} of {} ranks: {rel}, {spread}",
            metric.name,
            (metric.show)(x),
            (metric.show)(m),
            xs.len()
        );
        out.push(Outlier { rank: label.clone(), metric: metric.key, value: x, median: m, ratio, mads, why });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(v: &[f64]) -> Vec<(String, Option<f64>)> {
        v.iter().enumerate().map(|(i, &x)| (i.to_string(), Some(x))).collect()
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn flags_only_what_is_far_by_both_measures() {
        let share = &METRICS[0];
        let o = find(share, &vals(&[0.02, 0.021, 0.019, 0.40]), 1.5);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].rank, "3");
        assert!(
            o[0].why.starts_with("remote-free share 40.0% vs median 2.1% of 4 ranks: 19.5x the median"),
            "{}",
            o[0].why
        );
        // Regular ranks with one a little off: MAD says far, the ratio says no.
        assert!(find(share, &vals(&[0.30, 0.30, 0.30, 0.31]), 1.5).is_empty());
        // Spread-out ranks: the ratio says far, the MAD says no.
        assert!(find(share, &vals(&[0.10, 0.20, 0.30, 0.45]), 1.5).is_empty());
        // Mostly zero: a tiny share is under the floor, a big one is flagged.
        assert!(find(share, &vals(&[0.0, 0.0, 0.0, 0.001]), 1.5).is_empty());
        let o = find(share, &vals(&[0.0, 0.0, 0.0, 0.2]), 1.5);
        assert_eq!(o.len(), 1);
        assert!(o[0].why.contains("the median is 0") && o[0].why.contains("MAD 0"), "{}", o[0].why);
        // Low outliers count too; two ranks never have one.
        let peak = &METRICS[1];
        let mib = 1048576.0;
        let o = find(peak, &vals(&[100.0 * mib, 101.0 * mib, 99.0 * mib, 10.0 * mib]), 1.5);
        assert_eq!(o.len(), 1);
        assert!(o[0].why.contains("1/9.9 of the median"), "{}", o[0].why);
        assert!(find(peak, &vals(&[1.0 * mib, 100.0 * mib]), 1.5).is_empty());
        // A bigger factor lets it pass.
        assert!(find(share, &vals(&[0.02, 0.021, 0.019, 0.04]), 1.5).is_empty(), "under the floor");
        assert_eq!(find(share, &vals(&[0.10, 0.10, 0.11, 0.25]), 1.5).len(), 1);
        assert!(find(share, &vals(&[0.10, 0.10, 0.11, 0.25]), 3.0).is_empty());
    }
}
