//! Drivers for real Debian programs running inside the guest: redis-server,
//! memcached, sqlite3, gzip and xz. Each counts its completed operations in
//! the ops page.

use crate::opspage::*;
use crate::params::{Mode, Params};
use crate::util::{Pacer, Rng};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Res<T> = Result<T, String>;

fn find_program(name: &str) -> Res<String> {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"] {
        let p = format!("{dir}/{name}");
        if std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false) {
            return Ok(p);
        }
    }
    Err(format!("{name}: not found in the guest image"))
}

fn spawn(cmd: &mut Command, page: &OpsPage) -> Res<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe. The server dies with its driver.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd
        .current_dir("/tmp")
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))?;
    page.set(OFF_CHILD_PID, child.id() as u64);
    Ok(child)
}

/// Connects to 127.0.0.1:port, retrying while the server starts (TCG is slow).
fn connect(port: u16, child: &mut Child) -> Res<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_nodelay(true).ok();
                return Ok(s);
            }
            Err(e) => {
                if let Ok(Some(st)) = child.try_wait() {
                    return Err(format!("server exited during startup: {st}"));
                }
                if Instant::now() > deadline {
                    return Err(format!("connect 127.0.0.1:{port}: {e}"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn check_alive(child: &mut Child, what: &str) -> Res<()> {
    match child.try_wait() {
        Ok(Some(st)) => Err(format!("{what} exited: {st}")),
        _ => Ok(()),
    }
}

/// A pool of value bytes with the requested entropy; values are slices of it.
struct ValuePool {
    buf: Vec<u8>,
    len: usize,
}

impl ValuePool {
    fn new(len: usize, entropy: u32, rng: &mut Rng) -> ValuePool {
        let mut buf = vec![0u8; (1 << 20) + len];
        rng.fill_alphabet(&mut buf, entropy);
        ValuePool { buf, len }
    }
    fn pick(&self, rng: &mut Rng) -> &[u8] {
        let off = rng.below((self.buf.len() - self.len + 1) as u64) as usize;
        &self.buf[off..off + self.len]
    }
}

fn key(i: u64) -> String {
    format!("key:{i:010}")
}

fn ops_pacer(p: &Params, chunk: u64) -> Pacer {
    Pacer::new(
        if p.ops_rate == 0 {
            u64::MAX
        } else {
            p.ops_rate
        },
        chunk,
    )
}

// ----------------------------------------------------------------- redis --

fn resp_read(r: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> Res<(bool, bool)> {
    // Returns (is_error, is_hit).
    line.clear();
    r.read_until(b'\n', line)
        .map_err(|e| format!("redis read: {e}"))?;
    if line.is_empty() {
        return Err("redis closed the connection".into());
    }
    match line[0] {
        b'+' | b':' => Ok((false, true)),
        b'-' => Ok((true, false)),
        b'$' => {
            let n: i64 = std::str::from_utf8(&line[1..])
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or("redis: bad bulk length")?;
            if n < 0 {
                return Ok((false, false));
            }
            let mut skip = vec![0u8; n as usize + 2];
            r.read_exact(&mut skip)
                .map_err(|e| format!("redis read: {e}"))?;
            Ok((false, true))
        }
        c => Err(format!("redis: unexpected reply type {:?}", c as char)),
    }
}

fn resp_cmd(out: &mut Vec<u8>, args: &[&[u8]]) {
    write!(out, "*{}\r\n", args.len()).unwrap();
    for a in args {
        write!(out, "${}\r\n", a.len()).unwrap();
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

pub fn run_redis(p: &Params, page: &OpsPage, rng: &mut Rng, ready: impl FnOnce()) -> Res<()> {
    let prog = find_program("redis-server")?;
    let port = 6379u16;
    let mut child = spawn(
        Command::new(&prog)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                "/tmp",
            ])
            .args(["--databases", "1", "--logfile", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
        page,
    )?;
    let s = connect(port, &mut child)?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::with_capacity(1 << 16, s);
    let pool = ValuePool::new(p.value_bytes as usize, p.entropy, rng);
    let mut out = Vec::with_capacity(1 << 16);
    let mut line = Vec::new();
    // Preload every key so GETs hit and the data set has its full size.
    let mut i = 0;
    while i < p.keys {
        out.clear();
        let n = (p.keys - i).min(64);
        for j in 0..n {
            let k = key(i + j);
            resp_cmd(&mut out, &[b"SET", k.as_bytes(), pool.pick(rng)]);
        }
        w.write_all(&out).map_err(|e| format!("redis write: {e}"))?;
        for _ in 0..n {
            resp_read(&mut r, &mut line)?;
        }
        i += n;
    }
    ready();
    let mut pacer = ops_pacer(p, p.pipeline);
    let mut last_check = Instant::now();
    let mut gets: Vec<bool> = Vec::with_capacity(p.pipeline as usize);
    loop {
        let g = pacer.grant();
        if g == 0 {
            continue;
        }
        out.clear();
        gets.clear();
        let mut payload = 0u64;
        for _ in 0..g {
            let k = key(rng.below(p.keys));
            let is_set = rng.below(100) < p.write_pct;
            if is_set {
                resp_cmd(&mut out, &[b"SET", k.as_bytes(), pool.pick(rng)]);
            } else {
                resp_cmd(&mut out, &[b"GET", k.as_bytes()]);
            }
            gets.push(!is_set);
            payload += p.value_bytes;
        }
        w.write_all(&out).map_err(|e| format!("redis write: {e}"))?;
        for &is_get in &gets {
            let (err, hit) = resp_read(&mut r, &mut line)?;
            if err {
                page.add(OFF_ERRORS, 1);
            } else if hit && is_get {
                page.bump(OFF_AUX, 1);
            }
            page.bump(OFF_OPS, 1);
        }
        page.bump(OFF_BYTES_DONE, payload);
        if last_check.elapsed() > Duration::from_secs(1) {
            check_alive(&mut child, "redis-server")?;
            last_check = Instant::now();
        }
    }
}

// ------------------------------------------------------------- memcached --

fn mc_read(r: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> Res<(bool, bool)> {
    // Returns (is_error, is_hit). Handles STORED / VALUE..END / END / errors.
    line.clear();
    r.read_until(b'\n', line)
        .map_err(|e| format!("memcached read: {e}"))?;
    if line.is_empty() {
        return Err("memcached closed the connection".into());
    }
    if line.starts_with(b"STORED") {
        return Ok((false, true));
    }
    if line.starts_with(b"END") {
        return Ok((false, false));
    }
    if line.starts_with(b"VALUE ") {
        let s = String::from_utf8_lossy(line);
        let n: usize = s
            .split_whitespace()
            .nth(3)
            .and_then(|x| x.parse().ok())
            .ok_or("memcached: bad VALUE line")?;
        let mut skip = vec![0u8; n + 2];
        r.read_exact(&mut skip)
            .map_err(|e| format!("memcached read: {e}"))?;
        line.clear();
        r.read_until(b'\n', line)
            .map_err(|e| format!("memcached read: {e}"))?;
        if !line.starts_with(b"END") {
            return Err("memcached: missing END".into());
        }
        return Ok((false, true));
    }
    Ok((true, false))
}

pub fn run_memcached(p: &Params, page: &OpsPage, rng: &mut Rng, ready: impl FnOnce()) -> Res<()> {
    let prog = find_program("memcached")?;
    let port = 11211u16;
    let mut child = spawn(
        Command::new(&prog)
            .args([
                "-u",
                "root",
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-t",
                "1",
            ])
            .args([
                "-m",
                &p.mem_mb.to_string(),
                "-I",
                &format!("{}", (p.value_bytes + 4096).max(1 << 20)),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
        page,
    )?;
    let s = connect(port, &mut child)?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::with_capacity(1 << 16, s);
    let pool = ValuePool::new(p.value_bytes as usize, p.entropy, rng);
    let mut out = Vec::with_capacity(1 << 16);
    let mut line = Vec::new();
    let set = |out: &mut Vec<u8>, k: &str, v: &[u8]| {
        write!(out, "set {k} 0 0 {}\r\n", v.len()).unwrap();
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    };
    let mut i = 0;
    while i < p.keys {
        out.clear();
        let n = (p.keys - i).min(64);
        for j in 0..n {
            set(&mut out, &key(i + j), pool.pick(rng));
        }
        w.write_all(&out)
            .map_err(|e| format!("memcached write: {e}"))?;
        for _ in 0..n {
            let (err, _) = mc_read(&mut r, &mut line)?;
            if err {
                return Err(format!(
                    "memcached preload: {}",
                    String::from_utf8_lossy(&line).trim()
                ));
            }
        }
        i += n;
    }
    ready();
    let mut pacer = ops_pacer(p, p.pipeline);
    let mut last_check = Instant::now();
    let mut gets: Vec<bool> = Vec::with_capacity(p.pipeline as usize);
    loop {
        let g = pacer.grant();
        if g == 0 {
            continue;
        }
        out.clear();
        gets.clear();
        let mut payload = 0u64;
        for _ in 0..g {
            let k = key(rng.below(p.keys));
            let is_set = rng.below(100) < p.write_pct;
            if is_set {
                set(&mut out, &k, pool.pick(rng));
            } else {
                write!(out, "get {k}\r\n").unwrap();
            }
            gets.push(!is_set);
            payload += p.value_bytes;
        }
        w.write_all(&out)
            .map_err(|e| format!("memcached write: {e}"))?;
        for &is_get in &gets {
            let (err, hit) = mc_read(&mut r, &mut line)?;
            if err {
                page.add(OFF_ERRORS, 1);
            } else if hit && is_get {
                page.bump(OFF_AUX, 1);
            }
            page.bump(OFF_OPS, 1);
        }
        page.bump(OFF_BYTES_DONE, payload);
        if last_check.elapsed() > Duration::from_secs(1) {
            check_alive(&mut child, "memcached")?;
            last_check = Instant::now();
        }
    }
}

// ---------------------------------------------------------------- sqlite --

fn read_line_from(r: &mut BufReader<ChildStdout>, line: &mut String, what: &str) -> Res<()> {
    line.clear();
    let n = r.read_line(line).map_err(|e| format!("{what} read: {e}"))?;
    if n == 0 {
        return Err(format!(
            "{what} closed its output (it exited; an SQL error with -bail?)"
        ));
    }
    Ok(())
}

pub fn run_sqlite(p: &Params, page: &Arc<OpsPage>, rng: &mut Rng, ready: impl FnOnce()) -> Res<()> {
    let prog = find_program("sqlite3")?;
    let db = "/tmp/migsight.db";
    for f in [db, "/tmp/migsight.db-wal", "/tmp/migsight.db-shm"] {
        let _ = std::fs::remove_file(f);
    }
    let mut child = spawn(
        Command::new(&prog)
            .args(["-batch", "-bail", db])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
        page,
    )?;
    let mut stdin: ChildStdin = child.stdin.take().ok_or("sqlite3: no stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("sqlite3: no stdout")?);
    let keys = p.keys;
    let vb = p.value_bytes;
    let setup = format!(
        "PRAGMA journal_mode=WAL;\nPRAGMA synchronous=NORMAL;\nPRAGMA cache_size=-16384;\n\
         CREATE TABLE kv(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, v BLOB NOT NULL);\n\
         CREATE TABLE log(t INTEGER PRIMARY KEY, id INTEGER, at INTEGER);\n\
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM c WHERE i+1 < {keys}) \
         INSERT INTO kv SELECT i, 0, randomblob({vb}) FROM c;\nSELECT 'migsight-ready';\n"
    );
    stdin
        .write_all(setup.as_bytes())
        .map_err(|e| format!("sqlite3 write: {e}"))?;
    stdin.flush().ok();
    let mut line = String::new();
    loop {
        read_line_from(&mut stdout, &mut line, "sqlite3")?;
        if line.trim() == "migsight-ready" {
            break;
        }
    }
    ready();
    // Writer thread: generates transactions (paced by OPS_RATE); this thread
    // counts the commit markers sqlite3 prints after each COMMIT.
    let p2 = p.clone();
    let mut rng2 = rng.clone();
    let page_w = Arc::clone(page);
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            let mut pacer = ops_pacer(&p2, 16);
            let mut t: u64 = 0;
            let mut sql = String::with_capacity(4096);
            loop {
                let g = pacer.grant();
                if g == 0 {
                    continue;
                }
                sql.clear();
                for _ in 0..g {
                    t += 1;
                    sql.push_str("BEGIN;\n");
                    for _ in 0..p2.rows_per_txn {
                        let id = rng2.below(p2.keys);
                        sql.push_str(&format!(
                            "UPDATE kv SET n=n+1, v=randomblob({}) WHERE id={id};\n",
                            p2.value_bytes
                        ));
                    }
                    let a = rng2.below(p2.keys);
                    sql.push_str(&format!(
                        "INSERT INTO log(id, at) SELECT sum(n), {t} FROM kv WHERE id BETWEEN {a} AND {a}+16;\n\
                         DELETE FROM log WHERE t < (SELECT max(t) FROM log) - 1000;\nCOMMIT;\nSELECT 'c';\n"
                    ));
                }
                if stdin.write_all(sql.as_bytes()).is_err() {
                    page_w.add(OFF_ERRORS, 1);
                    return;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    loop {
        read_line_from(&mut stdout, &mut line, "sqlite3")?;
        if line.trim_end() == "c" {
            page.bump(OFF_OPS, 1);
            page.bump(OFF_AUX, p.rows_per_txn);
            page.bump(OFF_BYTES_DONE, p.rows_per_txn * p.value_bytes);
        }
    }
}

// ---------------------------------------------------------- gzip / xz ----

pub fn run_compress(
    p: &Params,
    page: &Arc<OpsPage>,
    rng: &mut Rng,
    ready: impl FnOnce(),
) -> Res<()> {
    let (name, args): (&str, Vec<String>) = match p.mode {
        Mode::Gzip => ("gzip", vec!["-c".into(), format!("-{}", p.level)]),
        Mode::Xz => (
            "xz",
            vec!["-c".into(), format!("-{}", p.level), "-T1".into()],
        ),
        _ => unreachable!(),
    };
    let prog = find_program(name)?;
    // The input: CHUNK_MB of bytes with ENTROPY bits of entropy per byte
    // (compressibility ~ ENTROPY/8), fed to the compressor over and over.
    let len = p.chunk_mb as usize * (1 << 20);
    let mut data = vec![0u8; len];
    rng.fill_alphabet(&mut data, p.entropy);
    let mut child = spawn(
        Command::new(&prog)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
        page,
    )?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    ready();
    let page_r = Arc::clone(page);
    // Reader thread: drains the compressed output, counting its bytes (AUX).
    std::thread::Builder::new()
        .name("compress-reader".into())
        .spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => page_r.add(OFF_AUX, n as u64),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    // OPS_RATE caps MiB/s; one op = one MiB of input consumed by the compressor.
    // Input goes in 64 KiB pieces (BYTES_DONE advances per piece, so the host
    // sees progress even for slow compressors); OPS counts whole MiB.
    const PIECE: usize = 64 << 10;
    let mut pacer = ops_pacer(p, 1);
    let mut off = 0usize;
    loop {
        if pacer.grant() == 0 {
            continue;
        }
        for _ in 0..(1 << 20) / PIECE {
            stdin.write_all(&data[off..off + PIECE]).map_err(|e| {
                let st = child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                format!("{name} write: {e} {st}")
            })?;
            off = (off + PIECE) % len;
            page.bump(OFF_BYTES_DONE, PIECE as u64);
        }
        page.bump(OFF_OPS, 1);
    }
}
