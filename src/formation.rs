//! The formation procedure, top to bottom as an operator would describe it:
//! wait → identify → preflight → join → converge → finish → verify.
//!
//! Every phase works on all nodes in parallel under the one deadline; every write is preceded by
//! reads that prove it is needed, so a run on a formed cluster writes nothing.

use std::collections::BTreeSet;
use std::net::ToSocketAddrs;
use std::time::Duration;

use anyhow::Result;
use log::{info, warn};

use crate::client::{Added, Finish, Membership, NodeConfig, NodeError, NodeResult, ShardMap};
use crate::clock::{poll, Clock};
use crate::config::Config;
use crate::exit::{Failure, Status};
use crate::session::{each, Identified, Session};
use crate::text::list_some;

/// The databases `finish_cluster` creates; the cluster is not usable without them.
pub const SYSTEM_DBS: [&str; 2] = ["_users", "_replicator"];
/// CouchDB's own default for `[cluster] n` when the node's config does not set it.
const COUCHDB_DEFAULT_N: usize = 3;
/// `check` is for healthchecks and people: it should answer quickly.
pub const CHECK_WAIT: Duration = Duration::from_secs(10);

/// What the preflight read, per node (same order as the configuration).
#[derive(Debug, Clone)]
pub struct Observed {
    pub membership: Membership,
    pub dbs: Vec<String>,
}

/// What the preflight decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Erlang names the coordinator must add to its `_nodes`.
    pub to_join: Vec<String>,
    /// `_users` and `_replicator` exist on the coordinator.
    pub finished: bool,
    /// Nothing to do but verify.
    pub formed: bool,
}

/// The one line printed at the end.
#[derive(Debug)]
pub struct Summary {
    pub names: Vec<String>,
    pub coordinator: String,
    pub actions: Vec<String>,
    pub elapsed: Duration,
}

impl Summary {
    pub fn line(&self) -> String {
        let done = if self.actions.is_empty() {
            "nothing to do, nothing written".to_string()
        } else {
            self.actions.join(", ")
        };
        format!(
            "cluster of {} nodes verified ({}); coordinator {}; {}; total {:.2?}",
            self.names.len(),
            self.names.join(", "),
            self.coordinator,
            done,
            self.elapsed
        )
    }
}

pub struct Formation<'a> {
    session: Session<'a>,
}

/// A formation is a session with the formation's phases on top: `self.client`, `self.read`, …
impl<'a> std::ops::Deref for Formation<'a> {
    type Target = Session<'a>;
    fn deref(&self) -> &Session<'a> {
        &self.session
    }
}

