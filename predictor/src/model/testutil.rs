//! Fixtures shared by the model's tests.

use super::TrainOptions;
use crate::data::Data;
use crate::family::FamilyKind;
use crate::testdata::simulate;
use migsight_proto::wire::PredictRequest;
use migsight_proto::{Feature, FeatureVector};

pub fn fast(family: FamilyKind, seed: u64) -> TrainOptions {
    let mut o = TrainOptions::new(family, seed);
    o.gbdt.n_trees = 40;
    o.gbdt.learning_rate = 0.2;
    o
}

pub fn data(groups: usize, seed: u64, full: bool) -> Data {
    Data::from_dataset(&simulate(groups, seed, full), "fixture")
}

pub fn request(fv: FeatureVector) -> PredictRequest {
    PredictRequest {
        features: fv,
        bandwidth_bps: 60.0 * 1048576.0,
        downtime_limit_ms: 300.0,
        qemu: None,
    }
}

pub fn vm() -> FeatureVector {
    FeatureVector::new()
        .with(Feature::VmSize, 2048.0)
        .with(Feature::VmPdr, 30.0)
        .with(Feature::VmWss, 400.0)
        .with(Feature::VmWse, 0.6)
        .with(Feature::VmNwse, 0.3)
        .with(Feature::VmMwpp, 900.0)
        .with(Feature::VmCpuUtil, 90.0)
}
