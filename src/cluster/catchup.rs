//! Has a node that was away caught up? Measured per copy, against the other copies of the same
//! range (PROTOCOL.md, "A rolling upgrade": `internal_replication_jobs` was 0 in every check
//! while a returning node still lacked writes — on its own it proves nothing).
//!
//! A copy's size here is `doc_count + doc_del_count`, every document it knows, deleted ones
//! included: a missed write adds one, a missed update or deletion of an existing document
//! changes nothing or trades one count for the other, so the sum never goes down. The returning
//! node's copy is caught up when its size, read **first**, is at least every other copy's, read
//! **after** it. Read in that order, a document written meanwhile can only make the others
//! bigger, never the returning copy: reaching their size cannot be a count made up of new
//! writes standing in for missed ones. (A write still in flight, on the returning copy already
//! and not yet on the others, is the one such case: milliseconds wide.)
//!
//! The moving target: a document created between the two reads makes that copy look behind by
//! one, and it is asked again. Only creations move it (updates and deletions keep the sum),
//! copies already proven are not asked again (what is written from then on reaches the node
//! directly), and the reads are one request apart: under steady writes a copy is proven the
//! first time no document lands in its range between two requests. Creating documents in one
//! range faster than one per request would keep it from ever being proven: the deadline then
//! names it, with how far behind it looked.
//!
//! Cost: per copy of the node, one GET of it and one of each other copy, per round, through one
//! member (`/_node/<name>/shards%2F…`), `PARALLEL` at once; each round asks only the copies not
//! yet proven.

use anyhow::Result;

use crate::client::{CopyState, NodeError, ShardDoc};
use crate::cluster::session::{each_bounded, Session};
use crate::cluster::survey::{CopyKey, Survey, PARALLEL};
use crate::util::config::NodeAddr;

/// One copy of the returning node that has not been shown to hold what the others hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    pub db: String,
    pub range: String,
    /// Its size (`doc_count + doc_del_count`); `None`: it has no such file yet.
    pub have: Option<u64>,
    /// The largest size among the other copies, read after it.
    pub of: u64,
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.have {
            Some(have) => write!(
                f,
                "{} {}: {have} of {} documents",
                self.db, self.range, self.of
            ),
            None => write!(
                f,
                "{} {}: no file yet (the others hold {})",
                self.db, self.range, self.of
            ),
        }
    }
}

/// The copies `node` holds whose range has another copy on a connected member: the ones to
/// compare. (A range only it holds has nothing to catch up from.)
pub fn copies_of(s: &Survey, node: &str) -> Vec<CopyKey> {
    s.docs
        .iter()
        .flat_map(|d| {
            d.map.iter().filter_map(move |(range, holders)| {
                let others = holders.iter().any(|h| h != node && s.connected.contains(h));
                (holders.iter().any(|h| h == node) && others)
                    .then(|| (d.db.clone(), range.clone(), node.to_string()))
            })
        })
        .collect()
}

/// Of `copies` (the node's, `copies_of`), those not caught up: each asked of `via`, the node's
/// copy first, then the range's other copies on connected members.
pub fn behind(
    session: &Session,
    s: &Survey,
    via: &NodeAddr,
    copies: &[CopyKey],
) -> Result<Vec<Behind>> {
    let checked = each_bounded(copies, PARALLEL, |(db, range, node)| {
        let Some(doc) = s.doc(db) else {
            return Ok(None);
        };
        compare(session, s, via, doc, range, node)
    });
    let mut out = Vec::new();
    for lag in checked {
        if let Some(lag) = lag? {
            out.push(lag);
        }
    }
    Ok(out)
}

/// `None` when the node's copy of `range` holds at least what every other copy holds.
fn compare(
    session: &Session,
    s: &Survey,
    via: &NodeAddr,
    doc: &ShardDoc,
    range: &str,
    node: &str,
) -> Result<Option<Behind>, NodeError> {
    let file = doc.file(range);
    // A copy on a node that is not connected to `via` cannot be compared now: the caller
    // asks again (an unreachable node is worth waiting for).
    let size = |holder: &str| -> Result<Option<u64>, NodeError> {
        match session.client.copy(via, holder, &file)? {
            CopyState::Present(i) => Ok(Some(i.doc_count + i.doc_del_count)),
            CopyState::Missing => Ok(None),
            CopyState::NodeDown => Err(NodeError::Unreachable {
                node: holder.to_string(),
                reason: format!("not connected to {}", via.label),
            }),
        }
    };
    // First the returning copy, then the others: see the module's doc.
    let have = size(node)?;
    let mut of = 0;
    for other in doc.map.get(range).into_iter().flatten() {
        if other != node && s.connected.contains(other) {
            of = of.max(size(other)?.unwrap_or(0));
        }
    }
    Ok(match have {
        Some(have) if have >= of => None,
        have => Some(Behind {
            db: doc.db.clone(),
            range: range.to_string(),
            have,
            of,
        }),
    })
}
