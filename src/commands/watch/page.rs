//! The status page (`/`) and the same data as JSON (`/status.json`), both rendered from the
//! watcher's last look: serving them never sends a request to a node. One small HTML page, no
//! script and no external asset (the server forbids both, `serve.rs`): the verdict, each node,
//! copies and bytes per node as bars (the balance), the ranges below their copy count, the
//! backup, and the last changes the watcher logged. It reloads itself (a meta refresh).
//!
//! What it shows is what `status` and the log already say — Erlang names, the addresses of
//! COUCHDB_NODES (which refuses credentials), database names, problems — never a credential;
//! every text is HTML-escaped (database names are user input). Its size is bounded: lists are
//! cut (`Lines`, `PROBLEM_DBS`, `CHANGES`), and there is one row per node.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::metrics::{unix, Lines, NodeRow, Shared, PROBLEM_DBS};
use crate::util::text::{ago, bytes, utc};

/// The page reloads at the watcher's interval, but not more often than this.
const MIN_REFRESH_SECS: u64 = 5;

/// What both renderings show.
#[derive(Serialize)]
struct View<'a> {
    /// `healthy`, `not healthy`, or `unknown` before the first look finished.
    verdict: &'static str,
    healthy: bool,
    /// The last look in a few words (as the log says it), or why it failed.
    summary: String,
    /// When the last look finished; `None` before the first.
    looked_at: Option<Stamp>,
    interval_seconds: f64,
    members: Option<usize>,
    nodes_up: Option<usize>,
    databases: Option<usize>,
    ranges_below_n: Option<usize>,
    problems: Option<&'a Lines>,
    /// `unbalanced: node4 holds 2 of 312 copies (even would be 78)`, as `status` says it.
    imbalance: Option<&'a str>,
    nodes: Vec<Node<'a>>,
    /// Databases with ranges below n, the worst first, at most `PROBLEM_DBS`.
    ranges_below_n_by_database: Vec<Short<'a>>,
    /// With COUCHDB_BACKUP_URL, once the cluster is formed.
    backup: Option<BackupView<'a>>,
    /// The newest first.
    changes: Vec<ChangeView<'a>>,
}

#[derive(Serialize)]
struct Stamp {
    utc: String,
    unix: f64,
}

impl Stamp {
    fn of(at: SystemTime) -> Stamp {
        Stamp {
            utc: utc(at),
            unix: (unix(at) * 1000.0).round() / 1000.0,
        }
    }
}

#[derive(Serialize)]
struct Node<'a> {
    #[serde(flatten)]
    row: &'a NodeRow,
    /// Copies the shard maps put on it; `None` for a node they do not name.
    copies: Option<usize>,
    /// Bytes of those copies, once read (every 20th look).
    bytes: Option<u64>,
}

#[derive(Serialize)]
struct Short<'a> {
    db: &'a str,
    ranges: usize,
}

#[derive(Serialize)]
struct BackupView<'a> {
    /// What `couchdb_backup_failing` says.
    failing: bool,
    /// Why it could not be looked at or put in place.
    error: Option<&'a str>,
    unreplicated: Option<usize>,
    docs_behind: Option<u64>,
    not_in_place: Option<&'a Lines>,
}

#[derive(Serialize)]
struct ChangeView<'a> {
    at: Stamp,
    warning: bool,
    what: &'a str,
}

