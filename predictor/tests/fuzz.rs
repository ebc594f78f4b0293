//! Fuzz targets of the predictor's decoders: the model file (mutated, and
//! re-sealed with a correct checksum so the mutations reach the decoder and
//! the consistency checks; a model that loads must then predict without
//! panicking), and the daemon's request handler on hostile payloads.
//! Driver and budget (`MIGSIGHT_FUZZ_SECONDS`, default 3): see
//! `proto/tests/fuzzing/mod.rs`.

#[path = "../../proto/tests/fuzzing/mod.rs"]
mod fuzzing;

use fuzzing::{fuzz, mutated, Mutations};
use migsight_predictor::data::Data;
use migsight_predictor::model::MAGIC;
use migsight_predictor::{server, sha256, testdata, FamilyKind, Model, TrainOptions};
use migsight_proto::wire::{
    self, ErrorKind, Objective, PredictRequest, RecommendRequest, Request, RequestBody, Response,
    Sla,
};
use migsight_proto::{Feature, FeatureVector};
use proptest::prelude::*;

fn model_bytes(family: FamilyKind, seed: u64) -> Vec<u8> {
    let data = Data::from_dataset(&testdata::simulate(10, seed, true), "fuzz");
    let mut o = TrainOptions::new(family, seed);
    o.threads = 1;
    o.gbdt.n_trees = 8;
    Model::train(&data, &o).to_bytes().unwrap()
}

fn recommend(features: FeatureVector) -> RecommendRequest {
    RecommendRequest {
        predict: PredictRequest::new(features, 125e6, 300.0),
        sla: Sla {
            max_downtime_ms: Some(300.0),
            ..Sla::default()
        },
        objective: Objective::Time,
    }
}

fn vms() -> Vec<FeatureVector> {
    vec![
        FeatureVector::new(),
        FeatureVector::new()
            .with(Feature::VmSize, 1500.0)
            .with(Feature::VmPdr, 45.0)
            .with(Feature::VmWss, 300.0),
        FeatureVector::new()
            .with(Feature::VmSize, 1e9)
            .with(Feature::VmPdr, 0.0)
            .with(Feature::VmWss, 0.0)
            .with(Feature::VmWse, 1.0),
    ]
}

/// The payload of a model file re-sealed: magic, version, payload, sha256.
fn sealed(file: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = file[..12].to_vec();
    out.extend_from_slice(payload);
    out.extend_from_slice(&sha256::digest(payload));
    out
}

#[test]
fn fuzz_model_files() {
    let seeds = vec![
        model_bytes(FamilyKind::Gbdt, 1),
        model_bytes(FamilyKind::Linear, 2),
        model_bytes(FamilyKind::Analytic, 3),
    ];
    for s in &seeds {
        assert!(Model::from_bytes(s, "seed").is_ok());
        assert_eq!(&s[..8], MAGIC);
    }
    let loaded = std::cell::Cell::new(0u64);
    let check = |bytes: Vec<u8>| -> Result<(), TestCaseError> {
        // A model that loads must answer (with a prediction or a typed
        // refusal) without panicking, whatever its numbers.
        if let Ok(m) = Model::from_bytes(&bytes, "fuzz.msm") {
            loaded.set(loaded.get() + 1);
            for fv in vms() {
                let _ = m.recommend(&recommend(fv));
            }
            let _ = m.info("fuzz.msm");
        }
        Ok(())
    };
    fuzz(
        "model files (mutated payload, re-sealed)",
        (Mutations::of(seeds.clone()), any::<bool>()),
        |((file, ops), whole)| {
            if whole || file.len() < 44 {
                // The header and checksum too, unsealed.
                return check(mutated(&file, &ops));
            }
            let payload = &file[12..file.len() - 32];
            check(sealed(&file, &mutated(payload, &ops)))
        },
    );
    eprintln!(
        "  {} mutated model files loaded (and then predicted)",
        loaded.get()
    );
}

#[test]
fn fuzz_the_daemons_request_handler() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.msm");
    std::fs::write(&path, model_bytes(FamilyKind::Gbdt, 4)).unwrap();
    let state = server::State::load(&path).unwrap();
    let mut seeds: Vec<Vec<u8>> = vms()
        .into_iter()
        .map(|fv| {
            postcard::to_allocvec(&Request::new(RequestBody::Recommend(recommend(fv)))).unwrap()
        })
        .collect();
    seeds.push(postcard::to_allocvec(&Request::new(RequestBody::Health)).unwrap());
    seeds.push(postcard::to_allocvec(&Request::new(RequestBody::ModelInfo)).unwrap());
    let check = |payload: Vec<u8>| -> Result<(), TestCaseError> {
        match server::handle(&state, &payload) {
            Response::Error(e) => prop_assert!(
                !matches!(e.kind, ErrorKind::Internal),
                "internal error: {}",
                e
            ),
            Response::Profile(_) => prop_assert!(false, "a profile from the predictor"),
            _ => {}
        }
        Ok(())
    };
    fuzz(
        "predictor requests (random bytes)",
        prop::collection::vec(any::<u8>(), 0..256),
        check,
    );
    fuzz(
        "predictor requests (mutated)",
        Mutations::of(seeds),
        |(seed, ops)| check(mutated(&seed, &ops)),
    );
    assert_eq!(wire::PROTOCOL_VERSION, 4);
}
