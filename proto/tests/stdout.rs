//! `migsight … | head`: output into a pipe its reader has closed is not an
//! error (Rust ignores SIGPIPE, so `print!` panics there, exit 101), tested
//! with a real child process writing through `migsight_proto::write_stdout`
//! (what `lab --report`, `train`, `eval` and `predict` print with).

use std::io::Read;
use std::process::{Command, Stdio};

/// Not a test by itself: the writer of `a_closed_pipe_is_not_an_error`.
#[test]
fn stdout_child_process() {
    if std::env::var_os("MIGSIGHT_TEST_STDOUT").is_none() {
        return;
    }
    let line = "a line of a long report\n".repeat(64);
    for _ in 0..4096 {
        migsight_proto::write_stdout(&line).unwrap();
    }
    // Before the test harness prints its summary into the closed pipe.
    std::process::exit(0);
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stdout_child_process",
            "--test-threads=1",
            "--quiet",
        ])
        .env("MIGSIGHT_TEST_STDOUT", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, as `head -1` does, then close the pipe.
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
