//! migsight's host agent: finds a running QEMU VM and profiles it.
//!
//! The profiling library here is used both by the agent daemon and by the lab,
//! so the features a model is trained on are computed by exactly the code that
//! computes them in production.

pub mod qmp;
pub mod cli;
