//! `remove NODE`: scale down without losing a copy, in an operator's steps:
//!
//! 1. read the cluster (not through NODE), without waiting: NODE may be down for good;
//! 2. refuse, writing nothing, when it cannot be done safely: a member other than NODE is down
//!    or in maintenance, a range NODE holds has no other copy anyone can read, or the other
//!    members cannot hold n copies of every range (unless `--accept-fewer-copies`);
//! 3. move every copy NODE holds — every database, `_users` and `_replicator` included — to a
//!    member lacking that range, chosen so that the members left hold even numbers of copies
//!    over all databases; COUCHDB_MOVE_CONCURRENCY databases at once, each move verified
//!    (src/cluster/moves.rs);
//! 4. check that no shard map lists NODE any more; report (or delete) its leftover files;
//! 5. only then delete its `_nodes` doc (trap 14: never the other way round), and wait until
//!    every other member has dropped it;
//! 6. tell the operator to stop NODE and wipe its data before it ever runs again (trap 15).
//!
//! NODE is its Erlang name (`couchdb@couchdb-4.cluster`) or its address as written in
//! COUCHDB_NODES (then it must answer, to tell its name). It need not be listed, need not run,
//! and need not be a member any more (a node whose `_nodes` doc was deleted too early, trap 14,
//! still has its copies moved off).

use anyhow::Result;
use log::{info, warn};

use crate::client::{Gone, NodeError};
use crate::cluster::health::intended_zones;
use crate::cluster::moves::{
    every_map_readable, incomplete, refused, todo, zones_to_plan_by, Engine, Step,
};
use crate::cluster::planner::{
    evacuate, leftovers, load, plan_removal, render_plan, settled, still_to_do,
};
use crate::cluster::session::{each_bounded, listed_as, Session};
use crate::cluster::survey::{Survey, PARALLEL};
use crate::cluster::zones::{empty_zones, placement_rule};
use crate::util::clock::{poll, Clock};
use crate::util::config::Config;
use crate::util::exit::{Failure, Status};
use crate::util::text::list_compact;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Erlang name, or an address in COUCHDB_NODES.
    pub node: String,
    pub dry_run: bool,
    /// Drop copies no other member can take, instead of refusing.
    pub accept_fewer: bool,
    /// Delete NODE's leftover shard files once no map lists them.
    pub delete_leftovers: bool,
}

