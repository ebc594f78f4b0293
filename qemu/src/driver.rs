//! Driving one QEMU live migration over QMP: set up both sides, start,
//! watch, switch to post-copy, cancel, and report how it ended.
//!
//! Used by the lab and by `migsight migrate`. Only the capabilities and
//! parameters the QEMU has are sent ([`HostSupport`]): QEMU 9.1+ refuses
//! even `compress: false`, and 7.2 does not know `dirty-limit`.
//!
//! How a migration can end, and what the source VM is doing then:
//! - completed: the guest runs on the destination;
//! - cancelled (at the cap, or by the operator) or failed in pre-copy (e.g.
//!   the destination died): the guest keeps running on the source;
//! - failed after the post-copy switch-over (the destination died): QEMU
//!   parks the source in `postcopy-paused` with the pages the destination
//!   never got, the guest is stopped everywhere, and only a new destination
//!   (`migrate-recover`) plus `migrate` with `resume` bring it back
//!   ([`Split`] says so, with the commands);
//! - the source died: the guest is gone with it (before the switch-over) or
//!   stuck on the destination without its missing pages (after).

use crate::discovery::HostSupport;
use crate::qmp::{Qmp, QmpError};
use crate::status::{MigrateInfo, MigrationStatus};
use migsight_proto::Algorithm;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How to migrate.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationConfig {
    pub algorithm: Algorithm,
    /// `max-bandwidth` (and `max-postcopy-bandwidth`), bytes/s.
    pub bandwidth_bps: f64,
    /// `downtime-limit`, ms.
    pub downtime_limit_ms: u64,
    /// Give up (cancel, record as non-converged) after this long in pre-copy.
    pub cap: Duration,
    pub xbzrle_cache_bytes: u64,
    /// `compress` (QEMU < 9.1) settings.
    pub compress_level: u64,
    pub compress_threads: u64,
    pub decompress_threads: u64,
    pub throttle_initial: u64,
    pub throttle_increment: u64,
    /// `multifd-channels` for the multifd algorithms ([`multifd_channels`]).
    pub multifd_channels: u64,
    /// `multifd-zstd-level` for `multifd-zstd`.
    pub zstd_level: u64,
    /// `vcpu-dirty-limit` for `dirty-limit`, MB/s per vCPU.
    pub vcpu_dirty_limit_mbps: u64,
}

/// Multifd channels migsight uses: enough that each carries at most
/// ~1 GB/s uncompressed or ~250 MB/s with zstd (one core's worth of level-1
/// zstd), at least QEMU's default 2, at most one per host CPU and 8.
pub fn multifd_channels(algorithm: Algorithm, bandwidth_bps: f64, host_cpus: usize) -> u64 {
    let per_channel = if algorithm == Algorithm::MultifdZstd {
        250e6
    } else {
        1e9
    };
    let wanted = (bandwidth_bps / per_channel).ceil().max(2.0) as u64;
    wanted.min(host_cpus.clamp(2, 8) as u64)
}

/// The host's CPU count (for [`multifd_channels`]).
pub fn host_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

impl MigrationConfig {
    /// QEMU's defaults plus the lab's settings (see `data/README.md`).
    pub fn new(algorithm: Algorithm, bandwidth_bps: f64) -> Self {
        MigrationConfig {
            algorithm,
            bandwidth_bps,
            downtime_limit_ms: 300,
            cap: Duration::from_secs(60),
            xbzrle_cache_bytes: 64 << 20,
            compress_level: 1,
            compress_threads: 2,
            decompress_threads: 2,
            throttle_initial: 20,
            throttle_increment: 10,
            multifd_channels: multifd_channels(algorithm, bandwidth_bps, host_cpus()),
            zstd_level: 1,
            // Half the link per vCPU-MB/s: the dirty rate stays well below
            // what the migration sends.
            vcpu_dirty_limit_mbps: ((bandwidth_bps / 1e6) / 2.0).clamp(1.0, 1e6) as u64,
        }
    }

