//! The shared vocabulary of migsight.
//!
//! Everything that more than one part of migsight must agree on lives here and
//! only here: the migration [`Algorithm`]s, the six predicted [`Metric`]s,
//! the CSAP feature schema ([`Feature`], [`FeatureVector`]) with its composed
//! features, the CSAP-schema CSV reader/writer ([`csv`]) with migsight's
//! record columns ([`record`]), and the wire protocol
//! between the CLI, the agent and the predictor ([`wire`], [`frame`]).
//!
//! Data flows one way through these types:
//! sample → [`FeatureVector`] → [`wire::Prediction`] → [`wire::Recommendation`].

pub mod algorithm;
pub mod csv;
pub mod feature;
pub mod frame;
pub mod metric;
pub mod record;
pub mod rng;
pub mod serve;
pub mod units;
pub mod wire;
pub mod workload;

pub use algorithm::Algorithm;
pub use feature::{ComposedFeatures, Feature, FeatureVector};
pub use metric::Metric;
pub use workload::WorkloadType;

/// Writes `bytes` to `path` atomically: a temporary file next to it, fsync,
/// rename, fsync of the directory. Readers see the old file or the new one,
/// never a half-written one.
pub fn write_file_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes to stdout; a closed pipe (`migsight … | head`) is not an error.
/// (Rust ignores SIGPIPE, so `print!` would panic there; restoring SIGPIPE
/// is no option in a binary whose daemons and QMP clients write to sockets.)
pub fn write_stdout(s: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|_| o.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}
