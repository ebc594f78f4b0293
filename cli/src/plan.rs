//! `migsight plan`: profile a running VM through the agent, ask the predictor
//! (via the agent) for a recommendation under an SLA, and print the table.
//!
//! The flags shared with `migsight migrate` (bandwidth, SLA, objective,
//! agent socket, profiling window) live here in [`PlanOptions`].

use anyhow::{anyhow, Context, Result};
use migsight_proto::units::{
    millis, parse_bandwidth, parse_duration, parse_size, Bandwidth, DataSize, HumanBytes, HumanMs,
};
use migsight_proto::wire::{
    AfterProfile, Client, ClientError, DirtiedWindow, ErrorKind, Objective, ProfileReport,
    ProfileRequest, QemuInfo, Recommendation, RequestBody, Response, Sla, VmRef,
    DEFAULT_DOWNTIME_LIMIT_MS,
};
use migsight_proto::Feature;
use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default agent socket (the systemd unit's `RuntimeDirectory=migsight`).
pub const DEFAULT_AGENT_SOCKET: &str = "/run/migsight/agent.sock";

/// Version of the `plan --json` object; bumped on any incompatible change.
pub const PLAN_JSON_VERSION: u32 = 1;

fn ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number (e.g. 0.8)"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!(
            "{v} is not a ratio between 0 and 1 (1 = performance unchanged)"
        ));
    }
    Ok(v)
}
fn objective(s: &str) -> Result<Objective, String> {
    s.parse()
}

/// Limits, objective and migration parameters (shared by `plan` and `migrate`).
#[derive(clap::Args, Debug, Clone)]
pub struct SlaArgs {
    /// Longest acceptable downtime (VM paused), e.g. 300ms. Also becomes QEMU's
    /// downtime-limit unless --downtime-limit is given.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_downtime: Option<Duration>,
    /// Longest acceptable total migration time, e.g. 60s, 2m.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_time: Option<Duration>,
    /// Most data acceptable on the wire, e.g. 10GiB, 800MB.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_data: Option<DataSize>,
    /// Lowest acceptable VM performance during migration, as a ratio of before (0.8 = 80 %).
    #[arg(long, value_parser = ratio, value_name = "RATIO")]
    pub min_performance: Option<f64>,
    /// What to optimise among algorithms that meet the SLA: time, downtime, data, performance or cpu.
    #[arg(long, value_parser = objective, default_value = "time")]
    pub objective: Objective,
    /// QEMU downtime-limit to plan and migrate with (default: --max-downtime, else 300ms).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub downtime_limit: Option<Duration>,
}

impl SlaArgs {
    pub fn sla(&self) -> Sla {
        Sla {
            max_downtime_ms: self.max_downtime.map(millis),
            max_time_ms: self.max_time.map(millis),
            max_data_bytes: self.max_data.map(|d| d.bytes),
            min_performance: self.min_performance,
        }
    }

    /// QEMU's `downtime-limit` in ms.
    pub fn downtime_limit_ms(&self) -> f64 {
        self.downtime_limit
            .or(self.max_downtime)
            .map(millis)
            .unwrap_or(DEFAULT_DOWNTIME_LIMIT_MS)
    }
}

/// How to reach the agent and how long to profile.
#[derive(clap::Args, Debug, Clone)]
pub struct ProfileArgs {
    /// The agent's socket.
    #[arg(long, env = "MIGSIGHT_AGENT", default_value = DEFAULT_AGENT_SOCKET, value_name = "PATH")]
    pub agent: PathBuf,
    /// Profiling window: how long the agent watches the VM before predicting.
    #[arg(long, value_parser = parse_duration, default_value = "20s", value_name = "DURATION")]
    pub window: Duration,
    /// Sampling interval within the window.
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION")]
    pub interval: Duration,
}

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The VM: qmp:PATH, pid:N, name:NAME, libvirt:NAME, proxmox:ID, or a bare
    /// PID, QMP socket path or -name.
    #[arg(value_parser = vm_ref, value_name = "VM")]
    pub vm: VmRef,
    /// Bandwidth the migration may use (QEMU max-bandwidth), e.g. 1Gbit, 125MB/s.
    #[arg(long, value_parser = parse_bandwidth, value_name = "RATE")]
    pub bandwidth: Bandwidth,
    #[command(flatten)]
    pub sla: SlaArgs,
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Print one JSON object (see docs/json.md) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// libvirt:NAME: the libvirt connection to read the domain's facts from
    /// (default $LIBVIRT_DEFAULT_URI, else qemu:///system; the agent asks its
    /// own --libvirt-uri which algorithms libvirt can run).
    #[arg(long, value_name = "URI")]
    pub connect: Option<String>,
}

pub fn vm_ref(s: &str) -> Result<VmRef, String> {
    s.parse()
}

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

/// A stderr progress line while the agent profiles, stopped on drop.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    tty: bool,
}

