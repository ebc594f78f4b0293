//! libvirt's job statistics (`virDomainGetJobStats`, as `virsh domjobinfo
//! --rawstats` prints them), typed, and turned into migsight's
//! [`MigrationOutcome`] — so a libvirt migration's row is built by the same
//! `migsight_qemu::outcome::build_row` as a QMP one.
//!
//! Which counter is which label (libvirt's `qemu_monitor_json.c` copies
//! them from QEMU's `query-migrate`): TT is `time_elapsed` (QEMU's
//! `total-time` as libvirt measures it, from the start of the job), DT is
//! `downtime`, TD is `memory_processed`, which is QEMU's `ram.transferred`
//! — the counter the QMP path records. `data_processed` adds disk bytes, of
//! which a diskless or shared-storage migration has none, so the two are
//! equal there; `memory_processed` stays right when disks are copied too.

use migsight_qemu::driver::{MigrationConfig, MigrationOutcome, Progress};
use migsight_qemu::status::MigrationStatus;
use std::collections::BTreeMap;
use std::time::Duration;

/// libvirt's `virDomainJobType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobType {
    None,
    Bounded,
    Unbounded,
    Completed,
    Failed,
    Cancelled,
    Unknown(u32),
}

impl JobType {
    fn from_code(c: u32) -> JobType {
        match c {
            0 => JobType::None,
            1 => JobType::Bounded,
            2 => JobType::Unbounded,
            3 => JobType::Completed,
            4 => JobType::Failed,
            5 => JobType::Cancelled,
            other => JobType::Unknown(other),
        }
    }

    /// A job is under way.
    pub fn is_running(self) -> bool {
        matches!(self, JobType::Bounded | JobType::Unbounded)
    }
}

/// One `virsh domjobinfo --rawstats` reading.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStats {
    pub job_type: JobType,
    /// Every `key: value` line, as printed.
    pub fields: BTreeMap<String, String>,
}

impl JobStats {
    /// Parses virsh's `--rawstats` output (`Job type: N`, then `key: value`).
    pub fn parse(text: &str) -> Result<JobStats, String> {
        let mut job_type = None;
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if k == "Job type" {
                let code = v
                    .parse::<u32>()
                    .map_err(|_| format!("job type {v:?} is not a number"))?;
                job_type = Some(JobType::from_code(code));
            } else if !k.is_empty() {
                fields.insert(k.to_string(), v.to_string());
            }
        }
        let job_type = job_type.ok_or_else(|| {
            format!(
                "no `Job type:` line in virsh domjobinfo --rawstats output: {:?}",
                text.chars().take(200).collect::<String>()
            )
        })?;
        Ok(JobStats { job_type, fields })
    }

    /// A numeric field (`None` when absent or not a number).
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.fields.get(key)?.parse().ok()
    }

    pub fn time_elapsed_ms(&self) -> Option<u64> {
        self.u64("time_elapsed")
    }
    pub fn downtime_ms(&self) -> Option<u64> {
        self.u64("downtime")
    }
    /// QEMU's `ram.transferred` (see the module doc).
    pub fn memory_processed(&self) -> Option<u64> {
        self.u64("memory_processed")
    }
    pub fn memory_remaining(&self) -> Option<u64> {
        self.u64("memory_remaining")
    }
    pub fn iterations(&self) -> Option<u64> {
        self.u64("memory_iteration")
    }
    pub fn postcopy_requests(&self) -> Option<u64> {
        self.u64("memory_postcopy_requests")
    }
    pub fn throttle_percent(&self) -> Option<u64> {
        self.u64("auto_converge_throttle")
    }
    /// Why a failed job failed (libvirt ≥ 6.0 keeps QEMU's message).
    pub fn error_message(&self) -> Option<&str> {
        self.fields.get("errmsg").map(String::as_str)
    }

    /// The driver's progress shape, for the progress line (libvirt reports
    /// dirty pages per second like QEMU).
    pub fn progress(&self, elapsed: Duration) -> Progress {
        Progress {
            elapsed,
            status: if self.job_type.is_running() {
                MigrationStatus::Active
            } else {
                MigrationStatus::Other(format!("{:?}", self.job_type).to_lowercase())
            },
            transferred: self.memory_processed().unwrap_or(0),
            remaining: self.memory_remaining().unwrap_or(0),
            dirty_pages_rate: self.u64("memory_dirty_rate").unwrap_or(0),
            throttle_percent: self.throttle_percent().unwrap_or(0),
        }
    }
}

