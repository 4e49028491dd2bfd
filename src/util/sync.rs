//! The one way this tool takes a lock.

use std::sync::{Mutex, MutexGuard};

/// A lock whose holder panicked still holds plain data (counts, the last look, a node's
/// state): use it rather than panic too — a page or a probe is still worth answering.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
