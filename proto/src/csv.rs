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
use std::time::{Duration, Instant};

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
    #[error("{file}: the row was not written, the file is as it was: {source}")]
    Append { file: String, source: io::Error },
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

/// Longest wait for another writer's lock on a CSV file: appending a row
/// holds it for one write and one fsync, so 30 s means that writer is stuck
/// (a hung disk, a stopped process), and waiting longer would hang too.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// An exclusive or shared `flock` on an open file, released on drop.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    /// Waits for the lock at most [`LOCK_WAIT`] (polling with a growing
    /// pause, so a stuck holder is an error, never a hang).
    fn take(file: &'a File, path: &Path, exclusive: bool) -> Result<FileLock<'a>, CsvError> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(100);
        loop {
            let r = if exclusive {
                file.try_lock()
            } else {
                file.try_lock_shared()
            };
            match r {
                Ok(()) => return Ok(FileLock(file)),
                Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(CsvError::Write {
                        file: path.display().to_string(),
                        source: io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "another process has held the lock on this file for {} s; nothing was written",
                                LOCK_WAIT.as_secs()
                            ),
                        ),
                    })
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(CsvError::Write {
                        file: path.display().to_string(),
                        source,
                    })
                }
            }
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Whether `path` still names the file `file` is open on (a [`widen`]
/// renames a new file over it; someone may have removed it).
fn still_named(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Opens `path` for appending, creating it (and its directory) if missing.
fn open_for_append(path: &Path) -> io::Result<File> {
    match OpenOptions::new().read(true).append(true).open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(path)
        }
        r => r,
    }
}

/// Syncs the directory holding `path`, so a new file's name survives a crash.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Reads `len` bytes of `file` at `offset`.
fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// The first line of `file` (without its line end), at most 1 MiB.
fn first_line(file: &File) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, out.len() as u64)?;
        if n == 0 || out.len() > 1 << 20 {
            break;
        }
        if let Some(i) = chunk[..n].iter().position(|b| *b == b'\n') {
            out.extend_from_slice(&chunk[..i]);
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    if out.ends_with(b"\r") {
        out.pop();
    }
    Ok(out)
}

/// Where the last line of `file` (of `len` bytes) starts: after its last
/// newline, 0 when it has none.
fn last_line_start(file: &File, len: u64) -> io::Result<u64> {
    const STEP: u64 = 4096;
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(STEP);
        let chunk = read_at(file, start, (end - start) as usize)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// What the bytes after a file's last newline are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Nothing: the file ends with a newline (or is empty).
    Clean,
    /// A complete row (or the complete header) that only lacks its newline.
    Unterminated,
    /// A row cut short by a crash mid-write: the bytes do not parse as a
    /// complete row under the file's header.
    Torn,
}

/// Classifies `tail` (the bytes after the last newline) of a file whose
/// first line is `header` (`None`: the tail is the first line itself).
pub fn classify_tail(header: Option<&[u8]>, tail: &[u8]) -> Tail {
    if tail.is_empty() {
        return Tail::Clean;
    }
    let Some(header) = header else {
        // No newline at all: the header line itself, which is kept (a file
        // of a header only has no rows to lose or to misread).
        return Tail::Unterminated;
    };
    let mut text = header.to_vec();
    text.push(b'\n');
    text.extend_from_slice(tail);
    text.push(b'\n');
    match read(&text[..], "") {
        Ok(d) if d.samples.len() == 1 => Tail::Unterminated,
        _ => Tail::Torn,
    }
}

/// Appends samples to a CSV file, one synced row at a time, so a crash
/// loses at most the row being written, and any number of processes may
/// append to the same file at once.
///
/// Every append takes an exclusive `flock` on the file, then checks the
/// path still names the file it holds ([`widen`] renames a rewritten file
/// over it; the appender then reopens), writes the header if the file is
/// empty (so it is written exactly once, and the directory is synced for a
/// new file), checks the header equals the one this appender writes (rows
/// never land under the wrong columns), repairs the end of the file (a
/// complete last row that only lacks its newline gets one; a torn row —
/// bytes after the last newline that do not parse as a complete row — is
/// cut off), writes the row and syncs it. A failed write (a full disk) is
/// cut back off, so the file is left as it was.
pub struct CsvAppender {
    path: PathBuf,
    extra_columns: Vec<String>,
    header: Vec<u8>,
    /// The file while it is still the one at `path`, and whether its header
    /// was checked.
    file: Option<(File, bool)>,
}