fn view(s: &Shared) -> View<'_> {
    let snap = s.snapshot.as_ref();
    let (verdict, summary) = match (snap, &s.look_error) {
        (Some(snap), _) if snap.healthy => ("healthy", snap.summary.clone()),
        (Some(snap), _) => ("not healthy", snap.summary.clone()),
        (None, Some(e)) => ("not healthy", format!("the last look failed: {e}")),
        (None, None) => ("unknown", "the first look has not finished yet".into()),
    };
    let mut nodes: Vec<Node> = snap.map_or(Vec::new(), |snap| {
        snap.nodes
            .iter()
            .map(|row| Node {
                row,
                copies: row.name.as_ref().and_then(|n| snap.copies.get(n).copied()),
                bytes: row.name.as_ref().and_then(|n| snap.bytes.get(n).copied()),
            })
            .collect()
    });
    // Members are listed first, then the others (not yet joined, never answered).
    nodes.sort_by_key(|n| !n.row.member);
    View {
        verdict,
        healthy: snap.is_some_and(|s| s.healthy),
        summary,
        looked_at: s.last_tick.map(|(_, at)| Stamp::of(at)),
        interval_seconds: s.interval.as_secs_f64(),
        members: snap.map(|s| s.members),
        nodes_up: snap.map(|s| s.nodes_up),
        databases: snap.map(|s| s.databases),
        ranges_below_n: snap.map(|s| s.ranges_below_n),
        problems: snap.map(|s| &s.problems),
        imbalance: snap.and_then(|s| s.imbalance.as_deref()),
        nodes,
        ranges_below_n_by_database: snap.map_or(Vec::new(), |s| {
            s.problem_dbs
                .iter()
                .map(|(db, ranges)| Short {
                    db,
                    ranges: *ranges,
                })
                .collect()
        }),
        backup: snap
            .filter(|s| s.backup.is_some() || s.backup_error.is_some())
            .map(|s| BackupView {
                failing: s.backup_error.is_some()
                    || s.backup.as_ref().is_some_and(|b| b.not_in_place.total > 0),
                error: s.backup_error.as_deref(),
                unreplicated: s.backup.as_ref().map(|b| b.unreplicated),
                docs_behind: s.backup.as_ref().map(|b| b.docs_behind),
                not_in_place: s.backup.as_ref().map(|b| &b.not_in_place),
            }),
        changes: s
            .changes
            .iter()
            .map(|c| ChangeView {
                at: Stamp::of(c.at),
                warning: c.warning,
                what: &c.what,
            })
            .collect(),
    }
}

/// `/status.json`.
pub fn json(s: &Shared) -> String {
    // Plain structs of strings and numbers: serialising them cannot fail.
    serde_json::to_string_pretty(&view(s)).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// `/`: the page, as of `now` (for "12 s ago").
pub fn html(s: &Shared, now: SystemTime) -> String {
    let v = view(s);
    let since = |at: f64| ago(Duration::from_secs_f64((unix(now) - at).max(0.0)));
    let mut out = String::with_capacity(8 * 1024);
    let refresh = s.interval.as_secs().max(MIN_REFRESH_SECS);
    let class = match v.verdict {
        "healthy" => "ok",
        "unknown" => "unknown",
        _ => "bad",
    };
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{refresh}\">\
         <title>{} · CouchDB cluster</title><style>{STYLE}</style></head><body>\n\
         <h1>CouchDB cluster</h1>\n\
         <div id=\"verdict\" class=\"verdict {class}\"><strong>{}</strong><br>{}</div>\n",
        v.verdict,
        v.verdict.to_uppercase(),
        esc(&v.summary)
    );
    let looked = match &v.looked_at {
        Some(at) => format!(
            "last look {} ({} ago)",
            esc(&at.utc.replace('T', " ").replace('Z', " UTC")),
            since(at.unix)
        ),
        None => "no look finished yet".into(),
    };
    let _ = writeln!(
        out,
        "<p class=\"muted\">{looked}; one every {:.0?}; this page reloads every {refresh} s.</p>",
        s.interval
    );
    if let (Some(members), Some(up), Some(dbs), Some(below)) =
        (v.members, v.nodes_up, v.databases, v.ranges_below_n)
    {
        let _ = writeln!(
            out,
            "<p id=\"counts\"><b>{up}</b> of <b>{members}</b> members up (serving) · <b>{dbs}</b> databases · \
             <b>{below}</b> ranges below their copy count</p>"
        );
    }
    nodes_table(&mut out, &v.nodes);
    balance(&mut out, &v.nodes, v.imbalance);
    if let Some(problems) = v.problems.filter(|p| p.total > 0) {
        let _ = write!(
            out,
            "<h2>Problems ({})</h2>\n<ul id=\"problems\">",
            problems.total
        );
        list(&mut out, problems);
        out.push_str("</ul>\n");
    }
    below_n(&mut out, &v);
    backup(&mut out, v.backup.as_ref());
    out.push_str("<h2>Last changes</h2>\n");
    if v.changes.is_empty() {
        out.push_str("<p class=\"muted\">none since the watcher started</p>\n");
    } else {
        out.push_str("<ol id=\"changes\">");
        for c in &v.changes {
            let _ = write!(
                out,
                "<li{}><time datetime=\"{}\">{}</time> <span class=\"muted\">({} ago)</span> {}</li>",
                if c.warning { " class=\"warn\"" } else { "" },
                esc(&c.at.utc),
                esc(&c.at.utc.replace('T', " ").replace('Z', " UTC")),
                since(c.at.unix),
                esc(c.what)
            );
        }
        out.push_str("</ol>\n");
    }
    out.push_str(
        "<footer class=\"muted\">couchdb-cluster-init watch · <a href=\"/status.json\">status.json</a> · \
         <a href=\"/metrics\">metrics</a></footer>\n</body></html>\n",
    );
    out
}

