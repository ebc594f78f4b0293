//! Profiling a running QEMU VM: the CSAP features over a window.
//!
//! Memory features come from sampling guest RAM from the host (see
//! [`crate::sampler`]); CPU, network and host features from `/proc` and
//! `/sys`; instructions from perf on the vCPU threads; QEMU's own
//! `calc-dirty-rate` runs alongside as a cross-check when QMP is usable.

use crate::census::ZeroCensus;
use crate::error::AgentError;
use crate::guest_memory::{GuestMemory, PAGE};
use crate::host::{Network, Pmu};
use crate::procfs::{proc_stat, HostCpu};
use crate::sampler::Sampler;
use crate::vm::{check_qemu, ram_backends_from_args, ram_size_from_args, vm_name, VmTarget};
use migsight_proto::feature::MIB;
use migsight_proto::rng::Rng;
use migsight_proto::wire::{FeatureError, MissingFeature, ProfileReport};
use migsight_proto::{Feature, FeatureVector};
use migsight_qemu::discovery::{binary_version, HostSupport};
use migsight_qemu::qmp::Qmp;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Shares of the per-interval CPU budget: reading and hashing the page
/// sample, and (by default) the zero-page census. The rest covers /proc polling, the
/// final entropy pass and start-up. The census's share is bounded so the
/// agent stays within `cpu_budget` on hosts where reading memory is slow
/// (0.2 µs a page on the first development host, 0.7 µs on the second,
/// where an unbounded census took the agent from ~1.7 to 2.5–2.9 % of a
/// core per GiB); it then reads a fraction of the pages.
const SAMPLE_SHARE: f64 = 0.65;
/// Default of [`ProfileConfig::census_share`].
pub const CENSUS_SHARE: f64 = 0.2;

/// How to profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileConfig {
    /// Length of the profiling window (CSAP: 20 s).
    pub window: Duration,
    /// Sampling interval (CSAP: 1 s); the dirty rate counts distinct pages per interval.
    pub interval: Duration,
    /// Planned migration bandwidth, bytes/s; becomes `VM_ptr` (MiB/s).
    pub bandwidth_bps: f64,
    /// CPU the memory sampling may use, as a fraction of one core **per GiB
    /// of guest RAM** (0.02 = 2 % of a core per GiB). The sample size is
    /// chosen from it (at least [`ProfileConfig::min_sample_pages`]).
    pub cpu_budget: f64,
    /// Run QEMU's `calc-dirty-rate` as a cross-check (needs QMP).
    pub qemu_dirty_rate: bool,
    /// Smallest sample, pages, whatever the budget.
    pub min_sample_pages: usize,
    /// Largest sample, pages (the precision of a proportion depends on the
    /// sample size, not on the fraction of RAM sampled; this bounds the
    /// agent's memory and CPU on very large guests).
    pub max_sample_pages: usize,
    /// Largest number of previous page copies kept (4 KiB each) for `VM_mwpp`.
    pub max_page_copies: usize,
    /// Timeout of each QMP exchange.
    pub qmp_timeout: Duration,
    /// Count the non-zero pages with a census (every page read once over
    /// the window, [`crate::census`]; a fraction of them when that would
    /// not fit the census's share of the budget) instead of estimating
    /// `VM_size` from the sample alone; the estimate with the smaller
    /// standard error is reported.
    pub zero_census: bool,
    /// Share of the CPU budget the census may use, on top of the sample's
    /// 65 % (default [`CENSUS_SHARE`]; `f64::INFINITY`: every page whatever
    /// it costs, as the lab does).
    pub census_share: f64,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            window: Duration::from_secs(20),
            interval: Duration::from_secs(1),
            // QEMU's default max-bandwidth (128 MiB/s).
            bandwidth_bps: 128.0 * MIB,
            cpu_budget: 0.02,
            qemu_dirty_rate: true,
            min_sample_pages: 1024,
            max_sample_pages: 262_144,
            max_page_copies: 8192,
            qmp_timeout: Duration::from_secs(3),
            zero_census: true,
            census_share: CENSUS_SHARE,
        }
    }
}

