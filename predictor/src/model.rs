//! The trained model: training, the versioned file format, prediction,
//! intervals, explanations and recommendations.

use crate::data::{self, Data, DataSource, Row};
use crate::decision::Outcome;
use crate::domain::{Domain, Excess};
use crate::family::{median_of, FamilyKind, FitInput, Regressor, Transform};
use crate::gbdt::{Base, Gbdt, GbdtParams};
use crate::inputs::{self, InputSpec, INPUT_COUNT};
use crate::rng::Rng;
use crate::score::{self, Stats};
use crate::sha256;
use migsight_proto::wire::{
    AlgorithmPrediction, AlgorithmSupport, CvScore, ErrorKind, ErrorReply, FallbackRule, Interval,
    ModelInfo, PredictRequest, Prediction, RecommendRequest, Recommendation,
};
use migsight_proto::{Algorithm, Feature, FeatureVector, Metric};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Version of the model file layout. Bump on any incompatible change.
pub const FORMAT_VERSION: u32 = 6;
/// First bytes of a model file.
pub const MAGIC: &[u8; 8] = b"MIGSMDL\n";
/// Nominal coverage of the prediction intervals.
pub const COVERAGE: f64 = 0.90;
/// Fewest converged, labelled rows to fit a metric model with the chosen
/// family; below it, the calibrated analytic estimate (or the median).
pub const MIN_FIT_ROWS: usize = 10;
/// Fewest rows for that calibration (and its cross-fitted intervals); below
/// it, the median with an interval from the observed spread.
pub const MIN_CALIBRATION_ROWS: usize = 4;
/// Relative out-of-fold error within which fewer trees are preferred
/// (measured on lab data: 0.02 and 0.05 were worse than 0).
pub const STAGE_TOLERANCE: f64 = 0.0;
/// Fewest rows of the minority class to fit a convergence classifier.
pub const MIN_CLASS_ROWS: usize = 3;

/// Why a model file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a migsight model file (bad magic bytes)")]
    NotAModel { path: String },
    #[error("{path}: model format version {found}, this migsight reads version {expected}; retrain with `migsight train`")]
    Version {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("{path}: model file is truncated or corrupt ({why})")]
    Corrupt { path: String, why: String },
    #[error("{path}: {size} bytes is more than a model file may be ({max} bytes); not read")]
    TooLarge { path: String, size: u64, max: u64 },
}

/// Largest model file [`Model::load`] reads: 64 MiB. A model trained on the
/// 1,097-row lab set is 0.6 MiB; the cap keeps a SIGHUP onto a wrong file
/// from making the daemon read and hold hundreds of MiB.
pub const MAX_MODEL_BYTES: u64 = 64 << 20;

/// Convergence: P(the migration completes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConvergeModel {
    /// Too few non-converged (or converged) rows: the Laplace-smoothed rate.
    Constant { p: f64, note: String },
    /// Log-loss trees on [`CONVERGE_INPUTS`]; probabilities kept within
    /// `[floor, 1 − floor]`, `floor = 1/(n+2)`.
    Classifier { model: Gbdt, floor: f64 },
}

/// Inputs of the convergence classifier: scale-free or rate features only
/// (dirty rate / bandwidth, the analytic convergence flag, compressibility,
/// CPU use), so that a few non-converged rows cannot teach it "big VMs fail".
pub const CONVERGE_INPUTS: [usize; 5] = [
    inputs::DIRTY_RATIO,
    inputs::A_CONV,
    Feature::VmWse as usize,
    Feature::VmMwpp as usize,
    Feature::VmCpuUtil as usize,
];

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

fn tree_ok(g: &Gbdt) -> bool {
    g.trees.iter().all(|t| {
        !t.nodes.is_empty()
            && t.nodes.iter().enumerate().all(|(i, n)| {
                n.feature == u16::MAX
                    || ((n.feature as usize) < INPUT_COUNT
                        && (n.left as usize) < t.nodes.len()
                        && (n.right as usize) < t.nodes.len()
                        // Children come after parents: routing terminates.
                        && n.left as usize > i
                        && n.right as usize > i)
            })
    })
}

/// A residual sketch `cdf` can search: finite and ascending.
fn residuals_ok(r: &Residuals) -> bool {
    r.lo.is_finite()
        && r.hi.is_finite()
        && r.sketch.iter().all(|v| v.is_finite())
        && r.sketch.windows(2).all(|w| w[0] <= w[1])
}

fn linear_ok(l: &crate::linear::Linear) -> bool {
    let p = l.scaler.cols.len();
    l.scaler.cols.iter().all(|&c| c < INPUT_COUNT)
        && l.weights.len() == p
        && l.scaler.fill.len() == p
        && l.scaler.mean.len() == p
        && l.scaler.scale.len() == p
}

fn regressor_ok(r: &Regressor) -> bool {
    let ok = |i: usize| i < INPUT_COUNT;
    match r {
        Regressor::Gbdt(g) => tree_ok(g),
        Regressor::Linear(l) => linear_ok(l),
        Regressor::Residual { base, linear } => {
            !matches!(
                **base,
                Regressor::Boosted { .. } | Regressor::Residual { .. }
            ) && regressor_ok(base)
                && linear_ok(linear)
        }
        Regressor::Svr(s) => {
            let p = s.scaler.cols.len();
            s.scaler.cols.iter().all(|&c| ok(c))
                && s.scaler.fill.len() == p
                && s.scaler.mean.len() == p
                && s.scaler.scale.len() == p
                && s.members.iter().all(|mm| {
                    mm.features.iter().all(|&f| f < p)
                        && mm.sv.len() == mm.coef.len() * mm.features.len()
                })
        }
        Regressor::Analytic { input, .. } => ok(*input),
        Regressor::Constant(_) => true,
        Regressor::Boosted { base, trees } => {
            !matches!(**base, Regressor::Boosted { .. }) && regressor_ok(base) && tree_ok(trees)
        }
    }
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
    /// [`crate::recommend::LIKELY`] when `borderline` is set, else of all rows.
    pub residuals: Residuals,
    /// Residuals of the borderline rows (out-of-fold P(converges) below
    /// `LIKELY`), when there were enough of them: see [`MIN_STRATUM_ROWS`].
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
    /// when P(converges) is below [`crate::recommend::LIKELY`].
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
    pub fn predict_wide(&self, x: &[f64], borderline: bool, excess: &[Excess]) -> MetricPrediction {
        let p = self.predict_at(x, borderline);
        if excess.is_empty() {
            return p;
        }
        let w = crate::domain::widening(self.metric, excess);
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
    /// not converge (P(converges) below [`crate::recommend::LIKELY`]) gets
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
        let borderline = crate::recommend::near_edge(p_converge);
        let excess = self.domain.excess(x);
        let td = self.metrics[Metric::TD.index()].predict_wide(x, borderline, &excess);
        x[inputs::TD_TIME] = inputs::td_time(x, td.value);
        let metrics = std::array::from_fn(|m| {
            if m == Metric::TD.index() {
                td
            } else {
                self.metrics[m].predict_wide(x, borderline, &excess)
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

/// A trained model, as stored in a model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format_version: u32,
    pub migsight_version: String,
    pub created_unix: u64,
    pub family: FamilyKind,
    pub seed: u64,
    /// The gbdt family's tree settings (also used for the convergence classifiers' family).
    pub gbdt: GbdtParams,
    /// Folds of the conformal cross-fitting.
    pub conformal_folds: u64,
    /// Every input column with name, unit and meaning.
    pub inputs: Vec<InputSpec>,
    /// Indices into `inputs` the model was trained with (have data, allowed).
    pub inputs_used: Vec<usize>,
    /// The raw features its rows were built from: a request's other features
    /// are ignored, so its derived inputs and baselines are computed as in
    /// training (a model of size, dirty rate and bandwidth only takes the
    /// working set as the VM size in training and in serving alike).
    pub raw_features: Vec<Feature>,
    pub sources: Vec<DataSource>,
    pub data_sha256: String,
    /// Rows per algorithm, CSAP order.
    pub rows: Vec<u64>,
    /// What all the training rows covered (the messages of
    /// `Prediction::out_of_domain`; each algorithm widens by its own).
    pub domain: Domain,
    /// Nominal interval coverage.
    pub coverage: f64,
    pub algorithms: Vec<AlgorithmModel>,
    /// The recommendation's fallback per objective ([`crate::decision`]).
    pub decisions: Vec<FallbackRule>,
    pub notes: Vec<String>,
    pub training_seconds: f64,
}

/// Training options.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub family: FamilyKind,
    pub seed: u64,
    /// Input columns allowed (default: all).
    pub allowed: Vec<usize>,
    /// Folds of the cross-fitting that yields the conformal residuals.
    pub conformal_folds: usize,
    pub threads: usize,
    /// Tree settings of the gbdt family's regressors.
    pub gbdt: GbdtParams,
}

impl TrainOptions {
    pub fn new(family: FamilyKind, seed: u64) -> Self {
        TrainOptions {
            family,
            seed,
            allowed: inputs::default_allowed(),
            conformal_folds: 5,
            gbdt: GbdtParams::regression(),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4),
        }
    }
}

/// Runs `f` over `jobs` on up to `threads` threads; results in job order.
pub fn parallel_map<T: Sync, R: Send>(
    jobs: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out: Vec<std::sync::Mutex<Option<R>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, jobs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= jobs.len() {
                    break;
                }
                let r = f(&jobs[i]);
                *out[i].lock().unwrap() = Some(r);
            });
        }
    });
    out.into_iter()
        .map(|m| m.into_inner().unwrap().unwrap())
        .collect()
}

