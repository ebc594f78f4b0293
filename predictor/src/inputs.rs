//! The model's input columns: the 14 CSAP features, the 6 composed features,
//! the downtime limit, the analytic estimates of the algorithm's series, and
//! the source's QEMU major version.
//!
//! A row is a fixed-size `[f64; INPUT_COUNT]`; an absent value is `NaN`
//! (trees route it by a learned default direction, the SVR and linear models
//! impute the training median). `VM_ptr` is the migration bandwidth: when a
//! request gives `bandwidth_bps`, it replaces the feature vector's `VM_ptr`.

use crate::analytic;
use migsight_proto::feature::MIB;
use migsight_proto::{Algorithm, ComposedFeatures, Feature, FeatureVector};
use serde::{Deserialize, Serialize};

/// Number of input columns.
pub const INPUT_COUNT: usize = Feature::COUNT + 6 + 1 + 13;

/// Index of the first composed feature.
pub const COMPOSED_START: usize = Feature::COUNT;
/// Index of the downtime limit.
pub const DOWNTIME_LIMIT: usize = Feature::COUNT + 6;
/// Index of ln(analytic total time, ms).
pub const A_TT: usize = DOWNTIME_LIMIT + 1;
/// Index of ln(analytic downtime, ms).
pub const A_DT: usize = DOWNTIME_LIMIT + 2;
/// Index of ln(analytic transferred data, bytes).
pub const A_TD: usize = DOWNTIME_LIMIT + 3;
/// Index of the analytic convergence flag (1 converges, 0 not).
pub const A_CONV: usize = DOWNTIME_LIMIT + 4;
/// Index of dirty rate / bandwidth.
pub const DIRTY_RATIO: usize = DOWNTIME_LIMIT + 5;
/// Index of ln(total time, ms) of the series with saturating dirtying
/// ([`analytic::Dirtying::Saturating`]): the base of gbdt's TT.
pub const S_TT: usize = DOWNTIME_LIMIT + 6;
/// Index of ln(downtime, ms), saturating series.
pub const S_DT: usize = DOWNTIME_LIMIT + 7;
/// Index of ln(transferred data, bytes), saturating series.
pub const S_TD: usize = DOWNTIME_LIMIT + 8;
/// Index of ln(ms) of the model's own transferred-data prediction sent at
/// the bandwidth: an input of TT only, filled by
/// [`crate::model::AlgorithmModel::predict_metrics`] (and, in training, from
/// TD's out-of-fold predictions). Measured on this lab, `TT = −193 ms +
/// 0.996 × TD/bandwidth` to 0.3 % gMRE: TT is mostly TD.
pub const TD_TIME: usize = DOWNTIME_LIMIT + 9;
/// Index of the source QEMU's major version (7, 10, …; NaN when unknown):
/// what QEMU counts and meters differs between releases (QEMU 7.2 reports
/// and rate-limits multifd-zstd's uncompressed bytes, 10.0 the compressed
/// ones; 9.1 removed `compress`), so one model serves every version.
pub const QEMU_MAJOR: usize = DOWNTIME_LIMIT + 10;
/// Index of ln(ms) of the physical baseline of total time ([`baseline`]).
/// The baselines are not inputs the trees split on: they are the scale the
/// TT/DT/TD models correct (`ln y − ln baseline`), so predictions keep
/// scaling with the memory to send and the bandwidth outside the training
/// range, whatever subset of inputs a model was given.
pub const B_TT: usize = DOWNTIME_LIMIT + 11;
/// Index of ln(ms) of the downtime baseline.
pub const B_DT: usize = DOWNTIME_LIMIT + 12;
/// Index of ln(bytes) of the transferred-data baseline.
pub const B_TD: usize = DOWNTIME_LIMIT + 13;
/// The baseline columns: always computed, never masked, never split on.
pub const BASELINES: [usize; 3] = [B_TT, B_DT, B_TD];

/// One input column, self-described in the model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub name: String,
    pub unit: String,
    pub description: String,
}

