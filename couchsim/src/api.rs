//! The in-process API: build a cluster of simulated nodes on ephemeral loopback ports, drive
//! them (stop, restart, faults) and inspect them (requests, membership, shards, config).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::net::epmd::{EpmdServer, Registry};
use crate::net::tls::Distribution;
use serde_json::{json, Value};

use crate::cluster::copies::Edit;
use crate::cluster::fabric;
use crate::http::faults;
use crate::http::server;
use crate::node::docs::{Page, WriteError};
use crate::node::ejson::Ej;
use crate::node::shards;
use crate::node::shared::{Pin, ShardMapEvent, Shared};
use crate::node::{lock, DbsEdit, NodeConfig, NodeInner};
use crate::replication::jobs::{ReplState, Replication};
use crate::spec::{Delays, Fault, NodeSpec, Request, Version};

/// One simulated CouchDB node. All methods take `&self` and are thread-safe.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl Node {
    /// The Erlang node name (`node1@127.0.0.1`, `nonode@nohost`, …).
    pub fn name(&self) -> String {
        self.inner.name.clone()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr())
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.inner.addr()
    }

    /// Where its distribution listens (its own port, never the HTTP one).
    pub fn dist_addr(&self) -> std::net::SocketAddr {
        self.inner.dist_addr
    }

    /// Boots the node (waits `Delays::boot`) and returns once it listens. No-op if running.
    pub fn start(&self) {
        server::start(&self.inner);
    }

    /// Closes the listener and every open connection; the port then refuses connections.
    /// On-disk state (config, `_nodes`, `_dbs`) is kept, in-memory state is lost.
    pub fn stop(&self) {
        self.inner.stop();
    }

    pub fn restart(&self) {
        self.inner.stop();
        server::start(&self.inner);
    }

    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    /// The CouchDB release this node answers as.
    pub fn version(&self) -> Version {
        self.inner.version()
    }

    /// The container re-created on another image with the same volumes: stops the node,
    /// starts it again as `v` with its data and config (`maintenance_mode` included). Its
    /// copies then lack the writes made while it was down until its peers push them
    /// (`Delays::catch_up`).
    pub fn upgrade(&self, v: Version) {
        self.inner.stop();
        self.inner.set_version(v);
        server::start(&self.inner);
    }

    pub fn inject(&self, f: Fault) {
        faults::inject(&self.inner, f);
    }

    pub fn clear_faults(&self) {
        faults::clear(&self.inner);
    }

    /// Requests this node answered, oldest first (distribution traffic excluded).
    pub fn requests(&self) -> Vec<Request> {
        self.inner
            .requests_seq()
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    /// How many requests with this method (case-insensitive) the node answered.
    pub fn count(&self, method: &str) -> usize {
        self.inner
            .requests_seq()
            .iter()
            .filter(|(_, r)| r.method.eq_ignore_ascii_case(method))
            .count()
    }

    pub fn reset_counters(&self) {
        self.inner.reset_log();
    }

    /// How many password hashes (first authentications against an admin hash, each costing
    /// `Delays::first_auth`) this node has computed since it was created.
    pub fn password_hashes(&self) -> u64 {
        self.inner.password_hashes()
    }

    /// `(all_nodes, cluster_nodes)` as `GET /_membership` would answer now.
    pub fn membership(&self) -> (Vec<String>, Vec<String>) {
        self.inner.membership()
    }

    /// As if someone created `name` on this node: shards on its current `_nodes` members.
    pub fn create_db(&self, name: &str) {
        fabric::create_db(&self.inner, name, None, None, fabric::Origin::Http);
    }

    /// `PUT /<name>?q=&n=` through this node. False when it exists already.
    pub fn create_db_q_n(&self, name: &str, q: u64, n: u64) -> bool {
        fabric::create_db(&self.inner, name, Some(q), Some(n), fabric::Origin::Http)
    }

    /// `PUT /<name>?q=&n=` through this node for each of `names`, with one push of `_dbs` at
    /// the end instead of one per database. Returns how many were created.
    pub fn create_dbs_q_n(&self, names: &[String], q: u64, n: u64) -> usize {
        fabric::create_dbs(&self.inner, names, Some(q), Some(n))
    }

    /// A clustered `_bulk_docs` through this node: each id gets the body `{"n":<its index>}`
    /// (as the recordings wrote them). Returns how many docs got a revision.
    pub fn write_docs<S: AsRef<str>>(&self, db: &str, ids: &[S]) -> usize {
        let edits = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Edit {
                id: id.as_ref().to_string(),
                rev: None,
                body: Ej::Obj(vec![("n".into(), Ej::Num(i.into()))]),
                deleted: false,
            })
            .collect();
        match fabric::update_docs(&self.inner, db, edits) {
            Ok(replies) => replies.iter().filter(|r| r.rev.is_some()).count(),
            Err(_) => 0,
        }
    }

    /// A clustered `_all_docs` through this node: the ids it answers (short while a range
    /// is read from an empty new copy, as CouchDB's; trap 11). `None` when the db does not
    /// exist or a range has no reachable copy.
    pub fn doc_ids(&self, db: &str) -> Option<Vec<String>> {
        let body = fabric::all_docs(&self.inner, db, &Page::default()).ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        Some(
            v["rows"]
                .as_array()?
                .iter()
                .filter_map(|r| r["id"].as_str().map(str::to_string))
                .collect(),
        )
    }

    /// A clustered single-doc read through this node (every copy asked, read repair).
    pub fn doc(&self, db: &str, id: &str) -> Option<Value> {
        let d = fabric::open_doc(&self.inner, db, id).ok()?;
        Some(d.to_json(id, true).to_value())
    }

    /// `doc_count` of a clustered db as `GET /<db>` through this node answers it (`None`: no
    /// such db). On a backup target: how many docs arrived.
    pub fn doc_count(&self, db: &str) -> Option<u64> {
        let info: Value = serde_json::from_str(&fabric::db_info(&self.inner, db)?).ok()?;
        info["doc_count"].as_u64()
    }

    /// A clustered `PUT /<db>/<id>` through this node, on top of the doc's current revision if
    /// it has one: the new rev (`None`: no such db, or no copy took it). No `_replicator`
    /// validation: write replication docs over HTTP.
    pub fn put_doc(&self, db: &str, id: &str, body: &Value) -> Option<String> {
        let rev = fabric::open_doc(&self.inner, db, id)
            .ok()
            .map(|d| d.rev().to_string());
        self.edit(db, id, rev, Ej::from_value(body), false)
    }

    /// A clustered `DELETE /<db>/<id>?rev=<current>` through this node: the tombstone's rev.
    pub fn delete_doc(&self, db: &str, id: &str) -> Option<String> {
        let rev = fabric::open_doc(&self.inner, db, id)
            .ok()?
            .rev()
            .to_string();
        self.edit(db, id, Some(rev), Ej::empty(), true)
    }

    fn edit(
        &self,
        db: &str,
        id: &str,
        rev: Option<String>,
        body: Ej,
        deleted: bool,
    ) -> Option<String> {
        let edit = Edit {
            id: id.to_string(),
            rev,
            body,
            deleted,
        };
        let replies = fabric::update_docs(&self.inner, db, vec![edit]).ok()?;
        replies.into_iter().next()?.rev
    }

    /// The replications this node's replicator holds: the `_replicator` docs it owns and
    /// their jobs' states (empty while the node is stopped).
    pub fn replications(&self) -> Vec<Replication> {
        if !self.inner.is_running() {
            return Vec::new();
        }
        let health = self.inner.delays.repl_health;
        lock(&self.inner.vol)
            .repl
            .get::<ReplState>()
            .replications(&self.inner.name, health)
    }

    /// `POST /<db>/_sync_shards` through this node.
    pub fn sync_shards(&self, db: &str) -> bool {
        fabric::sync_shards(&self.inner, db)
    }

    /// `doc_count` of this node's own copy of `range` of `db` (`None`: it has no such file;
    /// an orphan file left by a move counts).
    pub fn copy_doc_count(&self, db: &str, range: &str) -> Option<u64> {
        let st = lock(&self.inner.store);
        st.files
            .iter()
            .find(|(name, _)| {
                shards::parse_file_name(name)
                    .map(|(r, d, _)| r == range && d == db)
                    .unwrap_or(false)
            })
            .map(|(_, f)| f.doc_count())
    }

    /// The leaves of `id` in this node's own copy of its range of `db`, as `(rev, deleted)`,
    /// winner first: what that copy alone holds, no other asked, nothing repaired (`None`: this
    /// node holds no copy of that range; empty: the copy has no such doc).
    pub fn copy_revs(&self, db: &str, id: &str) -> Option<Vec<(String, bool)>> {
        let st = lock(&self.inner.store);
        let m = st.map(db)?;
        let (range, holders) = m.locate(id)?;
        if !holders.contains(&self.inner.name) {
            return None;
        }
        let Some(file) = st.files.get(&m.file(db, range)) else {
            return Some(Vec::new());
        };
        Some(file.docs.get(id).map_or_else(Vec::new, |d| {
            d.leaves
                .iter()
                .map(|l| (l.rev().to_string(), l.deleted))
                .collect()
        }))
    }

    /// Internal-replication pushes this node has scheduled or running (0: idle).
    pub fn pending_pushes(&self) -> usize {
        let v = lock(&self.inner.vol);
        v.pushes.len() + v.running_pushes
    }

    /// Nothing queued on this node: no `_nodes`/`_dbs` push due, no held incoming copy, no
    /// internal-replication push scheduled or running.
    pub fn settled(&self) -> bool {
        let v = lock(&self.inner.vol);
        v.push_due.is_empty()
            && v.pending_sync.is_empty()
            && v.pushes.is_empty()
            && v.running_pushes == 0
    }

    /// This node's node-local dbs and shard files (`GET /_node/<node>/_all_dbs`).
    pub fn files(&self) -> Vec<String> {
        lock(&self.inner.store).local_dbs()
    }

    /// This node's `_dbs` doc for `db` (`GET /_node/_local/_dbs/<db>?conflicts=true`).
    pub fn dbs_doc(&self, db: &str) -> Option<Value> {
        let st = lock(&self.inner.store);
        let d = st.dbs.get(db).ok()?;
        Some(d.to_json(db, true).to_value())
    }

    /// `PUT /_node/_local/_dbs/<db>` on this node with a whole doc (`_rev` in it): the new
    /// rev, or the status and body CouchDB answers (403 from `mem3_bdu`, 409 on a stale or
    /// missing `_rev`). Two of these on two nodes from the same `_rev`, one right after the
    /// other, conflict (the first reaches the second a `ring_hop` later at the soonest).
    pub fn put_dbs_doc(&self, db: &str, doc: &Value) -> Result<String, (u16, Value)> {
        let mut rev = None;
        let mut fields = Vec::new();
        for (k, v) in doc.as_object().into_iter().flatten() {
            if k == "_rev" {
                rev = v.as_str().map(str::to_string);
            } else if !k.starts_with('_') {
                fields.push((k.clone(), Ej::from_value(v)));
            }
        }
        let error =
            |status, e: &str, reason: &str| Err((status, json!({"error": e, "reason": reason})));
        match self.inner.edit_dbs(db, rev.as_deref(), Ej::Obj(fields)) {
            Ok(rev) => Ok(rev),
            Err(DbsEdit::Forbidden(reason)) => error(403, "forbidden", &reason),
            Err(DbsEdit::Refused(WriteError::Conflict)) => {
                error(409, "conflict", "Document update conflict.")
            }
            Err(DbsEdit::Refused(WriteError::NotFound(why))) => error(404, "not_found", why),
        }
    }

    /// As if `finish_cluster` ran on this node alone: `_users` and `_replicator` with every
    /// shard on itself.
    pub fn finish_alone(&self) {
        for db in crate::http::setup::SYSTEM_DBS {
            fabric::create_db_alone(&self.inner, db);
        }
    }

    /// Sets a config value (admins are hashed like CouchDB does).
    pub fn set_config(&self, section: &str, key: &str, value: &str) {
        self.inner.set_config(section, key, value);
    }

    pub fn config(&self, section: &str, key: &str) -> Option<String> {
        self.inner.config(section, key)
    }

    /// Re-hashes the spec's admin password with a new salt (trap 5: drift).
    pub fn rehash_admin(&self) {
        self.inner.rehash_admin();
    }

    /// `GET /<db>/_shards` as a map range → nodes (descending, like CouchDB lists them).
    pub fn shards(&self, db: &str) -> Option<BTreeMap<String, Vec<String>>> {
        lock(&self.inner.store).shards(db)
    }

    pub fn all_dbs(&self) -> Vec<String> {
        lock(&self.inner.store).all_dbs()
    }

    /// The Erlang cookie in effect now (`receive_cookie` may have replaced the spec's).
    pub fn cookie(&self) -> String {
        lock(&self.inner.vol).cookie.clone()
    }

    /// Forgets everything on disk (a container re-created without its volumes): fresh
    /// config (new uuid, admin re-hashed), `_nodes` with only itself, no `_dbs`.
    pub fn wipe(&self) {
        self.inner.wipe();
    }
}

