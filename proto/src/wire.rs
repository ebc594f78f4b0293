//! Messages between the CLI, the agent and the predictor.
//!
//! See `proto/PROTOCOL.md` for the framing and a client walk-through. Every
//! request carries [`PROTOCOL_VERSION`] as its first field; a server decodes
//! that field alone first, so a peer speaking another version gets a typed
//! [`ErrorKind::UnsupportedVersion`] reply instead of a garbled decode error.

use crate::frame::{self, FrameError};
use crate::{Algorithm, Feature, FeatureVector, Metric};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

/// Version of the message set below. Bump on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 4;

/// QEMU's default downtime limit, used when a request does not give one.
pub const DEFAULT_DOWNTIME_LIMIT_MS: f64 = 300.0;

/// A request: the protocol version, then what is asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub body: RequestBody,
}

impl Request {
    /// A request of the current protocol version.
    pub fn new(body: RequestBody) -> Self {
        Request {
            version: PROTOCOL_VERSION,
            body,
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Liveness and readiness (both daemons).
    Health,
    /// Describe the loaded model (predictor).
    ModelInfo,
    /// Predict all metrics for all algorithms (predictor).
    Predict(PredictRequest),
    /// Predict and rank algorithms under an SLA (predictor).
    Recommend(RecommendRequest),
    /// Profile a VM, optionally asking the predictor afterwards (agent).
    Profile(ProfileRequest),
}

/// Input of a prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictRequest {
    pub features: FeatureVector,
    /// Planned migration bandwidth (QEMU `max-bandwidth`), bytes/s.
    pub bandwidth_bps: f64,
    /// QEMU `downtime-limit`, ms.
    pub downtime_limit_ms: f64,
    /// The source QEMU: its version (a model input) and the algorithms it
    /// can run (only those are predicted). `None`: not known; every
    /// algorithm the model has data for is predicted, version unknown.
    pub qemu: Option<QemuInfo>,
}

/// What the source QEMU is and can run (`migsight_qemu::discovery`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QemuInfo {
    /// `10.0.2`.
    pub version: String,
    /// `kvm`, `tcg`, … when known.
    pub accel: Option<String>,
    /// `qmp` (asked the running QEMU) or `binary` (its `--version` and command
    /// line: pid-only mode, e.g. under libvirt).
    pub source: String,
    /// Every algorithm migsight knows, with why it is unavailable here.
    pub algorithms: Vec<AlgorithmSupport>,
}

impl QemuInfo {
    /// Every algorithm with `unavailable`'s verdict on it: how QEMU's own
    /// discovery and libvirt's view (which may refuse more) describe a host.
    pub fn describe(
        version: String,
        accel: Option<String>,
        source: String,
        unavailable: impl Fn(Algorithm) -> Option<String>,
    ) -> QemuInfo {
        QemuInfo {
            version,
            accel,
            source,
            algorithms: Algorithm::ALL
                .into_iter()
                .map(|a| AlgorithmSupport {
                    algorithm: a,
                    unavailable: unavailable(a),
                })
                .collect(),
        }
    }

    /// `(major, minor)` of [`QemuInfo::version`], when it parses.
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        let mut it = self.version.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some((major, minor))
    }

    /// Why `a` cannot run on this QEMU (`None`: it can). An algorithm the
    /// list does not mention (a newer migsight's) is unavailable.
    pub fn unavailable(&self, a: Algorithm) -> Option<&str> {
        match self.algorithms.iter().find(|s| s.algorithm == a) {
            Some(s) => s.unavailable.as_deref(),
            None => Some("not known to the source's migsight"),
        }
    }
}

/// One algorithm on one QEMU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlgorithmSupport {
    pub algorithm: Algorithm,
    /// `None`: available; else why not (`removed in QEMU 9.1`).
    pub unavailable: Option<String>,
}

impl PredictRequest {
    /// A request for `features` at a bandwidth (bytes/s) and QEMU
    /// downtime limit (ms).
    pub fn new(features: FeatureVector, bandwidth_bps: f64, downtime_limit_ms: f64) -> Self {
        PredictRequest {
            features,
            bandwidth_bps,
            downtime_limit_ms,
            qemu: None,
        }
    }
}

