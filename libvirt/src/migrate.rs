//! One live migration through libvirt: `virsh migrate` runs it, libvirt's
//! job stats show its progress, `virsh domjobabort` cancels it (at the cap
//! or on Ctrl-C), and the completed job's stats say how it went.
//!
//! The completed stats are read from the source with `domjobinfo
//! --completed --keep-completed` (`--keep-completed`: the first read without
//! it deletes them). A source domain that is gone after the migration
//! (transient, or `--undefinesource`) has none to read, so a `virsh event
//! --event job-completed` watcher started before the migration catches the
//! same statistics as they are emitted.

use crate::jobstats::{self, Ending, JobStats, JobType, Seen};
use crate::virsh::{virsh_message, LibvirtError, Virsh};
use migsight_qemu::driver::{MigrationConfig, MigrationOutcome, Progress};
use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What to migrate where.
#[derive(Debug, Clone)]
pub struct Request {
    pub domain: String,
    /// Connection URI of the destination libvirt (`qemu+ssh://dst/system`).
    pub dest_uri: String,
    /// Where the migration data goes (`tcp://10.0.0.2:49152`); `None`:
    /// libvirt picks from the destination's host name and port range.
    pub migrate_uri: Option<String>,
    /// The algorithm's flags (`LibvirtSupport::migrate_flags`).
    pub flags: Vec<String>,
    /// Undefine the domain on the source once it runs on the destination.
    pub undefine_source: bool,
}

impl Request {
    /// The `virsh migrate` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["migrate", "--live", "--p2p", "--persistent"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if self.undefine_source {
            a.push("--undefinesource".into());
        }
        a.push(self.domain.clone());
        a.push(self.dest_uri.clone());
        if let Some(u) = &self.migrate_uri {
            a.push("--migrateuri".into());
            a.push(u.clone());
        }
        a.extend(self.flags.iter().cloned());
        a
    }
}

/// Errors that stop a libvirt migration before or while it runs.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtMigrateError {
    #[error(transparent)]
    Libvirt(#[from] LibvirtError),
    #[error("interrupted; the libvirt migration job was aborted (virsh domjobabort) and the source keeps running")]
    Interrupted,
    #[error("starting `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
}

/// A migration that ran.
#[derive(Debug, Clone)]
pub struct Ran {
    pub outcome: MigrationOutcome,
    /// The completed job's statistics (what the row's labels come from).
    pub completed: Option<JobStats>,
    /// Where they were read: `domjobinfo --completed` or the job-completed event.
    pub stats_from: &'static str,
    /// The `virsh migrate` command line, for the operator.
    pub command: String,
}

