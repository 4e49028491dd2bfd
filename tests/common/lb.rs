//! A load balancer for the simulator tests, doing what Traefik does for the bundle: round-robin
//! over the nodes whose `/_up` answered 200 at the last health check (every `interval`), a
//! node that refuses a connection skipped (retried on the next one), 503 when none is healthy.
//! Each request is forwarded on a fresh connection and logged with the node that served it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    backends: Vec<SocketAddr>,
    healthy: Vec<bool>,
    next: usize,
    /// (when it was forwarded, the node, the status it answered)
    served: Vec<(Instant, SocketAddr, u16)>,
}

pub struct Lb {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Lb {
    /// `checks`: false for a balancer that never looks at `/_up` (every node stays in).
    pub fn start(backends: Vec<SocketAddr>, interval: Duration, checks: bool) -> Lb {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test load balancer");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            healthy: vec![true; backends.len()],
            backends,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        if checks {
            let (state, stop) = (state.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let backends = state.lock().unwrap().backends.clone();
                    let healthy: Vec<bool> = backends.iter().map(|b| up(*b)).collect();
                    state.lock().unwrap().healthy = healthy;
                    std::thread::sleep(interval);
                }
            }));
        }
        {
            let (state, stop) = (state.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let state = state.clone();
                            std::thread::spawn(move || forward(client, &state));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            }));
        }
        Lb {
            addr,
            state,
            stop,
            threads,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request forwarded so far: when, to which node, and what it answered.
    pub fn served(&self) -> Vec<(Instant, SocketAddr, u16)> {
        self.state.lock().unwrap().served.clone()
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `GET /_up` answers 200.
fn up(backend: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&backend, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET /_up HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// The client's request (head and body), with `Connection: close`.
fn read_request(client: &TcpStream) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(client.try_clone().ok()?);
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        if !lower.starts_with("connection:") {
            head.push_str(&line);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut out = head.into_bytes();
    out.extend(body);
    Some(out)
}

fn forward(mut client: TcpStream, state: &Mutex<State>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(request) = read_request(&client) else {
        return;
    };
    let n = state.lock().unwrap().backends.len();
    for _ in 0..n {
        let backend = {
            let mut s = state.lock().unwrap();
            let pick = (0..n).map(|k| (s.next + k) % n).find(|&i| s.healthy[i]);
            match pick {
                Some(i) => {
                    s.next = i + 1;
                    s.backends[i]
                }
                None => break,
            }
        };
        let Ok(mut server) = TcpStream::connect_timeout(&backend, Duration::from_millis(500))
        else {
            // Refused: the node is gone; the next request goes elsewhere (Traefik's retry).
            let mut s = state.lock().unwrap();
            if let Some(i) = s.backends.iter().position(|b| *b == backend) {
                s.healthy[i] = false;
            }
            continue;
        };
        let _ = server.set_read_timeout(Some(Duration::from_secs(30)));
        if server.write_all(&request).is_err() {
            continue;
        }
        let mut answer = Vec::new();
        let _ = server.read_to_end(&mut answer);
        let status = String::from_utf8_lossy(&answer)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        state
            .lock()
            .unwrap()
            .served
            .push((Instant::now(), backend, status));
        let _ = client.write_all(&answer);
        return;
    }
    let body = r#"{"error":"no_healthy_node"}"#;
    let _ = write!(
        client,
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
