//! What `watch` exports, in the Prometheus text format (version 0.0.4), written by hand: a few
//! gauges and two counters need no crate.
//!
//! The page stays small at any number of databases: per-database series exist only for
//! databases with ranges below n, at most `PROBLEM_DBS` of them (database names are often user
//! names: a healthy database is never named). Per-node series carry the Erlang name only.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant, SystemTime};

/// Per-database series at most: the ones with the most ranges below n.
pub const PROBLEM_DBS: usize = 20;

/// One look at the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The verdict `check` gives.
    pub healthy: bool,
    pub members: usize,
    /// Members connected to the reference node and serving (not in maintenance).
    pub nodes_up: usize,
    pub databases: usize,
    /// Ranges with fewer copies than n on members that are up, over every database.
    pub ranges_below_n: usize,
    /// Erlang name → copies the shard maps put on it.
    pub copies: BTreeMap<String, usize>,
    /// Erlang name → bytes of its copies (`Survey::node_loads`), read every few ticks; empty
    /// until the first reading, and then no series.
    pub bytes: BTreeMap<String, u64>,
    /// Databases with ranges below n, the worst first, at most `PROBLEM_DBS`.
    pub problem_dbs: Vec<(String, usize)>,
    pub backup: Option<BackupLag>,
    /// Erlang name → its CouchDB release (`GET /` of each node that answered; a member asked
    /// through another node has none).
    pub versions: BTreeMap<String, String>,
    /// Erlang name → `maintenance_mode` is on (`true`, or `nolb`: drained), for the nodes
    /// whose mode was read (not the ones that do not answer).
    pub maintenance: BTreeMap<String, bool>,
}

/// With COUCHDB_BACKUP_URL: how far the backup is behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupLag {
    /// Databases without a replication writing into the backup, or without the database there.
    pub unreplicated: usize,
    /// Documents (live and deleted) the backup lacks, over every database, by count.
    pub docs_behind: u64,
}

/// What the server thread reads and the watch loop writes.
#[derive(Debug)]
pub struct Shared {
    pub interval: Duration,
    /// The longest a tick may take: its deadline and one request.
    pub tick_limit: Duration,
    pub started: Instant,
    /// The last look that succeeded; `None` after a failed one (the cluster is then not healthy).
    pub snapshot: Option<Snapshot>,
    pub ticks: u64,
    pub errors: u64,
    /// When the last tick (successful or not) finished.
    pub last_tick: Option<(Instant, SystemTime)>,
    /// When the tick under way started.
    pub tick_started: Option<Instant>,
}

impl Shared {
    pub fn new(interval: Duration, tick_limit: Duration) -> Shared {
        Shared {
            interval,
            tick_limit,
            started: Instant::now(),
            snapshot: None,
            ticks: 0,
            errors: 0,
            last_tick: None,
            tick_started: None,
        }
    }

    /// `/healthz`: the watcher is not stuck — a tick finished within three intervals (counted
    /// from the start before the first), or the one under way is still within its deadline.
    pub fn live(&self, now: Instant) -> bool {
        let since = self.last_tick.map_or(self.started, |(at, _)| at);
        now.duration_since(since) <= self.interval * 3
            || self
                .tick_started
                .is_some_and(|t| now.duration_since(t) <= self.tick_limit)
    }
}

/// A gauge read from a snapshot: (name, help, value).
type Count = (&'static str, &'static str, fn(&Snapshot) -> usize);

/// The `/metrics` page.
pub fn render(s: &Shared) -> String {
    let mut out = String::new();
    let snap = s.snapshot.as_ref();
    gauge(
        &mut out,
        "couchdb_cluster_healthy",
        "1 when the cluster passes `couchdb-cluster-init check`, else 0 (also when no node answers)",
        Some(u64::from(snap.is_some_and(|s| s.healthy))),
    );
    let counts: [Count; 4] = [
        (
            "couchdb_cluster_members",
            "nodes in the cluster's membership",
            |s| s.members,
        ),
        (
            "couchdb_cluster_nodes_up",
            "members connected and serving (not in maintenance mode)",
            |s| s.nodes_up,
        ),
        (
            "couchdb_cluster_databases",
            "databases in the cluster",
            |s| s.databases,
        ),
        (
            "couchdb_cluster_ranges_below_n",
            "shard ranges with fewer copies than n on members that are up",
            |s| s.ranges_below_n,
        ),
    ];
    for (name, help, value) in counts {
        gauge(&mut out, name, help, snap.map(|s| value(s) as u64));
    }
    if let Some(snap) = snap {
        labelled(
            &mut out,
            "couchdb_node_copies",
            "shard copies the shard maps put on a node",
            "node",
            snap.copies.iter().map(|(k, v)| (k, *v as u64)),
        );
        if !snap.bytes.is_empty() {
            labelled(
                &mut out,
                "couchdb_node_bytes",
                "bytes of the shard copies on a node",
                "node",
                snap.bytes.iter().map(|(k, v)| (k, *v)),
            );
        }
        if !snap.problem_dbs.is_empty() {
            labelled(
                &mut out,
                "couchdb_database_ranges_below_n",
                "ranges below n, for databases that have any (at most 20 databases)",
                "db",
                snap.problem_dbs.iter().map(|(k, v)| (k, *v as u64)),
            );
        }
        if !snap.versions.is_empty() {
            let _ = write!(
                out,
                "# HELP couchdb_node_version_info the CouchDB release a node runs (GET /)\n\
                 # TYPE couchdb_node_version_info gauge\n"
            );
            for (node, version) in &snap.versions {
                let _ = writeln!(
                    out,
                    "couchdb_node_version_info{{node=\"{}\",version=\"{}\"}} 1",
                    escape(node),
                    escape(version)
                );
            }
            let mut distinct: Vec<&String> = snap.versions.values().collect();
            distinct.sort();
            distinct.dedup();
            gauge(
                &mut out,
                "couchdb_cluster_versions",
                "distinct CouchDB releases among the nodes (more than 1 during a rolling upgrade)",
                Some(distinct.len() as u64),
            );
        }
        labelled(
            &mut out,
            "couchdb_node_maintenance",
            "1 while a node's maintenance_mode is on (true, or nolb: drained), else 0",
            "node",
            snap.maintenance.iter().map(|(k, on)| (k, u64::from(*on))),
        );
        if let Some(b) = &snap.backup {
            gauge(
                &mut out,
                "couchdb_backup_databases_unreplicated",
                "databases without a replication into COUCHDB_BACKUP_URL, or without their database there",
                Some(b.unreplicated as u64),
            );
            gauge(
                &mut out,
                "couchdb_backup_docs_behind",
                "documents (live and deleted) the backup lacks, over every database",
                Some(b.docs_behind),
            );
        }
    }
    if let Some((_, at)) = s.last_tick {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let _ = write!(
            out,
            "# HELP couchdb_watch_last_tick_timestamp_seconds when the watcher last finished a look\n\
             # TYPE couchdb_watch_last_tick_timestamp_seconds gauge\n\
             couchdb_watch_last_tick_timestamp_seconds {secs:.3}\n"
        );
    }
    counter(
        &mut out,
        "couchdb_watch_ticks_total",
        "looks at the cluster",
        s.ticks,
    );
    counter(
        &mut out,
        "couchdb_watch_errors_total",
        "looks that failed (logged, tried again on the next)",
        s.errors,
    );
    out
}

