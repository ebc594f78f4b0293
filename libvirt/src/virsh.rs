//! Running `virsh` against one libvirt connection, with a time limit and
//! typed errors.
//!
//! Why `virsh` and not the libvirt project's Rust bindings (`virt` 0.5,
//! LGPL-2.1): measured on this 2-core host against libvirt 11.3, one
//! `virDomainGetJobStats` costs 0.18 ms through `virt` and 37 ms wall /
//! 20 ms CPU through `virsh domjobinfo --rawstats` (200 calls each). At the
//! two polls a second a migration needs that is 4 % of one core, on the
//! client only, while the migration runs — next to the QEMU migration
//! thread's full core. In exchange, `virsh` keeps migsight buildable and
//! runnable on every host: `virt` needs `libvirt-dev` to build and links
//! `libvirt.so.0`, so a binary built with it would not start where libvirt
//! is not installed (most of migsight's users run it only for plans, lab
//! and training). `virsh` is found at run time, and is the operators' own
//! tool: every command migsight runs is one they can run by hand.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why a libvirt call failed.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error("virsh is not installed ({0}); install libvirt-clients (Debian) or libvirt-client (RHEL), or run scripts/deps.sh")]
    NoVirsh(String),
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    Timeout { command: String, timeout: Duration },
    #[error("libvirt domain {0:?}: {1}")]
    Domain(String, String),
    #[error("{0}")]
    Parse(String),
}

/// One libvirt connection, as `virsh -c URI`.
#[derive(Debug, Clone)]
pub struct Virsh {
    /// Connection URI (`qemu:///system`, `qemu+ssh://host/system`, …).
    pub uri: String,
    /// Longest a query may take (a migration is spawned, not waited on).
    pub timeout: Duration,
    /// The `virsh` binary (`$MIGSIGHT_VIRSH`, else `virsh` on `PATH`).
    pub binary: PathBuf,
}

/// The default connection: `$LIBVIRT_DEFAULT_URI`, else `qemu:///system`
/// (what `virsh` itself does).
pub fn default_uri() -> String {
    std::env::var("LIBVIRT_DEFAULT_URI")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "qemu:///system".to_string())
}

impl Virsh {
    pub fn new(uri: &str) -> Virsh {
        Virsh {
            uri: uri.to_string(),
            timeout: Duration::from_secs(30),
            binary: std::env::var_os("MIGSIGHT_VIRSH")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("virsh")),
        }
    }

    /// The command line, for messages and for operators to repeat.
    pub fn describe(&self, args: &[String]) -> String {
        let mut s = format!("virsh -c '{}'", self.uri);
        for a in args {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"?&;$".contains(c)) {
                s += &format!(" '{}'", a.replace('\'', "'\\''"));
            } else {
                s += &format!(" {a}");
            }
        }
        s
    }

    /// A `virsh -q -c URI ARGS…` command, not started.
    pub fn command(&self, args: &[String]) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("-q").arg("-c").arg(&self.uri).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `virsh ARGS…` and returns its stdout; a non-zero exit is an
    /// error carrying virsh's own message.
    pub fn run(&self, args: &[&str]) -> Result<String, LibvirtError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let command = self.describe(&args);
        let mut child = self
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    LibvirtError::NoVirsh(format!("{}: {e}", self.binary.display()))
                } else {
                    LibvirtError::Command {
                        command: command.clone(),
                        message: e.to_string(),
                    }
                }
            })?;
        // Read both pipes on their own threads so a large output cannot
        // block the child while we wait for it.
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_string(&mut s);
            }
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if start.elapsed() > self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LibvirtError::Timeout {
                        command,
                        timeout: self.timeout,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    return Err(LibvirtError::Command {
                        command,
                        message: e.to_string(),
                    })
                }
            }
        };
        let stdout = t_out.join().unwrap_or_default();
        let stderr = t_err.join().unwrap_or_default();
        if !status.success() {
            return Err(LibvirtError::Command {
                command,
                message: virsh_message(&stderr, &status.to_string()),
            });
        }
        Ok(stdout)
    }
}

/// virsh's error text without its `error: ` prefixes, on one line.
pub fn virsh_message(stderr: &str, status: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim().trim_start_matches("error:").trim())
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        format!("virsh exited with {status} and said nothing")
    } else {
        lines.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_described_so_they_can_be_pasted() {
        let v = Virsh::new("qemu+unix:///system?socket=/tmp/a b/sock");
        let d = v.describe(&["migrate".into(), "--live".into(), "web 1".into()]);
        assert_eq!(
            d,
            "virsh -c 'qemu+unix:///system?socket=/tmp/a b/sock' migrate --live 'web 1'"
        );
    }

    #[test]
    fn a_missing_virsh_is_a_clear_error() {
        let mut v = Virsh::new("qemu:///system");
        v.binary = "/nonexistent/virsh".into();
        let e = v.run(&["version"]).unwrap_err();
        assert!(matches!(e, LibvirtError::NoVirsh(_)), "{e}");
        assert!(e.to_string().contains("libvirt-clients"), "{e}");
    }

    #[test]
    fn failures_carry_the_message_and_hangs_are_killed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("virsh");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'error: failed to get domain' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut v = Virsh::new("x");
        v.binary = fake.clone();
        let e = v.run(&["dominfo", "web"]).unwrap_err();
        match &e {
            LibvirtError::Command { command, message } => {
                assert_eq!(message, "failed to get domain");
                assert!(command.contains("dominfo web"), "{command}");
            }
            other => panic!("{other}"),
        }
        std::fs::write(&fake, "#!/bin/sh\nexec sleep 30\n").unwrap();
        v.timeout = Duration::from_millis(300);
        let t = Instant::now();
        let e = v.run(&["domjobinfo", "web"]).unwrap_err();
        assert!(matches!(e, LibvirtError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(
            virsh_message("error: failed to get domain 'x'\n", "1"),
            "failed to get domain 'x'"
        );
        assert!(virsh_message("", "exit status: 1").contains("said nothing"));
    }
}
