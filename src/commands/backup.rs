//! Continuous backup to a separate CouchDB, top to bottom as an operator would describe it:
//!
//! 1. **target** — the backup CouchDB answers `/_up`, accepts its credentials, and is not a
//!    member of this cluster.
//! 2. **survey** — the databases COUCHDB_BACKUP_DBS selects; for each, the `_replicator` doc
//!    writing into it on the backup (ours, `backup:<db>`, or someone else's), and how many
//!    documents each side holds.
//! 3. **target databases** — a database of the same name on the backup wherever it is missing
//!    (`PUT /<db>`, nothing else: no `enable_single_node`, trap 19).
//! 4. **security objects** — each database's `_security` on the backup made equal to the
//!    cluster's: replication never carries it (trap 24), and a database restored without it is
//!    admin-only, its members refused. Read on both sides, written only where they differ.
//! 5. **replications** — one continuous `_replicator` doc per database, written only where no
//!    doc writes into that database yet: a second doc for the same pair would fail (trap 20),
//!    and someone else's is reported, not doubled. Ours is written anew where its credentials
//!    are no longer the current ones (a password changed: its job gets 401s, trap 19).
//! 6. **arrival** — documents, not states (trap 17): wait, within the deadline, until the backup
//!    holds as many documents (live and deleted) as the source held when the survey read it. A
//!    crashed job restarts only after 30 s × 2^(crashes−1) on CouchDB's 60 s tick (trap 18): the
//!    wait says so and when to expect it.
//!
//! A run that finds every database replicated and caught up only reads.

use anyhow::Result;
use log::{debug, info, warn};

use std::collections::BTreeMap;

use crate::client::{generation, Client, DbCreated, Endpoint, NodeError, NodeResult, Put, Up};
use crate::cluster::everywhere::Copies;
use crate::cluster::session::{each_bounded, Session, Waiting};
use crate::cluster::survey::PARALLEL;
use crate::util::clock::poll;
use crate::util::config::{self, NodeAddr, NodeList};
use crate::util::discovery;
use crate::util::exit::{Failure, Status};
use crate::util::text::list_some;

mod findings;

use crate::util::text::some_lines;
pub use findings::{doc_id, expect_restart, status_problems, DbBackup};
use findings::{failed, find_doc, judge};

pub struct Backup<'s, 'a> {
    session: &'s Session<'a>,
    /// The member every cluster request goes to: the coordinator.
    cluster: &'s NodeAddr,
    cfg: &'s config::Backup,
    /// The backup CouchDB, with its own credentials.
    target: Client,
}

impl<'s, 'a> Backup<'s, 'a> {
    pub fn new(session: &'s Session<'a>, cluster: &'s NodeAddr, cfg: &'s config::Backup) -> Self {
        let target = Client::new(
            &cfg.user,
            &cfg.password,
            session.cfg.request_timeout,
            session.deadline,
        );
        Backup {
            session,
            cluster,
            cfg,
            target,
        }
    }

    /// Makes sure every selected database is replicated to the backup and its documents arrive.
    /// Returns what it wrote, for the summary.
    pub fn ensure(&self) -> Result<Vec<String>> {
        self.check_target()?;
        let mut dbs = self.survey()?;
        let mut actions = Vec::new();
        let created = self.create_target_dbs(&mut dbs)?;
        if !created.is_empty() {
            actions.push(format!(
                "created {} database(s) on the backup",
                created.len()
            ));
        }
        let secured = self.copy_security(&mut dbs)?;
        if !secured.is_empty() {
            actions.push(format!(
                "wrote _security of {} database(s) on the backup",
                secured.len()
            ));
        }
        let started = self.replicate(&dbs)?;
        if !started.is_empty() {
            actions.push(format!("started {} replication(s)", started.len()));
        }
        let renewed = self.renew(&dbs)?;
        if !renewed.is_empty() {
            actions.push(format!("renewed {} replication(s)", renewed.len()));
        }
        let before: Vec<Option<u64>> = dbs.iter().map(|d| d.target).collect();
        let dbs = self.arrival(dbs, !started.is_empty() || !renewed.is_empty())?;
        let progressed: Vec<bool> = dbs.iter().zip(before).map(|(d, b)| d.target > b).collect();
        self.report(&dbs, &progressed)?;
        Ok(actions)
    }

    // ---- target -----------------------------------------------------------------------------