    /// Why `host` cannot run this migration, checked before anything is
    /// sent to QEMU.
    pub fn check(&self, host: &HostSupport) -> Result<(), MigrateError> {
        match host.unavailable(self.algorithm) {
            Some(reason) => Err(MigrateError::Unavailable {
                algorithm: self.algorithm,
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Capabilities for one side: the algorithm's own on, the others off,
    /// only those `host` has (and none that only matter on the source, for
    /// the destination).
    pub fn capabilities(&self, host: &HostSupport, source: bool) -> Vec<(&'static str, bool)> {
        Algorithm::MANAGED_CAPABILITIES
            .iter()
            .filter(|c| host.has_capability(c))
            .filter(|c| source || !Algorithm::source_only_capability(c))
            .map(|c| (*c, self.algorithm.capabilities().contains(c)))
            .collect()
    }

    /// Source-side `migrate-set-parameters` arguments (only those `host` has).
    pub fn source_parameters(&self, host: &HostSupport) -> Value {
        let bw = self.bandwidth_bps.round().max(1.0) as u64;
        let mut p = Map::new();
        let mut put = |k: &str, v: Value| {
            if host.has_parameter(k) {
                p.insert(k.to_string(), v);
            }
        };
        put("max-bandwidth", json!(bw));
        // Unlimited by default: post-copy runs would not be comparable.
        put("max-postcopy-bandwidth", json!(bw));
        put("downtime-limit", json!(self.downtime_limit_ms));
        put("cpu-throttle-initial", json!(self.throttle_initial));
        put("cpu-throttle-increment", json!(self.throttle_increment));
        put("xbzrle-cache-size", json!(self.xbzrle_cache_bytes));
        if self.algorithm == Algorithm::Compress {
            put("compress-level", json!(self.compress_level));
            put("compress-threads", json!(self.compress_threads));
        }
        self.multifd_parameters(&mut put);
        if self.algorithm == Algorithm::DirtyLimit {
            put("vcpu-dirty-limit", json!(self.vcpu_dirty_limit_mbps));
        }
        Value::Object(p)
    }

    fn multifd_parameters(&self, put: &mut impl FnMut(&str, Value)) {
        if self.algorithm.is_multifd() {
            put("multifd-channels", json!(self.multifd_channels));
            put(
                "multifd-compression",
                json!(if self.algorithm == Algorithm::MultifdZstd {
                    "zstd"
                } else {
                    "none"
                }),
            );
            if self.algorithm == Algorithm::MultifdZstd {
                put("multifd-zstd-level", json!(self.zstd_level));
            }
        }
    }

    /// Destination-side `migrate-set-parameters` arguments (the multifd
    /// channels and compression must match the source's; `compress` needs
    /// its decompression threads).
    pub fn destination_parameters(&self, host: &HostSupport) -> Value {
        let mut p = Map::new();
        let mut put = |k: &str, v: Value| {
            if host.has_parameter(k) {
                p.insert(k.to_string(), v);
            }
        };
        if self.algorithm == Algorithm::Compress {
            put("decompress-threads", json!(self.decompress_threads));
        }
        self.multifd_parameters(&mut put);
        Value::Object(p)
    }

    /// Human-readable instructions for a destination the operator starts
    /// (assumed to run the same QEMU as `host`).
    pub fn destination_instructions(&self, host: &HostSupport, port: &str) -> String {
        let caps: Vec<String> = self
            .capabilities(host, false)
            .iter()
            .filter(|(_, on)| *on)
            .map(|(c, _)| format!("{{\"capability\":\"{c}\",\"state\":true}}"))
            .collect();
        let mut s = String::from(
            "start QEMU with the same machine options plus `-incoming defer`, then over its QMP:\n",
        );
        if !caps.is_empty() {
            s += &format!(
                "  {{\"execute\":\"migrate-set-capabilities\",\"arguments\":{{\"capabilities\":[{}]}}}}\n",
                caps.join(",")
            );
        }
        let params = self.destination_parameters(host);
        if params.as_object().is_some_and(|o| !o.is_empty()) {
            s += &format!("  {{\"execute\":\"migrate-set-parameters\",\"arguments\":{params}}}\n");
        }
        s += &format!("  {{\"execute\":\"migrate-incoming\",\"arguments\":{{\"uri\":\"tcp:0.0.0.0:{port}\"}}}}");
        s
    }
}

/// Prepares a destination QEMU started with `-incoming defer`.
pub fn prepare_destination(
    dst: &mut Qmp,
    cfg: &MigrationConfig,
    uri: &str,
    args: &[String],
) -> Result<(), MigrateError> {
    let host = HostSupport::query(dst, args)?;
    if let Some(reason) = host.unavailable(cfg.algorithm) {
        return Err(MigrateError::Unavailable {
            algorithm: cfg.algorithm,
            reason: format!("on the destination: {reason}"),
        });
    }
    dst.set_capabilities(&cfg.capabilities(&host, false))?;
    let params = cfg.destination_parameters(&host);
    if params.as_object().is_some_and(|o| !o.is_empty()) {
        dst.set_parameters(params)?;
    }
    dst.execute("migrate-incoming", Some(json!({ "uri": uri })))?;
    Ok(())
}

/// One progress observation.
#[derive(Debug, Clone)]
pub struct Progress {
    pub elapsed: Duration,
    pub status: MigrationStatus,
    pub transferred: u64,
    pub remaining: u64,
    /// Pages per second QEMU saw dirtied in the last iteration.
    pub dirty_pages_rate: u64,
    pub throttle_percent: u64,
}

/// A migration that ended with the guest split between the hosts: past the
/// post-copy switch-over the destination failed, so the source holds the
/// pages the destination never received and the guest is stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// QEMU's status on the source (`postcopy-paused`).
    pub source_status: String,
    /// What to do, in the operator's words and QMP commands.
    pub recovery: String,
}

impl Split {
    fn new(source_status: &MigrationStatus, uri: &str) -> Split {
        Split {
            source_status: source_status.to_string(),
            recovery: format!(
                "the guest is stopped: the destination failed after the post-copy switch-over and the source holds the pages it never received. \
                 Recover: start a new destination QEMU with the same options plus `-incoming defer`, set the same capabilities on it, \
                 run {{\"execute\":\"migrate-recover\",\"arguments\":{{\"uri\":\"{uri}\"}}}} there, then on the source \
                 {{\"execute\":\"migrate\",\"arguments\":{{\"uri\":\"{uri}\",\"resume\":true}}}}. Do NOT kill the source QEMU: it holds the only copy of those pages."
            ),
        }
    }
}

/// How a migration ended.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationOutcome {
    /// Completed (as opposed to cancelled at the cap or failed).
    pub converged: bool,
    /// QEMU's final status (`completed`, `cancelled`, `failed`, `postcopy-paused`).
    pub status: String,
    /// `total-time` from QEMU, or the wall time when it ended otherwise.
    pub total_time_ms: f64,
    pub downtime_ms: Option<f64>,
    pub setup_time_ms: Option<f64>,
    /// `ram.transferred` (compressed bytes for `compress` and, on QEMU ≥ 9,
    /// `multifd-zstd`).
    pub transferred_bytes: f64,
    pub throttle_percent_max: u64,
    pub dirty_sync_count: u64,
    /// Pages the destination faulted on after the post-copy switch-over.
    pub postcopy_requests: u64,
    /// Wall time from `migrate` to the end being observed.
    pub wall: Duration,
    /// Why it did not complete.
    pub error: Option<String>,
    /// The guest is split between the hosts (see [`Split`]).
    pub split: Option<Split>,
    /// The migration ended for a reason that says nothing about
    /// convergence (a host or the network failed): such rows are kept for
    /// the record but not learned from.
    pub failed: bool,
}

/// Errors that stop a migration before or while it runs.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("{algorithm} is not available: {reason}")]
    Unavailable {
        algorithm: Algorithm,
        reason: String,
    },
    #[error("a migration is already {0} on this VM")]
    Busy(String),
    #[error("interrupted; the migration was cancelled and the source keeps running")]
    Interrupted,
    #[error("the source QEMU went away during the migration ({detail}){}", if *.after_switchover {
        "; it was past the post-copy switch-over, so the guest is stuck on the destination without the pages the source held: it cannot be recovered"
    } else {
        "; the guest ran on the source, so it is gone"
    })]
    SourceGone {
        detail: String,
        after_switchover: bool,
    },
}

