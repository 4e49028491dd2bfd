//! One read-only look at the whole cluster, shared by `status`, `check`, `remove` and
//! `rebalance`: every node in COUCHDB_NODES (does it answer, its Erlang name, its membership,
//! its config), every member the reference node knows, every database's shard map — and, when
//! asked, single copies' counts and each member's files. At most `PARALLEL` requests in flight;
//! one attempt per request: a node that does not answer is reported, not waited for.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, Result};

use crate::client::{
    CopyState, Membership, NodeConfig, NodeError, ShardDoc, ShardDocs, Unreadable, Up, DRAINED,
};
use crate::cluster::planner::{self, NodeLoad, Sizes};
use crate::cluster::session::{each_bounded, Session};
use crate::cluster::zones::{self, Reporting, Zones};
use crate::util::config::{NodeAddr, NodeList};
use crate::util::discovery;
use crate::util::text::natural_cmp;

/// Requests in flight at once: enough to read 32 nodes and 200 databases in a second or two,
/// few enough for a small CouchDB and for the 2 cores the tool may share with it.
pub const PARALLEL: usize = 8;

/// CouchDB's own default for `[cluster] n` when the config does not set it.
pub const DEFAULT_N: usize = 3;

/// (database, range, node): one copy.
pub type CopyKey = (String, String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Up,
    /// Answers, but `[couchdb] maintenance_mode` is on (`true` or `nolb`).
    Maintenance(String),
    /// Does not answer (or is not connected to the reference node): why.
    Down(String),
}

#[derive(Debug, Clone)]
pub struct NodeView {
    /// As in COUCHDB_NODES; `None` for a member that is not listed there.
    pub addr: Option<NodeAddr>,
    /// The Erlang name; `None` for a listed node that never answered.
    pub name: Option<String>,
    pub state: State,
    /// Its own view of the cluster (listed nodes only).
    pub membership: Option<Membership>,
    pub config: Option<NodeConfig>,
    /// The CouchDB release, `GET /`'s `version` (listed nodes only: a member asked through
    /// another one has no way to tell it, transcript 18).
    pub version: Option<String>,
}

impl NodeView {
    /// How messages name it: `couchdb-2 (couchdb@couchdb-2.cluster)`.
    pub fn label(&self) -> String {
        match (&self.addr, &self.name) {
            (Some(a), Some(n)) => format!("{} ({n})", a.label),
            (Some(a), None) => a.label.clone(),
            (None, Some(n)) => n.clone(),
            (None, None) => "?".into(),
        }
    }

    pub fn answers(&self) -> bool {
        !matches!(self.state, State::Down(_))
    }

    /// `maintenance_mode = nolb`: out of the load balancer (`/_up` 404), still serving the
    /// cluster — what `drain` does before a node is stopped.
    pub fn drained(&self) -> bool {
        matches!(&self.state, State::Maintenance(mode) if mode == DRAINED)
    }
}

#[derive(Debug, Clone)]
pub struct Survey {
    /// The listed nodes in COUCHDB_NODES order, then members that are not listed.
    pub nodes: Vec<NodeView>,
    /// Index into `nodes`: whose membership and shard maps are used.
    pub reference: usize,
    /// Its address: every other node is asked through it (`/_node/<name>/…`).
    pub via: NodeAddr,
    /// Where the nodes came from, for messages: `COUCHDB_NODES`, or COUCHDB_SERVICE's addresses.
    pub source: String,
    /// The reference's `cluster_nodes`.
    pub members: BTreeSet<String>,
    /// The reference's `all_nodes` (connected now, itself included).
    pub connected: BTreeSet<String>,
    pub docs: Vec<ShardDoc>,
    /// The shard maps that could not be read: reported, and nothing is moved while there are any.
    pub unreadable: Vec<Unreadable>,
    /// `[cluster] n` on the reference.
    pub cluster_n: usize,
    /// (db, range, node) → that copy's state, for the copies that were read.
    pub copies: BTreeMap<CopyKey, CopyState>,
    /// member → its files (`GET /_node/<member>/_all_dbs`), when they were read.
    pub files: BTreeMap<String, Vec<String>>,
    /// Each copy's file size, when read (`read_sizes`). Apart from `copies`: a size is read at
    /// one moment for a report, not to judge whether a copy has filled.
    pub sizes: Sizes,
    /// Each member's zone as CouchDB places by it: the `zone` of its `_nodes` doc on the
    /// reference. Empty: no member has one.
    pub zones: Zones,
    /// The zones the configuration gives the nodes that answered (COUCHDB_ZONES, else each
    /// node's own report): `None` when none has one; `Err` names a node without one while
    /// others have one.
    pub declared: Result<Option<Zones>, String>,
}