/// How a libvirt migration ended, as migsight tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// `virsh migrate` succeeded; the completed job's stats.
    Completed(JobStats),
    /// Aborted by migsight at the cap (pre-copy ran too long): not converged.
    CancelledAtCap,
    /// Failed, with libvirt's message (and the failed job's stats, if kept).
    Failed(String),
}

/// What the progress loop saw (a cancelled or failed job may keep no stats).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Seen {
    pub transferred: u64,
    pub throttle_max: u64,
    pub iterations: u64,
    pub postcopy_requests: u64,
}

impl Seen {
    pub fn observe(&mut self, s: &JobStats) {
        self.transferred = self.transferred.max(s.memory_processed().unwrap_or(0));
        self.throttle_max = self.throttle_max.max(s.throttle_percent().unwrap_or(0));
        self.iterations = self.iterations.max(s.iterations().unwrap_or(0));
        self.postcopy_requests = self
            .postcopy_requests
            .max(s.postcopy_requests().unwrap_or(0));
    }
}

/// The outcome of a libvirt migration in the driver's terms.
pub fn outcome(
    ending: &Ending,
    seen: &Seen,
    cfg: &MigrationConfig,
    wall: Duration,
) -> MigrationOutcome {
    let wall_ms = wall.as_secs_f64() * 1000.0;
    match ending {
        Ending::Completed(s) => {
            let mut seen = *seen;
            seen.observe(s);
            let total = s
                .time_elapsed_ms()
                .filter(|t| *t > 0)
                .map(|t| t as f64)
                .unwrap_or(wall_ms);
            MigrationOutcome {
                converged: true,
                status: "completed".into(),
                total_time_ms: total,
                // A downtime longer than the migration is not a measurement.
                downtime_ms: s.downtime_ms().map(|d| d as f64).filter(|d| *d <= total),
                setup_time_ms: s.u64("setup_time").map(|v| v as f64),
                transferred_bytes: s.memory_processed().unwrap_or(seen.transferred) as f64,
                throttle_percent_max: seen.throttle_max,
                dirty_sync_count: s.iterations().unwrap_or(seen.iterations),
                postcopy_requests: s.postcopy_requests().unwrap_or(seen.postcopy_requests),
                wall,
                error: None,
                split: None,
                failed: false,
            }
        }
        Ending::CancelledAtCap => MigrationOutcome {
            converged: false,
            status: "cancelled".into(),
            total_time_ms: wall_ms,
            downtime_ms: None,
            setup_time_ms: None,
            transferred_bytes: seen.transferred as f64,
            throttle_percent_max: seen.throttle_max,
            dirty_sync_count: seen.iterations,
            postcopy_requests: seen.postcopy_requests,
            wall,
            error: Some(format!(
                "did not converge within {:?}; aborted (virsh domjobabort)",
                cfg.cap
            )),
            split: None,
            failed: false,
        },
        Ending::Failed(message) => MigrationOutcome {
            converged: false,
            status: "failed".into(),
            total_time_ms: wall_ms,
            downtime_ms: None,
            setup_time_ms: None,
            transferred_bytes: seen.transferred as f64,
            throttle_percent_max: seen.throttle_max,
            dirty_sync_count: seen.iterations,
            postcopy_requests: seen.postcopy_requests,
            wall,
            error: Some(message.clone()),
            split: None,
            failed: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migsight_proto::Algorithm;

    /// libvirt 11.3's completed job after a 256 MiB TCG guest's post-copy
    /// migration on this host.
    const COMPLETED: &str = "Job type: 3\n\noperation: 5\ntime_elapsed: 2385\ntime_elapsed_net: 2382\ndowntime: 143\ndowntime_net: 140\nsetup_time: 8\ndata_total: 268828672\ndata_processed: 143869291\ndata_remaining: 0\nmemory_total: 268828672\nmemory_processed: 143869291\nmemory_remaining: 0\nmemory_bps: 98947242\nmemory_constant: 31005\nmemory_normal: 34978\nmemory_normal_bytes: 143269888\nmemory_dirty_rate: 0\nmemory_iteration: 3\nmemory_postcopy_requests: 0\nmemory_page_size: 4096\ndisk_total: 0\ndisk_processed: 0\ndisk_remaining: 0\n";

    #[test]
    fn rawstats_parse_and_become_the_outcome() {
        let s = JobStats::parse(COMPLETED).unwrap();
        assert_eq!(s.job_type, JobType::Completed);
        assert_eq!(s.time_elapsed_ms(), Some(2385));
        assert_eq!(s.memory_processed(), Some(143869291));
        let cfg = MigrationConfig::new(Algorithm::PostcopyPreempt, 1e8);
        let o = outcome(
            &Ending::Completed(s),
            &Seen::default(),
            &cfg,
            Duration::from_millis(2600),
        );
        assert!(o.converged && !o.failed);
        assert_eq!(o.total_time_ms, 2385.0);
        assert_eq!(o.downtime_ms, Some(143.0));
        assert_eq!(o.transferred_bytes, 143869291.0);
        assert_eq!(o.dirty_sync_count, 3);
        assert_eq!(o.setup_time_ms, Some(8.0));
    }

    #[test]
    fn running_none_and_bad_output() {
        let r = JobStats::parse("Job type: 2\n\noperation: 5\ntime_elapsed: 1680\nmemory_processed: 98518712\nmemory_remaining: 91353088\nmemory_dirty_rate: 120\nauto_converge_throttle: 30\n").unwrap();
        assert!(r.job_type.is_running());
        let p = r.progress(Duration::from_secs(2));
        assert_eq!(p.status, MigrationStatus::Active);
        assert_eq!(
            (
                p.transferred,
                p.remaining,
                p.dirty_pages_rate,
                p.throttle_percent
            ),
            (98518712, 91353088, 120, 30)
        );
        assert_eq!(
            JobStats::parse("Job type: 0\n\n").unwrap().job_type,
            JobType::None
        );
        assert!(JobStats::parse("error: no domain").is_err());
        assert!(JobStats::parse("Job type: x").is_err());
        assert_eq!(
            JobStats::parse("Job type: 9").unwrap().job_type,
            JobType::Unknown(9)
        );
    }

    #[test]
    fn cancelled_and_failed_migrations_keep_what_was_seen() {
        let cfg = MigrationConfig::new(Algorithm::Precopy, 1e6);
        let mut seen = Seen::default();
        seen.observe(&JobStats::parse("Job type: 2\nmemory_processed: 5000\nmemory_iteration: 7\nauto_converge_throttle: 40\n").unwrap());
        let o = outcome(
            &Ending::CancelledAtCap,
            &seen,
            &cfg,
            Duration::from_secs(61),
        );
        assert!(!o.converged && !o.failed);
        assert_eq!(o.status, "cancelled");
        assert_eq!(
            (
                o.transferred_bytes,
                o.dirty_sync_count,
                o.throttle_percent_max
            ),
            (5000.0, 7, 40)
        );
        let o = outcome(
            &Ending::Failed("operation failed: job 'migration out' failed".into()),
            &seen,
            &cfg,
            Duration::from_secs(3),
        );
        assert!(o.failed && !o.converged && o.status == "failed");
        assert!(migsight_proto::record::is_failure_status(&o.status));
    }
}