/// Name of input column `i`.
pub fn name(i: usize) -> &'static str {
    const EXTRA: [&str; 14] = [
        "downtime_limit_ms",
        "A.TT",
        "A.DT",
        "A.TD",
        "A.CONV",
        "DIRTY.RATIO",
        "S.TT",
        "S.DT",
        "S.TD",
        "TD.TIME",
        "qemu_major",
        "B.TT",
        "B.DT",
        "B.TD",
    ];
    if i < Feature::COUNT {
        Feature::ALL[i].column()
    } else if i < DOWNTIME_LIMIT {
        ComposedFeatures::NAMES[i - COMPOSED_START]
    } else {
        EXTRA[i - DOWNTIME_LIMIT]
    }
}

/// Unit of input column `i`.
pub fn unit(i: usize) -> &'static str {
    const COMPOSED: [&str; 6] = ["MiB", "MiB", "MiB", "MiB", "MiB/s", "MiB"];
    const EXTRA: [&str; 14] = [
        "ms",
        "ln(ms)",
        "ln(ms)",
        "ln(bytes)",
        "0/1",
        "ratio",
        "ln(ms)",
        "ln(ms)",
        "ln(bytes)",
        "ln(ms)",
        "version",
        "ln(ms)",
        "ln(ms)",
        "ln(bytes)",
    ];
    if i < Feature::COUNT {
        Feature::ALL[i].unit()
    } else if i < DOWNTIME_LIMIT {
        COMPOSED[i - COMPOSED_START]
    } else {
        EXTRA[i - DOWNTIME_LIMIT]
    }
}

/// Description of input column `i`.
pub fn description(i: usize) -> &'static str {
    if i < Feature::COUNT {
        return Feature::ALL[i].description();
    }
    match i {
        DOWNTIME_LIMIT => "QEMU downtime-limit of the migration",
        A_TT => "analytic estimate of total time (the algorithm's series: pre-copy, post-copy, or pre-copy of the zstd-compressed pages)",
        A_DT => "analytic estimate of downtime",
        A_TD => "analytic estimate of transferred data",
        A_CONV => "whether the analytic pre-copy series converges",
        DIRTY_RATIO => "page dirty rate divided by the migration bandwidth",
        S_TT => "total time of the series with saturating dirtying (re-dirtied pages sent once)",
        S_DT => "downtime of the series with saturating dirtying",
        S_TD => "transferred data of the series with saturating dirtying",
        TD_TIME => "the model's transferred-data prediction over the bandwidth (TT only)",
        QEMU_MAJOR => "major version of the source QEMU",
        B_TT => "baseline of total time: the saturating series with documented fallbacks (working set = VM size, dirty rate = 0); the scale TT is corrected from, not an input",
        B_DT => "baseline of downtime (same series); the scale DT is corrected from, not an input",
        B_TD => "baseline of transferred data (same series); the scale TD is corrected from, not an input",
        _ => "composed feature (see migsight_proto::ComposedFeatures)",
    }
}

/// Every input column a model may split on (all but the baselines).
pub fn default_allowed() -> Vec<usize> {
    (0..INPUT_COUNT)
        .filter(|i| !BASELINES.contains(i))
        .collect()
}

/// All input specs.
pub fn specs() -> Vec<InputSpec> {
    (0..INPUT_COUNT)
        .map(|i| InputSpec {
            name: name(i).to_string(),
            unit: unit(i).to_string(),
            description: description(i).to_string(),
        })
        .collect()
}

/// Index of an input column by name; also accepts the group names
/// `raw`, `composed`, `analytic` (returns several).
pub fn resolve(name_or_group: &str) -> Option<Vec<usize>> {
    let s = name_or_group.trim();
    match s {
        "raw" => return Some((0..Feature::COUNT).collect()),
        "composed" => return Some((COMPOSED_START..DOWNTIME_LIMIT).collect()),
        "analytic" => return Some((A_TT..=TD_TIME).collect()),
        _ => {}
    }
    (0..INPUT_COUNT).find(|&i| name(i) == s).map(|i| vec![i])
}

