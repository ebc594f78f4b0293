//! End to end, with nothing faked: a real QEMU guest running the synthetic
//! workload → the real agent daemon → the real predictor daemon (trained here
//! on `data/lab.csv`) over their real Unix sockets → `migsight plan --json`
//! → `migsight migrate` to a real destination QEMU → an outcome row that the
//! trainer accepts together with the lab's data.
//!
//! Everything goes through the built `migsight` binary. One guest boots at a
//! time (the destination only for the migration); every process is killed
//! when the test ends, passes or fails.
//!
//! It runs twice, on both ends of the QEMU range operators run: the system
//! QEMU (10.x, from `scripts/deps.sh`), where `compress` is gone and the
//! multifd and post-copy-preempt algorithms are offered, and QEMU 7.2
//! (unpacked by `scripts/deps.sh`, `$MIGSIGHT_QEMU_7_2`), where `compress`
//! still runs. Needs both QEMUs and the guest image (`lab/guest/build-image.sh`);
//! under `scripts/test.sh` a missing one is a failure, by hand a loud skip.
//! `MIGSIGHT_E2E_DATA=FILE` trains on another CSV; without any data the test
//! first records a tiny real dataset with `migsight lab --quick`.
//! `MIGSIGHT_E2E_ACCEL=kvm` uses KVM.

mod support;

use migsight_agent::ops_page::OpsPage;
use migsight_proto::{Algorithm, Metric};
use migsight_qemu::image::{self as guest, GuestImage};
use migsight_qemu::process::{Accel, Qemu, VmSpec};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{repo, Daemon, BIN};

const BANDWIDTH: &str = "100MB/s";
const WINDOW: &str = "3s";
/// The demo's small synthetic workload (`lab/workload/README.md`).
const DEMO_WORKLOAD: &str = "console=ttyS0 panic=-1 quiet mitigations=off MODE=synthetic WS_MB=16 RATE=500 BYTES=512 ENTROPY=4 COLD_MB=32 COLD_ENTROPY=6 SEED=1";

/// `migsight ARGS`, shown with its stderr as it goes; (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    eprintln!("$ migsight {}", args.join(" "));
    let (ok, stdout, stderr, _) = support::run(args);
    eprintln!("{stderr}");
    (ok, stdout, stderr)
}

fn rows(path: &Path) -> usize {
    migsight_proto::csv::read_path(path)
        .map(|d| d.samples.len())
        .unwrap_or(0)
}

/// The training data: data/lab.csv (or $MIGSIGHT_E2E_DATA), else a tiny
/// dataset recorded now with the lab (one group: all five algorithms).
fn training_data(dir: &Path, accel: Accel) -> PathBuf {
    let given = std::env::var_os("MIGSIGHT_E2E_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("data/lab.csv"));
    if rows(&given) >= 5 {
        eprintln!(
            "e2e: training on {} ({} rows)",
            given.display(),
            rows(&given)
        );
        return given;
    }
    let out = dir.join("lab.csv");
    eprintln!(
        "e2e: {} has fewer than 5 rows; recording a tiny real dataset with `migsight lab --quick` first",
        given.display()
    );
    let runs = dir.join("lab-runs");
    let (ok, _, err) = run(&[
        "lab",
        "--quick",
        "--samples",
        "5",
        "--window",
        WINDOW,
        "--cap",
        "30s",
        "--accel",
        accel.name(),
        "--out",
        out.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
    ]);
    assert!(ok, "migsight lab failed: {err}");
    assert!(rows(&out) >= 1, "migsight lab wrote no rows");
    out
}

fn finite(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// What a QEMU release must offer and refuse, as `plan` reports it.
struct Release {
    /// `plan --json`'s `qemu.version` starts with this.
    version_prefix: &'static str,
    /// Algorithms this QEMU cannot run here, with a word of the reason.
    unavailable: &'static [(Algorithm, &'static str)],
}

const QEMU_10: Release = Release {
    version_prefix: "10.",
    unavailable: &[
        (Algorithm::Compress, "removed in QEMU 9.1"),
        (Algorithm::DirtyLimit, "dirty ring"),
    ],
};

