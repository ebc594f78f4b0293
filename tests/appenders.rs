//! No lost outcome: many processes appending to one outcomes file at once,
//! each row the way `migsight migrate` records it (widen the header if it
//! is older, open, append), on a new file (every writer races to write the
//! header) and on a file with an older header (every writer races to widen
//! it). Every row must arrive exactly once, under exactly one header, and
//! `migsight train` must read the file.
//!
//! `MIGSIGHT_APPEND_RUNS` (default 20) runs alternate the two starts. The
//! file lives on /dev/shm when there is one (`MIGSIGHT_APPEND_DIR` picks
//! another directory): the lock, not the disk, is under test, and 4,000
//! fsyncs per run on a disk would make the suite minutes longer.
//! `ENOSPC`: a full filesystem (a 64 KiB tmpfs mounted here, as root) gives
//! a clear error and leaves the file valid.

mod support;

use migsight_proto::csv::{self, CsvAppender, Sample};
use migsight_proto::{Algorithm, Feature, Metric};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

const WRITERS: usize = 8;
const ROWS: usize = 500;

fn old_columns() -> Vec<String> {
    vec!["writer".to_string()]
}

fn new_columns() -> Vec<String> {
    vec!["writer".to_string(), "seq".to_string()]
}

/// A trainable row, tagged with its writer and sequence number.
fn row(writer: usize, seq: usize) -> Sample {
    let mut s = Sample {
        algorithm: Some(Algorithm::ALL[seq % 5]),
        converged: Some(true),
        group_id: Some(format!("w{writer}-r{seq}")),
        ..Sample::default()
    };
    let size = 512.0 + (seq * 7 % 3584) as f64;
    let pdr = 5.0 + (seq * 13 % 90) as f64;
    s.features.set(Feature::VmSize, Some(size));
    s.features.set(Feature::VmPdr, Some(pdr));
    s.features.set(Feature::VmWss, Some(size * 0.2));
    s.features.set(Feature::VmPtr, Some(100.0));
    s.set_label(Metric::TT, size / 100.0 * 1000.0 * (1.0 + pdr / 100.0));
    s.set_label(Metric::DT, 10.0 + pdr);
    s.set_label(Metric::TD, size * 1_048_576.0 * (1.0 + pdr / 100.0));
    s.extra = vec![
        ("writer".into(), writer.to_string()),
        ("seq".into(), seq.to_string()),
    ];
    s
}

/// What `migsight migrate` does with its outcome row.
fn record(path: &Path, s: &Sample) -> Result<(), csv::CsvError> {
    csv::widen(path, &new_columns())?;
    CsvAppender::open(path, &new_columns())?.append(s)
}

/// Not a test by itself: one writer process of
/// `concurrent_writers_lose_and_duplicate_nothing` (does nothing unless
/// that test spawns this binary with MIGSIGHT_TEST_APPENDER set).
#[test]
fn appender_child_process() {
    let Ok(spec) = std::env::var("MIGSIGHT_TEST_APPENDER") else {
        return;
    };
    let mut it = spec.splitn(3, ',');
    let writer: usize = it.next().unwrap().parse().unwrap();
    let rows: usize = it.next().unwrap().parse().unwrap();
    let path = PathBuf::from(it.next().unwrap());
    for seq in 0..rows {
        record(&path, &row(writer, seq)).unwrap();
    }
}

