//! Serving framed requests on a Unix listener: the connection handling the
//! agent and the predictor share, built so that a hostile local client can
//! neither lock the others out nor make the daemon hold unbounded memory.
//!
//! * **Always accepting.** The listener is read continuously, so no client
//!   waits silently in the kernel's backlog. At `max_connections`, the open
//!   connection that has waited longest for its client (idle between
//!   requests, a request trickling in, or a reply the client does not read)
//!   is closed to make room for the newcomer; idle and stalled connections
//!   therefore cannot crowd out a client that sends its request at once.
//!   Only when every connection is being served (the handler is running)
//!   does the newcomer get an immediate `Busy` reply and the connection close.
//! * **Deadlines.** A connection idle for `idle_timeout` between requests is
//!   closed; a request must arrive whole within `read_timeout` of its first
//!   byte (slowloris senders are cut off); a reply must be taken by the
//!   client within `write_timeout` (clients that pipeline requests and never
//!   read cannot pin a connection).
//! * **Memory.** A request's buffer grows as its bytes arrive; beyond
//!   [`frame::FIRST_CHUNK`] per connection it is charged to a
//!   [`MemoryBudget`] of `request_memory` bytes shared by all connections. A
//!   request that does not fit gets `Busy` and its connection is closed. So
//!   request buffers never hold more than `max_connections` ×
//!   [`frame::FIRST_CHUNK`] + `request_memory` bytes in all.

use crate::frame::{self, FrameError, MemoryBudget, Payload};
use crate::wire::{ErrorKind, ErrorReply, Response};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

/// Connection limits of a daemon (both daemons' `--max-connections`,
/// `--idle-timeout-s`, `--read-timeout-s`, `--write-timeout-s`,
/// `--request-memory-mib`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Connections open at once (at least 1).
    pub max_connections: usize,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A request must arrive whole within this time of its first byte.
    pub read_timeout: Duration,
    /// A reply must be taken by the client within this time.
    pub write_timeout: Duration,
    /// Bytes that request buffers beyond [`frame::FIRST_CHUNK`] per
    /// connection may hold in all.
    pub request_memory: usize,
}

impl Limits {
    /// Whether every limit is usable; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS_CEILING {
            return Err(format!(
                "max_connections must be between 1 and {MAX_CONNECTIONS_CEILING}, got {}",
                self.max_connections
            ));
        }
        for (name, d) in [
            ("idle_timeout_s", self.idle_timeout),
            ("read_timeout_s", self.read_timeout),
            ("write_timeout_s", self.write_timeout),
        ] {
            if d < Duration::from_secs(1) || d > MAX_TIMEOUT {
                return Err(format!(
                    "{name} must be between 1 and {} seconds, got {:?}",
                    MAX_TIMEOUT.as_secs(),
                    d
                ));
            }
        }
        if self.request_memory < frame::MAX_FRAME_LEN as usize {
            return Err(format!(
                "request_memory_mib must be at least 1 (one largest frame), got {} bytes",
                self.request_memory
            ));
        }
        Ok(())
    }

    /// A bound on the bytes request buffers can hold at once.
    pub fn request_memory_bound(&self) -> usize {
        self.max_connections
            .saturating_mul(frame::FIRST_CHUNK)
            .saturating_add(self.request_memory)
    }
}

/// Most connections a daemon may be configured for (each costs a file
/// descriptor; systemd's default soft limit is 1024).
pub const MAX_CONNECTIONS_CEILING: usize = 65_536;
/// Longest configurable timeout: one day.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// What a connection is doing, for choosing whom to close when full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request.
    Idle,
    /// A request has started arriving.
    Reading,
    /// The handler is running: never closed to make room.
    Serving,
    /// Writing a reply.
    Writing,
}

struct Slot {
    phase: Phase,
    since: Instant,
    evict: Arc<Notify>,
}

/// The open connections, and what happened to the ones refused or closed.
#[derive(Default)]
struct Table {
    slots: Mutex<HashMap<u64, Slot>>,
    next_id: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    last_report: Mutex<Option<Instant>>,
}

enum Admission {
    Admitted(u64, Arc<Notify>),
    Busy,
}

