//! One simulated CouchDB node: its state (persistent `Store`, volatile `Volatile`), its HTTP
//! server (a thread per connection, keep-alive), its lifecycle (start/stop/restart) and the
//! request log and fault hooks the tests use.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::auth::{self, AuthState};
use crate::dist::{self, Epmd, SyncPayload};
use crate::http::{self, HttpRequest, ReadError, Response};
use crate::spec::{Delays, Fault, NodeSpec, Request};
use crate::store::{self, LocalDb, Store};
use crate::util::{self, Rng};
use crate::{faults, routes};

/// Requests kept per node (the older half is dropped beyond this).
const MAX_LOG: usize = 200_000;

/// Locks a mutex, recovering from poisoning (a panicked handler must not wedge the node).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    /// Peers to push our `_nodes`/`_dbs` to, and from when.
    pub push_due: BTreeMap<String, Instant>,
    /// When this run first saw each clustered db (for `_users`' `_design/_auth`).
    pub db_seen: HashMap<String, Instant>,
    /// The first write to a fresh `_nodes` is under way (trap 22).
    pub nodes_creating: bool,
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
            db_seen: HashMap::new(),
            nodes_creating: false,
            started_at: Instant::now(),
            start_time_us: util::unix_now().as_micros(),
        }
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
}

