//! `restore`: databases brought back from the backup CouchDB into a formed, healthy cluster —
//! typically a new one, on other hosts, with other Erlang names — top to bottom as an operator
//! would do it by hand:
//!
//! 1. **cluster** — every node answers, and the cluster is healthy (the verdict of `status`);
//!    otherwise refuse, writing nothing.
//! 2. **backup** — the backup CouchDB (`COUCHDB_BACKUP_URL`, its credentials) answers, accepts
//!    them, and is not this cluster (its server uuid); otherwise refuse.
//! 3. **plan** — the databases: those named, each of which must be on the backup, or every one
//!    on the backup but `_replicator`; for each, its documents there, whether the cluster has it
//!    and which revisions it lacks (`_revs_diff`, a read). `--dry-run` prints this and stops.
//! 4. **leftovers** — `_replicator` docs an earlier run left (`restore:…`), live in any copy
//!    (a run killed while replicating, or one whose deletion some copy has not seen yet: trap
//!    27), are deleted and waited for until no copy holds one: they hold passwords in clear
//!    (trap 21), and one still running would make a new doc for the same replication fail
//!    (trap 20). Their replications resume from their checkpoints below.
//! 5. **databases** — created where missing, with the cluster's `q`/`n` or `--q`.
//! 6. **replication** — one one-shot `_replicator` doc per database still lacking revisions, a
//!    few at a time, each with a fresh id (a one-shot id is done for good, trap 26); each doc is
//!    deleted once CouchDB wrote `completed` (or `failed`) into it, and the phase ends only when
//!    no copy of `_replicator` holds one of them any more: the replicator wrote its state into
//!    one copy only, so the DELETE answers 202 and the other copies keep the first revision,
//!    both passwords in it, until internal replication reaches them (trap 27). A restore
//!    merges: it adds what the cluster lacks and never deletes; a document both sides changed
//!    becomes a conflict (CouchDB keeps both revisions), and those it created are counted.
//! 7. **security** — each database's `_security` written where the cluster's differs from the
//!    backup's (replication never carries it, trap 24).
//! 8. **verify** — no revision of the backup missing, at least the backup's documents (live and
//!    deleted), the same `_security`, and a view of the database answers.
//!
//! A rerun on a restored cluster only reads; one after a kill finishes the work.

use std::collections::VecDeque;
use std::fmt::Write as _;

use anyhow::Result;
use log::{debug, info, warn};
use serde_json::Value;

use crate::client::{Client, DbCreated, Endpoint, NodeError, OneShotDoc, Put, Up};
use crate::cluster::everywhere::{gone, Copies, Lagging};
use crate::cluster::health::{databases, verdict};
use crate::cluster::session::{each_bounded, Session, Waiting};
use crate::cluster::survey::PARALLEL;
use crate::commands::backup::{backup_problem, Backup};
use crate::util::clock::{poll, Clock};
use crate::util::config::{self, Config, ConfigError, NodeAddr};
use crate::util::exit::{Failure, Status};
use crate::util::text::{list_some, some_lines};

/// At most this many one-shot replications run at once. Each is a CouchDB job that starts
/// 0–5 s after its doc (`startup_jitter`), so many small databases are bound by that wait unless
/// several run together; each job holds `worker_processes` (4) workers and up to
/// `http_connections` (20) connections, and CouchDB starts new jobs at once only below `max_jobs`
/// (500). 16 keeps both ends' load modest and the jitter off the critical path.
pub const AT_ONCE: usize = 16;

/// How long the deletion of the docs still running at the deadline may take.
const CLEANUP: std::time::Duration = std::time::Duration::from_secs(10);

/// The id prefix of a restore's `_replicator` docs; a run's own are `restore:<ms>:<db>`.
const DOC_PREFIX: &str = "restore:";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub dry_run: bool,
    /// `q` for databases created on the cluster (default: the cluster's).
    pub q: Option<u32>,
    /// Only these databases (default: every one on the backup but `_replicator`).
    pub dbs: Vec<String>,
}

