//! What a migration cost, measured on the source, and the one CSAP row that
//! records it — for the lab and for `migsight migrate` alike, so a host's
//! outcomes train exactly like the lab's migrations.
//!
//! Labels: TT is QEMU's total time when converged and the cap otherwise; DT
//! only when converged; TD is `ram.transferred`; PERF/CPU/MEM when
//! measured. A migration that broke (a host or the link failed) is written
//! with `converged` empty and its `status` and `error`, so it stays on
//! record without teaching the models anything wrong
//! ([`migsight_proto::record::is_failure_status`]).

use crate::driver::{MigrationConfig, MigrationOutcome};
use crate::host::{lo_tx_bytes, load1, unix_now};
use crate::procfs;
use migsight_proto::csv::{CsvAppender, CsvError, Sample};
use migsight_proto::feature::MIB;
use migsight_proto::record::{record_columns, RECORD_COLUMNS};
use migsight_proto::wire::DirtiedWindow;
use migsight_proto::{FeatureVector, Metric};
use std::path::Path;
use std::time::{Duration, Instant};

/// Default outcomes file (the systemd units' `StateDirectory=migsight`).
pub const DEFAULT_OUTCOMES: &str = "/var/lib/migsight/outcomes.csv";

/// A process's CPU clock at one instant: the rate between two readings is
/// the share of a core it used.
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    cpu_seconds: f64,
    at: Instant,
}

impl CpuReading {
    pub fn now(pid: u32) -> Option<CpuReading> {
        procfs::process_cpu_seconds(pid)
            .ok()
            .map(|cpu_seconds| CpuReading {
                cpu_seconds,
                at: Instant::now(),
            })
    }

    /// CPU used between `self` and `later`, % of one core.
    pub fn percent_until(&self, later: &CpuReading) -> Option<f64> {
        let dt = later.at.duration_since(self.at).as_secs_f64();
        (dt > 1e-3).then(|| (later.cpu_seconds - self.cpu_seconds) / dt * 100.0)
    }
}

/// Measures the source QEMU process around a migration: CPU, peak RSS and,
/// for a destination on this host, the bytes on the loopback wire.
#[derive(Debug)]
pub struct Meter {
    pid: u32,
    cpu_start: Option<CpuReading>,
    /// The latest reading during the migration: a source that exits when
    /// the migration completes (libvirt ends the source QEMU) has no
    /// reading at the end.
    cpu_last: Option<CpuReading>,
    rss_before: Option<u64>,
    rss_peak: u64,
    tx_start: Option<u64>,
}

impl Meter {
    /// Starts measuring `pid`; `loopback`: the destination is on this host.
    pub fn start(pid: u32, loopback: bool) -> Meter {
        let rss_before = procfs::process_rss_bytes(pid).ok();
        Meter {
            pid,
            cpu_start: CpuReading::now(pid),
            cpu_last: None,
            rss_before,
            rss_peak: rss_before.unwrap_or(0),
            tx_start: loopback.then(lo_tx_bytes).flatten(),
        }
    }

    /// One reading during the migration (call it at every progress step).
    pub fn sample(&mut self) {
        if let Ok(r) = procfs::process_rss_bytes(self.pid) {
            self.rss_peak = self.rss_peak.max(r);
        }
        if let Some(c) = CpuReading::now(self.pid) {
            self.cpu_last = Some(c);
        }
    }

    /// Ends the measurement. `baseline_cpu_percent` is the source's own CPU
    /// use before the migration (its profile), subtracted to leave what
    /// the migration added.
    pub fn finish(self, wall: Duration, baseline_cpu_percent: Option<f64>) -> Costs {
        let during = match (self.cpu_start, CpuReading::now(self.pid)) {
            (Some(a), Some(b)) => {
                let dt = wall.as_secs_f64().max(1e-3);
                Some((b.cpu_seconds - a.cpu_seconds) / dt * 100.0)
            }
            // The source is gone: up to the last reading taken while it ran.
            (Some(a), None) => self.cpu_last.and_then(|b| a.percent_until(&b)),
            _ => None,
        };
        Costs {
            extra_cpu_percent: during.zip(baseline_cpu_percent).map(|(d, b)| d - b),
            extra_mem_mib: self
                .rss_before
                .map(|b| self.rss_peak.saturating_sub(b) as f64 / MIB),
            wire_bytes: self
                .tx_start
                .zip(lo_tx_bytes())
                .map(|(a, b)| b.saturating_sub(a)),
        }
    }
}

