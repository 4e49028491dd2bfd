//! HTTP/1.1 on raw sockets: request parsing and response writing for the simulated nodes.
//!
//! Hand-rolled on purpose: CouchDB writes things a framework would not let us write (a second,
//! unsolicited response after `Missing JSON body'`), and a malformed request must produce an
//! error, never a panic.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;

use crate::util;

/// Largest request head we accept (request line + headers).
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body we accept.
const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// The request target as sent: path plus `?query`.
    pub target: String,
    /// The path part (still percent-encoded).
    pub path: String,
    /// The query part, without `?` (empty when absent).
    pub query: String,
    pub http10: bool,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn keep_alive(&self) -> bool {
        match self.header("connection").map(|v| v.to_ascii_lowercase()) {
            Some(v) if v.contains("close") => false,
            Some(v) if v.contains("keep-alive") => true,
            _ => !self.http10,
        }
    }

    /// Decoded path segments (`/_node/_local/_nodes/a%40b` → `["_node","_local","_nodes","a@b"]`).
    pub fn segments(&self) -> Vec<String> {
        self.path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(util::pct_decode)
            .collect()
    }

    pub fn query_param(&self, key: &str) -> Option<String> {
        util::parse_query(&self.query)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn is_json_content_type(&self) -> bool {
        self.header("content-type")
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false)
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection before sending a request (normal end of keep-alive).
    Closed,
    Io,
    /// Not HTTP we understand: answer 400 and close.
    Malformed(String),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Io
    }
}

fn read_line_limited(
    r: &mut BufReader<TcpStream>,
    budget: &mut usize,
) -> Result<String, ReadError> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take((*budget as u64) + 1)
        .read_until(b'\n', &mut buf)?;
    if n > *budget {
        return Err(ReadError::Malformed("request head too large".into()));
    }
    *budget -= n;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    while buf.last() == Some(&b'\n') || buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| ReadError::Malformed("head is not UTF-8".into()))
}

/// Reads one request (head and body) from a keep-alive connection.
pub fn read_request(
    r: &mut BufReader<TcpStream>,
    peer: SocketAddr,
) -> Result<HttpRequest, ReadError> {
    let mut budget = MAX_HEAD;
    // Tolerate empty lines between pipelined requests.
    let mut line = read_line_limited(r, &mut budget)?;
    while line.is_empty() {
        line = read_line_limited(r, &mut budget)?;
    }
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) if parts.next().is_none() => (m, t, v),
        _ => return Err(ReadError::Malformed("bad request line".into())),
    };
    if !method.bytes().all(|b| b.is_ascii_uppercase()) || !version.starts_with("HTTP/1.") {
        return Err(ReadError::Malformed("bad request line".into()));
    }
    let http10 = version == "HTTP/1.0";
    let mut headers = Vec::new();
    loop {
        let h = match read_line_limited(r, &mut budget) {
            Ok(h) => h,
            Err(ReadError::Closed) => return Err(ReadError::Malformed("truncated head".into())),
            Err(e) => return Err(e),
        };
        if h.is_empty() {
            break;
        }
        match h.split_once(':') {
            Some((k, v)) => headers.push((k.trim().to_string(), v.trim().to_string())),
            None => return Err(ReadError::Malformed("bad header line".into())),
        }
    }
    let target = target.to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let mut req = HttpRequest {
        method: method.to_string(),
        target,
        path,
        query,
        http10,
        headers,
        body: Vec::new(),
        peer,
    };
    if req
        .header("expect")
        .map(|v| v.eq_ignore_ascii_case("100-continue"))
        .unwrap_or(false)
    {
        // curl waits for this before sending a large body.
        let w = r.get_mut();
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        w.flush()?;
    }
    let chunked = req
        .header("transfer-encoding")
        .map(|v| v.to_ascii_lowercase().contains("chunked"))
        .unwrap_or(false);
    if chunked {
        req.body = read_chunked(r)?;
    } else if let Some(cl) = req.header("content-length") {
        let n: usize = cl
            .trim()
            .parse()
            .map_err(|_| ReadError::Malformed("bad Content-Length".into()))?;
        if n > MAX_BODY {
            return Err(ReadError::Malformed("body too large".into()));
        }
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(req)
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let mut budget = 1024;
        let line = read_line_limited(r, &mut budget)?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| ReadError::Malformed("bad chunk size".into()))?;
        if body.len().checked_add(size).is_none_or(|n| n > MAX_BODY) {
            return Err(ReadError::Malformed("body too large".into()));
        }
        if size == 0 {
            // trailers until an empty line
            loop {
                let mut budget = MAX_HEAD;
                if read_line_limited(r, &mut budget)?.is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

/// What a handler answers. Bodies are written with Content-Length.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Close the connection after this response (adds `Connection: close`).
    pub close: bool,
    /// Only the basic CouchDB headers (no request id / body time), as CouchDB's own error
    /// path writes them.
    pub bare: bool,
    /// Raw bytes written right after this response on the same connection (unsolicited).
    pub trailing: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
            close: false,
            bare: false,
            trailing: Vec::new(),
        }
    }

    /// A JSON body exactly as CouchDB writes it: compact, then a newline.
    pub fn json(status: u16, v: &Value) -> Response {
        let mut body = serde_json::to_vec(v).unwrap_or_default();
        body.push(b'\n');
        Response::new(status, body)
    }

    /// Pre-rendered JSON text (a newline is appended).
    pub fn raw(status: u16, text: impl Into<String>) -> Response {
        let mut body = text.into().into_bytes();
        body.push(b'\n');
        Response::new(status, body)
    }

    pub fn error(status: u16, error: &str, reason: &str) -> Response {
        Response::json(
            status,
            &serde_json::json!({"error": error, "reason": reason}),
        )
    }

    pub fn ok(status: u16) -> Response {
        Response::raw(status, r#"{"ok":true}"#)
    }

    pub fn with_header(mut self, k: &str, v: impl Into<String>) -> Response {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Object Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Requested Range Not Satisfiable",
        417 => "Expectation Failed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Serializes a response head + body (not the trailing bytes).
pub fn render(resp: &Response, request_id: &str) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        resp.status,
        reason_phrase(resp.status)
    );
    let mut hdrs: Vec<(String, String)> = vec![
        ("Cache-Control".into(), "must-revalidate".into()),
        ("Content-Length".into(), resp.body.len().to_string()),
        ("Content-Type".into(), "application/json".into()),
        ("Date".into(), util::http_date(util::unix_now())),
        ("Server".into(), "CouchDB/3.4.2 (Erlang OTP/25)".into()),
    ];
    if resp.close {
        hdrs.push(("Connection".into(), "close".into()));
    }
    for (k, v) in &resp.headers {
        if let Some(slot) = hdrs.iter_mut().find(|(hk, _)| hk.eq_ignore_ascii_case(k)) {
            slot.1 = v.clone();
        } else {
            hdrs.push((k.clone(), v.clone()));
        }
    }
    if !resp.bare {
        hdrs.push(("X-Couch-Request-ID".into(), request_id.to_string()));
        hdrs.push(("X-CouchDB-Body-Time".into(), "0".into()));
    }
    hdrs.sort_by_key(|h| h.0.to_ascii_lowercase());
    for (k, v) in hdrs {
        head.push_str(&k);
        head.push_str(": ");
        head.push_str(&v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&resp.body);
    out
}

pub fn write_response(w: &mut impl Write, resp: &Response, request_id: &str) -> io::Result<()> {
    w.write_all(&render(resp, request_id))?;
    if !resp.trailing.is_empty() {
        w.write_all(&resp.trailing)?;
    }
    w.flush()
}
