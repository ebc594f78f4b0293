//! `migsight agent`: the host agent daemon.
//!
//! Listens on a Unix socket (default `/run/migsight/agent.sock`, mode 0600,
//! its directory 0750 when created here) for length-prefixed postcard frames
//! (`proto/src/frame.rs`) and answers:
//!
//! * `Health`: service, version, uptime; `ready` says whether the predictor
//!   socket answered a health check.
//! * `Profile`: locates the VM and profiles it on a blocking thread. A request
//!   for a VM (same pid) that is already being profiled **joins** that run and
//!   gets its result (with its own `VM_ptr`), instead of starting a second
//!   sampler; different VMs are profiled concurrently. With
//!   `AfterProfile::Predict`/`Recommend` the features are sent to the
//!   predictor and its answer attached to the report.
//!   **Predictor unreachable** (or answering with an error): the reply is an
//!   error (`PredictorUnavailable`, or the predictor's own error kind) whose
//!   message carries the profiled features as JSON, so the profiling is not
//!   lost; ask again with `AfterProfile::Nothing` to get the report itself.
//!
//! Hostile input cannot take it down: connections are handled by
//! `migsight_proto::serve` (at most `--max-connections`, the longest-waiting
//! closed to make room and `Busy` only when all are serving; idle, read and
//! write deadlines; request buffers that grow as bytes arrive, within a
//! memory budget), frames over 1 MiB are refused before allocation (typed
//! error, then the connection is closed, as its framing is lost), and
//! undecodable requests get a typed error and the connection stays usable.
//! SIGTERM/SIGINT stop it gracefully (running profiles are cancelled, the
//! socket file is removed).

use crate::error::AgentError;
use crate::profile::{profile, ProfileConfig};
use migsight_proto::serve::Limits;
use migsight_proto::socket::{self, SocketAccess};
use migsight_proto::wire::{
    self, AfterProfile, Client, ClientError, ErrorKind, ErrorReply, Health, PredictRequest,
    ProfileReport, ProfileRequest, RecommendRequest, Request, RequestBody, Response,
};
use migsight_proto::Feature;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UnixListener;
use tokio::sync::watch;

/// Options of `migsight agent`.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Unix socket to listen on (created mode 0600).
    #[arg(long, default_value = "/run/migsight/agent.sock")]
    pub socket: PathBuf,
    /// The predictor daemon's socket, for `Predict`/`Recommend` after profiling.
    #[arg(long, default_value = "/run/migsight/predictor.sock")]
    pub predictor: PathBuf,
    /// Memory-sampling CPU budget: fraction of one core per GiB of guest RAM.
    #[arg(long, default_value_t = 0.02)]
    pub cpu_budget: f64,
    /// Share of that budget the zero-page census (`VM_size`) may use on top
    /// of the sample's 65 %; when a full pass does not fit, it reads a
    /// fraction of the pages and reports a standard error. 0 turns it off.
    #[arg(long, default_value_t = migsight_agent_census_share())]
    pub census_share: f64,
    /// Most client connections open at once; when full, the one waiting
    /// longest for its client is closed to make room (a newcomer gets `Busy`
    /// only when every connection is being served, e.g. 32 profiles running).
    #[arg(long, default_value_t = 32)]
    pub max_connections: usize,
    /// Close a connection with no request for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub idle_timeout_s: u64,
    /// A request must arrive whole within this many seconds of its first byte.
    #[arg(long, default_value_t = 10)]
    pub read_timeout_s: u64,
    /// A client must take its reply within this many seconds.
    #[arg(long, default_value_t = 10)]
    pub write_timeout_s: u64,
    /// MiB that request buffers may hold in all, beyond 4 KiB per connection.
    #[arg(long, default_value_t = 4)]
    pub request_memory_mib: usize,
    /// Longest profiling window accepted, seconds (at most 86400).
    #[arg(long, default_value_t = 600)]
    pub max_window_s: u64,
    /// Skip QEMU's calc-dirty-rate cross-check.
    #[arg(long)]
    pub no_qemu_dirty_rate: bool,
    /// libvirt connection asked about `libvirt:NAME` VMs (which algorithms
    /// that libvirt can run on them).
    #[arg(long, default_value = "qemu:///system")]
    pub libvirt_uri: String,
}

