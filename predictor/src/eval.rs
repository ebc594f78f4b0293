//! `migsight eval`: k-fold cross-validation per model × algorithm × metric,
//! and recommendation quality on paired groups.
//!
//! Folds are assigned to groups (rows sharing `group_id`; a row without one
//! is its own group) by a seeded shuffle dealt round-robin, so all rows of a
//! group are predicted by models that never saw any of them. Each fold's
//! model is trained exactly as `migsight train` trains (inner cross-fitting
//! for the conformal intervals included), so coverage is measured honestly.

use crate::data::{Data, Row};
use crate::decision::{self, Outcome};
use crate::family::FamilyKind;
use crate::inputs;
use crate::model::{assign_folds, parallel_map, train_algorithm, MetricPrediction, TrainOptions};
use crate::recommend;
use crate::score::{self, Stats};
use migsight_proto::wire::{FallbackRule, Objective, Sla};
use migsight_proto::{Algorithm, Metric};
use serde::Serialize;
use std::fmt::Write as _;

/// The exact CSV header of `migsight eval --format csv`.
pub const CSV_HEADER: &str = "model,algorithm,metric,n,gMRE,MRE,MAE,p90_abs,coverage";

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub models: Vec<FamilyKind>,
    pub folds: usize,
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
pub struct ScoreRow {
    pub model: String,
    pub algorithm: Algorithm,
    pub metric: Metric,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecQuality {
    pub model: String,
    pub objective: Objective,
    /// Groups with ≥ 2 algorithms and at least one that truly met the SLA.
    pub groups: usize,
    /// Recommended algorithm was the true best.
    pub accuracy: f64,
    /// Mean regret ([`decision::regret`]: relative; CPU in percentage points
    /// of a core, MEM in MiB) of the recommended algorithm's true objective vs
    /// the best's, over groups where it met the SLA.
    pub mean_regret: f64,
    /// Fraction of groups where the recommended algorithm truly missed the SLA (or did not converge).
    pub sla_violations: f64,
    /// The single fixed algorithm with the highest accuracy, for comparison.
    pub best_fixed: Option<Algorithm>,
    pub best_fixed_accuracy: f64,
    /// Mean regret (same measure) of always choosing `best_fixed` (groups where
    /// it ran and met the SLA): a fixed choice that is rarely the best can
    /// still be close to it, so accuracy alone can flatter either side.
    pub best_fixed_regret: f64,
    /// Fraction of the groups where `best_fixed` ran but truly missed the
    /// SLA (or did not converge), to read its regret against.
    pub best_fixed_violations: f64,
    /// Groups whose pick was the fold's fallback default rather than the
    /// model's top prediction ([`crate::decision`]).
    pub fallback_groups: usize,
    /// The fallback's default (with a margin above 0) most of those folds learned.
    pub fallback_default: Option<String>,
    /// Paired groups left out: a converged row lacked a label the SLA or the
    /// objective needs.
    pub unjudged: usize,
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

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub rows: usize,
    pub folds: usize,
    pub scores: Vec<ScoreRow>,
    pub recommendation: Vec<RecQuality>,
    pub convergence: Vec<ConvergeQuality>,
    /// Interval coverage of TT/DT/TD split by the row's out-of-fold
    /// P(converges) (below [`crate::recommend::LIKELY`] or not), over all
    /// algorithms: a pooled 90 % can hide a stratum far below it.
    pub coverage_by_stratum: Vec<StratumCoverage>,
    /// Seconds spent training, per model family (all folds).
    pub train_seconds: Vec<(String, f64)>,
    /// Every row's out-of-fold prediction, per model family (for
    /// [`predictions_csv`]; not in the JSON report).
    #[serde(skip)]
    oof: Vec<(String, Vec<Option<Oof>>)>,
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

/// Out-of-fold prediction of one row.
#[derive(Debug, Clone, Copy)]
struct Oof {
    metrics: [MetricPrediction; 6],
    p_meets: f64,
    p_converge: f64,
    /// The training folds' convergence rate (Laplace-smoothed).
    p_constant: f64,
}

/// Fold of each row of `data`.
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

/// Writes the fold assignment with the raw and composed inputs and labels,
/// for `predictor/reference/reference.py`.
pub fn folds_csv(data: &Data, folds: &[usize]) -> String {
    let mut s = String::from("row,algorithm,fold,group,converged");
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
            "{i},{},{},{},{}",
            r.algorithm.name(),
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

/// Cross-validates every requested model family.
pub fn run(data: &Data, opts: &EvalOptions) -> EvalReport {
    let fold_of = folds(data, opts.folds, opts.seed);
    let k = opts.folds.max(2);
    let with_data = data.columns_with_data();
    let allowed: Vec<usize> = with_data
        .into_iter()
        .filter(|c| opts.allowed.contains(c))
        .collect();
    let mut scores = Vec::new();
    let mut recommendation = Vec::new();
    let mut convergence = Vec::new();
    let mut coverage_by_stratum = Vec::new();
    let mut train_seconds = Vec::new();
    let mut oof_by_model = Vec::new();
    for &family in &opts.models {
        let start = std::time::Instant::now();
        let mut topts = TrainOptions::new(family, opts.seed);
        topts.allowed = allowed.clone();
        topts.threads = 1;
        topts.gbdt = opts.gbdt.clone();
        let jobs: Vec<(usize, Algorithm)> = (0..k)
            .flat_map(|f| Algorithm::ALL.map(|a| (f, a)))
            .collect();
        let results = parallel_map(&jobs, opts.threads, |&(f, a)| {
            let train: Vec<&Row> = data
                .rows
                .iter()
                .enumerate()
                .filter(|(i, r)| r.algorithm == a && fold_of[*i] != f)
                .map(|(_, r)| r)
                .collect();
            let trained = train_algorithm(&topts, a, &train);
            let model = trained.model;
            let ok = train.iter().filter(|r| r.converged).count();
            let p_constant = (ok as f64 + 1.0) / (train.len() as f64 + 2.0);
            let mut out = Vec::new();
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
                let (metrics, p_converge): ([MetricPrediction; 6], f64) =
                    model.predict_metrics(&mut x);
                let mut p = p_converge;
                for (metric, limit, upper) in opts.sla.limits() {
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
        });
        train_seconds.push((family.name().to_string(), start.elapsed().as_secs_f64()));
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
        for a in Algorithm::ALL {
            for m in Metric::ALL {
                let mut pred = Vec::new();
                let mut truth = Vec::new();
                let mut iv = Vec::new();
                for (i, r) in data.rows.iter().enumerate() {
                    if r.algorithm != a || !r.converged {
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
                scores.push(ScoreRow {
                    model: family.name().to_string(),
                    algorithm: a,
                    metric: m,
                    stats: score::stats(m, &pred, &truth, Some(&iv)),
                });
            }
        }
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
                convergence.push(ConvergeQuality {
                    model: family.name().to_string(),
                    algorithm: a,
                    n,
                    not_converged: fails,
                    brier: b / n as f64,
                    brier_constant: b0 / n as f64,
                });
            }
        }
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
                    coverage_by_stratum.push(StratumCoverage {
                        model: family.name().to_string(),
                        metric: m,
                        borderline,
                        n,
                        coverage: hit as f64 / n as f64,
                    });
                }
            }
        }
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
            if let Some(q) = rec_quality(data, &oof, &rules, family.name(), &opts.sla, objective) {
                recommendation.push(q);
            }
        }
        oof_by_model.push((family.name().to_string(), oof));
    }
    EvalReport {
        rows: data.rows.len(),
        folds: k,
        scores,
        recommendation,
        convergence,
        coverage_by_stratum,
        train_seconds,
        oof: oof_by_model,
    }
}

