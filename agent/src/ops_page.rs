//! Reading the ops page that migsight's lab workloads publish in guest RAM
//! (`lab/workload/README.md`): a counter of completed operations, read from
//! the host, which is how `performance` is measured on instrumented guests
//! (the lab's, the demo's, `migsight migrate --guest-ops`) without any guest I/O.
//! The page's layout and its parser are `migsight_opspage`'s, which the
//! in-guest writer uses too.

use crate::error::AgentError;
use crate::guest_memory::GuestMemory;
use migsight_opspage as layout;
use std::time::{Duration, Instant};

/// Where the workload's ops page is in guest RAM, and how to read it.
#[derive(Debug, Clone, Copy)]
pub struct OpsPage {
    /// Offset of the page in the guest-RAM mapping (same on source and destination).
    pub offset: u64,
}

/// A snapshot of the ops page.
#[derive(Debug, Clone, Copy)]
pub struct OpsReading {
    pub ops: u64,
    pub heartbeat: u64,
    pub ready: u64,
    pub at: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("reading guest memory: {0}")]
    Memory(#[from] AgentError),
    #[error("the workload's ops page was not found in guest RAM within {0:?} (did the guest boot? is the image current?)")]
    NotFound(Duration),
    #[error("the workload failed in the guest: {0}")]
    WorkloadFailed(String),
    #[error("ops page at offset {0:#x} no longer carries the magic")]
    Lost(u64),
}

impl OpsPage {
    /// Scans guest RAM of `pid` until the ready ops page appears.
    pub fn find(pid: u32, timeout: Duration) -> Result<OpsPage, OpsError> {
        let start = Instant::now();
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            if let Ok(mem) = GuestMemory::open(pid) {
                let size = mem.size_bytes();
                let mut off = 0u64;
                while off < size {
                    let len = ((size - off) as usize).min(chunk.len());
                    if mem.read(off, &mut chunk[..len]).is_ok() {
                        for p in (0..len).step_by(layout::PAGE) {
                            if layout::has_magic(&chunk[p..]) {
                                let page = OpsPage {
                                    offset: off + p as u64,
                                };
                                let r = page.read_with(&mem)?;
                                if r.ready == layout::Ready::Failed.code() {
                                    let mut msg = vec![0u8; layout::ERROR_MSG_LEN];
                                    mem.read(page.offset + layout::OFF_ERROR_MSG as u64, &mut msg)?;
                                    return Err(OpsError::WorkloadFailed(layout::error_message(
                                        &msg,
                                    )));
                                }
                                if r.ready == layout::Ready::Running.code() {
                                    return Ok(page);
                                }
                            }
                        }
                    }
                    off += len as u64;
                }
            }
            if start.elapsed() > timeout {
                return Err(OpsError::NotFound(timeout));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn read_with(&self, mem: &GuestMemory) -> Result<OpsReading, OpsError> {
        let mut buf = [0u8; layout::HEADER_LEN];
        mem.read(self.offset, &mut buf)?;
        let h = layout::Header::parse(&buf).ok_or(OpsError::Lost(self.offset))?;
        Ok(OpsReading {
            ops: h.ops,
            heartbeat: h.heartbeat,
            ready: h.ready.code(),
            at: Instant::now(),
        })
    }

    /// Reads the counters from the QEMU process `pid`.
    ///
    /// The page normally sits at the same offset in every QEMU that holds
    /// this guest; if it is not there (another RAM mapping was picked, the
    /// guest was restarted), the RAM is scanned again once.
    pub fn read(&self, pid: u32) -> Result<OpsReading, OpsError> {
        let mem = GuestMemory::open(pid)?;
        match self.read_with(&mem) {
            Err(OpsError::Lost(off)) => {
                tracing::warn!(pid, offset = off, "ops page moved; rescanning guest RAM");
                let page = OpsPage::find(pid, Duration::from_secs(10))?;
                page.read_with(&GuestMemory::open(pid)?)
            }
            r => r,
        }
    }
}

impl OpsPage {
    /// Reads the counters from `pid` once they have caught up with `since`.
    ///
    /// The source reports `completed` as soon as it has sent the last
    /// dirty pages; the destination may still be applying them for a few
    /// milliseconds, so its copy of the ops page can be an older one whose
    /// counter is behind `since` (2 % of the first 664 lab rows lost their
    /// `performance` that way). Waits up to 2 s for a current copy.
    pub fn read_settled(&self, pid: u32, since: &OpsReading) -> Result<OpsReading, OpsError> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let r = self.read(pid)?;
            if r.ops >= since.ops || Instant::now() >= deadline {
                return Ok(r);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Operations per second between two readings.
pub fn ops_rate(a: &OpsReading, b: &OpsReading) -> Option<f64> {
    let dt = b.at.duration_since(a.at).as_secs_f64();
    (dt > 0.0 && b.ops >= a.ops).then(|| (b.ops - a.ops) as f64 / dt)
}