/// Deterministic fold of each row: groups (rows sharing a `group_id`) are
/// shuffled with the seed and dealt round-robin, so a group's rows share a fold.
pub fn assign_folds(groups: &[&str], k: usize, seed: u64) -> Vec<usize> {
    let mut uniq: Vec<&str> = groups.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    let mut rng = Rng::derive(seed, &[0xF01D]);
    rng.shuffle(&mut uniq);
    let k = k.max(1);
    let fold_of: std::collections::HashMap<&str, usize> =
        uniq.iter().enumerate().map(|(i, g)| (*g, i % k)).collect();
    groups.iter().map(|g| fold_of[g]).collect()
}

fn fit_regressor(
    opts: &TrainOptions,
    x: &[Vec<f64>],
    z: &[f64],
    metric: Metric,
    seed: u64,
) -> Regressor {
    opts.family.family().fit(&FitInput {
        x,
        z,
        metric,
        allowed: &opts.allowed,
        seed,
        gbdt: &opts.gbdt,
    })
}

/// Fits one metric of one algorithm on converged, labelled `rows`.
///
/// Also returns, aligned with `rows`, each labelled row's out-of-fold
/// prediction (natural units) from the cross-fitting, where there was one.
///
/// `borderline` (aligned with `rows`, or empty) marks the rows whose
/// out-of-fold P(converges) was below [`crate::recommend::LIKELY`]: with at
/// least [`MIN_STRATUM_ROWS`] labelled rows on each side, their residuals
/// make a second interval (Mondrian split-conformal).
pub fn train_metric(
    opts: &TrainOptions,
    algorithm: Algorithm,
    metric: Metric,
    rows: &[&Row],
    borderline: &[bool],
) -> (MetricModel, Vec<Option<f64>>) {
    let mut out_of_fold = vec![None; rows.len()];
    let labelled: Vec<(usize, &Row, f64)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.converged)
        .filter_map(|(k, r)| {
            r.labels[metric.index()]
                .filter(|v| v.is_finite())
                .map(|y| (k, *r, y))
        })
        .collect();
    let ys: Vec<f64> = labelled.iter().map(|(_, _, y)| *y).collect();
    let n = labelled.len();
    // Below MIN_FIT_ROWS every family falls back to the one-parameter
    // calibrated analytic estimate (TT/DT/TD; the median otherwise).
    let few = n < MIN_FIT_ROWS;
    let fallback;
    let opts = if few && opts.family != FamilyKind::Analytic {
        fallback = TrainOptions {
            family: FamilyKind::Analytic,
            ..opts.clone()
        };
        &fallback
    } else {
        opts
    };
    let transform = Transform::choose(opts.family, &opts.gbdt, metric, &ys);
    let log = transform != Transform::Identity;
    let seed = Rng::derive(opts.seed, &[algorithm.code() as u64, metric.index() as u64]).next_u64();
    if n == 0 {
        // Placeholder: the analytic estimate for TT/DT/TD, else a neutral value.
        let (regressor, transform, spread) = match metric {
            Metric::TT => (
                Regressor::Analytic {
                    input: inputs::A_TT,
                    offset: 0.0,
                    fallback: 10_000f64.ln(),
                },
                Transform::Log,
                1.5,
            ),
            Metric::DT => (
                Regressor::Analytic {
                    input: inputs::A_DT,
                    offset: 0.0,
                    fallback: 300f64.ln(),
                },
                Transform::Log,
                2.0,
            ),
            Metric::TD => (
                Regressor::Analytic {
                    input: inputs::A_TD,
                    offset: 0.0,
                    fallback: 1e9f64.ln(),
                },
                Transform::Log,
                1.5,
            ),
            Metric::PERF => (Regressor::Constant(1.0), Transform::Identity, 0.5),
            Metric::CPU | Metric::MEM => (Regressor::Constant(0.0), Transform::Identity, 0.0),
        };
        return (
            MetricModel {
                metric,
                status: MetricStatus::NoData,
                n: 0,
                transform,
                regressor,
                residuals: Residuals {
                    n: 0,
                    sketch: vec![-spread, spread],
                    lo: -spread,
                    hi: spread,
                },
                borderline: None,
                cv: None,
                note: Some(format!(
                    "{}: no labelled converged rows for {algorithm}; placeholder value",
                    metric.name()
                )),
            },
            out_of_fold,
        );
    }
    let z: Vec<f64> = ys.iter().map(|y| transform.forward(*y)).collect();
    let x: Vec<Vec<f64>> = labelled.iter().map(|(_, r, _)| r.x.clone()).collect();
    if n < MIN_CALIBRATION_ROWS {
        let m = median_of(&z);
        return (
            MetricModel {
                metric,
                status: MetricStatus::FewRows,
                n: n as u64,
                transform,
                regressor: Regressor::Constant(m),
                residuals: Residuals::from(z.iter().map(|v| v - m).collect()),
                borderline: None,
                cv: None,
                note: Some(format!(
                    "{}: only {n} labelled rows for {algorithm}; predicting their median",
                    metric.name()
                )),
            },
            out_of_fold,
        );
    }
    // Cross-fitting: out-of-fold predictions give the conformal residuals and CV scores.
    let k = opts.conformal_folds.clamp(2, n);
    let groups: Vec<&str> = labelled.iter().map(|(_, r, _)| r.group.as_str()).collect();
    let folds = assign_folds(&groups, k, seed);
    let candidates = base_candidates(opts, metric, log, transform, &x, &ys);
    // Errors in ln y, so candidates with different transforms compare.
    let ln_error = |t: Transform, i: usize, zi: f64, oof: f64| match t {
        Transform::Offset { .. } => ys[i].ln() - t.inverse(oof).ln(),
        _ => zi - oof,
    };
    let mut fits: Vec<Fit> = candidates
        .into_iter()
        .map(|(cand, t)| {
            let z: Vec<f64> = ys.iter().map(|y| t.forward(*y)).collect();
            let (oof, trees) = cross_fit(&cand, &x, &z, metric, &folds, k, seed);
            let loss = (0..n)
                .map(|i| selection_loss(metric, log, ln_error(t, i, z[i], oof[i])))
                .collect();
            Fit {
                loss,
                oof,
                trees,
                opts: cand,
                transform: t,
                z,
            }
        })
        .collect();
    let total = |l: &[f64]| l.iter().filter(|e| e.is_finite()).sum::<f64>();
    let chosen = (0..fits.len())
        .min_by(|&a, &b| total(&fits[a].loss).total_cmp(&total(&fits[b].loss)))
        .unwrap_or(0);
    let Fit {
        oof,
        trees: chosen_trees,
        opts: chosen_opts,
        transform,
        z,
        ..
    } = fits.swap_remove(chosen);
    let resid: Vec<f64> = (0..n).map(|i| z[i] - oof[i]).collect();
    // Strata of the intervals: borderline rows apart when both sides have enough.
    let is_borderline: Vec<bool> = labelled
        .iter()
        .map(|(k, _, _)| borderline.get(*k).copied().unwrap_or(false))
        .collect();
    let count = |b: bool| {
        (0..n)
            .filter(|&i| is_borderline[i] == b && resid[i].is_finite())
            .count()
    };
    let stratified = count(true) >= MIN_STRATUM_ROWS && count(false) >= MIN_STRATUM_ROWS;
    let stratum = |i: usize| stratified && is_borderline[i];
    // Honest coverage: each fold's residuals against offsets from the other
    // folds (of the same stratum).
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
    let (residuals, borderline_residuals) = if stratified {
        let of = |b: bool| {
            Residuals::from(
                (0..n)
                    .filter(|&i| is_borderline[i] == b)
                    .map(|i| resid[i])
                    .collect(),
            )
        };
        (of(false), Some(of(true)))
    } else {
        (Residuals::from(resid), None)
    };
    let preds: Vec<f64> = oof.iter().map(|z| transform.inverse(*z)).collect();
    for ((k, _, _), p) in labelled.iter().zip(&preds) {
        out_of_fold[*k] = p.is_finite().then_some(*p);
    }
    let mut cv = score::stats(metric, &preds, &ys, None);
    cv.coverage = if counted > 0 {
        covered as f64 / counted as f64
    } else {
        f64::NAN
    };
    let mut regressor = fit_regressor(&chosen_opts, &x, &z, metric, seed);
    if let Some(t) = chosen_trees {
        regressor.truncate_trees(t);
    }
    (
        MetricModel {
            metric,
            status: if few {
                MetricStatus::FewRows
            } else {
                MetricStatus::Fitted
            },
            n: n as u64,
            transform,
            regressor,
            residuals,
            borderline: borderline_residuals,
            cv: Some(cv),
            note: few.then(|| {
                format!(
                    "{}: only {n} labelled rows for {algorithm}; {}",
                    metric.name(),
                    if crate::family::analytic_input(metric).is_some() {
                        "calibrated analytic estimate"
                    } else {
                        "predicting their median"
                    }
                )
            }),
        },
        out_of_fold,
    )
}

