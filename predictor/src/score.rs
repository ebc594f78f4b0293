//! Accuracy figures, with the seed's definitions: relative error
//! `|1 − pred/true|` over rows whose true value is non-zero, gMRE the
//! geometric mean of the non-zero relative errors, MRE their mean; negative
//! TT/DT predictions are replaced by the smallest true value (as the seed's
//! `evaluate()` does).

use migsight_proto::Metric;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub n: u64,
    pub gmre: f64,
    pub mre: f64,
    pub mae: f64,
    pub p90_abs: f64,
    /// Fraction of true values inside the 90 % interval (NaN without intervals).
    pub coverage: f64,
}

/// How much one metric of one guest state differs between repeated
/// migrations: relative (a share of the value) for TT, DT, TD and PERF, in
/// points of a core for CPU and MiB for MEM. Measured on this lab's repeats
/// (`data/repeats.csv`, `data/experiments/budget.csv`: the median
/// coefficient of variation, or the median standard deviation for the
/// deltas): TT 1.3 %, TD 0.3 %, DT 18 %, PERF 6.2 %, CPU 1.1–3.8 points
/// (2), MEM 0.05 MiB. Below it, two outcomes cannot be told apart.
pub const fn repeat_noise(metric: Metric) -> f64 {
    match metric {
        Metric::TT => 0.013,
        Metric::TD => 0.003,
        Metric::DT => 0.18,
        Metric::PERF => 0.062,
        Metric::CPU => 2.0,
        Metric::MEM => 0.05,
    }
}

/// Linear-interpolated quantile of unsorted values (numpy's default).
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let i = pos.floor() as usize;
    let j = (i + 1).min(s.len() - 1);
    s[i] + (pos - i as f64) * (s[j] - s[i])
}

/// Scores predictions `pred` of `truth`; `intervals` as `(lo, hi)` per row.
pub fn stats(
    metric: Metric,
    pred: &[f64],
    truth: &[f64],
    intervals: Option<&[(f64, f64)]>,
) -> Stats {
    let n = truth.len();
    let min_true = truth.iter().cloned().fold(f64::INFINITY, f64::min);
    let mut abs = Vec::with_capacity(n);
    let mut rel = Vec::with_capacity(n);
    for (&p, &t) in pred.iter().zip(truth) {
        let mut p = p;
        if !p.is_finite() {
            continue;
        }
        if matches!(metric, Metric::TT | Metric::DT) && p < 0.0 {
            p = min_true;
        }
        abs.push((p - t).abs());
        if t != 0.0 {
            rel.push((1.0 - p / t).abs());
        }
    }
    let nz: Vec<f64> = rel.iter().cloned().filter(|v| *v > 0.0).collect();
    let gmre = if nz.is_empty() {
        f64::NAN
    } else {
        (nz.iter().map(|v| v.ln()).sum::<f64>() / nz.len() as f64).exp()
    };
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let coverage = match intervals {
        Some(iv) if !iv.is_empty() => {
            iv.iter()
                .zip(truth)
                .filter(|((lo, hi), t)| *lo <= **t && **t <= *hi)
                .count() as f64
                / iv.len() as f64
        }
        _ => f64::NAN,
    };
    Stats {
        n: n as u64,
        gmre,
        mre: mean(&rel),
        mae: mean(&abs),
        p90_abs: quantile(&abs, 0.9),
        coverage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn seed_definitions() {
        let s = stats(
            Metric::TT,
            &[110.0, 90.0, 100.0, -5.0],
            &[100.0, 100.0, 100.0, 50.0],
            None,
        );
        // rel errs 0.1, 0.1, 0, 0 (negative replaced by min true 50 -> exact)
        assert!((s.gmre - 0.1).abs() < 1e-12);
        assert!((s.mre - 0.05).abs() < 1e-12);
        assert_eq!(s.n, 4);
        assert!(s.coverage.is_nan());
        let s = stats(
            Metric::CPU,
            &[1.0, 2.0],
            &[0.0, 2.0],
            Some(&[(0.0, 1.0), (3.0, 4.0)]),
        );
        assert_eq!(s.coverage, 0.5);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.9), 4.6);
    }
}
