//! What a replicator asks of the databases at both ends, besides `/<db>` and `_bulk_docs`:
//! `_changes` (normal and long-poll), `_revs_diff`, `_bulk_get`, `_ensure_full_commit` and
//! `_local` docs (checkpoints: per node and per db instance, never copied between nodes).
//! Reads take each range from one copy, as clustered reads do; `_changes` resumes each range
//! on the copy its `since` names (`cluster/seq.rs`) and starts that range over on another copy when
//! that one is gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::answers;
use crate::cluster::copies;
use crate::cluster::fabric::{self, Failure};
use crate::cluster::seq::{self, Pos};
use crate::net::http::{HttpRequest, Response};
use crate::node::docs::{Doc, Leaf};
use crate::node::ejson::Ej;
use crate::node::{lock, NodeInner};
use crate::util;

/// How often a long-poll looks for new changes.
const LONGPOLL_CHECK: Duration = Duration::from_millis(5);
/// The longest a long-poll waits (CouchDB's default `timeout`).
const LONGPOLL_MAX: Duration = Duration::from_secs(60);

/// Answers `/<db>/<rest>` when it is one of these endpoints (`None`: not ours). The caller
/// has checked that the db exists and the user is an admin.
pub fn handle(
    node: &Arc<NodeInner>,
    req: &HttpRequest,
    db: &str,
    rest: &[&str],
) -> Option<Response> {
    let m = req.method.as_str();
    let not_allowed =
        |allowed: &str| answers::unread_body(answers::method_not_allowed(allowed), req);
    Some(match (rest, m) {
        (["_changes"], "GET") => changes(node, req, db),
        (["_changes"], _) => not_allowed("GET,POST,HEAD"),
        (["_revs_diff"], "POST") => with_json(req, |v| revs_diff(node, db, v)),
        (["_revs_diff"], _) => not_allowed("POST"),
        (["_bulk_get"], "POST") => with_json(req, |v| bulk_get(node, db, v)),
        (["_bulk_get"], _) => not_allowed("POST"),
        (["_ensure_full_commit"], "POST") => {
            Response::raw(201, r#"{"ok":true,"instance_start_time":"0"}"#)
        }
        (["_ensure_full_commit"], _) => not_allowed("POST"),
        (["_local", id @ ..], _) if !id.is_empty() => local_doc(node, req, db, &id.join("/")),
        _ => return None,
    })
}

fn with_json(req: &HttpRequest, f: impl FnOnce(&Value) -> Response) -> Response {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(v) if v.is_object() => f(&v),
        _ => answers::bad_request("Request body must be a JSON object"),
    }
}