/// Every row's out-of-fold predictions, one line per model × row × metric:
/// `model,row,algorithm,group,converged,metric,truth,pred,lo,hi,p_converge`
/// (`row` counts data rows from 0 in file order; `truth` is empty where the
/// row has no label). For looking at errors row by row.
pub fn predictions_csv(data: &Data, report: &EvalReport) -> String {
    let mut s =
        String::from("model,row,algorithm,group,converged,metric,truth,pred,lo,hi,p_converge\n");
    for (model, oof) in &report.oof {
        for (i, (r, o)) in data.rows.iter().zip(oof).enumerate() {
            let Some(o) = o else { continue };
            for m in Metric::ALL {
                let p = o.metrics[m.index()];
                let _ = writeln!(
                    s,
                    "{model},{i},{},{},{},{},{},{},{},{},{}",
                    r.algorithm.name(),
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

fn truly_meets(r: &Row, sla: &Sla) -> bool {
    r.converged
        && sla
            .limits()
            .into_iter()
            .all(|(m, v, upper)| match r.labels[m.index()] {
                Some(t) => {
                    if upper {
                        t <= v
                    } else {
                        t >= v
                    }
                }
                None => false,
            })
}

/// `rules[i]`: the fallback rule of the fold row `i` was held out in.
fn rec_quality(
    data: &Data,
    oof: &[Option<Oof>],
    rules: &[Option<&FallbackRule>],
    model: &str,
    sla: &Sla,
    objective: Objective,
) -> Option<RecQuality> {
    let (metric, lower_better) = objective.metric();
    let mut by_group: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, r) in data.rows.iter().enumerate() {
        if r.has_group {
            by_group.entry(r.group.as_str()).or_default().push(i);
        }
    }
    let (mut groups, mut correct, mut violations) = (0usize, 0usize, 0usize);
    let mut regrets = Vec::new();
    const N: usize = Algorithm::ALL.len();
    let mut fixed_hits = [0usize; N];
    let mut fixed_seen = [0usize; N];
    let mut fixed_regrets: [Vec<f64>; N] = Default::default();
    let mut fixed_misses = [0usize; N];
    let mut fallbacks = 0usize;
    let mut unjudged = 0usize;
    let mut defaults: std::collections::BTreeMap<&str, usize> = Default::default();
    for rows in by_group.values() {
        let rows: Vec<usize> = rows.iter().cloned().filter(|&i| oof[i].is_some()).collect();
        if rows.len() < 2 {
            continue;
        }
        let obj = |i: usize| data.rows[i].labels[metric.index()];
        let needed = || sla.limits().into_iter().map(|(m, _, _)| m).chain([metric]);
        if !rows
            .iter()
            .all(|&i| decision::judgeable(data.rows[i].converged, &data.rows[i].labels, needed()))
        {
            unjudged += 1;
            continue;
        }
        let values: Vec<Option<f64>> = rows
            .iter()
            .map(|&i| obj(i).filter(|_| truly_meets(&data.rows[i], sla)))
            .collect();
        let feasible: Vec<usize> = (0..rows.len())
            .filter(|&j| values[j].is_some())
            .map(|j| rows[j])
            .collect();
        let Some(best) = decision::best_index(&values, lower_better).map(|j| rows[j]) else {
            continue;
        };
        groups += 1;
        let cands: Vec<recommend::Candidate> = rows
            .iter()
            .map(|&i| {
                let o = oof[i].unwrap();
                recommend::Candidate {
                    point_meets: recommend::point_meets(sla, |m| o.metrics[m.index()].value),
                    p: o.p_meets,
                    value: o.metrics[metric.index()].value,
                }
            })
            .collect();
        let rule = rules.get(rows[0]).copied().flatten();
        let default = rule.and_then(|d| {
            rows.iter()
                .position(|&i| data.rows[i].algorithm == d.default)
        });
        let (ranked, fell_back) = decision::prefer_default(
            &recommend::order(&cands, lower_better),
            &cands,
            default,
            rule.map_or(0.0, |d| d.margin),
            lower_better,
        );
        fallbacks += fell_back as usize;
        if let Some(d) = rule.filter(|d| d.margin > 0.0) {
            *defaults.entry(d.default.name()).or_insert(0usize) += 1;
        }
        let pick = rows[ranked[0]];
        let regret =
            |i: usize| decision::regret(metric, obj(i).unwrap_or(0.0), obj(best).unwrap_or(0.0));
        let best_alg = data.rows[best].algorithm;
        if data.rows[pick].algorithm == best_alg {
            correct += 1;
        }
        if feasible.contains(&pick) {
            regrets.push(regret(pick));
        } else {
            violations += 1;
        }
        for &i in &rows {
            let a = data.rows[i].algorithm.index();
            fixed_seen[a] += 1;
            if data.rows[i].algorithm == best_alg {
                fixed_hits[a] += 1;
            }
            if feasible.contains(&i) {
                fixed_regrets[a].push(regret(i));
            } else {
                fixed_misses[a] += 1;
            }
        }
    }
    if groups == 0 {
        return None;
    }
    let (best_fixed, best_fixed_accuracy) = Algorithm::ALL
        .iter()
        .filter(|a| fixed_seen[a.index()] > 0)
        .map(|a| (*a, fixed_hits[a.index()] as f64 / groups as f64))
        .fold((None, 0.0), |(ba, bv), (a, v)| {
            if v > bv || ba.is_none() {
                (Some(a), v)
            } else {
                (ba, bv)
            }
        });
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    Some(RecQuality {
        model: model.to_string(),
        objective,
        groups,
        accuracy: correct as f64 / groups as f64,
        mean_regret: mean(&regrets),
        sla_violations: violations as f64 / groups as f64,
        best_fixed,
        best_fixed_accuracy,
        best_fixed_regret: best_fixed.map_or(f64::NAN, |a| mean(&fixed_regrets[a.index()])),
        best_fixed_violations: best_fixed.map_or(f64::NAN, |a| {
            fixed_misses[a.index()] as f64 / fixed_seen[a.index()].max(1) as f64
        }),
        fallback_groups: fallbacks,
        unjudged,
        fallback_default: defaults
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(a, _)| a.to_string()),
    })
}

fn f(v: f64, prec: usize) -> String {
    if v.is_finite() {
        format!("{v:.prec$}")
    } else {
        String::new()
    }
}

/// The scores as CSV with [`CSV_HEADER`].
pub fn to_csv(report: &EvalReport) -> String {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for r in &report.scores {
        let st = &r.stats;
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{}",
            r.model,
            r.algorithm.name(),
            r.metric.name(),
            st.n,
            f(st.gmre, 4),
            f(st.mre, 4),
            f(st.mae, 3),
            f(st.p90_abs, 3),
            f(st.coverage, 4)
        );
    }
    s
}

/// Human-readable table of scores and recommendation quality.
pub fn to_table(report: &EvalReport, sla: &Sla) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} rows, {}-fold cross-validation (folds by group_id)\n",
        report.rows, report.folds
    );
    let _ = writeln!(
        s,
        "{:<9} {:<13} {:<5} {:>5} {:>8} {:>8} {:>14} {:>14} {:>9}",
        "model", "algorithm", "metric", "n", "gMRE", "MRE", "MAE", "p90_abs", "coverage"
    );
    for r in &report.scores {
        let st = &r.stats;
        let _ = writeln!(
            s,
            "{:<9} {:<13} {:<5} {:>5} {:>8} {:>8} {:>14} {:>14} {:>9}",
            r.model,
            r.algorithm.name(),
            r.metric.name(),
            st.n,
            f(st.gmre, 3),
            f(st.mre, 3),
            f(st.mae, 1),
            f(st.p90_abs, 1),
            f(st.coverage, 3)
        );
    }
    s.push_str(&converge_table(report));
    s.push_str(&rec_table(report, sla));
    s
}

