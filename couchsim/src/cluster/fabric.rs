//! Clustered databases, as the node a request reaches coordinates them (CouchDB's `fabric`):
//! creating and deleting dbs, writing docs to every reachable copy of their range (quorum
//! `w`), reading a doc from every copy (and repairing the copies that lack it), and the
//! clustered counts and `_all_docs`, which — like CouchDB — take each range from whichever
//! copy answers first: an empty new copy makes them short (trap 11).
//!
//! A copy is reached here when it is on this node, over the distribution link when its node is
//! connected, and not at all otherwise (a stopped node, a name no node carries).

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

use super::copies::{self, Edit, Summary};
use super::dist;
use super::seq::{self, Pos};
use crate::node::docs::{Doc, DocDb, Leaf, Page};
use crate::node::ejson::{self, Ej};
use crate::node::shards::{self, ShardMap, Unplaced};
use crate::node::{lock, log_line, NodeInner, Repair};
use crate::util;

/// Why a clustered operation could not be done.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The doc's range has no copy in the map: CouchDB hangs `no_copy_timeout` (60 s) first.
    NoCopy,
    /// No copy of a range answered.
    Unreachable,
    NotFound(&'static str),
}

/// What the coordinator answers for one doc of a write.
#[derive(Debug, Clone, PartialEq)]
pub struct DocReply {
    pub id: String,
    /// The new rev, when enough copies took the write.
    pub rev: Option<String>,
    /// Fewer than `w` copies took it (HTTP 202).
    pub accepted: bool,
    /// `(error, reason)` when it was refused.
    pub error: Option<(String, String)>,
}

pub fn map(node: &NodeInner, db: &str) -> Option<ShardMap> {
    lock(&node.store).map(db)
}

/// Runs a copy operation on `holder`: here, over the link, or `None` when unreachable.
pub fn on_holder(node: &NodeInner, holder: &str, req: Value) -> Option<Value> {
    if holder == node.name {
        return Some(copies::rpc(node, &req));
    }
    let answer = node
        .is_connected(holder)
        .then(|| dist::shard_rpc(node, holder, req.clone()))
        .flatten();
    if answer.is_none() {
        log_line(&format!(
            "{}: the copy on {holder} did not answer ({} {})",
            node.name, req["op"], req["file"]
        ));
    }
    answer
}

/// The holders of a range in a random order (the first to answer wins, as with fabric).
fn shuffled(node: &NodeInner, holders: &[String]) -> Vec<String> {
    let mut v = holders.to_vec();
    let mut rng = lock(&node.rng);
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

fn wait_no_copy(node: &NodeInner) {
    let epoch = node.epoch();
    util::sleep_while(node.delays.no_copy_timeout, || node.alive(epoch));
}

// ---------------------------------------------------------------------------------------------
// databases
// ---------------------------------------------------------------------------------------------

/// How a db comes to be: over HTTP (`PUT /<db>`: its map doc has `"props":{}`) or made by
/// CouchDB itself (`finish_cluster`, `enable_single_node`: no `props`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Origin {
    Http,
    Setup,
}

/// `PUT /<db>?q=&n=`: copies over the current `_nodes` members (phantoms included), the map
/// written to every connected member before answering. False if it exists.
pub fn create_db(
    node: &NodeInner,
    name: &str,
    q: Option<u64>,
    n: Option<u64>,
    origin: Origin,
) -> bool {
    create_db_placed(node, name, q, n, None, origin) == Ok(true)
}

/// `create_db` with a `?placement=` (else `[cluster] placement` of this node): `Err` when
/// mem3 refuses to place it (nothing is created), `Ok(false)` when it exists.
pub fn create_db_placed(
    node: &NodeInner,
    name: &str,
    q: Option<u64>,
    n: Option<u64>,
    placement: Option<&str>,
    origin: Origin,
) -> Result<bool, Unplaced> {
    if !create_unpushed(node, name, q, n, placement, origin)? {
        return Ok(false);
    }
    dist::push_dbs_now(node);
    Ok(true)
}

/// Many databases, then one push of `_dbs` (as if they were made one after the other, each
/// push carrying the ones before): a test's setup of hundreds of databases in seconds, not
/// minutes. Returns how many were created.
pub fn create_dbs(node: &NodeInner, names: &[String], q: Option<u64>, n: Option<u64>) -> usize {
    let made = names
        .iter()
        .filter(|name| create_unpushed(node, name, q, n, None, Origin::Http) == Ok(true))
        .count();
    dist::push_dbs_now(node);
    made
}

