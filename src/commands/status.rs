//! `status` and `check`: the cluster at a glance, read-only, with the one verdict of
//! src/cluster/health.rs. `status` prints a table for people (or `--json` for scripts) and exits
//! 0 only when the cluster is healthy; `check` waits up to 10 s for the nodes, then gives the same
//! verdict in one line.
//!
//! Requests: 5 per node in COUCHDB_NODES (`/_up`, its name, membership, config, `GET /` for its
//! release), 2 per member that is not listed, one per 500
//! databases for the shard maps, one per member for its files, and (`status` only, not
//! `check`) one per copy for its file size, the bytes per node. A copy's own count is judged
//! only where it matters: databases with a move under way, `--details`, `status <db>`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use log::{info, warn};
use serde::Serialize;

use crate::cluster::health::{databases, findings, status_of, verdict, DbView, Problem};
use crate::cluster::planner::{imbalance, leftovers, plan_rebalance, Leftover, NodeLoad};
use crate::cluster::security::{self, Exposure, Finding};
use crate::cluster::session::{Session, Waiting};
use crate::cluster::survey::{CopyKey, State, Survey};
use crate::cluster::zones::{self, Shared};
use crate::commands::backup::{status_problems, Backup, DbBackup};
use crate::commands::formation::{Summary, CHECK_AGAIN, CHECK_WAIT};
use crate::util::clock::Clock;
use crate::util::config::Config;
use crate::util::config::NodeAddr;
use crate::util::exit::status_of as status_of_error;
use crate::util::exit::{Failure, Status};
use crate::util::text::{bytes, list_some};

/// Unhealthy databases listed in the table before "and N more".
const SHOWN_DBS: usize = 20;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub json: bool,
    /// Every database's ranges, and every copy's own count.
    pub details: bool,
    /// Only this database, with every copy's own count.
    pub db: Option<String>,
}

/// What `status` saw, ready to print.
pub struct Report {
    pub survey: Survey,
    pub dbs: Vec<DbView>,
    pub problems: Vec<Problem>,
    pub leftovers: Vec<Leftover>,
    /// Copies `rebalance` would move (databases not spread evenly over the members, or members
    /// holding uneven numbers of copies over all databases).
    pub unbalanced: usize,
    /// Copies and bytes per node over all databases (bytes only where sizes were read).
    pub loads: BTreeMap<String, NodeLoad>,
    /// "unbalanced: node4 holds 2 of 312 copies (even would be 78)": a warning, not a problem
    /// (`check` stays healthy), when `rebalance` can even the members out.
    pub imbalance: Option<String>,
    /// Ranges whose copies share a zone where the zones would allow them not to: a warning
    /// too (nothing is lost now; `rebalance` spreads them).
    pub zone_shared: Vec<Shared>,
    /// Why the members' files are not known, when they are not.
    pub files_unknown: Option<String>,
    /// A drained node, mixed CouchDB releases: lines of their own, not problems (`check`
    /// stays healthy; both are normal during an upgrade).
    pub findings: Vec<String>,
    /// With COUCHDB_BACKUP_URL: each database's backup, or why it could not be read.
    pub backup: Option<std::result::Result<Vec<DbBackup>, String>>,
    /// The security section (`status`; `check` only probes the distribution, and only with
    /// COUCHDB_DIST_TLS): what was read and found, or why it could not be read.
    pub security: Option<std::result::Result<(Exposure, Vec<Finding>), String>>,
}

/// `status`: read, judge, print; `Err` (naming the problems) when the cluster is not healthy.
pub fn status(cfg: &Config, clock: &dyn Clock, opts: &Options) -> Result<()> {
    let session = Session::new(cfg, clock, cfg.init_timeout.min(CHECK_WAIT));
    let report = session.phase("status", "reading every node and shard map", || {
        let addrs = session.addresses()?;
        let mut report = read(&session, &addrs, opts, true)?;
        add_security(&session, &mut report, true);
        report.backup = cfg
            .backup
            .as_ref()
            .map(|b| Backup::new(&session, &report.survey.via, b).observe());
        Ok(report)
    })?;
    let text = if opts.json {
        render_json(&report)
    } else {
        render_text(&report, opts)
    };
    println!("{text}");
    judge(&report)?;
    judge_backup(&report)?;
    info!(
        "healthy: {} members, {} databases, every range on its copies; config agrees; {:.2?}",
        report.survey.members.len(),
        report.dbs.len(),
        session.elapsed()
    );
    Ok(())
}

