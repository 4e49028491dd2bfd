//! Answers several route families give, with CouchDB's exact bodies.

use serde_json::json;

use crate::net::http::{HttpRequest, Response};
use crate::node::docs::{Page, WriteError};
use crate::node::{lock, NodeInner};

/// Who is asking.
#[derive(Debug, Clone, PartialEq)]
pub enum Who {
    Anonymous,
    Admin(String),
    /// A user of `_users` (name, roles), checked against each db's `_security`.
    User(String, Vec<String>),
}

impl Who {
    pub fn is_admin(&self) -> bool {
        matches!(self, Who::Admin(_))
    }
}

pub fn method_not_allowed(allowed: &str) -> Response {
    Response::error(
        405,
        "method_not_allowed",
        &format!("Only {allowed} allowed"),
    )
    .with_header("Allow", allowed)
}

/// CouchDB closes the connection when it answers an error before reading the body.
pub fn unread_body(mut resp: Response, req: &HttpRequest) -> Response {
    if !req.body.is_empty() {
        resp.close = true;
    }
    resp
}

/// An Erlang crash as chttpd reports it: 500 with a random `ref` (also the stack hash header).
pub fn unknown_error(node: &NodeInner, reason: &str) -> Response {
    let r = 1_000_000_000 + (lock(&node.rng).below(1_147_483_647));
    Response::json(
        500,
        &json!({"error": "unknown_error", "reason": reason, "ref": r}),
    )
    .with_header("X-Couch-Stack-Hash", r.to_string())
}

pub fn db_not_found() -> Response {
    Response::error(404, "not_found", "Database does not exist.")
}

pub fn illegal_db_name(db: &str) -> Response {
    Response::error(
        400,
        "illegal_database_name",
        &format!(
            "Name: '{db}'. Only lowercase characters (a-z), digits (0-9), and any of the \
             characters _, $, (, ), +, -, and / are allowed. Must begin with a letter."
        ),
    )
}

/// Trap 22: the losing one of two first writes to a fresh `_nodes` (not written).
pub fn file_exists_race() -> Response {
    Response::json(500, &json!({"error": "badmatch", "reason": "file_exists"}))
}

pub fn write_error(e: WriteError) -> Response {
    match e {
        WriteError::Conflict => Response::error(409, "conflict", "Document update conflict."),
        WriteError::NotFound(why) => Response::error(404, "not_found", why),
    }
}

pub fn bad_request(reason: &str) -> Response {
    Response::error(400, "bad_request", reason)
}

/// `{"ok":true,"id":…,"rev":…}` with its ETag (and Location for a 201/202).
pub fn doc_written(status: u16, id: &str, rev: &str, location: Option<String>) -> Response {
    let text = crate::util::obj(&[
        ("ok", "true".into()),
        ("id", crate::util::js(id)),
        ("rev", crate::util::js(rev)),
    ]);
    let mut resp = Response::raw(status, text).with_header("ETag", format!("\"{rev}\""));
    if let Some(l) = location {
        resp = resp.with_header("Location", l);
    }
    resp
}

/// The `_all_docs` parameters of a request: `include_docs`, `conflicts`, `startkey` /
/// `start_key` and `endkey` / `end_key` (JSON strings; a bare word is taken as it is), `skip`,
/// `limit`.
pub fn page(req: &HttpRequest) -> Page {
    let flag = |k: &str| req.query_param(k).as_deref() == Some("true");
    let key = |a: &str, b: &str| {
        req.query_param(a)
            .or_else(|| req.query_param(b))
            .map(|v| serde_json::from_str::<String>(&v).unwrap_or(v))
    };
    let num = |k: &str| req.query_param(k).and_then(|v| v.parse().ok());
    Page {
        include_docs: flag("include_docs"),
        conflicts: flag("conflicts"),
        start: key("startkey", "start_key"),
        end: key("endkey", "end_key"),
        skip: num("skip").unwrap_or(0),
        limit: num("limit"),
    }
}
