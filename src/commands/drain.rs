//! `drain NODE`: take a node out of the load balancer before it is stopped, in an operator's
//! steps:
//!
//! 1. read the cluster (not through NODE), without waiting;
//! 2. refuse, writing nothing, while another node is drained (one at a time), a member is down
//!    or not connected, or the cluster is not healthy;
//! 3. set NODE's `maintenance_mode = nolb`: its `/_up` answers 404, so the load balancer's
//!    health check (and a Kubernetes readiness probe) leaves it, while it still serves the
//!    cluster's own traffic (PROTOCOL.md, the rolling upgrade);
//! 4. wait until the load balancer has really stopped sending it requests: with
//!    COUCHDB_LB_URL, `LB_PROOF` requests in a row through it, without a sticky cookie, each
//!    answered (`GET /_node/_local` says who served it) by another node; without it, one
//!    health-check interval (COUCHDB_LB_INTERVAL) and `LB_MARGIN` after `/_up` answered 404;
//! 5. say that it is safe to stop.
//!
//! Run again on a drained node it skips to step 4: a run killed half-way finishes. `undrain`
//! brings the node back.

use std::time::Duration;

use anyhow::Result;
use log::{debug, info};

use crate::client::{NodeError, Up, DRAINED};
use crate::cluster::health::{databases, verdict};
use crate::cluster::session::{listed_as, Session};
use crate::cluster::survey::{State, Survey};
use crate::util::clock::{poll, Clock};
use crate::util::config::{Config, NodeAddr};
use crate::util::exit::{Failure, Status};
use crate::util::text::list_some;

/// Requests in a row the load balancer must answer from other nodes: round-robin over two
/// nodes reaches each ten times; a balancer still giving the node a third of the requests
/// would pass by chance once in 3^20/2^20 ≈ 3 300 tries.
pub const LB_PROOF: usize = 20;
/// Between two of them: a client's pace, not a flood.
const LB_PACE: Duration = Duration::from_millis(25);
/// What a health check takes on top of its interval: the check itself, and the balancer acting
/// on it.
pub const LB_MARGIN: Duration = Duration::from_secs(1);

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Erlang name, or an address in COUCHDB_NODES.
    pub node: String,
}

/// The node a command acts on: its Erlang name, and its address when it is listed.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: Option<NodeAddr>,
}

impl Target {
    /// `couchdb-2 (couchdb@couchdb-2.couchdb.internal)`, or the name alone.
    pub fn label(&self) -> String {
        match &self.addr {
            Some(a) => format!("{} ({})", a.label, self.name),
            None => self.name.clone(),
        }
    }
}

pub fn drain(cfg: &Config, clock: &dyn Clock, opts: &Options) -> Result<String> {
    let session = Session::new(cfg, clock, cfg.init_timeout);
    let addrs = session.addresses()?;
    let (survey, target) = session.phase("survey", "every node and shard map", || {
        let target = target(&session, &addrs, &opts.node, "drain", false)?;
        Ok((session.survey(&addrs, Some(&target.name))?, target))
    })?;
    let already = survey.node(&target.name).is_some_and(|n| n.drained());
    if already {
        info!(
            "drain: {} is drained already (maintenance_mode {DRAINED}); making sure the load balancer has left it",
            target.label()
        );
    } else {
        preflight(&survey, &target)?;
        session.phase(
            "drain",
            &format!("maintenance_mode = {DRAINED} on {}", target.label()),
            || set_drained(&session, &survey.via, &target),
        )?;
    }
    let proof = session.phase(
        "leave",
        "the load balancer to stop sending it requests",
        || leave(&session, &target),
    )?;
    Ok(format!(
        "{} drained: {proof}; safe to stop it (`undrain {}` brings it back)",
        target.label(),
        opts.node
    ))
}

/// NODE: asked for its name when it is given by address. `wait`: until it answers (`undrain`:
/// it may be starting); else once (`drain`: a node that does not answer is refused).
pub fn target(
    session: &Session,
    addrs: &[NodeAddr],
    node: &str,
    command: &str,
    wait: bool,
) -> Result<Target> {
    let Some(i) = listed_as(addrs, node, command)? else {
        return Ok(Target {
            name: node.to_string(),
            addr: addrs_named(session, addrs, node),
        });
    };
    let addr = &addrs[i];
    let name = match wait {
        true => session.read(|| session.client.local_name(addr))?,
        false => session.client.local_name(addr).map_err(|e| match e {
            NodeError::Unreachable { .. } => Failure::new(
                Status::Drain,
                format!(
                    "not draining {}: it does not answer ({e}); nothing written",
                    addr.label
                ),
            )
            .into(),
            other => anyhow::Error::from(other),
        })?,
    };
    Ok(Target {
        name,
        addr: Some(addr.clone()),
    })
}

/// The address among `addrs` of the node called `name`, if one answers to it.
fn addrs_named(session: &Session, addrs: &[NodeAddr], name: &str) -> Option<NodeAddr> {
    addrs
        .iter()
        .find(|a| session.client.local_name(a).is_ok_and(|n| n == name))
        .cloned()
}

