//! `guard`: drain and undrain for Kubernetes, where no script runs between a pod's stop and
//! start. A sidecar beside one CouchDB node — the first of COUCHDB_NODES, `localhost:5984` in
//! the pod — that keeps running:
//!
//! 1. at start, waits as `undrain` does until its node is a connected member and every copy on
//!    it holds what the other copies of its range hold (the writes made while it was away);
//!    found drained (a `/drain` before the pod's last stop, kept in `local.d`), it then clears
//!    that: the drain was for the stop that has happened;
//! 2. `GET /ready` answers 200 once (1) is done and while the node's `/_up` answers 200: the
//!    pod's readiness probe adds it, so the pod gets no Service traffic until it has caught up
//!    — after a drain, a crash or a first start alike;
//! 3. `GET /drain` is the preStop hook: it drains the node (never refused — the pod stops
//!    anyway; it logs what `drain` would have refused for) and answers once the Service
//!    (COUCHDB_LB_URL) no longer sends it requests, or one readiness period has passed;
//! 4. SIGTERM/SIGINT: exit 0.
//!
//! It never drains a node by itself, and clears a drain only at its own start.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use log::{info, warn};

use crate::client::{Up, DRAINED};
use crate::cluster::session::Session;
use crate::cluster::survey::State;
use crate::commands::drain::{leave, set_drained, Target};
use crate::commands::undrain::{back, catch_up, undrain_now};
use crate::util::clock::{Clock, Stoppable};
use crate::util::config::{Config, NodeAddr, NodeList};
use crate::util::exit::{status_of, Failure, Status};
use crate::util::serve::{self, Reply};
use crate::util::sync::lock;

/// A start-up that did not finish within COUCHDB_INIT_TIMEOUT is tried again after this.
const AGAIN: Duration = Duration::from_secs(5);

/// What `/ready` answers from: why not yet, or proven.
#[derive(Debug, Default)]
struct Guarded {
    caught_up: bool,
    why: String,
}

pub fn guard(cfg: &Config, stop: &AtomicBool) -> Result<()> {
    let clock = Stoppable { flag: stop };
    let node = guarded(cfg)?;
    let state = Arc::new(Mutex::new(Guarded {
        caught_up: false,
        why: "starting".into(),
    }));
    let bound = serve::start(cfg.drain.guard_addr, "COUCHDB_GUARD_ADDR", {
        let (state, node, cfg) = (state.clone(), node.clone(), cfg.clone());
        Arc::new(move |path: &str| answer(&cfg, &node, &state, path))
    })?;
    info!("guard: {}; /ready and /drain on http://{bound}", node.label);
    while !clock.stopped() {
        let session = Session::new(cfg, &clock, cfg.init_timeout);
        match start_up(&session, &node) {
            Ok(said) => {
                info!("guard: {said}; ready");
                lock(&state).caught_up = true;
                break;
            }
            Err(e) if status_of(&e) == Status::Auth => return Err(e),
            Err(_) if clock.stopped() => break,
            Err(e) => {
                warn!("guard: {e:#}; trying again in {AGAIN:.0?}");
                lock(&state).why = format!("{e:#}");
                clock.sleep(AGAIN);
            }
        }
    }
    while !clock.stopped() {
        clock.sleep(Duration::from_secs(1));
    }
    info!("guard: stopped by a signal");
    Ok(())
}

/// The node it guards: the first of COUCHDB_NODES.
fn guarded(cfg: &Config) -> Result<NodeAddr> {
    match &cfg.nodes {
        NodeList::Listed { nodes, .. } => Ok(nodes[0].clone()),
        NodeList::Service { .. } => Err(Failure::new(
            Status::Config,
            "guard watches one node: set COUCHDB_NODES to it (localhost:5984 in the node's pod), \
             not COUCHDB_SERVICE",
        )
        .into()),
    }
}

/// Back, caught up, and undrained if a drain before its stop left it so.
fn start_up(session: &Session, node: &NodeAddr) -> Result<String> {
    let name = session.read(|| session.client.local_name(node))?;
    let target = Target {
        name,
        addr: Some(node.clone()),
    };
    let survey = session.phase(
        "back",
        &format!(
            "{} to be a connected member, every member connected",
            target.label()
        ),
        || back(session, std::slice::from_ref(node), &target, false),
    )?;
    let copies = session.phase(
        "catch up",
        &format!(
            "every copy on {} to hold what the other copies hold",
            target.label()
        ),
        || catch_up(session, &survey, &target),
    )?;
    let drained = survey
        .node(&target.name)
        .is_some_and(|n| matches!(n.state, State::Maintenance(_)));
    if drained {
        session.phase(
            "undrain",
            &format!(
                "maintenance_mode off on {} (drained before its stop)",
                target.label()
            ),
            || undrain_now(session, &survey, &target),
        )?;
    }
    Ok(format!(
        "{}: {copies} caught up{}",
        target.label(),
        if drained { ", undrained" } else { "" }
    ))
}

fn answer(cfg: &Config, node: &NodeAddr, state: &Mutex<Guarded>, path: &str) -> Reply {
    let clock = crate::util::clock::SystemClock;
    match path {
        "/ready" => {
            let (caught_up, why) = {
                let s = lock(state);
                (s.caught_up, s.why.clone())
            };
            if !caught_up {
                return Reply::text(503, format!("not caught up yet: {why}\n"));
            }
            let session = Session::new(cfg, &clock, cfg.request_timeout);
            match session.client.up(node) {
                Ok(Up::Ready) => Reply::text(200, "ready\n"),
                Ok(Up::NotReady(mode)) => Reply::text(503, format!("/_up answers {mode}\n")),
                Err(e) => Reply::text(503, format!("{e}\n")),
            }
        }
        "/drain" => {
            let session = Session::new(cfg, &clock, cfg.init_timeout);
            match drain_for_stop(&session, node) {
                Ok(said) => Reply::text(200, format!("{said}\n")),
                Err(e) => {
                    warn!("guard: /drain: {e:#}");
                    Reply::text(500, format!("{e:#}\n"))
                }
            }
        }
        _ => Reply::text(404, "only /ready and /drain\n"),
    }
}

/// The preStop hook's drain: whatever the cluster's state, the pod is going to stop.
fn drain_for_stop(session: &Session, node: &NodeAddr) -> Result<String> {
    let target = Target {
        name: session.read(|| session.client.local_name(node))?,
        addr: Some(node.clone()),
    };
    info!(
        "guard: /drain: the pod is stopping; maintenance_mode {DRAINED} on {}",
        target.label()
    );
    set_drained(session, node, &target)?;
    let proof = leave(session, &target)?;
    info!("guard: /drain: {}: {proof}; it may stop", target.label());
    Ok(format!("{} drained: {proof}", target.label()))
}