/// Whether `pid` is still the process that started at `start_ticks`.
fn alive(pid: u32, start_ticks: u64) -> bool {
    match proc_stat(pid) {
        Ok(s) => s.start_ticks == start_ticks && s.state != 'Z' && s.state != 'X',
        Err(_) => false,
    }
}

/// QEMU's `calc-dirty-rate`, run back to back for one interval at a time.
struct QemuDirtyRate {
    mode: &'static str,
    calc_secs: u64,
    in_flight: bool,
    values: Vec<f64>,
    failure: Option<String>,
}

impl QemuDirtyRate {
    fn start(&mut self, q: &mut Qmp) {
        if self.failure.is_some() || self.in_flight {
            return;
        }
        let args = json!({"calc-time": self.calc_secs, "mode": self.mode});
        match q.execute("calc-dirty-rate", Some(args)) {
            Ok(_) => self.in_flight = true,
            Err(e) => self.failure = Some(format!("calc-dirty-rate failed: {e}")),
        }
    }

    fn poll(&mut self, q: &mut Qmp) {
        if !self.in_flight {
            return;
        }
        match q.execute("query-dirty-rate", None) {
            Ok(r) => {
                if r.get("status").and_then(Value::as_str) == Some("measured") {
                    self.in_flight = false;
                    if let Some(v) = r.get("dirty-rate").and_then(Value::as_f64) {
                        self.values.push(v);
                    }
                }
            }
            Err(e) => {
                self.in_flight = false;
                self.failure = Some(format!("query-dirty-rate failed: {e}"));
            }
        }
    }

    fn mean(&self) -> Option<f64> {
        (!self.values.is_empty())
            .then(|| self.values.iter().sum::<f64>() / self.values.len() as f64)
    }
}

/// What QMP told us before the window.
struct QmpInfo {
    session: Qmp,
    ram_size: Option<u64>,
    /// Sizes of the memory backends, bytes (empty if QMP did not say).
    ram_backends: Vec<u64>,
    kvm: bool,
    /// Version, capabilities and the algorithms this QEMU can run.
    support: HostSupport,
}

fn qmp_preflight(
    target: &VmTarget,
    cfg: &ProfileConfig,
    args: &[String],
) -> Result<Result<QmpInfo, String>, AgentError> {
    let Some(path) = &target.qmp else {
        return Ok(Err("no QMP socket (pid-only mode)".into()));
    };
    let mut q = match Qmp::connect(path, cfg.qmp_timeout) {
        Ok(q) => q,
        Err(e) => {
            let why = match &e {
                migsight_qemu::qmp::QmpError::Io { source, .. }
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    format!(
                        "QMP socket {} did not greet us (another client holds it?)",
                        path.display()
                    )
                }
                _ => format!("QMP unusable: {e}"),
            };
            tracing::warn!(pid = target.pid, reason = %why, "profiling in pid-only mode");
            return Ok(Err(why));
        }
    };
    let (status, running) = q.status()?;
    let mig = q.query_migrate()?;
    let mig_status = mig
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("none")
        .to_string();
    let migrating = matches!(
        mig_status.as_str(),
        "setup"
            | "active"
            | "pre-switchover"
            | "device"
            | "postcopy-active"
            | "postcopy-paused"
            | "postcopy-recover"
            | "wait-unplug"
            | "cancelling"
    );
    if migrating || status == "inmigrate" || status == "finish-migrate" {
        return Err(AgentError::VmMigrating {
            pid: target.pid,
            status: if migrating { mig_status } else { status },
        });
    }
    if !running {
        return Err(AgentError::VmPaused {
            pid: target.pid,
            status,
        });
    }
    let ram_size = q
        .execute("query-memory-size-summary", None)
        .ok()
        .and_then(|r| r.get("base-memory").and_then(Value::as_u64));
    // One entry per memory backend (NUMA nodes, DIMMs); QEMU ≥ 2.1.
    let ram_backends: Vec<u64> = q
        .execute("query-memdev", None)
        .ok()
        .and_then(|r| {
            r.as_array()
                .map(|a| a.iter().filter_map(|m| m.get("size")?.as_u64()).collect())
        })
        .unwrap_or_default();
    let support = HostSupport::query(&mut q, args)?;
    let kvm = support.accel.as_deref() == Some("kvm");
    Ok(Ok(QmpInfo {
        session: q,
        ram_size,
        ram_backends,
        kvm,
        support,
    }))
}

