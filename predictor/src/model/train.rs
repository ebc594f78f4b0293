//! Training one algorithm: every metric's regressor with its cross-fitted
//! conformal residuals (and the choice of base and tree count that the same
//! cross-fitting makes), the convergence classifier, and the out-of-fold
//! view of the rows that the recommendation's fallback rules learn from.

use super::conformal::Residuals;
use super::converge::{converge_out_of_fold, train_converge};
use super::folds::assign_folds;
use super::metric::{AlgorithmModel, MetricModel, MetricStatus};
use crate::data::Row;
use crate::decision::Outcome;
use crate::domain::Domain;
use crate::family::{median_of, FamilyKind, FitInput, Regressor, Transform};
use crate::gbdt::{Base, GbdtParams};
use crate::inputs::{self};
use crate::score;
use migsight_proto::rng::Rng;
use migsight_proto::{Algorithm, Metric};

/// Fewest converged, labelled rows to fit a metric model with the chosen
/// family; below it, the calibrated analytic estimate (or the median).
pub const MIN_FIT_ROWS: usize = 10;
/// Fewest rows for that calibration (and its cross-fitted intervals); below
/// it, the median with an interval from the observed spread.
pub const MIN_CALIBRATION_ROWS: usize = 4;
/// Relative out-of-fold error within which fewer trees are preferred
/// (measured on lab data: 0.02 and 0.05 were worse than 0).
pub const STAGE_TOLERANCE: f64 = 0.0;
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
/// out-of-fold P(converges) was below [`crate::ranking::LIKELY`]: with at
/// least [`super::conformal::MIN_STRATUM_ROWS`] labelled rows on each side, their residuals
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
        return (placeholder(algorithm, metric), out_of_fold);
    }
    let z: Vec<f64> = ys.iter().map(|y| transform.forward(*y)).collect();
    let x: Vec<Vec<f64>> = labelled.iter().map(|(_, r, _)| r.x.clone()).collect();
    if n < MIN_CALIBRATION_ROWS {
        return (median_model(algorithm, metric, transform, &z), out_of_fold);
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
    let (residuals, borderline_residuals, coverage) =
        super::conformal::stratified(&resid, &is_borderline, &folds, k);
    let preds: Vec<f64> = oof.iter().map(|z| transform.inverse(*z)).collect();
    for ((k, _, _), p) in labelled.iter().zip(&preds) {
        out_of_fold[*k] = p.is_finite().then_some(*p);
    }
    let mut cv = score::stats(metric, &preds, &ys, None);
    cv.coverage = coverage;
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

/// The model of a metric no row labels: the analytic estimate for TT/DT/TD
/// (a round guess where its input is missing), else a neutral value, with a
/// wide interval and a note that says so.
fn placeholder(algorithm: Algorithm, metric: Metric) -> MetricModel {
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
    }
}

/// The model of a metric with fewer than [`MIN_CALIBRATION_ROWS`] labels:
/// their median, with an interval from their spread.
fn median_model(
    algorithm: Algorithm,
    metric: Metric,
    transform: Transform,
    z: &[f64],
) -> MetricModel {
    let n = z.len();
    let m = median_of(z);
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
    }
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
        .map(|p| crate::ranking::near_edge(*p))
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
                release: r.release(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conformal::MIN_STRATUM_ROWS;
    use crate::model::testutil::*;
    use crate::model::Model;
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
}
