//! One CouchDB database file: documents with revision trees (kept as their leaves, each with
//! its path of revs), an update sequence and a by-sequence index — used for the node-local
//! `_nodes` and `_dbs` and for every shard copy.
//!
//! Interactive edits need a current leaf rev (409 otherwise); replication merges leaves, so two
//! edits from the same rev become a conflict: both leaves stay, the winner is CouchDB's (not
//! deleted first, then the longer path, then the greater rev id), the others are `_conflicts`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ejson::{self, Ej};
use crate::util;

/// One branch of a document's revision tree: its leaf rev first, then its ancestors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaf {
    pub revs: Vec<String>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub body: Ej,
}

impl Leaf {
    pub fn rev(&self) -> &str {
        self.revs.first().map(String::as_str).unwrap_or("0-")
    }

    pub fn pos(&self) -> u64 {
        rev_pos(self.rev())
    }

    /// CouchDB's winner order: live before deleted, then rev position, then rev id.
    fn rank(&self) -> (bool, u64, &str) {
        (!self.deleted, self.pos(), self.rev())
    }
}

pub fn rev_pos(rev: &str) -> u64 {
    rev.split('-')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    /// Never empty; sorted winner first.
    pub leaves: Vec<Leaf>,
    /// The update sequence of its last change in this file.
    #[serde(default)]
    pub seq: u64,
}

impl Doc {
    pub fn winner(&self) -> &Leaf {
        &self.leaves[0]
    }

    pub fn rev(&self) -> &str {
        self.winner().rev()
    }

    pub fn deleted(&self) -> bool {
        self.winner().deleted
    }

    /// Live leaves other than the winner (`_conflicts`).
    pub fn conflicts(&self) -> Vec<String> {
        self.leaves[1..]
            .iter()
            .filter(|l| !l.deleted)
            .map(|l| l.rev().to_string())
            .collect()
    }

    fn sort(&mut self) {
        self.leaves.sort_by(|a, b| b.rank().cmp(&a.rank()));
    }

    fn knows(&self, rev: &str) -> bool {
        self.leaves.iter().any(|l| l.revs.iter().any(|r| r == rev))
    }

    /// Merges one replicated leaf. True when the tree changed.
    fn merge(&mut self, leaf: Leaf) -> bool {
        if leaf.revs.is_empty() || self.knows(leaf.rev()) {
            return false;
        }
        // The new leaf extends every branch whose leaf is in its path.
        self.leaves
            .retain(|l| !leaf.revs.iter().any(|r| r == l.rev()));
        self.leaves.push(leaf);
        self.sort();
        true
    }

    /// `{"_id","_rev",["_deleted"],…body,["_conflicts"]}` in CouchDB's order.
    pub fn to_json(&self, id: &str, conflicts: bool) -> Ej {
        let w = self.winner();
        let mut f = vec![
            ("_id".to_string(), Ej::from(id)),
            ("_rev".to_string(), Ej::from(w.rev())),
        ];
        if w.deleted {
            f.push(("_deleted".to_string(), Ej::Bool(true)));
        }
        if let Some(body) = w.body.fields() {
            f.extend(body.iter().cloned());
        }
        let c = self.conflicts();
        if conflicts && !c.is_empty() {
            f.push((
                "_conflicts".to_string(),
                Ej::Arr(c.iter().map(|r| Ej::from(r.as_str())).collect()),
            ));
        }
        Ej::Obj(f)
    }
}

#[derive(Debug, PartialEq)]
pub enum WriteError {
    Conflict,
    NotFound(&'static str),
}

/// One database file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DocDb {
    pub docs: BTreeMap<String, Doc>,
    #[serde(default)]
    pub update_seq: u64,
    /// update seq → doc id (the changes feed, for `_changes` and replication checkpoints).
    #[serde(default)]
    pub by_seq: BTreeMap<u64, String>,
    #[serde(default)]
    pub uuid: String,
    /// When the file was created (µs since the epoch: `instance_start_time`).
    #[serde(default)]
    pub created_us: u128,
    /// This copy's `_security` object (`None`: never written, the 3.x default applies).
    /// Kept per copy as CouchDB does; never replicated (trap 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Ej>,
}

