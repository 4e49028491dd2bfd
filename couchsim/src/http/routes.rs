//! The public HTTP API of one node. Every request passes here; `/_cluster_setup` is answered
//! in `http/setup.rs`, `/_scheduler/*` in `http/scheduler.rs` and databases in
//! `http/clustered.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::answers::{
    self, db_not_found, doc_written, file_exists_race, illegal_db_name, method_not_allowed,
    unread_body, write_error, Who,
};
use super::clustered;
use super::faults;
use super::fauxton;
use super::setup;
use crate::cluster::copies;
use crate::cluster::dist;
use crate::cluster::fabric;
use crate::http::scheduler;
use crate::net::http::{HttpRequest, Response};
use crate::node::auth::{self, Check};
use crate::node::ejson::Ej;
use crate::node::shards;
use crate::node::{lock, release, DbsEdit, FileExists, NodeInner};
use crate::util;

/// Checks a user and password against `admins` under this node's lockout policy, counting
/// failures per user and the request's peer address. The first successful check of a hash
/// since start pays `first_auth` (PBKDF2) before answering, for basic auth and
/// `POST /_session` alike.
fn check_credentials(
    node: &NodeInner,
    req: &HttpRequest,
    admins: &BTreeMap<String, String>,
    user: &str,
    password: &str,
) -> Check {
    let check = lock(&node.vol).auth.check(
        admins,
        user,
        password,
        req.peer.ip(),
        Instant::now(),
        auth::Lockout {
            duration: node.delays.lockout,
            threshold: node.delays.lockout_threshold,
        },
    );
    if check == (Check::Admin { costly: true }) {
        node.pay_password_hash();
    }
    check
}

/// Checks basic credentials or an `AuthSession` cookie. `Err` is the 401/403 to send.
pub fn authenticate(node: &Arc<NodeInner>, req: &HttpRequest) -> Result<Who, Response> {
    match auth::basic_credentials(req) {
        Some(Ok((user, password))) => {
            let admins = node.admins();
            if !admins.contains_key(&user) {
                if let Some(who) = user_login(node, &user, &password) {
                    return Ok(who);
                }
            }
            let check = check_credentials(node, req, &admins, &user, &password);
            match check {
                Check::Admin { .. } => Ok(Who::Admin(user)),
                Check::Rejected(403, _) => Err(unread_body(auth::locked(), req)),
                Check::Rejected(_, _) => Err(unread_body(auth::bad_credentials(), req)),
            }
        }
        Some(Err(())) => Err(unread_body(auth::bad_credentials(), req)),
        None => {
            if let Some(cookie) = auth::auth_session(req) {
                let secret = node.config("chttpd_auth", "secret").unwrap_or_default();
                let timeout = node
                    .config("chttpd_auth", "timeout")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(600);
                if let Some(user) = auth::verify_session_cookie(
                    &cookie,
                    &node.admins(),
                    &secret,
                    util::unix_now().as_secs(),
                    timeout,
                ) {
                    return Ok(Who::Admin(user));
                }
            }
            Ok(Who::Anonymous)
        }
    }
}

