//! Starting and stopping QEMU processes (the lab, the tests, the demo) that
//! can never outlive their parent.
//!
//! Every QEMU gets `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with its parent
//! even on a crash, and [`Qemu`]'s `Drop` kills and reaps it, so an error or a
//! Ctrl-C anywhere leaves no stray processes. Its sockets live in a run
//! directory that is removed with it.
//!
//! Which QEMU: `$MIGSIGHT_QEMU` (a path to a `qemu-system-x86_64`, e.g. an
//! unpacked older release, see `scripts/deps.sh`), else the one on `PATH`.

use crate::qmp::{Qmp, QmpError};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation: works everywhere, including nested hosts.
    Tcg,
    /// Hardware virtualisation, for real hosts.
    Kvm,
    /// KVM with a dirty ring of 4096 entries, which `dirty-limit` needs.
    KvmDirtyRing,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm | Accel::KvmDirtyRing => "kvm",
        }
    }

    /// The `-accel` argument.
    pub fn arg(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
            Accel::KvmDirtyRing => "kvm,dirty-ring-size=4096",
        }
    }
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Accel, String> {
        match s.trim() {
            "tcg" => Ok(Accel::Tcg),
            "kvm" => Ok(Accel::Kvm),
            "kvm-dirty-ring" => Ok(Accel::KvmDirtyRing),
            other => Err(format!(
                "unknown accelerator {other:?} (expected tcg, kvm or kvm-dirty-ring)"
            )),
        }
    }
}

/// The QEMU binary to start: `$MIGSIGHT_QEMU`, else `qemu-system-x86_64`.
pub fn binary() -> String {
    std::env::var("MIGSIGHT_QEMU")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "qemu-system-x86_64".to_string())
}

/// QEMU 7.2 as `scripts/deps.sh` unpacks it: `$MIGSIGHT_QEMU_7_2`, else
/// `<cache>/qemu-7.2/bin/qemu-system-x86_64` when it exists.
pub fn qemu_7_2() -> Option<PathBuf> {
    std::env::var_os("MIGSIGHT_QEMU_7_2")
        .map(PathBuf::from)
        .or_else(|| Some(crate::image::cache_root().join("qemu-7.2/bin/qemu-system-x86_64")))
        .filter(|p| p.is_file())
}

/// What a test does when something it needs from the machine is missing
/// (QEMU, the guest image, the training data, systemd's tools, root, an
/// open-file limit): under `scripts/test.sh` (`MIGSIGHT_REQUIRE_QEMU=1`) it
/// fails, so CI cannot pass by skipping; run by hand, it prints a loud
/// notice and the caller returns. `what` says what is missing and how to
/// get it.
pub fn skip_or_fail(what: &str) {
    if std::env::var("MIGSIGHT_REQUIRE_QEMU").is_ok_and(|v| v == "1") {
        panic!("{what} (MIGSIGHT_REQUIRE_QEMU=1: every test that depends on the machine is required; scripts/test.sh installs what they need)");
    }
    let notice = format!("SKIPPED: {what}; this test did NOT run (scripts/test.sh requires it)");
    // Both streams: cargo shows stdout only for failures unless --nocapture.
    eprintln!("\n!!! {notice}\n");
    println!("\n!!! {notice}\n");
}

/// An exclusive lock that a test holds while it runs QEMU guests
/// (`<cache>/qemu-tests.lock`, shared by every test binary of the
/// workspace): two TCG guests at once distort each other's timing.
pub fn test_lock() -> std::io::Result<std::fs::File> {
    let dir = crate::image::cache_root();
    std::fs::create_dir_all(&dir)?;
    let f = std::fs::File::create(dir.join("qemu-tests.lock"))?;
    f.lock()?;
    Ok(f)
}