    /// Waits for the backup's `/_up`, then reads its server uuid with its credentials: proves
    /// they are an admin's before any replication is given them (a job with a wrong password
    /// retries on its own and locks the account), and that the backup is not part of this
    /// cluster (whose members share the coordinator's uuid, copied by `finish_cluster`).
    fn check_target(&self) -> Result<()> {
        let target = &self.cfg.target;
        let mut waiting = Waiting::new("backup", self.session.clock, self.session.deadline);
        let mut last = String::new();
        let up = poll(self.session.clock, self.session.deadline, || {
            last = match self.target.up(target) {
                Ok(Up::Ready) => return Ok(Some(())),
                Ok(Up::NotReady(state)) => format!("answers /_up with `{state}`"),
                // A stopped container's or a missing pod's name stops resolving: say so.
                Err(NodeError::Unreachable { reason, .. }) => discovery::dns_problem(target.host())
                    .unwrap_or_else(|| format!("not answering: {reason}")),
                Err(e) => return Err(self.target_error(e)),
            };
            waiting.report(|| format!("the backup CouchDB {} ({last})", target.label));
            Ok(None)
        })?;
        if up.is_none() {
            return Err(backup_failure(format!(
                "the backup CouchDB {} did not answer /_up in time ({last}). Until it is back its \
                 replications crash; CouchDB restarts each 30–90 s after its first crash, later ones \
                 wait longer",
                target.label
            )));
        }
        let theirs = self.on_target(|t| t.server_uuid(target))?;
        let ours = self
            .session
            .read(|| self.session.client.server_uuid(self.cluster))?;
        if theirs.is_some() && theirs == ours {
            return Err(Failure::new(
                Status::Config,
                format!(
                    "COUCHDB_BACKUP_URL {} has this cluster's server uuid: it is one of the cluster's own \
                     nodes, and the backup must be a separate CouchDB",
                    target.label
                ),
            )
            .into());
        }
        info!(
            "backup: {} answers as a separate CouchDB; credentials {}",
            target.label, self.cfg.credentials
        );
        Ok(())
    }

    // ---- survey -----------------------------------------------------------------------------

    /// For `status`, which waits for nothing: the survey if the backup CouchDB answers at once,
    /// else why not.
    pub fn observe(&self) -> std::result::Result<Vec<DbBackup>, String> {
        let target = &self.cfg.target;
        match self.target.up(target) {
            // One authenticated request before the survey's, which go out several at once: a
            // wrong password must be sent once, not once per database (trap 7).
            Ok(Up::Ready) => match self.target.server_uuid(target) {
                Ok(_) => self.survey().map_err(|e| format!("{e:#}")),
                Err(e) => Err(format!("{:#}", self.target_error(e))),
            },
            Ok(Up::NotReady(state)) => Err(format!(
                "the backup CouchDB {} answers /_up with `{state}`",
                target.label
            )),
            Err(e) => Err(format!("{:#}", self.target_error(e))),
        }
    }

