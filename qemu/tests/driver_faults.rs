//! Faults during a migration, with real QEMU processes of the guest image:
//! the destination killed in pre-copy (the migration fails, the source VM
//! keeps running, the outcome row is a failure the models skip), the source
//! killed (a clear error, nothing else to do), and the destination killed
//! after the post-copy switch-over (the guest is split; the outcome says
//! where it is and how to recover).

use migsight_proto::record::is_failure_status;
use migsight_proto::{Algorithm, FeatureVector, Metric};
use migsight_qemu::driver::{self, MigrateError, MigrationConfig};
use migsight_qemu::image::{cache_dir, GuestImage};
use migsight_qemu::outcome::{build_row, Measured, RowContext};
use migsight_qemu::process::{skip_or_fail, Accel, Qemu, VmSpec};
use migsight_qemu::procfs::cmdline;
use migsight_qemu::{HostSupport, MigrateInfo, MigrationStatus, Qmp};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// A guest that keeps 48 MiB of memory busy, so the migration has work.
const WORKLOAD: &str = "console=ttyS0 panic=-1 quiet mitigations=off MODE=synthetic WS_MB=48 RATE=4000 BYTES=512 ENTROPY=4 COLD_MB=64 COLD_ENTROPY=6 SEED=3";

fn image() -> Option<GuestImage> {
    match GuestImage::open(&cache_dir()) {
        Ok(i) => Some(i),
        Err(e) => {
            skip_or_fail(&format!(
                "no guest image ({e}); run lab/guest/build-image.sh"
            ));
            None
        }
    }
}

