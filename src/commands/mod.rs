//! The procedures an operator runs, one file each, each reading top to bottom as its steps in
//! words a CouchDB operator would use: `formation` (init), `status` (and check), `remove`,
//! `rebalance`, `backup`, `restore`, `watch`, which runs init's procedures again whenever
//! there is something to do, `drain` and `undrain` around a node's stop, and `guard`, which does
//! both from inside a Kubernetes pod. They use the cluster model, the client and the plumbing
//! below them.

pub mod backup;
pub mod drain;
pub mod formation;
pub mod guard;
pub mod rebalance;
pub mod remove;
pub mod restore;
pub mod status;
pub mod undrain;
pub mod watch;
