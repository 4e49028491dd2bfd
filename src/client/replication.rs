//! The calls backup needs: a database's document counts, creating a database on the backup
//! CouchDB, writing a `_replicator` doc, and what the replication scheduler says about every
//! `_replicator` doc.
//!
//! `_replicator` docs hold both passwords in clear (trap 21): they are written here, and read
//! back only to be compared with what would be written now — the passwords never leave this
//! file. The scheduler's answers carry no credentials, but every text taken from them is
//! scrubbed of `user:password@` all the same, and an error is cut to one short line.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse, segment, Client, NodeResult};
use crate::util::config::{NodeAddr, Secret};

/// The longest scheduler error passed on: CouchDB's are Erlang terms, some of them kilobytes.
const MAX_ERROR: usize = 300;

/// A database's documents, as `GET /<db>` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct DbCounts {
    pub doc_count: u64,
    pub doc_del_count: u64,
}

impl DbCounts {
    /// Live and deleted documents. Deletions replicate as tombstones, so a target that has
    /// caught up holds at least its source's total (purges aside).
    pub fn total(&self) -> u64 {
        self.doc_count + self.doc_del_count
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum DbCreated {
    Created,
    /// 412 `file_exists`: someone created it meanwhile.
    Existed,
}

/// One end of a replication, with the credentials the job will use there.
pub struct Endpoint<'a> {
    pub node: &'a NodeAddr,
    pub db: &'a str,
    pub user: &'a str,
    pub password: &'a Secret,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    /// Written, at this revision: on a quorum of the range's copies (201), or on fewer (202,
    /// trap 27), the others getting it by internal replication.
    Created(String),
    /// 409: a doc with this id exists already (transcript 14: the same `_id` again → 409), or
    /// the revision written over is no longer the doc's.
    AlreadyThere,
}

/// What `GET /_scheduler/docs` says about one `_replicator` doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerDoc {
    pub doc_id: String,
    /// The member the job runs on.
    pub node: Option<String>,
    /// CouchDB's own URLs, without credentials and with a final `/`.
    pub source: String,
    pub target: String,
    /// `None` until the scheduler has looked at the doc; then `initializing`, `running`,
    /// `pending`, `crashing`, `error`, `failed` or `completed`.
    pub state: Option<String>,
    /// The last error, one line, scrubbed.
    pub error: Option<String>,
    pub error_count: u64,
    pub last_updated: Option<String>,
}

impl SchedulerDoc {
    /// Does this doc's replication write into `db` on `node`?
    pub fn writes_to(&self, node: &NodeAddr, db: &str) -> bool {
        self.target.trim_end_matches('/') == db_url(node, db)
    }

    /// Does it read from `db` at `node`?
    pub fn reads_from(&self, node: &NodeAddr, db: &str) -> bool {
        self.source.trim_end_matches('/') == db_url(node, db)
    }
}

/// The `_replicator` doc of a continuous replication, with both passwords in it.
fn replication_doc(source: &Endpoint, target: &Endpoint) -> Value {
    let end = |e: &Endpoint| {
        json!({
            "url": db_url(e.node, e.db),
            "auth": {"basic": {"username": e.user, "password": e.password.expose()}},
        })
    };
    json!({"source": end(source), "target": end(target), "continuous": true})
}

/// The `_replicator` doc of a one-shot replication (a restore's), with both passwords in it.
fn one_shot_doc(source: &Endpoint, target: &Endpoint) -> Value {
    let mut doc = replication_doc(source, target);
    if let Some(o) = doc.as_object_mut() {
        o.remove("continuous");
    }
    doc
}

/// Where a one-shot `_replicator` doc stands, read from the doc itself: CouchDB writes
/// `completed` (or `failed`) into it (trap 26); the passwords it holds are not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneShotDoc {
    pub rev: String,
    /// `completed`, `failed`, or `None` while it runs (its progress is in the scheduler).
    pub state: Option<String>,
    /// Why it failed, one line, scrubbed.
    pub reason: Option<String>,
    pub docs_written: u64,
}

/// `http://host:port/<db>`, the database's name as one path segment.
pub fn db_url(node: &NodeAddr, db: &str) -> String {
    format!("{}/{}", node.url, segment(db))
}

impl Client {
    /// `db`'s document counts on `node`; `None` if it has no such database.
    pub fn db_counts(&self, node: &NodeAddr, db: &str) -> NodeResult<Option<DbCounts>> {
        let what = format!("GET /{db}");
        let (status, body) =
            self.call(node, "GET", &format!("/{}", segment(db)), None, true, &what)?;
        match status {
            200 => parse(node, &what, &body).map(Some),
            404 => Ok(None),
            _ => Err(self.unexpected(node, &what, status, &body)),
        }
    }

    /// The server's `[couchdb] uuid` (admin only): a cluster's members share it once
    /// `finish_cluster` has copied it, a separate CouchDB has its own.
    pub fn server_uuid(&self, node: &NodeAddr) -> NodeResult<Option<String>> {
        let what = "GET /_node/_local/_config/couchdb/uuid";
        let (status, body) = self.call(
            node,
            "GET",
            "/_node/_local/_config/couchdb/uuid",
            None,
            true,
            what,
        )?;
        match status {
            200 => parse(node, what, &body).map(Some),
            404 => Ok(None),
            _ => Err(self.unexpected(node, what, status, &body)),
        }
    }

