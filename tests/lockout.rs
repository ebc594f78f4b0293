//! No lock-out: both daemons, as real processes on real sockets, facing the
//! unfriendly clients of issue #14 — hundreds of idle connections, slowloris
//! senders (1 byte a second), clients that pipeline requests and never read
//! the replies, and frames announced at the 1 MiB cap — while a legitimate
//! `migsight predict --socket` (predictor) or `migsight plan` (agent) must
//! get its answer, or a typed `Busy`, within 1 s, every time.
//!
//! The figures (latencies, how many attackers were closed, memory) are
//! printed; run with `--nocapture` to see them.

mod support;

use migsight_proto::frame;
use migsight_proto::wire::{
    ErrorKind, Objective, PredictRequest, RecommendRequest, Request, RequestBody, Response, Sla,
};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

const ATTACKERS: usize = 600;
const LEGIT_TRIES: usize = 5;

/// Raises the open-file limit; false (after a loud notice) when it cannot
/// cover the hundreds of sockets these tests hold.
fn enough_files(test: &str) -> bool {
    let n = raise_fd_limit();
    if n < 2048 {
        eprintln!(
            "\n!!! SKIPPED {test}: the open-file limit is {n} (ulimit -Hn); it needs 2048; NOT tested\n"
        );
        return false;
    }
    true
}

/// Unfriendly connections held open by a background runtime until dropped.
struct Crowd {
    rt: tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    /// Connections the server has closed so far.
    closed: Arc<AtomicUsize>,
}

#[derive(Clone, Copy, Debug)]
enum Attack {
    /// Connect and send nothing.
    Idle,
    /// Announce a 1 MiB frame, then send one byte a second.
    Slowloris,
}

impl Crowd {
    fn open(socket: &Path, n: usize, attack: Attack) -> Crowd {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicUsize::new(0));
        let opened = Arc::new(AtomicUsize::new(0));
        for _ in 0..n {
            let (socket, stop, closed, opened) = (
                socket.to_path_buf(),
                stop.clone(),
                closed.clone(),
                opened.clone(),
            );
            rt.spawn(async move {
                let mut s = match UnixStream::connect(&socket).await {
                    Ok(s) => s,
                    Err(_) => {
                        opened.fetch_add(1, Ordering::Relaxed);
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let mut bytes = frame::MAX_FRAME_LEN.to_be_bytes().to_vec();
                bytes.extend(std::iter::repeat_n(7u8, 1 << 12));
                let mut next = 0;
                let mut buf = [0u8; 256];
                while !stop.load(Ordering::Relaxed) {
                    if let Attack::Slowloris = attack {
                        if s.write_all(&bytes[next..next + 1]).await.is_err() {
                            break;
                        }
                        next = (next + 1) % bytes.len();
                    }
                    // Has the server closed us? (EOF or an error reply then EOF.)
                    match tokio::time::timeout(
                        Duration::from_millis(1000),
                        tokio::io::AsyncReadExt::read(&mut s, &mut buf),
                    )
                    .await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        _ => {}
                    }
                }
                closed.fetch_add(1, Ordering::Relaxed);
                // Held until the crowd is dropped, like a client that never
                // notices: the server must not count it.
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                drop(s);
            });
        }
        let t0 = Instant::now();
        while opened.load(Ordering::Relaxed) < n {
            assert!(t0.elapsed() < Duration::from_secs(30), "could not open {n}");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Let the slow senders start their frames.
        std::thread::sleep(Duration::from_millis(1500));
        Crowd { rt, stop, closed }
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::Relaxed)
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        let _ = &self.rt;
    }
}

