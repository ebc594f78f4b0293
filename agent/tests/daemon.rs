//! The agent daemon over a real Unix socket: health, hostile input, profiling
//! a real guest (with two clients joining one run), predictor unavailable,
//! graceful shutdown.

mod common;

use common::*;
use migsight_agent::cli::{bind, serve, AgentArgs};
use migsight_proto::frame;
use migsight_proto::wire::{
    AfterProfile, Client, ClientError, ErrorKind, ProfileRequest, Request, RequestBody, Response,
    VmRef,
};
use migsight_proto::Feature;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn profile_req(vm: VmRef, window_ms: u64, bw: f64, then: AfterProfile) -> RequestBody {
    RequestBody::Profile(ProfileRequest {
        vm,
        window_ms,
        interval_ms: 1000,
        bandwidth_bps: bw,
        downtime_limit_ms: 300.0,
        then,
    })
}

async fn read_reply(s: &mut UnixStream) -> Option<Response> {
    let payload = tokio::time::timeout(Duration::from_secs(10), frame::read_frame(s))
        .await
        .expect("reply timed out")
        .ok()??;
    Some(frame::decode(&payload).expect("reply decodes"))
}

fn err_kind(r: Option<Response>) -> ErrorKind {
    match r {
        Some(Response::Error(e)) => e.kind,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn daemon_over_a_real_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/agent.sock");
    let args = AgentArgs {
        socket: socket.clone(),
        predictor: dir.path().join("predictor.sock"),
        idle_timeout_s: 5,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = bind(&socket).unwrap();
    // Socket 0600, its new directory 0750.
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(socket.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
    // A second agent on the same socket is refused.
    assert!(bind(&socket).is_err());

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(listener, args, async {
        let _ = stop_rx.await;
    }));

    rt.block_on(async {
        // Health.
        let mut c = Client::connect(&socket).await.unwrap();
        match c.call(RequestBody::Health).await.unwrap() {
            Response::Health(h) => {
                assert_eq!(h.service, "agent");
                assert!(!h.ready, "no predictor is running");
            }
            other => panic!("{other:?}"),
        }

        // Garbage payload in a well-formed frame: typed error, connection stays usable.
        let mut s = UnixStream::connect(&socket).await.unwrap();
        let junk = [0xffu8, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3];
        s.write_all(&(junk.len() as u32).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&junk).await.unwrap();
        assert!(matches!(
            err_kind(read_reply(&mut s).await),
            ErrorKind::BadRequest | ErrorKind::UnsupportedVersion
        ));
        // Another protocol version.
        let mut req = Request::new(RequestBody::Health);
        req.version = 77;
        frame::write_frame(&mut s, &req).await.unwrap();
        assert_eq!(
            err_kind(read_reply(&mut s).await),
            ErrorKind::UnsupportedVersion
        );
        // A predictor-only request.
        frame::write_frame(&mut s, &Request::new(RequestBody::ModelInfo))
            .await
            .unwrap();
        assert_eq!(err_kind(read_reply(&mut s).await), ErrorKind::BadRequest);
        // Bad profile parameters.
        frame::write_frame(
            &mut s,
            &Request::new(profile_req(VmRef::Pid(1), 50, 1e8, AfterProfile::Nothing)),
        )
        .await
        .unwrap();
        assert_eq!(err_kind(read_reply(&mut s).await), ErrorKind::BadRequest);
        // The same connection still answers.
        frame::write_frame(&mut s, &Request::new(RequestBody::Health))
            .await
            .unwrap();
        assert!(matches!(
            read_reply(&mut s).await,
            Some(Response::Health(_))
        ));

        // Oversize length prefix: typed error, then the connection is closed.
        let mut s = UnixStream::connect(&socket).await.unwrap();
        s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert_eq!(err_kind(read_reply(&mut s).await), ErrorKind::BadRequest);
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "connection should be closed");

        // Raw text garbage (its first 4 bytes read as a huge length).
        let mut s = UnixStream::connect(&socket).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(err_kind(read_reply(&mut s).await), ErrorKind::BadRequest);

        // A truncated frame and a dropped client do not hurt the server.
        let mut s = UnixStream::connect(&socket).await.unwrap();
        s.write_all(&[0, 0, 0, 50, 1, 2]).await.unwrap();
        drop(s);

        // Unknown VM, non-QEMU process.
        let mut c = Client::connect(&socket).await.unwrap();
        match c
            .call(profile_req(
                VmRef::Pid(4_000_000_000),
                2000,
                1e8,
                AfterProfile::Nothing,
            ))
            .await
        {
            Err(ClientError::Server(e)) => assert_eq!(e.kind, ErrorKind::VmNotFound),
            other => panic!("{other:?}"),
        }
        match c
            .call(profile_req(
                VmRef::Pid(std::process::id()),
                2000,
                1e8,
                AfterProfile::Nothing,
            ))
            .await
        {
            Err(ClientError::Server(e)) => assert_eq!(e.kind, ErrorKind::NotQemu),
            other => panic!("{other:?}"),
        }
        // Still healthy after all that.
        assert!(matches!(
            c.call(RequestBody::Health).await,
            Ok(Response::Health(_))
        ));
    });

    real_guest_part(&rt, &socket, &dir.path().join("predictor.sock"));

    // Graceful shutdown removes the socket.
    stop_tx.send(()).unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await })
        .expect("server did not stop")
        .unwrap()
        .unwrap();
    assert!(!socket.exists(), "socket file left behind");
}