impl Survey {
    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.name.as_deref() == Some(name))
    }

    /// A member that is connected and not in maintenance: one that may take a new copy.
    pub fn serving(&self, name: &str) -> bool {
        self.members.contains(name)
            && self.connected.contains(name)
            && self.node(name).is_none_or(|n| n.state == State::Up)
    }

    /// The distinct CouchDB releases of the nodes whose release is known, lowest first; more
    /// than one is normal during a rolling upgrade.
    pub fn versions(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = self
            .nodes
            .iter()
            .filter_map(|n| n.version.as_deref())
            .collect();
        seen.sort_by(|a, b| natural_cmp(a, b));
        seen.dedup();
        seen
    }

    pub fn doc(&self, db: &str) -> Option<&ShardDoc> {
        self.docs.iter().find(|d| d.db == db)
    }

    /// The bytes of every copy whose size was read (`Session::read_sizes`, and the copies
    /// whose counts were read).
    pub fn sizes(&self) -> Sizes {
        let mut sizes = self.sizes.clone();
        for (key, state) in &self.copies {
            if let CopyState::Present(info) = state {
                sizes.insert(key.clone(), info.sizes.file);
            }
        }
        sizes
    }

    /// Copies and bytes per node over all databases (every member, and any other node a map
    /// names); bytes count only the copies whose size was read, a copy not read weighs what
    /// the other copies of its range weigh.
    pub fn node_loads(&self) -> BTreeMap<String, NodeLoad> {
        let members: Vec<String> = self.members.iter().cloned().collect();
        planner::node_loads(&self.docs, &self.sizes(), &members)
    }

    /// Every copy on a connected node of the databases `keep` picks.
    pub fn copies_of(&self, keep: impl Fn(&ShardDoc) -> bool) -> Vec<CopyKey> {
        self.docs
            .iter()
            .filter(|d| keep(d))
            .flat_map(|d| {
                d.map.iter().flat_map(move |(range, nodes)| {
                    nodes
                        .iter()
                        .filter(|n| self.connected.contains(*n))
                        .map(move |n| (d.db.clone(), range.clone(), n.clone()))
                })
            })
            .collect()
    }
}