fn scratch_dir() -> tempfile::TempDir {
    if let Some(d) = std::env::var_os("MIGSIGHT_APPEND_DIR") {
        return tempfile::tempdir_in(d).unwrap();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// Checks one run's file: one header, the old row if any, every writer's
/// rows exactly once.
fn check(path: &Path, old_row: bool) {
    let text = std::fs::read_to_string(path).unwrap();
    let header_line = text.lines().next().unwrap().to_string();
    let headers = text.lines().filter(|l| *l == header_line).count();
    assert_eq!(headers, 1, "{headers} header lines");
    assert!(text.ends_with('\n'));
    let d = csv::read_path(path).unwrap();
    assert_eq!(d.extra_columns, new_columns());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for s in &d.samples {
        *seen.entry(s.group_id.clone().unwrap()).or_default() += 1;
    }
    let want = WRITERS * ROWS + old_row as usize;
    assert_eq!(d.samples.len(), want, "rows");
    for w in 0..WRITERS {
        for r in 0..ROWS {
            let g = format!("w{w}-r{r}");
            assert_eq!(seen.get(&g).copied(), Some(1), "row {g}");
        }
    }
    if old_row {
        assert_eq!(seen.get("old").copied(), Some(1), "the old row");
    }
}

#[test]
fn concurrent_writers_lose_and_duplicate_nothing() {
    let runs: usize = std::env::var("MIGSIGHT_APPEND_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = scratch_dir();
    let t0 = std::time::Instant::now();
    let mut last = (PathBuf::new(), 0);
    for run in 0..runs {
        let path = dir.path().join(format!("outcomes-{run}.csv"));
        // Odd runs start from a file an older migsight wrote.
        let old_row = run % 2 == 1;
        if old_row {
            let mut s = row(99, 0);
            s.group_id = Some("old".into());
            s.extra.truncate(1);
            CsvAppender::open(&path, &old_columns())
                .unwrap()
                .append(&s)
                .unwrap();
        }
        let children: Vec<_> = (0..WRITERS)
            .map(|w| {
                Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", "appender_child_process", "--test-threads=1"])
                    .env(
                        "MIGSIGHT_TEST_APPENDER",
                        format!("{w},{ROWS},{}", path.display()),
                    )
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "a writer failed (run {run})");
        }
        check(&path, old_row);
        last = (path, WRITERS * ROWS + old_row as usize);
    }
    eprintln!(
        "{runs} runs × {WRITERS} writer processes × {ROWS} rows: every row exactly once, one header ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    // The trainer reads the result.
    let model = dir.path().join("model.msm");
    let (ok, out, err, _) = run(&[
        "train",
        "--data",
        last.0.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--family",
        "analytic",
    ]);
    assert!(ok, "train: {err}");
    assert!(out.contains(&format!("on {} rows", last.1)), "{out}");
}

/// A full filesystem: the append fails with a clear error, and the file is
/// exactly as it was (every earlier row readable, no partial row); once
/// there is room again, appends go on. As root, on a 64 KiB tmpfs mounted
/// for this test; skipped (loudly) otherwise.
#[test]
fn a_full_disk_leaves_the_outcomes_file_valid() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: not root; ENOSPC was NOT tested (needs a tmpfs mount)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("full");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "migsight-enospc"])
        .arg(&mnt)
        .status();
    if !matches!(st, Ok(s) if s.success()) {
        eprintln!("SKIPPED: cannot mount a tmpfs here ({st:?}); ENOSPC was NOT tested");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let path = mnt.join("outcomes.csv");
    let mut a = CsvAppender::open(&path, &new_columns()).unwrap();
    a.append(&row(0, 0)).unwrap();
    // Fill the filesystem, leaving less room than a row.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let byte = [0u8; 1];
        while f.write_all(&byte).is_ok() {}
        let _ = f.sync_all();
    }
    let mut failures = 0;
    let mut before = std::fs::read(&path).unwrap();
    // The file's last page still has room: append until it is full.
    for seq in 1..1000 {
        if failures == 3 {
            break;
        }
        if failures == 0 {
            before = std::fs::read(&path).unwrap();
        }
        match a.append(&row(0, seq)) {
            Ok(()) => {}
            Err(e) => {
                failures += 1;
                let msg = e.to_string();
                assert!(
                    msg.contains("No space left on device")
                        && msg.contains("outcomes.csv")
                        && msg.contains("not written"),
                    "{msg}"
                );
                if failures == 1 {
                    eprintln!("append on a full disk: {msg}");
                }
            }
        }
        // Whatever happened, the file reads back with whole rows only.
        let d = csv::read_path(&path).unwrap();
        assert!(std::fs::read(&path).unwrap().ends_with(b"\n"));
        assert!(!d.samples.is_empty());
    }
    assert!(failures > 0, "the filesystem never filled");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the failed appends left the file exactly as it was"
    );
    // A new file on the full disk: refused, nothing left behind.
    let fresh = mnt.join("fresh.csv");
    match CsvAppender::open(&fresh, &new_columns()) {
        Err(e) => {
            assert!(e.to_string().contains("No space left"), "{e}");
            assert!(!fresh.exists(), "an empty or partial file was left");
        }
        Ok(_) => {
            // tmpfs may still have had a page for it; then it is whole.
            assert!(csv::read_path(&fresh).is_ok());
        }
    }
    // Room again: appends go on, the file is valid.
    std::fs::remove_file(&filler).unwrap();
    a.append(&row(0, 99)).unwrap();
    let d = csv::read_path(&path).unwrap();
    assert_eq!(
        d.samples.last().unwrap().group_id.as_deref(),
        Some("w0-r99")
    );
    // Training data loads it.
    assert!(migsight_predictor::data::Data::load(&[path]).is_ok());
}