/// A `_users` user: `org.couchdb.user:<name>` with a `derived_key` that matches the password.
fn user_login(node: &NodeInner, user: &str, password: &str) -> Option<Who> {
    if !lock(&node.store).db_exists("_users") {
        return None;
    }
    let doc = fabric::open_doc(node, "_users", &format!("org.couchdb.user:{user}")).ok()?;
    let body = doc.winner().body.to_value();
    let salt = body["salt"].as_str()?;
    if body["derived_key"].as_str()? != auth::user_key(password, salt) {
        return None;
    }
    let roles = body["roles"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Some(Who::User(user.to_string(), roles))
}

pub fn handle(node: &Arc<NodeInner>, req: &HttpRequest, epoch: u64) -> Response {
    let who = match authenticate(node, req) {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    route(node, req, &who, epoch)
}

fn require_admin(who: &Who, req: &HttpRequest) -> Result<(), Response> {
    if who.is_admin() {
        Ok(())
    } else {
        Err(unread_body(auth::not_admin(), req))
    }
}

macro_rules! admin {
    ($who:expr, $req:expr) => {
        if let Err(r) = require_admin($who, $req) {
            return r;
        }
    };
}

pub fn route(node: &Arc<NodeInner>, req: &HttpRequest, who: &Who, epoch: u64) -> Response {
    let seg = req.segments();
    let s: Vec<&str> = seg.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    match s.as_slice() {
        [] => match m {
            "GET" | "HEAD" => welcome(node),
            _ => unread_body(method_not_allowed("GET,HEAD"), req),
        },
        ["_up"] => match m {
            "GET" | "HEAD" => up(node),
            _ => unread_body(method_not_allowed("GET,HEAD"), req),
        },
        ["_session"] => session(node, req, who),
        ["_utils", rest @ ..] => fauxton::handle(req, rest),
        ["_uuids"] => match m {
            "GET" => uuids(node, req),
            _ => unread_body(method_not_allowed("GET"), req),
        },
        ["_membership"] => {
            admin!(who, req);
            match m {
                "GET" => {
                    let (all, cluster) = node.membership();
                    Response::json(200, &json!({"all_nodes": all, "cluster_nodes": cluster}))
                }
                _ => unread_body(method_not_allowed("GET"), req),
            }
        }
        ["_cluster_setup"] => {
            if !matches!(m, "GET" | "POST") {
                return unread_body(method_not_allowed("GET,POST"), req);
            }
            admin!(who, req);
            setup::handle(node, req, epoch)
        }
        ["_all_dbs"] => {
            admin!(who, req);
            match m {
                "GET" => Response::json(200, &json!(lock(&node.store).all_dbs())),
                _ => unread_body(method_not_allowed("GET,HEAD"), req),
            }
        }
        ["_replicate"] => {
            admin!(who, req);
            match m {
                "POST" => replicate(node, req, epoch),
                _ => unread_body(method_not_allowed("POST"), req),
            }
        }
        ["_scheduler", rest @ ..] => {
            admin!(who, req);
            scheduler::handle(node, req, rest, epoch)
        }
        ["_node", name, rest @ ..] => {
            admin!(who, req);
            if *name == "_local" || *name == node.name {
                node_local(node, req, rest)
            } else {
                dist::remote_node_request(node, req, name, rest, epoch)
            }
        }
        [db, ..] if db.starts_with('_') && !shards::valid_db_name(db) => illegal_db_name(db),
        [db, rest @ ..] => clustered::handle(node, req, who, db, rest),
    }
}

/// `POST /_replicate`: a one-shot replication, answered when it is done.
fn replicate(node: &Arc<NodeInner>, req: &HttpRequest, epoch: u64) -> Response {
    let body = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(o)) => o,
        _ => return Response::error(400, "bad_request", "invalid UTF-8 JSON"),
    };
    match crate::replication::replicator::replicate_now(node, epoch, &body) {
        Ok(text) => Response::raw(200, text),
        Err((status, error, reason)) => Response::error(status, &error, &reason),
    }
}

fn welcome(node: &NodeInner) -> Response {
    let uuid = node.config("couchdb", "uuid").unwrap_or_default();
    Response::raw(
        200,
        util::obj(&[
            ("couchdb", util::js("Welcome")),
            ("version", util::js(node.version().as_str())),
            ("git_sha", util::js(release::git_sha(node.version()))),
            ("uuid", util::js(&uuid)),
            (
                "features",
                util::js(&[
                    "access-ready",
                    "partitioned",
                    "pluggable-storage-engines",
                    "reshard",
                    "scheduler",
                ]),
            ),
            (
                "vendor",
                r#"{"name":"The Apache Software Foundation"}"#.to_string(),
            ),
        ]),
    )
}

fn up(node: &NodeInner) -> Response {
    match faults::maintenance(node) {
        Some(mode) => Response::json(404, &json!({"status": mode})),
        None => Response::raw(200, release::up_ok(node.version())),
    }
}

fn uuids(node: &NodeInner, req: &HttpRequest) -> Response {
    let count = req
        .query_param("count")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(1);
    if count > 1000 {
        return Response::error(400, "bad_request", "count parameter too large");
    }
    let list: Vec<String> = (0..count).map(|_| node.random_hex(16)).collect();
    Response::json(200, &json!({"uuids": list}))
}

