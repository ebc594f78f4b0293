//! The predictor daemon: answers Predict, Recommend, ModelInfo and Health
//! over a Unix socket (length-prefixed postcard frames, `migsight_proto::frame`).
//!
//! * The model is loaded at start; `SIGHUP` reloads it from the same path and
//!   swaps it atomically (an `Arc` behind a lock: requests in flight finish
//!   on the model they started with). A file that fails to load is refused
//!   and logged; the old model stays. Either way `Health.last_reload` says
//!   what happened, which `migsight predictor --reload PID` (the unit's
//!   `ExecReload`) waits for, so `systemctl reload` fails on a refused file.
//! * The socket is mode 0660 (owner and group), optionally chowned to
//!   `--group`; its parent directory is created.
//! * Connections are handled by `migsight_proto::serve` (limits, deadlines,
//!   a request-memory budget; see there). Every malformed request gets a
//!   typed `ErrorReply` and the connection stays usable; a frame above the
//!   1 MiB cap or a torn frame closes the connection (the stream cannot be
//!   resynchronised).

use crate::model::{LoadError, Model};
use migsight_proto::serve::Limits;
use migsight_proto::wire::{
    self, ErrorKind, ErrorReply, Health, ReloadOutcome, RequestBody, Response,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::UnixListener;

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/migsight/predictor.sock";

/// Default connection limits (`--max-connections` etc.). 512 connections
/// each holding at most 4 KiB uncharged plus a 32 MiB budget for larger
/// request buffers bound request memory to 34 MiB; a request is ~400 bytes
/// and answered in ~50 µs, so 10 s to arrive or to be read back is ample.
pub const DEFAULT_LIMITS: Limits = Limits {
    max_connections: 512,
    idle_timeout: Duration::from_secs(60),
    read_timeout: Duration::from_secs(10),
    write_timeout: Duration::from_secs(10),
    request_memory: 32 << 20,
};

/// A loaded model and where it came from.
pub struct Loaded {
    pub model: Model,
    pub path: String,
    pub loaded_at: Instant,
}

/// The daemon's shared state.
pub struct State {
    current: RwLock<Arc<Loaded>>,
    path: PathBuf,
    started: Instant,
    last_reload: Mutex<Option<ReloadOutcome>>,
}

impl State {
    /// Loads the model at `path`.
    pub fn load(path: &Path) -> Result<State, LoadError> {
        let model = Model::load(path)?;
        Ok(State {
            current: RwLock::new(Arc::new(Loaded {
                model,
                path: path.display().to_string(),
                loaded_at: Instant::now(),
            })),
            path: path.to_path_buf(),
            started: Instant::now(),
            last_reload: Mutex::new(None),
        })
    }

    /// The model now in use.
    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads from the same path; on error the old model stays. The
    /// outcome is recorded for [`State::last_reload`].
    pub fn reload(&self) -> Result<(), LoadError> {
        let result = Model::load(&self.path).map(|model| {
            let what = format!(
                "loaded {} ({} model, data sha256 {})",
                self.path.display(),
                model.family.name(),
                model.data_sha256
            );
            let new = Arc::new(Loaded {
                model,
                path: self.path.display().to_string(),
                loaded_at: Instant::now(),
            });
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
            what
        });
        let (loaded, message) = match &result {
            Ok(what) => (true, what.clone()),
            Err(e) => (false, format!("refused, the previous model stays: {e}")),
        };
        let mut last = self.last_reload.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some(ReloadOutcome {
            generation: last.as_ref().map_or(0, |r| r.generation) + 1,
            finished_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            loaded,
            message,
        });
        result.map(|_| ())
    }

    /// The latest reload's outcome (`None` before the first).
    pub fn last_reload(&self) -> Option<ReloadOutcome> {
        self.last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Answers one request payload (never panics on hostile bytes).
pub fn handle(state: &State, payload: &[u8]) -> Response {
    let req = match wire::decode_request(payload) {
        Ok(r) => r,
        Err(e) => return Response::Error(e),
    };
    let loaded = state.current();
    let model = &loaded.model;
    let result = match req.body {
        RequestBody::Health => Ok(Response::Health(Health {
            service: "predictor".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: wire::PROTOCOL_VERSION,
            ready: true,
            uptime_s: state.uptime().as_secs_f64(),
            last_reload: state.last_reload(),
        })),
        RequestBody::ModelInfo => Ok(Response::ModelInfo(model.info(&loaded.path))),
        RequestBody::Predict(p) => model.predict(&p).map(Response::Prediction),
        RequestBody::Recommend(r) => model.recommend(&r).map(Response::Recommendation),
        RequestBody::Profile(_) => Err(ErrorReply::new(
            ErrorKind::BadRequest,
            "the predictor does not profile VMs; send Profile to the agent",
        )),
    };
    result.unwrap_or_else(Response::Error)
}

/// Serves `listener` until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    state: Arc<State>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let handler = move |payload: migsight_proto::frame::Payload| {
        let reply = handle(&state, &payload);
        std::future::ready(reply)
    };
    migsight_proto::serve::serve(listener, limits, handler, shutdown).await;
}

/// What `systemctl reload` runs (the unit's `ExecReload`, through
/// `migsight predictor --reload PID`): asks the running predictor `pid` to
/// reload its model (SIGHUP) and waits, over its socket, for the outcome of
/// that reload. An error when the file was refused (the old model serves
/// on) or no outcome came within `within`, so systemd reports the reload as
/// failed instead of the silent success a bare `kill -HUP` gives.
pub async fn reload_and_wait(
    socket: &Path,
    pid: u32,
    within: Duration,
) -> anyhow::Result<ReloadOutcome> {
    use migsight_proto::wire::Client;
    anyhow::ensure!(
        pid > 1 && i32::try_from(pid).is_ok(),
        "--reload needs the predictor's process id, got {pid}"
    );
    async fn generation(socket: &Path) -> anyhow::Result<Option<ReloadOutcome>> {
        let mut c = Client::connect(socket).await?;
        c.set_timeout(Some(Duration::from_secs(5)));
        match c.call(RequestBody::Health).await? {
            Response::Health(h) => Ok(h.last_reload),
            other => anyhow::bail!("the predictor answered Health with {other:?}"),
        }
    }
    let before = generation(socket)
        .await
        .map_err(|e| anyhow::anyhow!("cannot ask the predictor at {}: {e}", socket.display()))?
        .map_or(0, |r| r.generation);
    // SAFETY: kill has no memory preconditions; pid > 1 was checked, so this
    // never signals a process group.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) } != 0 {
        anyhow::bail!(
            "cannot signal the predictor (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + within;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(Some(r)) = generation(socket).await {
            if r.generation > before {
                return if r.loaded {
                    Ok(r)
                } else {
                    Err(anyhow::anyhow!("the predictor {}", r.message))
                };
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the predictor (pid {pid}) did not report a reload within {within:?}; check its log"
            );
        }
    }
}

