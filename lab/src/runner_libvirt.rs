//! The lab's paired groups through libvirt (`migsight lab --via libvirt`),
//! so a libvirt site can grow its own data: what its libvirt measures
//! (libvirt's `time_elapsed` and `downtime` include its own prepare and
//! switch-over handshakes) with its libvirt's flags.
//!
//! One group, as over QMP: the guest is defined on the source libvirt as a
//! transient domain, warmed up and saved (`virsh save`, a state file); then,
//! per algorithm, restored on the source (`virsh restore`), profiled by the
//! agent's own code in pid-only mode (libvirt owns the monitor), migrated
//! to the destination libvirt with `migsight_libvirt::migrate`, and
//! recorded by the one row builder with `via` = libvirt. The domain is
//! destroyed on both sides after each migration, so every row starts from
//! the same state.

use super::{GroupCtx, RemoveOnDrop, RowFacts};
use anyhow::{anyhow, bail, Context, Result};
use migsight_agent::ops_page::{ops_rate, OpsPage};
use migsight_agent::profile::{profile, ProfileConfig};
use migsight_agent::vm::{cmdline, other_vms, VmTarget};
use migsight_libvirt::domain::{emulator_path, GuestDomain};
use migsight_libvirt::migrate::{self as lvm, Request};
use migsight_libvirt::support::applied_bandwidth_bps;
use migsight_libvirt::{DomainFacts, LibvirtSupport, Virsh};
use migsight_proto::csv::Sample;
use migsight_proto::Algorithm;
use migsight_qemu::driver::MigrationConfig;
use migsight_qemu::outcome::{CpuReading, Meter};
use migsight_qemu::HostSupport;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The two libvirt connections and the data path.
#[derive(Debug, Clone, PartialEq)]
pub struct LibvirtLab {
    /// Source libvirt (where the guests are defined and profiled).
    pub from: String,
    /// Destination libvirt.
    pub to: String,
    /// Host of the destination's migration data path (`--migrateuri
    /// tcp://HOST:PORT`, a free port here); `None`: libvirt picks.
    pub migrate_host: Option<String>,
}

/// A domain destroyed (and undefined) on one libvirt when dropped.
struct Destroy<'a>(&'a Virsh, String);

impl Drop for Destroy<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["destroy", &self.1]);
        let _ = self.0.run(&["undefine", &self.1]);
    }
}

