//! The formation procedure, top to bottom as an operator would describe it:
//! wait → identify → distribution → preflight → join → converge → finish → verify.
//!
//! Every phase works on all nodes in parallel under the one deadline; every write is preceded by
//! reads that prove it is needed, so a run on a formed cluster writes nothing. Two runs at once
//! (a Job retried, a hook and a manual run) end in one cluster: a lost `_nodes` race is asked
//! again, and every decision is taken from what the nodes say now, whoever wrote it.
//! After `finish_cluster` the other nodes are only read through the coordinator: their admin
//! hash was just replaced, and a direct request would make each pay the password hash again.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result};
use log::{debug, info, warn};

use crate::client::dist::Transport;
use crate::client::{Added, Finish, Membership, NodeConfig, NodeError, NodeResult, ShardMap};
use crate::cluster::health::{config_drift, SYSTEM_DBS};
use crate::cluster::security::{self, DistView};
use crate::cluster::session::{each, Nodes, Session, Waiting};
use crate::cluster::zones::{self, Reporting, Zones};
use crate::commands::backup::Backup;
use crate::util::clock::{poll, Clock};
use crate::util::config::{self, Config, NodeAddr, NodeList};
use crate::util::discovery;
use crate::util::exit::{Failure, Status};
use crate::util::text::{list_compact, list_some};

/// CouchDB's own default for `[cluster] n` when the node's config does not set it.
const COUCHDB_DEFAULT_N: usize = 3;
/// `check` is for healthchecks and people: it should answer quickly.
pub const CHECK_WAIT: Duration = Duration::from_secs(10);
/// `check --wait` asks again this often: an app's init container needs no more.
pub const CHECK_AGAIN: Duration = Duration::from_secs(2);