/// What the [`Meter`] measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Costs {
    /// Extra CPU of the source QEMU process during migration, % of one core.
    pub extra_cpu_percent: Option<f64>,
    /// Peak RSS growth of the source QEMU process, MiB.
    pub extra_mem_mib: Option<f64>,
    /// Bytes on the loopback wire (only for a destination on this host).
    pub wire_bytes: Option<u64>,
}

/// What was measured beyond QEMU's own outcome.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub costs: Costs,
    /// Guest performance during migration / before (ops page, when the guest has one).
    pub performance: Option<f64>,
    pub ops_before_per_s: Option<f64>,
    pub ops_during_per_s: Option<f64>,
}

/// Context of the row that is not in the outcome.
#[derive(Debug, Clone, Default)]
pub struct RowContext {
    pub qemu_version: String,
    pub accel: String,
    pub guest_mem_mib: Option<u64>,
    pub window_ms: Option<u64>,
    pub workload_type: Option<u8>,
    /// `production` for `migsight migrate`; the lab's workload mode.
    pub workload: String,
    /// The lab's reproduction columns (empty in production).
    pub workload_params: String,
    pub seed: Option<u64>,
    pub kernel_sha256: String,
    pub initrd_sha256: String,
    pub qemu_dirty_rate: Option<f64>,
    pub pdr_std_error: Option<f64>,
    /// The profile's distinct-dirtied curve, its page sample and CPU budget.
    pub dirtied: Vec<DirtiedWindow>,
    pub sampled_pages: Option<u64>,
    pub cpu_budget: Option<f64>,
    /// Paired-group id (`s1-g12` in the lab, `migrate-<unix>-<pid>` in production).
    pub group_id: String,
    /// How QEMU was driven: `qmp` or `libvirt`.
    pub via: String,
    /// Other QEMU processes on the source host during the migration.
    pub other_vms: Option<u32>,
}

impl RowContext {
    /// The context a profile gives: its window, QEMU's own dirty-rate
    /// estimate, the dirty rate's standard error, the distinct-dirtied curve,
    /// the page sample and the CPU budget that bought it. The caller adds
    /// what it knows (version, group, workload, …).
    pub fn from_profile(report: &migsight_proto::wire::ProfileReport) -> RowContext {
        RowContext {
            window_ms: Some(report.window_ms),
            qemu_dirty_rate: report.qemu_dirty_rate,
            pdr_std_error: report
                .errors
                .iter()
                .find(|e| e.feature == migsight_proto::Feature::VmPdr)
                .map(|e| e.std_error),
            dirtied: report.dirtied.clone(),
            sampled_pages: Some(report.sampled_pages),
            cpu_budget: Some(report.cpu_budget),
            ..RowContext::default()
        }
    }
}

/// A fresh id for one production migration.
pub fn new_group_id(src_pid: u32) -> String {
    format!("migrate-{}-{}", unix_now(), src_pid)
}

/// The cell of a `dirtied_k{k}_mib` column from a profile's curve: MiB
/// dirtied within `k` consecutive intervals, empty when the window was
/// shorter. `None` for any other column.
pub fn dirtied_cell(dirtied: &[DirtiedWindow], column: &str) -> Option<String> {
    let k: u32 = column
        .strip_prefix("dirtied_k")?
        .strip_suffix("_mib")?
        .parse()
        .ok()?;
    Some(
        dirtied
            .iter()
            .find(|w| w.intervals == k)
            .map(|w| format!("{:.3}", w.mib))
            .unwrap_or_default(),
    )
}

