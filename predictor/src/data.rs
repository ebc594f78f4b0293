//! Loading training data: CSAP-schema CSV files into model input rows.

use crate::inputs::{self, INPUT_COUNT};
use crate::sha256;
use anyhow::Context;
use migsight_proto::csv as pcsv;
use migsight_proto::feature::MIB;
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
    pub x: Vec<f64>,
    pub labels: [Option<f64>; 6],
    pub converged: bool,
    /// Group key for fold assignment: `group_id`, else a per-row key.
    pub group: String,
    pub has_group: bool,
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
    /// Files whose partial last line was ignored.
    pub partial_lines: usize,
}

impl Data {
    pub fn load(paths: &[PathBuf]) -> anyhow::Result<Data> {
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
            let ds = pcsv::read(&bytes[..], &p.display().to_string())?;
            data.add(&ds, fi);
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

    /// Rows from an in-memory dataset (tests, benches).
    pub fn from_dataset(ds: &pcsv::Dataset, name: &str) -> Data {
        let mut data = Data::default();
        data.add(ds, 0);
        data.sources
            .push(DataSource::new(name.to_string(), String::new(), ds));
        data
    }

    fn add(&mut self, ds: &pcsv::Dataset, file_index: usize) {
        for (i, s) in ds.samples.iter().enumerate() {
            let Some(algorithm) = s.algorithm else {
                self.skipped += 1;
                continue;
            };
            let dl = DOWNTIME_LIMIT_COLUMNS
                .iter()
                .find_map(|c| s.extra_number(c))
                .filter(|v| *v > 0.0)
                .unwrap_or(DEFAULT_DOWNTIME_LIMIT_MS);
            let x = inputs::row(&s.features, algorithm, dl).to_vec();
            let (group, has_group) = match &s.group_id {
                Some(g) => (format!("{file_index}/{g}"), true),
                None => (format!("{file_index}#{i}"), false),
            };
            self.rows.push(Row {
                algorithm,
                features: s.features,
                downtime_limit_ms: dl,
                x,
                labels: s.labels,
                converged: s.did_converge(),
                group,
                has_group,
            });
        }
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

    /// Rows of one algorithm.
    pub fn of(&self, a: Algorithm) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.algorithm == a).collect()
    }
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