    /// `PUT /<db>[?q=N]`. On a standalone node that is all a replication target needs
    /// (transcript 14; no `enable_single_node`, which re-hashes the admin password: trap 19); on
    /// a cluster, a database with the cluster's `n` and this `q` (the cluster's default without).
    pub fn create_db_q(&self, node: &NodeAddr, db: &str, q: Option<u32>) -> NodeResult<DbCreated> {
        let what = format!("PUT /{db}");
        let path = match q {
            Some(q) => format!("/{}?q={q}", segment(db)),
            None => format!("/{}", segment(db)),
        };
        let (status, body) = self.call(node, "PUT", &path, None, true, &what)?;
        match status {
            // 202: some copies' files were not made at once (a node slow to answer). The shard
            // map is on every member before the answer, a write creates a missing file, and
            // what the callers promise is read back: restore's verify counts the documents,
            // backup's arrival too; a standalone backup holds every copy itself.
            201 | 202 => Ok(DbCreated::Created),
            412 => Ok(DbCreated::Existed),
            _ => Err(self.unexpected(node, &what, status, &body)),
        }
    }

    /// Writes a continuous replication as `_replicator/<id>`: a new doc (`rev` `None`), unless
    /// one with that id exists; or a new revision of the doc at `rev`, unless it changed since.
    /// The body holds both passwords: it is built here, sent, and never logged or kept.
    pub fn put_replication(
        &self,
        node: &NodeAddr,
        id: &str,
        source: &Endpoint,
        target: &Endpoint,
        rev: Option<&str>,
    ) -> NodeResult<Put> {
        let mut doc = replication_doc(source, target);
        if let Some(rev) = rev {
            doc["_rev"] = rev.into();
        }
        self.put_replicator_doc(node, id, &doc)
    }

    /// Writes a one-shot replication as a new `_replicator/<id>` (no `continuous`): it runs
    /// once, and CouchDB writes its outcome into the doc. 409: the id is taken (a one-shot id
    /// is done for good, trap 26: use a fresh one). The body holds both passwords: built here,
    /// sent, never logged or kept.
    pub fn put_one_shot(
        &self,
        node: &NodeAddr,
        id: &str,
        source: &Endpoint,
        target: &Endpoint,
    ) -> NodeResult<Put> {
        let doc = one_shot_doc(source, target);
        self.put_replicator_doc(node, id, &doc)
    }

    /// `PUT /_replicator/<id>`; 409 (taken, or changed since `_rev`) is an answer, not an error.
    fn put_replicator_doc(&self, node: &NodeAddr, id: &str, doc: &Value) -> NodeResult<Put> {
        #[derive(Deserialize)]
        struct Written {
            rev: String,
        }
        let what = format!("PUT /_replicator/{id}");
        let path = format!("/_replicator/{}", segment(id));
        let (status, body) = self.call(node, "PUT", &path, Some(&doc.to_string()), true, &what)?;
        match status {
            201 | 202 => Ok(Put::Created(parse::<Written>(node, &what, &body)?.rev)),
            409 => Ok(Put::AlreadyThere),
            _ => Err(self.unexpected(node, &what, status, &body)),
        }
    }

    /// `GET /_replicator/<id>`; `None` when there is no such doc.
    fn replicator_doc(&self, node: &NodeAddr, id: &str) -> NodeResult<Option<Value>> {
        let what = format!("GET /_replicator/{id}");
        let path = format!("/_replicator/{}", segment(id));
        let (status, body) = self.call(node, "GET", &path, None, true, &what)?;
        match status {
            200 => parse(node, &what, &body).map(Some),
            404 => Ok(None),
            _ => Err(self.unexpected(node, &what, status, &body)),
        }
    }

