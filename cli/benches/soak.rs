//! Load and soak benchmark of the predictor daemon, as installed: the real
//! `migsight predictor` process on a real socket, a model trained on
//! `data/lab.csv`, 500 idle connections held open, 16 clients sending
//! `Recommend` requests as fast as they are answered for 60 s, and a model
//! reload (a new file renamed over the live one, SIGHUP, its outcome read
//! back from `Health`) every second, alternating two models.
//!
//! Prints requests/s, latency p50/p99/p99.9/max, errors, reloads, and the
//! daemon's resident memory before and after (targets: no errors, p99 ≤
//! 5 ms, RSS growth ≤ 10 %).
//!
//! ```sh
//! cargo bench -p migsight --bench soak
//! MIGSIGHT_SOAK_SECONDS=10 cargo bench -p migsight --bench soak   # a quick look
//! ```
//! Settings: `MIGSIGHT_SOAK_SECONDS` (60), `MIGSIGHT_SOAK_CLIENTS` (16),
//! `MIGSIGHT_SOAK_IDLE` (500), `MIGSIGHT_SOAK_RELOAD_MS` (1000; 0: no
//! reloads, to see what they cost); for an A/B against another build,
//! `MIGSIGHT_SOAK_BIN` (the daemon's binary) and `MIGSIGHT_SOAK_PROTOCOL`
//! (the version its requests carry; reloads need 3). The daemon runs with its defaults
//! except `--idle-timeout-s 600`, so the idle connections outlive the run.
//! "Before" is the daemon's RSS after a 5 s warm-up under the same load
//! (reloads included): what it costs to have run at all is not growth.

