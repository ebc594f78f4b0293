//! `migsight migrate`'s arguments and the destination URI.

use crate::plan::{self, ProfileArgs, SlaArgs};
use anyhow::{anyhow, bail, Result};
use migsight_proto::units::{parse_bandwidth, parse_duration, Bandwidth};
use migsight_proto::wire::VmRef;
use migsight_proto::Algorithm;
use migsight_qemu::outcome::DEFAULT_OUTCOMES;
use std::path::PathBuf;
use std::time::Duration;

/// `--algorithm`: `auto` (plan first) or a named algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmChoice {
    Auto,
    Given(Algorithm),
}

fn algorithm_choice(s: &str) -> Result<AlgorithmChoice, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(AlgorithmChoice::Auto);
    }
    s.parse::<Algorithm>()
        .map(AlgorithmChoice::Given)
        .map_err(|e| e.to_string())
}

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The VM: qmp:PATH, pid:N, name:NAME, libvirt:NAME, proxmox:ID, or a bare PID, QMP socket path or -name.
    #[arg(value_parser = plan::vm_ref, value_name = "VM")]
    pub vm: VmRef,
    /// Destination: QEMU's migration URI, e.g. tcp:10.0.0.2:4444; for libvirt:NAME the
    /// destination libvirt's connection URI, e.g. qemu+ssh://dst/system.
    #[arg(long, value_name = "URI")]
    pub to: String,
    /// auto (profile and take the recommendation), or one the source QEMU offers: precopy,
    /// auto-converge, xbzrle, compress (QEMU < 9.1), postcopy, multifd, multifd-zstd,
    /// postcopy-preempt, dirty-limit (KVM with a dirty ring).
    #[arg(long, value_parser = algorithm_choice, default_value = "auto")]
    pub algorithm: AlgorithmChoice,
    /// Bandwidth the migration may use (QEMU max-bandwidth), e.g. 1Gbit, 125MB/s.
    #[arg(long, value_parser = parse_bandwidth, default_value = "1Gbit", value_name = "RATE")]
    pub bandwidth: Bandwidth,
    #[command(flatten)]
    pub sla: SlaArgs,
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Source QMP socket to drive the migration through (default: the VM's
    /// own, found from its command line or the qmp: reference).
    #[arg(long, value_name = "PATH")]
    pub qmp: Option<PathBuf>,
    /// Destination QMP socket, when the destination QEMU (started with
    /// -incoming defer) runs on this host: migsight prepares it itself.
    #[arg(long, value_name = "PATH")]
    pub dst_qmp: Option<PathBuf>,
    /// With --algorithm given: migrate without profiling (no prediction, no outcome row).
    #[arg(long)]
    pub no_profile: bool,
    /// Cancel a pre-copy phase that runs longer than this (recorded as not converged).
    #[arg(long, value_parser = parse_duration, default_value = "300s", value_name = "DURATION")]
    pub cap: Duration,
    /// Closed-loop dataset the outcome row is appended to.
    #[arg(long, env = "MIGSIGHT_OUTCOMES", default_value = DEFAULT_OUTCOMES, value_name = "PATH")]
    pub outcomes: PathBuf,
    /// Do not append the outcome row.
    #[arg(long)]
    pub no_record: bool,
    /// Measure guest performance from the ops page that migsight's lab
    /// workloads publish in guest RAM (lab and demo guests only).
    #[arg(long)]
    pub guest_ops: bool,
    /// Do not wait for Enter before migrating to a destination migsight did not prepare.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// libvirt:NAME: the source libvirt's connection URI (default $LIBVIRT_DEFAULT_URI, else qemu:///system).
    #[arg(long, value_name = "URI")]
    pub connect: Option<String>,
    /// libvirt:NAME: where the migration data goes (virsh --migrateuri), e.g. tcp://10.0.0.2:49152.
    #[arg(long, value_name = "URI")]
    pub migrate_uri: Option<String>,
    /// libvirt:NAME: undefine the domain on the source once it runs on the destination.
    #[arg(long)]
    pub undefine_source: bool,
    /// Multifd channels: for multifd algorithms instead of migsight's rule; with
    /// another algorithm, multifd on top of it (libvirt:NAME; refused where QEMU refuses it).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub multifd_channels: Option<u64>,
    /// Print one JSON object at the end (see docs/json.md); human output goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Do not print the plan table again (e.g. right after `migsight plan`).
    #[arg(long)]
    pub brief: bool,
}

/// The destination port of a `tcp:HOST:PORT` URI.
pub fn tcp_port(uri: &str) -> Result<(String, u16)> {
    let rest = uri
        .strip_prefix("tcp:")
        .ok_or_else(|| anyhow!("--to {uri:?}: expected tcp:HOST:PORT"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--to {uri:?}: expected tcp:HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| anyhow!("--to {uri:?}: {port:?} is not a TCP port"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        bail!("--to {uri:?}: the host is missing");
    }
    Ok((host, port))
}

pub fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.starts_with("127.") || host == "::1"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_uris_parse() {
        assert_eq!(
            tcp_port("tcp:10.0.0.2:4444").unwrap(),
            ("10.0.0.2".into(), 4444)
        );
        assert_eq!(tcp_port("tcp:[::1]:4444").unwrap(), ("::1".into(), 4444));
        assert!(tcp_port("unix:/x").is_err());
        assert!(tcp_port("tcp:host").is_err());
        assert!(tcp_port("tcp::4444").is_err());
        assert!(tcp_port("tcp:h:0").is_err());
        assert!(is_loopback("127.0.0.1") && !is_loopback("10.0.0.2"));
    }

    #[test]
    fn algorithm_choices_parse() {
        assert_eq!(algorithm_choice("auto"), Ok(AlgorithmChoice::Auto));
        assert_eq!(
            algorithm_choice("xbzrle"),
            Ok(AlgorithmChoice::Given(Algorithm::Xbzrle))
        );
        assert_eq!(
            algorithm_choice("post-copy"),
            Ok(AlgorithmChoice::Given(Algorithm::Postcopy))
        );
        assert_eq!(
            algorithm_choice("multifd-zstd"),
            Ok(AlgorithmChoice::Given(Algorithm::MultifdZstd))
        );
        assert!(algorithm_choice("rdma").is_err());
    }
}
