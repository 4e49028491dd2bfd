//! The Erlang distribution stand-in.
//!
//! Nodes reach each other on a distribution port of their own (9100 in binary mode, as the
//! CouchDB image fixes it; an ephemeral one in-process), found through `Epmd`, never on the
//! HTTP port. The wire is framed the way Erlang's is: a handshake message with a 2-byte length
//! and the tag `N` (who calls whom, which call, the cookie proof), a status answer tagged `s`,
//! then 4-byte-length frames. Their JSON carries documents as they are, so a capture of a plain
//! link shows their contents; with TLS on (`net::tls`, as the node's Erlang flags say) every
//! byte of it is inside TLS records. Never logged, never faulted.
//!
//! A *link* is one long-lived connection opened by a `connect` handshake: while it is open,
//! both ends list each other in `all_nodes`; when either node stops, its sockets close and the
//! other end drops it at once (like a closed Erlang distribution connection). Every other call
//! (`sync`, `shard`, `config`, `proxy`) is a connection of its own.
//!
//! Rules modelled: a node connects to the members of its `_nodes` db (at boot, when they are
//! added, and on a retry timer), to the peers its peers report (full mesh), and on demand
//! (`finish_cluster`'s ping, `/_node/<name>/…`). A connection needs both names to be long
//! names with a dotted host (`nonode@nohost` never connects), both ends on the same transport
//! (a TLS node and a plain one never connect: the TLS side logs why), certificates its peer
//! verifies, the callee to really carry the name asked for, and both cookies to match —
//! proven with a hash of cookie and nonce, the cookie itself never travels. After a
//! connection each side pushes its `_nodes` and `_dbs` to the other; a node holds incoming
//! copies for the copy delay after its first connection (`nodes_copy`, one time in five
//! `slow_copy`), then applies them as they come.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::copies;
use crate::net::client;
use crate::net::epmd::long_name_ok;
use crate::net::http::{HttpRequest, Response};
use crate::net::tls::Stream;
use crate::node::{lock, log_line, release, NodeInner, Parts, SyncPayload};
use crate::spec::Version;
use crate::util;

static LINK_IDS: AtomicU64 = AtomicU64::new(1);
fn proof(cookie: &str, kind: &str, from: &str, to: &str, nonce: &str) -> String {
    util::sha256_hex(&[
        b"couchsim-dist",
        cookie.as_bytes(),
        kind.as_bytes(),
        from.as_bytes(),
        to.as_bytes(),
        nonce.as_bytes(),
    ])
}

// ---------------------------------------------------------------------------------------------
// the wire
// ---------------------------------------------------------------------------------------------

/// The handshake's tags, as in Erlang's: `send_name` and `send_status`.
const NAME: u8 = b'N';
const STATUS: u8 = b's';
/// Larger frames than this are not from a peer of ours.
const MAX_FRAME: usize = 256 * 1024 * 1024;

fn write_short(w: &mut impl Write, tag: u8, v: &Value) -> io::Result<()> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let len = u16::try_from(body.len() + 1)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "handshake too large"))?;
    let mut out = len.to_be_bytes().to_vec();
    out.push(tag);
    out.extend_from_slice(&body);
    w.write_all(&out)?;
    w.flush()
}

/// A handshake message: 2-byte length, the tag, JSON. Anything else (a TLS ClientHello on a
/// plain port: its first bytes read as a length of 5635) is not a peer: `Err`.
fn read_short(r: &mut impl Read, tag: u8) -> io::Result<Value> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len)?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    r.read_exact(&mut msg)?;
    if msg.first() != Some(&tag) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a distribution handshake",
        ));
    }
    serde_json::from_slice(&msg[1..]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn write_frame(w: &mut impl Write, v: &Value) -> io::Result<()> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    w.write_all(&out)?;
    w.flush()
}

