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

#[path = "runner_libvirt.rs"]
mod via_libvirt;
pub use via_libvirt::LibvirtLab;

use crate::workload::{Ranges, Workload};
use anyhow::{anyhow, bail, Context, Result};
use migsight_agent::ops_page::{ops_rate, OpsPage};
use migsight_agent::profile::{profile, ProfileConfig};
use migsight_agent::vm::{cmdline, other_vms, VmTarget};
use migsight_proto::csv::{CsvAppender, Sample};
use migsight_proto::feature::MIB;
use migsight_proto::record::record_columns;
use migsight_proto::rng::Rng;
use migsight_proto::{Algorithm, Metric};
use migsight_qemu::driver::{self, MigrationConfig};
use migsight_qemu::image::GuestImage;
use migsight_qemu::outcome::{build_row, CpuReading, Measured, Meter, RowContext};
use migsight_qemu::process::{Accel, Qemu, VmSpec};
use migsight_qemu::status::MigrateInfo;
use migsight_qemu::HostSupport;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    /// Through libvirt instead of QMP (`--via libvirt`).
    pub libvirt: Option<LibvirtLab>,
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
    let extra = record_columns();
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
        let mut rng = Rng::for_item(cfg.seed, group);
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
        rng.shuffle_by_range(&mut algorithms);
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
            qemu: None,
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
        if let Some(lv) = &self.cfg.libvirt {
            return self.run_libvirt(lv, algorithms, cancel, emit);
        }
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
        let qemu_version = sq.version.to_string();
        let support = HostSupport::query(&mut sq, &cmdline(src.pid())?)?;

        // Profile with the agent's own code, as in production, except that
        // the zero-page census may read every page whatever it costs: the
        // training rows get an exact VM_size (as since group s1-g108), and
        // a production profile reports its estimate's standard error.
        let ops_a = page.read(src.pid())?;
        let cpu_a = CpuReading::now(src.pid());
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
        let base_cpu = cpu_a
            .zip(CpuReading::now(src.pid()))
            .and_then(|(a, b)| a.percent_until(&b));
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
        driver::prepare_destination(&mut dq, &mcfg, &uri, &cmdline(dst.pid())?)?;
        let src_pid = src.pid();
        let others_before = other_vms(&[src_pid, dst.pid()]);
        let mut meter = Meter::start(src_pid, true);
        let ops_start = page.read(src_pid)?;
        let outcome = driver::migrate(
            &mut sq,
            &support,
            &mcfg,
            &uri,
            Duration::from_millis(100),
            cancel,
            |_| meter.sample(),
        )?;
        let costs = meter.finish(outcome.wall, base_cpu);
        let others = others_before.max(other_vms(&[src_pid, dst.pid()]));
        // The guest now runs where the migration left it.
        let runs_on = if outcome.converged {
            dst.pid()
        } else {
            src_pid
        };
        let ops_during = page
            .read_settled(runs_on, &ops_start)
            .ok()
            .and_then(|end| ops_rate(&ops_start, &end));
        if !src.alive() {
            bail!("source QEMU died during migration: {}", src.stderr_tail());
        }
        Ok(self.row(RowFacts {
            report: &report,
            mcfg: &mcfg,
            outcome: &outcome,
            costs,
            ops_before,
            ops_during,
            qemu_version,
            via: "qmp",
            others,
        }))
    }

    /// The outcome row of one migration of this group, whichever way
    /// (QMP or libvirt) it ran: the lab's context (seed, workload, image,
    /// group) on top of what the profile says.
    pub(super) fn row(&self, f: RowFacts<'_>) -> Sample {
        let measured = Measured {
            costs: f.costs,
            performance: f
                .ops_before
                .zip(f.ops_during)
                .filter(|(before, _)| *before > 0.0)
                .map(|(before, during)| during / before),
            ops_before_per_s: f.ops_before,
            ops_during_per_s: f.ops_during,
        };
        let ctx = RowContext {
            qemu_version: f.qemu_version,
            accel: self.cfg.accel.name().into(),
            guest_mem_mib: Some(self.mem_mib),
            workload_type: Some(self.workload.mode.workload_type() as u8),
            workload: self.workload.mode.name().into(),
            workload_params: self.workload.describe(),
            seed: Some(self.cfg.seed),
            kernel_sha256: self.image.manifest_digest("vmlinuz").unwrap_or_default(),
            initrd_sha256: self
                .image
                .manifest_digest("initramfs.cpio.gz")
                .unwrap_or_default(),
            // The configured window, as the lab has always recorded it.
            window_ms: Some(self.cfg.window.as_millis() as u64),
            group_id: self.group_id.clone(),
            via: f.via.into(),
            other_vms: Some(f.others),
            ..RowContext::from_profile(f.report)
        };
        build_row(&f.report.features, f.mcfg, f.outcome, &measured, &ctx)
    }
}

/// What one migration measured, for [`GroupCtx::row`].
pub(super) struct RowFacts<'a> {
    pub report: &'a migsight_proto::wire::ProfileReport,
    pub mcfg: &'a MigrationConfig,
    pub outcome: &'a migsight_qemu::MigrationOutcome,
    pub costs: migsight_qemu::outcome::Costs,
    pub ops_before: Option<f64>,
    pub ops_during: Option<f64>,
    pub qemu_version: String,
    pub via: &'static str,
    pub others: u32,
}

/// Waits for a migration (here: a snapshot to a file) to finish.
fn wait_migration_end(q: &mut migsight_qemu::Qmp, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let info = MigrateInfo::query(q)?;
        if info.status == migsight_qemu::MigrationStatus::Completed {
            return Ok(());
        }
        if info.status.is_final() {
            return Err(anyhow!(
                "migration {}: {}",
                info.status,
                info.error_desc.as_deref().unwrap_or("no reason given")
            ));
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