/// Where the binary keeps its state (a volume in docker).
#[derive(Debug, Clone)]
pub struct Persist {
    /// `_nodes` and `_dbs` (like `/opt/couchdb/data`).
    pub data_file: PathBuf,
    /// The config (like `/opt/couchdb/etc/local.d`).
    pub config_file: PathBuf,
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
    /// The address the node listens on (port reserved even while stopped).
    pub addr: Mutex<SocketAddr>,
    pub store: Mutex<Store>,
    pub vol: Mutex<Volatile>,
    pub rng: Mutex<Rng>,
    pub(crate) faults: Mutex<Vec<FaultSlot>>,
    log: Mutex<Vec<(u64, Request)>>,
    seq: Arc<AtomicU64>,
    run: Mutex<RunState>,
    running: AtomicBool,
    epoch: AtomicU64,
    reserved: Mutex<Option<TcpListener>>,
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
    pub spec: NodeSpec,
    pub delays: Delays,
    pub epmd: Arc<dyn Epmd>,
    pub seed: u64,
    pub seq: Arc<AtomicU64>,
    pub listener: Option<TcpListener>,
    pub addr: SocketAddr,
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
        Arc::new(NodeInner {
            name: cfg.spec.name.clone(),
            vol: Mutex::new(Volatile::fresh(&cfg.spec.cookie)),
            spec: cfg.spec,
            delays: cfg.delays,
            epmd: cfg.epmd,
            addr: Mutex::new(cfg.addr),
            store: Mutex::new(store),
            rng: Mutex::new(rng),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            seq: cfg.seq,
            run: Mutex::new(RunState::default()),
            running: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            reserved: Mutex::new(cfg.listener),
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

    /// Boots (waits `boot`), listens, and starts the background ticker. Returns once listening.
    pub fn start(self: &Arc<Self>) {
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
        {
            let mut st = lock(&self.store);
            if !self.name.is_empty() && st.nodes.get(&self.name).is_err() {
                let _ = st.nodes.put(&self.name, None, Map::new());
            }
            if st.nodes.uuid.is_empty() {
                st.nodes.uuid = self.random_hex(16);
                st.dbs.uuid = self.random_hex(16);
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
                .spawn(move || me.accept_loop(listener, epoch))
                .unwrap_or_else(|e| panic!("couchsim: cannot spawn acceptor: {e}")),
        );
        let me = Arc::clone(self);
        run.ticker = Some(
            std::thread::Builder::new()
                .name(format!("couchsim-tick-{}", self.name))
                .spawn(move || dist::ticker(me, epoch))
                .unwrap_or_else(|e| panic!("couchsim: cannot spawn ticker: {e}")),
        );
        log_line(&format!("{} up on {}", self.name, local));
    }

    /// Closes the listener and every open connection (HTTP and distribution), joins threads.
    pub fn stop(&self) {
        let _g = lock(&self.lifecycle);
        let (acceptor, ticker, conns, threads, listen) = {
            let mut run = lock(&self.run);
            if !self.running.swap(false, Ordering::SeqCst) {
                return;
            }
            self.epoch.fetch_add(1, Ordering::SeqCst);
            (
                run.acceptor.take(),
                run.ticker.take(),
                std::mem::take(&mut run.conns),
                std::mem::take(&mut run.threads),
                run.listen_addr.take(),
            )
        };
        if let Some(a) = listen {
            let wake = if a.ip().is_unspecified() {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port())
            } else {
                a
            };
            let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(500));
        }
        if let Some(a) = acceptor {
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

    fn accept_loop(self: Arc<Self>, listener: TcpListener, epoch: u64) {
        for stream in listener.incoming() {
            if !self.alive(epoch) {
                break;
            }
            let stream = match stream {
                Ok(s) => s,
                Err(_) => continue,
            };
            let peer = match stream.peer_addr() {
                Ok(p) => p,
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            let id = match self.register_conn(&stream, epoch) {
                Some(id) => id,
                None => break,
            };
            let me = Arc::clone(&self);
            let spawned = self.spawn(epoch, "conn", move || {
                me.serve(stream, peer, epoch);
                me.unregister_conn(id);
            });
            if !spawned {
                self.unregister_conn(id);
            }
        }
    }

    /// One HTTP connection: requests until close, error, or stop.
    fn serve(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, epoch: u64) {
        let reader_stream = match stream.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        };
        let mut reader = BufReader::new(reader_stream);
        let mut writer = stream;
        loop {
            let req = match http::read_request(&mut reader, peer) {
                Ok(r) => r,
                Err(ReadError::Closed) | Err(ReadError::Io) => return,
                Err(ReadError::Malformed(why)) => {
                    let mut resp = Response::error(400, "bad_request", &why);
                    resp.close = true;
                    let _ = http::write_response(&mut writer, &resp, &self.random_hex(5));
                    return;
                }
            };
            if !self.alive(epoch) {
                return;
            }
            if req.path.starts_with(dist::PREFIX) {
                // Internal distribution traffic: never logged, never faulted.
                dist::handle_internal(self, req, &mut reader, &mut writer, epoch);
                return;
            }
            let keep = req.keep_alive();
            let mut resp = self.handle_public(&req, epoch);
            if !keep {
                resp.close = true;
            }
            self.record(&req, resp.status);
            let rid = self.random_hex(5);
            let res = if req.method == "HEAD" {
                let mut head = http::render(&resp, &rid);
                let cut = head.len() - resp.body.len();
                head.truncate(cut);
                writer.write_all(&head).and_then(|_| writer.flush())
            } else {
                http::write_response(&mut writer, &resp, &rid)
            };
            if res.is_err() || resp.close {
                let _ = writer.shutdown(Shutdown::Write);
                return;
            }
        }
    }

    fn handle_public(self: &Arc<Self>, req: &HttpRequest, epoch: u64) -> Response {
        let (slow, injected) = faults::before(self, req);
        if let Some(d) = slow {
            util::sleep_while(d, || self.alive(epoch));
        }
        if let Some(resp) = injected {
            return resp;
        }
        routes::handle(self, req, epoch)
    }

    fn record(&self, req: &HttpRequest, status: u16) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let mut log = lock(&self.log);
        if log.len() >= MAX_LOG {
            // A long-running binary must not grow without bound: keep the newer half.
            log.drain(..MAX_LOG / 2);
        }
        log.push((
            seq,
            Request {
                method: req.method.clone(),
                path: req.target.clone(),
                user: auth::sent_user(req),
                status,
            },
        ));
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
    pub fn write_nodes<T>(&self, write: impl FnOnce(&mut LocalDb) -> T) -> Result<T, FileExists> {
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

    /// Creates a clustered db with shards over the current `_nodes` members (phantoms
    /// included), n = `[cluster] n` unless given. False if it exists.
    pub fn create_db(&self, name: &str, n: Option<u64>, q: Option<u64>) -> bool {
        {
            let mut st = lock(&self.store);
            if st.db_exists(name) {
                return false;
            }
            let members = st.cluster_nodes();
            let n = n.unwrap_or_else(|| st.cluster_n());
            let q = q.unwrap_or_else(|| st.cluster_q());
            let by_range = store::place_shards(name, &members, n, q);
            self.put_shard_map(&mut st, name, &by_range);
        }
        self.local_change();
        // fabric:create_db writes the shard map on the connected nodes before answering.
        dist::push_all_now(self);
        true
    }

    /// Creates a db with every shard on this node alone.
    pub fn create_db_alone(&self, name: &str) -> bool {
        {
            let mut st = lock(&self.store);
            if st.db_exists(name) {
                return false;
            }
            let q = st.cluster_q();
            let by_range: BTreeMap<String, Vec<String>> = store::ranges(q)
                .into_iter()
                .map(|r| (r, vec![self.name.clone()]))
                .collect();
            self.put_shard_map(&mut st, name, &by_range);
        }
        self.local_change();
        true
    }

    fn put_shard_map(&self, st: &mut Store, name: &str, by_range: &BTreeMap<String, Vec<String>>) {
        let suffix = format!(".{}", util::unix_now().as_secs());
        let body = store::shard_doc(by_range, &suffix);
        let prev = st.dbs.docs.get(name).map(|d| d.rev.clone());
        let rev = if prev.is_none() {
            store::DBS_DOC_REV1.to_string()
        } else {
            store::next_rev(prev.as_deref(), &body, false)
        };
        st.dbs.docs.insert(
            name.to_string(),
            store::Doc {
                rev,
                deleted: false,
                body,
            },
        );
        st.dbs.update_seq += 1;
        lock(&self.vol)
            .db_seen
            .insert(name.to_string(), Instant::now());
    }

    pub fn delete_db(&self, name: &str) -> bool {
        let ok = {
            let mut st = lock(&self.store);
            let rev = match st.dbs.get(name) {
                Ok(d) => d.rev.clone(),
                Err(_) => return false,
            };
            st.dbs.delete(name, Some(&rev)).is_ok()
        };
        if ok {
            self.local_change();
        }
        ok
    }

    /// After a local write to `_nodes`/`_dbs`: persist and push to every connected peer.
    pub fn local_change(&self) {
        self.save();
        let now = Instant::now();
        let mut v = lock(&self.vol);
        let peers: Vec<String> = v.connected.keys().cloned().collect();
        for p in peers {
            v.push_due.insert(p, now);
        }
    }

    pub fn db_info(&self, db: &str) -> Option<String> {
        let st = lock(&self.store);
        let d = st.dbs.get(db).ok()?;
        let shards = store::shards_from_doc(&d.body)?;
        let q = shards.len();
        let n = shards.values().map(Vec::len).max().unwrap_or(1);
        let w = n / 2 + 1;
        let created = d
            .body
            .get("shard_suffix")
            .and_then(|s| s.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|b| b.as_u64().map(|b| b as u8 as char))
                    .collect::<String>()
            })
            .map(|s| s.trim_start_matches('.').to_string())
            .unwrap_or_default();
        // CouchDB adds `_design/_auth` to `_users` shortly after creating it.
        let docs = if db == "_users" {
            let seen = lock(&self.vol).db_seen.get(db).copied();
            match seen {
                Some(t) if t.elapsed() < self.delays.auth_ddoc => 0,
                _ => 1,
            }
        } else {
            0
        };
        let seq_tag = util::hex(&util::sha256(format!("{db}{}", self.name).as_bytes()));
        Some(util::obj(&[
            ("instance_start_time", util::js(&created)),
            ("db_name", util::js(db)),
            (
                "purge_seq",
                util::js(&format!(
                    "0-g1AAAABTeJzLYWBgYMpgTmHgz8tPSTV{}",
                    &seq_tag[..20]
                )),
            ),
            (
                "update_seq",
                util::js(&format!(
                    "{docs}-g1AAAACTeJzLYWBgYMpgTmHgz8tPSTV{}",
                    &seq_tag[20..40]
                )),
            ),
            (
                "sizes",
                util::obj(&[
                    ("file", (8518 * q / 2).to_string()),
                    ("external", "0".into()),
                    ("active", "0".into()),
                ]),
            ),
            ("props", "{}".into()),
            ("doc_del_count", "0".into()),
            ("doc_count", docs.to_string()),
            ("disk_format_version", "8".into()),
            ("compact_running", "false".into()),
            (
                "cluster",
                util::obj(&[
                    ("q", q.to_string()),
                    ("n", n.to_string()),
                    ("w", w.to_string()),
                    ("r", w.to_string()),
                ]),
            ),
        ]))
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
                let _ = st.nodes.put(&self.name, None, Map::new());
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
        let data = json!({"nodes": st.nodes, "dbs": st.dbs});
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