/// One database to restore, as read.
#[derive(Debug, Clone)]
struct DbPlan {
    db: String,
    /// Documents, live and deleted, on the backup.
    backup_docs: u64,
    backup_security: Option<Value>,
    /// On the cluster: `None` when it has no such database.
    cluster_docs: Option<u64>,
    cluster_security: Option<Value>,
    /// Revisions of the backup the cluster lacks (`None`: not known, replicate to be sure).
    missing: Option<u64>,
    /// Documents with conflicts on the cluster before anything was written.
    conflicts_before: u64,
}

impl DbPlan {
    fn restored(&self) -> bool {
        self.missing == Some(0)
    }

    fn state(&self) -> String {
        match (self.cluster_docs, self.missing) {
            (None, _) => "missing: created, then replicated".into(),
            (Some(_), Some(0)) => "restored already".into(),
            (Some(n), Some(m)) => format!("exists ({n} documents): {m} revision(s) to add"),
            (Some(n), None) => format!("exists ({n} documents): to replicate"),
        }
    }
}

pub fn restore(cfg: &Config, clock: &dyn Clock, opts: &Options) -> Result<String> {
    let Some(backup) = cfg.backup.as_ref() else {
        return Err(ConfigError(
            "restore reads from the backup CouchDB: set COUCHDB_BACKUP_URL (and \
             COUCHDB_BACKUP_USER/COUCHDB_BACKUP_PASSWORD if its admin is not COUCHDB_USER)"
                .into(),
        )
        .into());
    };
    let session = Session::new(cfg, clock, cfg.init_timeout);
    let addrs = session.phase("wait", &session.wait_what(), || session.wait_up())?;
    let via = session.phase("cluster", "the cluster is formed and healthy", || {
        healthy(&session, &addrs)
    })?;
    let r = Restore::new(&session, &via, backup, clock);
    session.phase(
        "backup",
        &format!("the backup CouchDB {}", backup.target.label),
        || r.check_backup(),
    )?;
    let mut plan = session.phase("plan", "databases on the backup and on the cluster", || {
        r.plan(&opts.dbs)
    })?;
    if opts.dry_run {
        println!("{}", render_plan(&plan, &backup.target.label));
        return Ok("plan printed (--dry-run); nothing written".into());
    }
    let mut actions = Vec::new();
    let cleaned = session.phase(
        "leftovers",
        "replication docs an earlier run left, in every copy of _replicator",
        || r.remove_leftovers(),
    )?;
    if cleaned > 0 {
        actions.push(format!(
            "deleted {cleaned} replication document(s) an earlier run left"
        ));
    }
    let created = session.phase("databases", "creating the missing ones", || {
        r.create_dbs(&mut plan, opts.q)
    })?;
    if created > 0 {
        actions.push(format!("created {created} database(s)"));
    }
    let replicated = session.phase("replicate", "one-shot replications from the backup", || {
        r.replicate(&plan)
    })?;
    if replicated > 0 {
        actions.push(format!("replicated {replicated} database(s)"));
    }
    let secured = session.phase("security", "each database's _security", || {
        r.write_security(&mut plan)
    })?;
    if secured > 0 {
        actions.push(format!("wrote _security of {secured} database(s)"));
    }
    let conflicts = session.phase("verify", "revisions, documents, _security, views", || {
        r.verify(&plan)
    })?;
    let mut line = format!(
        "restore: {} database(s) from {} in place",
        plan.len(),
        backup.target.label
    );
    if actions.is_empty() {
        line += "; nothing to do, nothing written";
    } else {
        line += &format!("; {}", actions.join(", "));
    }
    if conflicts > 0 {
        line += &format!("; {conflicts} document(s) with new conflicts (see above)");
    }
    Ok(format!("{line}; total {:.2?}", session.elapsed()))
}

/// The cluster must be formed and healthy before anything is written into it: the reference
/// node through which everything is asked.
fn healthy(session: &Session, addrs: &[NodeAddr]) -> Result<NodeAddr> {
    let survey = session.survey(addrs, None)?;
    let problems = verdict(&survey, &databases(&survey));
    if !problems.is_empty() {
        let texts: Vec<String> = problems.iter().map(|p| p.text.clone()).collect();
        return Err(refused(format!(
            "the cluster is not healthy ({} problem(s): {}); run `status`, fix it (or `init` a new \
             one), then restore",
            texts.len(),
            texts.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        )));
    }
    info!(
        "cluster: {} members, healthy; asked through {}",
        survey.members.len(),
        survey.via.label
    );
    Ok(survey.via)
}

