//! The HTTP API of clustered databases: `/<db>`, its documents, `_bulk_docs`, `_all_docs`,
//! `_shards`, `_shards/<docid>` and `_sync_shards`. Databases are admin-only, as CouchDB
//! 3.x makes them by default.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use super::answers::{self, Who};
use super::repl_http;
use crate::cluster::copies::Edit;
use crate::cluster::fabric::{self, DocReply, Failure};
use crate::net::http::{HttpRequest, Response};
use crate::node::docs::Leaf;
use crate::node::ejson::Ej;
use crate::node::shards;
use crate::node::{lock, NodeInner};
use crate::replication::repdoc;
use crate::util;

const NOT_AUTHORIZED: &str = "You are not authorized to access this db.";

fn failure(f: Failure, reading: bool) -> Response {
    match f {
        Failure::NotFound(why) => Response::error(404, "not_found", why),
        // recorded (trap 12): a read of a range with no copy times out, a write crashes
        Failure::NoCopy if reading => Response::error(500, "error", "timeout"),
        Failure::NoCopy => Response::error(500, "error", "internal_server_error"),
        // not recorded: what fabric says when no copy of a range answers
        Failure::Unreachable => Response::error(500, "nodedown", "progress not possible"),
    }
}

/// `/<db>[/…]` (the name is valid or a system db).
pub fn handle(
    node: &Arc<NodeInner>,
    req: &HttpRequest,
    who: &Who,
    db: &str,
    rest: &[&str],
) -> Response {
    let m = req.method.as_str();
    if rest.is_empty() && m == "PUT" {
        return create(node, req, who, db);
    }
    if !lock(&node.store).db_exists(db) {
        return answers::unread_body(answers::db_not_found(), req);
    }
    match who {
        Who::Admin(_) => {}
        Who::Anonymous => {
            return answers::unread_body(Response::error(401, "unauthorized", NOT_AUTHORIZED), req)
        }
        Who::User(name, roles) => {
            if let Err(r) = user_may(node, db, name, roles, rest) {
                return answers::unread_body(r, req);
            }
        }
    }
    if let Some(r) = repl_http::handle(node, req, db, rest) {
        return r;
    }
    match rest {
        [] => match m {
            "GET" | "HEAD" => match fabric::db_info(node, db) {
                Some(info) => Response::raw(200, info),
                None => answers::db_not_found(),
            },
            "DELETE" => {
                if fabric::delete_db(node, db) {
                    Response::ok(200)
                } else {
                    answers::db_not_found()
                }
            }
            "POST" => post_doc(node, req, who, db),
            _ => answers::unread_body(answers::method_not_allowed("DELETE,GET,HEAD,POST,PUT"), req),
        },
        ["_all_docs"] => match m {
            "GET" | "HEAD" => all_docs(node, req, db),
            _ => answers::unread_body(answers::method_not_allowed("GET,HEAD,POST"), req),
        },
        ["_shards"] => match m {
            "GET" => {
                let shards = lock(&node.store).shards(db).unwrap_or_default();
                Response::json(200, &json!({ "shards": shards }))
            }
            _ => answers::unread_body(answers::method_not_allowed("GET"), req),
        },
        ["_shards", id @ ..] if !id.is_empty() => match m {
            "GET" => match fabric::locate(node, db, &id.join("/")) {
                Ok((range, nodes)) => Response::json(200, &json!({"range": range, "nodes": nodes})),
                // mem3:shards/2 found no range: `{badmatch,{[]}}`
                Err(_) => {
                    let r = 1_000_000_000 + lock(&node.rng).below(1_147_483_647);
                    Response::json(
                        500,
                        &json!({"error": "badmatch", "reason": "{[]}", "ref": r}),
                    )
                }
            },
            _ => answers::unread_body(answers::method_not_allowed("GET"), req),
        },
        ["_sync_shards"] => match m {
            "POST" => {
                fabric::sync_shards(node, db);
                Response::raw(202, r#"{"ok":true}"#)
            }
            _ => answers::unread_body(answers::method_not_allowed("POST"), req),
        },
        ["_bulk_docs"] => match m {
            "POST" => bulk_docs(node, req, who, db),
            _ => answers::unread_body(answers::method_not_allowed("POST"), req),
        },
        ["_security"] => match m {
            "GET" => match fabric::get_security(node, db) {
                Ok(text) => Response::raw(200, text),
                Err(f) => failure(f, true),
            },
            // chttpd_db:validate_security_can_be_edited (3.4.2's source; not recorded).
            "PUT"
                if db
                    == node
                        .config("chttpd_auth", "authentication_db")
                        .unwrap_or_else(|| "_users".into())
                    && node
                        .config("couchdb", "users_db_security_editable")
                        .as_deref()
                        != Some("true") =>
            {
                answers::unread_body(
                    Response::error(
                        403,
                        "forbidden",
                        "You can't edit the security object of the user database.",
                    ),
                    req,
                )
            }
            "PUT" => match Ej::parse(&req.body) {
                Some(body @ Ej::Obj(_)) => match fabric::set_security(node, db, &body) {
                    Ok(()) => Response::raw(200, r#"{"ok":true}"#),
                    Err(f) => failure(f, false),
                },
                _ => answers::bad_request("Security object must be a JSON object"),
            },
            _ => answers::unread_body(answers::method_not_allowed("GET,PUT"), req),
        },
        ["_design", name, "_view", view] => match m {
            "GET" => view_rows(node, req, db, name, view),
            _ => answers::unread_body(answers::method_not_allowed("GET,POST,HEAD"), req),
        },
        ["_design", name] => doc(node, req, who, db, &format!("_design/{name}")),
        [id] if !id.starts_with('_') => doc(node, req, who, db, id),
        _ => Response::error(404, "not_found", "missing"),
    }
}

/// A `_users` user's access to a db, by its `_security` (names or roles among its admins or
/// members; a db whose members name no one and no role is public). Only db admins may read or
/// set `_security` itself, or touch design docs.
fn user_may(
    node: &NodeInner,
    db: &str,
    name: &str,
    roles: &[String],
    rest: &[&str],
) -> Result<(), Response> {
    let forbidden = || Response::error(403, "forbidden", "You are not allowed to access this db.");
    let text = fabric::get_security(node, db).map_err(|f| failure(f, true))?;
    let sec: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let listed = |who: &str| {
        let names = sec[who]["names"].as_array().cloned().unwrap_or_default();
        let rs = sec[who]["roles"].as_array().cloned().unwrap_or_default();
        let named = names.iter().any(|n| n.as_str() == Some(name));
        let in_role = rs
            .iter()
            .any(|r| roles.iter().any(|x| r.as_str() == Some(x)));
        (named || in_role, names.is_empty() && rs.is_empty())
    };
    let (admin, _) = listed("admins");
    let (member, public) = listed("members");
    let needs_admin = matches!(rest.first(), Some(&"_security"));
    if admin || (!needs_admin && (member || public)) {
        Ok(())
    } else {
        Err(forbidden())
    }
}

/// `GET /<db>/_design/<ddoc>/_view/<view>`. Views are not computed: every map function is
/// taken to emit one row per document (key its id, value null), which is what the recorded
/// `function(d){ emit(d._id, null); }` does; a ddoc or view that does not exist is a 404.
fn view_rows(
    node: &Arc<NodeInner>,
    req: &HttpRequest,
    db: &str,
    ddoc: &str,
    view: &str,
) -> Response {
    let Ok(d) = fabric::open_doc(node, db, &format!("_design/{ddoc}")) else {
        return Response::error(404, "not_found", "missing");
    };
    if d.winner()
        .body
        .get("views")
        .and_then(|v| v.get(view))
        .is_none()
    {
        return Response::error(404, "not_found", "missing_named_view");
    }
    let page = crate::node::docs::Page {
        limit: None,
        skip: 0,
        ..answers::page(req)
    };
    let all = match fabric::all_docs(node, db, &page) {
        Ok(body) => body,
        Err(f) => return failure(f, true),
    };
    let all: serde_json::Value = serde_json::from_str(&all).unwrap_or_default();
    let ids: Vec<&str> = all["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str())
        .filter(|id| !id.starts_with("_design/"))
        .collect();
    let skip = req
        .query_param("skip")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit = req
        .query_param("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let rows: Vec<String> = ids
        .iter()
        .skip(skip)
        .take(limit)
        .map(|id| {
            util::obj(&[
                ("id", util::js(id)),
                ("key", util::js(id)),
                ("value", "null".into()),
            ])
        })
        .collect();
    Response::raw(
        200,
        format!(
            "{{\"total_rows\":{},\"offset\":{skip},\"rows\":[\r\n{}\r\n]}}",
            ids.len(),
            rows.join(",\r\n")
        ),
    )
}

/// A user doc written with a `password`: CouchDB's `_users` hook replaces it with a salted
/// hash (`password_scheme`, `pbkdf2_prf`, `salt`, `iterations`, `derived_key` first, as
/// recorded). Not real PBKDF2: see `node::auth::user_key`.
fn hash_user_password(node: &NodeInner, db: &str, edit: &mut Edit) {
    if db != "_users" || edit.deleted || !edit.id.starts_with("org.couchdb.user:") {
        return;
    }
    let Some(fields) = edit.body.fields() else {
        return;
    };
    let Some(password) = edit.body.get("password").and_then(Ej::as_str) else {
        return;
    };
    let salt = node.random_hex(16);
    let key = crate::node::auth::user_key(password, &salt);
    let mut out = vec![
        ("password_scheme".to_string(), Ej::from("pbkdf2")),
        ("pbkdf2_prf".to_string(), Ej::from("sha256")),
        ("salt".to_string(), Ej::from(salt.as_str())),
        ("iterations".to_string(), Ej::Num(600000.into())),
        ("derived_key".to_string(), Ej::from(key.as_str())),
    ];
    out.extend(fields.iter().filter(|(k, _)| k != "password").cloned());
    edit.body = Ej::Obj(out);
}

fn create(node: &Arc<NodeInner>, req: &HttpRequest, who: &Who, db: &str) -> Response {
    if !who.is_admin() {
        return answers::unread_body(crate::node::auth::not_admin(), req);
    }
    if !shards::valid_db_name(db) {
        return answers::illegal_db_name(db);
    }
    let n = req.query_param("n").and_then(|v| v.parse().ok());
    let q = req.query_param("q").and_then(|v| v.parse().ok());
    let placement = req.query_param("placement");
    match fabric::create_db_placed(node, db, q, n, placement.as_deref(), fabric::Origin::Http) {
        Ok(true) => {
            let host = req.header("host").unwrap_or("127.0.0.1").to_string();
            Response::ok(201).with_header("Location", format!("http://{host}/{db}"))
        }
        Ok(false) => Response::error(
            412,
            "file_exists",
            "The database could not be created, the file already exists.",
        ),
        // Transcript 16: mem3's error surfaces as a 500 with a `ref`, and nothing is created.
        Err(unplaced) => answers::unknown_error(node, unplaced.reason()),
    }
}

fn all_docs(node: &Arc<NodeInner>, req: &HttpRequest, db: &str) -> Response {
    match fabric::all_docs(node, db, &answers::page(req)) {
        Ok(body) => Response::raw(200, body),
        Err(f) => failure(f, true),
    }
}

/// The body of a doc, CouchDB's special members taken out: (`_id`, `_rev`, `_deleted`,
/// the rest). `Err` is the 400 to answer.
type Parsed = (Option<String>, Option<String>, bool, Ej);

fn parse_doc(v: &Ej) -> Result<Parsed, Response> {
    let Some(fields) = v.fields() else {
        return Err(answers::bad_request("Document must be a JSON object"));
    };
    let (mut id, mut rev, mut deleted, mut body) = (None, None, false, Vec::new());
    let mut attachments = None;
    for (k, val) in fields {
        match k.as_str() {
            "_id" => id = val.as_str().map(str::to_string),
            "_rev" => rev = val.as_str().map(str::to_string),
            "_deleted" => deleted = *val == Ej::Bool(true),
            // kept with the body, last (where CouchDB shows them)
            "_attachments" => attachments = Some(val.clone()),
            "_revisions" | "_conflicts" | "_deleted_conflicts" | "_local_seq" | "_revs_info" => {}
            // kept in the body for replication docs (couch_doc's transfer_fields)
            "_replication_state"
            | "_replication_state_time"
            | "_replication_state_reason"
            | "_replication_id"
            | "_replication_stats" => body.push((k.clone(), val.clone())),
            k if k.starts_with('_') => {
                return Err(Response::error(
                    400,
                    "doc_validation",
                    &format!("Bad special document member: {k}"),
                ))
            }
            _ => body.push((k.clone(), val.clone())),
        }
    }
    if let Some(a) = attachments {
        body.push(("_attachments".to_string(), a));
    }
    Ok((id, rev, deleted, Ej::Obj(body)))
}

/// Inline attachments of an interactive write, as CouchDB stores them: `content_type`,
/// `revpos` (the new revision's generation), `digest` (`md5-<base64>`), `length`, and the data
/// (kept inline here); a `stub` takes the attachment of the current revision. Not modelled:
/// attachments in the revision hash (CouchDB hashes their digests separately), multipart,
/// `GET /<db>/<doc>/<attachment>`.
fn store_attachments(node: &NodeInner, db: &str, edit: &mut Edit) {
    let Some(Ej::Obj(atts)) = edit.body.get("_attachments").cloned() else {
        return;
    };
    let revpos = edit
        .rev
        .as_deref()
        .and_then(|r| r.split('-').next()?.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let current = atts
        .iter()
        .any(|(_, a)| a.get("stub") == Some(&Ej::Bool(true)))
        .then(|| fabric::open_doc(node, db, &edit.id).ok())
        .flatten()
        .and_then(|d| d.winner().body.get("_attachments").cloned());
    let mut out = Vec::new();
    for (name, a) in atts {
        if let Some(data) = a.get("data").and_then(Ej::as_str) {
            let bytes = util::base64_decode(data).unwrap_or_default();
            let digest = util::base64_encode(&util::md5(&bytes));
            let content_type = a
                .get("content_type")
                .cloned()
                .unwrap_or_else(|| Ej::from("application/octet-stream"));
            out.push((
                name,
                Ej::Obj(vec![
                    ("content_type".into(), content_type),
                    ("revpos".into(), Ej::Num(revpos.into())),
                    ("digest".into(), Ej::from(format!("md5-{digest}").as_str())),
                    ("length".into(), Ej::Num((bytes.len() as u64).into())),
                    ("data".into(), Ej::from(data)),
                ]),
            ));
        } else if let Some(old) = current.as_ref().and_then(|c| c.get(&name)) {
            out.push((name, old.clone()));
        }
    }
    edit.body.set("_attachments", Ej::Obj(out));
}

/// A doc as `GET` shows it: attachments as stubs unless `?attachments=true`.
fn shown_attachments(doc: &mut Ej, with_data: bool) {
    let Some(Ej::Obj(atts)) = doc.get("_attachments").cloned() else {
        return;
    };
    let stubs = atts
        .into_iter()
        .map(|(name, a)| {
            let fields = a.fields().unwrap_or_default().to_vec();
            let mut f: Vec<(String, Ej)> = fields
                .into_iter()
                .filter(|(k, _)| with_data || k != "data")
                .collect();
            if !with_data {
                f.push(("stub".into(), Ej::Bool(true)));
            }
            (name, Ej::Obj(f))
        })
        .collect();
    doc.set("_attachments", Ej::Obj(stubs));
}

fn reply_one(r: &DocReply, location: String) -> Response {
    match (&r.rev, &r.error) {
        (Some(rev), _) => answers::doc_written(
            if r.accepted { 202 } else { 201 },
            &r.id,
            rev,
            Some(location),
        ),
        (None, Some((e, reason))) if e == "conflict" => Response::error(409, e, reason),
        (None, Some((e, reason))) => Response::error(500, e, reason),
        (None, None) => Response::error(500, "error", "internal_server_error"),
    }
}

/// `_replicator` docs written by an admin: CouchDB's validation (403) and `owner`, which its
/// `before_doc_update` adds to a deletion too (transcript 17: the tombstone is
/// `{"_id","_rev","owner":"admin","_deleted":true}`).
fn replicator_doc(db: &str, who: &Who, edit: &mut Edit) -> Result<(), Response> {
    if db != "_replicator" || edit.id.starts_with("_design/") {
        return Ok(());
    }
    let body = edit.body.to_value();
    if let (Some(fields), false) = (body.as_object(), edit.deleted) {
        repdoc::validate(fields).map_err(|r| Response::error(403, "forbidden", &r))?;
    }
    if let Who::Admin(user) = who {
        repdoc::add_owner(&mut edit.body, user);
    }
    Ok(())
}

fn write_one(node: &NodeInner, req: &HttpRequest, who: &Who, db: &str, mut edit: Edit) -> Response {
    if let Err(r) = replicator_doc(db, who, &mut edit) {
        return r;
    }
    hash_user_password(node, db, &mut edit);
    store_attachments(node, db, &mut edit);
    let host = req.header("host").unwrap_or("127.0.0.1").to_string();
    let location = format!("http://{host}/{db}/{}", util::pct_encode(&edit.id));
    match fabric::update_docs(node, db, vec![edit]) {
        Ok(replies) => match replies.first() {
            Some(r) => reply_one(r, location),
            None => Response::error(500, "error", "internal_server_error"),
        },
        Err(f) => failure(f, false),
    }
}

fn post_doc(node: &NodeInner, req: &HttpRequest, who: &Who, db: &str) -> Response {
    let Some(v) = Ej::parse(&req.body) else {
        return answers::bad_request("invalid UTF-8 JSON");
    };
    let (id, rev, deleted, body) = match parse_doc(&v) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let id = id.unwrap_or_else(|| node.random_hex(16));
    write_one(
        node,
        req,
        who,
        db,
        Edit {
            id,
            rev,
            body,
            deleted,
        },
    )
}

fn doc(node: &NodeInner, req: &HttpRequest, who: &Who, db: &str, id: &str) -> Response {
    match req.method.as_str() {
        "GET" if req.query_param("open_revs").as_deref() == Some("all") => open_revs(node, db, id),
        "GET" | "HEAD" => match fabric::open_doc(node, db, id) {
            Ok(d) => {
                let conflicts = req.query_param("conflicts").as_deref() == Some("true");
                let mut shown = d.to_json(id, conflicts);
                let data = req.query_param("attachments").as_deref() == Some("true");
                shown_attachments(&mut shown, data);
                Response::raw(200, shown.text()).with_header("ETag", format!("\"{}\"", d.rev()))
            }
            Err(f) => failure(f, true),
        },
        "PUT" => {
            let Some(v) = Ej::parse(&req.body) else {
                return answers::bad_request("invalid UTF-8 JSON");
            };
            let (_, rev, deleted, body) = match parse_doc(&v) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let rev = rev.or_else(|| req.query_param("rev"));
            let edit = Edit {
                id: id.to_string(),
                rev,
                body,
                deleted,
            };
            write_one(node, req, who, db, edit)
        }
        "DELETE" => {
            let edit = Edit {
                id: id.to_string(),
                rev: req.query_param("rev"),
                body: Ej::empty(),
                deleted: true,
            };
            match fabric::open_doc(node, db, id) {
                Err(Failure::NotFound(why)) => Response::error(404, "not_found", why),
                _ => {
                    let mut r = write_one(node, req, who, db, edit);
                    if r.status == 201 {
                        r.status = 200;
                    }
                    r
                }
            }
        }
        _ => answers::unread_body(answers::method_not_allowed("DELETE,GET,HEAD,POST,PUT"), req),
    }
}

/// `GET /<db>/<id>?open_revs=all` as JSON (CouchDB sends `multipart/mixed` unless the client
/// accepts only JSON; only JSON is modelled): `[{"ok":{"_id","_rev",…body,["_deleted"]}}]`
/// per leaf, as `couch_doc:to_json_obj` orders it; 404 `missing` when no copy has the doc.
fn open_revs(node: &NodeInner, db: &str, id: &str) -> Response {
    let leaves = match fabric::open_revs(node, db, id) {
        Ok(l) if l.is_empty() => return Response::error(404, "not_found", "missing"),
        Ok(l) => l,
        Err(f) => return failure(f, true),
    };
    let items: Vec<String> = leaves
        .iter()
        .map(|l| {
            let mut f = vec![
                ("_id".to_string(), Ej::from(id)),
                ("_rev".to_string(), Ej::from(l.rev())),
            ];
            if let Some(body) = l.body.fields() {
                f.extend(body.iter().cloned());
            }
            if l.deleted {
                f.push(("_deleted".to_string(), Ej::Bool(true)));
            }
            let mut shown = Ej::Obj(f);
            shown_attachments(&mut shown, false);
            util::obj(&[("ok", shown.text())])
        })
        .collect();
    Response::raw(200, format!("[{}]", items.join(",")))
}

/// `{"_revisions":{"start":N,"ids":[…]}}` or just `_rev`: a replicated leaf's path.
fn replicated_leaf(v: &Ej, rev: &str, deleted: bool, body: Ej) -> Leaf {
    let revs = match v.get("_revisions") {
        Some(r) => {
            let start = match r.get("start") {
                Some(Ej::Num(n)) => n.as_u64().unwrap_or(0),
                _ => 0,
            };
            r.get("ids")
                .map(Ej::strings)
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, h)| format!("{}-{h}", start.saturating_sub(i as u64)))
                .collect()
        }
        None => vec![rev.to_string()],
    };
    Leaf {
        revs,
        deleted,
        body: if deleted { Ej::empty() } else { body },
    }
}

fn bulk_docs(node: &NodeInner, req: &HttpRequest, who: &Who, db: &str) -> Response {
    let Some(v) = Ej::parse(&req.body) else {
        return answers::bad_request("invalid UTF-8 JSON");
    };
    let Some(docs) = v.get("docs").and_then(Ej::as_array) else {
        return answers::bad_request("POST body must include `docs` parameter.");
    };
    let new_edits = v.get("new_edits") != Some(&Ej::Bool(false));
    let mut parsed = Vec::new();
    for d in docs {
        match parse_doc(d) {
            Ok(p) => parsed.push((d, p)),
            Err(r) => return r,
        }
    }
    if !new_edits {
        let mut leaves: BTreeMap<String, Vec<Leaf>> = BTreeMap::new();
        for (d, (id, rev, deleted, body)) in parsed {
            if let (Some(id), Some(rev)) = (id, rev) {
                leaves
                    .entry(id)
                    .or_default()
                    .push(replicated_leaf(d, &rev, deleted, body));
            }
        }
        return match fabric::merge_docs(node, db, leaves) {
            Ok(_) => Response::raw(201, "[]"),
            Err(f) => failure(f, false),
        };
    }
    let mut edits: Vec<Edit> = parsed
        .into_iter()
        .map(|(_, (id, rev, deleted, body))| Edit {
            id: id.unwrap_or_else(|| node.random_hex(16)),
            rev,
            body,
            deleted,
        })
        .collect();
    for e in &mut edits {
        if let Err(r) = replicator_doc(db, who, e) {
            return r;
        }
        hash_user_password(node, db, e);
        store_attachments(node, db, e);
    }
    match fabric::update_docs(node, db, edits) {
        Ok(replies) => {
            let short = replies.iter().any(|r| r.accepted);
            let items: Vec<String> = replies
                .iter()
                .map(|r| match (&r.rev, &r.error) {
                    (Some(rev), _) => util::obj(&[
                        ("ok", "true".into()),
                        ("id", util::js(&r.id)),
                        ("rev", util::js(rev)),
                    ]),
                    (None, Some((e, reason))) => util::obj(&[
                        ("id", util::js(&r.id)),
                        ("error", util::js(e)),
                        ("reason", util::js(reason)),
                    ]),
                    (None, None) => util::obj(&[("id", util::js(&r.id))]),
                })
                .collect();
            let status = if short { 202 } else { 201 };
            Response::raw(status, format!("[{}]", items.join(",")))
        }
        Err(f) => failure(f, false),
    }
}
