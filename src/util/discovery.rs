//! DNS: the one place that asks it anything. Through the C library's `getaddrinfo` (std's
//! `ToSocketAddrs`), which reads `/etc/resolv.conf` like every program in the pod: the search
//! list (`couchdb-0.couchdb` → `…default.svc.cluster.local`), `ndots`, `/etc/hosts`, and TCP
//! when an answer is too long for UDP (32 pods: dnsmasq sets TC and a naive UDP client silently
//! gets 6 of 32 records). No async runtime and no resolver crate: see KUBERNETES.md's sizes.

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};

use crate::util::config::NodeAddr;

/// The addresses `host` resolves to, sorted, duplicates removed. IPv4 only when there is any:
/// on a dual-stack cluster every pod has one address of each family, and counting both would
/// let COUCHDB_EXPECT be met by half the pods. `Err` says why, in the resolver's words.
pub fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let found: BTreeSet<IpAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .map(|a| a.ip())
        .collect();
    let v4: Vec<IpAddr> = found.iter().copied().filter(IpAddr::is_ipv4).collect();
    if !v4.is_empty() {
        return Ok(v4);
    }
    if found.is_empty() {
        return Err("no address".into());
    }
    Ok(found.into_iter().collect())
}

/// Does `host` resolve from here? (A seam: tests of the diagnosis pass their own.)
pub fn resolves(host: &str) -> bool {
    resolve(host).is_ok()
}

/// Why a host name cannot be used, in words that point at DNS; `None` if it resolves (or is
/// an address), so the trouble is elsewhere.
pub fn dns_problem(host: &str) -> Option<String> {
    resolve(host)
        .err()
        .map(|why| format!("its name does not resolve (DNS: {why})"))
}

/// One node per address, on the service's port. Labels are the addresses until each node has
/// said its name.
pub fn nodes_at(service: &NodeAddr, ips: &[IpAddr]) -> Vec<NodeAddr> {
    let port = service.port();
    ips.iter()
        .map(|ip| {
            let authority = match ip {
                IpAddr::V4(v4) => format!("{v4}:{port}"),
                IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            };
            NodeAddr {
                label: authority.clone(),
                url: format!("http://{authority}"),
            }
        })
        .collect()
}

/// A short label for a discovered node, from its Erlang name: the first label of its host
/// (`couchdb@couchdb-0.couchdb.default.svc.cluster.local` → `couchdb-0`) when no other node
/// shares it, else the whole host.
pub fn short_labels(names: &[String]) -> Vec<String> {
    let host = |name: &str| name.split_once('@').map_or(name, |(_, h)| h).to_string();
    let first = |name: &str| host(name).split('.').next().unwrap_or_default().to_string();
    names
        .iter()
        .map(|name| {
            let short = first(name);
            let shared = names.iter().filter(|other| first(other) == short).count() > 1;
            if shared || short.is_empty() {
                host(name)
            } else {
                short
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_no_dns_and_localhost_resolves() {
        assert_eq!(resolve("10.0.0.5"), Ok(vec!["10.0.0.5".parse().unwrap()]));
        assert!(resolves("localhost"));
        let e = dns_problem("no-such-host.invalid").expect("must not resolve");
        assert!(e.contains("does not resolve") && e.contains("DNS"), "{e}");
        assert_eq!(dns_problem("127.0.0.1"), None);
    }

    #[test]
    fn discovered_nodes_get_the_service_port_and_short_labels() {
        let service = NodeAddr {
            label: "couchdb:6984".into(),
            url: "http://couchdb:6984".into(),
        };
        let nodes = nodes_at(
            &service,
            &["10.0.0.5".parse().unwrap(), "fd00::1".parse().unwrap()],
        );
        assert_eq!(nodes[0].url, "http://10.0.0.5:6984");
        assert_eq!(nodes[1].url, "http://[fd00::1]:6984");
        let names = vec![
            "couchdb@couchdb-0.couchdb.default.svc.cluster.local".to_string(),
            "couchdb@couchdb-1.couchdb.default.svc.cluster.local".to_string(),
            "couchdb@db.a.example".to_string(),
            "couchdb@db.b.example".to_string(),
        ];
        assert_eq!(
            short_labels(&names),
            ["couchdb-0", "couchdb-1", "db.a.example", "db.b.example"]
        );
    }
}