/// Runs a migration from `src` to `uri` and waits for its end.
///
/// `on_progress` is called about every `poll` with the latest state. On
/// `cancel` or at `cfg.cap` (pre-copy phase only: a post-copy migration past
/// switch-over cannot be cancelled) the migration is cancelled and the source
/// keeps running.
pub fn migrate(
    src: &mut Qmp,
    host: &HostSupport,
    cfg: &MigrationConfig,
    uri: &str,
    poll: Duration,
    cancel: &AtomicBool,
    mut on_progress: impl FnMut(&Progress),
) -> Result<MigrationOutcome, MigrateError> {
    cfg.check(host)?;
    let before = MigrateInfo::query(src)?;
    if before.status.is_running() {
        return Err(MigrateError::Busy(before.status.to_string()));
    }
    src.set_capabilities(&cfg.capabilities(host, true))?;
    src.set_parameters(cfg.source_parameters(host))?;
    let start = Instant::now();
    src.execute("migrate", Some(json!({ "uri": uri })))?;
    let mut w = Watch::default();
    loop {
        std::thread::sleep(poll);
        let info = match MigrateInfo::query(src) {
            Ok(i) => i,
            Err(e @ (QmpError::Closed(_) | QmpError::Io { .. })) => {
                return Err(MigrateError::SourceGone {
                    detail: e.to_string(),
                    after_switchover: w.switched_over,
                })
            }
            Err(e) => return Err(e.into()),
        };
        let p = w.observe(&info, start.elapsed());
        on_progress(&p);
        if info.status.is_final() {
            if w.interrupted {
                return Err(MigrateError::Interrupted);
            }
            return Ok(w.outcome(&info, cfg, start.elapsed()));
        }
        if info.status == MigrationStatus::PostcopyPaused {
            // The destination is gone after the switch-over: QEMU waits
            // for a recovery that only the operator can start.
            w.paused_polls += 1;
            if w.paused_polls * poll >= Duration::from_secs(2) {
                return Ok(w.outcome(&info, cfg, start.elapsed()).with_split(uri));
            }
            continue;
        }
        w.paused_polls = 0;
        if cfg.algorithm.is_postcopy()
            && !w.postcopy_started
            && !info.status.is_postcopy()
            && info.dirty_sync_count() >= 2
        {
            src.execute("migrate-start-postcopy", None)?;
            w.postcopy_started = true;
        }
        let over_cap = start.elapsed() > cfg.cap;
        let stop = cancel.load(Ordering::Relaxed);
        if (stop || over_cap)
            && info.status.is_cancellable()
            && !w.cancelled_at_cap
            && !w.interrupted
        {
            src.execute("migrate_cancel", None)?;
            if stop {
                w.interrupted = true;
            } else {
                w.cancelled_at_cap = true;
            }
        }
    }
}

