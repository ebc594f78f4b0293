//! The lab loop: paired groups of real migrations, one at a time, each row
//! appended and synced as soon as it is measured.
//!
//! One **group** = one guest state migrated with several algorithms:
//! boot a guest with a drawn workload, let it warm up, snapshot it
//! (`migrate exec:cat > state`), then for each algorithm restore that state
//! into a fresh source, profile it with the agent's own profiler, migrate it
//! to a fresh destination and record the outcome. Restoring (≈0.3 s) replaces
//! booting (≈5 s), and every row of a group starts from the same state, as in
//! the seeds' 512-migration dataset.

use crate::guest::GuestImage;
use crate::host::{lo_tx_bytes, load1, unix_now};
use crate::migration::{self, MigrationConfig, MigrationOutcome};
use crate::qemu::{Accel, Qemu, VmSpec};
use crate::rng::Rng;
use crate::workload::{ops_rate, OpsPage, Ranges, Workload};
use anyhow::{anyhow, bail, Context, Result};
use migsight_agent::procfs;
use migsight_agent::profile::{profile, ProfileConfig};
use migsight_agent::vm::VmTarget;
use migsight_proto::csv::{CsvAppender, Sample};
use migsight_proto::feature::MIB;
use migsight_proto::wire::DirtiedWindow;
use migsight_proto::{Algorithm, Feature, Metric};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Columns the lab writes after the CSAP ones: everything that reproduces a row.
pub const EXTRA_COLUMNS: [&str; 37] = [
    "algorithm",
    "workload",
    "workload_params",
    "guest_mem_mib",
    "bandwidth_bps",
    "downtime_limit_ms",
    "cap_ms",
    "xbzrle_cache_bytes",
    "compress_level",
    "compress_threads",
    "decompress_threads",
    "throttle_initial",
    "throttle_increment",
    "qemu_version",
    "accel",
    "seed",
    "window_ms",
    "status",
    "setup_time_ms",
    "wire_bytes",
    "throttle_max",
    "dirty_sync_count",
    "ops_before_per_s",
    "ops_during_per_s",
    "qemu_dirty_rate",
    "pdr_std_error",
    "host_load1",
    "kernel_sha256",
    "initrd_sha256",
    "unix_time",
    // Distinct MiB dirtied within k consecutive sampling intervals (the
    // profile's curve, `ProfileReport::dirtied`); added after 1,002 rows.
    "dirtied_k1_mib",
    "dirtied_k2_mib",
    "dirtied_k4_mib",
    "dirtied_k8_mib",
    "dirtied_k16_mib",
    // The agent's CPU budget (share of a core per GiB) and the page sample it bought.
    "cpu_budget",
    "sampled_pages",
];

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

/// A fixed setting for every group (tests, demos); `None` draws from [`Ranges`].
#[derive(Debug, Clone)]
pub struct Fixed {
    pub mem_mib: u64,
    pub workload: Workload,
    pub bandwidth_bps: f64,
}

