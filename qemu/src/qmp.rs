//! A small blocking QMP client.
//!
//! QMP is line-delimited JSON over a Unix socket: a greeting, then
//! `qmp_capabilities`, then commands answered by `{"return": …}` or
//! `{"error": …}`, with asynchronous `{"event": …}` lines interleaved.
//! Commands are sent as raw JSON (not a typed schema) on purpose: the
//! migration capabilities and parameters differ between QEMU versions
//! (7.2 still has `compress`, 9.1 removed it; 8.1 added `dirty-limit`), and a
//! raw client lets the caller send exactly what the running QEMU understands
//! (`discovery` asks it first). The replies migsight relies on are typed in
//! [`crate::status`] and [`crate::discovery`]. (`qapi` 0.15's typed enums
//! break on QEMU versions other than its schema's, measured before this
//! crate existed.)

use crate::version::QemuVersion;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest QMP line accepted (a `query-migrate` reply is ~2 KiB).
const MAX_LINE: usize = 4 << 20;

/// A QMP failure.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP socket {0} closed (QEMU exited?)")]
    Closed(PathBuf),
    #[error("QMP at {path} sent invalid data: {detail}")]
    Protocol { path: PathBuf, detail: String },
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// A connected, negotiated QMP session.
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: VecDeque<Value>,
    /// QEMU version from the greeting.
    pub version: QemuVersion,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path).map_err(|source| QmpError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let io = |source| QmpError::Io {
            path: path.to_path_buf(),
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut qmp = Qmp {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
            events: VecDeque::new(),
            version: QemuVersion::new(0, 0, 0),
        };
        let greeting = qmp.read_message()?;
        let v = greeting
            .pointer("/QMP/version/qemu")
            .ok_or_else(|| qmp.protocol("no QMP greeting"))?;
        let n = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|x| u32::try_from(x).ok())
                .unwrap_or(0)
        };
        qmp.version = QemuVersion::new(n("major"), n("minor"), n("micro"));
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Socket path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn protocol(&self, detail: impl Into<String>) -> QmpError {
        QmpError::Protocol {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// A peer that went away is [`QmpError::Closed`]; anything else is i/o.
    fn io_error(&self, source: std::io::Error) -> QmpError {
        match source.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                QmpError::Closed(self.path.clone())
            }
            _ => QmpError::Io {
                path: self.path.clone(),
                source,
            },
        }
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|source| self.io_error(source))?;
            if n == 0 {
                return Err(QmpError::Closed(self.path.clone()));
            }
            if line.len() > MAX_LINE {
                return Err(self.protocol("line longer than 4 MiB"));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice(&line)
                .map_err(|e| self.protocol(format!("not JSON: {e}")));
        }
    }

    /// Runs `command` with optional `arguments`, returning its `return` value.
    /// Events that arrive meanwhile are queued for [`Qmp::take_events`].
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let msg = match arguments {
            Some(a) => json!({"execute": command, "arguments": a}),
            None => json!({"execute": command}),
        };
        let mut line = serde_json::to_vec(&msg).map_err(|e| self.protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .map_err(|source| self.io_error(source))?;
        loop {
            let m = self.read_message()?;
            if m.get("event").is_some() {
                self.events.push_back(m);
                continue;
            }
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: s("class"),
                    desc: s("desc"),
                });
            }
            return Err(self.protocol(format!("unexpected message {m}")));
        }
    }

    /// Events received so far.
    pub fn take_events(&mut self) -> Vec<Value> {
        self.events.drain(..).collect()
    }

    /// `query-status` → (`status`, `running`).
    pub fn status(&mut self) -> Result<(String, bool), QmpError> {
        let r = self.execute("query-status", None)?;
        let status = r
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| self.protocol("query-status without status"))?
            .to_string();
        let running = r.get("running").and_then(Value::as_bool).unwrap_or(false);
        Ok((status, running))
    }

    /// `query-migrate` as raw JSON (typed: [`crate::status::MigrateInfo::query`]).
    pub fn query_migrate(&mut self) -> Result<Value, QmpError> {
        self.execute("query-migrate", None)
    }

    /// Sets migration capabilities, given as (name, enabled) pairs.
    pub fn set_capabilities(&mut self, caps: &[(&str, bool)]) -> Result<(), QmpError> {
        let list: Vec<Value> = caps
            .iter()
            .map(|(c, on)| json!({"capability": c, "state": on}))
            .collect();
        self.execute(
            "migrate-set-capabilities",
            Some(json!({"capabilities": list})),
        )?;
        Ok(())
    }

    /// Sets migration parameters from a JSON object.
    pub fn set_parameters(&mut self, params: Value) -> Result<(), QmpError> {
        self.execute("migrate-set-parameters", Some(params))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A scripted QMP peer over a real socket: answers each command line with
    /// the next canned reply.
    fn fake_qemu(
        replies: Vec<&'static str>,
    ) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}}, \"capabilities\": []}}\r\n").unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            for reply in replies {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    return;
                }
                s.write_all(reply.as_bytes()).unwrap();
            }
        });
        (dir, path, h)
    }

    #[test]
    fn negotiates_and_queues_events() {
        let (_d, path, _h) = fake_qemu(vec![
            "{\"return\": {}}\n",
            "{\"event\": \"STOP\", \"data\": {}}\n{\"return\": {\"status\": \"paused\", \"running\": false}}\n",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
        ]);
        let mut q = Qmp::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(q.version, QemuVersion::new(7, 2, 22));
        assert_eq!(q.status().unwrap(), ("paused".to_string(), false));
        assert_eq!(q.take_events().len(), 1);
        let e = q.execute("migrate", None).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn garbage_and_closed_sockets_are_errors() {
        let (_d, path, _h) = fake_qemu(vec!["this is not json\n"]);
        let e = Qmp::connect(&path, Duration::from_secs(5)).err().unwrap();
        assert!(matches!(e, QmpError::Protocol { .. }), "{e}");
        let (_d, path, _h) = fake_qemu(vec![]);
        let e = Qmp::connect(&path, Duration::from_secs(5)).err().unwrap();
        assert!(matches!(e, QmpError::Closed(_)), "{e}");
        let e = Qmp::connect(Path::new("/nonexistent/qmp"), Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(matches!(e, QmpError::Connect { .. }));
    }
}