/// What the watch loop has seen so far.
#[derive(Debug, Default)]
struct Watch {
    postcopy_started: bool,
    switched_over: bool,
    throttle_max: u64,
    cancelled_at_cap: bool,
    interrupted: bool,
    paused_polls: u32,
    // A cancelled migration's final `query-migrate` has no `ram` section:
    // keep the last observed counters.
    transferred: u64,
    syncs: u64,
    postcopy_requests: u64,
}

impl Watch {
    fn observe(&mut self, info: &MigrateInfo, elapsed: Duration) -> Progress {
        let throttle = info.cpu_throttle_percentage.unwrap_or(0);
        self.throttle_max = self.throttle_max.max(throttle);
        self.transferred = self.transferred.max(info.transferred());
        self.syncs = self.syncs.max(info.dirty_sync_count());
        self.postcopy_requests = self.postcopy_requests.max(info.postcopy_requests());
        self.switched_over |= info.status.is_postcopy();
        Progress {
            elapsed,
            status: info.status.clone(),
            transferred: info.transferred(),
            remaining: info.remaining(),
            dirty_pages_rate: info.dirty_pages_rate(),
            throttle_percent: throttle,
        }
    }

    fn outcome(
        &self,
        info: &MigrateInfo,
        cfg: &MigrationConfig,
        wall: Duration,
    ) -> MigrationOutcome {
        let converged = info.status == MigrationStatus::Completed;
        // QEMU 7.2 once reported total-time 0 (and downtime 0) for a
        // completed 4.7-s compress migration: not a measurement.
        let qemu_total = info.total_time.filter(|t| *t > 0.0);
        let wall_ms = wall.as_secs_f64() * 1000.0;
        let total = if converged {
            qemu_total.unwrap_or(wall_ms)
        } else {
            wall_ms
        };
        let error = if self.interrupted {
            Some("interrupted by the operator".to_string())
        } else if self.cancelled_at_cap {
            Some(format!("did not converge within {:?}; cancelled", cfg.cap))
        } else if converged {
            None
        } else {
            Some(
                info.error_desc
                    .clone()
                    .unwrap_or_else(|| format!("QEMU reported {}", info.status)),
            )
        };
        MigrationOutcome {
            converged,
            status: info.status.to_string(),
            total_time_ms: total,
            // QEMU 7.2 sometimes reports a post-copy downtime measured from a
            // stale timestamp (seen: 3,097,810 ms for an 8.5 s migration);
            // a downtime longer than the migration is not a measurement.
            downtime_ms: if converged && qemu_total.is_some() {
                info.downtime.filter(|d| *d <= total)
            } else {
                None
            },
            setup_time_ms: info.setup_time,
            transferred_bytes: self.transferred as f64,
            throttle_percent_max: self.throttle_max,
            dirty_sync_count: self.syncs,
            postcopy_requests: self.postcopy_requests,
            wall,
            error,
            split: None,
            // Cancelled at the cap is an outcome (not converged); a failure
            // is a broken host or link.
            failed: info.status == MigrationStatus::Failed || info.status.is_postcopy(),
        }
    }
}

