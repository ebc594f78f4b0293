//! The agent's errors, each mapped to a wire [`ErrorKind`].

use migsight_proto::wire::ErrorKind;
use migsight_qemu::procfs::ProcError;
use migsight_qemu::qmp::QmpError;

/// Why a VM could not be found or profiled.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("VM not found: {0}")]
    VmNotFound(String),
    #[error("process {pid} is not a QEMU process ({detail})")]
    NotQemu { pid: u32, detail: String },
    #[error("permission denied: {0} (the agent needs root or CAP_SYS_PTRACE to read another process's memory)")]
    PermissionDenied(String),
    #[error("QEMU process {pid} exited during profiling after {intervals} of {planned} intervals")]
    VmExited {
        pid: u32,
        intervals: u32,
        planned: u32,
    },
    #[error("VM (pid {pid}) is paused (status {status:?}); resume it before profiling")]
    VmPaused { pid: u32, status: String },
    #[error("VM (pid {pid}) is migrating (migration status {status:?}); profile it before or after the migration")]
    VmMigrating { pid: u32, status: String },
    #[error("profiling cancelled after {intervals} intervals")]
    Cancelled { intervals: u32 },
    #[error("{0}")]
    Qmp(#[from] QmpError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("invalid profiling request: {0}")]
    BadRequest(String),
    #[error("{0}")]
    Other(String),
}

impl From<ProcError> for AgentError {
    /// A vanished process is a VM that is not there; a refused read is a
    /// permission problem the operator can fix.
    fn from(e: ProcError) -> Self {
        match e {
            ProcError::NoProcess(pid) => {
                AgentError::VmNotFound(format!("no process with pid {pid}"))
            }
            ProcError::Io { path, source } => AgentError::io(format!("reading {path}"), source),
            ProcError::Parse { .. } => AgentError::Other(e.to_string()),
        }
    }
}

impl AgentError {
    /// The wire error kind for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AgentError::VmNotFound(_) => ErrorKind::VmNotFound,
            AgentError::NotQemu { .. } => ErrorKind::NotQemu,
            AgentError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            AgentError::VmExited { .. } => ErrorKind::VmExited,
            AgentError::VmPaused { .. } => ErrorKind::VmPaused,
            AgentError::VmMigrating { .. } => ErrorKind::VmMigrating,
            AgentError::BadRequest(_) => ErrorKind::BadRequest,
            AgentError::Cancelled { .. }
            | AgentError::Qmp(_)
            | AgentError::Io { .. }
            | AgentError::Other(_) => ErrorKind::Internal,
        }
    }

    /// An i/o error with what was being done; `EACCES`/`EPERM` become
    /// [`AgentError::PermissionDenied`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> AgentError {
        let context = context.into();
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                AgentError::PermissionDenied(format!("{context}: {source}"))
            }
            _ => AgentError::Io { context, source },
        }
    }

    /// The wire error reply for this error.
    pub fn to_reply(&self) -> migsight_proto::wire::ErrorReply {
        migsight_proto::wire::ErrorReply::new(self.kind(), self.to_string())
    }
}
