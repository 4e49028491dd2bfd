//! The background work of a running node, every `Delays::tick`: the distribution (connections,
//! `_nodes`/`_dbs` pushes), internal replication, `_users`' design doc, and the replicator.

use std::sync::Arc;

use crate::cluster::dist;
use crate::cluster::fabric;
use crate::cluster::isync;
use crate::node::NodeInner;
use crate::replication::replicator;

pub fn run(node: Arc<NodeInner>, epoch: u64) {
    while node.alive(epoch) {
        std::thread::sleep(node.delays.tick);
        if !node.alive(epoch) {
            break;
        }
        dist::tick(&node, epoch);
        isync::tick(&node, epoch);
        fabric::tick(&node);
        replicator::tick(&node, epoch);
    }
}
