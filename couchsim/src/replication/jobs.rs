//! One node's replicator state (CouchDB keeps it in memory: lost when the node stops): the
//! `_replicator` docs this node owns and where each stands, the scheduler's jobs, and how
//! `/_scheduler/docs` and `/_scheduler/jobs` show them, in CouchDB's key order.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::repdoc::Rep;
use super::scheduler::{Event, History, State};
use crate::util::{iso8601, js, obj};

/// A job's counters (`info`), kept across the job's restarts as CouchDB does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub revisions_checked: u64,
    pub missing_revisions_found: u64,
    pub docs_read: u64,
    pub docs_written: u64,
    pub doc_write_failures: u64,
    /// Of `docs_read`, deletions (a one-shot session's `bulk_get_docs` leaves them out).
    pub deleted_read: u64,
    /// `null` while streaming; `0` right after a restart, before the first batch.
    pub changes_pending: Option<u64>,
    /// `"0"` until a checkpoint succeeded.
    pub checkpointed_source_seq: String,
    pub source_seq: String,
    pub through_seq: String,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            revisions_checked: 0,
            missing_revisions_found: 0,
            docs_read: 0,
            docs_written: 0,
            doc_write_failures: 0,
            deleted_read: 0,
            changes_pending: None,
            checkpointed_source_seq: "0".into(),
            source_seq: "0".into(),
            through_seq: "0".into(),
        }
    }
}

impl Stats {
    /// The counters every view shows, in CouchDB's order.
    fn counters(&self) -> Vec<(&'static str, String)> {
        let n = |v: u64| v.to_string();
        vec![
            ("revisions_checked", n(self.revisions_checked)),
            ("missing_revisions_found", n(self.missing_revisions_found)),
            ("docs_read", n(self.docs_read)),
            ("docs_written", n(self.docs_written)),
            ("changes_pending", js(&self.changes_pending)),
            ("doc_write_failures", n(self.doc_write_failures)),
            ("bulk_get_docs", n(self.docs_read)),
            ("bulk_get_attempts", n(self.docs_read)),
            ("checkpointed_source_seq", js(&self.checkpointed_source_seq)),
        ]
    }

    /// A completed one-shot's counters (`info`, and with `start_time` the doc's
    /// `_replication_stats`): no `source_seq`/`through_seq`.
    pub fn completed_info(&self, start_time: Option<Duration>) -> String {
        let mut f = self.counters();
        if let Some(t) = start_time {
            f.push(("start_time", js(&iso8601(t))));
        }
        obj(&f)
    }

    pub fn info(&self) -> String {
        let mut f = self.counters();
        f.push(("source_seq", js(&self.source_seq)));
        f.push(("through_seq", js(&self.through_seq)));
        obj(&f)
    }
}

/// What a job's running replication reports back; shared with its thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// `None` until the run reported (then `info` is `null`).
    pub stats: Option<Stats>,
    /// Set when the run ended in a crash: the reason shown.
    pub crash: Option<String>,
    /// A one-shot run that caught up with its source and checkpointed: done for good.
    pub completed: bool,
}

/// One run of a job: its counters and crash, and the flag that stops it.
#[derive(Debug, Clone, Default)]
pub struct RunHandle {
    pub progress: Arc<Mutex<Progress>>,
    pub stop: Arc<AtomicBool>,
}

/// One replication in the scheduler.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub doc_id: String,
    pub rep: Rep,
    pub history: History,
    /// `Some` while a run is under way (`pid` in `/_scheduler/jobs`).
    pub pid: Option<(u64, RunHandle)>,
    /// The counters of the runs so far.
    pub stats: Option<Stats>,
    /// When the job was added (`start_time`).
    pub start_time: Duration,
}

impl Job {
    pub fn state(&self, health: Duration) -> State {
        State::of(self.pid.is_some(), self.history.consecutive_crashes(health))
    }

    /// The counters to show: the running run's, else the job's.
    pub fn current_stats(&self) -> Option<Stats> {
        match &self.pid {
            Some((_, run)) => util_lock(&run.progress).stats.clone(),
            None => self.stats.clone(),
        }
    }
}