/// The P(converges) part alone.
pub fn converge_table(report: &EvalReport) -> String {
    let mut s = String::from("\nP(converges), out of fold (Brier score; lower is better)\n");
    let _ = writeln!(
        s,
        "{:<9} {:<13} {:>5} {:>8} {:>8} {:>14}",
        "model", "algorithm", "n", "failed", "brier", "constant rate"
    );
    for c in &report.convergence {
        let _ = writeln!(
            s,
            "{:<9} {:<13} {:>5} {:>8} {:>8.4} {:>14.4}",
            c.model,
            c.algorithm.name(),
            c.n,
            c.not_converged,
            c.brier,
            c.brier_constant
        );
    }
    if !report.coverage_by_stratum.is_empty() {
        let _ = writeln!(
            s,
            "\ninterval coverage by out-of-fold P(converges), all algorithms"
        );
        let _ = writeln!(
            s,
            "{:<9} {:<6} {:>16} {:>16}",
            "model", "metric", "P >= 0.8 (n)", "P < 0.8 (n)"
        );
        let mut keys: Vec<(&str, Metric)> = Vec::new();
        for c in &report.coverage_by_stratum {
            if !keys.contains(&(c.model.as_str(), c.metric)) {
                keys.push((c.model.as_str(), c.metric));
            }
        }
        for (model, metric) in keys {
            let cell = |b: bool| {
                report
                    .coverage_by_stratum
                    .iter()
                    .find(|c| c.model == model && c.metric == metric && c.borderline == b)
                    .map_or("-".to_string(), |c| format!("{:.3} ({})", c.coverage, c.n))
            };
            let _ = writeln!(
                s,
                "{:<9} {:<6} {:>16} {:>16}",
                model,
                metric.name(),
                cell(false),
                cell(true)
            );
        }
    }
    s
}