fn gauge(out: &mut String, name: &str, help: &str, value: Option<u64>) {
    if let Some(v) = value {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
        );
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
    );
}

fn labelled<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a String, u64)>,
) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
    for (key, v) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(key));
    }
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new(Duration::from_secs(15), Duration::from_secs(300))
    }

    #[test]
    fn a_failed_look_says_unhealthy_and_nothing_it_does_not_know() {
        let mut s = shared();
        s.errors = 2;
        let page = render(&s);
        assert!(page.contains("\ncouchdb_cluster_healthy 0\n"), "{page}");
        assert!(page.contains("\ncouchdb_watch_errors_total 2\n"), "{page}");
        assert!(!page.contains("couchdb_cluster_members"), "{page}");
        assert!(!page.contains("last_tick_timestamp"), "{page}");
    }

    #[test]
    fn every_series_has_help_and_type_and_labels_are_escaped() {
        let mut s = shared();
        s.last_tick = Some((
            Instant::now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(5),
        ));
        s.snapshot = Some(Snapshot {
            healthy: true,
            members: 3,
            nodes_up: 3,
            databases: 2,
            copies: [("couchdb@a.b".to_string(), 4)].into(),
            problem_dbs: vec![("we\"ird\\db\n".to_string(), 1)],
            backup: Some(BackupLag {
                unreplicated: 1,
                docs_behind: 7,
            }),
            versions: [
                ("couchdb@a.b".to_string(), "3.4.2".to_string()),
                ("couchdb@c.d".to_string(), "3.5.2".to_string()),
            ]
            .into(),
            maintenance: [
                ("couchdb@a.b".to_string(), false),
                ("couchdb@c.d".to_string(), true),
            ]
            .into(),
            ..Snapshot::default()
        });
        let page = render(&s);
        for line in [
            "couchdb_cluster_healthy 1",
            "couchdb_cluster_members 3",
            "couchdb_cluster_ranges_below_n 0",
            "couchdb_node_copies{node=\"couchdb@a.b\"} 4",
            "couchdb_database_ranges_below_n{db=\"we\\\"ird\\\\db\\n\"} 1",
            "couchdb_backup_docs_behind 7",
            "couchdb_watch_last_tick_timestamp_seconds 5.000",
            "couchdb_node_version_info{node=\"couchdb@a.b\",version=\"3.4.2\"} 1",
            "couchdb_node_version_info{node=\"couchdb@c.d\",version=\"3.5.2\"} 1",
            "couchdb_cluster_versions 2",
            "couchdb_node_maintenance{node=\"couchdb@a.b\"} 0",
            "couchdb_node_maintenance{node=\"couchdb@c.d\"} 1",
        ] {
            assert!(page.lines().any(|l| l == line), "no `{line}` in\n{page}");
        }
        assert!(
            !page.contains("couchdb_node_bytes"),
            "no sizes read: no series"
        );
        for sample in page.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            assert!(page.contains(&format!("# TYPE {name} ")), "{name}");
            assert!(page.contains(&format!("# HELP {name} ")), "{name}");
        }
    }

    #[test]
    fn live_while_ticks_finish_or_the_current_one_is_within_its_deadline() {
        let mut s = shared();
        let t0 = s.started;
        assert!(s.live(t0 + Duration::from_secs(44)));
        assert!(!s.live(t0 + Duration::from_secs(46)));
        s.tick_started = Some(t0 + Duration::from_secs(40));
        assert!(s.live(t0 + Duration::from_secs(300)));
        assert!(!s.live(t0 + Duration::from_secs(341)));
        s.tick_started = None;
        s.last_tick = Some((t0 + Duration::from_secs(100), SystemTime::now()));
        assert!(s.live(t0 + Duration::from_secs(140)));
        assert!(!s.live(t0 + Duration::from_secs(146)));
    }
}
