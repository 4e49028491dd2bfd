//! couchdb-cluster-init: turns N freshly started CouchDB 3.4.2 nodes into one verified cluster.
//! `main.rs` is a thin shell over this library so that every behaviour is testable.

pub mod backup;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod exit;
pub mod formation;
pub mod health;
pub mod logging;
pub mod moves;
pub mod planner;
pub mod rebalance;
pub mod remove;
pub mod session;
pub mod status;
pub mod survey;
pub mod text;
