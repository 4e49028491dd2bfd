//! Erlang's port mapper and node names, as the distribution stand-in needs them: where a node
//! named `name@host` listens (`Epmd`: by name in-process, by DNS in binary mode), which
//! names can take part at all (long names with a dotted host; never `nonode@nohost`), and an
//! epmd that answers `PORT_PLEASE2` on its port (4369 in binary mode, one per in-process
//! cluster, all of whose nodes are on one host as far as epmd can tell) for the nodes that run.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::client;

/// The name of a node started without `NODENAME`.
pub const NONODE: &str = "nonode@nohost";

/// Finds where a node named `node_name` listens for distribution traffic.
pub trait Epmd: Send + Sync {
    fn locate(&self, node_name: &str) -> Option<SocketAddr>;
    /// A node's distribution listens on `port` now (`None`: it stopped), as its registration
    /// with the local epmd says.
    fn publish(&self, _node_name: &str, _port: Option<u16>) {}
}

/// In-process: the cluster's nodes by name (their distribution addresses), and which of them
/// run now (what the cluster's epmd answers).
#[derive(Debug, Default)]
pub struct Registry {
    map: RwLock<HashMap<String, SocketAddr>>,
    running: RwLock<HashMap<String, u16>>,
}

impl Registry {
    pub fn register(&self, name: &str, addr: SocketAddr) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), addr);
    }

    /// The port of the running node whose name's first part is `alive` (epmd knows no hosts).
    pub fn port_of(&self, alive: &str) -> Option<u16> {
        let running = self.running.read().unwrap_or_else(|e| e.into_inner());
        running
            .iter()
            .find(|(name, _)| name.split_once('@').map_or(name.as_str(), |(a, _)| a) == alive)
            .map(|(_, port)| *port)
    }

    fn names(&self) -> Vec<(String, u16)> {
        let running = self.running.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, u16)> = running
            .iter()
            .map(|(n, p)| {
                (
                    n.split_once('@').map_or(n.as_str(), |(a, _)| a).to_string(),
                    *p,
                )
            })
            .collect();
        v.sort();
        v
    }
}

impl Epmd for Registry {
    fn locate(&self, node_name: &str) -> Option<SocketAddr> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node_name)
            .copied()
    }

    fn publish(&self, node_name: &str, port: Option<u16>) {
        let mut running = self.running.write().unwrap_or_else(|e| e.into_inner());
        match port {
            Some(p) => running.insert(node_name.to_string(), p),
            None => running.remove(node_name),
        };
    }
}

/// Binary mode: resolve the host part of the name, fixed distribution port (9100, as the
/// image's vm.args fixes it); this node's own registration is served by the local epmd.
#[derive(Debug, Clone)]
pub struct DnsEpmd {
    pub port: u16,
    pub local: Arc<Registry>,
}

impl Epmd for DnsEpmd {
    fn locate(&self, node_name: &str) -> Option<SocketAddr> {
        let (_, host) = node_name.split_once('@')?;
        client::resolve(host, self.port).ok()
    }

    fn publish(&self, node_name: &str, port: Option<u16>) {
        self.local.publish(node_name, port);
    }
}

/// EPMD's requests and answers (erts' `epmd` protocol): `PORT_PLEASE2_REQ` (`z`) and
/// `NAMES_REQ` (`n`); everything else is closed unanswered.
const PORT_PLEASE2_REQ: u8 = 122;
const PORT2_RESP: u8 = 119;
const NAMES_REQ: u8 = 110;

/// An epmd answering for the running nodes of a `Registry`. Stops (and joins) when dropped.
pub struct EpmdServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpmdServer {
    pub fn start(listener: TcpListener, names: Arc<Registry>) -> std::io::Result<EpmdServer> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::Builder::new()
            .name("couchsim-epmd".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if halt.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(mut c) = conn {
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        answer(&mut c, &names, addr.port());
                    }
                }
            })?;
        Ok(EpmdServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for EpmdServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let wake = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), self.addr.port());
        let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(500));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(c: &mut TcpStream, names: &Registry, own_port: u16) {
    let mut len = [0u8; 2];
    if c.read_exact(&mut len).is_err() {
        return;
    }
    let mut req = vec![0u8; u16::from_be_bytes(len) as usize];
    if req.is_empty() || c.read_exact(&mut req).is_err() {
        return;
    }
    let out = match req[0] {
        PORT_PLEASE2_REQ => {
            let alive = String::from_utf8_lossy(&req[1..]).into_owned();
            match names.port_of(&alive) {
                // PORT2_RESP, ok, port, normal node (77), TCP/IPv4 (0), versions 6..5, name, no extra.
                Some(port) => {
                    let mut o = vec![PORT2_RESP, 0];
                    o.extend_from_slice(&port.to_be_bytes());
                    o.extend_from_slice(&[77, 0, 0, 6, 0, 5]);
                    o.extend_from_slice(&(alive.len() as u16).to_be_bytes());
                    o.extend_from_slice(alive.as_bytes());
                    o.extend_from_slice(&[0, 0]);
                    o
                }
                None => vec![PORT2_RESP, 1],
            }
        }
        NAMES_REQ => {
            let mut o = (own_port as u32).to_be_bytes().to_vec();
            for (name, port) in names.names() {
                o.extend_from_slice(format!("name {name} at port {port}\n").as_bytes());
            }
            o
        }
        _ => return,
    };
    let _ = c.write_all(&out);
}

/// Whether an Erlang node with this name can take part in distribution: `name@host` with a
/// dotted host (long names; `-name couchdb@couchdb-1` is "illegal"), and not `nonode@nohost`.
pub fn long_name_ok(name: &str) -> bool {
    if name == NONODE {
        return false;
    }
    match name.split_once('@') {
        Some((alive, host)) => {
            !alive.is_empty()
                && !host.is_empty()
                && host.contains('.')
                && !host.starts_with('.')
                && !host.ends_with('.')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epmd_answers_port_please2_for_running_nodes_only() {
        let names = Arc::new(Registry::default());
        names.publish("node1@127.0.0.1", Some(9100));
        let server =
            EpmdServer::start(TcpListener::bind("127.0.0.1:0").unwrap(), names.clone()).unwrap();
        let ask = |alive: &str| {
            let mut c = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
            let mut req = ((alive.len() + 1) as u16).to_be_bytes().to_vec();
            req.push(PORT_PLEASE2_REQ);
            req.extend_from_slice(alive.as_bytes());
            c.write_all(&req).unwrap();
            let mut out = Vec::new();
            c.read_to_end(&mut out).unwrap();
            out
        };
        let yes = ask("node1");
        assert_eq!(&yes[..4], &[PORT2_RESP, 0, 0x23, 0x8c]);
        assert_eq!(ask("node2"), vec![PORT2_RESP, 1]);
        names.publish("node1@127.0.0.1", None);
        assert_eq!(ask("node1"), vec![PORT2_RESP, 1]);
    }

    #[test]
    fn only_dotted_long_names_take_part() {
        assert!(long_name_ok("node1@127.0.0.1"));
        assert!(long_name_ok("couchdb@couchdb-1.cluster"));
        assert!(!long_name_ok("couchdb@couchdb-1"));
        assert!(!long_name_ok(NONODE));
        assert!(!long_name_ok("couchdb"));
        assert!(!long_name_ok("@a.b"));
        assert!(!long_name_ok("a@.b"));
    }
}
