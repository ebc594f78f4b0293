//! Ranking algorithms under an SLA and an objective.
//!
//! Algorithms likely to meet the SLA (P ≥ [`LIKELY`], where P combines
//! P(converges) with the interval-implied probability of each limit) come
//! first, best objective value first; the rest follow by falling P. The reason sentence
//! names the winner's objective value, its interval and its P.

use migsight_proto::units::{HumanBytes, HumanMs};
use migsight_proto::wire::{
    FallbackRule, Objective, Prediction, RankedAlgorithm, Recommendation, Sla,
};
use migsight_proto::Metric;

/// Threshold of "likely to meet the SLA" (and to converge at all).
///
/// A recommendation that does not converge costs the maintenance window, so
/// this is well above a coin toss. Measured by `migsight eval` on 419 lab
/// rows (85 paired groups, no SLA, 10 folds, seed 42), 0.5 → 0.8: picks
/// that then failed to converge, objective time 3.5 → 1.2 %, performance
/// 12.3 → 6.2 %, CPU 10.6 → 4.7 %; accuracy equal or better (time 72.9 →
/// 74.1 %), mean regret +0.02 (time) and +0.04 (data). 0.9 and 0.95 cost
/// more regret (data: 0.09 and 0.20) for little more safety.
pub const LIKELY: f64 = 0.8;

/// Whether a migration with this P(converges) is near (or past) the
/// convergence edge: its intervals come from the borderline stratum
/// ([`crate::model::MetricModel::borderline`]) and the tables say so.
#[inline]
pub fn near_edge(p_converge: f64) -> bool {
    p_converge < LIKELY
}

/// Formats a metric value for sentences and table cells (one place, so
/// `plan`, `predict`, `migrate` and the reasons agree).
pub fn human(metric: Metric, v: f64) -> String {
    // No "-0 %" for a delta that rounds to zero.
    let v = if v.abs() < 0.5 && metric == Metric::CPU {
        0.0
    } else {
        v
    };
    match metric {
        Metric::TT | Metric::DT => HumanMs(v).to_string(),
        Metric::TD => HumanBytes(v).to_string(),
        Metric::PERF => format!("{v:.2}"),
        Metric::CPU => format!("{v:.0} %"),
        // Most extra source memory is well under 10 MiB (xbzrle's cache
        // excepted): whole MiB would print an interval of "0–0 MiB" that an
        // actual 0.4 MiB falls outside of.
        Metric::MEM if v.abs() < 9.95 => format!("{v:.1} MiB"),
        Metric::MEM => format!("{v:.0} MiB"),
    }
}

fn describe_sla(sla: &Sla) -> String {
    let parts: Vec<String> = sla
        .limits()
        .into_iter()
        .map(|(m, v, upper)| {
            let name = match m {
                Metric::DT => "downtime",
                Metric::TT => "total time",
                Metric::TD => "data",
                Metric::PERF => "performance",
                _ => m.name(),
            };
            format!("{name} {} {}", if upper { "≤" } else { "≥" }, human(m, v))
        })
        .collect();
    if parts.is_empty() {
        "no SLA limits".into()
    } else {
        parts.join(", ")
    }
}

/// A candidate for [`order`].
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// Whether the point predictions meet every SLA limit.
    pub point_meets: bool,
    /// P(converges and meets the SLA).
    pub p: f64,
    /// Predicted objective value.
    pub value: f64,
}

/// A candidate's tier: 0 when its point prediction meets the SLA and
/// P ≥ [`LIKELY`], 1 when it meets it with a lower P, 2 otherwise.
pub fn tier(c: &Candidate) -> u8 {
    match (c.point_meets, c.p >= LIKELY) {
        (true, true) => 0,
        (true, false) => 1,
        _ => 2,
    }
}

/// Orders candidates best first; returns indices. Tiers ([`tier`]): point
/// predictions meet the SLA and P ≥ [`LIKELY`] (by objective), then point
/// predictions meet it but P is lower (by P), then the rest (by P); ties by objective.
pub fn order(cands: &[Candidate], lower_better: bool) -> Vec<usize> {
    let key = |v: f64| if lower_better { v } else { -v };
    let mut idx: Vec<usize> = (0..cands.len()).collect();
    idx.sort_by(|&a, &b| {
        let (ca, cb) = (&cands[a], &cands[b]);
        let (ta, tb) = (tier(ca), tier(cb));
        ta.cmp(&tb).then_with(|| {
            if ta == 0 {
                key(ca.value).total_cmp(&key(cb.value))
            } else {
                cb.p.total_cmp(&ca.p)
                    .then_with(|| key(ca.value).total_cmp(&key(cb.value)))
            }
        })
    });
    idx
}

