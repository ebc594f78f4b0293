//! Discovery and the driver against real QEMU binaries of both releases the
//! project supports, without a guest: firmware-only VMs (SeaBIOS finds no
//! boot device and waits) are enough to ask QEMU what it offers and to
//! migrate memory.
//!
//! `dirty-limit` needs KVM with a dirty ring; where `/dev/kvm` works (this
//! project's development hosts: a para-virtual KVM that cannot boot a
//! kernel but runs firmware and migrations) a real dirty-limit migration
//! runs here, the only verification it has without lab data.

use migsight_proto::Algorithm;
use migsight_qemu::discovery::{binary_version, HostSupport, Source};
use migsight_qemu::driver::{self, MigrationConfig};
use migsight_qemu::process::{self, skip_or_fail};
use migsight_qemu::{cmdline, Qmp};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// A firmware-only QEMU, killed on drop.
struct Bare {
    child: Child,
    qmp: PathBuf,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Bare {
    fn start(binary: &Path, accel: &str, incoming: bool) -> Result<Bare, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let qmp = dir.path().join("qmp.sock");
        let mut args: Vec<String> = [
            "qemu-system-x86_64",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-M",
            "pc",
            "-m",
            "128M",
            "-accel",
            accel,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("-qmp".into());
        args.push(format!("unix:{},server=on,wait=off", qmp.display()));
        if incoming {
            args.push("-incoming".into());
            args.push("defer".into());
        }
        let child = Command::new(binary)
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let mut b = Bare {
            child,
            qmp,
            args,
            _dir: dir,
        };
        let t0 = Instant::now();
        while !process::accepts(&b.qmp) {
            if let Ok(Some(st)) = b.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = b.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("QEMU exited ({st}): {}", err.trim()));
            }
            if t0.elapsed() > Duration::from_secs(20) {
                return Err("no QMP socket within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(b)
    }

    fn qmp(&self) -> Qmp {
        Qmp::connect(&self.qmp, Duration::from_secs(10)).expect("QMP")
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The two releases: (binary, expected major version).
fn releases() -> Option<Vec<(PathBuf, u32)>> {
    let current = PathBuf::from(process::binary());
    let Ok(v) = binary_version(&current) else {
        skip_or_fail("no QEMU on PATH (scripts/deps.sh installs QEMU 10)");
        return None;
    };
    let Some(old) = process::qemu_7_2() else {
        skip_or_fail("no QEMU 7.2 (scripts/deps.sh unpacks it; or set MIGSIGHT_QEMU_7_2)");
        return None;
    };
    Some(vec![(current, v.major), (old, 7)])
}

#[test]
fn discovery_matches_each_release() {
    let Some(releases) = releases() else { return };
    for (binary, major) in releases {
        let vm = Bare::start(&binary, "tcg", false).expect("starting QEMU");
        let mut q = vm.qmp();
        let s = HostSupport::query(&mut q, &vm.args).expect("discovery");
        assert_eq!(s.source, Source::Qmp);
        assert_eq!(s.version.major, major, "{}", binary.display());
        assert_eq!(binary_version(&binary).unwrap(), s.version);
        assert_eq!(s.accel.as_deref(), Some("tcg"));
        let available = s.available();
        for a in [
            Algorithm::Precopy,
            Algorithm::AutoConverge,
            Algorithm::Xbzrle,
            Algorithm::Postcopy,
            Algorithm::Multifd,
            Algorithm::MultifdZstd,
            Algorithm::PostcopyPreempt,
        ] {
            assert!(available.contains(&a), "{a} on QEMU {}", s.version);
        }
        // Under TCG there is no dirty ring on any release.
        assert!(s.unavailable(Algorithm::DirtyLimit).is_some());
        if major >= 10 {
            assert_eq!(
                s.unavailable(Algorithm::Compress).as_deref(),
                Some("removed in QEMU 9.1")
            );
            assert!(s.has_capability("dirty-limit") && !s.has_capability("compress"));
        } else {
            assert!(s.unavailable(Algorithm::Compress).is_none());
            assert!(s
                .unavailable(Algorithm::DirtyLimit)
                .unwrap()
                .contains("8.1"));
        }
        // What the driver would send, QEMU accepts, for every algorithm it offers.
        for a in available {
            let cfg = MigrationConfig::new(a, 50e6);
            q.set_capabilities(&cfg.capabilities(&s, true))
                .unwrap_or_else(|e| panic!("{a} capabilities on {}: {e}", s.version));
            q.set_parameters(cfg.source_parameters(&s))
                .unwrap_or_else(|e| panic!("{a} parameters on {}: {e}", s.version));
        }
        // Pid-only mode: the version rules from the binary agree on the verdicts.
        let pid_only = HostSupport::from_version(s.version, &vm.args);
        for a in Algorithm::ALL {
            assert_eq!(
                pid_only.unavailable(a).is_some(),
                s.unavailable(a).is_some(),
                "{a} on {}",
                s.version
            );
        }
    }
}

#[test]
fn dirty_limit_migrates_under_kvm_with_a_dirty_ring() {
    let Some(releases) = releases() else { return };
    let (binary, major) = &releases[0];
    assert!(*major >= 10);
    if !Path::new("/dev/kvm").exists() {
        eprintln!("NOTE: no /dev/kvm on this host: dirty-limit (KVM only) is not exercised here");
        return;
    }
    let accel = "kvm,dirty-ring-size=4096";
    let src = match Bare::start(binary, accel, false) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("NOTE: KVM with a dirty ring does not start here ({e}): dirty-limit is not exercised");
            return;
        }
    };
    assert_eq!(cmdline::dirty_ring_size(&src.args), Some(4096));
    let dst = Bare::start(binary, accel, true).expect("destination");
    let mut sq = src.qmp();
    let support = HostSupport::query(&mut sq, &src.args).unwrap();
    assert_eq!(support.accel.as_deref(), Some("kvm"));
    assert!(
        support.unavailable(Algorithm::DirtyLimit).is_none(),
        "{:?}",
        support.unavailable(Algorithm::DirtyLimit)
    );
    let mut cfg = MigrationConfig::new(Algorithm::DirtyLimit, 200e6);
    cfg.cap = Duration::from_secs(60);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("tcp:127.0.0.1:{port}");
    let mut dq = dst.qmp();
    driver::prepare_destination(&mut dq, &cfg, &uri, &dst.args).unwrap();
    let outcome = driver::migrate(
        &mut sq,
        &support,
        &cfg,
        &uri,
        Duration::from_millis(100),
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    assert!(outcome.converged, "{outcome:?}");
    assert!(outcome.transferred_bytes > 0.0);
    // The same VM without a dirty ring: refused by the driver, not by QEMU.
    let plain = Bare::start(binary, "kvm", false).expect("KVM without a dirty ring");
    let mut pq = plain.qmp();
    let s = HostSupport::query(&mut pq, &plain.args).unwrap();
    let e = driver::migrate(
        &mut pq,
        &s,
        &cfg,
        &uri,
        Duration::from_millis(100),
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("dirty ring"), "{e}");
}
