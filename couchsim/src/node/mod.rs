//! One simulated CouchDB node: its state (persistent `Store`, volatile `Volatile`), its HTTP
//! server (a thread per connection, keep-alive), its lifecycle (start/stop/restart) and the
//! request log and fault hooks the tests use.
//!
//! The node layer: this file and what a node is made of on its own — its database files
//! (`docs`, with bodies and revs in `ejson`), what it keeps on disk (`store`), the shard maps in
//! its `_dbs` (`shards`, mem3's rules), how it checks its admins (`auth`), and what the nodes of
//! one in-process cluster share (`shared`). It uses `net`, `spec` and `util` only: what a node
//! does with other nodes is `cluster/`, above it, and the acceptor and ticker it runs are handed
//! to it (`Workers`).

pub(crate) mod auth;
pub(crate) mod docs;
pub(crate) mod ejson;
pub(crate) mod release;
pub(crate) mod shards;
pub(crate) mod shared;
pub(crate) mod store;

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::net::epmd::{long_name_ok, Epmd};
use crate::net::http::HttpRequest;
use crate::net::tls::Distribution;
use crate::spec::{Delays, Fault, NodeSpec, Request, Version};
use crate::util::{self, Rng};

use self::auth::AuthState;
use self::docs::{DocDb, Leaf, WriteError};
use self::ejson::Ej;
use self::shared::Shared;
use self::store::Store;

/// Requests kept per node (the older half is dropped beyond this).
const MAX_LOG: usize = 200_000;

/// Locks a mutex, recovering from poisoning (a panicked handler must not wedge the node).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A copy of a node's `_nodes` and/or `_dbs` (every doc with all its leaves), pushed to a peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncPayload {
    pub from: String,
    pub nodes: Option<BTreeMap<String, Vec<Leaf>>>,
    pub dbs: Option<BTreeMap<String, Vec<Leaf>>>,
}

/// Which node-local dbs a push carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub nodes: bool,
    pub dbs: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        nodes: true,
        dbs: true,
    };
    pub const NODES: Parts = Parts {
        nodes: true,
        dbs: false,
    };
    pub const DBS: Parts = Parts {
        nodes: false,
        dbs: true,
    };

    pub fn or(self, o: Parts) -> Parts {
        Parts {
            nodes: self.nodes || o.nodes,
            dbs: self.dbs || o.dbs,
        }
    }
}

/// A push of `_nodes`/`_dbs` due to a peer.
#[derive(Debug, Clone, Copy)]
pub struct Due {
    pub at: Instant,
    pub parts: Parts,
}

/// A read repair to make later: a doc's merged leaves for a copy that was behind.
#[derive(Debug, Clone)]
pub struct Repair {
    pub at: Instant,
    pub holder: String,
    pub file: String,
    pub docs: BTreeMap<String, Vec<Leaf>>,
}

/// State that lives only while the node runs (CouchDB's in-memory state).
#[derive(Debug)]
pub struct Volatile {
    /// The Erlang cookie in effect (`receive_cookie` changes it until restart).
    pub cookie: String,
    pub auth: AuthState,
    /// Erlang nodes connected now (besides itself) → link id.
    pub connected: BTreeMap<String, u64>,
    /// Members that were connected at some point during this run.
    pub ever_connected: HashSet<String>,
    /// When to try a member again (absent: try at the next tick).
    pub next_attempt: HashMap<String, Instant>,
    /// Nodes a peer told us about (Erlang meshes fully): try each once.
    pub hints: BTreeSet<String>,
    /// Incoming `_nodes`/`_dbs` copies are held until then (the copy delay).
    pub gate_until: Option<Instant>,
    pub pending_sync: Vec<SyncPayload>,
    /// Peers to push our `_nodes`/`_dbs` to: when, and which.
    pub push_due: BTreeMap<String, Due>,
    /// (peer, `_dbs`?) → our update seq it has taken over the current link.
    pub pushed: HashMap<(String, bool), u64>,
    /// Internal replication: (our file, target node) → when to push (target "": every other
    /// holder of the file's range at that time).
    pub pushes: BTreeMap<(String, String), Instant>,
    /// Internal replication checkpoints: (file, target) → (target file's uuid, our seq).
    pub checkpoints: HashMap<(String, String), (String, u64)>,
    /// Pushes running now (`internal_replication_jobs`).
    pub running_pushes: usize,
    /// Pushes (file, target) that bring a reconnected member what it missed: not before
    /// `CatchUp::from`, paced by `catch_up_per_doc`, and not counted in
    /// `internal_replication_jobs` (CouchDB showed 0 throughout, transcript 18).
    pub catching_up: HashMap<(String, String), CatchUp>,
    /// Read repairs to make later (a quorum of copies agreed; the others are behind).
    pub repairs: Vec<Repair>,
    /// When `_users` gets its `_design/_auth` (after this node created `_users`).
    pub auth_ddoc_due: Option<Instant>,
    /// The first write to a fresh `_nodes` is under way (trap 22).
    pub nodes_creating: bool,
    /// The replicator's docs and jobs (a `replication::jobs::ReplState`).
    pub repl: Slot,
    pub started_at: Instant,
    pub start_time_us: u128,
}

