//! One run against the configured nodes: the client, the clock and the one deadline, and the
//! steps every procedure starts with — find the nodes and wait for every node's `/_up`, then ask
//! each its Erlang name. Formation, `check` and the operations after day one all begin here.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use log::{debug, info, warn};

use crate::client::{Client, NodeError, NodeResult, Up, DRAINED};
use crate::util::clock::{self, poll, Clock, Progress};
use crate::util::config::{parse_node, Config, NodeAddr, NodeList};
use crate::util::discovery;
use crate::util::exit::{Failure, Status};
use crate::util::text::{list_compact, list_some, natural_cmp};

/// A node and the Erlang name it reported.
#[derive(Debug, Clone)]
pub struct Identified {
    pub addr: NodeAddr,
    pub name: String,
}

/// Every node of this run, with its name, and the one that coordinates.
#[derive(Debug, Clone)]
pub struct Nodes {
    pub all: Vec<Identified>,
    /// Index into `all`.
    pub coordinator: usize,
}

impl Nodes {
    pub fn coordinator(&self) -> &Identified {
        &self.all[self.coordinator]
    }

    pub fn names(&self) -> Vec<String> {
        self.all.iter().map(|n| n.name.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

pub struct Session<'a> {
    pub cfg: &'a Config,
    pub client: Client,
    pub clock: &'a dyn Clock,
    pub started: Instant,
    pub deadline: Instant,
}

/// Says what a long wait waits for: once when it starts, then "still waiting for …, N s left"
/// at a modest cadence, so that a log never looks stuck and never floods.
pub struct Waiting<'a> {
    phase: &'static str,
    progress: Progress<'a>,
    said: bool,
}

impl<'a> Waiting<'a> {
    pub fn new(phase: &'static str, clock: &'a dyn Clock, deadline: Instant) -> Waiting<'a> {
        Waiting {
            phase,
            progress: Progress::new(clock, deadline),
            said: false,
        }
    }