/// What the preflight read, per node (same order as the nodes).
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
            list_compact(&self.names),
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
        let addrs = self.phase("wait", &self.wait_what(), || self.wait_up())?;
        self.form(&addrs)
    }

    /// Everything `init` does after the wait, on nodes that answer: identify, preflight, join,
    /// converge, finish, verify, backup. `watch` calls it with the nodes it found up.
    pub fn form(&self, addrs: &[NodeAddr]) -> Result<Summary> {
        let (nodes, zones) = self.phase("identify", "each node's Erlang name and zone", || {
            let nodes = self.identify(addrs)?;
            let zones = self.zones_of(&nodes)?;
            Ok((nodes, zones))
        })?;
        self.phase(
            "distribution",
            "each node's Erlang distribution (TLS or plain TCP)",
            || self.check_distribution(&nodes),
        )?;
        let plan = self.phase(
            "preflight",
            "membership and databases of every node",
            || decide(&nodes, &self.observe(&nodes)?),
        )?;
        let mut actions = Vec::new();
        if plan.formed {
            info!("preflight: the cluster is already formed; verifying only");
        } else {
            if !plan.to_join.is_empty() {
                self.phase("join", "adding nodes to the coordinator's _nodes", || {
                    self.join(&nodes, &plan.to_join)
                })?;
                actions.push(format!("joined {}", list_compact(&plan.to_join)));
            }
            self.phase(
                "converge",
                "every node to list every node as connected and member",
                || self.converge(&nodes),
            )?;
        }
        // Before finish_cluster: `_users` and `_replicator` are then placed by zone too.
        if let Some(zones) = &zones {
            let done = self.phase(
                "zones",
                "each node's zone in its _nodes doc, then [cluster] placement on every node",
                || self.zones(&nodes, zones),
            )?;
            actions.extend(done);
        }
        if !plan.formed && (!plan.finished || !plan.to_join.is_empty()) {
            // After growth, finish_cluster copies the coordinator's admin, uuid and secret to
            // the new nodes (it answers 400 "already finished" having done so).
            let outcome = self.phase("finish", "finish_cluster on the coordinator", || {
                self.finish(&nodes)
            })?;
            actions.push(outcome);
        }
        let repaired = self.phase(
            "verify",
            "membership, system databases, shared config",
            || self.verify(&nodes, true, true),
        )?;
        actions.extend(repaired);
        if let Some(backup) = &self.cfg.backup {
            actions.extend(self.back_up(&nodes, backup)?);
        }
        Ok(self.summary(&nodes, actions))
    }

    /// `backup`: on a formed, verified cluster (read-only here), make sure every database is
    /// replicated to the backup CouchDB.
    pub fn backup(&self) -> Result<Summary> {
        let Some(backup) = &self.cfg.backup else {
            return Err(Failure::new(
                Status::Config,
                "COUCHDB_BACKUP_URL is not set: `backup` needs the CouchDB to back up to",
            )
            .into());
        };
        let addrs = self.phase("wait", &self.wait_what(), || self.wait_up())?;
        let nodes = self.phase("identify", "each node's Erlang name", || {
            self.identify(&addrs)
        })?;
        self.phase(
            "verify",
            "membership, system databases, shared config",
            || self.verify(&nodes, false, false),
        )?;
        let actions = self.back_up(&nodes, backup)?;
        Ok(self.summary(&nodes, actions))
    }

    fn back_up(&self, nodes: &Nodes, backup: &config::Backup) -> Result<Vec<String>> {
        self.phase(
            "backup",
            &format!("replication of every database to {}", backup.target.label),
            || Backup::new(&self.session, &nodes.coordinator().addr, backup).ensure(),
        )
        .context("the cluster is formed and verified; its backup is not")
    }

    fn summary(&self, nodes: &Nodes, actions: Vec<String>) -> Summary {
        Summary {
            names: nodes.names(),
            coordinator: nodes.coordinator().addr.label.clone(),
            actions,
            elapsed: self.elapsed(),
        }
    }

    // ---- identify: zones ----------------------------------------------------------------------

    /// Each node's zone — COUCHDB_ZONES, else what each node reports (`[couchdb_cluster_init]
    /// zone`, one GET each) — checked before anything is written: a node without a zone while
    /// others have one is a configuration error, named. `None`: zones are off.
    fn zones_of(&self, nodes: &Nodes) -> Result<Option<Zones>> {
        let reported = match &self.cfg.zones {
            Some(_) => vec![None; nodes.len()],
            None => self.read_each(&nodes.all, |n| self.client.reported_zone(&n.addr))?,
        };
        let listed: &[NodeAddr] = match &self.cfg.nodes {
            NodeList::Listed { nodes, .. } => nodes,
            NodeList::Service { .. } => &[],
        };
        let reporting: Vec<Reporting> = nodes
            .all
            .iter()
            .zip(&reported)
            .map(|(n, r)| Reporting {
                listed: listed.iter().position(|l| *l == n.addr),
                label: n.addr.label.clone(),
                name: &n.name,
                reported: r.as_deref(),
            })
            .collect();
        let (zones, unknown) = zones::declared(self.cfg.zones.as_ref(), &reporting)
            .map_err(|why| anyhow::Error::from(Failure::new(Status::Config, why)))?;
        if !unknown.is_empty() {
            warn!(
                "identify: COUCHDB_ZONES names {}, which is none of the nodes of this run",
                list_some(&unknown)
            );
        }
        if let Some(z) = &zones {
            info!("identify: {}", zones::describe(z));
        }
        Ok(zones)
    }

    // ---- zones ------------------------------------------------------------------------------

    /// Each node's zone into its `_nodes` doc, then `[cluster] placement` — the rule for `n`
    /// copies over these zones (`zones::placement_rule`) — on every node; where they differ.
    fn zones(&self, nodes: &Nodes, zones: &Zones) -> Result<Vec<String>> {
        let via = &nodes.coordinator().addr;
        let names = nodes.names();
        let mut actions = Vec::new();
        let written = self.write_zones(via, zones, &names)?;
        if !written.is_empty() {
            actions.push(format!("wrote the zones of {}", list_compact(&written)));
        }
        let current = self.cluster_configs(via, &names)?;
        let n = n_of(current[nodes.coordinator].n.as_ref())?;
        let Some(rule) = zones::placement_rule(zones, &names, n) else {
            return Ok(actions);
        };
        let distinct: BTreeSet<&String> = zones.values().collect();
        if distinct.len() < n.min(nodes.len()) {
            warn!(
                "zones: {} for n = {n}: every new range gets more than one copy in some zone ({rule}); losing such a zone loses the quorum of those ranges. A zone more spreads them",
                zones::describe(zones)
            );
        }
        let set = self.write_placement(via, &names, &current, &rule)?;
        if set.is_empty() {
            info!(
                "zones: {}; [cluster] placement {rule} on every node",
                zones::describe(zones)
            );
        } else {
            actions.push(format!(
                "set [cluster] placement {rule} on {} node(s)",
                set.len()
            ));
        }
        Ok(actions)
    }

    // ---- distribution -----------------------------------------------------------------------

    /// Nodes whose distributions differ never connect; a node on plain TCP where
    /// COUCHDB_DIST_TLS=true would be the exposed one. Both are refused before anything is
    /// written (exit 15). A node that cannot be probed is only warned about.
    fn check_distribution(&self, nodes: &Nodes) -> Result<()> {
        let (seen, problems) = self.probe_distribution(nodes);
        if !problems.is_empty() {
            return Err(Failure::new(
                Status::Security,
                format!("{}. Nothing was written.", problems.join("; ")),
            )
            .into());
        }
        let mut said: Vec<String> = seen
            .iter()
            .map(|d| d.word())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|w| {
                let n = seen.iter().filter(|d| d.word() == w).count();
                format!("{w} on {n} node(s)")
            })
            .collect();
        said.sort();
        info!("distribution: {}", said.join(", "));
        if self.cfg.dist_tls.is_none() && seen.iter().any(|d| d.transport == Transport::Plain) {
            warn!(
                "distribution: plain TCP, guarded by the cookie alone: documents cross the network in clear \
                 (compose/dist-tls.yaml turns on TLS; COUCHDB_DIST_TLS=false says plain is meant)"
            );
        }
        for f in security::credentials(self.cfg) {
            warn!("security: {}", f.text);
        }
        for d in &seen {
            if let (Transport::Unknown(why), Some(_)) = (&d.transport, self.cfg.dist_tls) {
                warn!(
                    "distribution: cannot tell which distribution {} runs ({why}); COUCHDB_DIST_TLS is not checked there",
                    d.label
                );
            }
        }
        Ok(())
    }

    /// Each node's distribution, and what is wrong with them together.
    fn probe_distribution(&self, nodes: &Nodes) -> (Vec<DistView>, Vec<String>) {
        let targets: Vec<(String, String, String)> = nodes
            .all
            .iter()
            .map(|n| {
                (
                    format!("{} ({})", n.addr.label, n.name),
                    n.addr.host().to_string(),
                    n.name.clone(),
                )
            })
            .collect();
        let seen = security::probe_nodes(&self.session, &targets);
        let problems = security::dist_problems(self.cfg.dist_tls, &seen);
        (seen, problems)
    }

    // ---- preflight --------------------------------------------------------------------------

    /// Membership everywhere; databases only where they matter: on the coordinator (is it
    /// finished?) and on nodes that are not yet its members (would joining them be safe?).
    fn observe(&self, nodes: &Nodes) -> Result<Vec<Observed>> {
        let memberships = self.read_each(&nodes.all, |n| self.client.membership(&n.addr))?;
        let members = &memberships[nodes.coordinator].cluster_nodes;
        let dbs = each(&(0..nodes.len()).collect::<Vec<_>>(), |&i| {
            if i == nodes.coordinator || !members.contains(&nodes.all[i].name) {
                self.read(|| self.client.all_dbs(&nodes.all[i].addr))
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

    /// Trap 22: the first writes to a fresh `_nodes` race, and the loser is not written. So the
    /// first name goes alone; once one write has landed, the others go at once.
    fn join(&self, nodes: &Nodes, names: &[String]) -> Result<()> {
        let Some((first, rest)) = names.split_first() else {
            return Ok(());
        };
        let mut outcomes = vec![self.add(nodes, first)?];
        for outcome in each(rest, |name| self.add(nodes, name)) {
            outcomes.push(outcome?);
        }
        let already: Vec<String> = names
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == Added::AlreadyMember)
            .map(|(name, _)| name.clone())
            .collect();
        let coordinator = &nodes.coordinator().addr.label;
        info!(
            "join: added {} of {} nodes to {coordinator}'s _nodes ({})",
            names.len() - already.len(),
            names.len(),
            list_compact(names)
        );
        if !already.is_empty() {
            info!(
                "join: {} were there already, added meanwhile by CouchDB or another run ({})",
                already.len(),
                list_compact(&already)
            );
        }
        Ok(())
    }

    /// One `_nodes` PUT on the coordinator. A lost race wrote nothing: re-read the coordinator's
    /// members (another run may have added the node meanwhile), and if it is not there, ask again.
    fn add(&self, nodes: &Nodes, name: &str) -> Result<Added> {
        let coordinator = &nodes.coordinator().addr;
        let added = poll(self.clock, self.deadline, || {
            match self.read(|| self.client.add_node(coordinator, name))? {
                Added::NotWritten => {
                    debug!("join: the PUT of {name} lost a race for a fresh _nodes (trap 22); re-reading");
                    let members = self.read(|| self.client.membership(coordinator))?;
                    Ok::<_, anyhow::Error>(
                        members
                            .cluster_nodes
                            .iter()
                            .any(|m| m == name)
                            .then_some(Added::AlreadyMember),
                    )
                }
                done => Ok(Some(done)),
            }
        })?;
        added.ok_or_else(|| {
            Failure::new(
                Status::Failed,
                format!(
                    "{name} was not added to {}'s _nodes before the deadline: every PUT lost a race with \
                     another write (500 badmatch: file_exists)",
                    coordinator.label
                ),
            )
            .into()
        })
    }

    // ---- converge ---------------------------------------------------------------------------

    /// Polls only the nodes that still lag: a node that has listed every node as connected and
    /// member has converged. It changes again only if a node stops within these milliseconds,
    /// which the next run (every `compose up`) or `check` would catch.
    fn converge(&self, nodes: &Nodes) -> Result<()> {
        let expected: BTreeSet<&str> = nodes.all.iter().map(|n| n.name.as_str()).collect();
        let mut waiting = Waiting::new("converge", self.clock, self.deadline);
        let mut last_seen: Vec<Option<NodeResult<Membership>>> =
            nodes.all.iter().map(|_| None).collect();
        // The last answer each node gave, for the diagnosis: the last poll before the deadline
        // has only what is left of it, and its time-out says nothing about the cluster.
        let mut last_answer: Vec<Option<Membership>> = nodes.all.iter().map(|_| None).collect();
        let converged = |m: &Option<NodeResult<Membership>>| matches!(m, Some(Ok(m)) if membership_gap(&expected, m).is_none());
        let done = poll(self.clock, self.deadline, || {
            let lagging: Vec<usize> = (0..nodes.len())
                .filter(|&i| !converged(&last_seen[i]))
                .collect();
            let seen = each(&lagging, |&i| self.client.membership(&nodes.all[i].addr));
            for (i, m) in lagging.into_iter().zip(seen) {
                match m {
                    // Authentication and protocol errors end the phase; waiting will not fix them.
                    Err(e) if !matches!(e, NodeError::Unreachable { .. }) => {
                        return Err(anyhow::Error::from(e))
                    }
                    m => {
                        if let Ok(answer) = &m {
                            last_answer[i] = Some(answer.clone());
                        }
                        last_seen[i] = Some(m)
                    }
                }
            }
            let lagging: Vec<String> = nodes
                .all
                .iter()
                .zip(&last_seen)
                .filter_map(|(n, m)| match m {
                    Some(Ok(m)) => lag(&expected, m).map(|l| format!("{} ({l})", n.addr.label)),
                    Some(Err(e)) => Some(e.to_string()),
                    None => None,
                })
                .collect();
            if lagging.is_empty() {
                return Ok(Some(()));
            }
            waiting.report(|| {
                format!(
                    "{} of {} nodes to list all {}: {}",
                    lagging.len(),
                    nodes.len(),
                    nodes.len(),
                    list_some(&lagging)
                )
            });
            Ok(None)
        })?;
        match done {
            Some(()) => Ok(()),
            None => {
                let last: Vec<NodeResult<Membership>> = last_seen
                    .into_iter()
                    .zip(last_answer)
                    .zip(&nodes.all)
                    .map(|((m, answer), n)| match answer {
                        Some(answer) => Ok(answer),
                        None => m.unwrap_or_else(|| {
                            Err(NodeError::Unreachable {
                                node: n.addr.label.clone(),
                                reason: "never asked".into(),
                            })
                        }),
                    })
                    .collect();
                let mut why = diagnose(nodes, &last, discovery::resolves);
                // The distribution may have changed since the preflight looked (a node
                // restarted with other flags), and TLS adds causes a cookie cannot explain.
                let (seen, problems) = self.probe_distribution(nodes);
                if !problems.is_empty() {
                    return Err(Failure::new(
                        Status::Security,
                        format!("{why}; {}", problems.join("; ")),
                    )
                    .into());
                }
                if !seen.is_empty()
                    && seen
                        .iter()
                        .all(|d| matches!(d.transport, Transport::Tls(_)))
                {
                    why += "; every node runs TLS distribution, so a certificate its peers refuse (from another \
                            CA, expired, or not for its host name) is as likely as a cookie: the node's log says \
                            which (a TLS … ALERT line)";
                }
                Err(Failure::new(Status::NotConnected, why).into())
            }
        }
    }

    // ---- finish -----------------------------------------------------------------------------

    fn finish(&self, nodes: &Nodes) -> Result<String> {
        let coordinator = &nodes.coordinator().addr;
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
    fn verify(&self, nodes: &Nodes, membership_proven: bool, repair: bool) -> Result<Vec<String>> {
        let expected: BTreeSet<&str> = nodes.all.iter().map(|n| n.name.as_str()).collect();
        if !membership_proven {
            let memberships = self.read_each(&nodes.all, |n| self.client.membership(&n.addr))?;
            for (n, m) in nodes.all.iter().zip(&memberships) {
                if let Some(gap) = membership_gap(&expected, m) {
                    return Err(unverified(format!(
                        "membership on {} ({}): {gap}",
                        n.addr.label, n.name
                    )));
                }
            }
        }

        let configs = self.configs(nodes)?;
        let n = effective_n(&configs[nodes.coordinator])?;
        let mut repaired = Vec::new();
        if let Some(drift) = config_drift(nodes, &configs) {
            if !repair {
                return Err(unverified(format!(
                    "{drift}; run couchdb-cluster-init to repair it"
                )));
            }
            warn!("verify: {drift}; re-running finish_cluster, which copies them from the coordinator");
            self.finish(nodes)?;
            let configs = self.configs(nodes)?;
            if let Some(drift) = config_drift(nodes, &configs) {
                return Err(unverified(format!(
                    "{drift}, even after finish_cluster copied them"
                )));
            }
            repaired.push("repaired config drift".to_string());
        }

        let coordinator = &nodes.coordinator().addr;
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

    /// Every node's config, read through the coordinator (see `Client::node_config_of`).
    fn configs(&self, nodes: &Nodes) -> Result<Vec<NodeConfig>> {
        let via = &nodes.coordinator().addr;
        self.read_each(&nodes.all, |n| self.client.node_config_of(via, &n.name))
            .map_err(|e| match e.downcast_ref::<NodeError>() {
                // 404 "no such node", 412 "nodedown": the coordinator does not reach it.
                Some(NodeError::Unexpected {
                    status: 404 | 412, ..
                }) => unverified(format!(
                    "{e}: the coordinator {} does not reach that node over Erlang",
                    via.label
                )),
                _ => e,
            })
    }
}

fn unverified(message: String) -> anyhow::Error {
    Failure::new(Status::Unverified, message).into()
}

/// Decide from what every node says: already formed, formable (what to join), or unsafe.
///
/// Joining is refused where it could lose data or take a member away from someone: a stranger
/// among the members, or databases on a node that is not part of this cluster. A node whose
/// members are all our own nodes is not "another cluster": the chart's seedlist, or another
/// run at this very moment, joined it — it is joined (again) and the run goes on.
pub fn decide(nodes: &Nodes, observed: &[Observed]) -> Result<Plan> {
    let coord = nodes.coordinator();
    let coord_seen = &observed[nodes.coordinator];
    let expected: BTreeSet<&str> = nodes.all.iter().map(|n| n.name.as_str()).collect();
    let members: BTreeSet<&str> = coord_seen
        .membership
        .cluster_nodes
        .iter()
        .map(String::as_str)
        .collect();
    let unsafe_ = |m: String| -> Result<Plan> {
        Err(Failure::new(Status::Unsafe, format!("{m}. Nothing was written.")).into())
    };

    let strangers: Vec<String> = members
        .difference(&expected)
        .map(|m| m.to_string())
        .collect();
    if !strangers.is_empty() {
        return unsafe_(format!(
            "the coordinator {} ({}) has members that are not among the nodes: {}. Add them to COUCHDB_NODES (or \
             bring their pods back behind COUCHDB_SERVICE), or take each out with `couchdb-cluster-init remove \
             <name>`, which first moves its shard copies to other members. init never removes members, and \
             deleting its _nodes doc by hand would leave every copy it holds in the shard maps, a copy short once it stops",
            coord.addr.label,
            coord.name,
            list_compact(&strangers)
        ));
    }
    for (i, (node, seen)) in nodes.all.iter().zip(observed).enumerate() {
        if i == nodes.coordinator || members.contains(node.name.as_str()) {
            continue;
        }
        let its: BTreeSet<&str> = seen
            .membership
            .cluster_nodes
            .iter()
            .map(String::as_str)
            .collect();
        let strangers: Vec<String> = its.difference(&expected).map(|m| m.to_string()).collect();
        if !strangers.is_empty() {
            return unsafe_(format!(
                "node {} ({}) already belongs to another cluster (members not among the nodes: {}); it cannot join {}'s",
                node.addr.label,
                node.name,
                list_compact(&strangers),
                coord.addr.label
            ));
        }
        // Databases are this cluster's only if the node was joined to the coordinator (by the
        // seedlist or another run); a node that was not holds a shard map of its own.
        if !seen.dbs.is_empty() && !its.contains(coord.name.as_str()) {
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
        .all
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
        let missing: Vec<String> = expected.difference(&seen).map(|s| s.to_string()).collect();
        let extra: Vec<String> = seen.difference(expected).map(|s| s.to_string()).collect();
        if !missing.is_empty() {
            gaps.push(format!("{what} lacks {}", list_compact(&missing)));
        }
        if !extra.is_empty() {
            gaps.push(format!("{what} has unexpected {}", list_compact(&extra)));
        }
    }
    (!gaps.is_empty()).then(|| gaps.join(", "))
}

/// A node's lag in counts, for progress lines at any N: `connected 13/16, members 1/16`.
fn lag(expected: &BTreeSet<&str>, m: &Membership) -> Option<String> {
    membership_gap(expected, m)?;
    let count = |list: &[String]| {
        list.iter()
            .filter(|n| expected.contains(n.as_str()))
            .count()
    };
    let extra = m
        .all_nodes
        .iter()
        .chain(&m.cluster_nodes)
        .filter(|n| !expected.contains(n.as_str()))
        .collect::<BTreeSet<_>>()
        .len();
    let n = expected.len();
    let mut said = format!(
        "connected {}/{n}, members {}/{n}",
        count(&m.all_nodes),
        count(&m.cluster_nodes)
    );
    if extra > 0 {
        said += &format!(", {extra} unexpected");
    }
    Some(said)
}

/// Why did convergence not happen? Name the nodes and the likely cause (traps 3 and 4),
/// grouped by cause so that the message stays readable at 32 nodes.
pub fn diagnose(
    nodes: &Nodes,
    last: &[NodeResult<Membership>],
    resolves: impl Fn(&str) -> bool,
) -> String {
    let coord = nodes.coordinator();
    let connected_to_coordinator: BTreeSet<&str> = match last.get(nodes.coordinator) {
        Some(Ok(m)) => m.all_nodes.iter().map(String::as_str).collect(),
        _ => BTreeSet::new(),
    };
    let (mut errors, mut unconnected, mut unresolved) = (Vec::new(), Vec::new(), Vec::new());
    for (i, node) in nodes.all.iter().enumerate() {
        if i == nodes.coordinator {
            continue;
        }
        if let Some(Err(e)) = last.get(i) {
            errors.push(e.to_string());
            continue;
        }
        if connected_to_coordinator.contains(node.name.as_str()) {
            continue;
        }
        let host = node.name.split_once('@').map_or("", |(_, h)| h);
        let who = format!("{} ({})", node.addr.label, node.name);
        if resolves(host) {
            unconnected.push(who);
        } else {
            unresolved.push(who);
        }
    }
    let mut causes = Vec::new();
    if !errors.is_empty() {
        causes.push(list_some(&errors));
    }
    if !unconnected.is_empty() {
        causes.push(format!(
            "{} answer HTTP and their hosts resolve from here, but never connected to {}: most likely \
             their Erlang cookie differs (each node's COUCHDB_ERLANG_COOKIE must equal COUCHDB_COOKIE), or Erlang \
             ports 4369/9100 are blocked between the nodes",
            list_some(&unconnected),
            coord.name
        ));
    }
    if !unresolved.is_empty() {
        causes.push(format!(
            "the host parts of {} do not resolve from here, so the other nodes cannot reach them either: \
             a name problem — NODENAME must be a dotted name every node resolves (e.g. a network alias)",
            list_some(&unresolved)
        ));
    }
    let missing = errors.len() + unconnected.len() + unresolved.len();
    if missing == 0 {
        // Connected, but the member lists did not catch up: report what each node still lacks.
        let expected: BTreeSet<&str> = nodes.all.iter().map(|n| n.name.as_str()).collect();
        let gaps: Vec<String> = nodes
            .all
            .iter()
            .zip(last)
            .filter_map(|(node, m)| {
                let gap = membership_gap(&expected, m.as_ref().ok()?)?;
                Some(format!("{} ({}): {gap}", node.addr.label, node.name))
            })
            .collect();
        causes.push(list_some(&gaps));
    }
    if missing + 1 == nodes.len() && nodes.len() > 2 {
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
    n_of(coordinator.n.as_ref())
}

/// `[cluster] n` as set (CouchDB's default when not).
fn n_of(value: Option<&String>) -> Result<usize> {
    match value {
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
    use crate::cluster::session::Identified;
    use crate::util::config::{NodeAddr, Secret};

    fn ident(n: usize) -> Nodes {
        let all = (1..=n)
            .map(|i| Identified {
                addr: NodeAddr {
                    label: format!("couchdb-{i}"),
                    url: format!("http://couchdb-{i}:5984"),
                },
                name: format!("couchdb@couchdb-{i}.cluster"),
            })
            .collect();
        Nodes {
            all,
            coordinator: 0,
        }
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
        (crate::util::exit::status_of(&e), format!("{e:#}"))
    }

    #[test]
    fn fresh_nodes_are_formable() {
        let plan = decide(
            &ident(3),
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
        let plan = decide(&ident(3), &[full(), full(), full()]).unwrap();
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
        let plan = decide(&ident(4), &[full(), full(), full(), seen(&[4], &[4], &[])]).unwrap();
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
            &[seen(&[1], &[1], &[]), seen(&[2], &[2, 7], &[])],
        ));
        assert_eq!(s, Status::Unsafe);
        assert!(
            m.contains("another cluster") && m.contains("couchdb-7"),
            "{m}"
        );
    }

    #[test]
    fn nodes_the_seedlist_joined_are_finished_not_refused() {
        let joined = || seen(&[1, 2, 3], &[1, 2, 3], &[]);
        let plan = decide(&ident(3), &[joined(), joined(), joined()]).unwrap();
        assert_eq!(
            plan,
            Plan {
                to_join: vec![],
                finished: false,
                formed: false
            }
        );
    }

    #[test]
    fn a_node_another_run_just_joined_and_finished_is_joined_again_not_refused() {
        // Our read of the coordinator came before the other run's PUT; node 2's after its finish.
        let plan = decide(
            &ident(3),
            &[
                seen(&[1], &[1], &[]),
                seen(&[1, 2], &[1, 2], &["_replicator", "_users"]),
                seen(&[3], &[3], &[]),
            ],
        )
        .unwrap();
        assert_eq!(plan.to_join, names(&[2, 3]));
    }

    #[test]
    fn our_own_nodes_with_a_cluster_and_databases_of_their_own_are_refused() {
        let (s, m) = status(decide(
            &ident(4),
            &[
                seen(&[1], &[1], &[]),
                seen(&[2], &[2], &[]),
                seen(&[3, 4], &[3, 4], &["_users"]),
                seen(&[3, 4], &[3, 4], &["_users"]),
            ],
        ));
        assert_eq!(s, Status::Unsafe);
        assert!(m.contains("couchdb-3") && m.contains("_users"), "{m}");
    }

    #[test]
    fn a_lone_coordinator_with_databases_is_refused() {
        let (s, m) = status(decide(
            &ident(2),
            &[seen(&[1], &[1], &["_users"]), seen(&[2], &[2], &[])],
        ));
        assert_eq!(s, Status::Unsafe);
        assert!(m.contains("single node"), "{m}");
    }

    #[test]
    fn members_missing_from_the_node_list_are_refused_not_removed() {
        let (s, m) = status(decide(
            &ident(2),
            &[
                seen(&[1, 2], &[1, 2, 9], &[]),
                seen(&[1, 2], &[1, 2, 9], &[]),
            ],
        ));
        assert_eq!(s, Status::Unsafe);
        assert!(
            m.contains("couchdb-9")
                && m.contains("init never removes")
                && m.contains("couchdb-cluster-init remove")
                && !m.contains("DELETE"),
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
        let cookie = diagnose(&nodes, &last, |_| true);
        assert!(
            cookie.contains("couchdb-3")
                && cookie.contains("cookie")
                && !cookie.contains("couchdb-2 ("),
            "{cookie}"
        );
        let name = diagnose(&nodes, &last, |_| false);
        assert!(
            name.contains("do not resolve")
                && name.contains("name problem")
                && name.contains("couchdb-3"),
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
        let d = diagnose(&nodes, &last, |_| true);
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
            ..NodeConfig::default()
        };
        assert_eq!(
            config_drift(&nodes, &[conf("-pbkdf2-1"), conf("-pbkdf2-1")]),
            None
        );
        let d = config_drift(&nodes, &[conf("-pbkdf2-1"), conf("-pbkdf2-2")]).unwrap();
        assert!(d.contains("admin hash differs on couchdb-2"), "{d}");
        assert!(!d.contains("pbkdf2") && !d.contains("topsecret"), "{d}");
    }
}