impl<'a> Formation<'a> {
    pub fn new(cfg: &'a Config, clock: &'a dyn Clock, timeout: Duration) -> Formation<'a> {
        Formation {
            session: Session::new(cfg, clock, timeout),
        }
    }

    /// Form (or confirm) the cluster and verify it.
    pub fn init(&self) -> Result<Summary> {
        self.phase("wait", "every node's /_up", || self.wait_up())?;
        let nodes = self.phase("identify", "each node's Erlang name", || self.identify())?;
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        let plan = self.phase(
            "preflight",
            "membership and databases of every node",
            || decide(&nodes, self.cfg.coordinator, &self.observe(&nodes)?),
        )?;
        let mut actions = Vec::new();
        if plan.formed {
            info!("preflight: the cluster is already formed; verifying only");
        } else {
            if !plan.to_join.is_empty() {
                self.phase("join", "adding nodes to the coordinator's _nodes", || {
                    self.join(&plan.to_join)
                })?;
                actions.push(format!("joined {}", plan.to_join.join(", ")));
            }
            self.phase(
                "converge",
                "every node to list every node as connected and member",
                || self.converge(&nodes),
            )?;
            if !plan.finished || !plan.to_join.is_empty() {
                // After growth, finish_cluster copies the coordinator's admin, uuid and secret to
                // the new nodes (it answers 400 "already finished" having done so).
                let outcome = self.phase("finish", "finish_cluster on the coordinator", || {
                    self.finish(&nodes)
                })?;
                actions.push(outcome);
            }
        }
        let repaired = self.phase(
            "verify",
            "membership, system databases, shared config",
            || self.verify(&nodes, true, true),
        )?;
        actions.extend(repaired);
        Ok(self.summary(names, actions))
    }

    fn summary(&self, names: Vec<String>, actions: Vec<String>) -> Summary {
        Summary {
            names,
            coordinator: self.coordinator().label.clone(),
            actions,
            elapsed: self.elapsed(),
        }
    }

    // ---- preflight --------------------------------------------------------------------------

    /// Membership everywhere; databases only where they matter: on the coordinator (is it
    /// finished?) and on nodes that are not yet its members (would joining them be safe?).
    fn observe(&self, nodes: &[Identified]) -> Result<Vec<Observed>> {
        let memberships = self.read_each(nodes, |n| self.client.membership(&n.addr))?;
        let members = &memberships[self.cfg.coordinator].cluster_nodes;
        let dbs = each(&(0..nodes.len()).collect::<Vec<_>>(), |&i| {
            if i == self.cfg.coordinator || !members.contains(&nodes[i].name) {
                self.read(|| self.client.all_dbs(&nodes[i].addr))
            } else {
                Ok(Vec::new())
            }
        });
        memberships
            .into_iter()
            .zip(dbs)
            .map(|(membership, dbs)| {
                Ok(Observed {
                    membership,
                    dbs: dbs?,
                })
            })
            .collect()
    }

    // ---- join -------------------------------------------------------------------------------

    fn join(&self, names: &[String]) -> Result<()> {
        let coordinator = self.coordinator();
        for name in names {
            match self.read(|| self.client.add_node(coordinator, name))? {
                Added::Added => info!("join: added {name} to {}'s _nodes", coordinator.label),
                Added::AlreadyMember => {
                    info!("join: {name} was already in {}'s _nodes", coordinator.label)
                }
            }
        }
        Ok(())
    }

    // ---- converge ---------------------------------------------------------------------------

    /// Polls only the nodes that still lag: a node that has listed every node as connected and
    /// member has converged. It changes again only if a node stops within these milliseconds,
    /// which the next run (every `compose up`) or `check` would catch.
    fn converge(&self, nodes: &[Identified]) -> Result<()> {
        let expected: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let mut last_report = String::new();
        let mut last_seen: Vec<Option<NodeResult<Membership>>> =
            nodes.iter().map(|_| None).collect();
        let converged = |m: &Option<NodeResult<Membership>>| matches!(m, Some(Ok(m)) if membership_gap(&expected, m).is_none());
        let done = poll(self.clock, self.deadline, || {
            let lagging: Vec<usize> = (0..nodes.len())
                .filter(|&i| !converged(&last_seen[i]))
                .collect();
            let seen = each(&lagging, |&i| self.client.membership(&nodes[i].addr));
            for (i, m) in lagging.into_iter().zip(seen) {
                match m {
                    // Authentication and protocol errors end the phase; waiting will not fix them.
                    Err(e) if !matches!(e, NodeError::Unreachable { .. }) => {
                        return Err(anyhow::Error::from(e))
                    }
                    m => last_seen[i] = Some(m),
                }
            }
            let mut waiting = Vec::new();
            for (n, m) in nodes.iter().zip(&last_seen) {
                match m {
                    Some(Ok(m)) => {
                        if let Some(gap) = membership_gap(&expected, m) {
                            waiting.push(format!("{} {gap}", n.name));
                        }
                    }
                    Some(Err(e)) => waiting.push(format!("{} ({e})", n.name)),
                    None => {}
                }
            }
            if waiting.is_empty() {
                return Ok(Some(()));
            }
            let report = waiting.join("; ");
            if report != last_report {
                info!("converge: waiting: {report}");
                last_report = report;
            }
            Ok(None)
        })?;
        match done {
            Some(()) => Ok(()),
            None => {
                let last: Vec<NodeResult<Membership>> = last_seen
                    .into_iter()
                    .zip(nodes)
                    .map(|(m, n)| {
                        m.unwrap_or_else(|| {
                            Err(NodeError::Unreachable {
                                node: n.addr.label.clone(),
                                reason: "never asked".into(),
                            })
                        })
                    })
                    .collect();
                Err(Failure::new(
                    Status::NotConnected,
                    diagnose(nodes, self.cfg.coordinator, &last, resolves),
                )
                .into())
            }
        }
    }

    // ---- finish -----------------------------------------------------------------------------

    fn finish(&self, nodes: &[Identified]) -> Result<String> {
        let coordinator = self.coordinator();
        loop {
            match self.read(|| self.client.finish_cluster(coordinator))? {
                Finish::Finished => {
                    info!(
                        "finish: _users and _replicator created on all {} members",
                        nodes.len()
                    );
                    return Ok("finished the cluster".into());
                }
                Finish::AlreadyFinished => {
                    info!("finish: cluster was already finished; admin, uuid and secret copied from the coordinator");
                    return Ok("copied admin/uuid/secret from the coordinator".into());
                }
                Finish::NodesNotConnected => {
                    // CouchDB waits only 5 s for its members; it has created nothing. Wait until
                    // every node is connected again, then ask again (within the deadline).
                    warn!("finish: CouchDB timed out waiting for members to connect; converging again");
                    self.converge(nodes)?;
                }
            }
        }
    }

    // ---- verify -----------------------------------------------------------------------------

    /// The gate. With `repair`, config drift is fixed by re-running `finish_cluster` (it copies
    /// admin, uuid and secret from the coordinator); returns what it repaired.
    ///
    /// `membership_proven`: this run has just seen every node list every node (converge, or the
    /// preflight of a formed cluster), so reading it again would prove nothing new.
    fn verify(
        &self,
        nodes: &[Identified],
        membership_proven: bool,
        repair: bool,
    ) -> Result<Vec<String>> {
        let expected: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        if !membership_proven {
            let memberships = self.read_each(nodes, |n| self.client.membership(&n.addr))?;
            for (n, m) in nodes.iter().zip(&memberships) {
                if let Some(gap) = membership_gap(&expected, m) {
                    return Err(unverified(format!(
                        "membership on {} ({}): {gap}",
                        n.addr.label, n.name
                    )));
                }
            }
        }

        let configs = self.configs(nodes)?;
        let n = effective_n(&configs[self.cfg.coordinator])?;
        let mut repaired = Vec::new();
        if let Some(drift) = config_drift(nodes, self.cfg.coordinator, &configs) {
            if !repair {
                return Err(unverified(format!(
                    "{drift}; run couchdb-cluster-init to repair it"
                )));
            }
            warn!("verify: {drift}; re-running finish_cluster, which copies them from the coordinator");
            self.finish(nodes)?;
            let configs = self.configs(nodes)?;
            if let Some(drift) = config_drift(nodes, self.cfg.coordinator, &configs) {
                return Err(unverified(format!(
                    "{drift}, even after finish_cluster copied them"
                )));
            }
            repaired.push("repaired config drift".to_string());
        }

        let coordinator = self.coordinator();
        for db in SYSTEM_DBS {
            let shards = self
                .read(|| self.client.shards(coordinator, db))?
                .ok_or_else(|| {
                    unverified(format!(
                        "database {db} does not exist (finish_cluster never completed)"
                    ))
                })?;
            check_shards(db, &shards, &expected, n.min(nodes.len()))?;
        }
        info!("verify: {} members everywhere; _users and _replicator on {} copies; admin, uuid and secret agree", nodes.len(), n.min(nodes.len()));
        Ok(repaired)
    }

    fn configs(&self, nodes: &[Identified]) -> Result<Vec<NodeConfig>> {
        self.read_each(nodes, |n| self.client.node_config(&n.addr))
    }
}

