//! The calls the operations after formation need (status, remove, rebalance): shard maps, one
//! copy's own counts, internal replication, `_nodes` docs. Every node-scoped request goes
//! through one address as `/_node/<name>/…`: any member forwards it over Erlang to the node it
//! names, so members that are not in COUCHDB_NODES can be asked too.

use serde::Deserialize;
use serde_json::Value;

use super::shard_doc::ShardDoc;
use super::{parse, AllDocs, Client, NodeError, NodeResult};
use crate::util::config::NodeAddr;

/// Shard map docs per `_all_docs` page: a few hundred KB at most.
const PAGE: usize = 500;
const SHARD_DOCS: &str = "GET /_node/_local/_dbs/_all_docs";

/// One copy's own counts (`GET /_node/<node>/shards%2F<range>%2F<db><suffix>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct CopyInfo {
    pub doc_count: u64,
    pub doc_del_count: u64,
    #[serde(default)]
    pub sizes: CopySizes,
}

/// A copy's `sizes`: `file` is the bytes its shard file takes on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct CopySizes {
    #[serde(default)]
    pub file: u64,
}

/// What a node says about one of its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    Present(CopyInfo),
    /// The node answers, but has no such file (not created yet, or deleted).
    Missing,
    /// 412 `nodedown`: the node is not connected to the one we asked.
    NodeDown,
}

/// Every database's shard map, and apart from them the maps this tool cannot read: one odd map
/// (written by hand, or by another tool; CouchDB checks little, trap 12) must not hide the rest.
#[derive(Debug, Default)]
pub struct ShardDocs {
    pub docs: Vec<ShardDoc>,
    pub unreadable: Vec<Unreadable>,
}

/// A shard map that could not be read: its database, and why (never its content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub db: String,
    pub why: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard map of {}: {}", self.db, self.why)
    }
}

/// What one copy holds of a document, in that copy alone (no other copy asked, nothing
/// repaired): its winning revision, live or deleted, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyDoc {
    Missing,
    Live(String),
    Deleted(String),
}

impl CopyDoc {
    /// The generation (`3` of `3-…`) of a live winner; `None` when deleted or missing.
    pub fn live_generation(&self) -> Option<u64> {
        match self {
            CopyDoc::Live(rev) => Some(generation(rev)),
            _ => None,
        }
    }
}

