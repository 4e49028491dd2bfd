//! What a node keeps on disk: its config and the node-local `_nodes` and `_dbs` databases
//! (docs with revisions, replicated between connected nodes by merging), plus shard placement.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::util;

/// The rev CouchDB gives a `_nodes` doc created with body `{}`.
pub const NODE_DOC_REV1: &str = "1-967a00dff5e02add41819138abb3284d";
/// The rev of its deletion.
pub const NODE_DOC_REV2_DELETED: &str = "2-eec205a9d413992850a6e32678485900";
/// The rev the transcripts show for a fresh shard map doc in `_dbs`.
pub const DBS_DOC_REV1: &str = "1-7d7a8928c3278644add8ee25e2b767f1";

#[cfg(test)]
pub const RANGES: [&str; 2] = ["00000000-7fffffff", "80000000-ffffffff"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    pub rev: String,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub body: Map<String, Value>,
}

impl Doc {
    pub fn rev_pos(&self) -> u64 {
        rev_pos(&self.rev)
    }

    /// `{"_id":…,"_rev":…, …body}` as text, in CouchDB's key order.
    pub fn to_json_text(&self, id: &str) -> String {
        let mut f = vec![("_id", util::js(id)), ("_rev", util::js(&self.rev))];
        if self.deleted {
            f.push(("_deleted", "true".to_string()));
        }
        for (k, v) in &self.body {
            f.push((k.as_str(), util::js(v)));
        }
        util::obj(&f)
    }