/// A legitimate client's tries: each must end within 1 s with its answer
/// or a typed Busy; returns the slowest.
fn legit_tries(what: &str, mut one: impl FnMut() -> (Duration, Result<(), String>)) -> Duration {
    let mut slowest = Duration::ZERO;
    let mut busy = 0;
    for i in 0..LEGIT_TRIES {
        let (took, r) = one();
        slowest = slowest.max(took);
        match r {
            Ok(()) => {}
            Err(e) if e.contains("Busy") => busy += 1,
            Err(e) => panic!("{what}, try {i}: no answer after {took:?}: {e}"),
        }
        assert!(
            took < Duration::from_secs(1),
            "{what}, try {i}: took {took:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{what}: {LEGIT_TRIES}/{LEGIT_TRIES} answered, {busy} of them Busy, slowest {:.0} ms",
        slowest.as_secs_f64() * 1e3
    );
    slowest
}

fn predictor_client(socket: &Path) -> impl FnMut() -> (Duration, Result<(), String>) + '_ {
    move || {
        let (ok, out, err, took) = predict_over(socket, &[]);
        let r = if ok && out.contains("recommended") {
            Ok(())
        } else {
            Err(err)
        };
        (took, r)
    }
}

/// `migsight plan` for a VM that cannot exist: the agent answers at once
/// with `VmNotFound`, which is the answer this client waits for.
fn agent_client(socket: &Path) -> impl FnMut() -> (Duration, Result<(), String>) + '_ {
    move || {
        let (ok, _, err, took) = run(&[
            "plan",
            "pid:4000000000",
            "--bandwidth",
            "1Gbit",
            "--agent",
            socket.to_str().unwrap(),
        ]);
        let r = if !ok && err.contains("VmNotFound") {
            Ok(())
        } else {
            Err(err)
        };
        (took, r)
    }
}

#[test]
fn idle_and_slowloris_crowds_do_not_lock_out_either_daemon() {
    if !enough_files("idle_and_slowloris_crowds_do_not_lock_out_either_daemon") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.msm");
    small_model(&model, 1);
    let mut predictor = Daemon::predictor(dir.path(), &model, &[]);
    let mut agent = Daemon::agent(dir.path(), &predictor.socket, &[]);
    for attack in [Attack::Idle, Attack::Slowloris] {
        for which in ["predictor", "agent"] {
            let socket = if which == "predictor" {
                predictor.socket.clone()
            } else {
                agent.socket.clone()
            };
            let crowd = Crowd::open(&socket, ATTACKERS, attack);
            let what = format!("{which} with {ATTACKERS} {attack:?} connections");
            if which == "predictor" {
                legit_tries(&what, predictor_client(&socket));
            } else {
                legit_tries(&what, agent_client(&socket));
            }
            eprintln!(
                "  {} of the {ATTACKERS} were closed by the {which} to make room",
                crowd.closed()
            );
            drop(crowd);
        }
    }
    assert!(predictor.alive() && agent.alive());
}

fn recommend_frame() -> Vec<u8> {
    let features =
        migsight_predictor::data::read_features_json(&repo().join("examples/features.json"))
            .unwrap();
    frame::encode(&Request::new(RequestBody::Recommend(RecommendRequest {
        predict: PredictRequest::new(features, 125e6, 300.0),
        sla: Sla::default(),
        objective: Objective::Time,
    })))
    .unwrap()
}

