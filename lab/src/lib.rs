//! migsight lab: real QEMU migrations that produce labelled training data.
//!
//! `workload` draws workloads, `runner`
//! loops over paired groups (each state migrated with every algorithm the
//! QEMU offers, through `migsight_qemu`'s driver) and appends rows to a
//! CSAP-schema CSV, `report` is the dataset's sanity report. The binary is
//! `migsight-lab` (`migsight lab` runs it).

pub mod cli;
pub mod report;
pub mod runner;
pub mod workload;
