//! The cluster model the commands share, built on the CouchDB client: a session over the
//! nodes (one deadline, parallel requests), the survey of what they hold, the one health
//! verdict, the placement planner, the move engine, and how exposed the cluster is (security).
//! Nothing here names a command.

pub mod health;
pub mod moves;
pub mod placement;
pub mod planner;
pub mod security;
pub mod session;
pub mod survey;
pub mod zones;
