//! couchdb-cluster-init: turns N freshly started CouchDB 3.4.2 nodes into one verified cluster,
//! and keeps it right afterwards. `main.rs` is a thin shell over this library so that every
//! behaviour is testable.
//!
//! The folders are the layers, each using only the ones listed before it:
//!
//! - `util` — plumbing: configuration, exit codes, time, text, logging, DNS;
//! - `client` — the typed CouchDB HTTP client, the only place that builds URLs or parses
//!   CouchDB JSON;
//! - `cluster` — the model every command shares: a session over the nodes, the survey of what
//!   they hold, the health verdict, the placement planner and the move engine;
//! - `commands` — one procedure per command an operator runs, read top to bottom as its steps;
//! - `cli` — the command line.

pub mod cli;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod util;
