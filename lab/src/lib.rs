//! migsight lab: real QEMU migrations that produce labelled training data.
//!
//! `qemu` starts and reaps QEMU processes, `guest` provides the guest image,
//! `workload` draws workloads and reads their ops counter, `migration` drives
//! one migration over QMP (also used by `migsight migrate`), and `runner`
//! loops over paired groups and appends rows to a CSAP-schema CSV.

pub mod cli;
pub mod guest;
pub mod host;
pub mod interrupt;
pub mod migration;
pub mod qemu;
pub mod report;
pub mod rng;
pub mod runner;
pub mod workload;