const QEMU_7_2: Release = Release {
    version_prefix: "7.2.",
    unavailable: &[(Algorithm::DirtyLimit, "needs QEMU 8.1")],
};

/// Checks the `plan --json` object; returns the recommended algorithm.
fn check_plan(j: &Value, max_downtime_ms: f64, release: &Release) -> Algorithm {
    assert_eq!(j["migsight_plan"], 1);
    assert!(j["pid"].as_u64().unwrap() > 0);
    let version = j["qemu"]["version"]
        .as_str()
        .expect("plan names the QEMU version");
    assert!(
        version.starts_with(release.version_prefix),
        "QEMU {version}, expected {}x",
        release.version_prefix
    );
    assert_eq!(j["qemu"]["source"], "qmp");
    let feats = j["features"].as_object().expect("features object");
    for f in ["VM_size", "VM_pdr", "VM_wss", "VM_ptr"] {
        let v = finite(&feats[f])
            .unwrap_or_else(|| panic!("feature {f} missing or not finite: {feats:?}"));
        assert!(v >= 0.0, "{f} = {v}");
    }
    assert!(finite(&feats["VM_size"]).unwrap() > 0.0);
    assert!(j["missing"].is_array());
    // The distinct-dirtied curve starts at one interval and never shrinks.
    let curve = j["dirtied"].as_array().expect("dirtied array");
    assert_eq!(
        curve.first().map(|w| &w["intervals"]),
        Some(&Value::from(1)),
        "{curve:?}"
    );
    let mib: Vec<f64> = curve.iter().filter_map(|w| finite(&w["mib"])).collect();
    assert_eq!(mib.len(), curve.len(), "{curve:?}");
    assert!(mib.windows(2).all(|p| p[1] >= p[0]), "{curve:?}");
    let rec = &j["recommendation"];
    let algos = rec["prediction"]["algorithms"]
        .as_array()
        .expect("algorithms");
    let not_predicted = rec["prediction"]["not_predicted"]
        .as_array()
        .expect("not_predicted");
    let name = |v: &Value| -> Algorithm { v["algorithm"].as_str().unwrap().parse().unwrap() };
    // Every algorithm is either predicted or said not to be, with a reason.
    for a in Algorithm::ALL {
        let predicted = algos.iter().any(|x| name(x) == a);
        let why = not_predicted
            .iter()
            .find(|x| name(x) == a)
            .and_then(|x| x["unavailable"].as_str());
        assert!(
            predicted != why.is_some(),
            "{a}: predicted {predicted}, not predicted because {why:?}"
        );
        if let Some((_, word)) = release.unavailable.iter().find(|(u, _)| *u == a) {
            let why = why.unwrap_or_else(|| panic!("{a} is predicted but unavailable here"));
            assert!(why.contains(word), "{a}: {why}");
        }
    }
    assert!(!algos.is_empty());
    let mut any_meets = false;
    for a in algos {
        let ms = a["metrics"].as_array().unwrap();
        assert_eq!(ms.len(), 6);
        for m in Metric::ALL {
            let iv = &ms[m.index()];
            let (v, lo, hi) = (finite(&iv["value"]), finite(&iv["lo"]), finite(&iv["hi"]));
            let (v, lo, hi) = match (v, lo, hi) {
                (Some(v), Some(lo), Some(hi)) => (v, lo, hi),
                _ => panic!("{} {m}: not finite: {iv}", a["algorithm"]),
            };
            assert!(
                lo <= v && v <= hi,
                "{} {m}: {lo} <= {v} <= {hi} fails",
                a["algorithm"]
            );
            if matches!(m, Metric::TT | Metric::TD) {
                assert!(v > 0.0, "{} {m} must be positive: {v}", a["algorithm"]);
            }
            if matches!(m, Metric::DT | Metric::PERF) {
                assert!(v >= 0.0, "{} {m} must not be negative: {v}", a["algorithm"]);
            }
        }
        let p = finite(&a["p_converge"]).unwrap();
        assert!((0.0..=1.0).contains(&p));
        if ms[Metric::DT.index()]["value"].as_f64().unwrap() <= max_downtime_ms {
            any_meets = true;
        }
    }
    let ranked = rec["ranked"].as_array().unwrap();
    assert_eq!(ranked.len(), algos.len());
    let recommended: Algorithm = rec["recommended"].as_str().unwrap().parse().unwrap();
    assert!(
        release.unavailable.iter().all(|(u, _)| *u != recommended),
        "recommended {recommended}, which this QEMU cannot run"
    );
    assert_eq!(
        rec["sla"]["max_downtime_ms"].as_f64(),
        Some(max_downtime_ms)
    );
    if any_meets {
        let a = algos.iter().find(|x| name(x) == recommended).unwrap();
        let dt = a["metrics"][Metric::DT.index()]["value"].as_f64().unwrap();
        assert!(
            dt <= max_downtime_ms,
            "some algorithm is predicted to meet downtime ≤ {max_downtime_ms} ms but the recommended {recommended} is predicted at {dt} ms"
        );
        assert_eq!(rec["meets_sla"], true);
    }
    recommended
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a 1 MB/s migration, sends SIGINT once it is under way, and checks
/// that migsight cancelled it, said so, and left the source running.
fn interrupt_a_migration(vm: &str, src: &Qemu, dst: &Qemu, port: u16) {
    use std::io::BufRead;
    let args = [
        "migrate".to_string(),
        vm.to_string(),
        "--to".into(),
        format!("tcp:127.0.0.1:{port}"),
        "--qmp".into(),
        src.qmp_path.display().to_string(),
        "--dst-qmp".into(),
        dst.qmp_path.display().to_string(),
        "--algorithm".into(),
        "precopy".into(),
        "--no-profile".into(),
        "--bandwidth".into(),
        "1MB/s".into(),
        "--yes".into(),
    ];
    eprintln!("$ migsight {} (then Ctrl-C)", args.join(" "));
    let mut child = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut text = String::new();
    let t0 = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => {
                text += &l;
                text.push('\n');
                if l.contains("] active") {
                    break;
                }
            }
            Err(_) if t0.elapsed() > Duration::from_secs(60) => {
                let _ = child.kill();
                panic!("the migration did not start within 60 s: {text}");
            }
            Err(_) => {}
        }
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    reader.join().unwrap();
    text.extend(rx.try_iter().map(|l| l + "\n"));
    eprintln!("{text}");
    assert!(!status.success(), "an interrupted migrate must fail");
    assert!(
        text.contains("interrupted") && text.contains("keeps running"),
        "{text}"
    );
    let mut q = src.qmp().unwrap();
    let (st, running) = q.status().unwrap();
    assert!(
        running,
        "the source must keep running after Ctrl-C (status {st})"
    );
    let mig = q.query_migrate().unwrap();
    assert_eq!(mig["status"], "cancelled", "{mig}");
}

