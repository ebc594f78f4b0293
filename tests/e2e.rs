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
//! Needs `qemu-system-x86_64` and the guest image (`lab/guest/build-image.sh`,
//! run by `scripts/test.sh`); without them the test is SKIPPED loudly.
//! `MIGSIGHT_E2E_DATA=FILE` trains on another CSV; without any data the test
//! first records a tiny real dataset with `migsight lab --quick`.
//! `MIGSIGHT_E2E_ACCEL=kvm` uses KVM.

use migsight_agent::ops_page::OpsPage;
use migsight_proto::{Algorithm, Metric};
use migsight_qemu::image::{self as guest, GuestImage};
use migsight_qemu::process::{Accel, Qemu, VmSpec};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_migsight");
const BANDWIDTH: &str = "100MB/s";
const WINDOW: &str = "3s";
/// The demo's small synthetic workload (`lab/workload/README.md`).
const DEMO_WORKLOAD: &str = "console=ttyS0 panic=-1 quiet mitigations=off MODE=synthetic WS_MB=16 RATE=500 BYTES=512 ENTROPY=4 COLD_MB=32 COLD_ENTROPY=6 SEED=1";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A daemon child process, killed and reaped on drop.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(name: &'static str, args: &[&str], socket: &Path, dir: &Path) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env("MIGSIGHT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("starting migsight {name}: {e}"));
        let mut d = Daemon { name, child, log };
        let t0 = Instant::now();
        while !socket.exists() {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!(
                    "migsight {name} exited ({st}) before listening: {}",
                    d.log_text()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "migsight {name} did not create {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn assert_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("migsight {} died ({st}): {}", self.name, self.log_text());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- migsight {} log ----\n{}", self.name, self.log_text());
        }
    }
}

