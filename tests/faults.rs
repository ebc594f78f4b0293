//! Faults survived, with real processes: QEMU killed while the agent
//! profiles it; the predictor stopped or killed while a client waits for its
//! answer, directly (`migsight predict`) and behind the agent (`migsight
//! plan`). Each must end with a clear error, promptly, and the daemons that
//! were not killed must stay up.
//!
//! The QEMU part needs `qemu-system-x86_64` (a firmware-only guest: no
//! image); without it that part is SKIPPED loudly.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: signalling a child process this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

/// Waits for `child` to exit, at most `limit` (then kills it and fails).
fn finish(mut child: Child, limit: Duration, what: &str) -> (Output, Duration) {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return (child.wait_with_output().unwrap(), t0.elapsed());
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what}: still running after {limit:?} (a hang): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn predict_args<'a>(socket: &'a Path, features: &'a Path, timeout: &'a str) -> Vec<&'a str> {
    vec![
        "predict",
        "--socket",
        socket.to_str().unwrap(),
        "--features",
        features.to_str().unwrap(),
        "--bandwidth",
        "1Gbit",
        "--timeout",
        timeout,
    ]
}

#[test]
fn the_predictor_stopped_or_killed_mid_request_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.msm");
    small_model(&model, 5);
    let features = repo().join("examples/features.json");

    // Killed while the request waits for its answer.
    let mut predictor = Daemon::predictor(dir.path(), &model, &[]);
    signal(predictor.pid(), libc::SIGSTOP);
    let client = spawn(&predict_args(&predictor.socket, &features, "60s"));
    std::thread::sleep(Duration::from_millis(700));
    signal(predictor.pid(), libc::SIGKILL);
    let _ = predictor.child.wait();
    let (out, after) = finish(client, Duration::from_secs(20), "predict");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("closed the connection") || err.contains("reset"),
        "{err}"
    );
    eprintln!(
        "predictor killed mid-request: `migsight predict` failed {:.0} ms later: {}",
        after.as_secs_f64() * 1e3,
        err.trim()
    );
    drop(predictor);

    // Stopped (hung) for good: the client's deadline ends the wait.
    std::fs::remove_file(dir.path().join("predictor.sock")).ok();
    let predictor = Daemon::predictor(dir.path(), &model, &[]);
    signal(predictor.pid(), libc::SIGSTOP);
    let client = spawn(&predict_args(&predictor.socket, &features, "1s"));
    let (out, took) = finish(client, Duration::from_secs(20), "predict --timeout 1s");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("did not answer within 1s"), "{err}");
    eprintln!(
        "predictor stopped: `migsight predict --timeout 1s` gave up after {:.2} s: {}",
        took.as_secs_f64(),
        err.trim()
    );
    signal(predictor.pid(), libc::SIGKILL);
}

/// A firmware-only QEMU (no guest image) with a QMP socket, killed on drop.
struct Qemu {
    child: Child,
    qmp: PathBuf,
    _dir: tempfile::TempDir,
}

impl Qemu {
    fn boot(name: &str) -> Qemu {
        let dir = tempfile::tempdir().unwrap();
        let qmp = dir.path().join("qmp.sock");
        let child = Command::new("qemu-system-x86_64")
            .args(["-name", name, "-nodefaults", "-no-user-config"])
            .args(["-display", "none", "-serial", "null"])
            .args(["-smp", "1", "-m", "256M", "-accel", "tcg", "-M", "pc"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start qemu-system-x86_64");
        let t0 = Instant::now();
        while !qmp.exists() {
            assert!(t0.elapsed() < Duration::from_secs(20), "QMP never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        Qemu {
            child,
            qmp,
            _dir: dir,
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have_qemu() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").is_file()))
}

/// The QEMU tests of the workspace take this lock (`agent/tests/common`):
/// two TCG guests at once distort each other.
fn qemu_lock() -> std::fs::File {
    let dir = std::env::var_os("MIGSIGHT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/migsight")
        });
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::File::create(dir.join("qemu-tests.lock")).unwrap();
    f.lock().unwrap();
    f
}

fn plan_args<'a>(vm: &'a str, agent: &'a Path, window: &'a str) -> Vec<&'a str> {
    vec![
        "plan",
        vm,
        "--bandwidth",
        "1Gbit",
        "--window",
        window,
        "--agent",
        agent.to_str().unwrap(),
    ]
}

/// The agent still answers: a plan for a VM that cannot exist gets its
/// `VmNotFound` at once.
fn assert_agent_answers(agent: &mut Daemon) {
    assert!(agent.alive(), "the agent died: {}", agent.log_text());
    let (ok, _, err, _) = run(&plan_args("pid:4000000000", &agent.socket, "2s"));
    assert!(!ok && err.contains("VmNotFound"), "{err}");
}

#[test]
fn qemu_killed_while_profiled_and_the_predictor_killed_behind_the_agent() {
    if !have_qemu() {
        eprintln!(
            "\n!!! SKIPPED: qemu-system-x86_64 is not installed; the QEMU faults were NOT tested\n"
        );
        return;
    }
    let _lock = qemu_lock();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.msm");
    small_model(&model, 6);
    let mut predictor = Daemon::predictor(dir.path(), &model, &[]);
    let mut agent = Daemon::agent(dir.path(), &predictor.socket, &[]);

    // QEMU killed 2.5 s into a 10 s profile.
    let vm = Qemu::boot("msfault-kill");
    let vm_ref = format!("qmp:{}", vm.qmp.display());
    let plan = spawn(&plan_args(&vm_ref, &agent.socket, "10s"));
    std::thread::sleep(Duration::from_millis(2500));
    drop(vm); // SIGKILL
    let killed = Instant::now();
    let (out, _) = finish(plan, Duration::from_secs(30), "plan of a killed VM");
    let took = killed.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("VmExited"), "{err}");
    eprintln!(
        "QEMU killed mid-profile: `migsight plan` failed {:.2} s later: {}",
        took.as_secs_f64(),
        err.lines()
            .find(|l| l.contains("error:"))
            .unwrap_or_default()
    );
    assert_agent_answers(&mut agent);

    // The predictor stopped, then killed, while the agent waits for its
    // answer after a 2 s profile: the agent replies PredictorUnavailable
    // with the profiled features, and stays up.
    let vm = Qemu::boot("msfault-predictor");
    let vm_ref = format!("qmp:{}", vm.qmp.display());
    signal(predictor.pid(), libc::SIGSTOP);
    let plan = spawn(&plan_args(&vm_ref, &agent.socket, "2s"));
    std::thread::sleep(Duration::from_millis(5000));
    signal(predictor.pid(), libc::SIGKILL);
    let _ = predictor.child.wait();
    let killed = Instant::now();
    let (out, _) = finish(
        plan,
        Duration::from_secs(30),
        "plan with the predictor killed",
    );
    let took = killed.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("PredictorUnavailable") && err.contains("VM_size"),
        "{err}"
    );
    eprintln!(
        "predictor killed behind the agent: `migsight plan` failed {:.2} s later: {}",
        took.as_secs_f64(),
        err.lines()
            .find(|l| l.contains("error:"))
            .map(|l| l.chars().take(240).collect::<String>())
            .unwrap_or_default()
    );
    assert_agent_answers(&mut agent);
    let (rss, peak) = agent.memory_kib();
    eprintln!(
        "agent memory after two profiles: {:.1} MiB resident, peak {:.1} MiB",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    drop(vm);
}
