//! `migsight migrate`: plan (or take the given algorithm), configure the
//! source over QMP, tell the operator what the destination needs, run the
//! migration with live progress, compare predicted and actual, and append the
//! outcome to the closed-loop dataset.
//!
//! On failure or Ctrl-C the migration is cancelled (`migrate_cancel`, as long
//! as it is still in pre-copy) and the source keeps running.

use crate::outcomes::{self, Measured, RowContext, DEFAULT_OUTCOMES};
use crate::plan::{self, PlanOutput, ProfileArgs, SlaArgs};
use anyhow::{anyhow, bail, Context, Result};
use migsight_agent::procfs;
use migsight_agent::qmp::Qmp;
use migsight_lab::host::lo_tx_bytes;
use migsight_lab::migration::{self, MigrateError, MigrationConfig, MigrationOutcome, Progress};
use migsight_lab::workload::{ops_rate, OpsPage, OpsReading};
use migsight_proto::feature::MIB;
use migsight_proto::units::{parse_bandwidth, parse_duration_ms, HumanBytes, HumanMs};
use migsight_proto::wire::{AlgorithmPrediction, Interval, ProfileReport, VmRef};
use migsight_proto::{Algorithm, Feature, Metric};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// `--algorithm`: `auto` (plan first) or one of the five.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmChoice {
    Auto,
    Given(Algorithm),
}

fn algorithm_choice(s: &str) -> Result<AlgorithmChoice, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(AlgorithmChoice::Auto);
    }
    s.parse::<Algorithm>()
        .map(AlgorithmChoice::Given)
        .map_err(|e| e.to_string())
}

fn bw(s: &str) -> Result<f64, String> {
    parse_bandwidth(s).map_err(|e| e.to_string())
}
fn ms(s: &str) -> Result<f64, String> {
    parse_duration_ms(s).map_err(|e| e.to_string())
}

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The VM: qmp:PATH, pid:N, name:NAME, proxmox:ID, or a bare PID, QMP socket path or -name.
    #[arg(value_parser = plan::vm_ref, value_name = "VM")]
    pub vm: VmRef,
    /// Migration URI of the destination, e.g. tcp:10.0.0.2:4444.
    #[arg(long, value_name = "URI")]
    pub to: String,
    /// auto (profile and take the recommendation), precopy, auto-converge, xbzrle, compress or postcopy.
    #[arg(long, value_parser = algorithm_choice, default_value = "auto")]
    pub algorithm: AlgorithmChoice,
    /// Bandwidth the migration may use (QEMU max-bandwidth), e.g. 1Gbit, 125MB/s.
    #[arg(long, value_parser = bw, default_value = "1Gbit", value_name = "RATE")]
    pub bandwidth: f64,
    #[command(flatten)]
    pub sla: SlaArgs,
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Source QMP socket to drive the migration through (default: the VM's
    /// own, found from its command line or the qmp: reference).
    #[arg(long, value_name = "PATH")]
    pub qmp: Option<PathBuf>,
    /// Destination QMP socket, when the destination QEMU (started with
    /// -incoming defer) runs on this host: migsight prepares it itself.
    #[arg(long, value_name = "PATH")]
    pub dst_qmp: Option<PathBuf>,
    /// With --algorithm given: migrate without profiling (no prediction, no outcome row).
    #[arg(long)]
    pub no_profile: bool,
    /// Cancel a pre-copy phase that runs longer than this (recorded as not converged).
    #[arg(long, value_parser = ms, default_value = "300s", value_name = "DURATION")]
    pub cap: f64,
    /// Closed-loop dataset the outcome row is appended to.
    #[arg(long, env = "MIGSIGHT_OUTCOMES", default_value = DEFAULT_OUTCOMES, value_name = "PATH")]
    pub outcomes: PathBuf,
    /// Do not append the outcome row.
    #[arg(long)]
    pub no_record: bool,
    /// Measure guest performance from the ops page that migsight's lab
    /// workloads publish in guest RAM (lab and demo guests only).
    #[arg(long)]
    pub guest_ops: bool,
    /// Do not wait for Enter before migrating to a destination migsight did not prepare.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print one JSON object at the end (see docs/json.md); human output goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Do not print the plan table again (e.g. right after `migsight plan`).
    #[arg(long)]
    pub brief: bool,
}

