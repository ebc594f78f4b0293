//! Reading and writing CSAP-schema CSV files.
//!
//! The reader is driven by the header: columns may come in any order, any
//! subset of the feature columns may be present (missing ones are absent, not
//! zero), and unknown columns are kept by name in [`Sample::extra`]. An empty
//! cell, `NA` or `null` is an absent value. Every error names the file, the
//! line and the column.
//!
//! Recognised columns: `capability`, `workload_type`, the 14 features of
//! [`Feature`], the 6 labels of [`Metric::column`], and migsight's additions
//! `converged` (0/1) and `group_id` (paired-group tag; the seed's 512-migration
//! files' `seed_number`+`sequence_number` are accepted as one).

use crate::{Algorithm, Feature, FeatureVector, Metric};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Column order of the seed's schema comment (then migsight's additions).
pub const SEED_COLUMNS: [&str; 22] = [
    "capability",
    "workload_type",
    "VM_size",
    "VM_pdr",
    "VM_wss",
    "VM_wse",
    "VM_nwse",
    "VM_mwpp",
    "VM_pmu_instr",
    "VM_ptr",
    "VM_cpu_util",
    "VM_net_util",
    "src_cpu_avail",
    "dst_cpu_avail",
    "src_mem_avail",
    "dst_mem_avail",
    "qemu_tt",
    "qemu_dt",
    "qemu_td",
    "performance",
    "used_cpu_src",
    "used_mem_src",
];

/// migsight's standard columns after the seed's.
pub const MIGSIGHT_COLUMNS: [&str; 2] = ["converged", "group_id"];

/// One migration: what was known before, and what happened.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    pub algorithm: Option<Algorithm>,
    pub workload_type: Option<u8>,
    pub features: FeatureVector,
    /// Indexed by [`Metric::index`].
    pub labels: [Option<f64>; 6],
    /// `None` when the file has no `converged` column (seed files: all converged).
    pub converged: Option<bool>,
    pub group_id: Option<String>,
    /// Unknown columns, by name, in file order.
    pub extra: Vec<(String, String)>,
    /// The line the row starts on in its file (0: not read from a file), for
    /// messages about its values.
    pub line: u64,
}

impl Sample {
    pub fn label(&self, m: Metric) -> Option<f64> {
        self.labels[m.index()]
    }
    pub fn set_label(&mut self, m: Metric, v: f64) {
        self.labels[m.index()] = Some(v);
    }
    /// Whether the migration converged (files without the column: yes).
    pub fn did_converge(&self) -> bool {
        self.converged.unwrap_or(true)
    }
    pub fn extra(&self, name: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// An extra column as a finite number (`None`: absent, empty or not a number).
    pub fn extra_number(&self, name: &str) -> Option<f64> {
        self.extra(name)?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    }
}

/// A parsed CSV file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dataset {
    pub samples: Vec<Sample>,
    /// Feature columns the file has.
    pub feature_columns: Vec<Feature>,
    /// Unknown columns, in file order.
    pub extra_columns: Vec<String>,
}

/// A CSV problem, located.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{file}: cannot open: {source}")]
    Open { file: String, source: io::Error },
    #[error("{file}, line {line}{}: {message}", column.as_ref().map(|c| format!(", column {c}")).unwrap_or_default())]
    Parse {
        file: String,
        line: u64,
        column: Option<String>,
        message: String,
    },
    #[error("{file}: {source}")]
    Write { file: String, source: io::Error },
}

#[derive(Clone, Copy)]
enum Col {
    Capability,
    WorkloadType,
    Feature(Feature),
    Label(Metric),
    Converged,
    GroupId,
    SeedNumber,
    SequenceNumber,
    Extra(usize),
}

fn classify(name: &str, extras: &mut Vec<String>) -> Col {
    match name {
        "capability" => Col::Capability,
        "workload_type" => Col::WorkloadType,
        "converged" => Col::Converged,
        "group_id" => Col::GroupId,
        "seed_number" => Col::SeedNumber,
        "sequence_number" => Col::SequenceNumber,
        _ => {
            if let Ok(f) = name.parse::<Feature>() {
                Col::Feature(f)
            } else if let Some(m) = Metric::ALL.into_iter().find(|m| m.column() == name) {
                Col::Label(m)
            } else {
                extras.push(name.to_string());
                Col::Extra(extras.len() - 1)
            }
        }
    }
}

