//! The six predicted migration metrics.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A metric migsight predicts per algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Metric {
    /// Total migration time, milliseconds.
    TT,
    /// Downtime (VM stopped), milliseconds.
    DT,
    /// Total transferred data, bytes.
    TD,
    /// VM performance during migration relative to before (1.0 = unchanged).
    PERF,
    /// Extra CPU used on the source host, % of one core.
    CPU,
    /// Extra memory used on the source host, MB (MiB).
    MEM,
}

impl Metric {
    /// All metrics in canonical order.
    pub const ALL: [Metric; 6] = [
        Metric::TT,
        Metric::DT,
        Metric::TD,
        Metric::PERF,
        Metric::CPU,
        Metric::MEM,
    ];

    /// Short stable name (`TT`, `DT`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Metric::TT => "TT",
            Metric::DT => "DT",
            Metric::TD => "TD",
            Metric::PERF => "PERF",
            Metric::CPU => "CPU",
            Metric::MEM => "MEM",
        }
    }

    /// Column name in a CSAP-schema CSV.
    pub const fn column(self) -> &'static str {
        match self {
            Metric::TT => "qemu_tt",
            Metric::DT => "qemu_dt",
            Metric::TD => "qemu_td",
            Metric::PERF => "performance",
            Metric::CPU => "used_cpu_src",
            Metric::MEM => "used_mem_src",
        }
    }

    /// Unit, for tables and docs.
    pub const fn unit(self) -> &'static str {
        match self {
            Metric::TT | Metric::DT => "ms",
            Metric::TD => "bytes",
            Metric::PERF => "ratio",
            Metric::CPU => "% of one core",
            Metric::MEM => "MB",
        }
    }

    /// Index into per-metric arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the metric is strictly positive on a completed migration
    /// (TT, DT, TD, PERF); CPU and MEM deltas may be zero or slightly negative.
    pub const fn strictly_positive(self) -> bool {
        matches!(self, Metric::TT | Metric::DT | Metric::TD | Metric::PERF)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for a metric name that is not one of the six.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric {0:?} (expected one of TT, DT, TD, PERF, CPU, MEM)")]
pub struct UnknownMetric(pub String);

impl FromStr for Metric {
    type Err = UnknownMetric;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()) || m.column() == s.trim())
            .ok_or_else(|| UnknownMetric(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names_parse() {
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>(), Ok(m));
            assert_eq!(m.column().parse::<Metric>(), Ok(m));
        }
        assert!("XX".parse::<Metric>().is_err());
    }
}
