//! The columns migsight writes after the CSAP ones (and `converged`,
//! `group_id`) in every lab and outcome row: what reproduces a migration and
//! what was measured beside the labels. One list for the lab and for
//! `migsight migrate` (`migsight_qemu::outcome::build_row` fills it), so lab
//! files and a host's outcome file concatenate cleanly. Columns are only
//! ever appended: `csv::widen` gives an older file the new ones, empty on
//! its rows.

/// Record columns, in file order.
pub const RECORD_COLUMNS: [&str; 44] = [
    "algorithm",
    "workload",
    "workload_params",
    "guest_mem_mib",
    "bandwidth_bps",
    "downtime_limit_ms",
    "cap_ms",
    "xbzrle_cache_bytes",
    "compress_level",
    "compress_threads",
    "decompress_threads",
    "throttle_initial",
    "throttle_increment",
    "qemu_version",
    "accel",
    "seed",
    "window_ms",
    "status",
    "setup_time_ms",
    "wire_bytes",
    "throttle_max",
    "dirty_sync_count",
    "ops_before_per_s",
    "ops_during_per_s",
    "qemu_dirty_rate",
    "pdr_std_error",
    "host_load1",
    "kernel_sha256",
    "initrd_sha256",
    "unix_time",
    // Distinct MiB dirtied within k consecutive sampling intervals (the
    // profile's curve, `ProfileReport::dirtied`); added after 1,002 rows.
    "dirtied_k1_mib",
    "dirtied_k2_mib",
    "dirtied_k4_mib",
    "dirtied_k8_mib",
    "dirtied_k16_mib",
    // The agent's CPU budget (share of a core per GiB) and the page sample it bought.
    "cpu_budget",
    "sampled_pages",
    // Session 7 (QEMU 8-10 algorithms): the multifd settings, the
    // dirty-limit per vCPU (MB/s), pages faulted after a post-copy
    // switch-over, how migsight drove QEMU (`qmp` or `libvirt`) and why a
    // migration failed.
    "multifd_channels",
    "multifd_zstd_level",
    "vcpu_dirty_limit",
    "postcopy_requests",
    "via",
    "error",
    // Other QEMU processes on the source host during the migration (most
    // seen at its start and end): VMs competing for the host, and in the
    // lab the tests and builds that ran beside it.
    "other_vms",
];

/// The record columns as owned strings (what the CSV writer takes).
pub fn record_columns() -> Vec<String> {
    RECORD_COLUMNS.iter().map(|s| s.to_string()).collect()
}

/// Whether a row's `status` says the migration broke (a host or the link
/// failed, or the guest was left split after a post-copy switch-over)
/// rather than converged or not: such rows are kept as a record but say
/// nothing about how the algorithm behaves, so models do not learn from them.
pub fn is_failure_status(status: &str) -> bool {
    status == "failed" || status.starts_with("postcopy-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_unique_and_statuses_classified() {
        let mut v = RECORD_COLUMNS.to_vec();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), RECORD_COLUMNS.len());
        assert!(is_failure_status("failed") && is_failure_status("postcopy-paused"));
        assert!(!is_failure_status("completed") && !is_failure_status("cancelled"));
        assert!(!is_failure_status(""));
    }
}
