//! What `drain`, `undrain` and `guard` read besides the nodes: the load balancer in front of
//! them (to prove a drained node gets no more requests, and a node brought back gets them
//! again), its health-check interval (waited out where it cannot be asked), and where `guard`
//! answers its probes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;

use super::{duration_var, invalid, parse_node, NodeAddr};

/// Traefik's own default health-check interval: without COUCHDB_LB_URL, `drain` waits this long
/// (plus `LB_MARGIN`) after the node's `/_up` answers 404, unless told the real one.
pub const DEFAULT_LB_INTERVAL: Duration = Duration::from_secs(30);
/// 9986: beside `watch`'s 9985; every interface, so that the kubelet reaches it in the pod.
pub const DEFAULT_GUARD_ADDR: &str = "0.0.0.0:9986";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    /// COUCHDB_LB_URL: requests sent through it (no sticky cookie) say which node served them.
    pub lb: Option<NodeAddr>,
    /// COUCHDB_LB_INTERVAL: the load balancer's health-check interval.
    pub lb_interval: Duration,
    /// COUCHDB_GUARD_ADDR: `guard`'s `/ready` and `/drain`.
    pub guard_addr: SocketAddr,
}

pub fn read(
    lb: Option<String>,
    lb_interval: Option<String>,
    guard_addr: Option<String>,
) -> Result<Drain> {
    let lb = match lb {
        Some(url) if !url.trim().is_empty() => Some(parse_node("COUCHDB_LB_URL", &url)?),
        Some(_) => return Err(invalid("COUCHDB_LB_URL is set but empty".into())),
        None => None,
    };
    let lb_interval = duration_var("COUCHDB_LB_INTERVAL", lb_interval, DEFAULT_LB_INTERVAL)?;
    let text = guard_addr.unwrap_or_else(|| DEFAULT_GUARD_ADDR.to_string());
    let guard_addr = text.trim().parse().map_err(|_| {
        invalid(format!(
            "COUCHDB_GUARD_ADDR=`{text}` is not an address and port like 0.0.0.0:9986"
        ))
    })?;
    Ok(Drain {
        lb,
        lb_interval,
        guard_addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values_named() {
        let d = read(None, None, None).unwrap();
        assert_eq!((d.lb, d.lb_interval), (None, DEFAULT_LB_INTERVAL));
        assert_eq!(d.guard_addr.port(), 9986);
        let d = read(Some("traefik:5984".into()), Some("2s".into()), None).unwrap();
        assert_eq!(d.lb.unwrap().url, "http://traefik:5984");
        assert_eq!(d.lb_interval, Duration::from_secs(2));
        for (lb, interval, addr, var) in [
            (Some(""), None, None, "COUCHDB_LB_URL"),
            (Some("https://lb"), None, None, "COUCHDB_LB_URL"),
            (None, Some("2"), None, "COUCHDB_LB_INTERVAL"),
            (None, None, Some("9986"), "COUCHDB_GUARD_ADDR"),
        ] {
            let e = read(
                lb.map(String::from),
                interval.map(String::from),
                addr.map(String::from),
            )
            .unwrap_err();
            assert!(format!("{e:#}").contains(var), "{e:#}");
        }
    }
}
