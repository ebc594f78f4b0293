//! What `migsight migrate` shows: live progress, predicted vs actual, and
//! the `--json` summary.

use crate::plan::PlanOutput;
use migsight_proto::units::{HumanBytes, HumanMs};
use migsight_proto::wire::{AlgorithmPrediction, Interval};
use migsight_proto::{Algorithm, Metric};
use migsight_qemu::driver::{MigrationOutcome, Progress};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Human output: stdout normally, stderr when stdout carries JSON.
pub struct Out {
    pub json: bool,
}
impl Out {
    /// One line for the operator. A closed stdout (`| head`) must not stop
    /// a migration half-way, so a failed write is dropped, never a panic.
    pub fn say(&self, s: &str) {
        if self.json {
            eprintln!("{s}");
        } else {
            let _ = migsight_proto::write_stdout(&format!("{s}\n"));
        }
    }
}

/// Prints one progress observation (a rewritten line on a terminal, one line a second otherwise).
pub struct ProgressPrinter {
    tty: bool,
    last: Option<Instant>,
    total_bytes: Option<f64>,
}

impl ProgressPrinter {
    /// A printer for a guest of `total_bytes` of RAM.
    pub fn new(total_bytes: Option<f64>) -> ProgressPrinter {
        ProgressPrinter {
            tty: std::io::stderr().is_terminal(),
            last: None,
            total_bytes,
        }
    }

    pub fn show(&mut self, p: &Progress) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        };
        if self.last.map(|l| l.elapsed() < every).unwrap_or(false) {
            return;
        }
        self.last = Some(Instant::now());
        let pct = self
            .total_bytes
            .filter(|t| *t > 0.0)
            .map(|t| format!(" ({:.0} % of RAM)", p.transferred as f64 / t * 100.0))
            .unwrap_or_default();
        let line = format!(
            "[{:>6.1}s] {:<16} sent {:>10}{pct}  remaining {:>10}  dirty {:>6} pages/s  throttle {:>2} %",
            p.elapsed.as_secs_f64(),
            p.status.as_str(),
            HumanBytes(p.transferred as f64).to_string(),
            HumanBytes(p.remaining as f64).to_string(),
            p.dirty_pages_rate,
            p.throttle_percent
        );
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
    }
    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// Formats a metric value for people (the plan table's format).
pub fn fmt_metric(m: Metric, v: f64) -> String {
    crate::table::metric_value(m, v)
}

/// One line of the predicted-vs-actual comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub metric: Metric,
    pub predicted: Option<Interval>,
    pub actual: Option<f64>,
    /// (actual − predicted) / predicted, for TT, DT, TD and PERF (CPU and MEM are deltas around zero).
    pub relative_error: Option<f64>,
    pub inside_interval: Option<bool>,
    /// Why there is no actual value.
    pub note: Option<String>,
}

fn metric_label(m: Metric) -> &'static str {
    match m {
        Metric::TT => "TT   total time",
        Metric::DT => "DT   downtime",
        Metric::TD => "TD   data sent",
        Metric::PERF => "PERF performance",
        Metric::CPU => "CPU  extra src CPU",
        Metric::MEM => "MEM  extra src mem",
    }
}

pub fn compare(
    pred: Option<&AlgorithmPrediction>,
    actual: &[Option<f64>; 6],
    notes: &[Option<String>; 6],
) -> Vec<Comparison> {
    Metric::ALL
        .iter()
        .map(|&m| {
            let p = pred.map(|p| p.metric(m));
            let a = actual[m.index()];
            let (rel, inside) = match (p, a) {
                // A relative error only means something for positive metrics;
                // CPU and MEM are deltas around zero (shown as a difference).
                (Some(p), Some(a)) => (
                    (m.strictly_positive() && p.value.abs() > f64::EPSILON)
                        .then(|| (a - p.value) / p.value),
                    Some(a >= p.lo && a <= p.hi),
                ),
                _ => (None, None),
            };
            Comparison {
                metric: m,
                predicted: p,
                actual: a,
                relative_error: rel,
                inside_interval: inside,
                note: notes[m.index()].clone(),
            }
        })
        .collect()
}

