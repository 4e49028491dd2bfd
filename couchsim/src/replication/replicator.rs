//! One node's replicator, run from its ticker (CouchDB's doc processor and scheduler): which
//! `_replicator` docs this node owns, a `docproc` step over them, the runs it starts
//! (`worker`, a thread each) and the `failed` state it writes into a doc. `/_scheduler/*`, which
//! shows what it holds, is `http/scheduler.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::docproc::{self, Clock, Effect, OwnedDoc, Spawn};
use super::jobs::ReplState;
use super::repdoc;
use super::worker;
use crate::cluster::copies::{self, Edit};
use crate::cluster::fabric;
use crate::node::ejson::Ej;
use crate::node::{lock, NodeInner};
use crate::util;

/// Where the documents this replicator acts on live.
pub const DB: &str = "_replicator";

/// One step of this node's replicator (called every `Delays::tick`).
pub fn tick(node: &Arc<NodeInner>, epoch: u64) {
    let now = Instant::now();
    let (live, _) = node.membership();
    let stable = {
        let mut v = lock(&node.vol);
        let booted = v.started_at;
        let st = v.repl.get::<ReplState>();
        if st.members != live {
            if !st.members.is_empty() {
                st.last_change = Some(now);
            }
            st.members = live.clone();
        }
        let last = st.last_change.unwrap_or(booted);
        docproc::stable(booted, last, now, &node.delays)
    };
    let owned = stable.then(|| owned_docs(node, &live));
    let uuid = node.config("couchdb", "uuid").unwrap_or_default();
    let clock = Clock {
        now,
        wall: util::unix_now(),
    };
    let effects = docproc::step(
        lock(&node.vol).repl.get::<ReplState>(),
        owned.as_deref(),
        &uuid,
        clock,
        &node.delays,
    );
    for e in effects {
        apply(node, epoch, e);
    }
}

/// The live docs of this node's `_replicator` copies whose owner (among the live holders of
/// their range) is this node.
fn owned_docs(node: &NodeInner, live: &[String]) -> Vec<OwnedDoc> {
    let st = lock(&node.store);
    let Some(m) = st.map(DB) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for range in m.ranges_on(&node.name) {
        let Some(file) = st.files.get(&m.file(DB, &range)) else {
            continue;
        };
        let holders: Vec<String> = m.by_range[&range]
            .iter()
            .filter(|h| live.contains(h))
            .cloned()
            .collect();
        for (id, d) in file.live() {
            if id.starts_with("_design/") || repdoc::owner(id, &holders) != Some(node.name.clone())
            {
                continue;
            }
            if let Value::Object(body) = d.winner().body.to_value() {
                out.push(OwnedDoc {
                    id: id.clone(),
                    rev: d.rev().to_string(),
                    body,
                });
            }
        }
    }
    out
}

/// `POST /_replicate` with a one-shot replication: run on the calling thread to its end, as
/// CouchDB answers it (transcript 15). `Ok` is the 200 body; `Err` is (status, error, reason).
pub fn replicate_now(
    node: &Arc<NodeInner>,
    epoch: u64,
    body: &serde_json::Map<String, Value>,
) -> Result<String, (u16, String, String)> {
    repdoc::validate(body).map_err(|r| (400, "bad_request".to_string(), r))?;
    let rep = repdoc::parse(body).map_err(|r| (400, "bad_request".to_string(), r))?;
    if rep.continuous {
        return Err((
            400,
            "bad_request".into(),
            "couchsim models only one-shot POST /_replicate".into(),
        ));
    }
    let uuid = node.config("couchdb", "uuid").unwrap_or_default();
    let rep_id = repdoc::rep_id(&uuid, &rep);
    let me = Arc::clone(node);
    let (lo, hi) = node.delays.repl_jitter;
    let jitter = lock(&node.rng).between(lo, hi);
    let ctx = worker::Ctx {
        rep,
        rep_id,
        delays: node.delays.clone(),
        jitter,
        carried: None,
        run: Default::default(),
        node_alive: Box::new(move || me.alive(epoch)),
    };
    let done = worker::run_once(ctx).map_err(|reason| {
        if let Some(r) = reason.strip_prefix("db_not_found: ") {
            (404, "db_not_found".to_string(), r.to_string())
        } else {
            (500, "error".to_string(), reason)
        }
    })?;
    let c = &done.checkpoint;
    let mut fields = vec![("ok", "true".to_string())];
    if done.no_changes {
        fields.push(("no_changes", "true".into()));
    }
    fields.push(("session_id", util::js(&c["session_id"])));
    fields.push(("source_last_seq", util::js(&c["source_last_seq"])));
    fields.push(("replication_id_version", "4".into()));
    fields.push(("history", util::js(&c["history"])));
    Ok(util::obj(&fields))
}