impl Ticker {
    pub fn start(what: String, total: Duration) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let tty = std::io::stderr().is_terminal();
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut last_print = None::<Instant>;
            while !s.load(Ordering::Relaxed) {
                let el = t0.elapsed();
                let every = if tty {
                    Duration::from_millis(250)
                } else {
                    Duration::from_secs(5)
                };
                if last_print.map(|l| l.elapsed() >= every).unwrap_or(true) {
                    last_print = Some(Instant::now());
                    let pct = (el.as_secs_f64() / total.as_secs_f64().max(1e-3) * 100.0).min(100.0);
                    let msg = if el <= total {
                        format!(
                            "{what}: {:.0}s / {:.0}s ({pct:.0} %)",
                            el.as_secs_f64(),
                            total.as_secs_f64()
                        )
                    } else {
                        format!(
                            "{what}: {:.0}s / {:.0}s, predicting…",
                            el.as_secs_f64(),
                            total.as_secs_f64()
                        )
                    };
                    let mut e = std::io::stderr().lock();
                    if tty {
                        let _ = write!(e, "\r\x1b[2K{msg}");
                    } else {
                        let _ = writeln!(e, "{msg}");
                    }
                    let _ = e.flush();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Ticker {
            stop,
            handle: Some(handle),
            tty,
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}

/// A one-line hint for a failed agent call.
fn explain(e: ClientError, agent: &std::path::Path) -> anyhow::Error {
    match e {
        ClientError::Connect { path, source } => anyhow!(
            "cannot reach the migsight agent at {path}: {source}\n  is it running? (systemctl status migsight-agent; or start it: migsight agent --socket {})",
            agent.display()
        ),
        ClientError::Server(r) => {
            let hint = match r.kind {
                ErrorKind::PredictorUnavailable => {
                    "\n  the agent could not reach the predictor: systemctl status migsight-predictor (or migsight predictor --model FILE)"
                }
                ErrorKind::NoModel => "\n  the predictor has no model: migsight train --data data/lab.csv --out /var/lib/migsight/model.msm",
                ErrorKind::PermissionDenied => "\n  the agent needs root or CAP_SYS_PTRACE to read the VM's memory",
                ErrorKind::VmNotFound => "\n  check the VM reference (qmp:PATH, pid:N, name:NAME, libvirt:NAME, proxmox:ID)",
                ErrorKind::VmMigrating => "\n  wait for the running migration to end (query-migrate) before planning",
                ErrorKind::VmPaused => "\n  resume the VM (cont) before profiling: a paused VM dirties no memory",
                _ => "",
            };
            anyhow!("the agent refused: {:?}: {}{hint}", r.kind, r.message)
        }
        other => anyhow!("talking to the agent at {}: {other}", agent.display()),
    }
}

/// Sends one `Profile` request to the agent (with a progress line) and waits.
pub fn profile(
    vm: &VmRef,
    p: &ProfileArgs,
    bandwidth_bps: f64,
    downtime_limit_ms: f64,
    then: AfterProfile,
) -> Result<ProfileReport> {
    let window = p.window;
    if p.interval.is_zero() || p.window < p.interval {
        anyhow::bail!(
            "--window must be at least one --interval (got window {}, interval {})",
            HumanMs(millis(p.window)),
            HumanMs(millis(p.interval))
        );
    }
    let req = ProfileRequest {
        vm: vm.clone(),
        window_ms: millis(p.window).round() as u64,
        interval_ms: millis(p.interval).round() as u64,
        bandwidth_bps,
        downtime_limit_ms,
        then,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let agent = p.agent.clone();
    // Generous: the window, plus prediction, plus QMP and agent start-up.
    let deadline = window + Duration::from_secs(120);
    let resp = rt.block_on(async {
        let mut c = Client::connect(&agent)
            .await
            .map_err(|e| explain(e, &agent))?;
        let _ticker = Ticker::start(format!("profiling {vm}"), window);
        match tokio::time::timeout(deadline, c.call(RequestBody::Profile(req))).await {
            Err(_) => Err(anyhow!("the agent did not answer within {:?}", deadline)),
            Ok(r) => r.map_err(|e| explain(e, &agent)),
        }
    })?;
    match resp {
        Response::Profile(r) => Ok(r),
        other => Err(anyhow!(
            "the agent answered a Profile request with {other:?}"
        )),
    }
}

/// Profiles `vm` and gets a recommendation: the whole of `plan` but printing.
pub fn plan(
    vm: &VmRef,
    p: &ProfileArgs,
    bandwidth_bps: f64,
    sla: &SlaArgs,
) -> Result<(ProfileReport, PlanOutput)> {
    let s = sla.sla();
    s.validate().map_err(|e| anyhow!(e))?;
    let dl = sla.downtime_limit_ms();
    let report = profile(
        vm,
        p,
        bandwidth_bps,
        dl,
        AfterProfile::Recommend {
            sla: s,
            objective: sla.objective,
        },
    )?;
    let out = PlanOutput::new(vm, bandwidth_bps, dl, report.clone())?;
    Ok((report, out))
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

pub fn run(a: PlanArgs) -> Result<()> {
    let (report, mut out) = plan(&a.vm, &a.profile, a.bandwidth.bytes_per_s, &a.sla)?;
    if let VmRef::Libvirt(name) = &a.vm {
        let uri = a
            .connect
            .clone()
            .unwrap_or_else(migsight_libvirt::default_uri);
        match LibvirtDomain::query(&uri, name) {
            Ok(d) => out.libvirt = Some(d),
            Err(e) => eprintln!(
                "migsight: warning: could not read the domain from libvirt at {uri}: {e:#}"
            ),
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render_plan(&report, &out));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        p: PlanArgsWrap,
    }
    #[derive(clap::Args)]
    struct PlanArgsWrap {
        #[command(flatten)]
        inner: SlaArgs,
    }

    #[test]
    fn sla_flags_parse_with_units() {
        let t = T::try_parse_from([
            "x",
            "--max-downtime",
            "300ms",
            "--max-time",
            "1m",
            "--max-data",
            "10GiB",
            "--min-performance",
            "0.8",
            "--objective",
            "downtime",
        ])
        .unwrap();
        let s = t.p.inner.sla();
        assert_eq!(s.max_downtime_ms, Some(300.0));
        assert_eq!(s.max_time_ms, Some(60_000.0));
        assert_eq!(s.max_data_bytes, Some(10.0 * 1073741824.0));
        assert_eq!(s.min_performance, Some(0.8));
        assert_eq!(t.p.inner.objective, Objective::Downtime);
        assert_eq!(t.p.inner.downtime_limit_ms(), 300.0);
        let t = T::try_parse_from(["x"]).unwrap();
        assert_eq!(t.p.inner.sla(), Sla::default());
        assert_eq!(t.p.inner.downtime_limit_ms(), DEFAULT_DOWNTIME_LIMIT_MS);
        assert!(
            T::try_parse_from(["x", "--max-downtime", "300"]).is_err(),
            "unit required"
        );
        assert!(T::try_parse_from(["x", "--min-performance", "80"]).is_err());
        assert!(T::try_parse_from(["x", "--objective", "speed"]).is_err());
    }

    #[test]
    fn plan_args_parse_vm_refs_and_bandwidth() {
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            a: PlanArgs,
        }
        let p = P::try_parse_from([
            "x",
            "qmp:/run/vm.qmp",
            "--bandwidth",
            "1Gbit",
            "--window",
            "3s",
        ])
        .unwrap();
        assert_eq!(p.a.vm, VmRef::QmpSocket("/run/vm.qmp".into()));
        assert_eq!(p.a.bandwidth.bytes_per_s, 125e6);
        assert_eq!(p.a.profile.window, Duration::from_secs(3));
        let p = P::try_parse_from(["x", "1234", "--bandwidth", "100MiB/s"]).unwrap();
        assert_eq!(p.a.vm, VmRef::Pid(1234));
        assert!(
            P::try_parse_from(["x", "web1"]).is_err(),
            "bandwidth is required"
        );
        assert!(P::try_parse_from(["x", "pid:x", "--bandwidth", "1Gbit"]).is_err());
    }

    #[test]
    fn feature_values_are_formatted_with_units() {
        assert_eq!(fmt_feature(Feature::VmSize, 512.0), "512.0 MiB");
        assert_eq!(fmt_feature(Feature::VmPdr, 7.81), "7.8 MiB/s");
        assert_eq!(fmt_feature(Feature::VmWse, 0.5), "0.50");
    }

    #[test]
    fn the_features_block_shows_the_dirtied_curve() {
        let mut report = ProfileReport {
            pid: 1,
            vm_name: None,
            window_ms: 20_000,
            intervals: 20,
            features: migsight_proto::FeatureVector::new().with(Feature::VmPdr, 7.81),
            errors: vec![],
            missing: vec![],
            qemu_dirty_rate: None,
            dirtied: vec![
                DirtiedWindow {
                    intervals: 1,
                    seconds: 1.0,
                    mib: 7.81,
                },
                DirtiedWindow {
                    intervals: 2,
                    seconds: 2.01,
                    mib: 12.14,
                },
            ],
            sampled_pages: 4096,
            cpu_budget: 0.02,
            qemu: None,
            prediction: None,
            recommendation: None,
        };
        let text = render_features(&report);
        assert!(
            text.contains("dirtied at least once within: 1 s 7.8 MiB, 2 s 12.1 MiB"),
            "{text}"
        );
        report.dirtied.clear();
        assert!(!render_features(&report).contains("dirtied"));
    }
}
