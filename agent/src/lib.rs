//! migsight's host agent: finds a running QEMU VM and profiles it.
//!
//! The profiling library here is used both by the agent daemon and by the lab,
//! so the features a model is trained on are computed by exactly the code that
//! computes them in production.
//!
//! * [`vm::locate`] finds a VM from a [`migsight_proto::wire::VmRef`];
//! * [`profile::profile`] measures its CSAP features over a window;
//! * [`guest_memory::GuestMemory`] reads guest RAM from the host;
//! * [`census`] counts its non-zero pages exactly (`VM_size`);
//! * [`procfs`] has the small `/proc` readers the lab also uses for labels;
//! * talking to QEMU (QMP, discovery) is `migsight_qemu`'s;
//! * [`cli`] is the `migsight agent` daemon.

pub mod census;
pub mod cli;
pub mod error;
pub mod guest_memory;
mod host;
pub mod ops_page;
pub mod procfs;
pub mod profile;
pub mod sampler;
pub mod vm;

pub use error::AgentError;
pub use guest_memory::GuestMemory;
pub use profile::{profile, ProfileConfig};
pub use vm::{locate, VmTarget};
