//! The metrics endpoint: one thread, one connection at a time (Prometheus scrapes every 15–60 s),
//! `GET /metrics`, `GET /healthz`, the status page `GET /` and its data `GET /status.json`,
//! nothing else. A client gets 2 s to send its request. Every answer is rendered from what the
//! watch loop last saw: none sends a request to a node.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use log::debug;

use super::metrics::{render, Shared};
use super::page;
use crate::util::exit::{Failure, Status};

/// A request larger than this is not a scrape.
const MAX_REQUEST: usize = 8 * 1024;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `addr` now (so a port in use is a configuration error at start), then serves from a
/// thread; returns the address bound (port 0 gives one the system picks).
pub fn start(addr: SocketAddr, shared: Arc<Mutex<Shared>>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        Failure::new(
            Status::Config,
            format!("COUCHDB_METRICS_ADDR {addr}: cannot listen there: {e}"),
        )
    })?;
    let bound = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(e) = answer(stream, &shared) {
                debug!("metrics: a client went away: {e}");
            }
        }
    });
    Ok(bound)
}

fn answer(mut stream: TcpStream, shared: &Mutex<Shared>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    // A poisoned lock means the watch loop panicked; the page is still worth serving.
    let state = |f: &dyn Fn(&Shared) -> (u16, String)| {
        let guard = shared.lock().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    };
    let (status, body, kind) = match (method, path) {
        ("GET", "/metrics") => {
            let (s, b) = state(&|s| (200, render(s, Instant::now())));
            (s, b, "text/plain; version=0.0.4; charset=utf-8")
        }
        ("GET", "/healthz") => {
            let (s, b) = state(&|s| {
                if s.live(Instant::now()) {
                    (200, "ok\n".to_string())
                } else {
                    (503, "no look at the cluster finished lately\n".to_string())
                }
            });
            (s, b, "text/plain; charset=utf-8")
        }
        ("GET", "/") => {
            let (s, b) = state(&|s| (200, page::html(s, SystemTime::now())));
            (s, b, "text/html; charset=utf-8")
        }
        ("GET", "/status.json") => {
            let (s, b) = state(&|s| (200, page::json(s)));
            (s, b, "application/json")
        }
        ("GET", _) => (
            404,
            "only /, /status.json, /metrics and /healthz\n".into(),
            "text/plain",
        ),
        _ => (405, "GET only\n".into(), "text/plain"),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    // The page runs no script and loads nothing (its style is inline): a browser is told so,
    // and not to keep an old copy of it.
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n\
         X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