struct Restore<'s, 'a> {
    session: &'s Session<'a>,
    /// The cluster member every request goes to.
    via: &'s NodeAddr,
    /// The cluster as the nodes reach it: where the replications write.
    cluster: NodeAddr,
    cfg: &'s config::Backup,
    /// The backup CouchDB, with its own credentials.
    backup: Client,
    /// This run's `_replicator` ids are `restore:<run>:<db>`.
    run: String,
}

impl<'s, 'a> Restore<'s, 'a> {
    fn new(
        session: &'s Session<'a>,
        via: &'s NodeAddr,
        cfg: &'s config::Backup,
        clock: &dyn Clock,
    ) -> Self {
        let backup = Client::new(
            &cfg.user,
            &cfg.password,
            session.cfg.request_timeout,
            session.deadline,
        );
        Restore {
            session,
            via,
            cluster: Backup::new(session, via, cfg).source_node(),
            cfg,
            backup,
            run: clock.unix_ms().to_string(),
        }
    }

    // ---- backup -----------------------------------------------------------------------------

    /// The backup answers, accepts its credentials (one request: a wrong password is not
    /// repeated, trap 7), and is not one of this cluster's nodes.
    fn check_backup(&self) -> Result<()> {
        let target = &self.cfg.target;
        match self.backup.up(target) {
            Ok(Up::Ready) => {}
            Ok(Up::NotReady(state)) => {
                return Err(refused(format!(
                    "the backup CouchDB {} answers /_up with `{state}`",
                    target.label
                )))
            }
            Err(e) => return Err(refused(self.backup_error(e))),
        }
        let theirs = self
            .backup
            .server_uuid(target)
            .map_err(|e| refused(self.backup_error(e)))?;
        let ours = self
            .session
            .read(|| self.session.client.server_uuid(self.via))?;
        if theirs.is_some() && theirs == ours {
            return Err(refused(format!(
                "COUCHDB_BACKUP_URL {} has this cluster's server uuid: it is one of the cluster's own \
                 nodes, not the backup",
                target.label
            )));
        }
        info!(
            "backup: {} answers as a separate CouchDB; credentials {}",
            target.label, self.cfg.credentials
        );
        Ok(())
    }

    // ---- plan -------------------------------------------------------------------------------

    /// Every database to restore with its documents and `_security` on both sides, and the
    /// revisions the cluster lacks. Reads only.
    fn plan(&self, named: &[String]) -> Result<Vec<DbPlan>> {
        let target = &self.cfg.target;
        let on_backup = self.on_backup(|b| b.all_dbs(target))?;
        if named.iter().any(|db| db == "_replicator") {
            return Err(refused(
                "_replicator is never restored: its documents hold passwords in clear, and on this \
                 cluster they would start replications nobody checked"
                    .into(),
            ));
        }
        let absent: Vec<String> = named
            .iter()
            .filter(|db| !on_backup.contains(db))
            .cloned()
            .collect();
        if !absent.is_empty() {
            return Err(refused(format!(
                "not on the backup CouchDB {}: {} (it has {})",
                target.label,
                list_some(&absent),
                list_some(&on_backup)
            )));
        }
        let mut dbs: Vec<String> = if named.is_empty() {
            on_backup
                .into_iter()
                .filter(|db| db != "_replicator")
                .collect()
        } else {
            named.to_vec()
        };
        dbs.sort();
        dbs.dedup();
        let client = &self.session.client;
        let plans = each_bounded(&dbs, PARALLEL, |db| -> Result<Option<DbPlan>> {
            let Some(counts) = self.on_backup(|b| b.db_counts(target, db))? else {
                return Ok(None); // deleted from the backup meanwhile
            };
            let backup_security = self.on_backup(|b| b.security(target, db))?;
            let cluster_docs = self.session.read(|| client.db_counts(self.via, db))?;
            let (cluster_security, missing) = match cluster_docs {
                None => (None, None),
                Some(_) => (
                    self.session.read(|| client.security(self.via, db))?,
                    self.missing(db, refused)?,
                ),
            };
            // Conflicts already there, to tell the ones a merge makes: only where it will merge.
            let conflicts_before = match (cluster_docs.map(|c| c.total()), missing) {
                (Some(n), m) if n > 0 && m != Some(0) => {
                    self.session.read(|| client.conflicted_docs(self.via, db))?
                }
                _ => 0,
            };
            Ok(Some(DbPlan {
                db: db.clone(),
                backup_docs: counts.total(),
                backup_security,
                cluster_docs: cluster_docs.map(|c| c.total()),
                cluster_security,
                missing,
                conflicts_before,
            }))
        });
        let plans: Vec<DbPlan> = plans
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let todo = plans.iter().filter(|p| !p.restored()).count();
        info!(
            "plan: {} database(s) on the backup, {} of them to restore, {} new to the cluster",
            plans.len(),
            todo,
            plans.iter().filter(|p| p.cluster_docs.is_none()).count()
        );
        Ok(plans)
    }

