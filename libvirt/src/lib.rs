//! migsight's layer for libvirt-managed VMs (plain libvirt, OpenStack Nova,
//! KubeVirt, oVirt): there libvirtd owns QEMU's monitor, so migsight asks
//! libvirt instead of QMP.
//!
//! * [`virsh`] — running `virsh` against a connection URI (why `virsh` and
//!   not the `virt` bindings: measured, in that module);
//! * [`domain`] — the domain's facts (memory, vCPUs, memory backing,
//!   accelerator) and its QEMU process;
//! * [`support`] — what this libvirt + QEMU can run, per algorithm, and the
//!   `virsh migrate` flags that realise it (or why it is refused before
//!   libvirt is called);
//! * [`jobstats`] — libvirt's job statistics, typed into the QMP driver's
//!   [`migsight_qemu::MigrationOutcome`], so the outcome row comes from the
//!   one builder, `migsight_qemu::outcome::build_row`;
//! * [`migrate`] — one migration: run, watch, abort, read the result.

pub mod domain;
pub mod jobstats;
pub mod migrate;
pub mod support;
pub mod virsh;

pub use domain::DomainFacts;
pub use jobstats::JobStats;
pub use support::LibvirtSupport;
pub use virsh::{default_uri, LibvirtError, Virsh};
