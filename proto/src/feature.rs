//! The CSAP feature schema: the one source of truth for feature names, units
//! and the composed features.
//!
//! Units follow the CSAP seed script's schema comment. "MB" there means
//! mebibytes (the seed's hosts have "16384 MB" of memory), so migsight uses
//! **MiB = 1,048,576 bytes** for every MB in this schema, and MiB/s for rates.

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Bytes in one schema "MB".
pub const MIB: f64 = 1_048_576.0;
/// Bytes in a guest page.
pub const PAGE_SIZE: f64 = 4096.0;

/// One profiled input feature of the CSAP schema.
///
/// Serialised as its CSAP column name (`"VM_pdr"`), in JSON and on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    VmSize,
    VmPdr,
    VmWss,
    VmWse,
    VmNwse,
    VmMwpp,
    VmPmuInstr,
    VmPtr,
    VmCpuUtil,
    VmNetUtil,
    SrcCpuAvail,
    DstCpuAvail,
    SrcMemAvail,
    DstMemAvail,
}

impl Feature {
    /// Number of profiled features.
    pub const COUNT: usize = 14;

    /// All features, in the column order of the seed's schema comment.
    pub const ALL: [Feature; Feature::COUNT] = [
        Feature::VmSize,
        Feature::VmPdr,
        Feature::VmWss,
        Feature::VmWse,
        Feature::VmNwse,
        Feature::VmMwpp,
        Feature::VmPmuInstr,
        Feature::VmPtr,
        Feature::VmCpuUtil,
        Feature::VmNetUtil,
        Feature::SrcCpuAvail,
        Feature::DstCpuAvail,
        Feature::SrcMemAvail,
        Feature::DstMemAvail,
    ];

    /// The CSAP column name.
    pub const fn column(self) -> &'static str {
        match self {
            Feature::VmSize => "VM_size",
            Feature::VmPdr => "VM_pdr",
            Feature::VmWss => "VM_wss",
            Feature::VmWse => "VM_wse",
            Feature::VmNwse => "VM_nwse",
            Feature::VmMwpp => "VM_mwpp",
            Feature::VmPmuInstr => "VM_pmu_instr",
            Feature::VmPtr => "VM_ptr",
            Feature::VmCpuUtil => "VM_cpu_util",
            Feature::VmNetUtil => "VM_net_util",
            Feature::SrcCpuAvail => "src_cpu_avail",
            Feature::DstCpuAvail => "dst_cpu_avail",
            Feature::SrcMemAvail => "src_mem_avail",
            Feature::DstMemAvail => "dst_mem_avail",
        }
    }

    /// Unit of the value.
    pub const fn unit(self) -> &'static str {
        match self {
            Feature::VmSize | Feature::VmWss => "MiB",
            Feature::VmPdr | Feature::VmPtr => "MiB/s",
            Feature::VmWse | Feature::VmNwse => "0-1",
            Feature::VmMwpp => "bytes/page (0-4096)",
            Feature::VmPmuInstr => "instructions/s",
            Feature::VmCpuUtil => "% of one core",
            Feature::VmNetUtil => "% of link",
            Feature::SrcCpuAvail | Feature::DstCpuAvail => "% (100 per core)",
            Feature::SrcMemAvail | Feature::DstMemAvail => "MiB",
        }
    }

    /// One-line meaning, for docs and `--help`.
    pub const fn description(self) -> &'static str {
        match self {
            Feature::VmSize => "guest memory mapped to host memory, zero pages excluded",
            Feature::VmPdr => {
                "page dirty rate: distinct pages modified per second, averaged over the window"
            }
            Feature::VmWss => "working set: pages modified at least once in the window",
            Feature::VmWse => {
                "mean normalised byte entropy of working-set pages (1 = incompressible)"
            }
            Feature::VmNwse => "mean normalised byte entropy of non-working-set, non-zero pages",
            Feature::VmMwpp => "modified bytes per dirty page between two samples",
            Feature::VmPmuInstr => {
                "retired instructions per second of the vCPU threads (hardware PMU)"
            }
            Feature::VmPtr => "page transfer rate: bandwidth reserved for the migration",
            Feature::VmCpuUtil => "CPU used by the QEMU process",
            Feature::VmNetUtil => "utilisation of the VM's tap interfaces",
            Feature::SrcCpuAvail => "idle CPU on the source host",
            Feature::DstCpuAvail => "idle CPU on the destination host",
            Feature::SrcMemAvail => "available memory on the source host",
            Feature::DstMemAvail => "available memory on the destination host",
        }
    }

    /// Index into per-feature arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Physically possible value range; values outside are rejected as
    /// invalid input (requests and training data alike). The upper bounds
    /// are generous limits of real hardware, not of the lab: 64 TiB of guest
    /// or host memory (x86 QEMU guests top out near 12 TiB), 1 TiB/s of
    /// dirtying (above any server's memory bandwidth), 1 Tbit/s of
    /// migration bandwidth (125,000 MB/s ≈ 119,210 MiB/s), 10^13
    /// instructions/s, 4,096 CPUs' worth of utilisation.
    pub const fn valid_range(self) -> (f64, f64) {
        const MEMORY_MIB: f64 = 64.0 * 1024.0 * 1024.0;
        match self {
            Feature::VmWse | Feature::VmNwse => (0.0, 1.0),
            Feature::VmMwpp => (0.0, 4096.0),
            Feature::VmSize | Feature::VmWss | Feature::SrcMemAvail | Feature::DstMemAvail => {
                (0.0, MEMORY_MIB)
            }
            Feature::VmPdr => (0.0, 1024.0 * 1024.0),
            Feature::VmPtr => (0.0, 125e9 / 1048576.0),
            Feature::VmPmuInstr => (0.0, 1e13),
            Feature::VmNetUtil => (0.0, 100.0),
            Feature::VmCpuUtil | Feature::SrcCpuAvail | Feature::DstCpuAvail => {
                (0.0, 100.0 * 4096.0)
            }
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.column())
    }
}