/// Builds the CSAP row for one migration.
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
        // A broken migration says nothing about convergence.
        converged: (!outcome.failed).then_some(outcome.converged),
        group_id: Some(ctx.group_id.clone()),
        ..Sample::default()
    };
    // VM_ptr is the bandwidth the migration was given.
    s.features.set(
        migsight_proto::Feature::VmPtr,
        Some(cfg.bandwidth_bps / MIB),
    );
    if !outcome.failed {
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
        let m = measured;
        let labels = [
            (Metric::PERF, m.performance),
            (Metric::CPU, m.costs.extra_cpu_percent),
            (Metric::MEM, m.costs.extra_mem_mib),
        ];
        for (metric, v) in labels {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                s.set_label(metric, v);
            }
        }
    }
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
    let num = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    let multifd = cfg.algorithm.is_multifd();
    let value = |col: &str| -> String {
        match col {
            "algorithm" => cfg.algorithm.name().into(),
            "workload" => ctx.workload.clone(),
            "workload_params" => ctx.workload_params.clone(),
            "guest_mem_mib" => num(ctx.guest_mem_mib),
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
            "seed" => num(ctx.seed),
            "window_ms" => num(ctx.window_ms),
            "status" => outcome.status.clone(),
            "setup_time_ms" => opt(outcome.setup_time_ms),
            "wire_bytes" => num(measured.costs.wire_bytes),
            "throttle_max" => outcome.throttle_percent_max.to_string(),
            "dirty_sync_count" => outcome.dirty_sync_count.to_string(),
            "ops_before_per_s" => opt(measured.ops_before_per_s),
            "ops_during_per_s" => opt(measured.ops_during_per_s),
            "qemu_dirty_rate" => opt(ctx.qemu_dirty_rate),
            "pdr_std_error" => opt(ctx.pdr_std_error),
            "host_load1" => opt(load1()),
            "kernel_sha256" => ctx.kernel_sha256.clone(),
            "initrd_sha256" => ctx.initrd_sha256.clone(),
            "unix_time" => unix_now().to_string(),
            "sampled_pages" => num(ctx.sampled_pages),
            "cpu_budget" => ctx.cpu_budget.map(|b| b.to_string()).unwrap_or_default(),
            "multifd_channels" if multifd => cfg.multifd_channels.to_string(),
            "multifd_zstd_level" if cfg.algorithm == migsight_proto::Algorithm::MultifdZstd => {
                cfg.zstd_level.to_string()
            }
            "vcpu_dirty_limit" if cfg.algorithm == migsight_proto::Algorithm::DirtyLimit => {
                cfg.vcpu_dirty_limit_mbps.to_string()
            }
            "postcopy_requests" => outcome.postcopy_requests.to_string(),
            "via" => ctx.via.clone(),
            "error" => outcome.error.clone().unwrap_or_default(),
            "other_vms" => ctx.other_vms.map(|n| n.to_string()).unwrap_or_default(),
            c if c.starts_with("dirtied_k") => dirtied_cell(&ctx.dirtied, c).unwrap_or_default(),
            _ => String::new(),
        }
    };
    s.extra = RECORD_COLUMNS
        .iter()
        .map(|c| (c.to_string(), value(c)))
        .collect();
    s
}

