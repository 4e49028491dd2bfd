//! `/_cluster_setup`, as `src/setup/src/setup_httpd.erl` and `setup.erl` of CouchDB 3.4.2 do
//! it: a state computed on every GET (never stored), and the actions `enable_cluster`,
//! `enable_single_node`, `add_node`, `receive_cookie`, `finish_cluster` and `remove_node`,
//! with their odd answers (500 validation errors, 201s that did nothing, `Invalid Action'`,
//! and the second, unsolicited 500 after `Missing JSON body'`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::answers;
use crate::cluster::dist;
use crate::cluster::fabric;
use crate::net::client::{self, ClientRequest};
use crate::net::http::{self, HttpRequest, Response};
use crate::node::ejson::Ej;
use crate::node::{lock, log_line, FileExists, NodeInner};
use crate::util;

/// The dbs `finish_cluster` creates (3.x no longer creates `_global_changes`).
pub const SYSTEM_DBS: [&str; 2] = ["_users", "_replicator"];

/// The computed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    SingleNodeEnabled,
    SingleNodeDisabled,
    ClusterDisabled,
    ClusterEnabled,
    ClusterFinished,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::SingleNodeEnabled => "single_node_enabled",
            State::SingleNodeDisabled => "single_node_disabled",
            State::ClusterDisabled => "cluster_disabled",
            State::ClusterEnabled => "cluster_enabled",
            State::ClusterFinished => "cluster_finished",
        }
    }
}

/// What the GET state depends on, read from a node.
#[derive(Debug, Clone)]
pub struct Facts {
    pub single_node: bool,
    pub n: u64,
    pub bind_address: Option<String>,
    pub has_admin: bool,
    pub has_dbs: bool,
}

pub fn compute_state(f: &Facts) -> State {
    if f.single_node {
        return State::SingleNodeEnabled;
    }
    if f.n == 1 {
        return if f.has_admin && f.has_dbs {
            State::SingleNodeEnabled
        } else {
            State::SingleNodeDisabled
        };
    }
    if !cluster_enabled(f.bind_address.as_deref(), f.has_admin) {
        return State::ClusterDisabled;
    }
    if f.has_dbs {
        State::ClusterFinished
    } else {
        State::ClusterEnabled
    }
}

/// `setup:is_cluster_enabled/0`: bind_address is not "127.0.0.1" and there is an admin.
pub fn cluster_enabled(bind_address: Option<&str>, has_admin: bool) -> bool {
    bind_address != Some("127.0.0.1") && has_admin
}

fn facts(node: &NodeInner, dbs: &[String]) -> Facts {
    let st = lock(&node.store);
    Facts {
        single_node: st
            .config_get("couchdb", "single_node")
            .map(|v| v == "true")
            .unwrap_or(false),
        n: st
            .config_get("cluster", "n")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(3),
        bind_address: st.config_get("chttpd", "bind_address"),
        has_admin: st
            .config
            .get("admins")
            .map(|a| !a.is_empty())
            .unwrap_or(false),
        has_dbs: dbs.iter().all(|d| st.db_exists(d)),
    }
}

fn is_cluster_enabled(node: &NodeInner) -> bool {
    let f = facts(node, &[]);
    cluster_enabled(f.bind_address.as_deref(), f.has_admin)
}

fn default_dbs() -> Vec<String> {
    SYSTEM_DBS.iter().map(|s| s.to_string()).collect()
}

fn badarg(node: &NodeInner) -> Response {
    answers::unknown_error(node, "badarg")
}

fn bad_request(reason: &str) -> Response {
    Response::error(400, "bad_request", reason)
}

fn setup_error(reason: &str) -> Response {
    Response::error(500, "setup_error", reason)
}

pub fn handle(node: &Arc<NodeInner>, req: &HttpRequest, epoch: u64) -> Response {
    match req.method.as_str() {
        "GET" => get_state(node, req),
        _ => post(node, req, epoch),
    }
}

fn get_state(node: &NodeInner, req: &HttpRequest) -> Response {
    let dbs = req
        .query_param("ensure_dbs_exist")
        .and_then(|v| serde_json::from_str::<Vec<String>>(&v).ok())
        .unwrap_or_else(default_dbs);
    let state = compute_state(&facts(node, &dbs));
    Response::json(200, &json!({"state": state.as_str()}))
}

