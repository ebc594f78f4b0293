//! `migsight eval`: out-of-sample predictions for every row, then scores per
//! model × QEMU release × algorithm × metric, P(converges) quality and
//! recommendation quality on paired groups.
//!
//! Two ways to hold rows out ([`Split`]): k-fold cross-validation, folds
//! dealt to groups (rows sharing `group_id`; a row without one is its own
//! group) by a seeded shuffle, so all rows of a group are predicted by
//! models that never saw any of them; or a [`Holdout`] region of the input
//! space (train on the rest, score the region: extrapolation). Each model is
//! trained exactly as `migsight train` trains (inner cross-fitting for the
//! conformal intervals included), so coverage is measured honestly.
//!
//! `driver` (here) produces the out-of-sample predictions; [`scores`] and
//! [`quality`] judge them; [`format`] prints them (one column spec for the
//! CSV and the table).

mod format;
mod holdout;
mod quality;
mod scores;

pub use format::{converge_table, rec_table, to_csv, to_table, CSV_HEADER};
pub use holdout::Holdout;
pub use quality::RecQuality;
pub use scores::{ConvergeQuality, ScoreRow, StratumCoverage};

use crate::data::{Data, Row};
use crate::decision::{self, Outcome};
use crate::family::FamilyKind;
use crate::inputs;
use crate::model::{assign_folds, parallel_map, train_algorithm, MetricPrediction, TrainOptions};
use migsight_proto::wire::{FallbackRule, Objective, Sla};
use migsight_proto::{Algorithm, Metric};
use serde::Serialize;
use std::fmt::Write as _;

/// How rows are held out.
#[derive(Debug, Clone)]
pub enum Split {
    /// k-fold cross-validation by group.
    Folds(usize),
    /// Train outside the region, score inside it.
    Holdout(Holdout),
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub models: Vec<FamilyKind>,
    pub split: Split,
    pub seed: u64,
    pub allowed: Vec<usize>,
    pub sla: Sla,
    /// Objectives to judge recommendations for.
    pub objectives: Vec<Objective>,
    pub threads: usize,
    /// Tree settings of the gbdt family.
    pub gbdt: crate::gbdt::GbdtParams,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Rows scored (all rows with k-fold; the held-out ones with a holdout).
    pub rows: usize,
    /// `10-fold` or the holdout expression with the rows trained on.
    pub split: String,
    pub scores: Vec<ScoreRow>,
    pub recommendation: Vec<RecQuality>,
    pub convergence: Vec<ConvergeQuality>,
    /// Interval coverage of TT/DT/TD split by the row's out-of-fold
    /// P(converges) (below [`crate::recommend::LIKELY`] or not), over all
    /// algorithms: a pooled 90 % can hide a stratum far below it.
    pub coverage_by_stratum: Vec<StratumCoverage>,
    /// Seconds spent training, per model family (all folds).
    pub train_seconds: Vec<(String, f64)>,
    /// Every row's out-of-sample prediction, per model family (for
    /// [`predictions_csv`]; not in the JSON report).
    #[serde(skip)]
    oof: Vec<(String, Vec<Option<Oof>>)>,
}

/// Out-of-sample prediction of one row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Oof {
    pub metrics: [MetricPrediction; 6],
    pub p_meets: f64,
    pub p_converge: f64,
    /// The training folds' convergence rate (Laplace-smoothed).
    pub p_constant: f64,
}

/// The QEMU release of a row, `major.minor` (`unknown` when not recorded).
pub fn release(r: &Row) -> String {
    r.qemu
        .map(|(a, b)| format!("{a}.{b}"))
        .unwrap_or_else(|| "unknown".into())
}

/// The releases to score separately: every one present, when there are
/// several (scores for `all` are always given).
pub(crate) fn releases(data: &Data) -> Vec<String> {
    let mut v: Vec<String> = data.rows.iter().map(release).collect();
    v.sort();
    v.dedup();
    if v.len() > 1 {
        v
    } else {
        Vec::new()
    }
}

/// Fold of each row of `data` (k-fold).
pub fn folds(data: &Data, k: usize, seed: u64) -> Vec<usize> {
    let groups: Vec<&str> = data.rows.iter().map(|r| r.group.as_str()).collect();
    assign_folds(&groups, k, seed)
}

