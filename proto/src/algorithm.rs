//! The QEMU live-migration algorithms migsight models.
//!
//! The seeds' five (codes 0–4, the CSAP `capability` column) and what QEMU 8–10
//! made the common choices since (codes 5–8). Which of them a given QEMU can
//! run is not decided here: `migsight_qemu::discovery` asks the QEMU itself
//! (or, without QMP, reads its version), and [`Algorithm::known_unavailable`]
//! holds the version rules that apply whatever the build.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A QEMU live-migration algorithm.
///
/// The discriminant is the CSAP dataset's `capability` code, which is how the
/// algorithm is stored in CSV files: 0–4 keep the seed's meaning; 5–8 are
/// migsight's additions (`data/README.md`). [`Algorithm::name`] is the stable
/// name used on the command line, in JSON and on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Plain iterative pre-copy.
    Precopy = 0,
    /// Pre-copy with CPU throttling (`auto-converge`).
    AutoConverge = 1,
    /// Pre-copy with XOR-based delta compression of re-sent pages (`xbzrle`).
    Xbzrle = 2,
    /// Pre-copy with zlib compression of every page (`compress`; removed in QEMU 9.1).
    Compress = 3,
    /// Post-copy (`postcopy-ram`): switch to the destination early, pull the rest on demand.
    Postcopy = 4,
    /// Pre-copy over several parallel channels (`multifd`), no compression.
    Multifd = 5,
    /// `multifd` with zstd compression of every page (`multifd-compression zstd`).
    MultifdZstd = 6,
    /// Post-copy with a separate channel for page faults (`postcopy-preempt`, QEMU ≥ 7.1),
    /// so faulted pages overtake the background stream.
    PostcopyPreempt = 7,
    /// Pre-copy with per-vCPU dirty-rate limits (`dirty-limit`, QEMU ≥ 8.1, KVM
    /// with a dirty ring only): the guest is slowed where it dirties, not everywhere.
    DirtyLimit = 8,
}

