//! What `plan` found: the JSON object (`plan --json`) and its text
//! rendering (the features table and the per-algorithm plan).

use super::PLAN_JSON_VERSION;
use anyhow::{anyhow, Result};
use migsight_proto::units::{HumanBytes, HumanMs};
use migsight_proto::wire::{DirtiedWindow, ProfileReport, QemuInfo, Recommendation, VmRef};
use migsight_proto::Feature;
use serde::{Deserialize, Serialize};

/// Everything `plan` learned: the documented `plan --json` object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanOutput {
    /// [`PLAN_JSON_VERSION`].
    pub migsight_plan: u32,
    /// The VM reference as given (`qmp:PATH`, `pid:N`, …).
    pub vm: String,
    pub pid: u32,
    pub vm_name: Option<String>,
    pub window_ms: u64,
    pub intervals: u32,
    pub bandwidth_bps: f64,
    pub downtime_limit_ms: f64,
    /// Measured features, CSAP column name → value (units in proto/src/feature.rs).
    pub features: serde_json::Map<String, serde_json::Value>,
    /// Standard errors of sampled features, column name → std error.
    pub feature_errors: serde_json::Map<String, serde_json::Value>,
    /// Features the agent could not measure, with the reason.
    pub missing: Vec<MissingOut>,
    /// QEMU's own calc-dirty-rate estimate (MiB/s), when it was run.
    pub qemu_dirty_rate: Option<f64>,
    /// Distinct memory dirtied within windows of 1, 2, 4, 8, 16 intervals.
    #[serde(default)]
    pub dirtied: Vec<DirtiedWindow>,
    /// The source QEMU's version and the algorithms it offers (or why not).
    #[serde(default)]
    pub qemu: Option<QemuInfo>,
    /// The predictor's answer (wire::Recommendation serialised with serde).
    pub recommendation: Recommendation,
    /// For `libvirt:NAME`: what libvirt says of the domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt: Option<LibvirtDomain>,
}

/// A libvirt domain's facts, as `plan` shows them (`virsh dumpxml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LibvirtDomain {
    pub uri: String,
    pub name: String,
    pub uuid: String,
    /// `kvm` or `qemu` (TCG).
    pub domain_type: String,
    pub memory_mib: u64,
    pub current_memory_mib: u64,
    pub vcpus: u32,
    /// `<memoryBacking>` in words; empty: anonymous memory.
    pub memory_backing: Vec<String>,
    /// One line for people.
    pub summary: String,
}