/// `3` of the revision `3-…` (0 for what is no revision).
pub fn generation(rev: &str) -> u64 {
    rev.split('-')
        .next()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Saved {
    Rev(String),
    /// 409: the doc changed since it was read.
    Conflict,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Gone {
    Deleted,
    /// 404: already deleted (or never there).
    Already,
    /// 409: the revision is no longer current.
    Conflict,
}

/// A name or file as one path segment: `/` becomes `%2F` (CouchDB needs it for `shards/…` and
/// for database names holding `/`), and so do `+`, `$`, `(` and `)`. `@` stays, as in the
/// transcripts' `/_node/node1@127.0.0.1/…`.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// Every database's shard map, as `via` has them, with conflicts; an error only when
    /// there is one that cannot be read (for the steps that must see every map).
    pub fn all_shard_docs(&self, via: &NodeAddr) -> NodeResult<Vec<ShardDoc>> {
        let read = self.shard_docs(via)?;
        match read.unreadable.first() {
            None => Ok(read.docs),
            Some(odd) => Err(malformed(via, SHARD_DOCS, &odd.to_string())),
        }
    }

    /// Every database's shard map, as `via` has them, with conflicts; those that cannot be
    /// read are named apart.
    pub fn shard_docs(&self, via: &NodeAddr) -> NodeResult<ShardDocs> {
        let mut read = ShardDocs::default();
        let mut start: Option<String> = None;
        loop {
            let mut path = format!(
                "/_node/_local/_dbs/_all_docs?include_docs=true&conflicts=true&limit={}",
                PAGE + 1
            );
            if let Some(id) = &start {
                path += &format!(
                    "&startkey={}",
                    segment(&Value::from(id.as_str()).to_string())
                );
            }
            let page: AllDocs = self.get(via, &path, SHARD_DOCS)?;
            let mut rows = page.rows;
            // One row more than a page says there is another page, which starts with it. A
            // server that ignored `limit` sent everything at once.
            start = if rows.len() == PAGE + 1 {
                rows.pop().map(|r| r.id)
            } else {
                None
            };
            for row in rows {
                if row.id.starts_with("_design/") {
                    continue;
                }
                let parsed = match row.doc {
                    Some(doc) => ShardDoc::parse(doc),
                    None => Err("a row without its doc".into()),
                };
                match parsed {
                    Ok(doc) => read.docs.push(doc),
                    Err(why) => {
                        let prefix = format!("shard map of {}: ", row.id);
                        let why = why.strip_prefix(&prefix).unwrap_or(&why).to_string();
                        read.unreadable.push(Unreadable { db: row.id, why });
                    }
                }
            }
            if start.is_none() {
                return Ok(read);
            }
        }
    }

    /// `db`'s shard map as node `on` (a member's name, or `_local`) has it, with conflicts;
    /// `None` if that node has no such database.
    pub fn shard_doc(&self, via: &NodeAddr, on: &str, db: &str) -> NodeResult<Option<ShardDoc>> {
        let path = format!("/_node/{}/_dbs/{}?conflicts=true", segment(on), segment(db));
        self.shard_doc_at(via, &path, &format!("GET {on}'s shard map of {db}"))
    }

    /// One revision of `db`'s shard map on `via`: what a losing edit would have made it.
    pub fn shard_doc_rev(
        &self,
        via: &NodeAddr,
        db: &str,
        rev: &str,
    ) -> NodeResult<Option<ShardDoc>> {
        let path = format!("/_node/_local/_dbs/{}?rev={}", segment(db), segment(rev));
        self.shard_doc_at(
            via,
            &path,
            &format!("GET revision {rev} of the shard map of {db}"),
        )
    }

    fn shard_doc_at(&self, via: &NodeAddr, path: &str, what: &str) -> NodeResult<Option<ShardDoc>> {
        let (status, body) = self.call(via, "GET", path, None, true, what)?;
        match status {
            200 => {
                let value: Value = parse(via, what, &body)?;
                ShardDoc::parse(value)
                    .map(Some)
                    .map_err(|e| malformed(via, what, &e))
            }
            404 => Ok(None),
            412 => Err(node_down(via, what, &body)),
            _ => Err(self.unexpected(via, what, status, &body)),
        }
    }

    /// PUT an edited shard map (the text from `ShardDoc::edited`) on `via` only (trap 13).
    pub fn put_shard_doc(&self, via: &NodeAddr, db: &str, doc: &str) -> NodeResult<Saved> {
        #[derive(Deserialize)]
        struct Created {
            rev: String,
        }
        let what = format!("PUT the shard map of {db}");
        let path = format!("/_node/_local/_dbs/{}", segment(db));
        let (status, body) = self.call(via, "PUT", &path, Some(doc), true, &what)?;
        match status {
            // `_dbs` is node-local: a 202 means no copy fell short. The edit reaches the other
            // members round the ring, and the move engine waits until every connected member
            // has this revision before it relies on it (moves.rs).
            201 | 202 => Ok(Saved::Rev(parse::<Created>(via, &what, &body)?.rev)),
            409 => Ok(Saved::Conflict),
            _ => Err(self.unexpected(via, &what, status, &body)),
        }
    }

    /// Deletes one (losing) revision of `db`'s shard map: how a conflict is resolved.
    pub fn delete_shard_doc_rev(&self, via: &NodeAddr, db: &str, rev: &str) -> NodeResult<Gone> {
        let what = format!("DELETE revision {rev} of the shard map of {db}");
        let path = format!("/_node/_local/_dbs/{}?rev={}", segment(db), segment(rev));
        self.delete(via, &path, &what)
    }

    /// `POST /<db>/_sync_shards`: every copy of every range pushes to every other (202).
    pub fn sync_shards(&self, via: &NodeAddr, db: &str) -> NodeResult<()> {
        let what = format!("POST /{db}/_sync_shards");
        let path = format!("/{}/_sync_shards", segment(db));
        let (status, body) = self.call(via, "POST", &path, None, true, &what)?;
        match status {
            // 202 is its answer: the pushes start. Nothing is promised from it; the callers
            // read each copy's counts (moves) or contents (everywhere.rs) afterwards.
            200 | 202 => Ok(()),
            _ => Err(self.unexpected(via, &what, status, &body)),
        }
    }

    /// One copy's own counts: the only way to see whether a new copy has filled (trap 11).
    pub fn copy(&self, via: &NodeAddr, node: &str, file: &str) -> NodeResult<CopyState> {
        let what = format!("GET {file} on {node}");
        let path = format!("/_node/{}/{}", segment(node), segment(file));
        let (status, body) = self.call(via, "GET", &path, None, true, &what)?;
        match status {
            200 => Ok(CopyState::Present(parse(via, &what, &body)?)),
            404 => Ok(CopyState::Missing),
            412 => Ok(CopyState::NodeDown),
            _ => Err(self.unexpected(via, &what, status, &body)),
        }
    }

    /// The range of `db` that holds `id`, and the nodes holding its copies
    /// (`GET /<db>/_shards/<id>`).
    pub fn doc_range(
        &self,
        via: &NodeAddr,
        db: &str,
        id: &str,
    ) -> NodeResult<(String, Vec<String>)> {
        #[derive(Deserialize)]
        struct Place {
            range: String,
            nodes: Vec<String>,
        }
        let what = format!("GET /{db}/_shards/{id}");
        let path = format!("/{}/_shards/{}", segment(db), segment(id));
        let place: Place = self.get(via, &path, &what)?;
        Ok((place.range, place.nodes))
    }

    /// What `node`'s copy `file` holds of each of `ids`
    /// (`GET /_node/<node>/<file>/_all_docs?keys=[…]`: that file alone, as transcript 18 checks
    /// a copy — there with `POST`, the same query; as a GET it is plainly a read — and no
    /// document body, so no password, comes back). A node without the file holds none of
    /// them. 412: the node is not connected to `via`.
    pub fn copy_docs(
        &self,
        via: &NodeAddr,
        node: &str,
        file: &str,
        ids: &[String],
    ) -> NodeResult<Vec<CopyDoc>> {
        #[derive(Deserialize)]
        struct Rows {
            rows: Vec<Row>,
        }
        #[derive(Deserialize)]
        struct Row {
            #[serde(default)]
            value: Option<RowValue>,
        }
        #[derive(Deserialize)]
        struct RowValue {
            rev: String,
            #[serde(default)]
            deleted: bool,
        }
        let what = format!("GET {file}/_all_docs?keys on {node}");
        let path = format!(
            "/_node/{}/{}/_all_docs?keys={}",
            segment(node),
            segment(file),
            segment(&Value::from(ids.to_vec()).to_string())
        );
        let (status, answer) = self.call(via, "GET", &path, None, true, &what)?;
        let rows = match status {
            200 => parse::<Rows>(via, &what, &answer)?.rows,
            404 => return Ok(vec![CopyDoc::Missing; ids.len()]),
            412 => return Err(node_down(via, &what, &answer)),
            _ => return Err(self.unexpected(via, &what, status, &answer)),
        };
        if rows.len() != ids.len() {
            return Err(malformed(via, &what, "not one row per key"));
        }
        Ok(rows
            .into_iter()
            .map(|r| match r.value {
                None => CopyDoc::Missing,
                Some(v) if v.deleted => CopyDoc::Deleted(v.rev),
                Some(v) => CopyDoc::Live(v.rev),
            })
            .collect())
    }

    /// The ids of the live docs starting with `prefix` in `node`'s copy `file` alone
    /// (`GET /_node/<node>/<file>/_all_docs?startkey=…&endkey=…`). A node without the file has
    /// none. 412: the node is not connected to `via`.
    pub fn copy_ids(
        &self,
        via: &NodeAddr,
        node: &str,
        file: &str,
        prefix: &str,
    ) -> NodeResult<Vec<String>> {
        let what = format!("GET {file}/_all_docs on {node}");
        let key = |k: &str| segment(&Value::from(k).to_string());
        let path = format!(
            "/_node/{}/{}/_all_docs?startkey={}&endkey={}",
            segment(node),
            segment(file),
            key(prefix),
            key(&format!("{prefix}\u{fff0}"))
        );
        let (status, body) = self.call(via, "GET", &path, None, true, &what)?;
        match status {
            200 => Ok(parse::<AllDocs>(via, &what, &body)?
                .rows
                .into_iter()
                .map(|r| r.id)
                .filter(|id| id.starts_with(prefix))
                .collect()),
            404 => Ok(Vec::new()),
            412 => Err(node_down(via, &what, &body)),
            _ => Err(self.unexpected(via, &what, status, &body)),
        }
    }

    /// Deletes a copy's file on `node` (a leftover the shard maps no longer list).
    pub fn delete_copy(&self, via: &NodeAddr, node: &str, file: &str) -> NodeResult<Gone> {
        let what = format!("DELETE {file} on {node}");
        let path = format!("/_node/{}/{}", segment(node), segment(file));
        self.delete(via, &path, &what)
    }

    /// The files a node holds (`_dbs`, `_nodes`, `shards/<range>/<db><suffix>`, …); `None` when
    /// it is not connected to `via`.
    pub fn node_files(&self, via: &NodeAddr, node: &str) -> NodeResult<Option<Vec<String>>> {
        let what = format!("GET /_node/{node}/_all_dbs");
        let path = format!("/_node/{}/_all_dbs", segment(node));
        let (status, body) = self.call(via, "GET", &path, None, true, &what)?;
        match status {
            200 => parse(via, &what, &body).map(Some),
            412 => Ok(None),
            _ => Err(self.unexpected(via, &what, status, &body)),
        }
    }

    /// The revision of `name`'s doc in node `on`'s `_nodes` (`on`: a member, or `_local`);
    /// `None` when it is not there: `on` does not count `name` as a member.
    pub fn node_doc(&self, via: &NodeAddr, on: &str, name: &str) -> NodeResult<Option<String>> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(rename = "_rev")]
            rev: String,
        }
        let what = format!("GET {on}'s _nodes doc of {name}");
        let path = format!("/_node/{}/_nodes/{}", segment(on), segment(name));
        let (status, body) = self.call(via, "GET", &path, None, true, &what)?;
        match status {
            200 => Ok(Some(parse::<Doc>(via, &what, &body)?.rev)),
            404 => Ok(None),
            412 => Err(node_down(via, &what, &body)),
            _ => Err(self.unexpected(via, &what, status, &body)),
        }
    }

    /// Removes `name` from the cluster's members: its doc in `via`'s `_nodes`, at `rev`.
    pub fn delete_node_doc(&self, via: &NodeAddr, name: &str, rev: &str) -> NodeResult<Gone> {
        let what = format!("DELETE /_node/_local/_nodes/{name}");
        let path = format!(
            "/_node/_local/_nodes/{}?rev={}",
            segment(name),
            segment(rev)
        );
        self.delete(via, &path, &what)
    }

    /// `[couchdb] maintenance_mode` of `node` when it is on (`true` or `nolb`).
    pub fn maintenance(&self, via: &NodeAddr, node: &str) -> NodeResult<Option<String>> {
        let what = format!("GET {node}'s maintenance_mode");
        let path = format!("/_node/{}/_config/couchdb/maintenance_mode", segment(node));
        let (status, body) = self.call(via, "GET", &path, None, true, &what)?;
        match status {
            200 => {
                let v: String = parse(via, &what, &body)?;
                Ok((!v.is_empty() && v != "false").then_some(v))
            }
            404 => Ok(None),
            412 => Err(node_down(via, &what, &body)),
            _ => Err(self.unexpected(via, &what, status, &body)),
        }
    }

    /// Sets `[couchdb] maintenance_mode` of `node` (a member's name, or `_local`) to `value`
    /// (`nolb`: `/_up` answers 404 while the node still serves the cluster; `false`: off).
    pub fn set_maintenance(&self, via: &NodeAddr, node: &str, value: &str) -> NodeResult<()> {
        let what = format!("PUT {node}'s maintenance_mode");
        let path = format!("/_node/{}/_config/couchdb/maintenance_mode", segment(node));
        let body = Value::from(value).to_string();
        let (status, answer) = self.call(via, "PUT", &path, Some(&body), true, &what)?;
        match status {
            200 => Ok(()),
            412 => Err(node_down(via, &what, &answer)),
            _ => Err(self.unexpected(via, &what, status, &answer)),
        }
    }

    /// `GET /`'s `version`: the CouchDB release the node runs. Asked of each node itself:
    /// 3.5.2 answers `/_node/<a 3.4.2 node>/_versions` with 500 `invalid_ejson` (transcript 18).
    pub fn version(&self, node: &NodeAddr) -> NodeResult<String> {
        #[derive(Deserialize)]
        struct Welcome {
            version: String,
        }
        let what = "GET /";
        let (status, body) = self.call(node, "GET", "/", None, false, what)?;
        match status {
            200 => Ok(parse::<Welcome>(node, what, &body)?.version),
            _ => Err(self.unexpected(node, what, status, &body)),
        }
    }

    /// A DELETE of a node-local doc (`_nodes`, `_dbs`) or of one node's own file: not a
    /// clustered write, so there is no quorum to fall short of and no other copy to lag; what
    /// follows is still checked on every member (`remove`'s forget waits until each member
    /// dropped the node, moves re-read the shard maps with their conflicts).
    fn delete(&self, via: &NodeAddr, path: &str, what: &str) -> NodeResult<Gone> {
        let (status, body) = self.call(via, "DELETE", path, None, true, what)?;
        match status {
            200 | 202 => Ok(Gone::Deleted),
            404 => Ok(Gone::Already),
            409 => Ok(Gone::Conflict),
            412 => Err(node_down(via, what, &body)),
            _ => Err(self.unexpected(via, what, status, &body)),
        }
    }
}

