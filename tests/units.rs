//! The operator-facing installation: systemd units (`systemd-analyze verify`
//! and `security`), the shipped configuration files, and `migsight install`
//! / `uninstall` into a temporary root, all through the built binary.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_migsight");
const UNITS: [&str; 2] = ["migsight-agent.service", "migsight-predictor.service"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn train_lab_model(out: &Path) -> bool {
    let data = repo().join("data/lab.csv");
    if migsight_proto::csv::read_path(&data)
        .map(|d| d.samples.len())
        .unwrap_or(0)
        == 0
    {
        eprintln!(
            "SKIPPED: no rows in {} to train a model from",
            data.display()
        );
        return false;
    }
    let st = Command::new(BIN)
        .args(["train", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    true
}

/// Socket activation as systemd does it (`systemd-socket-activate` passes
/// fd 3 with LISTEN_FDS/LISTEN_PID and starts the daemon on the first
/// connection): the predictor serves on that socket and never binds its own
/// `--socket`; a passed socket of the wrong kind is refused by name.
#[test]
fn predictor_serves_a_socket_passed_by_systemd() {
    if !have("systemd-socket-activate") {
        eprintln!(
            "SKIPPED: systemd-socket-activate is not installed; socket activation was NOT tested"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("model.msm");
    if !train_lab_model(&model) {
        return;
    }
    let passed = d.join("passed.sock");
    let own = d.join("never/own.sock");
    let spawn = |extra: &[&str]| {
        Command::new("systemd-socket-activate")
            .args(extra)
            .arg("-l")
            .arg(&passed)
            .arg(BIN)
            .args(["predictor", "--model"])
            .arg(&model)
            .arg("--socket")
            .arg(&own)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_for = |p: &Path| {
        let t0 = std::time::Instant::now();
        while !p.exists() {
            assert!(
                t0.elapsed().as_secs() < 10,
                "{} never appeared",
                p.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let mut act = spawn(&[]);
    wait_for(&passed);
    let out = Command::new(BIN)
        .args(["predict", "--socket"])
        .arg(&passed)
        .arg("--features")
        .arg(repo().join("examples/features.json"))
        .args(["--bandwidth", "1Gbit", "--json"])
        .output()
        .unwrap();
    let _ = act.kill();
    let _ = act.wait();
    assert!(
        out.status.success(),
        "predict over the passed socket: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.get("recommendation").is_some() || v.get("prediction").is_some(),
        "{v}"
    );
    assert!(
        !own.exists() && !own.parent().unwrap().exists(),
        "it bound --socket too"
    );

    // A datagram socket is not what the predictor serves on.
    std::fs::remove_file(&passed).ok();
    let mut act = spawn(&["--datagram"]);
    wait_for(&passed);
    // The first datagram wakes the activator, which starts the predictor.
    let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let _ = tx.send_to(b"x", &passed);
    let t0 = std::time::Instant::now();
    let st = loop {
        if let Some(st) = act.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed().as_secs() < 20,
            "the predictor kept running on a datagram socket"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(act.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!st.success());
    assert!(err.contains("not a listening Unix stream socket"), "{err}");
}

/// The shipped units with ExecStart pointing at the freshly built binary
/// (verify refuses a unit whose binary does not exist).
fn rendered_units(dir: &Path) -> Vec<PathBuf> {
    let bindir = dir.join("prefix/bin");
    std::fs::create_dir_all(&bindir).unwrap();
    std::os::unix::fs::symlink(BIN, bindir.join("migsight")).unwrap();
    UNITS
        .iter()
        .map(|u| {
            let text = std::fs::read_to_string(repo().join("systemd").join(u)).unwrap();
            let text = text.replace("/usr/local", &dir.join("prefix").display().to_string());
            let p = dir.join(u);
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect()
}

#[test]
fn systemd_units_verify_and_are_hardened() {
    if !have("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze is not installed; the unit files were NOT verified");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let units = rendered_units(dir.path());
    // The optional socket unit is verified with them (it names the service).
    let socket = dir.path().join("migsight-predictor.socket");
    std::fs::copy(repo().join("systemd/migsight-predictor.socket"), &socket).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .arg(&socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    for (u, max) in units.iter().zip([2.0, 1.0]) {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(u)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no exposure level for {}: {text}", u.display()));
        eprintln!("{}", line.trim());
        let score: f64 = line
            .split(':')
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse {line:?}"));
        assert!(score <= max, "{}: exposure {score} > {max}", u.display());
    }
}

#[test]
fn shipped_configs_are_accepted_by_the_daemons() {
    for (sub, file) in [("predictor", "predictor.toml"), ("agent", "agent.toml")] {
        let path = repo().join("etc/migsight").join(file);
        // --help: the file's keys are checked against the daemon's flags
        // without starting the daemon.
        let out = Command::new(BIN)
            .args([sub, "--config"])
            .arg(&path)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "migsight {sub} --config {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "sokcet = \"/tmp/x\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["predictor", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("sokcet") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn install_and_uninstall_into_a_temporary_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let model = dir.path().join("model.msm");
    std::fs::write(&model, b"not really a model").unwrap();
    let st = Command::new(BIN)
        .args(["install", "--prefix", "/opt/ms", "--no-systemctl", "--root"])
        .arg(&root)
        .arg("--model")
        .arg(&model)
        .status()
        .unwrap();
    assert!(st.success());
    let bin = root.join("opt/ms/bin/migsight");
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(BIN).unwrap());
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/migsight-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/ms/bin/migsight agent --config /etc/migsight/agent.toml"));
    assert!(root.join("etc/migsight/predictor.toml").is_file());
    assert!(root.join("opt/ms/lib/sysusers.d/migsight.conf").is_file());
    assert_eq!(
        std::fs::read(root.join("var/lib/migsight/model.msm")).unwrap(),
        b"not really a model"
    );
    // Installing again keeps an edited config.
    std::fs::write(root.join("etc/migsight/predictor.toml"), "threads = 4\n").unwrap();
    let st = Command::new(BIN)
        .args([
            "install",
            "--prefix",
            "/opt/ms",
            "--no-systemctl",
            "--no-model",
            "--root",
        ])
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/migsight/predictor.toml")).unwrap(),
        "threads = 4\n"
    );
    let st = Command::new(BIN)
        .args(["uninstall", "--purge", "--no-systemctl", "--root"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    let left: Vec<_> = walk(&root);
    assert!(
        left.is_empty(),
        "left behind after uninstall --purge: {left:?}"
    );
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The daemons started the way the units start them (`--config FILE`) come up
/// on the sockets the files name.
#[test]
fn daemons_start_from_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("model.msm");
    if !train_lab_model(&model) {
        return;
    }
    let (psock, asock) = (d.join("p.sock"), d.join("a.sock"));
    std::fs::write(
        d.join("predictor.toml"),
        format!(
            "model = \"{}\"\nsocket = \"{}\"\nthreads = 1\n",
            model.display(),
            psock.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("agent.toml"),
        format!(
            "socket = \"{}\"\npredictor = \"{}\"\nmax_connections = 4\nno_qemu_dirty_rate = true\n",
            asock.display(),
            psock.display()
        ),
    )
    .unwrap();
    let mut children = Vec::new();
    for (sub, sock) in [("predictor", &psock), ("agent", &asock)] {
        let mut c = Command::new(BIN)
            .arg(sub)
            .arg("--config")
            .arg(d.join(format!("{sub}.toml")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while !sock.exists() {
            if let Ok(Some(st)) = c.try_wait() {
                let mut e = String::new();
                std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut e).unwrap();
                panic!("migsight {sub} --config exited ({st}): {e}");
            }
            assert!(
                t0.elapsed().as_secs() < 30,
                "{sub} did not create {}",
                sock.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        children.push(c);
    }
    for mut c in children {
        assert!(c.try_wait().unwrap().is_none(), "a daemon exited");
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The predictor unit's `ExecReload` line, run as systemd would run it
/// (`$MAINPID` substituted): it succeeds when the new model loads, and fails
/// and says why when the file is refused, while the daemon keeps serving
/// the old model. The units also bound memory and tasks.
#[test]
fn systemctl_reload_fails_when_the_new_model_is_refused() {
    let unit = std::fs::read_to_string(repo().join("systemd/migsight-predictor.service")).unwrap();
    for key in ["MemoryMax=", "TasksMax="] {
        assert!(unit.contains(key), "predictor unit lacks {key}");
        let agent = std::fs::read_to_string(repo().join("systemd/migsight-agent.service")).unwrap();
        assert!(agent.contains(key), "agent unit lacks {key}");
    }
    let reload = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecReload="))
        .expect("an ExecReload line");
    assert!(reload.contains("$MAINPID"), "{reload}");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (good, live, socket) = (d.join("good.msm"), d.join("model.msm"), d.join("p.sock"));
    if !train_lab_model(&good) {
        return;
    }
    std::fs::copy(&good, &live).unwrap();
    let config = d.join("predictor.toml");
    std::fs::write(
        &config,
        format!(
            "model = \"{}\"\nsocket = \"{}\"\nthreads = 1\n",
            live.display(),
            socket.display()
        ),
    )
    .unwrap();
    let mut daemon = Command::new(BIN)
        .args(["predictor", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !socket.exists() {
        assert!(t0.elapsed().as_secs() < 30, "the predictor did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let exec_reload = || {
        let line = reload
            .replace("/usr/local/bin/migsight", BIN)
            .replace(
                "/etc/migsight/predictor.toml",
                &config.display().to_string(),
            )
            .replace("$MAINPID", &daemon.id().to_string());
        let argv: Vec<&str> = line.split_whitespace().collect();
        Command::new(argv[0]).args(&argv[1..]).output().unwrap()
    };
    let ok = exec_reload();
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.contains("loaded"), "{out}");
    // A refused file: the reload fails, naming why.
    std::fs::write(&live, b"MIGSMDL\nnot a model at all").unwrap();
    let bad = exec_reload();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success(),
        "a refused model must fail the reload"
    );
    assert!(
        err.contains("refused") && err.contains("model.msm"),
        "{err}"
    );
    // The daemon serves on, with the old model.
    let served = Command::new(BIN)
        .args(["predict", "--socket"])
        .arg(&socket)
        .arg("--features")
        .arg(repo().join("examples/features.json"))
        .args(["--bandwidth", "1Gbit", "--json"])
        .output()
        .unwrap();
    assert!(daemon.try_wait().unwrap().is_none(), "the predictor died");
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        served.status.success(),
        "{}",
        String::from_utf8_lossy(&served.stderr)
    );
}
