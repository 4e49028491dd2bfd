//! `undrain NODE`: bring a drained node back into the load balancer once it is ready, in an
//! operator's steps:
//!
//! 1. **back**: wait until NODE answers again (it may still be starting, on a new image) and
//!    is a connected member: the other members list it as connected, it lists them, and every
//!    member is connected (its copies are compared against theirs);
//! 2. **catch up**: wait until each of its copies holds what the other copies of its range hold
//!    — the writes made while it was away arrive from its peers a moment after it reconnects
//!    (src/cluster/catchup.rs: how it is measured, and why `internal_replication_jobs` is not);
//! 3. **undrain**: only then clear `maintenance_mode`: `/_up` answers 200 again;
//! 4. **routed**: with COUCHDB_LB_URL, wait until the load balancer sends it requests again.
//!
//! Not back or not caught up within COUCHDB_INIT_TIMEOUT: exit 14, naming what it waited for;
//! the node stays drained and nothing was written. A node that is not drained is left alone.

use anyhow::Result;
use log::{info, warn};

use crate::client::{NodeError, Up};
use crate::cluster::catchup::{behind, copies_of, Behind};
use crate::cluster::session::{Session, Waiting};
use crate::cluster::survey::{State, Survey};
use crate::commands::drain::{target, Options, Target};
use crate::util::clock::poll;
use crate::util::clock::Clock;
use crate::util::config::{Config, NodeAddr};
use crate::util::exit::{status_of, Failure, Status};
use crate::util::text::list_some;

pub fn undrain(cfg: &Config, clock: &dyn Clock, opts: &Options) -> Result<String> {
    let session = Session::new(cfg, clock, cfg.init_timeout);
    let addrs = session.addresses()?;
    let mut target = session.phase("back", &format!("{} to answer", opts.node), || {
        target(&session, &addrs, &opts.node, "undrain", true)
            .map_err(|e| not_back(&session, &opts.node, e))
    })?;
    let survey = session.phase(
        "back",
        &format!(
            "{} to be a connected member, every member connected",
            target.label()
        ),
        || back(&session, &addrs, &target, true),
    )?;
    // Given by name while it was down: its address is known once it answers.
    if target.addr.is_none() {
        target.addr = survey.node(&target.name).and_then(|n| n.addr.clone());
    }
    let drained = match survey.node(&target.name).map(|n| &n.state) {
        Some(State::Maintenance(mode)) => mode.clone(),
        _ => {
            info!("undrain: {} is not drained: nothing to do", target.label());
            return Ok(format!(
                "{} is not drained; nothing written",
                target.label()
            ));
        }
    };
    let copies = session.phase(
        "catch up",
        &format!(
            "every copy on {} to hold what the other copies hold",
            target.label()
        ),
        || catch_up(&session, &survey, &target),
    )?;
    session.phase(
        "undrain",
        &format!("maintenance_mode off on {} (was {drained})", target.label()),
        || undrain_now(&session, &survey, &target),
    )?;
    let routed = match &cfg.drain.lb {
        Some(lb) => session.phase(
            "routed",
            &format!("the load balancer {} to send it requests", lb.label),
            || Ok(routed(&session, lb, &target)),
        )?,
        None => "/_up answers 200".to_string(),
    };
    Ok(format!(
        "{} is back: {copies} caught up with the others, {routed}",
        target.label()
    ))
}