fn read_frame(r: &mut impl Read) -> io::Result<Value> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A connection to `peer`'s distribution port on its transport, the handshake `hello` sent and
/// the status answer read. A TLS handshake that fails is logged, as the TLS side of an Erlang
/// node logs it.
fn open(
    node: &NodeInner,
    peer: &str,
    hello: &Value,
    timeout: Duration,
) -> io::Result<(Stream, Value)> {
    let addr = node
        .epmd
        .locate(peer)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "cannot locate node"))?;
    let tcp = client::connect(addr, timeout.min(node.delays.dist_setup.max(timeout)))?;
    let _ = tcp.set_read_timeout(Some(node.delays.dist_setup));
    let mut stream = node.dist.connect(peer, tcp).map_err(|why| {
        log_line(&format!(
            "{}: connection to '{peer}' failed: {why}",
            node.name
        ));
        io::Error::new(io::ErrorKind::ConnectionRefused, why)
    })?;
    write_short(&mut stream, NAME, hello)?;
    let status = read_short(&mut stream, STATUS)?;
    let _ = stream.tcp().set_read_timeout(Some(timeout));
    Ok((stream, status))
}

/// What a call to a peer answered: a status as HTTP's (200, 403 `rejected`, 409
/// `not_connected`, …) and a JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

// ---------------------------------------------------------------------------------------------
// outgoing
// ---------------------------------------------------------------------------------------------

fn hello(node: &NodeInner, to: &str, kind: &str) -> Value {
    let nonce = node.random_hex(16);
    let cookie = lock(&node.vol).cookie.clone();
    json!({
        "kind": kind,
        "from": node.name,
        "to": to,
        "nonce": nonce,
        "proof": proof(&cookie, kind, &node.name, to, &nonce),
    })
}

fn call(node: &NodeInner, peer: &str, kind: &str, payload: Value) -> io::Result<Reply> {
    // Generous: on a loaded machine a peer may take seconds; a stopped one refuses at once.
    let (mut stream, status) = open(
        node,
        peer,
        &hello(node, peer, kind),
        Duration::from_secs(30),
    )?;
    if status["status"] != "ok" {
        return Ok(Reply {
            status: status["code"].as_u64().unwrap_or(403) as u16,
            body: status,
        });
    }
    write_frame(&mut stream, &payload)?;
    let answer = read_frame(&mut stream)?;
    Ok(Reply {
        status: answer["status"].as_u64().unwrap_or(500) as u16,
        body: answer["body"].clone(),
    })
}

/// Connects to `peer` unless connected already. True when connected afterwards.
pub fn connect(node: &Arc<NodeInner>, peer: &str, epoch: u64) -> bool {
    if peer == node.name || node.is_connected(peer) {
        return true;
    }
    if !long_name_ok(&node.name) || !long_name_ok(peer) || !node.alive(epoch) {
        return false;
    }
    if node.epmd.locate(peer).is_none() {
        return false;
    }
    if !util::sleep_while(node.delays.connect, || node.alive(epoch)) {
        return false;
    }
    let mut hi = hello(node, peer, "connect");
    hi["peers"] = json!(lock(&node.vol)
        .connected
        .keys()
        .cloned()
        .collect::<Vec<_>>());
    let cookie = lock(&node.vol).cookie.clone();
    let nonce = hi["nonce"].as_str().unwrap_or_default().to_string();
    let (stream, v) = match open(node, peer, &hi, Duration::from_secs(5)) {
        Ok(r) => r,
        Err(_) => return false,
    };
    if v["status"] != "ok" {
        return false;
    }
    if v["proof"].as_str() != Some(&proof(&cookie, "accept", &node.name, peer, &nonce)) {
        log_line(&format!(
            "{}: connection to '{peer}' rejected: invalid challenge reply",
            node.name
        ));
        return false;
    }
    let _ = stream.tcp().set_read_timeout(None);
    let conn_id = match node.register_conn(stream.tcp(), epoch) {
        Some(id) => id,
        None => return false,
    };
    let link = LINK_IDS.fetch_add(1, Ordering::SeqCst);
    let hints = peer_hints(&v);
    on_connected(node, peer, link, &hints);
    let me = Arc::clone(node);
    let peer_name = peer.to_string();
    let spawned = node.spawn(epoch, "link", move || {
        wait_eof(stream);
        drop_peer(&me, &peer_name, link);
        me.unregister_conn(conn_id);
    });
    if !spawned {
        drop_peer(node, peer, link);
        node.unregister_conn(conn_id);
    }
    true
}

