//! `rebalance`: spread the databases over the members after growth (trap: CouchDB puts only
//! new databases on new nodes), in an operator's steps:
//!
//! 1. wait for every node in COUCHDB_NODES, read the cluster;
//! 2. refuse, writing nothing, when a member is down or in maintenance, a node in
//!    COUCHDB_NODES is not a member, or a shard map names a node that is not a member (that is
//!    `remove`'s job);
//! 3. read every copy's file size, and plan (src/cluster/planner.rs): each database's copies
//!    as even over the members as q × n allows, then the copies per member over all databases
//!    within one of even, preferring moves that even out bytes and move less; never two copies
//!    of a range on one node, as few moves as possible; `--dry-run` prints the plan and stops;
//! 4. carry it out, COUCHDB_MOVE_CONCURRENCY databases at once, each move verified
//!    (src/cluster/moves.rs); moves an interrupted run left, and conflicts in a shard map, are
//!    finished and resolved on the way;
//! 5. report (or delete) the leftover shard files.
//!
//! On a balanced cluster it writes nothing.

use anyhow::Result;
use log::info;

use crate::cluster::moves::{every_map_readable, refused, todo, zones_to_plan_by, Engine, Step};
use crate::cluster::planner::{leftovers, plan_rebalance, render_plan, settled, still_to_do};
use crate::cluster::session::Session;
use crate::cluster::survey::Survey;
use crate::util::clock::Clock;
use crate::util::config::Config;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub dry_run: bool,
    /// Delete leftover shard files of current databases once no map lists them.
    pub delete_leftovers: bool,
}

pub fn rebalance(cfg: &Config, clock: &dyn Clock, opts: &Options) -> Result<String> {
    let session = Session::new(cfg, clock, cfg.init_timeout);
    let addrs = session.phase("wait", &session.wait_what(), || session.wait_up())?;
    let mut survey = session.phase("survey", "every node and shard map", || {
        session.survey(&addrs, None)
    })?;
    let members = preflight(&survey)?;
    let zones = zones_to_plan_by(&survey)?;
    // Sizes only choose among equal moves: a copy whose size cannot be read weighs what its
    // range's other copies weigh.
    if let Err(e) = session.phase("sizes", "every copy's file size", || {
        session.read_sizes(&mut survey)
    }) {
        log::warn!("rebalance: could not read every copy's size, planning by copies alone: {e:#}");
    }
    let sizes = survey.sizes();
    let plans = session.phase(
        "plan",
        if zones.is_empty() {
            "copies per member even over the whole cluster"
        } else {
            "every range over the zones, then copies per member even over the whole cluster"
        },
        || Ok(plan_rebalance(&survey.docs, &members, &sizes, &zones)),
    )?;
    let text = render_plan(&survey.docs, &plans, &sizes, &members, &zones);
    if opts.dry_run {
        println!("{text}");
        return Ok("plan printed (--dry-run); nothing written".into());
    }
    info!("rebalance: {}", text.lines().next().unwrap_or_default());

    let todo = todo(&survey.docs, &plans);
    let engine = Engine::new(&session, &survey, members.iter().cloned().collect());
    let done = session.phase("move", "spreading the copies over the members", || {
        engine.carry_out_all(&todo, cfg.move_concurrency, &|plan, current| Step {
            moves: still_to_do(&plan.moves, &settled(current)),
            drops: Vec::new(),
        })
    })?;
    let moved = done.iter().map(|d| d.moved.len()).sum();
    let resolved = done.iter().map(|d| d.resolved).sum();

    let mut after = session.survey(&addrs, None)?;
    // The leftovers are a report: a node that will not list its files costs that report only.
    if let Err(e) = session.read_files(&mut after) {
        log::warn!("rebalance: could not list the members' files, so leftovers are unknown: {e:#}");
        return Ok(format!(
            "rebalance: {}; leftover shard files unknown",
            summary(moved, resolved)
        ));
    }
    let found = leftovers(&after.docs, &after.files);
    let files = if found.is_empty() {
        "no leftover shard files".to_string()
    } else if opts.delete_leftovers {
        let deleted = engine.delete_leftovers(&found)?;
        format!(
            "{} of {} leftover shard file(s) deleted",
            deleted.len(),
            found.len()
        )
    } else {
        info!(
            "rebalance: {} leftover shard file(s) on the nodes copies moved off (no map lists them); \
             `rebalance --delete-leftovers` deletes them",
            found.len()
        );
        format!("{} leftover shard file(s) kept", found.len())
    };
    Ok(format!("rebalance: {}; {files}", summary(moved, resolved)))
}

fn summary(moved: usize, resolved: usize) -> String {
    let mut s = if moved == 0 {
        "balanced; nothing moved".to_string()
    } else {
        format!("{moved} cop{} moved", if moved == 1 { "y" } else { "ies" })
    };
    if resolved > 0 {
        s += &format!(", {resolved} shard-map conflict(s) resolved");
    }
    s
}

/// The members copies may move between; refuses what `rebalance` should not touch.
fn preflight(s: &Survey) -> Result<Vec<String>> {
    every_map_readable(s)?;
    let not_serving: Vec<&String> = s.members.iter().filter(|m| !s.serving(m)).collect();
    if !not_serving.is_empty() {
        return Err(refused(format!(
            "member(s) {} are down, not connected or in maintenance: bring them back, or `remove` them",
            not_serving.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let unjoined: Vec<String> = s
        .nodes
        .iter()
        .filter(|n| n.addr.is_some())
        .filter(|n| n.name.as_ref().is_none_or(|name| !s.members.contains(name)))
        .map(|n| n.label())
        .collect();
    if !unjoined.is_empty() {
        return Err(refused(format!(
            "{} {} not a member: if new, run init first so that it joins; if removed, take it out of {}",
            unjoined.join(", "),
            if unjoined.len() == 1 { "is" } else { "are" },
            s.source
        )));
    }
    let mut strangers: Vec<String> = s
        .docs
        .iter()
        .flat_map(|d| d.map.values().flatten())
        .filter(|n| !s.members.contains(*n))
        .cloned()
        .collect();
    strangers.sort();
    strangers.dedup();
    if !strangers.is_empty() {
        return Err(refused(format!(
            "shard maps list {}, which {} not a member (its _nodes doc deleted before its copies moved?): run `remove <node>` for \
             {} first, which moves those copies onto members",
            strangers.join(", "),
            if strangers.len() == 1 { "is" } else { "are" },
            if strangers.len() == 1 { "it" } else { "each" },
        )));
    }
    Ok(s.members.iter().cloned().collect())
}