fn session(node: &Arc<NodeInner>, req: &HttpRequest, who: &Who) -> Response {
    match req.method.as_str() {
        "GET" => match who {
            Who::Admin(u) => {
                let how = if auth::basic_credentials(req).is_some() {
                    "default"
                } else {
                    "cookie"
                };
                Response::raw(
                    200,
                    util::obj(&[
                        ("ok", "true".into()),
                        (
                            "userCtx",
                            util::js(&json!({"name": u, "roles": ["_admin"]})),
                        ),
                        (
                            "info",
                            util::js(
                                &json!({"authentication_handlers": ["cookie", "default"], "authenticated": how}),
                            ),
                        ),
                    ]),
                )
            }
            Who::User(u, roles) => Response::raw(
                200,
                util::obj(&[
                    ("ok", "true".into()),
                    ("userCtx", util::js(&json!({"name": u, "roles": roles}))),
                    (
                        "info",
                        util::js(
                            &json!({"authentication_handlers": ["cookie", "default"], "authenticated": "default"}),
                        ),
                    ),
                ]),
            ),
            Who::Anonymous => Response::raw(
                200,
                r#"{"ok":true,"userCtx":{"name":null,"roles":[]},"info":{"authentication_handlers":["cookie","default"]}}"#,
            ),
        },
        "POST" => {
            let (user, password) = match session_form(req) {
                Some(c) => c,
                None => {
                    return Response::error(401, "unauthorized", auth::BAD_CREDENTIALS);
                }
            };
            let admins = node.admins();
            let check = check_credentials(node, req, &admins, &user, &password);
            match check {
                Check::Admin { .. } => {
                    let secret = node.config("chttpd_auth", "secret").unwrap_or_default();
                    let stored = admins.get(&user).cloned().unwrap_or_default();
                    let cookie =
                        auth::session_cookie(&user, &stored, &secret, util::unix_now().as_secs());
                    Response::raw(
                        200,
                        util::obj(&[
                            ("ok", "true".into()),
                            ("name", util::js(&user)),
                            ("roles", r#"["_admin"]"#.into()),
                        ]),
                    )
                    .with_header(
                        "Set-Cookie",
                        format!("AuthSession={cookie}; Version=1; Path=/; HttpOnly"),
                    )
                }
                Check::Rejected(403, _) => auth::locked(),
                Check::Rejected(_, _) => auth::bad_credentials(),
            }
        }
        "DELETE" => {
            Response::ok(200).with_header("Set-Cookie", "AuthSession=; Version=1; Path=/; HttpOnly")
        }
        _ => unread_body(method_not_allowed("GET,HEAD,POST,DELETE"), req),
    }
}

/// `name`/`password` from a JSON or form body.
fn session_form(req: &HttpRequest) -> Option<(String, String)> {
    if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&req.body) {
        let n = o.get("name")?.as_str()?.to_string();
        let p = o.get("password")?.as_str()?.to_string();
        return Some((n, p));
    }
    let text = String::from_utf8_lossy(&req.body).into_owned();
    let kv = util::parse_query(&text);
    let n = kv.iter().find(|(k, _)| k == "name")?.1.clone();
    let p = kv.iter().find(|(k, _)| k == "password")?.1.clone();
    Some((n, p))
}

/// `/_node/_local/…` on this node.
pub fn node_local(node: &Arc<NodeInner>, req: &HttpRequest, rest: &[&str]) -> Response {
    let m = req.method.as_str();
    match rest {
        [] => match m {
            "GET" => Response::json(200, &json!({"name": node.name})),
            _ => unread_body(method_not_allowed("GET"), req),
        },
        [scheduler::LOCAL_VIEW] => scheduler::local_view(node),
        ["_versions"] => match m {
            "GET" => Response::raw(200, release::versions(node.version())),
            _ => unread_body(method_not_allowed("GET"), req),
        },
        ["_config"] => match m {
            "GET" => Response::json(200, &json!(lock(&node.store).config)),
            _ => unread_body(method_not_allowed("GET"), req),
        },
        ["_config", section] => match m {
            "GET" => {
                let st = lock(&node.store);
                let sec = st.config.get(*section).cloned().unwrap_or_default();
                Response::json(200, &json!(sec))
            }
            _ => unread_body(method_not_allowed("GET"), req),
        },
        ["_config", section, key] => config_key(node, req, section, key),
        ["_all_dbs"] => match m {
            "GET" => Response::json(200, &json!(lock(&node.store).local_dbs())),
            _ => unread_body(method_not_allowed("GET"), req),
        },
        [which @ ("_nodes" | "_dbs")] => local_db_info(node, req, which),
        [which @ ("_nodes" | "_dbs"), "_all_docs"] => {
            let st = lock(&node.store);
            let db = if *which == "_nodes" {
                &st.nodes
            } else {
                &st.dbs
            };
            Response::raw(200, db.all_docs(&answers::page(req)))
        }
        [which @ ("_nodes" | "_dbs"), id] => local_doc(node, req, which, id),
        [file] if file.starts_with("shards/") => shard_file(node, req, file),
        [file, "_all_docs"] if file.starts_with("shards/") => copy_all_docs(node, req, file),
        ["_system"] => match m {
            "GET" => Response::raw(200, system(node)),
            _ => unread_body(method_not_allowed("GET"), req),
        },
        ["_stats", ..] => Response::json(200, &json!({})),
        _ => Response::error(404, "not_found", "missing"),
    }
}