fn unverified(message: String) -> anyhow::Error {
    Failure::new(Status::Unverified, message).into()
}

/// Decide from what every node says: already formed, formable (what to join), or unsafe.
pub fn decide(nodes: &[Identified], coordinator: usize, observed: &[Observed]) -> Result<Plan> {
    let coord = &nodes[coordinator];
    let coord_seen = &observed[coordinator];
    let expected: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let members: BTreeSet<&str> = coord_seen
        .membership
        .cluster_nodes
        .iter()
        .map(String::as_str)
        .collect();
    let unsafe_ = |m: String| -> Result<Plan> {
        Err(Failure::new(Status::Unsafe, format!("{m}. Nothing was written.")).into())
    };

    let strangers: Vec<&str> = members.difference(&expected).copied().collect();
    if !strangers.is_empty() {
        return unsafe_(format!(
            "the coordinator {} ({}) has members that are not in COUCHDB_NODES: {}. Add them to COUCHDB_NODES, or \
             remove them yourself (DELETE /_node/_local/_nodes/<name>?rev=…): this tool never removes members",
            coord.addr.label,
            coord.name,
            strangers.join(", ")
        ));
    }
    for (i, (node, seen)) in nodes.iter().zip(observed).enumerate() {
        if i == coordinator || members.contains(node.name.as_str()) {
            continue;
        }
        let others: Vec<&str> = seen
            .membership
            .cluster_nodes
            .iter()
            .map(String::as_str)
            .filter(|m| *m != node.name)
            .collect();
        if !others.is_empty() {
            return unsafe_(format!(
                "node {} ({}) already belongs to another cluster (its members: {}); it cannot join {}'s",
                node.addr.label,
                node.name,
                others.join(", "),
                coord.addr.label
            ));
        }
        if !seen.dbs.is_empty() {
            return unsafe_(format!(
                "node {} ({}) is not a member yet but already holds databases ({}): joining it would merge its shard \
                 map into the cluster's. Start it with an empty data volume, or move its data into the cluster by \
                 replication afterwards",
                node.addr.label,
                node.name,
                list_some(&seen.dbs)
            ));
        }
    }
    let alone = members.iter().all(|m| *m == coord.name);
    if alone && nodes.len() > 1 && !coord_seen.dbs.is_empty() {
        return unsafe_(format!(
            "the coordinator {} ({}) already holds databases ({}) but has no other members: it was set up as a \
             single node, and its shards would stay on it alone. Start from empty nodes",
            coord.addr.label,
            coord.name,
            list_some(&coord_seen.dbs)
        ));
    }

    let finished = SYSTEM_DBS
        .iter()
        .all(|db| coord_seen.dbs.iter().any(|d| d == db));
    let to_join: Vec<String> = nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|name| !members.contains(name.as_str()))
        .collect();
    let formed = to_join.is_empty()
        && finished
        && observed
            .iter()
            .all(|o| membership_gap(&expected, &o.membership).is_none());
    Ok(Plan {
        to_join,
        finished,
        formed,
    })
}