/// Everything a lab run needs.
#[derive(Debug, Clone)]
pub struct LabConfig {
    pub out: PathBuf,
    /// Rows to add in this run.
    pub samples: usize,
    pub seed: u64,
    pub accel: Accel,
    pub window: Duration,
    pub interval: Duration,
    pub cap: Duration,
    pub warmup: Duration,
    /// Algorithms per group (each group migrates its state with all of them).
    pub algorithms: Vec<Algorithm>,
    /// Times each algorithm migrates the same state (>1 measures the noise floor).
    pub repeats: usize,
    /// The agent's CPU budgets (share of a core per GiB) to profile with;
    /// with several, each state is migrated once per budget too.
    pub cpu_budgets: Vec<f64>,
    pub fixed: Option<Fixed>,
    /// What groups are drawn from when not fixed.
    pub ranges: Ranges,
    /// Where QEMU sockets and snapshots live while a group runs.
    pub runs_dir: PathBuf,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct LabSummary {
    pub written: usize,
    pub failed: usize,
    pub non_converged: usize,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(l.local_addr()?.port())
}

/// Groups already in `out` (for resuming): the highest group index of this seed.
fn next_group_index(out: &Path, seed: u64) -> Result<u64> {
    if !out.exists() {
        return Ok(0);
    }
    let d = migsight_proto::csv::read_path(out)?;
    let prefix = format!("s{seed}-g");
    Ok(d.samples
        .iter()
        .filter_map(|s| {
            s.group_id
                .as_deref()?
                .strip_prefix(&prefix)?
                .parse::<u64>()
                .ok()
        })
        .max()
        .map(|m| m + 1)
        .unwrap_or(0))
}

fn fmt_eta(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
}

/// Runs the lab until `cfg.samples` rows are written or `cancel` is set.
pub fn run(cfg: &LabConfig, image: &GuestImage, cancel: &AtomicBool) -> Result<LabSummary> {
    let extra: Vec<String> = EXTRA_COLUMNS.iter().map(|s| s.to_string()).collect();
    let added = migsight_proto::csv::widen(&cfg.out, &extra)?;
    if !added.is_empty() {
        eprintln!(
            "lab: {} was written by an older lab: added the columns {} (empty on its rows)",
            cfg.out.display(),
            added.join(", ")
        );
    }
    let mut appender = CsvAppender::open(&cfg.out, &extra)?;
    std::fs::create_dir_all(&cfg.runs_dir)
        .with_context(|| format!("creating {}", cfg.runs_dir.display()))?;
    let mut group = next_group_index(&cfg.out, cfg.seed)?;
    let default_budget = [ProfileConfig::default().cpu_budget];
    let budgets: &[f64] = if cfg.cpu_budgets.is_empty() {
        &default_budget
    } else {
        &cfg.cpu_budgets
    };
    let mut summary = LabSummary::default();
    let started = Instant::now();
    let mut consecutive_failures = 0;
    while summary.written < cfg.samples && !cancel.load(Ordering::Relaxed) {
        let mut rng = Rng::derive(cfg.seed, group);
        let (mem_mib, workload, bandwidth_bps) = match &cfg.fixed {
            Some(f) => (f.mem_mib, f.workload.clone(), f.bandwidth_bps),
            None => {
                let (m, w) = cfg.ranges.draw(&mut rng);
                let bw = cfg.ranges.draw_bandwidth(&mut rng, m);
                (m, w, bw)
            }
        };
        let mut algorithms: Vec<(Algorithm, f64)> = cfg
            .algorithms
            .iter()
            .flat_map(|a| budgets.iter().map(move |b| (*a, *b)))
            .flat_map(|run| std::iter::repeat_n(run, cfg.repeats.max(1)))
            .collect();
        rng.shuffle(&mut algorithms);
        algorithms.truncate(cfg.samples - summary.written);
        let group_id = format!("s{}-g{}", cfg.seed, group);
        let ctx = GroupCtx {
            cfg,
            image,
            group_id: group_id.clone(),
            mem_mib,
            workload,
            bandwidth_bps,
        };
        let result = ctx.run(&algorithms, cancel, |sample, algo, i| {
            appender.append(sample)?;
            summary.written += 1;
            if !sample.did_converge() {
                summary.non_converged += 1;
            }
            let rate = summary.written as f64 / started.elapsed().as_secs_f64().max(1.0) * 3600.0;
            let left = (cfg.samples - summary.written) as f64 / rate * 3600.0;
            let l = |m: Metric| sample.label(m).unwrap_or(f64::NAN);
            eprintln!(
                "lab: {}/{} {} [{}/{}] {:<13} {} MiB {:<9} bw {:.1} MB/s -> TT {:.1} s DT {} TD {:.0} MiB {} | {:.0}/h, ETA {}",
                summary.written,
                cfg.samples,
                group_id,
                i + 1,
                algorithms.len(),
                algo.name(),
                mem_mib,
                ctx.workload.mode.name(),
                bandwidth_bps / 1e6,
                l(Metric::TT) / 1000.0,
                sample.label(Metric::DT).map(|d| format!("{d:.0} ms")).unwrap_or_else(|| "-".into()),
                l(Metric::TD) / MIB,
                if sample.did_converge() { "converged" } else { "NOT converged" },
                rate,
                fmt_eta(left),
            );
            Ok(())
        });
        match result {
            Ok(()) => consecutive_failures = 0,
            Err(e) if cancel.load(Ordering::Relaxed) => {
                tracing::info!("lab interrupted during group {group_id}: {e:#}");
            }
            Err(e) => {
                summary.failed += 1;
                consecutive_failures += 1;
                eprintln!("lab: group {group_id} failed: {e:#}");
                if consecutive_failures >= 5 {
                    bail!("5 groups in a row failed; last error: {e:#}");
                }
            }
        }
        group += 1;
    }
    Ok(summary)
}

struct GroupCtx<'a> {
    cfg: &'a LabConfig,
    image: &'a GuestImage,
    group_id: String,
    mem_mib: u64,
    workload: Workload,
    bandwidth_bps: f64,
}

