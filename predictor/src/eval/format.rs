//! Printing an evaluation: one column spec ([`SCORE_COLUMNS`]) that both the
//! CSV and the table are written from, then the P(converges) and
//! recommendation-quality tables.

use super::{EvalReport, ScoreRow};
use migsight_proto::wire::Sla;
use migsight_proto::Metric;
use std::fmt::Write as _;

/// How a cell is written.
#[derive(Clone, Copy, PartialEq)]
enum Style {
    Csv,
    Table,
}

/// One column of the scores: its name, its table width and how a row
/// fills it.
struct Column {
    name: &'static str,
    /// Table width; text columns are left-aligned, numbers right-aligned.
    width: usize,
    text: bool,
    cell: fn(&ScoreRow, Style) -> String,
}

/// A number with `csv` decimals in the CSV and `table` in the table; empty
/// when not finite.
fn num(v: f64, style: Style, csv: usize, table: usize) -> String {
    if !v.is_finite() {
        return String::new();
    }
    match style {
        Style::Csv => format!("{v:.csv$}"),
        Style::Table => format!("{v:.table$}"),
    }
}

/// The scores' columns, in order: the CSV header is their names.
const SCORE_COLUMNS: [Column; 10] = [
    Column {
        name: "model",
        width: 9,
        text: true,
        cell: |r, _| r.model.clone(),
    },
    Column {
        name: "qemu",
        width: 7,
        text: true,
        cell: |r, _| r.qemu.clone(),
    },
    Column {
        name: "algorithm",
        width: 17,
        text: true,
        cell: |r, _| r.algorithm.name().to_string(),
    },
    Column {
        name: "metric",
        width: 6,
        text: true,
        cell: |r, _| r.metric.name().to_string(),
    },
    Column {
        name: "n",
        width: 5,
        text: false,
        cell: |r, _| r.stats.n.to_string(),
    },
    Column {
        name: "gMRE",
        width: 8,
        text: false,
        cell: |r, s| num(r.stats.gmre, s, 4, 3),
    },
    Column {
        name: "MRE",
        width: 8,
        text: false,
        cell: |r, s| num(r.stats.mre, s, 4, 3),
    },
    Column {
        name: "MAE",
        width: 14,
        text: false,
        cell: |r, s| num(r.stats.mae, s, 3, 1),
    },
    Column {
        name: "p90_abs",
        width: 14,
        text: false,
        cell: |r, s| num(r.stats.p90_abs, s, 3, 1),
    },
    Column {
        name: "coverage",
        width: 9,
        text: false,
        cell: |r, s| num(r.stats.coverage, s, 4, 3),
    },
];

/// The exact CSV header of `migsight eval --format csv`.
pub const CSV_HEADER: &str = "model,qemu,algorithm,metric,n,gMRE,MRE,MAE,p90_abs,coverage";

/// The scores as CSV with [`CSV_HEADER`].
pub fn to_csv(report: &EvalReport) -> String {
    let mut s = SCORE_COLUMNS.map(|c| c.name).join(",");
    s.push('\n');
    for r in &report.scores {
        s += &SCORE_COLUMNS.map(|c| (c.cell)(r, Style::Csv)).join(",");
        s.push('\n');
    }
    s
}

fn table_line(cells: impl Iterator<Item = (String, usize, bool)>) -> String {
    let mut s = String::new();
    for (k, (c, w, text)) in cells.enumerate() {
        if k > 0 {
            s.push(' ');
        }
        if text {
            let _ = write!(s, "{c:<w$}");
        } else {
            let _ = write!(s, "{c:>w$}");
        }
    }
    s.trim_end().to_string()
}

/// Human-readable table of scores, P(converges) and recommendation quality.
pub fn to_table(report: &EvalReport, sla: &Sla) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} rows scored, {}\n", report.rows, report.split);
    let _ = writeln!(
        s,
        "{}",
        table_line(
            SCORE_COLUMNS
                .iter()
                .map(|c| (c.name.to_string(), c.width, c.text))
        )
    );
    for r in &report.scores {
        let _ = writeln!(
            s,
            "{}",
            table_line(
                SCORE_COLUMNS
                    .iter()
                    .map(|c| ((c.cell)(r, Style::Table), c.width, c.text))
            )
        );
    }
    s.push_str(&converge_table(report));
    s.push_str(&rec_table(report, sla));
    s
}

fn f(v: f64, prec: usize) -> String {
    if v.is_finite() {
        format!("{v:.prec$}")
    } else {
        String::new()
    }
}

/// The P(converges) part alone.
pub fn converge_table(report: &EvalReport) -> String {
    let mut s = String::from("\nP(converges), out of fold (Brier score; lower is better)\n");
    let _ = writeln!(
        s,
        "{:<9} {:<17} {:>5} {:>8} {:>8} {:>14}",
        "model", "algorithm", "n", "failed", "brier", "constant rate"
    );
    for c in &report.convergence {
        let _ = writeln!(
            s,
            "{:<9} {:<17} {:>5} {:>8} {:>8.4} {:>14.4}",
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
        "\nrecommendation quality on paired groups (SLA: {}; left out: groups with a converged row lacking a label the SLA or objective needs; clear: groups whose best beat the runner-up by more than the repeat noise; regret relative, for cpu in points of a core)",
        if limits.is_empty() {
            "none".to_string()
        } else {
            limits.join(", ")
        }
    );
    let _ = writeln!(
        s,
        "{:<9} {:<7} {:<12} {:>6} {:>8} {:>9} {:>15} {:>12} {:>11} {:>42} {:>34} {:>9} {:>30}  fallback picks",
        "model",
        "qemu",
        "objective",
        "groups",
        "left out",
        "accuracy",
        "clear (groups)",
        "mean_regret",
        "violations",
        "best fixed (accuracy, regret, violations)",
        "least-regret fixed (regret, viol.)",
        "mean loss",
        "least-loss fixed (loss)",
    );
    for q in &report.recommendation {
        let _ = writeln!(
            s,
            "{:<9} {:<7} {:<12} {:>6} {:>8} {:>9} {:>15} {:>12} {:>11} {:>42} {:>34} {:>9} {:>30}  {}",
            q.model,
            q.qemu,
            q.objective.name(),
            q.groups,
            q.unjudged,
            f(q.accuracy, 3),
            format!("{} ({})", f(q.clear_accuracy, 3), q.clear_groups),
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
            q.least_regret_fixed
                .map(|a| format!(
                    "{} ({}, {})",
                    a.name(),
                    f(q.least_regret_fixed_regret, 3),
                    f(q.least_regret_fixed_violations, 3)
                ))
                .unwrap_or_default(),
            f(q.mean_loss, 3),
            q.least_loss_fixed
                .map(|a| format!("{} ({})", a.name(), f(q.least_loss_fixed_loss, 3)))
                .unwrap_or_default(),
            match &q.fallback_default {
                Some(a) => format!("{} ({a})", q.fallback_groups),
                None => q.fallback_groups.to_string(),
            }
        );
    }
    s
}
