//! What a backup run (or `status`) found, per database, and what it means for the operator:
//! documents on both sides and the lag, the doc that replicates it and its state, when CouchDB
//! will retry a crashed job (trap 18), and the verdict — judged by documents first (trap 17).

use serde_json::Value;

use crate::client::SchedulerDoc;
use crate::util::config::NodeAddr;

/// CouchDB's restart rule for a crashed replication job (`couch_replicator_scheduler.erl`):
/// 30 s × 2^(crashes−1), the exponent capped at 10, applied on the scheduler's 60 s tick.
const RETRY_BASE_SECS: u64 = 30;
const RETRY_MAX_EXPONENT: u64 = 10;
const SCHEDULER_TICK_SECS: u64 = 60;

/// The `_replicator` doc id of a database's backup: the same on every run, so a rerun finds it
/// and CouchDB answers 409 to a second write of it.
pub fn doc_id(db: &str) -> String {
    format!("backup:{db}")
}

/// One database's backup, as read.
#[derive(Debug, Clone)]
pub struct DbBackup {
    pub db: String,
    /// The doc replicating into the backup's database: ours or another.
    pub doc: Option<SchedulerDoc>,
    /// Our doc, replicating somewhere else than COUCHDB_BACKUP_URL.
    pub elsewhere: Option<SchedulerDoc>,
    /// Documents, live and deleted, on the cluster and on the backup; `None`: no such database.
    pub source: Option<u64>,
    pub target: Option<u64>,
    /// Each side's `_security` (replication never carries it, trap 24); `None`: no such
    /// database, or not read yet.
    pub source_security: Option<Value>,
    pub target_security: Option<Value>,
}

impl DbBackup {
    /// Documents the backup still lacks, by count.
    pub fn lag(&self) -> Option<u64> {
        Some(self.source?.saturating_sub(self.target?))
    }

    /// Is the doc replicating this database ours (`backup:<db>`)?
    pub(super) fn by_us(&self) -> bool {
        self.doc
            .as_ref()
            .is_some_and(|doc| doc.doc_id == doc_id(&self.db))
    }

    pub(super) fn caught_up(&self) -> bool {
        self.lag() == Some(0)
    }

    /// Both databases exist and their `_security` objects differ (or the backup's is unread).
    pub fn security_differs(&self) -> bool {
        self.source_security.is_some()
            && self.target.is_some()
            && self.target_security != self.source_security
    }

    /// The replication's state, in words: CouchDB's, or why there is none.
    pub fn state(&self) -> &str {
        match &self.doc {
            None => "no replication",
            Some(d) => d
                .state
                .as_deref()
                .unwrap_or("not yet seen by the scheduler"),
        }
    }

    /// `app: 12 of 105 documents on the backup, crashing (…)`.
    pub fn line(&self) -> String {
        let counts = match (self.source, self.target) {
            (Some(s), Some(t)) => format!("{t} of {s} documents on the backup"),
            (Some(s), None) => format!("0 of {s} documents, no database on the backup"),
            (None, _) => "gone from the cluster".to_string(),
        };
        let mut line = format!("{}: {counts}, {}", self.db, self.state());
        if self.security_differs() {
            line += ", _security differs on the backup";
        }
        if let Some(doc) = &self.doc {
            if !self.by_us() {
                line += &format!(" (doc `{}`, not ours)", doc.doc_id);
            }
            if let Some(error) = doc.error.as_ref().filter(|_| in_trouble(doc)) {
                line += &format!(": {error}; {}", expect_restart(doc));
            }
        }
        line
    }
}

/// The doc that replicates `db` to the backup — ours (`backup:<db>`), or else any doc writing
/// into that database — and ours when it writes somewhere else. Until the scheduler has read a
/// new doc its URLs may be empty: ours is still ours.
pub(super) fn find_doc(
    docs: &[SchedulerDoc],
    target: &NodeAddr,
    db: &str,
) -> (Option<SchedulerDoc>, Option<SchedulerDoc>) {
    let ours = docs.iter().find(|d| d.doc_id == doc_id(db));
    match ours {
        Some(d) if !d.target.is_empty() && !d.writes_to(target, db) => (None, Some(d.clone())),
        Some(d) => (Some(d.clone()), None),
        None => (docs.iter().find(|d| d.writes_to(target, db)).cloned(), None),
    }
}

/// Crashing and erroring jobs are retried by CouchDB; `failed` ones never are.
pub(super) fn in_trouble(doc: &SchedulerDoc) -> bool {
    matches!(doc.state.as_deref(), Some("crashing" | "error" | "failed"))
}

pub(super) fn failed(doc: &SchedulerDoc) -> bool {
    doc.state.as_deref() == Some("failed")
}

