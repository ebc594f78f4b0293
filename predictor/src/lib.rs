//! migsight predictor.
