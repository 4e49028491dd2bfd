//! Exit codes: the one table, and the one place where an error becomes a code.

use std::fmt;

use crate::client::NodeError;
use crate::config::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The cluster is formed and verified.
    Formed,
    /// Anything not named below (e.g. a node answered garbage).
    Failed,
    /// A variable is missing or malformed, or a node is misconfigured (its Erlang name).
    Config,
    /// A node never answered `/_up` before the deadline.
    Unreachable,
    /// Wrong credentials, or the account is locked on a node.
    Auth,
    /// Joining would risk data (a node already holds databases or belongs elsewhere): nothing written.
    Unsafe,
    /// The cluster formed, but a check of the finished cluster failed.
    Unverified,
    /// Nodes answer HTTP but never connected to each other (cookie, name, Erlang ports).
    NotConnected,
    /// `remove`/`rebalance` refused before writing anything: it could not be done safely.
    Refused,
    /// `remove`/`rebalance` stopped part-way (a copy did not fill in time, the deadline): no
    /// copy was removed before its replacement was proven; running it again finishes it.
    Incomplete,
    /// The cluster is fine; its backup is not in place, or documents do not arrive.
    Backup,
}

/// (status, code, meaning): printed by `--help`, copied in the README (a test keeps them equal).
pub const TABLE: &[(Status, u8, &str)] = &[
    (Status::Formed, 0, "done: cluster formed and verified (init), healthy (check, status), copies moved (remove, rebalance)"),
    (Status::Failed, 1, "unexpected error, e.g. a node answered something that is not CouchDB"),
    (Status::Config, 2, "configuration error: a variable, or a node's Erlang name (nonode@nohost, no dot, duplicate)"),
    (Status::Unreachable, 3, "a node did not answer /_up before COUCHDB_INIT_TIMEOUT (status: a node in COUCHDB_NODES does not answer)"),
    (Status::Auth, 4, "wrong COUCHDB_USER/COUCHDB_PASSWORD, or the account is locked on a node"),
    (Status::Unsafe, 5, "unsafe to join (a node holds databases or belongs to another cluster): nothing written"),
    (Status::Unverified, 6, "not healthy: membership, copies of a range, shard maps (conflicts, unreadable) or config drift (init, check, status)"),
    (Status::NotConnected, 7, "nodes never connected to each other: cookie mismatch, Erlang name or ports 4369/9100"),
    (Status::Refused, 8, "remove/rebalance refused, nothing written: members cannot hold n copies, a member is down, or a map names a non-member or cannot be read"),
    (Status::Incomplete, 9, "remove/rebalance stopped part-way (a new copy did not fill in time): every copy kept; run it again to finish"),
    (Status::Backup, 11, "backup not in place (init, backup, status): the backup CouchDB unreachable or refusing COUCHDB_BACKUP_*, a replication missing or failed, or documents not arriving"),
];

impl Status {
    pub fn code(self) -> u8 {
        TABLE
            .iter()
            .find(|(s, _, _)| *s == self)
            .map_or(1, |(_, code, _)| *code)
    }
}

/// An error that knows its exit status; the message is what the operator reads.
#[derive(Debug)]
pub struct Failure {
    pub status: Status,
    pub message: String,
}

impl Failure {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The outermost classified cause wins: a phase may wrap a node error in a more precise Failure.
pub fn status_of(err: &anyhow::Error) -> Status {
    // `downcast_ref` on the error itself also sees a Failure attached with `.context(..)`.
    if let Some(f) = err.downcast_ref::<Failure>() {
        return f.status;
    }
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.status;
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return Status::Config;
        }
        if let Some(e) = cause.downcast_ref::<NodeError>() {
            return match e {
                NodeError::Unreachable { .. } => Status::Unreachable,
                NodeError::Unauthorized { .. } | NodeError::Locked { .. } => Status::Auth,
                _ => Status::Failed,
            };
        }
    }
    Status::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        for (i, (_, a, _)) in TABLE.iter().enumerate() {
            assert!(
                TABLE[i + 1..].iter().all(|(_, b, _)| a != b),
                "code {a} twice"
            );
        }
        assert_eq!(Status::Formed.code(), 0);
        assert_eq!(Status::Unsafe.code(), 5);
    }

    #[test]
    fn outer_failure_wins_over_inner_cause() {
        let inner = anyhow::Error::new(Failure::new(Status::Unreachable, "inner"));
        let outer = inner.context(Failure::new(Status::NotConnected, "outer"));
        assert_eq!(status_of(&outer), Status::NotConnected);
        assert_eq!(status_of(&anyhow::anyhow!("plain")), Status::Failed);
    }
}