impl LibvirtDomain {
    /// Asks libvirt at `uri` about `name`.
    pub fn query(uri: &str, name: &str) -> Result<LibvirtDomain> {
        let f = migsight_libvirt::DomainFacts::query(&migsight_libvirt::Virsh::new(uri), name)?;
        Ok(LibvirtDomain {
            uri: uri.to_string(),
            summary: f.describe(),
            name: f.name,
            uuid: f.uuid,
            domain_type: f.domain_type,
            memory_mib: f.memory_kib / 1024,
            current_memory_mib: f.current_memory_kib / 1024,
            vcpus: f.vcpus,
            memory_backing: f.memory_backing,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MissingOut {
    pub feature: String,
    pub reason: String,
}

impl PlanOutput {
    pub fn new(
        vm: &VmRef,
        bandwidth_bps: f64,
        downtime_limit_ms: f64,
        report: ProfileReport,
    ) -> Result<PlanOutput> {
        let recommendation = report.recommendation.clone().ok_or_else(|| {
            anyhow!("the agent profiled the VM but returned no recommendation (is the agent connected to a predictor?)")
        })?;
        let num = |v: f64| {
            serde_json::Number::from_f64(v)
                .map(serde_json::Value::Number)
                .unwrap_or_default()
        };
        Ok(PlanOutput {
            migsight_plan: PLAN_JSON_VERSION,
            vm: vm.to_string(),
            pid: report.pid,
            vm_name: report.vm_name.clone(),
            window_ms: report.window_ms,
            intervals: report.intervals,
            bandwidth_bps,
            downtime_limit_ms,
            features: report
                .features
                .present()
                .map(|(f, v)| (f.column().to_string(), num(v)))
                .collect(),
            feature_errors: report
                .errors
                .iter()
                .map(|e| (e.feature.column().to_string(), num(e.std_error)))
                .collect(),
            missing: report
                .missing
                .iter()
                .map(|m| MissingOut {
                    feature: m.feature.column().to_string(),
                    reason: m.reason.clone(),
                })
                .collect(),
            qemu_dirty_rate: report.qemu_dirty_rate,
            dirtied: report.dirtied.clone(),
            qemu: report.qemu.clone(),
            recommendation,
            libvirt: None,
        })
    }
}

/// Formats a feature value with its unit, for people.
pub fn fmt_feature(f: Feature, v: f64) -> String {
    match f {
        Feature::VmSize | Feature::VmWss | Feature::SrcMemAvail | Feature::DstMemAvail => {
            format!("{}", HumanBytes(v * migsight_proto::feature::MIB))
        }
        Feature::VmPdr | Feature::VmPtr => format!("{v:.1} MiB/s"),
        Feature::VmWse | Feature::VmNwse => format!("{v:.2}"),
        Feature::VmMwpp => format!("{v:.0} B/page"),
        Feature::VmPmuInstr => format!("{:.2e} instr/s", v),
        Feature::VmCpuUtil | Feature::SrcCpuAvail | Feature::DstCpuAvail => format!("{v:.0} %"),
        Feature::VmNetUtil => format!("{v:.1} %"),
    }
}

/// The features block printed under the table: measured, then missing.
pub fn render_features(report: &ProfileReport) -> String {
    let mut s = String::new();
    s += &format!(
        "Features measured over {} ({} intervals, {} pages sampled per interval):\n",
        HumanMs(report.window_ms as f64),
        report.intervals,
        report.sampled_pages
    );
    let mut line = Vec::new();
    for (f, v) in report.features.present() {
        let err = report
            .errors
            .iter()
            .find(|e| e.feature == f)
            .map(|e| format!(" ±{:.2}", e.std_error))
            .unwrap_or_default();
        line.push(format!("{}={}{}", f.column(), fmt_feature(f, v), err));
    }
    for chunk in line.chunks(4) {
        s += &format!("  {}\n", chunk.join("  "));
    }
    if let Some(q) = report.qemu_dirty_rate {
        s += &format!("  (QEMU calc-dirty-rate: {q:.1} MiB/s)\n");
    }
    if !report.dirtied.is_empty() {
        let curve: Vec<String> = report
            .dirtied
            .iter()
            .map(|w| format!("{:.0} s {:.1} MiB", w.seconds, w.mib))
            .collect();
        s += &format!(
            "  dirtied at least once within: {} (what a pre-copy round that long leaves to re-send)\n",
            curve.join(", ")
        );
    }
    if report.missing.is_empty() {
        s += "Missing features: none\n";
    } else {
        s += "Missing features (the model predicts without them; intervals are wider):\n";
        for m in &report.missing {
            s += &format!("  {:<14} {}\n", m.feature.column(), m.reason);
        }
    }
    s
}

/// The full human-readable plan: header, table, features, verdict.
pub fn render_plan(report: &ProfileReport, out: &PlanOutput) -> String {
    let rec = &out.recommendation;
    let mut s = String::new();
    s += &format!(
        "VM {} (pid {}{}) | bandwidth {}/s | downtime-limit {} | objective {}\n",
        out.vm,
        out.pid,
        out.vm_name
            .as_deref()
            .map(|n| format!(", name {n}"))
            .unwrap_or_default(),
        HumanBytes(out.bandwidth_bps),
        HumanMs(out.downtime_limit_ms),
        rec.objective.name(),
    );
    s += &match &out.qemu {
        Some(q) => format!(
            "QEMU {}{} ({})\n",
            q.version,
            q.accel
                .as_deref()
                .map(|a| format!(", {a}"))
                .unwrap_or_default(),
            match q.source.as_str() {
                "qmp" => "asked over QMP",
                "libvirt" =>
                    "libvirt owns the monitor: what this libvirt and the QEMU binary can run",
                _ => "pid-only: from the QEMU binary's --version and the command line",
            }
        ),
        None => "QEMU version unknown (every algorithm the model knows is listed)\n".into(),
    };
    if let Some(l) = &out.libvirt {
        s += &format!("{} (via {})\n", l.summary, l.uri);
    }
    let sla = rec.sla;
    let mut limits = Vec::new();
    if let Some(v) = sla.max_downtime_ms {
        limits.push(format!("downtime ≤ {}", HumanMs(v)));
    }
    if let Some(v) = sla.max_time_ms {
        limits.push(format!("total time ≤ {}", HumanMs(v)));
    }
    if let Some(v) = sla.max_data_bytes {
        limits.push(format!("data ≤ {}", HumanBytes(v)));
    }
    if let Some(v) = sla.min_performance {
        limits.push(format!("performance ≥ {v:.2}"));
    }
    s += &format!(
        "SLA: {}\n\n",
        if limits.is_empty() {
            "none".to_string()
        } else {
            limits.join(", ")
        }
    );
    s += &crate::table::render(rec);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s.push('\n');
    s += &render_features(report);
    s
}