fn is_absent(s: &str) -> bool {
    matches!(s, "" | "NA" | "na" | "null" | "None")
}

/// Reads a CSAP-schema CSV file.
pub fn read_path(path: &Path) -> Result<Dataset, CsvError> {
    let file = File::open(path).map_err(|source| CsvError::Open {
        file: path.display().to_string(),
        source,
    })?;
    read(file, &path.display().to_string())
}

/// Reads CSAP-schema CSV from `r`; `name` is used in error messages.
pub fn read<R: Read>(r: R, name: &str) -> Result<Dataset, CsvError> {
    let perr = |line: u64, column: Option<&str>, message: String| CsvError::Parse {
        file: name.to_string(),
        line,
        column: column.map(str::to_string),
        message,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(r);
    let headers = rdr
        .headers()
        .map_err(|e| perr(1, None, format!("cannot read the header: {e}")))?
        .clone();
    if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
        return Err(perr(1, None, "empty file: no header".into()));
    }
    let mut extra_columns = Vec::new();
    let mut cols = Vec::with_capacity(headers.len());
    let mut seen = std::collections::HashSet::new();
    for h in headers.iter() {
        if !seen.insert(h.to_string()) {
            return Err(perr(
                1,
                Some(h),
                "column appears twice in the header".into(),
            ));
        }
        cols.push(classify(h, &mut extra_columns));
    }
    let feature_columns: Vec<Feature> = cols
        .iter()
        .filter_map(|c| match c {
            Col::Feature(f) => Some(*f),
            _ => None,
        })
        .collect();

    let mut samples = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let more = rdr.read_record(&mut record).map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            perr(line, None, format!("malformed CSV: {e}"))
        })?;
        if !more {
            break;
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let mut s = Sample {
            line,
            ..Sample::default()
        };
        let mut seed_seq: (Option<String>, Option<String>) = (None, None);
        for (i, cell) in record.iter().enumerate() {
            let col_name = &headers[i];
            let num = |cell: &str| -> Result<Option<f64>, CsvError> {
                if is_absent(cell) {
                    return Ok(None);
                }
                let v: f64 = cell
                    .parse()
                    .map_err(|_| perr(line, Some(col_name), format!("{cell:?} is not a number")))?;
                if !v.is_finite() {
                    return Err(perr(
                        line,
                        Some(col_name),
                        format!("{cell:?} is not a finite number"),
                    ));
                }
                Ok(Some(v))
            };
            match cols[i] {
                Col::Capability => {
                    if !is_absent(cell) {
                        s.algorithm = Some(cell.parse().map_err(
                            |e: crate::algorithm::UnknownAlgorithm| {
                                perr(line, Some(col_name), e.to_string())
                            },
                        )?);
                    }
                }
                Col::WorkloadType => {
                    if let Some(v) = num(cell)? {
                        if v.fract() != 0.0 || !(0.0..=255.0).contains(&v) {
                            return Err(perr(
                                line,
                                Some(col_name),
                                format!("{cell:?} is not a workload type code (0-255)"),
                            ));
                        }
                        s.workload_type = Some(v as u8);
                    }
                }
                Col::Feature(f) => {
                    let v = num(cell)?;
                    if let Some(v) = v {
                        let (min, max) = f.valid_range();
                        if v < min || v > max {
                            return Err(perr(
                                line,
                                Some(col_name),
                                format!(
                                    "{v} is outside the valid range {min}..={max} ({})",
                                    f.unit()
                                ),
                            ));
                        }
                    }
                    s.features.set(f, v);
                }
                Col::Label(m) => s.labels[m.index()] = num(cell)?,
                Col::Converged => {
                    s.converged = match cell {
                        c if is_absent(c) => None,
                        "1" | "1.0" | "true" => Some(true),
                        "0" | "0.0" | "false" => Some(false),
                        other => {
                            return Err(perr(
                                line,
                                Some(col_name),
                                format!("{other:?} is not 0 or 1"),
                            ))
                        }
                    }
                }
                Col::GroupId => {
                    if !is_absent(cell) {
                        s.group_id = Some(cell.to_string());
                    }
                }
                Col::SeedNumber => seed_seq.0 = Some(cell.to_string()),
                Col::SequenceNumber => seed_seq.1 = Some(cell.to_string()),
                Col::Extra(k) => s.extra.push((extra_columns[k].clone(), cell.to_string())),
            }
        }
        if s.group_id.is_none() {
            if let (Some(a), Some(b)) = seed_seq {
                s.group_id = Some(format!("{a}:{b}"));
            }
        }
        samples.push(s);
    }
    Ok(Dataset {
        samples,
        feature_columns,
        extra_columns,
    })
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => String::new(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => format!("{v}"),
    }
}