/// Limits the operator must not exceed. `None` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Sla {
    pub max_downtime_ms: Option<f64>,
    pub max_time_ms: Option<f64>,
    pub max_data_bytes: Option<f64>,
    pub min_performance: Option<f64>,
}

impl Sla {
    /// Whether every limit is finite and non-negative.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("max_downtime_ms", self.max_downtime_ms),
            ("max_time_ms", self.max_time_ms),
            ("max_data_bytes", self.max_data_bytes),
            ("min_performance", self.min_performance),
        ];
        for (name, v) in fields {
            if let Some(v) = v {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!(
                        "SLA limit {name} = {v} must be a finite, non-negative number"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The metric limits as (metric, bound, is_upper_bound).
    pub fn limits(&self) -> Vec<(Metric, f64, bool)> {
        let mut v = Vec::new();
        if let Some(x) = self.max_downtime_ms {
            v.push((Metric::DT, x, true));
        }
        if let Some(x) = self.max_time_ms {
            v.push((Metric::TT, x, true));
        }
        if let Some(x) = self.max_data_bytes {
            v.push((Metric::TD, x, true));
        }
        if let Some(x) = self.min_performance {
            v.push((Metric::PERF, x, false));
        }
        v
    }
}

/// What to optimise among algorithms that meet the SLA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Shortest total migration time.
    #[default]
    Time,
    /// Shortest downtime.
    Downtime,
    /// Least data on the wire.
    Data,
    /// Highest VM performance during migration.
    Performance,
    /// Least extra source CPU.
    Cpu,
}

impl Objective {
    pub const ALL: [Objective; 5] = [
        Objective::Time,
        Objective::Downtime,
        Objective::Data,
        Objective::Performance,
        Objective::Cpu,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            Objective::Time => "time",
            Objective::Downtime => "downtime",
            Objective::Data => "data",
            Objective::Performance => "performance",
            Objective::Cpu => "cpu",
        }
    }
    /// The metric optimised and whether lower is better.
    pub const fn metric(self) -> (Metric, bool) {
        match self {
            Objective::Time => (Metric::TT, true),
            Objective::Downtime => (Metric::DT, true),
            Objective::Data => (Metric::TD, true),
            Objective::Performance => (Metric::PERF, false),
            Objective::Cpu => (Metric::CPU, true),
        }
    }
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Objective::ALL
            .into_iter()
            .find(|o| o.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown objective {s:?} (expected time, downtime, data, performance or cpu)"
                )
            })
    }
}

/// Input of a recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendRequest {
    pub predict: PredictRequest,
    pub sla: Sla,
    pub objective: Objective,
}

/// How the agent should find a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmRef {
    /// Path of the VM's QMP Unix socket.
    QmpSocket(PathBuf),
    /// PID of the QEMU process.
    Pid(u32),
    /// The `-name` given to QEMU (`guest=NAME` or `NAME,...`).
    Name(String),
    /// A libvirt domain name (`/run/libvirt/qemu/NAME.pid`); pid-only mode.
    Libvirt(String),
    /// A Proxmox VMID (`/var/run/qemu-server/VMID.qmp`).
    Proxmox(u32),
}

impl std::fmt::Display for VmRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmRef::QmpSocket(p) => write!(f, "qmp:{}", p.display()),
            VmRef::Pid(p) => write!(f, "pid:{p}"),
            VmRef::Name(n) => write!(f, "name:{n}"),
            VmRef::Libvirt(n) => write!(f, "libvirt:{n}"),
            VmRef::Proxmox(id) => write!(f, "proxmox:{id}"),
        }
    }
}

impl std::str::FromStr for VmRef {
    type Err = String;
    /// `qmp:PATH`, `pid:N`, `name:NAME`, `libvirt:NAME`, `proxmox:ID`; a bare
    /// number is a PID, a bare path (containing `/`) a QMP socket, anything
    /// else a `-name`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty VM reference".into());
        }
        let num = |v: &str, what: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("{what} {v:?} is not a positive integer"))
        };
        Ok(match s.split_once(':') {
            Some(("qmp", p)) => VmRef::QmpSocket(p.into()),
            Some(("pid", p)) => VmRef::Pid(num(p, "pid")?),
            Some(("name", n)) => VmRef::Name(n.into()),
            Some(("libvirt", n)) => VmRef::Libvirt(n.into()),
            Some(("proxmox", n)) => VmRef::Proxmox(num(n, "Proxmox VMID")?),
            _ if s.chars().all(|c| c.is_ascii_digit()) => VmRef::Pid(num(s, "pid")?),
            _ if s.contains('/') => VmRef::QmpSocket(s.into()),
            _ => VmRef::Name(s.into()),
        })
    }
}

