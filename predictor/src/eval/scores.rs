//! Scoring out-of-sample predictions: accuracy per model × QEMU release ×
//! algorithm × metric, P(converges) against the constant rate, and interval
//! coverage per P(converges) stratum.

use super::{release, releases, Oof};
use crate::data::Data;
use crate::score::{self, Stats};
use migsight_proto::{Algorithm, Metric};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ScoreRow {
    pub model: String,
    /// `all`, or a QEMU release (`7.2`, `10.0`) when the data has several.
    pub qemu: String,
    pub algorithm: Algorithm,
    pub metric: Metric,
    #[serde(flatten)]
    pub stats: Stats,
}

/// Out-of-fold quality of P(converges).
#[derive(Debug, Clone, Serialize)]
pub struct ConvergeQuality {
    pub model: String,
    pub algorithm: Algorithm,
    pub n: usize,
    pub not_converged: usize,
    /// Mean squared error of P(converges) against the outcome.
    pub brier: f64,
    /// The same for the constant training rate, for comparison.
    pub brier_constant: f64,
}

/// Coverage of one model × metric in one P(converges) stratum.
#[derive(Debug, Clone, Serialize)]
pub struct StratumCoverage {
    pub model: String,
    pub metric: Metric,
    /// P(converges) below [`crate::recommend::LIKELY`].
    pub borderline: bool,
    pub n: usize,
    pub coverage: f64,
}

/// Scores of `model`'s predictions on converged, labelled rows: pooled over
/// releases (`all`), then per release when the data has several.
pub fn scores(data: &Data, oof: &[Option<Oof>], model: &str) -> Vec<ScoreRow> {
    let mut out = Vec::new();
    let scopes: Vec<String> = std::iter::once("all".to_string())
        .chain(releases(data))
        .collect();
    for scope in &scopes {
        for a in Algorithm::ALL {
            for m in Metric::ALL {
                let mut pred = Vec::new();
                let mut truth = Vec::new();
                let mut iv = Vec::new();
                for (i, r) in data.rows.iter().enumerate() {
                    if r.algorithm != a || !r.converged || (scope != "all" && release(r) != *scope)
                    {
                        continue;
                    }
                    let (Some(t), Some(o)) =
                        (r.labels[m.index()].filter(|v| v.is_finite()), oof[i])
                    else {
                        continue;
                    };
                    let p = o.metrics[m.index()];
                    pred.push(p.value);
                    truth.push(t);
                    iv.push((p.lo, p.hi));
                }
                if truth.is_empty() {
                    continue;
                }
                out.push(ScoreRow {
                    model: model.to_string(),
                    qemu: scope.clone(),
                    algorithm: a,
                    metric: m,
                    stats: score::stats(m, &pred, &truth, Some(&iv)),
                });
            }
        }
    }
    out
}

/// Brier scores of P(converges) per algorithm, against the constant rate.
pub fn convergence(data: &Data, oof: &[Option<Oof>], model: &str) -> Vec<ConvergeQuality> {
    let mut out = Vec::new();
    for a in Algorithm::ALL {
        let (mut n, mut fails, mut b, mut b0) = (0usize, 0usize, 0.0, 0.0);
        for (i, r) in data.rows.iter().enumerate() {
            if let (true, Some(o)) = (r.algorithm == a, oof[i]) {
                let y = if r.converged { 1.0 } else { 0.0 };
                n += 1;
                fails += (!r.converged) as usize;
                b += (o.p_converge - y).powi(2);
                b0 += (o.p_constant - y).powi(2);
            }
        }
        if n > 0 {
            out.push(ConvergeQuality {
                model: model.to_string(),
                algorithm: a,
                n,
                not_converged: fails,
                brier: b / n as f64,
                brier_constant: b0 / n as f64,
            });
        }
    }
    out
}

/// Interval coverage of TT, DT and TD per P(converges) stratum.
pub fn coverage_by_stratum(data: &Data, oof: &[Option<Oof>], model: &str) -> Vec<StratumCoverage> {
    let mut out = Vec::new();
    for m in [Metric::TT, Metric::DT, Metric::TD] {
        for borderline in [false, true] {
            let (mut n, mut hit) = (0usize, 0usize);
            for (i, r) in data.rows.iter().enumerate() {
                let (true, Some(t), Some(o)) = (
                    r.converged,
                    r.labels[m.index()].filter(|v| v.is_finite()),
                    oof[i],
                ) else {
                    continue;
                };
                if crate::recommend::near_edge(o.p_converge) != borderline {
                    continue;
                }
                let p = o.metrics[m.index()];
                n += 1;
                hit += (p.lo <= t && t <= p.hi) as usize;
            }
            if n > 0 {
                out.push(StratumCoverage {
                    model: model.to_string(),
                    metric: m,
                    borderline,
                    n,
                    coverage: hit as f64 / n as f64,
                });
            }
        }
    }
    out
}
