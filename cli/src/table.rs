//! The plan/predict table (owned by the predictor work).