    /// `{"_id":…,"_rev":…, …body}`
    pub fn to_json(&self, id: &str) -> Value {
        let mut m = Map::new();
        m.insert("_id".into(), json!(id));
        m.insert("_rev".into(), json!(self.rev));
        if self.deleted {
            m.insert("_deleted".into(), json!(true));
        }
        for (k, v) in &self.body {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

pub fn rev_pos(rev: &str) -> u64 {
    rev.split('-')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// The next revision id for a doc body (deterministic, CouchDB-shaped `N-<32 hex>`).
pub fn next_rev(prev: Option<&str>, body: &Map<String, Value>, deleted: bool) -> String {
    let pos = prev.map(rev_pos).unwrap_or(0) + 1;
    if body.is_empty() {
        if pos == 1 && !deleted {
            return NODE_DOC_REV1.to_string();
        }
        if pos == 2 && deleted && prev == Some(NODE_DOC_REV1) {
            return NODE_DOC_REV2_DELETED.to_string();
        }
    }
    let text = serde_json::to_string(body).unwrap_or_default();
    let h = util::sha256_hex(&[
        prev.unwrap_or("").as_bytes(),
        text.as_bytes(),
        if deleted { b"1" } else { b"0" },
    ]);
    format!("{pos}-{}", &h[..32])
}

/// A node-local database: id → doc (tombstones kept, so deletions replicate).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalDb {
    pub docs: BTreeMap<String, Doc>,
    #[serde(default)]
    pub update_seq: u64,
    #[serde(default)]
    pub uuid: String,
}

#[derive(Debug, PartialEq)]
pub enum WriteError {
    Conflict,
    NotFound(&'static str),
}

impl LocalDb {
    pub fn live(&self) -> impl Iterator<Item = (&String, &Doc)> {
        self.docs.iter().filter(|(_, d)| !d.deleted)
    }

    pub fn live_ids(&self) -> Vec<String> {
        self.live().map(|(k, _)| k.clone()).collect()
    }

    pub fn get(&self, id: &str) -> Result<&Doc, WriteError> {
        match self.docs.get(id) {
            Some(d) if d.deleted => Err(WriteError::NotFound("deleted")),
            Some(d) => Ok(d),
            None => Err(WriteError::NotFound("missing")),
        }
    }

    /// PUT semantics: a new doc needs no rev; an existing one needs the current rev; a
    /// tombstone can be recreated without rev.
    pub fn put(
        &mut self,
        id: &str,
        rev: Option<&str>,
        body: Map<String, Value>,
    ) -> Result<String, WriteError> {
        let prev = self.docs.get(id);
        let prev_rev = match (prev, rev) {
            (None, None) => None,
            (None, Some(_)) => return Err(WriteError::Conflict),
            (Some(d), None) if d.deleted => Some(d.rev.clone()),
            (Some(_), None) => return Err(WriteError::Conflict),
            (Some(d), Some(r)) if d.rev == r => Some(d.rev.clone()),
            (Some(_), Some(_)) => return Err(WriteError::Conflict),
        };
        let new_rev = next_rev(prev_rev.as_deref(), &body, false);
        self.docs.insert(
            id.to_string(),
            Doc {
                rev: new_rev.clone(),
                deleted: false,
                body,
            },
        );
        self.update_seq += 1;
        Ok(new_rev)
    }

    pub fn delete(&mut self, id: &str, rev: Option<&str>) -> Result<String, WriteError> {
        let d = match self.docs.get(id) {
            Some(d) if d.deleted => return Err(WriteError::NotFound("deleted")),
            Some(d) => d,
            None => return Err(WriteError::NotFound("missing")),
        };
        if rev != Some(d.rev.as_str()) {
            return Err(WriteError::Conflict);
        }
        let new_rev = next_rev(Some(&d.rev), &Map::new(), true);
        self.docs.insert(
            id.to_string(),
            Doc {
                rev: new_rev.clone(),
                deleted: true,
                body: Map::new(),
            },
        );
        self.update_seq += 1;
        Ok(new_rev)
    }

    /// Replication: take every incoming doc whose revision wins. Returns the ids that changed.
    pub fn merge(&mut self, incoming: &BTreeMap<String, Doc>) -> Vec<String> {
        let mut changed = Vec::new();
        for (id, doc) in incoming {
            let wins = match self.docs.get(id) {
                None => true,
                Some(mine) => {
                    (doc.rev_pos(), &doc.rev) > (mine.rev_pos(), &mine.rev) && mine.rev != doc.rev
                }
            };
            if wins {
                self.docs.insert(id.clone(), doc.clone());
                self.update_seq += 1;
                changed.push(id.clone());
            }
        }
        changed
    }

    /// `_all_docs` as CouchDB streams it (rows separated by `,\r\n`).
    pub fn all_docs(&self, include_docs: bool) -> String {
        let rows: Vec<String> = self
            .live()
            .map(|(id, d)| {
                let mut f = vec![
                    ("id", util::js(id)),
                    ("key", util::js(id)),
                    ("value", util::obj(&[("rev", util::js(&d.rev))])),
                ];
                if include_docs {
                    f.push(("doc", d.to_json_text(id)));
                }
                util::obj(&f)
            })
            .collect();
        format!(
            "{{\"total_rows\":{},\"offset\":0,\"rows\":[\r\n{}\r\n]}}",
            rows.len(),
            rows.join(",\r\n")
        )
    }

    /// The node-local db info (`GET /_node/_local/_nodes`), in CouchDB's key order.
    pub fn info(&self, name: &str, start_time_us: u128) -> String {
        let live = self.live().count();
        let del = self.docs.len() - live;
        let n = self.docs.len() as u64;
        util::obj(&[
            ("db_name", util::js(name)),
            ("engine", util::js("couch_bt_engine")),
            ("doc_count", live.to_string()),
            ("doc_del_count", del.to_string()),
            ("update_seq", self.update_seq.to_string()),
            ("purge_seq", "0".into()),
            ("compact_running", "false".into()),
            (
                "sizes",
                util::obj(&[
                    ("active", (254 * n.max(1)).to_string()),
                    ("external", (2 * n).to_string()),
                    ("file", (8387 + 4096 * self.update_seq).to_string()),
                ]),
            ),
            ("instance_start_time", util::js(&start_time_us.to_string())),
            ("disk_format_version", "8".into()),
            ("committed_update_seq", self.update_seq.to_string()),
            ("compacted_seq", "0".into()),
            ("props", "{}".into()),
            ("uuid", util::js(&self.uuid)),
        ])
    }
}

/// Everything a node would keep on disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Store {
    /// section → key → value (the effective ini config).
    pub config: BTreeMap<String, BTreeMap<String, String>>,
    pub nodes: LocalDb,
    pub dbs: LocalDb,
}

impl Store {
    pub fn config_get(&self, section: &str, key: &str) -> Option<String> {
        self.config.get(section).and_then(|s| s.get(key)).cloned()
    }

    pub fn config_set(&mut self, section: &str, key: &str, value: &str) -> Option<String> {
        self.config
            .entry(section.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string())
    }

    pub fn config_delete(&mut self, section: &str, key: &str) -> Option<String> {
        let old = self.config.get_mut(section).and_then(|s| s.remove(key));
        if self
            .config
            .get(section)
            .map(|s| s.is_empty())
            .unwrap_or(false)
        {
            self.config.remove(section);
        }
        old
    }

    /// `cluster_nodes`: the live docs of `_nodes`, sorted.
    pub fn cluster_nodes(&self) -> Vec<String> {
        self.nodes.live_ids()
    }

    pub fn db_exists(&self, db: &str) -> bool {
        self.dbs.get(db).is_ok()
    }

    pub fn all_dbs(&self) -> Vec<String> {
        self.dbs.live_ids()
    }

    /// `[cluster] n` (default 3) and `q` (default 2).
    pub fn cluster_n(&self) -> u64 {
        self.config_get("cluster", "n")
            .and_then(|v| v.trim().parse().ok())
            .filter(|n: &u64| *n > 0)
            .unwrap_or(3)
    }

    pub fn cluster_q(&self) -> u64 {
        self.config_get("cluster", "q")
            .and_then(|v| v.trim().parse().ok())
            .filter(|q: &u64| *q > 0)
            .unwrap_or(2)
    }

    /// The shard map of a db as `GET /db/_shards` shows it.
    pub fn shards(&self, db: &str) -> Option<BTreeMap<String, Vec<String>>> {
        let d = self.dbs.get(db).ok()?;
        shards_from_doc(&d.body)
    }
}

pub fn shards_from_doc(body: &Map<String, Value>) -> Option<BTreeMap<String, Vec<String>>> {
    let by_range = body.get("by_range")?.as_object()?;
    let mut out = BTreeMap::new();
    for (range, nodes) in by_range {
        let mut list: Vec<String> = nodes
            .as_array()?
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();
        // CouchDB lists each range's nodes in descending order (see transcripts 03 and 08).
        list.sort();
        list.reverse();
        out.insert(range.clone(), list);
    }
    Some(out)
}

/// Key ranges for `q` shards (`q = 2` → the two ranges CouchDB shows).
pub fn ranges(q: u64) -> Vec<String> {
    let q = q.clamp(1, 256);
    let top: u64 = 1 << 32;
    let step = top / q;
    (0..q)
        .map(|i| {
            let b = i * step;
            let e = if i == q - 1 {
                top - 1
            } else {
                (i + 1) * step - 1
            };
            format!("{b:08x}-{e:08x}")
        })
        .collect()
}

/// Where the copies of each range go, as mem3 does it: the member list (descending), rotated,
/// then `n` copies of each range handed out round-robin (`mem3_util:create_partition_map`).
/// mem3 rotates at random; the simulator rotates by the db name's CRC-32 so runs repeat —
/// the rule is chosen so that `griddb` over four nodes lands as in transcript 08.
pub fn place_shards(db: &str, members: &[String], n: u64, q: u64) -> BTreeMap<String, Vec<String>> {
    let mut nodes: Vec<String> = members.to_vec();
    nodes.sort();
    nodes.dedup();
    nodes.reverse();
    let mut out = BTreeMap::new();
    if nodes.is_empty() {
        return out;
    }
    let len = nodes.len();
    let rot = len - 1 - (util::crc32(db.as_bytes()) as usize % len);
    nodes.rotate_left(rot);
    let n = (n as usize).clamp(1, len);
    let mut i = 0;
    for range in ranges(q) {
        let mut copies = Vec::new();
        for _ in 0..n {
            copies.push(nodes[i % len].clone());
            i += 1;
        }
        copies.sort();
        copies.reverse();
        out.insert(range, copies);
    }
    out
}

/// The `_dbs` doc body for a shard map.
pub fn shard_doc(by_range: &BTreeMap<String, Vec<String>>, suffix: &str) -> Map<String, Value> {
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut changelog = Vec::new();
    for (range, nodes) in by_range {
        for n in nodes {
            by_node.entry(n.clone()).or_default().push(range.clone());
        }
    }
    for (node, ranges) in &by_node {
        for r in ranges {
            changelog.push(json!(["add", r, node]));
        }
    }
    let mut m = Map::new();
    m.insert(
        "shard_suffix".into(),
        json!(suffix.bytes().collect::<Vec<u8>>()),
    );
    m.insert("changelog".into(), Value::Array(changelog));
    m.insert("by_node".into(), json!(by_node));
    m.insert("by_range".into(), json!(by_range));
    m.insert("props".into(), json!({}));
    m
}

/// CouchDB's db name rule (system dbs start with `_`).
pub fn valid_db_name(name: &str) -> bool {
    const SYSTEM: [&str; 4] = ["_users", "_replicator", "_global_changes", "_metadata"];
    if SYSTEM.contains(&name) {
        return true;
    }
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_$()+-/".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn three_nodes_every_range_everywhere_descending() {
        let m = names(&["node1@127.0.0.1", "node2@127.0.0.1", "node3@127.0.0.1"]);
        for db in ["_users", "_replicator", "x"] {
            let s = place_shards(db, &m, 3, 2);
            for r in RANGES {
                assert_eq!(
                    s[r],
                    names(&["node3@127.0.0.1", "node2@127.0.0.1", "node1@127.0.0.1"])
                );
            }
        }
    }

    #[test]
    fn griddb_over_four_nodes_as_transcript_08() {
        let m = names(&[
            "node1@127.0.0.1",
            "node2@127.0.0.1",
            "node3@127.0.0.1",
            "node4@127.0.0.1",
        ]);
        let s = place_shards("griddb", &m, 3, 2);
        assert_eq!(
            s["00000000-7fffffff"],
            names(&["node4@127.0.0.1", "node3@127.0.0.1", "node1@127.0.0.1"])
        );
        assert_eq!(
            s["80000000-ffffffff"],
            names(&["node4@127.0.0.1", "node2@127.0.0.1", "node1@127.0.0.1"])
        );
    }

    #[test]
    fn n_is_capped_by_members_and_phantoms_count() {
        let s = place_shards("_users", &names(&["node3@127.0.0.1"]), 3, 2);
        assert_eq!(s["00000000-7fffffff"], names(&["node3@127.0.0.1"]));
        let s = place_shards("db", &names(&["a@x.y", "phantom@x.y"]), 3, 2);
        assert_eq!(s["00000000-7fffffff"].len(), 2);
    }

    #[test]
    fn ranges_for_q() {
        assert_eq!(ranges(2), RANGES.to_vec());
        assert_eq!(ranges(1), vec!["00000000-ffffffff".to_string()]);
        assert_eq!(ranges(4)[1], "40000000-7fffffff");
    }

    #[test]
    fn node_doc_revs_and_conflicts() {
        let mut db = LocalDb::default();
        assert_eq!(db.put("n2", None, Map::new()).unwrap(), NODE_DOC_REV1);
        assert_eq!(db.put("n2", None, Map::new()), Err(WriteError::Conflict));
        assert_eq!(db.delete("n2", Some("1-bad")), Err(WriteError::Conflict));
        assert_eq!(
            db.delete("n2", Some(NODE_DOC_REV1)).unwrap(),
            NODE_DOC_REV2_DELETED
        );
        assert_eq!(db.get("n2"), Err(WriteError::NotFound("deleted")));
        let r3 = db.put("n2", None, Map::new()).unwrap();
        assert!(r3.starts_with("3-"));
    }

    #[test]
    fn merge_keeps_the_winning_rev() {
        let mut a = LocalDb::default();
        let mut b = LocalDb::default();
        a.put("n1", None, Map::new()).unwrap();
        b.put("n1", None, Map::new()).unwrap();
        b.put("n2", None, Map::new()).unwrap();
        b.delete("n1", Some(NODE_DOC_REV1)).unwrap();
        let changed = a.merge(&b.docs);
        assert_eq!(changed, vec!["n1".to_string(), "n2".to_string()]);
        assert_eq!(a.live_ids(), vec!["n2".to_string()]);
        assert!(a.merge(&b.docs).is_empty());
        // an older rev never wins
        let mut c = LocalDb::default();
        c.put("n1", None, Map::new()).unwrap();
        assert!(a.merge(&c.docs).is_empty());
    }

    #[test]
    fn db_names() {
        assert!(valid_db_name("griddb"));
        assert!(valid_db_name("_users"));
        assert!(!valid_db_name("_foo"));
        assert!(!valid_db_name("Abc"));
        assert!(!valid_db_name("1abc"));
    }
}