/// How a node's view differs from the expected set, if it does.
fn membership_gap(expected: &BTreeSet<&str>, m: &Membership) -> Option<String> {
    let mut gaps = Vec::new();
    for (list, what) in [
        (&m.all_nodes, "all_nodes (connected)"),
        (&m.cluster_nodes, "cluster_nodes (members)"),
    ] {
        let seen: BTreeSet<&str> = list.iter().map(String::as_str).collect();
        let missing: Vec<&str> = expected.difference(&seen).copied().collect();
        let extra: Vec<&str> = seen.difference(expected).copied().collect();
        if !missing.is_empty() {
            gaps.push(format!("{what} lacks {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            gaps.push(format!("{what} has unexpected {}", extra.join(", ")));
        }
    }
    (!gaps.is_empty()).then(|| gaps.join(", "))
}

/// Does this host name resolve from here? (A seam: tests pass their own.)
pub fn resolves(host: &str) -> bool {
    (host, 4369)
        .to_socket_addrs()
        .map(|mut a| a.next().is_some())
        .unwrap_or(false)
}

/// Why did convergence not happen? Name the nodes and the likely cause (traps 3 and 4).
pub fn diagnose(
    nodes: &[Identified],
    coordinator: usize,
    last: &[NodeResult<Membership>],
    resolves: impl Fn(&str) -> bool,
) -> String {
    let coord = &nodes[coordinator];
    let connected_to_coordinator: BTreeSet<&str> = match last.get(coordinator) {
        Some(Ok(m)) => m.all_nodes.iter().map(String::as_str).collect(),
        _ => BTreeSet::new(),
    };
    let mut causes = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if i == coordinator {
            continue;
        }
        if let Some(Err(e)) = last.get(i) {
            causes.push(format!("{e}"));
            continue;
        }
        if connected_to_coordinator.contains(node.name.as_str()) {
            continue;
        }
        let host = node.name.split_once('@').map_or("", |(_, h)| h);
        if resolves(host) {
            causes.push(format!(
                "{} ({}) answers HTTP and its host {host} resolves from here, but it never connected to {}: most likely \
                 its Erlang cookie differs (the node's COUCHDB_ERLANG_COOKIE must equal COUCHDB_COOKIE), or Erlang \
                 ports 4369/9100 are blocked between the nodes",
                node.addr.label, node.name, coord.name
            ));
        } else {
            causes.push(format!(
                "{} ({}): its host part {host} does not resolve from here, so the other nodes cannot reach it either: \
                 a name problem — NODENAME must be a dotted name every node resolves (e.g. a network alias)",
                node.addr.label, node.name
            ));
        }
    }
    if causes.is_empty() {
        // Connected, but the member lists did not catch up: report what each node still lacks.
        let expected: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        for (node, m) in nodes.iter().zip(last) {
            if let Ok(m) = m {
                if let Some(gap) = membership_gap(&expected, m) {
                    causes.push(format!("{} ({}): {gap}", node.addr.label, node.name));
                }
            }
        }
    }
    if causes.len() + 1 == nodes.len() && nodes.len() > 2 {
        causes.push(format!(
            "every other node is missing, so the odd one out may be the coordinator {} itself",
            coord.addr.label
        ));
    }
    format!(
        "the nodes did not all connect before the deadline: {}",
        causes.join("; ")
    )
}

fn effective_n(coordinator: &NodeConfig) -> Result<usize> {
    match &coordinator.n {
        None => Ok(COUCHDB_DEFAULT_N),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                Failure::new(
                    Status::Failed,
                    format!("the coordinator's [cluster] n is `{v}`, not a positive number"),
                )
                .into()
            }),
    }
}