/// `check`: wait for the nodes (at most 10 s), then the verdict of `status`, in one line. With
/// `wait` (an app's init container), ask again every 2 s until the cluster is healthy, within
/// COUCHDB_INIT_TIMEOUT; only what waiting can fix is waited out (not a wrong password, not an
/// unusable name).
pub fn check(cfg: &Config, clock: &dyn Clock, wait: bool) -> Result<Summary> {
    let timeout = if wait {
        cfg.init_timeout
    } else {
        cfg.init_timeout.min(CHECK_WAIT)
    };
    let session = Session::new(cfg, clock, timeout);
    let addrs = session.phase("wait", &session.wait_what(), || session.wait_up())?;
    let what = "membership, copies, shared config";
    let report = if wait {
        session.phase(
            "verify",
            &format!("{what}, until the cluster is formed"),
            || until_healthy(&session, &addrs),
        )?
    } else {
        session.phase("verify", what, || {
            let mut report = read(&session, &addrs, &Options::default(), false)?;
            check_distribution(&session, &mut report);
            judge(&report)?;
            Ok(report)
        })?
    };
    if !report.zone_shared.is_empty() {
        warn!(
            "check: {} range(s) share a zone where they need not (a lost zone takes more than one of their copies): `status` names them, `rebalance` spreads them",
            report.zone_shared.len()
        );
    }
    let s = &report.survey;
    Ok(Summary {
        names: s.members.iter().cloned().collect(),
        coordinator: s.via.label.clone(),
        actions: Vec::new(),
        elapsed: session.elapsed(),
    })
}

fn until_healthy(session: &Session, addrs: &[NodeAddr]) -> Result<Report> {
    let mut waiting = Waiting::new("verify", session.clock, session.deadline);
    loop {
        let e = match read(session, addrs, &Options::default(), false).and_then(|mut r| {
            check_distribution(session, &mut r);
            judge(&r)?;
            Ok(r)
        }) {
            Ok(report) => return Ok(report),
            Err(e) => e,
        };
        let left = session
            .deadline
            .saturating_duration_since(session.clock.now());
        if !matches!(
            status_of_error(&e),
            Status::Unverified | Status::Unreachable
        ) || left <= CHECK_AGAIN
        {
            return Err(e);
        }
        waiting.report(|| format!("the cluster to be formed (now: {e})"));
        session.clock.sleep(CHECK_AGAIN);
    }
}

/// `files`: also list every member's files, to report leftover copies (not part of the verdict).
pub fn read(session: &Session, addrs: &[NodeAddr], opts: &Options, files: bool) -> Result<Report> {
    let mut survey = session.survey(addrs, None)?;
    if let Some(db) = &opts.db {
        if let Some(odd) = survey.unreadable.iter().find(|u| u.db == *db) {
            return Err(Failure::new(Status::Unverified, format!("{odd}")).into());
        }
        if survey.doc(db).is_none() {
            return Err(Failure::new(
                Status::Config,
                format!("there is no database `{db}` (none of the shard maps is for it)"),
            )
            .into());
        }
    }
    let wanted = copies_to_read(&survey, opts);
    session.read_copies(&mut survey, wanted)?;
    // Bytes per node, for people: one request per copy, so `status` only, not `check` (which
    // an init container may ask every 2 s). Like the leftovers, a report, not a verdict.
    if files {
        if let Err(e) = session.read_sizes(&mut survey) {
            log::warn!("status: could not read every copy's size: {e:#}");
        }
    }
    // Leftovers are a report, not a verdict: a node that will not list its files costs that
    // line only.
    let files_unknown = match files {
        false => Some("not read".to_string()),
        true => session.read_files(&mut survey).err().map(|e| {
            log::warn!("status: could not list the members' files: {e:#}");
            format!("{e:#}")
        }),
    };
    let dbs = databases(&survey);
    let problems = verdict(&survey, &dbs);
    let findings = findings(&survey);
    let leftovers = leftovers(&survey.docs, &survey.files);
    let serving: Vec<String> = survey
        .members
        .iter()
        .filter(|m| survey.serving(m))
        .cloned()
        .collect();
    let unbalanced = plan_rebalance(&survey.docs, &serving, &survey.sizes(), &survey.zones)
        .iter()
        .map(|p| p.moves.len())
        .sum();
    let members: Vec<String> = survey.members.iter().cloned().collect();
    let zone_shared = zones::shared_ranges(&survey.docs, &survey.zones, &members);
    let loads = survey.node_loads();
    let imbalance = if unbalanced > 0 {
        imbalance(&loads, &serving)
    } else {
        None
    };
    Ok(Report {
        loads,
        imbalance,
        zone_shared,
        survey,
        dbs,
        problems,
        leftovers,
        unbalanced,
        files_unknown,
        findings,
        backup: None,
        security: None,
    })
}