fn create_unpushed(
    node: &NodeInner,
    name: &str,
    q: Option<u64>,
    n: Option<u64>,
    placement: Option<&str>,
    origin: Origin,
) -> Result<bool, Unplaced> {
    let pin = node.shared.take_pin(name);
    let (by_range, suffix) = {
        let st = lock(&node.store);
        if st.db_exists(name) {
            return Ok(false);
        }
        let by_range = match pin.by_range {
            Some(pinned) => pinned,
            None => {
                let n = n.filter(|n| *n > 0).unwrap_or_else(|| st.cluster_n());
                let q = q.filter(|q| *q > 0).unwrap_or_else(|| st.cluster_q());
                let placement = placement
                    .map(str::to_string)
                    .or_else(|| st.config_get("cluster", "placement"));
                shards::choose(name, &st.candidates(), placement.as_deref(), n, q)?
            }
        };
        let suffix = pin
            .suffix
            .unwrap_or_else(|| format!(".{}", util::unix_now().as_secs()));
        (by_range, suffix)
    };
    Ok(write_map(node, name, &by_range, &suffix, origin))
}

/// A db with every range on this node alone (a node finished or used on its own).
pub fn create_db_alone(node: &NodeInner, name: &str) -> bool {
    let q = lock(&node.store).cluster_q();
    let by_range: BTreeMap<String, Vec<String>> = shards::ranges(q)
        .into_iter()
        .map(|r| (r, vec![node.name.clone()]))
        .collect();
    let suffix = format!(".{}", util::unix_now().as_secs());
    write_map(node, name, &by_range, &suffix, Origin::Setup)
}

fn write_map(
    node: &NodeInner,
    name: &str,
    by_range: &BTreeMap<String, Vec<String>>,
    suffix: &str,
    origin: Origin,
) -> bool {
    let doc = shards::map_doc(by_range, suffix, origin == Origin::Http);
    let written = lock(&node.store).dbs.put(name, None, doc).is_ok();
    if written {
        node.dbs_changed(&[name.to_string()], false);
        if name == "_users" {
            // CouchDB adds `_design/_auth` to `_users` shortly after creating it.
            lock(&node.vol).auth_ddoc_due = Some(Instant::now() + node.delays.auth_ddoc);
        }
    }
    written
}

/// `DELETE /<db>`: the map doc and every reachable copy's file.
pub fn delete_db(node: &NodeInner, name: &str) -> bool {
    let Some(m) = map(node, name) else {
        return false;
    };
    let deleted = {
        let mut st = lock(&node.store);
        let rev = match st.dbs.get(name) {
            Ok(d) => d.rev().to_string(),
            Err(_) => return false,
        };
        st.dbs.delete(name, Some(&rev)).is_ok()
    };
    if !deleted {
        return false;
    }
    node.dbs_changed(&[name.to_string()], false);
    dist::push_dbs_now(node);
    for (range, holders) in &m.by_range {
        let file = m.file(name, range);
        for h in holders {
            on_holder(node, h, json!({"op": "delete", "file": file}));
        }
    }
    true
}

/// One range's counts, from the first of its copies to answer.
fn range_summary(node: &NodeInner, m: &ShardMap, db: &str, range: &str) -> Option<Summary> {
    range_source(node, m, db, range).map(|(_, s)| s)
}

/// One range's counts and the copy they came from (the first of its holders to answer).
fn range_source(
    node: &NodeInner,
    m: &ShardMap,
    db: &str,
    range: &str,
) -> Option<(String, Summary)> {
    let file = m.file(db, range);
    shuffled(node, &m.by_range[range])
        .into_iter()
        .find_map(|h| {
            let r = on_holder(node, &h, json!({"op": "summary", "file": file}))?;
            let s = serde_json::from_value(r["summary"].clone()).ok()?;
            Some((h, s))
        })
}

