//! `migsight plan`: profile a running VM through the agent, ask the predictor
//! (via the agent) for a recommendation under an SLA, and print the table.
//!
//! The flags shared with `migsight migrate` (bandwidth, SLA, objective,
//! agent socket, profiling window) live here in [`SlaArgs`] and [`ProfileArgs`].
//!
//! The parts: [`output`] is the plan's data and its text rendering,
//! [`ticker`] the progress line while the agent profiles.

mod output;
mod ticker;

pub use output::{render_features, render_plan, LibvirtDomain, PlanOutput};
pub use ticker::Ticker;

use anyhow::{anyhow, Context, Result};
use migsight_proto::units::{
    millis, parse_bandwidth, parse_duration, parse_size, Bandwidth, DataSize, HumanMs,
};
use migsight_proto::wire::{
    AfterProfile, Client, ClientError, ErrorKind, Objective, ProfileReport, ProfileRequest,
    RequestBody, Response, Sla, VmRef, DEFAULT_DOWNTIME_LIMIT_MS,
};
use std::path::PathBuf;
use std::time::Duration;

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
        migsight_proto::write_stdout(&(serde_json::to_string_pretty(&out)? + "\n"))?;
    } else {
        migsight_proto::write_stdout(&render_plan(&report, &out))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::output::*;
    use super::*;
    use clap::Parser;
    use migsight_proto::wire::*;
    use migsight_proto::Feature;

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