fn spec(image: &GuestImage, name: &str, incoming: bool) -> VmSpec {
    VmSpec {
        name: name.into(),
        mem_mib: 256,
        accel: Accel::Tcg,
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
        append: WORKLOAD.into(),
        incoming,
        qemu: None,
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the guest's workload runs (its QEMU has dirtied memory for a while).
fn booted(q: &Qemu) {
    let mut s = Qmp::connect(&q.agent_qmp_path, Duration::from_secs(10)).unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(120) {
        if let Ok((status, true)) = s.status() {
            assert_eq!(status, "running");
            std::thread::sleep(Duration::from_secs(8));
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the guest did not run within 120 s");
}

/// Source and destination ready for `cfg`; returns them and the URI.
fn pair(image: &GuestImage, runs: &Path, tag: &str, cfg: &MigrationConfig) -> (Qemu, Qemu, String) {
    let src = Qemu::start(spec(image, &format!("{tag}-src"), false), runs).expect("source");
    booted(&src);
    let dst = Qemu::start(spec(image, &format!("{tag}-dst"), true), runs).expect("destination");
    let uri = format!("tcp:127.0.0.1:{}", port());
    let mut dq = dst.qmp().unwrap();
    driver::prepare_destination(&mut dq, cfg, &uri, &cmdline(dst.pid()).unwrap()).unwrap();
    (src, dst, uri)
}

/// Polls the source over its second QMP socket until `pred` holds.
fn wait_for(q: &Qemu, what: &str, pred: impl Fn(&MigrationStatus) -> bool) {
    let mut s = Qmp::connect(&q.agent_qmp_path, Duration::from_secs(10)).unwrap();
    let t0 = Instant::now();
    loop {
        let st = MigrateInfo::query(&mut s).unwrap().status;
        if pred(&st) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{what}: still {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn faults_during_a_migration_end_clearly() {
    let Some(image) = image() else { return };
    let runs = tempfile::tempdir().unwrap();

    // 1. The destination dies in pre-copy: the migration fails, the source
    //    keeps running, and the row records a failure that training skips.
    let mut cfg = MigrationConfig::new(Algorithm::Precopy, 4e6);
    cfg.cap = Duration::from_secs(120);
    let (src, mut dst, uri) = pair(&image, runs.path(), "fd", &cfg);
    let mut sq = src.qmp().unwrap();
    let support = HostSupport::query(&mut sq, &cmdline(src.pid()).unwrap()).unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        dst.kill();
        dst
    });
    let outcome = driver::migrate(
        &mut sq,
        &support,
        &cfg,
        &uri,
        Duration::from_millis(100),
        &AtomicBool::new(false),
        |_| {},
    )
    .expect("a failed migration is an outcome, not an error");
    let _dst = killer.join().unwrap();
    assert!(!outcome.converged && outcome.failed, "{outcome:?}");
    assert_eq!(outcome.status, "failed");
    assert!(
        outcome.error.is_some() && outcome.split.is_none(),
        "{outcome:?}"
    );
    let (status, running) = sq.status().unwrap();
    assert!(running, "the source must keep running (status {status})");
    let row = build_row(
        &FeatureVector::new(),
        &cfg,
        &outcome,
        &Measured::default(),
        &RowContext::default(),
    );
    assert_eq!(row.converged, None);
    assert_eq!(row.label(Metric::TT), None);
    assert!(row.extra("status").is_some_and(is_failure_status));
    drop(sq);
    drop(src);

    // 2. The source dies: a clear error, before the switch-over.
    let (mut src, _dst, uri) = pair(&image, runs.path(), "fs", &cfg);
    let mut sq = src.qmp().unwrap();
    let support = HostSupport::query(&mut sq, &cmdline(src.pid()).unwrap()).unwrap();
    let pid = src.pid();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: killing the QEMU this test started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    });
    let e = driver::migrate(
        &mut sq,
        &support,
        &cfg,
        &uri,
        Duration::from_millis(100),
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap_err();
    killer.join().unwrap();
    assert!(
        matches!(
            e,
            MigrateError::SourceGone {
                after_switchover: false,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("source QEMU went away"), "{e}");
    src.kill();

    // 3. The destination dies after the post-copy switch-over: the source
    //    holds the pages it never sent, paused; the outcome says so and how
    //    to recover.
    // 5 MB/s is below the workload's 16 MB/s dirty rate: pre-copy cannot
    // converge before the driver switches over, however fast the host.
    let mut cfg = MigrationConfig::new(Algorithm::Postcopy, 5e6);
    cfg.cap = Duration::from_secs(120);
    let (src, mut dst, uri) = pair(&image, runs.path(), "fp", &cfg);
    let mut sq = src.qmp().unwrap();
    let support = HostSupport::query(&mut sq, &cmdline(src.pid()).unwrap()).unwrap();
    let watcher = std::thread::spawn(move || {
        // Slow the post-copy phase to 1 MB/s so it is still running when the
        // destination goes.
        wait_for(&src, "setup", |s| s.is_running());
        let mut s = Qmp::connect(&src.agent_qmp_path, Duration::from_secs(10)).unwrap();
        s.set_parameters(serde_json::json!({"max-postcopy-bandwidth": 1_000_000u64}))
            .unwrap();
        drop(s);
        wait_for(&src, "switch-over", |s| s.is_postcopy());
        std::thread::sleep(Duration::from_millis(500));
        dst.kill();
        (src, dst)
    });
    let outcome = driver::migrate(
        &mut sq,
        &support,
        &cfg,
        &uri,
        Duration::from_millis(100),
        &AtomicBool::new(false),
        |_| {},
    )
    .expect("a split migration is an outcome");
    let (src, _dst) = watcher.join().unwrap();
    let split = outcome.split.as_ref().expect("the guest is split");
    assert_eq!(split.source_status, "postcopy-paused");
    assert!(
        split.recovery.contains("migrate-recover") && split.recovery.contains("resume"),
        "{}",
        split.recovery
    );
    assert!(outcome.failed && !outcome.converged);
    assert!(is_failure_status(&outcome.status), "{}", outcome.status);
    let info = MigrateInfo::query(&mut sq).unwrap();
    assert_eq!(info.status, MigrationStatus::PostcopyPaused);
    drop(src);
}