/// Clients that pipeline requests and never read: each is cut off by the
/// write deadline, and meanwhile others are answered.
#[test]
fn clients_that_never_read_their_replies_are_cut_off() {
    if !enough_files("clients_that_never_read_their_replies_are_cut_off") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.msm");
    small_model(&model, 2);
    let predictor = Daemon::predictor(dir.path(), &model, &["--write-timeout-s", "2"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = 512;
    let req = recommend_frame();
    let t0 = Instant::now();
    let mut conns = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..n {
            let s = UnixStream::connect(&predictor.socket).await.unwrap();
            v.push(s);
        }
        v
    });
    // Fill each connection until the daemon stops reading it (its replies
    // fill our receive buffer and its send buffer; then it blocks writing).
    let mut sent = 0usize;
    for s in &mut conns {
        let mut stalled = 0;
        while stalled < 20 {
            match s.try_write(&req) {
                Ok(n) if n == req.len() => sent += 1,
                Ok(_) => break, // a partial frame: enough
                Err(_) => {
                    stalled += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    eprintln!(
        "{n} pipelining connections sent {sent} requests without reading in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let slowest = legit_tries(
        "predictor with 512 clients that never read",
        predictor_client(&predictor.socket),
    );
    assert!(slowest < Duration::from_secs(1));
    // Within the write deadline (2 s) and a margin, every one is closed:
    // the daemon holds only its listener and a few files.
    let t0 = Instant::now();
    let base = 16;
    loop {
        let fds = predictor.open_fds();
        if fds < base {
            eprintln!(
                "all {n} closed by the daemon {:.1} s after the last write ({fds} fds left)",
                t0.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{fds} descriptors still open 15 s later"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// 500 connections announcing 1 MiB frames, then sending either slowly (1
/// byte a second) or most of the frame at once and stalling: the
/// predictor's resident memory stays under the documented 128 MiB.
#[test]
fn slow_frames_cannot_make_the_predictor_hold_memory() {
    if !enough_files("slow_frames_cannot_make_the_predictor_hold_memory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.msm");
    small_model(&model, 3);
    let predictor = Daemon::predictor(dir.path(), &model, &[]);
    let (ok, _, err, _) = predict_over(&predictor.socket, &[]);
    assert!(ok, "{err}");
    let (rss0, _) = predictor.memory_kib();
    let n = 500;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let busy = Arc::new(AtomicUsize::new(0));
    // Most of a frame at once, then a stall: real bytes the daemon must hold.
    let conns: Vec<UnixStream> = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (socket, busy) = (predictor.socket.clone(), busy.clone());
            tasks.push(tokio::spawn(async move {
                let mut s = UnixStream::connect(&socket).await.unwrap();
                let mut bytes = frame::MAX_FRAME_LEN.to_be_bytes().to_vec();
                bytes.resize(4 + frame::MAX_FRAME_LEN as usize - 1, 0x5a);
                if s.write_all(&bytes).await.is_err() {
                    // Refused mid-frame: the reply says why.
                    if let Ok(Ok(Some(p))) =
                        tokio::time::timeout(Duration::from_secs(2), frame::read_frame(&mut s))
                            .await
                    {
                        if let Ok(Response::Error(e)) = frame::decode::<Response>(&p) {
                            if e.kind == ErrorKind::Busy {
                                busy.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                s
            }));
        }
        let mut v = Vec::new();
        for t in tasks {
            v.push(t.await.unwrap());
        }
        v
    });
    std::thread::sleep(Duration::from_millis(500));
    let (rss, hwm) = predictor.memory_kib();
    // A legitimate request is still answered.
    let (ok, _, err, took) = predict_over(&predictor.socket, &[]);
    assert!(ok && took < Duration::from_secs(1), "{err} after {took:?}");
    drop(conns);
    std::thread::sleep(Duration::from_millis(1000));
    let (rss_after, _) = predictor.memory_kib();
    eprintln!(
        "{n} connections × 1 MiB frames: {} refused with Busy (request memory full); predictor RSS {:.1} MiB before, {:.1} MiB under attack (peak {:.1} MiB), {:.1} MiB after they closed",
        busy.load(Ordering::Relaxed),
        rss0 as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    assert!(hwm < 128 * 1024, "peak RSS {hwm} KiB ≥ 128 MiB");

    // Announced at the cap, sent one byte a second: a few KiB each.
    let crowd = Crowd::open(&predictor.socket, n, Attack::Slowloris);
    std::thread::sleep(Duration::from_millis(2000));
    let (rss, hwm2) = predictor.memory_kib();
    eprintln!(
        "{n} slowloris connections announcing 1 MiB: predictor RSS {:.1} MiB (peak so far {:.1} MiB), {} closed",
        rss as f64 / 1024.0,
        hwm2 as f64 / 1024.0,
        crowd.closed()
    );
    assert!(hwm2 < 128 * 1024, "peak RSS {hwm2} KiB ≥ 128 MiB");
}
