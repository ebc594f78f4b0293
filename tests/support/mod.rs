//! Helpers of the tests that run the built binary (`e2e.rs`, `e2e_libvirt.rs`,
//! `faults.rs`, `appenders.rs`): real daemon processes, killed and reaped on
//! drop, their memory read from `/proc`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_migsight");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A daemon child process (`migsight predictor|agent …`), killed and
/// reaped on drop; its log is printed when the test fails.
pub struct Daemon {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
    pub socket: PathBuf,
}

impl Daemon {
    pub fn start(name: &'static str, args: &[String], socket: &Path, dir: &Path) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg(name)
            .args(args)
            .env("MIGSIGHT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("starting migsight {name}: {e}"));
        let mut d = Daemon {
            name,
            child,
            log,
            socket: socket.to_path_buf(),
        };
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
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// A predictor on `dir/predictor.sock` serving `model`, with `extra` flags.
    pub fn predictor(dir: &Path, model: &Path, extra: &[&str]) -> Daemon {
        let socket = dir.join("predictor.sock");
        let mut args = vec![
            "--model".to_string(),
            model.display().to_string(),
            "--socket".into(),
            socket.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Daemon::start("predictor", &args, &socket, dir)
    }

    /// An agent on `dir/agent.sock` asking the predictor at `predictor`.
    pub fn agent(dir: &Path, predictor: &Path, extra: &[&str]) -> Daemon {
        let socket = dir.join("agent.sock");
        let mut args = vec![
            "--socket".to_string(),
            socket.display().to_string(),
            "--predictor".into(),
            predictor.display().to_string(),
            "--no-qemu-dirty-rate".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Daemon::start("agent", &args, &socket, dir)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Fails the test, with the daemon's log, if the daemon has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("migsight {} died ({st}): {}", self.name, self.log_text());
        }
    }

    /// (resident, peak resident) memory, KiB, from /proc/PID/status.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Open file descriptors of the daemon (its sockets, mostly).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
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

/// Trains a small model (linear family on simulated migrations: a second,
/// not the minutes of the lab set) and saves it at `path`.
pub fn small_model(path: &Path, seed: u64) {
    use migsight_predictor::data::Data;
    use migsight_predictor::{testdata, FamilyKind, Model, TrainOptions};
    let ds = testdata::simulate(12, seed, true);
    let data = Data::from_dataset(&ds, "simulated");
    let mut o = TrainOptions::new(FamilyKind::Linear, seed);
    o.threads = 1;
    Model::train(&data, &o).save(path).unwrap();
}

/// Runs `migsight ARGS`; (success, stdout, stderr, wall time).
pub fn run(args: &[&str]) -> (bool, String, String, Duration) {
    let t0 = Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = t0.elapsed();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
        took,
    )
}

/// The arguments of `migsight predict --socket SOCKET` on the shipped
/// example features, then `extra`.
pub fn predict_args(socket: &Path, extra: &[&str]) -> Vec<String> {
    let features = repo().join("examples/features.json");
    let mut args: Vec<String> = vec![
        "predict".into(),
        "--socket".into(),
        socket.display().to_string(),
        "--features".into(),
        features.display().to_string(),
        "--bandwidth".into(),
        "1Gbit".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs `migsight predict --json` over `socket` (see [`predict_args`]).
pub fn predict_over(socket: &Path, extra: &[&str]) -> (bool, String, String, Duration) {
    let args = predict_args(socket, &[&["--json"], extra].concat());
    run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Raises this process's open-file limit to its hard limit (the tests hold
/// hundreds of sockets).
pub fn raise_fd_limit() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    l.rlim_cur
}
