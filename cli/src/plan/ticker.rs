//! The stderr progress line while the agent profiles.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A stderr progress line while the agent profiles, stopped on drop.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    tty: bool,
}

impl Ticker {
    pub fn start(what: String, total: Duration) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let tty = std::io::stderr().is_terminal();
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut last_print = None::<Instant>;
            while !s.load(Ordering::Relaxed) {
                let el = t0.elapsed();
                let every = if tty {
                    Duration::from_millis(250)
                } else {
                    Duration::from_secs(5)
                };
                if last_print.map(|l| l.elapsed() >= every).unwrap_or(true) {
                    last_print = Some(Instant::now());
                    let pct = (el.as_secs_f64() / total.as_secs_f64().max(1e-3) * 100.0).min(100.0);
                    let msg = if el <= total {
                        format!(
                            "{what}: {:.0}s / {:.0}s ({pct:.0} %)",
                            el.as_secs_f64(),
                            total.as_secs_f64()
                        )
                    } else {
                        format!(
                            "{what}: {:.0}s / {:.0}s, predicting…",
                            el.as_secs_f64(),
                            total.as_secs_f64()
                        )
                    };
                    let mut e = std::io::stderr().lock();
                    if tty {
                        let _ = write!(e, "\r\x1b[2K{msg}");
                    } else {
                        let _ = writeln!(e, "{msg}");
                    }
                    let _ = e.flush();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Ticker {
            stop,
            handle: Some(handle),
            tty,
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}