pub fn remove(cfg: &Config, clock: &dyn Clock, opts: &Options) -> Result<String> {
    let session = Session::new(cfg, clock, cfg.init_timeout);
    let addrs = session.addresses()?;
    let listed = listed_as(&addrs, &opts.node, "remove")?;
    // No wait for `/_up`: NODE may be down for good, and a member that is down is a reason to
    // refuse (below), not to wait.
    let (mut survey, leaving) = session.phase("survey", "every node and shard map", || {
        let leaving = match listed {
            None => opts.node.clone(),
            // Asked once: a node that does not answer may be down for good.
            Some(i) => session.client.local_name(&addrs[i]).map_err(|e| match e {
                NodeError::Unreachable { .. } => Failure::new(
                    Status::Config,
                    format!(
                        "{} does not answer ({e:#}), so its Erlang name is unknown: give the name instead \
                         (`remove couchdb@<host>`; `status` lists the members)",
                        addrs[i].label
                    ),
                )
                .into(),
                // A wrong password is exit 4 whichever node says so.
                other => anyhow::Error::from(other),
            })?,
        };
        Ok((session.survey(&addrs, Some(&leaving))?, leaving))
    })?;

    let holds = survey
        .docs
        .iter()
        .any(|d| d.map.values().flatten().any(|n| *n == leaving));
    // "Holds nothing" needs every map: one that cannot be read is refused below.
    if !holds && !survey.members.contains(&leaving) && survey.unreadable.is_empty() {
        // Perhaps an earlier run was stopped right after the `_nodes` DELETE: make sure every
        // member has dropped it (reads only, when they have).
        forget(&session, &survey, &leaving)?;
        // Also what a misspelt name looks like: name the members, so the operator can tell.
        let members: Vec<String> = survey.members.iter().cloned().collect();
        info!(
            "remove: {leaving} is not a member and no shard map lists it: nothing to do (the members: {})",
            list_compact(&members)
        );
        return Ok(format!(
            "{leaving} is not a member and holds no copy; nothing written"
        ));
    }
    let serving = preflight(&survey, &leaving)?;
    let zones = zones_to_plan_by(&survey)?;
    // Sizes only choose among equal homes: a copy whose size cannot be read weighs what its
    // range's other copies weigh.
    if let Err(e) = session.phase("sizes", "every copy's file size", || {
        session.read_sizes(&mut survey)
    }) {
        warn!("remove: could not read every copy's size, planning by copies alone: {e:#}");
    }
    let sizes = survey.sizes();
    let plans = plan_removal(&survey.docs, &leaving, &serving, opts.accept_fewer, &sizes, &zones).map_err(|short| {
        let ranges: Vec<String> = short.iter().map(|(db, r)| format!("{db} {r}")).collect();
        refused(format!(
            "the other {} member(s) cannot hold every copy {leaving} holds: {} range(s) already have a copy on \
             each of them ({}). Add a node first, or run `remove {} --accept-fewer-copies` to keep fewer \
             copies of those ranges",
            serving.len(),
            short.len(),
            crate::util::text::list_some(&ranges),
            opts.node
        ))
    })?;
    let text = render_plan(&survey.docs, &plans, &sizes, &serving, &zones);
    if opts.dry_run {
        println!("{text}");
        return Ok(format!(
            "plan for removing {leaving} printed (--dry-run); nothing written"
        ));
    }
    info!("remove: {}", text.lines().next().unwrap_or_default());

    let engine = Engine::new(&session, &survey, serving.iter().cloned().collect());
    let todo = todo(&survey.docs, &plans);
    let load = load(survey.docs.iter().map(settled).collect::<Vec<_>>().iter());
    let moved = session.phase("move", &format!("every copy off {leaving}"), || {
        let done = engine.carry_out_all(&todo, cfg.move_concurrency, &|plan, current| {
            let map = settled(current);
            let planned = still_to_do(&plan.moves, &map);
            if !planned.is_empty() {
                return Step {
                    moves: planned,
                    drops: Vec::new(),
                };
            }
            // What the plan did not foresee (the map changed meanwhile), and what no member
            // can take.
            let (moves, homeless) = evacuate(&map, &leaving, &serving, &load, &zones);
            let drops = if opts.accept_fewer {
                homeless.into_iter().map(|r| (r, leaving.clone())).collect()
            } else {
                Vec::new()
            };
            Step { moves, drops }
        })?;
        Ok((
            done.iter().map(|d| d.moved.len()).sum::<usize>(),
            done.iter().map(|d| d.dropped.len()).sum::<usize>(),
        ))
    })?;

    session.phase("verify", &format!("no shard map lists {leaving}"), || {
        let docs = session.read(|| session.client.all_shard_docs(&survey.via))?;
        let still: Vec<String> = docs
            .iter()
            .filter(|d| d.map.values().flatten().any(|n| *n == leaving))
            .map(|d| d.db.clone())
            .collect();
        if still.is_empty() {
            Ok(())
        } else {
            Err(incomplete(format!(
                "{} still list {leaving} (a database created meanwhile?); its _nodes doc was not deleted: run it again",
                crate::util::text::list_some(&still)
            )))
        }
    })?;

    let files = leftover_files(&session, &survey, &leaving, &engine, opts.delete_leftovers)?;
    if survey.members.contains(&leaving) {
        // Before its `_nodes` doc goes: a placement naming a zone it alone was in would make
        // CouchDB refuse every new database (500 no_nodes_in_zone) from then on.
        if let Some(rule) = placement_without(&survey, &leaving) {
            session.phase(
                "placement",
                &format!("[cluster] placement {rule} on every other member"),
                || {
                    let names: Vec<String> = serving.to_vec();
                    let current = session.cluster_configs(&survey.via, &names)?;
                    session.write_placement(&survey.via, &names, &current, &rule)
                },
            )?;
        }
        session.phase(
            "forget",
            &format!("delete {leaving}'s _nodes doc, then every member drops it"),
            || forget(&session, &survey, &leaving),
        )?;
    }
    // Given by name or by address: if the nodes list it, the next init would join it again.
    let in_list = listed.is_some() || survey.node(&leaving).is_some_and(|n| n.addr.is_some());
    warn!(
        "remove: {leaving} holds no copy and is no longer a member. Now STOP it and WIPE its data directory \
         before it ever runs again: a removed node restarted with its data joins the cluster again by \
         itself{}",
        if in_list { format!("; and take it out of {}", survey.source) } else { String::new() }
    );
    Ok(format!(
        "removed {leaving}: {} cop{} moved, {} dropped, {files}",
        moved.0,
        if moved.0 == 1 { "y" } else { "ies" },
        moved.1
    ))
}