impl Volatile {
    fn fresh(cookie: &str) -> Volatile {
        Volatile {
            cookie: cookie.to_string(),
            auth: AuthState::default(),
            connected: BTreeMap::new(),
            ever_connected: HashSet::new(),
            next_attempt: HashMap::new(),
            hints: BTreeSet::new(),
            gate_until: None,
            pending_sync: Vec::new(),
            push_due: BTreeMap::new(),
            pushed: HashMap::new(),
            pushes: BTreeMap::new(),
            checkpoints: HashMap::new(),
            running_pushes: 0,
            catching_up: HashMap::new(),
            repairs: Vec::new(),
            auth_ddoc_due: None,
            nodes_creating: false,
            repl: Slot::default(),
            started_at: Instant::now(),
            start_time_us: util::unix_now().as_micros(),
        }
    }
}

/// A returning member's catch-up of one copy: due `from`, and whether a push is bringing it.
#[derive(Debug, Clone, Copy)]
pub struct CatchUp {
    pub from: Instant,
    pub running: bool,
}

/// State a layer above the node keeps per run without the node naming its type: the
/// replicator's lives with the replicator, which uses the node, so naming it here would make
/// the two import each other. Empty at each start like the rest of `Volatile`, filled on first
/// use.
#[derive(Default)]
pub struct Slot(Option<Box<dyn Any + Send>>);

impl Slot {
    pub fn get<T: Any + Send + Default>(&mut self) -> &mut T {
        self.0
            .get_or_insert_with(|| Box::new(T::default()))
            .downcast_mut()
            .expect("a slot holds one type of state")
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Slot(..)" } else { "Slot" })
    }
}

#[derive(Default)]
struct RunState {
    acceptor: Option<JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
    conns: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
    next_id: u64,
    listen_addr: Option<SocketAddr>,
    dist_acceptor: Option<JoinHandle<()>>,
    dist_listen_addr: Option<SocketAddr>,
}

/// What a running node's threads do: accept HTTP connections, accept distribution
/// connections (on a port of its own, as CouchDB's 9100), and the background ticker.
#[derive(Debug, Clone, Copy)]
pub struct Workers {
    pub accept: fn(Arc<NodeInner>, TcpListener, u64),
    pub dist_accept: fn(Arc<NodeInner>, TcpListener, u64),
    pub tick: fn(Arc<NodeInner>, u64),
}

/// Where the binary keeps its state (a volume in docker).
#[derive(Debug, Clone)]
pub struct Persist {
    /// `_nodes` and `_dbs` (like `/opt/couchdb/data`).
    pub data_file: PathBuf,
    /// The config (like `/opt/couchdb/etc/local.d`).
    pub config_file: PathBuf,
}

/// Why a `_dbs` edit was not made: `mem3_bdu`'s 403 reason, or the doc's own 409/404.
#[derive(Debug, PartialEq)]
pub enum DbsEdit {
    Forbidden(String),
    Refused(WriteError),
}

/// Trap 22's lost race: `{error,{badmatch,file_exists}}` (answered 500, nothing written).
#[derive(Debug, PartialEq)]
pub struct FileExists;

pub(crate) struct FaultSlot {
    pub fault: Fault,
    pub seen: usize,
}

