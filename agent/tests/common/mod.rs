//! Shared helpers of the agent's integration tests: boot the lab guest under
//! TCG, find its ops page, serialise QEMU use across tests.
#![allow(dead_code)]

use migsight_agent::GuestMemory;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use migsight_opspage::{OFF_READY, PAGE};

/// `Some(path)` of qemu-system-x86_64, or `None` after a loud skip notice
/// (a failure under `scripts/test.sh`: `migsight_qemu::process::skip_or_fail`).
pub fn qemu_or_skip(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("qemu-system-x86_64"))
            .find(|c| c.is_file())
    });
    if found.is_none() {
        migsight_qemu::process::skip_or_fail(&format!(
            "{test}: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86, or scripts/deps.sh)"
        ));
    }
    found
}

/// The workspace's QEMU-test lock, held while a test runs QEMU.
pub fn qemu_lock() -> std::fs::File {
    migsight_qemu::process::test_lock().expect("the QEMU-test lock")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The guest image (`vmlinuz`, `initramfs.cpio.gz`), built by
/// `lab/guest/build-image.sh` if missing (the script is idempotent).
pub fn guest_image() -> (PathBuf, PathBuf) {
    let dir = migsight_qemu::image::cache_dir();
    let k = dir.join("vmlinuz");
    let i = dir.join("initramfs.cpio.gz");
    if !(k.is_file() && i.is_file()) {
        let script = repo_root().join("lab/guest/build-image.sh");
        eprintln!(
            "guest image missing in {}; running {}",
            dir.display(),
            script.display()
        );
        let st = Command::new("bash")
            .arg(&script)
            .status()
            .expect("cannot run build-image.sh");
        assert!(st.success(), "{} failed: {st}", script.display());
    }
    assert!(
        k.is_file() && i.is_file(),
        "image still missing after build-image.sh"
    );
    (k, i)
}

/// How to start a guest.
pub struct GuestSpec {
    pub name: String,
    pub mem: &'static str,
    /// Kernel command-line workload parameters; `None` boots no kernel at all
    /// (firmware only: the RAM stays almost all zero).
    pub params: Option<String>,
    /// Whether to give QEMU a QMP socket.
    pub qmp: bool,
    /// Split the RAM over this many NUMA nodes, one memory backend each
    /// (0: one backend, or plain `-m` RAM unless `memfd`).
    pub numa_nodes: u64,
    /// Back the RAM with `memory-backend-memfd` (shared, as libvirt's
    /// `<memoryBacking><source type='memfd'/>`) instead of anonymous memory.
    pub memfd: bool,
}

/// A running QEMU, killed on drop.
pub struct Guest {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub qmp: Option<PathBuf>,
    pub name: String,
}

impl Guest {
    pub fn boot(spec: GuestSpec) -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let qmp = spec.qmp.then(|| dir.path().join("qmp.sock"));
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-name", &format!("{},debug-threads=on", spec.name)])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args([
                "-smp", "1", "-m", spec.mem, "-accel", "tcg", "-cpu", "max", "-M", "pc",
            ])
            .args(["-serial", "null"]);
        if spec.numa_nodes > 0 || spec.memfd {
            let nodes = spec.numa_nodes.max(1);
            let total = migsight_agent::vm::ram_size_from_args(&[
                "qemu".to_string(),
                "-m".to_string(),
                spec.mem.to_string(),
            ]);
            let kind = if spec.memfd { "memfd" } else { "ram" };
            for k in 0..nodes {
                cmd.arg("-object").arg(format!(
                    "memory-backend-{kind},id=m{k},size={}",
                    total / nodes
                ));
                if spec.numa_nodes > 0 {
                    cmd.arg("-numa").arg(format!("node,nodeid={k},memdev=m{k}"));
                } else {
                    cmd.arg("-machine").arg("memory-backend=m0");
                }
            }
        }
        if let Some(p) = &spec.params {
            let (k, i) = guest_image();
            cmd.arg("-kernel").arg(k).arg("-initrd").arg(i);
            cmd.args([
                "-append",
                &format!("console=ttyS0 panic=-1 quiet mitigations=off {p}"),
            ]);
        }
        if let Some(q) = &qmp {
            cmd.arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", q.display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("cannot start qemu-system-x86_64");
        let g = Guest {
            child,
            dir,
            qmp: qmp.clone(),
            name: spec.name,
        };
        if let Some(q) = &qmp {
            let t = Instant::now();
            while !migsight_qemu::process::accepts(q) {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "QMP socket never appeared"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
        g
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The workload's ops page in guest RAM.
pub struct OpsPage {
    pub mem: GuestMemory,
    pub offset: u64,
}

impl OpsPage {
    /// Waits (up to `timeout`) until the workload has published a ready ops page.
    pub fn wait(pid: u32, timeout: Duration) -> OpsPage {
        let t = Instant::now();
        // QEMU allocates the RAM a moment after it starts.
        let mem = loop {
            match GuestMemory::open(pid) {
                Ok(m) => break m,
                Err(e) => {
                    assert!(t.elapsed() < Duration::from_secs(10), "guest memory: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        let mut buf = vec![0u8; 1024 * PAGE];
        loop {
            assert!(
                t.elapsed() < timeout,
                "workload did not become ready within {timeout:?}"
            );
            let mut found = None;
            let mut off = 0u64;
            while off < mem.size_bytes() && found.is_none() {
                let n = (buf.len() as u64).min(mem.size_bytes() - off) as usize;
                mem.read(off, &mut buf[..n]).expect("read guest RAM");
                for (k, pg) in buf[..n].chunks_exact(PAGE).enumerate() {
                    if migsight_opspage::has_magic(pg) {
                        found = Some(off + (k * PAGE) as u64);
                        break;
                    }
                }
                off += n as u64;
            }
            if let Some(offset) = found {
                let p = OpsPage { mem, offset };
                loop {
                    match p.get(OFF_READY) {
                        1 => return p,
                        2 => panic!("workload failed to start"),
                        _ => {}
                    }
                    assert!(
                        t.elapsed() < timeout,
                        "workload did not become ready within {timeout:?}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn get(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        self.mem
            .read(self.offset + off as u64, &mut b)
            .expect("read ops page");
        u64::from_le_bytes(b)
    }
}