/// The candidates of the cross-fitted choice of base, richest first, each
/// with the target transform it fits on.
///
/// For gbdt on TT/DT/TD, the base is itself a choice made by cross-fitting
/// (least total selection loss), from the configured one down: where the
/// series carries no signal (e.g. a downtime that is all device state) the
/// plain median wins; where its fixed part is noise, the one-factor
/// calibration. Measured on 419 lab rows (10 folds, seeds 42 and 7): the
/// affine candidate cut gMRE over the 15 TT/DT/TD cells by 3 % and 6 %
/// (geometric mean); choosing by a one-SE rule instead of the least loss
/// kept only 3 % and 1 %. Other families and metrics: `opts` alone.
fn base_candidates(
    opts: &TrainOptions,
    metric: Metric,
    log: bool,
    transform: Transform,
    x: &[Vec<f64>],
    ys: &[f64],
) -> Vec<(TrainOptions, Transform)> {
    // TT and TD always keep a physical base (plain trees cannot leave the
    // training range); DT may drop to the median, a downtime being mostly
    // device state and the switch-over rule rather than memory.
    let bases: &[Base] = match (opts.gbdt.base, metric) {
        (Base::Affine, Metric::DT) => &[Base::Affine, Base::Scaled, Base::Median],
        (Base::Affine, _) => &[Base::Affine, Base::Scaled],
        (Base::Scaled, Metric::DT) => &[Base::Scaled, Base::Median],
        (Base::Scaled, _) => &[Base::Scaled],
        (Base::Median, _) => &[Base::Median],
    };
    let series_col = crate::family::base_column(metric, &opts.allowed, x);
    let (FamilyKind::Gbdt, true, Some(col)) = (opts.family, log, series_col) else {
        return vec![(opts.clone(), transform)];
    };
    let mut candidates = Vec::new();
    for &base in bases {
        let mut o = opts.clone();
        o.gbdt.base = base;
        if base == Base::Affine {
            // The fixed part comes out of the target before the trees.
            let series: Vec<f64> = x.iter().map(|r| r[col].exp()).collect();
            if let Some((a, _)) = crate::family::fit_affine(&series, ys) {
                candidates.push((o, Transform::Offset { shift: -a }));
            }
        } else {
            candidates.push((o, transform));
        }
    }
    candidates
}

/// How an out-of-fold error `d` (in the transformed space) counts when the
/// tree count and the base are chosen by cross-fitting.
///
/// For TT, TD and DT (log targets) `d ≈` the relative error, and the issue's
/// score is gMRE, a geometric mean: the loss is `ln(|d| + floor)`, so many
/// small errors weigh as much as a few large ones. The floor is the metric's
/// repeat noise measured on this lab (`data/repeats.csv`, median CV: TT 1.3 %,
/// TD 0.3 %, DT 18 %): below it an error cannot be told from noise, and
/// without it the choice chases exact hits (measured: a 1-ms downtime
/// "predicted" to 0.1 % while MRE grew). Other metrics (shifted logs of
/// deltas near zero) and raw targets (`log == false`) keep the absolute error.
pub fn selection_loss(metric: Metric, log: bool, d: f64) -> f64 {
    if !log {
        return d.abs();
    }
    match metric {
        Metric::TT | Metric::TD | Metric::DT => (d.abs() + score::repeat_noise(metric)).ln(),
        _ => d.abs(),
    }
}

/// One candidate of the cross-fitted choice of base.
struct Fit {
    /// Per-row [`selection_loss`].
    loss: Vec<f64>,
    oof: Vec<f64>,
    trees: Option<usize>,
    opts: TrainOptions,
    transform: Transform,
    /// The targets in `transform`'s space.
    z: Vec<f64>,
}

/// Out-of-fold predictions of `opts`' family over `folds`; for boosted
/// models, at the tree count (0 = the base alone) with the least
/// out-of-fold [`selection_loss`], which is returned too.
fn cross_fit(
    opts: &TrainOptions,
    x: &[Vec<f64>],
    z: &[f64],
    metric: Metric,
    folds: &[usize],
    k: usize,
    seed: u64,
) -> (Vec<f64>, Option<usize>) {
    let log = !crate::family::raw_scale(opts.family, &opts.gbdt);
    let n = z.len();
    let mut oof = vec![f64::NAN; n];
    let mut staged: Vec<Option<Vec<f64>>> = vec![None; n];
    for f in 0..k {
        let tr: Vec<usize> = (0..n).filter(|&i| folds[i] != f).collect();
        if tr.len() < 2 || tr.len() == n {
            continue;
        }
        let xt: Vec<Vec<f64>> = tr.iter().map(|&i| x[i].clone()).collect();
        let zt: Vec<f64> = tr.iter().map(|&i| z[i]).collect();
        let reg = fit_regressor(opts, &xt, &zt, metric, seed ^ (f as u64 + 1));
        for i in (0..n).filter(|&i| folds[i] == f) {
            oof[i] = reg.predict(&x[i]);
            staged[i] = reg.predict_staged(&x[i]);
        }
    }
    if !staged.iter().all(|s| s.is_some()) {
        return (oof, None);
    }
    let len = staged
        .iter()
        .map(|s| s.as_ref().unwrap().len())
        .min()
        .unwrap_or(0);
    if len == 0 {
        return (oof, None);
    }
    let errs: Vec<f64> = (0..len)
        .map(|t| {
            (0..n)
                .map(|i| selection_loss(metric, log, z[i] - staged[i].as_ref().unwrap()[t]))
                .sum::<f64>()
        })
        .collect();
    let min = errs.iter().cloned().fold(f64::INFINITY, f64::min);
    let best = errs
        .iter()
        .position(|e| *e <= min * (1.0 + STAGE_TOLERANCE))
        .unwrap_or(0);
    for i in 0..n {
        oof[i] = staged[i].as_ref().unwrap()[best];
    }
    (oof, Some(best))
}

