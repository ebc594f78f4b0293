//! Binding a daemon's Unix socket: the one way the agent and the predictor
//! claim their socket path (then [`crate::serve`] serves on it).
//!
//! Both must never hand their socket to the wrong people, even for a moment,
//! and never take over a path they do not own: the socket is created with
//! its final mode already in force (the umask is narrowed around `bind`), a
//! stale socket file left by a crashed daemon is replaced, but a live one
//! (another daemon answers) and anything that is not a socket are refused.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Who may connect to a daemon's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketAccess {
    /// Mode of the socket file: 0600 (the owner only, the agent, which
    /// reads any VM's memory) or 0660 (also `group`, the predictor).
    pub mode: u32,
    /// Group given to the socket, by name or number; `None` keeps the
    /// process's.
    pub group: Option<String>,
    /// Mode of the parent directory when binding has to create it; `None`
    /// leaves it to the umask.
    pub new_dir_mode: Option<u32>,
}

impl SocketAccess {
    /// The owner alone; a created directory is 0750.
    pub fn owner_only() -> SocketAccess {
        SocketAccess {
            mode: 0o600,
            group: None,
            new_dir_mode: Some(0o750),
        }
    }

    /// The owner and `group` (or the process's group).
    pub fn with_group(group: Option<&str>) -> SocketAccess {
        SocketAccess {
            mode: 0o660,
            group: group.map(str::to_string),
            new_dir_mode: None,
        }
    }
}

/// Why a socket could not be bound; every variant names the path or group.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("another daemon is already listening on {}", .0.display())]
    InUse(PathBuf),
    #[error("no such group {0:?}")]
    NoSuchGroup(String),
    #[error("cannot listen on {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Binds `path` for a daemon with `access`, non-blocking (ready for
/// `tokio::net::UnixListener::from_std`).
pub fn bind(path: &Path, access: &SocketAccess) -> Result<UnixListener, BindError> {
    let io = |what: &'static str| {
        move |source: io::Error| BindError::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io("creating its directory"))?;
            if let Some(mode) = access.new_dir_mode {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                    .map_err(io("setting its directory's mode"))?;
            }
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(path.to_path_buf()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io("removing the stale socket"))?;
    }
    let gid = access.group.as_deref().map(group_id).transpose()?;
    // Created without the excluded bits from the start, then exactly `mode`.
    // SAFETY: umask has no preconditions; the old mask is restored right after.
    let old = unsafe { libc::umask(0o777 & !access.mode as libc::mode_t) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = listener.map_err(io("binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))
        .map_err(io("setting its mode"))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io("setting its group"))?;
    }
    listener
        .set_nonblocking(true)
        .map_err(io("making it non-blocking"))?;
    Ok(listener)
}

/// A group's id from its name or number.
fn group_id(name: &str) -> Result<u32, BindError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let missing = || BindError::NoSuchGroup(name.to_string());
    let c = std::ffi::CString::new(name).map_err(|_| missing())?;
    // SAFETY: getgrnam returns NULL or a pointer to a static struct; gr_gid
    // is copied before any other call could reuse it.
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return Err(missing());
    }
    // SAFETY: non-null, as checked.
    Ok(unsafe { (*gr).gr_gid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn owner_only_socket_and_its_new_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/a.sock");
        let l = bind(&path, &SocketAccess::owner_only()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let run = std::fs::metadata(dir.path().join("run")).unwrap();
        assert_eq!(run.mode() & 0o777, 0o750);
        // A live daemon's socket is refused; a stale one is replaced.
        let e = bind(&path, &SocketAccess::owner_only()).unwrap_err();
        assert!(matches!(e, BindError::InUse(_)), "{e}");
        drop(l);
        let _l = bind(&path, &SocketAccess::owner_only()).unwrap();
    }

    #[test]
    fn group_socket_mode_group_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/p.sock");
        // SAFETY: getegid has no preconditions.
        let gid = unsafe { libc::getegid() };
        let access = SocketAccess::with_group(Some(&gid.to_string()));
        let _l = bind(&path, &access).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), gid);
        let e = bind(
            &dir.path().join("x.sock"),
            &SocketAccess::with_group(Some("no-such-group-migsight")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no such group"), "{e}");
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let e = bind(&file, &SocketAccess::with_group(None)).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"x", "left alone");
    }
}
