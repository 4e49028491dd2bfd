//! HTTP and waiting helpers shared by the in-process integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use couchsim::Delays;
use serde_json::Value;

pub const AUTH: &str = "YWRtaW46cGFzc3dvcmQ="; // admin:password

pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

pub fn read_resp(rd: &mut BufReader<TcpStream>) -> std::io::Result<Resp> {
    let mut line = String::new();
    rd.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0;
    loop {
        let mut h = String::new();
        rd.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    rd.read_exact(&mut body)?;
    Ok(Resp { status, body })
}

pub fn req_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: Basic {a}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    if let Some(b) = body {
        head.push_str(b);
    }
    s.write_all(head.as_bytes())?;
    read_resp(&mut BufReader::new(s))
}

/// An admin request; panics when the node cannot be reached.
pub fn req(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Resp {
    req_raw(addr, method, path, Some(AUTH), body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `POST /_cluster_setup {"action":"finish_cluster"}` as admin.
pub fn finish_cluster(addr: SocketAddr) -> Resp {
    req(
        addr,
        "POST",
        "/_cluster_setup",
        Some(r#"{"action":"finish_cluster"}"#),
    )
}

/// Polls `f` every 5 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out waiting for {what}");
}

/// `node1@127.0.0.1`, … for the given numbers.
pub fn names(n: &[usize]) -> Vec<String> {
    n.iter().map(|i| format!("node{i}@127.0.0.1")).collect()
}

/// `Delays::fast()` with a 300 ms `finish_wait`.
pub fn fast() -> Delays {
    let mut d = Delays::fast();
    d.finish_wait = Duration::from_millis(300);
    d
}
