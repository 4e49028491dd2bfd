//! `watch`: keeps the cluster formed. Every COUCHDB_WATCH_INTERVAL it looks at the cluster the
//! way `check` does, and only when the look shows something `init` would do does it run init's
//! own procedure (`Formation::form`) on the nodes that answer:
//!
//! 1. **find** the nodes — COUCHDB_NODES, or the addresses COUCHDB_SERVICE resolves to now;
//! 2. **look** — `check`'s survey and verdict (GETs only), published as metrics;
//! 3. **form or join** — once COUCHDB_EXPECT nodes answer and the cluster is not finished yet; or
//!    when an answering node is not a member, or config drifts — while every member answers
//!    (init refuses to work around a member it cannot see);
//! 4. **backup** — with COUCHDB_BACKUP_URL, every selected database replicated (init's backup
//!    procedure, only where a database lacks its replication or its copy on the backup).
//!
//! It never removes a member, moves a copy or deletes anything. A look that finds nothing to do
//! writes nothing and logs nothing at info; a change logs one line. A wrong password ends it
//! (exit 4: retrying would lock the account); any other failure is logged once and tried again
//! on the next tick. SIGTERM/SIGINT stop the waits (`clock::Stoppable`): the request in hand
//! finishes, and it exits 0.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use anyhow::Result;
use log::{info, warn};

use crate::client::Client;
use crate::cluster::health::{drift, zone_drift, SYSTEM_DBS};
use crate::cluster::session::Session;
use crate::cluster::survey::{NodeView, State, Survey};
use crate::commands::backup::{status_problems, Backup};
use crate::commands::formation::{Formation, CHECK_WAIT};
use crate::commands::status::{self, Report};
use crate::util::clock::{Clock, Stoppable};
use crate::util::config::{Config, NodeAddr, NodeList};
use crate::util::discovery;
use crate::util::exit::{status_of, Failure, NodeError, Status};
use crate::util::logging;
use crate::util::sync::lock;
use crate::util::text::{list_compact, list_some};

mod metrics;
mod page;
mod serve;

use metrics::{BackupLag, Lines, NodeRow, Shared, Snapshot, PROBLEM_DBS};

/// Bytes per node are read on the first tick and every this many after it: they cost one GET
/// per copy (thousands with many databases), which an idle tick must not (every 5 minutes at
/// the default interval). Between readings the last ones are published.
const SIZES_EVERY: u64 = 20;

/// Runs until SIGTERM/SIGINT (Ok) or a wrong password (Err, exit 4).
pub fn watch(cfg: &Config, stop: &AtomicBool) -> Result<()> {
    let clock = Stoppable { flag: stop };
    logging::only_at_info(module_path!());
    let shared = Arc::new(Mutex::new(Shared::new(
        cfg.watch_interval,
        cfg.init_timeout + cfg.request_timeout,
    )));
    let bound = serve::start(cfg.metrics_addr, shared.clone())?;
    info!(
        "watch: looking every {:.0?}; metrics on http://{bound}/metrics",
        cfg.watch_interval
    );
    let mut said = String::new();
    let mut failing = String::new();
    let mut bytes = BTreeMap::new();
    let mut security = None;
    let mut ticks = 0u64;
    while !clock.stopped() {
        lock(&shared).tick_started = Some(Instant::now());
        let outcome = tick(cfg, &clock, ticks.is_multiple_of(SIZES_EVERY));
        ticks += 1;
        let now = SystemTime::now();
        let mut m = lock(&shared);
        m.tick_started = None;
        m.ticks += 1;
        m.last_tick = Some((Instant::now(), now));
        // What changed, logged once and kept for the status page: (a warning?, the line).
        let mut changes = Vec::new();
        match outcome {
            Ok(mut look) => {
                match look.snapshot.bytes.is_empty() {
                    true => look.snapshot.bytes = bytes.clone(),
                    false => bytes = look.snapshot.bytes.clone(),
                }
                match &look.snapshot.security {
                    None => look.snapshot.security = security.clone(),
                    Some(kinds) => {
                        if security.as_ref() != Some(kinds) && !kinds.is_empty() {
                            let line = format!(
                                "security: {} finding(s): {} (`status` says what to change)",
                                kinds.len(),
                                kinds.join(", ")
                            );
                            warn!("watch: {line}");
                            m.record(now, true, &line);
                        }
                        security = Some(kinds.clone());
                    }
                }
                if let Some(e) = &look.snapshot.backup_error {
                    m.errors += 1;
                    if *e != failing {
                        changes.push((true, format!("backup: {e}")));
                        failing = e.clone();
                    }
                } else {
                    failing.clear();
                }
                let state = &look.snapshot.summary;
                if !look.actions.is_empty() {
                    changes.push((false, format!("{}; {state}", look.actions.join(", "))));
                } else if *state != said {
                    changes.push((false, state.clone()));
                }
                said = state.clone();
                m.snapshot = Some(look.snapshot);
                m.look_error = None;
            }
            Err(e) if status_of(&e) == Status::Auth => return Err(e),
            Err(_) if clock.stopped() => break,
            Err(e) => {
                m.errors += 1;
                m.snapshot = None;
                let e = format!("{e:#}");
                if e != failing {
                    changes.push((true, e.clone()));
                    failing = e.clone();
                }
                m.look_error = Some(e);
                said.clear();
            }
        }
        for (warning, line) in &changes {
            m.record(now, *warning, line);
        }
        drop(m);
        for (warning, line) in changes {
            match warning {
                true => warn!("watch: {line}; trying again in {:.0?}", cfg.watch_interval),
                false => info!("watch: {line}"),
            }
        }
        clock.sleep(cfg.watch_interval);
    }
    info!("watch: stopped by a signal; the last step finished");
    Ok(())
}

