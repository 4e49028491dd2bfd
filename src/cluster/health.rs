//! The one verdict: is this cluster healthy? `check` and `status` both ask it, over one
//! `Survey`. Healthy means:
//!
//! - every node in COUCHDB_NODES answers, is up (not in maintenance mode — a node drained with
//!   `nolb` is: it still serves the cluster), has a usable Erlang name, and sees exactly the
//!   members as connected and as members; every member is listed;
//! - admin hash, `[couchdb] uuid` and `[chttpd_auth] secret` agree on every node;
//! - `_users` and `_replicator` exist;
//! - every range of every database has its copies on members that are connected and up, filled
//!   as far as this run read them: `n` copies, where `n` is what the database's ranges hold (not
//!   counting new copies of a move under way), and for `_users`/`_replicator` at least
//!   min(`[cluster] n`, members);
//! - every shard map can be read, and none has conflicting revisions (trap 13) or a move an
//!   earlier run left unfinished.
//!
//! - with zones: every member's `_nodes` doc has the zone the configuration declares, and
//!   `[cluster] placement` is the same on every node, the rule `zones::placement_rule` gives,
//!   naming no zone without members (CouchDB would refuse every new database).
//!
//! Leftover shard files are reported, not counted against health; nor are ranges whose copies
//! share a zone where they need not (`zones::shared_ranges`): nothing is lost or unreachable
//! now, and a cluster given zones for the first time has them all until `rebalance`.
//! Leftover shard files are reported, not counted against health; so are a drained node and
//! members on different CouchDB releases (`findings`): both are normal during an upgrade.

use std::collections::{BTreeMap, BTreeSet};

use crate::client::{CopyState, Move, NodeConfig};
use crate::cluster::planner::unfinished;
use crate::cluster::session::{check_erlang_name, Identified, Nodes};
use crate::cluster::survey::{State, Survey};
use crate::cluster::zones::{self, Zones};
use crate::util::exit::Status;
use crate::util::text::{list_compact, list_some};

/// The databases `finish_cluster` creates; the cluster is not usable without them.
pub const SYSTEM_DBS: [&str; 2] = ["_users", "_replicator"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: Status,
    pub text: String,
}

/// One copy, as the survey saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyHealth {
    Ok,
    /// The map names a node that is not a member (a phantom, or a node removed too early).
    NotMember,
    /// A member that is not connected: stopped, or cut off.
    Down,
    Maintenance,
    /// The node has no file for it.
    Missing,
    /// Fewer documents than the fullest copy of its range: still filling (trap 11).
    Filling {
        have: u64,
        of: u64,
    },
}

impl CopyHealth {
    pub fn counts(self) -> bool {
        self == CopyHealth::Ok
    }

