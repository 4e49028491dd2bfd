//! Exit codes: the one table, the errors that carry a code (`Failure`, `NodeError`), and the one
//! place where an error becomes a code.

use std::fmt;

use crate::util::config::ConfigError;

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
    /// `restore` refused before writing anything, or did not finish: the message names why and
    /// which databases.
    Restore,
    /// `drain` refused before writing anything (another node drained, a member down, the
    /// cluster not healthy), or the load balancer still sent the node requests at the deadline.
    Drain,
    /// `undrain`: the node did not come back as a connected member, or its copies did not
    /// catch up with the others, in time. It stays drained; nothing else was touched.
    NotBack,
    /// A node's Erlang distribution is not what COUCHDB_DIST_TLS says, or the nodes' differ
    /// (transport, or the CA of their certificates): they cannot all connect, and one would be
    /// the exposed one.
    Security,
}

/// (status, code, meaning): printed by `--help`, copied in docs/configuration.md (a test keeps them equal).
pub const TABLE: &[(Status, u8, &str)] = &[
    (Status::Formed, 0, "done: cluster formed and verified (init), healthy (check, status), copies moved (remove, rebalance)"),
    (Status::Failed, 1, "unexpected error, e.g. a node answered something that is not CouchDB"),
    (Status::Config, 2, "configuration error: a variable, or a node's Erlang name (nonode@nohost, no dot, duplicate)"),
    (Status::Unreachable, 3, "a node did not answer /_up before COUCHDB_INIT_TIMEOUT (status: a node in COUCHDB_NODES does not answer)"),
    (Status::Auth, 4, "wrong COUCHDB_USER/COUCHDB_PASSWORD, or the account is locked on a node (watch: also the backup's COUCHDB_BACKUP_* credentials)"),
    (Status::Unsafe, 5, "unsafe to join (a node holds databases or belongs to another cluster): nothing written"),
    (Status::Unverified, 6, "not healthy: membership, copies of a range, shard maps (conflicts, unreadable) or config drift (init, check, status)"),
    (Status::NotConnected, 7, "nodes never connected to each other: cookie mismatch, Erlang name or ports 4369/9100"),
    (Status::Refused, 8, "remove/rebalance refused, nothing written: members cannot hold n copies, a member is down, or a map names a non-member or cannot be read"),
    (Status::Incomplete, 9, "remove/rebalance stopped part-way (a new copy did not fill in time): every copy kept; run it again to finish"),
    (Status::Backup, 11, "backup not in place (init, backup, status): the backup CouchDB unreachable or refusing COUCHDB_BACKUP_*, a replication missing or failed, documents not arriving, or a renewed replication doc not yet on every copy"),
    (Status::Restore, 12, "restore refused, nothing written (the backup is this cluster, the cluster is not healthy, a named database is not on the backup), or incomplete (named): run it again to finish"),
    (Status::Drain, 13, "drain refused, nothing written (another node is drained, a member is down, the cluster is not healthy), or the load balancer still sent the node requests at the deadline (it stays drained: undrain brings it back)"),
    (Status::NotBack, 14, "undrain (and scripts/upgrade): the node did not come back as a connected member, or its copies did not catch up with the others, within COUCHDB_INIT_TIMEOUT; it stays drained, nothing else touched"),
    (Status::Security, 15, "distribution not as configured (init, check, status): a node on plain TCP while COUCHDB_DIST_TLS=true (or TLS while false), nodes on different transports, or TLS certificates from different CAs; nothing written"),
];

impl Status {
    pub fn code(self) -> u8 {
        TABLE
            .iter()
            .find(|(s, _, _)| *s == self)
            .map_or(1, |(_, code, _)| *code)
    }
}

/// How one request to a node failed. The client makes these; they live here, beside the table,
/// because each kind ends a run with its own code (`status_of`).
#[derive(Debug)]
pub enum NodeError {
    /// Refused, timed out, name did not resolve: worth waiting for.
    Unreachable { node: String, reason: String },
    /// 401: never retried, 5 failures lock the account for 5 minutes.
    Unauthorized { node: String, reason: String },
    /// 403 lockout after repeated failures.
    Locked { node: String },
    /// A status this request should never get.
    Unexpected {
        node: String,
        what: String,
        status: u16,
        reason: String,
    },
    /// Not JSON, not the JSON we expect, or far too large.
    Malformed {
        node: String,
        what: String,
        reason: String,
    },
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Unreachable { node, reason } => {
                write!(f, "node {node} is unreachable: {reason}")
            }
            NodeError::Unauthorized { node, reason } => write!(
                f,
                "node {node} refused COUCHDB_USER/COUCHDB_PASSWORD ({reason}); not retried, \
                 because 5 failures lock the account on that node for 5 minutes. Changed the \
                 password (e.g. a new .env)? A node keeps the admin it was first started with \
                 (in its config volume): use that password again, or change it on every node \
                 first (PUT /_node/_local/_config/admins/<user>)"
            ),
            NodeError::Locked { node } => write!(
                f,
                "node {node} has temporarily locked the account after repeated wrong passwords; \
                 fix COUCHDB_PASSWORD and retry in 5 minutes"
            ),
            NodeError::Unexpected {
                node,
                what,
                status,
                reason,
            } => {
                write!(
                    f,
                    "node {node} answered {what} with HTTP {status}: {reason}"
                )
            }
            NodeError::Malformed { node, what, reason } => {
                write!(f, "node {node} answered {what} with {reason}")
            }
        }
    }
}

impl std::error::Error for NodeError {}

pub type NodeResult<T> = Result<T, NodeError>;

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
