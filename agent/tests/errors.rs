//! Error paths of locating and profiling, against real processes and a real
//! QEMU (firmware only: no guest image needed).

mod common;

use common::*;
use migsight_agent::{locate, profile, AgentError, ProfileConfig, VmTarget};
use migsight_proto::wire::{ErrorKind, VmRef};
use migsight_qemu::qmp::Qmp;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cfg(window_s: u64) -> ProfileConfig {
    ProfileConfig {
        window: Duration::from_secs(window_s),
        interval: Duration::from_secs(1),
        ..Default::default()
    }
}

#[test]
fn nonexistent_pid_is_vm_not_found() {
    let never = AtomicBool::new(false);
    // Pids above pid_max never exist.
    let e = profile(&VmTarget::new(4_000_000_000, None), &cfg(2), &never).unwrap_err();
    assert!(matches!(e, AgentError::VmNotFound(_)), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::VmNotFound);
    let e = locate(&VmRef::Pid(4_000_000_000)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::VmNotFound);
}

#[test]
fn non_qemu_process_is_not_qemu() {
    let never = AtomicBool::new(false);
    let mut sleep = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = sleep.id();
    let e = locate(&VmRef::Pid(pid)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotQemu, "{e}");
    let e = profile(&VmTarget::new(pid, None), &cfg(2), &never).unwrap_err();
    assert!(matches!(e, AgentError::NotQemu { .. }), "{e:?}");
    assert!(e.to_string().contains("sleep"), "{e}");
    let _ = sleep.kill();
    let _ = sleep.wait();
    // Our own test process is not QEMU either.
    let e = profile(&VmTarget::new(std::process::id(), None), &cfg(2), &never).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotQemu);
}

fn firmware_guest(name: &str, qmp: bool) -> Guest {
    Guest::boot(GuestSpec {
        name: name.into(),
        mem: "256M",
        params: None,
        qmp,
        numa_nodes: 0,
        memfd: false,
    })
}

/// Everything that boots QEMU runs in this one test, serially, under the
/// shared QEMU lock.
#[test]
fn qemu_error_paths() {
    if qemu_or_skip("qemu_error_paths").is_none() {
        return;
    }
    let _lock = qemu_lock();
    let never = AtomicBool::new(false);

    // --- locate by pid, name and QMP socket find the same process.
    let g = firmware_guest("mserr-locate", true);
    let by_pid = locate(&VmRef::Pid(g.pid())).unwrap();
    assert_eq!(by_pid.name.as_deref(), Some("mserr-locate"));
    assert_eq!(by_pid.qmp.as_deref(), g.qmp.as_deref());
    let by_name = locate(&VmRef::Name("mserr-locate".into())).unwrap();
    assert_eq!(by_name.pid, g.pid());
    let by_qmp = locate(&VmRef::QmpSocket(g.qmp.clone().unwrap())).unwrap();
    assert_eq!(by_qmp.pid, g.pid());

    // --- paused VM.
    let mut q = Qmp::connect(g.qmp.as_ref().unwrap(), Duration::from_secs(5)).unwrap();
    q.execute("stop", None).unwrap();
    drop(q); // QMP serves one client at a time
    let e = profile(&by_pid, &cfg(2), &never).unwrap_err();
    assert!(matches!(e, AgentError::VmPaused { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::VmPaused);

    // --- migrating VM: an outgoing migration to a slow pipe.
    let mut q = Qmp::connect(g.qmp.as_ref().unwrap(), Duration::from_secs(5)).unwrap();
    q.execute("cont", None).unwrap();
    q.set_parameters(serde_json::json!({"max-bandwidth": 1_000_000}))
        .unwrap();
    q.execute(
        "migrate",
        Some(serde_json::json!({"uri": "exec:cat > /dev/null"})),
    )
    .unwrap();
    drop(q);
    let e = profile(&by_pid, &cfg(2), &never).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::VmMigrating, "{e}");
    let mut q = Qmp::connect(g.qmp.as_ref().unwrap(), Duration::from_secs(5)).unwrap();
    q.execute("migrate_cancel", None).unwrap();
    drop(q);
    drop(g);

    // --- QMP busy (another client holds it): falls back to pid-only mode.
    let g = firmware_guest("mserr-busy", true);
    let holder = Qmp::connect(g.qmp.as_ref().unwrap(), Duration::from_secs(5)).unwrap();
    let t = locate(&VmRef::Pid(g.pid())).unwrap();
    let mut c = cfg(2);
    c.qmp_timeout = Duration::from_millis(500);
    let r = profile(&t, &c, &never).unwrap();
    assert_eq!(r.qemu_dirty_rate, None);
    assert_eq!(r.intervals, 2);
    assert!(r.features.get(migsight_proto::Feature::VmPdr).is_some());
    drop(holder);
    drop(g);

    // --- QEMU killed mid-profile: VmExited, quickly, naming the intervals done.
    let mut g = firmware_guest("mserr-exit", true);
    let t = locate(&VmRef::Pid(g.pid())).unwrap();
    let h = std::thread::spawn(move || {
        let never = AtomicBool::new(false);
        profile(&t, &cfg(30), &never)
    });
    std::thread::sleep(Duration::from_millis(2500));
    let killed = Instant::now();
    g.kill();
    let e = h.join().unwrap().unwrap_err();
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} to notice the exit"
    );
    match &e {
        AgentError::VmExited {
            intervals, planned, ..
        } => {
            assert_eq!(*planned, 30);
            assert!((1..=3).contains(intervals), "{e}");
        }
        other => panic!("expected VmExited, got {other:?}"),
    }
    assert_eq!(e.kind(), ErrorKind::VmExited);
    drop(g);

    // --- cancellation returns early.
    let g = firmware_guest("mserr-cancel", false);
    let t = VmTarget::new(g.pid(), None);
    let cancel = Arc::new(AtomicBool::new(false));
    let c2 = cancel.clone();
    let h = std::thread::spawn(move || profile(&t, &cfg(30), &c2));
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    cancel.store(true, Ordering::Relaxed);
    let e = h.join().unwrap().unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(matches!(e, AgentError::Cancelled { .. }), "{e:?}");
}
