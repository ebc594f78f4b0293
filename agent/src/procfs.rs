//! Small readers of `/proc` (process CPU and memory, host CPU and memory).
//!
//! Used by the profiler and by the lab for its labels, so both measure the
//! same way.

use crate::error::AgentError;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// Reads a file of `/proc/PID`; a missing process is [`AgentError::VmNotFound`].
pub(crate) fn read_proc(pid: u32, file: &str) -> Result<String, AgentError> {
    let p = proc_path(pid, file);
    std::fs::read_to_string(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            AgentError::VmNotFound(format!("no process with pid {pid}"))
        }
        _ if e.raw_os_error() == Some(libc::ESRCH) => {
            AgentError::VmNotFound(format!("no process with pid {pid}"))
        }
        _ => AgentError::io(format!("reading {}", p.display()), e),
    })
}

/// The fields of a `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) line after
/// the command name, so that `fields[0]` is field 3 (`state`) of proc(5).
pub(crate) fn stat_fields(stat: &str) -> Option<(String, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest = stat.get(close + 1..)?;
    Some((comm, rest.split_whitespace().collect()))
}

/// Per-process facts from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    /// utime + stime of all threads, live and exited, in seconds.
    pub cpu_seconds: f64,
    /// Start time after boot, clock ticks: with the pid, identifies a process.
    pub start_ticks: u64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Process state letter.
    pub state: char,
}

/// Reads `/proc/PID/stat`.
pub fn proc_stat(pid: u32) -> Result<ProcStat, AgentError> {
    let s = read_proc(pid, "stat")?;
    parse_stat(&s).ok_or_else(|| AgentError::Other(format!("cannot parse /proc/{pid}/stat: {s:?}")))
}

pub(crate) fn parse_stat(s: &str) -> Option<ProcStat> {
    let (_, f) = stat_fields(s)?;
    // proc(5): state=3, utime=14, stime=15, starttime=22, rss=24 (pages).
    let get = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    let utime = get(14)?;
    let stime = get(15)?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Some(ProcStat {
        cpu_seconds: (utime + stime) as f64 / clk_tck(),
        start_ticks: get(22)?,
        rss_bytes: get(24)? * page,
        state: f.first()?.chars().next()?,
    })
}

/// utime + stime of the whole process (every thread, including exited ones), seconds.
pub fn process_cpu_seconds(pid: u32) -> Result<f64, AgentError> {
    Ok(proc_stat(pid)?.cpu_seconds)
}

/// Resident set size of the process, bytes.
pub fn process_rss_bytes(pid: u32) -> Result<u64, AgentError> {
    // VmRSS from status is the same number as stat's rss, in kB.
    let s = read_proc(pid, "status")?;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kb: u64 = v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .map_err(|_| AgentError::Other(format!("bad VmRSS line {line:?}")))?;
            return Ok(kb * 1024);
        }
    }
    Ok(proc_stat(pid)?.rss_bytes)
}

/// A thread of a process: id, name and CPU seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadInfo {
    pub tid: u32,
    pub name: String,
    pub cpu_seconds: f64,
}

/// The live threads of `pid`.
pub fn threads(pid: u32) -> Result<Vec<ThreadInfo>, AgentError> {
    let dir = proc_path(pid, "task");
    let rd = std::fs::read_dir(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            AgentError::VmNotFound(format!("no process with pid {pid}"))
        }
        _ => AgentError::io(format!("listing {}", dir.display()), e),
    })?;
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let Some(tid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(ent.path().join("stat")) else {
            continue; // thread exited meanwhile
        };
        let Some((name, f)) = stat_fields(&stat) else {
            continue;
        };
        let t = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.push(ThreadInfo {
            tid,
            name,
            cpu_seconds: (t(14) + t(15)) as f64 / clk_tck(),
        });
    }
    out.sort_by_key(|t| t.tid);
    Ok(out)
}

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
    fn stat_with_odd_command_names_parses() {
        let line = "1234 (CPU 0/TCG) (x)) S 1 1234 1234 0 -1 4194368 100 0 0 0 250 50 0 0 20 0 3 0 98765 1000000 512 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert!((s.cpu_seconds - 300.0 / clk_tck()).abs() < 1e-9);
        assert_eq!(s.start_ticks, 98765);
        assert!(s.rss_bytes >= 512 * 4096);
    }

    #[test]
    fn own_process_cpu_and_rss_are_plausible() {
        let pid = std::process::id();
        // Burn some CPU in a thread that then exits: its time must still count.
        let before = process_cpu_seconds(pid).unwrap();
        std::thread::spawn(|| {
            let t = thread_cpu_seconds();
            let mut x = 0u64;
            while thread_cpu_seconds() - t < 0.3 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
        .join()
        .unwrap();
        let after = process_cpu_seconds(pid).unwrap();
        assert!(after - before >= 0.2, "{before} -> {after}");
        let rss = process_rss_bytes(pid).unwrap();
        assert!(rss > 1 << 20 && rss < 1 << 34, "{rss}");
    }

    #[test]
    fn missing_process_is_vm_not_found() {
        assert!(matches!(
            process_cpu_seconds(u32::MAX - 1),
            Err(AgentError::VmNotFound(_))
        ));
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