const STYLE: &str =
    "body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;\
max-width:56rem;padding:.75rem;color:#1b1b1b;background:#fafafa}\
h1{font-size:1.2rem;margin:.2rem 0 .6rem}h2{font-size:1rem;margin:1.3rem 0 .4rem;\
border-bottom:1px solid #ddd;padding-bottom:.15rem}\
.verdict{padding:.7rem 1rem;border-radius:.4rem;color:#fff;overflow-wrap:anywhere}\
.verdict strong{font-size:1.25rem}.ok{background:#1a7f37}.bad{background:#c62828}\
.unknown{background:#666}.muted{color:#666}.warn{color:#b71c1c}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e6e6e6;vertical-align:top}\
td small{color:#666}.down{color:#c62828;font-weight:600}.drained{color:#a15c00;font-weight:600}\
.node{margin:.5rem 0}.name{overflow-wrap:anywhere}\
.row{display:flex;align-items:center;gap:.5rem;margin:.1rem 0}.row span{flex:none;width:7rem}\
.bar{flex:1;background:#e4e4e4;height:.85rem;border-radius:.2rem;overflow:hidden}\
.bar i{display:block;height:100%;background:#3566b0}.bar.bytes i{background:#7b57b9}\
code{font:.9em ui-monospace,monospace}ul,ol{padding-left:1.3rem;overflow-wrap:anywhere}li{margin:.15rem 0}footer{margin-top:1.5rem}";