/// The version of [`binary`], from its `--version`.
pub fn binary_version() -> Result<crate::QemuVersion, String> {
    crate::discovery::binary_version(std::path::Path::new(&binary()))
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// `-name`, also the run directory's name.
    pub name: String,
    pub mem_mib: u64,
    pub accel: Accel,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel command line (workload parameters included).
    pub append: String,
    /// Start with `-incoming defer` (a migration destination or a restore).
    pub incoming: bool,
    /// The QEMU binary (`None`: [`binary`]).
    pub qemu: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("cannot start {binary}: {source} (install it with scripts/deps.sh, or point MIGSIGHT_QEMU at a qemu-system-x86_64)")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("QEMU {name} exited during start-up ({status}); its stderr: {stderr}")]
    EarlyExit {
        name: String,
        status: String,
        stderr: String,
    },
    #[error("QEMU {name}: QMP socket did not appear within {0:?}", .timeout)]
    NoQmp { name: String, timeout: Duration },
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("run directory {path}: {source}")]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A running QEMU, killed when dropped.
pub struct Qemu {
    child: Child,
    pub name: String,
    pub run_dir: PathBuf,
    /// The lab's own QMP socket.
    pub qmp_path: PathBuf,
    /// A second QMP socket for the profiler (QMP serves one client per socket).
    pub agent_qmp_path: PathBuf,
    pub spec: VmSpec,
}

impl Qemu {
    /// Starts QEMU and waits until its QMP sockets accept connections.
    pub fn start(spec: VmSpec, runs: &Path) -> Result<Qemu, QemuError> {
        let run_dir = runs.join(&spec.name);
        let rd = |source| QemuError::RunDir {
            path: run_dir.clone(),
            source,
        };
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir).map_err(rd)?;
        let qmp_path = run_dir.join("lab.qmp");
        let agent_qmp_path = run_dir.join("agent.qmp");
        let serial = run_dir.join("serial.sock");
        let stderr = std::fs::File::create(run_dir.join("stderr.log")).map_err(rd)?;

        let binary = spec
            .qemu
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(binary);
        let mut cmd = Command::new(&binary);
        cmd.args(["-name", &format!("{},debug-threads=on", spec.name)])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-smp", "1", "-m", &format!("{}M", spec.mem_mib)])
            .args(["-accel", spec.accel.arg()])
            .args([
                "-cpu",
                if spec.accel == Accel::Tcg {
                    "max"
                } else {
                    "host"
                },
            ])
            .args(["-M", "pc"])
            .arg("-kernel")
            .arg(&spec.kernel)
            .arg("-initrd")
            .arg(&spec.initrd)
            .args(["-append", &spec.append])
            .arg("-chardev")
            .arg(format!(
                "socket,id=ser0,path={},server=on,wait=off",
                serial.display()
            ))
            .args(["-serial", "chardev:ser0"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                agent_qmp_path.display()
            ));
        if spec.incoming {
            cmd.args(["-incoming", "defer"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|source| QemuError::Spawn { binary, source })?;
        let mut q = Qemu {
            child,
            name: spec.name.clone(),
            run_dir,
            qmp_path,
            agent_qmp_path,
            spec,
        };
        q.wait_for_qmp(Duration::from_secs(30))?;
        Ok(q)
    }

    fn wait_for_qmp(&mut self, timeout: Duration) -> Result<(), QemuError> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let stderr =
                    std::fs::read_to_string(self.run_dir.join("stderr.log")).unwrap_or_default();
                return Err(QemuError::EarlyExit {
                    name: self.name.clone(),
                    status: status.to_string(),
                    stderr: stderr.trim().chars().take(2000).collect(),
                });
            }
            if accepts(&self.qmp_path) && accepts(&self.agent_qmp_path) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(QemuError::NoQmp {
                    name: self.name.clone(),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process now (fault tests: a QEMU that dies mid-migration).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Opens a QMP session on the lab's socket.
    pub fn qmp(&self) -> Result<Qmp, QemuError> {
        Ok(Qmp::connect(&self.qmp_path, Duration::from_secs(30))?)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The tail of QEMU's stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let s = std::fs::read_to_string(self.run_dir.join("stderr.log")).unwrap_or_default();
        let t = s.trim();
        let skip = t.chars().count().saturating_sub(1500);
        t.chars().skip(skip).collect()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// Whether a QMP server listens on `path`. The socket file appears when
/// QEMU binds it, a moment before it listens (and stays when QEMU dies
/// early): only a connection that succeeds says the monitor is there. The
/// probe connection is closed at once; QEMU then accepts the next client.
pub fn accepts(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}