impl MigrationOutcome {
    /// A migration that broke before QEMU could say how it ended (the
    /// source QEMU went away): kept on record, not learned from.
    pub fn broken(error: String, wall: Duration) -> MigrationOutcome {
        MigrationOutcome {
            converged: false,
            status: "failed".into(),
            total_time_ms: wall.as_secs_f64() * 1000.0,
            downtime_ms: None,
            setup_time_ms: None,
            transferred_bytes: 0.0,
            throttle_percent_max: 0,
            dirty_sync_count: 0,
            postcopy_requests: 0,
            wall,
            error: Some(error),
            split: None,
            failed: true,
        }
    }

    fn with_split(mut self, uri: &str) -> MigrationOutcome {
        let status = MigrationStatus::parse(&self.status);
        self.error = Some(format!(
            "the destination failed after the post-copy switch-over (source status {status})"
        ));
        self.split = Some(Split::new(&status, uri));
        self
    }
}

/// Cancels whatever migration is in progress on the source, on a fresh QMP
/// connection (the driver's may be broken), and says what it did.
pub fn cancel_on_fresh_connection(path: &std::path::Path) -> String {
    match Qmp::connect(path, Duration::from_secs(5)) {
        Ok(mut q) => match MigrateInfo::query(&mut q) {
            Ok(info) if info.status.is_cancellable() => match q.execute("migrate_cancel", None) {
                Ok(_) => format!("migration was {}; sent migrate_cancel", info.status),
                Err(e) => format!("migrate_cancel failed: {e}"),
            },
            Ok(info) if info.status.is_postcopy() => format!(
                "migration is {}: past the switch-over it cannot be cancelled",
                info.status
            ),
            Ok(info) => format!("no migration in progress (status {})", info.status),
            Err(e) => format!("could not read the migration status: {e}"),
        },
        Err(e) => format!("could not reach the source QMP: {e}"),
    }
}