    /// The selected databases: which doc replicates each, and the documents on both sides.
    /// Reads only; also what `status` shows.
    pub fn survey(&self) -> Result<Vec<DbBackup>> {
        let cluster = self.cluster;
        let client = &self.session.client;
        let all = self.session.read(|| client.all_dbs(cluster))?;
        let selected = self.cfg.dbs.select(&all);
        if !selected.absent.is_empty() {
            warn!(
                "backup: COUCHDB_BACKUP_DBS names {} not on the cluster (yet): {}; covered by the first run after \
                 they exist",
                selected.absent.len(),
                list_some(&selected.absent)
            );
        }
        let docs = self.session.read(|| client.scheduler_docs(cluster))?;
        // Both sides' counts of every database, a few requests in flight at a time.
        let dbs = each_bounded(&selected.dbs, PARALLEL, |db| {
            let (doc, elsewhere) = find_doc(&docs, &self.cfg.target, db);
            let source = self.session.read(|| client.db_counts(cluster, db))?;
            let target = self.on_target(|t| t.db_counts(&self.cfg.target, db))?;
            let source_security = match source {
                Some(_) => self.session.read(|| client.security(cluster, db))?,
                None => None,
            };
            let target_security = match target {
                Some(_) => self.on_target(|t| t.security(&self.cfg.target, db))?,
                None => None,
            };
            Ok(DbBackup {
                db: db.clone(),
                doc,
                elsewhere,
                source: source.map(|c| c.total()),
                target: target.map(|c| c.total()),
                source_security,
                target_security,
            })
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        let covered = dbs.iter().filter(|d| d.doc.is_some()).count();
        info!(
            "backup: {} database(s) selected, {covered} with a replication to {}",
            dbs.len(),
            self.cfg.target.label
        );
        Ok(dbs)
    }

    // ---- target databases -------------------------------------------------------------------

    fn create_target_dbs(&self, dbs: &mut [DbBackup]) -> Result<Vec<String>> {
        let missing: Vec<String> = dbs
            .iter()
            .filter(|d| d.target.is_none() && d.source.is_some())
            .map(|d| d.db.clone())
            .collect();
        if missing.is_empty() {
            return Ok(missing);
        }
        if !self.cfg.create_dbs {
            return Err(backup_failure(format!(
                "{} database(s) missing on the backup CouchDB {}: {}. COUCHDB_BACKUP_CREATE_DBS=false, so \
                 create them there yourself (PUT /<db>), or set it to true",
                missing.len(),
                self.cfg.target.label,
                list_some(&missing)
            )));
        }
        for db in &missing {
            match self.on_target(|t| t.create_db_q(&self.cfg.target, db, None))? {
                DbCreated::Created => debug!("backup: created {db} on the backup"),
                DbCreated::Existed => debug!("backup: {db} appeared on the backup meanwhile"),
            }
        }
        for d in dbs.iter_mut().filter(|d| missing.contains(&d.db)) {
            d.target = Some(0);
            d.target_security = None;
        }
        info!(
            "backup: created {} database(s) on {}: {}",
            missing.len(),
            self.cfg.target.label,
            list_some(&missing)
        );
        Ok(missing)
    }

    // ---- security objects -------------------------------------------------------------------

    /// Each database's `_security` on the backup made the cluster's, where they differ. A
    /// database just created on the backup is read first (it has the default).
    fn copy_security(&self, dbs: &mut [DbBackup]) -> Result<Vec<String>> {
        let target = &self.cfg.target;
        let mut written = Vec::new();
        for d in dbs
            .iter_mut()
            .filter(|d| d.source_security.is_some() && d.target.is_some())
        {
            if d.target_security.is_none() {
                d.target_security = self.on_target(|t| t.security(target, &d.db))?;
            }
            if !d.security_differs() {
                continue;
            }
            let Some(security) = d.source_security.clone() else {
                continue;
            };
            self.on_target(|t| t.put_security(target, &d.db, &security))?;
            d.target_security = Some(security);
            written.push(d.db.clone());
        }
        if !written.is_empty() {
            info!(
                "backup: wrote _security of {} database(s) on {} (the cluster's differs): {}",
                written.len(),
                target.label,
                list_some(&written)
            );
        }
        Ok(written)
    }

    // ---- replications -----------------------------------------------------------------------

    /// One `_replicator` doc per database that has none writing into its backup.
    fn replicate(&self, dbs: &[DbBackup]) -> Result<Vec<String>> {
        let cluster = self.cluster;
        let source_node = self.source_node();
        let mut started = Vec::new();
        for d in dbs
            .iter()
            .filter(|d| d.doc.is_none() && d.elsewhere.is_none())
        {
            if d.source.is_none() {
                continue;
            }
            let (source, target) = self.endpoints(&source_node, &d.db);
            let id = doc_id(&d.db);
            match self.session.read(|| {
                self.session
                    .client
                    .put_replication(cluster, &id, &source, &target, None)
            })? {
                // A 202 (fewer copies than a quorum took it) needs no more here: no older
                // revision lingers, the doc reaches the owner's copy by internal replication,
                // and `arrival` waits for documents on the backup, the proof that it runs.
                Put::Created(_) => started.push(d.db.clone()),
                Put::AlreadyThere => debug!("backup: {id} was written meanwhile (409)"),
            }
        }
        if !started.is_empty() {
            info!(
                "backup: started {} continuous replication(s) from {} to {}: {}",
                started.len(),
                source_node.label,
                self.cfg.target.label,
                list_some(&started)
            );
        }
        Ok(started)
    }

    /// Our docs (`backup:<db>`) that still carry credentials other than the current ones — a
    /// password changed since they were written, so their jobs get 401s (trap 19) — written
    /// anew with the current ones. CouchDB replaces a doc's job when its endpoints change, auth
    /// included (`couch_replicator_doc_processor:updated_doc/3`). Reads one doc per database;
    /// writes only where one is out of date, then waits until every copy of `_replicator` holds
    /// the new revision: a write answered 202 (the replicator had written its state into one
    /// copy, trap 27) leaves the others with the old one — the old password in it — and the
    /// job on a node whose copy lags keeps failing with it.
    fn renew(&self, dbs: &[DbBackup]) -> Result<Vec<String>> {
        let source_node = self.source_node();
        let ours: Vec<&DbBackup> = dbs
            .iter()
            .filter(|d| d.source.is_some() && d.by_us())
            .collect();
        let outdated = each_bounded(&ours, PARALLEL, |d| {
            let (source, target) = self.endpoints(&source_node, &d.db);
            let rev = self.session.read(|| {
                self.session.client.outdated_replication(
                    self.cluster,
                    &doc_id(&d.db),
                    &source,
                    &target,
                )
            })?;
            Ok::<_, anyhow::Error>(rev.map(|rev| (d.db.clone(), rev)))
        });
        let mut renewed = Vec::new();
        let mut revs: BTreeMap<String, String> = BTreeMap::new();
        for found in outdated {
            let Some((db, rev)) = found? else {
                continue;
            };
            let (source, target) = self.endpoints(&source_node, &db);
            let id = doc_id(&db);
            match self.session.read(|| {
                self.session
                    .client
                    .put_replication(self.cluster, &id, &source, &target, Some(&rev))
            })? {
                Put::Created(new) => {
                    renewed.push(db);
                    revs.insert(id, new);
                }
                Put::AlreadyThere => debug!("backup: {id} changed meanwhile (409); left as it is"),
            }
        }
        self.renewed_everywhere(&revs)?;
        if !renewed.is_empty() {
            info!(
                "backup: renewed {} replication(s) that carried old credentials (a password changed since \
                 they were written): {}",
                renewed.len(),
                list_some(&renewed)
            );
        }
        Ok(renewed)
    }

    /// Waits until every copy of each renewed doc holds its new revision, or a later one (the
    /// replicator may write its state on top); at the deadline names the copies that do not.
    fn renewed_everywhere(&self, revs: &BTreeMap<String, String>) -> Result<()> {
        let ids: Vec<String> = revs.keys().cloned().collect();
        let copies = Copies {
            client: &self.session.client,
            via: self.cluster,
            db: "_replicator",
        };
        let current = |id: &str, held: &crate::client::CopyDoc| {
            let new = revs.get(id).map_or(0, |rev| generation(rev));
            held.live_generation().is_some_and(|g| g >= new)
        };
        let clock = self.session.clock;
        let lagging = copies.wait(clock, self.session.deadline, "backup", &ids, &current)?;
        if lagging.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = lagging.iter().map(ToString::to_string).collect();
        Err(backup_failure(format!(
            "{} copy(ies) of renewed replication docs in _replicator still hold an older revision, \
             with the old credentials in it: {} (CouchDB's internal replication brings them the new \
             one within seconds while those nodes run; run again to check)",
            lagging.len(),
            some_lines(&lines)
        )))
    }

    /// Both ends of `db`'s replication, with the credentials each side takes now.
    fn endpoints<'e>(
        &'e self,
        source_node: &'e NodeAddr,
        db: &'e str,
    ) -> (Endpoint<'e>, Endpoint<'e>) {
        let source = Endpoint {
            node: source_node,
            db,
            user: &self.session.cfg.user,
            password: &self.session.cfg.password,
        };
        let target = Endpoint {
            node: &self.cfg.target,
            db,
            user: &self.cfg.user,
            password: &self.cfg.password,
        };
        (source, target)
    }

    /// The cluster as the nodes reach it: whichever member runs a job reads the source there
    /// (and `restore`'s jobs write there).
    pub fn source_node(&self) -> NodeAddr {
        if let Some(source) = &self.cfg.source {
            return source.clone();
        }
        match &self.session.cfg.nodes {
            NodeList::Service { service, .. } => service.clone(),
            NodeList::Listed { .. } => self.cluster.clone(),
        }
    }

    // ---- arrival ----------------------------------------------------------------------------

    /// Waits until every replicated database's backup holds the documents the survey counted on
    /// the cluster. Stops early for a `failed` job (CouchDB never retries it). Returns what it saw
    /// last; `rescan`: look at the scheduler at least once (new docs have no state in the survey).
    fn arrival(&self, mut dbs: Vec<DbBackup>, rescan: bool) -> Result<Vec<DbBackup>> {
        let waiting_for = |dbs: &[DbBackup]| -> Vec<usize> {
            (0..dbs.len())
                .filter(|&i| {
                    let d = &dbs[i];
                    d.source.is_some()
                        && d.elsewhere.is_none()
                        && !d.caught_up()
                        && !d.doc.as_ref().is_some_and(failed)
                })
                .collect()
        };
        let mut waiting = Waiting::new("backup", self.session.clock, self.session.deadline);
        let mut looked = false;
        poll(self.session.clock, self.session.deadline, || {
            let lagging = waiting_for(&dbs);
            if lagging.is_empty() {
                return Ok(Some(()));
            }
            looked |= self.look(&mut dbs, &lagging)?;
            let lagging = waiting_for(&dbs);
            if lagging.is_empty() {
                return Ok(Some(()));
            }
            waiting.report(|| {
                let lines: Vec<String> = lagging.iter().map(|&i| dbs[i].line()).collect();
                format!(
                    "{} database(s) to catch up on the backup: {}",
                    lines.len(),
                    some_lines(&lines)
                )
            });
            Ok::<_, anyhow::Error>(None)
        })?;
        if rescan && !looked {
            let all: Vec<usize> = (0..dbs.len()).collect();
            self.look(&mut dbs, &all)?;
        }
        Ok(dbs)
    }

    /// One look at the scheduler and at the backup's counts of `which`. Not retried: a side
    /// that does not answer now (restarting, or the deadline reached) leaves what was seen
    /// before, and says so with `false`; any other failure ends the wait.
    fn look(&self, dbs: &mut [DbBackup], which: &[usize]) -> Result<bool> {
        let docs = match self.session.client.scheduler_docs(self.cluster) {
            Ok(docs) => docs,
            Err(NodeError::Unreachable { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        for &i in which {
            let d = &mut dbs[i];
            d.doc = find_doc(&docs, &self.cfg.target, &d.db).0;
            match self.target.db_counts(&self.cfg.target, &d.db) {
                Ok(counts) => d.target = counts.map(|c| c.total()),
                Err(NodeError::Unreachable { .. }) => return Ok(false),
                Err(e) => return Err(self.target_error(e)),
            }
        }
        Ok(true)
    }

    // ---- report -----------------------------------------------------------------------------

    /// Says how the databases stand, a line per kind; fails (exit 11) where the backup is not
    /// in place or no document arrived.
    fn report(&self, dbs: &[DbBackup], progressed: &[bool]) -> Result<()> {
        for d in dbs {
            debug!("backup: {}", d.line());
        }
        let verdict = judge(dbs, progressed, &self.cfg.target, &self.source_node());
        if !verdict.fine.is_empty() {
            info!(
                "backup: {} database(s) replicated and caught up: {}",
                verdict.fine.len(),
                list_some(&verdict.fine)
            );
        }
        for (what, items) in &verdict.notes {
            warn!(
                "backup: {} database(s) {what}: {}",
                items.len(),
                some_lines(items)
            );
        }
        if verdict.problems.is_empty() {
            return Ok(());
        }
        Err(backup_failure(format!(
            "{} of {} database(s) not backed up: {}",
            verdict.problems.len(),
            dbs.len(),
            some_lines(&verdict.problems)
        )))
    }

    // ---- the backup CouchDB's errors --------------------------------------------------------

    /// A read or idempotent write on the backup, retried while it is unreachable (within the
    /// deadline); its failures are the backup's (exit 11), worded with its own variables.
    fn on_target<T>(&self, call: impl Fn(&Client) -> NodeResult<T>) -> Result<T> {
        self.session
            .read(|| call(&self.target))
            .map_err(|e| match e.downcast::<NodeError>() {
                Ok(e) => self.target_error(e),
                Err(e) => e,
            })
    }

    fn target_error(&self, e: NodeError) -> anyhow::Error {
        backup_failure(backup_problem(self.cfg, e))
    }
}

/// What went wrong with the backup CouchDB, worded with its own variables (for `restore` too).
pub fn backup_problem(cfg: &config::Backup, e: NodeError) -> String {
    let label = &cfg.target.label;
    match e {
        NodeError::Unauthorized { reason, .. } => format!(
            "the backup CouchDB {label} refused {} ({reason}); not retried, because 5 failures lock the \
             account there for 5 minutes",
            cfg.credentials
        ),
        NodeError::Locked { .. } => format!(
            "the backup CouchDB {label} has locked the account after repeated wrong passwords; fix {} \
             and retry in 5 minutes",
            cfg.credentials
        ),
        NodeError::Unreachable { reason, .. } => {
            format!("the backup CouchDB {label} is unreachable: {reason}")
        }
        other => format!("the backup CouchDB: {other}"),
    }
}

fn backup_failure(message: String) -> anyhow::Error {
    Failure::new(Status::Backup, message).into()
}