/// What one tick saw and did.
struct Look {
    snapshot: Snapshot,
    /// What it wrote, as init's summary says it; empty on an idle tick.
    actions: Vec<String>,
}

/// What a look calls for.
#[derive(Debug, PartialEq, Eq)]
enum Work {
    Nothing,
    /// Not yet: why.
    Wait(String),
    /// Init's procedure on these nodes (the ones that answer): why.
    Form(Vec<NodeAddr>, String),
}

/// `check`'s survey and verdict. A look waits for nothing: a node that does not answer is
/// reported, not waited for; its deadline is `check`'s.
fn look(cfg: &Config, clock: &dyn Clock, addrs: &[NodeAddr]) -> Result<Report> {
    let session = Session::new(cfg, clock, cfg.init_timeout.min(CHECK_WAIT));
    status::read(&session, addrs, &status::Options::default(), false)
}

/// One look, and init's procedure where it shows work; `with_sizes`: the copies' file sizes
/// are read too, for bytes per node (a failure to read them only leaves the last ones).
fn tick(cfg: &Config, clock: &dyn Clock, with_sizes: bool) -> Result<Look> {
    let addrs = find(cfg)?;
    let mut report = look(cfg, clock, &addrs)?;
    let mut actions = Vec::new();
    let work = work(cfg, &report);
    if let Work::Form(up, why) = &work {
        log::debug!("watch: running init's procedure: {why}");
        let formed = Formation::new(cfg, clock, cfg.init_timeout).form(up)?;
        actions = formed.actions;
        report = look(cfg, clock, &addrs)?;
    }
    let sized = with_sizes && {
        let session = Session::new(cfg, clock, cfg.init_timeout.min(CHECK_WAIT));
        let read = session.read_sizes(&mut report.survey);
        if let Err(e) = &read {
            log::debug!("watch: copy sizes not read, the last ones stay: {e:#}");
        }
        // The look's loads were counted before the sizes were known.
        report.loads = report.survey.node_loads();
        // As costly (one GET per database): the security section, read as seldom.
        status::add_security(&session, &mut report, true);
        read.is_ok()
    };
    let mut snapshot = snapshot(&report, sized);
    if let Some(Ok((_, found))) = &report.security {
        snapshot.security = Some(found.iter().map(|f| f.kind.to_string()).collect());
    }
    if let (Some(b), true) = (&cfg.backup, finished(&report)) {
        match back_up(cfg, clock, &report, b) {
            Ok((lag, done)) => {
                snapshot.backup = Some(lag);
                actions.extend(done);
            }
            Err(e) if status_of(&e) == Status::Auth => return Err(e),
            Err(e) => snapshot.backup_error = Some(format!("{e:#}")),
        }
    }
    // The cluster in a few words; a change is logged.
    snapshot.summary = match work {
        Work::Wait(why) => format!("waiting: {why}"),
        _ => state(&report),
    };
    Ok(Look { snapshot, actions })
}

