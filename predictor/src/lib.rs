//! migsight predictor: trains, evaluates and serves migration models.

pub mod cli;
