//! The CouchDB HTTP surface, typed. Nothing else builds URLs or parses CouchDB JSON.
//!
//! Bodies are never logged and never copied into errors except CouchDB's own short `error` /
//! `reason` fields: config answers carry the chttpd secret and the admin hash.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::util::config::{NodeAddr, Secret};

mod ops;
mod shard_doc;

pub use ops::{
    generation, segment, CopyDoc, CopyInfo, CopySizes, CopyState, Gone, Saved, ShardDocs,
    Unreadable,
};
pub use shard_doc::{parse_file, Move, ShardDoc, INTENT_FIELD};
pub mod dist;
mod recovery;
mod replication;
mod zones;

pub use recovery::Access;

pub use replication::{DbCounts, DbCreated, Endpoint, OneShotDoc, Put, SchedulerDoc};
pub use zones::{ClusterConfig, NodeDoc, ZONE_SECTION};
// Defined with the exit codes, which map each kind to one; made here.
pub use crate::util::exit::{NodeError, NodeResult};

/// A node that answers more than this is not a CouchDB answering our questions.
pub const MAX_BODY: u64 = 16 * 1024 * 1024;

/// The `maintenance_mode` that drains a node: `/_up` answers 404 (the load balancer and a
/// readiness probe leave it) while it still serves the cluster (PROTOCOL.md, the rolling upgrade).
pub const DRAINED: &str = "nolb";

/// What `/_up` says.
#[derive(Debug, PartialEq, Eq)]
pub enum Up {
    Ready,
    /// Answers HTTP but asks not to be used: `maintenance_mode`, `nolb`, `seeding`.
    NotReady(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Membership {
    /// Erlang nodes connected right now (including the node itself).
    pub all_nodes: Vec<String>,
    /// Documents of the node-local `_nodes` database: who the node thinks are members.
    pub cluster_nodes: Vec<String>,
}

/// The parts of a node's configuration that `finish_cluster` copies, plus the shard defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeConfig {
    pub uuid: Option<String>,
    pub secret: Option<Secret>,
    pub admin_hash: Option<Secret>,
    pub n: Option<String>,
    pub q: Option<String>,
    /// `[cluster] placement`: where new databases go by zone.
    pub placement: Option<String>,
    /// The zone the node reports for itself, `[couchdb_cluster_init] zone` (empty: none).
    pub zone: Option<String>,
    /// What the security section reads of it (none of it secret).
    pub settings: Settings,
}

/// The settings that say how exposed a node is. Keys as CouchDB 3.4.2's source reads them:
/// CORS from `[httpd] enable_cors` (chttpd_cors.erl; `[chttpd] enable_cors` counts too), `[cors]
/// origins` and `credentials`; user documents public to all users with `[chttpd_auth]
/// users_db_public` (or the older `[couch_httpd_auth]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub enable_cors: bool,
    pub cors_origins: Vec<String>,
    pub cors_credentials: bool,
    pub users_db_public: bool,
    /// `[chttpd] require_valid_user`: anonymous requests refused everywhere.
    pub require_valid_user: bool,
    /// `[chttpd] bind_address`.
    pub bind_address: Option<String>,
}

pub type ShardMap = BTreeMap<String, Vec<String>>;

#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    Added,
    AlreadyMember,
    /// 500 `badmatch`/`file_exists`: this write raced another first write to a fresh `_nodes`
    /// and was **not** made (PROTOCOL.md trap 22). Re-read, then ask again.
    NotWritten,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    Finished,
    AlreadyFinished,
    /// 500 setup_error: a member did not answer a ping within CouchDB's own 5 s.
    NodesNotConnected,
}

pub struct Client {
    agent: ureq::Agent,
    user: String,
    authorization: Secret,
    request_timeout: Duration,
    deadline: Instant,
}