/// A CSV cell: the number, or empty when absent or not finite.
fn cell(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map(|v| format!("{v}"))
        .unwrap_or_default()
}

/// A group id as a quoted CSV cell (inner quotes become `'`).
fn quoted(group: &str) -> String {
    format!("\"{}\"", group.replace('"', "'"))
}

/// Writes the fold assignment with the QEMU release, the raw and composed
/// inputs and labels, for `predictor/reference/reference.py`.
pub fn folds_csv(data: &Data, folds: &[usize]) -> String {
    let mut s = String::from("row,algorithm,qemu,fold,group,converged");
    for i in 0..inputs::DOWNTIME_LIMIT {
        s.push(',');
        s.push_str(inputs::name(i));
    }
    for m in Metric::ALL {
        s.push(',');
        s.push_str(m.name());
    }
    s.push('\n');
    for (i, r) in data.rows.iter().enumerate() {
        let _ = write!(
            s,
            "{i},{},{},{},{},{}",
            r.algorithm.name(),
            release(r),
            folds[i],
            quoted(&r.group),
            r.converged as u8
        );
        for v in &r.x[..inputs::DOWNTIME_LIMIT] {
            s.push(',');
            s.push_str(&cell(Some(*v)));
        }
        for l in r.labels {
            s.push(',');
            s.push_str(&cell(l));
        }
        s.push('\n');
    }
    s
}

/// The fold of every row and the folds to predict.
fn assignment(data: &Data, opts: &EvalOptions) -> (Vec<usize>, Vec<usize>, String) {
    match &opts.split {
        Split::Folds(k) => {
            let k = (*k).max(2);
            (
                folds(data, k, opts.seed),
                (0..k).collect(),
                format!("{k}-fold cross-validation (folds by group_id)"),
            )
        }
        Split::Holdout(h) => {
            let f = h.folds(data);
            let held = f.iter().filter(|&&x| x == 1).count();
            (
                f,
                vec![1],
                format!(
                    "holdout {}: trained on {} rows, scored on the {held} held out",
                    h.text,
                    data.rows.len() - held
                ),
            )
        }
    }
}

/// Predicts every row out of sample with every requested model family and
/// judges the predictions.
pub fn run(data: &Data, opts: &EvalOptions) -> EvalReport {
    let (fold_of, test_folds, split) = assignment(data, opts);
    let k = fold_of.iter().max().map_or(1, |m| m + 1);
    let with_data = data.columns_with_data();
    let allowed: Vec<usize> = with_data
        .into_iter()
        .filter(|c| opts.allowed.contains(c))
        .collect();
    let mut report = EvalReport {
        rows: fold_of.iter().filter(|f| test_folds.contains(f)).count(),
        split,
        scores: Vec::new(),
        recommendation: Vec::new(),
        convergence: Vec::new(),
        coverage_by_stratum: Vec::new(),
        train_seconds: Vec::new(),
        oof: Vec::new(),
    };
    for &family in &opts.models {
        let start = std::time::Instant::now();
        let mut topts = TrainOptions::new(family, opts.seed);
        topts.allowed = allowed.clone();
        topts.threads = 1;
        topts.gbdt = opts.gbdt.clone();
        let jobs: Vec<(usize, Algorithm)> = test_folds
            .iter()
            .flat_map(|&f| Algorithm::ALL.map(|a| (f, a)))
            .collect();
        let results = parallel_map(&jobs, opts.threads, |&(f, a)| {
            predict_fold(data, &fold_of, f, a, &topts, &allowed, &opts.sla)
        });
        report
            .train_seconds
            .push((family.name().to_string(), start.elapsed().as_secs_f64()));
        let mut oof: Vec<Option<Oof>> = vec![None; data.rows.len()];
        // Each fold's recommendation fallback, learned from its training rows.
        let mut outcomes: Vec<Vec<Outcome>> = vec![Vec::new(); k];
        for (f, out, o) in results {
            for (i, p) in out {
                oof[i] = Some(p);
            }
            outcomes[f].extend(o);
        }
        let decisions: Vec<Vec<FallbackRule>> =
            outcomes.iter().map(|o| decision::learn(o)).collect();
        let name = family.name();
        report.scores.extend(scores::scores(data, &oof, name));
        report
            .convergence
            .extend(scores::convergence(data, &oof, name));
        report
            .coverage_by_stratum
            .extend(scores::coverage_by_stratum(data, &oof, name));
        for &objective in &opts.objectives {
            let rules: Vec<Option<&FallbackRule>> = fold_of
                .iter()
                .map(|&f| {
                    decision::for_request(
                        decisions[f].iter().find(|d| d.objective == objective),
                        &opts.sla,
                    )
                })
                .collect();
            report.recommendation.extend(quality::by_release(
                data, &oof, &rules, name, &opts.sla, objective,
            ));
        }
        report.oof.push((name.to_string(), oof));
    }
    report
}

