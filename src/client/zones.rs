//! What CouchDB places new databases by (transcript 16): a `zone` field in each member's
//! `_nodes` doc, written back whole with its `_rev`, and `[cluster] placement` in every node's
//! config; plus a node's own report of its zone, `[couchdb_cluster_init] zone`, which its pod
//! writes where the tool cannot know the zone itself (docs/kubernetes.md).

use serde_json::{Map, Value};

use super::{parse, segment, AllDocs, Client, NodeError, NodeResult, Saved};
use crate::util::config::NodeAddr;

/// The config section (and key `zone`) in which a node reports its own zone.
pub const ZONE_SECTION: &str = "couchdb_cluster_init";

/// A node's `[cluster]` section, the parts placement needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterConfig {
    pub n: Option<String>,
    pub placement: Option<String>,
}

/// One member's doc in a node's `_nodes`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDoc {
    pub name: String,
    pub rev: String,
    pub zone: Option<String>,
    /// `"decom": true`: CouchDB puts no copy of a new database on it.
    pub decom: bool,
    /// Every field as read (`decom`, anything another tool wrote), for the write back.
    body: Map<String, Value>,
}

impl NodeDoc {
    fn parse(value: Value) -> Option<NodeDoc> {
        let Value::Object(body) = value else {
            return None;
        };
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        Some(NodeDoc {
            name: text("_id")?,
            rev: text("_rev")?,
            zone: text("zone"),
            decom: matches!(body.get("decom"), Some(Value::Bool(true)))
                || text("decom").as_deref() == Some("true"),
            body,
        })
    }

    /// The doc with `zone` set, every other field as it was: what a PUT writes.
    fn with_zone(&self, zone: &str) -> String {
        let mut body = self.body.clone();
        body.insert("zone".into(), Value::from(zone));
        Value::Object(body).to_string()
    }
}

impl Client {
    /// The `_nodes` docs as node `on` (a member's name, or `_local`) has them, asked of `via`.
    pub fn node_docs(&self, via: &NodeAddr, on: &str) -> NodeResult<Vec<NodeDoc>> {
        let what = format!("GET {on}'s _nodes docs");
        let path = format!("/_node/{}/_nodes/_all_docs?include_docs=true", segment(on));
        let (status, body) = self.call(via, "GET", &path, None, true, &what)?;
        let page: AllDocs = match status {
            200 => parse(via, &what, &body)?,
            412 => {
                return Err(NodeError::Unreachable {
                    node: via.label.clone(),
                    reason: format!("{what}: {}", super::error_reason(&body)),
                })
            }
            _ => return Err(self.unexpected(via, &what, status, &body)),
        };
        page.rows
            .into_iter()
            .filter(|r| !r.id.starts_with("_design/"))
            .map(|r| {
                r.doc
                    .and_then(NodeDoc::parse)
                    .ok_or_else(|| NodeError::Malformed {
                        node: via.label.clone(),
                        what: what.clone(),
                        reason: format!("the _nodes doc {} has no _id/_rev", r.id),
                    })
            })
            .collect()
    }

    /// Writes `zone` into `doc`'s member doc on `via` (the doc as read, `_rev` and all).
    pub fn put_zone(&self, via: &NodeAddr, doc: &NodeDoc, zone: &str) -> NodeResult<Saved> {
        #[derive(serde::Deserialize)]
        struct Created {
            rev: String,
        }
        let what = format!("PUT the zone of {} into its _nodes doc", doc.name);
        let path = format!("/_node/_local/_nodes/{}", segment(&doc.name));
        let (status, body) =
            self.call(via, "PUT", &path, Some(&doc.with_zone(zone)), true, &what)?;
        match status {
            201 | 202 => Ok(Saved::Rev(parse::<Created>(via, &what, &body)?.rev)),
            409 => Ok(Saved::Conflict),
            _ => Err(self.unexpected(via, &what, status, &body)),
        }
    }

    /// The zone a node reports for itself (`[couchdb_cluster_init] zone`), asked of the node;
    /// `None` when it reports none (an empty value too: a pod whose node has no zone label).
    pub fn reported_zone(&self, node: &NodeAddr) -> NodeResult<Option<String>> {
        let path = format!("/_node/_local/_config/{ZONE_SECTION}");
        let section: std::collections::BTreeMap<String, String> =
            self.get(node, &path, &format!("GET [{ZONE_SECTION}]"))?;
        Ok(section
            .get("zone")
            .map(|z| z.trim().to_string())
            .filter(|z| !z.is_empty()))
    }

    /// `[cluster]` of the node named `name`, asked of `via` (an Erlang call there, as
    /// `node_config_of`): its `n` and its `placement`.
    pub fn cluster_config(&self, via: &NodeAddr, name: &str) -> NodeResult<ClusterConfig> {
        let what = format!("GET {name}'s [cluster]");
        let path = format!("/_node/{}/_config/cluster", segment(name));
        let section: std::collections::BTreeMap<String, String> = self.get(via, &path, &what)?;
        Ok(ClusterConfig {
            n: section.get("n").cloned(),
            placement: section.get("placement").cloned(),
        })
    }

    /// Sets `[cluster] placement` on the node named `name`, through `via`.
    pub fn set_placement(&self, via: &NodeAddr, name: &str, rule: &str) -> NodeResult<()> {
        let what = format!("PUT {name}'s [cluster] placement");
        let path = format!("/_node/{}/_config/cluster/placement", segment(name));
        let (status, body) = self.call(
            via,
            "PUT",
            &path,
            Some(&Value::from(rule).to_string()),
            true,
            &what,
        )?;
        match status {
            200 => Ok(()),
            _ => Err(self.unexpected(via, &what, status, &body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_is_written_into_the_doc_as_read() {
        // Transcript 16 line 68, then line 65's write of the same kind.
        let doc = NodeDoc::parse(serde_json::json!({
            "_id": "node5@127.0.0.1", "_rev": "3-d36a1e3ec1539dbe6c21b28b5fb13f23",
            "zone": "c", "decom": true
        }))
        .unwrap();
        assert_eq!(doc.zone.as_deref(), Some("c"));
        assert!(doc.decom);
        let written: Value = serde_json::from_str(&doc.with_zone("b")).unwrap();
        assert_eq!(
            written,
            serde_json::json!({
                "_id": "node5@127.0.0.1", "_rev": "3-d36a1e3ec1539dbe6c21b28b5fb13f23",
                "zone": "b", "decom": true
            })
        );
        let bare = NodeDoc::parse(serde_json::json!({
            "_id": "node1@127.0.0.1", "_rev": "1-967a00dff5e02add41819138abb3284d"
        }))
        .unwrap();
        assert_eq!((bare.zone, bare.decom), (None, false));
    }
}