/// What `status` calls a backup not in place. It waits for nothing, so a lag alone is not: a
/// database with a live application always lags by its last few writes.
pub fn status_problems(dbs: &[DbBackup]) -> Vec<String> {
    dbs.iter()
        .filter(|d| d.source.is_some())
        .filter(|d| {
            d.elsewhere.is_some()
                || d.target.is_none()
                || d.doc.as_ref().is_none_or(in_trouble)
                || d.security_differs()
        })
        .map(DbBackup::line)
        .collect()
}

/// What the operator can expect of a crashed job (trap 18).
pub fn expect_restart(doc: &SchedulerDoc) -> String {
    if failed(doc) {
        return "failed for good: CouchDB never retries it; fix the cause, then delete its doc in _replicator and run again"
            .into();
    }
    let crashes = doc.error_count.max(1);
    let backoff = RETRY_BASE_SECS << (crashes - 1).min(RETRY_MAX_EXPONENT);
    format!(
        "crashed {crashes} time(s), last at {}: CouchDB restarts it {} after that \
         (30 s × 2^(crashes−1), on its 60 s tick), not sooner",
        doc.last_updated.as_deref().unwrap_or("an unknown time"),
        between(backoff, backoff + SCHEDULER_TICK_SECS)
    )
}

/// `30–90 s`, or `16–17 min` once seconds get hard to read.
fn between(low: u64, high: u64) -> String {
    if high < 300 {
        format!("{low}–{high} s")
    } else {
        format!("{}–{} min", low / 60, high.div_ceil(60))
    }
}

/// How the databases stand, in groups an operator reads at a glance.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Verdict {
    /// Replicated and caught up.
    pub(super) fine: Vec<String>,
    /// Backed up, with something to know: what, and the databases it concerns.
    pub(super) notes: Vec<(&'static str, Vec<String>)>,
    /// Not backed up, one line each.
    pub(super) problems: Vec<String>,
}