/// Appends `row` to `path` (created with the record header if missing, an
/// older header widened), synced.
pub fn append(path: &Path, row: &Sample) -> Result<(), CsvError> {
    let extra = record_columns();
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
    use migsight_proto::{Algorithm, Feature};

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
            postcopy_requests: 0,
            wall: Duration::from_millis(4800),
            error: None,
            split: None,
            failed: false,
        }
    }

    fn features() -> FeatureVector {
        FeatureVector::new()
            .with(Feature::VmSize, 512.0)
            .with(Feature::VmPdr, 7.8)
            .with(Feature::VmWss, 40.0)
    }

    #[test]
    fn rows_round_trip_through_the_record_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/outcomes.csv");
        let cfg = MigrationConfig::new(Algorithm::MultifdZstd, 50e6);
        let m = Measured {
            performance: Some(0.9),
            costs: Costs {
                extra_cpu_percent: Some(35.0),
                extra_mem_mib: Some(64.0),
                wire_bytes: None,
            },
            ..Measured::default()
        };
        let ctx = RowContext {
            qemu_version: "10.0.2".into(),
            accel: "tcg".into(),
            workload: "production".into(),
            group_id: "migrate-1-2".into(),
            window_ms: Some(3000),
            via: "qmp".into(),
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
        // A failed migration is on record, with no labels and no convergence.
        let mut broken = outcome(false);
        broken.status = "failed".into();
        broken.failed = true;
        broken.error = Some("Unable to write to socket: Broken pipe".into());
        append(
            &path,
            &build_row(&features(), &cfg, &broken, &Measured::default(), &ctx),
        )
        .unwrap();
        let d = migsight_proto::csv::read_path(&path).unwrap();
        assert_eq!(d.samples.len(), 3);
        let s = &d.samples[0];
        assert_eq!(s.algorithm, Some(Algorithm::MultifdZstd));
        assert_eq!(s.features.get(Feature::VmPtr), Some(50e6 / MIB));
        assert_eq!(s.features.get(Feature::VmPdr), Some(7.8));
        assert_eq!(s.label(Metric::TT), Some(4700.0));
        assert_eq!(s.label(Metric::DT), Some(13.0));
        assert_eq!(s.label(Metric::TD), Some(247e6));
        assert_eq!(s.label(Metric::PERF), Some(0.9));
        assert_eq!(s.label(Metric::CPU), Some(35.0));
        assert_eq!(s.extra("algorithm"), Some("multifd-zstd"));
        assert_eq!(s.extra("status"), Some("completed"));
        assert_eq!(s.extra("bandwidth_bps"), Some("50000000"));
        assert_eq!(s.extra("multifd_zstd_level"), Some("1"));
        assert_eq!(
            s.extra("multifd_channels"),
            Some(cfg.multifd_channels.to_string().as_str())
        );
        assert_eq!(s.extra("vcpu_dirty_limit"), Some(""));
        assert_eq!(s.extra("via"), Some("qmp"));
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
        let f = &d.samples[2];
        assert_eq!(f.converged, None);
        assert_eq!(f.label(Metric::TT), None);
        assert_eq!(f.extra("status"), Some("failed"));
        assert!(f.extra("error").unwrap().contains("Broken pipe"));
        assert_eq!(d.extra_columns, record_columns());
    }

    #[test]
    fn an_outcomes_file_from_an_older_version_gets_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outcomes.csv");
        // The header before the profile's curve and budget columns.
        let old: Vec<String> = RECORD_COLUMNS[..30].iter().map(|s| s.to_string()).collect();
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
        assert_eq!(d.extra_columns.len(), RECORD_COLUMNS.len());
        assert_eq!(d.samples[0].extra("algorithm"), Some("precopy"));
        assert_eq!(d.samples[0].extra("cpu_budget"), Some(""));
        assert_eq!(d.samples[0].label(Metric::TT), Some(4700.0));
    }

    #[test]
    fn the_meter_reads_a_live_process() {
        let pid = std::process::id();
        let mut m = Meter::start(pid, true);
        let v: Vec<u8> = vec![1; 8 << 20];
        std::hint::black_box(&v);
        m.sample();
        let c = m.finish(Duration::from_millis(100), Some(0.0));
        assert!(c.extra_cpu_percent.is_some());
        assert!(c.extra_mem_mib.unwrap() >= 0.0);
        assert!(c.wire_bytes.is_some());
        let gone = Meter::start(u32::MAX - 1, false).finish(Duration::from_secs(1), Some(1.0));
        assert_eq!(gone, Costs::default());
        let a = CpuReading::now(pid).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(a.percent_until(&CpuReading::now(pid).unwrap()).is_some());
    }
}
