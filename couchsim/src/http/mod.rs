//! The HTTP layer: a node as its clients see it. `server` accepts connections and takes each
//! request through injected `faults`, then `routes`, which answers most paths itself and hands
//! on `/_cluster_setup` (`setup`), databases and their documents (`clustered`, with
//! `repl_http` for what a replicator asks of them) and `/_scheduler/*` (`scheduler`); `answers`
//! holds the bodies several of them give; `fauxton` answers `/_utils`, the UI's
//! door. It uses every layer below it and the `ticker` that
//! `server` starts beside the acceptor; only the in-process API and the binary use it.

pub(crate) mod faults;
pub(crate) mod server;
pub(crate) mod setup;

mod answers;
mod clustered;
mod fauxton;
mod repl_http;
mod routes;
mod scheduler;
