//! Top feature contributions in words.
//!
//! For trees: path attribution (each split's change of node value credited to
//! its input, summed over trees); for the linear family: weight × standardized
//! value. Inputs are pooled into what an operator can act on (the analytic
//! estimate and R.PTR count towards "dirty rate vs bandwidth"), and each
//! pooled effect is reported as a percentage change of the metric relative to
//! the model's baseline (log-space contributions, so `e^c − 1`).

use super::metric::{AlgorithmModel, MetricStatus};
use crate::family::Regressor;
use crate::inputs::{self, INPUT_COUNT};
use migsight_proto::{Feature, FeatureVector, Metric};

const GROUPS: usize = 10;

fn group_of(i: usize) -> usize {
    use Feature::*;
    if i < Feature::COUNT {
        return match Feature::ALL[i] {
            VmPdr | VmPtr => 0,
            VmSize => 1,
            VmWss => 2,
            VmWse => 3,
            VmNwse => 4,
            VmMwpp => 5,
            VmCpuUtil | VmPmuInstr => 6,
            VmNetUtil => 7,
            SrcCpuAvail | DstCpuAvail | SrcMemAvail | DstMemAvail => 8,
        };
    }
    match i - inputs::COMPOSED_START {
        0 => 0, // R.PTR
        1 => 1, // NWSS
        2 => 3, // E.WSS
        3 => 4, // E.NWSS
        4 => 6, // THR.BF
        5 => 5, // DLTC.BF
        _ => {
            if i == inputs::DOWNTIME_LIMIT {
                9
            } else {
                0 // analytic estimates, dirty ratio
            }
        }
    }
}

fn num(v: f64) -> String {
    if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn phrase(g: usize, fv: &FeatureVector, x: &[f64]) -> String {
    let get = |f: Feature| fv.get(f).map(num).unwrap_or_else(|| "unknown".into());
    match g {
        // The analytic estimate pooled here also depends on the memory size.
        0 => {
            let base = match fv.get(Feature::VmPdr) {
                Some(_) => format!(
                    "dirty rate {} MiB/s vs bandwidth {} MiB/s",
                    get(Feature::VmPdr),
                    get(Feature::VmPtr)
                ),
                None => format!("bandwidth {} MiB/s", get(Feature::VmPtr)),
            };
            match fv.get(Feature::VmSize) {
                Some(_) => format!("{base} for {} MiB of memory", get(Feature::VmSize)),
                None => base,
            }
        }
        1 => format!("memory size {} MiB", get(Feature::VmSize)),
        2 => format!("working set {} MiB", get(Feature::VmWss)),
        3 => format!("working-set entropy {}", get(Feature::VmWse)),
        4 => format!("cold-memory entropy {}", get(Feature::VmNwse)),
        5 => format!("{} modified bytes per dirty page", get(Feature::VmMwpp)),
        6 => format!("VM CPU use {} %", get(Feature::VmCpuUtil)),
        7 => format!("VM network use {} %", get(Feature::VmNetUtil)),
        8 => format!(
            "host load (source idle CPU {} %)",
            get(Feature::SrcCpuAvail)
        ),
        _ => format!("downtime limit {} ms", num(x[inputs::DOWNTIME_LIMIT])),
    }
}

fn metric_words(m: Metric) -> &'static str {
    match m {
        Metric::TT => "total time",
        Metric::DT => "downtime",
        Metric::TD => "transferred data",
        Metric::PERF => "performance",
        Metric::CPU => "source CPU",
        Metric::MEM => "source memory",
    }
}

/// A calibrated analytic base's share: the estimate's departure from the
/// typical training value, credited to the analytic input.
fn base_contribution(base: &Regressor, x: &[f64], c: &mut [f64; INPUT_COUNT]) {
    match *base {
        Regressor::Analytic {
            input, fallback, ..
        } if x[input].is_finite() => {
            c[input] += base.predict(x) - fallback;
        }
        _ => {}
    }
}

fn contributions(reg: &Regressor, x: &[f64]) -> Option<[f64; GROUPS]> {
    let mut c = [0.0; INPUT_COUNT];
    match reg {
        Regressor::Gbdt(g) => {
            g.contributions(x, &mut c);
        }
        Regressor::Boosted { base, trees } => {
            trees.contributions(x, &mut c);
            base_contribution(base, x, &mut c);
        }
        Regressor::Residual { base, linear } => {
            linear_contributions(linear, x, &mut c);
            base_contribution(base, x, &mut c);
        }
        Regressor::Linear(l) => linear_contributions(l, x, &mut c),
        _ => return None,
    }
    let mut g = [0.0; GROUPS];
    for (i, v) in c.iter().enumerate() {
        g[group_of(i)] += v;
    }
    Some(g)
}

fn linear_contributions(l: &crate::linear::Linear, x: &[f64], c: &mut [f64]) {
    for k in 0..l.weights.len() {
        let col = l.scaler.cols[k];
        let v = if x[col].is_finite() {
            x[col]
        } else {
            l.scaler.fill[k]
        };
        c[col] += l.weights[k] * (v - l.scaler.mean[k]) / l.scaler.scale[k];
    }
}

/// Sentences for one algorithm, most important first.
pub fn explain(am: &AlgorithmModel, x: &[f64], fv: &FeatureVector) -> Vec<String> {
    let mut out = Vec::new();
    for (metric, top) in [(Metric::TT, 2usize), (Metric::DT, 1)] {
        let mm = &am.metrics[metric.index()];
        match &mm.regressor {
            Regressor::Analytic { input, offset, .. }
                if x[*input].is_finite() && metric == Metric::TT =>
            {
                out.push(format!(
                    "{} gives a pre-copy series estimate of {:.1} s (calibrated ×{:.2})",
                    phrase(0, fv, x),
                    x[*input].exp() / 1000.0,
                    offset.exp()
                ));
            }
            reg => {
                let Some(g) = contributions(reg, x) else {
                    continue;
                };
                let mut idx: Vec<usize> = (0..GROUPS).collect();
                idx.sort_by(|a, b| g[*b].abs().total_cmp(&g[*a].abs()));
                for &k in idx.iter().take(top) {
                    let effect = g[k].exp() - 1.0;
                    if effect.abs() < 0.05 {
                        continue;
                    }
                    let dir = if effect > 0.0 { "drives" } else { "holds" };
                    let how = if effect > 0.0 { "up" } else { "down" };
                    out.push(format!(
                        "{} {dir} {} {how} ({:+.0} % vs the training baseline)",
                        phrase(k, fv, x),
                        metric_words(metric),
                        effect * 100.0
                    ));
                }
            }
        }
    }
    for mm in &am.metrics {
        if mm.status != MetricStatus::Fitted {
            if let Some(n) = &mm.note {
                out.push(n.clone());
            }
        }
    }
    out
}