impl Algorithm {
    /// All algorithms, in code order.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::Precopy,
        Algorithm::AutoConverge,
        Algorithm::Xbzrle,
        Algorithm::Compress,
        Algorithm::Postcopy,
        Algorithm::Multifd,
        Algorithm::MultifdZstd,
        Algorithm::PostcopyPreempt,
        Algorithm::DirtyLimit,
    ];

    /// The seeds' five (CSAP codes 0–4).
    pub const SEED: [Algorithm; 5] = [
        Algorithm::Precopy,
        Algorithm::AutoConverge,
        Algorithm::Xbzrle,
        Algorithm::Compress,
        Algorithm::Postcopy,
    ];

    /// Stable name: `precopy`, `auto-converge`, `xbzrle`, `compress`, `postcopy`,
    /// `multifd`, `multifd-zstd`, `postcopy-preempt`, `dirty-limit`.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Precopy => "precopy",
            Algorithm::AutoConverge => "auto-converge",
            Algorithm::Xbzrle => "xbzrle",
            Algorithm::Compress => "compress",
            Algorithm::Postcopy => "postcopy",
            Algorithm::Multifd => "multifd",
            Algorithm::MultifdZstd => "multifd-zstd",
            Algorithm::PostcopyPreempt => "postcopy-preempt",
            Algorithm::DirtyLimit => "dirty-limit",
        }
    }

    /// The CSAP `capability` code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Index into per-algorithm arrays (same as the code).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The algorithm with code `code`.
    pub fn from_code(code: u8) -> Option<Algorithm> {
        Self::ALL.get(code as usize).copied()
    }

    /// The QEMU migration capabilities this algorithm turns on (plain
    /// pre-copy none). Every other capability migsight knows is turned off,
    /// where the QEMU has it.
    pub const fn capabilities(self) -> &'static [&'static str] {
        match self {
            Algorithm::Precopy => &[],
            Algorithm::AutoConverge => &["auto-converge"],
            Algorithm::Xbzrle => &["xbzrle"],
            Algorithm::Compress => &["compress"],
            Algorithm::Postcopy => &["postcopy-ram"],
            Algorithm::Multifd | Algorithm::MultifdZstd => &["multifd"],
            Algorithm::PostcopyPreempt => &["postcopy-ram", "postcopy-preempt"],
            Algorithm::DirtyLimit => &["dirty-limit"],
        }
    }

    /// Capabilities migsight sets (on or off) on a QEMU that has them.
    pub const MANAGED_CAPABILITIES: [&'static str; 7] = [
        "auto-converge",
        "xbzrle",
        "compress",
        "postcopy-ram",
        "multifd",
        "postcopy-preempt",
        "dirty-limit",
    ];

    /// Whether a capability only matters on the source (the destination need
    /// not, and for `dirty-limit` cannot without KVM, enable it).
    pub fn source_only_capability(cap: &str) -> bool {
        matches!(cap, "auto-converge" | "dirty-limit")
    }

    /// Whether the guest switches to the destination before all memory is
    /// there (post-copy: `migrate-start-postcopy` after the first pass).
    pub const fn is_postcopy(self) -> bool {
        matches!(self, Algorithm::Postcopy | Algorithm::PostcopyPreempt)
    }

    /// Whether pages travel over multifd channels.
    pub const fn is_multifd(self) -> bool {
        matches!(self, Algorithm::Multifd | Algorithm::MultifdZstd)
    }

    /// Why a QEMU of this version cannot run the algorithm whatever its build
    /// and accelerator, when that is known from the version alone; `None`
    /// when the version allows it (the build, the accelerator and QMP have
    /// the last word: see `migsight_qemu::discovery`).
    pub fn known_unavailable(self, major: u32, minor: u32) -> Option<&'static str> {
        let v = (major, minor);
        match self {
            Algorithm::Compress if v >= (9, 1) => Some("removed in QEMU 9.1"),
            Algorithm::Multifd | Algorithm::MultifdZstd if v < (4, 0) => {
                Some("multifd needs QEMU 4.0 or later")
            }
            Algorithm::MultifdZstd if v < (5, 1) => {
                Some("multifd zstd compression needs QEMU 5.1 or later")
            }
            Algorithm::PostcopyPreempt if v < (7, 1) => Some("needs QEMU 7.1 or later"),
            Algorithm::DirtyLimit if v < (8, 1) => Some("needs QEMU 8.1 or later"),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an algorithm name or code that migsight does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown migration algorithm {0:?} (expected one of precopy, auto-converge, xbzrle, compress, postcopy, multifd, multifd-zstd, postcopy-preempt, dirty-limit, or a code 0-8)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Accepts the stable names, QEMU's capability names, and codes written
    /// as integers or floats (`"2"`, `"2.0"`), as found in CSAP files.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let by_name = match t.to_ascii_lowercase().as_str() {
            "precopy" | "pre-copy" | "original" => Some(Algorithm::Precopy),
            "auto-converge" | "autoconverge" | "throttle" | "cpu-throttling" => {
                Some(Algorithm::AutoConverge)
            }
            "xbzrle" | "delta-compression" => Some(Algorithm::Xbzrle),
            "compress" | "data-compression" => Some(Algorithm::Compress),
            "postcopy" | "post-copy" | "postcopy-ram" | "x-postcopy-ram" => {
                Some(Algorithm::Postcopy)
            }
            "multifd" | "parallel" => Some(Algorithm::Multifd),
            "multifd-zstd" | "zstd" => Some(Algorithm::MultifdZstd),
            "postcopy-preempt" | "post-copy-preempt" => Some(Algorithm::PostcopyPreempt),
            "dirty-limit" | "dirtylimit" => Some(Algorithm::DirtyLimit),
            _ => None,
        };
        if let Some(a) = by_name {
            return Ok(a);
        }
        match t.parse::<f64>() {
            Ok(v) if v.fract() == 0.0 && (0.0..=255.0).contains(&v) => {
                Algorithm::from_code(v as u8).ok_or_else(|| UnknownAlgorithm(s.to_string()))
            }
            _ => Err(UnknownAlgorithm(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>(), Ok(a));
            assert_eq!(Algorithm::from_code(a.code()), Some(a));
            assert_eq!(format!("{}.0", a.code()).parse::<Algorithm>(), Ok(a));
            assert_eq!(Algorithm::ALL[a.index()], a);
        }
        // The seed's codes keep their meaning.
        assert_eq!(Algorithm::Xbzrle.code(), 2);
        assert_eq!(Algorithm::Postcopy.code(), 4);
        assert_eq!(Algorithm::Multifd.code(), 5);
        assert_eq!(Algorithm::DirtyLimit.code(), 8);
        assert_eq!(Algorithm::SEED, Algorithm::ALL[..5]);
    }

    #[test]
    fn unknown_names_are_rejected() {
        assert!("rdma".parse::<Algorithm>().is_err());
        assert!("9".parse::<Algorithm>().is_err());
        assert!("1.5".parse::<Algorithm>().is_err());
        assert!("".parse::<Algorithm>().is_err());
        assert!("-1".parse::<Algorithm>().is_err());
    }

    #[test]
    fn serde_uses_stable_names() {
        let j = serde_json::to_string(&Algorithm::AutoConverge).unwrap();
        assert_eq!(j, "\"auto-converge\"");
        let j = serde_json::to_string(&Algorithm::MultifdZstd).unwrap();
        assert_eq!(j, "\"multifd-zstd\"");
    }

    #[test]
    fn version_rules() {
        assert_eq!(
            Algorithm::Compress.known_unavailable(9, 1),
            Some("removed in QEMU 9.1")
        );
        assert_eq!(Algorithm::Compress.known_unavailable(9, 0), None);
        assert_eq!(Algorithm::Compress.known_unavailable(7, 2), None);
        assert!(Algorithm::DirtyLimit.known_unavailable(7, 2).is_some());
        assert_eq!(Algorithm::DirtyLimit.known_unavailable(10, 0), None);
        assert_eq!(Algorithm::PostcopyPreempt.known_unavailable(7, 2), None);
        for a in Algorithm::ALL {
            for cap in a.capabilities() {
                assert!(Algorithm::MANAGED_CAPABILITIES.contains(cap), "{cap}");
            }
        }
        assert!(Algorithm::PostcopyPreempt.is_postcopy());
        assert!(Algorithm::MultifdZstd.is_multifd());
    }
}
