//! The calls a restore needs, and the security objects a backup keeps: a database's
//! `_security` (replication never carries it: trap 24), creating a database with a chosen `q`,
//! whether a view answers, and the conflicts in a database.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{parse, segment, AllDocs, Client, NodeResult};
use crate::util::config::NodeAddr;

/// How many documents one `_all_docs` page of the conflict scan asks for, and how many ids one
/// `_revs_diff` carries.
const PAGE: usize = 500;

/// Every document's leaf revisions (`_changes?style=all_docs`): id → revs, deletions included.
pub type Revisions = BTreeMap<String, Vec<String>>;

/// A database's `_security` as far as access goes. CouchDB lets a request in as a member when
/// `members` names its user or one of its roles — or when `members` names nobody at all: the
/// database is then public (`couch_db:check_is_member`), and members may write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    /// Names and roles in `members` other than `_admin`.
    pub members: Vec<String>,
    /// `members` has no names and no roles.
    pub public: bool,
}

impl Access {
    fn of(security: &Value) -> Access {
        let list = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let members = &security["members"];
        let (names, roles) = (list(&members["names"]), list(&members["roles"]));
        Access {
            public: names.is_empty() && roles.is_empty(),
            members: names
                .into_iter()
                .chain(roles.into_iter().filter(|r| r != "_admin"))
                .collect(),
        }
    }
}

impl Client {
    /// `GET /<db>/_security`; `None` if there is no such database. CouchDB 3.x answers
    /// `{"members":{"roles":["_admin"]},"admins":{"roles":["_admin"]}}` for one never set.
    pub fn security(&self, node: &NodeAddr, db: &str) -> NodeResult<Option<Value>> {
        let what = format!("GET /{db}/_security");
        let path = format!("/{}/_security", segment(db));
        let (status, body) = self.call(node, "GET", &path, None, true, &what)?;
        match status {
            200 => parse(node, &what, &body).map(Some),
            404 => Ok(None),
            _ => Err(self.unexpected(node, &what, status, &body)),
        }
    }

    /// Who may read and write `db` besides the admins, from its `_security`; `None` if there is
    /// no such database.
    pub fn access(&self, node: &NodeAddr, db: &str) -> NodeResult<Option<Access>> {
        Ok(self.security(node, db)?.map(|v| Access::of(&v)))
    }

    /// `PUT /<db>/_security`: the whole object, as read elsewhere.
    pub fn put_security(&self, node: &NodeAddr, db: &str, security: &Value) -> NodeResult<()> {
        let what = format!("PUT /{db}/_security");
        let path = format!("/{}/_security", segment(db));
        let body = security.to_string();
        let (status, answer) = self.call(node, "PUT", &path, Some(&body), true, &what)?;
        match status {
            // `fabric_db_meta` answers 200 or an error, never 202. What is promised is read
            // back: restore's verify compares it (the object most copies hold), backup
            // compares both sides on every run; on a standalone backup it is one copy.
            200 | 201 => Ok(()),
            _ => Err(self.unexpected(node, &what, status, &answer)),
        }
    }

    /// The first view of the first design doc of `db` (`_design/x`, `view`), if it has one.
    pub fn first_view(&self, node: &NodeAddr, db: &str) -> NodeResult<Option<(String, String)>> {
        let what = format!("GET /{db}/_all_docs (design docs)");
        let path = format!(
            "/{}/_all_docs?startkey=%22_design%2F%22&endkey=%22_design0%22&include_docs=true",
            segment(db)
        );
        let rows: AllDocs = self.get(node, &path, &what)?;
        Ok(rows.rows.into_iter().find_map(|r| {
            let views = r.doc?.get("views")?.as_object()?.keys().next()?.clone();
            Some((r.id, views))
        }))
    }