impl CsvAppender {
    /// Opens (or creates, with the header) `path` and checks its header.
    pub fn open(path: &Path, extra_columns: &[String]) -> Result<CsvAppender, CsvError> {
        let werr = |source| CsvError::Write {
            file: path.display().to_string(),
            source,
        };
        let mut a = CsvAppender {
            path: path.to_path_buf(),
            extra_columns: extra_columns.to_vec(),
            header: encode_line(&header(extra_columns)).map_err(werr)?,
            file: None,
        };
        a.locked(|_, _| Ok(()))?;
        Ok(a)
    }

    /// Appends one row and syncs it to disk.
    pub fn append(&mut self, s: &Sample) -> Result<(), CsvError> {
        let path = self.path.display().to_string();
        let line = encode_line(&row(s, &self.extra_columns)).map_err(|source| CsvError::Write {
            file: path.clone(),
            source,
        })?;
        self.locked(|file, len| {
            let r = (&*file).write_all(&line).and_then(|_| file.sync_data());
            if let Err(source) = r {
                // Leave the file as it was: a partial row would be torn.
                let _ = file.set_len(len);
                let _ = file.sync_data();
                return Err(CsvError::Append { file: path, source });
            }
            Ok(())
        })
    }

    /// Runs `f(file, length)` with the file locked, current, headed and
    /// repaired.
    fn locked<T>(
        &mut self,
        f: impl FnOnce(&File, u64) -> Result<T, CsvError>,
    ) -> Result<T, CsvError> {
        let path = self.path.clone();
        let werr = |source| CsvError::Write {
            file: path.display().to_string(),
            source,
        };
        loop {
            let (file, checked) = match self.file.take() {
                Some(f) => f,
                None => (open_for_append(&path).map_err(werr)?, false),
            };
            let lock = FileLock::take(&file, &path, true)?;
            if !still_named(&file, &path) {
                drop(lock);
                continue; // replaced by a widen, or removed: reopen
            }
            let len = file.metadata().map_err(werr)?.len();
            if len == 0 {
                // A new (or emptied) file: the header, once, under the lock.
                let r = (&file)
                    .write_all(&self.header)
                    .and_then(|_| file.sync_all())
                    .and_then(|_| sync_dir(&path));
                if let Err(source) = r {
                    // Nothing half-written stays: an empty file is removed.
                    let _ = file.set_len(0);
                    let _ = std::fs::remove_file(&path);
                    return Err(CsvError::Append {
                        file: path.display().to_string(),
                        source,
                    });
                }
                let len = self.header.len() as u64;
                let out = f(&file, len);
                drop(lock);
                self.file = Some((file, true));
                return out;
            }
            if !checked {
                self.check_header(&file)?;
            }
            let len = self.repair(&file, len)?;
            let out = f(&file, len);
            drop(lock);
            self.file = Some((file, true));
            return out;
        }
    }

