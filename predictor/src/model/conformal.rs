//! Split-conformal intervals: held-out residuals (cross-fitted in
//! training) give each prediction its 90 % interval and P(outcome ≤ limit).

use serde::{Deserialize, Serialize};

/// Nominal coverage of the prediction intervals.
pub const COVERAGE: f64 = 0.90;
/// Fewest labelled rows on each side of the borderline split for the
/// intervals to be stratified (below it: one pooled interval, what a small stratum gets).
pub const MIN_STRATUM_ROWS: usize = 8;

/// Held-out residuals in transformed space (sorted sketch) and the interval offsets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Residuals {
    pub n: u64,
    /// Up to 201 order statistics, ascending.
    pub sketch: Vec<f64>,
    /// Added to the transformed prediction for the interval's ends.
    pub lo: f64,
    pub hi: f64,
}

impl Residuals {
    /// Split-conformal offsets for a two-sided `COVERAGE` interval.
    pub fn from(mut r: Vec<f64>) -> Residuals {
        r.retain(|v| v.is_finite());
        r.sort_by(|a, b| a.total_cmp(b));
        let n = r.len();
        if n == 0 {
            return Residuals {
                n: 0,
                sketch: vec![],
                lo: 0.0,
                hi: 0.0,
            };
        }
        let (lo, hi) = conformal_offsets(&r);
        // The interval always contains the point prediction.
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let m = n.min(201);
        let sketch = (0..m)
            .map(|k| {
                if m == 1 {
                    r[0]
                } else {
                    r[k * (n - 1) / (m - 1)]
                }
            })
            .collect();
        Residuals {
            n: n as u64,
            sketch,
            lo,
            hi,
        }
    }

    /// P(residual ≤ t), from the sketch (interpolated, kept off 0 and 1).
    pub fn cdf(&self, t: f64) -> f64 {
        let s = &self.sketch;
        let n = self.n as f64;
        if s.is_empty() {
            return 0.5;
        }
        let floor = 0.5 / (n + 1.0);
        if t.is_nan() {
            // A prediction that is not a number says nothing either way.
            return 0.5;
        }
        if t < s[0] {
            return floor;
        }
        if t >= s[s.len() - 1] {
            return 1.0 - floor;
        }
        let m = s.len();
        let rank = |k: usize| (1.0 + k as f64 * (n - 1.0) / (m as f64 - 1.0)) / (n + 1.0);
        let k = s.partition_point(|v| *v <= t); // s[k-1] <= t < s[k]
        let (a, b) = (s[k - 1], s[k]);
        let w = if b > a { (t - a) / (b - a) } else { 1.0 };
        (rank(k - 1) + w * (rank(k) - rank(k - 1))).clamp(floor, 1.0 - floor)
    }
}

/// `(lo, hi)` residual offsets of a split-conformal interval over sorted residuals.
pub fn conformal_offsets(sorted: &[f64]) -> (f64, f64) {
    let n = sorted.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let alpha = 1.0 - COVERAGE;
    let k_hi = (((n + 1) as f64) * (1.0 - alpha / 2.0)).ceil() as usize;
    let k_lo = (((n + 1) as f64) * (alpha / 2.0)).floor() as usize;
    let hi = sorted[k_hi.clamp(1, n) - 1];
    let lo = sorted[k_lo.clamp(1, n) - 1];
    // Below n = 19 the exact split-conformal end is unbounded (the rank
    // exceeds n); extrapolate two average gaps per missing rank instead.
    let gap = if n > 1 {
        (sorted[n - 1] - sorted[0]) / (n - 1) as f64
    } else {
        sorted[0].abs().max(0.1)
    };
    let hi = hi + 2.0 * gap * k_hi.saturating_sub(n) as f64;
    let lo = lo - 2.0 * gap * (1usize.saturating_sub(k_lo)) as f64;
    (lo, hi)
}

/// The intervals' residuals from cross-fitted `resid` (aligned with
/// `is_borderline` and `folds`), and their honest coverage.
///
/// Borderline rows (near the convergence edge) get their own residuals when
/// each side has at least [`MIN_STRATUM_ROWS`] (Mondrian split-conformal).
/// Coverage checks each fold's residuals against offsets computed from the
/// other `k - 1` folds of the same stratum: what a new row would see.
pub fn stratified(
    resid: &[f64],
    is_borderline: &[bool],
    folds: &[usize],
    k: usize,
) -> (Residuals, Option<Residuals>, f64) {
    let n = resid.len();
    let count = |b: bool| {
        (0..n)
            .filter(|&i| is_borderline[i] == b && resid[i].is_finite())
            .count()
    };
    let stratified = count(true) >= MIN_STRATUM_ROWS && count(false) >= MIN_STRATUM_ROWS;
    let stratum = |i: usize| stratified && is_borderline[i];
    let mut covered = 0usize;
    let mut counted = 0usize;
    for f in 0..k {
        for s in [false, true] {
            let mut others: Vec<f64> = (0..n)
                .filter(|&i| folds[i] != f && stratum(i) == s && resid[i].is_finite())
                .map(|i| resid[i])
                .collect();
            others.sort_by(|a, b| a.total_cmp(b));
            if others.is_empty() {
                continue;
            }
            let (lo, hi) = conformal_offsets(&others);
            for i in (0..n).filter(|&i| folds[i] == f && stratum(i) == s && resid[i].is_finite()) {
                counted += 1;
                if resid[i] >= lo && resid[i] <= hi {
                    covered += 1;
                }
            }
        }
    }
    let coverage = if counted > 0 {
        covered as f64 / counted as f64
    } else {
        f64::NAN
    };
    let of = |b: bool| {
        Residuals::from(
            (0..n)
                .filter(|&i| !stratified || is_borderline[i] == b)
                .map(|i| resid[i])
                .collect(),
        )
    };
    if stratified {
        (of(false), Some(of(true)), coverage)
    } else {
        (of(false), None, coverage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::FamilyKind;
    use crate::model::testutil::*;
    use crate::model::Model;
    use migsight_proto::Metric;

    #[test]
    fn residual_cdf_is_monotone_and_bounded() {
        let r = Residuals::from((0..100).map(|i| i as f64 / 100.0 - 0.5).collect());
        let mut last = 0.0;
        for k in -10..=20 {
            let c = r.cdf(k as f64 / 10.0 - 0.5);
            assert!(c >= last && c > 0.0 && c < 1.0);
            last = c;
        }
        assert!((r.cdf(0.0) - 0.5).abs() < 0.02);
        assert!(r.lo < -0.4 && r.hi > 0.4);
    }

    #[test]
    fn conformal_intervals_cover_fresh_data() {
        let m = Model::train(&data(120, 4, true), &fast(FamilyKind::Gbdt, 1));
        let test = data(80, 5, true);
        let (mut hit, mut n) = (0, 0);
        for r in test.rows.iter().filter(|r| r.converged) {
            let am = &m.algorithms[r.algorithm.index()];
            let (preds, _) = am.predict_metrics(&mut r.x.clone());
            for metric in [Metric::TT, Metric::TD, Metric::DT] {
                let p = preds[metric.index()];
                let t = r.labels[metric.index()].unwrap();
                n += 1;
                if p.lo <= t && t <= p.hi {
                    hit += 1;
                }
            }
        }
        let cov = hit as f64 / n as f64;
        assert!((0.82..=0.97).contains(&cov), "coverage {cov} over {n}");
    }
}