/// The model and the two daemons, shared by both QEMU releases.
struct Stack {
    dir: PathBuf,
    data: PathBuf,
    asock: PathBuf,
    predictor: Daemon,
    agent: Daemon,
    image: GuestImage,
    accel: Accel,
}

impl Stack {
    fn spec(&self, name: &str, incoming: bool, qemu: Option<&Path>) -> VmSpec {
        VmSpec {
            name: name.into(),
            mem_mib: 256,
            accel: self.accel,
            kernel: self.image.kernel.clone(),
            initrd: self.image.initrd.clone(),
            append: DEMO_WORKLOAD.into(),
            incoming,
            qemu: qemu.map(Path::to_path_buf),
        }
    }

    fn alive(&mut self) {
        self.agent.assert_alive();
        self.predictor.assert_alive();
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `migsight plan --json` on `vm`, checked against what `release` offers.
fn plan_json(stack: &Stack, vm: &str, release: &Release) -> Algorithm {
    let (ok, out, err) = run(&[
        "plan",
        vm,
        "--bandwidth",
        BANDWIDTH,
        "--max-downtime",
        "500ms",
        "--window",
        WINDOW,
        "--agent",
        &s(&stack.asock),
        "--json",
    ]);
    assert!(ok, "migsight plan failed: {err}");
    let plan: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("plan --json is not JSON ({e}): {out}"));
    assert!(
        err.contains("profiling"),
        "no progress line on stderr: {err}"
    );
    check_plan(&plan, 500.0, release)
}

/// `migsight migrate` from `vm` (QMP `src_qmp`) to a destination prepared
/// over `dst_qmp`; returns the `--json` object, asserting it completed.
fn migrate(
    stack: &Stack,
    vm: &str,
    src_qmp: &Path,
    dst_qmp: &Path,
    algorithm: &str,
    outcomes: &Path,
) -> Value {
    let to = format!("tcp:127.0.0.1:{}", free_port());
    let (ok, out, err) = run(&[
        "migrate",
        vm,
        "--to",
        &to,
        "--qmp",
        &s(src_qmp),
        "--dst-qmp",
        &s(dst_qmp),
        "--algorithm",
        algorithm,
        "--bandwidth",
        BANDWIDTH,
        "--max-downtime",
        "500ms",
        "--window",
        WINDOW,
        "--cap",
        "60s",
        "--agent",
        &s(&stack.asock),
        "--outcomes",
        &s(outcomes),
        "--guest-ops",
        "--yes",
        "--json",
    ]);
    assert!(ok, "migsight migrate --algorithm {algorithm} failed: {err}");
    let m: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("migrate --json is not JSON ({e}): {out}"));
    assert_eq!(m["outcome"]["converged"], true, "{m}");
    assert_eq!(m["outcome"]["status"], "completed");
    assert!(err.contains("Predicted vs actual"), "{err}");
    assert!(
        err.contains("Destination") && err.contains("migrate-incoming"),
        "destination instructions missing: {err}"
    );
    let cmp = m["comparison"].as_array().unwrap();
    assert_eq!(cmp.len(), 6);
    for c in &cmp[..3] {
        assert!(finite(&c["actual"]).is_some(), "no actual {c}");
        assert!(
            finite(&c["predicted"]["value"]).is_some(),
            "no prediction {c}"
        );
    }
    assert!(finite(&cmp[Metric::TT.index()]["actual"]).unwrap() > 0.0);
    m
}