type SpecFn = Box<dyn FnOnce(NodeSpec) -> NodeSpec>;

/// Builds a [`Cluster`].
pub struct ClusterBuilder {
    n: usize,
    admin: Option<(String, String)>,
    cookie: String,
    secret: Option<String>,
    delays: Delays,
    seed: u64,
    configure: Vec<(usize, SpecFn)>,
}

impl ClusterBuilder {
    /// `node1@127.0.0.1` … `nodeN@127.0.0.1` (default 3).
    pub fn nodes(mut self, n: usize) -> Self {
        self.n = n;
        self
    }

    /// Default `admin`/`password`.
    pub fn admin(mut self, user: &str, password: &str) -> Self {
        self.admin = Some((user.to_string(), password.to_string()));
        self
    }

    /// Default `"cookie"`.
    pub fn cookie(mut self, c: &str) -> Self {
        self.cookie = c.to_string();
        self
    }

    /// `[chttpd_auth] secret` shared by every node (default: a random one per node).
    pub fn secret(mut self, s: &str) -> Self {
        self.secret = Some(s.to_string());
        self
    }

    pub fn delays(mut self, d: Delays) -> Self {
        self.delays = d;
        self
    }

    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }

    /// Adjusts node `i` (0-based).
    pub fn configure(mut self, i: usize, f: impl FnOnce(NodeSpec) -> NodeSpec + 'static) -> Self {
        self.configure.push((i, Box::new(f)));
        self
    }

    /// Reserves a port for every node, starts the ones not marked `stopped` (in parallel)
    /// and returns once they listen.
    pub fn start(self) -> Cluster {
        let ClusterBuilder {
            n,
            admin,
            cookie,
            secret,
            delays,
            seed,
            configure,
        } = self;
        let mut specs: Vec<NodeSpec> = (0..n)
            .map(|i| default_spec(i, &cookie, &admin, &secret))
            .collect();
        for (i, f) in configure {
            if i < specs.len() {
                let s = specs[i].clone();
                specs[i] = f(s);
            }
        }
        let registry = Arc::new(Registry::default());
        let epmd = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| EpmdServer::start(l, registry.clone()))
            .unwrap_or_else(|e| panic!("couchsim: cannot start the epmd: {e}"));
        let mut cluster = Cluster {
            nodes: Vec::new(),
            epmd,
            registry,
            shared: Arc::new(Shared::default()),
            seq: Arc::new(AtomicU64::new(0)),
            delays,
            seed,
            cookie,
            admin,
            secret,
        };
        for spec in specs {
            cluster.make_node(spec);
        }
        let to_start: Vec<Node> = cluster
            .nodes
            .iter()
            .filter(|n| !n.inner.spec.stopped)
            .cloned()
            .collect();
        std::thread::scope(|s| {
            for n in &to_start {
                s.spawn(move || n.start());
            }
        });
        cluster
    }
}