impl Table {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection, closing the longest-waiting one if full.
    fn admit(&self, max: usize) -> Admission {
        let mut slots = self.slots();
        if slots.len() >= max {
            let victim = slots
                .iter()
                .filter(|(_, s)| s.phase != Phase::Serving)
                .min_by_key(|(_, s)| s.since)
                .map(|(id, _)| *id);
            match victim.and_then(|id| slots.remove(&id)) {
                Some(v) => {
                    v.evict.notify_one();
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return Admission::Busy;
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        slots.insert(
            id,
            Slot {
                phase: Phase::Idle,
                since: Instant::now(),
                evict: evict.clone(),
            },
        );
        Admission::Admitted(id, evict)
    }

    /// Moves a connection to `phase`; false when it was closed to make room.
    fn enter(&self, id: u64, phase: Phase) -> bool {
        match self.slots().get_mut(&id) {
            Some(s) => {
                s.phase = phase;
                s.since = Instant::now();
                true
            }
            None => false,
        }
    }

    fn leave(&self, id: u64) {
        self.slots().remove(&id);
    }

    /// Logs, at most every 10 s, how many connections were refused or
    /// closed to make room (one line per refusal would flood the journal
    /// during exactly the attack it reports).
    fn report(&self) {
        let mut last = self.last_report.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        let refused = self.refused.swap(0, Ordering::Relaxed);
        let evicted = self.evicted.swap(0, Ordering::Relaxed);
        if refused + evicted > 0 {
            tracing::warn!(
                refused,
                evicted,
                "connection limit reached: refused {refused} connections (Busy) and closed {evicted} waiting ones to make room"
            );
        }
    }
}

/// Encodes an error reply as a frame (an error message always fits).
fn error_frame(kind: ErrorKind, message: String) -> Vec<u8> {
    frame::encode(&Response::Error(ErrorReply::new(kind, message))).unwrap_or_default()
}

/// Writes what fits of `bytes` without waiting, for a last word before
/// closing (a small reply always fits in an empty socket buffer).
fn say_and_close(stream: UnixStream, bytes: &[u8]) {
    let _ = stream.try_write(bytes);
}

/// Serves `listener` with `handler` until `shutdown` resolves.
pub async fn serve<H, F>(
    listener: UnixListener,
    limits: Limits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Payload) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let handler = Arc::new(handler);
    let table = Arc::new(Table::default());
    let budget = MemoryBudget::new(limits.request_memory);
    let busy = error_frame(
        ErrorKind::Busy,
        format!(
            "all {} connections are serving requests; try again shortly",
            limits.max_connections
        ),
    );
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors (EMFILE) and the like: back off
                    // briefly instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match table.admit(limits.max_connections.max(1)) {
            Admission::Busy => {
                say_and_close(stream, &busy);
                table.report();
            }
            Admission::Admitted(id, evict) => {
                if table.evicted.load(Ordering::Relaxed) > 0 {
                    table.report();
                }
                let (t, h, b) = (table.clone(), handler.clone(), budget.clone());
                tokio::spawn(async move {
                    connection(stream, id, &evict, &t, &limits, &b, h.as_ref()).await;
                    t.leave(id);
                });
            }
        }
    }
}

/// How a request's bytes arrived.
enum Arrival {
    Done(Result<Payload, FrameError>),
    Evicted,
    TimedOut,
}

/// How one connection ended (logged at debug level).
enum End {
    ClientClosed,
    Evicted,
    IdleTimeout,
    WriteTimeout,
    Frame(FrameError),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientClosed => f.write_str("the client closed it"),
            End::Evicted => f.write_str("closed to make room for a new connection"),
            End::IdleTimeout => f.write_str("idle timeout"),
            End::WriteTimeout => f.write_str("the client did not take its reply (write timeout)"),
            End::Frame(e) => write!(f, "{e}"),
        }
    }
}