    /// `what` is only built when a line is due.
    pub fn report(&mut self, what: impl FnOnce() -> String) {
        if !self.said {
            self.said = true;
            info!("{}: waiting for {}", self.phase, what());
        } else if let Some(left) = self.progress.due() {
            info!(
                "{}: still waiting for {}, {}",
                self.phase,
                what(),
                clock::left(left)
            );
        }
    }
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

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.clock.now().duration_since(self.started)
    }

    fn timeout(&self) -> Duration {
        self.deadline.duration_since(self.started)
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

    /// What the wait phase waits for, for its first log line.
    pub fn wait_what(&self) -> String {
        match &self.cfg.nodes {
            NodeList::Listed { nodes, expect, .. } if *expect < nodes.len() => format!(
                "/_up of at least {expect} of {} nodes, the coordinator among them",
                nodes.len()
            ),
            NodeList::Listed { nodes, .. } => format!("/_up of {} nodes", nodes.len()),
            NodeList::Service { service, expect } => format!(
                "at least {expect} addresses for {}, then their /_up",
                service.label
            ),
        }
    }

    // ---- wait -------------------------------------------------------------------------------

    /// Finds the nodes — COUCHDB_NODES, or every address of COUCHDB_SERVICE once at least
    /// COUCHDB_EXPECT resolve — and waits until every one answers `/_up`. With COUCHDB_NODES and
    /// a COUCHDB_EXPECT below their number: until that many answer, the coordinator among them;
    /// those are the nodes of this run (a later run, or `watch`, joins the others).
    pub fn wait_up(&self) -> Result<Vec<NodeAddr>> {
        let nodes = self.addresses()?;
        match &self.cfg.nodes {
            NodeList::Listed {
                coordinator,
                expect,
                ..
            } if *expect < nodes.len() => {
                let up = self.wait_up_on_some(&nodes, *expect, Some(*coordinator))?;
                let later: Vec<String> = (0..nodes.len())
                    .filter(|i| !up.contains(i))
                    .map(|i| nodes[i].label.clone())
                    .collect();
                if !later.is_empty() {
                    info!(
                        "wait: {} of {} nodes up (COUCHDB_EXPECT={expect}); left for a later run: {}",
                        up.len(),
                        nodes.len(),
                        list_some(&later)
                    );
                }
                Ok(up.into_iter().map(|i| nodes[i].clone()).collect())
            }
            _ => {
                self.wait_up_on(&nodes)?;
                Ok(nodes)
            }
        }
    }

    /// The nodes of this run: COUCHDB_NODES, or the addresses COUCHDB_SERVICE resolves to once
    /// at least COUCHDB_EXPECT do.
    pub fn addresses(&self) -> Result<Vec<NodeAddr>> {
        match &self.cfg.nodes {
            NodeList::Listed { nodes, .. } => Ok(nodes.clone()),
            NodeList::Service { service, expect } => self.discover(service, *expect),
        }
    }

    fn discover(&self, service: &NodeAddr, expect: usize) -> Result<Vec<NodeAddr>> {
        let mut waiting = Waiting::new("wait", self.clock, self.deadline);
        let mut last = String::new();
        let found = poll(self.clock, self.deadline, || {
            last = match discovery::resolve(service.host()) {
                Ok(ips) if ips.len() >= expect => return Ok::<_, Infallible>(Some(ips)),
                Ok(ips) => format!("{} of COUCHDB_EXPECT={expect} addresses resolve", ips.len()),
                Err(why) => format!("the name does not resolve (DNS: {why})"),
            };
            waiting.report(|| format!("COUCHDB_SERVICE {}: {last}", service.label));
            Ok(None)
        });
        match found {
            Ok(Some(ips)) => {
                let shown: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
                info!(
                    "wait: {} resolves to {} addresses ({})",
                    service.label,
                    ips.len(),
                    list_compact(&shown)
                );
                Ok(discovery::nodes_at(service, &ips))
            }
            _ => Err(Failure::new(
                Status::Unreachable,
                format!(
                    "COUCHDB_SERVICE {} after {:.0?}: {last}. A DNS problem: check that the headless Service \
                     exists in this namespace with publishNotReadyAddresses: true, and that COUCHDB_EXPECT is \
                     not more than the StatefulSet's replicas",
                    service.label,
                    self.timeout()
                ),
            )
            .into()),
        }
    }

    /// Polls `/_up` on the nodes that are not up yet, all at once, until none is left.
    pub fn wait_up_on(&self, nodes: &[NodeAddr]) -> Result<()> {
        self.wait_up_on_some(nodes, nodes.len(), None).map(|_| ())
    }

    /// Polls `/_up` on the nodes that are not up yet until at least `need` are, `must` (an index)
    /// among them; returns the indices of those up.
    fn wait_up_on_some(
        &self,
        nodes: &[NodeAddr],
        need: usize,
        must: Option<usize>,
    ) -> Result<Vec<usize>> {
        let mut waiting = Waiting::new("wait", self.clock, self.deadline);
        // None once the node is up; else what it does instead.
        let mut states: Vec<Option<String>> = vec![Some("not asked yet".into()); nodes.len()];
        let down = |states: &[Option<String>]| -> Vec<String> {
            nodes
                .iter()
                .zip(states)
                .filter_map(|(n, s)| s.as_ref().map(|s| format!("{} ({s})", n.label)))
                .collect()
        };
        let up = poll(self.clock, self.deadline, || {
            let lagging: Vec<usize> = (0..nodes.len()).filter(|&i| states[i].is_some()).collect();
            let seen = each(&lagging, |&i| self.up_state(&nodes[i]));
            for (i, state) in lagging.into_iter().zip(seen) {
                let state = state?;
                if state != states[i] {
                    debug!(
                        "wait: {} {}",
                        nodes[i].label,
                        state.as_deref().unwrap_or("is up")
                    );
                }
                states[i] = state;
            }
            let down = down(&states);
            let must_up = must.is_none_or(|i| states[i].is_none());
            if nodes.len() - down.len() >= need && must_up {
                return Ok(Some(()));
            }
            waiting.report(|| {
                format!(
                    "{} of {} nodes: {}",
                    down.len(),
                    nodes.len(),
                    list_some(&down)
                )
            });
            Ok::<_, NodeError>(None)
        })?;
        if up.is_some() {
            return Ok((0..nodes.len()).filter(|&i| states[i].is_none()).collect());
        }
        let down = down(&states);
        Err(Failure::new(
            Status::Unreachable,
            format!(
                "not up after {:.0?}: {} of {} nodes: {} — check that the node runs and that its address is right",
                self.timeout(),
                down.len(),
                nodes.len(),
                list_some(&down)
            ),
        )
        .into())
    }

    /// `None` when the node is up; else what it does instead, in words. A name that does not
    /// resolve is said to be one: in Kubernetes, a pod's name resolves once it has an address.
    /// A drained node (`nolb`) is up: it serves the cluster, only not the load balancer.
    pub fn up_state(&self, node: &NodeAddr) -> NodeResult<Option<String>> {
        match self.client.up(node) {
            Ok(Up::Ready) => Ok(None),
            Ok(Up::NotReady(state)) if state == DRAINED => Ok(None),
            Ok(Up::NotReady(state)) => Ok(Some(format!("answers /_up with `{state}`"))),
            Err(NodeError::Unreachable { reason, .. }) => Ok(Some(
                discovery::dns_problem(node.host())
                    .unwrap_or_else(|| format!("not answering yet: {reason}")),
            )),
            Err(e) => Err(e),
        }
    }

    // ---- identify ---------------------------------------------------------------------------

    /// Asks every node its Erlang name and picks the coordinator: the one configured, or — for
    /// nodes found by DNS — the lowest name, so that every run, and two at once, pick the same.
    pub fn identify(&self, addrs: &[NodeAddr]) -> Result<Nodes> {
        let names = self.read_each(addrs, |node| self.client.local_name(node))?;
        let mut all: Vec<Identified> = Vec::new();
        for (addr, name) in addrs.iter().zip(names) {
            check_erlang_name(&addr.label, &name)?;
            if let Some(twin) = all.iter().find(|n| n.name == name) {
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
            debug!("identify: {} is {name}", addr.label);
            all.push(Identified {
                addr: addr.clone(),
                name,
            });
        }
        let coordinator = match &self.cfg.nodes {
            // The coordinator by its address: a run may have only some of the listed nodes.
            NodeList::Listed {
                nodes, coordinator, ..
            } => all
                .iter()
                .position(|n| n.addr == nodes[*coordinator])
                .ok_or_else(|| {
                    Failure::new(
                        Status::Unreachable,
                        format!(
                            "the coordinator {} is not among the nodes that answer",
                            nodes[*coordinator].label
                        ),
                    )
                })?,
            NodeList::Service { .. } => {
                all.sort_by(|a, b| natural_cmp(&a.name, &b.name));
                let names: Vec<String> = all.iter().map(|n| n.name.clone()).collect();
                for (node, label) in all.iter_mut().zip(discovery::short_labels(&names)) {
                    node.addr.label = label;
                }
                0
            }
        };
        let names: Vec<String> = all.iter().map(|n| n.name.clone()).collect();
        info!("identify: {} nodes: {}", all.len(), list_compact(&names));
        Ok(Nodes { all, coordinator })
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

/// NODE as `remove`, `drain` and `undrain` take it: an Erlang name (`None`), or the address of
/// one of the nodes as COUCHDB_NODES writes it (its index there). `command` names it in messages.
pub fn listed_as(addrs: &[NodeAddr], node: &str, command: &str) -> Result<Option<usize>> {
    if node.contains('@') {
        return Ok(None);
    }
    let addr = parse_node(&format!("{command} NODE"), node)?;
    let i = addrs.iter().position(|n| n.url == addr.url).ok_or_else(|| {
        Failure::new(
            Status::Config,
            format!(
                "`{node}` is not an Erlang name (name@host) nor the address of one of the nodes ({})",
                addrs
                    .iter()
                    .map(|n| n.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    Ok(Some(i))
}

/// Refuses names CouchDB cannot cluster with, before anything is written.
pub fn check_erlang_name(label: &str, name: &str) -> Result<()> {
    let fail =
        |why: String| Err(Failure::new(Status::Config, format!("node {label}: {why}")).into());
    if name == "nonode@nohost" {
        return fail(
            "its Erlang name is nonode@nohost: it was started without NODENAME (or ERL_FLAGS=-name couchdb). Set NODENAME to a dotted \
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
    fn node_is_a_name_or_a_listed_address() {
        let c: Vec<NodeAddr> = ["couchdb-1", "couchdb-2:6984"]
            .iter()
            .map(|n| parse_node("COUCHDB_NODES", n).unwrap())
            .collect();
        assert_eq!(
            listed_as(&c, "couchdb@couchdb-9.cluster", "remove").unwrap(),
            None
        );
        assert_eq!(listed_as(&c, "couchdb-2:6984", "remove").unwrap(), Some(1));
        assert_eq!(
            listed_as(&c, "http://couchdb-1:5984", "remove").unwrap(),
            Some(0)
        );
        let e = listed_as(&c, "couchdb-3", "remove").unwrap_err();
        assert_eq!(crate::util::exit::status_of(&e), Status::Config);
        assert!(format!("{e}").contains("couchdb-1, couchdb-2:6984"), "{e}");
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
            assert_eq!(crate::util::exit::status_of(&e), Status::Config);
            assert!(format!("{e}").contains(expect), "{name}: {e}");
        }
        check_erlang_name("a", "couchdb@10.0.0.1").unwrap();
        check_erlang_name("a", "couchdb@couchdb-1.cluster.local").unwrap();
    }
}
