//! The model file: `MIGSMDL\n`, the format version (u32 LE), a postcard
//! payload of [`Model`], and the SHA-256 of the payload; written atomically,
//! read with its size capped, and every index inside checked on load so
//! even a checksummed hostile file cannot make `predict` panic.

use super::conformal::Residuals;
use super::metric::ConvergeModel;
use super::Model;
use crate::family::Regressor;
use crate::gbdt::Gbdt;
use crate::inputs::INPUT_COUNT;
use crate::sha256;
use migsight_proto::wire::FallbackRule;
use migsight_proto::{Algorithm, Metric};
use std::path::Path;

/// Version of the model file layout. Bump on any incompatible change.
pub const FORMAT_VERSION: u32 = 6;
/// First bytes of a model file.
pub const MAGIC: &[u8; 8] = b"MIGSMDL\n";
/// Why a model file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a migsight model file (bad magic bytes)")]
    NotAModel { path: String },
    #[error("{path}: model format version {found}, this migsight reads version {expected}; retrain with `migsight train`")]
    Version {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("{path}: model file is truncated or corrupt ({why})")]
    Corrupt { path: String, why: String },
    #[error("{path}: {size} bytes is more than a model file may be ({max} bytes); not read")]
    TooLarge { path: String, size: u64, max: u64 },
}

/// Largest model file [`Model::load`] reads: 64 MiB. A model trained on the
/// 1,097-row lab set is 0.6 MiB; the cap keeps a SIGHUP onto a wrong file
/// from making the daemon read and hold hundreds of MiB.
pub const MAX_MODEL_BYTES: u64 = 64 << 20;

fn tree_ok(g: &Gbdt) -> bool {
    g.trees.iter().all(|t| {
        !t.nodes.is_empty()
            && t.nodes.iter().enumerate().all(|(i, n)| {
                n.feature == u16::MAX
                    || ((n.feature as usize) < INPUT_COUNT
                        && (n.left as usize) < t.nodes.len()
                        && (n.right as usize) < t.nodes.len()
                        // Children come after parents: routing terminates.
                        && n.left as usize > i
                        && n.right as usize > i)
            })
    })
}

/// A residual sketch `cdf` can search: finite and ascending.
fn residuals_ok(r: &Residuals) -> bool {
    r.lo.is_finite()
        && r.hi.is_finite()
        && r.sketch.iter().all(|v| v.is_finite())
        && r.sketch.windows(2).all(|w| w[0] <= w[1])
}

fn linear_ok(l: &crate::linear::Linear) -> bool {
    let p = l.scaler.cols.len();
    l.scaler.cols.iter().all(|&c| c < INPUT_COUNT)
        && l.weights.len() == p
        && l.scaler.fill.len() == p
        && l.scaler.mean.len() == p
        && l.scaler.scale.len() == p
}

fn regressor_ok(r: &Regressor) -> bool {
    let ok = |i: usize| i < INPUT_COUNT;
    match r {
        Regressor::Gbdt(g) => tree_ok(g),
        Regressor::Linear(l) => linear_ok(l),
        Regressor::Residual { base, linear } => {
            !matches!(
                **base,
                Regressor::Boosted { .. } | Regressor::Residual { .. }
            ) && regressor_ok(base)
                && linear_ok(linear)
        }
        Regressor::Svr(s) => {
            let p = s.scaler.cols.len();
            s.scaler.cols.iter().all(|&c| ok(c))
                && s.scaler.fill.len() == p
                && s.scaler.mean.len() == p
                && s.scaler.scale.len() == p
                && s.members.iter().all(|mm| {
                    mm.features.iter().all(|&f| f < p)
                        && mm.sv.len() == mm.coef.len() * mm.features.len()
                })
        }
        Regressor::Analytic { input, .. } => ok(*input),
        Regressor::Constant(_) => true,
        Regressor::Boosted { base, trees } => {
            !matches!(**base, Regressor::Boosted { .. }) && regressor_ok(base) && tree_ok(trees)
        }
    }
}

