//! What a trained model holds per algorithm and metric, and how one
//! prediction is made from it: the regressor in its transformed space, the
//! interval of the row's stratum (widened outside the training range), and
//! P(converges).

use super::conformal::Residuals;
use super::train::MIN_CALIBRATION_ROWS;
use crate::domain::{Domain, Excess};
use crate::family::{Regressor, Transform};
use crate::gbdt::Gbdt;
use crate::inputs;
use crate::score::Stats;
use migsight_proto::{Algorithm, Metric};
use serde::{Deserialize, Serialize};

/// Convergence: P(the migration completes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConvergeModel {
    /// Too few non-converged (or converged) rows: the Laplace-smoothed rate.
    Constant { p: f64, note: String },
    /// Log-loss trees on [`super::converge::CONVERGE_INPUTS`]; probabilities kept within
    /// `[floor, 1 − floor]`, `floor = 1/(n+2)`.
    Classifier { model: Gbdt, floor: f64 },
}

/// How a metric model was obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricStatus {
    Fitted,
    /// Fewer than [`MIN_FIT_ROWS`] rows: the calibrated analytic estimate or
    /// the median (below [`MIN_CALIBRATION_ROWS`]: the median, interval from
    /// the observed spread).
    FewRows,
    /// No labelled rows: a placeholder (analytic estimate or a neutral value) with a wide interval.
    NoData,
}

/// One metric of one algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricModel {
    pub metric: Metric,
    pub status: MetricStatus,
    pub n: u64,
    pub transform: Transform,
    pub regressor: Regressor,
    /// Held-out residuals the interval and P(meets SLA) come from: of the
    /// rows whose out-of-fold P(converges) was at least
    /// [`crate::ranking::LIKELY`] when `borderline` is set, else of all rows.
    pub residuals: Residuals,
    /// Residuals of the borderline rows (out-of-fold P(converges) below
    /// `LIKELY`), when there were enough of them: see [`super::conformal::MIN_STRATUM_ROWS`].
    pub borderline: Option<Residuals>,
    /// Cross-validated scores of this metric on the training data (out-of-fold).
    pub cv: Option<Stats>,
    pub note: Option<String>,
}

/// A point prediction with its interval, and the transformed value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricPrediction {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    pub z: f64,
}

impl MetricModel {
    /// The residuals for a row that is (or is not) borderline.
    #[inline]
    pub fn residuals_for(&self, borderline: bool) -> &Residuals {
        match (&self.borderline, borderline) {
            (Some(b), true) => b,
            _ => &self.residuals,
        }
    }

    /// The prediction with the interval of a confident row.
    #[inline]
    pub fn predict(&self, x: &[f64]) -> MetricPrediction {
        self.predict_at(x, false)
    }

    /// The prediction, with the interval of the row's stratum: `borderline`
    /// when P(converges) is below [`crate::ranking::LIKELY`].
    #[inline]
    pub fn predict_at(&self, x: &[f64], borderline: bool) -> MetricPrediction {
        let res = self.residuals_for(borderline);
        let z = self.regressor.predict(x);
        let t = self.transform;
        // Strictly positive metrics stay positive whatever the family.
        let floor = if self.metric.strictly_positive() {
            1e-9
        } else {
            f64::NEG_INFINITY
        };
        MetricPrediction {
            value: t.inverse(z).max(floor),
            lo: t.inverse(z + res.lo).max(floor),
            hi: t.inverse(z + res.hi).max(floor),
            z,
        }
    }

    /// [`MetricModel::predict_at`] with the interval widened for a row
    /// `excess` outside the training range.
    #[inline]
    pub fn predict_wide(
        &self,
        x: &[f64],
        borderline: bool,
        algorithm: Algorithm,
        excess: &[Excess],
    ) -> MetricPrediction {
        let p = self.predict_at(x, borderline);
        if excess.is_empty() {
            return p;
        }
        let w = crate::domain::widening(algorithm, self.metric, excess);
        let res = self.residuals_for(borderline);
        let t = self.transform;
        let floor = if self.metric.strictly_positive() {
            1e-9
        } else {
            f64::NEG_INFINITY
        };
        MetricPrediction {
            lo: t.inverse(p.z + res.lo - w).max(floor).min(p.value),
            hi: t.inverse(p.z + res.hi + w).max(floor).max(p.value),
            ..p
        }
    }

    /// P(outcome ≤ limit) (`upper`) or P(outcome ≥ limit), for a row in
    /// the `borderline` stratum or not.
    pub fn p_within(&self, z: f64, limit: f64, upper: bool, borderline: bool) -> f64 {
        let p_le = match self.transform.forward_limit(limit) {
            None => 0.0,
            Some(tl) => self.residuals_for(borderline).cdf(tl - z),
        };
        if upper {
            p_le
        } else {
            1.0 - p_le
        }
    }
}

/// Everything for one algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlgorithmModel {
    pub algorithm: Algorithm,
    pub rows: u64,
    pub converged_rows: u64,
    /// What its training rows covered; outside, intervals widen.
    pub domain: Domain,
    pub converge: ConvergeModel,
    /// Indexed by [`Metric::index`].
    pub metrics: Vec<MetricModel>,
}

impl AlgorithmModel {
    /// All six metrics for input row `x`; fills `x`'s
    /// [`inputs::TD_TIME`] from the TD prediction first (TT's input).
    ///
    /// The intervals are those of the row's stratum: a migration that may
    /// not converge (P(converges) below [`crate::ranking::LIKELY`]) gets
    /// the residuals of such rows, which are far wider (measured on 664 lab
    /// rows, out of fold: 43 borderline rows were covered by the pooled
    /// 90 % interval only 42 % of the time, the others 96 %).
    ///
    /// Returns the six metrics and P(converges) (computed once: it also
    /// picks the stratum).
    /// Outside the training rows' range, each interval widens by
    /// [`crate::domain::widening`] in the transformed space.
    pub fn predict_metrics(&self, x: &mut [f64]) -> ([MetricPrediction; 6], f64) {
        let p_converge = self.p_converge(x);
        let borderline = crate::ranking::near_edge(p_converge);
        let excess = self.domain.excess(x);
        let td =
            self.metrics[Metric::TD.index()].predict_wide(x, borderline, self.algorithm, &excess);
        x[inputs::TD_TIME] = inputs::td_time(x, td.value);
        let metrics = std::array::from_fn(|m| {
            if m == Metric::TD.index() {
                td
            } else {
                self.metrics[m].predict_wide(x, borderline, self.algorithm, &excess)
            }
        });
        (metrics, p_converge)
    }

    /// Whether the algorithm has enough rows to be predicted at all
    /// ([`MIN_CALIBRATION_ROWS`] converged rows with a total time).
    pub fn is_trained(&self) -> bool {
        self.metrics[Metric::TT.index()].n >= MIN_CALIBRATION_ROWS as u64
    }

    pub fn p_converge(&self, x: &[f64]) -> f64 {
        self.converge.p(x)
    }
}

impl ConvergeModel {
    /// P(converges) for input row `x`.
    pub fn p(&self, x: &[f64]) -> f64 {
        match self {
            ConvergeModel::Constant { p, .. } => *p,
            ConvergeModel::Classifier { model, floor } => {
                model.predict_proba(x).clamp(*floor, 1.0 - *floor)
            }
        }
    }
}

/// A predicted algorithm's model and each metric's transformed prediction
/// (what P(meets SLA) is computed from).
pub type Transformed<'a> = (&'a AlgorithmModel, [f64; 6]);