/// The members that may take the copies; refuses when the move could not be proven.
fn preflight(s: &Survey, leaving: &str) -> Result<Vec<String>> {
    every_map_readable(s)?;
    let others: Vec<&String> = s.members.iter().filter(|m| *m != leaving).collect();
    let not_serving: Vec<String> = others
        .iter()
        .filter(|m| !s.serving(m))
        .map(|m| m.to_string())
        .collect();
    if !not_serving.is_empty() {
        return Err(refused(format!(
            "member(s) {} are down, not connected or in maintenance: every other member must be up to take \
             copies and to learn the new shard maps. Bring them back (or remove them first)",
            not_serving.join(", ")
        )));
    }
    if others.is_empty() {
        return Err(refused(format!("{leaving} is the only member")));
    }
    // A range whose only readable copy is on a node that is down cannot be copied.
    let mut unreadable = Vec::new();
    for d in &s.docs {
        for (range, nodes) in &d.map {
            if nodes.iter().any(|n| n == leaving) && !nodes.iter().any(|n| s.connected.contains(n))
            {
                unreadable.push(format!("{} {range}", d.db));
            }
        }
    }
    if !unreadable.is_empty() {
        return Err(refused(format!(
            "{leaving} is not connected and no connected node holds another copy of {}: start {leaving} again \
             so that its copies can be read",
            crate::util::text::list_some(&unreadable)
        )));
    }
    Ok(others.into_iter().cloned().collect())
}

/// With zones declared, the `[cluster] placement` for the members that stay (the zone
/// `leaving` was the last of drops out of it). Without, placement is not this tool's: a rule
/// that would name an empty zone is warned about (`status` then names it as a problem).
fn placement_without(survey: &Survey, leaving: &str) -> Option<String> {
    let mut zones = intended_zones(survey);
    zones.remove(leaving);
    let members: Vec<String> = survey
        .members
        .iter()
        .filter(|m| *m != leaving)
        .cloned()
        .collect();
    if matches!(&survey.declared, Ok(Some(_))) {
        return placement_rule(&zones, &members, survey.cluster_n);
    }
    for node in &survey.nodes {
        let Some(rule) = node.config.as_ref().and_then(|c| c.placement.as_ref()) else {
            continue;
        };
        let empty = empty_zones(rule, &zones, &members);
        if !empty.is_empty() && node.name.as_deref() != Some(leaving) {
            warn!(
                "remove: {}'s [cluster] placement {rule} names zone(s) {} that no member is in once {leaving} has gone: CouchDB will refuse every database created through it (500 no_nodes_in_zone). Set COUCHDB_ZONES (init then writes the placement), or change it by hand",
                node.label(),
                empty.join(", ")
            );
        }
    }
    None
}

/// The shard files still on the removed node: reported, and deleted with the flag.
fn leftover_files(
    session: &Session,
    survey: &Survey,
    leaving: &str,
    engine: &Engine,
    delete: bool,
) -> Result<String> {
    let Some(files) = session.read(|| session.client.node_files(&survey.via, leaving))? else {
        return Ok(format!(
            "its files could not be listed ({leaving} is not connected)"
        ));
    };
    let docs = session.read(|| session.client.all_shard_docs(&survey.via))?;
    let found = leftovers(&docs, &[(leaving.to_string(), files)].into_iter().collect());
    if found.is_empty() {
        return Ok("no leftover shard files".into());
    }
    if !delete {
        info!(
            "remove: {leaving} still has {} shard file(s) no map lists; they go when its data is wiped \
             (or now, with --delete-leftovers)",
            found.len()
        );
        return Ok(format!("{} leftover shard file(s) on it", found.len()));
    }
    let deleted = engine.delete_leftovers(&found)?;
    Ok(format!(
        "{} of {} leftover shard file(s) deleted",
        deleted.len(),
        found.len()
    ))
}

/// Deletes `leaving`'s `_nodes` doc on the reference node, then waits until no other connected
/// member lists it.
fn forget(session: &Session, survey: &Survey, leaving: &str) -> Result<()> {
    let (client, via) = (&session.client, &survey.via);
    for _ in 0..3 {
        let Some(rev) = session.read(|| client.node_doc(via, "_local", leaving))? else {
            break;
        };
        match session.read(|| client.delete_node_doc(via, leaving, &rev))? {
            Gone::Deleted => {
                info!("forget: deleted {leaving}'s _nodes doc on {}", via.label);
                break;
            }
            Gone::Already => break,
            Gone::Conflict => continue,
        }
    }
    let others: Vec<String> = survey
        .members
        .iter()
        .filter(|m| *m != leaving && survey.connected.contains(*m))
        .cloned()
        .collect();
    let dropped = each_bounded(&others, PARALLEL, |m| {
        poll(session.clock, session.deadline, || {
            match client.node_doc(via, m, leaving) {
                Ok(None) => Ok(Some(())),
                Ok(Some(_)) | Err(crate::client::NodeError::Unreachable { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    });
    let mut lagging = Vec::new();
    for (m, d) in others.iter().zip(dropped) {
        if d?.is_none() {
            lagging.push(m.clone());
        }
    }
    if lagging.is_empty() {
        info!(
            "forget: every other member ({}) has dropped {leaving}",
            others.len()
        );
        return Ok(());
    }
    Err(incomplete(format!(
        "{} still list {leaving} as a member after the deadline: run `remove {leaving}` again",
        lagging.join(", ")
    )))
}