/// Which of admin hash, uuid and secret differ from the coordinator's, and where. Never prints them.
pub fn config_drift(
    nodes: &[Identified],
    coordinator: usize,
    configs: &[NodeConfig],
) -> Option<String> {
    let reference = &configs[coordinator];
    let mut drift = Vec::new();
    for (i, (node, c)) in nodes.iter().zip(configs).enumerate() {
        if i == coordinator {
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
        if !what.is_empty() {
            drift.push(format!(
                "{} differs on {}",
                what.join(" and "),
                node.addr.label
            ));
        }
    }
    (!drift.is_empty()).then(|| format!("config drift: {}", drift.join("; ")))
}

/// Every range of `db` must live on `want` distinct nodes, all of them members.
pub fn check_shards(
    db: &str,
    shards: &ShardMap,
    expected: &BTreeSet<&str>,
    want: usize,
) -> Result<()> {
    if shards.is_empty() {
        return Err(unverified(format!("{db} has no shard ranges")));
    }
    for (range, holders) in shards {
        let distinct: BTreeSet<&str> = holders.iter().map(String::as_str).collect();
        if let Some(stranger) = distinct.iter().find(|h| !expected.contains(*h)) {
            return Err(unverified(format!(
                "{db} range {range} has a copy on {stranger}, which is not one of the nodes (a phantom member?)"
            )));
        }
        if distinct.len() < want {
            return Err(unverified(format!(
                "{db} range {range} lives on {} node(s) ({}), not {want}: the cluster was finished before every node \
                 had joined, and CouchDB does not repair that by itself (move shards by hand)",
                distinct.len(),
                holders.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::NodeConfig;
    use crate::config::{NodeAddr, Secret};

    fn ident(n: usize) -> Vec<Identified> {
        (1..=n)
            .map(|i| Identified {
                addr: NodeAddr {
                    label: format!("couchdb-{i}"),
                    url: format!("http://couchdb-{i}:5984"),
                },
                name: format!("couchdb@couchdb-{i}.cluster"),
            })
            .collect()
    }

    fn names(ids: &[usize]) -> Vec<String> {
        ids.iter()
            .map(|i| format!("couchdb@couchdb-{i}.cluster"))
            .collect()
    }

    fn seen(all: &[usize], members: &[usize], dbs: &[&str]) -> Observed {
        Observed {
            membership: Membership {
                all_nodes: names(all),
                cluster_nodes: names(members),
            },
            dbs: dbs.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn status(r: Result<Plan>) -> (Status, String) {
        let e = r.expect_err("expected a refusal");
        (crate::exit::status_of(&e), format!("{e:#}"))
    }

    #[test]
    fn fresh_nodes_are_formable() {
        let plan = decide(
            &ident(3),
            0,
            &[
                seen(&[1], &[1], &[]),
                seen(&[2], &[2], &[]),
                seen(&[3], &[3], &[]),
            ],
        )
        .unwrap();
        assert_eq!(
            plan,
            Plan {
                to_join: names(&[2, 3]),
                finished: false,
                formed: false
            }
        );
    }

    #[test]
    fn a_formed_cluster_needs_nothing() {
        let full = || seen(&[1, 2, 3], &[1, 2, 3], &["_replicator", "_users"]);
        let plan = decide(&ident(3), 0, &[full(), full(), full()]).unwrap();
        assert_eq!(
            plan,
            Plan {
                to_join: vec![],
                finished: true,
                formed: true
            }
        );
    }

    #[test]
    fn growth_joins_only_the_new_node() {
        let full = || seen(&[1, 2, 3], &[1, 2, 3], &["_replicator", "_users"]);
        let plan = decide(
            &ident(4),
            0,
            &[full(), full(), full(), seen(&[4], &[4], &[])],
        )
        .unwrap();
        assert_eq!(
            plan,
            Plan {
                to_join: names(&[4]),
                finished: true,
                formed: false
            }
        );
    }

    #[test]
    fn a_stranger_holding_databases_is_refused_by_name() {
        let (s, m) = status(decide(
            &ident(3),
            0,
            &[
                seen(&[1], &[1], &[]),
                seen(&[2], &[2], &["mydb"]),
                seen(&[3], &[3], &[]),
            ],
        ));
        assert_eq!(s, Status::Unsafe);
        assert!(
            m.contains("couchdb-2") && m.contains("mydb") && m.contains("Nothing was written"),
            "{m}"
        );
    }

    #[test]
    fn a_member_of_another_cluster_is_refused() {
        let (s, m) = status(decide(
            &ident(2),
            0,
            &[seen(&[1], &[1], &[]), seen(&[2], &[2, 7], &[])],
        ));
        assert_eq!(s, Status::Unsafe);
        assert!(
            m.contains("another cluster") && m.contains("couchdb-7"),
            "{m}"
        );
    }

    #[test]
    fn a_lone_coordinator_with_databases_is_refused() {
        let (s, m) = status(decide(
            &ident(2),
            0,
            &[seen(&[1], &[1], &["_users"]), seen(&[2], &[2], &[])],
        ));
        assert_eq!(s, Status::Unsafe);
        assert!(m.contains("single node"), "{m}");
    }

    #[test]
    fn members_missing_from_the_node_list_are_refused_not_removed() {
        let (s, m) = status(decide(
            &ident(2),
            0,
            &[
                seen(&[1, 2], &[1, 2, 9], &[]),
                seen(&[1, 2], &[1, 2, 9], &[]),
            ],
        ));
        assert_eq!(s, Status::Unsafe);
        assert!(
            m.contains("couchdb-9") && m.contains("never removes"),
            "{m}"
        );
    }

    #[test]
    fn diagnosis_tells_a_name_problem_from_a_cookie_problem() {
        let nodes = ident(3);
        let last = vec![
            Ok(Membership {
                all_nodes: names(&[1, 2]),
                cluster_nodes: names(&[1, 2, 3]),
            }),
            Ok(Membership {
                all_nodes: names(&[1, 2]),
                cluster_nodes: names(&[1, 2, 3]),
            }),
            Ok(Membership {
                all_nodes: names(&[3]),
                cluster_nodes: names(&[3]),
            }),
        ];
        let cookie = diagnose(&nodes, 0, &last, |_| true);
        assert!(
            cookie.contains("couchdb-3")
                && cookie.contains("cookie")
                && !cookie.contains("couchdb-2 ("),
            "{cookie}"
        );
        let name = diagnose(&nodes, 0, &last, |_| false);
        assert!(
            name.contains("does not resolve") && name.contains("couchdb-3"),
            "{name}"
        );
    }

    #[test]
    fn diagnosis_reports_member_lists_that_did_not_catch_up() {
        let nodes = ident(2);
        let last = vec![
            Ok(Membership {
                all_nodes: names(&[1, 2]),
                cluster_nodes: names(&[1, 2]),
            }),
            Ok(Membership {
                all_nodes: names(&[1, 2]),
                cluster_nodes: names(&[2]),
            }),
        ];
        let d = diagnose(&nodes, 0, &last, |_| true);
        assert!(
            d.contains("cluster_nodes (members) lacks couchdb@couchdb-1.cluster"),
            "{d}"
        );
    }

    #[test]
    fn shards_must_cover_min_n_distinct_members() {
        let expected: BTreeSet<&str> = ["a@x.y", "b@x.y", "c@x.y"].into_iter().collect();
        let map = |holders: &[&str]| -> ShardMap {
            ["00000000-7fffffff", "80000000-ffffffff"]
                .iter()
                .map(|r| {
                    (
                        r.to_string(),
                        holders.iter().map(|h| h.to_string()).collect(),
                    )
                })
                .collect()
        };
        check_shards("_users", &map(&["c@x.y", "b@x.y", "a@x.y"]), &expected, 3).unwrap();
        let e =
            check_shards("_users", &map(&["a@x.y", "a@x.y", "b@x.y"]), &expected, 3).unwrap_err();
        assert!(format!("{e}").contains("2 node(s)"), "{e}");
        let e = check_shards(
            "_users",
            &map(&["a@x.y", "b@x.y", "ghost@x.y"]),
            &expected,
            3,
        )
        .unwrap_err();
        assert!(format!("{e}").contains("ghost@x.y"), "{e}");
        assert!(check_shards("_users", &ShardMap::new(), &expected, 3).is_err());
    }

    #[test]
    fn drift_names_the_node_and_the_value_but_never_the_secret() {
        let nodes = ident(2);
        let conf = |hash: &str| NodeConfig {
            uuid: Some("u".into()),
            secret: Some(Secret::new("topsecret")),
            admin_hash: Some(Secret::new(hash)),
            n: None,
            q: None,
        };
        assert_eq!(
            config_drift(&nodes, 0, &[conf("-pbkdf2-1"), conf("-pbkdf2-1")]),
            None
        );
        let d = config_drift(&nodes, 0, &[conf("-pbkdf2-1"), conf("-pbkdf2-2")]).unwrap();
        assert!(d.contains("admin hash differs on couchdb-2"), "{d}");
        assert!(!d.contains("pbkdf2") && !d.contains("topsecret"), "{d}");
    }
}