fn util_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where one `_replicator` doc this node owns stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Seen; its job is added at `until` (`initializing`).
    Initializing { until: Instant },
    /// Its replication already runs for another doc: marked `failed` at `until` (shown from
    /// the doc meanwhile).
    Duplicate { until: Instant, reason: String },
    /// Its job is in the scheduler.
    Scheduled(String),
    /// Its one-shot job completed (and the doc was marked so); shown as `completed` until
    /// `until`, then no longer held (the doc then shows `null`, as recorded in transcript 15).
    Completed {
        until: Instant,
        stats: Stats,
        start_time: Duration,
        done_at: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DocEntry {
    pub doc_id: String,
    /// The doc revision this entry is for (a new one is processed afresh).
    pub rev: String,
    pub rep: Rep,
    pub rep_id: String,
    pub phase: Phase,
    /// When this node took the doc (`initializing`'s timestamps).
    pub seen_at: Duration,
}

/// Everything one running node's replicator holds.
#[derive(Debug, Default)]
pub struct ReplState {
    pub docs: BTreeMap<String, DocEntry>,
    pub jobs: BTreeMap<String, Job>,
    /// The connected nodes last seen, and when that set last changed.
    pub members: Vec<String>,
    pub last_change: Option<Instant>,
    pub next_pid: u64,
    /// The scheduler's next tick (restarts of crashed jobs).
    pub next_tick: Option<Duration>,
}

/// `/_scheduler/docs/…` for a doc the scheduler does not hold, from the doc itself
/// (`couch_replicator:info_from_doc`): `state` null, or `failed` with its reason.
pub fn doc_from_db(
    doc_id: &str,
    source: &str,
    target: &str,
    failed: Option<(&str, &str)>,
) -> String {
    let (state, count, info, time) = match failed {
        Some((reason, at)) => (js("failed"), "1", obj(&[("error", js(reason))]), js(at)),
        None => ("null".into(), "0", "null".into(), "null".into()),
    };
    obj(&[
        ("database", js("_replicator")),
        ("doc_id", js(doc_id)),
        ("id", "null".into()),
        ("source", js(source)),
        ("target", js(target)),
        ("state", state),
        ("error_count", count.into()),
        ("info", info),
        ("start_time", time.clone()),
        ("last_updated", time),
    ])
}

/// A doc this node owns: `initializing`, or its job's state.
pub fn doc_json(
    node: &str,
    e: &DocEntry,
    jobs: &BTreeMap<String, Job>,
    health: Duration,
) -> String {
    let job = match &e.phase {
        Phase::Scheduled(id) => jobs.get(id),
        _ => None,
    };
    // A one-shot run that has ended, its doc not marked `completed` yet: the scheduler holds
    // no job for it and shows the doc as it shows one not taken (transcript 17, 130 ms).
    let ended = job.is_some_and(|j| {
        j.pid
            .as_ref()
            .is_some_and(|(_, run)| util_lock(&run.progress).completed)
    });
    let job = job.filter(|_| !ended);
    let Some(job) = job else {
        if ended {
            let (src, tgt) = (e.rep.source.shown_from_doc(), e.rep.target.shown_from_doc());
            return doc_from_db(&e.doc_id, &src, &tgt, None);
        }
        return match &e.phase {
            Phase::Completed {
                stats,
                start_time,
                done_at,
                ..
            } => obj(&[
                ("database", js("_replicator")),
                ("doc_id", js(&e.doc_id)),
                ("id", "null".into()),
                ("source", js(e.rep.source.shown())),
                ("target", js(e.rep.target.shown())),
                ("state", js("completed")),
                ("error_count", "0".into()),
                ("info", stats.completed_info(None)),
                ("start_time", js(&iso8601(*start_time))),
                ("last_updated", js(&iso8601(*done_at))),
            ]),
            Phase::Duplicate { .. } => {
                let (src, tgt) = (e.rep.source.shown_from_doc(), e.rep.target.shown_from_doc());
                doc_from_db(&e.doc_id, &src, &tgt, None)
            }
            _ => obj(&[
                ("database", js("_replicator")),
                ("doc_id", js(&e.doc_id)),
                ("id", "null".into()),
                ("state", js("initializing")),
                ("info", "null".into()),
                ("error_count", "0".into()),
                ("node", js(node)),
                ("last_updated", js(&iso8601(e.seen_at))),
                ("start_time", js(&iso8601(e.seen_at))),
            ]),
        };
    };
    let state = job.state(health);
    let info = match (state, job.history.latest_crash()) {
        (State::Crashing, Some((_, reason))) => obj(&[("error", js(reason))]),
        _ => job
            .current_stats()
            .map(|s| s.info())
            .unwrap_or("null".into()),
    };
    obj(&[
        ("database", js("_replicator")),
        ("doc_id", js(&job.doc_id)),
        ("id", js(&job.id)),
        ("node", js(node)),
        ("source", js(job.rep.source.shown())),
        ("target", js(job.rep.target.shown())),
        ("state", js(state.name())),
        ("info", info),
        (
            "error_count",
            job.history.consecutive_crashes(health).to_string(),
        ),
        ("last_updated", js(&iso8601(job.history.last_updated()))),
        ("start_time", js(&iso8601(job.start_time))),
        ("source_proxy", "null".into()),
        ("target_proxy", "null".into()),
    ])
}

/// One job in `/_scheduler/jobs`.
pub fn job_json(node: &str, job: &Job) -> String {
    let history: Vec<String> = job
        .history
        .events()
        .iter()
        .map(|(at, e)| {
            let mut f = vec![("timestamp", js(&iso8601(*at))), ("type", js(e.kind()))];
            if let Event::Crashed(reason) = e {
                f.push(("reason", js(reason)));
            }
            obj(&f)
        })
        .collect();
    let pid = match &job.pid {
        Some((n, _)) => js(&format!("<0.{n}.0>")),
        None => "null".into(),
    };
    obj(&[
        ("database", js("_replicator")),
        ("id", js(&job.id)),
        ("pid", pid),
        ("source", js(job.rep.source.shown())),
        ("target", js(job.rep.target.shown())),
        ("user", "null".into()),
        ("doc_id", js(&job.doc_id)),
        (
            "info",
            job.current_stats()
                .map(|s| s.info())
                .unwrap_or("null".into()),
        ),
        ("history", format!("[{}]", history.join(","))),
        ("node", js(node)),
        ("start_time", js(&iso8601(job.start_time))),
    ])
}

/// `{"total_rows":N,"offset":K,"<key>":[…]}` as CouchDB streams it (`rows`: one page).
pub fn listing(key: &str, total: usize, offset: usize, rows: &[String]) -> String {
    let head = format!("{{\"total_rows\":{total},\"offset\":{offset},\"{key}\":[");
    if key == "docs" {
        format!("{head}\n{}\n]}}", rows.join(",\n"))
    } else {
        format!("{head}{}]}}", rows.join(","))
    }
}

/// One replication as the in-process API shows it (`Node::replications`): a doc this node
/// owns and its job, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    pub doc_id: String,
    /// The replication id (`<32 hex>+continuous`).
    pub id: String,
    /// The node running it.
    pub node: String,
    /// `initializing`, `running`, `crashing` or `pending` (a doc that failed is no longer
    /// held: see `/_scheduler/docs`).
    pub state: String,
    pub error_count: u32,
    /// The newest crash's reason while `crashing`.
    pub error: Option<String>,
    pub docs_written: u64,
    /// The URLs without credentials.
    pub source: String,
    pub target: String,
}

