//! The cluster model the commands share, built on the CouchDB client: a session over the
//! nodes (one deadline, parallel requests), the survey of what they hold, the one health
//! verdict, the placement planner, the move engine, how exposed the cluster is (security), what
//! every copy of a document holds, and the catch-up of a returning node.
//! Nothing here names a command.

pub mod catchup;
pub mod everywhere;
pub mod health;
pub mod moves;
pub mod placement;
pub mod planner;
pub mod security;
pub mod session;
pub mod survey;
pub mod zones;
