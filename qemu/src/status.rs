//! `query-migrate`, typed: the migration's status and its counters.
//!
//! Every field is optional because QEMU versions differ in what they report
//! (7.2 has `compression`, 10.0 has `dirty-limit-*`; a cancelled migration's
//! reply has no `ram` section at all), and unknown fields are ignored, so a
//! newer QEMU's additions do not break the parse.

use crate::qmp::{Qmp, QmpError};
use serde::Deserialize;
use serde_json::Value;

/// QEMU's `MigrationStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MigrationStatus {
    /// No migration yet (QEMU answers `{}`).
    #[default]
    None,
    Setup,
    Active,
    PreSwitchover,
    Device,
    WaitUnplug,
    PostcopyActive,
    PostcopyPaused,
    PostcopyRecoverSetup,
    PostcopyRecover,
    Cancelling,
    Cancelled,
    Completed,
    Failed,
    Colo,
    /// A status this migsight does not know (a newer QEMU), kept verbatim.
    Other(String),
}

impl MigrationStatus {
    pub fn parse(s: &str) -> MigrationStatus {
        use MigrationStatus::*;
        match s {
            "none" => None,
            "setup" => Setup,
            "active" => Active,
            "pre-switchover" => PreSwitchover,
            "device" => Device,
            "wait-unplug" => WaitUnplug,
            "postcopy-active" => PostcopyActive,
            "postcopy-paused" => PostcopyPaused,
            "postcopy-recover-setup" => PostcopyRecoverSetup,
            "postcopy-recover" => PostcopyRecover,
            "cancelling" => Cancelling,
            "cancelled" => Cancelled,
            "completed" => Completed,
            "failed" => Failed,
            "colo" => Colo,
            other => Other(other.to_string()),
        }
    }

    /// QEMU's spelling.
    pub fn as_str(&self) -> &str {
        use MigrationStatus::*;
        match self {
            None => "none",
            Setup => "setup",
            Active => "active",
            PreSwitchover => "pre-switchover",
            Device => "device",
            WaitUnplug => "wait-unplug",
            PostcopyActive => "postcopy-active",
            PostcopyPaused => "postcopy-paused",
            PostcopyRecoverSetup => "postcopy-recover-setup",
            PostcopyRecover => "postcopy-recover",
            Cancelling => "cancelling",
            Cancelled => "cancelled",
            Completed => "completed",
            Failed => "failed",
            Colo => "colo",
            Other(s) => s,
        }
    }

    /// The migration has ended (no more progress will come).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            MigrationStatus::Completed | MigrationStatus::Failed | MigrationStatus::Cancelled
        )
    }

    /// A migration is under way: another one cannot start, and the VM
    /// should not be profiled meanwhile.
    pub fn is_running(&self) -> bool {
        !matches!(
            self,
            MigrationStatus::None
                | MigrationStatus::Completed
                | MigrationStatus::Failed
                | MigrationStatus::Cancelled
        )
    }

    /// Past the post-copy switch-over: the guest runs on the destination and
    /// part of its memory is still on the source; `migrate_cancel` no longer
    /// applies.
    pub fn is_postcopy(&self) -> bool {
        matches!(
            self,
            MigrationStatus::PostcopyActive
                | MigrationStatus::PostcopyPaused
                | MigrationStatus::PostcopyRecoverSetup
                | MigrationStatus::PostcopyRecover
        )
    }

    /// Still before the switch-over: `migrate_cancel` brings it back.
    pub fn is_cancellable(&self) -> bool {
        matches!(
            self,
            MigrationStatus::Setup
                | MigrationStatus::Active
                | MigrationStatus::PreSwitchover
                | MigrationStatus::Device
                | MigrationStatus::WaitUnplug
        )
    }
}

impl std::fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `query-migrate`'s `ram` section (bytes and pages).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RamStats {
    pub transferred: Option<u64>,
    pub remaining: Option<u64>,
    pub total: Option<u64>,
    pub duplicate: Option<u64>,
    pub normal: Option<u64>,
    pub dirty_pages_rate: Option<u64>,
    pub dirty_sync_count: Option<u64>,
    pub postcopy_requests: Option<u64>,
    pub multifd_bytes: Option<u64>,
    pub precopy_bytes: Option<u64>,
    pub postcopy_bytes: Option<u64>,
    pub downtime_bytes: Option<u64>,
    pub mbps: Option<f64>,
}

/// `query-migrate`'s `xbzrle-cache` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct XbzrleStats {
    pub cache_size: Option<u64>,
    pub bytes: Option<u64>,
    pub pages: Option<u64>,
    pub cache_miss: Option<u64>,
    pub cache_miss_rate: Option<f64>,
    pub encoding_rate: Option<f64>,
    pub overflow: Option<u64>,
}