/// Whether point predictions meet every limit of `sla`.
pub fn point_meets(sla: &Sla, value: impl Fn(Metric) -> f64) -> bool {
    sla.limits().into_iter().all(|(m, v, upper)| {
        let p = value(m);
        if upper {
            p <= v
        } else {
            p >= v
        }
    })
}

/// Ranks a prediction; `p_meets[i]` is algorithm `i`'s P(meets SLA);
/// `decision` is the model's fallback rule for the objective, if it has one.
pub fn rank(
    prediction: Prediction,
    p_meets: &[f64],
    sla: Sla,
    objective: Objective,
    decision: Option<&FallbackRule>,
) -> Recommendation {
    let (metric, lower_better) = objective.metric();
    let all: Vec<RankedAlgorithm> = prediction
        .algorithms
        .iter()
        .zip(p_meets)
        .map(|(a, &p)| RankedAlgorithm {
            algorithm: a.algorithm,
            p_meets_sla: p,
            objective_value: a.metric(metric).value,
        })
        .collect();
    let cands: Vec<Candidate> = prediction
        .algorithms
        .iter()
        .zip(&all)
        .map(|(a, r)| Candidate {
            point_meets: point_meets(&sla, |m| a.metric(m).value),
            p: r.p_meets_sla,
            value: r.objective_value,
        })
        .collect();
    let model_order = order(&cands, lower_better);
    let model_pick = all[model_order[0]].clone();
    let decision = crate::decision::for_request(decision, &sla);
    let default = decision.and_then(|d| all.iter().position(|r| r.algorithm == d.default));
    let margin = decision.map_or(0.0, |d| d.margin);
    let (final_order, fell_back) =
        crate::decision::prefer_default(&model_order, &cands, default, margin, objective);
    let ranked: Vec<RankedAlgorithm> = final_order.into_iter().map(|i| all[i].clone()).collect();
    let best = ranked[0].clone();
    let ap = prediction
        .algorithms
        .iter()
        .find(|a| a.algorithm == best.algorithm)
        .expect("ranked algorithm is predicted");
    let meets_sla = point_meets(&sla, |m| ap.metric(m).value);
    let iv = ap.metric(metric);
    let tier0 = prediction
        .algorithms
        .iter()
        .zip(&all)
        .filter(|(a, r)| r.p_meets_sla >= LIKELY && point_meets(&sla, |m| a.metric(m).value))
        .count();
    let what = match objective {
        Objective::Time => "total time",
        Objective::Downtime => "downtime",
        Objective::Data => "transferred data",
        Objective::Performance => "VM performance",
        Objective::Cpu => "extra source CPU",
    };
    let reason = if fell_back {
        format!(
            "{} is recommended: {} is predicted {} {what} ({} vs {}), but by no more than {}, a difference this model's predictions do not resolve (on its training data, out of fold, choosing {} for {} unless another algorithm is predicted better by more than that gave the least regret); P(meets SLA) = {:.2}.",
            best.algorithm,
            model_pick.algorithm,
            if lower_better { "a lower" } else { "a higher" },
            human(metric, model_pick.objective_value),
            human(metric, iv.value),
            if margin.is_finite() {
                format!("{:.1} %", margin * 100.0)
            } else {
                "any margin".to_string()
            },
            best.algorithm,
            objective.name(),
            best.p_meets_sla
        )
    } else if meets_sla && best.p_meets_sla >= LIKELY {
        format!(
            "{} has the {} {what} ({}, 90 % interval {}–{}) of the {tier0} algorithm{} likely to meet the SLA ({}); P(meets SLA) = {:.2}.",
            best.algorithm,
            if lower_better { "lowest" } else { "highest" },
            human(metric, iv.value),
            human(metric, iv.lo),
            human(metric, iv.hi),
            if tier0 == 1 { "" } else { "s" },
            describe_sla(&sla),
            best.p_meets_sla
        )
    } else if meets_sla {
        format!(
            "{} is predicted to meet the SLA ({}) but is not likely to: P(meets SLA) = {:.2} (P(converges) = {:.2}), the best chance of the algorithms predicted to meet it; {what} {}.",
            best.algorithm,
            describe_sla(&sla),
            best.p_meets_sla,
            ap.p_converge,
            human(metric, iv.value)
        )
    } else {
        format!(
            "No algorithm is predicted to meet the SLA ({}); {} has the best chance, P = {:.2} (P(converges) = {:.2}), with {what} {}.",
            describe_sla(&sla),
            best.algorithm,
            best.p_meets_sla,
            ap.p_converge,
            human(metric, iv.value)
        )
    };
    Recommendation {
        recommended: best.algorithm,
        prediction,
        sla,
        objective,
        ranked,
        meets_sla,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migsight_proto::wire::{AlgorithmPrediction, Interval};
    use migsight_proto::Algorithm;

    fn prediction(dt: [f64; 5], tt: [f64; 5], pc: [f64; 5]) -> Prediction {
        Prediction {
            bandwidth_bps: 1e8,
            downtime_limit_ms: 300.0,
            algorithms: Algorithm::SEED
                .iter()
                .map(|&a| {
                    let i = a.index();
                    let iv = |v: f64| Interval {
                        value: v,
                        lo: v / 2.0,
                        hi: v * 2.0,
                    };
                    AlgorithmPrediction {
                        algorithm: a,
                        metrics: [iv(tt[i]), iv(dt[i]), iv(1e9), iv(0.9), iv(10.0), iv(5.0)],
                        p_converge: pc[i],
                        explanation: vec![],
                    }
                })
                .collect(),
            not_predicted: vec![],
            out_of_domain: vec![],
            missing_features: vec![],
            model_family: "test".into(),
        }
    }

    #[test]
    fn a_point_prediction_meeting_the_sla_is_preferred() {
        let sla = Sla {
            max_downtime_ms: Some(300.0),
            ..Sla::default()
        };
        // Only postcopy's point downtime meets the limit, but its P is low;
        // precopy has a higher P and a lower total time but misses on the point.
        let p = prediction(
            [400.0, 500.0, 600.0, 700.0, 100.0],
            [1e3, 2e3, 3e3, 4e3, 9e3],
            [0.9; 5],
        );
        let r = rank(p, &[0.45, 0.1, 0.1, 0.1, 0.3], sla, Objective::Time, None);
        assert_eq!(r.recommended, Algorithm::Postcopy);
        assert!(r.meets_sla);
        assert!(r.reason.contains("not likely"), "{}", r.reason);
        // Two likely ones: the faster wins.
        let p = prediction(
            [100.0, 200.0, 600.0, 700.0, 100.0],
            [5e3, 2e3, 3e3, 4e3, 9e3],
            [0.9; 5],
        );
        let r = rank(
            p.clone(),
            &[0.85, 0.9, 0.1, 0.1, 0.95],
            sla,
            Objective::Time,
            None,
        );
        assert_eq!(r.recommended, Algorithm::AutoConverge);
        assert!(r.reason.contains("lowest total time"), "{}", r.reason);
        assert_eq!(r.ranked[0].algorithm, Algorithm::AutoConverge);
        assert_eq!(r.ranked[1].algorithm, Algorithm::Precopy);
        assert_eq!(r.ranked[2].algorithm, Algorithm::Postcopy);
        // A fallback rule: auto-converge is predicted 60 % faster than the
        // default precopy; within a 70 % margin precopy is kept, and says why.
        let rule = |margin: f64| FallbackRule {
            objective: Objective::Time,
            default: Algorithm::Precopy,
            margin,
            groups: 50,
            loss_model: 0.2,
            loss_rule: 0.1,
        };
        let likely = [0.9, 0.9, 0.1, 0.1, 0.95];
        let none = Sla::default();
        // Rules are learned without SLA limits and apply only without them.
        let r = rank(p.clone(), &likely, sla, Objective::Time, Some(&rule(0.7)));
        assert_eq!(r.recommended, Algorithm::AutoConverge);
        let r = rank(p.clone(), &likely, none, Objective::Time, Some(&rule(0.7)));
        assert_eq!(r.recommended, Algorithm::Precopy);
        assert_eq!(r.ranked[1].algorithm, Algorithm::AutoConverge);
        assert!(r.reason.contains("70.0 %"), "{}", r.reason);
        assert!(
            r.reason
                .contains("auto-converge is predicted a lower total time"),
            "{}",
            r.reason
        );
        let r = rank(p.clone(), &likely, none, Objective::Time, Some(&rule(0.5)));
        assert_eq!(r.recommended, Algorithm::AutoConverge);
        // Nor for a default less likely to converge than the pick.
        let r = rank(
            p.clone(),
            &[0.85, 0.9, 0.1, 0.1, 0.95],
            none,
            Objective::Time,
            Some(&rule(0.7)),
        );
        assert_eq!(r.recommended, Algorithm::AutoConverge);
        // Faster but just below the "likely" bar: the slower, surer one wins.
        let r = rank(
            p,
            &[0.85, LIKELY - 0.01, 0.1, 0.1, 0.95],
            sla,
            Objective::Time,
            None,
        );
        assert_eq!(r.recommended, Algorithm::Precopy);
        // Nobody meets: best chance, and the reason says so.
        let p = prediction([900.0; 5], [1e3; 5], [0.9; 5]);
        let r = rank(p, &[0.1, 0.2, 0.05, 0.01, 0.15], sla, Objective::Data, None);
        assert_eq!(r.recommended, Algorithm::AutoConverge);
        assert!(!r.meets_sla);
        assert!(r.reason.starts_with("No algorithm"));
    }
}