impl Session<'_> {
    /// Reads the cluster, starting from `addrs` (COUCHDB_NODES, or the addresses
    /// COUCHDB_SERVICE resolves to). `avoid`: a node that must not be the reference (the one
    /// `remove` takes out).
    pub fn survey(&self, addrs: &[NodeAddr], avoid: Option<&str>) -> Result<Survey> {
        let listed = each_bounded(addrs, PARALLEL, |addr| self.look_at(addr));
        let mut nodes = listed.into_iter().collect::<Result<Vec<_>>>()?;
        if let NodeList::Service { .. } = self.cfg.nodes {
            name_by_host(&mut nodes);
        }
        let first = self.coordinator_of(&nodes);
        let reference = std::iter::once(first)
            .chain(0..nodes.len())
            .filter(|&i| nodes[i].membership.is_some())
            .find(|&i| avoid.is_none() || nodes[i].name.as_deref() != avoid)
            .ok_or_else(|| {
                let down: Vec<String> = nodes.iter().map(describe).collect();
                anyhow::Error::from(NodeError::Unreachable {
                    node: addrs.first().map_or("?".into(), |a| a.label.clone()),
                    reason: format!("no node answers: {}", down.join("; ")),
                })
            })?;
        let via = nodes[reference]
            .addr
            .clone()
            .ok_or_else(|| anyhow!("the reference node has no address"))?;
        let seen = nodes[reference]
            .membership
            .clone()
            .ok_or_else(|| anyhow!("the reference node has no membership"))?;
        let members: BTreeSet<String> = seen.cluster_nodes.iter().cloned().collect();
        let connected: BTreeSet<String> = seen.all_nodes.iter().cloned().collect();

        let listed: BTreeSet<String> = nodes.iter().filter_map(|n| n.name.clone()).collect();
        let unlisted: Vec<String> = members.difference(&listed).cloned().collect();
        let extra = each_bounded(&unlisted, PARALLEL, |name: &String| {
            self.look_through(&via, name, connected.contains(name))
        });
        for view in extra {
            nodes.push(view?);
        }

        let ShardDocs { docs, unreadable } = self.read(|| self.client.shard_docs(&via))?;
        let zones: Zones = self
            .read(|| self.client.node_docs(&via, "_local"))?
            .into_iter()
            .filter_map(|d| Some((d.name, d.zone?)))
            .collect();
        let declared = self.declared_zones(&nodes, avoid);
        let cluster_n = nodes[reference]
            .config
            .as_ref()
            .and_then(|c| c.n.as_deref())
            .and_then(|n| n.trim().parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_N);
        let source = match &self.cfg.nodes {
            NodeList::Listed { .. } => "COUCHDB_NODES".to_string(),
            NodeList::Service { service, .. } => {
                format!("the addresses of COUCHDB_SERVICE {}", service.label)
            }
        };
        Ok(Survey {
            nodes,
            reference,
            via,
            source,
            members,
            connected,
            docs,
            unreadable,
            cluster_n,
            copies: BTreeMap::new(),
            files: BTreeMap::new(),
            sizes: Sizes::new(),
            zones,
            declared,
        })
    }

    /// `zones::declared` over the nodes whose names are known: COUCHDB_ZONES, else what each
    /// node's config reports (`[couchdb_cluster_init] zone`, read with the rest of its config).
    /// `leaving` (the node `remove` takes out) needs none.
    fn declared_zones(
        &self,
        nodes: &[NodeView],
        leaving: Option<&str>,
    ) -> Result<Option<Zones>, String> {
        let listed: &[NodeAddr] = match &self.cfg.nodes {
            NodeList::Listed { nodes, .. } => nodes,
            NodeList::Service { .. } => &[],
        };
        // Without COUCHDB_ZONES, a node whose config was not read (down) says nothing, which
        // is not the same as reporting no zone: it is left out (and reported down).
        let reporting: Vec<Reporting> = nodes
            .iter()
            .filter(|n| self.cfg.zones.is_some() || n.config.is_some())
            .filter(|n| leaving.is_none() || n.name.as_deref() != leaving)
            .filter_map(|n| {
                Some(Reporting {
                    listed: n
                        .addr
                        .as_ref()
                        .and_then(|a| listed.iter().position(|l| l.url == a.url)),
                    label: n.label(),
                    name: n.name.as_deref()?,
                    reported: n.config.as_ref().and_then(|c| c.zone.as_deref()),
                })
            })
            .collect();
        zones::declared(self.cfg.zones.as_ref(), &reporting).map(|(zones, _)| zones)
    }

    /// The coordinator among the nodes: the configured one, or — for nodes found by DNS — the
    /// lowest name (as `identify` picks it).
    fn coordinator_of(&self, nodes: &[NodeView]) -> usize {
        match &self.cfg.nodes {
            NodeList::Listed { coordinator, .. } => *coordinator,
            NodeList::Service { .. } => (0..nodes.len())
                .filter(|&i| nodes[i].name.is_some())
                .min_by(|&a, &b| {
                    natural_cmp(
                        nodes[a].name.as_deref().unwrap_or_default(),
                        nodes[b].name.as_deref().unwrap_or_default(),
                    )
                })
                .unwrap_or(0),
        }
    }

    /// A listed node: `/_up`, then (if it answers) its name, membership and config.
    fn look_at(&self, addr: &NodeAddr) -> Result<NodeView> {
        let mut view = NodeView {
            addr: Some(addr.clone()),
            name: None,
            state: State::Up,
            membership: None,
            config: None,
            version: None,
        };
        view.state = match self.client.up(addr) {
            Ok(Up::Ready) => State::Up,
            Ok(Up::NotReady(mode)) if mode == "maintenance_mode" || mode == "nolb" => {
                State::Maintenance(mode)
            }
            Ok(Up::NotReady(other)) => State::Down(format!("answers /_up with `{other}`")),
            Err(NodeError::Unreachable { reason, .. }) => State::Down(reason),
            Err(e) => return Err(e.into()),
        };
        if !view.answers() {
            return Ok(view);
        }
        let answered = (|| -> Result<_, NodeError> {
            let name = self.client.local_name(addr)?;
            let membership = self.client.membership(addr)?;
            let config = self.client.node_config_of(addr, &name)?;
            let version = self.client.version(addr)?;
            Ok((name, membership, config, version))
        })();
        match answered {
            Ok((name, membership, config, version)) => {
                view.name = Some(name);
                view.membership = Some(membership);
                view.config = Some(config);
                view.version = Some(version);
            }
            Err(NodeError::Unreachable { reason, .. }) => view.state = State::Down(reason),
            Err(e) => return Err(e.into()),
        }
        Ok(view)
    }

    /// A member that is not in COUCHDB_NODES, asked through the reference node.
    fn look_through(&self, via: &NodeAddr, name: &str, connected: bool) -> Result<NodeView> {
        let mut view = NodeView {
            addr: None,
            name: Some(name.to_string()),
            state: State::Down(format!("not connected to {}", via.label)),
            membership: None,
            config: None,
            version: None,
        };
        if !connected {
            return Ok(view);
        }
        let answered = (|| -> Result<_, NodeError> {
            Ok((
                self.client.maintenance(via, name)?,
                self.client.node_config_of(via, name)?,
            ))
        })();
        match answered {
            Ok((maintenance, config)) => {
                view.state = maintenance.map_or(State::Up, State::Maintenance);
                view.config = Some(config);
            }
            Err(NodeError::Unreachable { reason, .. }) => view.state = State::Down(reason),
            Err(e) => return Err(e.into()),
        }
        Ok(view)
    }

    /// Reads the given copies' counts, through the reference node.
    pub fn read_copies(&self, survey: &mut Survey, wanted: Vec<CopyKey>) -> Result<()> {
        for (key, state) in self.copy_states(survey, wanted) {
            survey.copies.insert(key, state?);
        }
        Ok(())
    }

    /// Reads the file size of every copy on a connected node whose counts were not read
    /// already: one request per copy, `PARALLEL` at once.
    pub fn read_sizes(&self, survey: &mut Survey) -> Result<()> {
        let wanted: Vec<CopyKey> = survey
            .copies_of(|_| true)
            .into_iter()
            .filter(|k| !survey.copies.contains_key(k))
            .collect();
        for (key, state) in self.copy_states(survey, wanted) {
            if let CopyState::Present(info) = state? {
                survey.sizes.insert(key, info.sizes.file);
            }
        }
        Ok(())
    }

    /// `GET /_node/<node>/shards%2F…` of each copy, `PARALLEL` at once, through the reference.
    fn copy_states(
        &self,
        survey: &Survey,
        wanted: Vec<CopyKey>,
    ) -> Vec<(CopyKey, Result<CopyState, NodeError>)> {
        let jobs: Vec<(CopyKey, String)> = wanted
            .into_iter()
            .filter_map(|key| {
                let file = survey.doc(&key.0)?.file(&key.1);
                Some((key, file))
            })
            .collect();
        let states = each_bounded(&jobs, PARALLEL, |((_, _, node), file)| {
            self.client.copy(&survey.via, node, file)
        });
        jobs.into_iter().map(|(key, _)| key).zip(states).collect()
    }

    /// Reads every connected member's files (to find leftover copies).
    pub fn read_files(&self, survey: &mut Survey) -> Result<()> {
        let via = survey.via.clone();
        let members: Vec<String> = survey
            .members
            .iter()
            .filter(|m| survey.connected.contains(*m))
            .cloned()
            .collect();
        let lists = each_bounded(&members, PARALLEL, |m| self.client.node_files(&via, m));
        for (m, files) in members.into_iter().zip(lists) {
            if let Some(files) = files? {
                survey.files.insert(m, files);
            }
        }
        Ok(())
    }
}

/// Nodes found by DNS are labelled by their names' host part (`couchdb-0`), as `identify` does.
fn name_by_host(nodes: &mut [NodeView]) {
    let names: Vec<String> = nodes.iter().filter_map(|n| n.name.clone()).collect();
    let mut labels = discovery::short_labels(&names).into_iter();
    for node in nodes.iter_mut().filter(|n| n.name.is_some()) {
        if let (Some(addr), Some(label)) = (node.addr.as_mut(), labels.next()) {
            addr.label = label;
        }
    }
}

fn describe(n: &NodeView) -> String {
    match &n.state {
        State::Down(why) => format!("{} ({why})", n.label()),
        _ => n.label(),
    }
}
