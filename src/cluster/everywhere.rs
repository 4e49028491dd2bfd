//! What every copy of a document holds. CouchDB answers a write 201 once a quorum of the
//! range's copies took it and 202 once fewer did (PROTOCOL.md trap 27); the other copies get it
//! by internal replication about 5 s later. Until then a read through one node may still
//! return the old revision — both passwords of a replication doc in it — while another node
//! answers the new one, and even when every node answers the new one a copy can still hold
//! the old (transcript 17: `open_revs=all` through each node showed the deletion while
//! `_all_docs` through node2 still listed rev 1). So what a command promises about a document
//! ("no replication document is left", "renewed with the current password") is checked here
//! on every copy, each member asked about its own file through `via` (`/_node/<node>/<file>`):
//! no node's answer stands for another's.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use anyhow::Result;
use log::debug;

use crate::client::{Client, CopyDoc, NodeError, NodeResult};
use crate::cluster::session::Waiting;
use crate::util::clock::{poll, Clock};
use crate::util::config::NodeAddr;
use crate::util::text::list_some;

/// One copy that does not hold what was asked of it (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lagging {
    pub id: String,
    /// The member holding that copy.
    pub node: String,
    /// What it holds; `None`: it did not answer (not connected to the node asked).
    pub holds: Option<CopyDoc>,
}

impl fmt::Display for Lagging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let holds = match &self.holds {
            None => "not reachable".to_string(),
            Some(CopyDoc::Missing) => "missing".to_string(),
            Some(CopyDoc::Live(rev)) => format!("live at {rev}"),
            Some(CopyDoc::Deleted(rev)) => format!("deleted at {rev}"),
        };
        write!(f, "{} on {}: {holds}", self.id, self.node)
    }
}

/// The copies of one database's documents, asked through one member.
pub struct Copies<'a> {
    pub client: &'a Client,
    pub via: &'a NodeAddr,
    pub db: &'a str,
}

/// Ids asked of one copy at a time: they travel in the query string (`keys=[…]`), which must
/// stay well below what an HTTP server takes in one request line.
const KEYS_PER_READ: usize = 50;

/// Some docs of one range, and where that range's copies are.
struct Place {
    file: String,
    holders: Vec<String>,
    ids: Vec<String>,
}