/// Seconds of CPU per page to read, hash and compare, measured on `pages` random pages.
fn calibrate(mem: &GuestMemory, rng: &mut Rng) -> Result<f64, AgentError> {
    let n = 512usize.min(mem.pages() as usize).max(1);
    let pages = crate::sampler::sample_without_replacement(mem.pages(), n, rng);
    let mut buf = vec![0u8; n * PAGE];
    mem.read_pages(&pages, &mut buf)?; // warm
    let t0 = crate::procfs::thread_cpu_seconds();
    mem.read_pages(&pages, &mut buf)?;
    let mut acc = 0u64;
    for c in buf.chunks_exact(PAGE) {
        acc ^= crate::sampler::page_hash(c).0;
    }
    std::hint::black_box(acc);
    let dt = crate::procfs::thread_cpu_seconds() - t0;
    // Comparison and copies of dirty pages add a little; keep a margin.
    Ok((dt / n as f64 * 1.15).max(2e-7))
}

fn interruptible_sleep_until(
    deadline: Instant,
    cancel: &AtomicBool,
    pid: u32,
    start_ticks: u64,
) -> Result<(), bool /* true = cancelled, false = exited */> {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(true);
        }
        if !alive(pid, start_ticks) {
            return Err(false);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(200)));
    }
}

