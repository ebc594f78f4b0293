//! The closed loop: every `migsight migrate` appends what was known before
//! (the profiled features) and what happened (the measured metrics) as one
//! CSAP-schema row, so `migsight train --data data/lab.csv --data
//! /var/lib/migsight/outcomes.csv` learns from production migrations.
//!
//! The file has exactly the lab's header (`migsight_lab::runner::EXTRA_COLUMNS`
//! after the CSAP and migsight columns), so lab files and outcome files
//! concatenate cleanly; columns only the lab can fill (workload parameters,
//! image hashes, seed) are left empty. Non-converged migrations are kept with
//! `converged=0`, as the lab does.

use migsight_lab::host::{load1, unix_now};
use migsight_lab::migration::{MigrationConfig, MigrationOutcome};
use migsight_lab::runner::{dirtied_cell, EXTRA_COLUMNS};
use migsight_proto::csv::{CsvAppender, CsvError, Sample};
use migsight_proto::feature::MIB;
use migsight_proto::wire::DirtiedWindow;
use migsight_proto::{Feature, FeatureVector, Metric};
use std::path::Path;

/// Default outcomes file (the systemd units' `StateDirectory=migsight`).
pub const DEFAULT_OUTCOMES: &str = "/var/lib/migsight/outcomes.csv";

/// What `migrate` measured, beyond QEMU's own outcome.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Guest performance during migration / before (ops page, when the guest has one).
    pub performance: Option<f64>,
    /// Extra CPU of the source QEMU process during migration, % of one core.
    pub extra_cpu_percent: Option<f64>,
    /// Peak RSS growth of the source QEMU process, MiB.
    pub extra_mem_mib: Option<f64>,
    pub ops_before_per_s: Option<f64>,
    pub ops_during_per_s: Option<f64>,
    /// Bytes on the loopback wire (only meaningful for a local destination).
    pub wire_bytes: Option<u64>,
}

/// Context of the row that is not in the outcome.
#[derive(Debug, Clone, Default)]
pub struct RowContext {
    pub qemu_version: String,
    pub accel: String,
    pub guest_mem_mib: Option<u64>,
    pub window_ms: Option<u64>,
    pub workload_type: Option<u8>,
    pub qemu_dirty_rate: Option<f64>,
    pub pdr_std_error: Option<f64>,
    /// The profile's distinct-dirtied curve, its page sample and CPU budget.
    pub dirtied: Vec<DirtiedWindow>,
    pub sampled_pages: Option<u64>,
    pub cpu_budget: Option<f64>,
    /// Stable id of this migration (`migrate-<unix>-<pid>`).
    pub group_id: String,
}

/// A fresh id for one migration.
pub fn new_group_id(src_pid: u32) -> String {
    format!("migrate-{}-{}", unix_now(), src_pid)
}

