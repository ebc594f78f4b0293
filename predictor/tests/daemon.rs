//! The daemon over a real Unix socket: every request kind, hostile frames,
//! typed errors on a connection that stays usable, concurrent clients, and
//! SIGHUP reloads with a good and then a bad model file.
//!
//! One test in its own process, because it sends itself SIGHUP and SIGTERM.

use migsight_predictor::data::Data;
use migsight_predictor::model::{Model, TrainOptions};
use migsight_predictor::{server, testdata, FamilyKind};
use migsight_proto::frame;
use migsight_proto::wire::{
    Client, ClientError, ErrorKind, Objective, PredictRequest, RecommendRequest, Request,
    RequestBody, Response, Sla,
};
use migsight_proto::{Feature, FeatureVector};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn train(dir: &Path, name: &str, seed: u64) -> (std::path::PathBuf, String) {
    let csv = dir.join(format!("{name}.csv"));
    let ds = testdata::simulate(20, seed, true);
    migsight_proto::csv::write_atomic(&csv, &ds.samples, &[]).unwrap();
    let data = Data::load(&[csv]).unwrap();
    let mut o = TrainOptions::new(FamilyKind::Gbdt, 1);
    o.gbdt.n_trees = 30;
    let m = Model::train(&data, &o);
    let path = dir.join(format!("{name}.msm"));
    m.save(&path).unwrap();
    (path, data.sha256)
}

fn predict_request(fv: FeatureVector) -> PredictRequest {
    PredictRequest {
        features: fv,
        bandwidth_bps: 125e6,
        downtime_limit_ms: 300.0,
        qemu: None,
    }
}

fn vm() -> FeatureVector {
    FeatureVector::new()
        .with(Feature::VmSize, 1500.0)
        .with(Feature::VmPdr, 45.0)
        .with(Feature::VmWss, 300.0)
        .with(Feature::VmWse, 0.5)
        .with(Feature::VmMwpp, 700.0)
        .with(Feature::VmCpuUtil, 80.0)
}

async fn info_sha(c: &mut Client) -> String {
    match c.call(RequestBody::ModelInfo).await.unwrap() {
        Response::ModelInfo(i) => i.data_sha256,
        other => panic!("{other:?}"),
    }
}

async fn health(c: &mut Client) -> migsight_proto::wire::Health {
    match c.call(RequestBody::Health).await.unwrap() {
        Response::Health(h) => h,
        other => panic!("{other:?}"),
    }
}

async fn raw_call(s: &mut tokio::net::UnixStream, payload: &[u8]) -> Option<Response> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    s.write_all(&f).await.unwrap();
    let p = frame::read_frame(s).await.ok()??;
    frame::decode(&p).ok()
}