impl DocDb {
    pub fn new(uuid: String) -> DocDb {
        DocDb {
            uuid,
            created_us: util::unix_now().as_micros(),
            ..DocDb::default()
        }
    }

    pub fn live(&self) -> impl Iterator<Item = (&String, &Doc)> {
        self.docs.iter().filter(|(_, d)| !d.deleted())
    }

    pub fn live_ids(&self) -> Vec<String> {
        self.live().map(|(k, _)| k.clone()).collect()
    }

    pub fn doc_count(&self) -> u64 {
        self.live().count() as u64
    }

    pub fn del_count(&self) -> u64 {
        self.docs.len() as u64 - self.doc_count()
    }

    pub fn get(&self, id: &str) -> Result<&Doc, WriteError> {
        match self.docs.get(id) {
            Some(d) if d.deleted() => Err(WriteError::NotFound("deleted")),
            Some(d) => Ok(d),
            None => Err(WriteError::NotFound("missing")),
        }
    }

    fn changed(&mut self, id: &str) {
        self.update_seq += 1;
        let seq = self.update_seq;
        if let Some(d) = self.docs.get_mut(id) {
            let old = std::mem::replace(&mut d.seq, seq);
            self.by_seq.remove(&old);
        }
        self.by_seq.insert(seq, id.to_string());
    }

    /// An interactive edit: `rev` must be a current leaf (none: a new doc, or one whose
    /// winner is deleted). Returns the new rev.
    pub fn update(
        &mut self,
        id: &str,
        rev: Option<&str>,
        body: Ej,
        deleted: bool,
    ) -> Result<String, WriteError> {
        let base = match (self.docs.get(id), rev) {
            (None, None) => None,
            (None, Some(_)) => return Err(WriteError::Conflict),
            (Some(d), None) if d.deleted() => Some(d.winner().clone()),
            (Some(_), None) => return Err(WriteError::Conflict),
            (Some(d), Some(r)) => match d.leaves.iter().find(|l| l.rev() == r) {
                Some(l) if !(l.deleted && deleted) => Some(l.clone()),
                _ => return Err(WriteError::Conflict),
            },
        };
        let prev = base.as_ref().map(|l| l.rev().to_string());
        let new_rev = ejson::new_rev(deleted, prev.as_deref(), &body);
        let mut revs = vec![new_rev.clone()];
        if let Some(b) = &base {
            revs.extend(b.revs.iter().cloned());
        }
        // A tombstone keeps the body it was written with (`owner`, on a `_replicator` doc).
        let leaf = Leaf {
            revs,
            deleted,
            body,
        };
        match self.docs.get_mut(id) {
            Some(d) => {
                d.merge(leaf);
            }
            None => {
                self.docs.insert(
                    id.to_string(),
                    Doc {
                        leaves: vec![leaf],
                        seq: 0,
                    },
                );
            }
        }
        self.changed(id);
        Ok(new_rev)
    }

    /// PUT semantics (a new doc needs no rev, an existing one its current rev).
    pub fn put(&mut self, id: &str, rev: Option<&str>, body: Ej) -> Result<String, WriteError> {
        self.update(id, rev, body, false)
    }

    /// DELETE semantics: 404 when the doc is missing or deleted, 409 on a rev that is not a
    /// live leaf (deleting a losing leaf resolves a conflict).
    pub fn delete(&mut self, id: &str, rev: Option<&str>) -> Result<String, WriteError> {
        self.get(id)?;
        match rev {
            Some(r) => self.update(id, Some(r), Ej::empty(), true),
            None => Err(WriteError::Conflict),
        }
    }

    /// Replication: merges every leaf of every incoming doc. Returns the ids that changed.
    pub fn merge(&mut self, incoming: &BTreeMap<String, Vec<Leaf>>) -> Vec<String> {
        let mut changed = Vec::new();
        for (id, leaves) in incoming {
            let mut any = false;
            for leaf in leaves {
                any |= match self.docs.get_mut(id) {
                    Some(d) => d.merge(leaf.clone()),
                    None if !leaf.revs.is_empty() => {
                        self.docs.insert(
                            id.clone(),
                            Doc {
                                leaves: vec![leaf.clone()],
                                seq: 0,
                            },
                        );
                        true
                    }
                    None => false,
                };
            }
            if any {
                self.changed(id);
                changed.push(id.clone());
            }
        }
        changed
    }

