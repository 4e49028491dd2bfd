//! Internal replication (`mem3_rep`): a copy pushes the docs its peer copy lacks. Pushes are
//! scheduled by `_sync_shards`, by a write into a copy (`sync_delay` later), by a member
//! connecting or joining (see `NodeInner::schedule_*`); this runs the due ones. Each push sends
//! the docs changed since the last checkpoint for that target file (all of them when the target
//! file is new or was re-created), so a new copy fills in one push.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::dist;
use crate::node::docs::Leaf;
use crate::node::{lock, NodeInner};
use crate::util;

/// Starts the pushes that are due (one thread runs them one after the other).
pub fn tick(node: &Arc<NodeInner>, epoch: u64) {
    let due: Vec<(String, String)> = {
        let mut v = lock(&node.vol);
        let due = util::take_due(&mut v.pushes, Instant::now(), |at| *at);
        v.running_pushes += due.len();
        due.into_iter().map(|(k, _)| k).collect()
    };
    if due.is_empty() {
        return;
    }
    let me = Arc::clone(node);
    let n = due.len();
    let spawned = node.spawn(epoch, "push", move || {
        for (file, target) in due {
            // Targets are the range's other holders when the push runs: one that has left
            // the map since the push was scheduled gets nothing (its file is an orphan now).
            let holders = me.other_holders(&file);
            let targets = if target.is_empty() {
                holders
            } else {
                holders.into_iter().filter(|h| *h == target).collect()
            };
            for t in targets {
                if me.alive(epoch) {
                    push(&me, &file, &t);
                }
            }
            let mut v = lock(&me.vol);
            v.running_pushes = v.running_pushes.saturating_sub(1);
        }
    });
    if !spawned {
        let mut v = lock(&node.vol);
        v.running_pushes = v.running_pushes.saturating_sub(n);
    }
}

/// Our docs changed after `since` in `file`, and our update seq.
fn changes(node: &NodeInner, file: &str, since: u64) -> Option<(BTreeMap<String, Vec<Leaf>>, u64)> {
    let st = lock(&node.store);
    let db = st.files.get(file)?;
    Some((db.leaves_since(since), db.update_seq))
}

/// One push of `file` to `target`'s copy of it.
fn push(node: &NodeInner, file: &str, target: &str) {
    if !node.is_connected(target) {
        return;
    }
    let key = (file.to_string(), target.to_string());
    let (known_uuid, since) = lock(&node.vol)
        .checkpoints
        .get(&key)
        .cloned()
        .unwrap_or_default();
    let Some((docs, seq)) = changes(node, file, since) else {
        return;
    };
    let send = |docs: &BTreeMap<String, Vec<Leaf>>| {
        dist::shard_rpc(
            node,
            target,
            json!({"op": "merge", "file": file, "docs": docs, "interactive": false}),
        )
        .and_then(|r| r["uuid"].as_str().map(str::to_string))
    };
    let Some(mut uuid) = send(&docs) else {
        return;
    };
    if since > 0 && uuid != known_uuid {
        // A different file answered (deleted and re-created): it needs everything.
        let Some((all, _)) = changes(node, file, 0) else {
            return;
        };
        match send(&all) {
            Some(u) => uuid = u,
            None => return,
        }
    }
    lock(&node.vol).checkpoints.insert(key, (uuid, seq));
}