/// One shard copy's own db info, or its deletion (documented step 7 of a move).
fn shard_file(node: &NodeInner, req: &HttpRequest, file: &str) -> Response {
    match req.method.as_str() {
        "GET" => match lock(&node.store).files.get(file) {
            Some(db) => Response::raw(200, db.info(file)),
            None => db_not_found(),
        },
        "DELETE" => {
            if copies::delete_file(node, file) {
                Response::ok(200)
            } else {
                db_not_found()
            }
        }
        _ => unread_body(method_not_allowed("DELETE,GET,HEAD,POST,PUT"), req),
    }
}

/// One shard copy's own `_all_docs` (what that file holds, no other copy asked): `GET` with
/// the usual paging, or with `keys` — `POST` with `{"keys":[…]}` as transcript 18 checks a copy
/// after a restart, or `GET …?keys=[…]` (the same, in the query string): a row per key,
/// `{"key","error":"not_found"}` where the file has no such doc, and a deleted doc's row with
/// `"deleted":true` in its value, as CouchDB shows deletions to `keys`.
fn copy_all_docs(node: &NodeInner, req: &HttpRequest, file: &str) -> Response {
    let st = lock(&node.store);
    let Some(db) = st.files.get(file) else {
        return unread_body(db_not_found(), req);
    };
    let keys = match req.method.as_str() {
        "GET" => match req.query_param("keys") {
            None => return Response::raw(200, db.all_docs(&answers::page(req))),
            Some(k) => serde_json::from_str::<Value>(&k).ok(),
        },
        "POST" => serde_json::from_slice::<Value>(&req.body)
            .ok()
            .and_then(|v| v.get("keys").cloned()),
        _ => return unread_body(method_not_allowed("GET,HEAD,POST"), req),
    };
    let Some(Value::Array(keys)) = keys else {
        return Response::error(400, "bad_request", "`keys` member must be an array.");
    };
    let rows: Vec<String> = keys
        .iter()
        .map(|k| {
            let key = k.as_str().unwrap_or_default();
            let Some(d) = db.docs.get(key) else {
                return util::obj(&[("key", util::js(key)), ("error", util::js("not_found"))]);
            };
            let mut value = vec![("rev", util::js(d.rev()))];
            if d.deleted() {
                value.push(("deleted", "true".into()));
            }
            util::obj(&[
                ("id", util::js(key)),
                ("key", util::js(key)),
                ("value", util::obj(&value)),
            ])
        })
        .collect();
    Response::raw(
        200,
        format!(
            "{{\"total_rows\":{},\"offset\":0,\"rows\":[\r\n{}\r\n]}}",
            db.doc_count(),
            rows.join(",\r\n")
        ),
    )
}