pub fn render_comparison(algo: Algorithm, rows: &[Comparison]) -> String {
    let mut s = format!("Predicted vs actual ({algo}):\n");
    s += &format!(
        "  {:<19} {:>11} {:>25}  {:>11}  {:>8}  {}\n",
        "metric", "predicted", "90 % interval", "actual", "error", ""
    );
    for r in rows {
        let m = r.metric;
        let (pv, iv) = match r.predicted {
            Some(p) => (
                fmt_metric(m, p.value),
                format!("{} – {}", fmt_metric(m, p.lo), fmt_metric(m, p.hi)),
            ),
            None => ("-".into(), "-".into()),
        };
        let av = r
            .actual
            .map(|a| fmt_metric(m, a))
            .unwrap_or_else(|| "n/a".into());
        let err = match (r.relative_error, r.predicted, r.actual) {
            (Some(e), _, _) => format!("{:+.0} %", e * 100.0),
            (None, Some(p), Some(a)) if m == Metric::CPU => format!("{:+.0} pt", a - p.value),
            (None, Some(p), Some(a)) if m == Metric::MEM => format!("{:+.1} MiB", a - p.value),
            _ => String::new(),
        };
        let tag = match (r.inside_interval, &r.note) {
            (Some(true), _) => "inside".to_string(),
            (Some(false), _) => "OUTSIDE".to_string(),
            (None, Some(n)) => format!("({n})"),
            _ => String::new(),
        };
        s += &format!(
            "  {:<19} {:>11} {:>25}  {:>11}  {:>8}  {}\n",
            metric_label(m),
            pv,
            iv,
            av,
            err,
            tag
        );
    }
    s
}

/// The `migrate --json` object.
#[derive(Debug, Serialize)]
pub struct MigrateJson<'a> {
    pub migsight_migrate: u32,
    pub vm: String,
    pub algorithm: Algorithm,
    pub recommended: Option<Algorithm>,
    pub to: String,
    pub plan: Option<&'a PlanOutput>,
    pub outcome: OutcomeJson,
    pub comparison: Vec<Comparison>,
    pub outcome_row: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct OutcomeJson {
    pub converged: bool,
    pub status: String,
    pub total_time_ms: f64,
    pub downtime_ms: Option<f64>,
    pub transferred_bytes: f64,
    pub throttle_percent_max: u64,
    pub dirty_sync_count: u64,
    pub error: Option<String>,
    /// After a post-copy switch-over that failed: the guest's state and how to recover.
    pub recovery: Option<String>,
}

impl OutcomeJson {
    pub fn new(o: &MigrationOutcome) -> OutcomeJson {
        OutcomeJson {
            converged: o.converged,
            status: o.status.clone(),
            total_time_ms: o.total_time_ms,
            downtime_ms: o.downtime_ms,
            transferred_bytes: o.transferred_bytes,
            throttle_percent_max: o.throttle_percent_max,
            dirty_sync_count: o.dirty_sync_count,
            error: o.error.clone(),
            recovery: o.split.as_ref().map(|s| s.recovery.clone()),
        }
    }
}

/// One sentence on how the migration ended.
pub fn ending(o: &MigrationOutcome, source_status: &str) -> String {
    if o.converged {
        format!(
            "Migration completed in {} (downtime {}, {} sent{}).",
            HumanMs(o.total_time_ms),
            o.downtime_ms
                .map(|d| HumanMs(d).to_string())
                .unwrap_or_else(|| "?".into()),
            HumanBytes(o.transferred_bytes),
            if o.throttle_percent_max > 0 {
                format!(", CPU throttled up to {} %", o.throttle_percent_max)
            } else {
                String::new()
            }
        )
    } else if let Some(split) = &o.split {
        format!(
            "Migration FAILED after the post-copy switch-over (source: {}): {}",
            split.source_status, split.recovery
        )
    } else if o.failed {
        format!(
            "Migration FAILED: {}. Source VM status now: {source_status}.",
            o.error.as_deref().unwrap_or("no reason given"),
        )
    } else {
        format!(
            "Migration did NOT complete: {} ({}). The source VM keeps running (status: {source_status}).",
            o.status,
            o.error.as_deref().unwrap_or("no reason given"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_flags_intervals_and_missing_values() {
        let iv = |v: f64| Interval {
            value: v,
            lo: v * 0.5,
            hi: v * 2.0,
        };
        let p = AlgorithmPrediction {
            algorithm: Algorithm::Precopy,
            metrics: [iv(5000.0), iv(20.0), iv(3e8), iv(0.9), iv(30.0), iv(10.0)],
            p_converge: 0.9,
            explanation: vec![],
        };
        let mut notes: [Option<String>; 6] = Default::default();
        notes[Metric::PERF.index()] = Some("needs guest instrumentation".into());
        let rows = compare(
            Some(&p),
            &[
                Some(4000.0),
                Some(100.0),
                Some(3e8),
                None,
                Some(31.0),
                Some(0.0),
            ],
            &notes,
        );
        assert_eq!(rows[0].inside_interval, Some(true));
        assert!((rows[0].relative_error.unwrap() + 0.2).abs() < 1e-9);
        assert_eq!(rows[1].inside_interval, Some(false));
        assert_eq!(rows[3].actual, None);
        let text = render_comparison(Algorithm::Precopy, &rows);
        assert!(text.contains("OUTSIDE"), "{text}");
        assert!(text.contains("n/a"), "{text}");
        assert!(text.contains("guest instrumentation"), "{text}");
        assert_eq!(text.lines().count(), 8, "{text}");
        let none = compare(
            None,
            &[Some(1.0), None, None, None, None, None],
            &Default::default(),
        );
        assert!(render_comparison(Algorithm::Xbzrle, &none).contains(" - "));
    }
}
