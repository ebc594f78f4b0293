//! Driving one QEMU live migration over QMP and reading its outcome.
//!
//! Used by the lab and by `migsight migrate`. Capabilities and parameters are
//! sent as raw JSON so that QEMU 7.2's `compress` capability works (newer
//! QEMU removed it; typed QAPI bindings for 9.x lack it).

use migsight_agent::qmp::{Qmp, QmpError};
use migsight_proto::Algorithm;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How to migrate.
#[derive(Debug, Clone)]
pub struct MigrationConfig {
    pub algorithm: Algorithm,
    /// `max-bandwidth` (and `max-postcopy-bandwidth`), bytes/s.
    pub bandwidth_bps: f64,
    /// `downtime-limit`, ms.
    pub downtime_limit_ms: u64,
    /// Give up (cancel, record as non-converged) after this long in pre-copy.
    pub cap: Duration,
    pub xbzrle_cache_bytes: u64,
    pub compress_level: u64,
    pub compress_threads: u64,
    pub decompress_threads: u64,
    pub throttle_initial: u64,
    pub throttle_increment: u64,
}

impl MigrationConfig {
    /// QEMU's defaults plus the lab's settings (see `qemu-on-this-machine.md`).
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
        }
    }

    /// Capabilities for one side: the algorithm's own on, the others off.
    pub fn capabilities(&self, source: bool) -> Vec<(&'static str, bool)> {
        let mut caps = Vec::new();
        for a in Algorithm::ALL {
            if let Some(cap) = a.qemu_capability() {
                if source || a.destination_needs_capability() {
                    caps.push((cap, a == self.algorithm));
                }
            }
        }
        caps
    }

    /// Source-side `migrate-set-parameters` arguments.
    pub fn source_parameters(&self) -> Value {
        let bw = self.bandwidth_bps.round() as u64;
        json!({
            "max-bandwidth": bw,
            "max-postcopy-bandwidth": bw,
            "downtime-limit": self.downtime_limit_ms,
            "cpu-throttle-initial": self.throttle_initial,
            "cpu-throttle-increment": self.throttle_increment,
            "xbzrle-cache-size": self.xbzrle_cache_bytes,
            "compress-level": self.compress_level,
            "compress-threads": self.compress_threads,
        })
    }

    /// Destination-side `migrate-set-parameters` arguments.
    pub fn destination_parameters(&self) -> Value {
        json!({ "decompress-threads": self.decompress_threads })
    }

    /// Human-readable instructions for a destination the operator starts.
    pub fn destination_instructions(&self, port: &str) -> String {
        let caps: Vec<String> = self
            .capabilities(false)
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
        if self.algorithm == Algorithm::Compress {
            s += &format!(
                "  {{\"execute\":\"migrate-set-parameters\",\"arguments\":{}}}\n",
                self.destination_parameters()
            );
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
) -> Result<(), QmpError> {
    dst.set_capabilities(&cfg.capabilities(false))?;
    dst.set_parameters(cfg.destination_parameters())?;
    dst.execute("migrate-incoming", Some(json!({ "uri": uri })))?;
    Ok(())
}

/// One progress observation.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub elapsed: Duration,
    pub status: String,
    pub transferred: u64,
    pub remaining: u64,
    /// Pages per second QEMU saw dirtied in the last iteration.
    pub dirty_pages_rate: u64,
    pub throttle_percent: u64,
    pub postcopy: bool,
}

/// How a migration ended.
#[derive(Debug, Clone)]
pub struct MigrationOutcome {
    /// Completed (as opposed to cancelled at the cap or failed).
    pub converged: bool,
    /// QEMU's final status (`completed`, `cancelled`, `failed`).
    pub status: String,
    /// `total-time` from QEMU, or the wall time at the cap.
    pub total_time_ms: f64,
    pub downtime_ms: Option<f64>,
    pub setup_time_ms: Option<f64>,
    /// `ram.transferred` (compressed bytes for `compress`).
    pub transferred_bytes: f64,
    pub throttle_percent_max: u64,
    pub dirty_sync_count: u64,
    /// Wall time from `migrate` to the end being observed.
    pub wall: Duration,
    pub error: Option<String>,
    /// Raw final `query-migrate`.
    pub raw: Value,
}

fn u(v: &Value, p: &str) -> u64 {
    v.pointer(p).and_then(Value::as_u64).unwrap_or(0)
}

fn progress_of(info: &Value, elapsed: Duration) -> Progress {
    let status = info
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Progress {
        elapsed,
        postcopy: status.starts_with("postcopy"),
        status,
        transferred: u(info, "/ram/transferred"),
        remaining: u(info, "/ram/remaining"),
        dirty_pages_rate: u(info, "/ram/dirty-pages-rate"),
        throttle_percent: u(info, "/cpu-throttle-percentage"),
    }
}

/// Errors that stop a migration from being run at all.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("a migration is already {0} on this VM")]
    Busy(String),
    #[error("interrupted; the migration was cancelled and the source keeps running")]
    Interrupted,
}