/// The security section: the findings, whose problems join the verdict. `all_dbs`: every
/// database's `_security` is read too (one GET each).
pub fn add_security(session: &Session, report: &mut Report, all_dbs: bool) {
    let read = security::read(session, &report.survey, all_dbs);
    report.security = Some(match read {
        Ok(exposure) => {
            let found = security::findings(session.cfg, &report.survey, &exposure);
            for f in found.iter().filter(|f| f.problem) {
                report.problems.push(Problem {
                    status: Status::Security,
                    text: f.text.clone(),
                });
            }
            Ok((exposure, found))
        }
        Err(e) => Err(format!("could not be read: {e}")),
    });
}

/// `check`: with COUCHDB_DIST_TLS, each node's distribution must be the one it says (a few
/// connections per node, no request to CouchDB); its problems join the verdict.
fn check_distribution(session: &Session, report: &mut Report) {
    if session.cfg.dist_tls.is_none() {
        return;
    }
    let dist = security::probe(session, &report.survey);
    for text in security::dist_problems(session.cfg.dist_tls, &dist) {
        report.problems.push(Problem {
            status: Status::Security,
            text,
        });
    }
}

/// Copies whose own count is read: every copy of a database with a move under way (is the
/// new copy filled?), and every copy with `--details` or of `status <db>`.
fn copies_to_read(s: &Survey, opts: &Options) -> Vec<CopyKey> {
    s.copies_of(|d| {
        opts.details || opts.db.as_deref() == Some(d.db.as_str()) || !d.moves.is_empty()
    })
}

/// `Err` naming the problems when there are any.
fn judge(report: &Report) -> Result<()> {
    if report.problems.is_empty() {
        return Ok(());
    }
    let texts: Vec<String> = report.problems.iter().map(|p| p.text.clone()).collect();
    Err(Failure::new(
        status_of(&report.problems),
        format!(
            "not healthy, {} problem(s): {}",
            texts.len(),
            texts.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                + if texts.len() > 3 { "; …" } else { "" }
        ),
    )
    .into())
}

// ---- people ---------------------------------------------------------------------------------

struct NodeRow {
    name: String,
    address: String,
    /// The CouchDB release (`-` for a member asked through another node).
    version: String,
    state: String,
    connected: bool,
    member: bool,
    copies: usize,
}

