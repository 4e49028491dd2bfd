//! One node's shard copies and what is asked of them (CouchDB's `fabric_rpc`/`mem3_rpc`):
//! interactive edits, reads of a doc's leaves, merges (internal replication, read repair),
//! counts, and the file's live docs. Every operation names one file
//! (`shards/<range>/<db>.<suffix>`); a write creates it when missing, as CouchDB does.
//!
//! The operations take and give JSON so the coordinator calls a remote copy (over the
//! distribution link) and a local one the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::node::docs::{Doc, DocDb, Leaf, WriteError};
use crate::node::ejson::Ej;
use crate::node::{lock, NodeInner};

/// One interactive edit of one doc (a PUT, a DELETE, a `_bulk_docs` entry).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Edit {
    pub id: String,
    #[serde(default)]
    pub rev: Option<String>,
    #[serde(default)]
    pub body: Ej,
    #[serde(default)]
    pub deleted: bool,
}

/// A copy's counts (`doc_count`, `doc_del_count`, `update_seq`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Summary {
    pub doc_count: u64,
    pub del_count: u64,
    pub update_seq: u64,
}

fn with_file<T>(node: &NodeInner, file: &str, f: impl FnOnce(&mut DocDb) -> T) -> T {
    let mut st = lock(&node.store);
    let db = st
        .files
        .entry(file.to_string())
        .or_insert_with(|| DocDb::new(node.random_hex(16)));
    f(db)
}

/// Interactive edits; a change schedules the write-triggered push to the other copies.
pub fn update(node: &NodeInner, file: &str, edits: &[Edit]) -> Vec<Result<String, WriteError>> {
    let results: Vec<_> = with_file(node, file, |db| {
        edits
            .iter()
            .map(|e| db.update(&e.id, e.rev.as_deref(), e.body.clone(), e.deleted))
            .collect()
    });
    if results.iter().any(Result::is_ok) {
        node.save();
        node.schedule_file_push(file);
    }
    results
}

/// Merges replicated leaves. `interactive` (read repair, a replicated `_bulk_docs`) counts as
/// a write into the file. Returns (the file's uuid, how many docs changed).
pub fn merge(
    node: &NodeInner,
    file: &str,
    docs: &BTreeMap<String, Vec<Leaf>>,
    interactive: bool,
) -> (String, usize) {
    let (uuid, changed) = with_file(node, file, |db| (db.uuid.clone(), db.merge(docs).len()));
    if changed > 0 {
        node.save();
        if interactive {
            node.schedule_file_push(file);
        }
    }
    (uuid, changed)
}

/// The leaves of the docs asked for (absent ids are missing here).
pub fn read(node: &NodeInner, file: &str, ids: &[String]) -> BTreeMap<String, Vec<Leaf>> {
    let st = lock(&node.store);
    let Some(db) = st.files.get(file) else {
        return BTreeMap::new();
    };
    ids.iter()
        .filter_map(|id| db.docs.get(id).map(|d| (id.clone(), d.leaves.clone())))
        .collect()
}

pub fn summary(node: &NodeInner, file: &str) -> Option<Summary> {
    let st = lock(&node.store);
    st.files.get(file).map(|db| Summary {
        doc_count: db.doc_count(),
        del_count: db.del_count(),
        update_seq: db.update_seq,
    })
}

/// The live docs of a copy.
pub fn live_docs(node: &NodeInner, file: &str) -> Option<BTreeMap<String, Doc>> {
    let st = lock(&node.store);
    st.files
        .get(file)
        .map(|db| db.live().map(|(id, d)| (id.clone(), d.clone())).collect())
}

/// One change in a copy: `(seq, id, leaves)`.
pub type Change = (u64, String, Vec<Leaf>);

/// A copy's changes after `since`, oldest first, with its `update_seq` (what `_changes`
/// reads; `None` when there is no such file).
pub fn changes(node: &NodeInner, file: &str, since: u64) -> Option<(u64, Vec<Change>)> {
    let st = lock(&node.store);
    let db = st.files.get(file)?;
    let rows = db
        .by_seq
        .range(since + 1..)
        .filter_map(|(seq, id)| Some((*seq, id.clone(), db.docs.get(id)?.leaves.clone())))
        .collect();
    Some((db.update_seq, rows))
}

/// Deletes a copy's file (`DELETE /_node/<node>/shards%2F…`, a deleted db).
pub fn delete_file(node: &NodeInner, file: &str) -> bool {
    let gone = lock(&node.store).files.remove(file).is_some();
    if gone {
        node.save();
    }
    gone
}

fn field<T: serde::de::DeserializeOwned + Default>(req: &Value, k: &str) -> T {
    serde_json::from_value(req[k].clone()).unwrap_or_default()
}

/// The JSON face of the operations above: `{"op": …, "file": …, …}` → answer.
pub fn rpc(node: &NodeInner, req: &Value) -> Value {
    let file = req["file"].as_str().unwrap_or("");
    match req["op"].as_str().unwrap_or("") {
        "update" => {
            let edits: Vec<Edit> = field(req, "edits");
            let results: Vec<Value> = update(node, file, &edits)
                .into_iter()
                .map(|r| match r {
                    Ok(rev) => json!({ "ok": rev }),
                    Err(WriteError::Conflict) => json!({"error": "conflict"}),
                    Err(WriteError::NotFound(why)) => json!({ "error": why }),
                })
                .collect();
            json!({ "results": results })
        }
        "merge" => {
            let docs: BTreeMap<String, Vec<Leaf>> = field(req, "docs");
            let interactive = req["interactive"].as_bool().unwrap_or(false);
            let (uuid, changed) = merge(node, file, &docs, interactive);
            json!({"uuid": uuid, "changed": changed})
        }
        "read" => {
            let ids: Vec<String> = field(req, "ids");
            json!({ "docs": read(node, file, &ids) })
        }
        "summary" => json!({ "summary": summary(node, file) }),
        "docs" => json!({ "docs": live_docs(node, file) }),
        "changes" => {
            let since = req["since"].as_u64().unwrap_or(0);
            json!({ "changes": changes(node, file, since) })
        }
        "sync" => {
            let db = req["db"].as_str().unwrap_or("");
            let delay = {
                let (lo, hi) = node.delays.sync_push;
                lock(&node.rng).between(lo, hi)
            };
            node.schedule_db_push(db, delay);
            json!({"ok": true})
        }
        "delete" => json!({ "ok": delete_file(node, file) }),
        "get_security" => {
            let st = lock(&node.store);
            let sec = st.files.get(file).map(|db| db.security.clone());
            json!({ "exists": sec.is_some(), "security": sec.flatten().map(|s| s.text()) })
        }
        "set_security" => {
            let body = req["security"]
                .as_str()
                .and_then(|t| Ej::parse(t.as_bytes()));
            with_file(node, file, |db| db.security = body);
            node.save();
            json!({"ok": true})
        }
        _ => json!({"error": "unknown op"}),
    }
}
