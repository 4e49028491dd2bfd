//! The move engine shared by `remove` and `rebalance`. One database at a time, in the steps of
//! PROTOCOL.md ("Moving a shard copy"):
//!
//! 1. read its shard map on the one editing node, with `?conflicts=true`; a conflict (two edits
//!    from one revision, trap 13) is resolved first: CouchDB's winner stays, each losing
//!    revision is deleted, and what it would have changed is logged;
//! 2. add the new copies in one edit that also records the moves (the intent field), once
//!    `planner::check_edit` has passed it (trap 12: CouchDB would accept almost anything);
//! 3. wait until every connected member has that revision, `POST /<db>/_sync_shards`, and wait
//!    until every new copy's own counts have caught up with the other copies of its range
//!    (trap 11), asking for the sync again every 5 s;
//! 4. remove the old copies in one edit, which also drops the intent; wait until every
//!    connected member has it.
//!
//! Every step starts from the map as read, never from memory: killed at any point, a rerun finds
//! the recorded moves in the map and finishes them (or, when a new copy's node is no longer a
//! connected member, takes that unproven copy back out). A range never has fewer copies than before
//! the operation, except a copy dropped on purpose (`remove --accept-fewer-copies`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use log::{debug, info, warn};

use crate::client::{CopyState, Gone, Move, NodeError, Saved, ShardDoc, ShardMap};
use crate::cluster::planner::{check_edit, unfinished, DbPlan, Leftover, Rules};
use crate::cluster::session::{each_bounded, Session};
use crate::cluster::survey::{Survey, PARALLEL};
use crate::cluster::zones::Zones;
use crate::util::clock::poll;
use crate::util::config::NodeAddr;
use crate::util::exit::{status_of, Failure, Status};
use crate::util::sync::lock;
use crate::util::text::list_some;

/// Read-decide-write rounds per database before giving up: each edit is one round, and a
/// conflict or a 409 costs one more.
const ROUNDS: usize = 8;
/// How often `_sync_shards` is asked again while a new copy fills.
const RESYNC: Duration = Duration::from_secs(5);
/// How often `carry_out_all` says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What to do to one database next, decided from its map as just read.
#[derive(Debug, Default)]
pub struct Step {
    pub moves: Vec<Move>,
    /// (range, node): copies to remove with no replacement.
    pub drops: Vec<(String, String)>,
}

/// What was done to one database.
#[derive(Debug, Default)]
pub struct Done {
    pub moved: Vec<Move>,
    pub dropped: Vec<(String, String)>,
    pub resolved: usize,
}

/// The plans of the databases with something to do — planned moves, or an interrupted move or
/// a conflict in their shard map to finish first — for `carry_out_all`.
pub fn todo<'p>(docs: &[ShardDoc], plans: &'p [DbPlan]) -> Vec<&'p DbPlan> {
    docs.iter()
        .zip(plans)
        .filter(|(doc, plan)| {
            !plan.is_empty() || !doc.conflicts.is_empty() || !doc.moves.is_empty()
        })
        .map(|(_, plan)| plan)
        .collect()
}

/// How far `carry_out_all` got.
struct Tally {
    moved: usize,
    /// Databases with a move under way.
    filling: BTreeSet<String>,
    said: Instant,
}

impl Tally {
    fn line(&self, total: usize) -> String {
        let filling: Vec<String> = self.filling.iter().cloned().collect();
        format!(
            "moved {} of {total} copies, {} filling{}",
            self.moved,
            filling.len(),
            if filling.is_empty() {
                String::new()
            } else {
                format!(": {}", list_some(&filling))
            }
        )
    }
}

pub struct Engine<'a> {
    session: &'a Session<'a>,
    /// The one node every shard map edit goes to (trap 13), and through which every other
    /// node is asked.
    via: NodeAddr,
    /// Nodes that may take a new copy: connected members, up, not in maintenance.
    may_add_on: BTreeSet<String>,
    /// Connected members: each edit must reach all of them before the next step.
    watch: Vec<String>,
}

/// `remove`/`rebalance` will not start: it could not be done safely.
pub fn refused(message: String) -> anyhow::Error {
    Failure::new(Status::Refused, format!("{message}. Nothing was written")).into()
}