/// Every node: listed, members, and any other node a shard map names.
fn node_rows(s: &Survey) -> Vec<NodeRow> {
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for node in s.docs.iter().flat_map(|d| d.map.values().flatten()) {
        *copies.entry(node.as_str()).or_default() += 1;
    }
    let mut rows: Vec<NodeRow> = s
        .nodes
        .iter()
        .map(|n| {
            let name = n.name.clone().unwrap_or_else(|| "? (no answer)".into());
            NodeRow {
                address: n.addr.as_ref().map_or("-".into(), |a| a.label.clone()),
                version: n.version.clone().unwrap_or_else(|| "-".into()),
                state: match &n.state {
                    State::Up => "up".into(),
                    State::Maintenance(_) if n.drained() => "drained (nolb)".into(),
                    State::Maintenance(mode) => format!("maintenance ({mode})"),
                    State::Down(_) => "down".into(),
                },
                connected: s.connected.contains(&name),
                member: s.members.contains(&name),
                copies: copies.get(name.as_str()).copied().unwrap_or(0),
                name,
            }
        })
        .collect();
    for (name, count) in copies {
        if s.node(name).is_none() {
            rows.push(NodeRow {
                name: name.to_string(),
                address: "-".into(),
                version: "-".into(),
                state: if s.connected.contains(name) {
                    "up"
                } else {
                    "unknown"
                }
                .into(),
                connected: s.connected.contains(name),
                member: false,
                copies: count,
            });
        }
    }
    rows
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn render_text(report: &Report, opts: &Options) -> String {
    let s = &report.survey;
    let mut out = Vec::new();
    let copies: usize = s
        .docs
        .iter()
        .map(|d| d.map.values().map(Vec::len).sum::<usize>())
        .sum();
    out.push(format!(
        "cluster: {} members, asked through {}; [cluster] n = {}; {} databases, {} copies",
        s.members.len(),
        s.via.label,
        s.cluster_n,
        report.dbs.len(),
        copies
    ));
    out.push(String::new());
    let mut rows = vec![[
        "node",
        "address",
        "version",
        "state",
        "connected",
        "member",
        "copies",
        "bytes",
    ]
    .map(String::from)
    .to_vec()];
    // The zone column only where zones are in use.
    let zoned = !s.zones.is_empty();
    if zoned {
        rows[0].push("zone".into());
    }
    for r in node_rows(s) {
        let held = report
            .loads
            .get(&r.name)
            .map_or("-".into(), |l| bytes(l.bytes));
        let zone = s.zones.get(&r.name).cloned().unwrap_or_else(|| "-".into());
        rows.push(vec![
            r.name,
            r.address,
            r.version,
            r.state,
            yes(r.connected).into(),
            yes(r.member).into(),
            r.copies.to_string(),
            held,
        ]);
        if let (true, Some(row)) = (zoned, rows.last_mut()) {
            row.push(zone);
        }
    }
    out.push(table(&rows));
    out.push(String::new());

    let mut shapes: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for d in &report.dbs {
        *shapes.entry((d.q, d.n)).or_default() += 1;
    }
    let shapes: Vec<String> = shapes
        .iter()
        .map(|((q, n), count)| format!("{count} × q={q} n={n}"))
        .collect();
    let unhealthy: Vec<&DbView> = report.dbs.iter().filter(|d| !d.healthy()).collect();
    out.push(format!(
        "databases: {} ({}); {}",
        report.dbs.len(),
        shapes.join(", "),
        if unhealthy.is_empty() {
            "every range on its copies".to_string()
        } else {
            format!("{} with problems", unhealthy.len())
        }
    ));
    let shown: Vec<&DbView> = match (&opts.db, opts.details) {
        (Some(db), _) => report.dbs.iter().filter(|d| &d.db == db).collect(),
        (None, true) => report.dbs.iter().collect(),
        (None, false) => unhealthy.iter().take(SHOWN_DBS).copied().collect(),
    };
    if !shown.is_empty() {
        out.push(String::new());
        out.push(db_table(&shown, opts.details || opts.db.is_some()));
    }
    if opts.db.is_none() && !opts.details {
        if unhealthy.len() > shown.len() {
            out.push(format!(
                "… and {} more; `status --details` lists every database, `status <db>` one",
                unhealthy.len() - shown.len()
            ));
        } else {
            out.push("(`status --details` lists every database, `status <db>` one with its copies' counts)".into());
        }
    }
    out.push(String::new());
    out.push(if report.unbalanced == 0 {
        "balance: every database is spread evenly over the members, and the members hold as even numbers of copies as the maps allow".to_string()
    } else {
        format!(
            "balance: uneven; `rebalance` would move {} cop{} (`rebalance --dry-run` shows where)",
            report.unbalanced,
            if report.unbalanced == 1 { "y" } else { "ies" }
        )
    });
    if let Some(finding) = &report.imbalance {
        out.push(finding.clone());
    }
    if zoned {
        out.extend(zones_text(report));
    }
    out.extend(report.findings.iter().cloned());

    out.push(match &report.files_unknown {
        Some(why) => format!("leftover shard files: unknown ({why})"),
        None => leftover_line(&report.leftovers),
    });
    if report.problems.is_empty() {
        out.push("verdict: healthy".into());
    } else {
        out.push(format!(
            "verdict: NOT healthy, {} problem(s):",
            report.problems.len()
        ));
        for p in &report.problems {
            out.push(format!("  - {}", p.text));
        }
    }
    if let Some(found) = &report.security {
        out.push(String::new());
        out.push(security_text(report, found));
    }
    if let Some(backup) = &report.backup {
        out.push(String::new());
        out.push(backup_text(backup, opts));
    }
    out.join("\n")
}

/// The zones, the placement the nodes have, and every range whose copies share a zone where
/// they need not (at most `SHOWN_DBS`).
fn zones_text(report: &Report) -> Vec<String> {
    let s = &report.survey;
    let placements: std::collections::BTreeSet<Option<&str>> = s
        .nodes
        .iter()
        .filter_map(|n| n.config.as_ref().map(|c| c.placement.as_deref()))
        .collect();
    let placement = match placements.iter().collect::<Vec<_>>().as_slice() {
        [Some(rule)] => format!("[cluster] placement {rule} on every node"),
        [None] => "no [cluster] placement: CouchDB ignores the zones for new databases".to_string(),
        [] => "[cluster] placement unknown".to_string(),
        _ => "[cluster] placement differs between nodes".to_string(),
    };
    let mut out = vec![format!("zones: {}; {placement}", zones::describe(&s.zones))];
    if report.zone_shared.is_empty() {
        out.push(
            "zones: every range's copies over as many zones as its copies and the zones allow"
                .into(),
        );
        return out;
    }
    out.push(format!(
        "zones: {} range(s) share a zone where they need not (a lost zone takes more than one copy of each); `rebalance` spreads them:",
        report.zone_shared.len()
    ));
    for shared in report.zone_shared.iter().take(SHOWN_DBS) {
        out.push(format!("  {shared}"));
    }
    if report.zone_shared.len() > SHOWN_DBS {
        out.push(format!(
            "  … and {} more (`status --json` lists every one)",
            report.zone_shared.len() - SHOWN_DBS
        ));
    }
    out
}

/// `security:` — the distribution of each node, the cookie, then every finding with what to
/// change.
fn security_text(
    report: &Report,
    found: &std::result::Result<(Exposure, Vec<Finding>), String>,
) -> String {
    let (exposure, findings) = match found {
        Err(why) => return format!("security: {why}"),
        Ok(f) => f,
    };
    let problems = findings.iter().filter(|f| f.problem).count();
    let mut out = vec![format!(
        "security: {} finding(s){}",
        findings.len(),
        if problems > 0 {
            format!(", {problems} counted as problems (exit 15)")
        } else {
            String::new()
        }
    )];
    // One group per way of running it (the transport, its CA, whether peers are verified):
    // short at any number of nodes.
    let mut groups: BTreeMap<String, (Vec<String>, BTreeSet<u16>)> = BTreeMap::new();
    for d in &exposure.dist {
        let mut word = d.word().to_string();
        if let crate::client::dist::Transport::Tls(t) = &d.transport {
            if let Some((_, ca)) = &t.issuer {
                word += &format!(", certificate by `{ca}`");
            }
            match t.asks_for_certificate {
                Some(true) => word += ", peers verified",
                Some(false) => word += ", peers NOT verified",
                None => {}
            }
        }
        let g = groups.entry(word).or_default();
        g.0.push(d.label.clone());
        g.1.extend(d.port);
    }
    let all = exposure.dist.len();
    let dist: Vec<String> = groups
        .iter()
        .map(|(word, (nodes, ports))| {
            let port = match ports.len() {
                1 => format!(" (port {})", ports.iter().next().copied().unwrap_or(0)),
                _ => String::new(),
            };
            match nodes.len() == all {
                true => format!(
                    "{word} on {}{port}",
                    security::all_probed(&report.survey, all)
                ),
                false => format!("{word} on {}{port}", list_some(nodes)),
            }
        })
        .collect();
    out.push(format!(
        "  distribution: {}",
        if dist.is_empty() {
            "no node to probe".to_string()
        } else {
            dist.join("; ")
        }
    ));
    let binds: BTreeMap<String, usize> = report
        .survey
        .nodes
        .iter()
        .filter_map(|n| n.config.as_ref()?.settings.bind_address.clone())
        .fold(BTreeMap::new(), |mut m, b| {
            *m.entry(b).or_default() += 1;
            m
        });
    if !binds.is_empty() {
        let said: Vec<String> = binds
            .iter()
            .map(|(b, n)| format!("{b} on {n} node(s)"))
            .collect();
        out.push(format!("  HTTP [chttpd] bind_address: {}", said.join(", ")));
    }
    for f in findings {
        out.push(format!(
            "  - {}{}",
            if f.problem { "PROBLEM: " } else { "" },
            f.text
        ));
    }
    out.join("\n")
}

fn db_table(dbs: &[&DbView], counts: bool) -> String {
    let mut rows = vec![["database", "q", "n", "range", "copies"]
        .map(String::from)
        .to_vec()];
    for d in dbs {
        for (i, r) in d.ranges.iter().enumerate() {
            let copies: Vec<String> = r
                .copies
                .iter()
                .zip(&r.docs)
                .map(|((node, health), docs)| {
                    let mut c = node.clone();
                    if counts {
                        if let Some(docs) = docs {
                            c += &format!(" {docs} docs");
                        }
                    }
                    if !health.counts() {
                        c += &format!(" ({})", health.word());
                    }
                    c
                })
                .collect();
            let first = i == 0;
            rows.push(vec![
                if first { d.db.clone() } else { String::new() },
                if first {
                    d.q.to_string()
                } else {
                    String::new()
                },
                if first {
                    d.n.to_string()
                } else {
                    String::new()
                },
                r.range.clone(),
                copies.join(", "),
            ]);
        }
    }
    table(&rows)
}

fn leftover_line(found: &[Leftover]) -> String {
    if found.is_empty() {
        return "leftover shard files: none".into();
    }
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for l in found {
        *per_node.entry(l.node.as_str()).or_default() += 1;
    }
    let where_: Vec<String> = per_node.iter().map(|(n, c)| format!("{n}: {c}")).collect();
    format!(
        "leftover shard files: {} ({}) — copies no shard map lists any more; \
         `rebalance --delete-leftovers` deletes those of current databases",
        found.len(),
        list_some(&where_)
    )
}

// ---- scripts --------------------------------------------------------------------------------

#[derive(Serialize)]
struct JsonReport<'a> {
    healthy: bool,
    exit: u8,
    problems: Vec<&'a str>,
    members: Vec<&'a str>,
    cluster_n: usize,
    nodes: Vec<JsonNode>,
    databases: Vec<JsonDb<'a>>,
    leftovers: Vec<JsonLeftover<'a>>,
    /// Copies `rebalance` would move.
    rebalance_moves: usize,
    /// "unbalanced: …" when `rebalance` can even out the members (a warning: `healthy` stays).
    unbalanced: Option<&'a str>,
    /// Ranges whose copies share a zone where they need not (a warning: `healthy` stays).
    zones_shared: Vec<JsonShared<'a>>,
    /// The distinct CouchDB releases of the nodes (more than one during a rolling upgrade).
    versions: Vec<&'a str>,
    /// "drained: …", "versions: mixed, …": warnings, `healthy` stays.
    findings: &'a [String],
    /// With COUCHDB_BACKUP_URL only.
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<JsonBackup<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    security: Option<JsonSecurity<'a>>,
}