fn row(s: &Sample, extra_columns: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(SEED_COLUMNS.len() + 2 + extra_columns.len());
    out.push(
        s.algorithm
            .map(|a| a.code().to_string())
            .unwrap_or_default(),
    );
    out.push(s.workload_type.map(|w| w.to_string()).unwrap_or_default());
    for f in Feature::ALL {
        out.push(fmt_num(s.features.get(f)));
    }
    for m in Metric::ALL {
        out.push(fmt_num(s.label(m)));
    }
    out.push(match s.converged {
        Some(true) => "1".into(),
        Some(false) => "0".into(),
        None => String::new(),
    });
    out.push(s.group_id.clone().unwrap_or_default());
    for name in extra_columns {
        out.push(s.extra(name).unwrap_or("").to_string());
    }
    out
}

/// The header a [`CsvAppender`] writes: seed columns, migsight columns, extras.
pub fn header(extra_columns: &[String]) -> Vec<String> {
    SEED_COLUMNS
        .iter()
        .chain(MIGSIGHT_COLUMNS.iter())
        .map(|s| s.to_string())
        .chain(extra_columns.iter().cloned())
        .collect()
}

fn encode_line(fields: &[String]) -> Result<Vec<u8>, io::Error> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    w.write_record(fields).map_err(io::Error::other)?;
    w.into_inner().map_err(|e| io::Error::other(e.to_string()))
}

/// Appends samples to a CSV file, one synced row at a time, so a crash loses
/// at most the row being written.
///
/// Opening an existing file checks its header equals the one this appender
/// would write, so rows never land under the wrong columns. A torn last line
/// (a crash mid-write) is cut off before appending.
pub struct CsvAppender {
    file: File,
    path: PathBuf,
    extra_columns: Vec<String>,
}

