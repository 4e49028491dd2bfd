//! Erlang's port mapper and node names, as the distribution stand-in needs them: where a node
//! named `name@host` listens (`Epmd`: by name in-process, by DNS in binary mode) and which
//! names can take part at all (long names with a dotted host; never `nonode@nohost`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;

use super::client;

/// The name of a node started without `NODENAME`.
pub const NONODE: &str = "nonode@nohost";

/// Finds where a node named `node_name` listens for distribution traffic.
pub trait Epmd: Send + Sync {
    fn locate(&self, node_name: &str) -> Option<SocketAddr>;
}

/// In-process: the cluster's nodes by name.
#[derive(Debug, Default)]
pub struct Registry {
    map: RwLock<HashMap<String, SocketAddr>>,
}

impl Registry {
    pub fn register(&self, name: &str, addr: SocketAddr) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), addr);
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
}

/// Binary mode: resolve the host part of the name, fixed port.
#[derive(Debug, Clone)]
pub struct DnsEpmd {
    pub port: u16,
}

impl Epmd for DnsEpmd {
    fn locate(&self, node_name: &str) -> Option<SocketAddr> {
        let (_, host) = node_name.split_once('@')?;
        client::resolve(host, self.port).ok()
    }
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