#[derive(Serialize)]
struct JsonSecurity<'a> {
    error: Option<&'a str>,
    distribution: Vec<JsonDist<'a>>,
    findings: Vec<JsonFinding<'a>>,
}

#[derive(Serialize)]
struct JsonDist<'a> {
    node: &'a str,
    port: Option<u16>,
    /// `TLS`, `plain TCP` or `unknown`.
    transport: &'static str,
    /// Why it is unknown.
    reason: Option<&'a str>,
    /// The common name of its certificate's issuer, where TLS 1.2 showed it.
    issuer: Option<&'a str>,
    verifies_peers: Option<bool>,
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    kind: &'a str,
    problem: bool,
    text: &'a str,
}

fn security_json(
    found: &std::result::Result<(Exposure, Vec<Finding>), String>,
) -> JsonSecurity<'_> {
    use crate::client::dist::Transport;
    match found {
        Err(why) => JsonSecurity {
            error: Some(why),
            distribution: Vec::new(),
            findings: Vec::new(),
        },
        Ok((exposure, findings)) => JsonSecurity {
            error: None,
            distribution: exposure
                .dist
                .iter()
                .map(|d| {
                    let tls = match &d.transport {
                        Transport::Tls(t) => Some(t),
                        _ => None,
                    };
                    JsonDist {
                        node: &d.label,
                        port: d.port,
                        transport: d.word(),
                        reason: match &d.transport {
                            Transport::Unknown(why) => Some(why),
                            _ => None,
                        },
                        issuer: tls
                            .and_then(|t| t.issuer.as_ref())
                            .map(|(_, cn)| cn.as_str()),
                        verifies_peers: tls.and_then(|t| t.asks_for_certificate),
                    }
                })
                .collect(),
            findings: findings
                .iter()
                .map(|f| JsonFinding {
                    kind: f.kind,
                    problem: f.problem,
                    text: &f.text,
                })
                .collect(),
        },
    }
}