/// `GET /<db>`, in CouchDB's key order. `None` when the db does not exist.
pub fn db_info(node: &NodeInner, db: &str) -> Option<String> {
    let m = map(node, db)?;
    let mut total = Summary::default();
    let mut positions = Vec::new();
    for range in m.by_range.keys() {
        if let Some((holder, s)) = range_source(node, &m, db, range) {
            total.doc_count += s.doc_count;
            total.del_count += s.del_count;
            total.update_seq += s.update_seq;
            positions.push(Pos {
                range: range.clone(),
                node: holder,
                seq: s.update_seq,
            });
        }
    }
    let (q, n) = (m.q(), m.n());
    let w = n / 2 + 1;
    let seq_tag = util::hex(&util::sha256(format!("{db}{}", node.name).as_bytes()));
    let docs = total.doc_count;
    Some(util::obj(&[
        (
            "instance_start_time",
            util::js(m.suffix.trim_start_matches('.')),
        ),
        ("db_name", util::js(db)),
        (
            "purge_seq",
            util::js(&format!(
                "0-g1AAAABTeJzLYWBgYMpgTmHgz8tPSTV{}",
                &seq_tag[..20]
            )),
        ),
        // Where each range was read: a `since` for `_changes` (seq.rs).
        ("update_seq", util::js(&seq::encode(&positions))),
        (
            "sizes",
            util::obj(&[
                (
                    "file",
                    (8518 * q as u64 + 160 * total.update_seq).to_string(),
                ),
                ("external", (8 * docs).to_string()),
                ("active", (140 * docs).to_string()),
            ]),
        ),
        ("props", "{}".into()),
        ("doc_del_count", total.del_count.to_string()),
        ("doc_count", docs.to_string()),
        ("disk_format_version", "8".into()),
        ("compact_running", "false".into()),
        (
            "cluster",
            util::obj(&[
                ("q", q.to_string()),
                ("n", n.to_string()),
                ("w", w.to_string()),
                ("r", w.to_string()),
            ]),
        ),
    ]))
}

/// `GET /<db>/_all_docs`: the body, each range from one copy (the first to answer).
pub fn all_docs(node: &NodeInner, db: &str, page: &Page) -> Result<String, Failure> {
    let m = map(node, db).ok_or(Failure::NotFound("Database does not exist."))?;
    let mut total = 0;
    let mut docs: BTreeMap<String, Doc> = BTreeMap::new();
    for (range, holders) in &m.by_range {
        let file = m.file(db, range);
        if page.limit == Some(0) {
            let s = range_summary(node, &m, db, range).ok_or(Failure::Unreachable)?;
            total += s.doc_count;
            continue;
        }
        let got: BTreeMap<String, Doc> = shuffled(node, holders)
            .iter()
            .find_map(|h| {
                let r = on_holder(node, h, json!({"op": "docs", "file": file}))?;
                serde_json::from_value::<Option<BTreeMap<String, Doc>>>(r["docs"].clone()).ok()
            })
            .ok_or(Failure::Unreachable)?
            .unwrap_or_default();
        total += got.len() as u64;
        docs.extend(got);
    }
    Ok(page.body(docs.iter(), total))
}

/// `POST /<db>/_sync_shards`: every copy of every range pushes to every other copy.
pub fn sync_shards(node: &NodeInner, db: &str) -> bool {
    let Some(m) = map(node, db) else {
        return false;
    };
    let mut holders: Vec<&String> = m.by_range.values().flatten().collect();
    holders.sort();
    holders.dedup();
    for h in holders {
        on_holder(node, h, json!({"op": "sync", "db": db}));
    }
    true
}

// ---------------------------------------------------------------------------------------------
// security objects (fabric_db_meta: written to every copy, read from every copy)
// ---------------------------------------------------------------------------------------------

/// The `_security` of a db no one set (CouchDB 3.x: admin only), in CouchDB's key order.
pub const DEFAULT_SECURITY: &str =
    r#"{"members":{"roles":["_admin"]},"admins":{"roles":["_admin"]}}"#;

/// `GET /<db>/_security`: every reachable copy is asked; the object most copies hold wins
/// (so a copy that missed a write while its node was down is outvoted, as recorded in
/// transcript 15), and copies that differ are repaired. A copy never written holds the default.
pub fn get_security(node: &NodeInner, db: &str) -> Result<String, Failure> {
    let m = map(node, db).ok_or(Failure::NotFound("Database does not exist."))?;
    let mut votes: Vec<(String, usize)> = Vec::new();
    let mut seen: Vec<(String, String, String)> = Vec::new();
    for (range, holders) in &m.by_range {
        let file = m.file(db, range);
        for h in holders {
            let Some(r) = on_holder(node, h, json!({"op": "get_security", "file": file})) else {
                continue;
            };
            if r["exists"] != json!(true) {
                continue;
            }
            let text = r["security"]
                .as_str()
                .unwrap_or(DEFAULT_SECURITY)
                .to_string();
            match votes.iter_mut().find(|(t, _)| *t == text) {
                Some((_, n)) => *n += 1,
                None => votes.push((text.clone(), 1)),
            }
            seen.push((h.clone(), file.clone(), text));
        }
    }
    let winner = votes
        .iter()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| t.clone())
        .ok_or(Failure::Unreachable)?;
    if winner != DEFAULT_SECURITY {
        for (h, file, text) in seen.iter().filter(|(_, _, t)| *t != winner) {
            let _ = text;
            on_holder(
                node,
                h,
                json!({"op": "set_security", "file": file, "security": winner}),
            );
        }
    }
    Ok(winner)
}

