//! Overhead and accuracy benchmark of the agent vs QEMU's calc-dirty-rate
//! (not a timed test): `cargo bench -p migsight-agent --bench overhead`.
//!
//! For a 512 MiB and a 1 GiB TCG guest running the synthetic workload
//! unthrottled (RATE=max with some compute per page write, so its ops/s is
//! sensitive to stolen CPU), rounds of three equal windows are run:
//! nothing (baseline), the agent's `profile` (QEMU cross-check off), and
//! QEMU's `calc-dirty-rate` page-sampling repeated every second. Measured:
//! the agent's own CPU (thread CPU time) per second and per GiB, guest ops/s
//! against the baseline, QEMU's extra process CPU during calc-dirty-rate, and
//! both dirty-rate errors against the workload's own distinct pages/s.
//! Medians over the rounds are printed. Env: MIGSIGHT_BENCH_ROUNDS (3),
//! MIGSIGHT_BENCH_WINDOW_S (8), MIGSIGHT_BENCH_PARAMS (workload).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use migsight_agent::procfs::{process_cpu_seconds, thread_cpu_seconds};
use migsight_agent::{profile, ProfileConfig, VmTarget};
use migsight_opspage::{OFF_DISTINCT_LAST_SEC, OFF_OPS};
use migsight_proto::Feature;
use migsight_qemu::qmp::Qmp;
use serde_json::json;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const MIB: f64 = 1_048_576.0;

fn median(mut v: Vec<f64>) -> f64 {
    migsight_proto::stats::median(&mut v).unwrap_or(f64::NAN)
}

struct Window {
    ops_per_s: f64,
    /// Guest ops per CPU second of the vCPU threads: insensitive to the host
    /// stealing the vCPU's core, sensitive to interference (cache, locks).
    ops_per_vcpu_s: f64,
    distinct_per_s: f64,
}

/// Runs `f` while sampling the workload's counters; returns what `f` returns.
fn observe<T>(ops: &OpsPage, pid: u32, secs: f64, f: impl FnOnce() -> T) -> (Window, T) {
    let ops0 = ops.get(OFF_OPS);
    let v0 = vcpu_cpu(pid);
    let t0 = Instant::now();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let off = ops.offset;
    let sampler = std::thread::spawn(move || {
        let o = OpsPage {
            mem: migsight_agent::GuestMemory::open(pid).unwrap(),
            offset: off,
        };
        let mut v = Vec::new();
        std::thread::sleep(Duration::from_millis(1100));
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            v.push(o.get(OFF_DISTINCT_LAST_SEC) as f64);
            std::thread::sleep(Duration::from_millis(1000));
        }
        v
    });
    let out = f();
    let el = t0.elapsed().as_secs_f64().max(secs * 0.5);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let d = sampler.join().unwrap();
    let dops = (ops.get(OFF_OPS) - ops0) as f64;
    let w = Window {
        ops_per_s: dops / el,
        ops_per_vcpu_s: dops / (vcpu_cpu(pid) - v0).max(1e-3),
        distinct_per_s: d.iter().sum::<f64>() / d.len().max(1) as f64,
    };
    (w, out)
}

/// CPU seconds of the vCPU threads.
fn vcpu_cpu(pid: u32) -> f64 {
    migsight_agent::procfs::threads(pid)
        .unwrap()
        .iter()
        .filter(|t| t.name.starts_with("CPU "))
        .map(|t| t.cpu_seconds)
        .sum()
}

/// CPU seconds of QEMU outside its vCPU threads (main loop, I/O, RCU and
/// the short-lived `get_dirtyrate` thread, whose time stays in the process
/// total after it exits).
fn qemu_non_vcpu_cpu(pid: u32) -> f64 {
    let total = process_cpu_seconds(pid).unwrap();
    let vcpu: f64 = migsight_agent::procfs::threads(pid)
        .unwrap()
        .iter()
        .filter(|t| t.name.starts_with("CPU "))
        .map(|t| t.cpu_seconds)
        .sum();
    total - vcpu
}

/// QEMU calc-dirty-rate page-sampling, 1 s measurements back to back for `secs`.
fn qemu_dirty_rates(qmp: &std::path::Path, secs: u64) -> Vec<f64> {
    let mut q = Qmp::connect(qmp, Duration::from_secs(5)).unwrap();
    let mut vals = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        q.execute(
            "calc-dirty-rate",
            Some(json!({"calc-time": 1, "mode": "page-sampling"})),
        )
        .unwrap();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let r = q.execute("query-dirty-rate", None).unwrap();
            if r["status"] == "measured" {
                vals.push(r["dirty-rate"].as_f64().unwrap_or(f64::NAN));
                break;
            }
        }
    }
    vals
}

