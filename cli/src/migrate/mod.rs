//! `migsight migrate`: plan (or take the given algorithm), configure the
//! source over QMP, tell the operator what the destination needs, run the
//! migration with live progress, compare predicted and actual, and append the
//! outcome to the closed-loop dataset.
//!
//! Only what the source QEMU offers is used: an algorithm it lacks is refused
//! with the reason before anything is set, and only the capabilities and
//! parameters it has are sent (`migsight_qemu::driver`). On failure or
//! Ctrl-C the migration is cancelled (`migrate_cancel`, as long as it is
//! still in pre-copy) and the source keeps running; past a post-copy
//! switch-over, `migrate` says exactly what state the guest is in and how to
//! recover.

mod args;
mod libvirt;
mod measure;
mod report;

pub use args::MigrateArgs;

use crate::plan::{self, PlanOutput};
use anyhow::{anyhow, bail, Context, Result};
use args::{is_loopback, tcp_port, AlgorithmChoice};
use measure::{note, Baseline, Notes};
use migsight_proto::units::HumanBytes;
use migsight_proto::wire::ProfileReport;
use migsight_proto::{Algorithm, Feature, Metric};
use migsight_qemu::driver::{self, MigrateError, MigrationConfig, MigrationOutcome};
use migsight_qemu::outcome::{self, Costs, Measured, Meter, RowContext};
use migsight_qemu::{HostSupport, Qmp};
use report::{compare, ending, render_comparison, MigrateJson, Out, OutcomeJson, ProgressPrinter};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The source QEMU and how to reach it.
struct Source {
    pid: u32,
    qmp: PathBuf,
    args: Vec<String>,
    ram_bytes: u64,
}

pub fn run(a: MigrateArgs) -> Result<()> {
    if let migsight_proto::wire::VmRef::Libvirt(domain) = &a.vm {
        let domain = domain.clone();
        return libvirt::run(a, &domain);
    }
    let out = Out { json: a.json };
    let (dst_host, port) = tcp_port(&a.to)?;
    check_arguments(&a)?;
    if a.connect.is_some() || a.migrate_uri.is_some() || a.undefine_source {
        bail!("--connect, --migrate-uri and --undefine-source are for libvirt:NAME VMs");
    }
    if let (AlgorithmChoice::Given(g), Some(_)) = (a.algorithm, a.multifd_channels) {
        if !g.is_multifd() {
            bail!(
                "--multifd-channels with {g}: over QMP only the multifd algorithms take channels"
            );
        }
    }
    let source = find_source(&a)?;
    let support = discover(&source)?;
    refuse_unavailable(&a, &support)?;
    let before = measure::Before::start(source.pid, a.guest_ops);
    let planned = plan_unless_told_not_to(&a)?;
    let baseline = before.finish(
        planned
            .as_ref()
            .and_then(|(r, _)| r.features.get(Feature::VmCpuUtil)),
    );
    let algorithm = choose(&a, planned.as_ref(), &support)?;
    announce(&out, &a, planned.as_ref(), algorithm);
    let cfg = configure(&a, algorithm);
    show_setup(&out, &a, &source, &support, &cfg, port);
    let dst_pid = prepare_destination(&out, &a, &cfg)?;
    let loopback = is_loopback(&dst_host);
    let ran = run_migration(&out, &a, &source, &support, &cfg, &baseline, loopback)?;
    let (measured, actual, notes) = measure_outcome(&ran, &baseline, dst_pid, source.pid);
    out.say(&format!(
        "\n{}",
        ending(&ran.outcome, &driver::vm_status(&source.qmp))
    ));
    let pred = planned.as_ref().and_then(|(_, p)| {
        p.recommendation
            .prediction
            .algorithms
            .iter()
            .find(|x| x.algorithm == algorithm)
    });
    let comparison = compare(pred, &actual, &notes);
    if !ran.outcome.failed {
        out.say(&render_comparison(algorithm, &comparison));
    }
    let outcome_row = record(
        &out,
        &a,
        planned.as_ref(),
        (source.pid, source.ram_bytes, "qmp"),
        &support,
        &cfg,
        &ran,
        &measured,
    );
    finish(
        &a,
        algorithm,
        planned.as_ref(),
        &ran.outcome,
        comparison,
        outcome_row,
    )
}

/// Flags that contradict each other.
fn check_arguments(a: &MigrateArgs) -> Result<()> {
    if a.no_profile && a.algorithm == AlgorithmChoice::Auto {
        bail!("--no-profile needs an explicit --algorithm (auto must profile the VM to choose)");
    }
    let sla = a.sla.sla();
    sla.validate().map_err(|e| anyhow!(e))
}