impl Client {
    pub fn new(
        user: &str,
        password: &Secret,
        request_timeout: Duration,
        deadline: Instant,
    ) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Talk to the nodes directly even where HTTP_PROXY is set for the rest of a pod.
            .proxy(None)
            // A fresh connection per request: CouchDB may write an unsolicited second response on
            // a kept-alive connection, and a restarted node leaves dead pooled sockets behind.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .user_agent(concat!("couchdb-cluster-init/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let token = base64(format!("{user}:{}", password.expose()).as_bytes());
        Client {
            agent,
            user: user.to_string(),
            authorization: Secret::new(format!("Basic {token}")),
            request_timeout,
            deadline,
        }
    }

    /// `/_up` without credentials: a wrong password is answered 401 even there, and waiting must
    /// not spend the five attempts before the account locks.
    pub fn up(&self, node: &NodeAddr) -> NodeResult<Up> {
        let (status, body) = self.call(node, "GET", "/_up", None, false, "/_up")?;
        match status {
            200 => Ok(Up::Ready),
            // Not a wrong password (we sent none): the node demands credentials even for /_up.
            401 => Err(NodeError::Unexpected {
                node: node.label.clone(),
                what: "/_up without credentials".into(),
                status,
                reason: "set [chttpd] require_valid_user_except_for_up = true on the node".into(),
            }),
            _ => {
                let state = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| format!("HTTP {status}"));
                Ok(Up::NotReady(state))
            }
        }
    }

    /// The node's real Erlang name, e.g. `couchdb@couchdb-1.cluster`.
    pub fn local_name(&self, node: &NodeAddr) -> NodeResult<String> {
        #[derive(Deserialize)]
        struct Local {
            name: String,
        }
        Ok(self
            .get::<Local>(node, "/_node/_local", "/_node/_local")?
            .name)
    }

    pub fn membership(&self, node: &NodeAddr) -> NodeResult<Membership> {
        self.get(node, "/_membership", "/_membership")
    }

    pub fn all_dbs(&self, node: &NodeAddr) -> NodeResult<Vec<String>> {
        self.get(node, "/_all_dbs", "/_all_dbs")
    }

    /// The configuration of the node named `name`, asked of `via`. CouchDB answers
    /// `/_node/<name>/_config` with an Erlang call to that node, which does not authenticate
    /// there: after `finish_cluster` replaced the other nodes' admin hash, asking each of them
    /// directly would make each pay the password hash again (~110–175 ms of CPU). Only `_config`
    /// (and `_stats`, `_system`) is read this way; other `/_node/<name>/…` paths are replayed as
    /// HTTP on that node, credentials and their cost included.
    pub fn node_config_of(&self, via: &NodeAddr, name: &str) -> NodeResult<NodeConfig> {
        let path = format!("/_node/{name}/_config");
        let all: BTreeMap<String, BTreeMap<String, String>> = self.get(via, &path, &path)?;
        let value = |section: &str, key: &str| all.get(section).and_then(|s| s.get(key)).cloned();
        Ok(NodeConfig {
            uuid: value("couchdb", "uuid"),
            secret: value("chttpd_auth", "secret").map(Secret::new),
            admin_hash: value("admins", &self.user).map(Secret::new),
            n: value("cluster", "n"),
            q: value("cluster", "q"),
            placement: value("cluster", "placement"),
            zone: value(ZONE_SECTION, "zone")
                .map(|z| z.trim().to_string())
                .filter(|z| !z.is_empty()),
            settings: settings(&value),
        })
    }

    /// Joins `name` to the cluster of `coordinator`.
    pub fn add_node(&self, coordinator: &NodeAddr, name: &str) -> NodeResult<Added> {
        let what = format!("PUT /_node/_local/_nodes/{name}");
        let (status, body) = self.call(
            coordinator,
            "PUT",
            &format!("/_node/_local/_nodes/{name}"),
            Some("{}"),
            true,
            &what,
        )?;
        match status {
            // `_nodes` is node-local (one file on the coordinator): there is no quorum to fall
            // short of, and the converge phase waits until every node lists every member.
            201 | 202 => Ok(Added::Added),
            409 => Ok(Added::AlreadyMember),
            500 if error_reason(&body) == "badmatch: file_exists" => Ok(Added::NotWritten),
            _ => Err(self.unexpected(coordinator, &what, status, &body)),
        }
    }

    pub fn finish_cluster(&self, coordinator: &NodeAddr) -> NodeResult<Finish> {
        let what = "POST /_cluster_setup finish_cluster";
        let body = r#"{"action":"finish_cluster"}"#;
        let (status, answer) = self.call(
            coordinator,
            "POST",
            "/_cluster_setup",
            Some(body),
            true,
            what,
        )?;
        let reason = error_reason(&answer);
        // Not a document write: what it promises (the system databases, the copied admin,
        // uuid and secret) is read back from every node by the verify phase.
        match status {
            201 => Ok(Finish::Finished),
            400 if reason.contains("already finished") => Ok(Finish::AlreadyFinished),
            500 if answer.contains("setup_error") => Ok(Finish::NodesNotConnected),
            _ => Err(self.unexpected(coordinator, what, status, &answer)),
        }
    }

    /// Where each shard range of `db` lives; `None` if the database does not exist.
    pub fn shards(&self, node: &NodeAddr, db: &str) -> NodeResult<Option<ShardMap>> {
        #[derive(Deserialize)]
        struct Shards {
            shards: ShardMap,
        }
        let what = format!("GET /{db}/_shards");
        let (status, body) =
            self.call(node, "GET", &format!("/{db}/_shards"), None, true, &what)?;
        match status {
            200 => parse::<Shards>(node, &what, &body).map(|s| Some(s.shards)),
            404 => Ok(None),
            _ => Err(self.unexpected(node, &what, status, &body)),
        }
    }

    fn get<T: DeserializeOwned>(&self, node: &NodeAddr, path: &str, what: &str) -> NodeResult<T> {
        let (status, body) = self.call(node, "GET", path, None, true, what)?;
        match status {
            200 => parse(node, what, &body),
            _ => Err(self.unexpected(node, what, status, &body)),
        }
    }

    /// One request; authentication failures are classified here so no caller can retry them.
    fn call(
        &self,
        node: &NodeAddr,
        method: &str,
        path: &str,
        body: Option<&str>,
        authenticated: bool,
        what: &str,
    ) -> NodeResult<(u16, String)> {
        let label = node.label.clone();
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(NodeError::Unreachable {
                node: label,
                reason: "deadline reached".into(),
            });
        }
        let timeout = self.request_timeout.min(remaining);
        let url = format!("{}{}", node.url, path);
        let result = match (method, body) {
            ("DELETE", _) => self
                .prepare(self.agent.delete(&url), authenticated, timeout)
                .call(),
            // `POST /<db>/_sync_shards` takes no body (Content-Length: 0, as in transcript 11).
            ("POST", None) => self
                .prepare(self.agent.post(&url), authenticated, timeout)
                .send_empty(),
            // `PUT /<db>` creates a database and takes no body.
            ("PUT", None) => self
                .prepare(self.agent.put(&url), authenticated, timeout)
                .send_empty(),
            (_, None) => self
                .prepare(self.agent.get(&url), authenticated, timeout)
                .call(),
            (_, Some(body)) => {
                let request = match method {
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                self.prepare(request, authenticated, timeout)
                    .header("Content-Type", "application/json")
                    .send(body)
            }
        };
        let mut response = result.map_err(|e| transport_error(&label, e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => NodeError::Malformed {
                    node: label.clone(),
                    what: what.into(),
                    reason: format!("a body larger than {} MiB", MAX_BODY / 1024 / 1024),
                },
                other => transport_error(&label, other),
            })?;
        log::trace!(
            "{label}: {method} {path} -> {status} ({} bytes)",
            text.len()
        );
        match status {
            401 => Err(NodeError::Unauthorized {
                node: label,
                reason: error_reason(&text),
            }),
            403 if error_reason(&text).to_lowercase().contains("locked") => {
                Err(NodeError::Locked { node: label })
            }
            _ => Ok((status, text)),
        }
    }

    fn prepare<B>(
        &self,
        request: ureq::RequestBuilder<B>,
        authenticated: bool,
        timeout: Duration,
    ) -> ureq::RequestBuilder<B> {
        let request = request.header("Accept", "application/json");
        let request = if authenticated {
            request.header("Authorization", self.authorization.expose())
        } else {
            request
        };
        request.config().timeout_global(Some(timeout)).build()
    }

    fn unexpected(&self, node: &NodeAddr, what: &str, status: u16, body: &str) -> NodeError {
        NodeError::Unexpected {
            node: node.label.clone(),
            what: what.into(),
            status,
            reason: error_reason(body),
        }
    }
}

