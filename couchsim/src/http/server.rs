//! The HTTP server of one node: its acceptor (a thread per connection, keep-alive), each
//! request through faults and routes, and starting a node with it, the distribution's acceptor
//! (its own port) and the ticker.

use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use super::faults;
use super::routes;
use crate::cluster::dist;
use crate::net::client;
use crate::net::http::{self, HttpRequest, ReadError, Response};
use crate::node::{release, NodeInner, Workers};
use crate::{ticker, util};

/// Starts `node` (boot delay, listener, acceptor, ticker); returns once it listens.
pub fn start(node: &Arc<NodeInner>) {
    node.start(Workers {
        accept: accept_loop,
        dist_accept,
        tick: ticker::run,
    });
}

fn dist_accept(node: Arc<NodeInner>, listener: TcpListener, epoch: u64) {
    dist::accept_loop(node, listener, epoch, routes::node_local);
}

fn accept_loop(node: Arc<NodeInner>, listener: TcpListener, epoch: u64) {
    for stream in listener.incoming() {
        if !node.alive(epoch) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(_) => continue,
        };
        let peer = match stream.peer_addr() {
            Ok(p) => p,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let id = match node.register_conn(&stream, epoch) {
            Some(id) => id,
            None => break,
        };
        let me = Arc::clone(&node);
        let spawned = node.spawn(epoch, "conn", move || {
            serve(&me, stream, peer, epoch);
            me.unregister_conn(id);
        });
        if !spawned {
            node.unregister_conn(id);
        }
    }
}

/// One HTTP connection: requests until close, error, or stop.
fn serve(node: &Arc<NodeInner>, stream: TcpStream, peer: SocketAddr, epoch: u64) {
    let reader_stream = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut reader = BufReader::new(reader_stream);
    let mut writer = stream;
    loop {
        let req = match http::read_request(&mut reader, peer) {
            Ok(r) => r,
            Err(ReadError::Closed) | Err(ReadError::Io) => return,
            Err(ReadError::Malformed(why)) => {
                let mut resp = Response::error(400, "bad_request", &why);
                resp.close = true;
                let _ = http::write_response(&mut writer, &resp, &node.random_hex(5));
                return;
            }
        };
        if !node.alive(epoch) {
            return;
        }
        let keep = req.keep_alive();
        let mut resp = handle_public(node, &req, epoch)
            .with_header("Server", release::server_header(node.version()));
        if !keep {
            resp.close = true;
        }
        // CouchDB's own replication traffic is not the tests' business (like the
        // distribution's): `requests()` and `count_writes()` show what clients sent.
        if req.header("user-agent") != Some(client::REPLICATOR_AGENT) {
            node.record(&req, resp.status);
        }
        let rid = node.random_hex(5);
        let res = if req.method == "HEAD" {
            let mut head = http::render(&resp, &rid);
            let cut = head.len() - resp.body.len();
            head.truncate(cut);
            writer.write_all(&head).and_then(|_| writer.flush())
        } else {
            http::write_response(&mut writer, &resp, &rid)
        };
        if res.is_err() || resp.close {
            let _ = writer.shutdown(Shutdown::Write);
            return;
        }
    }
}

fn handle_public(node: &Arc<NodeInner>, req: &HttpRequest, epoch: u64) -> Response {
    let (slow, injected) = faults::before(node, req);
    if let Some(d) = slow {
        util::sleep_while(d, || node.alive(epoch));
    }
    if let Some(resp) = injected {
        return resp;
    }
    routes::handle(node, req, epoch)
}