/// Runs a migration from `src` to `uri` and waits for its end.
///
/// `on_progress` is called about every `poll` with the latest state. On
/// `cancel` or at `cfg.cap` (pre-copy phase only: a post-copy migration past
/// switch-over cannot be cancelled) the migration is cancelled and the source
/// keeps running.
pub fn migrate(
    src: &mut Qmp,
    cfg: &MigrationConfig,
    uri: &str,
    poll: Duration,
    cancel: &AtomicBool,
    mut on_progress: impl FnMut(&Progress),
) -> Result<MigrationOutcome, MigrateError> {
    let before = src.query_migrate()?;
    if let Some(s) = before.get("status").and_then(Value::as_str) {
        if matches!(
            s,
            "setup" | "active" | "pre-switchover" | "device" | "postcopy-active" | "cancelling"
        ) {
            return Err(MigrateError::Busy(s.into()));
        }
    }
    src.set_capabilities(&cfg.capabilities(true))?;
    src.set_parameters(cfg.source_parameters())?;
    let start = Instant::now();
    src.execute("migrate", Some(json!({ "uri": uri })))?;
    let mut postcopy_started = false;
    let mut throttle_max = 0;
    let mut cancelled_at_cap = false;
    let mut interrupted = false;
    // A cancelled migration's final `query-migrate` has no `ram` section:
    // keep the last observed counters.
    let mut transferred_seen = 0u64;
    let mut syncs_seen = 0u64;
    loop {
        std::thread::sleep(poll);
        let info = src.query_migrate()?;
        let p = progress_of(&info, start.elapsed());
        throttle_max = throttle_max.max(p.throttle_percent);
        transferred_seen = transferred_seen.max(p.transferred);
        syncs_seen = syncs_seen.max(u(&info, "/ram/dirty-sync-count"));
        on_progress(&p);
        match p.status.as_str() {
            "completed" | "failed" | "cancelled" => {
                let converged = p.status == "completed";
                let f = |k: &str| info.get(k).and_then(Value::as_f64);
                // QEMU 7.2 once reported total-time 0 (and downtime 0) for a
                // completed 4.7-s compress migration: not a measurement.
                let qemu_total = f("total-time").filter(|t| *t > 0.0);
                let total = if converged {
                    qemu_total.unwrap_or(start.elapsed().as_secs_f64() * 1000.0)
                } else {
                    start.elapsed().as_secs_f64() * 1000.0
                };
                let error = if interrupted {
                    Some("interrupted by the operator".to_string())
                } else if cancelled_at_cap {
                    Some(format!("did not converge within {:?}; cancelled", cfg.cap))
                } else {
                    info.get("error-desc")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                if interrupted {
                    return Err(MigrateError::Interrupted);
                }
                return Ok(MigrationOutcome {
                    converged,
                    status: p.status.clone(),
                    total_time_ms: total,
                    // QEMU 7.2 sometimes reports a post-copy downtime measured from a
                    // stale timestamp (seen: 3,097,810 ms for an 8.5 s migration);
                    // a downtime longer than the migration is not a measurement.
                    downtime_ms: if converged && qemu_total.is_some() {
                        f("downtime").filter(|d| *d <= total)
                    } else {
                        None
                    },
                    setup_time_ms: f("setup-time"),
                    transferred_bytes: transferred_seen as f64,
                    throttle_percent_max: throttle_max,
                    dirty_sync_count: syncs_seen,
                    wall: start.elapsed(),
                    error,
                    raw: info,
                });
            }
            _ => {}
        }
        let in_postcopy = p.status.starts_with("postcopy");
        if cfg.algorithm == Algorithm::Postcopy
            && !postcopy_started
            && !in_postcopy
            && u(&info, "/ram/dirty-sync-count") >= 2
        {
            src.execute("migrate-start-postcopy", None)?;
            postcopy_started = true;
        }
        let over_cap = start.elapsed() > cfg.cap;
        let stop = cancel.load(Ordering::Relaxed);
        if (stop || over_cap) && !in_postcopy && !cancelled_at_cap && !interrupted {
            src.execute("migrate_cancel", None)?;
            if stop {
                interrupted = true;
            } else {
                cancelled_at_cap = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_select_exactly_one_algorithm() {
        for a in Algorithm::ALL {
            let cfg = MigrationConfig::new(a, 1e8);
            let src = cfg.capabilities(true);
            assert_eq!(src.len(), 4);
            assert_eq!(
                src.iter().filter(|(_, on)| *on).count(),
                usize::from(a != Algorithm::Precopy)
            );
            let dst = cfg.capabilities(false);
            assert!(dst.iter().all(|(c, _)| *c != "auto-converge"));
        }
        let p = MigrationConfig::new(Algorithm::Compress, 5e7).source_parameters();
        assert_eq!(p["max-bandwidth"], 50_000_000);
        assert_eq!(p["downtime-limit"], 300);
    }
}