fn nodes_table(out: &mut String, nodes: &[Node]) {
    out.push_str("<h2>Nodes</h2>\n");
    if nodes.is_empty() {
        out.push_str("<p class=\"muted\">not known: no look at the cluster succeeded</p>\n");
        return;
    }
    // Zone and version where known: a column only when some node has one.
    let zones = nodes.iter().any(|n| n.row.zone.is_some());
    let versions = nodes.iter().any(|n| n.row.version.is_some());
    out.push_str(
        "<div class=\"scroll\"><table id=\"nodes\"><tr><th>node</th><th>state</th><th>member</th>\
         <th>connected</th>",
    );
    if zones {
        out.push_str("<th>zone</th>");
    }
    if versions {
        out.push_str("<th>version</th>");
    }
    out.push_str("</tr>\n");
    for n in nodes {
        let r = n.row;
        let (class, state) = match (&r.maintenance, r.up) {
            // Its name unknown, so whether it is a member (`status`: "? (no answer)").
            _ if r.name.is_none() => ("down", "no answer".to_string()),
            (_, false) => ("down", "down".to_string()),
            (Some(mode), true) => ("drained", format!("drained (maintenance: {mode})")),
            (None, true) => ("up", "up".to_string()),
        };
        let _ = write!(
            out,
            "<tr data-node=\"{}\" data-state=\"{class}\"><td class=\"name\">{}{}</td>\
             <td class=\"{class}\">{}</td><td>{}</td><td>{}</td>",
            esc(r.label()),
            esc(r.label()),
            r.address
                .as_deref()
                .filter(|a| r.name.is_some() && Some(*a) != r.name.as_deref())
                .map_or(String::new(), |a| format!("<br><small>{}</small>", esc(a))),
            esc(&state),
            known(r, r.member),
            known(r, r.connected)
        );
        if zones {
            let _ = write!(out, "<td>{}</td>", esc(r.zone.as_deref().unwrap_or("–")));
        }
        if versions {
            let _ = write!(out, "<td>{}</td>", esc(r.version.as_deref().unwrap_or("–")));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></div>\n");
}

/// Copies and bytes per node as bars, each against the fullest node: the balance at a glance.
fn balance(out: &mut String, nodes: &[Node], imbalance: Option<&str>) {
    let held: Vec<&Node> = nodes.iter().filter(|n| n.copies.is_some()).collect();
    if held.is_empty() {
        return;
    }
    let most_copies = held.iter().filter_map(|n| n.copies).max().unwrap_or(0);
    let most_bytes = held.iter().filter_map(|n| n.bytes).max().unwrap_or(0);
    out.push_str("<h2>Balance: copies and bytes per node</h2>\n");
    if let Some(finding) = imbalance {
        let _ = writeln!(
            out,
            "<p id=\"imbalance\">{}; <code>rebalance</code> evens it out</p>",
            esc(finding)
        );
    }
    out.push_str("<div id=\"balance\">\n");
    for n in held {
        let copies = n.copies.unwrap_or(0);
        let _ = write!(
            out,
            "<div class=\"node\" data-node=\"{0}\"><div class=\"name\">{0}</div>\
             <div class=\"row\"><span>{copies} copies</span><div class=\"bar copies\" data-value=\"{copies}\">\
             <i style=\"width:{1}%\"></i></div></div>",
            esc(n.row.label()),
            percent(copies as u64, most_copies as u64)
        );
        if let Some(b) = n.bytes {
            let _ = write!(
                out,
                "<div class=\"row\"><span>{}</span><div class=\"bar bytes\" data-value=\"{b}\">\
                 <i style=\"width:{}%\"></i></div></div>",
                bytes(b),
                percent(b, most_bytes)
            );
        }
        out.push_str("</div>\n");
    }
    out.push_str("</div>\n");
}

fn below_n(out: &mut String, v: &View) {
    let Some(below) = v.ranges_below_n else {
        return;
    };
    out.push_str("<h2>Ranges below their copy count</h2>\n");
    if below == 0 {
        out.push_str(
            "<p id=\"below-n\">none: every range has its copies on members that are up</p>\n",
        );
        return;
    }
    let _ = writeln!(
        out,
        "<p id=\"below-n\"><b>{below}</b> range(s){}; <code>status</code> shows their copies:</p>",
        if v.ranges_below_n_by_database.len() >= PROBLEM_DBS {
            format!(", in these {PROBLEM_DBS} databases and more")
        } else {
            String::new()
        }
    );
    out.push_str("<table id=\"below-n-dbs\"><tr><th>database</th><th>ranges below n</th></tr>\n");
    for d in &v.ranges_below_n_by_database {
        let _ = writeln!(out, "<tr><td>{}</td><td>{}</td></tr>", esc(d.db), d.ranges);
    }
    out.push_str("</table>\n");
}

fn backup(out: &mut String, b: Option<&BackupView>) {
    out.push_str("<h2>Backup</h2>\n");
    let Some(b) = b else {
        out.push_str(
            "<p id=\"backup\" class=\"muted\">none watched (no COUCHDB_BACKUP_URL, or the cluster is not formed yet)</p>\n",
        );
        return;
    };
    let _ = write!(
        out,
        "<p id=\"backup\" class=\"{}\">",
        if b.failing { "warn" } else { "" }
    );
    if let Some(e) = b.error {
        let _ = write!(out, "<b>failing</b>: {}", esc(e));
    } else {
        let _ = write!(
            out,
            "<b>{}</b> documents behind · <b>{}</b> database(s) without their replication · {}",
            b.docs_behind.unwrap_or(0),
            b.unreplicated.unwrap_or(0),
            if b.failing {
                "<b>NOT in place</b>"
            } else {
                "in place"
            }
        );
    }
    out.push_str("</p>\n");
    if let Some(lines) = b.not_in_place.filter(|l| l.total > 0) {
        out.push_str("<ul>");
        list(out, lines);
        out.push_str("</ul>\n");
    }
}

fn list(out: &mut String, lines: &Lines) {
    for line in &lines.shown {
        let _ = write!(out, "<li>{}</li>", esc(line));
    }
    if lines.total > lines.shown.len() {
        let _ = write!(
            out,
            "<li class=\"muted\">and {} more (<code>status</code> lists them all)</li>",
            lines.total - lines.shown.len()
        );
    }
}

fn percent(value: u64, most: u64) -> u64 {
    match most {
        0 => 0,
        _ => (value * 100).div_ceil(most),
    }
}

/// `yes`/`no`, or `?` for a node whose name is not known.
fn known(r: &NodeRow, b: bool) -> &'static str {
    match (&r.name, b) {
        (None, _) => "?",
        (_, true) => "yes",
        (_, false) => "no",
    }
}

/// Text as HTML: the five characters that could end an element or an attribute.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::metrics::{BackupLag, Snapshot};
    use super::*;
    use std::time::{Duration, Instant};

    fn shared() -> Shared {
        Shared::new(Duration::from_secs(15), Duration::from_secs(300))
    }

    fn row(name: &str, up: bool) -> NodeRow {
        NodeRow {
            name: Some(name.into()),
            address: Some(name.trim_start_matches("couchdb@").into()),
            member: true,
            connected: up,
            up,
            ..NodeRow::default()
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Three members, the third one down, with its ranges below n.
    fn unhealthy() -> Shared {
        let mut s = shared();
        s.last_tick = Some((Instant::now(), at(1_780_564_577)));
        let names = ["couchdb@a.x", "couchdb@b.x", "couchdb@c.x"];
        s.snapshot = Some(Snapshot {
            healthy: false,
            members: 3,
            nodes_up: 2,
            databases: 4,
            ranges_below_n: 6,
            copies: names.iter().map(|n| (n.to_string(), 8)).collect(),
            bytes: [
                ("couchdb@a.x", 4000),
                ("couchdb@b.x", 2000),
                ("couchdb@c.x", 1000),
            ]
            .iter()
            .map(|(n, b)| (n.to_string(), *b))
            .collect(),
            problem_dbs: vec![("app".into(), 2)],
            nodes: vec![
                row(names[0], true),
                row(names[1], true),
                row(names[2], false),
            ],
            problems: Lines::of([
                "c.x (couchdb@c.x) does not answer: connection refused".to_string()
            ]),
            summary: "not healthy, 1 problem(s) (2 of 3 members up): c.x does not answer".into(),
            ..Snapshot::default()
        });
        s.record(at(1_780_564_500), true, "c.x does not answer");
        s
    }

    #[test]
    fn the_page_shows_the_verdict_each_node_and_the_balance() {
        let s = unhealthy();
        let page = html(&s, at(1_780_564_589));
        assert!(page.starts_with("<!doctype html>"), "{page}");
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"15\">"));
        assert!(
            page.contains("class=\"verdict bad\"><strong>NOT HEALTHY</strong>"),
            "{page}"
        );
        assert!(
            page.contains("2026-06-04 09:16:17 UTC (12 s ago)"),
            "{page}"
        );
        assert!(page.contains("<b>2</b> of <b>3</b> members up"), "{page}");
        assert!(
            page.contains("<tr data-node=\"couchdb@c.x\" data-state=\"down\">"),
            "{page}"
        );
        assert!(page.contains("<td class=\"down\">down</td>"), "{page}");
        // Bars against the fullest node: copies even, bytes 4:2:1.
        assert_eq!(
            page.matches("<i style=\"width:100%\">").count(),
            4,
            "{page}"
        );
        assert!(
            page.contains("data-value=\"2000\"><i style=\"width:50%\">"),
            "{page}"
        );
        assert!(
            page.contains("data-value=\"1000\"><i style=\"width:25%\">"),
            "{page}"
        );
        assert!(page.contains("<b>6</b> range(s)"), "{page}");
        assert!(page.contains("<td>app</td><td>2</td>"), "{page}");
        assert!(
            page.contains("<li class=\"warn\"><time datetime=\"2026-06-04T09:15:00Z\">"),
            "{page}"
        );
        assert!(
            page.contains("(89 s ago)</span> c.x does not answer"),
            "{page}"
        );
        // No script, no external asset, small.
        assert!(
            !page.contains("<script") && !page.contains("src="),
            "{page}"
        );
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "{page}"
        );
        assert!(page.len() < 16 * 1024, "{} bytes", page.len());
    }

    #[test]
    fn zone_and_version_columns_appear_where_known_and_say_dash_where_not() {
        let mut s = unhealthy();
        let page = html(&s, at(1_780_564_589));
        assert!(!page.contains("<th>zone</th>") && !page.contains("<th>version</th>"));
        let snap = s.snapshot.as_mut().unwrap();
        snap.nodes[0].zone = Some("eu-1a".into());
        snap.nodes[1].version = Some("3.4.2".into());
        let page = html(&s, at(1_780_564_589));
        assert!(page.contains("<th>zone</th><th>version</th>"), "{page}");
        assert!(page.contains("<td>eu-1a</td><td>–</td>"), "{page}");
        assert!(page.contains("<td>–</td><td>3.4.2</td>"), "{page}");
        let json = json(&s);
        assert!(json.contains("\"zone\": \"eu-1a\""), "{json}");
        assert!(json.contains("\"version\": null"), "{json}");
    }

    #[test]
    fn a_listed_node_that_never_answered_is_shown_by_its_address_membership_unknown() {
        let mut s = unhealthy();
        s.snapshot.as_mut().unwrap().nodes.push(NodeRow {
            address: Some("couchdb-4:5984".into()),
            ..NodeRow::default()
        });
        let page = html(&s, at(1_780_564_589));
        assert!(
            page.contains("<tr data-node=\"couchdb-4:5984\" data-state=\"down\"><td class=\"name\">couchdb-4:5984</td><td class=\"down\">no answer</td><td>?</td><td>?</td>"),
            "{page}"
        );
    }

    #[test]
    fn a_drained_node_is_up_and_says_drained() {
        let mut s = unhealthy();
        let snap = s.snapshot.as_mut().unwrap();
        snap.nodes[2] = NodeRow {
            maintenance: Some("nolb".into()),
            ..row("couchdb@c.x", true)
        };
        let page = html(&s, at(1_780_564_589));
        assert!(
            page.contains("data-state=\"drained\"><td class=\"name\">couchdb@c.x<br><small>c.x</small></td><td class=\"drained\">drained (maintenance: nolb)</td>"),
            "{page}"
        );
    }

    #[test]
    fn every_name_and_message_is_escaped() {
        let mut s = unhealthy();
        let evil = "<script>alert('x')</script>&\"";
        let snap = s.snapshot.as_mut().unwrap();
        snap.problem_dbs = vec![(evil.into(), 1)];
        snap.nodes[0].name = Some(evil.into());
        snap.copies.insert(evil.into(), 3);
        snap.problems = Lines::of([evil.to_string()]);
        snap.summary = evil.into();
        s.record(at(1), false, evil);
        let page = html(&s, at(1_780_564_589));
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("alert('x')"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"),
            "{page}"
        );
        let json: serde_json::Value = serde_json::from_str(&json(&s)).unwrap();
        assert_eq!(json["nodes"][0]["name"], evil);
    }

    #[test]
    fn before_the_first_look_and_after_a_failed_one_it_says_so() {
        let mut s = shared();
        let page = html(&s, at(100));
        assert!(page.contains("class=\"verdict unknown\"><strong>UNKNOWN</strong><br>the first look has not finished yet"), "{page}");
        assert!(page.contains("no look finished yet"), "{page}");
        s.look_error = Some("no node answers: a:5984 connection refused".into());
        s.last_tick = Some((Instant::now(), at(90)));
        let page = html(&s, at(100));
        assert!(page.contains("class=\"verdict bad\"><strong>NOT HEALTHY</strong><br>the last look failed: no node answers"), "{page}");
        assert!(
            page.contains("not known: no look at the cluster succeeded"),
            "{page}"
        );
        let json: serde_json::Value = serde_json::from_str(&json(&s)).unwrap();
        assert_eq!(json["verdict"], "not healthy");
        assert_eq!(json["healthy"], false);
        assert_eq!(json["members"], serde_json::Value::Null);
    }

    #[test]
    fn the_json_has_the_same_data() {
        let mut s = unhealthy();
        s.snapshot.as_mut().unwrap().backup = Some(BackupLag {
            unreplicated: 1,
            docs_behind: 12,
            not_in_place: Lines::of([
                "app: 0 of 12 documents, no database on the backup, no replication".to_string(),
            ]),
        });
        let j: serde_json::Value = serde_json::from_str(&json(&s)).unwrap();
        assert_eq!(j["verdict"], "not healthy");
        assert_eq!(j["looked_at"]["utc"], "2026-06-04T09:16:17Z");
        assert_eq!(j["members"], 3);
        assert_eq!(j["nodes_up"], 2);
        assert_eq!(j["ranges_below_n"], 6);
        assert_eq!(j["nodes"][2]["name"], "couchdb@c.x");
        assert_eq!(j["nodes"][2]["up"], false);
        assert_eq!(j["nodes"][2]["copies"], 8);
        assert_eq!(j["nodes"][0]["bytes"], 4000);
        assert_eq!(j["ranges_below_n_by_database"][0]["db"], "app");
        assert_eq!(j["backup"]["failing"], true);
        assert_eq!(j["backup"]["docs_behind"], 12);
        assert_eq!(j["backup"]["not_in_place"]["total"], 1);
        assert_eq!(j["changes"][0]["warning"], true);
        assert_eq!(j["changes"][0]["what"], "c.x does not answer");
        let page = html(&s, at(1_780_564_589));
        assert!(page.contains("<b>12</b> documents behind"), "{page}");
        assert!(page.contains("<b>NOT in place</b>"), "{page}");
    }

    #[test]
    fn the_lists_it_keeps_are_bounded() {
        let mut s = unhealthy();
        for i in 0..100 {
            s.record(at(i), false, &"x".repeat(10_000));
        }
        assert_eq!(s.changes.len(), super::super::metrics::CHANGES);
        assert!(s.changes.iter().all(|c| c.what.chars().count() <= 301));
        let lines = Lines::of((0..1000).map(|i| format!("problem {i}")));
        assert_eq!((lines.shown.len(), lines.total), (5, 1000));
        s.snapshot.as_mut().unwrap().problems = lines;
        let page = html(&s, at(1_780_564_589));
        assert!(
            page.contains("and 995 more (<code>status</code> lists them all)"),
            "{page}"
        );
        assert!(page.len() < 16 * 1024, "{} bytes", page.len());
    }
}