fn post(node: &Arc<NodeInner>, req: &HttpRequest, epoch: u64) -> Response {
    if !req.is_json_content_type() {
        let mut r = Response::error(
            415,
            "bad_content_type",
            "Content-Type must be application/json",
        );
        r.close = true;
        return r;
    }
    let body = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(o)) => o,
        _ => return missing_json_body(node),
    };
    let action = match body.get("action") {
        None => return bad_request("Invalid Action'"),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return badarg(node),
    };
    match action.as_str() {
        "enable_cluster" => enable_cluster(node, &body),
        "enable_single_node" => enable_single_node(node, &body),
        "finish_cluster" => finish_cluster(node, &body, epoch),
        "add_node" => add_node(node, &body),
        "receive_cookie" => receive_cookie(node, &body),
        "remove_node" => Response::ok(201),
        _ => bad_request("Invalid Action'"),
    }
}

/// `Missing JSON body'` — and then, on the same connection, the crash of the handler that
/// went on with a non-object: an unsolicited 500 (transcript 02, raw bytes).
fn missing_json_body(node: &NodeInner) -> Response {
    let mut first = bad_request("Missing JSON body'");
    first.bare = true;
    let crash = answers::unknown_error(node, "function_clause");
    let rid = node.random_hex(5);
    first.trailing = http::render(&crash, &rid);
    first
}

fn str_field<'a>(body: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    body.get(k).and_then(Value::as_str)
}

/// An integer-ish field (CouchDB accepts `3` and `"3"`).
fn int_field(body: &Map<String, Value>, k: &str) -> Option<Result<u64, ()>> {
    match body.get(k)? {
        Value::Number(n) => Some(n.as_u64().ok_or(())),
        Value::String(s) => Some(s.trim().parse().map_err(|_| ())),
        _ => Some(Err(())),
    }
}

fn valid_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

fn enable_cluster(node: &Arc<NodeInner>, body: &Map<String, Value>) -> Response {
    if body.contains_key("remote_node") {
        return enable_cluster_remote(node, body);
    }
    if is_cluster_enabled(node) {
        return bad_request("Cluster is already enabled");
    }
    validate_and_setup(node, body, false)
}

/// `enable_cluster_int` / `enable_single_node`: validation errors are 500 `{"error":"error"}`.
fn validate_and_setup(node: &Arc<NodeInner>, body: &Map<String, Value>, single: bool) -> Response {
    let err = |reason: &str| Response::error(500, "error", reason);
    let username = body.get("username");
    let password = body.get("password_hash").or_else(|| body.get("password"));
    let has_admin = !node.admins().is_empty();
    if !has_admin && username.is_none() && password.is_none() {
        return err("Cluster setup requires admin account to be configured");
    }
    let current_bind = node.config("chttpd", "bind_address");
    let new_bind = body.get("bind_address");
    let new_bind_str = match new_bind {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return badarg(node),
    };
    if !single {
        let local = |b: &str| b == "127.0.0.1" || b == "::1";
        match (current_bind.as_deref(), new_bind_str) {
            (Some(c), None) if local(c) => {
                return err("Cluster setup requires a remote bind_address (not 127.0.0.1 nor ::1)")
            }
            (_, Some(n)) if local(n) => {
                return err("Cluster setup requires a remote bind_address (not 127.0.0.1 nor ::1)")
            }
            // io:format/2 returns ok: the reason really is "ok".
            (_, Some(n)) if !valid_ip(n) => return err("ok"),
            _ => {}
        }
    }
    let node_count = if single {
        1
    } else {
        match int_field(body, "node_count") {
            None => return err("Cluster setup requires node_count to be configured"),
            Some(Ok(n)) => n,
            Some(Err(())) => return badarg(node),
        }
    };
    // setup_node/4: require_valid_bind_address(undefined) crashes.
    let bind = match new_bind_str {
        Some(b) if valid_ip(b) => b.to_string(),
        _ => return badarg(node),
    };
    match (username, password) {
        (None, None) => {}
        (Some(Value::String(u)), Some(Value::String(p))) => {
            node.set_config("admins", u, p);
        }
        _ => return badarg(node),
    }
    node.set_config("chttpd", "bind_address", &bind);
    node.set_config("cluster", "n", &node_count.clamp(1, 3).to_string());
    match int_field(body, "port") {
        None => {}
        Some(Ok(p)) => {
            node.set_config("chttpd", "port", &p.to_string());
        }
        Some(Err(())) => return badarg(node),
    }
    dist::note_listener_change(node);
    Response::ok(201)
}