impl Serialize for Feature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.column())
    }
}

impl<'de> Deserialize<'de> for Feature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse()
            .map_err(|e: UnknownFeature| invalid(e.to_string()))
    }
}

/// Error for a feature name outside the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown feature {0:?}")]
pub struct UnknownFeature(pub String);

impl FromStr for Feature {
    type Err = UnknownFeature;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Feature::ALL
            .into_iter()
            .find(|f| f.column() == s.trim())
            .ok_or_else(|| UnknownFeature(s.to_string()))
    }
}

/// A feature value that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidFeature {
    #[error("feature {feature} is not a finite number ({value})")]
    NotFinite { feature: Feature, value: f64 },
    #[error("feature {feature} = {} is outside its physically possible range {min}..={max} ({unit})", short(*.value))]
    OutOfRange {
        feature: Feature,
        value: f64,
        min: f64,
        max: f64,
        unit: &'static str,
    },
}

/// A number for a message: scientific notation when it is huge or tiny.
fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e12 || v.abs() < 1e-6) {
        format!("{v:.3e}")
    } else {
        format!("{v}")
    }
}

/// The profiled features of one VM at one moment.
///
/// Every feature may be **absent** (`None`): no hardware PMU, no destination
/// agent, no QMP access. Absence is explicit and never stands in for zero.
/// On the wire and in JSON it is a map from CSAP column name to number; absent
/// features are omitted (or `null` in JSON input).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FeatureVector {
    values: [Option<f64>; Feature::COUNT],
}

impl FeatureVector {
    /// A vector with every feature absent.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, f: Feature) -> Option<f64> {
        self.values[f.index()]
    }

    pub fn set(&mut self, f: Feature, v: Option<f64>) {
        self.values[f.index()] = v;
    }

    /// Builder-style setter.
    pub fn with(mut self, f: Feature, v: f64) -> Self {
        self.values[f.index()] = Some(v);
        self
    }

    /// Features that are present, with their values.
    /// The same vector with only `keep`'s features (the others absent).
    pub fn restricted(&self, keep: &[Feature]) -> FeatureVector {
        let mut out = FeatureVector::new();
        for (f, v) in self.present() {
            if keep.contains(&f) {
                out.set(f, Some(v));
            }
        }
        out
    }

    pub fn present(&self) -> impl Iterator<Item = (Feature, f64)> + '_ {
        Feature::ALL
            .into_iter()
            .filter_map(|f| self.get(f).map(|v| (f, v)))
    }

    /// Features that are absent.
    pub fn absent(&self) -> impl Iterator<Item = Feature> + '_ {
        Feature::ALL.into_iter().filter(|f| self.get(*f).is_none())
    }

    /// Checks every present value is finite and inside its valid range.
    pub fn validate(&self) -> Result<(), InvalidFeature> {
        for (feature, value) in self.present() {
            if !value.is_finite() {
                return Err(InvalidFeature::NotFinite { feature, value });
            }
            let (min, max) = feature.valid_range();
            if value < min || value > max {
                return Err(InvalidFeature::OutOfRange {
                    feature,
                    value,
                    min,
                    max,
                    unit: feature.unit(),
                });
            }
        }
        Ok(())
    }

    /// The seed's composed features, computed from this vector.
    pub fn composed(&self) -> ComposedFeatures {
        ComposedFeatures::from_features(self)
    }
}

