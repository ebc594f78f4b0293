//! The five QEMU live-migration algorithms migsight models.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A QEMU live-migration algorithm.
///
/// The discriminant is the CSAP dataset's `capability` code (0–4), which is
/// how the algorithm is stored in CSV files; [`Algorithm::name`] is the stable
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
    /// Pre-copy with zlib compression of every page (`compress`).
    Compress = 3,
    /// Post-copy (`postcopy-ram`): switch to the destination early, pull the rest on demand.
    Postcopy = 4,
}

impl Algorithm {
    /// All algorithms, in CSAP code order.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Precopy,
        Algorithm::AutoConverge,
        Algorithm::Xbzrle,
        Algorithm::Compress,
        Algorithm::Postcopy,
    ];

    /// Stable name: `precopy`, `auto-converge`, `xbzrle`, `compress`, `postcopy`.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Precopy => "precopy",
            Algorithm::AutoConverge => "auto-converge",
            Algorithm::Xbzrle => "xbzrle",
            Algorithm::Compress => "compress",
            Algorithm::Postcopy => "postcopy",
        }
    }

    /// The CSAP `capability` code, 0–4.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Index into per-algorithm arrays (same as the code).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The algorithm with CSAP code `code`.
    pub fn from_code(code: u8) -> Option<Algorithm> {
        Self::ALL.get(code as usize).copied()
    }

    /// The QEMU migration capability that selects this algorithm, if any
    /// (plain pre-copy needs none).
    pub const fn qemu_capability(self) -> Option<&'static str> {
        match self {
            Algorithm::Precopy => None,
            Algorithm::AutoConverge => Some("auto-converge"),
            Algorithm::Xbzrle => Some("xbzrle"),
            Algorithm::Compress => Some("compress"),
            Algorithm::Postcopy => Some("postcopy-ram"),
        }
    }

    /// Whether the destination must enable the same capability
    /// (everything but `auto-converge`, which only throttles the source).
    pub const fn destination_needs_capability(self) -> bool {
        !matches!(self, Algorithm::Precopy | Algorithm::AutoConverge)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an algorithm name or code that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown migration algorithm {0:?} (expected one of precopy, auto-converge, xbzrle, compress, postcopy, or a code 0-4)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Accepts the stable names, QEMU's capability names, and CSAP codes
    /// written as integers or floats (`"2"`, `"2.0"`), as found in CSAP files.
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
            _ => None,
        };
        if let Some(a) = by_name {
            return Ok(a);
        }
        match t.parse::<f64>() {
            Ok(v) if v.fract() == 0.0 && (0.0..=4.0).contains(&v) => {
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
        }
        assert_eq!(Algorithm::Xbzrle.code(), 2);
        assert_eq!(Algorithm::Postcopy.name(), "postcopy");
    }

    #[test]
    fn unknown_names_are_rejected() {
        assert!("multifd".parse::<Algorithm>().is_err());
        assert!("5".parse::<Algorithm>().is_err());
        assert!("1.5".parse::<Algorithm>().is_err());
        assert!("".parse::<Algorithm>().is_err());
    }

    #[test]
    fn serde_uses_stable_names() {
        let j = serde_json::to_string(&Algorithm::AutoConverge).unwrap();
        assert_eq!(j, "\"auto-converge\"");
    }
}