/// With `remote_node`: forward to `http://remote_node:port/_cluster_setup`, answer 201 whatever
/// happened there.
fn enable_cluster_remote(node: &Arc<NodeInner>, body: &Map<String, Value>) -> Response {
    let username = match str_field(body, "username") {
        Some(u) => u.to_string(),
        None => return badarg(node),
    };
    let remote = match str_field(body, "remote_node") {
        Some(r) => r.to_string(),
        None => return badarg(node),
    };
    let port = match int_field(body, "port") {
        None => 5984,
        Some(Ok(p)) if p <= u16::MAX as u64 => p as u16,
        Some(_) => return badarg(node),
    };
    let hash = node.config("admins", &username);
    let mut fwd = json!({
        "action": "enable_cluster",
        "username": username,
        "password_hash": hash,
        "bind_address": body.get("bind_address"),
        "port": body.get("port"),
        "node_count": body.get("node_count"),
    });
    if let Value::Object(o) = &mut fwd {
        o.retain(|_, v| !v.is_null());
    }
    let mut creq = ClientRequest::new("POST", "/_cluster_setup").json(&fwd);
    creq.host = format!("{remote}:{port}");
    if let (Some(u), Some(p)) = (
        str_field(body, "remote_current_user"),
        str_field(body, "remote_current_password"),
    ) {
        creq.basic_auth = Some((u.to_string(), p.to_string()));
    }
    creq.timeout = Duration::from_secs(10);
    match client::resolve(&remote, port).and_then(|a| client::send(a, &creq)) {
        Ok(r) => log_line(&format!(
            "{}: remote enable_cluster on {remote}:{port} answered {}",
            node.name, r.status
        )),
        Err(e) => log_line(&format!(
            "{}: remote enable_cluster on {remote}:{port} failed: {e}",
            node.name
        )),
    }
    Response::ok(201)
}

