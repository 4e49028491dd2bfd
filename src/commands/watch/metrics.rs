//! What `watch` exports, in the Prometheus text format (version 0.0.4), written by hand: a few
//! gauges and two counters need no crate.
//!
//! The page stays small at any number of databases: per-database series exist only for
//! databases with ranges below n, at most `PROBLEM_DBS` of them (database names are often user
//! names: a healthy database is never named). Per-node series carry the Erlang name only.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// Per-database series at most: the ones with the most ranges below n.
pub const PROBLEM_DBS: usize = 20;

/// Lines of a list kept for the status page (problems, backups not in place) at most.
pub const SHOWN_LINES: usize = 5;

/// State changes kept for the status page at most, the newest first.
pub const CHANGES: usize = 20;

/// A kept line at most this many characters: a look's words are short, an error may not be.
const LINE_CHARS: usize = 300;

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
    /// Erlang name → the zone of its `_nodes` doc (members with one).
    pub zones: BTreeMap<String, String>,
    /// Ranges whose copies share a zone where the zones would allow them not to.
    pub ranges_zone_shared: usize,
    pub backup: Option<BackupLag>,
    /// With COUCHDB_BACKUP_URL: why the backup could not be looked at or put in place.
    pub backup_error: Option<String>,
    /// Every node the look saw: the listed ones, then members that are not listed.
    pub nodes: Vec<NodeRow>,
    /// What keeps the cluster from being healthy, as `status` says it.
    pub problems: Lines,
    /// `status`'s finding when `rebalance` can even out the members (a warning, not a problem).
    pub imbalance: Option<String>,
    /// The cluster in a few words, as the log says it (`healthy: 3 members, all up`).
    pub summary: String,
    /// The kinds of the security findings (`status`'s section), read with the sizes; `None`
    /// until the first reading, and then no series.
    pub security: Option<Vec<String>>,
    /// Erlang name → its CouchDB release (`GET /` of each node that answered; a member asked
    /// through another node has none).
    pub versions: BTreeMap<String, String>,
    /// Erlang name → `maintenance_mode` is on (`true`, or `nolb`: drained), for the nodes
    /// whose mode was read (not the ones that do not answer).
    pub maintenance: BTreeMap<String, bool>,
}

/// One node, as the status page shows it and `couchdb_node_up` counts it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    /// The Erlang name; `None` for a listed node that never answered.
    pub name: Option<String>,
    /// As in COUCHDB_NODES (never a credential: those are refused there); `None` for a member
    /// that is not listed.
    pub address: Option<String>,
    pub member: bool,
    /// Connected to the node the look asked through.
    pub connected: bool,
    /// Answers HTTP, maintenance or not, and (a member) is connected: a drained node is up.
    pub up: bool,
    /// `[couchdb] maintenance_mode` while it is on (`true`, `nolb`): drained.
    pub maintenance: Option<String>,
    /// Where known (COUCHDB_ZONE's attribute, the node's `/` answer); `None`: not known.
    pub zone: Option<String>,
    pub version: Option<String>,
}

impl NodeRow {
    /// How the page and the JSON name it: the Erlang name, else the address.
    pub fn label(&self) -> &str {
        self.name
            .as_deref()
            .or(self.address.as_deref())
            .unwrap_or("?")
    }
}

/// A list cut at `SHOWN_LINES` lines of at most `LINE_CHARS`, and how long it was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Lines {
    pub shown: Vec<String>,
    pub total: usize,
}

impl Lines {
    pub fn of(all: impl IntoIterator<Item = String>) -> Lines {
        let mut lines = Lines::default();
        for line in all {
            if lines.shown.len() < SHOWN_LINES {
                lines.shown.push(cut(line));
            }
            lines.total += 1;
        }
        lines
    }
}

fn cut(line: String) -> String {
    match line.char_indices().nth(LINE_CHARS) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// A state change the watcher logged, kept for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub at: SystemTime,
    /// Logged as a warning (a failure), not as information.
    pub warning: bool,
    pub what: String,
}

/// With COUCHDB_BACKUP_URL: how far the backup is behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupLag {
    /// Databases without a replication writing into the backup, or without the database there.
    pub unreplicated: usize,
    /// Documents (live and deleted) the backup lacks, over every database, by count.
    pub docs_behind: u64,
    /// What `status` calls not in place (no working replication, a job crashing or failed,
    /// `_security` differing), one line per database.
    pub not_in_place: Lines,
}