/// `PUT /<db>/_security`: written to every reachable copy. `Err` when no copy took it.
pub fn set_security(node: &NodeInner, db: &str, body: &Ej) -> Result<(), Failure> {
    let m = map(node, db).ok_or(Failure::NotFound("Database does not exist."))?;
    let text = body.text();
    let mut written = 0;
    for (range, holders) in &m.by_range {
        let file = m.file(db, range);
        for h in holders {
            let req = json!({"op": "set_security", "file": file, "security": text});
            if on_holder(node, h, req).is_some() {
                written += 1;
            }
        }
    }
    if written == 0 {
        return Err(Failure::Unreachable);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// documents
// ---------------------------------------------------------------------------------------------

/// `GET /<db>/_shards/<docid>`: the range and its nodes.
pub fn locate(node: &NodeInner, db: &str, id: &str) -> Result<(String, Vec<String>), Failure> {
    let m = map(node, db).ok_or(Failure::NotFound("Database does not exist."))?;
    m.locate(id)
        .map(|(r, n)| (r.clone(), n.clone()))
        .ok_or(Failure::NoCopy)
}

/// Writes docs through this node: each goes to every reachable copy of its range; 201 needs
/// `w` (a majority of `n`) copies to take it, fewer is 202.
pub fn update_docs(node: &NodeInner, db: &str, edits: Vec<Edit>) -> Result<Vec<DocReply>, Failure> {
    let m = map(node, db).ok_or(Failure::NotFound("Database does not exist."))?;
    let mut by_range: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, e) in edits.iter().enumerate() {
        match m.locate(&e.id) {
            Some((r, _)) => by_range.entry(r.clone()).or_default().push(i),
            None => {
                wait_no_copy(node);
                return Err(Failure::NoCopy);
            }
        }
    }
    let w = m.n() / 2 + 1;
    let mut oks: Vec<(usize, Option<String>)> = vec![(0, None); edits.len()];
    let mut conflicts = vec![0usize; edits.len()];
    for (range, idx) in &by_range {
        let batch: Vec<&Edit> = idx.iter().map(|i| &edits[*i]).collect();
        let file = m.file(db, range);
        for h in &m.by_range[range] {
            let Some(r) = on_holder(
                node,
                h,
                json!({"op": "update", "file": file, "edits": batch}),
            ) else {
                continue;
            };
            let results = r["results"].as_array().cloned().unwrap_or_default();
            for (k, res) in results.iter().enumerate() {
                let Some(&i) = idx.get(k) else { continue };
                match res["ok"].as_str() {
                    Some(rev) => {
                        oks[i].0 += 1;
                        oks[i].1 = Some(rev.to_string());
                    }
                    None => conflicts[i] += 1,
                }
            }
        }
    }
    Ok(edits
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (ok, rev) = oks[i].clone();
            // fabric_doc_update: one copy that took it makes it accepted (202), whatever
            // the others said (transcript 14: a DELETE right after the replicator's own
            // one-copy write answered 202).
            let refused = ok == 0;
            match (refused, conflicts[i]) {
                (false, _) => DocReply {
                    id: e.id.clone(),
                    rev,
                    accepted: ok < w,
                    error: None,
                },
                (true, c) if c > 0 => DocReply {
                    id: e.id.clone(),
                    rev: None,
                    accepted: false,
                    error: Some(("conflict".into(), "Document update conflict.".into())),
                },
                (true, _) => DocReply {
                    id: e.id.clone(),
                    rev: None,
                    accepted: false,
                    error: Some(("error".into(), "internal_server_error".into())),
                },
            }
        })
        .collect())
}