fn enable_single_node(node: &Arc<NodeInner>, body: &Map<String, Value>) -> Response {
    let r = validate_and_setup(node, body, true);
    if r.status != 201 {
        return r;
    }
    let dbs = match ensure_dbs(node, body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if !dbs.iter().all(|d| lock(&node.store).db_exists(d)) {
        for d in &dbs {
            fabric::create_db(node, d, None, Some(1), fabric::Origin::Setup);
        }
    }
    // 1.15 s in transcript 14 (it re-hashed the admin meanwhile: trap 19)
    let epoch = node.epoch();
    util::sleep_while(node.delays.single_node_setup, || node.alive(epoch));
    Response::ok(201)
}

fn ensure_dbs(node: &NodeInner, body: &Map<String, Value>) -> Result<Vec<String>, Response> {
    match body.get("ensure_dbs_exist") {
        None => Ok(default_dbs()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or(()))
            .collect::<Result<Vec<_>, ()>>()
            .map_err(|_| badarg(node)),
        Some(_) => Err(badarg(node)),
    }
}

/// wait_connected → sync admins, uuid, secret → 400 if the dbs exist → create them.
fn finish_cluster(node: &Arc<NodeInner>, body: &Map<String, Value>, epoch: u64) -> Response {
    let dbs = match ensure_dbs(node, body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    // 1. every other `_nodes` member must answer a ping (net_adm:ping connects), 5 s in all.
    let deadline = Instant::now() + node.delays.finish_wait;
    loop {
        let others: Vec<String> = lock(&node.store)
            .cluster_nodes()
            .into_iter()
            .filter(|n| *n != node.name)
            .collect();
        let mut down = Vec::new();
        for o in &others {
            if !node.is_connected(o) && !dist::connect(node, o, epoch) {
                down.push(o.clone());
            }
        }
        if down.is_empty() {
            break;
        }
        if Instant::now() >= deadline || !node.alive(epoch) {
            log_line(&format!(
                "{}: finish_cluster: nodes not connected: {}",
                node.name,
                down.join(", ")
            ));
            return setup_error("Cluster setup timed out waiting for nodes to connect");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(node.delays.finish_poll.min(left));
    }
    // 2. copy [admins], [couchdb] uuid, [chttpd_auth] secret to every other member.
    let others: Vec<String> = lock(&node.store)
        .cluster_nodes()
        .into_iter()
        .filter(|n| *n != node.name)
        .collect();
    let mut items: Vec<(String, String, String)> = node
        .admins()
        .into_iter()
        .map(|(u, h)| ("admins".to_string(), u, h))
        .collect();
    for (sec, key) in [("couchdb", "uuid"), ("chttpd_auth", "secret")] {
        if let Some(v) = node.config(sec, key) {
            items.push((sec.to_string(), key.to_string(), v));
        }
    }
    for o in &others {
        for (sec, key, val) in &items {
            if !dist::rpc_config_set(node, o, sec, key, val) {
                return setup_error("Cluster setup unable to sync admin passwords");
            }
        }
    }
    // 3. already there?
    if dbs.iter().all(|d| lock(&node.store).db_exists(d)) {
        return bad_request("Cluster is already finished");
    }
    // 4. create them on the current members.
    let d = {
        let (lo, hi) = node.delays.finish_create;
        lock(&node.rng).between(lo, hi)
    };
    std::thread::sleep(d);
    for db in &dbs {
        fabric::create_db(node, db, None, None, fabric::Origin::Setup);
    }
    Response::ok(201)
}

/// Post our cookie to the other node (`receive_cookie`), then write the `_nodes` doc.
fn add_node(node: &Arc<NodeInner>, body: &Map<String, Value>) -> Response {
    if !is_cluster_enabled(node) {
        return bad_request("Cluster is not enabled.");
    }
    let (user, password) = match (str_field(body, "username"), str_field(body, "password")) {
        (Some(u), Some(p)) => (u.to_string(), p.to_string()),
        _ => return badarg(node),
    };
    let host = match str_field(body, "host") {
        Some(h) => h.to_string(),
        None => return badarg(node),
    };
    let port_text = match body.get("port") {
        None => "5984".to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return badarg(node),
    };
    let name = match body.get("name") {
        None => default_name(&port_text).to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return badarg(node),
    };
    let port: u16 = match port_text.parse() {
        Ok(p) => p,
        Err(_) => return bad_request("Add node failed. Invalid Host and/or Port."),
    };
    let cookie = lock(&node.vol).cookie.clone();
    let mut creq = ClientRequest::new("POST", "/_cluster_setup")
        .json(&json!({"action": "receive_cookie", "cookie": cookie}));
    creq.host = format!("{host}:{port}");
    creq.basic_auth = Some((user, password));
    let resp = client::resolve(&host, port).and_then(|a| client::send(a, &creq));
    match resp {
        Err(e) => {
            log_line(&format!(
                "{}: add_node {host}:{port} unreachable: {e}",
                node.name
            ));
            bad_request("Add node failed. Invalid Host and/or Port.")
        }
        Ok(r) if r.status == 201 => {
            let id = format!("{name}@{host}");
            let before = lock(&node.store).cluster_nodes();
            match node.write_nodes(|db| db.put(&id, None, Ej::empty())) {
                Ok(Ok(_)) => {
                    node.nodes_changed(&before, None, None);
                    Response::ok(201)
                }
                Ok(Err(e)) => answers::write_error(e),
                Err(FileExists) => answers::file_exists_race(),
            }
        }
        // ibrowse answered (401 and the like): setup.erl returns that as "ok" → 201.
        Ok(r) => {
            log_line(&format!(
                "{}: add_node {host}:{port}: receive_cookie answered {}",
                node.name, r.status
            ));
            Response::ok(201)
        }
    }
}

/// `get_default_name/1`: the dev/run ports map to node1..3, anything else is `couchdb`.
pub fn default_name(port: &str) -> &'static str {
    match port {
        "15984" => "node1",
        "25984" => "node2",
        "35984" => "node3",
        _ => "couchdb",
    }
}

/// Sets the Erlang cookie in memory only (lost on restart).
fn receive_cookie(node: &Arc<NodeInner>, body: &Map<String, Value>) -> Response {
    match str_field(body, "cookie") {
        Some(c) => {
            lock(&node.vol).cookie = c.to_string();
            log_line(&format!("{}: cookie replaced by receive_cookie", node.name));
            // Connections refused so far may work now: try them at the next tick.
            lock(&node.vol).next_attempt.clear();
            Response::ok(201)
        }
        None => badarg(node),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(single: bool, n: u64, bind: &str, admin: bool, dbs: bool) -> State {
        compute_state(&Facts {
            single_node: single,
            n,
            bind_address: Some(bind.to_string()),
            has_admin: admin,
            has_dbs: dbs,
        })
    }

    #[test]
    fn state_is_computed_from_config_and_dbs() {
        assert_eq!(
            f(false, 3, "127.0.0.1", true, false),
            State::ClusterDisabled
        );
        // loopback says cluster_disabled forever, even after a finish
        assert_eq!(f(false, 3, "127.0.0.1", true, true), State::ClusterDisabled);
        assert_eq!(f(false, 3, "any", false, false), State::ClusterDisabled);
        assert_eq!(f(false, 3, "any", true, false), State::ClusterEnabled);
        assert_eq!(f(false, 3, "0.0.0.0", true, true), State::ClusterFinished);
        assert_eq!(
            f(false, 1, "127.0.0.1", true, true),
            State::SingleNodeEnabled
        );
        assert_eq!(
            f(false, 1, "127.0.0.1", true, false),
            State::SingleNodeDisabled
        );
        assert_eq!(
            f(true, 3, "127.0.0.1", false, false),
            State::SingleNodeEnabled
        );
    }

    #[test]
    fn default_names_follow_dev_ports() {
        assert_eq!(default_name("35984"), "node3");
        assert_eq!(default_name("5984"), "couchdb");
        assert_eq!(default_name("45984"), "couchdb");
    }
}