impl CsvAppender {
    pub fn open(path: &Path, extra_columns: &[String]) -> Result<CsvAppender, CsvError> {
        let werr = |source| CsvError::Write {
            file: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(werr)?;
        let mut existing = String::new();
        file.read_to_string(&mut existing).map_err(werr)?;
        let want = header(extra_columns);
        if existing.is_empty() {
            file.write_all(&encode_line(&want).map_err(werr)?)
                .map_err(werr)?;
            file.sync_all().map_err(werr)?;
        } else {
            let first = existing.lines().next().unwrap_or("");
            let have: Vec<&str> = first.split(',').map(str::trim).collect();
            if have != want.iter().map(String::as_str).collect::<Vec<_>>() {
                return Err(header_error(
                    path,
                    format!(
                        "existing header differs from the one expected ({} vs {} columns); refusing to append",
                        have.len(),
                        want.len()
                    ),
                ));
            }
            if !existing.ends_with('\n') {
                // A torn row from an interrupted write: drop it.
                let keep = existing.rfind('\n').map(|i| i + 1).unwrap_or(0);
                file.set_len(keep as u64).map_err(werr)?;
                file.sync_all().map_err(werr)?;
            }
        }
        Ok(CsvAppender {
            file,
            path: path.to_path_buf(),
            extra_columns: extra_columns.to_vec(),
        })
    }

    /// Appends one row and syncs it to disk.
    pub fn append(&mut self, s: &Sample) -> Result<(), CsvError> {
        let werr = |source| CsvError::Write {
            file: self.path.display().to_string(),
            source,
        };
        let line = encode_line(&row(s, &self.extra_columns)).map_err(werr)?;
        self.file.write_all(&line).map_err(werr)?;
        self.file.sync_data().map_err(werr)?;
        Ok(())
    }
}

/// An error about a file's header (line 1).
fn header_error(path: &Path, message: String) -> CsvError {
    CsvError::Parse {
        file: path.display().to_string(),
        line: 1,
        column: None,
        message,
    }
}

/// Brings a file written by an older appender up to `extra_columns`: when its
/// header is a strict prefix of the wanted one (columns were only added at
/// the end), every line gets the new columns, empty on the old rows, in one
/// atomic rewrite. The old rows' bytes are kept as they are. Returns the
/// columns added (none when the header is already the wanted one or the file
/// does not exist); any other header is left for [`CsvAppender::open`] to refuse.
pub fn widen(path: &Path, extra_columns: &[String]) -> Result<Vec<String>, CsvError> {
    let werr = |source| CsvError::Write {
        file: path.display().to_string(),
        source,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CsvError::Open {
                file: path.display().to_string(),
                source,
            })
        }
    };
    let want = header(extra_columns);
    let Some(first) = text.lines().next() else {
        return Ok(Vec::new());
    };
    let have: Vec<&str> = first.split(',').map(str::trim).collect();
    if have.len() >= want.len() || want.iter().zip(&have).any(|(w, h)| w != h) {
        return Ok(Vec::new());
    }
    let added = want[have.len()..].to_vec();
    // Appending separators at line ends is only right when no quoted cell
    // spans lines: every record must be one line.
    let body = text
        .strip_prefix(first)
        .unwrap_or("")
        .trim_start_matches(['\r', '\n']);
    let lines = body.lines().filter(|l| !l.is_empty()).count();
    let records = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body.as_bytes())
        .records()
        .count();
    if records != lines {
        return Err(header_error(
            path,
            format!(
                "cannot add columns {}: a cell spans lines ({records} records on {lines} lines)",
                added.join(",")
            ),
        ));
    }
    let pad = ",".repeat(added.len());
    let mut out = encode_line(&want).map_err(werr)?;
    for line in body.split_inclusive('\n') {
        let (row, end) = match line.strip_suffix('\n') {
            Some(r) => (r.strip_suffix('\r').unwrap_or(r), "\n"),
            // A torn last row (no newline) stays torn; the appender cuts it.
            None => (line, ""),
        };
        out.extend_from_slice(row.as_bytes());
        if !end.is_empty() && !row.is_empty() {
            out.extend_from_slice(pad.as_bytes());
        }
        out.extend_from_slice(end.as_bytes());
    }
    crate::write_file_atomic(path, &out).map_err(werr)?;
    Ok(added)
}

