//! migsight-workload: the in-guest workload of the migsight lab.
//!
//! Runs as the guest's PID 1 (exec'd by /init) or as a normal process.
//! Parameters come from environment variables (see README.md); counters are
//! published in a tagged page of guest RAM that the host finds by scanning
//! the QEMU process's guest memory for the magic (layout in README.md).

mod drivers;
mod opspage;
mod params;
mod synthetic;
mod util;

use opspage::*;
use params::{Mode, Params};
use std::sync::Arc;
use std::time::{Duration, Instant};
use util::{clock_ms, console, Region, Rng};

fn heartbeat(page: Arc<OpsPage>, start: Instant) {
    let mut ticks_to_sec = 10u32;
    let mut last_ops = page.get(OFF_OPS);
    let mut last_pages = page.get(OFF_PAGES_DIRTIED);
    let mut next = Instant::now();
    loop {
        next += Duration::from_millis(100);
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now; // we were paused/throttled: do not burst
        }
        page.add(OFF_HEARTBEAT, 1);
        page.set(OFF_UPTIME_MS, start.elapsed().as_millis() as u64);
        ticks_to_sec -= 1;
        if ticks_to_sec == 0 {
            ticks_to_sec = 10;
            let ops = page.get(OFF_OPS);
            let pages = page.get(OFF_PAGES_DIRTIED);
            page.set(OFF_OPS_LAST_SEC, ops.wrapping_sub(last_ops));
            page.set(OFF_PAGES_LAST_SEC, pages.wrapping_sub(last_pages));
            last_ops = ops;
            last_pages = pages;
        }
    }
}

/// Memory left to the kernel and page cache when locking the working set.
const MEM_RESERVE_MIB: u64 = 24;

fn mem_available_mib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn fail(page: Option<&OpsPage>, msg: &str) -> ! {
    console(&format!("migsight-workload: FAILED: {msg}"));
    if let Some(p) = page {
        p.set_bytes(OFF_ERROR_MSG, ERROR_MSG_LEN, msg.as_bytes());
        p.set(OFF_READY, 2);
    }
    if std::process::id() == 1 {
        // PID 1 must never exit (the kernel would panic and reboot). The
        // heartbeat thread keeps running; the host sees ready == 2.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    std::process::exit(1);
}

fn main() {
    let start = Instant::now();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: migsight-workload [idle|synthetic|redis|memcached|sqlite|gzip|xz]\n\
                  parameters via environment variables; see lab/workload/README.md"
        );
        return;
    }
    // Lock everything (current and future) so nothing is ever swapped or
    // moved out; the ops page and the working set are also mlock'ed one by one.
    if let Err(e) = util::mlockall() {
        console(&format!("migsight-workload: mlockall: {e} (continuing)"));
    }
    let region = match Region::new(PAGE) {
        Ok(r) => r,
        Err(e) => fail(None, &format!("mmap ops page: {e}")),
    };
    // The region is never unmapped: the page lives for the whole process.
    let page = Arc::new(OpsPage::new(region.ptr));
    page.set(OFF_PID, std::process::id() as u64);
    page.set(OFF_PAGE_VADDR, page.vaddr());
    {
        let p = Arc::clone(&page);
        std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || heartbeat(p, start))
            .unwrap_or_else(|e| fail(Some(&page), &format!("heartbeat thread: {e}")));
    }
    let params = match Params::from_env(args.get(1).map(String::as_str)) {
        Ok(p) => p,
        Err(e) => {
            page.set(OFF_VERSION, VERSION);
            page.write_magic();
            fail(Some(&page), &e)
        }
    };
    let mut params = params;
    if !matches!(params.mode, Mode::Synthetic | Mode::Idle) {
        // WS_MB/RATE/BYTES/... only apply to the synthetic and idle modes.
        params.ws_mb = 0;
        params.rate = 0;
        params.bytes = 0;
    }
    params.publish(&page);
    page.set(OFF_READY, 0);
    page.write_magic();
    let mut rng = Rng::new(params.seed);
    let set_ready = || {
        page.set(OFF_READY_MS, start.elapsed().as_millis() as u64);
        page.set(OFF_READY_BOOTTIME_MS, clock_ms(libc::CLOCK_BOOTTIME));
        page.set(OFF_READY, 1);
        console(&format!(
            "migsight-workload: ready after {} ms (boot+{} ms) pid={} {}",
            page.get(OFF_READY_MS),
            page.get(OFF_READY_BOOTTIME_MS),
            std::process::id(),
            params.summary()
        ));
    };
    let res = match params.mode {
        Mode::Idle | Mode::Synthetic => {
            // Locking more than the kernel can spare would make it OOM with
            // only PID 1 to kill, i.e. panic: refuse cleanly instead.
            let need = params.ws_mb + params.cold_mb;
            if let Some(avail) = mem_available_mib() {
                if need + MEM_RESERVE_MIB > avail {
                    fail(
                        Some(&page),
                        &format!(
                            "WS_MB+COLD_MB = {need} MiB does not fit: the guest has {avail} MiB available \
                             and {MEM_RESERVE_MIB} MiB must stay free"
                        ),
                    );
                }
            }
            let mut mem = match synthetic::setup_memory(&params, &mut rng) {
                Ok(m) => m,
                Err(e) => fail(
                    Some(&page),
                    &format!("allocating {} MiB working set: {e}", params.ws_mb),
                ),
            };
            page.set(OFF_WS_PAGES, mem.ws_pages as u64);
            page.set(OFF_WS_VADDR, mem.ws.ptr as u64);
            set_ready();
            if params.mode == Mode::Idle {
                synthetic::run_idle(&page)
            } else {
                synthetic::run_synthetic(&params, &page, &mut mem, &mut rng)
            }
        }
        Mode::Redis => drivers::run_redis(&params, &page, &mut rng, set_ready),
        Mode::Memcached => drivers::run_memcached(&params, &page, &mut rng, set_ready),
        Mode::Sqlite => drivers::run_sqlite(&params, &page, &mut rng, set_ready),
        Mode::Gzip | Mode::Xz => drivers::run_compress(&params, &page, &mut rng, set_ready),
    };
    match res {
        Ok(()) => fail(Some(&page), "driver returned"),
        Err(e) => fail(Some(&page), &e),
    }
}