/// The source QEMU process and a QMP socket to drive it.
fn find_source(a: &MigrateArgs) -> Result<Source> {
    let target =
        migsight_agent::vm::locate(&a.vm).with_context(|| format!("finding VM {}", a.vm))?;
    let qmp = a.qmp.clone().or_else(|| target.qmp.clone()).ok_or_else(|| {
        anyhow!(
            "no QMP socket found for {} (pid {}); pass --qmp PATH (libvirt-managed VMs: migrate them as libvirt:NAME)",
            a.vm,
            target.pid
        )
    })?;
    let args = migsight_agent::vm::cmdline(target.pid).unwrap_or_default();
    Ok(Source {
        pid: target.pid,
        qmp,
        ram_bytes: migsight_agent::vm::ram_size_from_args(&args),
        args,
    })
}

/// What the source QEMU can run (the QMP session is released again: the
/// agent may need the same socket to profile).
fn discover(source: &Source) -> Result<HostSupport> {
    let mut q = connect(&source.qmp, Duration::from_secs(10))?;
    HostSupport::query(&mut q, &source.args).with_context(|| {
        format!(
            "asking the source QEMU over {} what it offers",
            source.qmp.display()
        )
    })
}

fn connect(path: &std::path::Path, timeout: Duration) -> Result<Qmp> {
    Qmp::connect(path, timeout).with_context(|| {
        format!(
            "connecting to the source QMP {} (a QMP socket serves one client at a time: is another client attached?)",
            path.display()
        )
    })
}