impl Default for AgentArgs {
    fn default() -> Self {
        AgentArgs {
            socket: "/run/migsight/agent.sock".into(),
            predictor: "/run/migsight/predictor.sock".into(),
            cpu_budget: 0.02,
            census_share: migsight_agent_census_share(),
            max_connections: 32,
            idle_timeout_s: 60,
            read_timeout_s: 10,
            write_timeout_s: 10,
            request_memory_mib: 4,
            max_window_s: 600,
            no_qemu_dirty_rate: false,
            libvirt_uri: "qemu:///system".into(),
        }
    }
}

fn migsight_agent_census_share() -> f64 {
    crate::profile::CENSUS_SHARE
}

/// Longest `--max-window-s`: a day (a window is also a client's wait).
pub const MAX_WINDOW_S: u64 = 86_400;

impl AgentArgs {
    /// The connection limits these flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            idle_timeout: Duration::from_secs(self.idle_timeout_s),
            read_timeout: Duration::from_secs(self.read_timeout_s),
            write_timeout: Duration::from_secs(self.write_timeout_s),
            request_memory: self.request_memory_mib.saturating_mul(1 << 20),
        }
    }

    /// Rejects budgets and limits that would make profiling meaningless or
    /// unbounded, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.limits().validate().map_err(anyhow::Error::msg)?;
        if !(1..=MAX_WINDOW_S).contains(&self.max_window_s) {
            anyhow::bail!(
                "max_window_s must be between 1 and {MAX_WINDOW_S} seconds, got {}",
                self.max_window_s
            );
        }
        if !(self.cpu_budget.is_finite() && self.cpu_budget > 0.0 && self.cpu_budget <= 1.0) {
            anyhow::bail!(
                "cpu_budget must be in (0, 1] (a fraction of one core per GiB), got {}",
                self.cpu_budget
            );
        }
        if !(self.census_share.is_finite() && (0.0..=10.0).contains(&self.census_share)) {
            anyhow::bail!(
                "census_share must be between 0 and 10 (a share of cpu_budget), got {}",
                self.census_share
            );
        }
        Ok(())
    }
}

type Shared = watch::Receiver<Option<Result<ProfileReport, ErrorReply>>>;

struct State {
    args: AgentArgs,
    started: Instant,
    running: Mutex<HashMap<u32, Shared>>,
    cancel: Arc<AtomicBool>,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(a: AgentArgs) -> anyhow::Result<()> {
    a.validate()?;
    let listener = socket::bind(&a.socket, &SocketAccess::owner_only())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Each connection being served runs at most one blocking task (a
        // profile, or locating its VM); past 32 at once they queue. The
        // unit's TasksMax=64 counts these threads with the workers.
        .max_blocking_threads(a.max_connections.clamp(1, 32))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shutdown = async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        };
        serve(listener, a, shutdown).await
    })
}

/// Serves on `listener` until `shutdown` completes, then cancels running
/// profiles and removes the socket file.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    args: AgentArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = UnixListener::from_std(listener)?;
    let socket = args.socket.clone();
    tracing::info!(socket = %socket.display(), predictor = %args.predictor.display(), "migsight agent listening");
    let state = Arc::new(State {
        started: Instant::now(),
        running: Mutex::new(HashMap::new()),
        cancel: Arc::new(AtomicBool::new(false)),
        args,
    });
    let limits = state.args.limits();
    let st = state.clone();
    let handler = move |payload: migsight_proto::frame::Payload| {
        let st = st.clone();
        async move {
            match wire::decode_request(&payload) {
                Err(reply) => {
                    tracing::warn!(kind = ?reply.kind, "bad request: {}", reply.message);
                    Response::Error(reply)
                }
                Ok(req) => handle(req, &st).await,
            }
        }
    };
    // Returns when `shutdown` resolves, dropping (closing) the listener.
    migsight_proto::serve::serve(listener, limits, handler, shutdown).await;
    state.cancel.store(true, Ordering::Relaxed);
    let _ = std::fs::remove_file(&socket);
    // Give running profiles a moment to notice the cancellation.
    let t = Instant::now();
    while !state.running.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!("migsight agent stopped");
    Ok(())
}

