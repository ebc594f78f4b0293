//! Readers of a QEMU process's `/proc` files: CPU time, memory, threads.
//!
//! The profiler reads them before a migration (the agent) and the outcome
//! meter during one (`outcome::Meter`), so the features and the labels are
//! measured the same way.

use std::path::PathBuf;

/// Why a `/proc` file of a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("no process with pid {0}")]
    NoProcess(u32),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {detail}")]
    Parse { path: String, detail: String },
}

impl ProcError {
    /// Whether the failure was a permission check (`EACCES`/`EPERM`).
    pub fn is_permission(&self) -> bool {
        matches!(self, ProcError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)))
    }
}

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

/// Reads a file of `/proc/PID`; a missing process is [`ProcError::NoProcess`].
pub fn read_proc(pid: u32, file: &str) -> Result<String, ProcError> {
    let p = proc_path(pid, file);
    std::fs::read_to_string(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ProcError::NoProcess(pid),
        _ if e.raw_os_error() == Some(libc::ESRCH) => ProcError::NoProcess(pid),
        _ => ProcError::Io {
            path: p.display().to_string(),
            source: e,
        },
    })
}

/// The command line of `pid`, split at NULs (empty arguments dropped).
pub fn cmdline(pid: u32) -> Result<Vec<String>, ProcError> {
    let p = proc_path(pid, "cmdline");
    let bytes = std::fs::read(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ProcError::NoProcess(pid),
        _ => ProcError::Io {
            path: p.display().to_string(),
            source: e,
        },
    })?;
    Ok(bytes
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// The fields of a `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) line after
/// the command name, so that `fields[0]` is field 3 (`state`) of proc(5).
pub fn stat_fields(stat: &str) -> Option<(String, Vec<&str>)> {
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
pub fn proc_stat(pid: u32) -> Result<ProcStat, ProcError> {
    let s = read_proc(pid, "stat")?;
    parse_stat(&s).ok_or_else(|| ProcError::Parse {
        path: format!("/proc/{pid}/stat"),
        detail: format!("{s:?}"),
    })
}

pub fn parse_stat(s: &str) -> Option<ProcStat> {
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
pub fn process_cpu_seconds(pid: u32) -> Result<f64, ProcError> {
    Ok(proc_stat(pid)?.cpu_seconds)
}

/// Resident set size of the process, bytes.
pub fn process_rss_bytes(pid: u32) -> Result<u64, ProcError> {
    // VmRSS from status is the same number as stat's rss, in kB.
    let s = read_proc(pid, "status")?;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kb: u64 = v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .map_err(|_| ProcError::Parse {
                    path: format!("/proc/{pid}/status"),
                    detail: format!("bad VmRSS line {line:?}"),
                })?;
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
pub fn threads(pid: u32) -> Result<Vec<ThreadInfo>, ProcError> {
    let dir = proc_path(pid, "task");
    let rd = std::fs::read_dir(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ProcError::NoProcess(pid),
        _ => ProcError::Io {
            path: dir.display().to_string(),
            source: e,
        },
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
            // Spin for 0.3 s of this thread's own CPU time (wall time
            // would not do on a busy host).
            let cpu = || {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: valid clock id and out pointer.
                unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
                ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
            };
            let t = cpu();
            let mut x = 0u64;
            while cpu() - t < 0.3 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
        .join()
        .unwrap();
        let after = process_cpu_seconds(pid).unwrap();
        assert!(after - before >= 0.2, "{before} -> {after}");
        let rss = process_rss_bytes(pid).unwrap();
        assert!(rss > 1 << 20 && rss < 1 << 34, "{rss}");
        assert!(!threads(pid).unwrap().is_empty());
    }

    #[test]
    fn missing_process_is_no_process() {
        assert!(matches!(
            process_cpu_seconds(u32::MAX - 1),
            Err(ProcError::NoProcess(_))
        ));
    }
}