    /// Revisions of the backup's `db` the cluster lacks; `None` when the backup's feed is too
    /// large to read at once (the replication finds out by itself).
    /// `fail`: how a failure of the backup is worded (before any write: refused).
    fn missing(&self, db: &str, fail: fn(String) -> anyhow::Error) -> Result<Option<u64>> {
        let revs = match self.backup.revisions(&self.cfg.target, db) {
            Ok(Some(revs)) => revs,
            Ok(None) => return Ok(None),
            Err(NodeError::Malformed { reason, .. }) => {
                debug!("plan: {db}: changes feed not read at once ({reason}); replicating");
                return Ok(None);
            }
            Err(e) => return Err(fail(self.backup_error(e))),
        };
        let missing = self
            .session
            .read(|| self.session.client.missing_revisions(self.via, db, &revs))?;
        Ok(Some(missing))
    }

    // ---- leftovers --------------------------------------------------------------------------

    /// `_replicator` docs of an earlier run, live in any copy: deleted (passwords in clear,
    /// trap 21; a job still running under one would fail the new doc for the same replication,
    /// trap 20), then waited for until no copy holds one. Read copy by copy: one node's
    /// `_all_docs` reads each range from one copy, and may miss the one copy that still holds a
    /// doc the others deleted (trap 27). Where the cluster already answers the deletion (a copy
    /// lags behind it) nothing is written; that copy is only waited for.
    fn remove_leftovers(&self) -> Result<usize> {
        let client = &self.session.client;
        let ids = self
            .session
            .read(|| self.copies(client).live_ids(DOC_PREFIX))?;
        if ids.is_empty() {
            info!("leftovers: none in any copy of _replicator");
            return Ok(0);
        }
        for id in &ids {
            if let Some(doc) = self.session.read(|| client.one_shot(self.via, id))? {
                self.session
                    .read(|| client.delete_replication(self.via, id, &doc.rev))?;
            }
        }
        let left = self.gone_everywhere(client, self.session.deadline, &ids)?;
        if !left.is_empty() {
            return Err(incomplete(format!(
                "{} replication doc(s) an earlier run left are still live on some copy of \
                 _replicator (both passwords in each): {}",
                left.len(),
                lagging_lines(&left)
            )));
        }
        info!(
            "leftovers: deleted {} replication document(s) an earlier run left ({}), now gone from \
             every copy; their replications continue from their checkpoints",
            ids.len(),
            list_some(&ids)
        );
        Ok(ids.len())
    }

    /// `_replicator`'s copies, asked through the reference node with `client`.
    fn copies<'c>(&'c self, client: &'c Client) -> Copies<'c> {
        Copies {
            client,
            via: self.via,
            db: "_replicator",
        }
    }

    /// Waits, within `deadline`, until no copy of `_replicator` holds a live revision of any of
    /// `ids`; returns the copies that still do at the deadline. A DELETE answered 202 (or even
    /// 200: a quorum took it, not every copy) is not "gone everywhere" (trap 27).
    fn gone_everywhere(
        &self,
        client: &Client,
        deadline: std::time::Instant,
        ids: &[String],
    ) -> Result<Vec<Lagging>> {
        self.copies(client)
            .wait(self.session.clock, deadline, "cleanup", ids, &gone)
    }

    // ---- databases --------------------------------------------------------------------------

