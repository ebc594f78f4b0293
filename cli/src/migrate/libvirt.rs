//! `migsight migrate libvirt:NAME --to URI`: the same steps as over QMP,
//! through libvirt, which owns the VM's monitor. libvirt is asked what it
//! and the QEMU can run, the chosen algorithm becomes `virsh migrate`
//! flags (or is refused, with the reason, before libvirt is called), the
//! progress line comes from libvirt's job stats, Ctrl-C aborts the libvirt
//! job, and the outcome row is built from libvirt's completed job stats by
//! the one row builder, with `via` = `libvirt`.

use super::args::{is_loopback, AlgorithmChoice, MigrateArgs};
use super::measure::{self, Notes};
use super::report::{compare, render_comparison, Out, ProgressPrinter};
use super::{
    announce, check_arguments, configure, measure_outcome, plan_unless_told_not_to, record, Ran,
};
use crate::plan::PlanOutput;
use anyhow::{anyhow, bail, Context, Result};
use migsight_libvirt::migrate::{self as lvm, LibvirtMigrateError, Request};
use migsight_libvirt::support::applied_bandwidth_bps;
use migsight_libvirt::{DomainFacts, LibvirtSupport, Virsh};
use migsight_proto::units::HumanBytes;
use migsight_proto::wire::ProfileReport;
use migsight_proto::{Algorithm, Feature};
use migsight_qemu::outcome::Meter;
use migsight_qemu::HostSupport;
use std::time::Duration;

/// The source domain and its QEMU process.
struct Domain {
    virsh: Virsh,
    facts: DomainFacts,
    pid: u32,
    args: Vec<String>,
}

pub fn run(a: MigrateArgs, name: &str) -> Result<()> {
    let out = Out { json: a.json };
    check_arguments(&a)?;
    let dom = find_domain(&a, name)?;
    let support = discover(&dom)?;
    refuse_before_libvirt(&a, &support)?;
    let before = measure::Before::start(dom.pid, a.guest_ops);
    let planned = plan_unless_told_not_to(&a)?;
    let baseline = before.finish(
        planned
            .as_ref()
            .and_then(|(r, _)| r.features.get(Feature::VmCpuUtil)),
    );
    let algorithm = choose(&a, planned.as_ref(), &support)?;
    announce(&out, &a, planned.as_ref(), algorithm);
    let cfg = configure_for_libvirt(&a, algorithm);
    let request = request(&a, &dom, &support, &cfg)?;
    show_setup(&out, &a, &dom, &support, &cfg, &request);
    let loopback = destination_is_local(&a);
    let (ran, lv) = run_migration(&out, &a, &dom, &cfg, &request, &baseline, loopback)?;
    // Where the guest runs now, when on this host (its guest-ops page).
    let dst_pid = if ran.outcome.converged {
        dom.facts.find_pid()
    } else {
        None
    };
    let (measured, actual, notes) = measure_outcome(&ran, &baseline, dst_pid, dom.pid);
    out.say(&format!("\n{}", ending(&ran, &dom, &a)));
    if let Some(s) = &lv.completed {
        out.say(&format!(
            "libvirt's completed job ({}): time_elapsed {} ms, downtime {} ms, memory_processed {} B, iterations {}, post-copy requests {}",
            lv.stats_from,
            opt(s.time_elapsed_ms()),
            opt(s.downtime_ms()),
            opt(s.memory_processed()),
            opt(s.iterations()),
            opt(s.postcopy_requests()),
        ));
    }
    let comparison = comparison(planned.as_ref(), algorithm, &actual, &notes);
    if !ran.outcome.failed {
        out.say(&render_comparison(algorithm, &comparison));
    }
    let ram_bytes = dom.facts.memory_kib * 1024;
    let outcome_row = record(
        &out,
        &a,
        planned.as_ref(),
        (dom.pid, ram_bytes, "libvirt"),
        &support.qemu,
        &cfg,
        &ran,
        &measured,
    );
    super::finish(
        &a,
        algorithm,
        planned.as_ref(),
        &ran.outcome,
        comparison,
        outcome_row,
    )
}

fn opt(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "?".into())
}