/// Refuses to move anything while a shard map cannot be read: the plan must see every copy.
pub fn every_map_readable(s: &Survey) -> Result<()> {
    if s.unreadable.is_empty() {
        return Ok(());
    }
    let odd: Vec<String> = s.unreadable.iter().map(|u| u.to_string()).collect();
    Err(refused(format!(
        "{} shard map(s) cannot be read, so where their copies are is unknown: {}. Fix or recreate \
         those maps first (`status` names them)",
        odd.len(),
        crate::util::text::list_some(&odd)
    )))
}

/// The zones `remove`/`rebalance` plan by: CouchDB's own, the members' `_nodes` docs — once
/// they say what the configuration declares (COUCHDB_ZONES, else each node's report), so that
/// the copies moved and the databases CouchDB creates meanwhile follow the same zones. Refuses
/// while they differ (init writes them) or while some members have a zone and others none;
/// a declaration that cannot be read is a configuration error.
pub fn zones_to_plan_by(s: &Survey) -> Result<Zones> {
    let declared = s
        .declared
        .clone()
        .map_err(|why| anyhow::Error::from(Failure::new(Status::Config, why)))?;
    let zones: Zones = s
        .zones
        .iter()
        .filter(|(n, _)| s.members.contains(*n))
        .map(|(n, z)| (n.clone(), z.clone()))
        .collect();
    if let Some(declared) = declared {
        let differ: Vec<String> = declared
            .iter()
            .filter(|(n, z)| s.members.contains(*n) && zones.get(*n) != Some(*z))
            .map(|(n, z)| {
                format!(
                    "{n}: declared {z}, its _nodes doc says {}",
                    zones.get(n).map_or("none", String::as_str)
                )
            })
            .collect();
        if !differ.is_empty() {
            return Err(refused(format!(
                "the zones declared are not yet in the members' _nodes docs ({}): run init (or let watch repair it) first, so that the copies moved and the databases CouchDB creates follow the same zones",
                list_some(&differ)
            )));
        }
    }
    let without: Vec<String> = s
        .members
        .iter()
        .filter(|m| !zones.contains_key(*m))
        .cloned()
        .collect();
    if !zones.is_empty() && !without.is_empty() {
        return Err(refused(format!(
            "{} {} no zone in {} _nodes doc while other members have one: set its zone (COUCHDB_ZONES, then init) first",
            list_some(&without),
            if without.len() == 1 { "has" } else { "have" },
            if without.len() == 1 { "its" } else { "their" },
        )));
    }
    Ok(zones)
}

/// `remove`/`rebalance` stopped part-way; every copy is still in place.
pub fn incomplete(message: String) -> anyhow::Error {
    Failure::new(Status::Incomplete, message).into()
}

impl<'a> Engine<'a> {
    pub fn new(session: &'a Session<'a>, survey: &Survey, may_add_on: BTreeSet<String>) -> Self {
        Engine {
            session,
            via: survey.via.clone(),
            may_add_on,
            watch: survey
                .members
                .iter()
                .filter(|m| survey.connected.contains(*m))
                .cloned()
                .collect(),
        }
    }

