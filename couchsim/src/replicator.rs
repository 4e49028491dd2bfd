//! One node's replicator, run from its ticker (CouchDB's doc processor and scheduler): which
//! `_replicator` docs this node owns, a `docproc` step over them, the runs it starts
//! (`worker`, a thread each), the `failed` state it writes into a doc, and `/_scheduler/*`,
//! which any member answers by asking every connected member for the jobs it runs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::answers;
use crate::cluster::copies::{self, Edit};
use crate::cluster::dist;
use crate::cluster::fabric;
use crate::docproc::{self, Clock, Effect, OwnedDoc, Spawn};
use crate::jobs::{self, doc_from_db, ReplState};
use crate::net::http::{HttpRequest, Response};
use crate::node::docs::Page;
use crate::node::ejson::Ej;
use crate::node::{lock, NodeInner};
use crate::repdoc;
use crate::util;
use crate::worker;

const DB: &str = "_replicator";

/// The node-local path a member answers its own replicator state on (forwarded over the
/// distribution like any `/_node/<name>/…`).
pub const LOCAL_VIEW: &str = "_couchsim_replicator";

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

fn apply(node: &Arc<NodeInner>, epoch: u64, e: Effect) {
    match e {
        Effect::Spawn(s) => spawn(node, epoch, *s),
        Effect::Halt(run) => run.stop.store(true, Ordering::SeqCst),
        Effect::MarkFailed {
            doc_id,
            rev,
            reason,
        } => mark_failed(node, &doc_id, &rev, &reason),
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
    body.set("_replication_state", Ej::from("failed"));
    body.set(
        "_replication_state_time",
        Ej::from(util::iso8601(util::unix_now()).as_str()),
    );
    body.set("_replication_state_reason", Ej::from(reason));
    let edit = Edit {
        id: id.to_string(),
        rev: Some(rev.to_string()),
        body,
        deleted: false,
    };
    copies::update(node, &file, &[edit]);
}

// ---------------------------------------------------------------------------------------------
// /_scheduler
// ---------------------------------------------------------------------------------------------

/// This node's own docs and jobs as JSON text (already in CouchDB's key order):
/// `{"docs":{"<id>":"<doc>"}, "jobs":["<job>"]}`.
pub fn local_view(node: &NodeInner) -> Response {
    let mut v = lock(&node.vol);
    let st = v.repl.get::<ReplState>();
    let docs = st.docs_json(&node.name, node.delays.repl_health);
    let jobs = st.jobs_json(&node.name);
    Response::json(200, &json!({"docs": docs, "jobs": jobs}))
}

/// Every connected member's view (this node's included).
fn views(node: &Arc<NodeInner>, epoch: u64) -> Vec<Value> {
    let (live, _) = node.membership();
    live.iter()
        .map(|peer| {
            let resp = if *peer == node.name {
                local_view(node)
            } else {
                dist::remote_node_request(node, &get(peer), peer, &[LOCAL_VIEW], epoch)
            };
            if resp.status == 200 {
                serde_json::from_slice(&resp.body).unwrap_or(Value::Null)
            } else {
                Value::Null
            }
        })
        .collect()
}

/// `GET /_node/<peer>/_couchsim_replicator`, as the distribution forwards it.
fn get(peer: &str) -> HttpRequest {
    let path = format!("/_node/{peer}/{LOCAL_VIEW}");
    HttpRequest {
        method: "GET".into(),
        target: path.clone(),
        path,
        query: String::new(),
        http10: false,
        headers: Vec::new(),
        body: Vec::new(),
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

/// The text a view carries for one doc or job.
fn text(v: &Value) -> String {
    v.as_str().unwrap_or("null").to_string()
}

/// `/_scheduler/docs`, `/_scheduler/docs/_replicator[/<id>]`, `/_scheduler/jobs`.
pub fn handle(node: &Arc<NodeInner>, req: &HttpRequest, rest: &[&str], epoch: u64) -> Response {
    if req.method != "GET" {
        return answers::unread_body(answers::method_not_allowed("GET"), req);
    }
    match rest {
        ["jobs"] => {
            let mut jobs: Vec<Value> = views(node, epoch)
                .iter()
                .flat_map(|v| v["jobs"].as_array().cloned().unwrap_or_default())
                .collect();
            jobs.sort_by_key(text);
            let rows: Vec<String> = jobs.iter().map(text).collect();
            page(req, "jobs", rows)
        }
        ["docs"] | ["docs", "_replicator"] => all_docs(node, req, epoch),
        ["docs", "_replicator", id @ ..] if !id.is_empty() => one_doc(node, &id.join("/"), epoch),
        ["docs", _, ..] => Response::error(404, "not_found", "Database does not exist."),
        _ => Response::error(404, "not_found", "missing"),
    }
}

fn one_doc(node: &Arc<NodeInner>, id: &str, epoch: u64) -> Response {
    for v in views(node, epoch) {
        if let Some(d) = v["docs"].get(id) {
            return Response::raw(200, text(d));
        }
    }
    match fabric::open_doc(node, DB, id) {
        Ok(d) => Response::raw(200, from_db(id, &d.winner().body.to_value())),
        Err(_) => Response::error(404, "not_found", "missing"),
    }
}

/// `?skip=&limit=` over the rows.
fn page(req: &HttpRequest, key: &str, rows: Vec<String>) -> Response {
    let num = |k: &str| req.query_param(k).and_then(|v| v.parse::<usize>().ok());
    let skip = num("skip").unwrap_or(0).min(rows.len());
    let limit = num("limit").unwrap_or(usize::MAX);
    let shown: Vec<String> = rows.iter().skip(skip).take(limit).cloned().collect();
    Response::raw(200, jobs::listing(key, rows.len(), skip, &shown))
}

fn all_docs(node: &Arc<NodeInner>, req: &HttpRequest, epoch: u64) -> Response {
    let held: Vec<Value> = views(node, epoch);
    let every = Page {
        include_docs: true,
        ..Page::default()
    };
    let Some(rows) = fabric::all_docs(node, DB, &every)
        .ok()
        .and_then(|b| serde_json::from_str::<Value>(&b).ok())
        .and_then(|v| v["rows"].as_array().cloned())
    else {
        return answers::db_not_found();
    };
    let mut out = Vec::new();
    for r in rows {
        let id = r["id"].as_str().unwrap_or("");
        if id.starts_with("_design/") {
            continue;
        }
        match held.iter().find_map(|v| v["docs"].get(id)) {
            Some(d) => out.push(text(d)),
            None => out.push(from_db(id, &r["doc"])),
        }
    }
    page(req, "docs", out)
}

/// A doc no member holds, shown from the doc itself (`null`, or `failed` with its reason).
fn from_db(id: &str, doc: &Value) -> String {
    let shown = |k: &str| repdoc::shown_field(doc.get(k));
    let failed = (doc["_replication_state"] == "failed").then(|| {
        (
            doc["_replication_state_reason"].as_str().unwrap_or(""),
            doc["_replication_state_time"].as_str().unwrap_or(""),
        )
    });
    doc_from_db(id, &shown("source"), &shown("target"), failed)
}