/// Fits the convergence classifier of one algorithm.
pub fn train_converge(opts: &TrainOptions, algorithm: Algorithm, rows: &[&Row]) -> ConvergeModel {
    let n = rows.len();
    let ok = rows.iter().filter(|r| r.converged).count();
    let minority = ok.min(n - ok);
    if minority < MIN_CLASS_ROWS {
        let p = (ok as f64 + 1.0) / (n as f64 + 2.0);
        let note = if n == 0 {
            format!("no rows for {algorithm}: P(converges) = 0.5 (uninformed)")
        } else if ok == n {
            format!("all {n} {algorithm} rows converged: P(converges) = {p:.3} (Laplace-smoothed rate, no classifier)")
        } else {
            format!("{ok} of {n} {algorithm} rows converged: too few of one class for a classifier; P = {p:.3}")
        };
        return ConvergeModel::Constant { p, note };
    }
    let x: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            (0..INPUT_COUNT)
                .map(|i| {
                    if opts.allowed.contains(&i) && CONVERGE_INPUTS.contains(&i) {
                        r.x[i]
                    } else {
                        f64::NAN
                    }
                })
                .collect()
        })
        .collect();
    let y: Vec<f64> = rows
        .iter()
        .map(|r| if r.converged { 1.0 } else { 0.0 })
        .collect();
    let seed = Rng::derive(opts.seed, &[algorithm.code() as u64, 99]).next_u64();
    ConvergeModel::Classifier {
        model: Gbdt::fit(&x, &y, INPUT_COUNT, &GbdtParams::classifier(), seed),
        floor: 1.0 / (n as f64 + 2.0),
    }
}

/// Fewest labelled rows on each side of the borderline split for the
/// intervals to be stratified (below it: one pooled interval, as before).
pub const MIN_STRATUM_ROWS: usize = 8;

/// Each row's P(converges) from a classifier that did not see the row's
/// group (cross-fitted over the conformal folds).
fn converge_out_of_fold(opts: &TrainOptions, algorithm: Algorithm, rows: &[&Row]) -> Vec<f64> {
    let n = rows.len();
    if n < 2 {
        return vec![1.0; n];
    }
    let k = opts.conformal_folds.clamp(2, n);
    let groups: Vec<&str> = rows.iter().map(|r| r.group.as_str()).collect();
    let seed = Rng::derive(opts.seed, &[algorithm.code() as u64, 98]).next_u64();
    let folds = assign_folds(&groups, k, seed);
    let mut p = vec![1.0; n];
    for f in 0..k {
        let train: Vec<&Row> = (0..n).filter(|&i| folds[i] != f).map(|i| rows[i]).collect();
        let model = train_converge(opts, algorithm, &train);
        for i in (0..n).filter(|&i| folds[i] == f) {
            p[i] = model.p(&rows[i].x);
        }
    }
    p
}

/// One algorithm's model and its training rows' out-of-fold view (what
/// [`crate::decision::learn`] learns the recommendation's fallback from).
pub struct TrainedAlgorithm {
    pub model: AlgorithmModel,
    pub outcomes: Vec<Outcome>,
}