fn failure(f: Failure) -> Response {
    match f {
        Failure::NotFound(why) => Response::error(404, "not_found", why),
        Failure::NoCopy | Failure::Unreachable => {
            Response::error(500, "nodedown", "progress not possible")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// _changes
// ---------------------------------------------------------------------------------------------

/// One change: its seq (text), the doc id, its leaves.
struct Change {
    seq: String,
    id: String,
    leaves: Vec<Leaf>,
}

fn changes(node: &Arc<NodeInner>, req: &HttpRequest, db: &str) -> Response {
    let since = req.query_param("since").unwrap_or_else(|| "0".into());
    let longpoll = req.query_param("feed").as_deref() == Some("longpoll");
    let all_leaves = req.query_param("style").as_deref() == Some("all_docs");
    let timeout = req
        .query_param("timeout")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(LONGPOLL_MAX)
        .min(LONGPOLL_MAX);
    let epoch = node.epoch();
    let deadline = Instant::now() + timeout;
    let (rows, last_seq) = loop {
        let (rows, last) = match read_changes(node, db, &since) {
            Ok(r) => r,
            Err(f) => return failure(f),
        };
        if !rows.is_empty() || !longpoll || Instant::now() >= deadline || !node.alive(epoch) {
            break (rows, last);
        }
        std::thread::sleep(LONGPOLL_CHECK);
    };
    let text: Vec<String> = rows
        .iter()
        .map(|c| {
            let winner = &c.leaves[0];
            let revs: Vec<String> = c
                .leaves
                .iter()
                .take(if all_leaves { usize::MAX } else { 1 })
                .map(|l| util::obj(&[("rev", util::js(l.rev()))]))
                .collect();
            let mut f = vec![
                ("seq", util::js(&c.seq)),
                ("id", util::js(&c.id)),
                ("changes", format!("[{}]", revs.join(","))),
            ];
            if winner.deleted {
                f.push(("deleted", "true".into()));
            }
            util::obj(&f)
        })
        .collect();
    Response::raw(
        200,
        format!(
            "{{\"results\":[\n{}\n],\n\"last_seq\":{},\"pending\":0}}",
            text.join(",\n"),
            util::js(&last_seq)
        ),
    )
}

/// The changes after `since`, range by range, and the seq after the last of them. `since`
/// `now` means from the current end.
fn read_changes(node: &NodeInner, db: &str, since: &str) -> Result<(Vec<Change>, String), Failure> {
    let m = fabric::map(node, db).ok_or(Failure::NotFound("Database does not exist."))?;
    let start = seq::decode(since);
    let now = since == "now";
    let mut pos = Vec::new();
    let mut per_range = Vec::new();
    for (range, holders) in &m.by_range {
        let file = m.file(db, range);
        let (holder, from, end, rows) =
            read_range(node, &file, range, holders, &start).ok_or(Failure::Unreachable)?;
        pos.push(Pos {
            range: range.clone(),
            node: holder,
            seq: if now { end } else { from },
        });
        per_range.push(if now { Vec::new() } else { rows });
    }
    let mut out = Vec::new();
    for (k, rows) in per_range.into_iter().enumerate() {
        for (s, id, leaves) in rows {
            pos[k].seq = s;
            if !leaves.is_empty() {
                out.push(Change {
                    seq: seq::encode(&pos),
                    id,
                    leaves,
                });
            }
        }
    }
    Ok((out, seq::encode(&pos)))
}

/// One range's changes: from the copy `start` names, when it answers and still has that
/// much; else from another copy (this node's first), from its beginning. `(holder, from,
/// the copy's update_seq, rows)`.
fn read_range(
    node: &NodeInner,
    file: &str,
    range: &str,
    holders: &[String],
    start: &[Pos],
) -> Option<(String, u64, u64, Vec<copies::Change>)> {
    let resume = start
        .iter()
        .find(|p| p.range == range && holders.contains(&p.node))
        .map(|p| (p.node.clone(), p.seq));
    let mut others = holders.to_vec();
    others.sort_by_key(|h| *h != node.name);
    resume
        .into_iter()
        .chain(others.into_iter().map(|h| (h, 0)))
        .find_map(|(h, from)| {
            let r = fabric::on_holder(
                node,
                &h,
                json!({"op": "changes", "file": file, "since": from}),
            )?;
            let (end, rows): (u64, Vec<copies::Change>) =
                serde_json::from_value::<Option<_>>(r["changes"].clone()).ok()??;
            (end >= from).then_some((h, from, end, rows))
        })
}

// ---------------------------------------------------------------------------------------------
// _revs_diff and _bulk_get
// ---------------------------------------------------------------------------------------------

/// Every leaf any reachable copy holds for each id (a leaf once, however many copies have it).
fn leaves_of(
    node: &NodeInner,
    db: &str,
    ids: &[String],
) -> Result<BTreeMap<String, Vec<Leaf>>, Failure> {
    let m = fabric::map(node, db).ok_or(Failure::NotFound("Database does not exist."))?;
    let mut by_range: BTreeMap<&String, (Vec<String>, &Vec<String>)> = BTreeMap::new();
    for id in ids {
        if let Some((range, holders)) = m.locate(id) {
            by_range
                .entry(range)
                .or_insert((Vec::new(), holders))
                .0
                .push(id.clone());
        }
    }
    let mut out: BTreeMap<String, Vec<Leaf>> = BTreeMap::new();
    for (range, (ids, holders)) in by_range {
        let file = m.file(db, range);
        let mut answered = false;
        for h in holders {
            let Some(r) =
                fabric::on_holder(node, h, json!({"op": "read", "file": file, "ids": ids}))
            else {
                continue;
            };
            answered = true;
            let got: BTreeMap<String, Vec<Leaf>> =
                serde_json::from_value(r["docs"].clone()).unwrap_or_default();
            for (id, leaves) in got {
                let have = out.entry(id).or_default();
                for l in leaves {
                    if !have.iter().any(|x| x.rev() == l.rev()) {
                        have.push(l);
                    }
                }
            }
        }
        if !answered {
            return Err(Failure::Unreachable);
        }
    }
    Ok(out)
}

fn known(leaves: &[Leaf], rev: &str) -> bool {
    leaves.iter().any(|l| l.revs.iter().any(|r| r == rev))
}

/// `{"<id>":["<rev>",…]}` → the revs no copy has: `{"<id>":{"missing":[…]}}`.
fn revs_diff(node: &NodeInner, db: &str, body: &Value) -> Response {
    let asked: BTreeMap<String, Vec<String>> = body
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, revs)| {
            let revs = revs
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (id.clone(), revs)
        })
        .collect();
    let ids: Vec<String> = asked.keys().cloned().collect();
    let have = match leaves_of(node, db, &ids) {
        Ok(h) => h,
        Err(f) => return failure(f),
    };
    let mut out = Vec::new();
    for (id, revs) in &asked {
        let leaves = have.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let missing: Vec<&String> = revs.iter().filter(|r| !known(leaves, r)).collect();
        if !missing.is_empty() {
            out.push((id.as_str(), util::obj(&[("missing", util::js(&missing))])));
        }
    }
    Response::raw(200, util::obj(&out))
}

/// A leaf as `_bulk_get?revs=true` gives it: the doc at that rev with its `_revisions`.
fn leaf_json(id: &str, l: &Leaf) -> String {
    let one = Doc {
        leaves: vec![l.clone()],
        seq: 0,
    };
    let mut doc = one.to_json(id, false);
    let hashes: Vec<Ej> = l
        .revs
        .iter()
        .map(|r| Ej::from(r.split_once('-').map(|(_, h)| h).unwrap_or(r)))
        .collect();
    doc.set(
        "_revisions",
        Ej::Obj(vec![
            ("start".into(), Ej::from_value(&Value::from(l.pos()))),
            ("ids".into(), Ej::Arr(hashes)),
        ]),
    );
    doc.text()
}

/// `{"docs":[{"id":…,"rev":…},…]}` → each doc at that rev (or its latest descendant).
fn bulk_get(node: &NodeInner, db: &str, body: &Value) -> Response {
    let Some(wanted) = body["docs"].as_array() else {
        return answers::bad_request("Missing JSON list of 'docs'.");
    };
    let pairs: Vec<(String, Option<String>)> = wanted
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap_or("").to_string(),
                d["rev"].as_str().map(str::to_string),
            )
        })
        .collect();
    let ids: Vec<String> = pairs.iter().map(|(id, _)| id.clone()).collect();
    let have = match leaves_of(node, db, &ids) {
        Ok(h) => h,
        Err(f) => return failure(f),
    };
    let results: Vec<String> = pairs
        .iter()
        .map(|(id, rev)| {
            let leaves = have.get(id).map(Vec::as_slice).unwrap_or(&[]);
            let found = match rev {
                Some(r) => leaves.iter().find(|l| l.revs.iter().any(|x| x == r)),
                None => leaves.first(),
            };
            let doc = match found {
                Some(l) => util::obj(&[("ok", leaf_json(id, l))]),
                None => util::obj(&[(
                    "error",
                    util::obj(&[
                        ("id", util::js(id)),
                        ("rev", util::js(rev.as_deref().unwrap_or("undefined"))),
                        ("error", util::js("not_found")),
                        ("reason", util::js("missing")),
                    ]),
                )]),
            };
            util::obj(&[("id", util::js(id)), ("docs", format!("[{doc}]"))])
        })
        .collect();
    Response::raw(200, format!("{{\"results\":[{}]}}", results.join(",")))
}

