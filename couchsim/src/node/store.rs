//! What a node keeps on disk: its config, the node-local `_nodes` and `_dbs` databases, and
//! its shard files (`shards/<range>/<db>.<suffix>`, one `DocDb` each).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::docs::DocDb;
use super::ejson::Ej;
use super::shards::{Candidate, ShardMap};

/// The node-local databases every node lists besides its shard files.
pub const LOCAL_DBS: [&str; 3] = ["_dbs", "_nodes", "_users"];

/// Everything a node would keep on disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Store {
    /// section → key → value (the effective ini config).
    pub config: BTreeMap<String, BTreeMap<String, String>>,
    pub nodes: DocDb,
    pub dbs: DocDb,
    /// Shard copies by file name.
    #[serde(default)]
    pub files: BTreeMap<String, DocDb>,
    /// `_local` docs by db instance (`<db><suffix>`), then id: (rev number, body).
    #[serde(default)]
    pub local_docs: BTreeMap<String, BTreeMap<String, (u64, Ej)>>,
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

    /// The members as mem3's placement sees them: each live `_nodes` doc's `zone` and `decom`
    /// (`true`, or the string `"true"`, as `mem3:allowed_nodes/0` takes it).
    pub fn candidates(&self) -> Vec<Candidate> {
        self.nodes
            .live()
            .map(|(id, d)| {
                let body = &d.winner().body;
                Candidate {
                    name: id.clone(),
                    zone: body.get("zone").and_then(Ej::as_str).map(str::to_string),
                    decom: match body.get("decom") {
                        Some(Ej::Bool(b)) => *b,
                        Some(other) => other.as_str() == Some("true"),
                        None => false,
                    },
                }
            })
            .collect()
    }

    pub fn is_member(&self, node: &str) -> bool {
        self.nodes.get(node).is_ok()
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

    /// The map this node uses for `db` (the winning revision of its `_dbs` doc).
    pub fn map(&self, db: &str) -> Option<ShardMap> {
        ShardMap::of(&self.dbs.get(db).ok()?.winner().body)
    }

    /// The shard map of a db as `GET /db/_shards` shows it.
    pub fn shards(&self, db: &str) -> Option<BTreeMap<String, Vec<String>>> {
        self.map(db).map(|m| m.by_range)
    }

    /// `GET /_node/<node>/_all_dbs`: the node-local dbs and every shard file, sorted.
    pub fn local_dbs(&self) -> Vec<String> {
        let mut all: Vec<String> = LOCAL_DBS.iter().map(|s| s.to_string()).collect();
        all.extend(self.files.keys().cloned());
        all.sort();
        all
    }
}
