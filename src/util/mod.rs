//! Plumbing: what every layer may use and what uses nothing of ours but itself — the
//! configuration read from the environment, the exit codes (the one table), time behind a
//! seam, short text for log lines, logging, DNS, the stop signal of `watch`, the small HTTP
//! endpoint of `watch` and `guard`, and taking a lock.

pub mod clock;
pub mod config;
pub mod discovery;
pub mod exit;
pub mod logging;
pub mod serve;
pub mod signals;
pub mod sync;
pub mod text;
