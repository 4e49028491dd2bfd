//! The status page, the alert rules and the dashboard with the real things, over a simulated
//! cluster and the real binary's `watch`:
//!
//! - a real Prometheus server (Debian's `prometheus`) runs monitoring/prometheus.yml (its target,
//!   rules path and intervals changed), scrapes the watcher and loads monitoring/rules.yml; every
//!   query of monitoring/dashboard.json returns data through its HTTP API; a drained member
//!   raises no member-down alert; a stopped one makes it go pending;
//! - headless Chromium (Debian's `chromium`) loads the status page, healthy and with a member
//!   stopped; the rendered DOM shows the verdict and a bar per node, and screenshots are taken
//!   (MONITORING_SCREENSHOTS=DIR keeps them there: docs/img/ holds the ones docs/watch.md shows).
//!
//! Ignored by a plain `cargo test` (they need both programs): `tests/monitoring/run.sh` runs
//! them, and .ci/run installs the pinned packages first. PROMETHEUS and CHROMIUM name other
//! binaries. Every process runs in a process group of its own, killed by that id, and every file
//! lives in one temporary directory, removed pass or fail.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::watcher::{formed_with_backup, free_port, Watcher};
use common::{cluster, run};
use couchsim::Fault;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A directory of its own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "cci-monitoring-{what}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process in its own process group (Chromium starts helpers): killed by that group's id.
struct Group(Child);

impl Group {
    fn spawn(cmd: &mut Command) -> Group {
        let name = format!("{:?}", cmd.get_program());
        Group(
            cmd.process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {name}: {e}")),
        )
    }

