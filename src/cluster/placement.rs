//! Writing the zones where CouchDB places new databases by them (transcript 16), for
//! formation and `remove`: each member's zone into its `_nodes` doc, then `[cluster]
//! placement` on every node — in that order, so that no node places by a zone it does not
//! know yet. Each only where it differs: a cluster with the right zones gets no write.

use anyhow::Result;
use log::{debug, info};

use crate::client::{ClusterConfig, NodeError, Saved};
use crate::cluster::session::{each_bounded, Session};
use crate::cluster::survey::PARALLEL;
use crate::cluster::zones::Zones;
use crate::util::clock::poll;
use crate::util::config::NodeAddr;
use crate::util::exit::{Failure, Status};
use crate::util::text::{list_compact, list_some};

/// Rounds of read-then-write for one `_nodes` doc: each 409 (another run, or CouchDB's own
/// boot-time write, got there first) costs one.
const ROUNDS: usize = 3;

impl Session<'_> {
    /// Writes each member's zone into its `_nodes` doc on `via` where it differs, then waits
    /// until every node in `nodes` has every zone in its own `_nodes`; returns the members
    /// written.
    pub fn write_zones(
        &self,
        via: &NodeAddr,
        zones: &Zones,
        nodes: &[String],
    ) -> Result<Vec<String>> {
        let mut written = Vec::new();
        let mut docs = self.read(|| self.client.node_docs(via, "_local"))?;
        for (name, zone) in zones {
            for round in 1..=ROUNDS {
                let Some(doc) = docs.iter().find(|d| d.name == *name) else {
                    return Err(Failure::new(
                        Status::Unverified,
                        format!("{name} has no _nodes doc on {}, so its zone cannot be written: is it a member?", via.label),
                    )
                    .into());
                };
                if doc.zone.as_deref() == Some(zone.as_str()) {
                    break;
                }
                match self.read(|| self.client.put_zone(via, doc, zone))? {
                    Saved::Rev(_) => {
                        debug!("zones: {name} is in zone {zone} now");
                        written.push(name.clone());
                        break;
                    }
                    Saved::Conflict if round < ROUNDS => {
                        docs = self.read(|| self.client.node_docs(via, "_local"))?;
                    }
                    Saved::Conflict => {
                        return Err(Failure::new(
                            Status::Failed,
                            format!("the _nodes doc of {name} changed under every write of its zone ({ROUNDS} tries)"),
                        )
                        .into())
                    }
                }
            }
        }
        if !written.is_empty() {
            info!(
                "zones: wrote the zone of {} into their _nodes docs; waiting until every node has them",
                list_compact(&written)
            );
            self.until_every_node_has(via, zones, nodes)?;
        }
        Ok(written)
    }

    /// Polls each node's own `_nodes` (asked through `via`) until it holds every zone.
    fn until_every_node_has(&self, via: &NodeAddr, zones: &Zones, nodes: &[String]) -> Result<()> {
        let has = each_bounded(nodes, PARALLEL, |node| {
            poll(self.clock, self.deadline, || {
                match self.client.node_docs(via, node) {
                    Ok(docs) => Ok(zones
                        .iter()
                        .all(|(n, z)| {
                            docs.iter()
                                .any(|d| d.name == *n && d.zone.as_ref() == Some(z))
                        })
                        .then_some(())),
                    Err(NodeError::Unreachable { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
        });
        let mut lagging = Vec::new();
        for (node, has) in nodes.iter().zip(has) {
            if has?.is_none() {
                lagging.push(node.clone());
            }
        }
        if lagging.is_empty() {
            return Ok(());
        }
        Err(Failure::new(
            Status::Unverified,
            format!(
                "{} did not get the zones in their _nodes before the deadline; [cluster] placement was not set",
                list_some(&lagging)
            ),
        )
        .into())
    }

    /// `[cluster]` of every node in `nodes`, through `via`.
    pub fn cluster_configs(&self, via: &NodeAddr, nodes: &[String]) -> Result<Vec<ClusterConfig>> {
        self.read_each(nodes, |n| self.client.cluster_config(via, n))
    }

    /// Sets `rule` as `[cluster] placement` on every node of `nodes` whose placement
    /// (`current`, in the same order) differs; returns those it set.
    pub fn write_placement(
        &self,
        via: &NodeAddr,
        nodes: &[String],
        current: &[ClusterConfig],
        rule: &str,
    ) -> Result<Vec<String>> {
        let stale: Vec<String> = nodes
            .iter()
            .zip(current)
            .filter(|(_, c)| c.placement.as_deref() != Some(rule))
            .map(|(n, _)| n.clone())
            .collect();
        for set in each_bounded(&stale, PARALLEL, |n| {
            self.read(|| self.client.set_placement(via, n, rule))
        }) {
            set?;
        }
        if !stale.is_empty() {
            info!(
                "zones: [cluster] placement = {rule} on {}",
                list_compact(&stale)
            );
        }
        Ok(stale)
    }
}