impl Serialize for FeatureVector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.present().count();
        let mut map = s.serialize_map(Some(n))?;
        for (f, v) in self.present() {
            map.serialize_entry(f.column(), &Some(v))?;
        }
        map.end()
    }
}

/// A deserialization error about a feature, with its message kept for the
/// wire's error reply (postcard drops custom messages).
fn invalid<E: de::Error>(message: String) -> E {
    crate::wire::note_decode_detail(crate::wire::ErrorKind::InvalidFeature, &message);
    E::custom(message)
}

impl<'de> Deserialize<'de> for FeatureVector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FeatureVector;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from CSAP feature column names to numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FeatureVector, A::Error> {
                let mut fv = FeatureVector::new();
                while let Some(key) = map.next_key::<String>()? {
                    let feature = key.parse::<Feature>().map_err(|_| {
                        invalid(format!(
                            "unknown feature {key:?}; known: {}",
                            Feature::ALL.map(|f| f.column()).join(", ")
                        ))
                    })?;
                    if fv.get(feature).is_some() {
                        return Err(invalid(format!("feature {key} given twice")));
                    }
                    let v: Option<f64> = map.next_value()?;
                    fv.set(feature, v);
                }
                Ok(fv)
            }
        }
        d.deserialize_map(V)
    }
}

/// The seed's composed features (CSAP description §4.1 and its `build_features`).
///
/// Formulas, with sizes in MiB and rates in MiB/s:
///
/// | feature | formula |
/// |---|---|
/// | `R.PTR`  | `VM_wss × min(1, (VM_pdr / VM_ptr)²)` |
/// | `NWSS`   | `max(0, VM_size − VM_wss)` |
/// | `E.WSS`  | `VM_wss × VM_wse` |
/// | `E.NWSS` | `NWSS × VM_nwse` |
/// | `THR.BF` | `VM_pdr × min(1, VM_cpu_util / 400)` |
/// | `DLTC.BF`| `VM_wss × v`, `v = VM_mwpp / 2048`, folded to `2 − v` above 1 |
///
/// R.PTR: the seed's script is garbled here (it computes
/// `VM_wss·(pdr/ptr)²`, compares it with `VM_wss` and then overwrites it). Its
/// text says the square of PDR/PTR weights the working set because the
/// transfer rate matters most near the boundary PDR ≈ PTR, so migsight takes
/// the working set weighted by `(pdr/ptr)²`, capped at the working set itself
/// (the branch the script evidently meant). The seed also clamps PTR to
/// 125 MB/s, its 1 Gbit NIC; migsight does not, as hosts differ. A zero PTR
/// makes R.PTR equal to the working set (nothing can be sent faster than it
/// is dirtied). `THR.BF` keeps the seed's divisor 400 (% of its 4-core hosts)
/// so values stay comparable with the seed's dataset.
///
/// Every composed feature is absent when any of its inputs is.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ComposedFeatures {
    pub r_ptr: Option<f64>,
    pub nwss: Option<f64>,
    pub e_wss: Option<f64>,
    pub e_nwss: Option<f64>,
    pub thr_bf: Option<f64>,
    pub dltc_bf: Option<f64>,
}

