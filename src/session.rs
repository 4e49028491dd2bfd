//! One run against the configured nodes: the client, the clock and the one deadline, and the
//! steps every procedure starts with — wait for every node's `/_up`, then ask each its Erlang name.
//! Formation, `check` and the operations after day one all begin here.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use log::{debug, info, warn};

use crate::client::{Client, NodeError, NodeResult, Up};
use crate::clock::{poll, Clock};
use crate::config::{Config, NodeAddr};
use crate::exit::{Failure, Status};

/// A node and the Erlang name it reported.
#[derive(Debug, Clone)]
pub struct Identified {
    pub addr: NodeAddr,
    pub name: String,
}

pub struct Session<'a> {
    pub cfg: &'a Config,
    pub client: Client,
    pub clock: &'a dyn Clock,
    pub started: Instant,
    pub deadline: Instant,
}

impl<'a> Session<'a> {
    pub fn new(cfg: &'a Config, clock: &'a dyn Clock, timeout: Duration) -> Session<'a> {
        let started = clock.now();
        let deadline = started + timeout;
        let client = Client::new(&cfg.user, &cfg.password, cfg.request_timeout, deadline);
        Session {
            cfg,
            client,
            clock,
            started,
            deadline,
        }
    }

    pub fn coordinator(&self) -> &NodeAddr {
        &self.cfg.nodes[self.cfg.coordinator]
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.clock.now().duration_since(self.started)
    }

    /// Runs one named phase, logging what it waits for and how long it took.
    pub fn phase<T>(&self, name: &str, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        info!("{name}: {what}");
        let t = self.clock.now();
        let result = f();
        let took = self.clock.now().duration_since(t);
        match &result {
            Ok(_) => info!("{name}: done in {took:.2?}"),
            Err(_) => warn!("{name}: failed after {took:.2?}"),
        }
        result
    }

    // ---- wait -------------------------------------------------------------------------------

    pub fn wait_up(&self) -> Result<()> {
        self.wait_up_on(&self.cfg.nodes)
    }

    /// `wait_up` for some of the nodes (`remove` does not wait for the node it takes out).
    pub fn wait_up_on(&self, nodes: &[NodeAddr]) -> Result<()> {
        let results = each(nodes, |node| {
            let mut last = String::new();
            let up = poll(self.clock, self.deadline, || {
                let state = match self.client.up(node) {
                    Ok(Up::Ready) => return Ok(Some(())),
                    Ok(Up::NotReady(state)) => format!("answers /_up with `{state}`"),
                    Err(NodeError::Unreachable { reason, .. }) => {
                        format!("not answering yet ({reason})")
                    }
                    Err(e) => return Err(e),
                };
                if state != last {
                    info!("wait: {} {state}; waiting", node.label);
                    last = state;
                }
                Ok(None)
            })?;
            if up.is_some() {
                debug!("wait: {} is up", node.label);
            }
            Ok::<_, NodeError>(up.ok_or(last))
        });
        let mut down = Vec::new();
        for (node, result) in nodes.iter().zip(results) {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(last)) => down.push(format!("{} ({last})", node.label)),
                Err(e) => return Err(anyhow::Error::from(e)),
            }
        }
        if down.is_empty() {
            return Ok(());
        }
        Err(Failure::new(
            Status::Unreachable,
            format!(
                "not up after {:.0?}: {} — check that the node runs and that its address in COUCHDB_NODES is right",
                self.deadline.duration_since(self.started),
                down.join("; ")
            ),
        )
        .into())
    }

    // ---- identify ---------------------------------------------------------------------------

    pub fn identify(&self) -> Result<Vec<Identified>> {
        let names = self.read_each(&self.cfg.nodes, |node| self.client.local_name(node))?;
        let mut nodes = Vec::new();
        for (addr, name) in self.cfg.nodes.iter().zip(names) {
            check_erlang_name(&addr.label, &name)?;
            if let Some(twin) = nodes.iter().find(|n: &&Identified| n.name == name) {
                return Err(Failure::new(
                    Status::Config,
                    format!(
                        "nodes {} and {} both report the Erlang name {name}: each node needs its own NODENAME \
                         (or COUCHDB_NODES lists one node under two addresses)",
                        twin.addr.label, addr.label
                    ),
                )
                .into());
            }
            info!("identify: {} is {name}", addr.label);
            nodes.push(Identified {
                addr: addr.clone(),
                name,
            });
        }
        Ok(nodes)
    }

    /// `read` on every item in parallel; the first failure, in configuration order, wins.
    pub fn read_each<I: Sync, T: Send>(
        &self,
        items: &[I],
        call: impl Fn(&I) -> NodeResult<T> + Sync,
    ) -> Result<Vec<T>> {
        each(items, |item| self.read(|| call(item)))
            .into_iter()
            .collect()
    }

    /// A read (or idempotent write) that may meet a node restarting: retried while the node is
    /// unreachable, within the deadline. Any HTTP answer, 401 above all, is final.
    pub fn read<T>(&self, call: impl Fn() -> NodeResult<T>) -> Result<T> {
        let mut last = None;
        let result = poll(self.clock, self.deadline, || match call() {
            Ok(v) => Ok(Some(v)),
            Err(e @ NodeError::Unreachable { .. }) => {
                debug!("{e}; retrying");
                last = Some(e);
                Ok(None)
            }
            Err(e) => Err(e),
        })?;
        match (result, last) {
            (Some(v), _) => Ok(v),
            (None, Some(e)) => Err(e.into()),
            (None, None) => Err(anyhow!("deadline reached")),
        }
    }
}