impl Model {
    /// The file bytes: magic, format version (u32 LE), postcard payload, sha256 of the payload.
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        let payload = postcard::to_allocvec(self)?;
        let mut out = Vec::with_capacity(payload.len() + 44);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&sha256::digest(&payload));
        Ok(out)
    }

    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Model, LoadError> {
        let corrupt = |why: String| LoadError::Corrupt {
            path: path.to_string(),
            why,
        };
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(LoadError::NotAModel {
                path: path.to_string(),
            });
        }
        if bytes.len() < MAGIC.len() + 4 {
            return Err(corrupt("ends inside the header".into()));
        }
        let v = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if v != FORMAT_VERSION {
            return Err(LoadError::Version {
                path: path.to_string(),
                found: v,
                expected: FORMAT_VERSION,
            });
        }
        if bytes.len() < 12 + 32 {
            return Err(corrupt(format!("only {} bytes", bytes.len())));
        }
        let (payload, sum) = bytes[12..].split_at(bytes.len() - 12 - 32);
        if sha256::digest(payload) != sum {
            return Err(corrupt("checksum mismatch".into()));
        }
        let model: Model = postcard::from_bytes(payload).map_err(|e| corrupt(e.to_string()))?;
        if model.format_version != FORMAT_VERSION || model.algorithms.len() != Algorithm::ALL.len()
        {
            return Err(corrupt("inconsistent contents".into()));
        }
        for (i, a) in model.algorithms.iter().enumerate() {
            if a.algorithm.index() != i || a.metrics.len() != Metric::ALL.len() {
                return Err(corrupt("inconsistent contents".into()));
            }
        }
        model.check_inputs().map_err(corrupt)?;
        Ok(model)
    }

    /// Checks every input index in the model is in range (a hostile or
    /// corrupt-but-checksummed file must not make predict index out of bounds).
    fn check_inputs(&self) -> Result<(), String> {
        // `info` names the inputs used by their index into `inputs`.
        if self.inputs_used.iter().any(|&i| i >= self.inputs.len()) {
            return Err("bad list of inputs used".into());
        }
        for a in &self.algorithms {
            if let ConvergeModel::Classifier { model: g, floor } = &a.converge {
                if !tree_ok(g) || !(0.0..0.5).contains(floor) {
                    return Err("bad classifier tree".into());
                }
            }
            for m in &a.metrics {
                if !regressor_ok(&m.regressor) {
                    return Err(format!("bad {} regressor", m.metric));
                }
                if !residuals_ok(&m.residuals) || !m.borderline.as_ref().is_none_or(residuals_ok) {
                    return Err(format!("bad {} residuals", m.metric));
                }
            }
        }
        if !self.domain.is_valid() || !self.algorithms.iter().all(|a| a.domain.is_valid()) {
            return Err("bad domain of validity".into());
        }
        if !self.decisions.iter().all(FallbackRule::is_valid) {
            return Err("bad recommendation fallback".into());
        }
        Ok(())
    }

    /// Writes the model atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = self.to_bytes()?;
        migsight_proto::write_file_atomic(path, &bytes)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    }

    /// Reads and checks a model file. The magic bytes and the size (at most
    /// [`MAX_MODEL_BYTES`]) are checked before the rest is read, so a SIGHUP
    /// onto a huge or foreign file costs a few bytes of reading, not its size.
    pub fn load(path: &Path) -> Result<Model, LoadError> {
        use std::io::Read;
        let p = path.display().to_string();
        let io = |source| LoadError::Io {
            path: p.clone(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::with_capacity(MAGIC.len());
        Read::by_ref(&mut f)
            .take(MAGIC.len() as u64)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes != MAGIC {
            return Err(LoadError::NotAModel { path: p });
        }
        let size = f.metadata().map_err(io)?.len();
        if size > MAX_MODEL_BYTES {
            return Err(LoadError::TooLarge {
                path: p,
                size,
                max: MAX_MODEL_BYTES,
            });
        }
        // `take` keeps a file that grows while being read within the cap.
        f.take(MAX_MODEL_BYTES - 8 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_MODEL_BYTES {
            return Err(LoadError::TooLarge {
                path: p,
                size: bytes.len() as u64,
                max: MAX_MODEL_BYTES,
            });
        }
        Model::from_bytes(&bytes, &p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::FamilyKind;
    use crate::model::testutil::*;
    use migsight_proto::wire::{FallbackRule, Objective};
    use migsight_proto::Algorithm;
    #[test]
    fn huge_or_foreign_files_are_refused_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        // 300 MiB of junk (sparse): the magic is wrong after 8 bytes.
        let junk = dir.path().join("junk.msm");
        std::fs::File::create(&junk)
            .unwrap()
            .set_len(300 << 20)
            .unwrap();
        assert!(matches!(
            Model::load(&junk),
            Err(LoadError::NotAModel { .. })
        ));
        // An endless file: only its first 8 bytes are read (else this hangs).
        assert!(matches!(
            Model::load(Path::new("/dev/zero")),
            Err(LoadError::NotAModel { .. })
        ));
        // Right magic, but past the cap: refused by its size.
        let big = dir.path().join("big.msm");
        std::fs::write(&big, MAGIC).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&big)
            .unwrap()
            .set_len(MAX_MODEL_BYTES + 1)
            .unwrap();
        let e = Model::load(&big).unwrap_err();
        assert!(matches!(e, LoadError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("not read"), "{e}");
        // Short or empty files are not models either.
        std::fs::write(&junk, b"MIGS").unwrap();
        assert!(matches!(
            Model::load(&junk),
            Err(LoadError::NotAModel { .. })
        ));
        std::fs::write(&junk, b"").unwrap();
        assert!(matches!(
            Model::load(&junk),
            Err(LoadError::NotAModel { .. })
        ));
    }

    #[test]
    fn save_load_round_trip_predicts_identically() {
        let m = Model::train(&data(30, 1, true), &fast(FamilyKind::Gbdt, 1));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.msm");
        m.save(&path).unwrap();
        let back = Model::load(&path).unwrap();
        assert_eq!(back, m);
        let req = request(vm());
        assert_eq!(back.predict(&req).unwrap(), m.predict(&req).unwrap());
        // ModelInfo carries what the file holds, fallback rules included.
        let mut ruled = back.clone();
        let rule = FallbackRule {
            objective: Objective::Performance,
            qemu: "7.2".into(),
            default: Algorithm::Postcopy,
            margin: 0.1,
            groups: 30,
            loss_model: 0.09,
            loss_rule: 0.07,
        };
        ruled.decisions = vec![rule.clone()];
        let info = ruled.info("m.msm");
        assert_eq!(info.fallback, vec![rule]);
        assert_eq!(info.rows, m.rows);
        assert_eq!(info.data_sha256, m.data_sha256);
        assert_eq!(info.path, "m.msm");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let m = Model::train(&data(12, 1, true), &fast(FamilyKind::Linear, 1));
        let bytes = m.to_bytes().unwrap();
        let e = Model::from_bytes(&bytes[..bytes.len() / 2], "m").unwrap_err();
        assert!(matches!(e, LoadError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("truncated or corrupt"));
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(matches!(
            Model::from_bytes(&flipped, "m"),
            Err(LoadError::Corrupt { .. })
        ));
        let mut other = bytes.clone();
        other[8..12].copy_from_slice(&7u32.to_le_bytes());
        let e = Model::from_bytes(&other, "m").unwrap_err();
        assert!(matches!(e, LoadError::Version { found: 7, .. }), "{e}");
        assert!(e.to_string().contains("version 7"));
        assert!(matches!(
            Model::from_bytes(b"hello world, not a model", "m"),
            Err(LoadError::NotAModel { .. })
        ));
        assert!(matches!(
            Model::from_bytes(b"", "m"),
            Err(LoadError::NotAModel { .. })
        ));
        assert!(matches!(
            Model::from_bytes(&bytes[..10], "m"),
            Err(LoadError::Corrupt { .. })
        ));
        assert!(matches!(
            Model::load(Path::new("/nonexistent/m.msm")),
            Err(LoadError::Io { .. })
        ));
        // Every truncation is an error, never a panic.
        for cut in (0..bytes.len()).step_by(97) {
            assert!(Model::from_bytes(&bytes[..cut], "m").is_err());
        }
    }
}
