//! Loading training data: CSAP-schema CSV files into model input rows.

use crate::inputs::{self, INPUT_COUNT};
use crate::sha256;
use anyhow::Context;
use migsight_proto::csv as pcsv;
use migsight_proto::feature::MIB;
use migsight_proto::record::is_failure_status;
use migsight_proto::wire::DEFAULT_DOWNTIME_LIMIT_MS;
use migsight_proto::{Algorithm, Feature, FeatureVector};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Extra CSV columns read as the migration's downtime limit (ms), if present.
pub const DOWNTIME_LIMIT_COLUMNS: [&str; 2] = ["downtime_limit_ms", "downtime_limit"];

/// One training file, as recorded in a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSource {
    pub path: String,
    pub sha256: String,
    pub rows: u64,
    /// Feature columns the file has.
    pub feature_columns: Vec<String>,
}

impl DataSource {
    fn new(path: String, sha256: String, ds: &pcsv::Dataset) -> DataSource {
        DataSource {
            path,
            sha256,
            rows: ds.samples.len() as u64,
            feature_columns: ds
                .feature_columns
                .iter()
                .map(|f| f.column().to_string())
                .collect(),
        }
    }
}

/// One labelled migration as model input.
#[derive(Debug, Clone)]
pub struct Row {
    pub algorithm: Algorithm,
    pub features: FeatureVector,
    pub downtime_limit_ms: f64,
    /// The source QEMU's version (`qemu_version` column), when recorded.
    pub qemu: Option<(u32, u32)>,
    /// The accelerator (`accel` column: `tcg`, `kvm`), when recorded.
    pub accel: Option<String>,
    pub x: Vec<f64>,
    pub labels: [Option<f64>; 6],
    pub converged: bool,
    /// Group key for fold assignment: `group_id`, else a per-row key.
    pub group: String,
    pub has_group: bool,
    /// The row's line in its file (0: not from a file).
    pub line: u64,
}

/// All rows of one or more files.
#[derive(Debug, Clone, Default)]
pub struct Data {
    pub rows: Vec<Row>,
    pub sources: Vec<DataSource>,
    /// sha256 of the files (of their digests, in order, when several).
    pub sha256: String,
    /// Rows skipped (no algorithm), for notes.
    pub skipped: usize,
    /// Rows of migrations that broke (a host or the link failed; `status`
    /// failed or post-copy paused): on record, not learned from.
    pub failures: usize,
    /// Rows with impossible labels skipped (`--skip-bad-rows`), and the first
    /// few reasons.
    pub bad_rows: usize,
    pub bad_examples: Vec<String>,
    /// Files whose partial last line was ignored.
    pub partial_lines: usize,
}

/// A label no real migration can have, located.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: column {column}: {message}")]
pub struct BadLabel {
    pub file: String,
    pub line: u64,
    pub column: &'static str,
    pub message: String,
}

/// Largest total time taken as a measurement (11.6 days).
pub const MAX_TIME_MS: f64 = 1e9;
/// Largest transferred data taken as a measurement (1 PiB).
pub const MAX_DATA_BYTES: f64 = 1125899906842624.0;

/// Checks a row's labels against what a migration can do: `Err((column,
/// why))` for the first impossible one. Converged rows need a positive
/// total time and data, a downtime within the total time, and (for the
/// algorithms that do not compress) at least a tenth of the VM's non-zero
/// memory on the wire; every label must lie within physical bounds.
pub fn check_labels(
    algorithm: Algorithm,
    features: &FeatureVector,
    labels: &[Option<f64>; 6],
    converged: bool,
) -> Result<(), (&'static str, String)> {
    use migsight_proto::Metric;
    let get = |m: Metric| labels[m.index()];
    let col = |m: Metric| m.column();
    if let Some(t) = get(Metric::TT) {
        if converged && t <= 0.0 {
            return Err((
                col(Metric::TT),
                format!("total time {t} ms on a converged migration"),
            ));
        }
        if !(0.0..=MAX_TIME_MS).contains(&t) {
            return Err((
                col(Metric::TT),
                format!("total time {t} ms is not a possible duration"),
            ));
        }
    }
    if let Some(d) = get(Metric::TD) {
        if converged && d <= 0.0 {
            return Err((
                col(Metric::TD),
                format!("{d} bytes sent by a converged migration"),
            ));
        }
        if !(0.0..=MAX_DATA_BYTES).contains(&d) {
            return Err((
                col(Metric::TD),
                format!("{d} bytes is not a possible amount of data"),
            ));
        }
        let compresses = matches!(algorithm, Algorithm::Compress | Algorithm::MultifdZstd);
        if let (true, false, Some(size)) = (converged, compresses, features.get(Feature::VmSize)) {
            if d < 0.1 * size * MIB {
                return Err((
                    col(Metric::TD),
                    format!(
                        "{:.1} MiB sent for {size:.1} MiB of non-zero memory: a {algorithm} migration sends all of it at least once",
                        d / MIB
                    ),
                ));
            }
        }
    }
    if let Some(dt) = get(Metric::DT) {
        if !(0.0..=MAX_TIME_MS).contains(&dt) {
            return Err((
                col(Metric::DT),
                format!("downtime {dt} ms is not a possible duration"),
            ));
        }
        if let Some(t) = get(Metric::TT).filter(|t| dt > *t) {
            return Err((
                col(Metric::DT),
                format!("downtime {dt} ms is longer than the total time {t} ms"),
            ));
        }
    }
    if let Some(p) = get(Metric::PERF).filter(|p| !(0.0..=10.0).contains(p)) {
        return Err((
            col(Metric::PERF),
            format!("performance ratio {p} is outside 0–10"),
        ));
    }
    if let Some(c) = get(Metric::CPU).filter(|c| c.abs() > 100.0 * 4096.0) {
        return Err((
            col(Metric::CPU),
            format!("{c} % of a core is more than 4,096 CPUs"),
        ));
    }
    if let Some(m) = get(Metric::MEM).filter(|m| m.abs() > 64.0 * 1024.0 * 1024.0) {
        return Err((col(Metric::MEM), format!("{m} MiB is more than 64 TiB")));
    }
    Ok(())
}