/// Merges replicated revisions (`_bulk_docs` with `new_edits: false`) into every reachable
/// copy. Returns how many docs had at least one copy take them.
pub fn merge_docs(
    node: &NodeInner,
    db: &str,
    docs: BTreeMap<String, Vec<Leaf>>,
) -> Result<usize, Failure> {
    let m = map(node, db).ok_or(Failure::NotFound("Database does not exist."))?;
    let mut by_range: BTreeMap<String, BTreeMap<String, Vec<Leaf>>> = BTreeMap::new();
    for (id, leaves) in docs {
        match m.locate(&id) {
            Some((r, _)) => {
                by_range.entry(r.clone()).or_default().insert(id, leaves);
            }
            None => {
                wait_no_copy(node);
                return Err(Failure::NoCopy);
            }
        }
    }
    let mut written = 0;
    for (range, docs) in &by_range {
        let file = m.file(db, range);
        // Every reachable copy, as fabric_doc_update sends a replicated `_bulk_docs` to all
        // of them (not only the first: a clustered count read right after would come back
        // short from the others until internal replication caught up).
        let took = m.by_range[range]
            .iter()
            .filter(|h| {
                on_holder(
                    node,
                    h,
                    json!({"op": "merge", "file": file, "docs": docs, "interactive": true}),
                )
                .is_some()
            })
            .count()
            > 0;
        if took {
            written += docs.len();
        }
    }
    Ok(written)
}

/// Reads a doc from every reachable copy of its range and merges what they hold. When a
/// quorum of copies already held the merged result, the others are repaired a moment after
/// the answer (read repair). When fewer did — the replicator wrote its state into its own
/// copy only (trap 27) — nothing is repaired: on CouchDB a `DELETE` sent right after such a
/// read answered 202 twice (transcripts 14 and 17: the other copies still lacked the rev the
/// read returned), and a copy still held the first revision 240 ms later.
pub fn open_doc(node: &NodeInner, db: &str, id: &str) -> Result<Doc, Failure> {
    let m = map(node, db).ok_or(Failure::NotFound("Database does not exist."))?;
    let Some((range, holders)) = m.locate(id) else {
        wait_no_copy(node);
        return Err(Failure::NoCopy);
    };
    let file = m.file(db, range);
    let ids = [id.to_string()];
    let mut answers: Vec<(String, Vec<Leaf>)> = Vec::new();
    for h in holders {
        if let Some(r) = on_holder(node, h, json!({"op": "read", "file": file, "ids": ids})) {
            let mut docs: BTreeMap<String, Vec<Leaf>> =
                serde_json::from_value(r["docs"].clone()).unwrap_or_default();
            answers.push((h.clone(), docs.remove(id).unwrap_or_default()));
        }
    }
    if answers.is_empty() {
        return Err(Failure::Unreachable);
    }
    let mut merged = DocDb::default();
    for (_, leaves) in &answers {
        merged.merge(&BTreeMap::from([(id.to_string(), leaves.clone())]));
    }
    let doc = merged.docs.remove(id).ok_or(Failure::NotFound("missing"))?;
    let all: Vec<&str> = doc.leaves.iter().map(Leaf::rev).collect();
    let lacks = |leaves: &[Leaf]| {
        let has: Vec<&str> = leaves.iter().map(Leaf::rev).collect();
        all.iter().any(|r| !has.contains(r))
    };
    let behind: Vec<&String> = answers
        .iter()
        .filter(|(_, leaves)| lacks(leaves))
        .map(|(h, _)| h)
        .collect();
    let agreeing = answers.len() - behind.len();
    let docs = BTreeMap::from([(id.to_string(), doc.leaves.clone())]);
    let quorum = m.n() / 2 + 1;
    if agreeing >= quorum {
        // fabric_doc_open: a quorum agreed, so it answers now and repairs the copies that
        // are behind in a process of its own (a write right after can still find them old).
        let (lo, hi) = node.delays.sync_push;
        let at = Instant::now() + lock(&node.rng).between(lo, hi);
        let mut v = lock(&node.vol);
        for h in behind {
            v.repairs.push(Repair {
                at,
                holder: h.clone(),
                file: file.clone(),
                docs: docs.clone(),
            });
        }
    }
    if doc.deleted() {
        return Err(Failure::NotFound("deleted"));
    }
    Ok(doc)
}