    /// Every doc changed after `since`, with all its leaves (what a push sends).
    pub fn leaves_since(&self, since: u64) -> BTreeMap<String, Vec<Leaf>> {
        self.by_seq
            .range(since + 1..)
            .filter_map(|(_, id)| self.docs.get(id).map(|d| (id.clone(), d.leaves.clone())))
            .collect()
    }

    /// `_all_docs` of this file, one page of it, as CouchDB streams it.
    pub fn all_docs(&self, page: &Page) -> String {
        page.body(self.live(), self.doc_count())
    }

    /// A database file's info (`GET /_node/<node>/<file>`), in CouchDB's key order.
    pub fn info(&self, name: &str) -> String {
        let n = self.docs.len() as u64;
        util::obj(&[
            ("db_name", util::js(name)),
            ("engine", util::js("couch_bt_engine")),
            ("doc_count", self.doc_count().to_string()),
            ("doc_del_count", self.del_count().to_string()),
            ("update_seq", self.update_seq.to_string()),
            ("purge_seq", "0".into()),
            ("compact_running", "false".into()),
            (
                "sizes",
                util::obj(&[
                    ("active", (254 * n.max(1) + 150 * n).to_string()),
                    ("external", (2 * n + 8 * n).to_string()),
                    ("file", (8387 + 4096 * self.update_seq).to_string()),
                ]),
            ),
            (
                "instance_start_time",
                util::js(&self.created_us.to_string()),
            ),
            ("disk_format_version", "8".into()),
            ("committed_update_seq", self.update_seq.to_string()),
            ("compacted_seq", "0".into()),
            ("props", "{}".into()),
            ("uuid", util::js(&self.uuid)),
        ])
    }
}

/// What an `_all_docs` request asks for: `include_docs`, `conflicts` (with `include_docs`:
/// each doc's `_conflicts`), `startkey`/`endkey` (inclusive), `skip`, `limit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub include_docs: bool,
    pub conflicts: bool,
    pub start: Option<String>,
    pub end: Option<String>,
    pub skip: usize,
    pub limit: Option<usize>,
}

