//! What `migsight migrate` measures that QEMU does not report: the source's
//! own CPU use before the migration (the baseline its extra CPU is counted
//! from) and, on migsight's instrumented guests, guest performance from the
//! ops page.

use migsight_agent::ops_page::{ops_rate, OpsPage, OpsReading};
use migsight_proto::Metric;
use migsight_qemu::outcome::CpuReading;
use std::time::{Duration, Instant};

/// Readings taken before profiling, closed by [`Before::finish`] after it.
pub struct Before {
    pid: u32,
    started: Instant,
    cpu: Option<CpuReading>,
    ops_page: Option<OpsPage>,
    ops: Option<OpsReading>,
}

/// The source's state just before the migration.
pub struct Baseline {
    /// The source QEMU's CPU use, % of one core.
    pub cpu_percent: Option<f64>,
    /// Guest operations per second (instrumented guests).
    pub ops_per_s: Option<f64>,
    pub ops_page: Option<OpsPage>,
}

impl Before {
    /// Starts measuring `pid`; `guest_ops` looks for the ops page of
    /// migsight's lab and demo guests.
    pub fn start(pid: u32, guest_ops: bool) -> Before {
        let ops_page = if guest_ops {
            match OpsPage::find(pid, Duration::from_secs(5)) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("migsight: --guest-ops: no ops page in the guest ({e}); PERF will not be measured");
                    None
                }
            }
        } else {
            None
        };
        Before {
            pid,
            started: Instant::now(),
            cpu: CpuReading::now(pid),
            ops: ops_page.and_then(|p| p.read(pid).ok()),
            ops_page,
        }
    }

    /// Ends the baseline. `profiled_cpu` is the profile's `VM_cpu_util`,
    /// used when too little time passed to measure (no profile was taken).
    pub fn finish(self, profiled_cpu: Option<f64>) -> Baseline {
        let now = CpuReading::now(self.pid);
        let long_enough = self.started.elapsed() > Duration::from_millis(500);
        let measured = self
            .cpu
            .zip(now)
            .filter(|_| long_enough)
            .and_then(|(a, b)| a.percent_until(&b));
        let cpu_percent = measured.or(profiled_cpu).or_else(|| {
            // Not profiled: one second of the source's own CPU.
            let a = CpuReading::now(self.pid)?;
            std::thread::sleep(Duration::from_secs(1));
            a.percent_until(&CpuReading::now(self.pid)?)
        });
        let ops_end = self.ops_page.and_then(|p| p.read(self.pid).ok());
        Baseline {
            cpu_percent,
            ops_per_s: self.ops.zip(ops_end).and_then(|(a, b)| ops_rate(&a, &b)),
            ops_page: self.ops_page,
        }
    }
}

/// Guest performance during the migration: ops/s on whichever QEMU the guest
/// ran (`runs_on`) since `start`, over the baseline.
pub struct GuestPerf {
    pub performance: Option<f64>,
    pub ops_during_per_s: Option<f64>,
    /// Why there is no value.
    pub note: Option<String>,
}

impl Baseline {
    /// An ops reading at the start of the migration.
    pub fn ops_now(&self, pid: u32) -> Option<OpsReading> {
        self.ops_page.and_then(|p| p.read(pid).ok())
    }

    pub fn perf(&self, start: Option<OpsReading>, runs_on: Option<u32>) -> GuestPerf {
        let end = match (self.ops_page, runs_on, start.as_ref()) {
            (Some(p), Some(pid), Some(s)) => p.read_settled(pid, s).ok(),
            _ => None,
        };
        let during = start.zip(end).and_then(|(a, b)| ops_rate(&a, &b));
        let performance = self
            .ops_per_s
            .zip(during)
            .filter(|(b, _)| *b > 0.0)
            .map(|(b, d)| d / b);
        GuestPerf {
            performance,
            ops_during_per_s: during,
            note: performance.is_none().then(|| {
                if self.ops_page.is_none() {
                    "needs guest instrumentation (--guest-ops on migsight guests)".into()
                } else {
                    "guest ops not readable on the destination".into()
                }
            }),
        }
    }
}

/// Notes for the metrics without an actual value, by [`Metric::index`].
pub type Notes = [Option<String>; 6];

/// Sets the note of `m`.
pub fn note(notes: &mut Notes, m: Metric, why: impl Into<String>) {
    notes[m.index()] = Some(why.into());
}