/// Builds the CSAP row for one migration.
///
/// Labels follow the lab exactly: TT is QEMU's total time when converged and
/// the cap (`--cap`) otherwise; DT only when converged; TD is
/// `ram.transferred`; PERF/CPU/MEM when measured.
pub fn build_row(
    features: &FeatureVector,
    cfg: &MigrationConfig,
    outcome: &MigrationOutcome,
    measured: &Measured,
    ctx: &RowContext,
) -> Sample {
    let mut s = Sample {
        algorithm: Some(cfg.algorithm),
        workload_type: ctx.workload_type,
        features: *features,
        converged: Some(outcome.converged),
        group_id: Some(ctx.group_id.clone()),
        ..Sample::default()
    };
    // VM_ptr is the bandwidth actually used (the lab does the same).
    s.features
        .set(Feature::VmPtr, Some(cfg.bandwidth_bps / MIB));
    s.set_label(
        Metric::TT,
        if outcome.converged {
            outcome.total_time_ms
        } else {
            cfg.cap.as_secs_f64() * 1000.0
        },
    );
    if let Some(dt) = outcome.downtime_ms.filter(|_| outcome.converged) {
        s.set_label(Metric::DT, dt);
    }
    s.set_label(Metric::TD, outcome.transferred_bytes);
    if let Some(p) = measured.performance {
        s.set_label(Metric::PERF, p);
    }
    if let Some(c) = measured.extra_cpu_percent {
        s.set_label(Metric::CPU, c);
    }
    if let Some(m) = measured.extra_mem_mib {
        s.set_label(Metric::MEM, m);
    }
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
    let value = |col: &str| -> String {
        match col {
            "algorithm" => cfg.algorithm.name().into(),
            "workload" => "production".into(),
            "guest_mem_mib" => ctx.guest_mem_mib.map(|m| m.to_string()).unwrap_or_default(),
            "bandwidth_bps" => format!("{:.0}", cfg.bandwidth_bps),
            "downtime_limit_ms" => cfg.downtime_limit_ms.to_string(),
            "cap_ms" => cfg.cap.as_millis().to_string(),
            "xbzrle_cache_bytes" => cfg.xbzrle_cache_bytes.to_string(),
            "compress_level" => cfg.compress_level.to_string(),
            "compress_threads" => cfg.compress_threads.to_string(),
            "decompress_threads" => cfg.decompress_threads.to_string(),
            "throttle_initial" => cfg.throttle_initial.to_string(),
            "throttle_increment" => cfg.throttle_increment.to_string(),
            "qemu_version" => ctx.qemu_version.clone(),
            "accel" => ctx.accel.clone(),
            "window_ms" => ctx.window_ms.map(|w| w.to_string()).unwrap_or_default(),
            "status" => outcome.status.clone(),
            "setup_time_ms" => opt(outcome.setup_time_ms),
            "wire_bytes" => measured
                .wire_bytes
                .map(|b| b.to_string())
                .unwrap_or_default(),
            "throttle_max" => outcome.throttle_percent_max.to_string(),
            "dirty_sync_count" => outcome.dirty_sync_count.to_string(),
            "ops_before_per_s" => opt(measured.ops_before_per_s),
            "ops_during_per_s" => opt(measured.ops_during_per_s),
            "qemu_dirty_rate" => opt(ctx.qemu_dirty_rate),
            "pdr_std_error" => opt(ctx.pdr_std_error),
            "host_load1" => opt(load1()),
            "unix_time" => unix_now().to_string(),
            "sampled_pages" => ctx.sampled_pages.map(|n| n.to_string()).unwrap_or_default(),
            "cpu_budget" => ctx.cpu_budget.map(|b| b.to_string()).unwrap_or_default(),
            c if c.starts_with("dirtied_k") => dirtied_cell(&ctx.dirtied, c).unwrap_or_default(),
            // workload_params, seed, kernel_sha256, initrd_sha256: lab only.
            _ => String::new(),
        }
    };
    s.extra = EXTRA_COLUMNS
        .iter()
        .map(|c| (c.to_string(), value(c)))
        .collect();
    s
}