/// Looks up a group id by name.
fn group_id(name: &str) -> std::io::Result<libc::gid_t> {
    if let Ok(gid) = name.parse::<libc::gid_t>() {
        return Ok(gid);
    }
    let c = std::ffi::CString::new(name)
        .map_err(|_| std::io::Error::other("group name contains a NUL byte"))?;
    // SAFETY: getgrnam returns NULL or a pointer to a static struct; we copy gr_gid immediately.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return Err(std::io::Error::other(format!("no such group {name:?}")));
    }
    Ok(unsafe { (*gr).gr_gid })
}

/// Binds the socket: creates the parent directory, removes a stale socket
/// (refusing if a live daemon answers or the path is not a socket), sets
/// mode 0660 and the group.
pub fn bind(path: &Path, group: Option<&str>) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::other(format!(
                "another daemon is listening on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    let gid = group.map(group_id).transpose()?;
    // Created without world access from the start, then exactly 0660.
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(0o117) };
    let listener = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = gid {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(std::io::Error::other)?;
        // SAFETY: plain chown of a path we just created; uid -1 leaves the owner.
        if unsafe { libc::chown(c.as_ptr(), libc::uid_t::MAX, gid) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(listener)
}

/// The listening socket systemd passed (`migsight-predictor.socket`), if
/// any: `LISTEN_PID` is this process and `LISTEN_FDS` ≥ 1, so fd 3 is ours
/// (sd_listen_fds(3)). It must be a listening Unix stream socket; anything
/// else is an error that names it, never a silent bind elsewhere.
pub fn systemd_listener() -> std::io::Result<Option<std::os::unix::net::UnixListener>> {
    use std::os::fd::FromRawFd;
    const FD: libc::c_int = 3;
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    if !ours || count == 0 {
        return Ok(None);
    }
    if count > 1 {
        return Err(std::io::Error::other(format!(
            "systemd passed {count} sockets; the predictor listens on exactly one (check ListenStream= in migsight-predictor.socket)"
        )));
    }
    let opt = |name: libc::c_int| -> std::io::Result<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into a c_int of the size we pass.
        let rc = unsafe {
            libc::getsockopt(
                FD,
                libc::SOL_SOCKET,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(v)
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let checks = (
        opt(libc::SO_DOMAIN),
        opt(libc::SO_TYPE),
        opt(libc::SO_ACCEPTCONN),
    );
    match checks {
        (Ok(libc::AF_UNIX), Ok(libc::SOCK_STREAM), Ok(1)) => {}
        other => {
            return Err(std::io::Error::other(format!(
                "the socket systemd passed (fd 3) is not a listening Unix stream socket ({other:?}); use ListenStream=/run/migsight/predictor.sock"
            )))
        }
    }
    // SAFETY: systemd handed fd 3 to this process (LISTEN_PID), it is a
    // listening Unix stream socket (checked above), and nothing else owns it.
    let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(FD) };
    l.set_nonblocking(true)?;
    Ok(Some(l))
}

/// Runs the daemon until SIGTERM/SIGINT; SIGHUP reloads the model. Listens
/// on the socket systemd passed if there is one (socket activation: the
/// socket, its mode and group are the `.socket` unit's, and it stays when
/// the daemon stops), else binds `socket` itself.
pub async fn run(
    model: &Path,
    socket: &Path,
    group: Option<&str>,
    limits: Limits,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    limits.validate().map_err(anyhow::Error::msg)?;
    let state = Arc::new(State::load(model)?);
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let activated = systemd_listener().map_err(|e| anyhow::anyhow!("socket activation: {e}"))?;
    let (listener, socket_shown, owns_socket) = match activated {
        Some(l) => {
            let shown = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "(unnamed)".into());
            (
                UnixListener::from_std(l)?,
                format!("{shown} (from systemd)"),
                false,
            )
        }
        None => (
            bind(socket, group)
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", socket.display()))?,
            socket.display().to_string(),
            true,
        ),
    };
    {
        let m = &state.current().model;
        tracing::info!(
            socket = %socket_shown,
            model = %model.display(),
            family = m.family.name(),
            rows = m.rows.iter().sum::<u64>(),
            max_connections = limits.max_connections,
            request_memory_mib = limits.request_memory >> 20,
            "predictor listening"
        );
    }
    let st = state.clone();
    let reloader = tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let s = st.clone();
            let t = Instant::now();
            match tokio::task::spawn_blocking(move || s.reload()).await {
                Ok(Ok(())) => tracing::info!(
                    ms = t.elapsed().as_secs_f64() * 1e3,
                    "SIGHUP: model reloaded"
                ),
                Ok(Err(e)) => {
                    tracing::error!("SIGHUP: new model refused, keeping the old one: {e}")
                }
                Err(e) => tracing::error!("SIGHUP: reload task failed: {e}"),
            }
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    serve(listener, state, limits, shutdown).await;
    reloader.abort();
    if owns_socket {
        let _ = std::fs::remove_file(socket);
    }
    tracing::info!("predictor stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn bind_sets_mode_and_group_and_refuses_non_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/p.sock");
        let gid = unsafe { libc::getegid() };
        let _l = bind(&path, Some(&gid.to_string())).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), gid);
        let e = bind(&dir.path().join("x.sock"), Some("no-such-group-migsight")).unwrap_err();
        assert!(e.to_string().contains("no such group"), "{e}");
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let e = bind(&file, None).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        // A stale socket (nobody listening) is replaced.
        drop(_l);
        let _l2 = bind(&path, None).unwrap();
    }

    #[test]
    fn hostile_payloads_get_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = crate::model::TrainOptions::new(crate::FamilyKind::Linear, 1);
        o.threads = 1;
        let data = crate::data::Data::from_dataset(&crate::testdata::simulate(5, 1, true), "f");
        let p = dir.path().join("m.msm");
        Model::train(&data, &o).save(&p).unwrap();
        let state = State::load(&p).unwrap();
        let mut rng = crate::rng::Rng::new(5);
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len % 64).map(|_| rng.next_u64() as u8).collect();
            let mut b = bytes.clone();
            b.insert(0, 1); // right version, garbage body
            for payload in [bytes, b] {
                match handle(&state, &payload) {
                    Response::Error(e) => assert!(matches!(
                        e.kind,
                        ErrorKind::BadRequest | ErrorKind::UnsupportedVersion
                    )),
                    Response::Health(_) | Response::ModelInfo(_) => {}
                    other => panic!("{other:?}"),
                }
            }
        }
    }
}