/// The share of a page's bytes left after zstd, from its normalised byte
/// entropy (0–1): entropy is a lower bound on bits per byte, and level-1
/// zstd lands near it on the lab's pages; absent entropy counts as
/// incompressible (the estimate never claims a gain it cannot see).
fn compressed_share(entropy: Option<f64>) -> f64 {
    entropy.unwrap_or(1.0).clamp(0.05, 1.0)
}

/// What `algorithm` does to the pre-copy series ([`analytic::Dynamics`]),
/// from the features that say it:
///
/// - `auto-converge`: QEMU's throttle (20 %, +10 %, triggered above 50 %);
/// - `xbzrle`: a re-sent page costs its modified bytes (`VM_mwpp` of 4,096,
///   plus a tenth for the encoding and the pages the 64 MiB cache misses);
///   absent `VM_mwpp`, whole pages;
/// - `compress` (zlib) and `multifd-zstd` (on QEMU ≥ 9, or unknown): every
///   page costs its compressed share, from the byte entropy
///   ([`compressed_share`]) of the working set (re-sent pages) and of the
///   rest (first pass). QEMU 7.2 counts and meters multifd-zstd's
///   uncompressed bytes, so there it is plain pre-copy;
/// - every other pre-copy algorithm, `multifd` included (its channels share
///   `max-bandwidth`): plain.
pub fn dynamics(
    fv: &FeatureVector,
    algorithm: Algorithm,
    qemu_major: Option<f64>,
) -> analytic::Dynamics {
    let plain = analytic::Dynamics::PLAIN;
    let compressed = || {
        let hot = compressed_share(fv.get(Feature::VmWse));
        let cold = compressed_share(fv.get(Feature::VmNwse));
        let first = match (fv.get(Feature::VmSize), fv.get(Feature::VmWss)) {
            (Some(size), Some(wss)) if size > 0.0 => {
                let w = wss.min(size);
                (w * hot + (size - w) * cold) / size
            }
            _ => cold,
        };
        analytic::Dynamics {
            first_pass: first,
            resend: hot,
            throttle: None,
        }
    };
    match algorithm {
        Algorithm::AutoConverge => analytic::Dynamics {
            throttle: Some(analytic::Throttle::QEMU),
            ..plain
        },
        Algorithm::Xbzrle => analytic::Dynamics {
            resend: fv
                .get(Feature::VmMwpp)
                .map_or(1.0, |m| (m / 4096.0 + 0.1).min(1.0)),
            ..plain
        },
        Algorithm::Compress => compressed(),
        Algorithm::MultifdZstd if qemu_major.is_none_or(|m| m >= 9.0) => compressed(),
        _ => plain,
    }
}

/// The analytic estimate used for `algorithm`'s inputs: post-copy's pass
/// for the post-copy algorithms, else the pre-copy series with the
/// algorithm's [`dynamics`].
pub fn analytic_estimate(
    fv: &FeatureVector,
    algorithm: Algorithm,
    downtime_limit_ms: f64,
    dirtying: analytic::Dirtying,
    qemu_major: Option<f64>,
) -> Option<analytic::Estimate> {
    let size = fv.get(Feature::VmSize);
    let pdr = fv.get(Feature::VmPdr);
    let wss = fv.get(Feature::VmWss);
    let bw = fv.get(Feature::VmPtr);
    if algorithm.is_postcopy() {
        return analytic::postcopy(size, pdr, wss, bw, dirtying);
    }
    analytic::precopy_with(
        size,
        pdr,
        wss,
        bw,
        downtime_limit_ms,
        dirtying,
        &dynamics(fv, algorithm, qemu_major),
    )
}