/// `GET /_node/<node>/_system`: the shape CouchDB answers (a subset of its keys) with
/// `internal_replication_jobs`: the pushes running on this node now.
fn system(node: &NodeInner) -> String {
    let (jobs, peers, up) = {
        let v = lock(&node.vol);
        let peers: Vec<String> = v.connected.keys().cloned().collect();
        (v.running_pushes, peers, v.started_at.elapsed().as_secs())
    };
    let dist: Vec<(&str, String)> = peers
        .iter()
        .map(|p| {
            (
                p.as_str(),
                r#"{"recv_oct":0,"recv_cnt":0,"recv_max":0,"recv_avg":0,"recv_dvi":0,"send_oct":0,"send_cnt":0,"send_max":0,"send_avg":0,"send_pend":0}"#.to_string(),
            )
        })
        .collect();
    util::obj(&[
        ("uptime", up.to_string()),
        ("memory", r#"{"other":10637009,"atom":631001,"atom_used":600425,"processes":10525432,"processes_used":10513392,"binary":163648,"code":13393214,"ets":1354032}"#.into()),
        ("run_queue", "0".into()),
        ("run_queue_dirty_cpu", "0".into()),
        ("ets_table_count", "136".into()),
        ("context_switches", "49737".into()),
        ("reductions", "8848260".into()),
        ("garbage_collection_count", "4232".into()),
        ("words_reclaimed", "12325498".into()),
        ("io_input", "38356".into()),
        ("io_output", "42521".into()),
        ("os_proc_count", "0".into()),
        ("stale_proc_count", "0".into()),
        ("process_count", "347".into()),
        ("process_limit", "262144".into()),
        ("message_queues", r#"{"couch_server":0,"mem3_sync":0,"rexi_server":0}"#.into()),
        ("internal_replication_jobs", jobs.to_string()),
        ("distribution", util::obj(&dist)),
        ("distribution_events", "{}".into()),
    ])
}

fn config_key(node: &Arc<NodeInner>, req: &HttpRequest, section: &str, key: &str) -> Response {
    match req.method.as_str() {
        "GET" => match node.config(section, key) {
            Some(v) => Response::json(200, &json!(v)),
            None => Response::error(404, "not_found", "unknown_config_value"),
        },
        "PUT" => {
            let v = match serde_json::from_slice::<Value>(&req.body) {
                Ok(Value::String(s)) => s,
                Ok(_) | Err(_) => {
                    return Response::error(400, "bad_request", "invalid UTF-8 JSON");
                }
            };
            let old = node.set_config(section, key, &v).unwrap_or_default();
            if section == "chttpd" && (key == "port" || key == "bind_address") {
                dist::note_listener_change(node);
            }
            Response::json(200, &json!(old))
        }
        "DELETE" => match node.delete_config(section, key) {
            Some(old) => Response::json(200, &json!(old)),
            None => Response::error(404, "not_found", "unknown_config_value"),
        },
        _ => unread_body(method_not_allowed("DELETE,GET,PUT"), req),
    }
}

fn local_db_info(node: &NodeInner, req: &HttpRequest, which: &str) -> Response {
    if req.method != "GET" {
        return unread_body(method_not_allowed("GET"), req);
    }
    let st = lock(&node.store);
    let db = if which == "_nodes" {
        &st.nodes
    } else {
        &st.dbs
    };
    Response::raw(200, db.info(which))
}

/// A `_nodes` or `_dbs` doc: GET (`?conflicts=true`), PUT, DELETE. `_dbs` writes get
/// `mem3_bdu`'s checks (403) and nothing more; `_nodes` writes race on a fresh node (trap 22).
fn local_doc(node: &Arc<NodeInner>, req: &HttpRequest, which: &str, id: &str) -> Response {
    let host = req.header("host").unwrap_or("127.0.0.1").to_string();
    let nodes = which == "_nodes";
    let before = lock(&node.store).cluster_nodes();
    let result = match req.method.as_str() {
        "GET" => {
            let conflicts = req.query_param("conflicts").as_deref() == Some("true");
            let st = lock(&node.store);
            let db = if nodes { &st.nodes } else { &st.dbs };
            return match db.get(id) {
                Ok(d) => Response::raw(200, d.to_json(id, conflicts).text())
                    .with_header("ETag", format!("\"{}\"", d.rev())),
                Err(e) => write_error(e),
            };
        }
        "PUT" => {
            let (rev, fields) = match Ej::parse(&req.body) {
                Some(Ej::Obj(o)) => {
                    let mut rev = req.query_param("rev");
                    let mut fields = Vec::new();
                    for (k, v) in o {
                        if k == "_rev" {
                            rev = v.as_str().map(str::to_string);
                        } else if !k.starts_with('_') {
                            fields.push((k, v));
                        }
                    }
                    (rev, Ej::Obj(fields))
                }
                _ => return Response::error(400, "bad_request", "Document must be a JSON object"),
            };
            if nodes {
                match node.write_nodes(|db| db.put(id, rev.as_deref(), fields)) {
                    Ok(r) => r.map(|r| (201, r)),
                    Err(FileExists) => return file_exists_race(),
                }
            } else {
                match node.edit_dbs(id, rev.as_deref(), fields) {
                    Ok(r) => Ok((201, r)),
                    Err(DbsEdit::Forbidden(reason)) => {
                        return Response::error(403, "forbidden", &reason)
                    }
                    Err(DbsEdit::Refused(e)) => Err(e),
                }
            }
        }
        "DELETE" => {
            let rev = req.query_param("rev");
            if nodes {
                match node.write_nodes(|db| db.delete(id, rev.as_deref())) {
                    Ok(r) => r.map(|r| (200, r)),
                    Err(FileExists) => return file_exists_race(),
                }
            } else {
                lock(&node.store)
                    .dbs
                    .delete(id, rev.as_deref())
                    .map(|r| (200, r))
            }
        }
        _ => return unread_body(method_not_allowed("DELETE,GET,HEAD,POST,PUT"), req),
    };
    match result {
        Ok((status, rev)) => {
            if nodes {
                let removed = (req.method == "DELETE").then_some(id);
                node.nodes_changed(&before, None, removed);
            } else if req.method == "DELETE" {
                node.dbs_changed(&[id.to_string()], true);
            }
            let location =
                (status == 201).then(|| format!("http://{host}/{which}/{}", util::pct_encode(id)));
            doc_written(status, id, &rev, location)
        }
        Err(e) => write_error(e),
    }
}