#[derive(Serialize)]
struct JsonNode {
    name: String,
    address: Option<String>,
    /// `GET /`'s `version`; `null` for a member asked through another node.
    version: Option<String>,
    state: String,
    connected: bool,
    member: bool,
    copies: usize,
    /// The file sizes of the copies it holds (a copy not read counts as its range's others).
    bytes: u64,
    /// The zone of its `_nodes` doc.
    zone: Option<String>,
    /// Its `[cluster] placement`, when its config was read.
    placement: Option<String>,
}

#[derive(Serialize)]
struct JsonShared<'a> {
    db: &'a str,
    range: &'a str,
    zone: &'a str,
    in_zone: usize,
    copies: usize,
}

#[derive(Serialize)]
struct JsonDb<'a> {
    db: &'a str,
    q: usize,
    n: usize,
    healthy: bool,
    conflicts: usize,
    moving: &'a [crate::client::Move],
    ranges: Vec<JsonRange<'a>>,
}

#[derive(Serialize)]
struct JsonRange<'a> {
    range: &'a str,
    healthy: usize,
    copies: Vec<JsonCopy<'a>>,
}

#[derive(Serialize)]
struct JsonCopy<'a> {
    node: &'a str,
    state: String,
    doc_count: Option<u64>,
}

#[derive(Serialize)]
struct JsonLeftover<'a> {
    node: &'a str,
    file: &'a str,
    db: Option<&'a str>,
}