/// The nodes now: COUCHDB_NODES, or what COUCHDB_SERVICE resolves to at this moment.
fn find(cfg: &Config) -> Result<Vec<NodeAddr>> {
    match &cfg.nodes {
        NodeList::Listed { nodes, .. } => Ok(nodes.clone()),
        NodeList::Service { service, .. } => discovery::resolve(service.host())
            .map(|ips| discovery::nodes_at(service, &ips))
            .map_err(|why| {
                Failure::new(
                    Status::Unreachable,
                    format!(
                        "COUCHDB_SERVICE {} does not resolve (DNS: {why})",
                        service.label
                    ),
                )
                .into()
            }),
    }
}

fn finished(report: &Report) -> bool {
    SYSTEM_DBS.iter().all(|db| report.survey.doc(db).is_some())
}

/// Whether init has something to do, from the look alone.
fn work(cfg: &Config, report: &Report) -> Work {
    let s = &report.survey;
    // A drained node answers and serves the cluster: it counts as up here, and nothing init
    // does touches its maintenance_mode (watch never undoes a drain).
    let up: Vec<(&NodeAddr, &String)> = s
        .nodes
        .iter()
        .filter(|n| n.state == State::Up || n.drained())
        .filter_map(|n| Some((n.addr.as_ref()?, n.name.as_ref()?)))
        .collect();
    let addrs = || up.iter().map(|(a, _)| (*a).clone()).collect();
    let expect = match &cfg.nodes {
        NodeList::Listed { expect, .. } | NodeList::Service { expect, .. } => *expect,
    };
    if !finished(report) {
        return if up.len() < expect {
            Work::Wait(format!(
                "{} of COUCHDB_EXPECT={expect} nodes answer before the cluster is formed",
                up.len()
            ))
        } else {
            Work::Form(addrs(), format!("{} nodes answer", up.len()))
        };
    }
    let new: Vec<String> = up
        .iter()
        .filter(|(_, name)| !s.members.contains(*name))
        .map(|(_, name)| (*name).clone())
        .collect();
    // Config drift, or zones declared but not (or not all) written: init's procedure repairs
    // both. A zone declaration init would refuse (a node without one) is left to the look's
    // problems: forming would only fail on it again.
    let drifted = drift(s).or_else(|| zone_drift(s));
    if new.is_empty() && drifted.is_none() {
        return Work::Nothing;
    }
    let missing: Vec<String> = s
        .members
        .iter()
        .filter(|m| !up.iter().any(|(_, name)| name == m))
        .cloned()
        .collect();
    let why = match (new.is_empty(), drifted) {
        (false, _) => format!("joining {}", list_compact(&new)),
        (true, Some(d)) => format!("repairing {d}"),
        (true, None) => String::new(),
    };
    if !missing.is_empty() {
        return Work::Wait(format!(
            "{why} waits until every member answers; {} does not",
            list_some(&missing)
        ));
    }
    Work::Form(addrs(), why)
}

/// The cluster in a few words, for the log: only what changes its health, not counts that move
/// every tick.
fn state(report: &Report) -> String {
    let s = &report.survey;
    let up = s.members.iter().filter(|m| s.serving(m)).count();
    let drained = s.nodes.iter().filter(|n| n.drained()).count();
    match report.problems.first() {
        None if drained > 0 => format!(
            "healthy: {} members, {up} serving, {drained} drained",
            s.members.len()
        ),
        None => format!("healthy: {} members, all up", s.members.len()),
        Some(first) => format!(
            "not healthy, {} problem(s) ({} of {} members up): {}",
            report.problems.len(),
            up,
            s.members.len(),
            first.text.chars().take(300).collect::<String>()
        ),
    }
}