/// What the agent does with the features once profiled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AfterProfile {
    /// Return the features only.
    Nothing,
    /// Also ask the predictor for a prediction.
    Predict,
    /// Also ask the predictor for a recommendation.
    Recommend { sla: Sla, objective: Objective },
}

/// Profile one VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileRequest {
    pub vm: VmRef,
    /// Profiling window, ms (default 20,000).
    pub window_ms: u64,
    /// Sampling interval, ms (default 1,000).
    pub interval_ms: u64,
    /// Planned migration bandwidth, bytes/s (becomes `VM_ptr`).
    pub bandwidth_bps: f64,
    pub downtime_limit_ms: f64,
    pub then: AfterProfile,
}

/// A reply.
// Replies are built, encoded and dropped one at a time, never stored in bulk,
// so the size difference between variants costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    Health(Health),
    ModelInfo(ModelInfo),
    Prediction(Prediction),
    Recommendation(Recommendation),
    Profile(ProfileReport),
    Error(ErrorReply),
}

/// The kind of a failure, for programs; the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    UnsupportedVersion,
    BadRequest,
    InvalidFeature,
    UnknownAlgorithm,
    NoModel,
    VmNotFound,
    NotQemu,
    PermissionDenied,
    VmExited,
    VmPaused,
    VmMigrating,
    PredictorUnavailable,
    Internal,
    /// The server is at its connection limit, or its request memory is
    /// taken, with nothing it may close to make room: try again shortly.
    Busy,
}

/// A typed error reply. The connection stays open after one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

impl ErrorReply {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorReply {
            kind,
            message: message.into(),
        }
    }
}

/// Answer to [`RequestBody::Health`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `agent` or `predictor`.
    pub service: String,
    /// migsight version.
    pub version: String,
    pub protocol: u32,
    /// Predictor: whether a model is loaded. Agent: whether the predictor answered.
    pub ready: bool,
    pub uptime_s: f64,
    /// Predictor: the latest model reload (SIGHUP) since it started, `None`
    /// before the first. Agent: always `None`.
    pub last_reload: Option<ReloadOutcome>,
}

/// How the predictor's latest model reload went. A refused file leaves the
/// previous model serving, so `ready` stays true: this is where a failed
/// `systemctl reload` shows (and what its `ExecReload` check reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// Reloads attempted since the daemon started (1 for the first).
    pub generation: u64,
    /// When it finished, ms since the Unix epoch.
    pub finished_unix_ms: u64,
    /// Whether the new file is now the model in use.
    pub loaded: bool,
    /// What was loaded, or why the file was refused.
    pub message: String,
}

/// Per algorithm × metric cross-validation score stored in a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvScore {
    pub algorithm: Algorithm,
    pub metric: Metric,
    pub n: u64,
    pub gmre: f64,
    pub coverage: f64,
}

/// Answer to [`RequestBody::ModelInfo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub format_version: u32,
    pub family: String,
    pub created_unix: u64,
    /// Input columns the model uses (CSAP names plus composed features).
    pub inputs: Vec<String>,
    /// Rows used per algorithm (CSAP order).
    pub rows: Vec<u64>,
    pub data_sha256: String,
    pub cv: Vec<CvScore>,
    /// Recommendation rules per objective (objectives without one use the
    /// model's pick).
    pub fallback: Vec<FallbackRule>,
    pub path: String,
}

/// A trained model's recommendation rule for one objective (learned by
/// `migsight train`, see `predictor/src/decision.rs`): keep `default` unless
/// the model predicts another algorithm better by more than `margin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FallbackRule {
    pub objective: Objective,
    /// The QEMU release the rule was learned on (`7.2`, `10.0`; empty: rows
    /// that did not say). Releases offer other algorithms and behave
    /// differently (multifd-zstd, the best constant choice for time and
    /// data on QEMU 10, does not exist on 7.2 migsight's data), so each has
    /// its own rules.
    pub qemu: String,
    pub default: Algorithm,
    /// The model's pick replaces `default` only when predicted better by
    /// more than this share of the default's value (infinity: never, while
    /// the default is likely to meet the SLA).
    pub margin: f64,
    /// Paired training groups the rule was learned on.
    pub groups: u64,
    /// Mean out-of-fold loss on them: the model's pick, and with the rule
    /// (its choice of default and margin nested).
    pub loss_model: f64,
    pub loss_rule: f64,
}