/// The domain on the source libvirt, and the QEMU process that runs it.
fn find_domain(a: &MigrateArgs, name: &str) -> Result<Domain> {
    let uri = a
        .connect
        .clone()
        .unwrap_or_else(migsight_libvirt::default_uri);
    let virsh = Virsh::new(&uri);
    let facts = DomainFacts::query(&virsh, name)
        .with_context(|| format!("asking libvirt at {uri} about domain {name:?}"))?;
    let state = migsight_libvirt::domain::state(&virsh, name)?;
    if state != "running" {
        bail!("libvirt domain {name:?} is {state}, not running: only a running VM migrates live");
    }
    let pid = facts.find_pid().ok_or_else(|| {
        anyhow!(
            "no QEMU process on this host has -uuid {} (libvirt domain {name:?}): migsight migrate runs on the source host",
            facts.uuid
        )
    })?;
    let args = migsight_agent::vm::cmdline(pid).unwrap_or_default();
    Ok(Domain {
        virsh,
        facts,
        pid,
        args,
    })
}

/// What this libvirt can run on this QEMU (the QEMU's view from its binary
/// and command line, as in pid-only profiling).
fn discover(dom: &Domain) -> Result<LibvirtSupport> {
    let exe = std::path::PathBuf::from(format!("/proc/{}/exe", dom.pid));
    let qemu = migsight_qemu::discovery::binary_version(&exe)
        .ok()
        .map(|v| HostSupport::from_version(v, &dom.args));
    LibvirtSupport::query(&dom.virsh, qemu, Some(dom.facts.accel()))
        .with_context(|| format!("asking libvirt at {} what it can run", dom.virsh.uri))
}

/// An asked algorithm (or combination) that libvirt or QEMU cannot run is
/// refused before anything is profiled or sent to libvirt.
fn refuse_before_libvirt(a: &MigrateArgs, support: &LibvirtSupport) -> Result<()> {
    if let AlgorithmChoice::Given(g) = a.algorithm {
        let cfg = configure_for_libvirt(a, g);
        if let Err(why) = support.migrate_flags(&cfg, extra_channels(a, g)) {
            bail!(
                "refused before libvirt was called: {why}; libvirt {} on QEMU {} offers {}",
                support.libvirt,
                support.qemu.version,
                offered(support)
            );
        }
    }
    Ok(())
}

