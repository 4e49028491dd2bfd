//! The cluster layer: what a node does with the other nodes — the Erlang distribution
//! stand-in (`dist`: links, `_nodes`/`_dbs` pushes, calls to remote copies), one node's shard
//! copies and what is asked of them (`copies`), clustered databases as the node a request
//! reaches coordinates them (`fabric`, its update sequences in `seq`), and internal replication
//! between copies (`isync`). It uses `node`, `net` and `util`; the replicator and the HTTP API,
//! which act through it, sit above.

pub(crate) mod copies;
pub(crate) mod dist;
pub(crate) mod fabric;
pub(crate) mod isync;
pub(crate) mod seq;