/// Appends `row` to `path` (created with the lab's header if missing), synced.
pub fn append(path: &Path, row: &Sample) -> Result<(), CsvError> {
    let extra: Vec<String> = EXTRA_COLUMNS.iter().map(|s| s.to_string()).collect();
    // A file from an older migsight gets the columns added since, empty on its rows.
    let added = migsight_proto::csv::widen(path, &extra)?;
    if !added.is_empty() {
        tracing::info!(file = %path.display(), columns = %added.join(","), "outcomes file: added columns");
    }
    let mut a = CsvAppender::open(path, &extra)?;
    a.append(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use migsight_proto::Algorithm;
    use std::time::Duration;

    fn outcome(converged: bool) -> MigrationOutcome {
        MigrationOutcome {
            converged,
            status: if converged { "completed" } else { "cancelled" }.into(),
            total_time_ms: 4700.0,
            downtime_ms: Some(13.0),
            setup_time_ms: Some(2.0),
            transferred_bytes: 247e6,
            throttle_percent_max: 0,
            dirty_sync_count: 3,
            wall: Duration::from_millis(4800),
            error: None,
            raw: serde_json::json!({}),
        }
    }

    fn features() -> FeatureVector {
        FeatureVector::new()
            .with(Feature::VmSize, 512.0)
            .with(Feature::VmPdr, 7.8)
            .with(Feature::VmWss, 40.0)
    }

    #[test]
    fn rows_round_trip_through_the_lab_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/outcomes.csv");
        let cfg = MigrationConfig::new(Algorithm::Xbzrle, 50e6);
        let m = Measured {
            performance: Some(0.9),
            extra_cpu_percent: Some(35.0),
            extra_mem_mib: Some(64.0),
            ..Measured::default()
        };
        let ctx = RowContext {
            qemu_version: "7.2.22".into(),
            accel: "tcg".into(),
            group_id: "migrate-1-2".into(),
            window_ms: Some(3000),
            dirtied: vec![DirtiedWindow {
                intervals: 2,
                seconds: 2.0,
                mib: 3.25,
            }],
            sampled_pages: Some(4096),
            cpu_budget: Some(0.02),
            ..RowContext::default()
        };
        append(
            &path,
            &build_row(&features(), &cfg, &outcome(true), &m, &ctx),
        )
        .unwrap();
        // Non-converged rows are kept, with no downtime.
        append(
            &path,
            &build_row(
                &features(),
                &cfg,
                &outcome(false),
                &Measured::default(),
                &ctx,
            ),
        )
        .unwrap();
        let d = migsight_proto::csv::read_path(&path).unwrap();
        assert_eq!(d.samples.len(), 2);
        let s = &d.samples[0];
        assert_eq!(s.algorithm, Some(Algorithm::Xbzrle));
        assert_eq!(s.features.get(Feature::VmPtr), Some(50e6 / MIB));
        assert_eq!(s.features.get(Feature::VmPdr), Some(7.8));
        assert_eq!(s.label(Metric::TT), Some(4700.0));
        assert_eq!(s.label(Metric::DT), Some(13.0));
        assert_eq!(s.label(Metric::TD), Some(247e6));
        assert_eq!(s.label(Metric::PERF), Some(0.9));
        assert_eq!(s.label(Metric::CPU), Some(35.0));
        assert_eq!(s.extra("algorithm"), Some("xbzrle"));
        assert_eq!(s.extra("status"), Some("completed"));
        assert_eq!(s.extra("bandwidth_bps"), Some("50000000"));
        assert_eq!(s.extra("dirtied_k2_mib"), Some("3.250"));
        assert_eq!(s.extra("dirtied_k1_mib"), Some(""), "not in the curve");
        assert_eq!(s.extra("sampled_pages"), Some("4096"));
        assert_eq!(s.extra("cpu_budget"), Some("0.02"));
        assert!(s.did_converge());
        let n = &d.samples[1];
        assert!(!n.did_converge());
        assert_eq!(n.label(Metric::TT), Some(cfg.cap.as_secs_f64() * 1000.0));
        assert_eq!(n.label(Metric::DT), None);
        assert_eq!(n.label(Metric::PERF), None);
        // Same header as the lab's: a lab appender accepts the file.
        let extra: Vec<String> = EXTRA_COLUMNS.iter().map(|s| s.to_string()).collect();
        assert!(CsvAppender::open(&path, &extra).is_ok());
        assert_eq!(d.extra_columns, extra);
    }

    #[test]
    fn an_outcomes_file_from_an_older_version_gets_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outcomes.csv");
        // The header before the profile's curve and budget columns.
        let old: Vec<String> = EXTRA_COLUMNS[..30].iter().map(|s| s.to_string()).collect();
        let cfg = MigrationConfig::new(Algorithm::Precopy, 50e6);
        let ctx = RowContext {
            group_id: "migrate-1-2".into(),
            ..RowContext::default()
        };
        let row = build_row(
            &features(),
            &cfg,
            &outcome(true),
            &Measured::default(),
            &ctx,
        );
        let mut a = CsvAppender::open(&path, &old).unwrap();
        a.append(&row).unwrap();
        drop(a);
        append(&path, &row).unwrap();
        let d = migsight_proto::csv::read_path(&path).unwrap();
        assert_eq!(d.samples.len(), 2, "the old row is kept");
        assert_eq!(d.extra_columns.len(), EXTRA_COLUMNS.len());
        assert_eq!(d.samples[0].extra("algorithm"), Some("precopy"));
        assert_eq!(d.samples[0].extra("cpu_budget"), Some(""));
        assert_eq!(d.samples[0].label(Metric::TT), Some(4700.0));
    }
}
