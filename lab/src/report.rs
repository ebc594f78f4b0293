//! The sanity report of a lab dataset: what a reviewer looks at before
//! committing rows (`migsight lab --report data/lab.csv`).

use migsight_proto::csv::{Dataset, Sample};
use migsight_proto::feature::MIB;
use migsight_proto::stats::median;
use migsight_proto::{Algorithm, Feature, Metric};
use std::collections::BTreeMap;
use std::fmt::Write;

fn fmt(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map(|x| format!("{:.*}", digits, x / scale))
        .unwrap_or_else(|| "-".into())
}

/// Mean and sample standard deviation of at least two values.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Coefficient of variation of each (group, algorithm) with repeats, by metric.
fn repeat_cv(samples: &[Sample], m: Metric) -> Vec<f64> {
    let mut by: BTreeMap<(String, u8), Vec<f64>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.did_converge()) {
        if let (Some(g), Some(a), Some(v)) = (&s.group_id, s.algorithm, s.label(m)) {
            by.entry((g.clone(), a.code())).or_default().push(v);
        }
    }
    by.values()
        .filter(|v| v.len() >= 2)
        .filter_map(|v| {
            let (mean, sd) = mean_sd(v);
            (mean > 0.0).then(|| sd / mean)
        })
        .collect()
}

/// The pre-copy family: every round re-sends what the previous one left dirty.
const PRECOPY_FAMILY: [Algorithm; 3] = [
    Algorithm::Precopy,
    Algorithm::AutoConverge,
    Algorithm::Xbzrle,
];

/// Seconds of the first pre-copy round: `VM_size` at the bandwidth.
fn first_round_s(s: &Sample) -> Option<f64> {
    let size = s.features.get(Feature::VmSize)?;
    let bw = s.extra_number("bandwidth_bps")? / MIB;
    (bw > 0.0).then(|| size / bw)
}

/// The label of a row's CPU budget (empty when the lab did not record it).
fn budget_of(s: &Sample) -> String {
    match s.extra("cpu_budget").filter(|b| !b.is_empty()) {
        Some(b) => format!("CPU budget {b}"),
        None => "budget not recorded".into(),
    }
}

/// How much of `TD` the dirty rate's sampling error leaves uncertain in the
/// first re-sent round: `σ(VM_pdr) × first round / TD`, per converged row
/// of the pre-copy family, by algorithm and CPU budget.
fn resend_noise(samples: &[Sample]) -> Vec<(String, Vec<f64>)> {
    // Keyed by the algorithm's code first: CSAP order.
    let mut by: BTreeMap<(u8, String), Vec<f64>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.did_converge()) {
        let Some(a) = s.algorithm.filter(|a| PRECOPY_FAMILY.contains(a)) else {
            continue;
        };
        if let (Some(se), Some(t), Some(td)) = (
            s.extra_number("pdr_std_error"),
            first_round_s(s),
            s.label(Metric::TD),
        ) {
            if td > 0.0 {
                by.entry((a.code(), budget_of(s)))
                    .or_default()
                    .push(se * t * MIB / td);
            }
        }
    }
    by.into_iter()
        .map(|((code, budget), v)| {
            let name = Algorithm::from_code(code).map(|a| a.name()).unwrap_or("?");
            (format!("{name}, {budget}"), v)
        })
        .collect()
}

/// The spread of the first round's predicted re-send (`VM_pdr × first
/// round`, relative to `TD`) between repeated profiles of one state
/// (same group, algorithm and CPU budget): standard deviations, by budget.
fn resend_repeat_spread(samples: &[Sample]) -> Vec<(String, Vec<f64>)> {
    let mut runs: BTreeMap<(String, u8, String), Vec<f64>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.did_converge()) {
        if let (Some(g), Some(a), Some(pdr), Some(t), Some(td)) = (
            &s.group_id,
            s.algorithm,
            s.features.get(Feature::VmPdr),
            first_round_s(s),
            s.label(Metric::TD),
        ) {
            if PRECOPY_FAMILY.contains(&a) && td > 0.0 {
                runs.entry((g.clone(), a.code(), budget_of(s)))
                    .or_default()
                    .push(pdr * t * MIB / td);
            }
        }
    }
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for ((_, _, budget), v) in runs.into_iter().filter(|(_, v)| v.len() >= 2) {
        by.entry(budget).or_default().push(mean_sd(&v).1);
    }
    by.into_iter().collect()
}