/// The destination port of a `tcp:HOST:PORT` URI.
pub fn tcp_port(uri: &str) -> Result<(String, u16)> {
    let rest = uri
        .strip_prefix("tcp:")
        .ok_or_else(|| anyhow!("--to {uri:?}: expected tcp:HOST:PORT"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--to {uri:?}: expected tcp:HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| anyhow!("--to {uri:?}: {port:?} is not a TCP port"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        bail!("--to {uri:?}: the host is missing");
    }
    Ok((host, port))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.starts_with("127.") || host == "::1"
}

/// Human output: stdout normally, stderr when stdout carries JSON.
struct Out {
    json: bool,
}
impl Out {
    fn say(&self, s: &str) {
        if self.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }
}

/// Prints one progress observation (a rewritten line on a terminal, one line a second otherwise).
struct ProgressPrinter {
    tty: bool,
    last: Option<Instant>,
    total_bytes: Option<f64>,
}

impl ProgressPrinter {
    fn show(&mut self, p: &Progress) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        };
        if self.last.map(|l| l.elapsed() < every).unwrap_or(false) {
            return;
        }
        self.last = Some(Instant::now());
        let pct = self
            .total_bytes
            .filter(|t| *t > 0.0)
            .map(|t| format!(" ({:.0} % of RAM)", p.transferred as f64 / t * 100.0))
            .unwrap_or_default();
        let line = format!(
            "[{:>6.1}s] {:<16} sent {:>10}{pct}  remaining {:>10}  dirty {:>6} pages/s  throttle {:>2} %",
            p.elapsed.as_secs_f64(),
            p.status,
            HumanBytes(p.transferred as f64).to_string(),
            HumanBytes(p.remaining as f64).to_string(),
            p.dirty_pages_rate,
            p.throttle_percent
        );
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
    }
    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// Formats a metric value for people (the plan table's format).
pub fn fmt_metric(m: Metric, v: f64) -> String {
    crate::table::metric_value(m, v)
}

/// One line of the predicted-vs-actual comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub metric: Metric,
    pub predicted: Option<Interval>,
    pub actual: Option<f64>,
    /// (actual − predicted) / predicted, for TT, DT, TD and PERF (CPU and MEM are deltas around zero).
    pub relative_error: Option<f64>,
    pub inside_interval: Option<bool>,
    /// Why there is no actual value.
    pub note: Option<String>,
}

fn metric_label(m: Metric) -> &'static str {
    match m {
        Metric::TT => "TT   total time",
        Metric::DT => "DT   downtime",
        Metric::TD => "TD   data sent",
        Metric::PERF => "PERF performance",
        Metric::CPU => "CPU  extra src CPU",
        Metric::MEM => "MEM  extra src mem",
    }
}

pub fn compare(
    pred: Option<&AlgorithmPrediction>,
    actual: &[Option<f64>; 6],
    notes: &[Option<String>; 6],
) -> Vec<Comparison> {
    Metric::ALL
        .iter()
        .map(|&m| {
            let p = pred.map(|p| p.metric(m));
            let a = actual[m.index()];
            let (rel, inside) = match (p, a) {
                // A relative error only means something for positive metrics;
                // CPU and MEM are deltas around zero (shown as a difference).
                (Some(p), Some(a)) => (
                    (m.strictly_positive() && p.value.abs() > f64::EPSILON)
                        .then(|| (a - p.value) / p.value),
                    Some(a >= p.lo && a <= p.hi),
                ),
                _ => (None, None),
            };
            Comparison {
                metric: m,
                predicted: p,
                actual: a,
                relative_error: rel,
                inside_interval: inside,
                note: notes[m.index()].clone(),
            }
        })
        .collect()
}

