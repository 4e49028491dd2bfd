//! The cluster model the commands share, built on the CouchDB client: a session over the
//! nodes (one deadline, parallel requests), the survey of what they hold, the one health
//! verdict, the placement planner, the move engine, and the catch-up of a returning node.
//! Nothing here names a command.

pub mod catchup;
pub mod health;
pub mod moves;
pub mod planner;
pub mod session;
pub mod survey;