async fn handle(req: Request, state: &Arc<State>) -> Response {
    match req.body {
        RequestBody::Health => {
            let ready = predictor_health(&state.args.predictor).await;
            Response::Health(Health {
                service: "agent".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                protocol: wire::PROTOCOL_VERSION,
                ready,
                uptime_s: state.started.elapsed().as_secs_f64(),
                last_reload: None,
            })
        }
        RequestBody::Profile(p) => match profile_request(p, state).await {
            Ok(r) => Response::Profile(r),
            Err(e) => Response::Error(e),
        },
        RequestBody::ModelInfo | RequestBody::Predict(_) | RequestBody::Recommend(_) => {
            Response::Error(ErrorReply::new(
                ErrorKind::BadRequest,
                "this is the agent; send ModelInfo/Predict/Recommend to the predictor",
            ))
        }
    }
}

async fn predictor_health(path: &Path) -> bool {
    let call = async {
        let mut c = Client::connect(path).await.ok()?;
        match c.call(RequestBody::Health).await {
            Ok(Response::Health(h)) => Some(h.ready),
            _ => None,
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), call).await,
        Ok(Some(true))
    )
}

fn validate(p: &ProfileRequest, max_window_s: u64) -> Result<(), ErrorReply> {
    let bad = |m: String| Err(ErrorReply::new(ErrorKind::BadRequest, m));
    if p.interval_ms < 100 {
        return bad(format!("interval_ms {} is below 100", p.interval_ms));
    }
    if p.window_ms < p.interval_ms {
        return bad(format!(
            "window_ms {} is shorter than interval_ms {}",
            p.window_ms, p.interval_ms
        ));
    }
    if p.window_ms > max_window_s.saturating_mul(1000) {
        return bad(format!(
            "window_ms {} exceeds the agent's limit of {} s",
            p.window_ms, max_window_s
        ));
    }
    if !(p.bandwidth_bps.is_finite() && p.bandwidth_bps > 0.0) {
        return bad(format!(
            "bandwidth_bps {} must be a positive number",
            p.bandwidth_bps
        ));
    }
    if !(p.downtime_limit_ms.is_finite() && p.downtime_limit_ms >= 0.0) {
        return bad(format!(
            "downtime_limit_ms {} must be a non-negative number",
            p.downtime_limit_ms
        ));
    }
    if let AfterProfile::Recommend { sla, .. } = &p.then {
        sla.validate()
            .map_err(|m| ErrorReply::new(ErrorKind::BadRequest, m))?;
    }
    Ok(())
}

