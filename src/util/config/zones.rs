//! COUCHDB_ZONES: which failure domain (rack, host, cloud zone) each node is in, as the
//! operator knows it — `NODE=ZONE,…`, NODE an Erlang name or a node as COUCHDB_NODES writes
//! it. Read and checked here; matched to the nodes' real names once they are identified
//! (src/cluster/zones.rs).

use anyhow::Result;

use super::{invalid, parse_node, NodeAddr, NodeList};

/// One node of COUCHDB_ZONES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneNode {
    /// An Erlang name, `couchdb@couchdb-1.cluster`: known to match a node only once the
    /// nodes have said their names.
    Name(String),
    /// Index into COUCHDB_NODES.
    Listed(usize),
}

/// COUCHDB_ZONES, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneList {
    pub entries: Vec<(ZoneNode, String)>,
}

impl ZoneList {
    /// The zone COUCHDB_ZONES gives the node at `addr` (as listed, if it is) named `name`.
    pub fn zone_of(&self, listed: Option<usize>, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(node, _)| match node {
                ZoneNode::Name(n) => n == name,
                ZoneNode::Listed(i) => Some(*i) == listed,
            })
            .map(|(_, zone)| zone.as_str())
    }

    /// The Erlang names it gives, for "names none of the nodes" warnings.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|(node, _)| match node {
            ZoneNode::Name(n) => Some(n.as_str()),
            ZoneNode::Listed(_) => None,
        })
    }
}

/// A zone name CouchDB's placement can carry: `[cluster] placement` is `zone:count,…`, so no
/// `:` or `,`; and it is a label in metrics and logs, so a short plain word (Kubernetes' zone
/// labels, `eu-west-1a`, are).
pub fn valid_zone(zone: &str) -> bool {
    !zone.is_empty()
        && zone.len() <= 63
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Reads COUCHDB_ZONES; `None` when unset. With COUCHDB_NODES every node must have a zone as
/// soon as one has — checked here when COUCHDB_ZONES names nodes by address only (by Erlang
/// name, a node's name is known once it answers: src/cluster/zones.rs checks then).
pub fn read(value: Option<String>, nodes: &NodeList) -> Result<Option<ZoneList>> {
    const VAR: &str = "COUCHDB_ZONES";
    let Some(text) = value else {
        return Ok(None);
    };
    if text.trim().is_empty() {
        return Err(invalid(format!(
            "{VAR} is set but empty: give NODE=ZONE for every node, or unset it"
        )));
    }
    let listed: &[NodeAddr] = match nodes {
        NodeList::Listed { nodes, .. } => nodes,
        NodeList::Service { .. } => &[],
    };
    let mut entries: Vec<(ZoneNode, String)> = Vec::new();
    for (i, entry) in text.split(',').enumerate() {
        let entry = entry.trim();
        let Some((node, zone)) = entry.split_once('=') else {
            return Err(invalid(format!(
                "{VAR}: entry {} is not NODE=ZONE (e.g. couchdb-1=a)",
                i + 1
            )));
        };
        let (node, zone) = (node.trim(), zone.trim());
        if !valid_zone(zone) {
            return Err(invalid(format!(
                "{VAR}: the zone of entry {} is not a zone name: 1 to 63 letters, digits, `.`, `_` or `-` \
                 (CouchDB's [cluster] placement cannot hold `:` or `,`)",
                i + 1
            )));
        }
        let node = if node.contains('@') {
            // An Erlang name (an address with an `@` would hold credentials: never echoed).
            if !node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "@._-".contains(c))
            {
                return Err(invalid(format!(
                    "{VAR}: entry {} names a node that is neither an Erlang name (name@host) nor a node of \
                     COUCHDB_NODES",
                    i + 1
                )));
            }
            ZoneNode::Name(node.to_string())
        } else {
            if listed.is_empty() {
                return Err(invalid(format!(
                    "{VAR}: `{node}` is not an Erlang name: with COUCHDB_SERVICE the nodes are found at run time, \
                     so name each by its Erlang name (couchdb@couchdb-0.couchdb.<namespace>.svc.<domain>), or \
                     let each pod report its own zone (docs/kubernetes.md)"
                )));
            }
            let addr = parse_node(VAR, node)?;
            let index = listed
                .iter()
                .position(|n| n.url == addr.url)
                .ok_or_else(|| {
                    invalid(format!(
                    "{VAR}: `{}` is not an Erlang name (name@host) nor one of COUCHDB_NODES ({})",
                    addr.label,
                    listed
                        .iter()
                        .map(|n| n.label.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                })?;
            ZoneNode::Listed(index)
        };
        if let Some((twice, _)) = entries.iter().find(|(n, _)| *n == node) {
            let named = match twice {
                ZoneNode::Name(n) => n.clone(),
                ZoneNode::Listed(i) => listed[*i].label.clone(),
            };
            return Err(invalid(format!("{VAR} gives node `{named}` twice")));
        }
        entries.push((node, zone.to_string()));
    }
    let by_name = entries.iter().any(|(n, _)| matches!(n, ZoneNode::Name(_)));
    if !by_name && !listed.is_empty() {
        let missing: Vec<&str> = listed
            .iter()
            .enumerate()
            .filter(|(i, _)| !entries.iter().any(|(n, _)| *n == ZoneNode::Listed(*i)))
            .map(|(_, n)| n.label.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(invalid(format!(
                "{VAR} gives no zone for {}: once one node has a zone every node needs one (CouchDB's \
                 placement leaves a node without one out of every new database)",
                missing.join(", ")
            )));
        }
    }
    Ok(Some(ZoneList { entries }))
}
