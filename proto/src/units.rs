//! Parsing the unit forms operators type: `1Gbit`, `125MB/s`, `300ms`, `10GiB`.
//!
//! Decimal prefixes (k, M, G, T) are powers of 1000 and binary ones (Ki, Mi,
//! Gi, Ti) powers of 1024, as in `iproute2` and QEMU's docs. `b`/`bit` is bits,
//! `B` is bytes. A bare number is refused for sizes and bandwidths because the
//! unit is exactly what operators get wrong.

use std::fmt;
use std::time::Duration;

/// A unit string that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {input:?} as {what}: {why}")]
pub struct UnitError {
    pub input: String,
    pub what: &'static str,
    pub why: String,
}

fn err(input: &str, what: &'static str, why: impl Into<String>) -> UnitError {
    UnitError {
        input: input.to_string(),
        what,
        why: why.into(),
    }
}

fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .char_indices()
        .find(|(_, c)| {
            !(c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == 'E' || *c == '+' || *c == '-')
        })
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    // `e` could start a unit (none of ours do) — numbers like 1e9 are allowed.
    (s[..end].trim(), s[end..].trim())
}

fn parse_number(input: &str, num: &str, what: &'static str) -> Result<f64, UnitError> {
    let v: f64 = num
        .parse()
        .map_err(|_| err(input, what, format!("{num:?} is not a number")))?;
    if !v.is_finite() || v < 0.0 {
        return Err(err(input, what, "must be a finite, non-negative number"));
    }
    Ok(v)
}

fn prefix_multiplier(p: &str) -> Option<f64> {
    Some(match p {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" | "ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

/// A data rate: what `--bandwidth` and QEMU's `max-bandwidth` mean.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Bandwidth {
    pub bytes_per_s: f64,
}

/// An amount of data (`--max-data`), in bytes; fractional because decimal
/// forms such as `1.5KB` are accepted as typed.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct DataSize {
    pub bytes: f64,
}

impl std::str::FromStr for Bandwidth {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        parse_bandwidth(s)
    }
}

impl std::str::FromStr for DataSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        parse_size(s)
    }
}

/// Parses a bandwidth.
///
/// Accepts `1Gbit`, `1Gbps`, `1Gb/s`, `125MB/s`, `100MiB/s`, `800Mbit/s`.
pub fn parse_bandwidth(s: &str) -> Result<Bandwidth, UnitError> {
    const WHAT: &str = "a bandwidth (e.g. 1Gbit, 125MB/s, 100MiB/s)";
    let (num, unit) = split_number(s.trim());
    let v = parse_number(s, num, WHAT)?;
    if unit.is_empty() {
        return Err(err(s, WHAT, "a unit is required"));
    }
    let unit = unit.strip_suffix("/s").unwrap_or(unit);
    let (prefix, bits) = if let Some(p) = unit.strip_suffix("bit") {
        (p, true)
    } else if let Some(p) = unit.strip_suffix("bps") {
        (p, true)
    } else if let Some(p) = unit.strip_suffix('b') {
        (p, true)
    } else if let Some(p) = unit.strip_suffix('B') {
        (p, false)
    } else {
        return Err(err(s, WHAT, format!("unknown unit {unit:?}")));
    };
    let m = prefix_multiplier(prefix)
        .ok_or_else(|| err(s, WHAT, format!("unknown prefix {prefix:?}")))?;
    let bytes = v * m / if bits { 8.0 } else { 1.0 };
    if bytes <= 0.0 {
        return Err(err(s, WHAT, "must be greater than zero"));
    }
    Ok(Bandwidth { bytes_per_s: bytes })
}

/// Parses a duration: `300ms`, `60s`, `2m`, `1h`, `1.5s`, `250us`.
///
/// Exact to the nanosecond for what operators type (`1.5s` is 1.5e9 ns),
/// so a limit round-trips through [`millis`] unchanged.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    const WHAT: &str = "a duration (e.g. 300ms, 60s, 2m)";
    let (num, unit) = split_number(s.trim());
    let v = parse_number(s, num, WHAT)?;
    let ns_per_unit = match unit {
        "ms" => 1e6,
        "s" | "sec" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        "us" | "µs" => 1e3,
        "" => return Err(err(s, WHAT, "a unit is required")),
        other => return Err(err(s, WHAT, format!("unknown unit {other:?}"))),
    };
    let ns = (v * ns_per_unit).round();
    if ns >= u64::MAX as f64 {
        return Err(err(s, WHAT, "longer than 500 years"));
    }
    Ok(Duration::from_nanos(ns as u64))
}