fn apply(node: &Arc<NodeInner>, epoch: u64, e: Effect) {
    match e {
        Effect::Spawn(s) => spawn(node, epoch, *s),
        Effect::Halt(run) => run.stop.store(true, Ordering::SeqCst),
        Effect::MarkFailed {
            doc_id,
            rev,
            reason,
        } => mark_failed(node, &doc_id, &rev, &reason),
        Effect::MarkCompleted {
            doc_id,
            rev,
            stats,
            start_time,
        } => {
            let info = stats.completed_info(Some(start_time));
            let fields = [
                ("_replication_state", Ej::from("completed")),
                (
                    "_replication_state_time",
                    Ej::from(util::iso8601(util::unix_now()).as_str()),
                ),
                (
                    "_replication_stats",
                    Ej::parse(info.as_bytes()).unwrap_or_else(Ej::empty),
                ),
            ];
            mark(node, &doc_id, &rev, &fields)
        }
    }
}

fn spawn(node: &Arc<NodeInner>, epoch: u64, s: Spawn) {
    let (lo, hi) = node.delays.repl_jitter;
    let jitter = lock(&node.rng).between(lo, hi);
    let me = Arc::clone(node);
    let ctx = worker::Ctx {
        rep: s.rep,
        rep_id: s.rep_id,
        delays: node.delays.clone(),
        jitter,
        carried: s.carried,
        run: s.run,
        node_alive: Box::new(move || me.alive(epoch)),
    };
    node.spawn(epoch, "replication", move || worker::run(ctx));
}

/// `couch_replicator_docs:update_failed`: the state, its time and reason go into the doc, on
/// this node's copy only (the others get it by internal replication, `sync_delay` later).
fn mark_failed(node: &NodeInner, id: &str, rev: &str, reason: &str) {
    let fields = [
        ("_replication_state", Ej::from("failed")),
        (
            "_replication_state_time",
            Ej::from(util::iso8601(util::unix_now()).as_str()),
        ),
        ("_replication_state_reason", Ej::from(reason)),
    ];
    mark(node, id, rev, &fields)
}

/// Writes the replicator's fields into a doc (on top of `rev`, on this node's copy).
fn mark(node: &NodeInner, id: &str, rev: &str, fields: &[(&str, Ej)]) {
    let Some(m) = fabric::map(node, DB) else {
        return;
    };
    let Some((range, _)) = m.locate(id) else {
        return;
    };
    let file = m.file(DB, range);
    let leaves = copies::read(node, &file, &[id.to_string()]);
    let Some(mut body) = leaves
        .get(id)
        .and_then(|l| l.first())
        .filter(|l| l.rev() == rev)
        .map(|l| l.body.clone())
    else {
        return;
    };
    for (k, v) in fields {
        body.set(k, v.clone());
    }
    let edit = Edit {
        id: id.to_string(),
        rev: Some(rev.to_string()),
        body,
        deleted: false,
    };
    copies::update(node, &file, &[edit]);
}