fn default_spec(
    i: usize,
    cookie: &str,
    admin: &Option<(String, String)>,
    secret: &Option<String>,
) -> NodeSpec {
    let mut s = NodeSpec::new(&format!("node{}@127.0.0.1", i + 1), cookie, admin.clone());
    s.secret = secret.clone();
    s
}

/// A set of simulated nodes. Dropping it stops every node and joins every thread.
pub struct Cluster {
    nodes: Vec<Node>,
    /// The nodes' epmd: all of them are on one host (127.0.0.1) as far as epmd can tell.
    epmd: EpmdServer,
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    seq: Arc<AtomicU64>,
    delays: Delays,
    seed: u64,
    cookie: String,
    admin: Option<(String, String)>,
    secret: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes)
            .finish()
    }
}

impl Cluster {
    /// A builder with 3 nodes, `admin`/`password`, cookie `cookie`, `Delays::default()`.
    /// Set `COUCHSIM_LOG=1` to see what the nodes do on stderr.
    pub fn builder() -> ClusterBuilder {
        crate::node::init_logging_from_env();
        ClusterBuilder {
            n: 3,
            admin: Some(("admin".to_string(), "password".to_string())),
            cookie: "cookie".to_string(),
            secret: None,
            delays: Delays::default(),
            seed: 0x5EED,
            configure: Vec::new(),
        }
    }