    /// `GET /<db>/<ddoc>/_view/<view>?limit=0`: does the view answer (200)?
    pub fn view_answers(
        &self,
        node: &NodeAddr,
        db: &str,
        ddoc: &str,
        view: &str,
    ) -> NodeResult<bool> {
        let name = ddoc.trim_start_matches("_design/");
        let what = format!("GET /{db}/_design/{name}/_view/{view}");
        let path = format!(
            "/{}/_design/{}/_view/{}?limit=0",
            segment(db),
            segment(name),
            segment(view)
        );
        let (status, _) = self.call(node, "GET", &path, None, true, &what)?;
        Ok(status == 200)
    }

    /// How many documents of `db` have conflicts (`_all_docs?conflicts=true`, paged).
    pub fn conflicted_docs(&self, node: &NodeAddr, db: &str) -> NodeResult<u64> {
        let what = format!("GET /{db}/_all_docs?conflicts=true");
        let mut start: Option<String> = None;
        let mut conflicted = 0;
        loop {
            let from = start
                .as_ref()
                .map(|s| {
                    format!(
                        "&startkey={}",
                        segment(&Value::from(s.as_str()).to_string())
                    )
                })
                .unwrap_or_default();
            let path = format!(
                "/{}/_all_docs?include_docs=true&conflicts=true&limit={}{from}",
                segment(db),
                PAGE + 1
            );
            let page: AllDocs = self.get(node, &path, &what)?;
            let more = page.rows.len() > PAGE;
            for r in page.rows.iter().take(PAGE) {
                let has = r
                    .doc
                    .as_ref()
                    .and_then(|d| d.get("_conflicts"))
                    .and_then(Value::as_array)
                    .is_some_and(|c| !c.is_empty());
                conflicted += u64::from(has);
            }
            if !more {
                return Ok(conflicted);
            }
            start = page.rows.get(PAGE).map(|r| r.id.clone());
        }
    }

    /// Every document of `db` with its leaf revisions, from its changes feed; `None` if there
    /// is no such database. Fails (Malformed) on a feed larger than the client reads.
    pub fn revisions(&self, node: &NodeAddr, db: &str) -> NodeResult<Option<Revisions>> {
        #[derive(Deserialize)]
        struct Feed {
            results: Vec<Change>,
        }
        #[derive(Deserialize)]
        struct Change {
            id: String,
            changes: Vec<Rev>,
        }
        #[derive(Deserialize)]
        struct Rev {
            rev: String,
        }
        let what = format!("GET /{db}/_changes");
        let path = format!("/{}/_changes?style=all_docs", segment(db));
        let (status, body) = self.call(node, "GET", &path, None, true, &what)?;
        let feed: Feed = match status {
            200 => parse(node, &what, &body)?,
            404 => return Ok(None),
            _ => return Err(self.unexpected(node, &what, status, &body)),
        };
        Ok(Some(
            feed.results
                .into_iter()
                .map(|c| (c.id, c.changes.into_iter().map(|r| r.rev).collect()))
                .collect(),
        ))
    }

    /// How many of `revs` `db` on `node` lacks (`POST /<db>/_revs_diff`, a read, in batches).
    pub fn missing_revisions(
        &self,
        node: &NodeAddr,
        db: &str,
        revs: &Revisions,
    ) -> NodeResult<u64> {
        #[derive(Deserialize)]
        struct Missing {
            #[serde(default)]
            missing: Vec<String>,
        }
        // A read sent as POST: nothing is written.
        let what = format!("POST /{db}/_revs_diff");
        let path = format!("/{}/_revs_diff", segment(db));
        let ids: Vec<(&String, &Vec<String>)> = revs.iter().collect();
        let mut missing = 0;
        for batch in ids.chunks(PAGE) {
            let body: serde_json::Map<String, Value> = batch
                .iter()
                .map(|(id, r)| ((*id).clone(), Value::from((*r).clone())))
                .collect();
            let (status, answer) = self.call(
                node,
                "POST",
                &path,
                Some(&Value::Object(body).to_string()),
                true,
                &what,
            )?;
            let diff: BTreeMap<String, Missing> = match status {
                200 => parse(node, &what, &answer)?,
                _ => return Err(self.unexpected(node, &what, status, &answer)),
            };
            missing += diff.values().map(|m| m.missing.len() as u64).sum::<u64>();
        }
        Ok(missing)
    }
}
