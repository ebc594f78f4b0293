//! migsight predictor: trains, evaluates and serves live-migration models.
//!
//! * [`model`]: the trained model (one regressor per algorithm × metric, a
//!   convergence classifier per algorithm, split-conformal intervals), its
//!   versioned file format, prediction and recommendation.
//! * [`family`]: the model families behind one trait — [`gbdt`] (default),
//!   [`svr`] (the seed's bagged SVR), [`linear`], and the [`analytic`] series.
//! * [`eval`]: k-fold cross-validation, extrapolation holdouts and
//!   recommendation quality.
//! * [`domain`]: what a model was trained on and how far a request is outside.
//! * [`server`]: the Unix-socket daemon.
//! * [`cli`]: `migsight predictor|train|eval`.

pub mod analytic;
pub mod cli;
pub mod data;
pub mod decision;
pub mod domain;
pub mod eval;
pub mod explain;
pub mod family;
pub mod gbdt;
pub mod inputs;
pub mod linear;
pub mod model;
pub mod prep;
pub mod recommend;
pub mod rng;
pub mod score;
pub mod server;
pub mod sha256;
pub mod svr;
pub mod testdata;

pub use family::FamilyKind;
pub use model::{LoadError, Model, TrainOptions};