pub struct NodeInner {
    pub name: String,
    pub spec: NodeSpec,
    pub delays: Delays,
    pub epmd: Arc<dyn Epmd>,
    /// The release it answers as; changed only while it is stopped (`set_version`).
    version: Mutex<Version>,
    /// The address the node listens on (port reserved even while stopped).
    pub addr: Mutex<SocketAddr>,
    /// Where its distribution listens (a node without a usable long name has none).
    pub dist_addr: SocketAddr,
    /// Plain TCP or TLS, as its Erlang flags say.
    pub dist: Distribution,
    pub store: Arc<Mutex<Store>>,
    /// What the nodes of an in-process cluster share (observer, placement pins).
    pub shared: Arc<Shared>,
    pub vol: Mutex<Volatile>,
    pub rng: Mutex<Rng>,
    pub(crate) faults: Mutex<Vec<FaultSlot>>,
    log: Mutex<Vec<(u64, Request)>>,
    seq: Arc<AtomicU64>,
    run: Mutex<RunState>,
    running: AtomicBool,
    epoch: AtomicU64,
    reserved: Mutex<Option<TcpListener>>,
    dist_reserved: Mutex<Option<TcpListener>>,
    persist: Option<Persist>,
    /// Serializes start/stop.
    lifecycle: Mutex<()>,
    /// Password hashes computed (first authentications), for tests and benchmarks.
    hashes: AtomicU64,
}

impl std::fmt::Debug for NodeInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("addr", &*lock(&self.addr))
            .field("running", &self.is_running())
            .finish()
    }
}

pub struct NodeConfig {
    pub shared: Arc<Shared>,
    pub spec: NodeSpec,
    pub delays: Delays,
    pub epmd: Arc<dyn Epmd>,
    pub seed: u64,
    pub seq: Arc<AtomicU64>,
    pub listener: Option<TcpListener>,
    pub addr: SocketAddr,
    pub dist_listener: Option<TcpListener>,
    pub dist_addr: SocketAddr,
    pub dist: Distribution,
    pub persist: Option<Persist>,
}