/// A stand-in predictor: answers Health (ready) and Predict (an empty
/// prediction echoing the bandwidth) on `path`.
async fn fake_predictor(path: PathBuf) {
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    loop {
        let (mut s, _) = l.accept().await.unwrap();
        tokio::spawn(async move {
            while let Ok(Some(p)) = frame::read_frame(&mut s).await {
                let req: Request = frame::decode(&p).unwrap();
                let resp = match req.body {
                    RequestBody::Health => Response::Health(migsight_proto::wire::Health {
                        service: "predictor".into(),
                        version: "test".into(),
                        protocol: migsight_proto::wire::PROTOCOL_VERSION,
                        ready: true,
                        uptime_s: 0.0,
                        last_reload: None,
                    }),
                    RequestBody::Predict(pr) => {
                        assert!(pr.features.get(Feature::VmPdr).is_some());
                        Response::Prediction(migsight_proto::wire::Prediction {
                            bandwidth_bps: pr.bandwidth_bps,
                            downtime_limit_ms: pr.downtime_limit_ms,
                            algorithms: vec![],
                            not_predicted: vec![],
                            out_of_domain: vec![],
                            missing_features: vec![],
                            model_family: "fake".into(),
                        })
                    }
                    _ => Response::Error(migsight_proto::wire::ErrorReply::new(
                        ErrorKind::BadRequest,
                        "fake",
                    )),
                };
                frame::write_frame(&mut s, &resp).await.unwrap();
            }
        });
    }
}

fn real_guest_part(rt: &tokio::runtime::Runtime, socket: &Path, predictor: &Path) {
    if qemu_or_skip("daemon_over_a_real_socket (real guest part)").is_none() {
        return;
    }
    let _lock = qemu_lock();
    let g = Guest::boot(GuestSpec {
        name: "msdaemon".into(),
        mem: "256M",
        params: Some("MODE=synthetic WS_MB=32 RATE=2000 BYTES=512 ENTROPY=8 PATTERN=seq".into()),
        qmp: true,
        numa_nodes: 0,
        memfd: false,
    });
    let _ops = OpsPage::wait(g.pid(), Duration::from_secs(90));
    let pid = g.pid();
    rt.block_on(async {
        // Two clients profile the same VM at once: the second joins the first run.
        let s1 = socket.to_path_buf();
        let a = tokio::spawn(async move {
            let mut c = Client::connect(&s1).await.unwrap();
            c.call(profile_req(
                VmRef::Name("msdaemon".into()),
                4000,
                100.0 * 1_048_576.0,
                AfterProfile::Nothing,
            ))
            .await
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut c = Client::connect(socket).await.unwrap();
        let b = c
            .call(profile_req(
                VmRef::Pid(pid),
                4000,
                50.0 * 1_048_576.0,
                AfterProfile::Nothing,
            ))
            .await;
        let a = a.await.unwrap();
        let (ra, rb) = match (a, b) {
            (Ok(Response::Profile(ra)), Ok(Response::Profile(rb))) => (ra, rb),
            other => panic!("{other:?}"),
        };
        assert_eq!(ra.pid, pid);
        assert_eq!(ra.intervals, 4);
        // Joined: the same measurement, with each request's own VM_ptr.
        assert_eq!(
            ra.features.get(Feature::VmPdr),
            rb.features.get(Feature::VmPdr)
        );
        assert_eq!(ra.window_ms, rb.window_ms);
        assert_eq!(ra.features.get(Feature::VmPtr), Some(100.0));
        assert_eq!(rb.features.get(Feature::VmPtr), Some(50.0));
        let pdr = ra.features.get(Feature::VmPdr).unwrap();
        let want = 2000.0 * 4096.0 / 1_048_576.0;
        assert!((pdr - want).abs() / want < 0.25, "pdr {pdr} vs {want}");

        // Predict afterwards with no predictor: PredictorUnavailable, features kept in the message.
        let mut c = Client::connect(socket).await.unwrap();
        match c
            .call(profile_req(
                VmRef::Pid(pid),
                2000,
                1e8,
                AfterProfile::Predict,
            ))
            .await
        {
            Err(ClientError::Server(e)) => {
                assert_eq!(e.kind, ErrorKind::PredictorUnavailable, "{e}");
                assert!(e.message.contains("VM_pdr"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }

        // With a predictor: the prediction is attached and Health says ready.
        tokio::spawn(fake_predictor(predictor.to_path_buf()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut c = Client::connect(socket).await.unwrap();
        match c.call(RequestBody::Health).await {
            Ok(Response::Health(h)) => assert!(h.ready),
            other => panic!("{other:?}"),
        }
        match c
            .call(profile_req(
                VmRef::Pid(pid),
                2000,
                1e8,
                AfterProfile::Predict,
            ))
            .await
        {
            Ok(Response::Profile(r)) => {
                let p = r.prediction.expect("prediction attached");
                assert_eq!(p.model_family, "fake");
                assert_eq!(p.bandwidth_bps, 1e8);
            }
            other => panic!("{other:?}"),
        }
    });
    drop(g);
}

/// Not a test by itself: the daemon process of
/// `sigterm_stops_the_daemon_and_removes_the_socket` (does nothing unless
/// that test spawns this binary with MIGSIGHT_TEST_AGENT_SOCKET set).
#[test]
fn daemon_child_process() {
    if let Ok(sock) = std::env::var("MIGSIGHT_TEST_AGENT_SOCKET") {
        migsight_agent::cli::run(AgentArgs {
            socket: sock.into(),
            predictor: "/nonexistent/predictor.sock".into(),
            ..Default::default()
        })
        .unwrap();
    }
}

#[test]
fn sigterm_stops_the_daemon_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "daemon_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MIGSIGHT_TEST_AGENT_SOCKET", &socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !socket.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "daemon never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Client::connect(&socket).await.unwrap();
        assert!(matches!(
            c.call(RequestBody::Health).await,
            Ok(Response::Health(_))
        ));
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("daemon did not exit on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "socket file left behind");
}
