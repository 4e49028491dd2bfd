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

pub use api::{Cluster, ClusterBuilder, Node};
pub use net::epmd::{DnsEpmd, Epmd, Registry};
pub use node::shared::ShardMapEvent;
pub use replication::jobs::Replication;
pub use spec::{Delays, Fault, NodeSpec, Request};
