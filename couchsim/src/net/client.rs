//! A minimal blocking HTTP/1.1 client for node-to-node calls (`add_node`'s `receive_cookie`,
//! remote `enable_cluster`) and the `curl` multi-call mode.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::util;

#[derive(Debug, Clone)]
#[allow(dead_code)] // headers: kept for callers that want them
pub struct ClientResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One outgoing request.
#[derive(Debug, Clone)]
pub struct ClientRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub basic_auth: Option<(String, String)>,
    pub timeout: Duration,
}

impl<'a> ClientRequest<'a> {
    pub fn new(method: &'a str, path: &'a str) -> ClientRequest<'a> {
        ClientRequest {
            method,
            path,
            host: String::from("localhost"),
            headers: Vec::new(),
            body: None,
            basic_auth: None,
            timeout: Duration::from_secs(10),
        }
    }

    pub fn json(mut self, v: &serde_json::Value) -> Self {
        self.headers
            .push(("Content-Type".into(), "application/json".into()));
        self.body = Some(serde_json::to_vec(v).unwrap_or_default());
        self
    }
}

fn encode(req: &ClientRequest, keep_open: bool) -> Vec<u8> {
    let mut s = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        req.method, req.path, req.host
    );
    if !req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
    {
        s.push_str("User-Agent: couchsim\r\n");
    }
    s.push_str("Accept: application/json\r\n");
    if let Some((u, p)) = &req.basic_auth {
        s.push_str(&format!(
            "Authorization: Basic {}\r\n",
            util::base64_encode(format!("{u}:{p}").as_bytes())
        ));
    }
    for (k, v) in &req.headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = req.body.as_deref().unwrap_or(&[]);
    if req.body.is_some() || matches!(req.method, "POST" | "PUT") {
        s.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !keep_open {
        s.push_str("Connection: close\r\n");
    }
    s.push_str("\r\n");
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The `User-Agent` CouchDB's replicator sends (requests with it are not logged: see
/// `NodeInner::record`).
pub const REPLICATOR_AGENT: &str = "CouchDB-Replicator/3.4.2";

/// Largest response body accepted.
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// Reads exactly one response (Content-Length, chunked, or until EOF).
pub fn read_response(rd: &mut BufReader<TcpStream>) -> io::Result<ClientResponse> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    if rd.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no response"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let resp_hdr = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if resp_hdr("transfer-encoding")
        .map(|v| v.to_ascii_lowercase().contains("chunked"))
        .unwrap_or(false)
    {
        loop {
            let mut sz = String::new();
            rd.read_line(&mut sz)?;
            let n = usize::from_str_radix(sz.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk"))?;
            if n == 0 {
                let mut t = String::new();
                rd.read_line(&mut t)?;
                break;
            }
            let start = body.len();
            if start.saturating_add(n) > MAX_RESPONSE {
                return Err(bad("response too large"));
            }
            body.resize(start + n, 0);
            rd.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            rd.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = resp_hdr("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if n > MAX_RESPONSE {
            return Err(bad("response too large"));
        }
        body.resize(n, 0);
        rd.read_exact(&mut body)?;
    } else {
        rd.take(MAX_RESPONSE as u64).read_to_end(&mut body)?;
    }
    Ok(ClientResponse {
        status,
        headers,
        body,
    })
}

pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(5)))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Sends one request on a fresh connection and reads the answer.
pub fn send(addr: SocketAddr, req: &ClientRequest) -> io::Result<ClientResponse> {
    let mut s = connect(addr, req.timeout)?;
    s.write_all(&encode(req, false))?;
    let mut rd = BufReader::new(s);
    read_response(&mut rd)
}

/// Resolves `host:port` (every address, IPv4 first).
pub fn resolve_all(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let mut v: Vec<SocketAddr> = (h, port).to_socket_addrs()?.collect();
    v.sort_by_key(|a| a.is_ipv6());
    if v.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
    }
    Ok(v)
}

/// Resolves `host:port` (first address, IPv4 preferred).
pub fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    resolve_all(host, port).map(|v| v[0])
}

/// A parsed `http://user:pass@host:port/path` URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
    pub user: Option<(String, String)>,
}

pub fn parse_url(url: &str) -> Option<Url> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => {
            let (n, p) = u.split_once(':').unwrap_or((u, ""));
            (Some((util::pct_decode(n), util::pct_decode(p))), h)
        }
        None => (None, authority),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, rest) = h.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => 80,
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (hostport.to_string(), 80),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(Url {
        host,
        port,
        path,
        user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://localhost:5984/_up").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("localhost", 5984, "/_up")
        );
        let u = parse_url("http://a:b%40c@h").unwrap();
        assert_eq!(u.user, Some(("a".into(), "b@c".into())));
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert!(parse_url("http://:12/").is_none());
    }
}