    fn create_dbs(&self, plan: &mut [DbPlan], q: Option<u32>) -> Result<usize> {
        let mut created = Vec::new();
        for p in plan.iter_mut().filter(|p| p.cluster_docs.is_none()) {
            let client = &self.session.client;
            match self
                .session
                .read(|| client.create_db_q(self.via, &p.db, q))?
            {
                DbCreated::Created => created.push(p.db.clone()),
                DbCreated::Existed => debug!("databases: {} appeared meanwhile", p.db),
            }
            p.cluster_docs = Some(0);
        }
        if !created.is_empty() {
            info!(
                "databases: created {} ({}): {}",
                created.len(),
                q.map_or("the cluster's q and n".to_string(), |q| format!("q={q}")),
                list_some(&created)
            );
        }
        Ok(created.len())
    }

    // ---- replication ------------------------------------------------------------------------

    /// One-shot replications of every database still lacking revisions, `AT_ONCE` at a time,
    /// until each doc says `completed` or `failed`; each doc deleted then. At the deadline the
    /// docs still running are deleted too (a rerun continues from their checkpoints).
    fn replicate(&self, plan: &[DbPlan]) -> Result<usize> {
        let mut queue: VecDeque<&DbPlan> = plan.iter().filter(|p| !p.restored()).collect();
        let total = queue.len();
        if total == 0 {
            info!("replicate: every database holds every revision of its backup");
            return Ok(0);
        }
        let client = &self.session.client;
        let mut active: Vec<(&DbPlan, String)> = Vec::new();
        // Every doc this run deleted: none may be left live on any copy (trap 27).
        let mut deleted: Vec<String> = Vec::new();
        let mut done = 0;
        let mut failed: Vec<String> = Vec::new();
        let mut waiting = Waiting::new("replicate", self.session.clock, self.session.deadline);
        let finished = poll(self.session.clock, self.session.deadline, || {
            while active.len() < AT_ONCE {
                let Some(p) = queue.pop_front() else { break };
                let id = format!("{DOC_PREFIX}{}:{}", self.run, p.db);
                let (source, target) = self.endpoints(&p.db);
                match self
                    .session
                    .read(|| client.put_one_shot(self.via, &id, &source, &target))?
                {
                    // A 202 (the owner's copy may lack it for a moment) needs no more: the
                    // doc's `completed`, read below, is the proof that it ran.
                    Put::Created(_) => debug!("replicate: {} started as {id}", p.db),
                    Put::AlreadyThere => debug!("replicate: {id} existed already"),
                }
                active.push((p, id));
            }
            let mut still = Vec::new();
            for (p, id) in active.drain(..) {
                match self.session.read(|| client.one_shot(self.via, &id))? {
                    Some(OneShotDoc {
                        state,
                        rev,
                        reason,
                        docs_written,
                    }) => match state.as_deref() {
                        Some("completed") => {
                            debug!(
                                "replicate: {}: completed, {docs_written} document(s) written",
                                p.db
                            );
                            self.session
                                .read(|| client.delete_replication(self.via, &id, &rev))?;
                            deleted.push(id);
                            done += 1;
                        }
                        Some("failed") => {
                            self.session
                                .read(|| client.delete_replication(self.via, &id, &rev))?;
                            deleted.push(id);
                            failed.push(format!(
                                "{}: replication failed: {}",
                                p.db,
                                reason.unwrap_or_default()
                            ));
                        }
                        _ => still.push((p, id)),
                    },
                    None => failed.push(format!("{}: its replication doc {id} was deleted", p.db)),
                }
            }
            active = still;
            if active.is_empty() && queue.is_empty() {
                return Ok(Some(()));
            }
            waiting.report(|| self.progress(done, total, &active));
            Ok::<_, anyhow::Error>(None)
        })?;
        let lagging = if finished.is_none() {
            // The session's client stops at the deadline: these deletions get a moment more, so
            // that no doc with passwords in it stays behind.
            let cleanup_deadline = self.session.clock.now() + CLEANUP;
            let cleanup = Client::new(
                &self.session.cfg.user,
                &self.session.cfg.password,
                self.session.cfg.request_timeout,
                cleanup_deadline,
            );
            for (_, id) in &active {
                if let Ok(Some(doc)) = cleanup.one_shot(self.via, id) {
                    let _ = cleanup.delete_replication(self.via, id, &doc.rev);
                }
                deleted.push(id.clone());
            }
            let mut left: Vec<String> = active.iter().map(|(p, _)| p.db.clone()).collect();
            left.extend(queue.iter().map(|p| p.db.clone()));
            failed.push(format!(
                "not finished by COUCHDB_INIT_TIMEOUT: {} (their replications were stopped; a rerun \
                 continues from their checkpoints)",
                list_some(&left)
            ));
            self.gone_everywhere(&cleanup, cleanup_deadline, &deleted)?
        } else {
            self.gone_everywhere(client, self.session.deadline, &deleted)?
        };
        let mut why = Vec::new();
        if !failed.is_empty() {
            why.push(format!(
                "{} of {total} database(s) not restored: {}",
                failed.len().max(total - done),
                some_lines(&failed)
            ));
        }
        if !lagging.is_empty() {
            why.push(left_behind(&lagging));
        }
        if !why.is_empty() {
            return Err(incomplete(why.join("; ")));
        }
        info!(
            "replicate: {done} database(s) replicated from the backup; their {} replication doc(s) \
             deleted, gone from every copy of _replicator",
            deleted.len()
        );
        Ok(done)
    }