impl Data {
    /// Loads CSV files; a row with an impossible label is an error naming
    /// its file, line and column.
    pub fn load(paths: &[PathBuf]) -> anyhow::Result<Data> {
        Data::load_with(paths, false)
    }

    /// Like [`Data::load`]; with `skip_bad_rows`, rows with impossible
    /// labels are left out and counted instead.
    pub fn load_with(paths: &[PathBuf], skip_bad_rows: bool) -> anyhow::Result<Data> {
        anyhow::ensure!(!paths.is_empty(), "no --data file given");
        let mut data = Data::default();
        let mut digests = Vec::new();
        for (fi, p) in paths.iter().enumerate() {
            // Read under the appenders' lock; a torn last row (a crash
            // mid-write) is left out, a complete one lacking its newline kept.
            let (bytes, torn) =
                pcsv::read_complete(p).with_context(|| format!("cannot read {}", p.display()))?;
            data.partial_lines += torn as usize;
            let sha = sha256::hex(&bytes);
            let name = p.display().to_string();
            let ds = pcsv::read(&bytes[..], &name)?;
            data.add(&ds, fi, &name, skip_bad_rows)?;
            digests.push(sha.clone());
            data.sources
                .push(DataSource::new(p.display().to_string(), sha, &ds));
        }
        data.sha256 = if digests.len() == 1 {
            digests.remove(0)
        } else {
            sha256::hex(digests.join("\n").as_bytes())
        };
        Ok(data)
    }

    /// Rows from an in-memory dataset (tests, benches); rows with impossible
    /// labels are skipped and counted.
    pub fn from_dataset(ds: &pcsv::Dataset, name: &str) -> Data {
        let mut data = Data::default();
        // With skipping on, `add` cannot fail.
        let _ = data.add(ds, 0, name, true);
        data.sources
            .push(DataSource::new(name.to_string(), String::new(), ds));
        data
    }

    fn add(
        &mut self,
        ds: &pcsv::Dataset,
        file_index: usize,
        name: &str,
        skip_bad_rows: bool,
    ) -> Result<(), BadLabel> {
        for (i, s) in ds.samples.iter().enumerate() {
            let Some(algorithm) = s.algorithm else {
                self.skipped += 1;
                continue;
            };
            if s.extra("status").is_some_and(is_failure_status) {
                self.failures += 1;
                continue;
            }
            if let Err((column, message)) =
                check_labels(algorithm, &s.features, &s.labels, s.did_converge())
            {
                let bad = BadLabel {
                    file: name.to_string(),
                    line: s.line,
                    column,
                    message,
                };
                if !skip_bad_rows {
                    return Err(bad);
                }
                self.bad_rows += 1;
                if self.bad_examples.len() < 5 {
                    self.bad_examples.push(bad.to_string());
                }
                continue;
            }
            let qemu = s.extra("qemu_version").and_then(qemu_major_minor);
            let dl = DOWNTIME_LIMIT_COLUMNS
                .iter()
                .find_map(|c| s.extra_number(c))
                .filter(|v| *v > 0.0)
                .unwrap_or(DEFAULT_DOWNTIME_LIMIT_MS);
            let x =
                inputs::row(&s.features, algorithm, dl, qemu.map(|(m, _)| f64::from(m))).to_vec();
            let (group, has_group) = match &s.group_id {
                Some(g) => (format!("{file_index}/{g}"), true),
                None => (format!("{file_index}#{i}"), false),
            };
            self.rows.push(Row {
                algorithm,
                features: s.features,
                downtime_limit_ms: dl,
                qemu,
                accel: s
                    .extra("accel")
                    .filter(|a| !a.is_empty())
                    .map(str::to_string),
                x,
                labels: s.labels,
                converged: s.did_converge(),
                group,
                has_group,
                line: s.line,
            });
        }
        Ok(())
    }

