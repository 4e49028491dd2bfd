//! What one node's replicator does with the `_replicator` docs it owns, as a pure step over
//! its state (after `couch_replicator_doc_processor` and `couch_replicator_scheduler`): a new
//! doc is `initializing`, then its job is added and started; a second doc for a replication
//! that already runs fails; a deleted doc stops its job; a crashed run leaves its job
//! `crashing` until a scheduler tick after its backoff starts it again. The step returns what
//! the caller must do (start or stop a run, mark a doc failed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::jobs::{DocEntry, Job, Phase, ReplState, RunHandle, Stats};
use super::repdoc::{self, Rep};
use super::scheduler::{self, Event, History};
use crate::spec::Delays;

/// A live `_replicator` doc this node owns.
#[derive(Debug, Clone)]
pub struct OwnedDoc {
    pub id: String,
    pub rev: String,
    pub body: Map<String, Value>,
}

/// A run to start: job `rep_id` (a thread running `worker::run`).
#[derive(Debug)]
pub struct Spawn {
    pub rep_id: String,
    pub rep: Rep,
    /// The counters of the job's earlier runs.
    pub carried: Option<Stats>,
    pub run: RunHandle,
}

/// What the caller does after a step.
#[derive(Debug)]
pub enum Effect {
    Spawn(Box<Spawn>),
    /// Stop a run: its thread sees the flag and ends.
    Halt(RunHandle),
    /// Write `_replication_state: failed` and the reason into the doc (rev `rev`).
    MarkFailed {
        doc_id: String,
        rev: String,
        reason: String,
    },
    /// A one-shot job is done: `_replication_state: completed` and its stats go into the doc.
    MarkCompleted {
        doc_id: String,
        rev: String,
        stats: Box<Stats>,
        start_time: Duration,
    },
}

/// Now, twice: for deadlines and for what is shown.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    pub wall: Duration,
}

/// Whether the cluster is stable for the replicator (`mem3_cluster`): no node connected or
/// left for `repl_start_period` during the first `repl_quiet_period` after boot, for
/// `repl_quiet_period` afterwards.
pub fn stable(booted: Instant, last_change: Instant, now: Instant, d: &Delays) -> bool {
    let period = if now.saturating_duration_since(booted) > d.repl_quiet_period {
        d.repl_quiet_period
    } else {
        d.repl_start_period
    };
    now.saturating_duration_since(last_change) >= period
}

/// One step. `owned` is `None` while the cluster is unstable: docs are then neither taken
/// nor dropped, but jobs go on (and crashed ones restart on the scheduler's ticks).
pub fn step(
    st: &mut ReplState,
    owned: Option<&[OwnedDoc]>,
    server_uuid: &str,
    clock: Clock,
    d: &Delays,
) -> Vec<Effect> {
    let mut fx = Vec::new();
    if let Some(docs) = owned {
        take_docs(st, docs, server_uuid, clock, d, &mut fx);
    }
    advance_docs(st, clock, &mut fx);
    harvest_runs(st, clock, d, &mut fx);
    if clock.wall >= *st.next_tick.get_or_insert(clock.wall + d.repl_interval) {
        restart_crashed(st, clock, d, &mut fx);
        st.next_tick = Some(scheduler::next_tick(
            st.next_tick.unwrap_or(clock.wall),
            d.repl_interval,
            clock.wall,
        ));
    }
    fx
}

/// New and changed docs get an entry; gone ones lose theirs (and their job).
fn take_docs(
    st: &mut ReplState,
    docs: &[OwnedDoc],
    uuid: &str,
    clock: Clock,
    d: &Delays,
    fx: &mut Vec<Effect>,
) {
    let current: BTreeMap<&str, &OwnedDoc> = docs
        .iter()
        .filter(|o| {
            !matches!(
                o.body.get("_replication_state").and_then(Value::as_str),
                Some("failed" | "completed")
            )
        })
        .map(|o| (o.id.as_str(), o))
        .collect();
    let stale: Vec<String> = st
        .docs
        .iter()
        .filter(|(_, e)| !matches!(e.phase, Phase::Completed { .. }))
        .filter(|(id, e)| current.get(id.as_str()).is_none_or(|o| o.rev != e.rev))
        .map(|(id, _)| id.clone())
        .collect();
    for id in stale {
        drop_doc(st, &id, fx);
    }
    for o in current.into_values() {
        if st.docs.contains_key(&o.id) {
            continue;
        }
        let rep = match repdoc::parse(&o.body) {
            Ok(r) => r,
            Err(reason) => {
                fx.push(Effect::MarkFailed {
                    doc_id: o.id.clone(),
                    rev: o.rev.clone(),
                    reason,
                });
                continue;
            }
        };
        let rep_id = repdoc::rep_id(uuid, &rep);
        let phase = match st.jobs.get(&rep_id) {
            Some(other) => Phase::Duplicate {
                until: clock.now + d.repl_duplicate,
                reason: format!(
                    "Replication `{rep_id}` specified by document `{}` already started, \
                     triggered by document `{}` from db `_replicator`",
                    o.id, other.doc_id
                ),
            },
            None => Phase::Initializing {
                until: clock.now + d.repl_job_add,
            },
        };
        st.docs.insert(
            o.id.clone(),
            DocEntry {
                doc_id: o.id.clone(),
                rev: o.rev.clone(),
                rep,
                rep_id,
                phase,
                seen_at: clock.wall,
            },
        );
    }
}