/// `d` in milliseconds, the unit of the wire protocol's limits and of the
/// models' time labels.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Parses a data size: `10GiB`, `512MB`, `4096B`, `1.5G` (bytes).
pub fn parse_size(s: &str) -> Result<DataSize, UnitError> {
    const WHAT: &str = "a size (e.g. 10GiB, 512MB)";
    let (num, unit) = split_number(s.trim());
    let v = parse_number(s, num, WHAT)?;
    if unit.is_empty() {
        return Err(err(s, WHAT, "a unit is required"));
    }
    let prefix = unit.strip_suffix('B').unwrap_or(unit);
    let m =
        prefix_multiplier(prefix).ok_or_else(|| err(s, WHAT, format!("unknown unit {unit:?}")))?;
    Ok(DataSize { bytes: v * m })
}

/// Formats bytes for humans with binary prefixes (`1.5 GiB`).
pub struct HumanBytes(pub f64);

impl fmt::Display for HumanBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0;
        let mut i = 0;
        while v.abs() >= 1024.0 && i + 1 < units.len() {
            v /= 1024.0;
            i += 1;
        }
        if i == 0 {
            write!(f, "{v:.0} {}", units[i])
        } else {
            write!(f, "{v:.1} {}", units[i])
        }
    }
}

/// Formats milliseconds for humans (`850 ms`, `12.3 s`, `4.1 min`).
pub struct HumanMs(pub f64);

impl fmt::Display for HumanMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.abs() < 1000.0 {
            write!(f, "{v:.0} ms")
        } else if v.abs() < 120_000.0 {
            write!(f, "{:.1} s", v / 1000.0)
        } else {
            write!(f, "{:.1} min", v / 60_000.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bps(s: &str) -> f64 {
        parse_bandwidth(s).unwrap().bytes_per_s
    }

    #[test]
    fn bandwidths() {
        assert_eq!(bps("1Gbit"), 125e6);
        assert_eq!(bps("1Gbit/s"), 125e6);
        assert_eq!(bps("125MB/s"), 125e6);
        assert_eq!(bps("100MiB/s"), 100.0 * 1048576.0);
        assert_eq!(bps("800Mbps"), 100e6);
        assert_eq!("1Gb/s".parse::<Bandwidth>().unwrap().bytes_per_s, 125e6);
        assert!(parse_bandwidth("100")
            .unwrap_err()
            .to_string()
            .contains("unit"));
        assert!(parse_bandwidth("fast").is_err());
        assert!(parse_bandwidth("0Gbit").is_err());
        assert!(parse_bandwidth("10 parsecs").is_err());
    }

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(s).unwrap();
        assert_eq!(d("300ms"), Duration::from_millis(300));
        assert_eq!(d("60s"), Duration::from_secs(60));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("2m"), Duration::from_secs(120));
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d("250us"), Duration::from_micros(250));
        assert_eq!(d("0.1s"), Duration::from_millis(100));
        assert_eq!(millis(d("300ms")), 300.0);
        assert_eq!(millis(d("1.5s")), 1500.0);
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("1e30h").is_err());
    }

    #[test]
    fn sizes() {
        let b = |s: &str| parse_size(s).unwrap().bytes;
        assert_eq!(b("10GiB"), 10.0 * 1073741824.0);
        assert_eq!(b("512MB"), 512e6);
        assert_eq!(b("4096B"), 4096.0);
        assert_eq!("1KiB".parse::<DataSize>().unwrap().bytes, 1024.0);
        assert!(parse_size("12 apples").is_err());
    }

    #[test]
    fn human_formats() {
        assert_eq!(HumanBytes(1536.0 * 1048576.0).to_string(), "1.5 GiB");
        assert_eq!(HumanMs(850.0).to_string(), "850 ms");
        assert_eq!(HumanMs(12_300.0).to_string(), "12.3 s");
    }
}
