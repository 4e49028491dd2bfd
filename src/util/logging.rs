//! Logging to stderr via `RUST_LOG` (default info). The HTTP library is capped at warn whatever
//! `RUST_LOG` says: ureq's debug/trace levels dump requests, Authorization header included.
//!
//! `watch` runs init's procedures every tick, and each logs its phases at info (and a failed
//! phase at warn); a long-running process must log only what changed. So `watch` calls
//! `only_at_info` with its own module: info and warn lines of any other module are written at
//! debug, and watch speaks for itself — one line per change, a failure once.

use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The module (a `module_path!()`) whose info and warn lines keep their level, once set.
static ONLY_AT_INFO: OnceLock<&'static str> = OnceLock::new();

/// From now on, info and warn lines from outside `module` (and its submodules) are debug lines.
pub fn only_at_info(module: &'static str) {
    let _ = ONLY_AT_INFO.set(module);
}

/// The level a record is written at.
pub fn level_of(target: &str, level: Level) -> Level {
    if matches!(level, Level::Info | Level::Warn)
        && ONLY_AT_INFO.get().is_some_and(|m| !target.starts_with(m))
    {
        Level::Debug
    } else {
        level
    }
}

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
        if !allowed(record.target(), record.level()) {
            return;
        }
        let level = level_of(record.target(), record.level());
        if level == record.level() {
            self.inner.log(record);
            return;
        }
        let metadata = Metadata::builder()
            .level(level)
            .target(record.target())
            .build();
        if self.inner.enabled(&metadata) {
            self.inner.log(
                &Record::builder()
                    .metadata(metadata)
                    .args(*record.args())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            );
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

    #[test]
    fn under_watch_only_its_own_info_and_warn_lines_keep_their_level() {
        let formation = "couchdb_cluster_init::commands::formation";
        let watch = "couchdb_cluster_init::commands::watch";
        only_at_info(watch);
        assert_eq!(level_of(formation, Level::Info), Level::Debug);
        assert_eq!(level_of(formation, Level::Warn), Level::Debug);
        assert_eq!(level_of(formation, Level::Error), Level::Error);
        assert_eq!(level_of(formation, Level::Trace), Level::Trace);
        assert_eq!(level_of(watch, Level::Info), Level::Info);
        assert_eq!(level_of(watch, Level::Warn), Level::Warn);
    }
}