/// The last row of an outcomes file, checked as a converged migration with
/// `algorithm` on a QEMU whose version starts with `version`.
fn check_row(outcomes: &Path, algorithm: Algorithm, version: &str) {
    let d = migsight_proto::csv::read_path(outcomes).expect("outcome file parses");
    let row = d.samples.last().expect("a row");
    assert_eq!(row.algorithm, Some(algorithm));
    assert!(row.did_converge());
    for m in [Metric::TT, Metric::DT, Metric::TD] {
        assert!(
            row.label(m).is_some_and(|v| v.is_finite() && v >= 0.0),
            "label {m} missing: {row:?}"
        );
    }
    assert!(row.features.get(migsight_proto::Feature::VmPdr).is_some());
    assert!(
        row.extra("qemu_version")
            .is_some_and(|v| v.starts_with(version)),
        "{:?}",
        row.extra("qemu_version")
    );
    assert_eq!(row.extra("via"), Some("qmp"));
    if algorithm.is_multifd() {
        assert!(
            row.extra("multifd_channels")
                .and_then(|c| c.parse::<u32>().ok())
                .is_some_and(|c| c >= 2),
            "channels not recorded: {:?}",
            row.extra("multifd_channels")
        );
    }
}

/// QEMU 10: the new algorithms are offered, `compress` is refused before
/// anything is set, Ctrl-C cancels, the recommendation and multifd-zstd
/// both complete and record their rows.
fn on_current_qemu(stack: &mut Stack, outcomes: &Path) {
    let runs = stack.dir.join("vms10");
    let src =
        Qemu::start(stack.spec("e2e-src", false, None), &runs).expect("booting the source guest");
    OpsPage::find(src.pid(), Duration::from_secs(180)).expect("the guest workload did not start");
    let vm = format!("qmp:{}", src.agent_qmp_path.display());
    let recommended = plan_json(stack, &vm, &QEMU_10);
    stack.alive();

    // A VM that does not exist: a typed error with a hint, and the agent lives on.
    let (ok, _, err) = run(&[
        "plan",
        "pid:999999",
        "--bandwidth",
        BANDWIDTH,
        "--window",
        WINDOW,
        "--agent",
        &s(&stack.asock),
    ]);
    assert!(
        !ok && err.contains("VmNotFound") && err.contains("check the VM reference"),
        "{err}"
    );
    stack.alive();

    // The human table, finding the VM by its -name this time: a row (or an
    // "unavailable" line) for every algorithm, compress with its reason.
    let (ok, table, err) = run(&[
        "plan",
        "name:e2e-src",
        "--bandwidth",
        BANDWIDTH,
        "--window",
        WINDOW,
        "--agent",
        &s(&stack.asock),
    ]);
    assert!(ok, "migsight plan (table) failed: {err}");
    for a in Algorithm::ALL {
        assert!(table.contains(a.name()), "table lacks {a}: {table}");
    }
    assert!(
        table.contains("unavailable: removed in QEMU 9.1") && table.contains("QEMU 10."),
        "{table}"
    );
    assert!(
        table.contains("Features measured") && table.contains("Missing features"),
        "{table}"
    );
    println!("{table}");

    // compress on QEMU 10: refused with the reason before anything is set.
    let (ok, _, err) = run(&[
        "migrate",
        &vm,
        "--to",
        "tcp:127.0.0.1:9",
        "--qmp",
        &s(&src.qmp_path),
        "--algorithm",
        "compress",
        "--no-profile",
        "--yes",
    ]);
    assert!(!ok && err.contains("removed in QEMU 9.1"), "{err}");
    let mut q = src.qmp().unwrap();
    let caps = q.execute("query-migrate-capabilities", None).unwrap();
    assert!(
        caps.as_array().unwrap().iter().all(|c| c["state"] == false),
        "a refused migration set capabilities: {caps}"
    );
    assert_eq!(
        migsight_qemu::MigrateInfo::query(&mut q).unwrap().status,
        migsight_qemu::MigrationStatus::None
    );
    drop(q);

    // Ctrl-C during a (deliberately slow) migration cancels it cleanly.
    {
        let dst = Qemu::start(stack.spec("e2e-dst0", true, None), &runs)
            .expect("starting the destination");
        interrupt_a_migration(&vm, &src, &dst, free_port());
    }

    // The recommendation, to a real destination.
    let dst =
        Qemu::start(stack.spec("e2e-dst", true, None), &runs).expect("starting the destination");
    let m = migrate(stack, &vm, &src.qmp_path, &dst.qmp_path, "auto", outcomes);
    let used: Algorithm = m["algorithm"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        Some(used),
        m["recommended"].as_str().and_then(|r| r.parse().ok())
    );
    eprintln!("e2e: plan recommended {recommended}, migrate (re-planned) used {used}");
    let mut dq = dst.qmp().unwrap();
    let (_status, running) = dq.status().unwrap();
    assert!(running, "the guest does not run on the destination");
    drop(dq);
    check_row(outcomes, used, "10.");

    // And back to a third QEMU with a new algorithm: multifd with zstd.
    drop(src);
    let dst2 =
        Qemu::start(stack.spec("e2e-dst2", true, None), &runs).expect("starting the destination");
    let vm2 = format!("qmp:{}", dst.agent_qmp_path.display());
    let m = migrate(
        stack,
        &vm2,
        &dst.qmp_path,
        &dst2.qmp_path,
        "multifd-zstd",
        outcomes,
    );
    assert_eq!(m["algorithm"], "multifd-zstd");
    check_row(outcomes, Algorithm::MultifdZstd, "10.");
    stack.alive();
}

