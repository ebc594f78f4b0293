//! The trained model: one regressor per algorithm × metric with
//! split-conformal intervals and a convergence classifier per algorithm
//! ([`metric`], [`conformal`]), trained by [`train`] (the classifier by
//! [`converge`]), stored by [`file`],
//! served by [`serve`] (explained by [`explain`]).

pub mod conformal;
pub mod converge;
pub mod explain;
pub mod file;
pub mod folds;
pub mod metric;
pub mod serve;
#[cfg(test)]
pub(crate) mod testutil;
pub mod train;

pub use conformal::{conformal_offsets, Residuals, COVERAGE};
pub use converge::train_converge;
pub use file::{LoadError, FORMAT_VERSION, MAGIC, MAX_MODEL_BYTES};
pub use folds::{assign_folds, parallel_map};
pub use metric::{
    AlgorithmModel, ConvergeModel, MetricModel, MetricPrediction, MetricStatus, Transformed,
};
pub use train::{
    selection_loss, train_algorithm, train_metric, TrainOptions, TrainedAlgorithm,
    MIN_CALIBRATION_ROWS, MIN_FIT_ROWS,
};

use crate::data::{Data, DataSource, Row};
use crate::decision::Outcome;
use crate::domain::Domain;
use crate::family::FamilyKind;
use crate::gbdt::GbdtParams;
use crate::inputs::{self, InputSpec};
use migsight_proto::wire::{CvScore, FallbackRule, ModelInfo};
use migsight_proto::{Algorithm, Feature, Metric};
use serde::{Deserialize, Serialize};