fn run(args: &[&str]) -> (bool, String, String) {
    eprintln!("$ migsight {}", args.join(" "));
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("{stderr}");
    (out.status.success(), stdout, stderr)
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

/// Checks the `plan --json` object; returns the recommended algorithm.
fn check_plan(j: &Value, max_downtime_ms: f64) -> Algorithm {
    assert_eq!(j["migsight_plan"], 1);
    assert!(j["pid"].as_u64().unwrap() > 0);
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
    assert_eq!(algos.len(), 5, "one prediction per algorithm");
    let names: Vec<&str> = algos
        .iter()
        .map(|a| a["algorithm"].as_str().unwrap())
        .collect();
    assert_eq!(names, Algorithm::ALL.map(|a| a.name()).to_vec());
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
    assert_eq!(ranked.len(), 5);
    let recommended: Algorithm = rec["recommended"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        rec["sla"]["max_downtime_ms"].as_f64(),
        Some(max_downtime_ms)
    );
    if any_meets {
        let i = recommended.index();
        let dt = algos[i]["metrics"][Metric::DT.index()]["value"]
            .as_f64()
            .unwrap();
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

#[test]
fn plan_and_migrate_a_real_guest_through_the_real_daemons() {
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: qemu-system-x86_64 is not installed (scripts/deps.sh installs it); the end-to-end test did NOT run");
        return;
    }
    let image = match GuestImage::open(&guest::cache_dir()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("SKIPPED: no guest image ({e}); run lab/guest/build-image.sh. The end-to-end test did NOT run");
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
    let dir = tmp.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // 1. Model, predictor, agent.
    let data = training_data(dir, accel);
    let model = dir.join("model.msm");
    let (ok, _, err) = run(&["train", "--data", &s(&data), "--out", &s(&model)]);
    assert!(ok && model.exists(), "migsight train failed: {err}");
    let psock = dir.join("predictor.sock");
    let asock = dir.join("agent.sock");
    let mut predictor = Daemon::start(
        "predictor",
        &["predictor", "--model", &s(&model), "--socket", &s(&psock)],
        &psock,
        dir,
    );
    let mut agent = Daemon::start(
        "agent",
        &["agent", "--socket", &s(&asock), "--predictor", &s(&psock)],
        &asock,
        dir,
    );

    // 2. The source guest, with its workload running.
    let runs = dir.join("vms");
    let spec = |name: &str, incoming: bool| VmSpec {
        name: name.into(),
        mem_mib: 256,
        accel,
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
        append: DEMO_WORKLOAD.into(),
        incoming,
        qemu: None,
    };
    let src = Qemu::start(spec("e2e-src", false), &runs).expect("booting the source guest");
    OpsPage::find(src.pid(), Duration::from_secs(180)).expect("the guest workload did not start");
    eprintln!(
        "e2e: guest up after {:.1}s",
        t_start.elapsed().as_secs_f64()
    );

    // 3. plan --json, through the agent's own QMP socket.
    let vm = format!("qmp:{}", src.agent_qmp_path.display());
    let max_dt = 500.0;
    let (ok, out, err) = run(&[
        "plan",
        &vm,
        "--bandwidth",
        BANDWIDTH,
        "--max-downtime",
        "500ms",
        "--window",
        WINDOW,
        "--agent",
        &s(&asock),
        "--json",
    ]);
    assert!(ok, "migsight plan failed: {err}");
    let plan: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("plan --json is not JSON ({e}): {out}"));
    let recommended = check_plan(&plan, max_dt);
    assert!(
        err.contains("profiling"),
        "no progress line on stderr: {err}"
    );
    agent.assert_alive();
    predictor.assert_alive();

    // A VM that does not exist: a typed error with a hint, and the agent lives on.
    let (ok, _, err) = run(&[
        "plan",
        "pid:999999",
        "--bandwidth",
        BANDWIDTH,
        "--window",
        WINDOW,
        "--agent",
        &s(&asock),
    ]);
    assert!(
        !ok && err.contains("VmNotFound") && err.contains("check the VM reference"),
        "{err}"
    );
    agent.assert_alive();

    // The human table, finding the VM by its -name this time.
    let (ok, table, err) = run(&[
        "plan",
        "name:e2e-src",
        "--bandwidth",
        BANDWIDTH,
        "--window",
        WINDOW,
        "--agent",
        &s(&asock),
    ]);
    assert!(ok, "migsight plan (table) failed: {err}");
    for a in Algorithm::ALL {
        assert!(table.contains(a.name()), "table lacks {a}: {table}");
    }
    assert!(
        table.contains("Features measured") && table.contains("Missing features"),
        "{table}"
    );
    println!("{table}");

    // 4. Ctrl-C during a (deliberately slow) migration cancels it cleanly.
    {
        let dst = Qemu::start(spec("e2e-dst0", true), &runs).expect("starting the destination");
        let port = free_port();
        interrupt_a_migration(&vm, &src, &dst, port);
    }

    // 5. migrate with the recommendation to a real destination.
    let dst = Qemu::start(spec("e2e-dst", true), &runs).expect("starting the destination");
    let port = free_port();
    let outcomes = dir.join("outcomes.csv");
    let to = format!("tcp:127.0.0.1:{port}");
    let (ok, out, err) = run(&[
        "migrate",
        &vm,
        "--to",
        &to,
        "--qmp",
        &s(&src.qmp_path),
        "--dst-qmp",
        &s(&dst.qmp_path),
        "--bandwidth",
        BANDWIDTH,
        "--max-downtime",
        "500ms",
        "--window",
        WINDOW,
        "--cap",
        "60s",
        "--agent",
        &s(&asock),
        "--outcomes",
        &s(&outcomes),
        "--guest-ops",
        "--yes",
        "--json",
    ]);
    assert!(ok, "migsight migrate failed: {err}");
    let m: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("migrate --json is not JSON ({e}): {out}"));
    assert_eq!(m["outcome"]["converged"], true, "{m}");
    assert_eq!(m["outcome"]["status"], "completed");
    let used: Algorithm = m["algorithm"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        Some(used),
        m["recommended"].as_str().and_then(|r| r.parse().ok())
    );
    eprintln!("e2e: plan recommended {recommended}, migrate (re-planned) used {used}");
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
    // The guest now runs on the destination; the source is paused (post-migrate).
    let mut dq = dst.qmp().unwrap();
    let (_status, running) = dq.status().unwrap();
    assert!(running, "the guest does not run on the destination");

    // 6. The closed loop: one parseable row, accepted with the lab's data by train.
    let d = migsight_proto::csv::read_path(&outcomes).expect("outcome file parses");
    assert_eq!(d.samples.len(), 1);
    let row = &d.samples[0];
    assert_eq!(row.algorithm, Some(used));
    assert!(row.did_converge());
    for m in [Metric::TT, Metric::DT, Metric::TD] {
        assert!(
            row.label(m).is_some_and(|v| v.is_finite() && v >= 0.0),
            "label {m} missing: {row:?}"
        );
    }
    assert!(row.features.get(migsight_proto::Feature::VmPdr).is_some());
    let model2 = dir.join("model2.msm");
    let (ok, _, err) = run(&[
        "train",
        "--data",
        &s(&data),
        "--data",
        &s(&outcomes),
        "--out",
        &s(&model2),
    ]);
    assert!(
        ok && model2.exists(),
        "train rejected lab data + outcomes: {err}"
    );
    agent.assert_alive();
    predictor.assert_alive();
    drop(dst);
    drop(src);
    eprintln!("e2e: passed in {:.0}s", t_start.elapsed().as_secs_f64());
}