fn wait_running(virsh: &Virsh, name: &str, timeout: Duration) -> Result<DomainFacts> {
    let t0 = Instant::now();
    loop {
        let state = migsight_libvirt::domain::state(virsh, name)?;
        if state == "running" {
            return Ok(DomainFacts::query(virsh, name)?);
        }
        if t0.elapsed() > timeout {
            bail!("domain {name} is {state} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl GroupCtx<'_> {
    /// [`GroupCtx::run`] through libvirt.
    pub(super) fn run_libvirt(
        &self,
        lv: &LibvirtLab,
        algorithms: &[(Algorithm, f64)],
        cancel: &AtomicBool,
        mut emit: impl FnMut(&Sample, Algorithm, usize) -> Result<()>,
    ) -> Result<()> {
        let src = Virsh::new(&lv.from);
        let dst = Virsh::new(&lv.to);
        let name = self.group_id.clone();
        let state = self.cfg.runs_dir.join(format!("{name}.libvirt-state"));
        let _cleanup = RemoveOnDrop(state.clone());
        let xml_path = self.cfg.runs_dir.join(format!("{name}.xml"));
        let _xml_cleanup = RemoveOnDrop(xml_path.clone());
        let serial = self.cfg.runs_dir.join(format!("{name}.serial.log"));
        let _serial_cleanup = RemoveOnDrop(serial.clone());
        let emulator = emulator_path(&migsight_qemu::process::binary())
            .ok_or_else(|| anyhow!("{} is not on PATH", migsight_qemu::process::binary()))?;
        let xml = GuestDomain {
            name: &name,
            mem_mib: self.mem_mib,
            accel: self.cfg.accel.name(),
            kernel: &self.image.kernel,
            initrd: &self.image.initrd,
            cmdline: &self.workload.kernel_cmdline(),
            serial_log: &serial,
            emulator: &emulator.display().to_string(),
        }
        .xml();
        std::fs::write(&xml_path, xml)
            .with_context(|| format!("writing {}", xml_path.display()))?;
        let page = {
            let _guest = Destroy(&src, name.clone());
            src.run(&["create", &xml_path.display().to_string()])?;
            let facts = wait_running(&src, &name, Duration::from_secs(30))?;
            let pid = facts
                .find_pid()
                .ok_or_else(|| anyhow!("no QEMU process with -uuid {}", facts.uuid))?;
            let page = OpsPage::find(pid, Duration::from_secs(180)).with_context(|| {
                format!("waiting for the workload ({})", self.workload.describe())
            })?;
            super::sleep_unless(self.cfg.warmup, cancel);
            src.run(&["save", &name, &state.display().to_string()])
                .context("saving the warmed-up guest (virsh save)")?;
            page
        };
        for (i, &(algo, cpu_budget)) in algorithms.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let sample = self
                .one_libvirt(lv, &src, &dst, algo, cpu_budget, &state, page, cancel)
                .with_context(|| format!("{} migration through libvirt", algo.name()))?;
            emit(&sample, algo, i)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn one_libvirt(
        &self,
        lv: &LibvirtLab,
        src: &Virsh,
        dst: &Virsh,
        algo: Algorithm,
        cpu_budget: f64,
        state: &Path,
        page: OpsPage,
        cancel: &AtomicBool,
    ) -> Result<Sample> {
        let name = self.group_id.clone();
        // Restore the saved state into a fresh source QEMU.
        let _on_src = Destroy(src, name.clone());
        let _on_dst = Destroy(dst, name.clone());
        src.run(&["restore", &state.display().to_string(), "--running"])
            .context("restoring the saved guest (virsh restore)")?;
        let facts = wait_running(src, &name, Duration::from_secs(60))?;
        let pid = facts
            .find_pid()
            .ok_or_else(|| anyhow!("no QEMU process with -uuid {}", facts.uuid))?;
        let args = cmdline(pid)?;
        let exe = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
        let version = migsight_qemu::discovery::binary_version(&exe).map_err(|e| anyhow!(e))?;
        let support = LibvirtSupport::query(
            src,
            Some(HostSupport::from_version(version, &args)),
            Some(facts.accel()),
        )?;

        // Profile (pid-only, as the agent does for libvirt:NAME).
        let ops_a = page.read(pid)?;
        let cpu_a = CpuReading::now(pid);
        let pcfg = ProfileConfig {
            window: self.cfg.window,
            interval: self.cfg.interval,
            bandwidth_bps: self.bandwidth_bps,
            cpu_budget,
            census_share: f64::INFINITY,
            qemu_dirty_rate: false,
            ..ProfileConfig::default()
        };
        let report =
            profile(&VmTarget::new(pid, None), &pcfg, cancel).context("profiling the source")?;
        let ops_b = page.read(pid)?;
        let base_cpu = cpu_a
            .zip(CpuReading::now(pid))
            .and_then(|(a, b)| a.percent_until(&b));
        let ops_before = ops_rate(&ops_a, &ops_b);

        // Migrate.
        let mut mcfg = MigrationConfig::new(algo, self.bandwidth_bps);
        mcfg.cap = self.cfg.cap;
        mcfg.bandwidth_bps = applied_bandwidth_bps(self.bandwidth_bps);
        let flags = support
            .migrate_flags(&mcfg, None)
            .map_err(|why| anyhow!("refused before libvirt was called: {why}"))?;
        let migrate_uri = match &lv.migrate_host {
            Some(h) => Some(format!("tcp://{h}:{}", super::free_port()?)),
            None => None,
        };
        let req = Request {
            domain: name.clone(),
            dest_uri: lv.to.clone(),
            migrate_uri,
            flags,
            undefine_source: false,
        };
        let others_before = other_vms(&[pid]);
        let mut meter = Meter::start(pid, true);
        let ops_start = page.read(pid)?;
        let ran = match lvm::migrate(src, &req, &mcfg, Duration::from_millis(250), cancel, |_| {
            meter.sample()
        }) {
            Ok(r) => r,
            Err(lvm::LibvirtMigrateError::Interrupted) => bail!("interrupted"),
            Err(e) => return Err(e.into()),
        };
        let outcome = ran.outcome;
        let costs = meter.finish(outcome.wall, base_cpu);
        // The guest runs where the migration left it (on this host: the
        // same -uuid).
        let runs_on = if outcome.converged {
            facts.find_pid()
        } else {
            Some(pid)
        };
        // The destination, on this host, is not competition.
        let others = others_before.max(other_vms(&[pid, runs_on.unwrap_or(pid)]));
        let ops_during = runs_on
            .and_then(|p| page.read_settled(p, &ops_start).ok())
            .and_then(|end| ops_rate(&ops_start, &end));
        Ok(self.row(RowFacts {
            report: &report,
            mcfg: &mcfg,
            outcome: &outcome,
            costs,
            ops_before,
            ops_during,
            qemu_version: version.to_string(),
            via: "libvirt",
            others,
        }))
    }
}
