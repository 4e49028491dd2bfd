//! `couchsim` — a CouchDB 3.4.2 cluster stand-in for tests.
//!
//! One simulated node is one HTTP/1.1 server on its own port, answering what a real CouchDB
//! 3.4.2 answers (status codes, JSON bodies, state transitions recorded in
//! `shared/couchdb/transcripts`). Nodes find each other through a small Erlang-distribution
//! stand-in (cookies, long names, `_nodes` replication, shard maps in `_dbs`).
//!
//! ```no_run
//! let cluster = couchsim::Cluster::builder()
//!     .nodes(3)
//!     .delays(couchsim::Delays::fast())
//!     .start();
//! let url = cluster.node(0).url(); // http://127.0.0.1:PORT
//! # let _ = url;
//! ```
//!
//! The top-level modules (folders, and a few single files) are the layers, each using only
//! those listed before it; `tests/layers.rs` fails when one reaches back up, or when two files
//! use each other:
//!
//! - `util` — self-contained helpers: PRNG, hashes, encodings, dates;
//! - `net` — HTTP/1.1 messages both ways, and Erlang's port mapper and node names;
//! - `spec` — the public knobs: `Delays`, `Fault`, `NodeSpec`, `Request`;
//! - `node` — one node and what it is made of on its own: database files, what it keeps on
//!   disk, the shard maps in its `_dbs`, its admins' checks;
//! - `cluster` — what a node does with the others: the distribution stand-in, shard copies,
//!   clustered databases, internal replication;
//! - `replication` — the replicator: `_replicator` docs, the scheduler's jobs, their runs;
//! - `ticker` — a running node's background work, for the cluster and the replicator;
//! - `http` — a node as its clients see it: server, faults, routes, `/_cluster_setup`,
//!   databases, `/_scheduler/*`;
//! - `api` (the in-process `Cluster`) and `binary` (`couchsim` as a process, and its `curl`,
//!   `grep` and `sh`), side by side on top; `fixtures` (certificates for TLS distribution,
//!   made with `openssl`) beside them, using none of the others.

mod api;
mod cluster;
mod http;
mod net;
mod node;
mod replication;
mod spec;
mod ticker;
mod util;

pub mod binary;
pub mod fixtures;

pub use api::{Cluster, ClusterBuilder, Node};
pub use net::epmd::{DnsEpmd, Epmd, Registry};
pub use node::shared::ShardMapEvent;
pub use replication::jobs::Replication;
pub use spec::{Delays, Fault, NodeSpec, Request, Version};