impl Page {
    /// The body for `docs` (live docs in id order; `total`: how many the db holds):
    /// `{"total_rows":N,"offset":K,"rows":[\r\n…\r\n]}` with `offset` the rows before the
    /// first one shown.
    pub fn body<'a>(
        &self,
        docs: impl Iterator<Item = (&'a String, &'a Doc)>,
        total: u64,
    ) -> String {
        let (mut offset, mut skipped, mut rows) = (0, 0, Vec::new());
        for (id, d) in docs {
            if self.start.as_ref().is_some_and(|s| id < s) {
                offset += 1;
                continue;
            }
            if self.end.as_ref().is_some_and(|e| id > e) {
                break;
            }
            if skipped < self.skip {
                skipped += 1;
                offset += 1;
                continue;
            }
            if self.limit.is_some_and(|l| rows.len() >= l) {
                break;
            }
            rows.push(self.row(id, d));
        }
        format!(
            "{{\"total_rows\":{total},\"offset\":{offset},\"rows\":[\r\n{}\r\n]}}",
            rows.join(",\r\n")
        )
    }

    /// One row: `{"id","key","value":{"rev"}[,"doc"]}`.
    pub fn row(&self, id: &str, d: &Doc) -> String {
        let mut f = vec![
            ("id", util::js(id)),
            ("key", util::js(id)),
            ("value", util::obj(&[("rev", util::js(d.rev()))])),
        ];
        if self.include_docs {
            f.push(("doc", d.to_json(id, self.conflicts).text()));
        }
        util::obj(&f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: &str = "1-967a00dff5e02add41819138abb3284d";
    const R2D: &str = "2-eec205a9d413992850a6e32678485900";

    fn body(s: &str) -> Ej {
        Ej::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn node_doc_revs_and_conflicts() {
        let mut db = DocDb::default();
        assert_eq!(db.put("n2", None, Ej::empty()).unwrap(), R1);
        assert_eq!(db.put("n2", None, Ej::empty()), Err(WriteError::Conflict));
        assert_eq!(db.delete("n2", Some("1-bad")), Err(WriteError::Conflict));
        assert_eq!(db.delete("n2", Some(R1)).unwrap(), R2D);
        assert_eq!(db.get("n2"), Err(WriteError::NotFound("deleted")));
        // a second DELETE, with the old rev or none: 404 deleted (transcript 12)
        assert_eq!(
            db.delete("n2", Some(R1)),
            Err(WriteError::NotFound("deleted"))
        );
        assert_eq!(db.delete("n2", None), Err(WriteError::NotFound("deleted")));
        // re-created on top of the deletion (mem3_nodes' insert_if_missing)
        assert_eq!(
            db.put("n2", None, Ej::empty()).unwrap(),
            "3-5570e8bbb34412db757c2df4bfa1099b"
        );
        assert_eq!(db.update_seq, 3);
        assert_eq!(db.by_seq.len(), 1);
    }

    #[test]
    fn two_edits_from_one_rev_conflict_and_the_greater_rev_wins() {
        let mut a = DocDb::default();
        let r1 = a.put("m", None, body(r#"{"v":0}"#)).unwrap();
        let mut b = a.clone();
        let ra = a.put("m", Some(&r1), body(r#"{"v":"a"}"#)).unwrap();
        let rb = b.put("m", Some(&r1), body(r#"{"v":"b"}"#)).unwrap();
        let la = a.leaves_since(0);
        let lb = b.leaves_since(0);
        assert_eq!(a.merge(&lb), vec!["m".to_string()]);
        assert_eq!(b.merge(&la), vec!["m".to_string()]);
        let (win, lose) = if ra > rb { (&ra, &rb) } else { (&rb, &ra) };
        for db in [&a, &b] {
            let d = db.get("m").unwrap();
            assert_eq!(d.rev(), win);
            assert_eq!(d.conflicts(), vec![lose.clone()]);
        }
        assert!(a.merge(&lb).is_empty(), "merging again changes nothing");
        // deleting the loser resolves the conflict; the winner stays
        let r = a.delete("m", Some(lose)).unwrap();
        assert!(r.starts_with("3-"));
        let d = a.get("m").unwrap();
        assert_eq!(d.rev(), win);
        assert!(d.conflicts().is_empty());
        // the resolution replicates
        assert_eq!(b.merge(&a.leaves_since(0)), vec!["m".to_string()]);
        assert!(b.get("m").unwrap().conflicts().is_empty());
    }

    #[test]
    fn merge_extends_and_never_goes_back() {
        let mut a = DocDb::default();
        a.put("n1", None, Ej::empty()).unwrap();
        let old = a.leaves_since(0);
        a.delete("n1", Some(R1)).unwrap();
        let mut c = DocDb::default();
        c.merge(&old);
        assert_eq!(c.merge(&a.leaves_since(0)), vec!["n1".to_string()]);
        assert!(c.live_ids().is_empty());
        assert!(c.merge(&old).is_empty(), "an ancestor never wins");
        assert_eq!(c.del_count(), 1);
    }

    #[test]
    fn json_shapes() {
        let mut db = DocDb::new("u".into());
        db.put("doc000", None, body(r#"{"n":0}"#)).unwrap();
        assert_eq!(
            db.get("doc000").unwrap().to_json("doc000", true).text(),
            r#"{"_id":"doc000","_rev":"1-6a1adde9be9cd8e7d5ef76edc6836391","n":0}"#
        );
        assert_eq!(
            db.all_docs(&Page::default()),
            "{\"total_rows\":1,\"offset\":0,\"rows\":[\r\n{\"id\":\"doc000\",\"key\":\"doc000\",\"value\":{\"rev\":\"1-6a1adde9be9cd8e7d5ef76edc6836391\"}}\r\n]}"
        );
        assert!(db
            .info("shards/x")
            .contains(r#""doc_count":1,"doc_del_count":0,"update_seq":1"#));
    }
}
