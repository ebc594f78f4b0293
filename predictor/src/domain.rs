//! A model's domain of validity: what its rows covered, and how far a
//! request lies outside.
//!
//! The lab's guests are small, its links slow and its accelerator TCG; the
//! hosts migsight is for are not. A prediction outside the training data
//! says so (`Prediction::out_of_domain`, in words an operator can act on)
//! and its intervals widen with the distance ([`widening`]): far outside,
//! the trees' corrections are extrapolated from the edge of the data, and
//! only the physical baseline keeps scaling.

use crate::data::Row;
use crate::inputs;
use migsight_proto::{Feature, Metric};
use serde::{Deserialize, Serialize};

/// The inputs whose training range is recorded and checked: the memory to
/// send, the bandwidth, the dirty rate, and dirty rate over bandwidth
/// (whether a migration converges).
pub const CHECKED: [usize; 4] = [
    Feature::VmSize as usize,
    Feature::VmPtr as usize,
    Feature::VmPdr as usize,
    inputs::DIRTY_RATIO,
];

/// Training range of one input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// Input column ([`inputs::name`]).
    pub column: usize,
    pub lo: f64,
    pub hi: f64,
}

/// A QEMU release and accelerator with training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Platform {
    /// `7.2`, `10.0` (`unknown` when the rows did not say).
    pub release: String,
    /// `tcg`, `kvm` (`unknown` when the rows did not say).
    pub accel: String,
    pub rows: u64,
}

/// What a set of training rows covered.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Domain {
    pub rows: u64,
    pub ranges: Vec<Range>,
    pub platforms: Vec<Platform>,
    /// Training points in the joint space of [`joint_point`] (at most
    /// [`MAX_POINTS`], spread over the rows): a VM as large as the largest
    /// in training but on a link slower than any row of that size is
    /// outside the data even when each input alone is inside.
    pub points: Vec<[f32; 3]>,
}

/// Most joint points kept.
pub const MAX_POINTS: usize = 2000;

/// How far a request is outside one input's range.
#[derive(Debug, Clone, PartialEq)]
pub struct Excess {
    pub column: usize,
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    /// `value / hi` above the range, `lo / value` below it (≥ 1).
    pub ratio: f64,
}

/// A request's point in the joint space: ln VM size and ln bandwidth in
/// units of a factor of 2, and dirty rate / bandwidth in units of 0.25.
pub fn joint_point(x: &[f64]) -> Option<[f32; 3]> {
    let size = x[Feature::VmSize.index()];
    let bw = x[Feature::VmPtr.index()];
    let ratio = x[inputs::DIRTY_RATIO];
    (size > 0.0 && bw > 0.0 && ratio.is_finite()).then(|| {
        [
            (size.ln() / std::f64::consts::LN_2) as f32,
            (bw.ln() / std::f64::consts::LN_2) as f32,
            (ratio / 0.25) as f32,
        ]
    })
}

/// `major.minor` of a row's release.
fn release_of(r: &Row) -> String {
    r.qemu
        .map(|(a, b)| format!("{a}.{b}"))
        .unwrap_or_else(|| "unknown".into())
}

impl Domain {
    /// What `rows` cover.
    pub fn of(rows: &[&Row]) -> Domain {
        let ranges = CHECKED
            .iter()
            .filter_map(|&c| {
                let v: Vec<f64> = rows
                    .iter()
                    .map(|r| r.x[c])
                    .filter(|v| v.is_finite())
                    .collect();
                (!v.is_empty()).then(|| Range {
                    column: c,
                    lo: v.iter().cloned().fold(f64::INFINITY, f64::min),
                    hi: v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                })
            })
            .collect();
        let mut platforms: Vec<Platform> = Vec::new();
        for r in rows {
            let release = release_of(r);
            let accel = r.accel.clone().unwrap_or_else(|| "unknown".into());
            match platforms
                .iter_mut()
                .find(|p| p.release == release && p.accel == accel)
            {
                Some(p) => p.rows += 1,
                None => platforms.push(Platform {
                    release,
                    accel,
                    rows: 1,
                }),
            }
        }
        platforms.sort_by(|a, b| (&a.release, &a.accel).cmp(&(&b.release, &b.accel)));
        let all: Vec<[f32; 3]> = rows.iter().filter_map(|r| joint_point(&r.x)).collect();
        let step = all.len().div_ceil(MAX_POINTS).max(1);
        Domain {
            rows: rows.len() as u64,
            ranges,
            platforms,
            points: all.into_iter().step_by(step).collect(),
        }
    }

    /// Whether a loaded domain is usable (a hostile file cannot make NaN ranges).
    pub fn is_valid(&self) -> bool {
        self.ranges.iter().all(|r| {
            r.column < inputs::INPUT_COUNT && r.lo.is_finite() && r.hi.is_finite() && r.lo <= r.hi
        }) && self.points.len() <= MAX_POINTS
            && self.points.iter().flatten().all(|v| v.is_finite())
    }

    /// The inputs of `x` outside their training range.
    pub fn excess(&self, x: &[f64]) -> Vec<Excess> {
        self.ranges
            .iter()
            .filter_map(|r| {
                let v = x[r.column];
                if !v.is_finite() {
                    return None;
                }
                let ratio = if v > r.hi && r.hi > 0.0 {
                    v / r.hi
                } else if v < r.lo && v > 0.0 {
                    r.lo / v
                } else {
                    return None;
                };
                // Within 5 % of the edge is the edge.
                (ratio > 1.05).then_some(Excess {
                    column: r.column,
                    value: v,
                    lo: r.lo,
                    hi: r.hi,
                    ratio,
                })
            })
            .collect()
    }