/// The physical baseline of an algorithm's TT, DT and TD: the saturating
/// series of [`analytic_estimate`] with a fallback for every input it needs
/// except the VM size and the bandwidth, so that it exists whenever those
/// two do:
///
/// - working set absent: the whole VM (every page may be re-sent);
/// - dirty rate absent: 0 (one pass; the trees' correction, learned on rows
///   that had it, carries the rest);
/// - entropy absent (multifd-zstd): incompressible.
///
/// `None` without a VM size or a positive bandwidth (then the model's
/// calibrated constant stands in, and the prediction says the size is missing).
pub fn baseline(
    fv: &FeatureVector,
    algorithm: Algorithm,
    downtime_limit_ms: f64,
    qemu_major: Option<f64>,
) -> Option<analytic::Estimate> {
    let size = fv.get(Feature::VmSize)?;
    let mut f = *fv;
    if f.get(Feature::VmWss).is_none() {
        f.set(Feature::VmWss, Some(size));
    }
    if f.get(Feature::VmPdr).is_none() {
        f.set(Feature::VmPdr, Some(0.0));
    }
    analytic_estimate(
        &f,
        algorithm,
        downtime_limit_ms,
        analytic::Dirtying::Saturating,
        qemu_major,
    )
}

/// Builds the input row for `algorithm`. `fv`'s `VM_ptr` must already be the
/// migration bandwidth in MiB/s; `qemu_major` is the source QEMU's major
/// version, when known.
pub fn row(
    fv: &FeatureVector,
    algorithm: Algorithm,
    downtime_limit_ms: f64,
    qemu_major: Option<f64>,
) -> [f64; INPUT_COUNT] {
    let mut x = [f64::NAN; INPUT_COUNT];
    for f in Feature::ALL {
        if let Some(v) = fv.get(f) {
            x[f.index()] = v;
        }
    }
    for (k, v) in fv.composed().values().into_iter().enumerate() {
        if let Some(v) = v {
            x[COMPOSED_START + k] = v;
        }
    }
    x[DOWNTIME_LIMIT] = downtime_limit_ms;
    x[QEMU_MAJOR] = qemu_major.unwrap_or(f64::NAN);
    if let Some(e) = analytic_estimate(
        fv,
        algorithm,
        downtime_limit_ms,
        analytic::Dirtying::Linear,
        qemu_major,
    ) {
        x[A_TT] = e.tt_ms.max(1e-3).ln();
        x[A_DT] = e.dt_ms.max(1e-3).ln();
        x[A_TD] = e.td_bytes.max(1.0).ln();
        x[A_CONV] = if e.converges { 1.0 } else { 0.0 };
    }
    let saturating = analytic::Dirtying::Saturating;
    if let Some(e) = analytic_estimate(fv, algorithm, downtime_limit_ms, saturating, qemu_major) {
        x[S_TT] = e.tt_ms.max(1e-3).ln();
        x[S_DT] = e.dt_ms.max(1e-3).ln();
        x[S_TD] = e.td_bytes.max(1.0).ln();
    }
    if let (Some(p), Some(b)) = (fv.get(Feature::VmPdr), fv.get(Feature::VmPtr)) {
        if b > 0.0 {
            x[DIRTY_RATIO] = p / b;
        }
    }
    if let Some(e) = baseline(fv, algorithm, downtime_limit_ms, qemu_major) {
        x[B_TT] = e.tt_ms.max(1e-3).ln();
        x[B_DT] = e.dt_ms.max(1e-3).ln();
        x[B_TD] = e.td_bytes.max(1.0).ln();
    }
    x
}

/// ln(ms) to send `td_bytes` at the row's bandwidth (`VM_ptr`, MiB/s); NaN
/// when either is unknown or not positive.
pub fn td_time(x: &[f64], td_bytes: f64) -> f64 {
    let bw = x[Feature::VmPtr.index()];
    if bw > 0.0 && td_bytes > 0.0 && td_bytes.is_finite() {
        (td_bytes / (bw * MIB) * 1000.0).ln()
    } else {
        f64::NAN
    }
}

