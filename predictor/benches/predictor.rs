//! `cargo bench -p migsight-predictor`: training time per family, one full
//! in-process prediction, and the daemon under 16 concurrent clients.
//!
//! Data: `$MIGSIGHT_BENCH_DATA`, else `data/lab.csv` when it has ≥ 50 rows,
//! else the simulated test fixture (labelled as such). Lines starting with
//! `fit,` are read by `predictor/bench/run.sh` for the ratios against
//! scikit-learn.

use migsight_predictor::data::Data;
use migsight_predictor::family::{FamilyKind, FitInput, Transform};
use migsight_predictor::inputs::INPUT_COUNT;
use migsight_predictor::model::{Model, TrainOptions};
use migsight_predictor::{server, testdata};
use migsight_proto::frame;
use migsight_proto::wire::{
    Objective, PredictRequest, RecommendRequest, Request, RequestBody, Response, Sla,
};
use migsight_proto::{Algorithm, Feature, FeatureVector, Metric};
use std::sync::Arc;
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn load_data() -> (Data, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = std::env::var("MIGSIGHT_BENCH_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("data/lab.csv"));
    if let Ok(d) = Data::load(std::slice::from_ref(&path)) {
        if d.rows.len() >= 50 || std::env::var("MIGSIGHT_BENCH_DATA").is_ok() {
            let what = format!("{} ({} rows)", path.display(), d.rows.len());
            return (d, what);
        }
    }
    let ds = testdata::simulate(200, 1, true);
    (
        Data::from_dataset(&ds, "fixture"),
        "simulated TEST FIXTURE (1000 rows; not lab data)".into(),
    )
}

/// One fit of every algorithm × metric regressor on all converged labelled rows.
fn fit_all(data: &Data, family: FamilyKind, opts: &TrainOptions) -> f64 {
    let allowed = data.columns_with_data();
    let start = Instant::now();
    for a in Algorithm::ALL {
        for m in Metric::ALL {
            let rows: Vec<_> = data
                .rows
                .iter()
                .filter(|r| r.algorithm == a && r.converged && r.labels[m.index()].is_some())
                .collect();
            if rows.len() < 2 {
                continue;
            }
            let y: Vec<f64> = rows.iter().map(|r| r.labels[m.index()].unwrap()).collect();
            let t = Transform::choose(family, &opts.gbdt, m, &y);
            let z: Vec<f64> = y.iter().map(|v| t.forward(*v)).collect();
            let x: Vec<Vec<f64>> = rows.iter().map(|r| r.x.clone()).collect();
            let reg = family.family().fit(&FitInput {
                x: &x,
                z: &z,
                metric: m,
                allowed: &allowed,
                seed: 1,
                gbdt: &opts.gbdt,
            });
            std::hint::black_box(reg);
        }
    }
    start.elapsed().as_secs_f64()
}

fn vm() -> FeatureVector {
    FeatureVector::new()
        .with(Feature::VmSize, 3072.0)
        .with(Feature::VmPdr, 45.0)
        .with(Feature::VmWss, 620.0)
        .with(Feature::VmWse, 0.58)
        .with(Feature::VmNwse, 0.31)
        .with(Feature::VmMwpp, 910.0)
        .with(Feature::VmPmuInstr, 2.1e9)
        .with(Feature::VmCpuUtil, 95.0)
        .with(Feature::VmNetUtil, 3.5)
        .with(Feature::SrcCpuAvail, 310.0)
        .with(Feature::DstCpuAvail, 380.0)
        .with(Feature::SrcMemAvail, 9000.0)
        .with(Feature::DstMemAvail, 12000.0)
}

fn main() {
    let quick = std::env::var("MIGSIGHT_BENCH_QUICK").is_ok();
    let (data, what) = load_data();
    println!("data: {what}; input columns {INPUT_COUNT}");
    let opts = TrainOptions::new(FamilyKind::Gbdt, 42);

    // Training time per family (single fits, median of 3).
    let reps = if quick { 1 } else { 3 };
    for family in FamilyKind::ALL {
        let mut t: Vec<f64> = (0..reps).map(|_| fit_all(&data, family, &opts)).collect();
        println!("fit,migsight-{},{:.4}", family.name(), median(&mut t));
    }
    let start = Instant::now();
    let mut o = opts.clone();
    o.threads = 1;
    let model = Model::train(&data, &o);
    println!(
        "train (gbdt: 30 regressors + 5-fold conformal cross-fitting + 5 classifiers, 1 thread): {:.2} s",
        start.elapsed().as_secs_f64()
    );

    // One full in-process prediction: 5 algorithms × 6 metrics + intervals + explanations.
    let req = PredictRequest {
        features: vm(),
        bandwidth_bps: 125e6,
        downtime_limit_ms: 300.0,
        qemu: None,
    };
    let rec = RecommendRequest {
        predict: req.clone(),
        sla: Sla {
            max_downtime_ms: Some(300.0),
            max_time_ms: Some(60_000.0),
            ..Sla::default()
        },
        objective: Objective::Time,
    };
    for _ in 0..200 {
        std::hint::black_box(model.predict(&req).unwrap());
    }
    let n = if quick { 500 } else { 3000 };
    let mut lat: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(model.predict(&req).unwrap());
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let p50 = median(&mut lat);
    println!("predict in-process (5×6 + intervals + explanations): median {p50:.1} µs, p99 {:.1} µs (target ≤ 100 µs median)", pct(&mut lat, 0.99));
    let mut lat: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(model.recommend(&rec).unwrap());
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    println!("recommend in-process: median {:.1} µs", median(&mut lat));

    // The daemon, 16 concurrent clients, blocking clients on their own threads.
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("bench.msm");
    model.save(&model_path).unwrap();
    let socket = dir.path().join("predictor.sock");
    let server_threads: usize = std::env::var("MIGSIGHT_BENCH_SERVER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server_threads)
        .enable_all()
        .build()
        .unwrap();
    let state = Arc::new(server::State::load(&model_path).unwrap());
    let listener = {
        let _g = rt.enter();
        server::bind(&socket, None).unwrap()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let srv = rt.spawn(server::serve(
        listener,
        state,
        server::DEFAULT_LIMITS,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let clients = 16;
    let per_client = if quick { 300 } else { 2000 };
    let payload = frame::encode(&Request::new(RequestBody::Recommend(rec))).unwrap();
    // 16 concurrent connections driven by one client thread (async), so the
    // latency measures the daemon rather than 16 client threads fighting for 2 cores.
    let crt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let handles: Vec<Vec<f64>> = crt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let socket = socket.clone();
                let payload = payload.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
                    let mut lat = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let t = Instant::now();
                        s.write_all(&payload).await.unwrap();
                        let p = frame::read_frame(&mut s).await.unwrap().unwrap();
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                        assert!(matches!(
                            frame::decode::<Response>(&p).unwrap(),
                            Response::Recommendation(_)
                        ));
                    }
                    lat
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let mut lat: Vec<f64> = handles.into_iter().flatten().collect();
    let secs = start.elapsed().as_secs_f64();
    let total = lat.len() as f64;
    println!(
        "daemon ({server_threads} worker threads), {clients} concurrent clients, {} Recommend requests: {:.0} req/s, latency median {:.2} ms, p99 {:.2} ms (targets ≥ 5000 req/s, p99 ≤ 5 ms)",
        lat.len(),
        total / secs,
        median(&mut lat),
        pct(&mut lat, 0.99)
    );
    let _ = stop_tx.send(());
    let _ = rt.block_on(srv);
}