    /// Distance from `x` to the nearest training point in the joint space
    /// (1 = a factor of 2 in size or bandwidth, or 0.25 of dirty ratio);
    /// `None` without points or without the inputs.
    pub fn joint_distance(&self, x: &[f64]) -> Option<f64> {
        let p = joint_point(x)?;
        self.points
            .iter()
            .map(|q| {
                (0..3)
                    .map(|k| f64::from(p[k] - q[k]).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .min_by(|a, b| a.total_cmp(b))
    }

    /// Whether rows of this release and accelerator were trained on.
    pub fn has_platform(&self, release: &str, accel: Option<&str>) -> bool {
        self.platforms
            .iter()
            .any(|p| p.release == release && accel.is_none_or(|a| a == p.accel))
    }
}

/// How much a metric's interval widens, in its transformed (log) space, per
/// unit of ln(distance ratio) outside the training range; see [`widening`].
///
/// Calibrated on held-out extrapolation splits of `data/` (`migsight eval
/// --holdout 'VM_size>=…'`, `'VM_ptr>=…'`, `'VM_pdr>=…'`): the smallest
/// slope that brought the held-out rows' 90 % intervals to at least 90 %
/// coverage, rounded up (predictor/README.md, "Outside the training data").
pub fn widening_slope(metric: Metric) -> f64 {
    match metric {
        Metric::TT | Metric::TD => 0.05,
        Metric::DT => 0.25,
        _ => 0.1,
    }
}

/// The extra half-width, in `metric`'s transformed space, for a request
/// `excess` outside the training range: the slope times the sum of the
/// inputs' ln(ratio).
pub fn widening(metric: Metric, excess: &[Excess]) -> f64 {
    let s: f64 = excess.iter().map(|e| e.ratio.ln()).sum();
    widening_slope(metric) * s
}

/// "VM_size 65,536 MiB is 77× the largest in training (846 MiB)".
pub fn describe(e: &Excess) -> String {
    let name = inputs::name(e.column);
    let unit = inputs::unit(e.column);
    let what = match e.column {
        c if c == Feature::VmSize.index() => "VM",
        c if c == Feature::VmPtr.index() => "bandwidth",
        c if c == Feature::VmPdr.index() => "dirty rate",
        _ => "value",
    };
    let fmt = |v: f64| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else if v >= 1.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.3}")
        }
    };
    if e.value > e.hi {
        format!(
            "{name} {} {unit} is {:.1}× the largest {what} in training ({} {unit})",
            fmt(e.value),
            e.ratio,
            fmt(e.hi)
        )
    } else {
        format!(
            "{name} {} {unit} is {:.1}× below the smallest {what} in training ({} {unit})",
            fmt(e.value),
            e.ratio,
            fmt(e.lo)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migsight_proto::{Algorithm, FeatureVector};

    fn row(size: f64, bw: f64, pdr: f64) -> Row {
        let fv = FeatureVector::new()
            .with(Feature::VmSize, size)
            .with(Feature::VmPtr, bw)
            .with(Feature::VmPdr, pdr);
        Row {
            algorithm: Algorithm::Precopy,
            features: fv,
            downtime_limit_ms: 300.0,
            qemu: Some((7, 2)),
            accel: Some("tcg".into()),
            x: inputs::row(&fv, Algorithm::Precopy, 300.0, Some(7.0)).to_vec(),
            labels: [None; 6],
            converged: true,
            group: "g".into(),
            has_group: true,
            line: 0,
        }
    }

    #[test]
    fn requests_outside_the_rows_are_measured_and_described() {
        let rows = [row(100.0, 10.0, 1.0), row(846.0, 100.0, 20.0)];
        let refs: Vec<&Row> = rows.iter().collect();
        let d = Domain::of(&refs);
        assert!(d.is_valid());
        assert_eq!(d.platforms.len(), 1);
        assert!(d.has_platform("7.2", Some("tcg")) && !d.has_platform("10.0", None));
        let inside = row(500.0, 50.0, 5.0);
        assert!(d.excess(&inside.x).is_empty());
        let big = row(65536.0, 1200.0, 900.0);
        let e = d.excess(&big.x);
        let size = e
            .iter()
            .find(|e| e.column == Feature::VmSize.index())
            .unwrap();
        assert!((size.ratio - 65536.0 / 846.0).abs() < 1e-9);
        let text = describe(size);
        assert!(
            text.contains("VM_size 65536 MiB is 77.5× the largest VM in training (846 MiB)"),
            "{text}"
        );
        assert!(
            widening(Metric::TT, &e) > widening(Metric::TT, &d.excess(&row(1000.0, 50.0, 5.0).x))
        );
        assert_eq!(widening(Metric::TD, &[]), 0.0);
        let slow = row(10.0, 1.0, 0.1);
        let e = d.excess(&slow.x);
        assert!(describe(&e[0]).contains("below the smallest"), "{e:?}");
        // Each input inside, the combination not: a large VM on a slow link.
        let corner = row(846.0, 10.0, 1.0);
        assert!(d.joint_distance(&corner.x).unwrap() > 1.0);
        assert!(d.joint_distance(&rows[1].x).unwrap() < 1e-6);
    }
}