/// Reads and discards until the other side closes the link (or it breaks).
fn wait_eof(mut stream: impl Read) {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// The `peers` a connect handshake carries: who the other side is connected to already.
fn peer_hints(v: &Value) -> Vec<String> {
    v["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn on_connected(node: &NodeInner, peer: &str, link: u64, hints: &[String]) {
    let now = Instant::now();
    let delay = {
        let mut rng = lock(&node.rng);
        if rng.one_in(node.delays.slow_copy_one_in) {
            node.delays.slow_copy
        } else {
            let (lo, hi) = node.delays.nodes_copy;
            rng.between(lo, hi)
        }
    };
    {
        let mut v = lock(&node.vol);
        if v.connected.is_empty() {
            v.gate_until = Some(now + delay);
        }
        v.connected.insert(peer.to_string(), link);
        v.ever_connected.insert(peer.to_string());
        // A new link: the peer gets everything again.
        v.pushed.retain(|(p, _), _| p != peer);
        v.next_attempt.remove(peer);
        for h in hints {
            if *h != node.name && !v.connected.contains_key(h) {
                v.hints.insert(h.clone());
            }
        }
    }
    // mem3_sync on nodeup: a member gets our `_nodes`, `_dbs` and the copies we share — what
    // it missed while it was away, which takes a while to arrive (`Delays::catch_up`).
    if lock(&node.store).is_member(peer) {
        node.schedule_sync(peer, now, Parts::ALL);
        node.schedule_catch_up(peer);
    }
    log_line(&format!("{}: connected to {peer}", node.name));
}

fn drop_peer(node: &NodeInner, peer: &str, link: u64) {
    let mut v = lock(&node.vol);
    if v.connected.get(peer) == Some(&link) {
        v.connected.remove(peer);
        v.pushed.retain(|(p, _), _| p != peer);
        let retry = Instant::now() + node.delays.lost_retry;
        v.next_attempt.insert(peer.to_string(), retry);
        drop(v);
        log_line(&format!("{}: {peer} is down", node.name));
    }
}

/// Pushes `_nodes` and/or `_dbs` to `peer`: the docs changed since the last push it took
/// over this link (everything on a new link), like the checkpointed replication mem3_sync
/// runs.
fn push_state(node: &NodeInner, peer: &str, direct: bool, parts: Parts) {
    let (since_nodes, since_dbs) = {
        let v = lock(&node.vol);
        let at = |dbs: bool| v.pushed.get(&(peer.to_string(), dbs)).copied().unwrap_or(0);
        (at(false), at(true))
    };
    let (nodes, dbs, seqs) = {
        let st = lock(&node.store);
        (
            parts.nodes.then(|| st.nodes.leaves_since(since_nodes)),
            parts.dbs.then(|| st.dbs.leaves_since(since_dbs)),
            (st.nodes.update_seq, st.dbs.update_seq),
        )
    };
    let payload = json!({"nodes": nodes, "dbs": dbs, "direct": direct});
    let delivered = matches!(call(node, peer, "sync", payload), Ok(r) if r.status == 200);
    let mut v = lock(&node.vol);
    if delivered {
        if parts.nodes {
            v.pushed.insert((peer.to_string(), false), seqs.0);
        }
        if parts.dbs {
            v.pushed.insert((peer.to_string(), true), seqs.1);
        }
    } else if v.connected.contains_key(peer) {
        // The peer may not have registered the link yet (it answers 409 `not_connected`
        // until its side of `on_connected` ran): push again on a later tick while the link
        // lives, instead of losing the copy for good.
        drop(v);
        node.schedule_sync(peer, Instant::now() + node.delays.tick, parts);
    }
}

/// fabric writes a db's new shard map to every connected member before it answers.
pub fn push_dbs_now(node: &NodeInner) {
    let members = lock(&node.store).cluster_nodes();
    let peers: Vec<String> = lock(&node.vol)
        .connected
        .keys()
        .filter(|p| members.contains(p))
        .cloned()
        .collect();
    for p in peers {
        push_state(node, &p, true, Parts::DBS);
    }
}

/// Runs a shard-copy operation (`copies::rpc`) on a connected peer. `None`: no answer.
pub fn shard_rpc(node: &NodeInner, peer: &str, payload: Value) -> Option<Value> {
    match call(node, peer, "shard", payload) {
        Ok(r) if r.status == 200 => Some(r.body),
        Ok(r) => {
            log_line(&format!(
                "{}: {peer} refused a shard call: {} {}",
                node.name, r.status, r.body
            ));
            None
        }
        Err(e) => {
            log_line(&format!("{}: shard call to {peer} failed: {e}", node.name));
            None
        }
    }
}

/// `rpc:call(Peer, config, set, …)`. Connects first if needed.
pub fn rpc_config_set(
    node: &Arc<NodeInner>,
    peer: &str,
    section: &str,
    key: &str,
    value: &str,
) -> bool {
    if !node.is_connected(peer) && !connect(node, peer, node.epoch()) {
        return false;
    }
    matches!(
        call(node, peer, "config", json!({"section": section, "key": key, "value": value})),
        Ok(r) if r.status == 200
    )
}

/// `/_node/<name>/…` for another node: proxied when connected (or connectable), 412 when a
/// member is down, 404 when the name is unknown.
pub fn remote_node_request(
    node: &Arc<NodeInner>,
    req: &HttpRequest,
    name: &str,
    rest: &[&str],
    epoch: u64,
) -> Response {
    // Erlang knows a name it has seen: a `_nodes` doc (even deleted), a shard map, a link.
    let known = {
        let st = lock(&node.store);
        st.nodes.docs.contains_key(name)
            || st
                .all_dbs()
                .iter()
                .filter_map(|db| st.map(db))
                .any(|m| m.by_range.values().flatten().any(|n| n == name))
    } || lock(&node.vol).ever_connected.contains(name);
    if rest == ["_versions"] && node.version() == Version::V3_4_2 {
        // 3.4.2 answers for itself, whatever node the path names.
        return Response::raw(200, release::versions(node.version()));
    }
    let up = node.is_connected(name) || (known && connect(node, name, epoch));
    if !up {
        return if known {
            Response::error(412, "nodedown", &format!("{name} is down"))
        } else {
            Response::error(404, "not_found", &format!("no such node: {name}"))
        };
    }
    if rest == ["_versions"] {
        // 3.5.2 asks the other node by an RPC that 3.4.2 does not have.
        return match call(node, name, "versions", json!({})) {
            Ok(r) if r.status == 200 => match r.body["versions"].as_str() {
                Some(text) => Response::raw(200, text),
                None => Response::raw(500, release::VERSIONS_OF_OLDER),
            },
            _ => Response::error(412, "nodedown", &format!("{name} is down")),
        };
    }
    let sub: Vec<String> = rest.iter().map(|s| util::pct_encode(s)).collect();
    let payload = json!({
        "method": req.method,
        "path": sub,
        "query": req.query,
        "content_type": req.header("content-type"),
        "body": String::from_utf8_lossy(&req.body),
    });
    match call(node, name, "proxy", payload) {
        Ok(r) if r.status == 200 => {
            let status = r.body["status"].as_u64().unwrap_or(500) as u16;
            let body = r.body["body"].as_str().unwrap_or("").as_bytes().to_vec();
            Response::new(status, body)
        }
        _ => Response::error(412, "nodedown", &format!("{name} is down")),
    }
}

/// Trap 8 would move the listener; the simulator keeps listening where it is (logged).
pub fn note_listener_change(node: &NodeInner) {
    log_line(&format!(
        "{}: chttpd bind_address/port changed to {:?}:{:?} (the simulator keeps listening on {})",
        node.name,
        node.config("chttpd", "bind_address"),
        node.config("chttpd", "port"),
        node.addr()
    ));
}

// ---------------------------------------------------------------------------------------------
// the ticker
// ---------------------------------------------------------------------------------------------

fn retry_delay(node: &NodeInner, lost: bool) -> Duration {
    if lost {
        return node.delays.lost_retry;
    }
    let base = node.delays.retry_timer;
    // ±25 %
    let lo = base.mul_f64(0.75);
    let hi = base.mul_f64(1.25);
    lock(&node.rng).between(lo, hi)
}

/// One round of the distribution: (re)connect members and hinted peers, apply held copies,
/// send due pushes of `_nodes`/`_dbs`.
pub fn tick(node: &Arc<NodeInner>, epoch: u64) {
    let now = Instant::now();
    if long_name_ok(&node.name) {
        let members = lock(&node.store).cluster_nodes();
        let (due, hints) = {
            let mut v = lock(&node.vol);
            let due: Vec<String> = members
                .into_iter()
                .filter(|m| *m != node.name && !v.connected.contains_key(m))
                .filter(|m| v.next_attempt.get(m).map(|t| now >= *t).unwrap_or(true))
                .collect();
            let hints: Vec<String> = std::mem::take(&mut v.hints).into_iter().collect();
            (due, hints)
        };
        for m in due {
            if !node.alive(epoch) {
                return;
            }
            if !connect(node, &m, epoch) {
                let lost = lock(&node.vol).ever_connected.contains(&m);
                let at = Instant::now() + retry_delay(node, lost);
                lock(&node.vol).next_attempt.insert(m, at);
            }
        }
        for h in hints {
            if !node.alive(epoch) {
                return;
            }
            connect(node, &h, epoch);
        }
    }
    // incoming copies held by the copy delay
    let ready: Vec<SyncPayload> = {
        let mut v = lock(&node.vol);
        match v.gate_until {
            Some(t) if Instant::now() < t => Vec::new(),
            _ => std::mem::take(&mut v.pending_sync),
        }
    };
    for p in ready {
        apply_sync(node, p);
    }
    // outgoing copies
    let pushes: Vec<(String, Parts)> = {
        let mut v = lock(&node.vol);
        let due = util::take_due(&mut v.push_due, Instant::now(), |d| d.at);
        due.into_iter()
            .filter(|(p, _)| v.connected.contains_key(p))
            .map(|(p, d)| (p, d.parts))
            .collect()
    };
    for (p, parts) in pushes {
        if !node.alive(epoch) {
            return;
        }
        push_state(node, &p, false, parts);
    }
}

fn apply_sync(node: &NodeInner, p: SyncPayload) {
    let (before, nodes_changed, dbs_changed) = {
        let mut st = lock(&node.store);
        let before = st.cluster_nodes();
        let a = p
            .nodes
            .as_ref()
            .map(|n| st.nodes.merge(n))
            .unwrap_or_default();
        let b = p.dbs.as_ref().map(|d| st.dbs.merge(d)).unwrap_or_default();
        (before, !a.is_empty(), b)
    };
    if nodes_changed {
        node.nodes_changed(&before, Some(&p.from), None);
    }
    if !dbs_changed.is_empty() {
        node.dbs_changed(&dbs_changed, true);
    }
}

// ---------------------------------------------------------------------------------------------
// incoming
// ---------------------------------------------------------------------------------------------

/// The routes of `/_node/_local/…`, which `/_node/<this node>/…` asked on another node
/// reaches (given by the layer above, which owns the routes).
pub type LocalRoutes = fn(&Arc<NodeInner>, &HttpRequest, &[&str]) -> Response;

/// The distribution port's acceptor: a thread per connection, each handed to `serve`.
pub fn accept_loop(node: Arc<NodeInner>, listener: TcpListener, epoch: u64, local: LocalRoutes) {
    for stream in listener.incoming() {
        if !node.alive(epoch) {
            break;
        }
        let Ok(tcp) = stream else { continue };
        let Ok(peer) = tcp.peer_addr() else { continue };
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(node.delays.dist_setup));
        let _ = tcp.set_write_timeout(Some(Duration::from_secs(30)));
        let Some(id) = node.register_conn(&tcp, epoch) else {
            break;
        };
        let me = Arc::clone(&node);
        let spawned = node.spawn(epoch, "dist", move || {
            serve(&me, tcp, peer, epoch, local);
            me.unregister_conn(id);
        });
        if !spawned {
            node.unregister_conn(id);
        }
    }
}

fn refuse(w: &mut Stream, code: u16, error: &str) {
    let _ = write_short(
        w,
        STATUS,
        &json!({"status": "nok", "code": code, "error": error}),
    );
}

/// One incoming connection: its transport's handshake, the name handshake, then the call (or,
/// for `connect`, the link until either side goes away).
fn serve(node: &Arc<NodeInner>, tcp: TcpStream, peer: SocketAddr, epoch: u64, local: LocalRoutes) {
    let mut s = match node.dist.accept(&node.name, tcp) {
        Ok(s) => s,
        Err(why) => {
            log_line(&format!(
                "{}: distribution connection from {peer} refused: {why}",
                node.name
            ));
            return;
        }
    };
    // A node without TLS reading a TLS ClientHello waits for the 5635 bytes its first two
    // bytes announce, then drops it at the handshake's time limit, as Erlang's does.
    let Ok(v) = read_short(&mut s, NAME) else {
        return;
    };
    if !node.alive(epoch) {
        return;
    }
    let kind = v["kind"].as_str().unwrap_or("").to_string();
    let from = v["from"].as_str().unwrap_or("").to_string();
    let to = v["to"].as_str().unwrap_or("");
    let nonce = v["nonce"].as_str().unwrap_or("");
    let cookie = lock(&node.vol).cookie.clone();
    if !long_name_ok(&node.name) || !long_name_ok(&from) {
        return refuse(&mut s, 403, "not_distributed");
    }
    if to != node.name {
        log_line(&format!(
            "{}: connection attempt for '{to}' refused: this node is '{}'",
            node.name, node.name
        ));
        return refuse(&mut s, 403, "wrong_name");
    }
    if v["proof"].as_str() != Some(&proof(&cookie, &kind, &from, to, nonce)) {
        if kind == "connect" {
            log_line(&format!(
                "{}: Connection attempt from node '{from}' rejected. Invalid challenge reply.",
                node.name
            ));
        }
        return refuse(&mut s, 403, "rejected");
    }
    if kind != "connect" && !node.is_connected(&from) {
        return refuse(&mut s, 409, "not_connected");
    }
    let _ = s.tcp().set_read_timeout(Some(Duration::from_secs(30)));
    if kind == "connect" {
        let hints = peer_hints(&v);
        let peers: Vec<String> = lock(&node.vol).connected.keys().cloned().collect();
        let link = LINK_IDS.fetch_add(1, Ordering::SeqCst);
        // Connected before answering: the caller's first push may follow at once.
        on_connected(node, &from, link, &hints);
        let answer = json!({
            "status": "ok",
            "proof": proof(&cookie, "accept", &from, to, nonce),
            "peers": peers,
        });
        if write_short(&mut s, STATUS, &answer).is_ok() {
            // The link lives until either side closes it.
            let _ = s.tcp().set_read_timeout(None);
            wait_eof(&mut s);
        }
        drop_peer(node, &from, link);
        return;
    }
    if write_short(&mut s, STATUS, &json!({"status": "ok"})).is_err() {
        return;
    }
    let Ok(p) = read_frame(&mut s) else { return };
    let (status, body) = answer_call(node, &kind, &from, p, peer, local);
    let _ = write_frame(&mut s, &json!({"status": status, "body": body}));
}

fn answer_call(
    node: &Arc<NodeInner>,
    kind: &str,
    from: &str,
    v: Value,
    peer: SocketAddr,
    node_local: LocalRoutes,
) -> (u16, Value) {
    match kind {
        "sync" => {
            let p = SyncPayload {
                from: from.to_string(),
                nodes: serde_json::from_value(v["nodes"].clone()).unwrap_or_default(),
                dbs: serde_json::from_value(v["dbs"].clone()).unwrap_or_default(),
            };
            let direct = v["direct"].as_bool().unwrap_or(false);
            let held = !direct && {
                let mut vol = lock(&node.vol);
                match vol.gate_until {
                    Some(t) if Instant::now() < t => {
                        vol.pending_sync.push(p.clone());
                        true
                    }
                    _ => false,
                }
            };
            if !held {
                apply_sync(node, p);
            }
            (200, json!({"ok": true}))
        }
        "config" => {
            let (s, k, val) = (
                v["section"].as_str().unwrap_or(""),
                v["key"].as_str().unwrap_or(""),
                v["value"].as_str().unwrap_or(""),
            );
            if s.is_empty() || k.is_empty() {
                return (400, json!({"error": "bad_request"}));
            }
            node.set_config(s, k, val);
            (200, json!({"ok": true}))
        }
        "shard" => (200, copies::rpc(node, &v)),
        // `chttpd_node:get_versions/0`, new in 3.5: a 3.4.2 node has no such function.
        "versions" => (
            200,
            match node.version() {
                Version::V3_4_2 => json!({"undef": true}),
                v => json!({"versions": release::versions(v)}),
            },
        ),
        "proxy" => {
            let segs: Vec<String> = v["path"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let query = v["query"].as_str().unwrap_or("").to_string();
            let mut path = String::from("/_node/_local");
            for s in &segs {
                path.push('/');
                path.push_str(s);
            }
            let target = if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{query}")
            };
            let mut headers = vec![("Host".to_string(), node.addr().to_string())];
            if let Some(ct) = v["content_type"].as_str() {
                headers.push(("Content-Type".to_string(), ct.to_string()));
            }
            let inner = HttpRequest {
                method: v["method"].as_str().unwrap_or("GET").to_string(),
                target,
                path,
                query,
                http10: false,
                headers,
                body: v["body"].as_str().unwrap_or("").as_bytes().to_vec(),
                peer,
            };
            let decoded: Vec<String> = segs.iter().map(|s| util::pct_decode(s)).collect();
            let rest: Vec<&str> = decoded.iter().map(String::as_str).collect();
            let resp = node_local(node, &inner, &rest);
            let body = String::from_utf8_lossy(&resp.body).into_owned();
            (200, json!({"status": resp.status, "body": body}))
        }
        _ => (404, json!({"error": "not_found"})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_depend_on_cookie_and_nonce() {
        let a = proof("cookie", "connect", "a@x.y", "b@x.y", "n1");
        assert_eq!(a, proof("cookie", "connect", "a@x.y", "b@x.y", "n1"));
        assert_ne!(a, proof("other", "connect", "a@x.y", "b@x.y", "n1"));
        assert_ne!(a, proof("cookie", "connect", "a@x.y", "b@x.y", "n2"));
        assert!(!a.contains("cookie"));
    }
}
