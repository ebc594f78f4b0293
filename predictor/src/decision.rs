//! The fallback rule of a recommendation: per objective, a default
//! algorithm, and how much better another algorithm must be predicted to be
//! chosen over it.
//!
//! Why: choosing the best of five noisy predictions favours whichever one
//! erred the right way (the winner's curse). Where the model cannot tell the
//! algorithms apart, the pick does worse than a constant choice: on 821 lab
//! rows (`migsight eval`, 10 folds, seed 42, no SLA), objective performance
//! — whose labels repeat within ~6 % — was right in 34 % of 147 groups with
//! a mean regret of 0.063 and 3.4 % picks that did not converge, while
//! always choosing post-copy was right in 42 %, regret 0.054, none.
//!
//! The rule is learned from the training rows' out-of-fold predictions (so
//! `eval` measures it honestly, fold by fold): the default is the algorithm
//! whose constant choice had the least loss over the paired groups; the
//! margin is the smallest of [`MARGINS`] with the least loss when the
//! model's pick replaces the default only if predicted better by more than
//! it. A group's loss is the pick's relative [`regret`] (capped at 1), or 1
//! when the pick did not converge (no rule for CPU, see `has_rule`). The rule is
//! kept only when it lowers the loss out of fold — the default and margin
//! chosen on 4/5 of the groups, scored on the other fifth, in turn; else
//! the margin is 0 and the ranking is the model's.

use crate::recommend::{self, Candidate};
use migsight_proto::wire::{FallbackRule, Objective, Sla};
use migsight_proto::{Algorithm, Metric};

/// Candidate margins (relative advantage over the default), smallest first;
/// infinity = the default whenever it is likely to meet the SLA.
pub const MARGINS: [f64; 9] = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, f64::INFINITY];

/// How much lower the default's P(meets SLA) may be than the model's pick's
/// for the rule to apply: the rule trades a predicted objective for a surer
/// default, never for a worse chance of meeting the SLA. (Without an SLA P is
/// P(converges), whose classifiers top out at 1 − 1/(n + 2): a small slack
/// keeps two near-certain algorithms comparable.)
pub const P_SLACK: f64 = 0.01;

/// Folds of the nested choice of a rule (see [`learn`]).
pub const NESTED_FOLDS: usize = 5;

/// Fewest paired groups a rule is learned from (below: the model alone).
pub const MIN_GROUPS: usize = 20;

/// The rule to apply to a request under `sla`: rules are learned without
/// SLA limits (`train` cannot know them), so they apply only to requests
/// without any; under an SLA, P(meets SLA) orders the risk and the ranking
/// stays the model's. Measured on 821 lab rows (seed 42, DT ≤ 50 ms,
/// TT ≤ 30 s, objective performance): applied there anyway, the rule
/// changed 45 picks for no gain (right 35.0 → 35.8 %, regret 0.060 → 0.067,
/// SLA misses 1.6 % both).
pub fn for_request<'a>(rule: Option<&'a FallbackRule>, sla: &Sla) -> Option<&'a FallbackRule> {
    rule.filter(|_| sla.limits().is_empty())
}

/// Regret of a pick whose true objective value is `value` when the best
/// was `best`: relative for TT, DT, TD and PERF (`|value − best| / best`),
/// absolute for the deltas CPU (percentage points of a core) and MEM (MiB),
/// whose best is often near or below zero (a relative regret there reads
/// 200 % for 3 % vs 1 % of a core).
pub fn regret(metric: Metric, value: f64, best: f64) -> f64 {
    match metric {
        Metric::CPU | Metric::MEM => (value - best).abs(),
        _ if best != 0.0 => ((value - best) / best).abs(),
        _ => 0.0,
    }
}

/// The extra source CPU, in points of a core, that a CPU pick's loss
/// counts as bad as a migration that did not converge.
pub const CPU_LOSS_POINTS: f64 = CPU_LOSS_SCALE;
const CPU_LOSS_SCALE: f64 = 10.0;

/// The extra source memory, in MiB, that a MEM pick's loss counts as bad
/// as a migration that did not converge.
pub const MEM_LOSS_MIB: f64 = 64.0;

