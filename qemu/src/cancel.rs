//! Ctrl-C and SIGTERM for long QEMU operations (a migration, a lab run):
//! the first sets a flag that the loops poll, so they cancel the migration
//! and kill their QEMUs instead of dying mid-way; a second one, while the
//! first is still being handled (a step stuck in QMP, say), exits at once
//! with status 130.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Installs the handlers (once) and returns the flag they set. If they
/// cannot be installed (never on Linux), the flag is still returned and
/// the default action of the signals stays: the process dies on Ctrl-C.
pub fn flag() -> &'static AtomicBool {
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Order matters: the conditional exit sees the flag as it was
            // before this signal's own setter runs.
            let installed =
                signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())
                    .and_then(|_| signal_hook::flag::register(sig, flag.clone()));
            if let Err(e) = installed {
                tracing::warn!(signal = sig, error = %e, "cannot install a signal handler");
            }
        }
        flag
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    #[test]
    fn the_first_signal_sets_the_flag() {
        let f = super::flag();
        assert!(!f.load(Ordering::SeqCst));
        // SAFETY: raising a signal in our own process; the handler is installed.
        unsafe { libc::raise(libc::SIGTERM) };
        for _ in 0..100 {
            if f.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(f.load(Ordering::SeqCst));
        // Reset so other tests of this binary are unaffected (a second
        // signal would now exit the test process).
        f.store(false, Ordering::SeqCst);
    }
}