    pub fn word(self) -> String {
        match self {
            CopyHealth::Ok => "ok".into(),
            CopyHealth::NotMember => "not a member".into(),
            CopyHealth::Down => "not connected".into(),
            CopyHealth::Maintenance => "in maintenance".into(),
            CopyHealth::Missing => "no file".into(),
            CopyHealth::Filling { have, of } => format!("filling {have}/{of}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RangeView {
    pub range: String,
    pub copies: Vec<(String, CopyHealth)>,
    /// Copies that count: on a connected, serving member, and not known to be short.
    pub healthy: usize,
    /// Per-copy document counts, where they were read.
    pub docs: Vec<Option<u64>>,
}

#[derive(Debug, Clone)]
pub struct DbView {
    pub db: String,
    pub q: usize,
    /// Copies each range should have.
    pub n: usize,
    pub ranges: Vec<RangeView>,
    /// A move an earlier run left unfinished.
    pub moving: Vec<Move>,
    pub conflicts: usize,
}

impl DbView {
    pub fn short(&self) -> impl Iterator<Item = &RangeView> {
        self.ranges.iter().filter(|r| r.healthy < self.n)
    }

    pub fn healthy(&self) -> bool {
        self.short().next().is_none() && self.moving.is_empty() && self.conflicts == 0
    }
}

/// Every database as the survey saw it, in `_dbs` order.
pub fn databases(s: &Survey) -> Vec<DbView> {
    s.docs
        .iter()
        .map(|doc| {
            let moving = unfinished(doc);
            let added = |range: &str| moving.iter().filter(|m| m.range == range).count();
            let mut n = doc
                .map
                .iter()
                .map(|(r, nodes)| nodes.len().saturating_sub(added(r)))
                .max()
                .unwrap_or(0);
            if SYSTEM_DBS.contains(&doc.db.as_str()) {
                n = n.max(s.cluster_n.min(s.members.len()));
            }
            let ranges = doc
                .map
                .iter()
                .map(|(range, nodes)| range_view(s, &doc.db, range, nodes))
                .collect();
            DbView {
                db: doc.db.clone(),
                q: doc.map.len(),
                n,
                ranges,
                moving,
                conflicts: doc.conflicts.len(),
            }
        })
        .collect()
}

fn range_view(s: &Survey, db: &str, range: &str, nodes: &[String]) -> RangeView {
    let read = |node: &String| {
        s.copies
            .get(&(db.to_string(), range.to_string(), node.clone()))
    };
    let size = |node: &String| match read(node) {
        Some(CopyState::Present(i)) => Some(i.doc_count + i.doc_del_count),
        _ => None,
    };
    let fullest = nodes.iter().filter_map(size).max().unwrap_or(0);
    let copies: Vec<(String, CopyHealth)> = nodes
        .iter()
        .map(|node| {
            let health = if !s.members.contains(node) {
                CopyHealth::NotMember
            } else if !s.connected.contains(node) {
                CopyHealth::Down
            } else if s
                .node(node)
                .is_some_and(|v| matches!(v.state, State::Maintenance(_)) && !v.drained())
            {
                CopyHealth::Maintenance
            } else {
                match read(node) {
                    Some(CopyState::Missing) => CopyHealth::Missing,
                    Some(CopyState::NodeDown) => CopyHealth::Down,
                    Some(CopyState::Present(_)) => match size(node) {
                        Some(have) if have < fullest => CopyHealth::Filling { have, of: fullest },
                        _ => CopyHealth::Ok,
                    },
                    None => CopyHealth::Ok,
                }
            };
            (node.clone(), health)
        })
        .collect();
    RangeView {
        range: range.to_string(),
        healthy: copies.iter().filter(|(_, h)| h.counts()).count(),
        docs: nodes
            .iter()
            .map(|n| match read(n) {
                Some(CopyState::Present(i)) => Some(i.doc_count),
                _ => None,
            })
            .collect(),
        copies,
    }
}

/// Everything that keeps the cluster from being healthy; empty when it is. The nodes' own
/// problems come first (a node that does not answer explains most of what follows).
pub fn verdict(s: &Survey, dbs: &[DbView]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut say = |status: Status, text: String| problems.push(Problem { status, text });
    let listed: BTreeSet<&str> = s
        .nodes
        .iter()
        .filter(|n| n.addr.is_some())
        .filter_map(|n| n.name.as_deref())
        .collect();
    // Listed nodes that never answered: their names are unknown, so an unlisted member that
    // is not connected may be one of them.
    let silent: Vec<String> = s
        .nodes
        .iter()
        .filter(|n| n.addr.is_some() && n.name.is_none())
        .map(|n| n.label())
        .collect();
    for node in &s.nodes {
        match &node.state {
            State::Down(why) if node.addr.is_some() => say(
                Status::Unreachable,
                format!("{} does not answer: {why}", node.label()),
            ),
            State::Down(_) if !silent.is_empty() => say(
                Status::Unverified,
                match silent.as_slice() {
                    [one] => format!(
                        "member {} is not connected (it may be {one}, which does not answer)",
                        node.label()
                    ),
                    _ => format!(
                        "member {} is not connected (it may be one of {}, which do not answer)",
                        node.label(),
                        list_some(&silent)
                    ),
                },
            ),
            State::Down(why) => say(
                Status::Unverified,
                format!("member {} is not connected: {why}", node.label()),
            ),
            // Drained: out of the load balancer only (a finding of its own, below).
            State::Maintenance(_) if node.drained() => {}
            State::Maintenance(mode) => say(
                Status::Unverified,
                format!("{} is in maintenance mode ({mode})", node.label()),
            ),
            State::Up => {}
        }
    }
    // A member the reference cannot reach is reported above, once; here only disagreements.
    let reachable: BTreeSet<String> = s.members.intersection(&s.connected).cloned().collect();
    let mut seen_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in s.nodes.iter().filter(|n| n.addr.is_some()) {
        let (Some(name), Some(addr)) = (&node.name, &node.addr) else {
            continue;
        };
        if let Err(e) = check_erlang_name(&addr.label, name) {
            say(Status::Config, format!("{e}"));
        }
        if !s.members.contains(name) {
            say(
                Status::Unverified,
                format!(
                    "{} is not a member of the cluster: if it is new, run init to join it; if it was \
                     removed, stop it and take it out of {}",
                    node.label(),
                    s.source
                ),
            );
        }
        if let Some(m) = &node.membership {
            let found = gaps(&s.members, &m.cluster_nodes, "members")
                .into_iter()
                .chain(gaps(&reachable, &m.all_nodes, "connected"));
            for gap in found {
                seen_by.entry(gap).or_default().push(node.label());
            }
        }
    }
    // One line per gap, not per node: at 32 nodes a stopped member is missing from 31 lists.
    for (gap, who) in seen_by {
        say(Status::Unverified, format!("{}: {gap}", list_some(&who)));
    }
    let unlisted = s
        .members
        .iter()
        .filter(|m| !listed.contains(m.as_str()))
        .filter(|m| silent.is_empty() || s.connected.contains(*m));
    for member in unlisted {
        say(
            Status::Unverified,
            format!("{member} is a member but not in {}", s.source),
        );
    }
    if let Some(drift) = drift(s) {
        say(Status::Unverified, drift);
    }
    match &s.declared {
        Err(why) => say(Status::Config, why.clone()),
        Ok(_) => {
            if let Some(drift) = zone_drift(s) {
                say(Status::Unverified, drift);
            }
        }
    }
    for finding in placement_findings(s) {
        say(Status::Unverified, finding);
    }
    for odd in &s.unreadable {
        say(
            Status::Unverified,
            format!(
                "{odd}: its copies cannot be checked, and `remove` and `rebalance` refuse while it stays so \
                 (it is the `_dbs` doc of that name)"
            ),
        );
    }
    for db in SYSTEM_DBS {
        if !dbs.iter().any(|d| d.db == db) && !s.unreadable.iter().any(|u| u.db == db) {
            say(
                Status::Unverified,
                format!("database {db} does not exist (finish_cluster never completed: run init)"),
            );
        }
    }
    for db in dbs {
        let short: Vec<String> = db
            .short()
            .map(|r| {
                let lacking: Vec<String> = r
                    .copies
                    .iter()
                    .filter(|(_, h)| !h.counts())
                    .map(|(node, h)| format!("{node} {}", h.word()))
                    .collect();
                if lacking.is_empty() {
                    format!("{} has {} of {}", r.range, r.healthy, db.n)
                } else {
                    format!(
                        "{} has {} of {} ({})",
                        r.range,
                        r.healthy,
                        db.n,
                        lacking.join(", ")
                    )
                }
            })
            .collect();
        if !short.is_empty() {
            say(
                Status::Unverified,
                format!(
                    "{}: under-replicated, {} range(s) short of {} copies: {}",
                    db.db,
                    short.len(),
                    db.n,
                    list_some(&short)
                ),
            );
        }
        if db.conflicts > 0 {
            say(
                Status::Unverified,
                format!(
                    "{}: its shard map has {} conflicting revision(s) (two edits from the same revision; \
                     CouchDB kept one and dropped the other silently): `rebalance` resolves it",
                    db.db, db.conflicts
                ),
            );
        }
        if !db.moving.is_empty() {
            let moves: Vec<String> = db
                .moving
                .iter()
                .map(|m| format!("{} {} → {}", m.range, m.from, m.to))
                .collect();
            say(
                Status::Unverified,
                format!(
                    "{}: a move was interrupted ({}): run `rebalance` or the same `remove` again to finish it",
                    db.db,
                    moves.join(", ")
                ),
            );
        }
    }
    problems
}

/// Config drift among the nodes that answered (all of them read), if any: what `init` repairs.
pub fn drift(s: &Survey) -> Option<String> {
    let answered: Vec<Identified> = s
        .nodes
        .iter()
        .filter_map(|n| {
            Some(Identified {
                addr: n.addr.clone()?,
                name: n.name.clone()?,
            })
        })
        .collect();
    let configs: Vec<_> = s
        .nodes
        .iter()
        .filter(|n| n.addr.is_some() && n.name.is_some())
        .filter_map(|n| n.config.clone())
        .collect();
    if configs.len() == answered.len() && !answered.is_empty() {
        let coordinator = answered
            .iter()
            .position(|n| Some(&n.name) == s.nodes[s.reference].name.as_ref())
            .unwrap_or(0);
        let nodes = Nodes {
            all: answered,
            coordinator,
        };
        return config_drift(&nodes, &configs);
    }
    None
}

/// Each member's zone as the cluster should have it: the declared one, else its `_nodes` doc's.
pub fn intended_zones(s: &Survey) -> Zones {
    let declared = s.declared.as_ref().ok().and_then(Option::as_ref);
    s.members
        .iter()
        .filter_map(|m| {
            let z = declared.and_then(|d| d.get(m)).or_else(|| s.zones.get(m))?;
            Some((m.clone(), z.clone()))
        })
        .collect()
}

/// The `[cluster] placement` every node should have: from the intended zones and `[cluster]
/// n`; `None` when no member has a zone.
pub fn intended_placement(s: &Survey) -> Option<String> {
    let members: Vec<String> = s.members.iter().cloned().collect();
    zones::placement_rule(&intended_zones(s), &members, s.cluster_n)
}

/// What `init` repairs about zones, if anything: a member's `_nodes` doc without the zone
/// declared for it, or a node whose `[cluster] placement` is not the rule. Only with zones
/// declared: without, the tool does not manage them.
pub fn zone_drift(s: &Survey) -> Option<String> {
    let declared = s.declared.as_ref().ok()?.as_ref()?;
    let mut said = Vec::new();
    let stale: Vec<String> = declared
        .iter()
        .filter(|(n, z)| s.members.contains(*n) && s.zones.get(*n) != Some(*z))
        .map(|(n, z)| {
            format!(
                "{n} ({} in its _nodes doc, declared {z})",
                s.zones.get(n).map_or("no zone", String::as_str)
            )
        })
        .collect();
    if !stale.is_empty() {
        said.push(format!("zones not written: {}", list_some(&stale)));
    }
    if let Some(rule) = intended_placement(s) {
        let off: Vec<String> = answering_configs(s)
            .filter(|(_, placement)| placement.as_deref() != Some(rule.as_str()))
            .map(|(label, placement)| {
                format!("{label} has {}", placement.unwrap_or_else(|| "none".into()))
            })
            .collect();
        if !off.is_empty() {
            said.push(format!(
                "[cluster] placement should be {rule} on every node: {}",
                list_some(&off)
            ));
        }
    }
    (!said.is_empty()).then(|| said.join("; "))
}

/// Placements that break database creation or disagree, where no zones are declared (with
/// declared zones `zone_drift` says it all): a zone no member is in (every new database
/// through that node fails, 500 `no_nodes_in_zone`), or nodes with different placements.
fn placement_findings(s: &Survey) -> Vec<String> {
    if matches!(&s.declared, Ok(Some(_))) {
        return Vec::new();
    }
    let members: Vec<String> = s.members.iter().cloned().collect();
    let placed: Vec<(String, Option<String>)> = answering_configs(s).collect();
    let mut found = Vec::new();
    for (label, placement) in &placed {
        let Some(rule) = placement else { continue };
        let empty = zones::empty_zones(rule, &s.zones, &members);
        if !empty.is_empty() {
            found.push(format!(
                "{label}: [cluster] placement {rule} names zone(s) {} that no member is in: CouchDB refuses every database created through it (500 no_nodes_in_zone)",
                empty.join(", ")
            ));
        }
    }
    let distinct: BTreeSet<&Option<String>> = placed.iter().map(|(_, p)| p).collect();
    if distinct.len() > 1 {
        let each: Vec<String> = placed
            .iter()
            .map(|(l, p)| format!("{l}: {}", p.as_deref().unwrap_or("none")))
            .collect();
        found.push(format!(
            "[cluster] placement differs between nodes, so where a new database goes depends on the node it is created through: {}",
            list_some(&each)
        ));
    }
    found
}

/// (label, `[cluster] placement`) of every node whose config was read.
fn answering_configs(s: &Survey) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    s.nodes
        .iter()
        .filter_map(|n| Some((n.label(), n.config.as_ref()?.placement.clone())))
}

/// What is worth a line of its own without making the cluster unhealthy: a drained node (out of
/// the load balancer, still serving the cluster) and members on different CouchDB releases.
pub fn findings(s: &Survey) -> Vec<String> {
    let mut out = Vec::new();
    let drained: Vec<String> = s
        .nodes
        .iter()
        .filter(|n| n.drained())
        .map(|n| n.label())
        .collect();
    if !drained.is_empty() {
        out.push(format!(
            "drained: {} — maintenance_mode nolb: no load-balancer traffic, still serving the \
             cluster; `undrain` brings it back once its copies have caught up",
            list_some(&drained)
        ));
    }
    let versions = s.versions();
    if versions.len() > 1 {
        let on: Vec<String> = versions
            .iter()
            .map(|v| {
                let nodes: Vec<String> = s
                    .nodes
                    .iter()
                    .filter(|n| n.version.as_deref() == Some(*v))
                    .map(|n| {
                        n.addr
                            .as_ref()
                            .map_or_else(|| n.label(), |a| a.label.clone())
                    })
                    .collect();
                format!("{v} on {}", list_compact(&nodes))
            })
            .collect();
        out.push(format!(
            "versions: mixed, {} (normal during a rolling upgrade; finish it: scripts/upgrade, or the \
             StatefulSet's rollout)",
            on.join("; ")
        ));
    }
    out
}

/// The exit status for a list of problems: the first one's (nodes come first).
pub fn status_of(problems: &[Problem]) -> Status {
    problems.first().map_or(Status::Formed, |p| p.status)
}

fn gaps(expected: &BTreeSet<String>, seen: &[String], what: &str) -> Vec<String> {
    let seen: BTreeSet<&String> = seen.iter().collect();
    let expected: BTreeSet<&String> = expected.iter().collect();
    let mut out = Vec::new();
    let missing: Vec<String> = expected.difference(&seen).map(|s| s.to_string()).collect();
    let extra: Vec<String> = seen.difference(&expected).map(|s| s.to_string()).collect();
    if !missing.is_empty() {
        out.push(format!("do not list {} as {what}", list_some(&missing)));
    }
    if !extra.is_empty() {
        out.push(format!(
            "list {} as {what}, which the cluster does not",
            list_some(&extra)
        ));
    }
    out
}

/// Which of admin hash, uuid and secret differ from the coordinator's, and where. Never prints them.
pub fn config_drift(nodes: &Nodes, configs: &[NodeConfig]) -> Option<String> {
    let reference = &configs[nodes.coordinator];
    // "admin hash and [couchdb] uuid" → the nodes where exactly those differ.
    let mut drift: Vec<(String, Vec<String>)> = Vec::new();
    for (i, (node, c)) in nodes.all.iter().zip(configs).enumerate() {
        if i == nodes.coordinator {
            continue;
        }
        let mut what = Vec::new();
        if c.admin_hash != reference.admin_hash {
            what.push("admin hash");
        }
        if c.uuid != reference.uuid {
            what.push("[couchdb] uuid");
        }
        if c.secret != reference.secret {
            what.push("[chttpd_auth] secret");
        }
        if what.is_empty() {
            continue;
        }
        let what = what.join(" and ");
        match drift.iter_mut().find(|(w, _)| *w == what) {
            Some((_, where_)) => where_.push(node.addr.label.clone()),
            None => drift.push((what, vec![node.addr.label.clone()])),
        }
    }
    let said: Vec<String> = drift
        .iter()
        .map(|(what, where_)| format!("{what} differs on {}", list_compact(where_)))
        .collect();
    (!said.is_empty()).then(|| format!("config drift: {}", said.join("; ")))
}