pub fn render_json(report: &Report) -> String {
    let s = &report.survey;
    let j = JsonReport {
        healthy: report.problems.is_empty(),
        exit: exit_code(report),
        problems: report.problems.iter().map(|p| p.text.as_str()).collect(),
        members: s.members.iter().map(String::as_str).collect(),
        cluster_n: s.cluster_n,
        nodes: node_rows(s)
            .into_iter()
            .map(|r| JsonNode {
                address: (r.address != "-").then_some(r.address),
                version: (r.version != "-").then_some(r.version),
                state: r.state,
                connected: r.connected,
                member: r.member,
                copies: r.copies,
                bytes: report.loads.get(&r.name).map_or(0, |l| l.bytes),
                zone: s.zones.get(&r.name).cloned(),
                placement: s
                    .node(&r.name)
                    .and_then(|n| n.config.as_ref())
                    .and_then(|c| c.placement.clone()),
                name: r.name,
            })
            .collect(),
        databases: report
            .dbs
            .iter()
            .map(|d| JsonDb {
                db: &d.db,
                q: d.q,
                n: d.n,
                healthy: d.healthy(),
                conflicts: d.conflicts,
                moving: &d.moving,
                ranges: d
                    .ranges
                    .iter()
                    .map(|r| JsonRange {
                        range: &r.range,
                        healthy: r.healthy,
                        copies: r
                            .copies
                            .iter()
                            .zip(&r.docs)
                            .map(|((node, h), docs)| JsonCopy {
                                node,
                                state: h.word(),
                                doc_count: *docs,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
        rebalance_moves: report.unbalanced,
        unbalanced: report.imbalance.as_deref(),
        zones_shared: report
            .zone_shared
            .iter()
            .map(|z| JsonShared {
                db: &z.db,
                range: &z.range,
                zone: &z.zone,
                in_zone: z.in_zone,
                copies: z.copies,
            })
            .collect(),
        versions: s.versions(),
        findings: &report.findings,
        backup: report.backup.as_ref().map(backup_json),
        security: report.security.as_ref().map(security_json),
        leftovers: report
            .leftovers
            .iter()
            .map(|l| JsonLeftover {
                node: &l.node,
                file: &l.file,
                db: l.db.as_deref(),
            })
            .collect(),
    };
    // Serialising plain structs of strings and numbers cannot fail.
    serde_json::to_string_pretty(&j).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

// ---- backup (with COUCHDB_BACKUP_URL) -------------------------------------------------------

/// `Err` (exit 11) when the cluster is healthy but its backup is not in place: a database
/// without its replication or its database on the backup, a job crashing or failed, or the
/// backup CouchDB not answering. A lag alone is not: `status` waits for nothing.
fn judge_backup(report: &Report) -> Result<()> {
    let problems = backup_problems(report);
    if problems.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        Status::Backup,
        format!(
            "the cluster is healthy; its backup is not in place: {}",
            problems
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
                + if problems.len() > 3 { "; …" } else { "" }
        ),
    )
    .into())
}

fn backup_problems(report: &Report) -> Vec<String> {
    match &report.backup {
        None => Vec::new(),
        Some(Err(why)) => vec![why.clone()],
        Some(Ok(dbs)) => status_problems(dbs),
    }
}

/// The code `status` exits with: the cluster's verdict first, then the backup's.
fn exit_code(report: &Report) -> u8 {
    if report.problems.is_empty() && !backup_problems(report).is_empty() {
        Status::Backup.code()
    } else {
        status_of(&report.problems).code()
    }
}

/// One row per database (those with problems first; at most `SHOWN_DBS` without `--details`):
/// replicated or not, state, lag in documents, last error.
fn backup_text(backup: &std::result::Result<Vec<DbBackup>, String>, opts: &Options) -> String {
    let dbs = match backup {
        Err(why) => return format!("backup: NOT in place: {why}"),
        Ok(dbs) => dbs,
    };
    let troubled = status_problems(dbs).len();
    let mut out = vec![format!(
        "backup: {} database(s); {}",
        dbs.len(),
        if troubled == 0 {
            "in place: every one replicated".to_string()
        } else {
            format!("NOT in place: {troubled} not backed up (no working replication, or _security differs)")
        }
    )];
    let mut shown: Vec<&DbBackup> = dbs
        .iter()
        .filter(|d| opts.db.as_deref().is_none_or(|db| db == d.db))
        .collect();
    shown.sort_by_key(|d| status_problems(std::slice::from_ref(*d)).is_empty());
    let limit = if opts.details { shown.len() } else { SHOWN_DBS };
    let mut rows = vec![[
        "database",
        "replicated",
        "state",
        "lag",
        "_security",
        "last error",
    ]
    .map(String::from)
    .to_vec()];
    for d in shown.iter().take(limit) {
        rows.push(vec![
            d.db.clone(),
            match (&d.doc, &d.elsewhere) {
                (Some(doc), _) => format!("yes ({})", doc.doc_id),
                (None, Some(doc)) => format!("no ({} writes elsewhere)", doc.doc_id),
                (None, None) => "no".into(),
            },
            d.state().to_string(),
            d.lag().map_or("-".into(), |l| l.to_string()),
            security_word(d).into(),
            d.doc
                .as_ref()
                .and_then(|doc| doc.error.clone())
                .unwrap_or_default(),
        ]);
    }
    out.push(table(&rows));
    if shown.len() > limit {
        out.push(format!(
            "… and {} more; `status --details` lists every database",
            shown.len() - limit
        ));
    }
    out.join("\n")
}

/// Whether the backup's `_security` is the cluster's: `same`, `differs`, or `-` (a side has
/// no such database).
fn security_word(d: &DbBackup) -> &'static str {
    if d.security_differs() {
        "differs"
    } else if d.source_security.is_some() && d.target_security.is_some() {
        "same"
    } else {
        "-"
    }
}

#[derive(Serialize)]
struct JsonBackup<'a> {
    in_place: bool,
    error: Option<&'a str>,
    databases: Vec<JsonBackupDb<'a>>,
}

#[derive(Serialize)]
struct JsonBackupDb<'a> {
    db: &'a str,
    replicated: bool,
    doc: Option<&'a str>,
    state: &'a str,
    /// Documents (live and deleted) on the cluster and on the backup.
    source_docs: Option<u64>,
    target_docs: Option<u64>,
    lag: Option<u64>,
    /// `same`, `differs`, or `-`.
    security: &'static str,
    last_error: Option<&'a str>,
}

fn backup_json(backup: &std::result::Result<Vec<DbBackup>, String>) -> JsonBackup<'_> {
    match backup {
        Err(why) => JsonBackup {
            in_place: false,
            error: Some(why),
            databases: Vec::new(),
        },
        Ok(dbs) => JsonBackup {
            in_place: status_problems(dbs).is_empty(),
            error: None,
            databases: dbs
                .iter()
                .map(|d| JsonBackupDb {
                    db: &d.db,
                    replicated: d.doc.is_some(),
                    doc: d.doc.as_ref().map(|doc| doc.doc_id.as_str()),
                    state: d.state(),
                    source_docs: d.source,
                    target_docs: d.target,
                    lag: d.lag(),
                    security: security_word(d),
                    last_error: d.doc.as_ref().and_then(|doc| doc.error.as_deref()),
                })
                .collect(),
        },
    }
}
