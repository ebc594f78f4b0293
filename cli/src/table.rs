//! The plan/predict table: one row per algorithm (best first) with every
//! metric, its 90 % interval underneath, P(converges), P(meets SLA), the
//! recommended row marked `*`, then the reason and the explanations.
//!
//! Shared by `migsight predict` and `migsight plan`.

use migsight_proto::units::{HumanBytes, HumanMs};
use migsight_proto::wire::{AlgorithmPrediction, Interval, Recommendation};
use migsight_proto::Metric;
use std::fmt::Write as _;

/// A metric value for a table cell.
pub fn metric_value(m: Metric, v: f64) -> String {
    migsight_predictor::recommend::human(m, v)
}

/// `lo–hi` for the interval line.
pub fn metric_interval(m: Metric, iv: &Interval) -> String {
    format!("{}–{}", metric_value(m, iv.lo), metric_value(m, iv.hi))
}

const HEADERS: [&str; 6] = ["total time", "downtime", "data", "perf", "CPU", "MEM"];
const WIDTHS: [usize; 6] = [19, 17, 21, 11, 13, 15];

fn row_cells(a: &AlgorithmPrediction, interval: bool) -> Vec<String> {
    Metric::ALL
        .iter()
        .map(|&m| {
            let iv = a.metric(m);
            if interval {
                metric_interval(m, &iv)
            } else {
                metric_value(m, iv.value)
            }
        })
        .collect()
}

