//! The ordering rule shared by serving, training and evaluation.
//!
//! [`LIKELY`] and [`order`] decide which algorithm a recommendation puts
//! first; training uses the same threshold to pick a metric's borderline
//! stratum and the fallback rules are learnt on the same order, so the rule
//! lives here, below both [`crate::recommend`] (which serves it) and
//! [`crate::decision`] (which learns when to override it).

use migsight_proto::wire::Sla;
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