fn settings(value: &dyn Fn(&str, &str) -> Option<String>) -> Settings {
    let on = |section: &str, key: &str| value(section, key).is_some_and(|v| v.trim() == "true");
    Settings {
        enable_cors: on("httpd", "enable_cors") || on("chttpd", "enable_cors"),
        cors_origins: value("cors", "origins")
            .map(|o| {
                o.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        cors_credentials: on("cors", "credentials"),
        users_db_public: on("chttpd_auth", "users_db_public")
            || on("couch_httpd_auth", "users_db_public"),
        require_valid_user: on("chttpd", "require_valid_user"),
        bind_address: value("chttpd", "bind_address"),
    }
}

fn parse<T: DeserializeOwned>(node: &NodeAddr, what: &str, body: &str) -> NodeResult<T> {
    // serde_json's message names a position, never the content, so it cannot leak a secret.
    serde_json::from_str(body).map_err(|e| NodeError::Malformed {
        node: node.label.clone(),
        what: what.into(),
        reason: format!(
            "JSON that is not what CouchDB 3.4.2 sends ({} bytes: {e})",
            body.len()
        ),
    })
}

/// CouchDB's `{"error":…,"reason":…}`, shortened; never the raw body.
fn error_reason(body: &str) -> String {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => return format!("a {}-byte body that is not JSON", body.len()),
    };
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(200)
            .collect::<String>()
    };
    match (field("error"), field("reason")) {
        (e, r) if e.is_empty() && r.is_empty() => "no error/reason fields".into(),
        (e, r) if r.is_empty() => e,
        (e, r) if e.is_empty() => r,
        (e, r) => format!("{e}: {r}"),
    }
}

