//! SIGTERM and SIGINT as a flag, for `watch`: it finishes the step in hand and exits 0.
//!
//! The handler only stores `true` in an atomic — the one thing a signal handler may safely do —
//! and the process looks at the flag between requests (`clock::Stoppable`). No crate: libc's
//! `signal` is already linked by std, and glibc's `signal` installs a lasting handler with
//! SA_RESTART (BSD semantics), so an interrupted read or write is resumed, not failed.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

extern "C" fn on_signal(_signum: i32) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" {
    /// `sighandler_t signal(int, sighandler_t)`; the old handler it returns is not needed.
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

/// Installs the handlers (once is enough; again is harmless) and gives the flag they set.
pub fn stop_flag() -> &'static AtomicBool {
    // SAFETY: `on_signal` is async-signal-safe (one atomic store, no allocation, no lock), and
    // SIGINT/SIGTERM are 2 and 15 on every Linux architecture.
    unsafe {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
    &STOP
}