impl GroupCtx<'_> {
    fn spec(&self, name: &str, incoming: bool) -> VmSpec {
        VmSpec {
            name: format!("{}-{name}", self.group_id),
            mem_mib: self.mem_mib,
            accel: self.cfg.accel,
            kernel: self.image.kernel.clone(),
            initrd: self.image.initrd.clone(),
            append: self.workload.kernel_cmdline(),
            incoming,
        }
    }

    /// Boots, warms up and snapshots the guest; then migrates the snapshot
    /// once per algorithm, handing each row to `emit`.
    fn run(
        &self,
        algorithms: &[(Algorithm, f64)],
        cancel: &AtomicBool,
        mut emit: impl FnMut(&Sample, Algorithm, usize) -> Result<()>,
    ) -> Result<()> {
        let state = self.cfg.runs_dir.join(format!("{}.state", self.group_id));
        let _cleanup = RemoveOnDrop(state.clone());
        let ops_page = {
            let boot = Qemu::start(self.spec("boot", false), &self.cfg.runs_dir)?;
            let page = OpsPage::find(boot.pid(), Duration::from_secs(180)).with_context(|| {
                format!("waiting for the workload ({})", self.workload.describe())
            })?;
            sleep_unless(self.cfg.warmup, cancel);
            let mut q = boot.qmp()?;
            q.set_parameters(json!({"max-bandwidth": 10_000_000_000u64}))?;
            q.execute(
                "migrate",
                Some(json!({"uri": format!("exec:cat > {}", state.display())})),
            )?;
            wait_migration_end(&mut q, Duration::from_secs(120))
                .context("snapshotting the warmed-up guest")?;
            page
        };
        for (i, &(algo, cpu_budget)) in algorithms.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let sample = self
                .one(algo, cpu_budget, &state, ops_page, cancel)
                .with_context(|| format!("{} migration", algo.name()))?;
            emit(&sample, algo, i)?;
        }
        Ok(())
    }

    fn one(
        &self,
        algo: Algorithm,
        cpu_budget: f64,
        state: &Path,
        page: OpsPage,
        cancel: &AtomicBool,
    ) -> Result<Sample> {
        // Restore the snapshot into a fresh source.
        let mut src = Qemu::start(
            self.spec(&format!("{}-src", algo.name()), true),
            &self.cfg.runs_dir,
        )?;
        let mut sq = src.qmp()?;
        sq.execute(
            "migrate-incoming",
            Some(json!({"uri": format!("exec:cat {}", state.display())})),
        )?;
        let t0 = Instant::now();
        loop {
            let (status, running) = sq.status()?;
            if running {
                break;
            }
            if status != "inmigrate" {
                sq.execute("cont", None)?;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!(
                    "restoring the snapshot took over 60 s (status {status}); {}",
                    src.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let qemu_version = format!("{}.{}.{}", sq.version.0, sq.version.1, sq.version.2);

        // Profile with the agent's own code, as in production, except that
        // the zero-page census may read every page whatever it costs: the
        // training rows get an exact VM_size (as since group s1-g108), and
        // a production profile reports its estimate's standard error.
        let ops_a = page.read(src.pid())?;
        let cpu_a = procfs::process_cpu_seconds(src.pid())?;
        let t_prof = Instant::now();
        let pcfg = ProfileConfig {
            window: self.cfg.window,
            interval: self.cfg.interval,
            bandwidth_bps: self.bandwidth_bps,
            cpu_budget,
            census_share: f64::INFINITY,
            ..ProfileConfig::default()
        };
        let target = VmTarget::new(src.pid(), Some(src.agent_qmp_path.clone()));
        let report = profile(&target, &pcfg, cancel).context("profiling the source")?;
        let ops_b = page.read(src.pid())?;
        let cpu_b = procfs::process_cpu_seconds(src.pid())?;
        let base_cpu = (cpu_b - cpu_a) / t_prof.elapsed().as_secs_f64().max(1e-3);
        let ops_before = ops_rate(&ops_a, &ops_b);

        // Destination and migration.
        let dst = Qemu::start(
            self.spec(&format!("{}-dst", algo.name()), true),
            &self.cfg.runs_dir,
        )?;
        let mut dq = dst.qmp()?;
        let mut mcfg = MigrationConfig::new(algo, self.bandwidth_bps);
        mcfg.cap = self.cfg.cap;
        let uri = format!("tcp:127.0.0.1:{}", free_port()?);
        migration::prepare_destination(&mut dq, &mcfg, &uri)?;
        let rss_before = procfs::process_rss_bytes(src.pid())?;
        let mut rss_peak = rss_before;
        let src_pid = src.pid();
        let tx_a = lo_tx_bytes();
        let ops_start = page.read(src_pid)?;
        let cpu_start = procfs::process_cpu_seconds(src_pid)?;
        let outcome = migration::migrate(
            &mut sq,
            &mcfg,
            &uri,
            Duration::from_millis(100),
            cancel,
            |_| {
                if let Ok(r) = procfs::process_rss_bytes(src_pid) {
                    rss_peak = rss_peak.max(r);
                }
            },
        )?;
        // The guest now runs where the migration left it.
        let runs_on = if outcome.converged {
            dst.pid()
        } else {
            src_pid
        };
        let ops_end = page.read_settled(runs_on, &ops_start)?;
        let cpu_end = procfs::process_cpu_seconds(src_pid)?;
        let tx_b = lo_tx_bytes();
        if !src.alive() {
            bail!("source QEMU died during migration: {}", src.stderr_tail());
        }
        let ops_during = ops_rate(&ops_start, &ops_end);
        let wall = outcome.wall.as_secs_f64().max(1e-3);
        let extra_cpu = ((cpu_end - cpu_start) / wall - base_cpu) * 100.0;
        let extra_mem = (rss_peak.saturating_sub(rss_before)) as f64 / MIB;

        let mut s = Sample {
            algorithm: Some(algo),
            workload_type: Some(self.workload.mode.workload_type().code()),
            features: report.features,
            converged: Some(outcome.converged),
            group_id: Some(self.group_id.clone()),
            ..Sample::default()
        };
        s.features
            .set(Feature::VmPtr, Some(self.bandwidth_bps / MIB));
        s.set_label(
            Metric::TT,
            if outcome.converged {
                outcome.total_time_ms
            } else {
                self.cfg.cap.as_secs_f64() * 1000.0
            },
        );
        if let Some(dt) = outcome.downtime_ms {
            s.set_label(Metric::DT, dt);
        }
        s.set_label(Metric::TD, outcome.transferred_bytes);
        if let (Some(before), Some(during)) = (ops_before, ops_during) {
            if before > 0.0 {
                s.set_label(Metric::PERF, during / before);
            }
        }
        s.set_label(Metric::CPU, extra_cpu);
        s.set_label(Metric::MEM, extra_mem);
        s.extra = self.extra_columns(
            &mcfg,
            &outcome,
            &qemu_version,
            ops_before,
            ops_during,
            &report,
            tx_a.zip(tx_b).map(|(a, b)| b.saturating_sub(a)),
        );
        Ok(s)
    }

    #[allow(clippy::too_many_arguments)]
    fn extra_columns(
        &self,
        m: &MigrationConfig,
        o: &MigrationOutcome,
        qemu_version: &str,
        ops_before: Option<f64>,
        ops_during: Option<f64>,
        report: &migsight_proto::wire::ProfileReport,
        wire_bytes: Option<u64>,
    ) -> Vec<(String, String)> {
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
        let pdr_err = report
            .errors
            .iter()
            .find(|e| e.feature == Feature::VmPdr)
            .map(|e| e.std_error);
        let dirtied = |c: &str| dirtied_cell(&report.dirtied, c).unwrap_or_default();
        let values: [String; EXTRA_COLUMNS.len()] = [
            m.algorithm.name().into(),
            self.workload.mode.name().into(),
            self.workload.describe(),
            self.mem_mib.to_string(),
            format!("{:.0}", self.bandwidth_bps),
            m.downtime_limit_ms.to_string(),
            m.cap.as_millis().to_string(),
            m.xbzrle_cache_bytes.to_string(),
            m.compress_level.to_string(),
            m.compress_threads.to_string(),
            m.decompress_threads.to_string(),
            m.throttle_initial.to_string(),
            m.throttle_increment.to_string(),
            qemu_version.into(),
            self.cfg.accel.name().into(),
            self.cfg.seed.to_string(),
            self.cfg.window.as_millis().to_string(),
            o.status.clone(),
            opt(o.setup_time_ms),
            wire_bytes.map(|b| b.to_string()).unwrap_or_default(),
            o.throttle_percent_max.to_string(),
            o.dirty_sync_count.to_string(),
            opt(ops_before),
            opt(ops_during),
            opt(report.qemu_dirty_rate),
            opt(pdr_err),
            opt(load1()),
            self.image.sha256_of("vmlinuz").unwrap_or_default(),
            self.image
                .sha256_of("initramfs.cpio.gz")
                .unwrap_or_default(),
            unix_now().to_string(),
            dirtied("dirtied_k1_mib"),
            dirtied("dirtied_k2_mib"),
            dirtied("dirtied_k4_mib"),
            dirtied("dirtied_k8_mib"),
            dirtied("dirtied_k16_mib"),
            report.cpu_budget.to_string(),
            report.sampled_pages.to_string(),
        ];
        EXTRA_COLUMNS
            .iter()
            .map(|c| c.to_string())
            .zip(values)
            .collect()
    }
}

/// Waits for a migration (here: a snapshot to a file) to finish.
fn wait_migration_end(q: &mut migsight_agent::qmp::Qmp, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let info = q.query_migrate()?;
        match info.get("status").and_then(|s| s.as_str()) {
            Some("completed") => return Ok(()),
            Some(s @ ("failed" | "cancelled")) => {
                return Err(anyhow!(
                    "migration {s}: {}",
                    info.get("error-desc")
                        .and_then(|e| e.as_str())
                        .unwrap_or("no reason given")
                ))
            }
            _ => {}
        }
        if t0.elapsed() > timeout {
            let _ = q.execute("migrate_cancel", None);
            bail!("did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sleep_unless(d: Duration, cancel: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !cancel.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