async fn connection<H, F>(
    mut stream: UnixStream,
    id: u64,
    evict: &Notify,
    table: &Table,
    limits: &Limits,
    budget: &MemoryBudget,
    handler: &H,
) where
    H: Fn(Payload) -> F,
    F: Future<Output = Response>,
{
    let end = loop {
        // Idle: wait for the first byte of the next request.
        if !table.enter(id, Phase::Idle) {
            break End::Evicted;
        }
        let mut prefix = [0u8; 4];
        let got = tokio::select! {
            _ = evict.notified() => break End::Evicted,
            r = tokio::time::timeout(limits.idle_timeout, stream.read(&mut prefix)) => match r {
                Err(_) => break End::IdleTimeout,
                Ok(Err(e)) => break End::Frame(e.into()),
                Ok(Ok(0)) => break End::ClientClosed,
                Ok(Ok(n)) => n,
            },
        };
        // Reading: the rest of the request within the read deadline.
        if !table.enter(id, Phase::Reading) {
            break End::Evicted;
        }
        let arrived = {
            let read = read_rest(&mut stream, prefix, got, budget);
            tokio::select! {
                _ = evict.notified() => Arrival::Evicted,
                r = tokio::time::timeout(limits.read_timeout, read) => match r {
                    Err(_) => Arrival::TimedOut,
                    Ok(r) => Arrival::Done(r),
                },
            }
        };
        let payload = match arrived {
            Arrival::Done(Ok(p)) => p,
            Arrival::Evicted => {
                say_and_close(stream, &error_frame(ErrorKind::Busy, format!(
                    "connection closed to make room: the server is at its limit of {} connections and this request was the slowest to arrive",
                    limits.max_connections
                )));
                tracing::debug!(id, "closing connection: evicted mid-request");
                return;
            }
            Arrival::TimedOut => {
                say_and_close(
                    stream,
                    &error_frame(
                        ErrorKind::BadRequest,
                        format!(
                            "request not complete {} s after its first byte; closing",
                            limits.read_timeout.as_secs()
                        ),
                    ),
                );
                tracing::debug!(id, "closing connection: read timeout");
                return;
            }
            Arrival::Done(Err(e)) => {
                let kind = match &e {
                    FrameError::TooLarge { .. } => Some(ErrorKind::BadRequest),
                    FrameError::OverBudget { .. } => Some(ErrorKind::Busy),
                    _ => None,
                };
                if let Some(kind) = kind {
                    let reply = Response::Error(ErrorReply::new(kind, e.to_string()));
                    let _ = tokio::time::timeout(
                        limits.write_timeout.min(Duration::from_secs(2)),
                        frame::write_frame(&mut stream, &reply),
                    )
                    .await;
                }
                break End::Frame(e);
            }
        };
        // Serving: never closed to make room.
        if !table.enter(id, Phase::Serving) {
            break End::Evicted;
        }
        let reply = handler(payload).await;
        if let Response::Error(e) = &reply {
            tracing::debug!(id, kind = ?e.kind, "request refused: {}", e.message);
        }
        // Writing: the client must take the reply within the write deadline.
        if !table.enter(id, Phase::Writing) {
            break End::Evicted;
        }
        tokio::select! {
            _ = evict.notified() => break End::Evicted,
            r = tokio::time::timeout(limits.write_timeout, frame::write_frame(&mut stream, &reply)) => match r {
                Err(_) => break End::WriteTimeout,
                Ok(Err(e)) => break End::Frame(e),
                Ok(Ok(())) => {}
            },
        }
    };
    tracing::debug!(id, "connection closed: {end}");
}

/// Completes a frame whose first `got` prefix bytes were read.
async fn read_rest(
    stream: &mut UnixStream,
    mut prefix: [u8; 4],
    mut got: usize,
    budget: &MemoryBudget,
) -> Result<Payload, FrameError> {
    while got < 4 {
        let n = stream.read(&mut prefix[got..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated { expected: 4, got });
        }
        got += n;
    }
    let len = frame::check_len(prefix)?;
    frame::read_payload(stream, len, Some(budget)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 2,
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            request_memory: 1 << 20,
        }
    }

    #[test]
    fn limits_out_of_range_are_refused_by_name() {
        assert!(limits().validate().is_ok());
        let e = Limits {
            max_connections: 0,
            ..limits()
        };
        assert!(e.validate().unwrap_err().contains("max_connections"));
        let e = Limits {
            read_timeout: Duration::ZERO,
            ..limits()
        };
        assert!(e.validate().unwrap_err().contains("read_timeout_s"));
        let e = Limits {
            idle_timeout: Duration::from_secs(u64::MAX),
            ..limits()
        };
        assert!(e.validate().unwrap_err().contains("idle_timeout_s"));
        let e = Limits {
            request_memory: 10,
            ..limits()
        };
        assert!(e.validate().unwrap_err().contains("request_memory_mib"));
    }

    #[test]
    fn a_full_table_closes_the_longest_waiting_and_never_one_being_served() {
        let t = Table::default();
        let Admission::Admitted(a, ea) = t.admit(2) else {
            panic!()
        };
        std::thread::sleep(Duration::from_millis(2));
        let Admission::Admitted(b, _) = t.admit(2) else {
            panic!()
        };
        // Full: `a` waited longest and goes.
        let Admission::Admitted(c, _) = t.admit(2) else {
            panic!()
        };
        assert!(!t.enter(a, Phase::Reading), "a was closed to make room");
        // The eviction is remembered until `a` looks.
        let woke = ready_at_once(ea.notified());
        assert!(woke);
        // Both left are being served: a newcomer is refused.
        assert!(t.enter(b, Phase::Serving) && t.enter(c, Phase::Serving));
        assert!(matches!(t.admit(2), Admission::Busy));
        t.leave(b);
        assert!(matches!(t.admit(2), Admission::Admitted(..)));
    }

    /// Whether a future is ready at its first poll.
    fn ready_at_once<F: Future>(f: F) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(1), f)
                .await
                .is_ok()
        })
    }
}
