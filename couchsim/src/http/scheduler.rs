//! `/_scheduler/docs` and `/_scheduler/jobs`, which any member answers by asking every
//! connected member for the docs and jobs its replicator holds (`_couchsim_replicator`,
//! forwarded over the distribution), and showing a `_replicator` doc no member holds from the
//! doc itself.

use std::sync::Arc;

use serde_json::{json, Value};

use super::answers;
use crate::cluster::dist;
use crate::cluster::fabric;
use crate::net::http::{HttpRequest, Response};
use crate::node::docs::Page;
use crate::node::{lock, NodeInner};
use crate::replication::jobs::{self, doc_from_db, ReplState};
use crate::replication::repdoc;
use crate::replication::replicator::DB;

/// The node-local path a member answers its own replicator state on (forwarded over the
/// distribution like any `/_node/<name>/…`).
pub const LOCAL_VIEW: &str = "_couchsim_replicator";

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