/// A trained model, as stored in a model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format_version: u32,
    pub migsight_version: String,
    pub created_unix: u64,
    pub family: FamilyKind,
    pub seed: u64,
    /// The gbdt family's tree settings (also used for the convergence classifiers' family).
    pub gbdt: GbdtParams,
    /// Folds of the conformal cross-fitting.
    pub conformal_folds: u64,
    /// Every input column with name, unit and meaning.
    pub inputs: Vec<InputSpec>,
    /// Indices into `inputs` the model was trained with (have data, allowed).
    pub inputs_used: Vec<usize>,
    /// The raw features its rows were built from: a request's other features
    /// are ignored, so its derived inputs and baselines are computed as in
    /// training (a model of size, dirty rate and bandwidth only takes the
    /// working set as the VM size in training and in serving alike).
    pub raw_features: Vec<Feature>,
    pub sources: Vec<DataSource>,
    pub data_sha256: String,
    /// Rows per algorithm, CSAP order.
    pub rows: Vec<u64>,
    /// What all the training rows covered (the messages of
    /// `Prediction::out_of_domain`; each algorithm widens by its own).
    pub domain: Domain,
    /// Nominal interval coverage.
    pub coverage: f64,
    pub algorithms: Vec<AlgorithmModel>,
    /// The recommendation's fallback per objective ([`crate::decision`]).
    pub decisions: Vec<FallbackRule>,
    pub notes: Vec<String>,
    pub training_seconds: f64,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Model {
    /// Trains a model on `data`.
    pub fn train(data: &Data, opts: &TrainOptions) -> Model {
        let start = std::time::Instant::now();
        let with_data = data.columns_with_data();
        let inputs_used: Vec<usize> = with_data
            .into_iter()
            .filter(|c| opts.allowed.contains(c))
            .collect();
        let mut opts = opts.clone();
        opts.allowed = inputs_used.clone();
        let per_alg: Vec<Vec<&Row>> = Algorithm::ALL.iter().map(|&a| data.of(a)).collect();
        let jobs: Vec<Algorithm> = Algorithm::ALL.to_vec();
        let trained = parallel_map(&jobs, opts.threads, |&a| {
            let t = TrainOptions {
                threads: 1,
                ..opts.clone()
            };
            train_algorithm(&t, a, &per_alg[a.index()])
        });
        let (algorithms, outcomes): (Vec<AlgorithmModel>, Vec<Vec<Outcome>>) =
            trained.into_iter().map(|t| (t.model, t.outcomes)).unzip();
        let decisions = crate::decision::learn(&outcomes.concat());
        let mut notes = Vec::new();
        if data.partial_lines > 0 {
            notes.push(format!(
                "{} file(s) ended in a partial row (being appended?); it was ignored",
                data.partial_lines
            ));
        }
        if data.skipped > 0 {
            notes.push(format!(
                "{} rows without a capability column value were skipped",
                data.skipped
            ));
        }
        if data.failures > 0 {
            notes.push(format!(
                "{} rows of migrations that broke (status failed or post-copy paused) were skipped",
                data.failures
            ));
        }
        let absent: Vec<&str> = Feature::ALL
            .iter()
            .filter(|f| !inputs_used.contains(&f.index()))
            .map(|f| f.column())
            .collect();
        if !absent.is_empty() {
            notes.push(format!(
                "features not in the training data (or excluded): {}",
                absent.join(", ")
            ));
        }
        for a in &algorithms {
            if let ConvergeModel::Constant { note, .. } = &a.converge {
                notes.push(note.clone());
            }
            for m in &a.metrics {
                if let Some(n) = &m.note {
                    notes.push(n.clone());
                }
            }
        }
        Model {
            format_version: FORMAT_VERSION,
            migsight_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix: now_unix(),
            family: opts.family,
            seed: opts.seed,
            gbdt: opts.gbdt.clone(),
            conformal_folds: opts.conformal_folds as u64,
            inputs: inputs::specs(),
            raw_features: data.raw_features(),
            inputs_used,
            sources: data.sources.clone(),
            data_sha256: data.sha256.clone(),
            rows: Algorithm::ALL
                .iter()
                .map(|a| per_alg[a.index()].len() as u64)
                .collect(),
            domain: Domain::of(&data.rows.iter().collect::<Vec<_>>()),
            coverage: COVERAGE,
            algorithms,
            decisions,
            notes,
            training_seconds: start.elapsed().as_secs_f64(),
        }
    }

    /// `Err` (why, in a sentence) when no algorithm has enough rows to be
    /// predicted: such a model would serve nothing but refusals, so `train`
    /// writes none.
    pub fn check_usable(&self) -> Result<(), String> {
        if self.algorithms.iter().any(AlgorithmModel::is_trained) {
            return Ok(());
        }
        let counts: Vec<String> = self
            .algorithms
            .iter()
            .filter(|a| a.rows > 0)
            .map(|a| {
                format!(
                    "{} {} rows ({} converged with a total time)",
                    a.algorithm,
                    a.rows,
                    a.metrics[Metric::TT.index()].n
                )
            })
            .collect();
        Err(format!(
            "too little data to fit: no algorithm has {MIN_CALIBRATION_ROWS} converged rows with a total time ({})",
            if counts.is_empty() {
                "no rows".to_string()
            } else {
                counts.join(", ")
            }
        ))
    }

    /// The recommendation's fallback rule for `objective`, if one was learned.
    pub fn decision(
        &self,
        objective: migsight_proto::wire::Objective,
        release: Option<&str>,
    ) -> Option<&FallbackRule> {
        crate::decision::rule_for(&self.decisions, objective, release)
    }

    /// [`ModelInfo`] for the wire.
    pub fn info(&self, path: &str) -> ModelInfo {
        let mut cv = Vec::new();
        for a in &self.algorithms {
            for m in &a.metrics {
                if let Some(s) = &m.cv {
                    cv.push(CvScore {
                        algorithm: a.algorithm,
                        metric: m.metric,
                        n: s.n,
                        gmre: s.gmre,
                        coverage: s.coverage,
                    });
                }
            }
        }
        ModelInfo {
            format_version: self.format_version,
            family: self.family.name().to_string(),
            created_unix: self.created_unix,
            inputs: self
                .inputs_used
                .iter()
                .map(|&i| self.inputs[i].name.clone())
                .collect(),
            rows: self.rows.clone(),
            data_sha256: self.data_sha256.clone(),
            cv,
            fallback: self.decisions.clone(),
            path: path.to_string(),
        }
    }
}