    /// Input columns that have at least one value, counting the stacked
    /// [`inputs::TD_TIME`] when some row has a TD label and a bandwidth.
    pub fn columns_with_data(&self) -> Vec<usize> {
        let bw = migsight_proto::Feature::VmPtr.index();
        let td = migsight_proto::Metric::TD.index();
        (0..INPUT_COUNT)
            .filter(|&c| {
                self.rows.iter().any(|r| {
                    r.x[c].is_finite()
                        || (c == inputs::TD_TIME && r.labels[td].is_some() && r.x[bw].is_finite())
                })
            })
            .collect()
    }

    /// The raw features some row has.
    pub fn raw_features(&self) -> Vec<Feature> {
        Feature::ALL
            .into_iter()
            .filter(|f| self.rows.iter().any(|r| r.features.get(*f).is_some()))
            .collect()
    }

    /// The rows as if the files had only `keep`'s feature columns: every
    /// derived input and baseline recomputed from those (`--features`).
    pub fn restrict(&mut self, keep: &[Feature]) {
        for r in &mut self.rows {
            r.features = r.features.restricted(keep);
            r.x = inputs::row(
                &r.features,
                r.algorithm,
                r.downtime_limit_ms,
                r.qemu.map(|(m, _)| f64::from(m)),
            )
            .to_vec();
        }
    }

    /// Rows of one algorithm.
    pub fn of(&self, a: Algorithm) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.algorithm == a).collect()
    }
}

/// `(major, minor)` of a `qemu_version` cell such as `10.0.2`.
pub fn qemu_major_minor(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim().split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// A feature vector with `VM_ptr` set from a bandwidth in bytes/s.
pub fn with_bandwidth(fv: &FeatureVector, bandwidth_bps: f64) -> FeatureVector {
    let mut f = *fv;
    f.set(Feature::VmPtr, Some(bandwidth_bps / MIB));
    f
}

/// Reads a features JSON file (a map of CSAP column names to numbers).
pub fn read_features_json(path: &Path) -> anyhow::Result<FeatureVector> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a features JSON object", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_labels_are_located_or_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lab.csv");
        let header = "capability,VM_size,VM_pdr,VM_ptr,qemu_tt,qemu_dt,qemu_td,converged\n";
        let good = "0,512,10,100,6000,20,600000000,1\n";
        for (bad, column, word) in [
            ("0,512,10,100,-5,20,600000000,1\n", "qemu_tt", "total time"),
            ("0,512,10,100,0,0,600000000,1\n", "qemu_tt", "converged"),
            ("0,512,10,100,6000,20,0,1\n", "qemu_td", "converged"),
            (
                "0,512,10,100,6000,7000,600000000,1\n",
                "qemu_dt",
                "longer than the total time",
            ),
            (
                "0,512,10,100,6000,20,1000000,1\n",
                "qemu_td",
                "at least once",
            ),
            (
                "0,512,10,100,1e308,20,600000000,1\n",
                "qemu_tt",
                "not a possible duration",
            ),
        ] {
            std::fs::write(&p, format!("{header}{good}{bad}")).unwrap();
            let e = Data::load(std::slice::from_ref(&p))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("lab.csv:3") && e.contains(column) && e.contains(word),
                "{bad}: {e}"
            );
            let d = Data::load_with(std::slice::from_ref(&p), true).unwrap();
            assert_eq!((d.rows.len(), d.bad_rows), (1, 1), "{bad}");
            assert!(d.bad_examples[0].contains(column));
        }
        // Compressing algorithms may send less than a tenth; a cancelled
        // (not converged) migration may have sent little.
        std::fs::write(
            &p,
            format!("{header}3,512,10,100,6000,20,1000000,1\n0,512,10,100,60000,,1000000,0\n"),
        )
        .unwrap();
        assert_eq!(Data::load(&[p]).unwrap().rows.len(), 2);
    }

    #[test]
    fn a_partial_last_row_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lab.csv");
        std::fs::write(
            &p,
            "capability,VM_size,VM_pdr,VM_ptr,qemu_tt,downtime_limit_ms\n0,512,10,100,6000,500\n3,512,10,100,50",
        )
        .unwrap();
        let d = Data::load(&[p]).unwrap();
        assert_eq!(d.rows.len(), 1);
        assert_eq!(d.partial_lines, 1);
        assert_eq!(d.rows[0].downtime_limit_ms, 500.0);
        assert_eq!(d.rows[0].x[crate::inputs::DOWNTIME_LIMIT], 500.0);
        assert!(d.rows[0].x[crate::inputs::A_TT].is_finite());
        assert!(Data::load(&[dir.path().join("missing.csv")]).is_err());
    }

    #[test]
    fn a_complete_last_row_without_its_newline_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lab.csv");
        std::fs::write(
            &p,
            "capability,VM_size,VM_pdr,VM_ptr,qemu_tt\n0,512,10,100,6000\n3,512,10,100,50",
        )
        .unwrap();
        let d = Data::load(&[p]).unwrap();
        assert_eq!((d.rows.len(), d.partial_lines), (2, 0));
    }
}