    /// `_replicator/<id>` as a one-shot's outcome; `None` when there is no such doc.
    pub fn one_shot(&self, node: &NodeAddr, id: &str) -> NodeResult<Option<OneShotDoc>> {
        let Some(doc) = self.replicator_doc(node, id)? else {
            return Ok(None);
        };
        let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Some(OneShotDoc {
            rev: text("_rev").unwrap_or_default(),
            state: text("_replication_state"),
            reason: text("_replication_state_reason").map(|r| scrub(&r)),
            docs_written: doc
                .get("_replication_stats")
                .and_then(|s| s.get("docs_written"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
        }))
    }

    /// `DELETE /_replicator/<id>?rev=`: a finished one-shot's doc, whose passwords should not
    /// stay (trap 21). Gone already, or changed meanwhile: not an error. Not "gone everywhere"
    /// either, even at 200: the copies that lacked the revision deleted (the replicator wrote
    /// its state into one copy: 202, trap 27) keep the doc live; the caller waits for every
    /// copy (`cluster::everywhere`).
    pub fn delete_replication(&self, node: &NodeAddr, id: &str, rev: &str) -> NodeResult<()> {
        let what = format!("DELETE /_replicator/{id}");
        let path = format!("/_replicator/{}?rev={}", segment(id), segment(rev));
        let (status, body) = self.call(node, "DELETE", &path, None, true, &what)?;
        match status {
            200 | 202 | 404 | 409 => Ok(()),
            _ => Err(self.unexpected(node, &what, status, &body)),
        }
    }

    /// The revision of `_replicator/<id>` if it replicates between `source`'s and `target`'s
    /// URLs with other credentials than theirs — a password changed since it was written, and
    /// its job gets 401s; `None` when they are the same, when it replicates between other URLs
    /// (not a credential to renew), or when there is no such doc.
    pub fn outdated_replication(
        &self,
        node: &NodeAddr,
        id: &str,
        source: &Endpoint,
        target: &Endpoint,
    ) -> NodeResult<Option<String>> {
        let Some(doc) = self.replicator_doc(node, id)? else {
            return Ok(None);
        };
        let now = replication_doc(source, target);
        let url = |doc: &Value, end: &str| doc.get(end).and_then(|e| e.get("url")).cloned();
        let same_urls = ["source", "target"]
            .iter()
            .all(|end| url(&doc, end) == url(&now, end));
        let same = ["source", "target", "continuous"]
            .iter()
            .all(|key| doc.get(key) == now.get(key));
        Ok(match doc.get("_rev").and_then(Value::as_str) {
            Some(rev) if same_urls && !same => Some(rev.to_string()),
            _ => None,
        })
    }

    /// Every doc of the cluster's `_replicator`, with the state of its replication. Any member
    /// answers the same (transcript 14).
    pub fn scheduler_docs(&self, node: &NodeAddr) -> NodeResult<Vec<SchedulerDoc>> {
        #[derive(Deserialize)]
        struct Raw {
            doc_id: String,
            #[serde(default)]
            node: Option<String>,
            #[serde(default)]
            source: Option<String>,
            #[serde(default)]
            target: Option<String>,
            #[serde(default)]
            state: Option<String>,
            #[serde(default)]
            info: Option<Value>,
            #[serde(default)]
            error_count: Option<u64>,
            #[serde(default)]
            last_updated: Option<String>,
        }
        #[derive(Deserialize)]
        struct Docs {
            docs: Vec<Raw>,
        }
        let what = "GET /_scheduler/docs";
        let docs: Docs = self.get(node, "/_scheduler/docs", what)?;
        Ok(docs
            .docs
            .into_iter()
            .map(|d| SchedulerDoc {
                doc_id: d.doc_id,
                node: d.node,
                source: scrub(d.source.as_deref().unwrap_or("")),
                target: scrub(d.target.as_deref().unwrap_or("")),
                state: d.state,
                error: d
                    .info
                    .as_ref()
                    .and_then(|i| i.get("error"))
                    .map(|e| match e {
                        Value::String(s) => scrub(s),
                        other => scrub(&other.to_string()),
                    }),
                error_count: d.error_count.unwrap_or(0),
                last_updated: d.last_updated,
            })
            .collect())
    }
}

/// One short line without credentials: `scheme://user:password@host` loses its user part,
/// whitespace runs become one space, and the end is cut.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ERROR));
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| "/\"' ,}]>\\".contains(c) || c.is_whitespace())
            .unwrap_or(tail.len());
        rest = match tail[..authority_end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***@");
                &tail[userinfo_end + 1..]
            }
            None => tail,
        };
    }
    out.push_str(rest);
    let line = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > MAX_ERROR {
        line.chars().take(MAX_ERROR).collect::<String>() + "…"
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_drops_userinfo_and_folds_erlang_terms() {
        assert_eq!(
            scrub("Failure on target commit: {'EXIT',\n    {http_request_failed,\"POST\",\n        \"http://admin:s3cret@127.0.0.1:55984/app_backup/_ensure_full_commit\"}}"),
            "Failure on target commit: {'EXIT', {http_request_failed,\"POST\", \"http://***@127.0.0.1:55984/app_backup/_ensure_full_commit\"}}"
        );
        assert_eq!(
            scrub("http://127.0.0.1:15984/app/"),
            "http://127.0.0.1:15984/app/"
        );
        assert_eq!(scrub("http://u:p@h"), "http://***@h");
        assert_eq!(scrub("no url here"), "no url here");
        let long = "x".repeat(1000);
        assert_eq!(scrub(&long).chars().count(), MAX_ERROR + 1);
    }

    #[test]
    fn targets_compare_without_the_final_slash() {
        let node = NodeAddr {
            label: "b".into(),
            url: "http://b:5984".into(),
        };
        let doc = SchedulerDoc {
            doc_id: "x".into(),
            node: None,
            source: "http://c:5984/a%2Fb/".into(),
            target: "http://b:5984/a%2Fb/".into(),
            state: None,
            error: None,
            error_count: 0,
            last_updated: None,
        };
        assert!(doc.writes_to(&node, "a/b") && !doc.writes_to(&node, "a"));
        assert!(!doc.reads_from(&node, "a/b"));
    }
}