fn transport_error(node: &str, e: ureq::Error) -> NodeError {
    let reason = match e {
        ureq::Error::Timeout(_) => "timed out".to_string(),
        ureq::Error::HostNotFound => "host name does not resolve".to_string(),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                "connection reset".to_string()
            }
            _ => io.to_string(),
        },
        ureq::Error::Protocol(p) => {
            return NodeError::Malformed {
                node: node.into(),
                what: "a request".into(),
                reason: format!("broken HTTP: {p}"),
            }
        }
        other => other.to_string(),
    };
    NodeError::Unreachable {
        node: node.into(),
        reason,
    }
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A page of `_all_docs` (or of `_dbs`'s): each row's id, and its document where
/// `include_docs=true` asked for it.
#[derive(Deserialize)]
struct AllDocs {
    rows: Vec<AllDocsRow>,
}

#[derive(Deserialize)]
struct AllDocsRow {
    id: String,
    #[serde(default)]
    doc: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("admin:password", "YWRtaW46cGFzc3dvcmQ="),
        ] {
            assert_eq!(base64(raw.as_bytes()), encoded);
        }
    }

    #[test]
    fn error_reason_never_echoes_a_body_that_is_not_couchdb_json() {
        assert_eq!(
            error_reason(r#"{"error":"bad_request","reason":"Cluster is already finished"}"#),
            "bad_request: Cluster is already finished"
        );
        assert_eq!(
            error_reason("secret-looking garbage"),
            "a 22-byte body that is not JSON"
        );
        assert_eq!(
            error_reason(r#"{"admins":{"admin":"-pbkdf2"}}"#),
            "no error/reason fields"
        );
    }
}
