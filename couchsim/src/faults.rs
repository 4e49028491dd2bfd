//! Injected misbehaviour (`Node::inject`): what a request meets before CouchDB proper sees it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::http::{HttpRequest, Response};
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
                        let reason = format!("couchsim injected failure ({status})");
                        let mut body = json!({"error": error_word(*status), "reason": reason});
                        if *status >= 500 {
                            body["ref"] = json!(1_005_392_927u64);
                        }
                        out = Some(Response::json(*status, &body));
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