    /// `9 of 12 database(s) to replicate (3 done); running: app: 120 of 500 documents, …`.
    fn progress(&self, done: usize, total: usize, active: &[(&DbPlan, String)]) -> String {
        let mut line = format!("{} of {total} database(s) to replicate", total - done);
        let running: Vec<String> = active
            .iter()
            .map(|(p, _)| {
                let have = self
                    .session
                    .client
                    .db_counts(self.via, &p.db)
                    .ok()
                    .flatten()
                    .map_or(0, |c| c.total());
                format!("{}: {have} of {} documents", p.db, p.backup_docs)
            })
            .collect();
        let _ = write!(line, " ({done} done); running: {}", list_some(&running));
        line
    }

    /// The backup's `db` as the nodes read it, and the cluster's as they write it.
    fn endpoints<'e>(&'e self, db: &'e str) -> (Endpoint<'e>, Endpoint<'e>) {
        let source = Endpoint {
            node: &self.cfg.target,
            db,
            user: &self.cfg.user,
            password: &self.cfg.password,
        };
        let target = Endpoint {
            node: &self.cluster,
            db,
            user: &self.session.cfg.user,
            password: &self.session.cfg.password,
        };
        (source, target)
    }

    // ---- security ---------------------------------------------------------------------------

    fn write_security(&self, plan: &mut [DbPlan]) -> Result<usize> {
        let client = &self.session.client;
        let mut written = Vec::new();
        for p in plan.iter_mut() {
            let Some(security) = p.backup_security.clone() else {
                continue;
            };
            if p.cluster_security.is_none() {
                p.cluster_security = self.session.read(|| client.security(self.via, &p.db))?;
            }
            if p.cluster_security.as_ref() == Some(&security) {
                continue;
            }
            self.session
                .read(|| client.put_security(self.via, &p.db, &security))?;
            p.cluster_security = Some(security);
            written.push(p.db.clone());
        }
        if !written.is_empty() {
            info!(
                "security: wrote the backup's _security into {}: {}",
                written.len(),
                list_some(&written)
            );
        }
        Ok(written.len())
    }

    // ---- verify -----------------------------------------------------------------------------

    /// Each database: no revision of the backup missing, at least its documents, the same
    /// `_security`, a view that answers — asked again within the deadline, since a copy a
    /// clustered count reads may lag its peers for a moment. Returns the documents with
    /// conflicts the restore made.
    fn verify(&self, plan: &[DbPlan]) -> Result<u64> {
        let mut waiting = Waiting::new("verify", self.session.clock, self.session.deadline);
        let mut wrong = Vec::new();
        let checked = poll(self.session.clock, self.session.deadline, || {
            wrong = each_bounded(plan, PARALLEL, |p| self.check(p))
                .into_iter()
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect();
            if wrong.is_empty() {
                return Ok(Some(()));
            }
            waiting.report(|| format!("{}: {}", wrong.len(), some_lines(&wrong)));
            Ok::<_, anyhow::Error>(None)
        })?;
        if checked.is_none() {
            return Err(incomplete(format!(
                "{} problem(s) after the restore: {}",
                wrong.len(),
                some_lines(&wrong)
            )));
        }
        let mut conflicts = 0;
        for p in plan
            .iter()
            .filter(|p| p.cluster_docs.is_some_and(|n| n > 0) && !p.restored())
        {
            let client = &self.session.client;
            let now = self
                .session
                .read(|| client.conflicted_docs(self.via, &p.db))?;
            let made = now.saturating_sub(p.conflicts_before);
            if made > 0 {
                warn!(
                    "verify: {}: {made} document(s) changed on both sides now have conflicts; CouchDB \
                     chose a winner and kept the other revisions (GET …?conflicts=true)",
                    p.db
                );
            }
            conflicts += made;
        }
        info!(
            "verify: {} database(s) hold every revision and document of the backup, with its _security",
            plan.len()
        );
        Ok(conflicts)
    }

    /// What is not as the backup has it in one database, one line each.
    fn check(&self, p: &DbPlan) -> Result<Vec<String>> {
        let client = &self.session.client;
        let mut wrong = Vec::new();
        let have = self
            .session
            .read(|| client.db_counts(self.via, &p.db))?
            .map_or(0, |c| c.total());
        if have < p.backup_docs {
            wrong.push(format!("{}: {have} of {} documents", p.db, p.backup_docs));
        }
        if let Some(m) = self.missing(&p.db, incomplete)?.filter(|m| *m > 0) {
            wrong.push(format!("{}: {m} revision(s) of the backup missing", p.db));
        }
        let security = self.session.read(|| client.security(self.via, &p.db))?;
        if p.backup_security.is_some() && security != p.backup_security {
            wrong.push(format!("{}: _security differs from the backup's", p.db));
        }
        if let Some((ddoc, view)) = self.session.read(|| client.first_view(self.via, &p.db))? {
            if !self
                .session
                .read(|| client.view_answers(self.via, &p.db, &ddoc, &view))?
            {
                wrong.push(format!("{}: view {ddoc}/{view} does not answer", p.db));
            }
        }
        Ok(wrong)
    }

    // ---- the backup CouchDB's errors --------------------------------------------------------

    fn on_backup<T>(&self, call: impl Fn(&Client) -> crate::client::NodeResult<T>) -> Result<T> {
        self.session
            .read(|| call(&self.backup))
            .map_err(|e| match e.downcast::<NodeError>() {
                Ok(e) => refused(self.backup_error(e)),
                Err(e) => e,
            })
    }

    fn backup_error(&self, e: NodeError) -> String {
        backup_problem(self.cfg, e)
    }
}

