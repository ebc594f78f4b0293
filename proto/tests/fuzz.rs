//! Fuzz targets for every decoder of the shared vocabulary — wire frames,
//! requests and responses, CSV files (and the appender's repair of their
//! last row), features JSON — run for a bounded time in the test suite.
//!
//! `cargo fuzz` needs a nightly compiler, which this project's machines do
//! not have; proptest drives the same kind of search on stable: random
//! bytes, and byte-level mutations (bit flips, overwrites, insertions,
//! deletions, truncation) of valid seeds, with any failure shrunk to a
//! minimal input. Each target runs for `MIGSIGHT_FUZZ_SECONDS` (default 3)
//! and prints how many inputs it tried.

mod fuzzing;

use fuzzing::{fuzz, mutated, Mutations};
use migsight_proto::csv::{self, CsvAppender, Sample};
use migsight_proto::frame::{self, FrameError, MemoryBudget};
use migsight_proto::wire::{
    self, AfterProfile, ErrorKind, Health, Objective, PredictRequest, RecommendRequest, Request,
    RequestBody, Response, Sla, VmRef,
};
use migsight_proto::{Algorithm, Feature, FeatureVector, Metric};
use proptest::prelude::*;

fn features() -> FeatureVector {
    FeatureVector::new()
        .with(Feature::VmSize, 3072.0)
        .with(Feature::VmPdr, 45.0)
        .with(Feature::VmWss, 620.0)
        .with(Feature::VmWse, 0.58)
        .with(Feature::VmCpuUtil, 95.0)
}

fn requests() -> Vec<Request> {
    let predict = PredictRequest::new(features(), 125e6, 300.0);
    [
        RequestBody::Health,
        RequestBody::ModelInfo,
        RequestBody::Predict(predict.clone()),
        RequestBody::Recommend(RecommendRequest {
            predict,
            sla: Sla {
                max_downtime_ms: Some(300.0),
                max_time_ms: Some(60e3),
                ..Sla::default()
            },
            objective: Objective::Data,
        }),
        RequestBody::Profile(wire::ProfileRequest {
            vm: VmRef::Name("web1".into()),
            window_ms: 20_000,
            interval_ms: 1000,
            bandwidth_bps: 1e8,
            downtime_limit_ms: 300.0,
            then: AfterProfile::Recommend {
                sla: Sla::default(),
                objective: Objective::Time,
            },
        }),
    ]
    .into_iter()
    .map(Request::new)
    .collect()
}

fn request_seeds() -> Vec<Vec<u8>> {
    requests()
        .iter()
        .map(|r| postcard::to_allocvec(r).unwrap())
        .collect()
}

fn response_seeds() -> Vec<Vec<u8>> {
    [
        Response::Health(Health {
            service: "predictor".into(),
            version: "0.1.0".into(),
            protocol: wire::PROTOCOL_VERSION,
            ready: true,
            uptime_s: 3.5,
            last_reload: None,
        }),
        Response::Error(wire::ErrorReply::new(ErrorKind::Busy, "busy")),
    ]
    .iter()
    .map(|r| postcard::to_allocvec(r).unwrap())
    .collect()
}

/// Every request decodes to a request or a typed refusal, never a panic;
/// one that decodes encodes back to the same bytes' meaning.
#[test]
fn fuzz_requests() {
    let seeds = request_seeds();
    let check = |payload: Vec<u8>| -> Result<(), TestCaseError> {
        match wire::decode_request(&payload) {
            Ok(req) => {
                // Byte-compared: a NaN inside is not equal to itself.
                let again = postcard::to_allocvec(&req).unwrap();
                let back = wire::decode_request(&again).map(|r| postcard::to_allocvec(&r).unwrap());
                prop_assert_eq!(back.ok(), Some(again));
            }
            Err(e) => prop_assert!(
                matches!(
                    e.kind,
                    ErrorKind::BadRequest
                        | ErrorKind::UnsupportedVersion
                        | ErrorKind::InvalidFeature
                ),
                "{:?}",
                e
            ),
        }
        Ok(())
    };
    fuzz(
        "requests (random bytes)",
        prop::collection::vec(any::<u8>(), 0..512),
        check,
    );
    fuzz("requests (mutated)", Mutations::of(seeds), |(seed, ops)| {
        check(mutated(&seed, &ops))
    });
}

/// Responses from a hostile or broken server: decoded or refused.
#[test]
fn fuzz_responses() {
    fuzz(
        "responses (mutated)",
        Mutations::of(response_seeds()),
        |(seed, ops)| {
            let _ = frame::decode::<Response>(&mutated(&seed, &ops));
            Ok(())
        },
    );
}