/// `exp(E[ln |Z|])` for a standard normal `Z`: the gMRE of errors drawn
/// from `N(0, σ²)` is this times the geometric mean of `σ`.
const HALF_NORMAL_GEO_MEAN: f64 = 0.530;

/// One line per key: the median of its values in %, and with `floor` the
/// gMRE that normal errors of those sizes alone would give.
fn write_medians(out: &mut String, by: &[(String, Vec<f64>)], what: &str, floor: bool) {
    for (label, v) in by {
        let _ = write!(
            out,
            "  {label:<38} median {:.2}% over {} {what}",
            median(&mut v.clone()).unwrap_or(0.0) * 100.0,
            v.len()
        );
        let logs: Vec<f64> = v.iter().filter(|x| **x > 0.0).map(|x| x.ln()).collect();
        if floor && !logs.is_empty() {
            let geo = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
            let _ = write!(
                out,
                "; gMRE floor {:.2}%",
                HALF_NORMAL_GEO_MEAN * geo * 100.0
            );
        }
        let _ = writeln!(out);
    }
}

/// Renders the report as text.
pub fn render(d: &Dataset) -> String {
    let mut out = String::new();
    let s = &d.samples;
    let _ = writeln!(out, "rows: {}", s.len());
    // One table per QEMU release: what it counts differs (multifd-zstd's
    // bytes on 7.2 vs 10.0) and each offers other algorithms.
    // Keyed by (major, minor) so 7.2 comes before 10.0.
    let mut versions: BTreeMap<(u32, u32), Vec<&Sample>> = BTreeMap::new();
    for x in s {
        let v = x
            .extra("qemu_version")
            .and_then(|v| {
                let mut it = v.split('.');
                Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
            })
            .unwrap_or((0, 0));
        versions.entry(v).or_default().push(x);
    }
    for (&(major, minor), rows) in &versions {
        let version = if (major, minor) == (0, 0) {
            "unknown".to_string()
        } else {
            format!("{major}.{minor}")
        };
        let _ = writeln!(out, "\nQEMU {version}: {} rows", rows.len());
        let _ = writeln!(
            out,
            "{:<17} {:>5} {:>10} {:>9} {:>10} {:>8} {:>8}",
            "algorithm", "n", "TT med s", "DT med ms", "TD med MiB", "PERF med", "not conv"
        );
        for a in Algorithm::ALL {
            let of: Vec<&Sample> = rows
                .iter()
                .copied()
                .filter(|x| x.algorithm == Some(a))
                .collect();
            if of.is_empty() {
                continue;
            }
            let conv: Vec<&Sample> = of.iter().copied().filter(|x| x.did_converge()).collect();
            let col =
                |m: Metric| median(&mut conv.iter().filter_map(|x| x.label(m)).collect::<Vec<_>>());
            let nc = of.len() - conv.len();
            let _ = writeln!(
                out,
                "{:<17} {:>5} {:>10} {:>9} {:>10} {:>8} {:>7.0}%",
                a.name(),
                of.len(),
                fmt(col(Metric::TT), 1000.0, 1),
                fmt(col(Metric::DT), 1.0, 0),
                fmt(col(Metric::TD), MIB, 0),
                fmt(col(Metric::PERF), 1.0, 2),
                100.0 * nc as f64 / of.len() as f64
            );
        }
        let range = |f: Feature| {
            let v: Vec<f64> = rows.iter().filter_map(|x| x.features.get(f)).collect();
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{lo:.1}–{hi:.1}")
            }
        };
        let _ = writeln!(
            out,
            "ranges: VM_size {} MiB, VM_ptr {} MiB/s, VM_pdr {} MiB/s, VM_wss {} MiB",
            range(Feature::VmSize),
            range(Feature::VmPtr),
            range(Feature::VmPdr),
            range(Feature::VmWss)
        );
    }
    let mut by_workload: BTreeMap<String, usize> = BTreeMap::new();
    for x in s {
        let w = x
            .extra("workload")
            .map(str::to_string)
            .or_else(|| x.workload_type.map(|c| format!("type {c}")))
            .unwrap_or_else(|| "?".into());
        *by_workload.entry(w).or_default() += 1;
    }
    let _ = writeln!(out, "\nrows per workload:");
    for (w, n) in &by_workload {
        let _ = writeln!(out, "  {w:<12} {n}");
    }
    // A group is complete when it has every algorithm its QEMU release
    // shows anywhere in the file (the lab's default: all the QEMU offers).
    let version_of = |x: &Sample| x.extra("qemu_version").unwrap_or("").to_string();
    let mut offered: BTreeMap<String, Vec<Algorithm>> = BTreeMap::new();
    let mut groups: BTreeMap<&str, (String, Vec<Algorithm>)> = BTreeMap::new();
    for x in s {
        if let (Some(g), Some(a)) = (x.group_id.as_deref(), x.algorithm) {
            let v = version_of(x);
            let o = offered.entry(v.clone()).or_default();
            if !o.contains(&a) {
                o.push(a);
            }
            groups.entry(g).or_insert_with(|| (v, Vec::new())).1.push(a);
        }
    }
    let complete = groups
        .values()
        .filter(|(v, have)| offered[v].iter().all(|a| have.contains(a)))
        .count();
    let _ = writeln!(
        out,
        "\ngroups: {} ({} with every algorithm their QEMU offered in this file)",
        groups.len(),
        complete
    );
    for m in [Metric::TT, Metric::DT, Metric::TD, Metric::PERF] {
        let cv = repeat_cv(s, m);
        if !cv.is_empty() {
            let _ = writeln!(
                out,
                "repeat noise {}: median CV {:.1}% over {} (state, algorithm) pairs",
                m.name(),
                median(&mut cv.clone()).unwrap_or(0.0) * 100.0,
                cv.len()
            );
        }
    }
    let noise = resend_noise(s);
    if !noise.is_empty() {
        let _ = writeln!(
            out,
            "\ndirty-rate sampling error carried into TD (pre-copy family, converged rows;\n\
             σ(VM_pdr) × first round / TD: what a model inherits from that feature alone;\n\
             the gMRE floor is what errors of that size alone give, to compare with `migsight eval`):"
        );
        write_medians(&mut out, &noise, "rows", true);
    }
    let spread = resend_repeat_spread(s);
    if !spread.is_empty() {
        let _ = writeln!(
            out,
            "repeated profiles of one state: spread (SD) of VM_pdr × first round, relative to TD:"
        );
        write_medians(&mut out, &spread, "(state, algorithm) pairs", false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_and_medians() {
        let text = "capability,qemu_tt,qemu_dt,qemu_td,performance,converged,group_id\n\
0,1000,10,1048576,1,1,g1\n0,3000,30,3145728,1,1,g1\n0,60000,,9e9,0.5,0,g2\n4,2000,20,2097152,0.9,1,g1\n";
        let d = migsight_proto::csv::read(text.as_bytes(), "t.csv").unwrap();
        let r = render(&d);
        assert!(r.contains("rows: 4"), "{r}");
        let pre = r.lines().find(|l| l.starts_with("precopy")).unwrap();
        assert!(pre.contains(" 3 "), "{pre}");
        assert!(pre.contains("2.0"), "median TT of converged rows: {pre}");
        assert!(pre.contains("33%"), "{pre}");
        assert!(r.contains("repeat noise TT: median CV 70.7%"), "{r}");
        assert!(
            !r.contains("sampling error"),
            "no pdr_std_error column: {r}"
        );
    }

    #[test]
    fn report_carries_the_dirty_rate_error_into_td_by_budget() {
        // 100 MiB at 10 MiB/s: a 10-s first round. σ(VM_pdr) 0.5 MiB/s ⇒ 5 MiB
        // of 200 MiB = 2.5 %; with four times the budget, 0.25 MiB/s ⇒ 1.25 %.
        // Repeats: VM_pdr 1 and 2 MiB/s ⇒ 10 and 20 MiB of 200: SD 3.54 %.
        let text = "capability,VM_size,VM_pdr,qemu_td,converged,group_id,bandwidth_bps,pdr_std_error,cpu_budget\n\
0,100,1,209715200,1,g1,10485760,0.5,0.02\n\
0,100,2,209715200,1,g1,10485760,0.5,0.02\n\
0,100,1,209715200,1,g1,10485760,0.25,0.08\n\
3,100,1,209715200,1,g1,10485760,0.25,0.08\n";
        let d = migsight_proto::csv::read(text.as_bytes(), "t.csv").unwrap();
        let r = render(&d);
        let line = |a: &str, b: &str| r.lines().any(|l| l.contains(a) && l.contains(b));
        assert!(line("CPU budget 0.02", "median 2.50% over 2 rows"), "{r}");
        assert!(
            line("CPU budget 0.08", "median 1.25% over 1 rows"),
            "compress is not pre-copy: {r}"
        );
        assert!(line("CPU budget 0.02", "median 3.54% over 1 (state"), "{r}");
        assert!(
            !line("CPU budget 0.08", "(state"),
            "one row per state at 0.08: {r}"
        );
    }
}
