//! migsight's one layer for talking to QEMU.
//!
//! The agent profiles through it, the lab labels its data through it and
//! `migsight migrate` executes through it, so all three agree on what a
//! QEMU can do and on how a migration is measured:
//!
//! * [`qmp`] — a small blocking QMP client (raw JSON commands);
//! * [`status`] — `query-migrate`, typed;
//! * [`discovery`] — version, capabilities, parameters, and from them the
//!   algorithms this QEMU can run, or why not;
//! * [`driver`] — one migration: set up both sides, start, watch, switch to
//!   post-copy, cancel, and how it ended;
//! * [`outcome`] — what it cost the source, and the one CSAP row that
//!   records it;
//! * [`process`] — starting QEMU (the lab, tests, demo) on the guest
//!   [`image`], [`cmdline`] — reading
//!   a running QEMU's command line, [`procfs`] — its `/proc` counters;
//! * [`cancel`] — Ctrl-C as a flag the loops poll; [`host`] — small host facts.

pub mod cancel;
pub mod cmdline;
pub mod discovery;
pub mod driver;
pub mod host;
pub mod image;
pub mod outcome;
pub mod process;
pub mod procfs;
pub mod qmp;
pub mod status;
pub mod version;

pub use discovery::HostSupport;
pub use driver::{MigrateError, MigrationConfig, MigrationOutcome};
pub use qmp::{Qmp, QmpError};
pub use status::{MigrateInfo, MigrationStatus};
pub use version::QemuVersion;