fn offered(support: &LibvirtSupport) -> String {
    support
        .available()
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--multifd-channels` on top of a non-multifd algorithm.
fn extra_channels(a: &MigrateArgs, algorithm: Algorithm) -> Option<u64> {
    a.multifd_channels.filter(|_| !algorithm.is_multifd())
}

/// The given algorithm, else the best-ranked one libvirt can run.
fn choose(
    a: &MigrateArgs,
    planned: Option<&(ProfileReport, PlanOutput)>,
    support: &LibvirtSupport,
) -> Result<Algorithm> {
    if let AlgorithmChoice::Given(g) = a.algorithm {
        return Ok(g);
    }
    let rec = &planned
        .map(|(_, p)| p)
        .ok_or_else(|| anyhow!("no recommendation to migrate with"))?
        .recommendation;
    let usable = |x: Algorithm| support.unavailable(x).is_none();
    if usable(rec.recommended) {
        return Ok(rec.recommended);
    }
    // A predictor whose agent did not ask libvirt may rank what libvirt
    // cannot run: take the best it can.
    let next = rec
        .ranked
        .iter()
        .map(|r| r.algorithm)
        .find(|x| usable(*x))
        .ok_or_else(|| {
            anyhow!(
                "no ranked algorithm can run through libvirt here; it offers {}",
                offered(support)
            )
        })?;
    eprintln!(
        "migsight: the recommended {} cannot run through libvirt here ({}); using the next best, {next}",
        rec.recommended,
        support.unavailable(rec.recommended).unwrap_or_default()
    );
    Ok(next)
}

/// The migration settings, with the bandwidth libvirt actually applies
/// (it takes whole MiB/s), so the row records what ran.
fn configure_for_libvirt(a: &MigrateArgs, algorithm: Algorithm) -> migsight_qemu::MigrationConfig {
    let mut cfg = configure(a, algorithm);
    cfg.bandwidth_bps = applied_bandwidth_bps(a.bandwidth.bytes_per_s);
    cfg
}

fn request(
    a: &MigrateArgs,
    dom: &Domain,
    support: &LibvirtSupport,
    cfg: &migsight_qemu::MigrationConfig,
) -> Result<Request> {
    let flags = support
        .migrate_flags(cfg, extra_channels(a, cfg.algorithm))
        .map_err(|why| anyhow!("refused before libvirt was called: {why}"))?;
    Ok(Request {
        domain: dom.facts.name.clone(),
        dest_uri: a.to.clone(),
        migrate_uri: a.migrate_uri.clone(),
        flags,
        undefine_source: a.undefine_source,
    })
}

fn show_setup(
    out: &Out,
    a: &MigrateArgs,
    dom: &Domain,
    support: &LibvirtSupport,
    cfg: &migsight_qemu::MigrationConfig,
    req: &Request,
) {
    out.say(&format!(
        "\nSource {} via {} (pid {}, libvirt {}, QEMU {}): {}\nbandwidth {}/s (libvirt: whole MiB/s), downtime-limit {} ms{}\nlibvirt runs: {}",
        a.vm,
        dom.virsh.uri,
        dom.pid,
        support.libvirt,
        support.qemu.version,
        dom.facts.describe(),
        HumanBytes(cfg.bandwidth_bps),
        cfg.downtime_limit_ms,
        if cfg.algorithm.is_multifd() {
            format!(", {} multifd channels", cfg.multifd_channels)
        } else {
            String::new()
        },
        dom.virsh.describe(&req.args())
    ));
}

/// Whether the migration data stays on this host (the wire bytes are then
/// the loopback interface's).
fn destination_is_local(a: &MigrateArgs) -> bool {
    let host_of = |u: &str| -> Option<String> {
        let rest = u.split_once("://")?.1;
        let hostport = rest.split(['/', '?']).next()?;
        let host = hostport.rsplit_once('@').map(|x| x.1).unwrap_or(hostport);
        let host = match host.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        };
        Some(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
    };
    match &a.migrate_uri {
        Some(m) => host_of(m).is_some_and(|h| is_loopback(&h)),
        None => host_of(&a.to).is_some_and(|h| h.is_empty() || is_loopback(&h)),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_migration(
    out: &Out,
    a: &MigrateArgs,
    dom: &Domain,
    cfg: &migsight_qemu::MigrationConfig,
    req: &Request,
    baseline: &measure::Baseline,
    loopback: bool,
) -> Result<(Ran, lvm::Ran)> {
    let cancel = migsight_qemu::cancel::flag();
    let others_before = migsight_agent::vm::other_vms(&[dom.pid]);
    let mut meter = Meter::start(dom.pid, loopback);
    let ops_start = baseline.ops_now(dom.pid);
    let mut printer = ProgressPrinter::new(Some((dom.facts.memory_kib * 1024) as f64));
    out.say(&format!("\nMigrating to {} …", a.to));
    let result = lvm::migrate(
        &dom.virsh,
        req,
        cfg,
        Duration::from_millis(500),
        cancel,
        |p| {
            meter.sample();
            printer.show(p);
        },
    );
    printer.finish();
    let lv = match result {
        Ok(r) => r,
        Err(LibvirtMigrateError::Interrupted) => bail!(
            "interrupted: the libvirt migration job was aborted (virsh domjobabort) and the source VM keeps running (libvirt says: {})",
            migsight_libvirt::domain::state(&dom.virsh, &dom.facts.name).unwrap_or_else(|e| e.to_string())
        ),
        Err(e) => bail!(
            "the libvirt migration could not run: {e}; the source VM keeps running (libvirt says: {})",
            migsight_libvirt::domain::state(&dom.virsh, &dom.facts.name).unwrap_or_else(|e| e.to_string())
        ),
    };
    let costs = meter.finish(lv.outcome.wall, baseline.cpu_percent);
    let others = others_before
        .max(migsight_agent::vm::other_vms(&[dom.pid]))
        .saturating_sub(u32::from(loopback));
    Ok((
        Ran {
            outcome: lv.outcome.clone(),
            costs,
            other_vms: others,
            ops_start,
        },
        lv,
    ))
}

fn ending(ran: &Ran, dom: &Domain, a: &MigrateArgs) -> String {
    let o = &ran.outcome;
    let state = |v: &Virsh| {
        migsight_libvirt::domain::state(v, &dom.facts.name)
            .unwrap_or_else(|e| format!("unknown ({e})"))
    };
    if o.converged {
        format!(
            "Migration completed in {:.1} s; the domain runs on {} (libvirt there says: {}).",
            o.total_time_ms / 1000.0,
            a.to,
            state(&Virsh::new(&a.to))
        )
    } else {
        format!(
            "Migration {}: {}; the source domain is {}.",
            o.status,
            o.error.as_deref().unwrap_or(""),
            state(&dom.virsh)
        )
    }
}

fn comparison(
    planned: Option<&(ProfileReport, PlanOutput)>,
    algorithm: Algorithm,
    actual: &[Option<f64>; 6],
    notes: &Notes,
) -> Vec<super::report::Comparison> {
    let pred = planned.and_then(|(_, p)| {
        p.recommendation
            .prediction
            .algorithms
            .iter()
            .find(|x| x.algorithm == algorithm)
    });
    compare(pred, actual, notes)
}