impl ReplState {
    /// The docs this node owns and their jobs.
    pub fn replications(&self, node: &str, health: Duration) -> Vec<Replication> {
        self.docs
            .values()
            .filter(|e| !matches!(e.phase, Phase::Duplicate { .. }))
            .map(|e| {
                let job = self.jobs.get(&e.rep_id).filter(|j| j.doc_id == e.doc_id);
                let state = job.map(|j| j.state(health));
                Replication {
                    doc_id: e.doc_id.clone(),
                    id: e.rep_id.clone(),
                    node: node.to_string(),
                    state: state.map(State::name).unwrap_or("initializing").to_string(),
                    error_count: job
                        .map(|j| j.history.consecutive_crashes(health))
                        .unwrap_or(0),
                    error: job
                        .filter(|_| state == Some(State::Crashing))
                        .and_then(|j| j.history.latest_crash().map(|(_, r)| r.to_string())),
                    docs_written: job
                        .and_then(Job::current_stats)
                        .map(|s| s.docs_written)
                        .unwrap_or(0),
                    source: e.rep.source.shown().to_string(),
                    target: e.rep.target.shown().to_string(),
                }
            })
            .collect()
    }

    /// This node's docs, rendered (`doc id → JSON`).
    pub fn docs_json(&self, node: &str, health: Duration) -> BTreeMap<String, String> {
        self.docs
            .iter()
            .map(|(id, e)| (id.clone(), doc_json(node, e, &self.jobs, health)))
            .collect()
    }