impl FallbackRule {
    /// Whether a loaded rule is usable (a hostile file cannot make NaN margins).
    pub fn is_valid(&self) -> bool {
        self.margin >= 0.0 && self.loss_model.is_finite() && self.loss_rule.is_finite()
    }
}

/// A predicted value with its 90 % prediction interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// All six metrics for one algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlgorithmPrediction {
    pub algorithm: Algorithm,
    /// Indexed by [`Metric::index`]: TT, DT, TD, PERF, CPU, MEM.
    pub metrics: [Interval; 6],
    /// Probability that the migration converges (completes within the cap).
    pub p_converge: f64,
    /// Top feature contributions, in words, most important first.
    pub explanation: Vec<String>,
}

impl AlgorithmPrediction {
    pub fn metric(&self, m: Metric) -> Interval {
        self.metrics[m.index()]
    }
}

/// Answer to [`RequestBody::Predict`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub bandwidth_bps: f64,
    pub downtime_limit_ms: f64,
    /// One entry per algorithm that the source can run and the model has
    /// data for, in code order.
    pub algorithms: Vec<AlgorithmPrediction>,
    /// The algorithms not predicted, and why (unavailable on the source, or
    /// no training data behind them).
    pub not_predicted: Vec<AlgorithmSupport>,
    /// Where the request lies outside the model's training data, in words
    /// ("VM_size 65536 MiB is 77.5× the largest VM in training (846 MiB)");
    /// the intervals of such predictions are widened accordingly. Empty:
    /// inside.
    pub out_of_domain: Vec<String>,
    /// Features the model wanted but the request lacked.
    pub missing_features: Vec<Feature>,
    pub model_family: String,
}

/// One algorithm in a recommendation's ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedAlgorithm {
    pub algorithm: Algorithm,
    /// Probability the migration converges and meets every SLA limit.
    pub p_meets_sla: f64,
    /// Predicted value of the objective metric.
    pub objective_value: f64,
}

/// Answer to [`RequestBody::Recommend`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub prediction: Prediction,
    pub sla: Sla,
    pub objective: Objective,
    /// Best first.
    pub ranked: Vec<RankedAlgorithm>,
    pub recommended: Algorithm,
    /// Whether the recommended algorithm's point prediction meets every SLA limit.
    pub meets_sla: bool,
    /// Why, in a sentence.
    pub reason: String,
}

/// A feature the agent could not measure, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissingFeature {
    pub feature: Feature,
    pub reason: String,
}

/// Standard error of a sampled estimate, in the feature's unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureError {
    pub feature: Feature,
    pub std_error: f64,
}

/// Distinct guest memory dirtied at least once within a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DirtiedWindow {
    /// Consecutive sampling intervals in the window.
    pub intervals: u32,
    /// Mean length of the window, s.
    pub seconds: f64,
    /// MiB dirtied at least once, averaged over the window's start.
    pub mib: f64,
}

/// Answer to [`RequestBody::Profile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileReport {
    pub pid: u32,
    pub vm_name: Option<String>,
    pub window_ms: u64,
    pub intervals: u32,
    pub features: FeatureVector,
    pub errors: Vec<FeatureError>,
    pub missing: Vec<MissingFeature>,
    /// QEMU's own `calc-dirty-rate` estimate, MiB/s, when it could be run safely.
    pub qemu_dirty_rate: Option<f64>,
    /// Distinct memory dirtied within windows of consecutive sampling
    /// intervals, shortest first: how much a pre-copy round of that length
    /// leaves to re-send. Not a model input yet (the lab records it).
    pub dirtied: Vec<DirtiedWindow>,
    /// Pages sampled per interval.
    pub sampled_pages: u64,
    /// The CPU budget that bought the sample (share of one core per GiB).
    pub cpu_budget: f64,
    /// The QEMU: version and the algorithms it can run (`None` when neither
    /// QMP nor the binary told).
    pub qemu: Option<QemuInfo>,
    pub prediction: Option<Prediction>,
    pub recommendation: Option<Recommendation>,
}