#[test]
fn daemon_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (model_a, sha_a) = train(dir.path(), "a", 1);
    let (model_b, sha_b) = train(dir.path(), "b", 2);
    assert_ne!(sha_a, sha_b);
    let live = dir.path().join("live.msm");
    std::fs::copy(&model_a, &live).unwrap();
    let socket = dir.path().join("run/sub/predictor.sock");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (l, s) = (live.clone(), socket.clone());
        let daemon = tokio::spawn(async move { server::run(&l, &s, None, server::DEFAULT_LIMITS).await });
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "socket mode {mode:o}");

        let mut c = Client::connect(&socket).await.unwrap();
        match c.call(RequestBody::Health).await.unwrap() {
            Response::Health(h) => {
                assert!(h.ready);
                assert_eq!(h.service, "predictor");
                assert_eq!(h.last_reload, None, "no reload yet");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(info_sha(&mut c).await, sha_a);
        match c.call(RequestBody::Predict(predict_request(vm()))).await.unwrap() {
            Response::Prediction(p) => {
                assert_eq!(p.algorithms.len(), 5);
                assert!(p.algorithms.iter().all(|a| a.metrics.iter().all(|i| i.lo <= i.value && i.value <= i.hi)));
            }
            other => panic!("{other:?}"),
        }
        let rec = RecommendRequest {
            predict: predict_request(vm()),
            sla: Sla { max_downtime_ms: Some(300.0), ..Sla::default() },
            objective: Objective::Time,
        };
        match c.call(RequestBody::Recommend(rec.clone())).await.unwrap() {
            Response::Recommendation(r) => {
                assert_eq!(r.ranked.len(), 5);
                assert_eq!(r.ranked[0].algorithm, r.recommended);
                assert!(!r.reason.is_empty());
            }
            other => panic!("{other:?}"),
        }

        // NaN feature: a typed error, then the same connection still works.
        match c.call(RequestBody::Predict(predict_request(vm().with(Feature::VmPdr, f64::NAN)))).await {
            Err(ClientError::Server(e)) => assert_eq!(e.kind, ErrorKind::InvalidFeature),
            other => panic!("{other:?}"),
        }
        let mut bad_bw = predict_request(vm());
        bad_bw.bandwidth_bps = -1.0;
        match c.call(RequestBody::Predict(bad_bw)).await {
            Err(ClientError::Server(e)) => assert_eq!(e.kind, ErrorKind::BadRequest),
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.call(RequestBody::Health).await, Ok(Response::Health(_))));

        // An unknown feature key is named in the reply (postcard alone
        // would say "Serde Deserialization Error").
        let mut raw = Vec::new();
        raw.extend(postcard::to_allocvec(&migsight_proto::wire::PROTOCOL_VERSION).unwrap());
        raw.push(2); // RequestBody::Predict
        raw.push(1); // one feature
        raw.extend(postcard::to_allocvec(&"VM_sise").unwrap());
        raw.extend(postcard::to_allocvec(&Some(512.0f64)).unwrap());
        raw.extend(postcard::to_allocvec(&(125e6f64, 300.0f64)).unwrap());
        let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
        match raw_call(&mut s, &raw).await {
            Some(Response::Error(e)) => {
                assert_eq!(e.kind, ErrorKind::InvalidFeature, "{e}");
                assert!(e.message.contains("unknown feature \"VM_sise\""), "{e}");
            }
            other => panic!("{other:?}"),
        }

        // Raw frames: garbage, another protocol version, then a valid request on the same connection.
        let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
        match raw_call(&mut s, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x13, 0x37]).await {
            Some(Response::Error(e)) => assert!(matches!(e.kind, ErrorKind::BadRequest | ErrorKind::UnsupportedVersion)),
            other => panic!("{other:?}"),
        }
        let mut old = Request::new(RequestBody::Health);
        old.version = 0;
        let payload = postcard::to_allocvec(&old).unwrap();
        match raw_call(&mut s, &payload).await {
            Some(Response::Error(e)) => assert_eq!(e.kind, ErrorKind::UnsupportedVersion),
            other => panic!("{other:?}"),
        }
        match raw_call(&mut s, &[]).await {
            Some(Response::Error(e)) => assert_eq!(e.kind, ErrorKind::BadRequest),
            other => panic!("{other:?}"),
        }
        let ok = postcard::to_allocvec(&Request::new(RequestBody::Health)).unwrap();
        assert!(matches!(raw_call(&mut s, &ok).await, Some(Response::Health(_))));

        // Oversize length prefix: an error reply, then the connection is closed.
        let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
        s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let p = frame::read_frame(&mut s).await.unwrap().unwrap();
        assert!(matches!(frame::decode::<Response>(&p).unwrap(), Response::Error(e) if e.kind == ErrorKind::BadRequest));
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0);

        // A torn frame closes only that connection.
        let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
        s.write_all(&[0, 0, 0, 50, 1, 2]).await.unwrap();
        drop(s);

        // Many concurrent clients.
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let sock = socket.clone();
            let rec = rec.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(&sock).await.unwrap();
                for _ in 0..20 {
                    assert!(matches!(c.call(RequestBody::Recommend(rec.clone())).await, Ok(Response::Recommendation(_))));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }

        // SIGHUP with a good new file: swapped.
        std::fs::copy(&model_b, dir.path().join("staged.msm")).unwrap();
        std::fs::rename(dir.path().join("staged.msm"), &live).unwrap();
        unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
        let mut swapped = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if info_sha(&mut c).await == sha_b {
                swapped = true;
                break;
            }
        }
        assert!(swapped, "SIGHUP did not load the new model");
        let r = health(&mut c).await.last_reload.expect("a reload is reported");
        assert_eq!(r.generation, 1);
        assert!(r.loaded, "{}", r.message);
        assert!(r.message.contains(&sha_b), "{}", r.message);

        // SIGHUP with a bad file: refused, old model kept, still serving.
        std::fs::write(&live, b"MIGSMDL\ngarbage").unwrap();
        unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
        let mut refused = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let h = health(&mut c).await;
            if h.last_reload.as_ref().is_some_and(|r| r.generation == 2) {
                refused = h.last_reload;
                assert!(h.ready, "the old model still serves");
                break;
            }
        }
        let r = refused.expect("the refused reload is reported");
        assert!(!r.loaded);
        assert!(r.message.contains("refused") && r.message.contains("live.msm"), "{}", r.message);
        assert_eq!(info_sha(&mut c).await, sha_b);
        assert!(matches!(c.call(RequestBody::Recommend(rec)).await, Ok(Response::Recommendation(_))));

        // A second daemon on the same socket is refused.
        let e = server::bind(&socket, None).unwrap_err();
        assert!(e.to_string().contains("another daemon"), "{e}");

        // SIGTERM: clean stop, socket removed.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        tokio::time::timeout(Duration::from_secs(5), daemon).await.unwrap().unwrap().unwrap();
        assert!(!socket.exists());
    });
}