/// Until the node is a connected member and every member is connected; the survey then, read
/// through another node (`not_through_it`) unless it is the only one listed (`guard`).
pub fn back(
    session: &Session,
    addrs: &[NodeAddr],
    target: &Target,
    not_through_it: bool,
) -> Result<Survey> {
    let avoid = not_through_it.then_some(target.name.as_str());
    let mut waiting = Waiting::new("back", session.clock, session.deadline);
    let mut last = String::from("not asked yet");
    let found = poll(session.clock, session.deadline, || {
        let survey = match session.survey(addrs, avoid) {
            Ok(s) => s,
            Err(e) if status_of(&e) == Status::Unreachable => {
                last = format!("{e:#}");
                waiting.report(|| last.clone());
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match missing(&survey, target) {
            None => Ok(Some(survey)),
            Some(why) => {
                last = why;
                waiting.report(|| format!("{}: {last}", target.label()));
                Ok(None)
            }
        }
    })?;
    found.ok_or_else(|| {
        Failure::new(
            Status::NotBack,
            format!(
                "{} did not come back within {:.0?}: {last}. It stays drained; nothing was written",
                target.label(),
                session.elapsed()
            ),
        )
        .into()
    })
}

/// What keeps the node from being a connected member, in words; `None` when nothing does.
fn missing(s: &Survey, target: &Target) -> Option<String> {
    if !s.members.contains(&target.name) {
        return Some(format!("not a member of the cluster {} sees", s.via.label));
    }
    if !s.connected.contains(&target.name) {
        return Some(format!("not connected to {}", s.via.label));
    }
    let down: Vec<String> = s
        .members
        .iter()
        .filter(|m| !s.connected.contains(*m))
        .cloned()
        .collect();
    if !down.is_empty() {
        return Some(format!(
            "member(s) {} not connected: its copies are compared against theirs",
            list_some(&down)
        ));
    }
    let node = s.node(&target.name)?;
    match (&node.state, &node.membership) {
        (State::Down(why), _) => Some(format!("does not answer: {why}")),
        // Its own view, when it is listed: it must see every member too.
        (_, Some(m)) => {
            let unseen: Vec<String> = s
                .members
                .iter()
                .filter(|x| !m.all_nodes.contains(x))
                .cloned()
                .collect();
            (!unseen.is_empty()).then(|| format!("it does not see {} yet", list_some(&unseen)))
        }
        (_, None) => None,
    }
}

/// Until every copy on the node holds what the others hold; how many copies, in words.
pub fn catch_up(session: &Session, s: &Survey, target: &Target) -> Result<String> {
    let all = copies_of(s, &target.name);
    let mut todo = all.clone();
    let mut lagging: Vec<Behind> = Vec::new();
    let mut waiting = Waiting::new("catch up", session.clock, session.deadline);
    let done = poll(session.clock, session.deadline, || {
        match behind(session, s, &s.via, &todo) {
            Ok(lags) => lagging = lags,
            // A node that drops out meanwhile: asked again (and named at the deadline).
            Err(e) if status_of(&e) == Status::Unreachable => {
                waiting.report(|| format!("{e:#}"));
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        // A copy proven stays proven: what is written from now on reaches it directly.
        todo.retain(|(db, range, _)| lagging.iter().any(|l| l.db == *db && l.range == *range));
        if todo.is_empty() {
            return Ok(Some(()));
        }
        waiting.report(|| {
            let shown: Vec<String> = lagging.iter().map(|l| l.to_string()).collect();
            format!(
                "{} of {} copies: {}",
                lagging.len(),
                all.len(),
                list_some(&shown)
            )
        });
        Ok::<_, anyhow::Error>(None)
    })?;
    if done.is_none() {
        let shown: Vec<String> = lagging.iter().map(|l| l.to_string()).collect();
        return Err(Failure::new(
            Status::NotBack,
            format!(
                "{} has not caught up within {:.0?}: {} of its {} copies hold less than the others ({}). \
                 It stays drained; nothing was written. Run `undrain` again to keep waiting; if the \
                 counts never meet, `status --details` shows the copies",
                target.label(),
                session.elapsed(),
                lagging.len(),
                all.len(),
                list_some(&shown)
            ),
        )
        .into());
    }
    info!(
        "catch up: every one of the {} copies on {} holds what the other copies of its range hold",
        all.len(),
        target.label()
    );
    Ok(format!(
        "{} cop{}",
        all.len(),
        if all.len() == 1 { "y" } else { "ies" }
    ))
}

/// Clears `maintenance_mode`, then waits for `/_up` 200.
pub fn undrain_now(session: &Session, s: &Survey, target: &Target) -> Result<()> {
    let Some(addr) = &target.addr else {
        session.read(|| {
            session
                .client
                .set_maintenance(&s.via, &target.name, "false")
        })?;
        return Ok(());
    };
    session.read(|| session.client.set_maintenance(addr, "_local", "false"))?;
    let up = poll(session.clock, session.deadline, || {
        Ok::<_, NodeError>((session.client.up(addr)? == Up::Ready).then_some(()))
    })?;
    if up.is_none() {
        return Err(Failure::new(
            Status::NotBack,
            format!(
                "{}: maintenance_mode was cleared but /_up still does not answer 200",
                target.label()
            ),
        )
        .into());
    }
    info!("undrain: {} answers /_up with 200 again", target.label());
    Ok(())
}

/// Until a request through the load balancer is served by the node (a warning at the
/// deadline, not a failure: it is back, and serving the cluster).
fn routed(session: &Session, lb: &NodeAddr, target: &Target) -> String {
    let mut tries = 0;
    let seen = poll(session.clock, session.deadline, || {
        tries += 1;
        Ok::<_, NodeError>(match session.client.local_name(lb) {
            Ok(name) if name == target.name => Some(()),
            _ => None,
        })
    });
    match seen {
        Ok(Some(())) => format!("the load balancer routes to it again (request {tries})"),
        _ => {
            warn!(
                "routed: {} did not answer any of {tries} requests through {} before the deadline; \
                 it is undrained — check the load balancer's health check",
                target.label(),
                lb.label
            );
            format!("not seen through {} yet", lb.label)
        }
    }
}

/// A node that does not answer yet (a container being re-created): exit 14 at the deadline.
fn not_back(session: &Session, node: &str, e: anyhow::Error) -> anyhow::Error {
    if status_of(&e) != Status::Unreachable {
        return e;
    }
    Failure::new(
        Status::NotBack,
        format!(
            "{node} did not come back within {:.0?}: {e:#}. It stays drained; nothing was written",
            session.elapsed()
        ),
    )
    .into()
}