/// Trains `a`'s model on the rows outside fold `f` and predicts those in it.
#[allow(clippy::type_complexity)]
fn predict_fold(
    data: &Data,
    fold_of: &[usize],
    f: usize,
    a: Algorithm,
    topts: &TrainOptions,
    allowed: &[usize],
    sla: &Sla,
) -> (usize, Vec<(usize, Oof)>, Vec<Outcome>) {
    let train: Vec<&Row> = data
        .rows
        .iter()
        .enumerate()
        .filter(|(i, r)| r.algorithm == a && fold_of[*i] != f)
        .map(|(_, r)| r)
        .collect();
    let trained = train_algorithm(topts, a, &train);
    let model = trained.model;
    let ok = train.iter().filter(|r| r.converged).count();
    let p_constant = (ok as f64 + 1.0) / (train.len() as f64 + 2.0);
    let mut out = Vec::new();
    // An algorithm with no training rows has no prediction to score.
    if train.is_empty() {
        return (f, out, trained.outcomes);
    }
    for (i, r) in data.rows.iter().enumerate() {
        if r.algorithm != a || fold_of[i] != f {
            continue;
        }
        let mut x = r.x.clone();
        for (c, v) in x.iter_mut().enumerate() {
            if !allowed.contains(&c) && !inputs::BASELINES.contains(&c) {
                *v = f64::NAN;
            }
        }
        let (metrics, p_converge) = model.predict_metrics(&mut x);
        let mut p = p_converge;
        for (metric, limit, upper) in sla.limits() {
            p *= model.metrics[metric.index()].p_within(
                metrics[metric.index()].z,
                limit,
                upper,
                crate::recommend::near_edge(p_converge),
            );
        }
        out.push((
            i,
            Oof {
                metrics,
                p_meets: p,
                p_converge,
                p_constant,
            },
        ));
    }
    (f, out, trained.outcomes)
}