pub fn render_comparison(algo: Algorithm, rows: &[Comparison]) -> String {
    let mut s = format!("Predicted vs actual ({algo}):\n");
    s += &format!(
        "  {:<19} {:>11} {:>25}  {:>11}  {:>8}  {}\n",
        "metric", "predicted", "90 % interval", "actual", "error", ""
    );
    for r in rows {
        let m = r.metric;
        let (pv, iv) = match r.predicted {
            Some(p) => (
                fmt_metric(m, p.value),
                format!("{} – {}", fmt_metric(m, p.lo), fmt_metric(m, p.hi)),
            ),
            None => ("-".into(), "-".into()),
        };
        let av = r
            .actual
            .map(|a| fmt_metric(m, a))
            .unwrap_or_else(|| "n/a".into());
        let err = match (r.relative_error, r.predicted, r.actual) {
            (Some(e), _, _) => format!("{:+.0} %", e * 100.0),
            (None, Some(p), Some(a)) if m == Metric::CPU => format!("{:+.0} pt", a - p.value),
            (None, Some(p), Some(a)) if m == Metric::MEM => format!("{:+.1} MiB", a - p.value),
            _ => String::new(),
        };
        let tag = match (r.inside_interval, &r.note) {
            (Some(true), _) => "inside".to_string(),
            (Some(false), _) => "OUTSIDE".to_string(),
            (None, Some(n)) => format!("({n})"),
            _ => String::new(),
        };
        s += &format!(
            "  {:<19} {:>11} {:>25}  {:>11}  {:>8}  {}\n",
            metric_label(m),
            pv,
            iv,
            av,
            err,
            tag
        );
    }
    s
}

/// The `migrate --json` object.
#[derive(Debug, Serialize)]
pub struct MigrateJson<'a> {
    pub migsight_migrate: u32,
    pub vm: String,
    pub algorithm: Algorithm,
    pub recommended: Option<Algorithm>,
    pub to: String,
    pub plan: Option<&'a PlanOutput>,
    pub outcome: OutcomeJson,
    pub comparison: Vec<Comparison>,
    pub outcome_row: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct OutcomeJson {
    pub converged: bool,
    pub status: String,
    pub total_time_ms: f64,
    pub downtime_ms: Option<f64>,
    pub transferred_bytes: f64,
    pub throttle_percent_max: u64,
    pub dirty_sync_count: u64,
    pub error: Option<String>,
}

fn accel_of(args: &[String]) -> String {
    use migsight_agent::vm::{has_flag, opt_get, option_values, split_opts};
    if has_flag(args, "-enable-kvm") {
        return "kvm".into();
    }
    if let Some(a) = option_values(args, "-accel").first() {
        return split_opts(a).first().cloned().unwrap_or_default();
    }
    for m in option_values(args, "-machine")
        .into_iter()
        .chain(option_values(args, "-M"))
    {
        if let Some(a) = opt_get(&split_opts(m), "accel") {
            return a;
        }
    }
    String::new()
}

fn source_status(path: &Path) -> String {
    match Qmp::connect(path, Duration::from_secs(5)).and_then(|mut q| q.status()) {
        Ok((status, running)) if status == "running" || !running => status,
        Ok((status, _)) => format!("{status}, vCPUs running"),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Cancels whatever migration is in progress on the source, on a fresh connection.
fn cancel_on_fresh_connection(path: &Path) -> String {
    match Qmp::connect(path, Duration::from_secs(5)) {
        Ok(mut q) => {
            let st = q
                .query_migrate()
                .ok()
                .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_string))
                .unwrap_or_default();
            if matches!(
                st.as_str(),
                "setup" | "active" | "pre-switchover" | "device"
            ) {
                match q.execute("migrate_cancel", None) {
                    Ok(_) => format!("migration was {st}; sent migrate_cancel"),
                    Err(e) => format!("migrate_cancel failed: {e}"),
                }
            } else if st.starts_with("postcopy") {
                format!("migration is {st}: past switch-over it cannot be cancelled; the guest runs on the destination")
            } else {
                format!("no migration in progress (status {st:?})")
            }
        }
        Err(e) => format!("could not reach the source QMP to cancel: {e}"),
    }
}

