//! The convergence classifier of one algorithm: P(the migration converges
//! within the cap), fitted on scale-free inputs only, and its out-of-fold
//! view for the recommendation's fallback rule.

use super::folds::assign_folds;
use super::metric::ConvergeModel;
use super::train::TrainOptions;
use crate::data::Row;
use crate::gbdt::{Gbdt, GbdtParams};
use crate::inputs::{self, INPUT_COUNT};
use migsight_proto::rng::Rng;
use migsight_proto::{Algorithm, Feature};

/// Fewest rows of the minority class to fit a convergence classifier.
pub const MIN_CLASS_ROWS: usize = 3;

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

/// Each row's P(converges) from a classifier that did not see the row's
/// group (cross-fitted over the conformal folds).
pub(super) fn converge_out_of_fold(
    opts: &TrainOptions,
    algorithm: Algorithm,
    rows: &[&Row],
) -> Vec<f64> {
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
