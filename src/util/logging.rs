//! Logging to stderr via `RUST_LOG` (default info). The HTTP library is capped at warn whatever
//! `RUST_LOG` says: ureq's debug/trace levels dump requests, Authorization header included.

use log::{LevelFilter, Log, Metadata, Record};

const HTTP_CRATES: [&str; 2] = ["ureq", "ureq_proto"];

struct Capped {
    inner: env_logger::Logger,
}

fn is_http_crate(target: &str) -> bool {
    HTTP_CRATES
        .iter()
        .any(|c| target == *c || target.starts_with(&format!("{c}::")))
}

/// Whether a record may be written at all, before `RUST_LOG` is consulted.
pub fn allowed(target: &str, level: log::Level) -> bool {
    !(is_http_crate(target) && level > log::Level::Warn)
}

impl Log for Capped {
    fn enabled(&self, metadata: &Metadata) -> bool {
        allowed(metadata.target(), metadata.level()) && self.inner.enabled(metadata)
    }
    fn log(&self, record: &Record) {
        if allowed(record.target(), record.level()) {
            self.inner.log(record);
        }
    }
    fn flush(&self) {
        self.inner.flush()
    }
}

pub fn init() {
    let inner = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Capped { inner })).is_ok() {
        log::set_max_level(max.max(LevelFilter::Error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    #[test]
    fn http_crates_never_log_below_warn() {
        for target in ["ureq", "ureq::unversioned::transport", "ureq_proto::client"] {
            assert!(
                !allowed(target, Level::Trace)
                    && !allowed(target, Level::Debug)
                    && !allowed(target, Level::Info)
            );
            assert!(allowed(target, Level::Warn));
        }
        assert!(allowed(
            "couchdb_cluster_init::commands::formation",
            Level::Trace
        ));
        assert!(
            allowed("ureqx", Level::Trace),
            "only the crates themselves are capped"
        );
    }
}