/// What the server thread reads and the watch loop writes.
#[derive(Debug)]
pub struct Shared {
    pub interval: Duration,
    /// The longest a tick may take: its deadline and one request.
    pub tick_limit: Duration,
    pub started: Instant,
    pub started_at: SystemTime,
    /// The last look that succeeded; `None` after a failed one (the cluster is then not healthy).
    pub snapshot: Option<Snapshot>,
    pub ticks: u64,
    pub errors: u64,
    /// When the last tick (successful or not) finished.
    pub last_tick: Option<(Instant, SystemTime)>,
    /// When the tick under way started.
    pub tick_started: Option<Instant>,
    /// Why the last look failed, when it did (`snapshot` is then `None`).
    pub look_error: Option<String>,
    /// The last `CHANGES` state changes logged, the newest first.
    pub changes: VecDeque<Change>,
}

impl Shared {
    pub fn new(interval: Duration, tick_limit: Duration) -> Shared {
        Shared {
            interval,
            tick_limit,
            started: Instant::now(),
            started_at: SystemTime::now(),
            snapshot: None,
            ticks: 0,
            errors: 0,
            last_tick: None,
            tick_started: None,
            look_error: None,
            changes: VecDeque::new(),
        }
    }

    /// Keeps a logged change for the page; the oldest goes beyond `CHANGES`.
    pub fn record(&mut self, at: SystemTime, warning: bool, what: &str) {
        self.changes.push_front(Change {
            at,
            warning,
            what: cut(what.to_string()),
        });
        self.changes.truncate(CHANGES);
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

/// The `/metrics` page at `now` (`couchdb_watch_live` is `/healthz`'s answer then).
pub fn render(s: &Shared, now: Instant) -> String {
    let mut out = String::new();
    let snap = s.snapshot.as_ref();
    gauge(
        &mut out,
        "couchdb_cluster_healthy",
        "1 when the cluster passes `couchdb-cluster-init check`, else 0 (also when no node answers)",
        Some(u64::from(snap.is_some_and(|s| s.healthy))),
    );
    let counts: [Count; 5] = [
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
        (
            "couchdb_cluster_ranges_zone_shared",
            "shard ranges with more copies in one zone than the zones require (a lost zone takes more than one)",
            |s| s.ranges_zone_shared,
        ),
    ];
    for (name, help, value) in counts {
        gauge(&mut out, name, help, snap.map(|s| value(s) as u64));
    }
    if let Some(snap) = snap {
        labelled(
            &mut out,
            "couchdb_node_up",
            "1 while a member is connected and answers, in maintenance mode too (drained is not down), else 0",
            "node",
            snap.nodes
                .iter()
                .filter(|n| n.member)
                .filter_map(|n| Some((n.name.as_ref()?, u64::from(n.up)))),
        );
        labelled(
            &mut out,
            "couchdb_node_copies",
            "shard copies the shard maps put on a node",
            "node",
            snap.copies.iter().map(|(k, v)| (k, *v as u64)),
        );
        if !snap.zones.is_empty() {
            info(
                &mut out,
                "couchdb_node_zone_info",
                "the zone of a member's _nodes doc, 1 per member with one",
                "zone",
                &snap.zones,
            );
        }
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
        if let Some(kinds) = &snap.security {
            gauge(
                &mut out,
                "couchdb_security_findings",
                "findings of `status`'s security section (what is exposed; see docs/operations.md)",
                Some(kinds.len() as u64),
            );
            let one: BTreeMap<String, u64> = kinds.iter().map(|k| (k.clone(), 1)).collect();
            if !one.is_empty() {
                labelled(
                    &mut out,
                    "couchdb_security_finding",
                    "1 for each kind of security finding present",
                    "kind",
                    one.iter().map(|(k, v)| (k, *v)),
                );
            }
        }
        if !snap.versions.is_empty() {
            info(
                &mut out,
                "couchdb_node_version_info",
                "the CouchDB release a node runs (GET /)",
                "version",
                &snap.versions,
            );
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
        if snap.backup.is_some() || snap.backup_error.is_some() {
            gauge(
                &mut out,
                "couchdb_backup_failing",
                "1 when the backup could not be looked at or put in place, or a database's backup is not \
                 in place (what `status` exits 11 for), else 0",
                Some(u64::from(
                    snap.backup_error.is_some()
                        || snap.backup.as_ref().is_some_and(|b| b.not_in_place.total > 0),
                )),
            );
        }
    }
    if let Some((_, at)) = s.last_tick {
        seconds(
            &mut out,
            "couchdb_watch_last_tick_timestamp_seconds",
            "when the watcher last finished a look",
            unix(at),
        );
    }
    seconds(
        &mut out,
        "couchdb_watch_started_timestamp_seconds",
        "when the watcher started (its looks are counted from here until the first finishes)",
        unix(s.started_at),
    );
    seconds(
        &mut out,
        "couchdb_watch_interval_seconds",
        "COUCHDB_WATCH_INTERVAL: how often the watcher looks",
        s.interval.as_secs_f64(),
    );
    // The stuck-watcher alert reads this, so that it and /healthz (Kubernetes' liveness probe)
    // judge by one rule: a look under way within its deadline is not stuck, however slow.
    gauge(
        &mut out,
        "couchdb_watch_live",
        "1 while /healthz answers 200: a look finished within three intervals, or the one under way is within its deadline; else 0",
        Some(u64::from(s.live(now))),
    );
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

fn seconds(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value:.3}\n"
    );
}

/// Seconds since the Unix epoch (0 for a clock set before it).
pub fn unix(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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

/// An info gauge: `name{node="…",label="…"} 1` per node, the value its label.
fn info(out: &mut String, name: &str, help: &str, label: &str, of: &BTreeMap<String, String>) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
    for (node, value) in of {
        let _ = writeln!(
            out,
            "{name}{{node=\"{}\",{label}=\"{}\"}} 1",
            escape(node),
            escape(value)
        );
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
        let page = render(&s, Instant::now());
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
            zones: [("couchdb@a.b".to_string(), "eu-west-1a".to_string())].into(),
            ranges_zone_shared: 2,
            backup: Some(BackupLag {
                unreplicated: 1,
                docs_behind: 7,
                ..BackupLag::default()
            }),
            security: Some(vec!["cookie_weak".into(), "db_public".into()]),
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
        let page = render(&s, Instant::now());
        for line in [
            "couchdb_cluster_healthy 1",
            "couchdb_cluster_members 3",
            "couchdb_cluster_ranges_below_n 0",
            "couchdb_node_copies{node=\"couchdb@a.b\"} 4",
            "couchdb_database_ranges_below_n{db=\"we\\\"ird\\\\db\\n\"} 1",
            "couchdb_backup_docs_behind 7",
            "couchdb_node_zone_info{node=\"couchdb@a.b\",zone=\"eu-west-1a\"} 1",
            "couchdb_cluster_ranges_zone_shared 2",
            "couchdb_security_findings 2",
            "couchdb_security_finding{kind=\"db_public\"} 1",
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
    fn a_drained_member_is_up_a_stopped_one_is_not_and_other_nodes_are_no_members() {
        let mut s = shared();
        let row = |name: &str, member: bool, up: bool, maintenance: Option<&str>| NodeRow {
            name: Some(name.into()),
            member,
            connected: up,
            up,
            maintenance: maintenance.map(String::from),
            ..NodeRow::default()
        };
        s.snapshot = Some(Snapshot {
            nodes: vec![
                row("couchdb@a", true, true, None),
                row("couchdb@b", true, true, Some("nolb")),
                row("couchdb@c", true, false, None),
                row("couchdb@new", false, true, None),
            ],
            backup_error: Some("the backup CouchDB b does not answer".into()),
            ..Snapshot::default()
        });
        let page = render(&s, Instant::now());
        for line in [
            "couchdb_node_up{node=\"couchdb@a\"} 1",
            "couchdb_node_up{node=\"couchdb@b\"} 1",
            "couchdb_node_up{node=\"couchdb@c\"} 0",
            "couchdb_backup_failing 1",
            "couchdb_watch_interval_seconds 15.000",
        ] {
            assert!(page.lines().any(|l| l == line), "no `{line}` in\n{page}");
        }
        assert!(!page.contains("couchdb@new"), "{page}");
        assert!(page.contains("\ncouchdb_watch_started_timestamp_seconds "));
        s.snapshot = Some(Snapshot {
            backup: Some(BackupLag::default()),
            ..Snapshot::default()
        });
        assert!(render(&s, Instant::now())
            .lines()
            .any(|l| l == "couchdb_backup_failing 0"));
        s.snapshot = Some(Snapshot::default());
        assert!(
            !render(&s, Instant::now()).contains("couchdb_backup_failing"),
            "no backup: no series"
        );
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
        // The stuck-watcher alert reads the same answer.
        let live = |s: &Shared, secs| render(s, t0 + Duration::from_secs(secs));
        assert!(live(&s, 300).lines().any(|l| l == "couchdb_watch_live 1"));
        assert!(live(&s, 341).lines().any(|l| l == "couchdb_watch_live 0"));
        s.tick_started = None;
        s.last_tick = Some((t0 + Duration::from_secs(100), SystemTime::now()));
        assert!(s.live(t0 + Duration::from_secs(140)));
        assert!(!s.live(t0 + Duration::from_secs(146)));
    }
}