/// Renders a recommendation as the table operators read.
pub fn recommendation_table(rec: &Recommendation) -> String {
    let mut s = String::new();
    let _ = write!(s, "  {:<17}", "algorithm");
    for (h, w) in HEADERS.iter().zip(WIDTHS) {
        let _ = write!(s, "{h:<w$}");
    }
    let _ = writeln!(s, "{:>8} {:>8}", "P(conv)", "P(SLA)");
    for r in &rec.ranked {
        let Some(a) = rec
            .prediction
            .algorithms
            .iter()
            .find(|a| a.algorithm == r.algorithm)
        else {
            continue;
        };
        let mark = if r.algorithm == rec.recommended {
            "*"
        } else {
            " "
        };
        let _ = write!(s, "{mark} {:<17}", r.algorithm.name());
        for (c, w) in row_cells(a, false).iter().zip(WIDTHS) {
            let _ = write!(s, "{c:<w$}");
        }
        let _ = writeln!(s, "{:>8.2} {:>8.2}", a.p_converge, r.p_meets_sla);
        let _ = write!(s, "  {:<17}", "");
        for (c, w) in row_cells(a, true).iter().zip(WIDTHS) {
            let _ = write!(s, "{c:<w$}");
        }
        s.push('\n');
    }
    for n in &rec.prediction.not_predicted {
        let _ = writeln!(
            s,
            "  {:<17}unavailable: {}",
            n.algorithm.name(),
            n.unavailable.as_deref().unwrap_or("not predicted")
        );
    }
    let _ = writeln!(
        s,
        "\n(second line: 90 % prediction interval; * recommended, objective: {})",
        rec.objective.name()
    );
    let edge: Vec<&str> = rec
        .prediction
        .algorithms
        .iter()
        .filter(|a| migsight_predictor::recommend::near_edge(a.p_converge))
        .map(|a| a.algorithm.name())
        .collect();
    if !edge.is_empty() {
        let _ = writeln!(
            s,
            "(P(converges) below {}: {}; their figures assume the migration converges, \
             and near the convergence edge it can take a few more rounds or many)",
            migsight_predictor::recommend::LIKELY,
            edge.join(", ")
        );
    }
    let _ = writeln!(s, "{}", rec.reason);
    if !rec.prediction.out_of_domain.is_empty() {
        let _ = writeln!(
            s,
            "OUTSIDE THE TRAINING DATA (intervals widened; treat the figures as extrapolation):"
        );
        for o in &rec.prediction.out_of_domain {
            let _ = writeln!(s, "  - {o}");
        }
    }
    if !rec.meets_sla {
        let _ = writeln!(
            s,
            "warning: the recommended algorithm's point prediction does not meet every SLA limit"
        );
    }
    if let Some(a) = rec
        .prediction
        .algorithms
        .iter()
        .find(|a| a.algorithm == rec.recommended)
    {
        if !a.explanation.is_empty() {
            let _ = writeln!(s, "why ({}):", a.algorithm.name());
            for e in &a.explanation {
                let _ = writeln!(s, "  - {e}");
            }
        }
    }
    if !rec.prediction.missing_features.is_empty() {
        let names: Vec<&str> = rec
            .prediction
            .missing_features
            .iter()
            .map(|f| f.column())
            .collect();
        let _ = writeln!(
            s,
            "missing features (the model used them in training): {}",
            names.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "model: {}, bandwidth {}/s, downtime limit {}",
        rec.prediction.model_family,
        HumanBytes(rec.prediction.bandwidth_bps),
        HumanMs(rec.prediction.downtime_limit_ms)
    );
    s
}

/// Alias of [`recommendation_table`] (the name `migsight plan` uses).
pub fn render(rec: &Recommendation) -> String {
    recommendation_table(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use migsight_proto::wire::{
        AlgorithmPrediction, AlgorithmSupport, Objective, Prediction, RankedAlgorithm, Sla,
    };
    use migsight_proto::Algorithm;

    #[test]
    fn marks_the_recommended_row_and_shows_intervals() {
        let iv = |v: f64| Interval {
            value: v,
            lo: v * 0.8,
            hi: v * 1.25,
        };
        let algorithms: Vec<AlgorithmPrediction> = Algorithm::SEED
            .iter()
            .filter(|a| **a != Algorithm::Compress)
            .map(|&a| AlgorithmPrediction {
                algorithm: a,
                metrics: [
                    iv(20_000.0),
                    iv(150.0),
                    iv(2e9),
                    iv(0.9),
                    iv(30.0),
                    iv(64.0),
                ],
                p_converge: 0.95,
                explanation: vec![
                    "dirty rate 45 MiB/s vs bandwidth 119 MiB/s drives total time up (+38 %)"
                        .into(),
                ],
            })
            .collect();
        let rec = Recommendation {
            prediction: Prediction {
                bandwidth_bps: 125e6,
                downtime_limit_ms: 300.0,
                algorithms,
                not_predicted: vec![AlgorithmSupport {
                    algorithm: Algorithm::Compress,
                    unavailable: Some("removed in QEMU 9.1".into()),
                }],
                out_of_domain: vec![
                    "VM_size 65536 MiB is 77.5× the largest VM in training (846 MiB)".into(),
                ],
                missing_features: vec![migsight_proto::Feature::VmPmuInstr],
                model_family: "gbdt".into(),
            },
            sla: Sla {
                max_downtime_ms: Some(300.0),
                ..Sla::default()
            },
            objective: Objective::Time,
            ranked: [
                Algorithm::Xbzrle,
                Algorithm::Precopy,
                Algorithm::AutoConverge,
                Algorithm::Postcopy,
            ]
            .iter()
            .map(|&a| RankedAlgorithm {
                algorithm: a,
                p_meets_sla: 0.9,
                objective_value: 20_000.0,
            })
            .collect(),
            recommended: Algorithm::Xbzrle,
            meets_sla: true,
            reason: "xbzrle has the lowest total time.".into(),
        };
        let t = render(&rec);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("total time") && lines[0].contains("P(SLA)"));
        assert!(lines[1].starts_with("* xbzrle"), "{t}");
        assert!(
            lines[1].contains("20.0 s") && lines[1].contains("0.95"),
            "{t}"
        );
        assert!(lines[2].contains("16.0 s–25.0 s"), "{t}");
        assert!(lines[3].starts_with("  precopy"), "{t}");
        assert!(t.contains("xbzrle has the lowest total time."));
        assert!(t.contains("drives total time up"));
        assert!(t.contains("VM_pmu_instr"));
        assert!(
            t.contains("OUTSIDE THE TRAINING DATA") && t.contains("77.5× the largest VM"),
            "{t}"
        );
        assert!(
            t.lines().any(|l| l.trim_start().starts_with("compress")
                && l.contains("unavailable: removed in QEMU 9.1")),
            "{t}"
        );
    }
}