/// Forgets a doc; if its job is this doc's, the job goes too (its run is stopped).
fn drop_doc(st: &mut ReplState, id: &str, fx: &mut Vec<Effect>) {
    let Some(e) = st.docs.remove(id) else {
        return;
    };
    if let Phase::Scheduled(rep_id) = e.phase {
        if st.jobs.get(&rep_id).is_some_and(|j| j.doc_id == id) {
            if let Some(job) = st.jobs.remove(&rep_id) {
                if let Some((_, run)) = job.pid {
                    fx.push(Effect::Halt(run));
                }
            }
        }
    }
}

/// Due `initializing` docs get their job (started at once); due duplicates fail.
fn advance_docs(st: &mut ReplState, clock: Clock, fx: &mut Vec<Effect>) {
    let due: Vec<String> = st
        .docs
        .iter()
        .filter(|(_, e)| match &e.phase {
            Phase::Initializing { until }
            | Phase::Duplicate { until, .. }
            | Phase::Completed { until, .. } => clock.now >= *until,
            Phase::Scheduled(_) => false,
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in due {
        let Some(e) = st.docs.get_mut(&id) else {
            continue;
        };
        match e.phase.clone() {
            Phase::Completed { .. } => {
                st.docs.remove(&id);
            }
            Phase::Duplicate { reason, .. } => {
                fx.push(Effect::MarkFailed {
                    doc_id: id.clone(),
                    rev: e.rev.clone(),
                    reason,
                });
                st.docs.remove(&id);
            }
            Phase::Initializing { .. } if st.jobs.contains_key(&e.rep_id) => {
                // Another doc's job took the id meanwhile: a duplicate after all.
                e.phase = Phase::Duplicate {
                    until: clock.now,
                    reason: format!(
                        "Replication `{}` specified by document `{id}` already started, \
                         triggered by document `{}` from db `_replicator`",
                        e.rep_id, st.jobs[&e.rep_id].doc_id
                    ),
                };
            }
            Phase::Initializing { .. } => {
                let mut job = Job {
                    id: e.rep_id.clone(),
                    doc_id: id.clone(),
                    rep: e.rep.clone(),
                    history: History::added(clock.wall),
                    pid: None,
                    stats: None,
                    start_time: clock.wall,
                };
                e.phase = Phase::Scheduled(e.rep_id.clone());
                fx.push(start(&mut job, &mut st.next_pid, clock));
                st.jobs.insert(job.id.clone(), job);
            }
            Phase::Scheduled(_) => {}
        }
    }
}

fn start(job: &mut Job, next_pid: &mut u64, clock: Clock) -> Effect {
    let run = RunHandle::default();
    // a restarted job shows its counters at once (`changes_pending` 0 until its first batch)
    run.progress.lock().unwrap_or_else(|e| e.into_inner()).stats =
        job.stats.clone().map(|s| Stats {
            changes_pending: Some(0),
            ..s
        });
    *next_pid += 1;
    job.pid = Some((1100 + 17 * *next_pid, run.clone()));
    job.history.push(clock.wall, Event::Started);
    Effect::Spawn(Box::new(Spawn {
        rep_id: job.id.clone(),
        rep: job.rep.clone(),
        carried: job.stats.clone(),
        run,
    }))
}

/// Runs that crashed leave their job without a process, the crash in its history.
fn harvest_runs(st: &mut ReplState, clock: Clock, d: &Delays, fx: &mut Vec<Effect>) {
    let done: Vec<String> = st
        .jobs
        .iter()
        .filter(|(_, j)| {
            j.pid.as_ref().is_some_and(|(_, run)| {
                run.progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .completed
            })
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in done {
        let Some(job) = st.jobs.remove(&id) else {
            continue;
        };
        let stats = job.current_stats().unwrap_or_default();
        if let Some(e) = st.docs.get_mut(&job.doc_id) {
            fx.push(Effect::MarkCompleted {
                doc_id: job.doc_id.clone(),
                rev: e.rev.clone(),
                stats: Box::new(stats.clone()),
                start_time: job.start_time,
            });
            e.phase = Phase::Completed {
                until: clock.now + d.repl_completed,
                stats,
                start_time: job.start_time,
                done_at: clock.wall,
            };
        }
    }
    for job in st.jobs.values_mut() {
        let crashed = job.pid.as_ref().and_then(|(_, run)| {
            let p = run.progress.lock().unwrap_or_else(|e| e.into_inner());
            p.crash.clone().map(|reason| (reason, p.stats.clone()))
        });
        if let Some((reason, stats)) = crashed {
            job.pid = None;
            if stats.is_some() {
                job.stats = stats;
            }
            job.history.push(clock.wall, Event::Crashed(reason));
        }
    }
}

/// The scheduler's tick: jobs without a process whose backoff has passed start again.
fn restart_crashed(st: &mut ReplState, clock: Clock, d: &Delays, fx: &mut Vec<Effect>) {
    let ReplState { jobs, next_pid, .. } = st;
    for job in jobs.values_mut() {
        if job.pid.is_none()
            && job
                .history
                .may_start(clock.wall, d.repl_backoff, d.repl_health)
        {
            fx.push(start(job, next_pid, clock));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::scheduler::State;
    use serde_json::json;

    const UUID: &str = "fb2b1ef6a8a3e0b5b0c1a7d1e0f3c9a1";

    fn delays() -> Delays {
        Delays::default()
    }

    fn doc(id: &str, rev: &str) -> OwnedDoc {
        let body = json!({
            "source": {"url": "http://127.0.0.1:15984/app",
                       "auth": {"basic": {"username": "admin", "password": "password"}}},
            "target": {"url": "http://127.0.0.1:55984/app_backup",
                       "auth": {"basic": {"username": "admin", "password": "password"}}},
            "continuous": true,
            "owner": "admin"
        });
        OwnedDoc {
            id: id.into(),
            rev: rev.into(),
            body: body.as_object().cloned().unwrap(),
        }
    }

    /// A clock that starts at 13:05:03 on the recorded day and moves by hand.
    struct Time {
        t0: Instant,
        offset: Duration,
    }

    impl Time {
        fn new() -> Time {
            Time {
                t0: Instant::now(),
                offset: Duration::ZERO,
            }
        }
        fn at(&mut self, secs: f64) -> Clock {
            self.offset = Duration::from_secs_f64(secs);
            Clock {
                now: self.t0 + self.offset,
                wall: Duration::from_secs(1_795_525_503) + self.offset,
            }
        }
    }

    fn spawned(fx: &[Effect]) -> Vec<RunHandle> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Spawn(s) => Some(s.run.clone()),
                _ => None,
            })
            .collect()
    }

    fn crash(run: &RunHandle, why: &str) {
        run.progress.lock().unwrap().crash = Some(why.into());
    }

    #[test]
    fn a_doc_initializes_then_runs() {
        let (mut st, mut t, d) = (ReplState::default(), Time::new(), delays());
        let docs = [doc("backup", "1-a")];
        assert!(step(&mut st, Some(&docs), UUID, t.at(0.0), &d).is_empty());
        assert!(matches!(
            st.docs["backup"].phase,
            Phase::Initializing { .. }
        ));
        assert!(spawned(&step(&mut st, Some(&docs), UUID, t.at(0.05), &d)).is_empty());
        let fx = step(&mut st, Some(&docs), UUID, t.at(0.11), &d);
        assert_eq!(spawned(&fx).len(), 1);
        let job = st.jobs.values().next().unwrap();
        assert_eq!(job.doc_id, "backup");
        assert_eq!(job.state(d.repl_health), State::Running);
        assert_eq!(job.history.events().len(), 2);
        // the same rev again changes nothing
        assert!(step(&mut st, Some(&docs), UUID, t.at(0.2), &d).is_empty());
    }

    #[test]
    fn while_unstable_new_docs_wait() {
        let (mut st, mut t, d) = (ReplState::default(), Time::new(), delays());
        assert!(step(&mut st, None, UUID, t.at(0.0), &d).is_empty());
        assert!(st.docs.is_empty());
    }

    #[test]
    fn crashes_restart_on_ticks_after_their_backoff() {
        let (mut st, mut t, d) = (ReplState::default(), Time::new(), delays());
        let docs = [doc("backup", "1-a")];
        step(&mut st, Some(&docs), UUID, t.at(0.0), &d);
        let run = spawned(&step(&mut st, Some(&docs), UUID, t.at(0.2), &d)).remove(0);
        crash(&run, "Failure on target commit");
        step(&mut st, Some(&docs), UUID, t.at(39.0), &d);
        let job = st.jobs.values().next().unwrap();
        assert_eq!(job.state(d.repl_health), State::Crashing);
        assert_eq!(job.history.consecutive_crashes(d.repl_health), 1);
        // the tick at +60 s comes 21 s after the crash: too early
        assert!(spawned(&step(&mut st, Some(&docs), UUID, t.at(60.0), &d)).is_empty());
        assert!(spawned(&step(&mut st, Some(&docs), UUID, t.at(100.0), &d)).is_empty());
        let again = spawned(&step(&mut st, Some(&docs), UUID, t.at(120.0), &d));
        assert_eq!(again.len(), 1, "restarted on the tick at +120 s");
        let job = st.jobs.values().next().unwrap();
        assert_eq!(job.state(d.repl_health), State::Running);
        assert_eq!(job.history.consecutive_crashes(d.repl_health), 1);
    }

    #[test]
    fn a_second_doc_for_the_same_replication_fails() {
        let (mut st, mut t, d) = (ReplState::default(), Time::new(), delays());
        let mut docs = vec![doc("backup", "1-a")];
        step(&mut st, Some(&docs), UUID, t.at(0.0), &d);
        step(&mut st, Some(&docs), UUID, t.at(0.2), &d);
        docs.push(doc("backup-again", "1-a"));
        assert!(step(&mut st, Some(&docs), UUID, t.at(1.0), &d).is_empty());
        assert!(matches!(
            st.docs["backup-again"].phase,
            Phase::Duplicate { .. }
        ));
        let fx = step(&mut st, Some(&docs), UUID, t.at(1.5), &d);
        let [Effect::MarkFailed {
            doc_id,
            rev,
            reason,
        }] = fx.as_slice()
        else {
            panic!("{fx:?}");
        };
        assert_eq!((doc_id.as_str(), rev.as_str()), ("backup-again", "1-a"));
        assert!(reason.starts_with("Replication `"), "{reason}");
        assert!(reason.ends_with(
            "` specified by document `backup-again` already started, triggered by document \
             `backup` from db `_replicator`"
        ));
        assert!(!st.docs.contains_key("backup-again"));
        // once marked failed (rev 2) it is left alone
        let mut failed = doc("backup-again", "2-b");
        failed
            .body
            .insert("_replication_state".into(), json!("failed"));
        docs[1] = failed;
        assert!(step(&mut st, Some(&docs), UUID, t.at(2.0), &d).is_empty());
        assert_eq!(st.jobs.len(), 1);
    }

    #[test]
    fn deleting_the_doc_stops_its_job() {
        let (mut st, mut t, d) = (ReplState::default(), Time::new(), delays());
        let docs = [doc("backup", "1-a")];
        step(&mut st, Some(&docs), UUID, t.at(0.0), &d);
        step(&mut st, Some(&docs), UUID, t.at(0.2), &d);
        let fx = step(&mut st, Some(&[]), UUID, t.at(1.0), &d);
        assert!(matches!(fx.as_slice(), [Effect::Halt(_)]), "{fx:?}");
        assert!(st.jobs.is_empty() && st.docs.is_empty());
    }

    #[test]
    fn stability_periods() {
        let d = delays();
        let boot = Instant::now();
        let s = |secs: f64| boot + Duration::from_secs_f64(secs);
        assert!(!stable(boot, s(1.0), s(5.9), &d));
        assert!(
            stable(boot, s(1.0), s(6.0), &d),
            "5 s after the last change, early on"
        );
        assert!(!stable(boot, s(100.0), s(159.0), &d), "60 s later on");
        assert!(stable(boot, s(100.0), s(160.0), &d));
    }

    #[test]
    fn a_bad_doc_is_marked_failed() {
        let (mut st, mut t, d) = (ReplState::default(), Time::new(), delays());
        let mut bad = doc("local", "1-a");
        bad.body.insert("source".into(), json!("app"));
        let fx = step(&mut st, Some(&[bad]), UUID, t.at(0.0), &d);
        assert!(
            matches!(fx.as_slice(), [Effect::MarkFailed { reason, .. }] if reason == "local_endpoints_not_supported"),
            "{fx:?}"
        );
    }
}
