//! A database's shard map as CouchDB keeps it: one doc per database in every node's `_dbs`
//! (`GET /_node/_local/_dbs/<db>`). It is read whole and written back whole: only `by_range`,
//! `by_node`, `changelog` and this tool's own intent field change, so fields this tool does not
//! know (`props`, or none at all, as on `_replicator` in transcript 12) travel unchanged.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::ShardMap;

/// The field this tool adds to a shard map doc while a move is under way, and removes when it
/// is done. CouchDB ignores fields it does not know (mem3 reads `by_node`, `by_range`,
/// `shard_suffix`, `props`), and the field travels with the doc to every node, in the same
/// write as the new copies: a rerun after a crash learns from it which copies are new and which
/// old copies they replace. Without it, a range with one copy too many after an interrupted
/// move could not be told from a database created with a higher `n`.
pub const INTENT_FIELD: &str = "couchdb_cluster_init";

/// One copy of one range moving from `from` to `to`: the new copy is added first, and the old
/// one is removed only once the new one has caught up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Move {
    pub range: String,
    pub from: String,
    pub to: String,
}

#[derive(Serialize, Deserialize)]
struct Intent {
    moves: Vec<Move>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShardDoc {
    pub db: String,
    pub rev: String,
    /// Losing revisions: two nodes took an edit from the same `_rev` (trap 13).
    pub conflicts: Vec<String>,
    /// `.1795524961`: the part of every copy's file name after the database name.
    pub suffix: String,
    /// range → the nodes holding a copy of it, sorted.
    pub map: ShardMap,
    /// Moves an earlier run started and has not finished (this tool's intent field).
    pub moves: Vec<Move>,
    /// The doc as read, without `_conflicts`, for the write back: as compact JSON text, which
    /// holds a map in a tenth of the memory of a `Value` tree (`watch` and `status` keep every
    /// database's map at once; only an edit needs the doc again).
    body: String,
}

impl ShardDoc {
    /// A `_dbs` doc as CouchDB sends it; `Err` says what is wrong with it (never its content).
    pub fn parse(value: Value) -> Result<ShardDoc, String> {
        let Value::Object(mut body) = value else {
            return Err("a shard map that is not a JSON object".into());
        };
        let text = |body: &Map<String, Value>, key: &str| {
            body.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("a shard map without a `{key}` string"))
        };
        let db = text(&body, "_id")?;
        let rev = text(&body, "_rev")?;
        let conflicts = match body.remove("_conflicts") {
            None => Vec::new(),
            Some(v) => serde_json::from_value(v).map_err(|_| {
                format!("shard map of {db}: `_conflicts` is not a list of revisions")
            })?,
        };
        let suffix = suffix(&body).ok_or_else(|| {
            format!("shard map of {db}: `shard_suffix` is not a list of character codes")
        })?;
        let mut map: ShardMap = body
            .get("by_range")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| format!("shard map of {db}: `by_range` is not range → [node]"))?;
        let by_node: BTreeMap<String, Vec<String>> = body
            .get("by_node")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| format!("shard map of {db}: `by_node` is not node → [range]"))?;
        for nodes in map.values_mut() {
            nodes.sort();
        }
        if by_node_of(&map) != normalised(by_node) {
            return Err(format!(
                "shard map of {db}: by_node and by_range disagree (CouchDB refuses such an edit; \
                 was it written by hand?)"
            ));
        }
        let moves = match body.get(INTENT_FIELD) {
            None => Vec::new(),
            Some(v) => {
                serde_json::from_value::<Intent>(v.clone())
                    .map_err(|_| {
                        format!("shard map of {db}: `{INTENT_FIELD}` is not what this tool writes")
                    })?
                    .moves
            }
        };
        Ok(ShardDoc {
            db,
            rev,
            conflicts,
            suffix,
            map,
            moves,
            body: Value::Object(body).to_string(),
        })
    }

    /// The file that holds `range`'s copy on a node: `shards/<range>/<db><suffix>`.
    pub fn file(&self, range: &str) -> String {
        format!("shards/{range}/{}{}", self.db, self.suffix)
    }

    /// The whole doc to PUT back: `map` in `by_range` and `by_node`, one `changelog` entry per
    /// copy added or removed, and `moves` as the intent (the field is dropped when empty).
    pub fn edited(&self, map: &ShardMap, moves: &[Move]) -> String {
        // Our own serialization of an object: it parses back.
        let mut body: Map<String, Value> = serde_json::from_str(&self.body).unwrap_or_default();
        let mut changelog = body
            .get("changelog")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (range, after) in map {
            let before: BTreeSet<&String> = self.map.get(range).into_iter().flatten().collect();
            let after: BTreeSet<&String> = after.iter().collect();
            for node in after.difference(&before) {
                changelog.push(json!(["add", range, node]));
            }
            for node in before.difference(&after) {
                changelog.push(json!(["remove", range, node]));
            }
        }
        let mut sorted = map.clone();
        for nodes in sorted.values_mut() {
            nodes.sort();
        }
        body.insert("changelog".into(), Value::Array(changelog));
        body.insert("by_node".into(), json!(by_node_of(&sorted)));
        body.insert("by_range".into(), json!(sorted));
        if moves.is_empty() {
            body.remove(INTENT_FIELD);
        } else {
            body.insert(
                INTENT_FIELD.into(),
                json!(Intent {
                    moves: moves.to_vec()
                }),
            );
        }
        Value::Object(body).to_string()
    }
}

