//! Faults survived, with real processes: QEMU killed while the agent
//! profiles it; the predictor stopped or killed while a client waits for its
//! answer, directly (`migsight predict`) and behind the agent (`migsight
//! plan`). Each must end with a clear error, promptly, and the daemons that
//! were not killed must stay up.
//!
//! The QEMU part boots idle guests of the lab's image through
//! `migsight_qemu::process` (the lab's own way of starting QEMU); without
//! QEMU it is skipped loudly by hand and fails under `scripts/test.sh`.

mod support;

use migsight_qemu::image::GuestImage;
use migsight_qemu::process::{self, skip_or_fail, Accel, Qemu, VmSpec};
use std::path::Path;
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

fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_predictor_stopped_or_killed_mid_request_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.msm");
    small_model(&model, 5);

    // Killed while the request waits for its answer.
    let mut predictor = Daemon::predictor(dir.path(), &model, &[]);
    signal(predictor.pid(), libc::SIGSTOP);
    let client = spawn(&predict_args(&predictor.socket, &["--timeout", "60s"]));
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
    let client = spawn(&predict_args(&predictor.socket, &["--timeout", "1s"]));
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

/// An idle guest of the lab's image, killed (and its run directory removed)
/// on drop; the agent is pointed at its second QMP socket.
fn boot(name: &str, runs: &Path) -> Qemu {
    let image = GuestImage::ensure().expect("the guest image (lab/guest/build-image.sh)");
    let spec = VmSpec {
        name: name.into(),
        mem_mib: 256,
        accel: Accel::Tcg,
        kernel: image.kernel,
        initrd: image.initrd,
        append: "console=ttyS0 panic=-1 quiet mitigations=off MODE=idle".into(),
        incoming: false,
        qemu: None,
    };
    Qemu::start(spec, runs).expect("starting QEMU")
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
    if let Err(e) = process::binary_version() {
        skip_or_fail(&format!("the QEMU faults need QEMU ({e}; scripts/deps.sh)"));
        return;
    }
    let _lock = process::test_lock().expect("the QEMU-test lock");
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let model = dir.path().join("model.msm");
    small_model(&model, 6);
    let mut predictor = Daemon::predictor(dir.path(), &model, &[]);
    let mut agent = Daemon::agent(dir.path(), &predictor.socket, &[]);

    // QEMU killed 2.5 s into a 10 s profile.
    let vm = boot("msfault-kill", &runs);
    let vm_ref = format!("qmp:{}", vm.agent_qmp_path.display());
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
    let vm = boot("msfault-predictor", &runs);
    let vm_ref = format!("qmp:{}", vm.agent_qmp_path.display());
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
