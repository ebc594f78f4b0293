//! migsight lab: real QEMU migrations that produce labelled training data.

pub mod cli;