thread_local! {
    /// What a custom deserialization error said: postcard keeps only "Serde
    /// Deserialization Error", so the types whose errors matter to a client
    /// (an unknown feature key) leave their message here for [`decode_request`].
    static DECODE_DETAIL: RefCell<Option<(ErrorKind, String)>> = const { RefCell::new(None) };
}

/// Records why a value did not deserialize, for [`decode_request`]'s reply.
pub(crate) fn note_decode_detail(kind: ErrorKind, message: &str) {
    DECODE_DETAIL.with(|d| *d.borrow_mut() = Some((kind, message.to_string())));
}

fn take_decode_detail() -> Option<(ErrorKind, String)> {
    DECODE_DETAIL.with(|d| d.borrow_mut().take())
}

/// Reads the version field alone, then the whole request.
///
/// Returns a typed error for another protocol version or malformed bytes;
/// an unknown feature key is `InvalidFeature` naming the key.
pub fn decode_request(payload: &[u8]) -> Result<Request, ErrorReply> {
    let (version, _) = postcard::take_from_bytes::<u32>(payload)
        .map_err(|e| ErrorReply::new(ErrorKind::BadRequest, format!("malformed request: {e}")))?;
    if version != PROTOCOL_VERSION {
        return Err(ErrorReply::new(
            ErrorKind::UnsupportedVersion,
            format!("protocol version {version} is not supported; this server speaks version {PROTOCOL_VERSION}"),
        ));
    }
    take_decode_detail();
    frame::decode(payload).map_err(|e: FrameError| {
        if let FrameError::Decode(postcard::Error::SerdeDeCustom) = e {
            if let Some((kind, message)) = take_decode_detail() {
                return ErrorReply::new(kind, format!("malformed request: {message}"));
            }
        }
        let kind = match &e {
            FrameError::Decode(_) | FrameError::TrailingBytes(_) => ErrorKind::BadRequest,
            _ => ErrorKind::Internal,
        };
        ErrorReply::new(kind, format!("malformed request: {e}"))
    })
}

/// Errors of a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Frame(FrameError),
    /// The daemon went away (crashed, killed, restarted) with the request
    /// unanswered.
    #[error("server at {0} closed the connection without replying")]
    Closed(String),
    #[error("{0}")]
    Server(ErrorReply),
    #[error("server at {path} did not answer within {after:?}")]
    Timeout { path: String, after: Duration },
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> ClientError {
        ClientError::Frame(e)
    }
}

/// Longest wait for a connection to a daemon's socket.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the answer to a request other than `Profile`: the
/// predictor answers in microseconds, so this only ends waits on a daemon
/// that is stuck, stopped (SIGSTOP) or flooded.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to a `Profile` request's window for its answer: the agent's QMP
/// preflight, its census pass and the predictor's answer.
pub const PROFILE_SLACK: Duration = Duration::from_secs(120);

/// How long a client waits for the answer to `body` unless told otherwise.
pub fn default_timeout(body: &RequestBody) -> Duration {
    match body {
        RequestBody::Profile(p) => Duration::from_millis(p.window_ms).saturating_add(PROFILE_SLACK),
        _ => CALL_TIMEOUT,
    }
}

/// A client connection to an agent or predictor socket; one request at a
/// time. Every step has a deadline, so a client never hangs on a daemon.
pub struct Client {
    stream: tokio::net::UnixStream,
    path: String,
    timeout: Option<Duration>,
}