    pub fn jobs_json(&self, node: &str) -> Vec<String> {
        self.jobs.values().map(|j| job_json(node, j)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::repdoc;
    use serde_json::json;

    const NODE3: &str = "node3@127.0.0.1";
    const ID: &str = "29fab4333eca910533b560a47ec4559e+continuous";
    const SEQ: &str = "105-g1AAAACTeJzLYWBgYMpgTmHgz8tPSTVyMDQy1zMAQsMckEQiQ1L9____szKYE_VygQLspmZpZolGRpjKcRqRxwIkGRqA1H-oSdYQk8yNDYyNTDF1ZQEAVa4kHA";
    const COMMIT: &str = "Failure on target commit: {'EXIT',\n    {http_request_failed,\"POST\",\n        \"http://127.0.0.1:55984/app_backup/_ensure_full_commit\",\n        {error,{error,{conn_failed,{error,econnrefused}}}}}}";
    /// 2026-11-24T13:05:03Z
    const T0: u64 = 1_795_525_503;

    fn at(s: u64) -> Duration {
        Duration::from_secs(T0 + s)
    }

    fn rep() -> Rep {
        let doc = json!({
            "source": {"url": "http://127.0.0.1:15984/app",
                       "auth": {"basic": {"username": "admin", "password": "password"}}},
            "target": {"url": "http://127.0.0.1:55984/app_backup",
                       "auth": {"basic": {"username": "admin", "password": "password"}}},
            "continuous": true
        });
        repdoc::parse(doc.as_object().unwrap()).unwrap()
    }

    /// The job of transcript 14 line 250: crashed at its first checkpoint, target down.
    fn crashed_job() -> Job {
        let mut history = History::added(at(0));
        history.push(at(0), Event::Started);
        history.push(at(39), Event::Crashed(COMMIT.into()));
        Job {
            id: ID.into(),
            doc_id: "backup".into(),
            rep: rep(),
            history,
            pid: None,
            stats: Some(Stats {
                revisions_checked: 105,
                missing_revisions_found: 105,
                docs_read: 105,
                docs_written: 105,
                changes_pending: Some(0),
                source_seq: SEQ.into(),
                through_seq: SEQ.into(),
                ..Stats::default()
            }),
            start_time: at(0),
        }
    }

    fn recorded(line: usize) -> &'static str {
        match line {
            19 => {
                r#"{"database":"_replicator","doc_id":"backup-missing-target","id":null,"source":"http://127.0.0.1:15984/app/","target":"http://127.0.0.1:55984/app_backup/","state":null,"error_count":0,"info":null,"start_time":null,"last_updated":null}"#
            }
            65 => {
                r#"{"database":"_replicator","doc_id":"backup","id":null,"state":"initializing","info":null,"error_count":0,"node":"node3@127.0.0.1","last_updated":"2026-11-24T13:05:03Z","start_time":"2026-11-24T13:05:03Z"}"#
            }
            449 => {
                r#"{"database":"_replicator","doc_id":"backup-again","id":null,"source":"http://127.0.0.1:15984/app/","target":"http://127.0.0.1:55984/app_backup/","state":"failed","error_count":1,"info":{"error":"Replication `29fab4333eca910533b560a47ec4559e+continuous` specified by document `backup-again` already started, triggered by document `backup` from db `_replicator`"},"start_time":"2026-11-24T13:06:59Z","last_updated":"2026-11-24T13:06:59Z"}"#
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn docs_from_the_db_as_recorded() {
        let r = rep();
        let (s, t) = (r.source.shown_from_doc(), r.target.shown_from_doc());
        assert_eq!(
            doc_from_db("backup-missing-target", &s, &t, None),
            recorded(19)
        );
        let reason = "Replication `29fab4333eca910533b560a47ec4559e+continuous` specified by document `backup-again` already started, triggered by document `backup` from db `_replicator`";
        assert_eq!(
            doc_from_db(
                "backup-again",
                &s,
                &t,
                Some((reason, "2026-11-24T13:06:59Z"))
            ),
            recorded(449)
        );
    }

    #[test]
    fn an_initializing_doc_as_recorded() {
        let e = DocEntry {
            doc_id: "backup".into(),
            rev: "1-x".into(),
            rep: rep(),
            rep_id: ID.into(),
            phase: Phase::Initializing {
                until: Instant::now(),
            },
            seen_at: at(0),
        };
        assert_eq!(
            doc_json(NODE3, &e, &BTreeMap::new(), Duration::from_secs(120)),
            recorded(65)
        );
    }

    #[test]
    fn a_crashed_job_as_recorded() {
        let job = crashed_job();
        let jobs = BTreeMap::from([(ID.to_string(), job)]);
        let text = listing("jobs", 1, 0, &[job_json(NODE3, &jobs[ID])]);
        let line_250 = format!(
            r#"{{"total_rows":1,"offset":0,"jobs":[{{"database":"_replicator","id":"{ID}","pid":null,"source":"http://127.0.0.1:15984/app/","target":"http://127.0.0.1:55984/app_backup/","user":null,"doc_id":"backup","info":{{"revisions_checked":105,"missing_revisions_found":105,"docs_read":105,"docs_written":105,"changes_pending":0,"doc_write_failures":0,"bulk_get_docs":105,"bulk_get_attempts":105,"checkpointed_source_seq":"0","source_seq":"{SEQ}","through_seq":"{SEQ}"}},"history":[{{"timestamp":"2026-11-24T13:05:42Z","type":"crashed","reason":{c}}},{{"timestamp":"2026-11-24T13:05:03Z","type":"started"}},{{"timestamp":"2026-11-24T13:05:03Z","type":"added"}}],"node":"node3@127.0.0.1","start_time":"2026-11-24T13:05:03Z"}}]}}"#,
            c = js(COMMIT)
        );
        assert_eq!(text, line_250);
        let e = DocEntry {
            doc_id: "backup".into(),
            rev: "1-x".into(),
            rep: rep(),
            rep_id: ID.into(),
            phase: Phase::Scheduled(ID.into()),
            seen_at: at(0),
        };
        let line_243 = format!(
            r#"{{"database":"_replicator","doc_id":"backup","id":"{ID}","node":"node3@127.0.0.1","source":"http://127.0.0.1:15984/app/","target":"http://127.0.0.1:55984/app_backup/","state":"crashing","info":{{"error":{c}}},"error_count":1,"last_updated":"2026-11-24T13:05:42Z","start_time":"2026-11-24T13:05:03Z","source_proxy":null,"target_proxy":null}}"#,
            c = js(COMMIT)
        );
        assert_eq!(
            doc_json(NODE3, &e, &jobs, Duration::from_secs(120)),
            line_243
        );
    }

    #[test]
    fn a_running_job_shows_its_runs_counters_and_a_pid() {
        let mut job = crashed_job();
        job.history.push(at(112), Event::Started);
        let run = RunHandle::default();
        run.progress.lock().unwrap().stats = Some(Stats {
            revisions_checked: 211,
            ..Stats::default()
        });
        job.pid = Some((2833, run));
        assert_eq!(job.state(Duration::from_secs(120)), State::Running);
        let text = job_json(NODE3, &job);
        assert!(text.contains(r#""pid":"<0.2833.0>""#), "{text}");
        assert!(text.contains(r#""revisions_checked":211"#), "{text}");
        assert!(
            text.contains(r#""history":[{"timestamp":"2026-11-24T13:06:55Z","type":"started"}"#)
        );
        assert_eq!(
            listing("docs", 0, 0, &[]),
            "{\"total_rows\":0,\"offset\":0,\"docs\":[\n\n]}"
        );
        assert_eq!(
            listing("jobs", 0, 0, &[]),
            r#"{"total_rows":0,"offset":0,"jobs":[]}"#
        );
    }
}