/// Byte streams into the frame readers: a payload within the cap, or a
/// typed error; the budget is whole again afterwards.
#[test]
fn fuzz_frames() {
    let mut seeds: Vec<Vec<u8>> = requests()
        .iter()
        .map(|r| frame::encode(r).unwrap())
        .collect();
    // Two frames back to back, and a huge announced length.
    seeds.push([seeds[0].clone(), seeds[3].clone()].concat());
    seeds.push([&u32::MAX.to_be_bytes()[..], &[1, 2, 3]].concat());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let budget = MemoryBudget::new(frame::MAX_FRAME_LEN as usize);
    let check = |stream: Vec<u8>| -> Result<(), TestCaseError> {
        let mut r = &stream[..];
        loop {
            match frame::read_frame_blocking(&mut r) {
                Ok(None) => break,
                Ok(Some(p)) => prop_assert!(p.len() <= frame::MAX_FRAME_LEN as usize),
                Err(
                    FrameError::TooLarge { .. } | FrameError::Truncated { .. } | FrameError::Io(_),
                ) => break,
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
        }
        let mut r = &stream[..];
        let got = rt.block_on(async {
            let len = frame::read_len(&mut r).await?;
            match len {
                Some(len) => frame::read_payload(&mut r, len, Some(&budget))
                    .await
                    .map(|p| p.len()),
                None => Ok(0),
            }
        });
        if let Ok(n) = got {
            prop_assert!(n <= frame::MAX_FRAME_LEN as usize);
        }
        prop_assert_eq!(budget.available(), budget.bytes());
        Ok(())
    };
    fuzz(
        "frames (random bytes)",
        prop::collection::vec(any::<u8>(), 0..256),
        check,
    );
    fuzz("frames (mutated)", Mutations::of(seeds), |(seed, ops)| {
        check(mutated(&seed, &ops))
    });
}

fn sample(i: usize) -> Sample {
    let mut s = Sample {
        algorithm: Some(Algorithm::ALL[i % 5]),
        workload_type: Some(1),
        converged: Some(!i.is_multiple_of(7)),
        group_id: Some(format!("g{i}")),
        ..Sample::default()
    };
    s.features.set(Feature::VmSize, Some(512.0 + i as f64));
    s.features.set(Feature::VmPdr, Some(1.5 * i as f64));
    s.set_label(Metric::TT, 4700.5);
    s.set_label(Metric::TD, 2.5e8);
    s.extra = vec![("qemu_version".into(), "7.2.22".into())];
    s
}

fn csv_seed() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("seed.csv");
    let samples: Vec<Sample> = (0..4).map(sample).collect();
    csv::write_atomic(&p, &samples, &["qemu_version".to_string()]).unwrap();
    std::fs::read(p).unwrap()
}

/// Any text is a dataset or a located parse error.
#[test]
fn fuzz_csv_files() {
    let seed = csv_seed();
    let check = |text: Vec<u8>| -> Result<(), TestCaseError> {
        if let Err(e) = csv::read(&text[..], "fuzz.csv") {
            prop_assert!(e.to_string().starts_with("fuzz.csv"), "{}", e);
        }
        Ok(())
    };
    fuzz(
        "CSV files (random bytes)",
        prop::collection::vec(any::<u8>(), 0..512),
        check,
    );
    fuzz(
        "CSV files (mutated)",
        Mutations::of(vec![seed]),
        |(seed, ops)| check(mutated(&seed, &ops)),
    );
}

/// Whatever a crash left after the last newline of a good file, the next
/// append leaves a file that reads, with every earlier row, the new row
/// last, and the left-over bytes kept only if they were a whole row.
#[test]
fn fuzz_the_appenders_repair_of_a_last_row() {
    let seed = csv_seed();
    let extra = vec!["qemu_version".to_string()];
    let good = csv::read(&seed[..], "seed").unwrap().samples;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.csv");
    // Tails: a prefix of a real row (what a crash leaves), or random bytes
    // without a newline.
    let row_text = String::from_utf8(seed.clone()).unwrap();
    let last_row = row_text.lines().nth(2).unwrap().as_bytes().to_vec();
    let tails = prop_oneof![
        (0..=last_row.len()).prop_map(move |n| last_row[..n].to_vec()),
        prop::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..64
        ),
    ];
    fuzz("appender repair (torn tails)", tails, |tail: Vec<u8>| {
        let mut bytes = seed.clone();
        bytes.extend_from_slice(&tail);
        std::fs::write(&path, &bytes).unwrap();
        let whole = csv::classify_tail(Some(seed.split(|b| *b == b'\n').next().unwrap()), &tail)
            == csv::Tail::Unterminated;
        let mut a = CsvAppender::open(&path, &extra).unwrap();
        a.append(&sample(99)).unwrap();
        let back = csv::read_path(&path);
        prop_assert!(back.is_ok(), "{:?}", back.err());
        let back = back.unwrap().samples;
        prop_assert_eq!(&back[..good.len()], &good[..]);
        prop_assert_eq!(back.len(), good.len() + 1 + whole as usize);
        prop_assert_eq!(back.last().unwrap().group_id.as_deref(), Some("g99"));
        Ok(())
    });
}

/// Features JSON: a vector of known features, or an error naming the
/// problem; never a panic.
#[test]
fn fuzz_features_json() {
    let seeds = vec![
        serde_json::to_vec(&features()).unwrap(),
        br#"{"VM_size": 512, "VM_pdr": null, "VM_wss": 1e308}"#.to_vec(),
        br#"{"VM_size": 512, "VM_sise": 7}"#.to_vec(),
    ];
    let check = |bytes: Vec<u8>| -> Result<(), TestCaseError> {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            match serde_json::from_str::<FeatureVector>(text) {
                Ok(fv) => prop_assert!(fv.present().count() <= Feature::ALL.len()),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
        Ok(())
    };
    fuzz(
        "features JSON (random text)",
        "\\PC{0,64}".prop_map(String::into_bytes),
        check,
    );
    fuzz(
        "features JSON (mutated)",
        Mutations::of(seeds),
        |(seed, ops)| check(mutated(&seed, &ops)),
    );
}