/// The recommendation-quality part alone.
pub fn rec_table(report: &EvalReport, sla: &Sla) -> String {
    let mut s = String::new();
    if report.recommendation.is_empty() {
        let _ = writeln!(s, "\nrecommendation quality: no paired groups (rows sharing group_id) with a feasible algorithm");
        return s;
    }
    let limits: Vec<String> = sla
        .limits()
        .iter()
        .map(|(m, v, up)| format!("{} {} {}", m.name(), if *up { "<=" } else { ">=" }, v))
        .collect();
    let _ = writeln!(
        s,
        "\nrecommendation quality on paired groups (SLA: {}; left out: groups with a converged row lacking a label the SLA or objective needs; regret relative, for cpu in points of a core)",
        if limits.is_empty() {
            "none".to_string()
        } else {
            limits.join(", ")
        }
    );
    let _ = writeln!(
        s,
        "{:<9} {:<12} {:>6} {:>8} {:>9} {:>12} {:>11} {:>42}  fallback picks",
        "model",
        "objective",
        "groups",
        "left out",
        "accuracy",
        "mean_regret",
        "violations",
        "best fixed (accuracy, regret, violations)",
    );
    for q in &report.recommendation {
        let _ = writeln!(
            s,
            "{:<9} {:<12} {:>6} {:>8} {:>9} {:>12} {:>11} {:>42}  {}",
            q.model,
            q.objective.name(),
            q.groups,
            q.unjudged,
            f(q.accuracy, 3),
            f(q.mean_regret, 3),
            f(q.sla_violations, 3),
            q.best_fixed
                .map(|a| format!(
                    "{} ({:.3}, {}, {})",
                    a.name(),
                    q.best_fixed_accuracy,
                    f(q.best_fixed_regret, 3),
                    f(q.best_fixed_violations, 3)
                ))
                .unwrap_or_default(),
            match &q.fallback_default {
                Some(a) => format!("{} ({a})", q.fallback_groups),
                None => q.fallback_groups.to_string(),
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_header_is_exact_and_folds_keep_groups_together() {
        let data = Data::from_dataset(&crate::testdata::simulate(20, 1, true), "fixture");
        let opts = EvalOptions {
            models: vec![FamilyKind::Linear, FamilyKind::Analytic],
            folds: 3,
            seed: 1,
            allowed: inputs::default_allowed(),
            sla: Sla {
                max_downtime_ms: Some(500.0),
                ..Sla::default()
            },
            objectives: vec![Objective::Time],
            threads: 2,
            gbdt: crate::gbdt::GbdtParams::regression(),
        };
        let report = run(&data, &opts);
        let csv = to_csv(&report);
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("model,algorithm,metric,n,gMRE,MRE,MAE,p90_abs,coverage")
        );
        let first: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(first.len(), 9);
        assert_eq!(first[0], "linear");
        assert_eq!(first[1], "precopy");
        assert_eq!(first[2], "TT");
        let algs: std::collections::HashSet<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap())
            .collect();
        for a in ["precopy", "auto-converge", "xbzrle", "compress", "postcopy"] {
            assert!(algs.contains(a), "{a}");
        }
        assert!(!report.recommendation.is_empty());
        // Coverage per P(converges) stratum: confident rows exist for every
        // model and metric, and the counts add up to the pooled cells'.
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
                    .filter(|r| r.model == model && r.metric == m)
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
        assert!(folds_csv(&data, &f).starts_with("row,algorithm,fold,group,converged,VM_size"));
        // Row by row: every row of every model, six metrics each, and the
        // TT prediction agrees with the scores' input.
        let p = predictions_csv(&data, &report);
        let mut lines = p.lines();
        assert_eq!(
            lines.next(),
            Some("model,row,algorithm,group,converged,metric,truth,pred,lo,hi,p_converge")
        );
        assert_eq!(lines.count(), 2 * data.rows.len() * 6);
        let tt0: Vec<&str> = p.lines().nth(1).unwrap().split(',').collect();
        assert_eq!((tt0[0], tt0[1], tt0[5]), ("linear", "0", "TT"));
        let (lo, v, hi): (f64, f64, f64) = (
            tt0[8].parse().unwrap(),
            tt0[7].parse().unwrap(),
            tt0[9].parse().unwrap(),
        );
        assert!(lo <= v && v <= hi);
    }

    #[test]
    fn recommendation_quality_counts_hits_regret_and_the_fixed_choice() {
        // Two groups × {precopy, compress}; objective time, no SLA.
        // Group a: truly precopy 10 s, compress 8 s; predicted 9 / 12 → picks
        //   precopy (wrong, regret 0.25).
        // Group b: truly precopy 10 s, compress 5 s; predicted 9 / 6 → picks
        //   compress (right). Always-compress: right twice, regret 0.
        let row = |g: &str, a: Algorithm, tt: f64| Row {
            algorithm: a,
            features: migsight_proto::FeatureVector::new(),
            downtime_limit_ms: 300.0,
            qemu: None,
            x: vec![f64::NAN; inputs::INPUT_COUNT],
            labels: [
                Some(tt),
                Some(5.0),
                Some(1e9),
                Some(1.0),
                Some(0.0),
                Some(0.0),
            ],
            converged: true,
            group: g.into(),
            has_group: true,
        };
        let data = Data {
            rows: vec![
                row("a", Algorithm::Precopy, 10.0),
                row("a", Algorithm::Compress, 8.0),
                row("b", Algorithm::Precopy, 10.0),
                row("b", Algorithm::Compress, 5.0),
            ],
            ..Data::default()
        };
        let oof = |tt: f64| {
            let p = MetricPrediction {
                value: tt,
                lo: tt,
                hi: tt,
                z: tt.ln(),
            };
            Some(Oof {
                metrics: [p; 6],
                p_meets: 1.0,
                p_converge: 1.0,
                p_constant: 1.0,
            })
        };
        let preds = vec![oof(9.0), oof(12.0), oof(9.0), oof(6.0)];
        let no_rule = vec![None; 4];
        let judge = |data: &Data, rules: &[Option<&FallbackRule>]| {
            rec_quality(data, &preds, rules, "m", &Sla::default(), Objective::Time).unwrap()
        };
        let q = judge(&data, &no_rule);
        assert_eq!(q.groups, 2);
        assert_eq!(q.accuracy, 0.5);
        assert!((q.mean_regret - 0.125).abs() < 1e-12, "{}", q.mean_regret);
        assert_eq!(q.sla_violations, 0.0);
        assert_eq!(q.best_fixed, Some(Algorithm::Compress));
        assert_eq!(q.best_fixed_accuracy, 1.0);
        assert_eq!(q.best_fixed_regret, 0.0);
        assert_eq!(q.best_fixed_violations, 0.0);
        assert_eq!(q.fallback_groups, 0);
        // A fold rule "compress unless another is predicted > 50 % faster"
        // turns the wrong pick (precopy, predicted 9 vs 12) into the right one.
        let rule = FallbackRule {
            objective: Objective::Time,
            default: Algorithm::Compress,
            margin: 0.5,
            groups: 40,
            loss_model: 0.1,
            loss_rule: 0.05,
        };
        let rules = vec![Some(&rule); 4];
        let q = judge(&data, &rules);
        assert_eq!(q.accuracy, 1.0);
        assert_eq!(q.mean_regret, 0.0);
        assert_eq!(q.fallback_groups, 1);
        assert_eq!(q.fallback_default.as_deref(), Some("compress"));
        // A converged row without the objective's label: its group is left
        // out, not judged with that row as a miss.
        let mut data = data;
        data.rows[1].labels[Metric::TT.index()] = None;
        let q = judge(&data, &no_rule);
        assert_eq!((q.groups, q.unjudged), (1, 1));
        assert_eq!(q.accuracy, 1.0);
    }
}