/// A shard file's name, `shards/<range>/<db><suffix>`, as `(range, db, suffix)`; `None` for a
/// node's other files (`_dbs`, `_nodes`, its own `_users`).
pub fn parse_file(name: &str) -> Option<(&str, &str, &str)> {
    let (range, db_suffix) = name.strip_prefix("shards/")?.split_once('/')?;
    // Database names hold no dot, so the suffix starts at the last one.
    let (db, suffix) = db_suffix.split_at(db_suffix.rfind('.')?);
    Some((range, db, suffix))
}

fn suffix(body: &Map<String, Value>) -> Option<String> {
    body.get("shard_suffix")?
        .as_array()?
        .iter()
        .map(|c| {
            c.as_u64()
                .and_then(|c| u8::try_from(c).ok())
                .filter(u8::is_ascii_graphic)
                .map(char::from)
        })
        .collect()
}

fn by_node_of(map: &ShardMap) -> BTreeMap<String, Vec<String>> {
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (range, nodes) in map {
        for node in nodes {
            by_node.entry(node.clone()).or_default().push(range.clone());
        }
    }
    normalised(by_node)
}

fn normalised(mut by_node: BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    by_node.retain(|_, ranges| !ranges.is_empty());
    for ranges in by_node.values_mut() {
        ranges.sort();
    }
    by_node
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /_node/_local/_dbs/moveme` in transcript 11 (the grown cluster, before the move).
    pub const MOVEME: &str = r#"{"_id":"moveme","_rev":"1-0293fe5aaf3ccc3d035c10d3a2a5654a","shard_suffix":[46,49,55,57,53,53,50,52,57,54,49],"changelog":[["add","00000000-7fffffff","node1@127.0.0.1"],["add","00000000-7fffffff","node2@127.0.0.1"],["add","00000000-7fffffff","node3@127.0.0.1"],["add","80000000-ffffffff","node1@127.0.0.1"],["add","80000000-ffffffff","node2@127.0.0.1"],["add","80000000-ffffffff","node3@127.0.0.1"]],"by_node":{"node1@127.0.0.1":["00000000-7fffffff","80000000-ffffffff"],"node2@127.0.0.1":["00000000-7fffffff","80000000-ffffffff"],"node3@127.0.0.1":["00000000-7fffffff","80000000-ffffffff"]},"by_range":{"00000000-7fffffff":["node1@127.0.0.1","node2@127.0.0.1","node3@127.0.0.1"],"80000000-ffffffff":["node1@127.0.0.1","node2@127.0.0.1","node3@127.0.0.1"]},"props":{}}"#;
    /// `GET /_node/_local/_dbs/_replicator` in transcript 12: no `props` at all.
    const REPLICATOR: &str = r#"{"_id":"_replicator","_rev":"1-b973d51d292a4549127493f03717737f","shard_suffix":[46,49,55,57,53,53,50,53,51,49,51],"changelog":[["add","00000000-7fffffff","node1@127.0.0.1"],["add","00000000-7fffffff","node2@127.0.0.1"],["add","00000000-7fffffff","node3@127.0.0.1"],["add","80000000-ffffffff","node2@127.0.0.1"],["add","80000000-ffffffff","node3@127.0.0.1"],["add","80000000-ffffffff","node4@127.0.0.1"]],"by_node":{"node1@127.0.0.1":["00000000-7fffffff"],"node2@127.0.0.1":["00000000-7fffffff","80000000-ffffffff"],"node3@127.0.0.1":["00000000-7fffffff","80000000-ffffffff"],"node4@127.0.0.1":["80000000-ffffffff"]},"by_range":{"00000000-7fffffff":["node1@127.0.0.1","node2@127.0.0.1","node3@127.0.0.1"],"80000000-ffffffff":["node2@127.0.0.1","node3@127.0.0.1","node4@127.0.0.1"]}}"#;

    fn doc(text: &str) -> ShardDoc {
        ShardDoc::parse(serde_json::from_str(text).unwrap()).unwrap()
    }

    fn n(i: u8) -> String {
        format!("node{i}@127.0.0.1")
    }

    #[test]
    fn reads_the_recorded_shard_maps() {
        let d = doc(MOVEME);
        assert_eq!(d.db, "moveme");
        assert_eq!(d.suffix, ".1795524961");
        assert_eq!(d.map["00000000-7fffffff"], [n(1), n(2), n(3)]);
        assert_eq!(
            d.file("00000000-7fffffff"),
            "shards/00000000-7fffffff/moveme.1795524961"
        );
        assert!(d.conflicts.is_empty() && d.moves.is_empty());
        let r = doc(REPLICATOR);
        assert_eq!(r.map["80000000-ffffffff"], [n(2), n(3), n(4)]);
    }

    #[test]
    fn file_names_are_built_and_read_the_same_way() {
        let d = doc(MOVEME);
        let file = d.file("80000000-ffffffff");
        assert_eq!(
            parse_file(&file),
            Some(("80000000-ffffffff", "moveme", ".1795524961"))
        );
        assert_eq!(
            parse_file("shards/00000000-7fffffff/a/b+c.17"),
            Some(("00000000-7fffffff", "a/b+c", ".17"))
        );
        for other in ["_dbs", "_nodes", "_users", "shards/x", "shards/r/nodot"] {
            assert_eq!(parse_file(other), None, "{other}");
        }
    }

    #[test]
    fn reads_conflicts() {
        let mut v: Value = serde_json::from_str(MOVEME).unwrap();
        v["_conflicts"] = json!(["9-086404764a27ab6c98d7a815d5f80c1a"]);
        let d = ShardDoc::parse(v).unwrap();
        assert_eq!(d.conflicts, ["9-086404764a27ab6c98d7a815d5f80c1a"]);
        assert!(
            !d.edited(&d.map, &[]).contains("_conflicts"),
            "never written back"
        );
    }

    #[test]
    fn an_edit_keeps_unknown_fields_and_logs_each_change() {
        let mut v: Value = serde_json::from_str(MOVEME).unwrap();
        v["props"] = json!({"partitioned": true});
        v["someone_elses"] = json!([1, 2]);
        let d = ShardDoc::parse(v).unwrap();
        let mut map = d.map.clone();
        map.get_mut("00000000-7fffffff").unwrap().push(n(4));
        let m = Move {
            range: "00000000-7fffffff".into(),
            from: n(3),
            to: n(4),
        };
        let out: Value = serde_json::from_str(&d.edited(&map, std::slice::from_ref(&m))).unwrap();
        assert_eq!(out["_id"], "moveme");
        assert_eq!(out["_rev"], "1-0293fe5aaf3ccc3d035c10d3a2a5654a");
        assert_eq!(out["props"], json!({"partitioned": true}));
        assert_eq!(out["someone_elses"], json!([1, 2]));
        assert_eq!(out["shard_suffix"].as_array().unwrap().len(), 11);
        let log = out["changelog"].as_array().unwrap();
        assert_eq!(log.len(), 7);
        assert_eq!(log[6], json!(["add", "00000000-7fffffff", n(4)]));
        assert_eq!(out["by_node"][n(4)], json!(["00000000-7fffffff"]));
        assert_eq!(
            out["by_range"]["00000000-7fffffff"],
            json!([n(1), n(2), n(3), n(4)])
        );
        // The intent travels in the doc; parsed back, it is the same move.
        let again = ShardDoc::parse(out).unwrap();
        assert_eq!(again.moves, [m]);
        // The remove edit drops the copy, logs it, and drops the intent.
        let mut done = again.map.clone();
        done.get_mut("00000000-7fffffff")
            .unwrap()
            .retain(|x| *x != n(3));
        let out: Value = serde_json::from_str(&again.edited(&done, &[])).unwrap();
        assert!(out.get(INTENT_FIELD).is_none());
        assert_eq!(
            out["changelog"].as_array().unwrap().last().unwrap(),
            &json!(["remove", "00000000-7fffffff", n(3)])
        );
        assert_eq!(out["by_node"][n(3)], json!(["80000000-ffffffff"]));
    }

    #[test]
    fn a_node_left_with_no_range_leaves_by_node() {
        let d = doc(REPLICATOR);
        let mut map = d.map.clone();
        map.get_mut("80000000-ffffffff")
            .unwrap()
            .retain(|x| *x != n(4));
        map.get_mut("80000000-ffffffff").unwrap().push(n(1));
        let out: Value = serde_json::from_str(&d.edited(&map, &[])).unwrap();
        assert!(out["by_node"].get(n(4)).is_none(), "{out}");
        assert!(out.get("props").is_none(), "no props invented");
    }

    #[test]
    fn malformed_maps_are_refused_without_echoing_them() {
        for (edit, expect) in [
            (json!({"by_range": "x"}), "by_range"),
            (json!({"shard_suffix": [46, 0]}), "shard_suffix"),
            (
                json!({"by_node": {"node1@127.0.0.1": ["00000000-7fffffff"]}}),
                "disagree",
            ),
            (json!({INTENT_FIELD: {"moves": 3}}), INTENT_FIELD),
        ] {
            let mut v: Value = serde_json::from_str(MOVEME).unwrap();
            for (k, x) in edit.as_object().unwrap() {
                v[k] = x.clone();
            }
            let e = ShardDoc::parse(v).unwrap_err();
            assert!(e.contains(expect), "{e}");
        }
    }
}