    fn make_node(&mut self, spec: NodeSpec) -> &Node {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("couchsim: cannot reserve a port: {e}"));
        let addr: SocketAddr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("couchsim: no local address: {e}"));
        let dist_listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("couchsim: cannot reserve a port: {e}"));
        let dist_addr: SocketAddr = dist_listener
            .local_addr()
            .unwrap_or_else(|e| panic!("couchsim: no local address: {e}"));
        let dist = match &spec.erl_flags {
            None => Distribution::plain(),
            Some(flags) => Distribution::from_erl_flags(flags)
                .unwrap_or_else(|e| panic!("couchsim: {}: ERL_FLAGS: {e}", spec.name)),
        };
        let stopped = spec.stopped;
        self.registry.register(&spec.name, dist_addr);
        let idx = self.nodes.len() as u64;
        let inner = NodeInner::new(NodeConfig {
            shared: self.shared.clone(),
            spec,
            delays: self.delays.clone(),
            epmd: self.registry.clone(),
            seed: self
                .seed
                .wrapping_mul(0x100_0000_01B3)
                .wrapping_add(idx + 1),
            seq: self.seq.clone(),
            // A stopped node must refuse connections: give its port back until it starts.
            listener: if stopped { None } else { Some(listener) },
            addr,
            dist_listener: if stopped { None } else { Some(dist_listener) },
            dist_addr,
            dist,
            persist: None,
        });
        self.nodes.push(Node { inner });
        let last = self.nodes.len() - 1;
        &self.nodes[last]
    }

    /// Node `i` (0-based). Panics when out of range.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The port of the epmd that answers `PORT_PLEASE2` for the running nodes (4369 for a real
    /// host; here one ephemeral port for the whole cluster).
    pub fn epmd_port(&self) -> u16 {
        self.epmd.port()
    }

    /// Grows the cluster by one node (`node{len+1}@127.0.0.1`, same cookie/admin/secret
    /// defaults), started unless the closure marks it `stopped`. It is not joined to anyone.
    pub fn add_node(&mut self, spec: impl FnOnce(NodeSpec) -> NodeSpec) -> &Node {
        let i = self.nodes.len();
        let s = spec(default_spec(i, &self.cookie, &self.admin, &self.secret));
        let start = !s.stopped;
        self.make_node(s);
        let node = self.nodes[i].clone();
        if start {
            node.start();
        }
        &self.nodes[i]
    }

    /// Calls `hook` for every write (PUT, POST, DELETE) any node answers, once it is applied
    /// and before its answer goes out, with the request as logged and how many writes the
    /// cluster has answered with it (1, 2, …): a test can kill the client at the k-th write.
    /// CouchDB's own replication traffic is not counted.
    pub fn on_write(&self, hook: impl Fn(&Request, usize) + Send + Sync + 'static) {
        self.shared.on_write(Some(Arc::new(hook)));
    }

    /// Every shard-map change any node applied (its own edit, a copy pushed to it, a db
    /// created or deleted), oldest first, with the `doc_count` of each holder's copy at that
    /// instant — to assert that no range ever had fewer complete copies than before.
    pub fn shard_map_events(&self) -> Vec<ShardMapEvent> {
        self.shared.events()
    }

    pub fn clear_shard_map_events(&self) {
        self.shared.clear_events();
    }

    /// The next creation of `db` (on any node) uses this placement and/or file suffix
    /// (`".1795524961"`) instead of mem3's random choice and the clock. For replaying
    /// recordings.
    pub fn pin_placement(
        &self,
        db: &str,
        by_range: Option<BTreeMap<String, Vec<String>>>,
        suffix: Option<&str>,
    ) {
        self.shared.pin(
            db,
            Pin {
                suffix: suffix.map(str::to_string),
                by_range,
            },
        );
    }

    /// Every request every node answered, in the order they were answered.
    pub fn requests(&self) -> Vec<Request> {
        let mut all: Vec<(u64, Request)> = self
            .nodes
            .iter()
            .flat_map(|n| n.inner.requests_seq())
            .collect();
        all.sort_by_key(|(s, _)| *s);
        all.into_iter().map(|(_, r)| r).collect()
    }

    /// The node whose replicator takes `_replicator/<doc_id>` (`mem3:owner` among the running
    /// holders of its range, as through `node(0)`): a test that needs two docs on one
    /// replicator (a duplicate, trap 20) picks their ids with it. `None`: no such db or holder.
    pub fn replicator_owner(&self, doc_id: &str) -> Option<String> {
        let m = lock(&self.node(0).inner.store).map("_replicator")?;
        let (_, holders) = m.locate(doc_id)?;
        let live: Vec<String> = holders
            .iter()
            .filter(|h| self.nodes.iter().any(|n| n.name() == **h && n.is_running()))
            .cloned()
            .collect();
        crate::replication::repdoc::owner(doc_id, &live)
    }

    /// Every replication the running nodes hold (see `Node::replications`), by doc id.
    pub fn replications(&self) -> Vec<Replication> {
        let mut all: Vec<Replication> = self.nodes.iter().flat_map(Node::replications).collect();
        all.sort_by(|a, b| a.doc_id.cmp(&b.doc_id));
        all
    }

    /// Writes (PUT, POST, DELETE) the nodes answered; CouchDB's own replication traffic is
    /// not counted.
    pub fn count_writes(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.count("PUT") + n.count("POST") + n.count("DELETE"))
            .sum()
    }

    pub fn reset_counters(&self) {
        for n in &self.nodes {
            n.reset_counters();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        std::thread::scope(|s| {
            for n in &self.nodes {
                s.spawn(move || n.stop());
            }
        });
    }
}