fn main() {
    if qemu_or_skip("overhead benchmark").is_none() {
        return;
    }
    let pairs: usize = std::env::var("MIGSIGHT_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let win: u64 = std::env::var("MIGSIGHT_BENCH_WINDOW_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let params = std::env::var("MIGSIGHT_BENCH_PARAMS").unwrap_or_else(|_| {
        "MODE=synthetic WS_MB=128 RATE=max COMPUTE=3000 BYTES=256 ENTROPY=8 PATTERN=random".into()
    });
    let _ = guest_image();
    let _lock = qemu_lock();
    println!("workload: {params}");
    println!("(1) one default 20 s profile: agent CPU and dirty-rate error; (2) 20 s of QEMU calc-dirty-rate page-sampling: \
              QEMU CPU outside vCPUs and its error; (3) {pairs} rounds of [{win} s nothing, {win} s agent, {win} s calc-dirty-rate]: guest ops/s ratios\n");
    let mut summary = Vec::new();
    for (mem, gib) in [("512M", 0.5f64), ("1G", 1.0)] {
        let g = Guest::boot(GuestSpec {
            name: format!("msbench-{mem}"),
            mem,
            params: Some(params.clone()),
            qmp: true,
            numa_nodes: 0,
            memfd: false,
        });
        let pid = g.pid();
        let qmp = g.qmp.clone().unwrap();
        let ops = OpsPage::wait(pid, Duration::from_secs(120));
        std::thread::sleep(Duration::from_secs(3));
        let target = VmTarget::new(pid, Some(qmp.clone()));

        // (1) The agent, default configuration (QEMU cross-check off).
        let cfg = ProfileConfig {
            qemu_dirty_rate: false,
            ..Default::default()
        };
        let (w, (rep, cpu)) = observe(&ops, pid, 20.0, || {
            let c0 = thread_cpu_seconds();
            let r = profile(&target, &cfg, &AtomicBool::new(false)).expect("profile");
            (r, thread_cpu_seconds() - c0)
        });
        let secs = rep.window_ms as f64 / 1000.0;
        let agent_pct = cpu / secs * 100.0;
        let truth = w.distinct_per_s * 4096.0 / MIB;
        let pdr = rep.features.get(Feature::VmPdr).unwrap();
        let agent_err = (pdr - truth) / truth * 100.0;
        let pdr_se = rep
            .errors
            .iter()
            .find(|e| e.feature == Feature::VmPdr)
            .map(|e| e.std_error)
            .unwrap_or(0.0);
        println!(
            "{mem}: agent {:.2} % of one core = {:.2} %/GiB ({} pages sampled, {:.1} % of RAM); dirty rate truth {:.2} MiB/s, agent {:.2} ± {:.2} ({:+.1} %)",
            agent_pct, agent_pct / gib, rep.sampled_pages, rep.sampled_pages as f64 * 4096.0 / (gib * 1024.0 * MIB) * 100.0,
            truth, pdr, pdr_se, agent_err
        );

        // (2) QEMU's calc-dirty-rate: cost and error, against an equal baseline.
        let n0 = qemu_non_vcpu_cpu(pid);
        std::thread::sleep(Duration::from_secs(20));
        let base_cpu = (qemu_non_vcpu_cpu(pid) - n0) / 20.0;
        let n0 = qemu_non_vcpu_cpu(pid);
        let t0 = Instant::now();
        let (wq, qvals) = observe(&ops, pid, 20.0, || qemu_dirty_rates(&qmp, 20));
        let q_cpu = (qemu_non_vcpu_cpu(pid) - n0) / t0.elapsed().as_secs_f64();
        let qtruth = wq.distinct_per_s * 4096.0 / MIB;
        let qmean = qvals.iter().sum::<f64>() / qvals.len().max(1) as f64;
        let qemu_err = (qmean - qtruth) / qtruth * 100.0;
        let qemu_extra = (q_cpu - base_cpu) * 100.0;
        println!(
            "{mem}: QEMU calc-dirty-rate page-sampling x{}: {:.2} MiB/s vs truth {:.2} ({:+.1} %); QEMU non-vCPU CPU {:.2} % -> {:.2} % of a core ({:+.2})",
            qvals.len(), qmean, qtruth, qemu_err, base_cpu * 100.0, q_cpu * 100.0, qemu_extra
        );

        // (3) Guest throughput, interleaved to cancel the host's load drift.
        let (mut r_agent, mut r_qemu, mut e_agent, mut e_qemu) = (vec![], vec![], vec![], vec![]);
        let short = ProfileConfig {
            window: Duration::from_secs(win),
            qemu_dirty_rate: false,
            ..Default::default()
        };
        for round in 0..pairs {
            let (b, ()) = observe(&ops, pid, win as f64, || {
                std::thread::sleep(Duration::from_secs(win))
            });
            let (a, _) = observe(&ops, pid, win as f64, || {
                profile(&target, &short, &AtomicBool::new(false)).expect("profile")
            });
            let (q, _) = observe(&ops, pid, win as f64, || qemu_dirty_rates(&qmp, win));
            r_agent.push(a.ops_per_s / b.ops_per_s);
            r_qemu.push(q.ops_per_s / b.ops_per_s);
            e_agent.push(a.ops_per_vcpu_s / b.ops_per_vcpu_s);
            e_qemu.push(q.ops_per_vcpu_s / b.ops_per_vcpu_s);
            println!(
                "{mem} round {round}: ops/s nothing {:.0}, agent {:.0} ({:+.1} %), calc-dirty-rate {:.0} ({:+.1} %); \
                 ops per vCPU-second nothing {:.0}, agent {:+.1} %, calc-dirty-rate {:+.1} %",
                b.ops_per_s, a.ops_per_s, (a.ops_per_s / b.ops_per_s - 1.0) * 100.0, q.ops_per_s, (q.ops_per_s / b.ops_per_s - 1.0) * 100.0,
                b.ops_per_vcpu_s, (a.ops_per_vcpu_s / b.ops_per_vcpu_s - 1.0) * 100.0, (q.ops_per_vcpu_s / b.ops_per_vcpu_s - 1.0) * 100.0
            );
        }
        let drop_agent = (1.0 - median(r_agent)) * 100.0;
        let drop_qemu = (1.0 - median(r_qemu)) * 100.0;
        let edrop_agent = (1.0 - median(e_agent)) * 100.0;
        let edrop_qemu = (1.0 - median(e_qemu)) * 100.0;
        summary.push((
            mem,
            agent_pct / gib,
            drop_agent,
            edrop_agent,
            agent_err,
            qemu_err,
            qemu_extra,
            drop_qemu,
            edrop_qemu,
            rep.sampled_pages,
        ));
        drop(g);
    }
    // (4) A known dirty rate: RATE pages/s written sequentially over a larger
    // working set, so exactly RATE distinct pages per second.
    let known_rate: f64 = std::env::var("MIGSIGHT_BENCH_KNOWN_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000.0);
    let known =
        format!("MODE=synthetic WS_MB=128 RATE={known_rate} BYTES=512 ENTROPY=8 PATTERN=seq");
    let known_mib = known_rate * 4096.0 / MIB;
    println!("\nknown dirty rate: {known} = {known_mib:.3} MiB/s; {pairs} rounds of [20 s agent (default config), 20 s calc-dirty-rate page-sampling]");
    let mut known_summary = Vec::new();
    for mem in ["512M", "1G"] {
        let g = Guest::boot(GuestSpec {
            name: format!("msbench-known-{mem}"),
            mem,
            params: Some(known.clone()),
            qmp: true,
            numa_nodes: 0,
            memfd: false,
        });
        let pid = g.pid();
        let qmp = g.qmp.clone().unwrap();
        let _ops = OpsPage::wait(pid, Duration::from_secs(120));
        std::thread::sleep(Duration::from_secs(3));
        let target = VmTarget::new(pid, Some(qmp.clone()));
        let cfg = ProfileConfig {
            qemu_dirty_rate: false,
            ..Default::default()
        };
        let (mut ea, mut eq) = (vec![], vec![]);
        for round in 0..pairs.min(3) {
            let r = profile(&target, &cfg, &AtomicBool::new(false)).expect("profile");
            let a = r.features.get(Feature::VmPdr).unwrap();
            let se = r
                .errors
                .iter()
                .find(|e| e.feature == Feature::VmPdr)
                .map(|e| e.std_error)
                .unwrap_or(0.0);
            let q = qemu_dirty_rates(&qmp, 20);
            let qm = q.iter().sum::<f64>() / q.len().max(1) as f64;
            ea.push((a - known_mib) / known_mib * 100.0);
            eq.push((qm - known_mib) / known_mib * 100.0);
            println!(
                "{mem} round {round}: agent {a:.3} ± {se:.3} MiB/s ({:+.1} %, {} pages), QEMU page-sampling mean of {} = {qm:.3} MiB/s ({:+.1} %; individual {:?})",
                ea[round], r.sampled_pages, q.len(), eq[round], q
            );
        }
        known_summary.push((
            mem,
            median(ea.iter().map(|x| x.abs()).collect()),
            median(eq.iter().map(|x| x.abs()).collect()),
        ));
        drop(g);
    }
    println!("\nknown-rate dirty-rate errors (median |error| over rounds): ");
    for (mem, a, q) in known_summary {
        println!("{mem:<6} agent {a:.1} %   QEMU calc-dirty-rate page-sampling {q:.1} %");
    }

    println!("\nsummary (throughput drops are medians of per-round ratios; errors are signed, vs the workload's distinct pages/s):");
    println!(
        "{:<6} {:>15} {:>15} {:>17} {:>11} {:>10} {:>12} {:>15} {:>17} {:>8}",
        "guest",
        "agent %core/GiB",
        "agent ops drop%",
        "agent ops/vCPUs%",
        "agent err%",
        "qemu err%",
        "qemu +%core",
        "qemu ops drop%",
        "qemu ops/vCPUs%",
        "sample"
    );
    for (mem, c, d, ed, ae, qe, qc, qd, eqd, s) in summary {
        println!("{mem:<6} {c:>15.2} {d:>15.2} {ed:>17.2} {ae:>11.1} {qe:>10.1} {qc:>12.2} {qd:>15.2} {eqd:>17.2} {s:>8}");
    }
    println!("(ops drop: raw guest ops/s; ops/vCPUs: guest ops per vCPU-thread CPU second, which cancels the host stealing the vCPU's core)");
    println!("\ntargets: agent <= 2 % of one core per GiB; guest throughput drop <= 2 %");
}