/// `query-status` of the VM on a fresh connection, in words.
pub fn vm_status(path: &std::path::Path) -> String {
    match Qmp::connect(path, Duration::from_secs(5)).and_then(|mut q| q.status()) {
        Ok((status, running)) if status == "running" || !running => status,
        Ok((status, _)) => format!("{status}, vCPUs running"),
        Err(e) => format!("unknown ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Source;
    use crate::version::QemuVersion;

    fn host(version: QemuVersion, caps: &[&str], params: &[&str]) -> HostSupport {
        HostSupport {
            version,
            accel: Some("tcg".into()),
            dirty_ring: false,
            capabilities: Some(caps.iter().map(|s| s.to_string()).collect()),
            parameters: Some(params.iter().map(|s| s.to_string()).collect()),
            multifd_compressions: Some(["none", "zstd"].map(String::from).into()),
            source: Source::Qmp,
        }
    }

    fn qemu_7_2() -> HostSupport {
        host(
            QemuVersion::new(7, 2, 22),
            &[
                "xbzrle",
                "auto-converge",
                "compress",
                "postcopy-ram",
                "multifd",
                "postcopy-preempt",
            ],
            &[
                "max-bandwidth",
                "max-postcopy-bandwidth",
                "downtime-limit",
                "cpu-throttle-initial",
                "cpu-throttle-increment",
                "xbzrle-cache-size",
                "compress-level",
                "compress-threads",
                "decompress-threads",
                "multifd-channels",
                "multifd-compression",
                "multifd-zstd-level",
            ],
        )
    }

    fn qemu_10() -> HostSupport {
        host(
            QemuVersion::new(10, 0, 2),
            &[
                "xbzrle",
                "auto-converge",
                "postcopy-ram",
                "multifd",
                "postcopy-preempt",
                "dirty-limit",
            ],
            &[
                "max-bandwidth",
                "max-postcopy-bandwidth",
                "downtime-limit",
                "cpu-throttle-initial",
                "cpu-throttle-increment",
                "xbzrle-cache-size",
                "multifd-channels",
                "multifd-compression",
                "multifd-zstd-level",
                "vcpu-dirty-limit",
            ],
        )
    }

    #[test]
    fn capabilities_select_exactly_one_algorithm_on_both_versions() {
        for h in [qemu_7_2(), qemu_10()] {
            for a in Algorithm::ALL {
                let cfg = MigrationConfig::new(a, 1e8);
                let src = cfg.capabilities(&h, true);
                // Every capability sent is one the QEMU has.
                assert!(src.iter().all(|(c, _)| h.has_capability(c)), "{a} {src:?}");
                let on: Vec<&str> = src.iter().filter(|(_, on)| *on).map(|(c, _)| *c).collect();
                if h.unavailable(a).is_none() {
                    assert_eq!(on, a.capabilities(), "{a}");
                }
                let dst = cfg.capabilities(&h, false);
                assert!(dst
                    .iter()
                    .all(|(c, _)| *c != "auto-converge" && *c != "dirty-limit"));
            }
        }
        // QEMU 10 never hears of compress, 7.2 never of dirty-limit.
        let c10 = MigrationConfig::new(Algorithm::Precopy, 1e8).capabilities(&qemu_10(), true);
        assert!(c10.iter().all(|(c, _)| *c != "compress"));
        let c72 = MigrationConfig::new(Algorithm::Precopy, 1e8).capabilities(&qemu_7_2(), true);
        assert!(c72.iter().all(|(c, _)| *c != "dirty-limit"));
    }

    #[test]
    fn parameters_follow_the_algorithm_and_the_version() {
        let p = MigrationConfig::new(Algorithm::Compress, 5e7).source_parameters(&qemu_7_2());
        assert_eq!(p["max-bandwidth"], 50_000_000);
        assert_eq!(p["downtime-limit"], 300);
        assert_eq!(p["compress-threads"], 2);
        let p = MigrationConfig::new(Algorithm::Precopy, 5e7).source_parameters(&qemu_10());
        assert!(p.get("compress-level").is_none() && p.get("multifd-channels").is_none());
        let cfg = MigrationConfig::new(Algorithm::MultifdZstd, 5e7);
        let p = cfg.source_parameters(&qemu_10());
        assert_eq!(p["multifd-compression"], "zstd");
        assert_eq!(p["multifd-zstd-level"], 1);
        assert_eq!(p["multifd-channels"], cfg.multifd_channels);
        let d = cfg.destination_parameters(&qemu_10());
        assert_eq!(d["multifd-compression"], "zstd");
        assert_eq!(d["multifd-channels"], cfg.multifd_channels);
        let p = MigrationConfig::new(Algorithm::Multifd, 5e7).source_parameters(&qemu_10());
        assert_eq!(p["multifd-compression"], "none");
        let p = MigrationConfig::new(Algorithm::DirtyLimit, 1e8).source_parameters(&qemu_10());
        assert_eq!(p["vcpu-dirty-limit"], 50);
        // A compress destination on 7.2 gets its threads; none on 10.
        let d = MigrationConfig::new(Algorithm::Compress, 5e7).destination_parameters(&qemu_7_2());
        assert_eq!(d["decompress-threads"], 2);
    }

    #[test]
    fn unavailable_algorithms_are_refused_before_qemu_hears_of_them() {
        let e = MigrationConfig::new(Algorithm::Compress, 5e7)
            .check(&qemu_10())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "compress is not available: removed in QEMU 9.1"
        );
        let e = MigrationConfig::new(Algorithm::DirtyLimit, 5e7)
            .check(&qemu_10())
            .unwrap_err();
        assert!(e.to_string().contains("dirty ring"), "{e}");
        assert!(MigrationConfig::new(Algorithm::PostcopyPreempt, 5e7)
            .check(&qemu_7_2())
            .is_ok());
    }

    #[test]
    fn multifd_channel_rule() {
        assert_eq!(multifd_channels(Algorithm::Multifd, 1.25e9, 2), 2);
        assert_eq!(multifd_channels(Algorithm::Multifd, 1.25e9, 16), 2);
        assert_eq!(multifd_channels(Algorithm::Multifd, 12.5e9, 16), 8);
        assert_eq!(multifd_channels(Algorithm::MultifdZstd, 1.25e9, 16), 5);
        assert_eq!(multifd_channels(Algorithm::MultifdZstd, 1e7, 1), 2);
    }

    #[test]
    fn outcomes_say_how_it_ended() {
        let cfg = MigrationConfig::new(Algorithm::Postcopy, 5e7);
        let w = Watch {
            transferred: 1000,
            ..Watch::default()
        };
        let info = MigrateInfo::from_value(&json!({"status": "failed",
            "error-desc": "Unable to write to socket: Broken pipe"}))
        .unwrap();
        let o = w.outcome(&info, &cfg, Duration::from_secs(3));
        assert!(!o.converged && o.failed);
        assert_eq!(
            o.error.as_deref(),
            Some("Unable to write to socket: Broken pipe")
        );
        assert_eq!(o.transferred_bytes, 1000.0);
        let info = MigrateInfo::from_value(&json!({"status": "postcopy-paused"})).unwrap();
        let o = w
            .outcome(&info, &cfg, Duration::from_secs(3))
            .with_split("tcp:10.0.0.2:4444");
        let split = o.split.unwrap();
        assert_eq!(split.source_status, "postcopy-paused");
        assert!(split.recovery.contains("migrate-recover") && split.recovery.contains("resume"));
        let info = MigrateInfo::from_value(&json!({"status": "completed",
            "total-time": 4700, "downtime": 13}))
        .unwrap();
        let o = w.outcome(&info, &cfg, Duration::from_secs(5));
        assert!(o.converged && !o.failed && o.error.is_none());
        assert_eq!((o.total_time_ms, o.downtime_ms), (4700.0, Some(13.0)));
        // A downtime longer than the migration is not a measurement.
        let info = MigrateInfo::from_value(&json!({"status": "completed",
            "total-time": 8500, "downtime": 3097810}))
        .unwrap();
        assert_eq!(
            w.outcome(&info, &cfg, Duration::from_secs(9)).downtime_ms,
            None
        );
    }
}