/// `GET /<db>/<id>?open_revs=all` (`fabric_doc_open_revs`): every copy of the doc's range is
/// asked and their replies taken in the order they come (here: the holders in a random order,
/// as fabric takes whichever answers first), each merged into one revision tree. It answers
/// as soon as a quorum of replies agree — a reply that only repeats revisions already in the
/// tree, or extends one of its leaves, with as many leaves as the tree has — so two copies
/// still at an old revision outvote a third that has moved on, and through one node the old
/// revision is still the answer (transcript 17: rev 1, live, right after the DELETE answered
/// 202, through node2 only). No read repair follows: fabric may spawn one, but in the
/// recording none reached the copies (a copy still held rev 1 after every node answered the
/// deletion). Returns the leaves, `[]` when no copy holds the doc.
pub fn open_revs(node: &NodeInner, db: &str, id: &str) -> Result<Vec<Leaf>, Failure> {
    let m = map(node, db).ok_or(Failure::NotFound("Database does not exist."))?;
    let Some((range, holders)) = m.locate(id) else {
        wait_no_copy(node);
        return Err(Failure::NoCopy);
    };
    let file = m.file(db, range);
    let quorum = m.n() / 2 + 1;
    let ids = [id.to_string()];
    let mut tree: Vec<Leaf> = Vec::new();
    let mut replies = 0;
    for h in shuffled(node, holders) {
        let Some(r) = on_holder(node, &h, json!({"op": "read", "file": file, "ids": ids})) else {
            continue;
        };
        let mut docs: BTreeMap<String, Vec<Leaf>> =
            serde_json::from_value(r["docs"].clone()).unwrap_or_default();
        let reply = docs.remove(id).unwrap_or_default();
        replies += 1;
        let agrees = reply.len() == tree.len() && reply.iter().all(|l| known_or_extends(&tree, l));
        let mut merged = DocDb::default();
        merged.merge(&BTreeMap::from([(id.to_string(), tree.clone())]));
        merged.merge(&BTreeMap::from([(id.to_string(), reply)]));
        tree = merged.docs.remove(id).map(|d| d.leaves).unwrap_or_default();
        if agrees && replies >= quorum {
            break;
        }
    }
    if replies == 0 {
        return Err(Failure::Unreachable);
    }
    tree.sort_by(|a, b| (a.pos(), a.rev()).cmp(&(b.pos(), b.rev())));
    Ok(tree)
}

/// `couch_key_tree:merge` of one reply's leaf into the tree is `internal_node` (its rev is in
/// the tree already) or `new_leaf` (its nearest known ancestor is a leaf), not `new_branch`.
fn known_or_extends(tree: &[Leaf], leaf: &Leaf) -> bool {
    let known = |rev: &str| tree.iter().any(|l| l.revs.iter().any(|r| r == rev));
    if known(leaf.rev()) {
        return true;
    }
    match leaf.revs.iter().skip(1).find(|r| known(r)) {
        Some(ancestor) => tree.iter().any(|l| l.rev() == ancestor),
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// background: `_users`' design doc
// ---------------------------------------------------------------------------------------------

/// The `_design/_auth` CouchDB keeps in `_users` (a stand-in validation function).
fn auth_ddoc() -> Ej {
    Ej::Obj(vec![
        ("language".into(), Ej::from("javascript")),
        (
            "validate_doc_update".into(),
            Ej::from("function(newDoc, oldDoc, userCtx, secObj) { /* couchsim */ }"),
        ),
    ])
}

/// Writes `_users`' `_design/_auth` when it is due (every copy of its range gets the same
/// revision, so nodes doing it twice never conflict).
/// Writes a doc's merged leaves into a copy that lacked some (counts as a write into it).
fn repair(node: &NodeInner, holder: &str, file: &str, docs: &BTreeMap<String, Vec<Leaf>>) {
    on_holder(
        node,
        holder,
        json!({"op": "merge", "file": file, "docs": docs, "interactive": true}),
    );
}

/// The background work of fabric: due read repairs, and `_users`' design doc.
pub fn tick(node: &NodeInner) {
    let repairs: Vec<Repair> = {
        let mut v = lock(&node.vol);
        let now = Instant::now();
        let (due, later) = std::mem::take(&mut v.repairs)
            .into_iter()
            .partition(|r| r.at <= now);
        v.repairs = later;
        due
    };
    for r in repairs {
        repair(node, &r.holder, &r.file, &r.docs);
    }
    let due = {
        let mut v = lock(&node.vol);
        match v.auth_ddoc_due {
            Some(t) if Instant::now() >= t => v.auth_ddoc_due.take().is_some(),
            _ => false,
        }
    };
    if !due {
        return;
    }
    let body = auth_ddoc();
    let leaf = Leaf {
        revs: vec![ejson::new_rev(false, None, &body)],
        deleted: false,
        body,
    };
    let docs = BTreeMap::from([("_design/_auth".to_string(), vec![leaf])]);
    let _ = merge_docs(node, "_users", docs);
}
