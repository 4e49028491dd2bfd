//! `/_utils`: Fauxton, the web UI the couchdb:3.4.2 image serves from its `share/www`. The
//! simulator has no Fauxton to serve; it answers what a client or a proxy in front can see of
//! it: `GET /_utils/` (and `/_utils/index.html`) is a 200 HTML page, anything else below
//! `/_utils/` a 404, and `GET /_utils` without the slash a 301 to `/_utils/`.
//!
//! Not in the transcripts; from CouchDB 3.4.2's source. `chttpd_misc:handle_utils_dir_req`
//! serves files for `/_utils/…` (`Cache-Control: private, must-revalidate` and a CSP header)
//! and answers `/_utils` with `chttpd:send_redirect`: a 301 whose `Location` is an absolute URL
//! built by `chttpd:absolute_uri` — host from `X-Forwarded-Host`, else `Host`; scheme `https`
//! when `X-Forwarded-Ssl: on` or `X-Forwarded-Proto: https`, else the connection's (`http`
//! here). Behind a TLS-terminating proxy (Traefik sets both headers) the redirect stays on
//! https. Methods other than GET and HEAD: 405.

use super::answers::{method_not_allowed, unread_body};
use crate::net::http::{HttpRequest, Response};

/// The CSP header CouchDB 3.4.2 sends with Fauxton's files (`[csp] utils_enable` is on by default).
const CSP: &str = "child-src 'self' data: blob:; default-src 'self'; img-src 'self' data:; \
font-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:;";

/// A stand-in for Fauxton's `index.html`: the same title, no application.
const INDEX: &str = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<title>Project Fauxton</title>\n</head>\n<body>\n<div id=\"app\">couchsim: Fauxton is not \
bundled with the simulator</div>\n</body>\n</html>\n";

/// `rest`: the decoded path segments after `_utils`.
pub fn handle(req: &HttpRequest, rest: &[&str]) -> Response {
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        return unread_body(method_not_allowed("GET,HEAD"), req);
    }
    if req.path == "/_utils" {
        return Response::new(301, Vec::new())
            .with_header("Location", absolute_uri(req, "/_utils/"));
    }
    match rest {
        [] | ["index.html"] => Response::new(200, INDEX.as_bytes().to_vec())
            .with_header("Content-Type", "text/html")
            .with_header("Cache-Control", "private, must-revalidate")
            .with_header("Content-Security-Policy", CSP),
        _ => Response::error(404, "not_found", "missing"),
    }
}

/// `chttpd:absolute_uri/2`: the URL a client outside any proxy should follow.
fn absolute_uri(req: &HttpRequest, path: &str) -> String {
    let host = req
        .header("x-forwarded-host")
        .or_else(|| req.header("host"))
        .unwrap_or("localhost:5984");
    let https = req.header("x-forwarded-ssl") == Some("on")
        || req.header("x-forwarded-proto") == Some("https");
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}{path}")
}