    /// Carries out `todo`, `concurrency` databases at once — never two moves of one database at
    /// once, each database with its own verified steps (`carry_out`); `step(plan, map)` is the
    /// next step of a database with that plan, from its map as just read. At the first failure no further database is
    /// started; those under way finish, and the first failure is returned. Says how far it got
    /// every few seconds: "moved 412 of 750 copies, 3 filling: a, b, c".
    pub fn carry_out_all(
        &self,
        todo: &[&DbPlan],
        concurrency: usize,
        step: &(dyn Fn(&DbPlan, &ShardDoc) -> Step + Sync),
    ) -> Result<Vec<Done>> {
        let clock = self.session.clock;
        let total: usize = todo
            .iter()
            .map(|p| p.moves.len() + p.unfinished.len())
            .sum();
        let next = AtomicUsize::new(0);
        let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        let progress = Mutex::new(Tally {
            moved: 0,
            filling: BTreeSet::new(),
            said: clock.now(),
        });
        let results: Mutex<Vec<(usize, Done)>> = Mutex::new(Vec::new());
        let workers = concurrency.clamp(1, todo.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if lock(&failed).is_some() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(plan) = todo.get(i) else {
                        return;
                    };
                    lock(&progress).filling.insert(plan.db.clone());
                    let outcome = self.carry_out(&plan.db, &mut |doc| step(plan, doc));
                    let mut tally = lock(&progress);
                    tally.filling.remove(&plan.db);
                    match outcome {
                        Ok(done) => {
                            tally.moved += done.moved.len();
                            if clock.now().duration_since(tally.said) >= PROGRESS_EVERY {
                                tally.said = clock.now();
                                info!("move: {}", tally.line(total));
                            }
                            lock(&results).push((i, done));
                        }
                        Err(e) => {
                            let mut first = lock(&failed);
                            if first.is_none() {
                                *first = Some(e);
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = lock(&failed).take() {
            let tally = lock(&progress);
            warn!(
                "move: stopped after the first failure: {}",
                tally.line(total)
            );
            return Err(e);
        }
        let mut done = std::mem::take(&mut *lock(&results));
        done.sort_by_key(|(i, _)| *i);
        Ok(done.into_iter().map(|(_, d)| d).collect())
    }

    /// Brings `db` to what `plan` asks for, one verified edit at a time.
    pub fn carry_out(&self, db: &str, plan: &mut dyn FnMut(&ShardDoc) -> Step) -> Result<Done> {
        self.steps(db, plan).map_err(|e| self.at_deadline(db, e))
    }

    /// A node "unreachable" because the deadline left no time for the request is the deadline
    /// passing mid-way: say so, with the exit status of a run to finish by running it again.
    fn at_deadline(&self, db: &str, e: anyhow::Error) -> anyhow::Error {
        if self.session.clock.now() < self.session.deadline || status_of(&e) != Status::Unreachable
        {
            return e;
        }
        incomplete(format!(
            "{db}: the deadline (COUCHDB_INIT_TIMEOUT) passed in the middle of a move ({e:#}); every copy is \
             still in place: run it again (with more time) to finish"
        ))
    }

    fn steps(&self, db: &str, plan: &mut dyn FnMut(&ShardDoc) -> Step) -> Result<Done> {
        let mut done = Done::default();
        for _ in 0..ROUNDS {
            let Some(doc) = self.read(db, &mut done)? else {
                info!("move: {db}: deleted meanwhile; skipped");
                return Ok(done);
            };
            if !doc.moves.is_empty() {
                self.finish(&doc, &mut done)?;
                continue;
            }
            let step = plan(&doc);
            if !step.moves.is_empty() {
                self.add(&doc, &step.moves)?;
            } else if !step.drops.is_empty() {
                self.drop_copies(&doc, &step.drops, &mut done)?;
            } else {
                return Ok(done);
            }
        }
        Err(incomplete(format!(
            "{db}: its shard map kept changing under this run ({ROUNDS} edits); nothing was removed \
             before its replacement was proven: run it again"
        )))
    }

    // ---- 1. read, resolving a conflict first -----------------------------------------------

    fn read(&self, db: &str, done: &mut Done) -> Result<Option<ShardDoc>> {
        for _ in 0..ROUNDS {
            let Some(doc) = self
                .session
                .read(|| self.session.client.shard_doc(&self.via, "_local", db))?
            else {
                return Ok(None);
            };
            if doc.conflicts.is_empty() {
                return Ok(Some(doc));
            }
            self.resolve(&doc)?;
            done.resolved += doc.conflicts.len();
        }
        Err(incomplete(format!(
            "{db}: its shard map has conflicts again after each resolution: is another tool editing it?"
        )))
    }

    fn resolve(&self, doc: &ShardDoc) -> Result<()> {
        let client = &self.session.client;
        for rev in &doc.conflicts {
            let loser = self
                .session
                .read(|| client.shard_doc_rev(&self.via, &doc.db, rev))?;
            let lost = loser.map_or("(unreadable)".to_string(), |l| difference(&doc.map, &l.map));
            warn!(
                "move: {}: two edits of its shard map were made from one revision: CouchDB uses {}; \
                 deleting the losing revision {rev}, which would have {lost}",
                doc.db, doc.rev
            );
            match self
                .session
                .read(|| client.delete_shard_doc_rev(&self.via, &doc.db, rev))?
            {
                Gone::Deleted | Gone::Already | Gone::Conflict => {}
            }
        }
        Ok(())
    }

    // ---- 2. add ----------------------------------------------------------------------------

    fn add(&self, doc: &ShardDoc, moves: &[Move]) -> Result<()> {
        let mut after = doc.map.clone();
        for m in moves {
            if let Some(nodes) = after.get_mut(&m.range) {
                nodes.push(m.to.clone());
            }
        }
        let rules = Rules {
            may_add_on: self.may_add_on.clone(),
            ..Rules::default()
        };
        debug!("move: {}: adding {}", doc.db, describe(moves));
        self.put(doc, &after, moves, &rules)?;
        Ok(())
    }

    // ---- 3 and 4. fill, then remove the old copies -----------------------------------------

    fn finish(&self, doc: &ShardDoc, done: &mut Done) -> Result<()> {
        // A new copy on a node that is not a connected member can never be proven (a `remove`
        // of the node an interrupted move was filling, now down): it is taken back out, and
        // the old copy it was to replace stays.
        let (pending, unprovable): (Vec<Move>, Vec<Move>) = unfinished(doc)
            .into_iter()
            .partition(|m| self.watch.contains(&m.to));
        if !unprovable.is_empty() {
            return self.undo(doc, &unprovable, &pending);
        }
        if pending.is_empty() {
            // The record outlived its moves (their copies were settled or undone by hand).
            info!(
                "move: {}: clearing the record of moves already settled",
                doc.db
            );
            self.put(doc, &doc.map, &[], &Rules::default())?;
            return Ok(());
        }
        self.wait_everywhere(&doc.db, &doc.rev)?;
        self.fill(doc, &pending, "the new copies")?;
        let old: Vec<(String, String)> = pending
            .iter()
            .map(|m| (m.range.clone(), m.from.clone()))
            .collect();
        let (after, rules) = removing(&doc.map, &old);
        if let Some(rev) = self.put(doc, &after, &[], &rules)? {
            self.wait_everywhere(&doc.db, &rev)?;
            info!(
                "move: {}: removed the old copies; moved {}",
                doc.db,
                describe(&pending)
            );
            done.moved.extend(pending);
        }
        Ok(())
    }

    /// Takes the new copies of `moves` back out of the map, in one edit that keeps `rest` as
    /// the record of what is still to finish.
    fn undo(&self, doc: &ShardDoc, moves: &[Move], rest: &[Move]) -> Result<()> {
        warn!(
            "move: {}: taking back the unproven new cop{} of an interrupted move, whose node is not a \
             connected member: {}; the old copies stay",
            doc.db,
            if moves.len() == 1 { "y" } else { "ies" },
            describe(moves)
        );
        let new: Vec<(String, String)> = moves
            .iter()
            .map(|m| (m.range.clone(), m.to.clone()))
            .collect();
        let (after, rules) = removing(&doc.map, &new);
        self.put(doc, &after, rest, &rules)?;
        Ok(())
    }

    /// `_sync_shards`, then wait until each new copy holds at least what every other connected
    /// copy of its range holds. `what`: the copies waited for, in words.
    fn fill(&self, doc: &ShardDoc, pending: &[Move], what: &str) -> Result<()> {
        let (clock, client) = (self.session.clock, &self.session.client);
        let new: BTreeSet<(&str, &str)> = pending
            .iter()
            .map(|m| (m.range.as_str(), m.to.as_str()))
            .collect();
        // (range, node) of every copy to read: the new ones and their sources.
        let mut reads: Vec<(String, String)> = Vec::new();
        for m in pending {
            for node in doc.map.get(&m.range).into_iter().flatten() {
                let source = !new.contains(&(m.range.as_str(), node.as_str()));
                if (source && self.watch.contains(node)) || *node == m.to {
                    reads.push((m.range.clone(), node.clone()));
                }
            }
        }
        reads.sort();
        reads.dedup();
        let started = clock.now();
        self.session
            .read(|| client.sync_shards(&self.via, &doc.db))?;
        let mut synced = clock.now();
        let mut last = String::new();
        let filled = poll(clock, self.session.deadline, || {
            if clock.now().duration_since(synced) >= RESYNC {
                self.session
                    .read(|| client.sync_shards(&self.via, &doc.db))?;
                synced = clock.now();
            }
            let states = each_bounded(&reads, PARALLEL, |(range, node)| {
                client.copy(&self.via, node, &doc.file(range))
            });
            let mut seen: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
            // Copies that gave no answer this time (as opposed to "no such file").
            let mut silent: BTreeSet<(String, String)> = BTreeSet::new();
            for ((range, node), state) in reads.iter().zip(states) {
                match state {
                    Ok(CopyState::Present(i)) => {
                        seen.insert(
                            (range.clone(), node.clone()),
                            (i.doc_count, i.doc_del_count),
                        );
                    }
                    Ok(CopyState::Missing) => {}
                    Ok(CopyState::NodeDown) | Err(NodeError::Unreachable { .. }) => {
                        silent.insert((range.clone(), node.clone()));
                    }
                    Err(e) => return Err(anyhow::Error::from(e)),
                }
            }
            let waiting: Vec<String> = pending
                .iter()
                .filter_map(|m| shortfall(m, &seen, &silent, &new))
                .collect();
            if waiting.is_empty() {
                return Ok(Some(()));
            }
            let report = waiting.join("; ");
            if report != last {
                info!("move: {}: waiting for {what} to fill: {report}", doc.db);
                last = report;
            }
            Ok(None)
        })?;
        match filled {
            Some(()) => {
                debug!(
                    "move: {}: {what} filled in {:.2?}",
                    doc.db,
                    clock.now().duration_since(started)
                );
                Ok(())
            }
            None => Err(incomplete(format!(
                "{}: {what} did not fill before the deadline ({last}); every old copy is still in the \
                 map and nothing was removed: run it again to finish",
                doc.db
            ))),
        }
    }

    fn drop_copies(
        &self,
        doc: &ShardDoc,
        drops: &[(String, String)],
        done: &mut Done,
    ) -> Result<()> {
        // Fewer copies, not fewer documents: a copy to drop may hold writes no other copy has
        // yet (one accepted with 202 by that copy alone is pushed ~5 s later, and never once
        // the copy has left the maps). It goes only once a copy that stays holds what it holds.
        let proofs: Vec<Move> = drops
            .iter()
            .filter(|(_, node)| self.watch.contains(node))
            .filter_map(|(range, node)| {
                let stays = doc.map.get(range)?.iter().find(|n| {
                    self.watch.contains(*n) && !drops.contains(&(range.clone(), (*n).clone()))
                })?;
                Some(Move {
                    range: range.clone(),
                    from: node.clone(),
                    to: stays.clone(),
                })
            })
            .collect();
        if !proofs.is_empty() {
            self.fill(doc, &proofs, "the copies that stay")?;
        }
        let mut after = doc.map.clone();
        let mut floor: BTreeMap<String, usize> = BTreeMap::new();
        for (range, node) in drops {
            if let Some(nodes) = after.get_mut(range) {
                nodes.retain(|n| n != node);
                floor.insert(range.clone(), nodes.len());
            }
            warn!(
                "move: {}: removing the copy of {range} on {node} with no replacement (--accept-fewer-copies): \
                 {} cop{} left",
                doc.db,
                after.get(range).map_or(0, Vec::len),
                if after.get(range).map_or(0, Vec::len) == 1 { "y" } else { "ies" }
            );
        }
        let rules = Rules {
            may_remove: drops.iter().cloned().collect(),
            floor,
            ..Rules::default()
        };
        if let Some(rev) = self.put(doc, &after, &[], &rules)? {
            self.wait_everywhere(&doc.db, &rev)?;
            done.dropped.extend(drops.iter().cloned());
        }
        Ok(())
    }

    // ---- the one write, and its propagation -------------------------------------------------

    /// Checks the edit, then PUTs it on the editing node. `None`: 409, the map changed since it
    /// was read; the next round reads it again.
    fn put(
        &self,
        doc: &ShardDoc,
        after: &ShardMap,
        moves: &[Move],
        rules: &Rules,
    ) -> Result<Option<String>> {
        check_edit(&doc.db, &doc.map, after, rules)
            .map_err(|why| Failure::new(Status::Failed, why))?;
        let body = doc.edited(after, moves);
        match self
            .session
            .read(|| self.session.client.put_shard_doc(&self.via, &doc.db, &body))?
        {
            Saved::Rev(rev) => Ok(Some(rev)),
            Saved::Conflict => {
                info!(
                    "move: {}: its shard map changed meanwhile; reading it again",
                    doc.db
                );
                Ok(None)
            }
        }
    }

    /// Until every connected member's `_dbs` has `rev` (or a later revision).
    fn wait_everywhere(&self, db: &str, rev: &str) -> Result<()> {
        let want = rev_pos(rev);
        let client = &self.session.client;
        let reached = each_bounded(&self.watch, PARALLEL, |member| {
            poll(self.session.clock, self.session.deadline, || {
                match client.shard_doc(&self.via, member, db) {
                    Ok(Some(d)) if rev_pos(&d.rev) >= want => Ok(Some(())),
                    Ok(_) | Err(NodeError::Unreachable { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
        });
        for (member, r) in self.watch.iter().zip(reached) {
            if r?.is_none() {
                return Err(incomplete(format!(
                    "{db}: {member} had not received revision {rev} of the shard map before the deadline; \
                     nothing was removed before its replacement was proven: run it again"
                )));
            }
        }
        Ok(())
    }

    // ---- leftovers ---------------------------------------------------------------------------

    /// Deletes leftover files of current databases, each only once no connected member's map
    /// lists that copy (trap 16). Returns the files deleted.
    pub fn delete_leftovers(&self, found: &[Leftover]) -> Result<Vec<Leftover>> {
        let client = &self.session.client;
        let mut deleted = Vec::new();
        for l in found {
            let Some(db) = &l.db else {
                info!(
                    "leftover: {} on {}: no current database owns it; not deleted",
                    l.file, l.node
                );
                continue;
            };
            let maps = each_bounded(&self.watch, PARALLEL, |m| {
                self.session.read(|| client.shard_doc(&self.via, m, db))
            });
            let mut listed_by = Vec::new();
            for (member, map) in self.watch.iter().zip(maps) {
                if map?.is_some_and(|d| d.map.get(&l.range).is_some_and(|n| n.contains(&l.node))) {
                    listed_by.push(member.clone());
                }
            }
            if !listed_by.is_empty() {
                warn!(
                    "leftover: {} on {}: still listed in the shard map of {}; not deleted",
                    l.file,
                    l.node,
                    listed_by.join(", ")
                );
                continue;
            }
            match self
                .session
                .read(|| client.delete_copy(&self.via, &l.node, &l.file))?
            {
                Gone::Deleted => {
                    info!("leftover: deleted {} on {}", l.file, l.node);
                    deleted.push(l.clone());
                }
                Gone::Already | Gone::Conflict => {}
            }
        }
        Ok(deleted)
    }
}

/// Why move `m`'s new copy is not filled yet; `None` when it is. `silent`: copies read that
/// gave no answer: a source among them may hold what the others lack, so nothing is proven.
fn shortfall(
    m: &Move,
    seen: &BTreeMap<(String, String), (u64, u64)>,
    silent: &BTreeSet<(String, String)>,
    new: &BTreeSet<(&str, &str)>,
) -> Option<String> {
    let Some(&(docs, deleted)) = seen.get(&(m.range.clone(), m.to.clone())) else {
        return Some(format!("{} on {}: no file yet", m.range, m.to));
    };
    if let Some((_, node)) = silent
        .iter()
        .find(|(r, n)| *r == m.range && !new.contains(&(r.as_str(), n.as_str())))
    {
        return Some(format!(
            "{} on {node}: its copy did not answer, so the new copy cannot be compared with it",
            m.range
        ));
    }
    let sources: Vec<(u64, u64)> = seen
        .iter()
        .filter(|((r, n), _)| *r == m.range && !new.contains(&(r.as_str(), n.as_str())))
        .map(|(_, c)| *c)
        .collect();
    let Some(want) = sources.iter().map(|c| c.0).max() else {
        return Some(format!("{}: no connected copy to fill it from", m.range));
    };
    let want_deleted = sources.iter().map(|c| c.1).max().unwrap_or(0);
    (docs < want || deleted < want_deleted)
        .then(|| format!("{} on {}: {docs} of {want} documents", m.range, m.to))
}

/// `map` without the copies `gone` (range, node), and the rules that let exactly those go.
fn removing(map: &ShardMap, gone: &[(String, String)]) -> (ShardMap, Rules) {
    let mut after = map.clone();
    let mut floor: BTreeMap<String, usize> = BTreeMap::new();
    for (range, node) in gone {
        if let Some(nodes) = after.get_mut(range) {
            nodes.retain(|n| n != node);
        }
        let count = floor
            .entry(range.clone())
            .or_insert_with(|| map.get(range).map_or(0, Vec::len));
        *count = count.saturating_sub(1);
    }
    let rules = Rules {
        may_remove: gone.iter().cloned().collect(),
        floor,
        ..Rules::default()
    };
    (after, rules)
}

fn rev_pos(rev: &str) -> u64 {
    rev.split('-')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn describe(moves: &[Move]) -> String {
    moves
        .iter()
        .map(|m| format!("{} {} → {}", m.range, m.from, m.to))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `other` changes relative to `map`, in words.
fn difference(map: &ShardMap, other: &ShardMap) -> String {
    let mut parts = Vec::new();
    for (range, nodes) in other {
        let before: BTreeSet<&String> = map.get(range).into_iter().flatten().collect();
        let after: BTreeSet<&String> = nodes.iter().collect();
        for n in after.difference(&before) {
            parts.push(format!("added {range} on {n}"));
        }
        for n in before.difference(&after) {
            parts.push(format!("removed {range} from {n}"));
        }
    }
    for range in map.keys().filter(|r| !other.contains_key(*r)) {
        parts.push(format!("dropped range {range}"));
    }
    if parts.is_empty() {
        "changed nothing in the map".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(range: &str, from: &str, to: &str) -> Move {
        Move {
            range: range.into(),
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn a_new_copy_counts_only_once_it_holds_what_its_sources_hold() {
        let m = mv("r", "n3", "n4");
        let new: BTreeSet<(&str, &str)> = [("r", "n4")].into_iter().collect();
        let none = BTreeSet::new();
        let seen = |pairs: &[(&str, (u64, u64))]| -> BTreeMap<(String, String), (u64, u64)> {
            pairs
                .iter()
                .map(|(n, c)| (("r".to_string(), n.to_string()), *c))
                .collect()
        };
        assert!(shortfall(&m, &seen(&[("n1", (88, 0))]), &none, &new)
            .unwrap()
            .contains("no file"));
        let short = shortfall(
            &m,
            &seen(&[("n1", (88, 0)), ("n3", (89, 0)), ("n4", (88, 0))]),
            &none,
            &new,
        );
        assert!(short.unwrap().contains("88 of 89"));
        // Deletions count too: a tombstone that has not arrived yet.
        assert!(shortfall(&m, &seen(&[("n1", (88, 1)), ("n4", (88, 0))]), &none, &new).is_some());
        assert!(shortfall(&m, &seen(&[("n1", (88, 1)), ("n4", (88, 1))]), &none, &new).is_none());
        // With no source readable, nothing can be proven.
        assert!(shortfall(&m, &seen(&[("n4", (0, 0))]), &none, &new)
            .unwrap()
            .contains("no connected copy"));
    }

    #[test]
    fn a_source_copy_that_did_not_answer_leaves_the_new_copy_unproven() {
        // node3's copy (the one to be removed) holds a document the others lack; in this poll
        // it did not answer (412 nodedown, a timeout). Comparing with node1 alone would prove
        // nothing about what node3 holds.
        let m = mv("r", "n3", "n4");
        let new: BTreeSet<(&str, &str)> = [("r", "n4")].into_iter().collect();
        let seen: BTreeMap<(String, String), (u64, u64)> = [
            (("r".to_string(), "n1".to_string()), (88, 0)),
            (("r".to_string(), "n4".to_string()), (88, 0)),
        ]
        .into_iter()
        .collect();
        let silent: BTreeSet<(String, String)> =
            [("r".to_string(), "n3".to_string())].into_iter().collect();
        let short = shortfall(&m, &seen, &silent, &new).expect("not proven");
        assert!(
            short.contains("n3") && short.contains("did not answer"),
            "{short}"
        );
    }

    #[test]
    fn a_losing_edit_is_described_in_words() {
        let map = |a: &[&str]| -> ShardMap {
            [("r".to_string(), a.iter().map(|s| s.to_string()).collect())]
                .into_iter()
                .collect()
        };
        assert_eq!(
            difference(&map(&["a", "b"]), &map(&["a", "c"])),
            "added r on c, removed r from b"
        );
        assert_eq!(
            difference(&map(&["a"]), &map(&["a"])),
            "changed nothing in the map"
        );
    }

    #[test]
    fn progress_lines_stay_short_at_any_number_of_databases() {
        let mut t = Tally {
            moved: 412,
            filling: (0..32).map(|i| format!("tenant{i:04}")).collect(),
            said: Instant::now(),
        };
        let line = t.line(750);
        assert!(
            line.starts_with("moved 412 of 750 copies, 32 filling: tenant0000, "),
            "{line}"
        );
        assert!(line.ends_with("and 27 more"), "{line}");
        t.filling.clear();
        assert_eq!(t.line(750), "moved 412 of 750 copies, 0 filling");
    }

    #[test]
    fn revision_positions() {
        assert_eq!(rev_pos("12-abc"), 12);
        assert_eq!(rev_pos("junk"), 0);
    }
}
