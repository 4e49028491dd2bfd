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
    // (file, target, counted): a catch-up push is not one of `internal_replication_jobs` —
    // CouchDB showed 0 while a returning node still lacked writes (transcript 18).
    let due: Vec<(String, String, bool)> = {
        let mut v = lock(&node.vol);
        let due: Vec<(String, String, bool)> =
            util::take_due(&mut v.pushes, Instant::now(), |at| *at)
                .into_iter()
                .map(|(k, _)| {
                    let counted = !v.catching_up.contains_key(&k);
                    (k.0, k.1, counted)
                })
                .collect();
        v.running_pushes += due.iter().filter(|d| d.2).count();
        due
    };
    if due.is_empty() {
        return;
    }
    let me = Arc::clone(node);
    let n = due.iter().filter(|d| d.2).count();
    let spawned = node.spawn(epoch, "push", move || {
        for (file, target, counted) in due {
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
                    push(&me, &file, &t, epoch, counted);
                }
            }
            if counted {
                let mut v = lock(&me.vol);
                v.running_pushes = v.running_pushes.saturating_sub(1);
            }
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

/// One push of `file` to `target`'s copy of it. Bringing a returning member what it missed
/// takes `catch_up_per_doc` for each document it sends (those changed since the last checkpoint,
/// every one without a checkpoint, as `mem3_rep` compares them all then); meanwhile no
/// other push of that file reaches it (what is written from now on reaches it directly).
/// `counted`: this push is one of `internal_replication_jobs`, except while it carries a
/// catch-up.
fn push(node: &NodeInner, file: &str, target: &str, epoch: u64, counted: bool) {
    let key = (file.to_string(), target.to_string());
    let catching_up = {
        let mut v = lock(&node.vol);
        match v.catching_up.get_mut(&key) {
            Some(c) if c.running => return,
            Some(c) => {
                c.running = true;
                let from = c.from;
                if counted {
                    v.running_pushes = v.running_pushes.saturating_sub(1);
                }
                Some(from)
            }
            None => None,
        }
    };
    if let Some(from) = catching_up {
        let wait = from.saturating_duration_since(Instant::now());
        if !util::sleep_while(wait, || node.alive(epoch)) {
            return;
        }
    }
    let catching_up = catching_up.is_some();
    push_once(node, file, target, epoch, catching_up);
    if catching_up {
        let mut v = lock(&node.vol);
        v.catching_up.remove(&key);
        if counted {
            v.running_pushes += 1;
        }
    }
}

fn push_once(node: &NodeInner, file: &str, target: &str, epoch: u64, catching_up: bool) {
    let key = (file.to_string(), target.to_string());
    if !node.is_connected(target) {
        return;
    }
    let (known_uuid, since) = lock(&node.vol)
        .checkpoints
        .get(&key)
        .cloned()
        .unwrap_or_default();
    let Some((docs, seq)) = changes(node, file, since) else {
        return;
    };
    if catching_up {
        let pace = node.delays.catch_up_per_doc * docs.len() as u32;
        if !util::sleep_while(pace, || node.alive(epoch)) {
            return;
        }
    }
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