/// QEMU 7.2: `compress` is offered and runs; dirty-limit is not.
fn on_qemu_7_2(stack: &mut Stack, qemu: &Path, outcomes: &Path) {
    let runs = stack.dir.join("vms72");
    let src = Qemu::start(stack.spec("e2e-src72", false, Some(qemu)), &runs)
        .expect("booting the source guest on QEMU 7.2");
    OpsPage::find(src.pid(), Duration::from_secs(180)).expect("the guest workload did not start");
    let vm = format!("qmp:{}", src.agent_qmp_path.display());
    plan_json(stack, &vm, &QEMU_7_2);
    let dst = Qemu::start(stack.spec("e2e-dst72", true, Some(qemu)), &runs)
        .expect("starting the destination on QEMU 7.2");
    let m = migrate(
        stack,
        &vm,
        &src.qmp_path,
        &dst.qmp_path,
        "compress",
        outcomes,
    );
    assert_eq!(m["algorithm"], "compress");
    check_row(outcomes, Algorithm::Compress, "7.2.");
    stack.alive();
}

#[test]
fn plan_and_migrate_a_real_guest_through_the_real_daemons() {
    let current = migsight_qemu::process::binary_version();
    if !current.as_ref().is_ok_and(|v| v.major >= 10) {
        migsight_qemu::process::skip_or_fail(&format!(
            "the end-to-end test needs QEMU 10 as {} ({current:?})",
            migsight_qemu::process::binary()
        ));
        return;
    }
    let Some(qemu72) = migsight_qemu::process::qemu_7_2() else {
        migsight_qemu::process::skip_or_fail("the end-to-end test needs QEMU 7.2 (scripts/deps.sh unpacks it; or set MIGSIGHT_QEMU_7_2)");
        return;
    };
    let image = match GuestImage::open(&guest::cache_dir()) {
        Ok(i) => i,
        Err(e) => {
            migsight_qemu::process::skip_or_fail(&format!(
                "no guest image ({e}); run lab/guest/build-image.sh"
            ));
            return;
        }
    };
    let accel = match std::env::var("MIGSIGHT_E2E_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        _ => Accel::Tcg,
    };
    let t_start = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("migsight-e2e")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();

    // Model, predictor, agent.
    let data = training_data(&dir, accel);
    let model = dir.join("model.msm");
    let (ok, _, err) = run(&["train", "--data", &s(&data), "--out", &s(&model)]);
    assert!(ok && model.exists(), "migsight train failed: {err}");
    let psock = dir.join("predictor.sock");
    let asock = dir.join("agent.sock");
    let predictor = Daemon::start(
        "predictor",
        &["--model".into(), s(&model), "--socket".into(), s(&psock)],
        &psock,
        &dir,
    );
    // The agent asks QEMU for its own dirty-rate measurement here (what
    // `Daemon::agent` turns off for the reliability tests).
    let agent = Daemon::start(
        "agent",
        &[
            "--socket".into(),
            s(&asock),
            "--predictor".into(),
            s(&psock),
        ],
        &asock,
        &dir,
    );
    let mut stack = Stack {
        dir: dir.clone(),
        data,
        asock,
        predictor,
        agent,
        image,
        accel,
    };
    let outcomes = dir.join("outcomes.csv");
    on_current_qemu(&mut stack, &outcomes);
    eprintln!(
        "e2e: QEMU 10 passed after {:.0}s",
        t_start.elapsed().as_secs_f64()
    );
    on_qemu_7_2(&mut stack, &qemu72, &outcomes);
    eprintln!(
        "e2e: QEMU 7.2 passed after {:.0}s",
        t_start.elapsed().as_secs_f64()
    );

    // The closed loop: the rows of both releases, accepted with the lab's data by train.
    assert_eq!(rows(&outcomes), 3);
    let model2 = dir.join("model2.msm");
    let (ok, _, err) = run(&[
        "train",
        "--data",
        &s(&stack.data),
        "--data",
        &s(&outcomes),
        "--out",
        &s(&model2),
    ]);
    assert!(
        ok && model2.exists(),
        "train rejected lab data + outcomes: {err}"
    );
    stack.alive();
    eprintln!("e2e: passed in {:.0}s", t_start.elapsed().as_secs_f64());
}