impl NodeInner {
    pub fn new(cfg: NodeConfig) -> Arc<NodeInner> {
        let mut rng = Rng::new(cfg.seed);
        let mut store = match &cfg.persist {
            Some(p) => load_store(p),
            None => Store::default(),
        };
        init_config(&mut store, &cfg.spec, cfg.addr.port(), &mut rng);
        let store = Arc::new(Mutex::new(store));
        cfg.shared.register(&cfg.spec.name, Arc::downgrade(&store));
        Arc::new(NodeInner {
            name: cfg.spec.name.clone(),
            vol: Mutex::new(Volatile::fresh(&cfg.spec.cookie)),
            version: Mutex::new(cfg.spec.version),
            spec: cfg.spec,
            delays: cfg.delays,
            epmd: cfg.epmd,
            addr: Mutex::new(cfg.addr),
            dist_addr: cfg.dist_addr,
            dist: cfg.dist,
            store,
            shared: cfg.shared,
            rng: Mutex::new(rng),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            seq: cfg.seq,
            run: Mutex::new(RunState::default()),
            running: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            reserved: Mutex::new(cfg.listener),
            dist_reserved: Mutex::new(cfg.dist_listener),
            persist: cfg.persist,
            lifecycle: Mutex::new(()),
            hashes: AtomicU64::new(0),
        })
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Whether a thread started in `epoch` should keep going.
    pub fn alive(&self, epoch: u64) -> bool {
        self.is_running() && self.epoch() == epoch
    }

    pub fn addr(&self) -> SocketAddr {
        *lock(&self.addr)
    }

    pub fn version(&self) -> Version {
        *lock(&self.version)
    }

    /// The release of its next start: a container re-created on another image, with the same
    /// volumes. Refused (false) while it runs.
    pub fn set_version(&self, v: Version) -> bool {
        let _g = lock(&self.lifecycle);
        if self.is_running() {
            return false;
        }
        *lock(&self.version) = v;
        true
    }

    /// A first authentication against a hash: PBKDF2's cost, as a sleep or as real CPU work
    /// on the answering thread (`Delays::first_auth_cpu`).
    pub fn pay_password_hash(&self) {
        self.hashes.fetch_add(1, Ordering::SeqCst);
        if self.delays.first_auth_cpu {
            util::burn_cpu(self.delays.first_auth);
        } else {
            let epoch = self.epoch();
            util::sleep_while(self.delays.first_auth, || self.alive(epoch));
        }
    }

    /// How many password hashes this node computed (first authentications).
    pub fn password_hashes(&self) -> u64 {
        self.hashes.load(Ordering::SeqCst)
    }

    pub fn random_hex(&self, n: usize) -> String {
        lock(&self.rng).hex(n)
    }

    // -----------------------------------------------------------------------------------------
    // lifecycle
    // -----------------------------------------------------------------------------------------

    /// Boots (waits `boot`), listens, and starts the acceptor and the background ticker with
    /// `workers` (the layer above gives them: `server::start`). Returns once listening.
    pub fn start(self: &Arc<Self>, workers: Workers) {
        let _g = lock(&self.lifecycle);
        if self.is_running() {
            return;
        }
        std::thread::sleep(self.delays.boot);
        let listener = match lock(&self.reserved).take() {
            Some(l) => l,
            None => bind_retrying(self.addr()),
        };
        let local = listener.local_addr().unwrap_or_else(|_| self.addr());
        // An Erlang node without a usable long name runs no distribution: no port, no epmd.
        let dist_listener = long_name_ok(&self.name).then(|| {
            lock(&self.dist_reserved)
                .take()
                .unwrap_or_else(|| bind_retrying(self.dist_addr))
        });
        {
            let mut st = lock(&self.store);
            // mem3_nodes' insert_if_missing: on top of a deletion too (trap 15).
            if !self.name.is_empty() && st.nodes.get(&self.name).is_err() {
                let _ = st.nodes.put(&self.name, None, Ej::empty());
            }
            if st.nodes.uuid.is_empty() {
                st.nodes.uuid = self.random_hex(16);
                st.dbs.uuid = self.random_hex(16);
                let now = util::unix_now().as_micros();
                st.nodes.created_us = now;
                st.dbs.created_us = now;
            }
        }
        self.save();
        *lock(&self.vol) = Volatile::fresh(&self.spec.cookie);
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.running.store(true, Ordering::SeqCst);
        let mut run = lock(&self.run);
        run.listen_addr = Some(local);
        let me = Arc::clone(self);
        run.acceptor = Some(
            std::thread::Builder::new()
                .name(format!("couchsim-accept-{}", self.name))
                .spawn(move || (workers.accept)(me, listener, epoch))
                .unwrap_or_else(|e| panic!("couchsim: cannot spawn acceptor: {e}")),
        );
        if let Some(l) = dist_listener {
            let at = l.local_addr().unwrap_or(self.dist_addr);
            run.dist_listen_addr = Some(at);
            self.epmd.publish(&self.name, Some(at.port()));
            let me = Arc::clone(self);
            run.dist_acceptor = Some(
                std::thread::Builder::new()
                    .name(format!("couchsim-dist-{}", self.name))
                    .spawn(move || (workers.dist_accept)(me, l, epoch))
                    .unwrap_or_else(|e| panic!("couchsim: cannot spawn dist acceptor: {e}")),
            );
        }
        let me = Arc::clone(self);
        run.ticker = Some(
            std::thread::Builder::new()
                .name(format!("couchsim-tick-{}", self.name))
                .spawn(move || (workers.tick)(me, epoch))
                .unwrap_or_else(|e| panic!("couchsim: cannot spawn ticker: {e}")),
        );
        log_line(&format!("{} up on {}", self.name, local));
    }

    /// Closes the listener and every open connection (HTTP and distribution), joins threads.
    pub fn stop(&self) {
        let _g = lock(&self.lifecycle);
        let (acceptors, ticker, conns, threads, listens) = {
            let mut run = lock(&self.run);
            if !self.running.swap(false, Ordering::SeqCst) {
                return;
            }
            self.epoch.fetch_add(1, Ordering::SeqCst);
            (
                [run.acceptor.take(), run.dist_acceptor.take()],
                run.ticker.take(),
                std::mem::take(&mut run.conns),
                std::mem::take(&mut run.threads),
                [run.listen_addr.take(), run.dist_listen_addr.take()],
            )
        };
        self.epmd.publish(&self.name, None);
        for a in listens.into_iter().flatten() {
            let wake = if a.ip().is_unspecified() {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port())
            } else {
                a
            };
            let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(500));
        }
        for a in acceptors.into_iter().flatten() {
            let _ = a.join();
        }
        for (_, c) in conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Connections registered while we were shutting down the others.
        let late: Vec<TcpStream> = lock(&self.run).conns.drain().map(|(_, c)| c).collect();
        for c in late {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(t) = ticker {
            let _ = t.join();
        }
        for t in threads {
            let _ = t.join();
        }
        let late: Vec<JoinHandle<()>> = std::mem::take(&mut lock(&self.run).threads);
        for t in late {
            let _ = t.join();
        }
        {
            let mut v = lock(&self.vol);
            v.connected.clear();
            v.pending_sync.clear();
        }
        log_line(&format!("{} stopped", self.name));
    }

