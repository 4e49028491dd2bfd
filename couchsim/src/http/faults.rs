//! Injected misbehaviour (`Node::inject`): what a request meets before CouchDB proper sees it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::net::http::{HttpRequest, Response};
use crate::node::{lock, FaultSlot, NodeInner};
use crate::spec::Fault;

pub fn inject(node: &NodeInner, f: Fault) {
    lock(&node.faults).push(FaultSlot { fault: f, seen: 0 });
}

pub fn clear(node: &NodeInner) {
    lock(&node.faults).clear();
}

fn path_matches(pattern: &str, req: &HttpRequest) -> bool {
    pattern == req.target || pattern == req.path
}

/// The status word CouchDB uses for an error status.
pub fn error_word(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        412 => "precondition_failed",
        415 => "bad_content_type",
        500 => "unknown_error",
        503 => "service_unavailable",
        _ => "error",
    }
}

/// The node a `/_node/<name>/…` path names, percent-decoded.
fn node_in_path(p: &str) -> String {
    let name = p
        .trim_start_matches("/_node/")
        .split('/')
        .next()
        .unwrap_or("");
    crate::util::pct_decode(name)
}

/// The body a real CouchDB 3.4.2 would most plausibly send with `status` on this request.
pub fn injected_error(status: u16, req: &HttpRequest) -> Response {
    let p = req.path.as_str();
    let (error, reason): (&str, String) = match status {
        400 if p.starts_with("/_cluster_setup") => ("bad_request", "Invalid Action'".into()),
        400 => ("bad_request", "Bad request".into()),
        401 => ("unauthorized", crate::node::auth::BAD_CREDENTIALS.into()),
        403 => ("forbidden", crate::node::auth::LOCKED.into()),
        404 if p.starts_with("/_node/") => {
            ("not_found", format!("no such node: {}", node_in_path(p)))
        }
        404 if p.starts_with("/_up") => {
            return Response::json(404, &json!({"status": "maintenance_mode"}));
        }
        404 => ("not_found", "Database does not exist.".into()),
        405 => ("method_not_allowed", "Only GET allowed".into()),
        409 => ("conflict", "Document update conflict.".into()),
        412 if p.starts_with("/_node/") => ("nodedown", format!("{} is down", node_in_path(p))),
        412 => (
            "file_exists",
            "The database could not be created, the file already exists.".into(),
        ),
        415 => (
            "bad_content_type",
            "Content-Type must be application/json".into(),
        ),
        500 if p.starts_with("/_cluster_setup") => (
            "setup_error",
            "Cluster setup timed out waiting for nodes to connect".into(),
        ),
        500 => {
            return Response::json(
                500,
                &json!({"error": "unknown_error", "reason": "badarg", "ref": 1_005_392_927u64}),
            );
        }
        503 => ("service_unavailable", "Service unavailable".into()),
        _ => (
            error_word(status),
            format!("couchsim injected status {status}"),
        ),
    };
    Response::error(status, error, &reason)
}

/// (delay for every response, a response that replaces the real one).
pub fn before(node: &Arc<NodeInner>, req: &HttpRequest) -> (Option<Duration>, Option<Response>) {
    let mut slow = None;
    let mut out = None;
    let mut faults = lock(&node.faults);
    for slot in faults.iter_mut() {
        match &slot.fault {
            Fault::Slow(d) => slow = Some(slow.unwrap_or(Duration::ZERO) + *d),
            Fault::FailNth {
                method,
                path,
                nth,
                status,
            } => {
                if method.eq_ignore_ascii_case(&req.method) && path_matches(path, req) {
                    slot.seen += 1;
                    if slot.seen == *nth && out.is_none() {
                        out = Some(injected_error(*status, req));
                    }
                }
            }
            Fault::MalformedJson { path } => {
                if path_matches(path, req) && out.is_none() {
                    out = Some(Response::new(
                        200,
                        b"{\"all_nodes\":[\"node1@127.0.0.1\",<html>oops</html>\n".to_vec(),
                    ));
                }
            }
            Fault::HugeBody { path, bytes } => {
                if path_matches(path, req) && out.is_none() {
                    let mut body = Vec::with_capacity(*bytes + 16);
                    body.extend_from_slice(b"{\"padding\":\"");
                    let fill = bytes.saturating_sub(15);
                    body.resize(body.len() + fill, b'x');
                    body.extend_from_slice(b"\"}\n");
                    out = Some(Response::new(200, body));
                }
            }
            Fault::Maintenance(_) => {}
        }
    }
    (slow, out)
}

/// The maintenance mode `/_up` reports, from an injected fault or `[couchdb] maintenance_mode`.
pub fn maintenance(node: &NodeInner) -> Option<String> {
    for slot in lock(&node.faults).iter() {
        if let Fault::Maintenance(m) = &slot.fault {
            return Some(m.clone());
        }
    }
    match node.config("couchdb", "maintenance_mode").as_deref() {
        Some("true") => Some("maintenance_mode".to_string()),
        Some("nolb") => Some("nolb".to_string()),
        _ => None,
    }
}