async fn profile_request(
    p: ProfileRequest,
    state: &Arc<State>,
) -> Result<ProfileReport, ErrorReply> {
    validate(&p, state.args.max_window_s)?;
    let vm = p.vm.clone();
    let target = tokio::task::spawn_blocking(move || crate::vm::locate(&vm))
        .await
        .map_err(|e| ErrorReply::new(ErrorKind::Internal, format!("locate task failed: {e}")))?
        .map_err(|e: AgentError| e.to_reply())?;
    let pid = target.pid;
    // libvirt owns the monitor: QEMU's dirty-rate cross-check goes through
    // libvirt, over the profiling window.
    let dirty_rate_started = match &p.vm {
        migsight_proto::wire::VmRef::Libvirt(domain) if !state.args.no_qemu_dirty_rate => {
            let (uri, domain, secs) = (
                state.args.libvirt_uri.clone(),
                domain.clone(),
                (p.window_ms / 1000).max(1),
            );
            tokio::task::spawn_blocking(move || {
                let virsh = migsight_libvirt::Virsh::new(&uri);
                migsight_libvirt::domain::start_dirty_rate(&virsh, &domain, secs)
                    .map_err(
                        |e| tracing::info!(domain, error = %e, "no libvirt dirty-rate cross-check"),
                    )
                    .is_ok()
            })
            .await
            .unwrap_or(false)
        }
        _ => false,
    };
    // Join a running profile of the same VM, or start one.
    let mut rx = {
        let mut running = state.running.lock().unwrap();
        if let Some(rx) = running.get(&pid) {
            tracing::info!(pid, vm = %p.vm, "joining the running profile");
            rx.clone()
        } else {
            let (tx, rx) = watch::channel(None);
            running.insert(pid, rx.clone());
            let cfg = ProfileConfig {
                window: Duration::from_millis(p.window_ms),
                interval: Duration::from_millis(p.interval_ms),
                bandwidth_bps: p.bandwidth_bps,
                cpu_budget: state.args.cpu_budget,
                zero_census: state.args.census_share > 0.0,
                census_share: state.args.census_share,
                qemu_dirty_rate: !state.args.no_qemu_dirty_rate,
                ..Default::default()
            };
            let st = state.clone();
            let cancel = state.cancel.clone();
            tracing::info!(pid, vm = %p.vm, window_ms = p.window_ms, "profiling");
            tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let r = profile(&target, &cfg, &cancel).map_err(|e| e.to_reply());
                match &r {
                    Ok(rep) => tracing::info!(
                        pid,
                        secs = t.elapsed().as_secs_f64(),
                        pdr = ?rep.features.get(Feature::VmPdr),
                        wss = ?rep.features.get(Feature::VmWss),
                        "profile done"
                    ),
                    Err(e) => tracing::warn!(pid, kind = ?e.kind, "profile failed: {}", e.message),
                }
                st.running.lock().unwrap().remove(&pid);
                let _ = tx.send(Some(r));
            });
            rx
        }
    };
    let result = rx
        .wait_for(|v| v.is_some())
        .await
        .map_err(|_| ErrorReply::new(ErrorKind::Internal, "profiling task vanished"))?
        .clone()
        .expect("checked is_some");
    let mut report = result?;
    if let migsight_proto::wire::VmRef::Libvirt(domain) = &p.vm {
        let (uri, domain) = (state.args.libvirt_uri.clone(), domain.clone());
        let (qemu, rate) = tokio::task::spawn_blocking(move || {
            let virsh = migsight_libvirt::Virsh::new(&uri);
            // It was started with the window, so it ends about now.
            let rate = dirty_rate_started
                .then(|| {
                    (0..15).find_map(|_| {
                        let r = migsight_libvirt::domain::dirty_rate(&virsh, &domain).ok()?;
                        if r.is_none() {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        r
                    })
                })
                .flatten();
            (libvirt_qemu_info(&uri, &domain, pid), rate)
        })
        .await
        .map_err(|e| ErrorReply::new(ErrorKind::Internal, format!("libvirt task failed: {e}")))?;
        if qemu.is_some() {
            report.qemu = qemu;
        }
        report.qemu_dirty_rate = report.qemu_dirty_rate.or(rate);
    }
    // A joined run may have been asked for another bandwidth: VM_ptr is ours.
    report.features.set(
        Feature::VmPtr,
        Some(p.bandwidth_bps / migsight_proto::feature::MIB),
    );
    match &p.then {
        AfterProfile::Nothing => Ok(report),
        AfterProfile::Predict | AfterProfile::Recommend { .. } => {
            ask_predictor(&p, report, &state.args.predictor).await
        }
    }
}

/// What the libvirt at `uri` can run on `domain` (QEMU process `pid`): the
/// QEMU binary's rules and libvirt's own, so the predictor only predicts
/// what `migsight migrate libvirt:NAME` can realise. `None` (logged) when
/// libvirt cannot be asked: the binary's view stands.
fn libvirt_qemu_info(uri: &str, domain: &str, pid: u32) -> Option<migsight_proto::wire::QemuInfo> {
    use migsight_libvirt::{DomainFacts, LibvirtSupport, Virsh};
    let virsh = Virsh::new(uri);
    let asked = DomainFacts::query(&virsh, domain).and_then(|facts| {
        let args = crate::vm::cmdline(pid).unwrap_or_default();
        let exe = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
        let qemu = migsight_qemu::discovery::binary_version(&exe)
            .ok()
            .map(|v| migsight_qemu::HostSupport::from_version(v, &args));
        LibvirtSupport::query(&virsh, qemu, Some(facts.accel()))
    });
    match asked {
        Ok(s) => Some(s.info()),
        Err(e) => {
            tracing::warn!(uri, domain, error = %e, "cannot ask libvirt what it can run; using the QEMU binary's view");
            None
        }
    }
}

/// Longest wait for the predictor after a profile, retries included.
const PREDICTOR_TIMEOUT: Duration = Duration::from_secs(60);