    /// Registers a stream to be shut down on stop. False (and the stream is closed) when the
    /// node is no longer running in `epoch`.
    pub fn register_conn(&self, stream: &TcpStream, epoch: u64) -> Option<u64> {
        let mut run = lock(&self.run);
        if !self.alive(epoch) {
            let _ = stream.shutdown(Shutdown::Both);
            return None;
        }
        let id = run.next_id;
        run.next_id += 1;
        match stream.try_clone() {
            Ok(c) => {
                run.conns.insert(id, c);
                Some(id)
            }
            Err(_) => None,
        }
    }

    pub fn unregister_conn(&self, id: u64) {
        lock(&self.run).conns.remove(&id);
    }

    /// Spawns a thread owned by this run of the node (joined on stop).
    pub fn spawn(&self, epoch: u64, name: &str, f: impl FnOnce() + Send + 'static) -> bool {
        let mut run = lock(&self.run);
        if !self.alive(epoch) {
            return false;
        }
        run.threads.retain(|t| !t.is_finished());
        match std::thread::Builder::new()
            .name(format!("couchsim-{name}"))
            .spawn(f)
        {
            Ok(h) => {
                run.threads.push(h);
                true
            }
            Err(_) => false,
        }
    }

    /// Adds an answered request to the log the tests read.
    pub fn record(&self, req: &HttpRequest, status: u16) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let mut log = lock(&self.log);
        if log.len() >= MAX_LOG {
            // A long-running binary must not grow without bound: keep the newer half.
            log.drain(..MAX_LOG / 2);
        }
        let request = Request {
            method: req.method.clone(),
            path: req.target.clone(),
            user: auth::sent_user(req),
            status,
        };
        log.push((seq, request.clone()));
        drop(log);
        if matches!(request.method.as_str(), "PUT" | "POST" | "DELETE") {
            self.shared.wrote(&request);
        }
    }

    /// `PUT /_node/_local/_dbs/<db>`: `mem3_bdu`'s checks (403 reasons), the rev check (409),
    /// then the change takes effect here and goes round the ring.
    pub fn edit_dbs(&self, db: &str, rev: Option<&str>, fields: Ej) -> Result<String, DbsEdit> {
        self::shards::validate(&fields).map_err(DbsEdit::Forbidden)?;
        let rev = lock(&self.store)
            .dbs
            .put(db, rev, fields)
            .map_err(DbsEdit::Refused)?;
        self.dbs_changed(&[db.to_string()], true);
        Ok(rev)
    }

    pub fn requests_seq(&self) -> Vec<(u64, Request)> {
        lock(&self.log).clone()
    }

    pub fn reset_log(&self) {
        lock(&self.log).clear();
    }

    // -----------------------------------------------------------------------------------------
    // state helpers used by routes / setup / dist
    // -----------------------------------------------------------------------------------------

    /// `(all_nodes, cluster_nodes)`, both sorted.
    pub fn membership(&self) -> (Vec<String>, Vec<String>) {
        let cluster = lock(&self.store).cluster_nodes();
        let mut all: Vec<String> = lock(&self.vol).connected.keys().cloned().collect();
        all.push(self.name.clone());
        all.sort();
        all.dedup();
        (all, cluster)
    }

    pub fn is_connected(&self, peer: &str) -> bool {
        lock(&self.vol).connected.contains_key(peer)
    }

    pub fn config(&self, section: &str, key: &str) -> Option<String> {
        lock(&self.store).config_get(section, key)
    }

    /// Sets a config value as `PUT /_node/_local/_config/…` would (admins get hashed).
    pub fn set_config(&self, section: &str, key: &str, value: &str) -> Option<String> {
        let v = if section == "admins" && !auth::is_hashed(value) {
            auth::hash_password(value, &self.random_hex(16))
        } else {
            value.to_string()
        };
        let old = lock(&self.store).config_set(section, key, &v);
        self.save();
        old
    }

    pub fn delete_config(&self, section: &str, key: &str) -> Option<String> {
        let old = lock(&self.store).config_delete(section, key);
        self.save();
        old
    }

    pub fn admins(&self) -> BTreeMap<String, String> {
        lock(&self.store)
            .config
            .get("admins")
            .cloned()
            .unwrap_or_default()
    }

    /// A write to this node's `_nodes` through the API (a PUT, a DELETE, `add_node`).
    /// Trap 22: while `_nodes` holds nothing but the node's own doc, the first write takes
    /// `nodes_create`, and any other write meanwhile fails with `FileExists` and is not made.
    pub fn write_nodes<T>(&self, write: impl FnOnce(&mut DocDb) -> T) -> Result<T, FileExists> {
        let first = {
            let st = lock(&self.store);
            let mut v = lock(&self.vol);
            if v.nodes_creating {
                return Err(FileExists);
            }
            v.nodes_creating = st.nodes.update_seq <= 1;
            v.nodes_creating
        };
        if first {
            std::thread::sleep(self.delays.nodes_create);
        }
        let out = write(&mut lock(&self.store).nodes);
        if first {
            lock(&self.vol).nodes_creating = false;
        }
        Ok(out)
    }

    /// After this node's `_nodes` changed (`before`: the members before). Like mem3_sync:
    /// the change goes to every connected member (not back to `from`, the peer that pushed
    /// it); a member that is new to this node gets everything (`_nodes`, `_dbs` and the shard
    /// copies it shares). `removed`: a doc this node deleted itself — the removed node hears
    /// of it only one time in `removed_hears_one_in` (trap 15: it may never learn).
    pub fn nodes_changed(&self, before: &[String], from: Option<&str>, removed: Option<&str>) {
        self.save();
        let after = lock(&self.store).cluster_nodes();
        // A member that is new here (again: a `_nodes` doc deleted and put back) is tried at
        // once, as mem3 does on a node's addition, not when an old retry timer says.
        {
            let mut v = lock(&self.vol);
            for m in after.iter().filter(|m| !before.contains(m)) {
                v.next_attempt.remove(m);
            }
        }
        let connected: Vec<String> = lock(&self.vol).connected.keys().cloned().collect();
        let now = Instant::now();
        for peer in &connected {
            if !after.contains(peer) {
                continue;
            }
            if !before.contains(peer) {
                self.schedule_sync(peer, now, Parts::ALL);
                self.schedule_pushes_to(peer, self.delays.sync_push.0);
            } else if Some(peer.as_str()) != from {
                self.schedule_sync(peer, now, Parts::NODES);
            }
        }
        if let Some(r) = removed {
            let hears = connected.iter().any(|c| c == r)
                && lock(&self.rng).one_in(self.delays.removed_hears_one_in);
            if hears {
                self.schedule_sync(r, now, Parts::NODES);
            }
        }
    }

    /// After this node's `_dbs` changed for `dbs`: this node creates the (empty) files its
    /// new maps name on it (the edit copies no data: trap 11), the observer hears of each
    /// map, and with `ring` the change goes on to the next member of the ring.
    pub fn dbs_changed(&self, dbs: &[String], ring: bool) {
        let mut maps = Vec::new();
        {
            let mut st = lock(&self.store);
            for db in dbs {
                let map = st.map(db);
                if let Some(m) = &map {
                    for range in m.ranges_on(&self.name) {
                        let file = m.file(db, &range);
                        st.files
                            .entry(file)
                            .or_insert_with(|| DocDb::new(self.random_hex(16)));
                    }
                }
                maps.push((db.clone(), map.unwrap_or_default()));
            }
        }
        self.save();
        for (db, m) in maps {
            self.shared.record(&self.name, &db, m.by_range, &m.suffix);
        }
        if ring {
            if let Some(next) = self.ring_next() {
                let (lo, hi) = self.delays.ring_hop;
                let at = Instant::now() + lock(&self.rng).between(lo, hi);
                self.schedule_sync(&next, at, Parts::DBS);
            }
        }
    }

    /// `mem3_sync:find_next_node`: the next connected member after this node, in name order.
    pub fn ring_next(&self) -> Option<String> {
        let members = lock(&self.store).cluster_nodes();
        let v = lock(&self.vol);
        let live: Vec<&String> = members
            .iter()
            .filter(|m| **m == self.name || v.connected.contains_key(*m))
            .collect();
        let i = live.iter().position(|m| **m == self.name)?;
        let next = live[(i + 1) % live.len()];
        (*next != self.name).then(|| next.clone())
    }

    /// A push of `_nodes`/`_dbs` to `peer` at `at` (joined with one already due).
    pub fn schedule_sync(&self, peer: &str, at: Instant, parts: Parts) {
        let mut v = lock(&self.vol);
        let due = v
            .push_due
            .entry(peer.to_string())
            .or_insert(Due { at, parts });
        due.at = due.at.min(at);
        due.parts = due.parts.or(parts);
    }

    /// Internal replication of this node's copy `file` to `target` at `at` (an earlier one
    /// already scheduled stays).
    fn schedule_push(&self, file: &str, target: &str, at: Instant) {
        let mut v = lock(&self.vol);
        let e = v
            .pushes
            .entry((file.to_string(), target.to_string()))
            .or_insert(at);
        *e = (*e).min(at);
    }

    /// The other holders of `file`'s range in this node's map (none for an orphan file).
    pub fn other_holders(&self, file: &str) -> Vec<String> {
        let Some((range, db, suffix)) = self::shards::parse_file_name(file) else {
            return Vec::new();
        };
        match lock(&self.store).map(&db) {
            Some(m) if m.suffix == suffix => m
                .by_range
                .get(&range)
                .map(|h| h.iter().filter(|n| **n != self.name).cloned().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// A write into `file`: `sync_delay` later it is pushed to the other holders its range
    /// has then (mem3's `sync_delay`; a push already scheduled is not moved).
    pub fn schedule_file_push(&self, file: &str) {
        let at = Instant::now() + self.delays.sync_delay;
        lock(&self.vol)
            .pushes
            .entry((file.to_string(), String::new()))
            .or_insert(at);
    }

    /// Every copy of `db` on this node pushes to its other holders after `delay`
    /// (`POST /<db>/_sync_shards`).
    pub fn schedule_db_push(&self, db: &str, delay: Duration) {
        let files: Vec<String> = match lock(&self.store).map(db) {
            Some(m) => m
                .ranges_on(&self.name)
                .iter()
                .map(|r| m.file(db, r))
                .collect(),
            None => Vec::new(),
        };
        let at = Instant::now() + delay;
        for f in files {
            for target in self.other_holders(&f) {
                self.schedule_push(&f, &target, at);
            }
        }
    }

    /// Every copy this node shares with `peer` pushes to it after `delay` (a member
    /// connecting or joining).
    pub fn schedule_pushes_to(&self, peer: &str, delay: Duration) {
        let files: Vec<String> = lock(&self.store).files.keys().cloned().collect();
        let at = Instant::now() + delay;
        for f in files {
            if self.other_holders(&f).iter().any(|h| h == peer) {
                self.schedule_push(&f, peer, at);
            }
        }
    }

    /// A member that was away is back (its link is new): every copy this node shares with it
    /// pushes to it `catch_up` later, paced by what it missed (`catch_up_per_doc`).
    pub fn schedule_catch_up(&self, peer: &str) {
        let files: Vec<String> = lock(&self.store).files.keys().cloned().collect();
        let at = Instant::now() + self.delays.catch_up;
        for f in files {
            if self.other_holders(&f).iter().any(|h| h == peer) {
                self.schedule_push(&f, peer, at);
                let due = CatchUp {
                    from: at,
                    running: false,
                };
                lock(&self.vol)
                    .catching_up
                    .insert((f.clone(), peer.to_string()), due);
            }
        }
    }

    /// Same password, new salt (trap 5: admin hash drift).
    pub fn rehash_admin(&self) {
        if let Some((user, pw)) = &self.spec.admin {
            let h = auth::hash_password(pw, &self.random_hex(16));
            lock(&self.store).config_set("admins", user, &h);
            self.save();
        }
    }

    /// Forget everything on disk (as a container re-created without volumes).
    pub fn wipe(&self) {
        let port = self.addr().port();
        {
            let mut st = lock(&self.store);
            *st = Store::default();
            let mut rng = lock(&self.rng);
            init_config(&mut st, &self.spec, port, &mut rng);
            if self.is_running() {
                let _ = st.nodes.put(&self.name, None, Ej::empty());
            }
        }
        self.save();
    }

    /// Writes the persistent state (binary mode only).
    pub fn save(&self) {
        let p = match &self.persist {
            Some(p) => p,
            None => return,
        };
        let st = lock(&self.store).clone();
        let data = json!({"nodes": st.nodes, "dbs": st.dbs, "files": st.files});
        let _ = write_atomic(&p.data_file, &data);
        let _ = write_atomic(&p.config_file, &json!(st.config));
    }
}

fn write_atomic(path: &std::path::Path, v: &Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(v).unwrap_or_default())?;
    std::fs::rename(tmp, path)
}

fn load_store(p: &Persist) -> Store {
    let mut st = Store::default();
    if let Ok(text) = std::fs::read(&p.data_file) {
        if let Ok(v) = serde_json::from_slice::<Value>(&text) {
            if let Ok(n) = serde_json::from_value(v["nodes"].clone()) {
                st.nodes = n;
            }
            if let Ok(d) = serde_json::from_value(v["dbs"].clone()) {
                st.dbs = d;
            }
            if let Ok(f) = serde_json::from_value(v["files"].clone()) {
                st.files = f;
            }
        }
    }
    if let Ok(text) = std::fs::read(&p.config_file) {
        if let Ok(c) = serde_json::from_slice(&text) {
            st.config = c;
        }
    }
    st
}

/// Fills what the Docker entrypoint and CouchDB's first start put into the config, keeping
/// whatever is there already (a persisted admin is not re-hashed).
fn init_config(st: &mut Store, spec: &NodeSpec, port: u16, rng: &mut Rng) {
    if st.config_get("couchdb", "uuid").is_none() {
        let uuid = spec.uuid.clone().unwrap_or_else(|| rng.hex(16));
        st.config_set("couchdb", "uuid", &uuid);
    }
    if st.config_get("chttpd_auth", "secret").is_none() {
        let secret = spec.secret.clone().unwrap_or_else(|| rng.hex(16));
        st.config_set("chttpd_auth", "secret", &secret);
    }
    if st.config_get("chttpd", "bind_address").is_none() {
        st.config_set("chttpd", "bind_address", &spec.bind_address);
    }
    if st.config_get("chttpd", "port").is_none() {
        st.config_set("chttpd", "port", &port.to_string());
    }
    let has_admin = st
        .config
        .get("admins")
        .map(|a| !a.is_empty())
        .unwrap_or(false);
    if let (false, Some((user, pw))) = (has_admin, &spec.admin) {
        let h = auth::hash_password(pw, &rng.hex(16));
        st.config_set("admins", user, &h);
    }
}

fn bind_retrying(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("couchsim: cannot listen on {addr} again: {e}"),
        }
    }
}

/// Logs go to stderr when `COUCHSIM_LOG` is set (always in binary mode). Never a password,
/// cookie or secret.
pub fn log_line(msg: &str) {
    if LOG_ENABLED.load(Ordering::Relaxed) {
        eprintln!("[couchsim] {msg}");
    }
}

pub static LOG_ENABLED: AtomicBool = AtomicBool::new(false);

pub fn init_logging_from_env() {
    if std::env::var_os("COUCHSIM_LOG").is_some() {
        LOG_ENABLED.store(true, Ordering::Relaxed);
    }
}