    fn check_header(&self, file: &File) -> Result<(), CsvError> {
        let first = first_line(file).map_err(|source| CsvError::Write {
            file: self.path.display().to_string(),
            source,
        })?;
        let first = String::from_utf8_lossy(&first);
        let have = header_fields(&first);
        let have: Vec<&str> = have.iter().map(String::as_str).collect();
        let want = header(&self.extra_columns);
        if have != want.iter().map(String::as_str).collect::<Vec<_>>() {
            // A torn header (a crash while a new file got its first line)
            // is a strict prefix of ours with nothing after it: redone by
            // `repair`.
            let torn_header = !first.is_empty()
                && self.header.starts_with(first.as_bytes())
                && file.metadata().map(|m| m.len()).ok() == Some(first.len() as u64);
            if !torn_header {
                return Err(header_error(
                    &self.path,
                    format!(
                        "existing header differs from the one expected ({} vs {} columns); refusing to append",
                        have.len(),
                        want.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Repairs the end of a locked file of `len` bytes; returns its length.
    fn repair(&self, file: &File, len: u64) -> Result<u64, CsvError> {
        let werr = |source| CsvError::Write {
            file: self.path.display().to_string(),
            source,
        };
        if read_at(file, len - 1, 1).map_err(werr)? == b"\n" {
            return Ok(len);
        }
        let start = last_line_start(file, len).map_err(werr)?;
        let tail = read_at(file, start, (len - start) as usize).map_err(werr)?;
        let header_line = &self.header[..self.header.len() - 1];
        let kind = if start == 0 {
            if tail == header_line {
                Tail::Unterminated
            } else {
                Tail::Torn // a strict prefix of the header (checked before)
            }
        } else {
            classify_tail(Some(header_line), &tail)
        };
        let fixed = match kind {
            Tail::Clean => return Ok(len),
            Tail::Unterminated => {
                (&*file).write_all(b"\n").map_err(werr)?;
                len + 1
            }
            Tail::Torn if start == 0 => {
                file.set_len(0).map_err(werr)?;
                (&*file).write_all(&self.header).map_err(werr)?;
                self.header.len() as u64
            }
            Tail::Torn => {
                tracing::warn!(
                    file = %self.path.display(),
                    bytes = tail.len(),
                    "cutting off a torn last row (an interrupted write)"
                );
                file.set_len(start).map_err(werr)?;
                start
            }
        };
        file.sync_data().map_err(werr)?;
        Ok(fixed)
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

/// Reads a whole file under a shared lock (so no appender is mid-row), its
/// torn last row — bytes after the last newline that do not parse as a
/// complete row — cut off; a complete last row without its newline is kept.
/// Returns the bytes and whether a torn row was cut.
pub fn read_complete(path: &Path) -> Result<(Vec<u8>, bool), CsvError> {
    let oerr = |source| CsvError::Open {
        file: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(oerr)?;
    // A file on a filesystem without locks is still read.
    let lock = FileLock::take(&file, path, false).ok();
    let mut bytes = Vec::new();
    (&file).read_to_end(&mut bytes).map_err(oerr)?;
    drop(lock);
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok((bytes, false));
    }
    let start = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let header = (start > 0).then(|| {
        let end = bytes.iter().position(|b| *b == b'\n').unwrap_or(0);
        bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end])
    });
    match classify_tail(header, &bytes[start..]) {
        Tail::Torn => {
            bytes.truncate(start);
            Ok((bytes, true))
        }
        Tail::Clean | Tail::Unterminated => Ok((bytes, false)),
    }
}

/// Brings a file written by an older appender up to `extra_columns`: when its
/// header is a strict prefix of the wanted one (columns were only added at
/// the end), every line gets the new columns, empty on the old rows, in one
/// atomic rewrite under the file's lock (appenders wait, then reopen the new
/// file: no row is lost). The old rows' bytes are kept as they are. Returns
/// the columns added (none when the header is already the wanted one or the
/// file does not exist); any other header is left for [`CsvAppender::open`]
/// to refuse.
pub fn widen(path: &Path, extra_columns: &[String]) -> Result<Vec<String>, CsvError> {
    let werr = |source| CsvError::Write {
        file: path.display().to_string(),
        source,
    };
    let oerr = |source| CsvError::Open {
        file: path.display().to_string(),
        source,
    };
    loop {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(oerr(source)),
        };
        let lock = FileLock::take(&file, path, true)?;
        if !still_named(&file, path) {
            drop(lock);
            continue;
        }
        // Most calls find the header already wide: read it alone.
        let first = first_line(&file).map_err(oerr)?;
        let first = String::from_utf8_lossy(&first);
        let want = header(extra_columns);
        let have = header_fields(&first);
        let have: Vec<&str> = have.iter().map(String::as_str).collect();
        if have.len() >= want.len() || want.iter().zip(&have).any(|(w, h)| w != h) {
            return Ok(Vec::new());
        }
        let mut raw = Vec::new();
        (&file).read_to_end(&mut raw).map_err(oerr)?;
        let text = String::from_utf8(raw).map_err(|e| oerr(io::Error::other(e)))?;
        let Some(w) = widened(path, &text, extra_columns)? else {
            return Ok(Vec::new());
        };
        crate::write_file_atomic(path, &w.bytes).map_err(werr)?;
        drop(lock);
        return Ok(w.added);
    }
}

/// The column names of a header line, parsed by the `csv` crate (quoted
/// names and all), trimmed as the reader trims them. An unparsable line
/// gives no names, which no expected header equals.
fn header_fields(line: &str) -> Vec<String> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_bytes());
    let mut rec = csv::StringRecord::new();
    match r.read_record(&mut rec) {
        Ok(true) => rec.iter().map(|f| f.trim().to_string()).collect(),
        _ => Vec::new(),
    }
}

/// A file's text with columns added.
struct Widened {
    bytes: Vec<u8>,
    added: Vec<String>,
}

/// `text` widened to `extra_columns`, or `None` when there is nothing to add.
fn widened(path: &Path, text: &str, extra_columns: &[String]) -> Result<Option<Widened>, CsvError> {
    let werr = |source| CsvError::Write {
        file: path.display().to_string(),
        source,
    };
    let want = header(extra_columns);
    let Some(first) = text.lines().next() else {
        return Ok(None);
    };
    let have = header_fields(first);
    let have: Vec<&str> = have.iter().map(String::as_str).collect();
    if have.len() >= want.len() || want.iter().zip(&have).any(|(w, h)| w != h) {
        return Ok(None);
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
            // A last row without its newline stays as it is; the appender
            // completes or cuts it under its own header.
            None => (line, ""),
        };
        out.extend_from_slice(row.as_bytes());
        if !end.is_empty() && !row.is_empty() {
            out.extend_from_slice(pad.as_bytes());
        }
        out.extend_from_slice(end.as_bytes());
    }
    Ok(Some(Widened { bytes: out, added }))
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

    fn sample(group: &str) -> Sample {
        let mut s = Sample {
            algorithm: Some(Algorithm::Precopy),
            group_id: Some(group.into()),
            converged: Some(true),
            ..Sample::default()
        };
        s.features.set(Feature::VmSize, Some(512.0));
        s.set_label(Metric::TT, 4700.0);
        s
    }

    fn groups(path: &Path) -> Vec<String> {
        read_path(path)
            .unwrap()
            .samples
            .into_iter()
            .map(|s| s.group_id.unwrap_or_default())
            .collect()
    }

    #[test]
    fn repair_removes_only_a_genuinely_torn_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.csv");
        let mut a = CsvAppender::open(&path, &[]).unwrap();
        a.append(&sample("g1")).unwrap();
        a.append(&sample("g2")).unwrap();
        drop(a);
        let full = std::fs::read(&path).unwrap();

        // A complete last row that only lacks its newline is kept.
        std::fs::write(&path, &full[..full.len() - 1]).unwrap();
        assert_eq!(
            read_complete(&path).unwrap(),
            (full[..full.len() - 1].to_vec(), false)
        );
        CsvAppender::open(&path, &[])
            .unwrap()
            .append(&sample("g3"))
            .unwrap();
        assert_eq!(groups(&path), ["g1", "g2", "g3"]);

        // A torn row (too few cells) is cut, and only it.
        let mut torn = std::fs::read(&path).unwrap();
        torn.extend_from_slice(b"0,,512,1");
        std::fs::write(&path, &torn).unwrap();
        assert!(read_complete(&path).unwrap().1, "reported as torn");
        CsvAppender::open(&path, &[])
            .unwrap()
            .append(&sample("g4"))
            .unwrap();
        assert_eq!(groups(&path), ["g1", "g2", "g3", "g4"]);

        // A header-only file without its newline is kept, not wiped.
        let header_line = encode_line(&header(&[])).unwrap();
        std::fs::write(&path, &header_line[..header_line.len() - 1]).unwrap();
        CsvAppender::open(&path, &[])
            .unwrap()
            .append(&sample("h1"))
            .unwrap();
        assert_eq!(groups(&path), ["h1"]);
        assert_eq!(
            std::fs::read(&path)
                .unwrap()
                .iter()
                .filter(|b| **b == b'\n')
                .count(),
            2
        );

        // A header torn while a new file got its first line is redone.
        std::fs::write(&path, &header_line[..30]).unwrap();
        CsvAppender::open(&path, &[])
            .unwrap()
            .append(&sample("t1"))
            .unwrap();
        assert_eq!(groups(&path), ["t1"]);

        // Anything else on the first line is someone else's file: refused.
        std::fs::write(&path, b"name,size\nweb1,3").unwrap();
        assert!(CsvAppender::open(&path, &[]).is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"name,size\nweb1,3",
            "untouched"
        );
    }

    #[test]
    fn a_widen_under_a_writer_keeps_its_rows_or_refuses_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.csv");
        let old = vec!["qemu_version".to_string()];
        let new = vec!["qemu_version".to_string(), "dirtied".to_string()];
        let mut writer = CsvAppender::open(&path, &old).unwrap();
        writer.append(&sample("before")).unwrap();
        // A newer migsight widens the file the writer holds open.
        assert_eq!(widen(&path, &new).unwrap(), ["dirtied"]);
        let mut newer = CsvAppender::open(&path, &new).unwrap();
        newer.append(&sample("newer")).unwrap();
        // The old writer follows the file to its new inode and, its columns
        // being the old ones, is refused instead of reporting success for
        // a row that would be lost (the old inode) or misplaced.
        let e = writer.append(&sample("old-writer")).unwrap_err();
        assert!(e.to_string().contains("header differs"), "{e}");
        assert_eq!(groups(&path), ["before", "newer"]);
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
