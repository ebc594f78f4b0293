//! Small readers of `/proc`: the host's CPU and memory here, the QEMU
//! process's own in `migsight_qemu::procfs` (re-exported).
//!
//! Used by the profiler and by the lab for its labels, so both measure the
//! same way.

use crate::error::AgentError;
use std::time::{Duration, Instant};

pub use migsight_qemu::procfs::{
    proc_stat, process_cpu_seconds, process_rss_bytes, read_proc, stat_fields, threads, ProcStat,
    ThreadInfo,
};

/// Aggregate host CPU times from the first line of `/proc/stat`, in ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostCpu {
    pub idle: u64,
    pub total: u64,
    pub cpus: u32,
}

impl HostCpu {
    pub fn read() -> Result<HostCpu, AgentError> {
        let s = std::fs::read_to_string("/proc/stat")
            .map_err(|e| AgentError::io("reading /proc/stat", e))?;
        parse_proc_stat(&s).ok_or_else(|| AgentError::Other("cannot parse /proc/stat".into()))
    }

    /// Idle CPU between `earlier` and `self`, percent with 100 per core.
    pub fn idle_percent_since(&self, earlier: &HostCpu) -> f64 {
        let dt = self.total.saturating_sub(earlier.total);
        if dt == 0 {
            return 100.0 * self.cpus as f64;
        }
        let di = self.idle.saturating_sub(earlier.idle);
        (di as f64 / dt as f64) * 100.0 * self.cpus as f64
    }
}

pub(crate) fn parse_proc_stat(s: &str) -> Option<HostCpu> {
    let mut agg = None;
    let mut cpus = 0u32;
    for line in s.lines() {
        let mut it = line.split_whitespace();
        match it.next() {
            Some("cpu") => {
                // user nice system idle iowait irq softirq steal (guest, guest_nice are
                // already inside user/nice).
                let v: Vec<u64> = it.take(8).filter_map(|x| x.parse().ok()).collect();
                if v.len() < 4 {
                    return None;
                }
                let idle = v[3] + v.get(4).copied().unwrap_or(0);
                agg = Some((idle, v.iter().sum::<u64>()));
            }
            Some(c) if c.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    let (idle, total) = agg?;
    Some(HostCpu {
        idle,
        total,
        cpus: cpus.max(1),
    })
}

/// Idle host CPU over `sample` (blocking for that long), percent with 100 per core
/// (idle + iowait, like `top`'s `id` + `wa`).
pub fn host_cpu_avail_percent(sample: Duration) -> Result<f64, AgentError> {
    let a = HostCpu::read()?;
    let start = Instant::now();
    std::thread::sleep(sample.max(Duration::from_millis(10)));
    let b = HostCpu::read()?;
    let _ = start;
    Ok(b.idle_percent_since(&a))
}

/// `MemAvailable` of the host, MiB.
pub fn host_mem_avail_mib() -> Result<f64, AgentError> {
    let s = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| AgentError::io("reading /proc/meminfo", e))?;
    parse_meminfo(&s, "MemAvailable:")
        .map(|kb| kb as f64 / 1024.0)
        .ok_or_else(|| AgentError::Other("no MemAvailable in /proc/meminfo".into()))
}

pub(crate) fn parse_meminfo(s: &str, key: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU time consumed so far by the calling thread, seconds.
pub fn thread_cpu_seconds() -> f64 {
    clock_seconds(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed so far by the calling process (all threads), seconds.
pub fn self_cpu_seconds() -> f64 {
    clock_seconds(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock_seconds(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_process_is_vm_not_found() {
        assert!(matches!(
            process_cpu_seconds(u32::MAX - 1).map_err(AgentError::from),
            Err(AgentError::VmNotFound(_))
        ));
    }

    #[test]
    fn thread_cpu_clock_advances() {
        let t = thread_cpu_seconds();
        let mut x = 0u64;
        while thread_cpu_seconds() - t < 0.05 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(self_cpu_seconds() >= thread_cpu_seconds() - 1e-3);
    }

    #[test]
    fn host_stat_and_meminfo() {
        let s = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\ncpu1 50 0 50 350 50 0 0 0 0 0\nintr 1\n";
        let a = parse_proc_stat(s).unwrap();
        assert_eq!(a.cpus, 2);
        assert_eq!(a.idle, 800);
        assert_eq!(a.total, 1000);
        let b = HostCpu {
            idle: 800 + 50,
            total: 1000 + 100,
            cpus: 2,
        };
        assert!((b.idle_percent_since(&a) - 100.0).abs() < 1e-9);
        let avail = host_cpu_avail_percent(Duration::from_millis(50)).unwrap();
        assert!((0.0..=100.0 * a.cpus.max(64) as f64).contains(&avail));
        assert_eq!(
            parse_meminfo(
                "MemTotal: 10 kB\nMemAvailable:    2048 kB\n",
                "MemAvailable:"
            ),
            Some(2048)
        );
        assert!(host_mem_avail_mib().unwrap() > 1.0);
    }
}