use migsight_proto::frame;
use migsight_proto::wire::{
    Client, Objective, PredictRequest, RecommendRequest, Request, RequestBody, Response, Sla,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_migsight");

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (resident, peak resident) KiB of a process.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn train(out: &Path, seed: &str) {
    let st = Command::new(BIN)
        .args(["train", "--data"])
        .arg(repo().join("data/lab.csv"))
        .arg("--out")
        .arg(out)
        .args(["--seed", seed])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "training failed");
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn last_reload(socket: &Path) -> Option<(u64, bool, String)> {
    let mut c = Client::connect(socket).await.ok()?;
    match c.call(RequestBody::Health).await.ok()? {
        Response::Health(h) => h.last_reload.map(|r| (r.generation, r.loaded, r.message)),
        _ => None,
    }
}

/// What a run measured.
struct Report {
    lat: Vec<f64>,
    elapsed: f64,
    errors: u64,
    reloads_ok: u64,
    reloads_failed: u64,
    /// (resident, peak) KiB after start, after the warm-up, at the end.
    started: (u64, u64),
    before: (u64, u64),
    after: (u64, u64),
    /// Resident KiB at each second of the run.
    timeline: Vec<u64>,
    closed: usize,
}

fn main() {
    // `cargo bench` passes --bench; nothing else is understood.
    let seconds = setting("MIGSIGHT_SOAK_SECONDS", 60);
    let clients = setting("MIGSIGHT_SOAK_CLIENTS", 16) as usize;
    let idle = setting("MIGSIGHT_SOAK_IDLE", 500) as usize;
    let reload_every = Duration::from_millis(setting("MIGSIGHT_SOAK_RELOAD_MS", 1000));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let models = [d.join("a.msm"), d.join("b.msm")];
    eprintln!("soak: training two models on data/lab.csv …");
    train(&models[0], "42");
    train(&models[1], "7");
    let live = d.join("model.msm");
    std::fs::copy(&models[0], &live).unwrap();
    let socket = d.join("predictor.sock");
    let daemon_bin = std::env::var("MIGSIGHT_SOAK_BIN").unwrap_or_else(|_| BIN.to_string());
    let mut daemon = Command::new(&daemon_bin)
        .args(["predictor", "--model"])
        .arg(&live)
        .arg("--socket")
        .arg(&socket)
        .args(if daemon_bin == BIN {
            &["--idle-timeout-s", "600"][..]
        } else {
            &[][..]
        })
        .env("MIGSIGHT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = daemon.id();
    let t0 = Instant::now();
    while !socket.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let features =
        migsight_predictor::data::read_features_json(&repo().join("examples/features.json"))
            .unwrap();
    let rec = RecommendRequest {
        predict: PredictRequest::new(features, 125e6, 300.0),
        sla: Sla {
            max_downtime_ms: Some(300.0),
            ..Sla::default()
        },
        objective: Objective::Time,
    };
    let mut req = Request::new(RequestBody::Recommend(rec.clone()));
    req.version = setting("MIGSIGHT_SOAK_PROTOCOL", req.version.into()) as u32;
    let request = frame::encode(&req).unwrap();

    let report = rt.block_on(async {
        // The idle crowd.
        let mut idlers = Vec::with_capacity(idle);
        for _ in 0..idle {
            idlers.push(tokio::net::UnixStream::connect(&socket).await.unwrap());
        }
        let started = memory_kib(pid);
        let c = Client::connect(&socket).await;
        drop(c);
        let stop = Arc::new(AtomicBool::new(false));
        // Latencies of the warm-up are not kept.
        let warm = Arc::new(AtomicBool::new(true));
        let errors = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (socket, request, stop, errors, warm) = (
                socket.clone(),
                request.clone(),
                stop.clone(),
                errors.clone(),
                warm.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 20);
                let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = async {
                        s.write_all(&request).await.ok()?;
                        let p = frame::read_frame(&mut s).await.ok()??;
                        match frame::decode::<Response>(&p).ok()? {
                            Response::Recommendation(_) => Some(()),
                            _ => None,
                        }
                    }
                    .await;
                    match ok {
                        Some(()) if warm.load(Ordering::Relaxed) => {}
                        Some(()) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                        None => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            // Start over on a fresh connection.
                            match tokio::net::UnixStream::connect(&socket).await {
                                Ok(n) => s = n,
                                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                            }
                        }
                    }
                }
                lat
            }));
        }
        // Reloads every second, from a file renamed over the live one.
        let reloader = {
            let (socket, live, models, stop) =
                (socket.clone(), live.clone(), models.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut last = last_reload(&socket).await.map_or(0, |r| r.0);
                let mut k = 1;
                while !stop.load(Ordering::Relaxed) && !reload_every.is_zero() {
                    tokio::time::sleep(reload_every).await;
                    let staged = live.with_extension("staged");
                    std::fs::copy(&models[k % 2], &staged).unwrap();
                    std::fs::rename(&staged, &live).unwrap();
                    // SAFETY: signalling the daemon this benchmark started.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
                    let t = Instant::now();
                    let outcome = loop {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        match last_reload(&socket).await {
                            Some(r) if r.0 > last => break Some(r),
                            _ if t.elapsed() > Duration::from_secs(5) => break None,
                            _ => {}
                        }
                    };
                    match outcome {
                        Some((g, true, _)) => {
                            ok += 1;
                            last = g;
                        }
                        Some((g, false, why)) => {
                            eprintln!("soak: reload refused: {why}");
                            failed += 1;
                            last = g;
                        }
                        None => failed += 1,
                    }
                    k += 1;
                }
                (ok, failed)
            })
        };
        // Warm-up under the full load, then the measured run.
        tokio::time::sleep(Duration::from_secs(5)).await;
        warm.store(false, Ordering::Relaxed);
        let before = memory_kib(pid);
        let start = Instant::now();
        let mut timeline = Vec::new();
        for i in 1..=seconds {
            tokio::time::sleep_until((start + Duration::from_secs(i)).into()).await;
            timeline.push(memory_kib(pid).0);
        }
        stop.store(true, Ordering::Relaxed);
        let mut lat: Vec<f64> = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed().as_secs_f64();
        let (reloads_ok, reloads_failed) = reloader.await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = memory_kib(pid);
        // Idle connections the daemon closed (to make room, or otherwise).
        let mut closed = 0;
        for s in &idlers {
            let mut b = [0u8; 1];
            if matches!(s.try_read(&mut b), Ok(0)) {
                closed += 1;
            }
        }
        lat.sort_by(f64::total_cmp);
        Report {
            lat,
            elapsed,
            errors: errors.load(Ordering::Relaxed),
            reloads_ok,
            reloads_failed,
            started,
            before,
            after,
            timeline,
            closed,
        }
    });
    let Report {
        lat,
        elapsed,
        errors,
        reloads_ok,
        reloads_failed,
        started,
        before,
        after,
        timeline,
        closed,
    } = report;
    let _ = daemon.kill();
    let _ = daemon.wait();
    let growth = after.0 as f64 / before.0 as f64 - 1.0;
    println!(
        "soak: {seconds} s after a 5 s warm-up, {clients} clients, {idle} idle connections ({closed} closed by the daemon to make room), a reload every {reload_every:?}"
    );
    println!(
        "  {} Recommend requests, {:.0} req/s; latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.1} ms",
        lat.len(),
        lat.len() as f64 / elapsed,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!("  errors {errors}; reloads {reloads_ok} loaded, {reloads_failed} failed");
    let mib = |k: u64| k as f64 / 1024.0;
    let at = |q: f64| {
        timeline
            .get(((timeline.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "  predictor RSS {:.1} MiB after start, {:.1} MiB after the warm-up (before), {:.1} MiB at the end (after, {:+.1} %), peak {:.1} MiB; at 25/50/75 % of the run {:.1} / {:.1} / {:.1} MiB",
        mib(started.0),
        mib(before.0),
        mib(after.0),
        growth * 100.0,
        mib(after.1),
        mib(at(0.25)),
        mib(at(0.5)),
        mib(at(0.75))
    );
    println!(
        "  targets: errors 0 ({}), p99 <= 5 ms ({}), RSS growth <= 10 % ({})",
        if errors == 0 && reloads_failed == 0 {
            "met"
        } else {
            "NOT met"
        },
        if percentile(&lat, 0.99) <= 5.0 {
            "met"
        } else {
            "NOT met"
        },
        if growth <= 0.10 { "met" } else { "NOT met" }
    );
}