/// Writes a whole dataset atomically: a temporary file in the same directory,
/// synced, then renamed over `path`.
pub fn write_atomic(
    path: &Path,
    samples: &[Sample],
    extra_columns: &[String],
) -> Result<(), CsvError> {
    let werr = |source| CsvError::Write {
        file: path.display().to_string(),
        source,
    };
    let mut buf = encode_line(&header(extra_columns)).map_err(werr)?;
    for s in samples {
        buf.extend(encode_line(&row(s, extra_columns)).map_err(werr)?);
    }
    crate::write_file_atomic(path, &buf).map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_ORDER: &str = "capability,workload_type,VM_size,VM_pdr,VM_wss,VM_wse,VM_nwse,VM_mwpp,VM_pmu_instr,VM_ptr,VM_cpu_util,VM_net_util,src_cpu_avail,dst_cpu_avail,src_mem_avail,dst_mem_avail,qemu_tt,qemu_dt,qemu_td,performance,used_cpu_src,used_mem_src\n\
2.0,1.0,1820.5,45.2,310.0,0.62,0.31,812.0,2.1e9,100.0,95.0,3.5,310.0,380.0,9000.0,12000.0,21000.0,180.0,2.3e9,0.93,35.0,64.0\n\
4.0,4.0,900.0,10.0,120.0,0.4,0.2,300.0,1.0e9,50.0,40.0,10.0,350.0,390.0,10000.0,12000.0,19000.0,25.0,9.5e8,0.7,12.0,8.0\n";

    #[test]
    fn widen_adds_empty_columns_to_an_older_file() {
        let dir = std::env::temp_dir().join(format!("migsight-widen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.csv");
        let old = vec!["qemu_version".to_string()];
        let mut a = CsvAppender::open(&path, &old).unwrap();
        let mut s = Sample::default();
        s.features.set(Feature::VmSize, Some(512.0));
        s.extra.push(("qemu_version".into(), "7.2.22".into()));
        a.append(&s).unwrap();
        a.append(&s).unwrap();
        drop(a);
        let before = std::fs::read_to_string(&path).unwrap();
        let new = vec!["qemu_version".to_string(), "dirtied".to_string()];
        assert!(
            CsvAppender::open(&path, &new).is_err(),
            "old header refused"
        );
        assert_eq!(widen(&path, &new).unwrap(), vec!["dirtied".to_string()]);
        assert!(
            widen(&path, &new).unwrap().is_empty(),
            "second call: nothing to do"
        );
        let after = std::fs::read_to_string(&path).unwrap();
        for (b, a) in before.lines().skip(1).zip(after.lines().skip(1)) {
            assert_eq!(format!("{b},"), a);
        }
        let mut a = CsvAppender::open(&path, &new).unwrap();
        s.extra.push(("dirtied".into(), "3.5".into()));
        a.append(&s).unwrap();
        let d = read_path(&path).unwrap();
        assert_eq!(d.samples.len(), 3);
        assert_eq!(d.samples[0].extra("dirtied"), Some(""));
        assert_eq!(d.samples[2].extra("dirtied"), Some("3.5"));
        assert_eq!(d.samples[0].extra("qemu_version"), Some("7.2.22"));
        assert_eq!(d.samples[2].extra_number("dirtied"), Some(3.5));
        assert_eq!(d.samples[0].extra_number("dirtied"), None, "empty");
        assert_eq!(
            d.samples[0].extra_number("qemu_version"),
            None,
            "not a number"
        );
        assert_eq!(d.samples[0].extra_number("absent"), None);
        // A header that is not a prefix is left alone (and refused by open).
        let other = vec!["something_else".to_string(), "x".to_string()];
        assert!(widen(&path, &other).unwrap().is_empty());
        assert!(CsvAppender::open(&path, &other).is_err());
        assert!(widen(&dir.join("absent.csv"), &new).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_the_seed_column_order() {
        let d = read(SEED_ORDER.as_bytes(), "seed.csv").unwrap();
        assert_eq!(d.samples.len(), 2);
        assert_eq!(d.feature_columns.len(), 14);
        let s = &d.samples[0];
        assert_eq!(s.algorithm, Some(Algorithm::Xbzrle));
        assert_eq!(s.workload_type, Some(1));
        assert_eq!(s.features.get(Feature::VmPmuInstr), Some(2.1e9));
        assert_eq!(s.label(Metric::TD), Some(2.3e9));
        assert_eq!(s.label(Metric::MEM), Some(64.0));
        assert!(s.did_converge());
        assert_eq!(d.samples[1].algorithm, Some(Algorithm::Postcopy));
    }

    #[test]
    fn reads_a_subset_of_columns_in_any_order() {
        let text = "capability,VM_size,VM_pdr,VM_ptr,qemu_tt,qemu_dt,qemu_td\n0,512,12.5,100,4700,13,247000000\n3,1024,,50,11800,187,151000000\n";
        let d = read(text.as_bytes(), "small.csv").unwrap();
        assert_eq!(
            d.feature_columns,
            vec![Feature::VmSize, Feature::VmPdr, Feature::VmPtr]
        );
        let s = &d.samples[0];
        assert_eq!(
            s.features.get(Feature::VmWss),
            None,
            "missing column is absent, not zero"
        );
        assert_eq!(s.label(Metric::PERF), None);
        assert_eq!(s.label(Metric::TT), Some(4700.0));
        assert_eq!(
            d.samples[1].features.get(Feature::VmPdr),
            None,
            "empty cell is absent"
        );
        let reordered = "qemu_td,VM_ptr,capability,VM_size\n1e8,100,precopy,512\n";
        let d = read(reordered.as_bytes(), "r.csv").unwrap();
        assert_eq!(d.samples[0].algorithm, Some(Algorithm::Precopy));
        assert_eq!(d.samples[0].features.get(Feature::VmPtr), Some(100.0));
    }

    #[test]
    fn a_bad_number_names_line_and_column() {
        let text = "capability,VM_size,VM_pdr\n0,512,1.0\n1,256,fast\n";
        let e = read(text.as_bytes(), "bad.csv").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("bad.csv"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("VM_pdr"), "{msg}");
        assert!(msg.contains("\"fast\""), "{msg}");
    }

    #[test]
    fn bad_capability_range_and_shape_are_errors() {
        let e = read("capability,VM_size\n9,5\n".as_bytes(), "c.csv").unwrap_err();
        assert!(e.to_string().contains("capability"), "{e}");
        let e = read("capability,VM_wse\n0,1.7\n".as_bytes(), "c.csv").unwrap_err();
        assert!(e.to_string().contains("VM_wse"), "{e}");
        let e = read("capability,VM_size\n0,5,9\n".as_bytes(), "c.csv").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = read("capability,capability\n0,0\n".as_bytes(), "c.csv").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = read("capability,VM_pdr\n0,NaN\n".as_bytes(), "c.csv").unwrap_err();
        assert!(e.to_string().contains("finite"), "{e}");
    }

    #[test]
    fn unknown_columns_are_kept_and_seed_groups_recognised() {
        let text =
            "capability,seed_number,sequence_number,qemu_version,VM_size\n1,7,3,7.2.22,100\n";
        let d = read(text.as_bytes(), "g.csv").unwrap();
        assert_eq!(d.extra_columns, vec!["qemu_version".to_string()]);
        assert_eq!(d.samples[0].extra("qemu_version"), Some("7.2.22"));
        assert_eq!(d.samples[0].group_id.as_deref(), Some("7:3"));
    }

    #[test]
    fn appender_round_trips_and_survives_a_torn_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.csv");
        let extra = vec!["qemu_version".to_string()];
        let mut s = read(SEED_ORDER.as_bytes(), "seed.csv")
            .unwrap()
            .samples
            .remove(0);
        s.converged = Some(false);
        s.group_id = Some("g1".into());
        s.extra = vec![("qemu_version".into(), "7.2".into())];
        {
            let mut a = CsvAppender::open(&path, &extra).unwrap();
            a.append(&s).unwrap();
        }
        // Simulate a crash mid-row.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"2,1,12")
            .unwrap();
        {
            let mut a = CsvAppender::open(&path, &extra).unwrap();
            a.append(&s).unwrap();
        }
        let d = read_path(&path).unwrap();
        assert_eq!(d.samples.len(), 2);
        assert_eq!(d.samples[1].line, 3);
        assert_eq!(
            Sample {
                line: s.line,
                ..d.samples[1].clone()
            },
            s
        );
        // A different header is refused rather than mixed.
        assert!(CsvAppender::open(&path, &[]).is_err());
    }

    #[test]
    fn write_atomic_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.csv");
        let d = read(SEED_ORDER.as_bytes(), "seed.csv").unwrap();
        write_atomic(&path, &d.samples, &[]).unwrap();
        let back = read_path(&path).unwrap();
        assert_eq!(back.samples.len(), 2);
        assert_eq!(back.samples[0].features, d.samples[0].features);
        assert_eq!(back.samples[0].labels, d.samples[0].labels);
    }
}