/// An explicitly asked algorithm the source lacks is refused before
/// anything is profiled or set.
fn refuse_unavailable(a: &MigrateArgs, support: &HostSupport) -> Result<()> {
    if let AlgorithmChoice::Given(g) = a.algorithm {
        if let Some(why) = support.unavailable(g) {
            bail!(
                "{g} is not available on this source (QEMU {}): {why}; it offers {}",
                support.version,
                support
                    .available()
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

/// Profile and recommend, unless told not to (or, with an explicit
/// algorithm, when the agent cannot be reached).
fn plan_unless_told_not_to(a: &MigrateArgs) -> Result<Option<(ProfileReport, PlanOutput)>> {
    if a.no_profile {
        return Ok(None);
    }
    match plan::plan(&a.vm, &a.profile, a.bandwidth.bytes_per_s, &a.sla) {
        Ok(p) => Ok(Some(p)),
        Err(e) if matches!(a.algorithm, AlgorithmChoice::Given(_)) => {
            eprintln!("migsight: warning: could not plan ({e:#}); migrating without a prediction and without recording an outcome row");
            Ok(None)
        }
        Err(e) => Err(
            e.context("planning (use --algorithm NAME --no-profile to migrate without the agent)")
        ),
    }
}

/// The algorithm to migrate with: the given one, else the recommendation.
fn choose(
    a: &MigrateArgs,
    planned: Option<&(ProfileReport, PlanOutput)>,
    support: &HostSupport,
) -> Result<Algorithm> {
    let algorithm = match a.algorithm {
        AlgorithmChoice::Given(x) => x,
        AlgorithmChoice::Auto => planned
            .map(|(_, p)| p.recommendation.recommended)
            .ok_or_else(|| anyhow!("no recommendation to migrate with"))?,
    };
    if let Some(why) = support.unavailable(algorithm) {
        bail!("the recommended {algorithm} is not available on this source: {why} (is the predictor's model older than the agent?)");
    }
    Ok(algorithm)
}

fn announce(
    out: &Out,
    a: &MigrateArgs,
    planned: Option<&(ProfileReport, PlanOutput)>,
    algorithm: Algorithm,
) {
    let Some((report, p)) = planned else {
        out.say(&format!(
            "Migrating with {algorithm} (no prediction: not profiled)"
        ));
        return;
    };
    if a.brief {
        out.say(&format!("\n{}", plan::render_features(report)));
    } else {
        out.say(&plan::render_plan(report, p));
    }
    let rec = &p.recommendation;
    out.say(&match a.algorithm {
        AlgorithmChoice::Auto => format!(
            "Migrating with {algorithm} (recommended{}: {})",
            if rec.meets_sla {
                ""
            } else {
                ", but NO algorithm is predicted to meet the SLA"
            },
            rec.reason
        ),
        AlgorithmChoice::Given(g) if g != rec.recommended => format!(
            "Migrating with {g} as asked (migsight recommends {}: {})",
            rec.recommended, rec.reason
        ),
        AlgorithmChoice::Given(g) => format!("Migrating with {g} (also the recommendation)"),
    });
}

fn configure(a: &MigrateArgs, algorithm: Algorithm) -> MigrationConfig {
    let mut cfg = MigrationConfig::new(algorithm, a.bandwidth.bytes_per_s);
    cfg.downtime_limit_ms = a.sla.downtime_limit_ms().round() as u64;
    cfg.cap = a.cap;
    if let (true, Some(n)) = (algorithm.is_multifd(), a.multifd_channels) {
        cfg.multifd_channels = n;
    }
    cfg
}

fn show_setup(
    out: &Out,
    a: &MigrateArgs,
    source: &Source,
    support: &HostSupport,
    cfg: &MigrationConfig,
    port: u16,
) {
    out.say(&format!(
        "\nSource {} (pid {}, QMP {}, QEMU {}): max-bandwidth {}/s, downtime-limit {} ms, capabilities: {}{}",
        a.vm,
        source.pid,
        source.qmp.display(),
        support.version,
        HumanBytes(cfg.bandwidth_bps),
        cfg.downtime_limit_ms,
        cfg.capabilities(support, true)
            .iter()
            .map(|(c, on)| format!("{c}={}", if *on { "on" } else { "off" }))
            .collect::<Vec<_>>()
            .join(" "),
        if cfg.algorithm.is_multifd() {
            format!(", {} multifd channels", cfg.multifd_channels)
        } else {
            String::new()
        }
    ));
    out.say(&format!(
        "Destination {} needs: {}",
        a.to,
        cfg.destination_instructions(support, &port.to_string())
    ));
}

/// Prepares a destination on this host (`--dst-qmp`), or waits for the
/// operator to. Returns the destination's pid when known.
fn prepare_destination(out: &Out, a: &MigrateArgs, cfg: &MigrationConfig) -> Result<Option<u32>> {
    if let Some(dq_path) = &a.dst_qmp {
        let mut dq = Qmp::connect(dq_path, Duration::from_secs(10))
            .with_context(|| format!("connecting to the destination QMP {}", dq_path.display()))?;
        let dst_pid = migsight_agent::vm::pid_of_qmp_socket(dq_path).ok();
        let dst_args = dst_pid
            .and_then(|p| migsight_agent::vm::cmdline(p).ok())
            .unwrap_or_default();
        driver::prepare_destination(&mut dq, cfg, &a.to, &dst_args)
            .with_context(|| format!("preparing the destination over {}", dq_path.display()))?;
        out.say(&format!(
            "Destination prepared over {} (listening on {}).",
            dq_path.display(),
            a.to
        ));
        return Ok(dst_pid);
    }
    if !a.yes && std::io::stdin().is_terminal() {
        eprint!("Press Enter once the destination is listening on {} (Ctrl-C aborts; nothing has been changed yet) ", a.to);
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }
    Ok(None)
}

/// A migration that ran, with what the meter saw.
struct Ran {
    outcome: MigrationOutcome,
    costs: Costs,
    other_vms: u32,
    ops_start: Option<migsight_agent::ops_page::OpsReading>,
}

/// Runs the migration with live progress. From here on Ctrl-C cancels cleanly.
fn run_migration(
    out: &Out,
    a: &MigrateArgs,
    source: &Source,
    support: &HostSupport,
    cfg: &MigrationConfig,
    baseline: &Baseline,
    loopback: bool,
) -> Result<Ran> {
    let cancel = migsight_qemu::cancel::flag();
    let mut sq = connect(&source.qmp, Duration::from_secs(30))?;
    let others_before = migsight_agent::vm::other_vms(&[source.pid]);
    let mut meter = Meter::start(source.pid, loopback);
    let ops_start = baseline.ops_now(source.pid);
    let mut printer = ProgressPrinter::new(Some(source.ram_bytes as f64));
    out.say(&format!("\nMigrating to {} …", a.to));
    let started = std::time::Instant::now();
    let result = driver::migrate(
        &mut sq,
        support,
        cfg,
        &a.to,
        Duration::from_millis(250),
        cancel,
        |p| {
            meter.sample();
            printer.show(p);
        },
    );
    printer.finish();
    drop(sq);
    let outcome = match result {
        Ok(o) => o,
        Err(MigrateError::Interrupted) => bail!(
            "interrupted: the migration was cancelled (migrate_cancel) and the source VM keeps running (source status: {})",
            driver::vm_status(&source.qmp)
        ),
        Err(e @ MigrateError::SourceGone { .. }) => {
            MigrationOutcome::broken(e.to_string(), started.elapsed())
        }
        Err(e) => {
            let what = driver::cancel_on_fresh_connection(&source.qmp);
            bail!(
                "the migration failed: {e}\n  {what}; the source VM keeps running (status: {})",
                driver::vm_status(&source.qmp)
            );
        }
    };
    let costs = meter.finish(outcome.wall, baseline.cpu_percent);
    // The destination, when on this host, is not competition.
    let others = others_before
        .max(migsight_agent::vm::other_vms(&[source.pid]))
        .saturating_sub(u32::from(loopback));
    Ok(Ran {
        outcome,
        costs,
        ops_start,
        other_vms: others,
    })
}

/// The measured metrics, by [`Metric::index`], and why some are missing.
fn measure_outcome(
    ran: &Ran,
    baseline: &Baseline,
    dst_pid: Option<u32>,
    src_pid: u32,
) -> (Measured, [Option<f64>; 6], Notes) {
    let o = &ran.outcome;
    let mut notes: Notes = Default::default();
    if ran.costs.extra_cpu_percent.is_none() {
        note(&mut notes, Metric::CPU, "source QEMU CPU not readable");
    }
    if ran.costs.extra_mem_mib.is_none() {
        note(&mut notes, Metric::MEM, "source QEMU RSS not readable");
    }
    let runs_on = if o.converged { dst_pid } else { Some(src_pid) };
    let perf = baseline.perf(ran.ops_start, runs_on);
    if let Some(n) = perf.note {
        note(&mut notes, Metric::PERF, n);
    }
    if !o.converged {
        note(&mut notes, Metric::DT, "not converged");
    }
    let actual = [
        Some(o.total_time_ms),
        o.downtime_ms.filter(|_| o.converged),
        Some(o.transferred_bytes),
        perf.performance,
        ran.costs.extra_cpu_percent,
        ran.costs.extra_mem_mib,
    ];
    let measured = Measured {
        costs: ran.costs,
        performance: perf.performance,
        ops_before_per_s: baseline.ops_per_s,
        ops_during_per_s: perf.ops_during_per_s,
    };
    (measured, actual, notes)
}

/// Closes the loop: appends the outcome row (failures included, on record).
#[allow(clippy::too_many_arguments)]
fn record(
    out: &Out,
    a: &MigrateArgs,
    planned: Option<&(ProfileReport, PlanOutput)>,
    (pid, ram_bytes, via): (u32, u64, &str),
    support: &HostSupport,
    cfg: &MigrationConfig,
    ran: &Ran,
    measured: &Measured,
) -> Option<String> {
    let outcome = &ran.outcome;
    if a.no_record {
        out.say("Outcome not recorded (--no-record).");
        return None;
    }
    let Some((report, _)) = planned else {
        out.say(
            "Outcome not recorded: the VM was not profiled, so the row would have no features.",
        );
        return None;
    };
    let ctx = RowContext {
        qemu_version: support.version.to_string(),
        accel: support.accel.clone().unwrap_or_default(),
        guest_mem_mib: Some(ram_bytes >> 20),
        workload: "production".into(),
        group_id: outcome::new_group_id(pid),
        via: via.into(),
        other_vms: Some(ran.other_vms),
        ..RowContext::from_profile(report)
    };
    let row = outcome::build_row(&report.features, cfg, outcome, measured, &ctx);
    match outcome::append(&a.outcomes, &row) {
        Ok(()) => {
            out.say(&format!(
                "Outcome recorded in {}{} (retrain: migsight train --data data/lab.csv --data {} --out MODEL).",
                a.outcomes.display(),
                if outcome.failed {
                    " as a failure, which training skips"
                } else {
                    ""
                },
                a.outcomes.display()
            ));
            Some(a.outcomes.display().to_string())
        }
        Err(e) => {
            eprintln!("migsight: warning: could not record the outcome: {e}");
            None
        }
    }
}

/// The last step of either way to migrate: the `--json` object when asked
/// (a closed stdout is not an error), then the exit status.
fn finish(
    a: &MigrateArgs,
    algorithm: Algorithm,
    planned: Option<&(ProfileReport, PlanOutput)>,
    outcome: &MigrationOutcome,
    comparison: Vec<report::Comparison>,
    outcome_row: Option<String>,
) -> Result<()> {
    if a.json {
        let j = MigrateJson {
            migsight_migrate: 1,
            vm: a.vm.to_string(),
            algorithm,
            recommended: planned.map(|(_, p)| p.recommendation.recommended),
            to: a.to.clone(),
            plan: planned.map(|(_, p)| p),
            outcome: OutcomeJson::new(outcome),
            comparison,
            outcome_row,
        };
        migsight_proto::write_stdout(&(serde_json::to_string_pretty(&j)? + "\n"))?;
    }
    exit_status(outcome)
}

fn exit_status(o: &MigrationOutcome) -> Result<()> {
    if migsight_qemu::cancel::flag().load(Ordering::Relaxed) {
        bail!("interrupted after the migration ended");
    }
    if let Some(split) = &o.split {
        bail!(
            "the migration failed after the post-copy switch-over; the guest is stopped (source {}): see the recovery steps above",
            split.source_status
        );
    }
    if !o.converged {
        bail!(
            "the migration did not complete ({}){}",
            o.status,
            if o.failed {
                String::new()
            } else {
                "; the source keeps running".to_string()
            }
        );
    }
    Ok(())
}
