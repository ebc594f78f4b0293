//! The sanity report of a lab dataset: what a reviewer looks at before
//! committing rows (`migsight lab --report data/lab.csv`).

use migsight_proto::csv::{Dataset, Sample};
use migsight_proto::feature::MIB;
use migsight_proto::{Algorithm, Metric};
use std::collections::BTreeMap;
use std::fmt::Write;

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn fmt(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map(|x| format!("{:.*}", digits, x / scale))
        .unwrap_or_else(|| "-".into())
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
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
            (mean > 0.0).then(|| var.sqrt() / mean)
        })
        .collect()
}

/// Renders the report as text.
pub fn render(d: &Dataset) -> String {
    let mut out = String::new();
    let s = &d.samples;
    let _ = writeln!(out, "rows: {}", s.len());
    let _ = writeln!(
        out,
        "\n{:<14} {:>5} {:>10} {:>9} {:>10} {:>8} {:>8}",
        "algorithm", "n", "TT med s", "DT med ms", "TD med MiB", "PERF med", "not conv"
    );
    for a in Algorithm::ALL {
        let rows: Vec<&Sample> = s.iter().filter(|x| x.algorithm == Some(a)).collect();
        let conv: Vec<&&Sample> = rows.iter().filter(|x| x.did_converge()).collect();
        let col = |m: Metric| median(conv.iter().filter_map(|x| x.label(m)).collect());
        let nc = rows.len() - conv.len();
        let _ = writeln!(
            out,
            "{:<14} {:>5} {:>10} {:>9} {:>10} {:>8} {:>7.0}%",
            a.name(),
            rows.len(),
            fmt(col(Metric::TT), 1000.0, 1),
            fmt(col(Metric::DT), 1.0, 0),
            fmt(col(Metric::TD), MIB, 0),
            fmt(col(Metric::PERF), 1.0, 2),
            if rows.is_empty() {
                0.0
            } else {
                100.0 * nc as f64 / rows.len() as f64
            }
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
    let mut groups: BTreeMap<&str, Vec<Algorithm>> = BTreeMap::new();
    for x in s {
        if let (Some(g), Some(a)) = (x.group_id.as_deref(), x.algorithm) {
            groups.entry(g).or_default().push(a);
        }
    }
    let complete = groups
        .values()
        .filter(|v| Algorithm::ALL.iter().all(|a| v.contains(a)))
        .count();
    let _ = writeln!(
        out,
        "\ngroups: {} ({} with all five algorithms)",
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
                median(cv.clone()).unwrap_or(0.0) * 100.0,
                cv.len()
            );
        }
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
    }
}