async fn ask_predictor(
    p: &ProfileRequest,
    mut report: ProfileReport,
    path: &Path,
) -> Result<ProfileReport, ErrorReply> {
    let predict = PredictRequest {
        features: report.features,
        bandwidth_bps: p.bandwidth_bps,
        downtime_limit_ms: p.downtime_limit_ms,
        qemu: report.qemu.clone(),
    };
    let body = match &p.then {
        AfterProfile::Recommend { sla, objective } => RequestBody::Recommend(RecommendRequest {
            predict,
            sla: *sla,
            objective: *objective,
        }),
        _ => RequestBody::Predict(predict),
    };
    let features_json = serde_json::to_string(&report.features).unwrap_or_default();
    // A predictor at its connection limit answers `Busy` at once: try
    // again with a growing pause (the profile is too costly to lose to a
    // moment's load), within the one deadline.
    let call = async {
        let mut pause = Duration::from_millis(50);
        loop {
            let attempt = async {
                let mut c = Client::connect(path).await?;
                c.set_timeout(Some(PREDICTOR_TIMEOUT));
                c.call(body.clone()).await
            };
            match attempt.await {
                Err(ClientError::Server(e)) if e.kind == ErrorKind::Busy => {
                    tracing::debug!("predictor busy; retrying in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    };
    let fail = |kind: ErrorKind, why: String| {
        tracing::warn!(predictor = %path.display(), "predictor failed: {why}");
        ErrorReply::new(
            kind,
            format!("{why}; the profiled features were: {features_json}"),
        )
    };
    match tokio::time::timeout(PREDICTOR_TIMEOUT, call).await {
        Err(_) => Err(fail(
            ErrorKind::PredictorUnavailable,
            format!(
                "predictor at {} did not answer within {} s",
                path.display(),
                PREDICTOR_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(ClientError::Timeout { after, .. })) => Err(fail(
            ErrorKind::PredictorUnavailable,
            format!(
                "predictor at {} did not answer within {after:?}",
                path.display()
            ),
        )),
        Ok(Err(ClientError::Server(e))) => {
            Err(fail(e.kind, format!("predictor error: {}", e.message)))
        }
        Ok(Err(e)) => Err(fail(
            ErrorKind::PredictorUnavailable,
            format!("predictor unavailable: {e}"),
        )),
        Ok(Ok(Response::Prediction(pr))) => {
            report.prediction = Some(pr);
            Ok(report)
        }
        Ok(Ok(Response::Recommendation(rec))) => {
            report.prediction = Some(rec.prediction.clone());
            report.recommendation = Some(rec);
            Ok(report)
        }
        Ok(Ok(other)) => Err(fail(
            ErrorKind::PredictorUnavailable,
            format!("predictor sent an unexpected reply: {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::AgentArgs;

    #[test]
    fn a_huge_window_is_a_bad_request_not_an_overflow() {
        use migsight_proto::wire::{AfterProfile, ProfileRequest, VmRef};
        let p = ProfileRequest {
            vm: VmRef::Pid(1),
            window_ms: u64::MAX,
            interval_ms: 1000,
            bandwidth_bps: 1e8,
            downtime_limit_ms: 300.0,
            then: AfterProfile::Nothing,
        };
        let e = super::validate(&p, 600).unwrap_err();
        assert_eq!(e.kind, migsight_proto::wire::ErrorKind::BadRequest);
        assert!(super::validate(&p, u64::MAX).is_ok());
    }

    #[test]
    fn budgets_out_of_range_are_refused_by_name() {
        assert!(AgentArgs::default().validate().is_ok());
        for (budget, share, name) in [
            (0.0, 0.2, "cpu_budget"),
            (f64::NAN, 0.2, "cpu_budget"),
            (2.0, 0.2, "cpu_budget"),
            (0.02, -0.1, "census_share"),
            (0.02, f64::INFINITY, "census_share"),
        ] {
            let a = AgentArgs {
                cpu_budget: budget,
                census_share: share,
                ..AgentArgs::default()
            };
            let e = a.validate().unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
        }
        // A window limit that overflows when counted in ms, and connection
        // limits out of range, are refused by name.
        let e = AgentArgs {
            max_window_s: 18_446_744_073_709_552,
            ..AgentArgs::default()
        };
        assert!(e
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_window_s"));
        for (a, name) in [
            (
                AgentArgs {
                    max_connections: 0,
                    ..AgentArgs::default()
                },
                "max_connections",
            ),
            (
                AgentArgs {
                    write_timeout_s: 0,
                    ..AgentArgs::default()
                },
                "write_timeout_s",
            ),
        ] {
            assert!(a.validate().unwrap_err().to_string().contains(name));
        }
        // 0 turns the census off; it is not an error.
        let off = AgentArgs {
            census_share: 0.0,
            ..AgentArgs::default()
        };
        assert!(off.validate().is_ok());
    }
}