/// Runs `f` for every item in parallel, results in the same order.
pub fn each<I: Sync, T: Send>(items: &[I], f: impl Fn(&I) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items.iter().map(|item| s.spawn(move || f(item))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Like `each`, with at most `limit` calls in flight: a status of 200 databases must not open
/// a connection per copy at once. Results in the same order as `items`.
pub fn each_bounded<I: Sync, T: Send>(
    items: &[I],
    limit: usize,
    f: impl Fn(&I) -> T + Sync,
) -> Vec<T> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = limit.clamp(1, items.len().max(1));
    let done: Vec<(usize, T)> = std::thread::scope(|s| {
        let (f, next) = (&f, &next);
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return out;
                        };
                        out.push((i, f(item)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut slots: Vec<Option<T>> = items.iter().map(|_| None).collect();
    for (i, v) in done {
        slots[i] = Some(v);
    }
    slots.into_iter().flatten().collect()
}

/// Refuses names CouchDB cannot cluster with, before anything is written.
pub fn check_erlang_name(label: &str, name: &str) -> Result<()> {
    let fail =
        |why: String| Err(Failure::new(Status::Config, format!("node {label}: {why}")).into());
    if name == "nonode@nohost" {
        return fail(
            "its Erlang name is nonode@nohost: it was started without NODENAME. Set NODENAME to a dotted \
             name every node resolves (e.g. couchdb-1.cluster.local); the node will be couchdb@<NODENAME>"
                .into(),
        );
    }
    let Some((_, host)) = name.split_once('@') else {
        return fail(format!(
            "reports the Erlang name `{name}`, which has no @host part"
        ));
    };
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "@._-".contains(c))
    {
        return fail(format!(
            "reports the Erlang name `{name}`, which has characters CouchDB node names cannot hold"
        ));
    }
    if !host.contains('.') {
        return fail(format!(
            "its Erlang name {name} has a host part without a dot. CouchDB runs Erlang with long names, \
             which never connect to a dotless host: give NODENAME a dotted name (e.g. {host}.cluster.local) \
             that the other nodes resolve"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bounded_keeps_the_order_and_the_bound() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (running, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let items: Vec<usize> = (0..50).collect();
        let out = each_bounded(&items, 4, |&i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(1));
            running.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 4);
        assert!(each_bounded(&Vec::<u8>::new(), 4, |_| 1).is_empty());
    }

    #[test]
    fn names_couchdb_cannot_cluster_with_are_configuration_errors() {
        for (name, expect) in [
            ("nonode@nohost", "NODENAME"),
            ("couchdb@couchdb-1", "without a dot"),
            ("couchdb", "no @host"),
            ("couch db@a.b", "characters"),
        ] {
            let e = check_erlang_name("couchdb-1", name).expect_err(name);
            assert_eq!(crate::exit::status_of(&e), Status::Config);
            assert!(format!("{e}").contains(expect), "{name}: {e}");
        }
        check_erlang_name("a", "couchdb@10.0.0.1").unwrap();
        check_erlang_name("a", "couchdb@couchdb-1.cluster.local").unwrap();
    }
}