fn malformed(via: &NodeAddr, what: &str, reason: &str) -> NodeError {
    NodeError::Malformed {
        node: via.label.clone(),
        what: what.into(),
        reason: reason.into(),
    }
}

/// 412 `nodedown`: the node named in the path is not connected to `via`. Worth waiting for.
fn node_down(via: &NodeAddr, what: &str, body: &str) -> NodeError {
    NodeError::Unreachable {
        node: via.label.clone(),
        reason: format!("{what}: {}", super::error_reason(body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_files_become_one_path_segment() {
        assert_eq!(
            segment("shards/00000000-7fffffff/moveme.1795524961"),
            "shards%2F00000000-7fffffff%2Fmoveme.1795524961"
        );
        assert_eq!(segment("a/b+c$d(e)-f_g"), "a%2Fb%2Bc%24d%28e%29-f_g");
        assert_eq!(segment("node1@127.0.0.1"), "node1@127.0.0.1");
        assert_eq!(segment("\"doc\""), "%22doc%22");
    }

    #[test]
    fn copy_info_reads_the_recorded_answer() {
        let body = r#"{"db_name":"shards/00000000-7fffffff/moveme.1795524961","engine":"couch_bt_engine","doc_count":88,"doc_del_count":0,"update_seq":88,"purge_seq":0,"compact_running":false,"sizes":{"active":12662,"external":744,"file":24776},"instance_start_time":"1795524961373735","disk_format_version":8,"committed_update_seq":88,"compacted_seq":0,"props":{},"uuid":"aa1e283b8c389a08ddbe6df762efb325"}"#;
        let info: CopyInfo = serde_json::from_str(body).unwrap();
        assert_eq!(
            info,
            CopyInfo {
                doc_count: 88,
                doc_del_count: 0,
                sizes: CopySizes { file: 24776 }
            }
        );
    }
}