impl Client {
    /// Connects within [`CONNECT_TIMEOUT`].
    pub async fn connect(path: impl AsRef<std::path::Path>) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let stream = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::UnixStream::connect(path),
        )
        .await
        {
            Err(_) => {
                return Err(ClientError::Timeout {
                    path: shown,
                    after: CONNECT_TIMEOUT,
                })
            }
            Ok(r) => r.map_err(|source| ClientError::Connect {
                path: shown.clone(),
                source,
            })?,
        };
        Ok(Client {
            stream,
            path: shown,
            timeout: None,
        })
    }

    /// Every later call must be answered within `limit` (`None`: the
    /// request's [`default_timeout`]).
    pub fn set_timeout(&mut self, limit: Option<Duration>) {
        self.timeout = limit;
    }

    /// Sends `body` and waits for the reply, at most the timeout; an error
    /// reply becomes [`ClientError::Server`].
    pub async fn call(&mut self, body: RequestBody) -> Result<Response, ClientError> {
        let limit = self.timeout.unwrap_or_else(|| default_timeout(&body));
        match tokio::time::timeout(limit, self.exchange(body)).await {
            Err(_) => Err(ClientError::Timeout {
                path: self.path.clone(),
                after: limit,
            }),
            Ok(r) => r,
        }
    }

    async fn exchange(&mut self, body: RequestBody) -> Result<Response, ClientError> {
        if let Err(e) = frame::write_frame(&mut self.stream, &Request::new(body)).await {
            // A server that refuses a connection (`Busy`) writes its reply
            // and closes without reading the request, so the write may fail
            // while the reply waits to be read.
            let peer_gone = matches!(&e, FrameError::Io(io) if matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ));
            if peer_gone {
                if let Ok(Some(p)) = frame::read_frame(&mut self.stream).await {
                    if let Ok(Response::Error(r)) = frame::decode::<Response>(&p) {
                        return Err(ClientError::Server(r));
                    }
                }
            }
            return Err(e.into());
        }
        let payload = match frame::read_frame(&mut self.stream).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(ClientError::Closed(self.path.clone())),
            // A reset or a reply cut short: the server died mid-request.
            Err(FrameError::Truncated { .. }) => {
                return Err(ClientError::Closed(self.path.clone()))
            }
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return Err(ClientError::Closed(self.path.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        match frame::decode::<Response>(&payload)? {
            Response::Error(e) => Err(ClientError::Server(e)),
            r => Ok(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features() -> FeatureVector {
        FeatureVector::new()
            .with(Feature::VmSize, 512.0)
            .with(Feature::VmPdr, 7.8)
            .with(Feature::VmPtr, 100.0)
    }

    fn prediction() -> Prediction {
        let iv = Interval {
            value: 1.0,
            lo: 0.5,
            hi: 2.0,
        };
        Prediction {
            bandwidth_bps: 125e6,
            downtime_limit_ms: 300.0,
            algorithms: Algorithm::ALL
                .map(|algorithm| AlgorithmPrediction {
                    algorithm,
                    metrics: [iv; 6],
                    p_converge: 0.9,
                    explanation: vec!["dirty rate drives total time".into()],
                })
                .to_vec(),
            not_predicted: vec![AlgorithmSupport {
                algorithm: Algorithm::DirtyLimit,
                unavailable: Some("no training data".into()),
            }],
            out_of_domain: vec!["VM_size 65536 MiB is 77.5× the largest VM in training".into()],
            missing_features: vec![Feature::VmPmuInstr],
            model_family: "gbdt".into(),
        }
    }

    fn every_request() -> Vec<RequestBody> {
        let pr = PredictRequest {
            features: features(),
            bandwidth_bps: 125e6,
            downtime_limit_ms: 300.0,
            qemu: Some(QemuInfo {
                version: "10.0.2".into(),
                accel: Some("kvm".into()),
                source: "qmp".into(),
                algorithms: vec![AlgorithmSupport {
                    algorithm: Algorithm::Compress,
                    unavailable: Some("removed in QEMU 9.1".into()),
                }],
            }),
        };
        vec![
            RequestBody::Health,
            RequestBody::ModelInfo,
            RequestBody::Predict(pr.clone()),
            RequestBody::Recommend(RecommendRequest {
                predict: pr,
                sla: Sla {
                    max_downtime_ms: Some(300.0),
                    ..Sla::default()
                },
                objective: Objective::Data,
            }),
            RequestBody::Profile(ProfileRequest {
                vm: VmRef::Libvirt("web1".into()),
                window_ms: 20_000,
                interval_ms: 1_000,
                bandwidth_bps: 1e8,
                downtime_limit_ms: 300.0,
                then: AfterProfile::Recommend {
                    sla: Sla::default(),
                    objective: Objective::Time,
                },
            }),
        ]
    }

    fn every_response() -> Vec<Response> {
        let p = prediction();
        vec![
            Response::Health(Health {
                service: "predictor".into(),
                version: "0.1.0".into(),
                protocol: PROTOCOL_VERSION,
                ready: true,
                uptime_s: 1.5,
                last_reload: Some(ReloadOutcome {
                    generation: 2,
                    finished_unix_ms: 1_700_000_000_000,
                    loaded: false,
                    message: "not a migsight model file".into(),
                }),
            }),
            Response::ModelInfo(ModelInfo {
                format_version: 1,
                family: "gbdt".into(),
                created_unix: 1,
                inputs: vec!["VM_size".into()],
                rows: vec![1, 2, 3, 4, 5],
                data_sha256: "ab".into(),
                cv: vec![CvScore {
                    algorithm: Algorithm::Xbzrle,
                    metric: Metric::TD,
                    n: 10,
                    gmre: 0.1,
                    coverage: 0.9,
                }],
                fallback: vec![FallbackRule {
                    objective: Objective::Performance,
                    qemu: "7.2".into(),
                    default: Algorithm::Postcopy,
                    margin: 0.1,
                    groups: 196,
                    loss_model: 0.089,
                    loss_rule: 0.071,
                }],
                path: "/var/lib/migsight/model.msm".into(),
            }),
            Response::Prediction(p.clone()),
            Response::Recommendation(Recommendation {
                prediction: p.clone(),
                sla: Sla::default(),
                objective: Objective::Downtime,
                ranked: vec![RankedAlgorithm {
                    algorithm: Algorithm::Postcopy,
                    p_meets_sla: 0.8,
                    objective_value: 12.0,
                }],
                recommended: Algorithm::Postcopy,
                meets_sla: true,
                reason: "because".into(),
            }),
            Response::Profile(ProfileReport {
                pid: 42,
                vm_name: Some("src".into()),
                window_ms: 20_000,
                intervals: 20,
                features: features(),
                errors: vec![FeatureError {
                    feature: Feature::VmPdr,
                    std_error: 0.3,
                }],
                missing: vec![MissingFeature {
                    feature: Feature::VmPmuInstr,
                    reason: "no hardware PMU".into(),
                }],
                qemu_dirty_rate: None,
                dirtied: vec![DirtiedWindow {
                    intervals: 2,
                    seconds: 2.01,
                    mib: 3.5,
                }],
                sampled_pages: 4096,
                qemu: None,
                cpu_budget: 0.02,
                prediction: Some(p),
                recommendation: None,
            }),
            Response::Error(ErrorReply::new(ErrorKind::VmPaused, "paused")),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for body in every_request() {
            let req = Request::new(body);
            let frame = frame::encode(&req).unwrap();
            let back = decode_request(&frame[4..]).unwrap();
            assert_eq!(back, req);
            let json = serde_json::to_string(&req).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        }
        for resp in every_response() {
            let frame = frame::encode(&resp).unwrap();
            let back: Response = frame::decode(&frame[4..]).unwrap();
            assert_eq!(back, resp);
        }
    }

    #[test]
    fn other_versions_get_a_typed_error() {
        let mut req = Request::new(RequestBody::Health);
        req.version = 99;
        let frame = frame::encode(&req).unwrap();
        let e = decode_request(&frame[4..]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnsupportedVersion);
        assert!(e.message.contains("99"));
    }

    #[test]
    fn garbage_requests_are_bad_requests() {
        for garbage in [&[][..], &[1u8][..], &[1, 200, 7, 7][..], &[0xff; 16][..]] {
            let e = decode_request(garbage).unwrap_err();
            assert!(
                matches!(
                    e.kind,
                    ErrorKind::BadRequest | ErrorKind::UnsupportedVersion
                ),
                "{garbage:?} -> {e:?}"
            );
        }
    }

    #[test]
    fn vm_refs_parse() {
        assert_eq!("1234".parse::<VmRef>(), Ok(VmRef::Pid(1234)));
        assert_eq!(
            "/run/x.qmp".parse::<VmRef>(),
            Ok(VmRef::QmpSocket("/run/x.qmp".into()))
        );
        assert_eq!("proxmox:101".parse::<VmRef>(), Ok(VmRef::Proxmox(101)));
        assert_eq!("web1".parse::<VmRef>(), Ok(VmRef::Name("web1".into())));
        assert!("pid:abc".parse::<VmRef>().is_err());
    }
}