impl ComposedFeatures {
    /// Names of the composed features, in [`ComposedFeatures::values`] order.
    pub const NAMES: [&'static str; 6] = ["R.PTR", "NWSS", "E.WSS", "E.NWSS", "THR.BF", "DLTC.BF"];

    /// Computes the composed features of `fv` (see the type's docs for formulas).
    pub fn from_features(fv: &FeatureVector) -> Self {
        let size = fv.get(Feature::VmSize);
        let pdr = fv.get(Feature::VmPdr);
        let wss = fv.get(Feature::VmWss);
        let wse = fv.get(Feature::VmWse);
        let nwse = fv.get(Feature::VmNwse);
        let mwpp = fv.get(Feature::VmMwpp);
        let ptr = fv.get(Feature::VmPtr);
        let cpu = fv.get(Feature::VmCpuUtil);

        let r_ptr = match (wss, pdr, ptr) {
            (Some(wss), Some(pdr), Some(ptr)) => {
                let weight = if ptr > 0.0 {
                    ((pdr / ptr).powi(2)).min(1.0)
                } else {
                    1.0
                };
                Some(wss * weight)
            }
            _ => None,
        };
        let nwss = match (size, wss) {
            (Some(size), Some(wss)) => Some((size - wss).max(0.0)),
            _ => None,
        };
        let e_wss = wss.zip(wse).map(|(w, e)| w * e);
        let e_nwss = nwss.zip(nwse).map(|(n, e)| n * e);
        let thr_bf = pdr.zip(cpu).map(|(p, c)| p * (c / 400.0).min(1.0));
        let dltc_bf = wss.zip(mwpp).map(|(w, m)| {
            let v = m / (PAGE_SIZE / 2.0);
            let v = if v > 1.0 { 1.0 - (v - 1.0) } else { v };
            w * v
        });
        ComposedFeatures {
            r_ptr,
            nwss,
            e_wss,
            e_nwss,
            thr_bf,
            dltc_bf,
        }
    }

    /// Values in [`ComposedFeatures::NAMES`] order.
    pub fn values(&self) -> [Option<f64>; 6] {
        [
            self.r_ptr,
            self.nwss,
            self.e_wss,
            self.e_nwss,
            self.thr_bf,
            self.dltc_bf,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> FeatureVector {
        FeatureVector::new()
            .with(Feature::VmSize, 1000.0)
            .with(Feature::VmPdr, 50.0)
            .with(Feature::VmWss, 200.0)
            .with(Feature::VmWse, 0.5)
            .with(Feature::VmNwse, 0.25)
            .with(Feature::VmMwpp, 3072.0)
            .with(Feature::VmPtr, 100.0)
            .with(Feature::VmCpuUtil, 200.0)
    }

    #[test]
    fn composed_features_follow_documented_formulas() {
        let c = full().composed();
        assert_eq!(c.r_ptr, Some(200.0 * 0.25));
        assert_eq!(c.nwss, Some(800.0));
        assert_eq!(c.e_wss, Some(100.0));
        assert_eq!(c.e_nwss, Some(200.0));
        assert_eq!(c.thr_bf, Some(25.0));
        // v = 3072/2048 = 1.5 -> folded to 0.5
        assert_eq!(c.dltc_bf, Some(100.0));
    }

    #[test]
    fn r_ptr_is_capped_at_the_working_set() {
        let c = full().with(Feature::VmPdr, 300.0).composed();
        assert_eq!(c.r_ptr, Some(200.0));
        let c = full().with(Feature::VmPtr, 0.0).composed();
        assert_eq!(c.r_ptr, Some(200.0));
    }

    #[test]
    fn composed_features_are_absent_when_inputs_are() {
        let mut fv = full();
        fv.set(Feature::VmWss, None);
        let c = fv.composed();
        assert_eq!(c.r_ptr, None);
        assert_eq!(c.nwss, None);
        assert_eq!(c.e_wss, None);
        assert_eq!(c.e_nwss, None);
        assert_eq!(c.dltc_bf, None);
        assert_eq!(c.thr_bf, Some(25.0));
    }

    #[test]
    fn features_serialise_as_column_names() {
        assert_eq!(
            serde_json::to_string(&Feature::VmPmuInstr).unwrap(),
            "\"VM_pmu_instr\""
        );
        let f: Feature = serde_json::from_str("\"src_mem_avail\"").unwrap();
        assert_eq!(f, Feature::SrcMemAvail);
        assert!(serde_json::from_str::<Feature>("\"VmPdr\"").is_err());
        let bytes = postcard::to_allocvec(&Feature::VmWss).unwrap();
        assert_eq!(
            postcard::from_bytes::<Feature>(&bytes).unwrap(),
            Feature::VmWss
        );
    }

    #[test]
    fn json_round_trip_keeps_absence() {
        let fv = full();
        let j = serde_json::to_string(&fv).unwrap();
        assert!(j.contains("\"VM_size\":1000.0"));
        assert!(!j.contains("VM_pmu_instr"));
        let back: FeatureVector = serde_json::from_str(&j).unwrap();
        assert_eq!(back, fv);
        let with_null: FeatureVector =
            serde_json::from_str(r#"{"VM_size": 5, "VM_pmu_instr": null}"#).unwrap();
        assert_eq!(with_null.get(Feature::VmPmuInstr), None);
        assert_eq!(with_null.get(Feature::VmSize), Some(5.0));
    }

    #[test]
    fn json_rejects_unknown_and_duplicate_features() {
        let e = serde_json::from_str::<FeatureVector>(r#"{"VM_sizes": 5}"#).unwrap_err();
        assert!(e.to_string().contains("VM_sizes"), "{e}");
        let e =
            serde_json::from_str::<FeatureVector>(r#"{"VM_size": 5, "VM_size": 6}"#).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn validation_names_the_bad_feature() {
        let e = full().with(Feature::VmWse, 1.5).validate().unwrap_err();
        assert!(e.to_string().contains("VM_wse"), "{e}");
        let e = full()
            .with(Feature::VmPdr, f64::NAN)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("VM_pdr"), "{e}");
        let e = full().with(Feature::VmSize, -1.0).validate().unwrap_err();
        assert!(matches!(e, InvalidFeature::OutOfRange { .. }));
        assert!(full().validate().is_ok());
    }
}