fn snapshot(report: &Report, with_sizes: bool) -> Snapshot {
    let s = &report.survey;
    let mut problem_dbs: Vec<(String, usize)> = report
        .dbs
        .iter()
        .map(|d| (d.db.clone(), d.short().count()))
        .filter(|(_, short)| *short > 0)
        .collect();
    problem_dbs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let ranges_below_n = problem_dbs.iter().map(|(_, n)| n).sum();
    problem_dbs.truncate(PROBLEM_DBS);
    Snapshot {
        healthy: report.problems.is_empty(),
        members: s.members.len(),
        nodes_up: s.members.iter().filter(|m| s.serving(m)).count(),
        databases: report.dbs.len(),
        ranges_below_n,
        // Every member, those that hold nothing yet too (a new node, before `rebalance`).
        copies: report
            .loads
            .iter()
            .map(|(node, load)| (node.clone(), load.copies))
            .collect(),
        bytes: match with_sizes {
            true => report
                .loads
                .iter()
                .map(|(node, load)| (node.clone(), load.bytes))
                .collect(),
            false => BTreeMap::new(),
        },
        problem_dbs,
        zones: s
            .zones
            .iter()
            .filter(|(n, _)| s.members.contains(*n))
            .map(|(n, z)| (n.clone(), z.clone()))
            .collect(),
        ranges_zone_shared: report.zone_shared.len(),
        backup: None,
        backup_error: None,
        nodes: s.nodes.iter().map(|n| node_row(s, n)).collect(),
        problems: Lines::of(report.problems.iter().map(|p| p.text.clone())),
        imbalance: report.imbalance.clone(),
        summary: String::new(),
        security: None,
        versions: s
            .nodes
            .iter()
            .filter_map(|n| Some((n.name.clone()?, n.version.clone()?)))
            .collect(),
        maintenance: s
            .nodes
            .iter()
            .filter(|n| n.answers())
            .filter_map(|n| {
                let on = matches!(n.state, State::Maintenance(_));
                Some((n.name.clone()?, on))
            })
            .collect(),
    }
}

/// One node for the page and `couchdb_node_up`, from what the look already read.
fn node_row(s: &Survey, n: &NodeView) -> NodeRow {
    let connected = n.name.as_ref().is_some_and(|m| s.connected.contains(m));
    let member = n.name.as_ref().is_some_and(|m| s.members.contains(m));
    NodeRow {
        name: n.name.clone(),
        address: n.addr.as_ref().map(|a| a.label.clone()),
        member,
        connected,
        up: n.answers() && (connected || !member),
        maintenance: match &n.state {
            State::Maintenance(mode) => Some(mode.clone()),
            _ => None,
        },
        zone: n.name.as_ref().and_then(|m| s.zones.get(m)).cloned(),
        version: n.version.clone(),
    }
}

/// The backup's lag, after init's backup procedure ran where a database lacks its replication
/// or its database on the backup; what it wrote.
fn back_up(
    cfg: &Config,
    clock: &dyn Clock,
    report: &Report,
    b: &crate::util::config::Backup,
) -> Result<(BackupLag, Vec<String>)> {
    let session = Session::new(cfg, clock, cfg.init_timeout);
    // One authenticated request first: a wrong backup password is sent once, and ends the
    // watcher like the cluster's own (every tick would send it again and lock the account).
    let probe = Client::new(&b.user, &b.password, cfg.request_timeout, session.deadline);
    let refused = match probe.server_uuid(&b.target) {
        Err(NodeError::Unauthorized { reason, .. }) => Some(reason),
        Err(NodeError::Locked { .. }) => Some("the account is locked after wrong passwords".into()),
        _ => None,
    };
    if let Some(reason) = refused {
        return Err(Failure::new(
            Status::Auth,
            format!(
                "the backup CouchDB {} refused {} ({reason}); stopped, not retried: 5 failures lock the \
                 account there for 5 minutes",
                b.target.label, b.credentials
            ),
        )
        .into());
    }
    let backup = Backup::new(&session, &report.survey.via, b);
    let mut dbs = backup.survey()?;
    let lacking = |dbs: &[crate::commands::backup::DbBackup]| {
        dbs.iter()
            .filter(|d| d.doc.is_none() || d.target.is_none())
            .count()
    };
    // A `_security` changed on the cluster is not backed up until the backup's equals it
    // (replication never carries it): init's procedure copies it.
    let stale = |dbs: &[crate::commands::backup::DbBackup]| {
        lacking(dbs) > 0 || dbs.iter().any(|d| d.security_differs())
    };
    let mut actions = Vec::new();
    if stale(&dbs) {
        actions = backup.ensure()?;
        dbs = backup.survey()?;
    }
    Ok((
        BackupLag {
            unreplicated: lacking(&dbs),
            docs_behind: dbs.iter().filter_map(|d| d.lag()).sum(),
            not_in_place: Lines::of(status_problems(&dbs)),
        },
        actions,
    ))
}