/// A child killed and reaped when dropped (the event watcher).
struct Reaped(Option<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn read_all(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Runs the migration and waits for its end; `on_progress` gets libvirt's
/// job stats about every `poll`. On `cancel`, or past `cfg.cap` while the
/// job can still be aborted, the job is aborted and the source keeps
/// running.
pub fn migrate(
    virsh: &Virsh,
    req: &Request,
    cfg: &MigrationConfig,
    poll: Duration,
    cancel: &AtomicBool,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Ran, LibvirtMigrateError> {
    // The downtime limit is a migration parameter libvirt sets on QEMU
    // before the job starts.
    virsh.run(&[
        "migrate-setmaxdowntime",
        &req.domain,
        &cfg.downtime_limit_ms.to_string(),
    ])?;
    let watch_secs = (cfg.cap.as_secs() + 3600).to_string();
    let ev_args: Vec<String> = [
        "event",
        &req.domain,
        "--event",
        "job-completed",
        "--timeout",
        &watch_secs,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut events = Reaped(
        virsh
            .command(&ev_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok(),
    );
    let ev_out = events
        .0
        .as_mut()
        .and_then(|c| c.stdout.take())
        .map(read_all);
    // Let the watcher register before the job can complete.
    std::thread::sleep(Duration::from_millis(300));

    let args = req.args();
    let command = virsh.describe(&args);
    tracing::debug!(%command, "starting the libvirt migration");
    let start = Instant::now();
    let mut child = virsh
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LibvirtMigrateError::Spawn {
            command: command.clone(),
            source,
        })?;
    let stderr = child.stderr.take().map(read_all);
    let mut seen = Seen::default();
    let mut aborted_at_cap = false;
    let mut interrupted = false;
    let mut last_abort: Option<Instant> = None;
    // A `virsh migrate` that never returns (a libvirt or network hang past
    // what the cap's abort can end) is killed and its job aborted.
    let hard_limit = cfg.cap * 2 + Duration::from_secs(600);
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| LibvirtError::Command {
            command: command.clone(),
            message: e.to_string(),
        })? {
            break st;
        }
        if start.elapsed() > hard_limit {
            let _ = child.kill();
            let _ = child.wait();
            let _ = virsh.run(&["domjobabort", &req.domain]);
            let ending = Ending::Failed(format!(
                "virsh migrate did not return within {hard_limit:?}; killed it and aborted the job"
            ));
            return Ok(Ran {
                outcome: jobstats::outcome(&ending, &seen, cfg, start.elapsed()),
                completed: None,
                stats_from: "",
                command,
            });
        }
        if let Ok(s) = virsh
            .run(&["domjobinfo", &req.domain, "--rawstats"])
            .map_err(|e| e.to_string())
            .and_then(|t| JobStats::parse(&t))
        {
            if s.job_type.is_running() {
                seen.observe(&s);
                on_progress(&s.progress(start.elapsed()));
            }
        }
        let over_cap = start.elapsed() > cfg.cap;
        let stop = cancel.load(Ordering::Relaxed);
        let retry = match last_abort {
            Some(t) => t.elapsed() > Duration::from_secs(5),
            None => true,
        };
        if (stop || over_cap) && !aborted_at_cap && !interrupted && retry {
            // Past a post-copy switch-over libvirt refuses the abort: the
            // migration then runs to its end (tried again every 5 s).
            last_abort = Some(Instant::now());
            match virsh.run(&["domjobabort", &req.domain]) {
                Ok(_) => {
                    if stop {
                        interrupted = true;
                    } else {
                        aborted_at_cap = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not abort the migration job"),
            }
        }
        std::thread::sleep(poll);
    };
    let wall = start.elapsed();
    let message = stderr
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    if !status.success() {
        if interrupted {
            return Err(LibvirtMigrateError::Interrupted);
        }
        let ending = if aborted_at_cap {
            Ending::CancelledAtCap
        } else {
            Ending::Failed(virsh_message(&message, &status.to_string()))
        };
        return Ok(Ran {
            outcome: jobstats::outcome(&ending, &seen, cfg, wall),
            completed: None,
            stats_from: "",
            command,
        });
    }
    let (completed, stats_from) = completed_stats(virsh, &req.domain, &mut events, ev_out);
    let ending = match &completed {
        Some(s) => Ending::Completed(s.clone()),
        None => Ending::Failed(
            "virsh migrate succeeded but libvirt kept no completed job statistics".into(),
        ),
    };
    let mut outcome = jobstats::outcome(&ending, &seen, cfg, wall);
    if completed.is_none() {
        // It did complete: the guest runs on the destination; only the
        // measurement is missing, so the row is kept out of training.
        outcome.status = "failed".into();
    }
    Ok(Ran {
        outcome,
        completed,
        stats_from,
        command,
    })
}

/// The completed job's statistics: from the source domain, else from the
/// job-completed event.
fn completed_stats(
    virsh: &Virsh,
    domain: &str,
    events: &mut Reaped,
    ev_out: Option<std::thread::JoinHandle<String>>,
) -> (Option<JobStats>, &'static str) {
    let from_source = virsh
        .run(&[
            "domjobinfo",
            domain,
            "--completed",
            "--keep-completed",
            "--rawstats",
        ])
        .map_err(|e| e.to_string())
        .and_then(|t| JobStats::parse(&t))
        .ok()
        .filter(|s| s.job_type == JobType::Completed && s.time_elapsed_ms().is_some());
    if let Some(s) = from_source {
        return (Some(s), "domjobinfo --completed");
    }
    // The watcher exits after its one event; give it a moment, then stop it.
    if let Some(c) = events.0.as_mut() {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) && matches!(c.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    let text = ev_out
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    match JobStats::from_event(&text) {
        Some(s) => (Some(s), "job-completed event"),
        None => (None, ""),
    }
}

impl JobStats {
    /// The statistics of a `virsh event --event job-completed` report.
    pub fn from_event(text: &str) -> Option<JobStats> {
        let body = text.split_once("event 'job-completed'")?.1;
        let body = body.split_once('\n')?.1;
        let mut t = String::from("Job type: 3\n");
        for l in body.lines() {
            if l.starts_with("events received") {
                break;
            }
            t += l.trim();
            t.push('\n');
        }
        JobStats::parse(&t)
            .ok()
            .filter(|s| s.time_elapsed_ms().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_has_the_domain_destination_and_data_path() {
        let r = Request {
            domain: "web1".into(),
            dest_uri: "qemu+ssh://dst/system".into(),
            migrate_uri: Some("tcp://10.0.0.2:49152".into()),
            flags: vec!["--bandwidth".into(), "95".into()],
            undefine_source: true,
        };
        assert_eq!(
            r.args().join(" "),
            "migrate --live --p2p --persistent --undefinesource web1 qemu+ssh://dst/system --migrateuri tcp://10.0.0.2:49152 --bandwidth 95"
        );
    }

    #[test]
    fn job_completed_events_parse() {
        let ev = "\nevent 'job-completed' for domain 'wt18g':\n\toperation: 5\n\ttime_elapsed: 2176\n\tdowntime: 58\n\tmemory_processed: 144037516\n\tmemory_iteration: 3\nevents received: 1\n";
        let s = JobStats::from_event(ev).unwrap();
        assert_eq!(s.job_type, JobType::Completed);
        assert_eq!(
            (s.time_elapsed_ms(), s.downtime_ms(), s.memory_processed()),
            (Some(2176), Some(58), Some(144037516))
        );
        assert!(JobStats::from_event("").is_none());
        assert!(JobStats::from_event("event 'job-completed' for domain 'x':\n").is_none());
    }
}