/// `bandwidth_bps` in the schema's MiB/s.
pub fn bandwidth_mibps(bandwidth_bps: f64) -> f64 {
    bandwidth_bps / MIB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_resolvable() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..INPUT_COUNT {
            assert!(seen.insert(name(i)), "{}", name(i));
            assert_eq!(resolve(name(i)), Some(vec![i]));
        }
        assert_eq!(resolve("composed").unwrap().len(), 6);
        assert!(resolve("nope").is_none());
    }

    #[test]
    fn rows_mark_absence_as_nan() {
        let fv = FeatureVector::new()
            .with(Feature::VmSize, 1000.0)
            .with(Feature::VmPtr, 100.0);
        let x = row(&fv, Algorithm::Precopy, 300.0, None);
        assert_eq!(x[Feature::VmSize.index()], 1000.0);
        assert!(x[Feature::VmWss.index()].is_nan());
        assert!(x[QEMU_MAJOR].is_nan());
        assert!(x[A_TT].is_nan(), "no dirty rate, no analytic estimate");
        let x = row(
            &fv.with(Feature::VmPdr, 10.0),
            Algorithm::Precopy,
            300.0,
            Some(10.0),
        );
        assert!(x[A_TT].is_finite());
        assert_eq!(x[A_CONV], 1.0);
        assert_eq!(x[QEMU_MAJOR], 10.0);
    }

    #[test]
    fn the_baseline_exists_whenever_size_and_bandwidth_do() {
        let fv = FeatureVector::new()
            .with(Feature::VmSize, 1000.0)
            .with(Feature::VmPtr, 100.0);
        let x = row(&fv, Algorithm::Precopy, 300.0, None);
        assert!(
            x[A_TT].is_nan() && x[S_TT].is_nan(),
            "no dirty rate: no series"
        );
        // One pass of 1000 MiB at 100 MiB/s: 10 s.
        assert!(
            (x[B_TT].exp() - 10_000.0).abs() < 100.0,
            "{}",
            x[B_TT].exp()
        );
        assert!((x[B_TD].exp() / 1048576.0 - 1000.0).abs() < 1.0);
        // It scales with the VM: four times the memory, four times the data.
        let big = row(
            &fv.with(Feature::VmSize, 4000.0),
            Algorithm::Precopy,
            300.0,
            None,
        );
        assert!(((big[B_TD] - x[B_TD]) - 4f64.ln()).abs() < 1e-3);
        // Without a VM size there is no scale.
        let none = row(
            &FeatureVector::new().with(Feature::VmPtr, 100.0),
            Algorithm::Precopy,
            300.0,
            None,
        );
        assert!(none[B_TT].is_nan());
    }

    #[test]
    fn zstd_sends_the_compressed_pages_on_current_qemu() {
        let fv = FeatureVector::new()
            .with(Feature::VmSize, 1000.0)
            .with(Feature::VmWss, 100.0)
            .with(Feature::VmPdr, 5.0)
            .with(Feature::VmWse, 0.5)
            .with(Feature::VmNwse, 0.25)
            .with(Feature::VmPtr, 100.0);
        let td = |a: Algorithm, major: Option<f64>| {
            analytic_estimate(&fv, a, 300.0, analytic::Dirtying::Linear, major)
                .unwrap()
                .td_bytes
        };
        let plain = td(Algorithm::Precopy, Some(10.0));
        let zstd = td(Algorithm::MultifdZstd, Some(10.0));
        // 100 MiB at half + 900 MiB at a quarter = 275 MiB first pass.
        assert!(
            zstd < 0.3 * plain && zstd > 0.25 * plain,
            "{zstd} vs {plain}"
        );
        assert_eq!(td(Algorithm::MultifdZstd, Some(7.0)), plain);
        assert_eq!(td(Algorithm::Multifd, Some(10.0)), plain);
        let post = td(Algorithm::Postcopy, Some(10.0));
        assert_eq!(td(Algorithm::PostcopyPreempt, Some(10.0)), post);
    }
}
