//! The guest image the lab, the tests and the demo boot: a cloud kernel and
//! an initramfs with migsight's workloads, built reproducibly by
//! `lab/guest/build-image.sh` into a cache outside the source tree.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Paths of a built guest image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// `manifest.txt` contents (sha256 of each file and package versions).
    pub manifest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot run {script}: {source}")]
    Spawn {
        script: PathBuf,
        source: std::io::Error,
    },
    #[error("building the guest image failed ({status}); run {script} by hand to see why")]
    Build { script: PathBuf, status: String },
    #[error("the guest image in {0} is incomplete after building (vmlinuz or initramfs.cpio.gz missing)")]
    Incomplete(PathBuf),
}

/// migsight's cache: `$MIGSIGHT_CACHE`, else `$XDG_CACHE_HOME/migsight`,
/// else `~/.cache/migsight` (the guest image, the unpacked QEMU 7.2, the
/// demo's models).
pub fn cache_root() -> PathBuf {
    std::env::var_os("MIGSIGHT_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("migsight")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/migsight")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/migsight"))
}

/// The image cache directory: [`cache_root`]`/guest`.
pub fn cache_dir() -> PathBuf {
    cache_root().join("guest")
}

/// The build script: `$MIGSIGHT_SRC/lab/guest/build-image.sh`, else the one in
/// the source tree this binary was built from.
pub fn build_script() -> PathBuf {
    if let Some(src) = std::env::var_os("MIGSIGHT_SRC") {
        return PathBuf::from(src).join("lab/guest/build-image.sh");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/guest/build-image.sh")
}

impl GuestImage {
    /// Builds the image if needed (the script is idempotent and quick when
    /// the image is current) and returns its paths.
    pub fn ensure() -> Result<GuestImage, ImageError> {
        let script = build_script();
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .map_err(|source| ImageError::Spawn {
                script: script.clone(),
                source,
            })?;
        if !status.success() {
            return Err(ImageError::Build {
                script,
                status: status.to_string(),
            });
        }
        Self::open(&cache_dir())
    }

    /// Uses an already built image in `dir`.
    pub fn open(dir: &Path) -> Result<GuestImage, ImageError> {
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initramfs.cpio.gz");
        if !kernel.is_file() || !initrd.is_file() {
            return Err(ImageError::Incomplete(dir.to_path_buf()));
        }
        let manifest = std::fs::read_to_string(dir.join("manifest.txt")).unwrap_or_default();
        Ok(GuestImage {
            dir: dir.to_path_buf(),
            kernel,
            initrd,
            manifest,
        })
    }

    /// The SHA-256 digest (hex) that the image manifest records for `file`, if any.
    pub fn manifest_digest(&self, file: &str) -> Option<String> {
        self.manifest.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            let (a, b) = (it.next()?, it.next()?);
            if b.trim_start_matches('*').ends_with(file) && a.len() == 64 {
                Some(a.to_string())
            } else if a.ends_with(file) && b.len() == 64 {
                Some(b.to_string())
            } else {
                None
            }
        })
    }
}