/// `progressed`: documents arrived during this run. A backup still copying at the deadline is
/// said to be so and is not a failure: the first copy of a large database may take longer than
/// any deadline. One that got nothing is.
pub(super) fn judge(
    dbs: &[DbBackup],
    progressed: &[bool],
    target: &NodeAddr,
    source: &NodeAddr,
) -> Verdict {
    let mut v = Verdict::default();
    let mut note =
        |what: &'static str, item: String| match v.notes.iter_mut().find(|(w, _)| *w == what) {
            Some((_, items)) => items.push(item),
            None => v.notes.push((what, vec![item])),
        };
    for (d, progressed) in dbs.iter().zip(progressed) {
        if let Some(ours) = &d.elsewhere {
            v.problems.push(format!(
                "{}: our doc `{}` in _replicator replicates to {}, not to COUCHDB_BACKUP_URL {}; delete \
                 that doc to move the backup, and run again",
                d.db, ours.doc_id, ours.target, target.label
            ));
            continue;
        }
        if d.source.is_none() {
            note("deleted from the cluster meanwhile", d.db.clone());
            continue;
        }
        if let Some(doc) = &d.doc {
            if !d.by_us() {
                note(
                    "already replicated to the backup by a doc of their own, not adding a second (CouchDB would fail it)",
                    format!("{} by `{}` from {}", d.db, doc.doc_id, doc.source),
                );
            } else if !doc.source.is_empty() && !doc.reads_from(source, &d.db) {
                note(
                    "replicated from another address than configured now (delete their docs and run again to switch)",
                    format!("{} from {}", d.db, doc.source),
                );
            }
        }
        match &d.doc {
            Some(doc) if failed(doc) => v.problems.push(d.line()),
            Some(doc) if d.caught_up() && in_trouble(doc) => {
                note("caught up for now, but their job is crashing", d.line())
            }
            _ if d.caught_up() => v.fine.push(d.db.clone()),
            Some(_) if *progressed => note("still copying at the deadline", d.line()),
            _ => v.problems.push(d.line()),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(state: Option<&str>, errors: u64) -> SchedulerDoc {
        SchedulerDoc {
            doc_id: "backup:app".into(),
            node: Some("node3@127.0.0.1".into()),
            source: "http://c:5984/app/".into(),
            target: "http://b:5984/app/".into(),
            state: state.map(str::to_string),
            error: (errors > 0).then(|| "db_not_found: could not open http://b:5984/app/".into()),
            error_count: errors,
            last_updated: Some("2026-11-24T13:05:42Z".into()),
        }
    }

    #[test]
    fn restarts_are_expected_after_the_backoff_and_the_tick() {
        let one = expect_restart(&doc(Some("crashing"), 1));
        assert!(
            one.contains("30–90 s") && one.contains("13:05:42Z"),
            "{one}"
        );
        assert!(expect_restart(&doc(Some("crashing"), 2)).contains("60–120 s"));
        assert!(expect_restart(&doc(Some("crashing"), 5)).contains("8–9 min"));
        assert!(expect_restart(&doc(Some("crashing"), 40)).contains("512–513 min"));
        assert!(expect_restart(&doc(Some("failed"), 1)).contains("never retries"));
    }

    fn addr(url: &str) -> NodeAddr {
        NodeAddr {
            label: url.trim_start_matches("http://").into(),
            url: url.into(),
        }
    }

    fn db(name: &str, doc: Option<SchedulerDoc>, source: u64, target: u64) -> DbBackup {
        DbBackup {
            db: name.into(),
            doc,
            elsewhere: None,
            source: Some(source),
            target: Some(target),
            source_security: None,
            target_security: None,
        }
    }

    #[test]
    fn judged_by_documents_first_then_by_state() {
        let (target, source) = (addr("http://b:5984"), addr("http://c:5984"));
        let mut other = doc(Some("running"), 0);
        other.doc_id = "mine".into();
        let mut moved = doc(Some("running"), 0);
        moved.source = "http://old:5984/app/".into();
        let dbs = vec![
            db("app", Some(doc(Some("running"), 0)), 10, 10),
            db("app", Some(doc(Some("crashing"), 1)), 10, 10),
            db("app", Some(doc(Some("crashing"), 1)), 10, 4),
            db("app", Some(doc(Some("running"), 0)), 10, 4),
            db("app", Some(doc(Some("failed"), 1)), 10, 10),
            db("app", Some(other), 3, 3),
            db("app", Some(moved), 3, 3),
            db("app", None, 5, 0),
        ];
        let progressed = [false, false, false, true, false, false, false, false];
        let v = judge(&dbs, &progressed, &target, &source);
        assert_eq!(v.fine, ["app", "app", "app"], "{v:?}");
        let notes: Vec<&str> = v.notes.iter().map(|(what, _)| *what).collect();
        assert_eq!(
            notes,
            [
                "caught up for now, but their job is crashing",
                "still copying at the deadline",
                "already replicated to the backup by a doc of their own, not adding a second (CouchDB would fail it)",
                "replicated from another address than configured now (delete their docs and run again to switch)",
            ]
        );
        assert_eq!(v.problems.len(), 3, "{v:?}");
        assert!(v.problems[0].contains("4 of 10 documents on the backup, crashing"));
        assert!(v.problems[1].contains("failed for good"));
        assert!(v.problems[2].contains("0 of 5 documents on the backup, no replication"));
    }

    #[test]
    fn our_doc_writing_elsewhere_is_a_problem_named_with_both_targets() {
        let node = addr("http://new:5984");
        let d = DbBackup {
            doc: None,
            elsewhere: Some(doc(Some("running"), 0)),
            ..db("app", None, 1, 1)
        };
        let v = judge(&[d], &[false], &node, &node);
        assert!(
            v.problems[0].contains("http://b:5984/app/") && v.problems[0].contains("new:5984"),
            "{v:?}"
        );
    }

    #[test]
    fn lag_and_lines_say_documents_and_state() {
        let d = DbBackup {
            db: "app".into(),
            doc: Some(doc(Some("crashing"), 1)),
            elsewhere: None,
            source: Some(106),
            target: Some(105),
            source_security: None,
            target_security: None,
        };
        assert_eq!(d.lag(), Some(1));
        let line = d.line();
        assert!(
            line.starts_with("app: 105 of 106 documents on the backup, crashing: db_not_found"),
            "{line}"
        );
        assert!(line.contains("30–90 s"), "{line}");
        let none = DbBackup {
            doc: None,
            target: None,
            ..d.clone()
        };
        assert_eq!(none.lag(), None);
        assert_eq!(
            none.line(),
            "app: 0 of 106 documents, no database on the backup, no replication"
        );
        let ahead = DbBackup {
            target: Some(200),
            ..d
        };
        assert_eq!(ahead.lag(), Some(0));
    }

    #[test]
    fn a_security_object_that_differs_is_not_backed_up() {
        let members = serde_json::json!({"members": {"names": ["alice"]}});
        let d = DbBackup {
            source_security: Some(members.clone()),
            target_security: Some(serde_json::json!({})),
            ..db("app", Some(doc(Some("running"), 0)), 3, 3)
        };
        assert!(
            d.line().ends_with("_security differs on the backup"),
            "{}",
            d.line()
        );
        assert_eq!(status_problems(std::slice::from_ref(&d)).len(), 1);
        let same = DbBackup {
            target_security: Some(members),
            ..d
        };
        assert!(status_problems(&[same]).is_empty());
    }
}