    /// Waits at most `limit` for it to exit by itself: its exit status, or `None` (then killed).
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

fn tool(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// Until `f` gives something, at most `limit`: what it gave.
fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---- Prometheus ----------------------------------------------------------------------------

struct Prometheus {
    _process: Group,
    port: u16,
    log: PathBuf,
}

impl Prometheus {
    /// monitoring/prometheus.yml with the watcher on `target`, the rules at their path here,
    /// and a scrape and an evaluation every second.
    fn start(dir: &Path, target: u16) -> Prometheus {
        let shipped = std::fs::read_to_string(format!("{ROOT}/monitoring/prometheus.yml"))
            .expect("monitoring/prometheus.yml");
        let mut config = shipped.clone();
        for (from, to) in [
            ("couchdb-cluster-watch:9985", format!("127.0.0.1:{target}")),
            (
                "/etc/prometheus/rules.yml",
                format!("{ROOT}/monitoring/rules.yml"),
            ),
            ("scrape_interval: 15s", "scrape_interval: 1s".into()),
            ("evaluation_interval: 15s", "evaluation_interval: 1s".into()),
        ] {
            assert!(
                config.contains(from),
                "no `{from}` in monitoring/prometheus.yml"
            );
            config = config.replace(from, &to);
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("write the config");
        let port = free_port();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("the log file");
        let process = Group::spawn(
            Command::new(tool("PROMETHEUS", "prometheus"))
                .arg(format!("--config.file={}", file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(out.try_clone().expect("the log file"))
                .stderr(out),
        );
        let p = Prometheus {
            _process: process,
            port,
            log,
        };
        until("Prometheus ready", Duration::from_secs(60), || {
            ureq::get(&p.url("/-/ready")).call().ok()
        });
        p
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn api(&self, path: &str, query: Option<&str>) -> Value {
        let mut req = ureq::get(&self.url(path));
        if let Some(q) = query {
            req = req.query("query", q);
        }
        let mut answer = req
            .call()
            .unwrap_or_else(|e| panic!("{path} {query:?}: {e}\n{}", self.log()));
        let v: Value = answer.body_mut().read_json().expect("JSON");
        assert_eq!(v["status"], "success", "{path} {query:?}: {v}");
        v["data"].clone()
    }

    /// An instant query's series.
    fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("/api/v1/query", Some(expr));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The one value of an instant query that gives one series.
    fn value(&self, expr: &str) -> Option<String> {
        match self.query(expr).as_slice() {
            [one] => one["value"][1].as_str().map(String::from),
            _ => None,
        }
    }

    /// (name, state, node label) of every alert pending or firing.
    fn alerts(&self) -> Vec<(String, String, String)> {
        self.api("/api/v1/alerts", None)["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let label = |k: &str| a["labels"][k].as_str().unwrap_or("").to_string();
                (
                    label("alertname"),
                    a["state"].as_str().unwrap_or("").into(),
                    label("node"),
                )
            })
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Every query of monitoring/dashboard.json's panels (rows' panels too), with its panel's title;
/// `$instance` (the watcher picker) as "All" selects it.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("{ROOT}/monitoring/dashboard.json"))
        .expect("monitoring/dashboard.json");
    let dash: Value = serde_json::from_str(&text).expect("dashboard.json is JSON");
    let mut found = Vec::new();
    let mut panels: Vec<Value> = dash["panels"].as_array().cloned().unwrap_or_default();
    while let Some(p) = panels.pop() {
        panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("a target's expr");
            found.push((
                p["title"].as_str().unwrap_or("?").to_string(),
                expr.replace("$instance", ".+"),
            ));
        }
    }
    assert!(found.len() >= 10, "only {} queries", found.len());
    found
}

/// The alert names monitoring/rules.yml defines.
fn alert_names() -> Vec<String> {
    std::fs::read_to_string(format!("{ROOT}/monitoring/rules.yml"))
        .expect("monitoring/rules.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: ").map(String::from))
        .collect()
}

#[test]
#[ignore = "needs Debian's prometheus: tests/monitoring/run.sh"]
fn prometheus_scrapes_the_watcher_every_panel_has_data_and_a_stopped_member_goes_pending() {
    let dir = TempDir::new("prometheus");
    let admin = ("backup-admin", "bk-Tq2-never-logged");
    let (c, backup) = formed_with_backup(admin.0, admin.1);
    c.node(0).create_db("orders");
    c.node(0).write_docs("orders", &["a", "b", "c"]);
    let w = Watcher::start_with_backup(&c, &backup, admin, &[("COUCHDB_WATCH_INTERVAL", "1s")]);
    w.until("couchdb_backup_failing", "0");
    let p = Prometheus::start(&dir.0, w.port);
    let limit = Duration::from_secs(60);

    until("the watcher scraped, the cluster healthy", limit, || {
        (p.value("up{job=\"couchdb-cluster-init-watch\"}").as_deref() == Some("1")
            && p.value("couchdb_cluster_healthy").as_deref() == Some("1"))
        .then_some(())
    });
    // Every rule loaded and evaluated without error.
    let names = alert_names();
    assert_eq!(names.len(), 9, "{names:?}");
    let rules = until("every rule evaluated", limit, || {
        let groups = p.api("/api/v1/rules", None)["groups"].clone();
        let rules: Vec<Value> = groups
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules.iter().all(|r| r["health"] == "ok").then_some(rules)
    });
    let loaded: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(loaded, names, "Prometheus loaded other rules");
    // Healthy: nothing pending, nothing firing (what pended while the first looks ran, resolved).
    until("no alert on a healthy cluster", limit, || {
        p.alerts().is_empty().then_some(())
    });

    // A drained member (maintenance mode) is up: no member-down alert for it.
    let drained = c.node(1).name();
    c.node(1).inject(Fault::Maintenance("nolb".into()));
    // (`nolb` is what `drain` sets: a finding, not a problem, so the cluster stays healthy.)
    until("the drained member seen", limit, || {
        (p.value(&format!("couchdb_node_maintenance{{node=\"{drained}\"}}"))
            .as_deref()
            == Some("1")
            && p.value(&format!("couchdb_node_up{{node=\"{drained}\"}}"))
                .as_deref()
                == Some("1"))
        .then_some(())
    });
    for _ in 0..5 {
        let alerts = p.alerts();
        assert!(
            !alerts
                .iter()
                .any(|(name, _, _)| name == "CouchDBMemberDown"),
            "a drained member raised {alerts:?}"
        );
        std::thread::sleep(Duration::from_millis(600));
    }
    c.node(1).clear_faults();
    until("the drain over", limit, || {
        (p.value(&format!("couchdb_node_maintenance{{node=\"{drained}\"}}"))
            .as_deref()
            == Some("0")
            && p.value("couchdb_cluster_healthy").as_deref() == Some("1"))
        .then_some(())
    });

    // A stopped member: its ranges below n, every panel has data, member-down goes pending.
    let stopped = c.node(2).name();
    c.node(2).stop();
    until("the member-down alert pending", limit, || {
        p.alerts()
            .iter()
            .any(|(name, state, node)| {
                name == "CouchDBMemberDown" && state == "pending" && *node == stopped
            })
            .then_some(())
    });
    for (title, expr) in dashboard_queries() {
        let series = until(&format!("data for `{title}`: {expr}"), limit, || {
            Some(p.query(&expr)).filter(|s| !s.is_empty())
        });
        eprintln!("panel `{title}`: {expr} → {} series", series.len());
    }
    let alerts = p.alerts();
    assert!(
        alerts
            .iter()
            .all(|(name, _, node)| name != "CouchDBMemberDown" || *node == stopped),
        "{alerts:?}"
    );
    eprintln!("alerts with {stopped} stopped: {alerts:?}");
    w.stop().assert_code(0);
}

// ---- Chromium ------------------------------------------------------------------------------

/// Headless Chromium at `url`: `--dump-dom` (the DOM once loaded), or a screenshot into `png`.
fn chromium(dir: &Path, url: &str, png: Option<(&Path, &str)>) -> String {
    let profile = dir.join(format!(
        "profile-{}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let mut cmd = Command::new(tool("CHROMIUM", "chromium"));
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match png {
        Some((file, size)) => {
            cmd.arg(format!("--screenshot={}", file.display()))
                .arg(format!("--window-size={size}"));
        }
        None => {
            cmd.arg("--dump-dom");
        }
    }
    let out = dir.join("chromium.out");
    let err = dir.join("chromium.err");
    cmd.arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("a file"))
        .stderr(std::fs::File::create(&err).expect("a file"));
    let mut chromium = Group::spawn(&mut cmd);
    let status = chromium.wait(Duration::from_secs(90));
    drop(chromium);
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "chromium: {status:?}\n{stderr}"
    );
    std::fs::read_to_string(&out).unwrap_or_default()
}

/// The rendered balance: node → (copies, the bar's width in %), from the DOM.
fn bars(dom: &str) -> Vec<(String, u64, u64)> {
    let mut found = Vec::new();
    for part in dom.split("<div class=\"node\" data-node=\"").skip(1) {
        let node = part.split('"').next().unwrap_or("").to_string();
        let after = |pat: &str| -> Option<u64> {
            let rest = &part[part.find(pat)? + pat.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        let copies = after("class=\"bar copies\" data-value=\"").expect("a copies bar");
        let width = after("<i style=\"width:").expect("a bar width");
        found.push((node, copies, width));
    }
    found
}

/// The verdict's text, from the DOM.
fn verdict(dom: &str) -> String {
    let at = dom.find("id=\"verdict\"").expect("a verdict");
    let rest = &dom[at..];
    let strong = rest.find("<strong>").expect("<strong>") + "<strong>".len();
    rest[strong..rest.find("</strong>").expect("</strong>")].to_string()
}

fn screenshot(dir: &Path, url: &str, name: &str) {
    let keep = std::env::var("MONITORING_SCREENSHOTS")
        .ok()
        .map(PathBuf::from);
    let file = keep.unwrap_or_else(|| dir.to_path_buf()).join(name);
    chromium(dir, url, Some((&file, "480,1400")));
    let png = std::fs::read(&file).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is no PNG");
    assert!(png.len() > 10_000, "{name}: {} bytes, blank?", png.len());
    eprintln!("screenshot {} ({} KB)", file.display(), png.len() / 1024);
}

#[test]
#[ignore = "needs Debian's chromium: tests/monitoring/run.sh"]
fn chromium_renders_the_status_page_healthy_and_with_a_member_stopped() {
    let dir = TempDir::new("chromium");
    // Three nodes with some databases, then a fourth joined by the watcher: it holds none of
    // them yet (the balance `rebalance` would even out) — a healthy cluster.
    let mut c = cluster(3, |b| b);
    run(&c).assert_code(0);
    for (i, db) in ["accounts", "orders", "invoices", "sessions", "audit"]
        .iter()
        .enumerate()
    {
        assert!(c.node(0).create_db_q_n(db, 2, 3), "{db}");
        let ids: Vec<String> = (0..(i + 1) * 40).map(|d| format!("doc{d:04}")).collect();
        c.node(0).write_docs(db, &ids);
    }
    c.add_node(|s| s);
    let w = Watcher::start(&c, &[("COUCHDB_WATCH_INTERVAL", "1s")]);
    w.until("couchdb_cluster_members", "4");
    w.until("couchdb_cluster_healthy", "1");
    let url = format!("http://127.0.0.1:{}/", w.port);

    let (_, sent) = w.get("/").expect("the page");
    eprintln!("the page: {} bytes", sent.len());
    let dom = chromium(&dir.0, &url, None);
    assert!(dom.contains("</html>"), "{dom}");
    assert_eq!(verdict(&dom), "HEALTHY", "{dom}");
    let healthy = bars(&dom);
    assert_eq!(healthy.len(), 4, "a bar per node: {healthy:?}");
    let most = healthy.iter().map(|b| b.1).max().unwrap();
    for (node, copies, width) in &healthy {
        assert_eq!(*width, (copies * 100).div_ceil(most), "{node}'s bar");
    }
    let newest = c.node(3).name();
    let (_, copies, width) = healthy.iter().find(|b| b.0 == newest).unwrap();
    assert!(
        *copies < most && *width < 100,
        "the new node holds fewer: {healthy:?}"
    );
    screenshot(&dir.0, &url, "watch-page-healthy.png");

    let stopped = c.node(2).name();
    c.node(2).stop();
    w.until("couchdb_cluster_healthy", "0");
    let dom = chromium(&dir.0, &url, None);
    assert_eq!(verdict(&dom), "NOT HEALTHY", "{dom}");
    assert!(
        dom.contains(&format!("<tr data-node=\"{stopped}\" data-state=\"down\">")),
        "{dom}"
    );
    assert!(
        dom.contains("id=\"below-n-dbs\""),
        "the ranges below n listed: {dom}"
    );
    assert_eq!(bars(&dom).len(), 4, "{dom}");
    screenshot(&dir.0, &url, "watch-page-node-stopped.png");
    // The same node in /status.json (docs/watch.md quotes it).
    let (_, json) = w.get("/status.json").expect("/status.json");
    let j: Value = serde_json::from_str(&json).expect("JSON");
    let row = j["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == stopped.as_str()))
        .cloned()
        .expect("the stopped node in /status.json");
    assert_eq!(
        (row["up"].clone(), row["member"].clone()),
        (false.into(), true.into())
    );
    eprintln!("/status.json, {stopped}: {row:#}");
    w.stop().assert_code(0);
}
