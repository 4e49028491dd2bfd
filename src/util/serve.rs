//! A small HTTP endpoint for probes and scrapes (`watch`'s `/metrics`, `guard`'s `/ready`):
//! GET only, `Connection: close`, a client gets 2 s to send its request. One thread accepts,
//! and each request is answered on a thread of its own: `guard`'s `/drain` takes seconds, and a
//! readiness probe meanwhile must not wait behind it. At most `MAX_ANSWERING` at once: more are
//! answered 503 on the accepting thread, so that a flood of clients cannot grow the process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use log::debug;

use crate::util::exit::{Failure, Status};

/// A request larger than this is not a probe.
const MAX_REQUEST: usize = 8 * 1024;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests answered at once: a few probes and scrapes, a browser or two on the status page.
const MAX_ANSWERING: usize = 16;

/// The answer to one GET: status, body, Content-Type.
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub kind: &'static str,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
            kind: "text/plain; charset=utf-8",
        }
    }
}

/// Answers `GET <path>` (the query string cut off).
pub type Handler = dyn Fn(&str) -> Reply + Send + Sync;

/// Binds `addr` now (so a port in use is a configuration error, naming `var`, at start), then
/// serves from a thread; returns the address bound (port 0 gives one the system picks).
pub fn start(addr: SocketAddr, var: &str, handler: Arc<Handler>) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        Failure::new(
            Status::Config,
            format!("{var} {addr}: cannot listen there: {e}"),
        )
    })?;
    let bound = listener.local_addr()?;
    let answering = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            if answering.fetch_add(1, Ordering::SeqCst) >= MAX_ANSWERING {
                answering.fetch_sub(1, Ordering::SeqCst);
                let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
                let _ = write_reply(&mut stream, &Reply::text(503, "busy\n"));
                continue;
            }
            let (handler, answering) = (handler.clone(), answering.clone());
            std::thread::spawn(move || {
                if let Err(e) = answer(stream, handler.as_ref()) {
                    debug!("http: a client went away: {e}");
                }
                answering.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Ok(bound)
}

fn answer(mut stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
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
    let reply = match method {
        "GET" => handler(path),
        _ => Reply::text(405, "GET only\n"),
    };
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    write_reply(&mut stream, &reply)
}

fn write_reply(stream: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    // The status page runs no script and loads nothing (its style is inline): a browser is told
    // so, and not to keep an old copy of any answer.
    write!(
        stream,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n\
         X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{}",
        reply.status,
        reply.kind,
        reply.body.len(),
        reply.body
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Mutex;

    fn get(addr: SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s
    }

    fn status(mut s: TcpStream) -> String {
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.lines().next().unwrap_or("").to_string()
    }

    #[test]
    fn more_clients_than_it_answers_at_once_get_503_and_the_others_their_answer() {
        // Every answer waits until the test lets it go: MAX_ANSWERING are held at once.
        let (go, wait) = mpsc::channel::<()>();
        let wait = Mutex::new(wait);
        let (held, counted) = mpsc::channel::<()>();
        let held = Mutex::new(held);
        let addr = start(
            "127.0.0.1:0".parse().unwrap(),
            "TEST_ADDR",
            Arc::new(move |_: &str| {
                let _ = held.lock().unwrap().send(());
                let _ = wait.lock().unwrap().recv();
                Reply::text(200, "ok\n")
            }),
        )
        .unwrap();
        let busy: Vec<TcpStream> = (0..MAX_ANSWERING).map(|_| get(addr)).collect();
        // Accepted in the order they connected: the next one finds MAX_ANSWERING under way.
        counted.recv().unwrap();
        assert_eq!(status(get(addr)), "HTTP/1.1 503 Service Unavailable");
        for _ in 0..MAX_ANSWERING {
            go.send(()).unwrap();
        }
        for s in busy {
            assert_eq!(status(s), "HTTP/1.1 200 OK");
        }
        // Room again once they are answered.
        go.send(()).unwrap();
        assert_eq!(status(get(addr)), "HTTP/1.1 200 OK");
    }
}