pub fn run(a: MigrateArgs) -> Result<()> {
    let out = Out { json: a.json };
    let (dst_host, port) = tcp_port(&a.to)?;
    if a.no_profile && a.algorithm == AlgorithmChoice::Auto {
        bail!("--no-profile needs an explicit --algorithm (auto must profile the VM to choose)");
    }
    let sla = a.sla.sla();
    sla.validate().map_err(|e| anyhow!(e))?;

    // 1. Find the source QEMU and a QMP socket to drive it.
    let target =
        migsight_agent::vm::locate(&a.vm).with_context(|| format!("finding VM {}", a.vm))?;
    let src_pid = target.pid;
    let src_qmp = a
        .qmp
        .clone()
        .or_else(|| target.qmp.clone())
        .ok_or_else(|| {
            anyhow!(
                "no QMP socket found for {} (pid {src_pid}); pass --qmp PATH (libvirt-managed VMs: migrate with virsh using the printed parameters)",
                a.vm
            )
        })?;
    let args = migsight_agent::vm::cmdline(src_pid).unwrap_or_default();
    let accel = accel_of(&args);
    let ram_bytes = migsight_agent::vm::ram_size_from_args(&args);

    // Guest ops page (lab/demo guests), for PERF.
    let ops_page = if a.guest_ops {
        match OpsPage::find(src_pid, Duration::from_secs(5)) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("migsight: --guest-ops: no ops page in the guest ({e}); PERF will not be measured");
                None
            }
        }
    } else {
        None
    };
    let ops_a: Option<OpsReading> = ops_page.and_then(|p| p.read(src_pid).ok());
    let cpu_a = procfs::process_cpu_seconds(src_pid).ok();
    let t_a = Instant::now();

    // 2. Plan (profile + recommend) unless told not to.
    let planned: Option<(ProfileReport, PlanOutput)> = if a.no_profile {
        None
    } else {
        match plan::plan(&a.vm, &a.profile, a.bandwidth, &a.sla) {
            Ok(p) => Some(p),
            Err(e) if matches!(a.algorithm, AlgorithmChoice::Given(_)) => {
                eprintln!("migsight: warning: could not plan ({e:#}); migrating without a prediction and without recording an outcome row");
                None
            }
            Err(e) => {
                return Err(e.context(
                    "planning (use --algorithm NAME --no-profile to migrate without the agent)",
                ))
            }
        }
    };
    let ops_b: Option<OpsReading> = ops_page.and_then(|p| p.read(src_pid).ok());
    let ops_before = ops_a.zip(ops_b).and_then(|(x, y)| ops_rate(&x, &y));
    let base_cpu_percent = match (cpu_a, procfs::process_cpu_seconds(src_pid).ok()) {
        (Some(x), Some(y)) if t_a.elapsed() > Duration::from_millis(500) => {
            Some((y - x) / t_a.elapsed().as_secs_f64() * 100.0)
        }
        _ => match planned
            .as_ref()
            .and_then(|(r, _)| r.features.get(Feature::VmCpuUtil))
        {
            Some(v) => Some(v),
            // Not profiled: one second of the source's own CPU as the baseline.
            None => {
                let t = Instant::now();
                let x = procfs::process_cpu_seconds(src_pid).ok();
                std::thread::sleep(Duration::from_secs(1));
                x.zip(procfs::process_cpu_seconds(src_pid).ok())
                    .map(|(x, y)| (y - x) / t.elapsed().as_secs_f64() * 100.0)
            }
        },
    };

    let recommended = planned.as_ref().map(|(_, p)| p.recommendation.recommended);
    let algorithm = match a.algorithm {
        AlgorithmChoice::Given(x) => x,
        AlgorithmChoice::Auto => recommended.expect("auto always plans"),
    };
    if let Some((report, p)) = &planned {
        if a.brief {
            out.say(&format!("\n{}", plan::render_features(report)));
        } else {
            out.say(&plan::render_plan(report, p));
        }
        let rec = &p.recommendation;
        match a.algorithm {
            AlgorithmChoice::Auto => out.say(&format!(
                "Migrating with {algorithm} (recommended{}: {})",
                if rec.meets_sla {
                    ""
                } else {
                    ", but NO algorithm is predicted to meet the SLA"
                },
                rec.reason
            )),
            AlgorithmChoice::Given(g) if Some(g) != recommended => out.say(&format!(
                "Migrating with {g} as asked (migsight recommends {}: {})",
                rec.recommended, rec.reason
            )),
            AlgorithmChoice::Given(g) => {
                out.say(&format!("Migrating with {g} (also the recommendation)"))
            }
        }
    } else {
        out.say(&format!(
            "Migrating with {algorithm} (no prediction: not profiled)"
        ));
    }

    // 3. Configuration and destination.
    let mut cfg = MigrationConfig::new(algorithm, a.bandwidth);
    cfg.downtime_limit_ms = a.sla.downtime_limit_ms().round() as u64;
    cfg.cap = Duration::from_secs_f64(a.cap / 1000.0);
    out.say(&format!(
        "\nSource {} (pid {src_pid}, QMP {}): max-bandwidth {}/s, downtime-limit {} ms, capabilities: {}",
        a.vm,
        src_qmp.display(),
        HumanBytes(cfg.bandwidth_bps),
        cfg.downtime_limit_ms,
        cfg.capabilities(true)
            .iter()
            .map(|(c, on)| format!("{c}={}", if *on { "on" } else { "off" }))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    out.say(&format!(
        "Destination {} needs: {}",
        a.to,
        cfg.destination_instructions(&port.to_string())
    ));
    let mut dst_pid = None;
    if let Some(dq_path) = &a.dst_qmp {
        let mut dq = Qmp::connect(dq_path, Duration::from_secs(10))
            .with_context(|| format!("connecting to the destination QMP {}", dq_path.display()))?;
        migration::prepare_destination(&mut dq, &cfg, &a.to)
            .with_context(|| format!("preparing the destination over {}", dq_path.display()))?;
        dst_pid = migsight_agent::vm::pid_of_qmp_socket(dq_path).ok();
        out.say(&format!(
            "Destination prepared over {} (listening on {}).",
            dq_path.display(),
            a.to
        ));
        drop(dq);
    } else if !a.yes && std::io::stdin().is_terminal() {
        eprint!("Press Enter once the destination is listening on {} (Ctrl-C aborts; nothing has been changed yet) ", a.to);
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }

    // 4. Migrate, with live progress. From here on Ctrl-C cancels cleanly.
    let cancel = migsight_lab::interrupt::flag();
    let mut sq = Qmp::connect(&src_qmp, Duration::from_secs(30)).with_context(|| {
        format!(
            "connecting to the source QMP {} (a QMP socket serves one client at a time: is another client attached?)",
            src_qmp.display()
        )
    })?;
    let qemu_version = format!("{}.{}.{}", sq.version.0, sq.version.1, sq.version.2);
    let rss_before = procfs::process_rss_bytes(src_pid).ok();
    let mut rss_peak = rss_before.unwrap_or(0);
    let cpu_start = procfs::process_cpu_seconds(src_pid).ok();
    let ops_start = ops_page.and_then(|p| p.read(src_pid).ok());
    let tx_a = is_loopback(&dst_host).then(lo_tx_bytes).flatten();
    let mut printer = ProgressPrinter {
        tty: std::io::stderr().is_terminal(),
        last: None,
        total_bytes: Some(ram_bytes as f64),
    };
    out.say(&format!("\nMigrating to {} …", a.to));
    let result = migration::migrate(
        &mut sq,
        &cfg,
        &a.to,
        Duration::from_millis(250),
        cancel,
        |p| {
            if let Ok(r) = procfs::process_rss_bytes(src_pid) {
                rss_peak = rss_peak.max(r);
            }
            printer.show(p);
        },
    );
    printer.finish();
    let outcome: MigrationOutcome = match result {
        Ok(o) => o,
        Err(MigrateError::Interrupted) => {
            drop(sq);
            bail!(
                "interrupted: the migration was cancelled (migrate_cancel) and the source VM keeps running (source status: {})",
                source_status(&src_qmp)
            );
        }
        Err(e) => {
            drop(sq);
            let what = cancel_on_fresh_connection(&src_qmp);
            bail!(
                "the migration failed: {e}\n  {what}; the source VM keeps running (status: {})",
                source_status(&src_qmp)
            );
        }
    };
    let cpu_end = procfs::process_cpu_seconds(src_pid).ok();
    let tx_b = is_loopback(&dst_host).then(lo_tx_bytes).flatten();
    drop(sq);

    // 5. Measure what QEMU does not report.
    let wall = outcome.wall.as_secs_f64().max(1e-3);
    let mut notes: [Option<String>; 6] = Default::default();
    let extra_cpu = match (cpu_start, cpu_end, base_cpu_percent) {
        (Some(s), Some(e), Some(b)) => Some((e - s) / wall * 100.0 - b),
        _ => {
            notes[Metric::CPU.index()] = Some("source QEMU CPU not readable".into());
            None
        }
    };
    let extra_mem = rss_before.map(|b| rss_peak.saturating_sub(b) as f64 / MIB);
    if extra_mem.is_none() {
        notes[Metric::MEM.index()] = Some("source QEMU RSS not readable".into());
    }
    let runs_on = if outcome.converged {
        dst_pid
    } else {
        Some(src_pid)
    };
    let ops_end = match (ops_page, runs_on) {
        (Some(p), Some(pid)) => p.read(pid).ok(),
        _ => None,
    };
    let ops_during = ops_start.zip(ops_end).and_then(|(x, y)| ops_rate(&x, &y));
    let performance = match (ops_before, ops_during) {
        (Some(b), Some(d)) if b > 0.0 => Some(d / b),
        _ => {
            notes[Metric::PERF.index()] = Some(if ops_page.is_none() {
                "needs guest instrumentation (--guest-ops on migsight guests)".into()
            } else {
                "guest ops not readable on the destination".into()
            });
            None
        }
    };
    if !outcome.converged {
        notes[Metric::DT.index()] = Some("not converged".into());
    }
    let measured = Measured {
        performance,
        extra_cpu_percent: extra_cpu,
        extra_mem_mib: extra_mem,
        ops_before_per_s: ops_before,
        ops_during_per_s: ops_during,
        wire_bytes: tx_a.zip(tx_b).map(|(x, y)| y.saturating_sub(x)),
    };
    let actual: [Option<f64>; 6] = [
        Some(outcome.total_time_ms),
        outcome.downtime_ms.filter(|_| outcome.converged),
        Some(outcome.transferred_bytes),
        performance,
        extra_cpu,
        extra_mem,
    ];

    // 6. Report.
    if outcome.converged {
        out.say(&format!(
            "\nMigration completed in {} (downtime {}, {} sent{}).",
            HumanMs(outcome.total_time_ms),
            outcome
                .downtime_ms
                .map(|d| HumanMs(d).to_string())
                .unwrap_or_else(|| "?".into()),
            HumanBytes(outcome.transferred_bytes),
            if outcome.throttle_percent_max > 0 {
                format!(", CPU throttled up to {} %", outcome.throttle_percent_max)
            } else {
                String::new()
            }
        ));
    } else {
        out.say(&format!(
            "\nMigration did NOT complete: {} ({}). The source VM keeps running (status: {}).",
            outcome.status,
            outcome.error.as_deref().unwrap_or("no reason given"),
            source_status(&src_qmp)
        ));
    }
    let pred = planned.as_ref().and_then(|(_, p)| {
        p.recommendation
            .prediction
            .algorithms
            .iter()
            .find(|x| x.algorithm == algorithm)
    });
    let comparison = compare(pred, &actual, &notes);
    if outcome.status != "failed" {
        out.say(&render_comparison(algorithm, &comparison));
    }

    // 7. Close the loop.
    let mut outcome_row = None;
    if a.no_record {
        out.say("Outcome not recorded (--no-record).");
    } else if outcome.status == "failed" {
        out.say("Outcome not recorded: the migration failed (not a convergence outcome the models learn from).");
    } else if let Some((report, _)) = &planned {
        let ctx = RowContext {
            qemu_version,
            accel,
            guest_mem_mib: Some(ram_bytes >> 20),
            window_ms: Some(report.window_ms),
            workload_type: None,
            qemu_dirty_rate: report.qemu_dirty_rate,
            pdr_std_error: report
                .errors
                .iter()
                .find(|e| e.feature == Feature::VmPdr)
                .map(|e| e.std_error),
            dirtied: report.dirtied.clone(),
            sampled_pages: Some(report.sampled_pages),
            cpu_budget: Some(report.cpu_budget),
            group_id: outcomes::new_group_id(src_pid),
        };
        let row = outcomes::build_row(&report.features, &cfg, &outcome, &measured, &ctx);
        match outcomes::append(&a.outcomes, &row) {
            Ok(()) => {
                out.say(&format!(
                    "Outcome recorded in {} (retrain: migsight train --data data/lab.csv --data {} --out MODEL).",
                    a.outcomes.display(),
                    a.outcomes.display()
                ));
                outcome_row = Some(a.outcomes.display().to_string());
            }
            Err(e) => eprintln!("migsight: warning: could not record the outcome: {e}"),
        }
    } else {
        out.say(
            "Outcome not recorded: the VM was not profiled, so the row would have no features.",
        );
    }

    if a.json {
        let j = MigrateJson {
            migsight_migrate: 1,
            vm: a.vm.to_string(),
            algorithm,
            recommended,
            to: a.to.clone(),
            plan: planned.as_ref().map(|(_, p)| p),
            outcome: OutcomeJson {
                converged: outcome.converged,
                status: outcome.status.clone(),
                total_time_ms: outcome.total_time_ms,
                downtime_ms: outcome.downtime_ms,
                transferred_bytes: outcome.transferred_bytes,
                throttle_percent_max: outcome.throttle_percent_max,
                dirty_sync_count: outcome.dirty_sync_count,
                error: outcome.error.clone(),
            },
            comparison,
            outcome_row,
        };
        println!("{}", serde_json::to_string_pretty(&j)?);
    }
    if cancel.load(Ordering::Relaxed) {
        bail!("interrupted after the migration ended");
    }
    if !outcome.converged {
        bail!(
            "the migration did not complete ({}); the source keeps running",
            outcome.status
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_uris_parse() {
        assert_eq!(
            tcp_port("tcp:10.0.0.2:4444").unwrap(),
            ("10.0.0.2".into(), 4444)
        );
        assert_eq!(tcp_port("tcp:[::1]:4444").unwrap(), ("::1".into(), 4444));
        assert!(tcp_port("unix:/x").is_err());
        assert!(tcp_port("tcp:host").is_err());
        assert!(tcp_port("tcp::4444").is_err());
        assert!(tcp_port("tcp:h:0").is_err());
        assert!(is_loopback("127.0.0.1") && !is_loopback("10.0.0.2"));
    }

    #[test]
    fn algorithm_choices_parse() {
        assert_eq!(algorithm_choice("auto"), Ok(AlgorithmChoice::Auto));
        assert_eq!(
            algorithm_choice("xbzrle"),
            Ok(AlgorithmChoice::Given(Algorithm::Xbzrle))
        );
        assert_eq!(
            algorithm_choice("post-copy"),
            Ok(AlgorithmChoice::Given(Algorithm::Postcopy))
        );
        assert!(algorithm_choice("multifd").is_err());
    }

    #[test]
    fn accel_is_read_from_the_command_line() {
        let v = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(accel_of(&v("qemu -accel tcg -m 1G")), "tcg");
        assert_eq!(accel_of(&v("qemu -enable-kvm")), "kvm");
        assert_eq!(accel_of(&v("qemu -machine pc,accel=kvm")), "kvm");
        assert_eq!(accel_of(&v("qemu -m 1G")), "");
    }

    #[test]
    fn comparison_flags_intervals_and_missing_values() {
        let iv = |v: f64| Interval {
            value: v,
            lo: v * 0.5,
            hi: v * 2.0,
        };
        let p = AlgorithmPrediction {
            algorithm: Algorithm::Precopy,
            metrics: [iv(5000.0), iv(20.0), iv(3e8), iv(0.9), iv(30.0), iv(10.0)],
            p_converge: 0.9,
            explanation: vec![],
        };
        let mut notes: [Option<String>; 6] = Default::default();
        notes[Metric::PERF.index()] = Some("needs guest instrumentation".into());
        let rows = compare(
            Some(&p),
            &[
                Some(4000.0),
                Some(100.0),
                Some(3e8),
                None,
                Some(31.0),
                Some(0.0),
            ],
            &notes,
        );
        assert_eq!(rows[0].inside_interval, Some(true));
        assert!((rows[0].relative_error.unwrap() + 0.2).abs() < 1e-9);
        assert_eq!(rows[1].inside_interval, Some(false));
        assert_eq!(rows[3].actual, None);
        let text = render_comparison(Algorithm::Precopy, &rows);
        assert!(text.contains("OUTSIDE"), "{text}");
        assert!(text.contains("n/a"), "{text}");
        assert!(text.contains("guest instrumentation"), "{text}");
        assert_eq!(text.lines().count(), 8, "{text}");
        let none = compare(
            None,
            &[Some(1.0), None, None, None, None, None],
            &Default::default(),
        );
        assert!(render_comparison(Algorithm::Xbzrle, &none).contains(" - "));
    }
}