/// Profiles the VM for `cfg.window`, blocking. Returns early with
/// [`AgentError::Cancelled`] when `cancel` is set and with
/// [`AgentError::VmExited`] when QEMU exits.
pub fn profile(
    target: &VmTarget,
    cfg: &ProfileConfig,
    cancel: &AtomicBool,
) -> Result<ProfileReport, AgentError> {
    if cfg.interval < Duration::from_millis(100) || cfg.window < cfg.interval {
        return Err(AgentError::BadRequest(format!(
            "window {:?} and interval {:?}: need interval >= 100 ms and window >= interval",
            cfg.window, cfg.interval
        )));
    }
    if !(cfg.cpu_budget.is_finite() && cfg.cpu_budget > 0.0) {
        return Err(AgentError::BadRequest(format!(
            "cpu_budget {} must be positive",
            cfg.cpu_budget
        )));
    }
    let planned = (cfg.window.as_secs_f64() / cfg.interval.as_secs_f64())
        .round()
        .max(1.0) as u32;
    let pid = target.pid;
    let args = check_qemu(pid)?;
    let start_ticks = proc_stat(pid)?.start_ticks;
    let name = target.name.clone().or_else(|| vm_name(&args));
    let exited = |intervals: u32| AgentError::VmExited {
        pid,
        intervals,
        planned,
    };

    let mut missing: Vec<MissingFeature> = Vec::new();
    let mut miss =
        |feature: Feature, reason: String| missing.push(MissingFeature { feature, reason });

    // QMP: state checks, RAM size, accelerator.
    let qmp = match qmp_preflight(target, cfg, &args) {
        Ok(q) => q,
        Err(e) if !alive(pid, start_ticks) => {
            tracing::debug!(error = %e, "QMP failed because QEMU exited");
            return Err(exited(0));
        }
        Err(e) => return Err(e),
    };
    let (mut session, ram_size, ram_backends, kvm, qmp_reason, support) = match qmp {
        Ok(i) => (
            Some(i.session),
            i.ram_size,
            i.ram_backends,
            i.kvm,
            None,
            Some(i.support),
        ),
        Err(why) => {
            // Pid-only: the binary's version and the command line stand in
            // for what QMP would have said (the report says so: source "binary").
            let exe = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
            let support = match binary_version(&exe) {
                Ok(v) => Some(HostSupport::from_version(v, &args)),
                Err(e) => {
                    tracing::warn!(pid, error = %e, "QEMU version unknown in pid-only mode");
                    None
                }
            };
            (None, None, Vec::new(), false, Some(why), support)
        }
    };
    if session.is_none() {
        // Pid-only: a process stopped by a signal is certainly not running.
        if proc_stat(pid)?.state == 'T' {
            return Err(AgentError::VmPaused {
                pid,
                status: "stopped (SIGSTOP)".into(),
            });
        }
    }
    let ram_size = ram_size.unwrap_or_else(|| ram_size_from_args(&args));
    let ram_backends = if ram_backends.is_empty() {
        ram_backends_from_args(&args)
    } else {
        ram_backends
    };
    let mem =
        GuestMemory::open_with_layout(pid, Some(ram_size), &ram_backends).map_err(|e| match e {
            AgentError::VmNotFound(_) if !alive(pid, start_ticks) => exited(0),
            e => e,
        })?;
    let total_pages = mem.pages();
    let gib = mem.size_bytes() as f64 / (1u64 << 30) as f64;
    let interval_s = cfg.interval.as_secs_f64();
    // CPU seconds per interval: the whole budget, and the part for reading
    // and hashing the sample (the rest covers /proc polling, the final
    // entropy pass and start-up).
    let budget_s = cfg.cpu_budget * gib.max(1.0 / 64.0) * interval_s;
    let sample_budget_s = budget_s * SAMPLE_SHARE;

    let mut rng = Rng::from_entropy();
    let per_page = calibrate(&mem, &mut rng).map_err(|e| match e {
        AgentError::VmNotFound(_) if !alive(pid, start_ticks) => exited(0),
        e => e,
    })?;
    let sample = ((sample_budget_s / per_page) as usize)
        .max(cfg.min_sample_pages)
        .min(cfg.max_sample_pages.max(cfg.min_sample_pages))
        .min(total_pages as usize);
    let mut sampler = Sampler::new(total_pages, sample, cfg.max_page_copies, &mut rng);
    // The census reads every page once over the window when that fits its
    // share of the budget, else a pseudo-random fraction of them.
    let census_per_page = crate::census::calibrate(&mem).map_err(|e| match e {
        AgentError::VmNotFound(_) if !alive(pid, start_ticks) => exited(0),
        e => e,
    })?;
    let full_census_s = census_per_page * total_pages.div_ceil(u64::from(planned.max(1))) as f64;
    let census_fraction = (budget_s * cfg.census_share / full_census_s.max(1e-12)).min(1.0);
    let mut census = ZeroCensus::with_fraction(total_pages, planned, census_fraction);
    let mut census_on = cfg.zero_census;
    // Entropy (~3 us a page) on a uniform third of the sample, so the last
    // interval costs about twice the others, not five times.
    sampler.set_entropy_cap((sample / 3).max(2048));
    tracing::info!(
        pid,
        vm = name.as_deref().unwrap_or(""),
        ram_mib = mem.size_bytes() >> 20,
        sample_pages = sample,
        per_page_us = per_page * 1e6,
        budget_ms = budget_s * 1e3,
        census_ms = full_census_s * 1e3,
        census_fraction = if census_on { census_fraction } else { 0.0 },
        intervals = planned,
        qmp = session.is_some(),
        "profiling"
    );

    // Other monitors.
    let mut pmu = Pmu::start(pid);
    let network = Network::detect(pid, &args);
    let mut qdr = QemuDirtyRate {
        mode: if kvm { "dirty-bitmap" } else { "page-sampling" },
        calc_secs: (interval_s.round() as u64).max(1),
        in_flight: false,
        values: Vec::new(),
        failure: None,
    };
    if !cfg.qemu_dirty_rate {
        qdr.failure = Some("disabled by configuration".into());
    }
    let cpu0 = proc_stat(pid)?.cpu_seconds;
    let host0 = HostCpu::read()?;
    let mut mem_avail_min = crate::procfs::host_mem_avail_mib()?;
    let pmu0 = pmu.as_mut().ok().map(|p| p.read());

    let t0 = Instant::now();
    let st0 = sampler.snapshot(&mem, false).map_err(|e| match e {
        AgentError::VmNotFound(_) => exited(0),
        e => e,
    })?;
    // The baseline read measures the real cost of this sample: fit it to the
    // budget before any interval is counted.
    if st0.cpu_seconds > sample_budget_s * 1.1 && sampler.len() > cfg.min_sample_pages {
        let keep = ((sampler.len() as f64 * sample_budget_s / st0.cpu_seconds) as usize)
            .max(cfg.min_sample_pages);
        tracing::debug!(
            pid,
            from = sampler.len(),
            to = keep,
            "baseline read over budget; shrinking the sample"
        );
        sampler.truncate(keep);
    }
    if let Some(q) = session.as_mut() {
        qdr.start(q);
    }
    let mut over_budget = 0u32;
    for i in 1..=planned {
        let deadline = t0 + cfg.interval * i;
        if let Err(cancelled) = interruptible_sleep_until(deadline, cancel, pid, start_ticks) {
            return Err(if cancelled {
                AgentError::Cancelled { intervals: i - 1 }
            } else {
                exited(i - 1)
            });
        }
        let last = i == planned;
        let st = match sampler.snapshot(&mem, last) {
            Ok(st) => st,
            Err(_) if !alive(pid, start_ticks) => return Err(exited(i - 1)),
            Err(e) => return Err(e),
        };
        // Stay inside the budget: shrink the sample (its rank prefix stays
        // uniform). The last read also computes entropies: not counted.
        if !last && st.cpu_seconds > sample_budget_s * 1.15 && sampler.len() > cfg.min_sample_pages
        {
            over_budget += 1;
            // One slow interval may be a hiccup (the host was busy); two in a row are not.
            if over_budget >= 2 {
                let keep = ((sampler.len() as f64 * sample_budget_s / st.cpu_seconds) as usize)
                    .max(cfg.min_sample_pages);
                tracing::debug!(
                    pid,
                    from = sampler.len(),
                    to = keep,
                    "sample over budget; shrinking"
                );
                sampler.truncate(keep);
                over_budget = 0;
            }
        } else {
            over_budget = 0;
        }
        if census_on {
            let step = if last {
                census.finish(&mem)
            } else {
                census.step(&mem)
            };
            if let Err(e) = step {
                if !alive(pid, start_ticks) {
                    return Err(exited(i - 1));
                }
                tracing::warn!(pid, error = %e, "zero-page census failed; VM_size from the sample");
                census_on = false;
            }
        }
        if let Some(q) = session.as_mut() {
            qdr.poll(q);
            if !last && (planned - i) as u64 >= qdr.calc_secs {
                qdr.start(q);
            }
        }
        if let Ok(m) = crate::procfs::host_mem_avail_mib() {
            mem_avail_min = mem_avail_min.min(m);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = match proc_stat(pid) {
        Ok(s) if s.start_ticks == start_ticks => s.cpu_seconds,
        _ => return Err(exited(planned)),
    };
    let host1 = HostCpu::read()?;
    if let Some(q) = session.as_mut() {
        // The window is only meaningful if the VM ran through it.
        if let Ok((status, false)) = q.status() {
            return Err(AgentError::VmPaused {
                pid,
                status: format!("{status} (paused during profiling)"),
            });
        }
    }

    // Features.
    let e = sampler.estimates();
    let mut fv = FeatureVector::new();
    let mut errors = Vec::new();
    let pages_to_mib = PAGE as f64 / MIB;
    let mut put = |fv: &mut FeatureVector, f: Feature, v: Option<f64>, se: Option<f64>| {
        fv.set(f, v);
        if let (Some(_), Some(se)) = (v, se) {
            errors.push(FeatureError {
                feature: f,
                std_error: se,
            });
        }
    };
    // VM_size: the census's count (exact when it read every page), or the
    // sample's estimate when that has the smaller standard error.
    let (nonzero, nonzero_se) = match census.nonzero_pages().filter(|_| census_on) {
        Some((n, se)) if se <= e.nonzero_pages_se => (n, se),
        _ => (e.nonzero_pages, e.nonzero_pages_se),
    };
    put(
        &mut fv,
        Feature::VmSize,
        Some(nonzero * pages_to_mib),
        Some(nonzero_se * pages_to_mib),
    );
    put(
        &mut fv,
        Feature::VmPdr,
        e.dirty_pages_per_s.map(|r| r * pages_to_mib),
        Some(e.dirty_pages_per_s_se * pages_to_mib),
    );
    put(
        &mut fv,
        Feature::VmWss,
        e.wss_pages.map(|w| w * pages_to_mib),
        Some(e.wss_pages_se * pages_to_mib),
    );
    put(&mut fv, Feature::VmMwpp, e.mwpp, Some(e.mwpp_se));
    put(&mut fv, Feature::VmWse, e.wse, Some(e.wse_se));
    put(&mut fv, Feature::VmNwse, e.nwse, Some(e.nwse_se));
    if e.mwpp.is_none() {
        if e.dirty_pages_per_s == Some(0.0) {
            // No page changed: nothing was modified in any page.
            fv.set(Feature::VmMwpp, Some(0.0));
        } else {
            miss(
                Feature::VmMwpp,
                "no dirtied page among the pages whose copies were kept".into(),
            );
        }
    }
    if e.wse.is_none() {
        if e.wss_pages == Some(0.0) {
            fv.set(Feature::VmWse, Some(0.0));
        } else {
            miss(
                Feature::VmWse,
                "no non-zero working-set page in the sample".into(),
            );
        }
    }
    if e.nwse.is_none() {
        fv.set(Feature::VmNwse, Some(0.0));
    }
    match (&mut pmu, pmu0) {
        (Ok(p), Some(Ok(before))) => match p.read() {
            Ok(after) => fv.set(
                Feature::VmPmuInstr,
                Some(((after - before) / elapsed).max(0.0)),
            ),
            Err(why) => miss(Feature::VmPmuInstr, why),
        },
        (Ok(_), Some(Err(why))) => miss(Feature::VmPmuInstr, why),
        (Err(why), _) => miss(Feature::VmPmuInstr, why.clone()),
        (Ok(_), None) => miss(Feature::VmPmuInstr, "counter not read".into()),
    }
    if cfg.bandwidth_bps.is_finite() && cfg.bandwidth_bps > 0.0 {
        fv.set(Feature::VmPtr, Some(cfg.bandwidth_bps / MIB));
    } else {
        miss(
            Feature::VmPtr,
            format!("no migration bandwidth given ({})", cfg.bandwidth_bps),
        );
    }
    fv.set(
        Feature::VmCpuUtil,
        Some(((cpu1 - cpu0) / elapsed * 100.0).max(0.0)),
    );
    match &network {
        Network::None => fv.set(Feature::VmNetUtil, Some(0.0)),
        Network::Taps(m) => {
            fv.set(Feature::VmNetUtil, Some(m.utilisation(elapsed)));
            tracing::debug!(ifaces = ?m.ifaces, speed = %m.speed_source, "network utilisation");
        }
        Network::Unknowable(why) => miss(Feature::VmNetUtil, why.clone()),
    }
    fv.set(Feature::SrcCpuAvail, Some(host1.idle_percent_since(&host0)));
    fv.set(Feature::SrcMemAvail, Some(mem_avail_min));
    miss(Feature::DstCpuAvail, "no destination agent".into());
    miss(Feature::DstMemAvail, "no destination agent".into());

    let qemu_dirty_rate = match (&qmp_reason, qdr.mean()) {
        (None, Some(v)) => Some(v),
        _ => {
            let why = qmp_reason
                .clone()
                .or(qdr.failure.clone())
                .unwrap_or_else(|| "no calc-dirty-rate measurement completed in the window".into());
            tracing::debug!(pid, reason = %why, "no QEMU dirty-rate cross-check");
            None
        }
    };
    if let (Some(q), Some(ours)) = (qemu_dirty_rate, fv.get(Feature::VmPdr)) {
        tracing::debug!(pid, qemu = q, ours, "dirty rate cross-check (MiB/s)");
    }
    if let Err(bad) = fv.validate() {
        return Err(AgentError::Other(format!("internal error: {bad}")));
    }
    let _ = &qmp_reason;
    Ok(ProfileReport {
        pid,
        vm_name: name,
        window_ms: (elapsed * 1000.0).round() as u64,
        intervals: e.intervals as u32,
        features: fv,
        errors,
        missing,
        qemu_dirty_rate,
        dirtied: e
            .dirtied
            .iter()
            .map(|w| migsight_proto::wire::DirtiedWindow {
                intervals: w.intervals as u32,
                seconds: w.seconds,
                mib: w.pages * pages_to_mib,
            })
            .collect(),
        // The final sample (every estimate uses it).
        sampled_pages: e.sample_size as u64,
        cpu_budget: cfg.cpu_budget,
        qemu: support.map(|s| s.info()),
        prediction: None,
        recommendation: None,
    })
}