/// Trains everything for one algorithm.
///
/// TD is trained first: its out-of-fold predictions, sent at each row's
/// bandwidth, become TT's [`inputs::TD_TIME`] input (stacking; at prediction
/// time the TD model's own prediction fills it, see
/// [`AlgorithmModel::predict_metrics`]).
pub fn train_algorithm(
    opts: &TrainOptions,
    algorithm: Algorithm,
    rows: &[&Row],
) -> TrainedAlgorithm {
    let p_oof = converge_out_of_fold(opts, algorithm, rows);
    let borderline: Vec<bool> = p_oof
        .iter()
        .map(|p| crate::recommend::near_edge(*p))
        .collect();
    let (td, td_oof) = train_metric(opts, algorithm, Metric::TD, rows, &borderline);
    let stacked: Vec<Row> = rows
        .iter()
        .zip(&td_oof)
        .map(|(r, td)| {
            let mut r = (*r).clone();
            r.x[inputs::TD_TIME] = td.map_or(f64::NAN, |td| inputs::td_time(&r.x, td));
            r
        })
        .collect();
    let stacked: Vec<&Row> = stacked.iter().collect();
    let (metrics, oof): (Vec<MetricModel>, Vec<Vec<Option<f64>>>) = Metric::ALL
        .iter()
        .map(|&m| match m {
            Metric::TD => (td.clone(), td_oof.clone()),
            Metric::TT => train_metric(opts, algorithm, m, &stacked, &borderline),
            _ => train_metric(opts, algorithm, m, rows, &borderline),
        })
        .unzip();
    let model = AlgorithmModel {
        algorithm,
        rows: rows.len() as u64,
        converged_rows: rows.iter().filter(|r| r.converged).count() as u64,
        domain: Domain::of(rows),
        converge: train_converge(opts, algorithm, rows),
        metrics,
    };
    // Rows without an out-of-fold prediction (not converged, unlabelled) were
    // never fitted on: the final model's prediction is out of sample for them.
    let outcomes = rows
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let mut pred = [f64::NAN; 6];
            let mut full = None;
            for m in Metric::ALL {
                pred[m.index()] = match oof[m.index()][k] {
                    Some(v) => v,
                    None => {
                        full.get_or_insert_with(|| model.predict_metrics(&mut r.x.clone()).0)
                            [m.index()]
                        .value
                    }
                };
            }
            Outcome {
                group: r.group.clone(),
                algorithm,
                converged: r.converged,
                labels: r.labels,
                pred,
                p_converge: p_oof[k],
            }
        })
        .collect();
    TrainedAlgorithm { model, outcomes }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Model {
    /// Trains a model on `data`.
    pub fn train(data: &Data, opts: &TrainOptions) -> Model {
        let start = std::time::Instant::now();
        let with_data = data.columns_with_data();
        let inputs_used: Vec<usize> = with_data
            .into_iter()
            .filter(|c| opts.allowed.contains(c))
            .collect();
        let mut opts = opts.clone();
        opts.allowed = inputs_used.clone();
        let per_alg: Vec<Vec<&Row>> = Algorithm::ALL.iter().map(|&a| data.of(a)).collect();
        let jobs: Vec<Algorithm> = Algorithm::ALL.to_vec();
        let trained = parallel_map(&jobs, opts.threads, |&a| {
            let t = TrainOptions {
                threads: 1,
                ..opts.clone()
            };
            train_algorithm(&t, a, &per_alg[a.index()])
        });
        let (algorithms, outcomes): (Vec<AlgorithmModel>, Vec<Vec<Outcome>>) =
            trained.into_iter().map(|t| (t.model, t.outcomes)).unzip();
        let decisions = crate::decision::learn(&outcomes.concat());
        let mut notes = Vec::new();
        if data.partial_lines > 0 {
            notes.push(format!(
                "{} file(s) ended in a partial row (being appended?); it was ignored",
                data.partial_lines
            ));
        }
        if data.skipped > 0 {
            notes.push(format!(
                "{} rows without a capability column value were skipped",
                data.skipped
            ));
        }
        if data.failures > 0 {
            notes.push(format!(
                "{} rows of migrations that broke (status failed or post-copy paused) were skipped",
                data.failures
            ));
        }
        let absent: Vec<&str> = Feature::ALL
            .iter()
            .filter(|f| !inputs_used.contains(&f.index()))
            .map(|f| f.column())
            .collect();
        if !absent.is_empty() {
            notes.push(format!(
                "features not in the training data (or excluded): {}",
                absent.join(", ")
            ));
        }
        for a in &algorithms {
            if let ConvergeModel::Constant { note, .. } = &a.converge {
                notes.push(note.clone());
            }
            for m in &a.metrics {
                if let Some(n) = &m.note {
                    notes.push(n.clone());
                }
            }
        }
        Model {
            format_version: FORMAT_VERSION,
            migsight_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix: now_unix(),
            family: opts.family,
            seed: opts.seed,
            gbdt: opts.gbdt.clone(),
            conformal_folds: opts.conformal_folds as u64,
            inputs: inputs::specs(),
            raw_features: data.raw_features(),
            inputs_used,
            sources: data.sources.clone(),
            data_sha256: data.sha256.clone(),
            rows: Algorithm::ALL
                .iter()
                .map(|a| per_alg[a.index()].len() as u64)
                .collect(),
            domain: Domain::of(&data.rows.iter().collect::<Vec<_>>()),
            coverage: COVERAGE,
            algorithms,
            decisions,
            notes,
            training_seconds: start.elapsed().as_secs_f64(),
        }
    }

    /// `Err` (why, in a sentence) when no algorithm has enough rows to be
    /// predicted: such a model would serve nothing but refusals, so `train`
    /// writes none.
    pub fn check_usable(&self) -> Result<(), String> {
        if self.algorithms.iter().any(AlgorithmModel::is_trained) {
            return Ok(());
        }
        let counts: Vec<String> = self
            .algorithms
            .iter()
            .filter(|a| a.rows > 0)
            .map(|a| {
                format!(
                    "{} {} rows ({} converged with a total time)",
                    a.algorithm,
                    a.rows,
                    a.metrics[Metric::TT.index()].n
                )
            })
            .collect();
        Err(format!(
            "too little data to fit: no algorithm has {MIN_CALIBRATION_ROWS} converged rows with a total time ({})",
            if counts.is_empty() {
                "no rows".to_string()
            } else {
                counts.join(", ")
            }
        ))
    }

    /// The file bytes: magic, format version (u32 LE), postcard payload, sha256 of the payload.
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        let payload = postcard::to_allocvec(self)?;
        let mut out = Vec::with_capacity(payload.len() + 44);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&sha256::digest(&payload));
        Ok(out)
    }

    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Model, LoadError> {
        let corrupt = |why: String| LoadError::Corrupt {
            path: path.to_string(),
            why,
        };
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(LoadError::NotAModel {
                path: path.to_string(),
            });
        }
        if bytes.len() < MAGIC.len() + 4 {
            return Err(corrupt("ends inside the header".into()));
        }
        let v = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if v != FORMAT_VERSION {
            return Err(LoadError::Version {
                path: path.to_string(),
                found: v,
                expected: FORMAT_VERSION,
            });
        }
        if bytes.len() < 12 + 32 {
            return Err(corrupt(format!("only {} bytes", bytes.len())));
        }
        let (payload, sum) = bytes[12..].split_at(bytes.len() - 12 - 32);
        if sha256::digest(payload) != sum {
            return Err(corrupt("checksum mismatch".into()));
        }
        let model: Model = postcard::from_bytes(payload).map_err(|e| corrupt(e.to_string()))?;
        if model.format_version != FORMAT_VERSION || model.algorithms.len() != Algorithm::ALL.len()
        {
            return Err(corrupt("inconsistent contents".into()));
        }
        for (i, a) in model.algorithms.iter().enumerate() {
            if a.algorithm.index() != i || a.metrics.len() != Metric::ALL.len() {
                return Err(corrupt("inconsistent contents".into()));
            }
        }
        model.check_inputs().map_err(corrupt)?;
        Ok(model)
    }

    /// Checks every input index in the model is in range (a hostile or
    /// corrupt-but-checksummed file must not make predict index out of bounds).
    fn check_inputs(&self) -> Result<(), String> {
        // `info` names the inputs used by their index into `inputs`.
        if self.inputs_used.iter().any(|&i| i >= self.inputs.len()) {
            return Err("bad list of inputs used".into());
        }
        for a in &self.algorithms {
            if let ConvergeModel::Classifier { model: g, floor } = &a.converge {
                if !tree_ok(g) || !(0.0..0.5).contains(floor) {
                    return Err("bad classifier tree".into());
                }
            }
            for m in &a.metrics {
                if !regressor_ok(&m.regressor) {
                    return Err(format!("bad {} regressor", m.metric));
                }
                if !residuals_ok(&m.residuals) || !m.borderline.as_ref().is_none_or(residuals_ok) {
                    return Err(format!("bad {} residuals", m.metric));
                }
            }
        }
        if !self.domain.is_valid() || !self.algorithms.iter().all(|a| a.domain.is_valid()) {
            return Err("bad domain of validity".into());
        }
        if !self.decisions.iter().all(FallbackRule::is_valid) {
            return Err("bad recommendation fallback".into());
        }
        Ok(())
    }

    /// The recommendation's fallback rule for `objective`, if one was learned.
    pub fn decision(&self, objective: migsight_proto::wire::Objective) -> Option<&FallbackRule> {
        self.decisions.iter().find(|d| d.objective == objective)
    }

    /// Writes the model atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = self.to_bytes()?;
        migsight_proto::write_file_atomic(path, &bytes)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }

    /// Reads and checks a model file. The magic bytes and the size (at most
    /// [`MAX_MODEL_BYTES`]) are checked before the rest is read, so a SIGHUP
    /// onto a huge or foreign file costs a few bytes of reading, not its size.
    pub fn load(path: &Path) -> Result<Model, LoadError> {
        use std::io::Read;
        let p = path.display().to_string();
        let io = |source| LoadError::Io {
            path: p.clone(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::with_capacity(MAGIC.len());
        Read::by_ref(&mut f)
            .take(MAGIC.len() as u64)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes != MAGIC {
            return Err(LoadError::NotAModel { path: p });
        }
        let size = f.metadata().map_err(io)?.len();
        if size > MAX_MODEL_BYTES {
            return Err(LoadError::TooLarge {
                path: p,
                size,
                max: MAX_MODEL_BYTES,
            });
        }
        // `take` keeps a file that grows while being read within the cap.
        f.take(MAX_MODEL_BYTES - 8 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_MODEL_BYTES {
            return Err(LoadError::TooLarge {
                path: p,
                size: bytes.len() as u64,
                max: MAX_MODEL_BYTES,
            });
        }
        Model::from_bytes(&bytes, &p)
    }

    /// [`ModelInfo`] for the wire.
    pub fn info(&self, path: &str) -> ModelInfo {
        let mut cv = Vec::new();
        for a in &self.algorithms {
            for m in &a.metrics {
                if let Some(s) = &m.cv {
                    cv.push(CvScore {
                        algorithm: a.algorithm,
                        metric: m.metric,
                        n: s.n,
                        gmre: s.gmre,
                        coverage: s.coverage,
                    });
                }
            }
        }
        ModelInfo {
            format_version: self.format_version,
            family: self.family.name().to_string(),
            created_unix: self.created_unix,
            inputs: self
                .inputs_used
                .iter()
                .map(|&i| self.inputs[i].name.clone())
                .collect(),
            rows: self.rows.clone(),
            data_sha256: self.data_sha256.clone(),
            cv,
            fallback: self.decisions.clone(),
            path: path.to_string(),
        }
    }

    fn check_request(req: &PredictRequest) -> Result<(), ErrorReply> {
        req.features
            .validate()
            .map_err(|e| ErrorReply::new(ErrorKind::InvalidFeature, e.to_string()))?;
        if !req.bandwidth_bps.is_finite() || req.bandwidth_bps <= 0.0 {
            return Err(ErrorReply::new(
                ErrorKind::BadRequest,
                format!(
                    "bandwidth_bps = {} must be a positive, finite number of bytes/s",
                    req.bandwidth_bps
                ),
            ));
        }
        if !req.downtime_limit_ms.is_finite() || req.downtime_limit_ms <= 0.0 {
            return Err(ErrorReply::new(
                ErrorKind::BadRequest,
                format!(
                    "downtime_limit_ms = {} must be a positive, finite number of ms",
                    req.downtime_limit_ms
                ),
            ));
        }
        Ok(())
    }

    /// Predicts every metric of every algorithm the source can run and the
    /// model has data for.
    pub fn predict(&self, req: &PredictRequest) -> Result<Prediction, ErrorReply> {
        self.predict_inner(req).map(|(p, _)| p)
    }

    /// Why `am` is not predicted for `req`: the source cannot run it, or no
    /// training row is behind it (a prediction would be the bare series).
    fn not_predicted(&self, am: &AlgorithmModel, req: &PredictRequest) -> Option<String> {
        if let Some(why) = req.qemu.as_ref().and_then(|q| q.unavailable(am.algorithm)) {
            return Some(why.to_string());
        }
        if am.rows == 0 {
            return Some(format!(
                "no training data for {} in this model",
                am.algorithm
            ));
        }
        (!am.is_trained()).then(|| {
            format!(
                "only {} converged {} rows in training: too few to predict",
                am.metrics[Metric::TT.index()].n,
                am.algorithm
            )
        })
    }

    /// The prediction and, per predicted algorithm, its model and each
    /// metric's transformed value.
    fn predict_inner(
        &self,
        req: &PredictRequest,
    ) -> Result<(Prediction, Vec<Transformed<'_>>), ErrorReply> {
        Self::check_request(req)?;
        let fv = data::with_bandwidth(
            &req.features.restricted(&self.raw_features),
            req.bandwidth_bps,
        );
        let qemu_major = req
            .qemu
            .as_ref()
            .and_then(|q| q.major_minor())
            .map(|(m, _)| f64::from(m));
        let mut algorithms = Vec::with_capacity(self.algorithms.len());
        let mut not_predicted = Vec::new();
        let mut zs = Vec::with_capacity(self.algorithms.len());
        for am in &self.algorithms {
            if let Some(why) = self.not_predicted(am, req) {
                not_predicted.push(AlgorithmSupport {
                    algorithm: am.algorithm,
                    unavailable: Some(why),
                });
                continue;
            }
            let mut x = inputs::row(&fv, am.algorithm, req.downtime_limit_ms, qemu_major);
            let (preds, p_converge) = am.predict_metrics(&mut x);
            let metrics = preds.map(|p| Interval {
                value: p.value,
                lo: p.lo,
                hi: p.hi,
            });
            let z = preds.map(|p| p.z);
            let explanation = crate::explain::explain(self, am, &x, &fv);
            algorithms.push(AlgorithmPrediction {
                algorithm: am.algorithm,
                metrics,
                p_converge,
                explanation,
            });
            zs.push((am, z));
        }
        if algorithms.is_empty() {
            return Err(ErrorReply::new(
                ErrorKind::NoModel,
                format!(
                    "this model predicts none of the algorithms the source offers ({})",
                    not_predicted
                        .iter()
                        .map(|n| format!(
                            "{}: {}",
                            n.algorithm,
                            n.unavailable.as_deref().unwrap_or("")
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ));
        }
        let out_of_domain = self.out_of_domain(&fv, req, qemu_major);
        let missing_features = self
            .raw_features
            .iter()
            .copied()
            .filter(|f| *f != Feature::VmPtr && fv.get(*f).is_none())
            .collect();
        Ok((
            Prediction {
                bandwidth_bps: req.bandwidth_bps,
                downtime_limit_ms: req.downtime_limit_ms,
                algorithms,
                not_predicted,
                out_of_domain,
                missing_features,
                model_family: self.family.name().to_string(),
            },
            zs,
        ))
    }

    /// Where a request lies outside the training data, in words.
    fn out_of_domain(
        &self,
        fv: &FeatureVector,
        req: &PredictRequest,
        qemu_major: Option<f64>,
    ) -> Vec<String> {
        // The algorithm-independent inputs of any row (the series' columns
        // are not checked here).
        let x = inputs::row(fv, Algorithm::Precopy, req.downtime_limit_ms, qemu_major);
        let mut out: Vec<String> = self
            .domain
            .excess(&x)
            .iter()
            .map(crate::domain::describe)
            .collect();
        if out.is_empty() {
            if let Some(d) = self.domain.joint_distance(&x).filter(|d| *d > 1.5) {
                out.push(format!(
                    "no training migration combined a VM this size with this bandwidth and dirty rate (nearest is {d:.1} steps away, a step being 2× in size or bandwidth or 0.25 of dirty rate / bandwidth)"
                ));
            }
        }
        if let Some(q) = &req.qemu {
            let release = q
                .major_minor()
                .map(|(a, b)| format!("{a}.{b}"))
                .unwrap_or_else(|| q.version.clone());
            let accel = q.accel.as_deref();
            if !self.domain.has_platform(&release, accel) {
                let trained: Vec<String> = self
                    .domain
                    .platforms
                    .iter()
                    .map(|p| format!("{} under {} ({} rows)", p.release, p.accel, p.rows))
                    .collect();
                out.push(format!(
                    "QEMU {release}{}: no training rows on this platform (trained on QEMU {})",
                    accel.map(|a| format!(" under {a}")).unwrap_or_default(),
                    trained.join(", ")
                ));
            }
        }
        out
    }

    /// P(converges and meets every SLA limit) per predicted algorithm, from
    /// P(converges) and each limit's probability under the held-out residual
    /// distribution (limits treated as independent).
    pub fn p_meets_sla(
        sla: &migsight_proto::wire::Sla,
        p_converge: &[f64],
        zs: &[Transformed<'_>],
    ) -> Vec<f64> {
        zs.iter()
            .enumerate()
            .map(|(i, (am, z))| {
                let mut p = p_converge[i];
                for (metric, limit, upper) in sla.limits() {
                    let mm = &am.metrics[metric.index()];
                    p *= mm.p_within(
                        z[metric.index()],
                        limit,
                        upper,
                        crate::recommend::near_edge(p_converge[i]),
                    );
                }
                p
            })
            .collect()
    }

    /// Predicts and ranks the algorithms under an SLA.
    pub fn recommend(&self, req: &RecommendRequest) -> Result<Recommendation, ErrorReply> {
        req.sla
            .validate()
            .map_err(|e| ErrorReply::new(ErrorKind::BadRequest, e))?;
        let (prediction, zs) = self.predict_inner(&req.predict)?;
        let pc: Vec<f64> = prediction.algorithms.iter().map(|a| a.p_converge).collect();
        let p = Self::p_meets_sla(&req.sla, &pc, &zs);
        Ok(crate::recommend::rank(
            prediction,
            &p,
            req.sla,
            req.objective,
            self.decision(req.objective),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::simulate;
    use migsight_proto::wire::{Objective, Sla};
    use migsight_proto::FeatureVector;

    #[test]
    fn huge_or_foreign_files_are_refused_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        // 300 MiB of junk (sparse): the magic is wrong after 8 bytes.
        let junk = dir.path().join("junk.msm");
        std::fs::File::create(&junk)
            .unwrap()
            .set_len(300 << 20)
            .unwrap();
        assert!(matches!(
            Model::load(&junk),
            Err(LoadError::NotAModel { .. })
        ));
        // An endless file: only its first 8 bytes are read (else this hangs).
        assert!(matches!(
            Model::load(Path::new("/dev/zero")),
            Err(LoadError::NotAModel { .. })
        ));
        // Right magic, but past the cap: refused by its size.
        let big = dir.path().join("big.msm");
        std::fs::write(&big, MAGIC).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&big)
            .unwrap()
            .set_len(MAX_MODEL_BYTES + 1)
            .unwrap();
        let e = Model::load(&big).unwrap_err();
        assert!(matches!(e, LoadError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("not read"), "{e}");
        // Short or empty files are not models either.
        std::fs::write(&junk, b"MIGS").unwrap();
        assert!(matches!(
            Model::load(&junk),
            Err(LoadError::NotAModel { .. })
        ));
        std::fs::write(&junk, b"").unwrap();
        assert!(matches!(
            Model::load(&junk),
            Err(LoadError::NotAModel { .. })
        ));
    }

    #[test]
    fn selection_loss_prefers_many_small_errors_above_the_noise_floor() {
        // Ten rows: one model misses one row by 50 % and hits the rest within
        // 0.5 %, the other misses every row by 5 %. gMRE prefers the first;
        // the absolute error alone would prefer the second.
        let a: f64 = std::iter::once(0.5)
            .chain([0.005; 9])
            .map(|d| selection_loss(Metric::TT, true, d))
            .sum();
        let b: f64 = (0..10)
            .map(|_| selection_loss(Metric::TT, true, 0.05))
            .sum();
        assert!(a < b, "{a} vs {b}");
        // Below the floor, errors are noise: 0.1 % and 0.01 % count almost alike.
        let fine =
            selection_loss(Metric::TT, true, 0.0001) - selection_loss(Metric::TT, true, 0.001);
        assert!(fine.abs() < 0.1, "{fine}");
        // Metrics without a relative score keep the absolute error.
        assert_eq!(selection_loss(Metric::CPU, true, -0.25), 0.25);
    }

    fn fast(family: FamilyKind, seed: u64) -> TrainOptions {
        let mut o = TrainOptions::new(family, seed);
        o.gbdt.n_trees = 40;
        o.gbdt.learning_rate = 0.2;
        o
    }

    fn data(groups: usize, seed: u64, full: bool) -> Data {
        Data::from_dataset(&simulate(groups, seed, full), "fixture")
    }

    fn request(fv: FeatureVector) -> PredictRequest {
        PredictRequest {
            features: fv,
            bandwidth_bps: 60.0 * 1048576.0,
            downtime_limit_ms: 300.0,
            qemu: None,
        }
    }

    fn vm() -> FeatureVector {
        FeatureVector::new()
            .with(Feature::VmSize, 2048.0)
            .with(Feature::VmPdr, 30.0)
            .with(Feature::VmWss, 400.0)
            .with(Feature::VmWse, 0.6)
            .with(Feature::VmNwse, 0.3)
            .with(Feature::VmMwpp, 900.0)
            .with(Feature::VmCpuUtil, 90.0)
    }

    #[test]
    fn save_load_round_trip_predicts_identically() {
        let m = Model::train(&data(30, 1, true), &fast(FamilyKind::Gbdt, 1));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.msm");
        m.save(&path).unwrap();
        let back = Model::load(&path).unwrap();
        assert_eq!(back, m);
        let req = request(vm());
        assert_eq!(back.predict(&req).unwrap(), m.predict(&req).unwrap());
        // ModelInfo carries what the file holds, fallback rules included.
        let mut ruled = back.clone();
        let rule = FallbackRule {
            objective: Objective::Performance,
            default: Algorithm::Postcopy,
            margin: 0.1,
            groups: 30,
            loss_model: 0.09,
            loss_rule: 0.07,
        };
        ruled.decisions = vec![rule];
        let info = ruled.info("m.msm");
        assert_eq!(info.fallback, vec![rule]);
        assert_eq!(info.rows, m.rows);
        assert_eq!(info.data_sha256, m.data_sha256);
        assert_eq!(info.path, "m.msm");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let m = Model::train(&data(12, 1, true), &fast(FamilyKind::Linear, 1));
        let bytes = m.to_bytes().unwrap();
        let e = Model::from_bytes(&bytes[..bytes.len() / 2], "m").unwrap_err();
        assert!(matches!(e, LoadError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("truncated or corrupt"));
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(matches!(
            Model::from_bytes(&flipped, "m"),
            Err(LoadError::Corrupt { .. })
        ));
        let mut other = bytes.clone();
        other[8..12].copy_from_slice(&7u32.to_le_bytes());
        let e = Model::from_bytes(&other, "m").unwrap_err();
        assert!(matches!(e, LoadError::Version { found: 7, .. }), "{e}");
        assert!(e.to_string().contains("version 7"));
        assert!(matches!(
            Model::from_bytes(b"hello world, not a model", "m"),
            Err(LoadError::NotAModel { .. })
        ));
        assert!(matches!(
            Model::from_bytes(b"", "m"),
            Err(LoadError::NotAModel { .. })
        ));
        assert!(matches!(
            Model::from_bytes(&bytes[..10], "m"),
            Err(LoadError::Corrupt { .. })
        ));
        assert!(matches!(
            Model::load(Path::new("/nonexistent/m.msm")),
            Err(LoadError::Io { .. })
        ));
        // Every truncation is an error, never a panic.
        for cut in (0..bytes.len()).step_by(97) {
            assert!(Model::from_bytes(&bytes[..cut], "m").is_err());
        }
    }

    #[test]
    fn training_is_deterministic_for_a_seed() {
        let d = data(25, 3, true);
        let norm = |mut m: Model| {
            m.created_unix = 0;
            m.training_seconds = 0.0;
            m.to_bytes().unwrap()
        };
        let a = norm(Model::train(&d, &fast(FamilyKind::Gbdt, 9)));
        let b = norm(Model::train(&d, &fast(FamilyKind::Gbdt, 9)));
        assert!(a == b, "same seed, same bytes");
        let c = norm(Model::train(&d, &fast(FamilyKind::Gbdt, 10)));
        assert!(a != c);
    }

    #[test]
    fn csv_with_missing_feature_columns() {
        let m = Model::train(&data(20, 2, false), &fast(FamilyKind::Gbdt, 1));
        assert!(!m.inputs_used.contains(&Feature::VmPmuInstr.index()));
        assert!(m.inputs_used.contains(&Feature::VmPdr.index()));
        assert!(
            m.notes.iter().any(|n| n.contains("VM_pmu_instr")),
            "{:?}",
            m.notes
        );
        // A richer request is fine; a poorer one reports what it lacks.
        let full = vm().with(Feature::VmPmuInstr, 2e9);
        assert!(m
            .predict(&request(full))
            .unwrap()
            .missing_features
            .is_empty());
        let mut poor = vm();
        poor.set(Feature::VmWss, None);
        let p = m.predict(&request(poor)).unwrap();
        assert_eq!(p.missing_features, vec![Feature::VmWss]);
        assert!(p
            .algorithms
            .iter()
            .all(|a| a.metrics.iter().all(|i| i.value.is_finite())));
    }

    #[test]
    fn total_time_is_predicted_from_the_transferred_data_prediction() {
        let m = Model::train(&data(60, 4, true), &fast(FamilyKind::Gbdt, 1));
        assert!(m.inputs_used.contains(&inputs::TD_TIME));
        let r = &data(5, 9, true).rows[0];
        let am = &m.algorithms[r.algorithm.index()];
        let mut x = r.x.clone();
        assert!(x[inputs::TD_TIME].is_nan(), "a data row never carries it");
        let (p, _) = am.predict_metrics(&mut x);
        let td = p[Metric::TD.index()].value;
        assert_eq!(x[inputs::TD_TIME], inputs::td_time(&x, td));
        let bw = x[Feature::VmPtr.index()];
        let ms = td / (bw * migsight_proto::feature::MIB) * 1000.0;
        assert!((x[inputs::TD_TIME].exp() / ms - 1.0).abs() < 1e-9);
        // The daemon's path gives the same numbers.
        let fv = r.features;
        let pred = m.predict(&request(fv)).unwrap();
        assert!(pred
            .algorithms
            .iter()
            .all(|a| a.metrics[Metric::TT.index()].value > 0.0));
    }

    #[test]
    fn total_time_and_data_extrapolate_with_memory_size() {
        // Training sizes are 0.5–4 GiB; trees alone would flatten beyond
        // that, the analytic base keeps scaling (a 64-GiB VM is common).
        let m = Model::train(&data(60, 4, true), &fast(FamilyKind::Gbdt, 1));
        let at = |size: f64| {
            let p = m
                .predict(&request(vm().with(Feature::VmSize, size)))
                .unwrap();
            let a = &p.algorithms[Algorithm::Precopy.index()];
            (
                a.metrics[Metric::TT.index()].value,
                a.metrics[Metric::TD.index()].value,
            )
        };
        let (tt4, td4) = at(4096.0);
        let (tt40, td40) = at(40_960.0);
        for (name, r) in [("TT", tt40 / tt4), ("TD", td40 / td4)] {
            assert!(
                (6.0..14.0).contains(&r),
                "{name} grew ×{r:.2} for ×10 memory"
            );
        }
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

    #[test]
    fn borderline_rows_get_their_own_wider_interval() {
        // Rows marked borderline have total times off by up to ±60 %; the
        // others keep the fixture's noise.
        let d = data(120, 4, true);
        let mut rows: Vec<Row> = d.of(Algorithm::Precopy).into_iter().cloned().collect();
        let mut rng = Rng::new(5);
        let borderline: Vec<bool> = (0..rows.len()).map(|i| i % 4 == 0).collect();
        for (r, &b) in rows.iter_mut().zip(&borderline) {
            if b {
                if let Some(tt) = r.labels[Metric::TT.index()].as_mut() {
                    *tt *= 1.0 + 1.2 * (rng.unit() - 0.5);
                }
            }
        }
        let refs: Vec<&Row> = rows.iter().collect();
        let opts = fast(FamilyKind::Gbdt, 1);
        let (m, _) = train_metric(&opts, Algorithm::Precopy, Metric::TT, &refs, &borderline);
        let b = m
            .borderline
            .as_ref()
            .expect("enough rows on both sides: stratified");
        assert!(
            b.hi - b.lo > 2.0 * (m.residuals.hi - m.residuals.lo),
            "borderline {:?} vs confident {:?}",
            (b.lo, b.hi),
            (m.residuals.lo, m.residuals.hi)
        );
        let x = &rows[1].x;
        let (wide, tight) = (m.predict_at(x, true), m.predict_at(x, false));
        assert_eq!(wide.value, tight.value);
        assert!(wide.hi / wide.lo > tight.hi / tight.lo);
        // Too few borderline rows: one pooled interval.
        let few: Vec<bool> = (0..rows.len()).map(|i| i < MIN_STRATUM_ROWS - 1).collect();
        let (m, _) = train_metric(&opts, Algorithm::Precopy, Metric::TT, &refs, &few);
        assert!(m.borderline.is_none());
    }

    #[test]
    fn degenerate_data_never_panics() {
        // One group: one row per algorithm, no labels at all for some
        // metrics, all converged. Too few to predict anything: every family
        // trains without panicking, the model says it is unusable (train
        // writes nothing) and a prediction is a typed refusal.
        let mut ds = simulate(1, 1, true);
        for s in &mut ds.samples {
            s.labels[Metric::MEM.index()] = None;
            s.converged = Some(true);
        }
        for fam in FamilyKind::ALL {
            let m = Model::train(&Data::from_dataset(&ds, "tiny"), &fast(fam, 1));
            let why = m.check_usable().unwrap_err();
            assert!(why.contains("too little data"), "{why}");
            let e = m.predict(&request(vm())).unwrap_err();
            assert_eq!(e.kind, ErrorKind::NoModel);
            assert!(e.message.contains("too few to predict"), "{}", e.message);
            assert!(matches!(
                m.algorithms[0].converge,
                ConvergeModel::Constant { .. }
            ));
            assert_eq!(
                m.algorithms[0].metrics[Metric::MEM.index()].status,
                MetricStatus::NoData
            );
        }
        // Four groups: every seed algorithm predicted (a calibrated series),
        // the newer ones refused for want of data; all finite.
        let ds = simulate(4, 1, true);
        for fam in FamilyKind::ALL {
            let m = Model::train(&Data::from_dataset(&ds, "small"), &fast(fam, 1));
            assert!(m.check_usable().is_ok());
            let rec = m
                .recommend(&RecommendRequest {
                    predict: request(vm()),
                    sla: Sla {
                        max_downtime_ms: Some(300.0),
                        ..Sla::default()
                    },
                    objective: Objective::Time,
                })
                .unwrap();
            let predicted = rec.prediction.algorithms.len();
            assert_eq!(rec.ranked.len(), predicted);
            assert_eq!(
                predicted + rec.prediction.not_predicted.len(),
                Algorithm::ALL.len()
            );
            assert!(rec.prediction.not_predicted.iter().any(|n| n.algorithm
                == Algorithm::DirtyLimit
                && n.unavailable
                    .as_deref()
                    .is_some_and(|w| w.contains("no training data"))));
            for a in &rec.prediction.algorithms {
                for iv in a.metrics {
                    assert!(
                        iv.value.is_finite() && iv.lo.is_finite() && iv.hi.is_finite(),
                        "{fam}: {iv:?}"
                    );
                }
                assert!((0.0..=1.0).contains(&a.p_converge));
            }
        }
        // No rows at all: nothing to predict, said with a typed error.
        let m = Model::train(&Data::default(), &fast(FamilyKind::Gbdt, 1));
        assert!(m.check_usable().is_err());
        let e = m.predict(&request(vm())).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoModel);
        assert!(e.message.contains("no training data"), "{}", e.message);
    }

    #[test]
    fn requests_outside_the_training_data_are_flagged_and_widened() {
        let m = Model::train(&data(30, 3, true), &fast(FamilyKind::Gbdt, 1));
        let inside = m.predict(&request(vm())).unwrap();
        assert!(
            inside.out_of_domain.is_empty(),
            "{:?}",
            inside.out_of_domain
        );
        let huge = vm()
            .with(Feature::VmSize, 65536.0)
            .with(Feature::VmPdr, 900.0);
        let mut r = request(huge);
        r.bandwidth_bps = 1.25e9;
        let out = m.predict(&r).unwrap();
        assert!(
            out.out_of_domain
                .iter()
                .any(|s| s.starts_with("VM_size 65536 MiB is")
                    && s.contains("the largest VM in training")),
            "{:?}",
            out.out_of_domain
        );
        // The same VM at the edge of the data and far outside it: the
        // relative interval is wider outside.
        let rel = |p: &Prediction, a: Algorithm| {
            let iv = p
                .algorithms
                .iter()
                .find(|x| x.algorithm == a)
                .unwrap()
                .metrics[Metric::TD.index()];
            iv.hi / iv.lo
        };
        let edge_size = m.domain.ranges[0].hi;
        let edge = m
            .predict(&request(vm().with(Feature::VmSize, edge_size)))
            .unwrap();
        let far = m
            .predict(&request(vm().with(Feature::VmSize, edge_size * 20.0)))
            .unwrap();
        assert!(
            far.out_of_domain.iter().any(|s| s.contains("20.0×")),
            "{:?}",
            far.out_of_domain
        );
        assert!(rel(&far, Algorithm::Precopy) > rel(&edge, Algorithm::Precopy) * 1.2);
        // And it scales: twenty times the memory, well over ten times the data.
        let td = |p: &Prediction| {
            p.algorithms
                .iter()
                .find(|x| x.algorithm == Algorithm::Postcopy)
                .unwrap()
                .metrics[Metric::TD.index()]
            .value
        };
        assert!(td(&far) > 10.0 * td(&edge), "{} vs {}", td(&far), td(&edge));
        // A QEMU platform the model never saw is said.
        let mut r = request(vm());
        r.qemu = Some(migsight_proto::wire::QemuInfo {
            version: "10.0.2".into(),
            accel: Some("kvm".into()),
            source: "qmp".into(),
            algorithms: vec![],
        });
        let e = m.predict(&r).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoModel, "an empty list offers nothing");
    }

    #[test]
    fn invalid_requests_are_typed_errors() {
        let m = Model::train(&data(10, 1, true), &fast(FamilyKind::Linear, 1));
        let e = m
            .predict(&request(vm().with(Feature::VmPdr, f64::NAN)))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidFeature);
        let e = m
            .predict(&request(vm().with(Feature::VmSize, -5.0)))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidFeature);
        for bw in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            let mut r = request(vm());
            r.bandwidth_bps = bw;
            assert_eq!(m.predict(&r).unwrap_err().kind, ErrorKind::BadRequest);
        }
        let e = m
            .recommend(&RecommendRequest {
                predict: request(vm()),
                sla: Sla {
                    max_time_ms: Some(f64::NAN),
                    ..Sla::default()
                },
                objective: Objective::Data,
            })
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
    }

    #[test]
    fn recommendation_respects_the_sla() {
        let m = Model::train(&data(60, 6, true), &fast(FamilyKind::Gbdt, 1));
        let rec = |sla: Sla, objective| {
            m.recommend(&RecommendRequest {
                predict: request(vm()),
                sla,
                objective,
            })
            .unwrap()
        };
        let r = rec(Sla::default(), Objective::Time);
        assert!(r.reason.contains(r.recommended.name()), "{}", r.reason);
        let p: Vec<f64> = r.ranked.iter().map(|x| x.p_meets_sla).collect();
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
        // An impossible SLA: nobody is likely to meet it, and the reason says so.
        let r = rec(
            Sla {
                max_time_ms: Some(1.0),
                ..Sla::default()
            },
            Objective::Time,
        );
        assert!(r.ranked.iter().all(|x| x.p_meets_sla < 0.5));
        assert!(!r.meets_sla);
        assert!(r.reason.starts_with("No algorithm"), "{}", r.reason);
        // Downtime objective under a loose limit picks the lowest predicted downtime among the likely.
        let r = rec(
            Sla {
                max_downtime_ms: Some(5_000.0),
                ..Sla::default()
            },
            Objective::Downtime,
        );
        let likely: Vec<_> = r.ranked.iter().filter(|x| x.p_meets_sla >= 0.5).collect();
        if let Some(first) = likely.first() {
            assert!(likely
                .iter()
                .all(|x| x.objective_value >= first.objective_value));
        }
    }

    #[test]
    fn explanations_are_words() {
        let m = Model::train(&data(60, 7, true), &fast(FamilyKind::Gbdt, 1));
        let p = m.predict(&request(vm())).unwrap();
        let pre = &p.algorithms[0];
        assert!(!pre.explanation.is_empty());
        assert!(
            pre.explanation.iter().any(|e| e.contains("total time")),
            "{:?}",
            pre.explanation
        );
    }

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
}
