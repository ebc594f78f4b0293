//! A shortened lab run in CI: one real QEMU guest, one short pre-copy
//! migration, and the row it writes must be a consistent labelled sample.

use migsight_lab::runner::{self, Fixed, LabConfig};
use migsight_lab::workload::Workload;
use migsight_proto::feature::MIB;
use migsight_proto::{Algorithm, Feature, Metric};
use migsight_qemu::image::GuestImage;
use migsight_qemu::process::{self, Accel};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[test]
fn one_precopy_migration_gives_a_consistent_row() {
    if let Err(e) = process::binary_version() {
        process::skip_or_fail(&format!("a lab run needs QEMU ({e}; scripts/deps.sh)"));
        return;
    }
    let _lock = process::test_lock().expect("the QEMU-test lock");
    let image = GuestImage::ensure().expect("guest image");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lab.csv");
    let cfg = LabConfig {
        out: out.clone(),
        samples: 1,
        seed: 7,
        accel: Accel::Tcg,
        window: Duration::from_secs(3),
        interval: Duration::from_secs(1),
        cap: Duration::from_secs(60),
        warmup: Duration::from_secs(1),
        algorithms: vec![Algorithm::Precopy],
        repeats: 1,
        cpu_budgets: vec![0.03],
        fixed: Some(Fixed {
            mem_mib: 256,
            workload: Workload::demo(16, 500),
            bandwidth_bps: 60e6,
        }),
        ranges: migsight_lab::workload::Ranges::CLASSIC,
        runs_dir: dir.path().join("runs"),
        libvirt: None,
    };
    let summary = runner::run(&cfg, &image, &AtomicBool::new(false)).expect("lab run");
    assert_eq!(summary.written, 1);
    assert_eq!(summary.failed, 0);

    let d = migsight_proto::csv::read_path(&out).expect("the lab's CSV parses");
    assert_eq!(d.samples.len(), 1);
    let s = &d.samples[0];
    assert_eq!(s.algorithm, Some(Algorithm::Precopy));
    assert_eq!(
        s.converged,
        Some(true),
        "a 16 MiB / 500 pages/s guest converges at 60 MB/s"
    );
    assert_eq!(s.group_id.as_deref(), Some("s7-g0"));
    let tt = s.label(Metric::TT).unwrap();
    let dt = s.label(Metric::DT).unwrap();
    let td = s.label(Metric::TD).unwrap();
    let perf = s.label(Metric::PERF).unwrap();
    assert!(tt > 0.0 && dt > 0.0 && td > 0.0, "{tt} {dt} {td}");
    assert!(dt < tt, "downtime {dt} ms within total time {tt} ms");
    let vm_size = s.features.get(Feature::VmSize).unwrap() * MIB;
    assert!(
        vm_size > 16.0 * MIB,
        "VM_size {vm_size} covers at least the working set"
    );
    assert!(
        td >= vm_size * 0.95,
        "pre-copy sends every non-zero page: TD {td} vs VM_size {vm_size}"
    );
    // The profile's page sample, its budget and its distinct-dirtied curve
    // (a 3-s window: 1 and 2 intervals; 4 does not fit).
    assert_eq!(s.extra("cpu_budget"), Some("0.03"));
    let sampled: u64 = s.extra("sampled_pages").unwrap().parse().unwrap();
    assert!(sampled >= 1024, "sampled_pages {sampled}");
    let cell = |c: &str| s.extra(c).unwrap().parse::<f64>().ok();
    let (k1, k2) = (
        cell("dirtied_k1_mib").unwrap(),
        cell("dirtied_k2_mib").unwrap(),
    );
    assert!(
        k1 > 0.0 && k2 >= k1,
        "500 pages/s dirty: k1 {k1} MiB, k2 {k2} MiB"
    );
    assert!(
        k2 <= 2.0 * k1 * 1.5 + 0.5,
        "distinct pages in 2 s: k1 {k1}, k2 {k2}"
    );
    assert_eq!(cell("dirtied_k4_mib"), None, "4 intervals do not fit in 3");
    // Bandwidth-bound: the time is at least the data over the bandwidth limit.
    assert!(
        tt / 1000.0 >= td / 60e6 * 0.8,
        "TT {tt} ms vs TD {td} at 60 MB/s"
    );
    assert!(perf > 0.3 && perf < 1.5, "performance ratio {perf}");
    assert_eq!(s.features.get(Feature::VmPtr), Some(60e6 / MIB));
    // The workload asks for 500 pages/s; on a busy host its vCPU gets less
    // and writes fewer. What it wrote is in its ops counter (one op, one
    // page written): the profile must find that rate.
    let pdr = s.features.get(Feature::VmPdr).unwrap();
    let achieved = s
        .extra_number("ops_before_per_s")
        .expect("the ops counter was read");
    assert!(
        achieved > 50.0 && achieved < 600.0,
        "{achieved} pages/s written"
    );
    let known = achieved * 4096.0 / MIB;
    assert!(
        (pdr - known).abs() / known < 0.5,
        "dirty rate {pdr} MiB/s vs ~{known} (the workload wrote {achieved:.0} pages/s)"
    );
    assert_eq!(
        s.extra("qemu_version")
            .map(|v| v.starts_with(char::is_numeric)),
        Some(true)
    );
    assert_eq!(s.extra("status"), Some("completed"));
}