/// A group's loss for a feasible pick: its relative regret, capped at 1 (as
/// bad as a pick that did not converge); for CPU the regret in points of a
/// core over [`CPU_LOSS_POINTS`], capped at 1.
pub fn loss(metric: Metric, value: f64, best: f64) -> f64 {
    match metric {
        Metric::CPU => (regret(metric, value, best) / CPU_LOSS_POINTS).min(1.0),
        Metric::MEM => (regret(metric, value, best) / MEM_LOSS_MIB).min(1.0),
        _ => regret(metric, value, best).min(1.0),
    }
}

/// Whether an objective gets a rule: not MEM (a few MiB either way).
fn has_rule(objective: Objective) -> bool {
    objective.metric().0 != Metric::MEM
}

/// Whether `metric`'s margins are absolute (points of a core for CPU: its
/// values sit near zero, where a share means nothing) rather than shares.
fn absolute_margin(metric: Metric) -> bool {
    matches!(metric, Metric::CPU | Metric::MEM)
}

/// Candidate margins in points of a core, for CPU.
pub const MARGINS_POINTS: [f64; 9] = [0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, f64::INFINITY];

/// Whether a row can be judged for `needed` metrics: a converged row must
/// have each label (a missing one — e.g. a post-copy downtime QEMU
/// misreported and the lab refused — leaves its group out, rather than
/// counting the row as a miss). Used by [`learn`] and `eval` alike.
pub fn judgeable(
    converged: bool,
    labels: &[Option<f64>; 6],
    mut needed: impl Iterator<Item = Metric>,
) -> bool {
    !converged || needed.all(|m| labels[m.index()].is_some_and(f64::is_finite))
}