/// `query-migrate`, typed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrateInfo {
    #[serde(default, deserialize_with = "status")]
    pub status: MigrationStatus,
    /// ms since the migration started (while it runs) or its total (after).
    #[serde(default)]
    pub total_time: Option<f64>,
    #[serde(default)]
    pub downtime: Option<f64>,
    #[serde(default)]
    pub expected_downtime: Option<f64>,
    #[serde(default)]
    pub setup_time: Option<f64>,
    #[serde(default)]
    pub ram: Option<RamStats>,
    #[serde(default)]
    pub xbzrle_cache: Option<XbzrleStats>,
    #[serde(default)]
    pub cpu_throttle_percentage: Option<u64>,
    /// `dirty-limit`: time the vCPUs were throttled per round, µs (QEMU ≥ 8.1).
    #[serde(default)]
    pub dirty_limit_throttle_time_per_round: Option<u64>,
    #[serde(default)]
    pub error_desc: Option<String>,
}

fn status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<MigrationStatus, D::Error> {
    let s = String::deserialize(d)?;
    Ok(MigrationStatus::parse(&s))
}

impl MigrateInfo {
    /// Types a raw `query-migrate` reply.
    pub fn from_value(v: &Value) -> Result<MigrateInfo, serde_json::Error> {
        MigrateInfo::deserialize(v)
    }

    /// Runs `query-migrate` and types the reply.
    pub fn query(q: &mut Qmp) -> Result<MigrateInfo, QmpError> {
        let v = q.query_migrate()?;
        MigrateInfo::from_value(&v).map_err(|e| QmpError::Protocol {
            path: q.path().to_path_buf(),
            detail: format!("query-migrate reply not understood: {e}"),
        })
    }

    fn ram_field(&self, f: impl Fn(&RamStats) -> Option<u64>) -> u64 {
        self.ram.as_ref().and_then(f).unwrap_or(0)
    }
    pub fn transferred(&self) -> u64 {
        self.ram_field(|r| r.transferred)
    }
    pub fn remaining(&self) -> u64 {
        self.ram_field(|r| r.remaining)
    }
    pub fn dirty_pages_rate(&self) -> u64 {
        self.ram_field(|r| r.dirty_pages_rate)
    }
    pub fn dirty_sync_count(&self) -> u64 {
        self.ram_field(|r| r.dirty_sync_count)
    }
    pub fn postcopy_requests(&self) -> u64 {
        self.ram_field(|r| r.postcopy_requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_of_both_versions_parse() {
        // QEMU 10.0.2, mid-migration (fields trimmed).
        let v = json!({"expected-downtime": 300, "status": "active", "setup-time": 1,
            "total-time": 1502, "ram": {"total": 1074274304u64, "postcopy-requests": 0,
            "dirty-sync-count": 1, "multifd-bytes": 0, "pages-per-second": 15360,
            "downtime-bytes": 0, "page-size": 4096, "remaining": 900000000u64,
            "postcopy-bytes": 0, "mbps": 402.5, "transferred": 75000000,
            "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 75000000,
            "duplicate": 100, "dirty-pages-rate": 12, "normal-bytes": 74000000, "normal": 18000}});
        let m = MigrateInfo::from_value(&v).unwrap();
        assert_eq!(m.status, MigrationStatus::Active);
        assert!(m.status.is_running() && m.status.is_cancellable() && !m.status.is_final());
        assert_eq!(m.transferred(), 75_000_000);
        assert_eq!(m.remaining(), 900_000_000);
        assert_eq!(m.ram.as_ref().unwrap().mbps, Some(402.5));
        // QEMU 7.2, completed xbzrle.
        let v = json!({"status": "completed", "total-time": 9000, "downtime": 22,
            "setup-time": 2, "ram": {"transferred": 451000000, "dirty-sync-count": 7},
            "xbzrle-cache": {"cache-size": 67108864, "bytes": 1000, "pages": 10,
            "cache-miss": 3, "cache-miss-rate": 0.25, "encoding-rate": 2.5, "overflow": 0}});
        let m = MigrateInfo::from_value(&v).unwrap();
        assert!(m.status.is_final());
        assert_eq!(m.downtime, Some(22.0));
        assert_eq!(m.xbzrle_cache.unwrap().cache_miss_rate, Some(0.25));
        // A cancelled migration has no ram section; an unknown status is kept.
        let m = MigrateInfo::from_value(&json!({"status": "cancelled"})).unwrap();
        assert_eq!(m.transferred(), 0);
        let m = MigrateInfo::from_value(&json!({"status": "x-new-state"})).unwrap();
        assert_eq!(m.status.as_str(), "x-new-state");
        assert!(m.status.is_running());
        // No migration yet: QEMU answers {}.
        let m = MigrateInfo::from_value(&json!({})).unwrap();
        assert_eq!(m.status, MigrationStatus::None);
        assert!(!m.status.is_running());
        // Wrong types are errors, not panics.
        assert!(MigrateInfo::from_value(&json!({"status": 3})).is_err());
        assert!(MigrateInfo::from_value(&json!({"ram": {"transferred": "x"}})).is_err());
        assert!(MigrateInfo::from_value(&json!([1, 2])).is_err());
    }

    #[test]
    fn postcopy_states() {
        for s in ["postcopy-active", "postcopy-paused", "postcopy-recover"] {
            let st = MigrationStatus::parse(s);
            assert!(
                st.is_postcopy() && !st.is_cancellable() && st.is_running(),
                "{s}"
            );
            assert_eq!(st.as_str(), s);
        }
    }
}