impl Copies<'_> {
    /// Every copy of each of `ids` whose content `ok(id, what it holds)` refuses.
    pub fn lagging(
        &self,
        ids: &[String],
        ok: &dyn Fn(&str, &CopyDoc) -> bool,
    ) -> NodeResult<Vec<Lagging>> {
        self.lagging_in(&self.places(ids)?, ok)
    }

    /// `ids` grouped by the range that holds each (CouchDB says which: `_shards/<id>`), with
    /// that range's file and holders from the shard map.
    fn places(&self, ids: &[String]) -> NodeResult<Vec<Place>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let Some(map) = self.client.shard_doc(self.via, "_local", self.db)? else {
            return Ok(Vec::new());
        };
        let mut by_range: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in ids {
            let (range, _) = self.client.doc_range(self.via, self.db, id)?;
            by_range.entry(range).or_default().push(id.clone());
        }
        Ok(by_range
            .into_iter()
            .map(|(range, ids)| Place {
                file: map.file(&range),
                holders: map.map.get(&range).cloned().unwrap_or_default(),
                ids,
            })
            .collect())
    }

    /// Each holder asked about its own file, a few ids at a time.
    fn lagging_in(
        &self,
        places: &[Place],
        ok: &dyn Fn(&str, &CopyDoc) -> bool,
    ) -> NodeResult<Vec<Lagging>> {
        let mut lagging = Vec::new();
        for place in places {
            for node in &place.holders {
                for ids in place.ids.chunks(KEYS_PER_READ) {
                    let held = match self.client.copy_docs(self.via, node, &place.file, ids) {
                        Ok(held) => held.into_iter().map(Some).collect(),
                        Err(NodeError::Unreachable { .. }) => vec![None; ids.len()],
                        Err(e) => return Err(e),
                    };
                    for (id, holds) in ids.iter().zip(held) {
                        if !holds.as_ref().is_some_and(|h| ok(id, h)) {
                            lagging.push(Lagging {
                                id: id.clone(),
                                node: node.clone(),
                                holds,
                            });
                        }
                    }
                }
            }
        }
        Ok(lagging)
    }

    /// The live docs starting with `prefix` in any copy of the database: each copy's own list,
    /// not one node's answer (which reads each range from one copy).
    pub fn live_ids(&self, prefix: &str) -> NodeResult<Vec<String>> {
        let Some(map) = self.client.shard_doc(self.via, "_local", self.db)? else {
            return Ok(Vec::new());
        };
        let mut ids = Vec::new();
        for (range, nodes) in &map.map {
            for node in nodes {
                match self
                    .client
                    .copy_ids(self.via, node, &map.file(range), prefix)
                {
                    Ok(found) => ids.extend(found),
                    // Its copy is read once it is back: nothing is said to be gone meanwhile.
                    Err(NodeError::Unreachable { reason, .. }) => {
                        return Err(NodeError::Unreachable {
                            node: node.clone(),
                            reason,
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Waits, within `deadline`, until every copy of `ids` holds what `ok` accepts (what a copy
    /// holds only moves on: a doc that was agreed on is not asked again). When a copy lags,
    /// internal replication is asked for at once (`POST /<db>/_sync_shards`: every copy pushes
    /// to every other, as transcript 11 shows) rather than waited for: CouchDB pushes a write
    /// ~5 s after it. Returns what still lags at the deadline (empty: confirmed).
    pub fn wait(
        &self,
        clock: &dyn Clock,
        deadline: Instant,
        phase: &'static str,
        ids: &[String],
        ok: &dyn Fn(&str, &CopyDoc) -> bool,
    ) -> Result<Vec<Lagging>> {
        // Until every copy was read once, none is confirmed.
        let mut lagging: Vec<Lagging> = ids
            .iter()
            .map(|id| Lagging {
                id: id.clone(),
                node: format!("every copy (asked through {})", self.via.label),
                holds: None,
            })
            .collect();
        let mut places: Option<Vec<Place>> = None;
        let mut synced = false;
        let mut waiting = Waiting::new(phase, clock, deadline);
        let done = poll(clock, deadline, || {
            let read = match places.take() {
                Some(p) => Ok(p),
                None => self.places(ids),
            }
            .and_then(|p| self.lagging_in(&p, ok).map(|l| (p, l)));
            let (mut asked, now) = match read {
                Ok(read) => read,
                Err(NodeError::Unreachable { reason, .. }) => {
                    debug!("{phase}: copies of {} not read: {reason}", self.db);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            lagging = now;
            if lagging.is_empty() {
                return Ok(Some(()));
            }
            for place in &mut asked {
                place.ids.retain(|id| lagging.iter().any(|l| l.id == *id));
            }
            places = Some(asked);
            if !synced {
                synced = true;
                // Only a shortcut: CouchDB's own internal replication gets there too.
                if let Err(e) = self.client.sync_shards(self.via, self.db) {
                    debug!("{phase}: {e}; waiting for CouchDB's internal replication instead");
                }
            }
            waiting.report(|| {
                let mut docs: Vec<String> = lagging.iter().map(|l| l.id.clone()).collect();
                docs.sort();
                docs.dedup();
                format!(
                    "every copy of {} to agree: {} copy(ies) behind, of {}",
                    self.db,
                    lagging.len(),
                    list_some(&docs)
                )
            });
            Ok::<_, NodeError>(None)
        })?;
        if done.is_some() {
            lagging.clear();
        }
        Ok(lagging)
    }
}

/// A copy that holds no live revision: what "no replication document is left" means.
pub fn gone(_: &str, held: &CopyDoc) -> bool {
    !matches!(held, CopyDoc::Live(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lagging_copy_says_what_it_holds_never_a_body() {
        let l = |holds| Lagging {
            id: "restore:1:app".into(),
            node: "couchdb@c2.example".into(),
            holds,
        };
        assert_eq!(
            l(Some(CopyDoc::Live("1-abc".into()))).to_string(),
            "restore:1:app on couchdb@c2.example: live at 1-abc"
        );
        assert_eq!(
            l(None).to_string(),
            "restore:1:app on couchdb@c2.example: not reachable"
        );
        assert!(gone("x", &CopyDoc::Deleted("3-d".into())));
        assert!(gone("x", &CopyDoc::Missing));
        assert!(!gone("x", &CopyDoc::Live("1-a".into())));
    }
}
