//! Recommendation quality on paired groups: per objective (and QEMU
//! release), how often the recommended algorithm was the true best, its
//! regret, how often it missed the SLA, and the same for every fixed
//! choice — the baselines a recommender has to beat.

use super::{release, releases, Oof};
use crate::data::{Data, Row};
use crate::decision;
use crate::recommend;
use migsight_proto::wire::{FallbackRule, Objective, Sla};
use migsight_proto::{Algorithm, Metric};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct RecQuality {
    pub model: String,
    /// `all`, or a QEMU release when the data has several.
    pub qemu: String,
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
    /// The fixed algorithm with the lowest mean regret (over groups where it
    /// met the SLA), its regret and violations: the baseline a model's
    /// regret has to beat.
    pub least_regret_fixed: Option<Algorithm>,
    pub least_regret_fixed_regret: f64,
    pub least_regret_fixed_violations: f64,
    /// Groups whose pick was the fold's fallback default rather than the
    /// model's top prediction ([`crate::decision`]).
    pub fallback_groups: usize,
    /// The fallback's default (with a margin above 0) most of those folds learned.
    pub fallback_default: Option<String>,
    /// Paired groups left out: a converged row lacked a label the SLA or the
    /// objective needs.
    pub unjudged: usize,
    /// Mean loss over the groups ([`decision::loss`]: the regret, capped,
    /// on a common scale with a pick that missed the SLA, which counts 1):
    /// unlike the mean regret, it compares every choice on the same groups
    /// (a fixed algorithm's regret leaves out the groups where it failed,
    /// often the hardest).
    pub mean_loss: f64,
    /// The fixed algorithm with the least mean loss, and that loss.
    pub least_loss_fixed: Option<Algorithm>,
    pub least_loss_fixed_loss: f64,
    /// Groups whose best beat the runner-up by more than the objective's
    /// repeat noise ([`crate::score::repeat_noise`]; or whose runner-up missed
    /// the SLA): where a right pick can be told from a lucky one.
    pub clear_groups: usize,
    /// The recommendation was the true best in that share of them.
    pub clear_accuracy: f64,
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

/// Whether the best of a group's feasible `values` beats the runner-up by
/// more than the metric's repeat noise (a runner-up that is infeasible is
/// beaten).
fn clear_winner(metric: Metric, lower_better: bool, values: &[Option<f64>]) -> bool {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    v.sort_by(|a, b| {
        if lower_better {
            a.total_cmp(b)
        } else {
            b.total_cmp(a)
        }
    });
    let (Some(&best), Some(&next)) = (v.first(), v.get(1)) else {
        return !v.is_empty() && values.len() > 1;
    };
    let gap = (next - best).abs();
    match metric {
        Metric::CPU | Metric::MEM => gap > crate::score::repeat_noise(metric),
        _ => best != 0.0 && gap / best.abs() > crate::score::repeat_noise(metric),
    }
}

/// Recommendation quality pooled over releases (`all`) and, when the data
/// has several, per QEMU release (its groups only).
pub fn by_release(
    data: &Data,
    oof: &[Option<Oof>],
    rules: &[Option<&FallbackRule>],
    model: &str,
    sla: &Sla,
    objective: Objective,
) -> Vec<RecQuality> {
    std::iter::once("all".to_string())
        .chain(releases(data))
        .filter_map(|scope| rec_quality(data, oof, rules, model, sla, objective, &scope))
        .collect()
}

/// `rules[i]`: the fallback rule of the fold row `i` was held out in.
fn rec_quality(
    data: &Data,
    oof: &[Option<Oof>],
    rules: &[Option<&FallbackRule>],
    model: &str,
    sla: &Sla,
    objective: Objective,
    scope: &str,
) -> Option<RecQuality> {
    let (metric, lower_better) = objective.metric();
    let mut by_group: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, r) in data.rows.iter().enumerate() {
        if r.has_group && (scope == "all" || release(r) == scope) {
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
    let mut losses = Vec::new();
    let mut fixed_losses: [Vec<f64>; N] = Default::default();
    let (mut clear, mut clear_hits) = (0usize, 0usize);
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
            objective,
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
        if clear_winner(metric, lower_better, &values) {
            clear += 1;
            clear_hits += usize::from(data.rows[pick].algorithm == best_alg);
        }
        if feasible.contains(&pick) {
            regrets.push(regret(pick));
            losses.push(decision::loss(
                metric,
                obj(pick).unwrap_or(0.0),
                obj(best).unwrap_or(0.0),
            ));
        } else {
            violations += 1;
            losses.push(1.0);
        }
        for &i in &rows {
            let a = data.rows[i].algorithm.index();
            fixed_seen[a] += 1;
            if data.rows[i].algorithm == best_alg {
                fixed_hits[a] += 1;
            }
            if feasible.contains(&i) {
                fixed_regrets[a].push(regret(i));
                fixed_losses[a].push(decision::loss(
                    metric,
                    obj(i).unwrap_or(0.0),
                    obj(best).unwrap_or(0.0),
                ));
            } else {
                fixed_misses[a] += 1;
                fixed_losses[a].push(1.0);
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
    let violations_of =
        |a: Algorithm| fixed_misses[a.index()] as f64 / fixed_seen[a.index()].max(1) as f64;
    // A fixed algorithm is compared on the groups it ran in: those a QEMU
    // release offers ran in (nearly) all (incomplete groups aside).
    let least_loss_fixed = Algorithm::ALL
        .into_iter()
        .filter(|a| fixed_seen[a.index()] * 10 >= groups * 9)
        .min_by(|a, b| mean(&fixed_losses[a.index()]).total_cmp(&mean(&fixed_losses[b.index()])));
    let least_regret_fixed = Algorithm::ALL
        .into_iter()
        .filter(|a| !fixed_regrets[a.index()].is_empty())
        .min_by(|a, b| {
            mean(&fixed_regrets[a.index()])
                .total_cmp(&mean(&fixed_regrets[b.index()]))
                .then(violations_of(*a).total_cmp(&violations_of(*b)))
        });
    Some(RecQuality {
        model: model.to_string(),
        qemu: scope.to_string(),
        objective,
        groups,
        accuracy: correct as f64 / groups as f64,
        mean_regret: mean(&regrets),
        sla_violations: violations as f64 / groups as f64,
        best_fixed,
        best_fixed_accuracy,
        best_fixed_regret: best_fixed.map_or(f64::NAN, |a| mean(&fixed_regrets[a.index()])),
        best_fixed_violations: best_fixed.map_or(f64::NAN, violations_of),
        least_regret_fixed,
        least_regret_fixed_regret: least_regret_fixed
            .map_or(f64::NAN, |a| mean(&fixed_regrets[a.index()])),
        least_regret_fixed_violations: least_regret_fixed.map_or(f64::NAN, violations_of),
        fallback_groups: fallbacks,
        unjudged,
        mean_loss: mean(&losses),
        least_loss_fixed,
        least_loss_fixed_loss: least_loss_fixed
            .map_or(f64::NAN, |a| mean(&fixed_losses[a.index()])),
        clear_groups: clear,
        clear_accuracy: if clear > 0 {
            clear_hits as f64 / clear as f64
        } else {
            f64::NAN
        },
        fallback_default: defaults
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(a, _)| a.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Row;
    use crate::inputs;
    use crate::model::MetricPrediction;

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
            accel: None,
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
            line: 0,
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
            rec_quality(
                data,
                &preds,
                rules,
                "m",
                &Sla::default(),
                Objective::Time,
                "all",
            )
            .unwrap()
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
        assert_eq!(q.least_regret_fixed, Some(Algorithm::Compress));
        assert_eq!(q.least_regret_fixed_regret, 0.0);
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