/// What is left of this run's replication docs when the wait for every copy ran out: named, so
/// that the operator knows which copies still hold both passwords.
fn left_behind(lagging: &[Lagging]) -> String {
    format!(
        "{} copy(ies) of its replication docs still live in _replicator, both passwords in \
         each: {} (CouchDB's internal replication deletes them within seconds while those nodes \
         run; a rerun checks every copy and deletes what is left)",
        lagging.len(),
        lagging_lines(lagging)
    )
}

fn lagging_lines(lagging: &[Lagging]) -> String {
    let lines: Vec<String> = lagging.iter().map(ToString::to_string).collect();
    some_lines(&lines)
}

/// The plan, for `--dry-run`: one line per database, the ones with work first.
fn render_plan(plan: &[DbPlan], backup: &str) -> String {
    let mut out = format!(
        "restore from {backup}: {} database(s), {} to restore\n",
        plan.len(),
        plan.iter().filter(|p| !p.restored()).count()
    );
    let width = plan.iter().map(|p| p.db.len()).max().unwrap_or(8).max(8);
    let _ = writeln!(out, "{:<width$}  {:>9}  cluster", "database", "backup");
    let mut sorted: Vec<&DbPlan> = plan.iter().collect();
    sorted.sort_by_key(|p| p.restored());
    for p in sorted {
        let _ = writeln!(out, "{:<width$}  {:>9}  {}", p.db, p.backup_docs, p.state());
    }
    out.trim_end().to_string()
}

fn refused(message: String) -> anyhow::Error {
    Failure::new(
        Status::Restore,
        format!("restore refused, nothing written: {message}"),
    )
    .into()
}

fn incomplete(message: String) -> anyhow::Error {
    Failure::new(
        Status::Restore,
        format!("restore incomplete: {message}; run it again to finish"),
    )
    .into()
}