/// One node out of the load balancer at a time, and only out of a healthy cluster.
fn preflight(s: &Survey, target: &Target) -> Result<()> {
    let refuse = |why: String| -> Result<()> {
        Err(Failure::new(
            Status::Drain,
            format!("not draining {}: {why}; nothing written", target.label()),
        )
        .into())
    };
    if !s.members.contains(&target.name) {
        let members: Vec<String> = s.members.iter().cloned().collect();
        return refuse(format!(
            "it is not a member (the members: {})",
            list_some(&members)
        ));
    }
    let others_out: Vec<String> = s
        .nodes
        .iter()
        .filter(|n| n.name.as_deref() != Some(target.name.as_str()))
        .filter(|n| matches!(n.state, State::Maintenance(_)))
        .map(|n| n.label())
        .collect();
    if !others_out.is_empty() {
        return refuse(format!(
            "{} is drained or in maintenance already: one node at a time (undrain it first)",
            list_some(&others_out)
        ));
    }
    let down: Vec<String> = s
        .members
        .iter()
        .filter(|m| **m != target.name && !s.connected.contains(*m))
        .cloned()
        .collect();
    if !down.is_empty() {
        return refuse(format!(
            "member(s) {} are not connected: with another node out, ranges would be left with fewer \
             copies than n",
            list_some(&down)
        ));
    }
    let problems = verdict(s, &databases(s));
    if let Some(first) = problems.first() {
        return refuse(format!(
            "the cluster is not healthy ({} problem(s); the first: {})",
            problems.len(),
            first.text
        ));
    }
    let serving = s
        .members
        .iter()
        .filter(|m| **m != target.name && s.serving(m))
        .count();
    if serving == 0 {
        return refuse("no other member would be left to serve the load balancer".into());
    }
    Ok(())
}

/// `maintenance_mode = nolb` on the node (asked through `via` when it is not listed), and its
/// `/_up` answering 404.
pub fn set_drained(session: &Session, via: &NodeAddr, target: &Target) -> Result<()> {
    match &target.addr {
        Some(addr) => {
            session.read(|| session.client.set_maintenance(addr, "_local", DRAINED))?;
            // Its own /_up is what the load balancer asks.
            let seen = poll(session.clock, session.deadline, || {
                match session.client.up(addr)? {
                    Up::NotReady(mode) if mode == DRAINED => Ok::<_, NodeError>(Some(())),
                    other => {
                        debug!("drain: {} answers /_up with {other:?} still", addr.label);
                        Ok(None)
                    }
                }
            })?;
            if seen.is_none() {
                return Err(Failure::new(
                    Status::Drain,
                    format!(
                        "{} was set to maintenance_mode {DRAINED} but its /_up does not answer 404: \
                         is something resetting it? It stays drained: `undrain` to bring it back",
                        target.label()
                    ),
                )
                .into());
            }
        }
        None => {
            session.read(|| session.client.set_maintenance(via, &target.name, DRAINED))?;
        }
    }
    info!(
        "drain: {} answers /_up with 404 `{DRAINED}` now",
        target.label()
    );
    Ok(())
}

/// Until the load balancer no longer sends the node requests: the proof (COUCHDB_LB_URL), or
/// one health-check interval. Returns what was seen, in words.
pub fn leave(session: &Session, target: &Target) -> Result<String> {
    let Some(lb) = &session.cfg.drain.lb else {
        let wait = session.cfg.drain.lb_interval + LB_MARGIN;
        info!(
            "leave: no COUCHDB_LB_URL to ask, so waiting one health-check interval: {:.0?} \
             (COUCHDB_LB_INTERVAL {:.0?}, plus {:.0?})",
            wait, session.cfg.drain.lb_interval, LB_MARGIN
        );
        session.clock.sleep(wait);
        return Ok(format!(
            "/_up answers 404 and one health-check interval ({:.0?}) has passed",
            session.cfg.drain.lb_interval
        ));
    };
    let mut streak = 0;
    let mut seen = Vec::<String>::new();
    let mut last = String::from("no answer yet");
    let done = poll(session.clock, session.deadline, || {
        while streak < LB_PROOF {
            match session.client.local_name(lb) {
                Ok(name) if name == target.name => {
                    if streak > 0 || last != "it still answered" {
                        debug!(
                            "leave: {} still got a request through {}",
                            target.name, lb.label
                        );
                    }
                    streak = 0;
                    last = "it still answered".into();
                    return Ok(None);
                }
                Ok(name) => {
                    streak += 1;
                    if !seen.contains(&name) {
                        seen.push(name);
                    }
                }
                // A balancer briefly without a healthy node, or between two configurations.
                Err(NodeError::Unreachable { reason, .. })
                | Err(NodeError::Unexpected { reason, .. }) => {
                    streak = 0;
                    last = format!("it answered: {reason}");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
            session.clock.sleep(LB_PACE);
        }
        Ok::<_, NodeError>(Some(()))
    })?;
    if done.is_none() {
        return Err(Failure::new(
            Status::Drain,
            format!(
                "the load balancer {} still did not answer {LB_PROOF} requests in a row from other nodes \
                 ({last}) after {:.0?}: {} stays drained but is not proven out of rotation; do not stop it \
                 yet (its health check: /_up, which answers 404 now)",
                lb.label,
                session.elapsed(),
                target.label()
            ),
        )
        .into());
    }
    seen.sort();
    Ok(format!(
        "{LB_PROOF} requests in a row through {} went to {}",
        lb.label,
        list_some(&seen)
    ))
}