// ---------------------------------------------------------------------------------------------
// _local docs
// ---------------------------------------------------------------------------------------------

/// `_local` docs live with this node's instance of the db (a re-created db starts without).
fn local_key(node: &NodeInner, db: &str) -> String {
    let suffix = fabric::map(node, db).map(|m| m.suffix).unwrap_or_default();
    format!("{db}{suffix}")
}

fn local_doc(node: &NodeInner, req: &HttpRequest, db: &str, id: &str) -> Response {
    let key = local_key(node, db);
    let full = format!("_local/{id}");
    let current = lock(&node.store)
        .local_docs
        .get(&key)
        .and_then(|d| d.get(id))
        .cloned();
    match req.method.as_str() {
        "GET" => match current {
            Some((n, body)) => {
                let mut f = vec![("_id".to_string(), Ej::from(full.as_str()))];
                f.push(("_rev".into(), Ej::from(format!("0-{n}").as_str())));
                f.extend(body.fields().unwrap_or_default().iter().cloned());
                Response::raw(200, Ej::Obj(f).text())
            }
            None => Response::error(404, "not_found", "missing"),
        },
        "PUT" => {
            let Some(v) = Ej::parse(&req.body).filter(|v| v.fields().is_some()) else {
                return answers::bad_request("Document must be a JSON object");
            };
            let rev = v.get("_rev").and_then(Ej::as_str).map(str::to_string);
            let n = current.as_ref().map(|(n, _)| *n).unwrap_or(0);
            if current.is_some() && rev.as_deref() != Some(format!("0-{n}").as_str()) {
                return Response::error(409, "conflict", "Document update conflict.");
            }
            let body: Vec<(String, Ej)> = v
                .fields()
                .unwrap_or_default()
                .iter()
                .filter(|(k, _)| !k.starts_with('_'))
                .cloned()
                .collect();
            lock(&node.store)
                .local_docs
                .entry(key)
                .or_default()
                .insert(id.to_string(), (n + 1, Ej::Obj(body)));
            node.save();
            answers::doc_written(201, &full, &format!("0-{}", n + 1), None)
        }
        "DELETE" => {
            let removed = lock(&node.store)
                .local_docs
                .get_mut(&key)
                .and_then(|d| d.remove(id));
            node.save();
            match removed {
                Some((n, _)) => answers::doc_written(200, &full, &format!("0-{}", n + 1), None),
                None => Response::error(404, "not_found", "missing"),
            }
        }
        _ => answers::unread_body(answers::method_not_allowed("DELETE,GET,HEAD,PUT"), req),
    }
}