/// Every row's out-of-sample predictions, one line per model × row × metric:
/// `model,row,algorithm,qemu,group,converged,metric,truth,pred,lo,hi,p_converge`
/// (`row` counts data rows from 0 in file order; `truth` is empty where the
/// row has no label). For looking at errors row by row.
pub fn predictions_csv(data: &Data, report: &EvalReport) -> String {
    let mut s = String::from(
        "model,row,algorithm,qemu,group,converged,metric,truth,pred,lo,hi,p_converge\n",
    );
    for (model, oof) in &report.oof {
        for (i, (r, o)) in data.rows.iter().zip(oof).enumerate() {
            let Some(o) = o else { continue };
            for m in Metric::ALL {
                let p = o.metrics[m.index()];
                let _ = writeln!(
                    s,
                    "{model},{i},{},{},{},{},{},{},{},{},{},{}",
                    r.algorithm.name(),
                    release(r),
                    quoted(&r.group),
                    r.converged as u8,
                    m.name(),
                    cell(r.labels[m.index()]),
                    cell(Some(p.value)),
                    cell(Some(p.lo)),
                    cell(Some(p.hi)),
                    cell(Some(o.p_converge)),
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(split: Split) -> EvalOptions {
        EvalOptions {
            models: vec![FamilyKind::Linear, FamilyKind::Analytic],
            split,
            seed: 1,
            allowed: inputs::default_allowed(),
            sla: Sla {
                max_downtime_ms: Some(500.0),
                ..Sla::default()
            },
            objectives: vec![Objective::Time],
            threads: 2,
            gbdt: crate::gbdt::GbdtParams::regression(),
        }
    }

    #[test]
    fn csv_header_is_exact_and_folds_keep_groups_together() {
        let data = Data::from_dataset(&crate::testdata::simulate(20, 1, true), "fixture");
        let report = run(&data, &opts(Split::Folds(3)));
        let csv = to_csv(&report);
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some(CSV_HEADER));
        assert_eq!(
            CSV_HEADER,
            "model,qemu,algorithm,metric,n,gMRE,MRE,MAE,p90_abs,coverage"
        );
        let first: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(first.len(), 10);
        assert_eq!(
            (first[0], first[1], first[2], first[3]),
            ("linear", "all", "precopy", "TT")
        );
        let algs: std::collections::HashSet<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap())
            .collect();
        for a in ["precopy", "auto-converge", "xbzrle", "compress", "postcopy"] {
            assert!(algs.contains(a), "{a}");
        }
        assert!(!report.recommendation.is_empty());
        // Coverage per P(converges) stratum: the counts add up to the pooled cells'.
        for model in ["linear", "analytic"] {
            for m in [Metric::TT, Metric::DT, Metric::TD] {
                let n: usize = report
                    .coverage_by_stratum
                    .iter()
                    .filter(|c| c.model == model && c.metric == m)
                    .inspect(|c| assert!((0.0..=1.0).contains(&c.coverage)))
                    .map(|c| c.n)
                    .sum();
                let pooled: u64 = report
                    .scores
                    .iter()
                    .filter(|r| r.model == model && r.metric == m && r.qemu == "all")
                    .map(|r| r.stats.n)
                    .sum();
                assert_eq!(n as u64, pooled, "{model} {m:?}");
            }
        }
        assert!(converge_table(&report).contains("P >= 0.8 (n)"));
        let f = folds(&data, 3, 1);
        for (i, r) in data.rows.iter().enumerate() {
            for (j, s) in data.rows.iter().enumerate() {
                if r.group == s.group {
                    assert_eq!(f[i], f[j]);
                }
            }
        }
        assert!(folds_csv(&data, &f).starts_with("row,algorithm,qemu,fold,group,converged,VM_size"));
        // Row by row: every row of every model, six metrics each, and the
        // TT prediction is inside its interval.
        let p = predictions_csv(&data, &report);
        let mut lines = p.lines();
        assert_eq!(
            lines.next(),
            Some("model,row,algorithm,qemu,group,converged,metric,truth,pred,lo,hi,p_converge")
        );
        assert_eq!(lines.count(), 2 * data.rows.len() * 6);
        let tt0: Vec<&str> = p.lines().nth(1).unwrap().split(',').collect();
        assert_eq!((tt0[0], tt0[1], tt0[6]), ("linear", "0", "TT"));
        let (lo, v, hi): (f64, f64, f64) = (
            tt0[9].parse().unwrap(),
            tt0[8].parse().unwrap(),
            tt0[10].parse().unwrap(),
        );
        assert!(lo <= v && v <= hi);
        assert!(to_table(&report, &Sla::default()).contains("3-fold"));
    }

    #[test]
    fn a_holdout_scores_only_the_region_and_keeps_groups_whole() {
        let data = Data::from_dataset(&crate::testdata::simulate(30, 2, true), "fixture");
        let h = Holdout::parse("VM_size>=600").unwrap();
        let f = h.folds(&data);
        let held: Vec<usize> = (0..data.rows.len()).filter(|&i| f[i] == 1).collect();
        assert!(!held.is_empty() && held.len() < data.rows.len());
        for (i, r) in data.rows.iter().enumerate() {
            for (j, s) in data.rows.iter().enumerate() {
                if r.group == s.group {
                    assert_eq!(f[i], f[j]);
                }
            }
        }
        let report = run(&data, &opts(Split::Holdout(h)));
        assert_eq!(report.rows, held.len());
        assert!(
            report.split.starts_with("holdout VM_size>=600"),
            "{}",
            report.split
        );
        let scored: u64 = report
            .scores
            .iter()
            .filter(|r| r.model == "linear" && r.metric == Metric::TT && r.qemu == "all")
            .map(|r| r.stats.n)
            .sum();
        let converged_held = held.iter().filter(|&&i| data.rows[i].converged).count();
        assert_eq!(scored as usize, converged_held);
    }
}