/// Index of the best of `values` (`None` = infeasible), by the objective's
/// direction; ties keep the first.
pub fn best_index(values: &[Option<f64>], lower_better: bool) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, v) in values.iter().enumerate() {
        let Some(v) = *v else { continue };
        let better = match best {
            None => true,
            Some((_, b)) => (lower_better && v < b) || (!lower_better && v > b),
        };
        if better {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// One training row as the rule sees it: its truth and its out-of-fold prediction.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub group: String,
    pub algorithm: Algorithm,
    pub converged: bool,
    /// Labels, [`migsight_proto::Metric::index`] order.
    pub labels: [Option<f64>; 6],
    /// Out-of-fold predictions, natural units.
    pub pred: [f64; 6],
    /// Out-of-fold P(converges).
    pub p_converge: f64,
}

/// How much better candidate `c` is predicted than `d`: a share of `d`'s
/// value, or (for [`absolute_margin`] metrics) the difference itself.
fn advantage(c: &Candidate, d: &Candidate, objective: Objective) -> f64 {
    let (metric, lower_better) = objective.metric();
    let gain = if lower_better {
        d.value - c.value
    } else {
        c.value - d.value
    };
    if absolute_margin(metric) {
        gain
    } else if d.value != 0.0 {
        gain / d.value.abs()
    } else if gain > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

/// Applies a rule to a ranking (`ranked`, best first, from
/// [`recommend::order`]): the default moves to the front when it and the
/// top pick are both in the first tier and the top pick's predicted
/// advantage is at most `margin`. Returns the new order and whether the
/// rule changed the pick.
pub fn prefer_default(
    ranked: &[usize],
    cands: &[Candidate],
    default: Option<usize>,
    margin: f64,
    objective: Objective,
) -> (Vec<usize>, bool) {
    let mut out = ranked.to_vec();
    let (Some(&top), Some(d)) = (ranked.first(), default) else {
        return (out, false);
    };
    if top == d
        || recommend::tier(&cands[top]) != 0
        || recommend::tier(&cands[d]) != 0
        || cands[d].p < cands[top].p - P_SLACK
        || advantage(&cands[top], &cands[d], objective) > margin
    {
        return (out, false);
    }
    out.retain(|&i| i != d);
    out.insert(0, d);
    (out, true)
}

/// Learns one rule per objective from `outcomes` (rows of every algorithm).
pub fn learn(outcomes: &[Outcome]) -> Vec<FallbackRule> {
    let mut by_group: std::collections::BTreeMap<&str, Vec<&Outcome>> = Default::default();
    for o in outcomes {
        by_group.entry(o.group.as_str()).or_default().push(o);
    }
    let groups: Vec<Vec<&Outcome>> = by_group.into_values().filter(|g| g.len() >= 2).collect();
    let mut out = Vec::new();
    for objective in Objective::ALL.into_iter().filter(|o| has_rule(*o)) {
        let (metric, lower_better) = objective.metric();
        let m = metric.index();
        // The group's loss for each row as the pick, or None without a
        // feasible row or with a converged row whose label is unknown (left
        // out, as `eval` does: it cannot be judged).
        let losses: Vec<Option<Vec<f64>>> = groups
            .iter()
            .map(|g| {
                if !g
                    .iter()
                    .all(|o| judgeable(o.converged, &o.labels, std::iter::once(metric)))
                {
                    return None;
                }
                let values: Vec<Option<f64>> = g
                    .iter()
                    .map(|o| o.labels[m].filter(|_| o.converged))
                    .collect();
                let best = values[best_index(&values, lower_better)?]?;
                Some(
                    values
                        .iter()
                        .map(|v| v.map_or(1.0, |v| loss(metric, v, best)))
                        .collect(),
                )
            })
            .collect();
        let scored: Vec<(usize, &Vec<f64>)> = losses
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
            .collect();
        if scored.len() < MIN_GROUPS {
            continue;
        }
        let losses_of = |default: Option<Algorithm>, margin: f64| -> Vec<f64> {
            scored
                .iter()
                .map(|&(gi, loss)| {
                    let g = &groups[gi];
                    let cands: Vec<Candidate> = g
                        .iter()
                        .map(|o| Candidate {
                            point_meets: true,
                            p: o.p_converge,
                            value: o.pred[m],
                        })
                        .collect();
                    let ranked = recommend::order(&cands, lower_better);
                    let d = default.and_then(|a| g.iter().position(|o| o.algorithm == a));
                    let (ranked, _) = prefer_default(&ranked, &cands, d, margin, objective);
                    loss[ranked[0]]
                })
                .collect()
        };
        // Each group's loss under every default × margin, and the model's.
        let margins = if absolute_margin(metric) {
            MARGINS_POINTS
        } else {
            MARGINS
        };
        let table: Vec<Vec<Vec<f64>>> = Algorithm::ALL
            .iter()
            .map(|&a| margins.iter().map(|&mg| losses_of(Some(a), mg)).collect())
            .collect();
        let model = losses_of(None, 0.0);
        let n = model.len();
        // The rule chosen on the groups `keep` admits: the default with the
        // least loss as a constant choice, then its margin with the least
        // loss; ties keep the earlier (CSAP order, the smaller margin).
        let select = |keep: &dyn Fn(usize) -> bool| {
            let mean = |v: &[f64]| {
                let (s, c) = (0..n)
                    .filter(|&j| keep(j))
                    .fold((0.0, 0usize), |(s, c), j| (s + v[j], c + 1));
                s / c.max(1) as f64
            };
            let infinite = MARGINS.len() - 1;
            let mut a = 0;
            for i in 1..table.len() {
                if mean(&table[i][infinite]) < mean(&table[a][infinite]) {
                    a = i;
                }
            }
            let mut mi = 0;
            for i in 1..MARGINS.len() {
                if mean(&table[a][i]) < mean(&table[a][mi]) {
                    mi = i;
                }
            }
            (a, mi)
        };
        // Whether a rule helps is judged out of fold: chosen on the other
        // folds' groups, scored on the held-out ones (the choice itself
        // fits noise; with a 2-SE bar instead, the performance rule came
        // and went between the 821- and 942-row snapshots).
        let mut nested = vec![0.0; n];
        for k in 0..NESTED_FOLDS {
            let (a, mi) = select(&|j| j % NESTED_FOLDS != k);
            for j in (0..n).filter(|j| j % NESTED_FOLDS == k) {
                nested[j] = table[a][mi][j];
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let (a, mi) = select(&|_| true);
        let helps = mean(&nested) < mean(&model);
        out.push(FallbackRule {
            objective,
            default: Algorithm::ALL[a],
            margin: if helps { margins[mi] } else { 0.0 },
            groups: n as u64,
            loss_model: mean(&model),
            loss_rule: if helps { mean(&nested) } else { mean(&model) },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(group: usize, a: Algorithm, perf: f64, pred: f64) -> Outcome {
        let mut labels = [Some(1.0); 6];
        labels[Metric::PERF.index()] = Some(perf);
        let mut p = [1.0; 6];
        p[Metric::PERF.index()] = pred;
        Outcome {
            group: format!("g{group}"),
            algorithm: a,
            converged: true,
            labels,
            pred: p,
            p_converge: 0.99,
        }
    }

    #[test]
    fn noise_only_predictions_fall_back_to_the_best_constant_choice() {
        // Post-copy is truly best by 5 % in every group; the predictions are
        // pure noise of ±10 % around 0.9, so the model's pick is a coin toss.
        let mut rng = crate::rng::Rng::derive(3, &[1]);
        let mut rows = Vec::new();
        for g in 0..60 {
            for a in Algorithm::ALL {
                let truth = if a == Algorithm::Postcopy { 0.95 } else { 0.90 };
                rows.push(outcome(g, a, truth, 0.9 + 0.2 * (rng.unit() - 0.5)));
            }
        }
        let d = learn(&rows);
        let perf = d
            .iter()
            .find(|d| d.objective == Objective::Performance)
            .unwrap();
        assert_eq!(perf.default, Algorithm::Postcopy);
        assert!(perf.margin >= 0.1, "{perf:?}");
        assert!(perf.loss_rule < perf.loss_model, "{perf:?}");
    }

    #[test]
    fn informative_predictions_keep_the_models_pick() {
        // The best algorithm varies by group and the predictions know it.
        let mut rows = Vec::new();
        for g in 0..40 {
            for (i, a) in Algorithm::ALL.into_iter().enumerate() {
                let truth = if i == g % 5 {
                    0.99
                } else {
                    0.80 + 0.01 * i as f64
                };
                rows.push(outcome(g, a, truth, truth));
            }
        }
        let d = learn(&rows);
        let perf = d
            .iter()
            .find(|d| d.objective == Objective::Performance)
            .unwrap();
        assert_eq!(perf.margin, 0.0, "{perf:?}");
        assert_eq!(perf.loss_model, 0.0);
    }

    #[test]
    fn judging_helpers() {
        let v = [None, Some(3.0), Some(1.0), Some(1.0)];
        assert_eq!(best_index(&v, true), Some(2));
        assert_eq!(best_index(&v, false), Some(1));
        assert_eq!(best_index(&[None, None], true), None);
        let mut labels = [Some(1.0); 6];
        labels[Metric::DT.index()] = None;
        let dt = || std::iter::once(Metric::DT);
        assert!(!judgeable(true, &labels, dt()));
        assert!(
            judgeable(false, &labels, dt()),
            "a failed row needs no label"
        );
        assert!(judgeable(true, &labels, std::iter::once(Metric::TT)));
    }

    #[test]
    fn the_rule_needs_both_in_the_first_tier_and_a_small_advantage() {
        let c = |p: f64, value: f64| Candidate {
            point_meets: true,
            p,
            value,
        };
        let cands = [c(0.99, 0.97), c(0.99, 0.95)];
        let ranked = recommend::order(&cands, false);
        assert_eq!(ranked[0], 0);
        // 0.97 vs 0.95 is a 2.1 % advantage.
        assert_eq!(
            prefer_default(&ranked, &cands, Some(1), 0.05, Objective::Performance).0[0],
            1
        );
        assert_eq!(
            prefer_default(&ranked, &cands, Some(1), 0.01, Objective::Performance).0[0],
            0
        );
        // A default unlikely to converge is never forced.
        let cands = [c(0.99, 0.97), c(0.5, 0.95)];
        let ranked = recommend::order(&cands, false);
        assert_eq!(
            prefer_default(
                &ranked,
                &cands,
                Some(1),
                f64::INFINITY,
                Objective::Performance
            )
            .0[0],
            0
        );
        // Too few groups: no rule.
        assert!(learn(&[outcome(0, Algorithm::Precopy, 0.9, 0.9)]).is_empty());
    }
}
