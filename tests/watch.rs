//! `watch` on the simulator, with the real binary: it forms, joins a node that answers late,
//! writes nothing when there is nothing to do, publishes the verdict as metrics, stops cleanly
//! on SIGTERM, shares the cluster with a second watcher, and stops at a wrong password.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::watcher::{formed_with_backup, Watcher};
use common::{assert_formed, cluster, finish, spawn, writes};
use couchsim::Delays;

#[test]
fn forms_fresh_nodes_then_idle_ticks_write_nothing_and_log_nothing() {
    let c = cluster(3, |b| b);
    let w = Watcher::start(&c, &[]);
    w.until("couchdb_cluster_healthy", "1");
    assert_formed(&c);
    assert_eq!(w.metric("couchdb_cluster_members").as_deref(), Some("3"));
    let ticks = |w: &Watcher| -> u64 {
        w.metric("couchdb_watch_ticks_total")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before = ticks(&w);
    c.reset_counters();
    std::thread::sleep(Duration::from_millis(1500));
    let idle = ticks(&w) - before;
    assert!(idle >= 3, "only {idle} ticks");
    assert_eq!(c.count_writes(), 0, "idle ticks wrote: {:?}", writes(&c));
    for i in 0..3 {
        eprintln!(
            "node {i}: {:.1} GETs per idle tick",
            c.node(i).count("GET") as f64 / idle as f64
        );
    }
    let (code, _) = w.get("/healthz").unwrap();
    assert_eq!(code, 200);
    let r = w.stop();
    r.assert_code(0);
    // Formation logs one line at info; the idle ticks none; init's phases go to debug.
    let info: Vec<&str> = r.stderr.lines().filter(|l| l.contains("INFO")).collect();
    assert!(!r.stderr.contains("identify:"), "{}", r.stderr);
    assert!(
        info.iter()
            .filter(|l| l.contains("healthy: 3 members"))
            .count()
            == 1,
        "{}",
        r.stderr
    );
    assert!(info.len() <= 4, "too chatty:\n{}", r.stderr);
    r.assert_says(&["finished the cluster"]);
}

#[test]
fn a_node_that_answers_late_is_joined_on_a_later_tick() {
    let c = cluster(4, |b| b.configure(3, |n| n.stopped()));
    let w = Watcher::start(&c, &[("COUCHDB_EXPECT", "3")]);
    w.until("couchdb_cluster_members", "3");
    c.node(3).start();
    w.until("couchdb_cluster_members", "4");
    w.until("couchdb_cluster_healthy", "1");
    assert_formed(&c);
    let r = w.stop();
    r.assert_code(0);
    r.assert_says(&["joined", &c.node(3).name()]);
}

#[test]
fn before_expect_nodes_answer_it_waits_and_writes_nothing() {
    let c = cluster(3, |b| b.configure(2, |n| n.stopped()));
    let w = Watcher::start(&c, &[]);
    w.until_count("couchdb_watch_ticks_total", 3);
    assert_eq!(c.count_writes(), 0, "{:?}", writes(&c));
    assert_eq!(w.metric("couchdb_cluster_healthy").as_deref(), Some("0"));
    c.node(2).start();
    w.until("couchdb_cluster_healthy", "1");
    assert_formed(&c);
    let r = w.stop();
    r.assert_code(0);
    r.assert_says(&["waiting: 2 of COUCHDB_EXPECT=3 nodes answer"]);
}

#[test]
fn metrics_follow_a_member_stopped_and_started_again() {
    let c = cluster(3, |b| b);
    let w = Watcher::start(&c, &[]);
    w.until("couchdb_cluster_healthy", "1");
    // Bytes per node, from the copies' sizes read on the first tick and kept between readings.
    let (_, page) = w.get("/metrics").unwrap();
    for i in 0..3 {
        let series = format!("couchdb_node_bytes{{node=\"{}\"}} ", c.node(i).name());
        let bytes: u64 = page
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series}in\n{page}"));
        assert!(bytes > 0, "{series}is 0");
    }
    c.node(1).stop();
    w.until("couchdb_cluster_healthy", "0");
    assert_eq!(w.metric("couchdb_cluster_nodes_up").as_deref(), Some("2"));
    assert_eq!(w.metric("couchdb_cluster_members").as_deref(), Some("3"));
    let below: u64 = w
        .metric("couchdb_cluster_ranges_below_n")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(below > 0, "the stopped member's copies do not count");
    c.node(1).start();
    w.until("couchdb_cluster_healthy", "1");
    assert_eq!(
        w.metric("couchdb_cluster_ranges_below_n").as_deref(),
        Some("0")
    );
    let (_, page) = w.get("/metrics").unwrap();
    assert!(
        page.contains(&format!(
            "couchdb_node_copies{{node=\"{}\"}}",
            c.node(1).name()
        )),
        "{page}"
    );
    let r = w.stop();
    r.assert_code(0);
    r.assert_says(&["not healthy", "healthy: 3 members"]);
}

#[test]
fn sigterm_ends_it_with_exit_0_within_seconds() {
    let c = cluster(3, |b| b);
    // A long interval: the signal finds it asleep between ticks.
    let w = Watcher::start(&c, &[("COUCHDB_WATCH_INTERVAL", "1h")]);
    w.until("couchdb_cluster_healthy", "1");
    let r = w.stop();
    r.assert_code(0);
    // It sleeps in 100 ms slices: well under a second, given room for a loaded CI machine.
    assert!(r.took < Duration::from_secs(3), "took {:?}", r.took);
    r.assert_says(&["stopped by a signal"]);
}

#[test]
fn sigterm_during_a_wait_ends_it_too() {
    // A node with another cookie never connects: init's converge waits for it up to its
    // deadline (20 s here), and the signal comes during that wait.
    let c = cluster(3, |b| b.configure(2, |n| n.cookie("another-cookie")));
    let w = Watcher::start(&c, &[]);
    let t = Instant::now();
    while c.count_writes() == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "no join started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let r = w.stop();
    r.assert_code(0);
    assert!(r.took < Duration::from_secs(3), "took {:?}", r.took);
    r.assert_says(&["stopped by a signal"]);
    // Never finished on a partial membership (trap 1).
    assert_eq!(c.node(0).count("POST"), 0);
}

#[test]
fn two_watchers_at_once_end_in_one_cluster() {
    // Trap 22: the first `_nodes` write takes 100 ms and the other writes meanwhile lose.
    let c = cluster(5, |b| {
        b.delays(Delays {
            nodes_create: Duration::from_millis(100),
            ..Delays::fast()
        })
    });
    let (a, b) = (Watcher::start(&c, &[]), Watcher::start(&c, &[]));
    a.until("couchdb_cluster_healthy", "1");
    b.until("couchdb_cluster_healthy", "1");
    assert_formed(&c);
    let (a, b) = (a.stop(), b.stop());
    a.assert_code(0);
    b.assert_code(0);
}

#[test]
fn a_watcher_and_an_init_at_once_end_in_one_cluster() {
    let c = cluster(3, |b| {
        b.delays(Delays {
            nodes_create: Duration::from_millis(100),
            ..Delays::fast()
        })
    });
    let w = Watcher::start(&c, &[]);
    common::run(&c).assert_code(0);
    w.until("couchdb_cluster_healthy", "1");
    assert_formed(&c);
    w.stop().assert_code(0);
}

#[test]
fn a_wrong_password_ends_it_with_exit_4_at_once() {
    let c = cluster(3, |b| b);
    let w = Watcher::start(&c, &[("COUCHDB_PASSWORD", "wrong-password")]);
    let r = w.wait();
    common::assert_stopped_at_a_wrong_password(&c, &r);
}

#[test]
fn a_metrics_port_in_use_is_a_configuration_error() {
    let c = cluster(1, |b| b);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let r = finish(spawn(&c, &["watch"], &[("COUCHDB_METRICS_ADDR", &addr)]));
    r.assert_code(2);
    r.assert_says(&["COUCHDB_METRICS_ADDR"]);
}

#[test]
fn config_drift_is_repaired_on_the_next_tick() {
    let c = cluster(3, |b| b);
    common::run(&c).assert_code(0);
    let w = Watcher::start(&c, &[]);
    w.until("couchdb_cluster_healthy", "1");
    c.node(1).rehash_admin();
    let t = Instant::now();
    while c.node(1).config("admins", "admin") != c.node(0).config("admins", "admin") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "drift never repaired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    w.until("couchdb_cluster_healthy", "1");
    let r = w.stop();
    r.assert_code(0);
    r.assert_says(&["repaired config drift"]);
}

#[test]
fn zones_are_written_published_and_their_drift_repaired() {
    // Four nodes, zones a, a, b, c; `old` made before the zones with both ranges on node1–3
    // (zones a, a, b): two ranges share zone a.
    let c = cluster(4, |b| b);
    common::run(&c).assert_code(0);
    let names: Vec<String> = (0..4).map(|i| c.node(i).name()).collect();
    let on_first_three: std::collections::BTreeMap<String, Vec<String>> =
        ["00000000-7fffffff", "80000000-ffffffff"]
            .iter()
            .map(|r| (r.to_string(), names[..3].to_vec()))
            .collect();
    c.pin_placement("old", Some(on_first_three), None);
    c.node(0).create_db("old");
    let zones: Vec<String> = ["a", "a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, z)| format!("{}={z}", common::label(&c, i)))
        .collect();
    let zones = zones.join(",");
    let w = Watcher::start(&c, &[("COUCHDB_ZONES", &zones)]);
    w.until("couchdb_cluster_healthy", "1");
    // What `status` names (`_users` and `_replicator`, made before the zones, may share too).
    let status = common::run_args(&c, &["status", "--json"], &[("COUCHDB_ZONES", &zones)]);
    status.assert_code(0);
    let j: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let shared = j["zones_shared"].as_array().unwrap();
    assert_eq!(
        shared.iter().filter(|s| s["db"] == "old").count(),
        2,
        "{shared:?}"
    );
    w.until(
        "couchdb_cluster_ranges_zone_shared",
        &shared.len().to_string(),
    );
    let (_, page) = w.get("/metrics").unwrap();
    for (name, zone) in names.iter().zip(["a", "a", "b", "c"]) {
        let line = format!("couchdb_node_zone_info{{node=\"{name}\",zone=\"{zone}\"}} 1");
        assert!(page.lines().any(|l| l == line), "no `{line}` in\n{page}");
    }
    // The status page and its JSON show each member's zone.
    let (_, json) = w.get("/status.json").unwrap();
    let j: serde_json::Value = serde_json::from_str(&json).unwrap();
    for (name, zone) in names.iter().zip(["a", "a", "b", "c"]) {
        let row = j["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == *name);
        assert_eq!(row.map(|n| n["zone"].clone()), Some(zone.into()), "{json}");
    }
    let (_, html) = w.get("/").unwrap();
    assert!(html.contains("<th>zone</th>"), "{html}");
    // Someone changes one node's placement: the next tick puts the rule back.
    c.node(2).set_config("cluster", "placement", "a:3");
    let t = Instant::now();
    while c.node(2).config("cluster", "placement").as_deref() != Some("a:1,b:1,c:1") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "placement drift never repaired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    w.until("couchdb_cluster_healthy", "1");
    let r = w.stop();
    r.assert_code(0);
    r.assert_says(&[
        "set [cluster] placement a:1,b:1,c:1 on 4 node(s)",
        "set [cluster] placement a:1,b:1,c:1 on 1 node(s)",
    ]);
}

#[test]
fn with_a_backup_a_database_created_later_is_backed_up_and_its_lag_published() {
    const USER: &str = "backup-admin";
    const PASSWORD: &str = "bk-Vw7-never-logged";
    let (c, backup) = formed_with_backup(USER, PASSWORD);
    let w = Watcher::start_with_backup(&c, &backup, (USER, PASSWORD), &[]);
    w.until("couchdb_backup_databases_unreplicated", "0");
    w.until("couchdb_backup_docs_behind", "0");
    c.node(0).create_db("later");
    c.node(0).write_docs("later", &["l1", "l2", "l3"]);
    let t = Instant::now();
    while backup.node(0).doc_ids("later").map_or(0, |ids| ids.len()) < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "later never backed up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    w.until("couchdb_backup_docs_behind", "0");
    w.until("couchdb_backup_databases_unreplicated", "0");
    // A `_security` changed on the cluster reaches the backup on a later tick.
    let members = serde_json::json!({"members": {"names": ["alice"], "roles": []}});
    assert_eq!(common::put_json(c.node(1), "/app/_security", &members), 200);
    let t = Instant::now();
    loop {
        let (status, body) = common::http(
            backup.node(0),
            "GET",
            "/app/_security",
            Some((USER, PASSWORD)),
            None,
        );
        if status == 200 && body["members"]["names"] == serde_json::json!(["alice"]) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "_security never reached the backup: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = w.stop();
    r.assert_code(0);
    r.assert_says(&[
        "started 1 replication(s)",
        "wrote _security of 1 database(s)",
    ]);
    assert!(!r.stderr.contains(PASSWORD) && !r.stderr.contains(common::PASSWORD));
}

#[test]
fn a_wrong_backup_password_ends_it_with_exit_4() {
    let c = cluster(3, |b| b);
    common::run(&c).assert_code(0);
    let backup = cluster(1, |b| {
        b.admin("backup-admin", "right")
            .seed(0xBAC)
            .configure(0, |n| n.name("couchdb@backup.example"))
    });
    let url = backup.node(0).url();
    let r = Watcher::start(
        &c,
        &[
            ("COUCHDB_BACKUP_URL", &url),
            ("COUCHDB_BACKUP_USER", "backup-admin"),
            ("COUCHDB_BACKUP_PASSWORD", "wrong"),
        ],
    )
    .wait();
    r.assert_code(4);
    r.assert_says(&["COUCHDB_BACKUP"]);
    assert_eq!(common::authenticated(backup.node(0)), 1);
}

#[test]
fn a_new_node_waits_while_a_member_does_not_answer() {
    let c = cluster(4, |b| b.configure(3, |n| n.stopped()));
    let w = Watcher::start(&c, &[("COUCHDB_EXPECT", "3")]);
    w.until("couchdb_cluster_members", "3");
    w.until("couchdb_cluster_nodes_up", "3");
    c.node(1).stop();
    w.until("couchdb_cluster_nodes_up", "2");
    c.reset_counters();
    c.node(3).start();
    let ticks: u64 = w
        .metric("couchdb_watch_ticks_total")
        .unwrap()
        .parse()
        .unwrap();
    w.until_count("couchdb_watch_ticks_total", ticks + 3);
    assert_eq!(
        c.count_writes(),
        0,
        "joined around a stopped member: {:?}",
        writes(&c)
    );
    assert_eq!(w.metric("couchdb_cluster_members").as_deref(), Some("3"));
    c.node(1).start();
    w.until("couchdb_cluster_members", "4");
    w.until("couchdb_cluster_healthy", "1");
    assert_formed(&c);
    let r = w.stop();
    r.assert_code(0);
    r.assert_says(&["waits until every member answers", &c.node(1).name()]);
}

#[test]
fn the_status_page_and_its_json_show_the_last_look_and_cost_the_nodes_nothing() {
    let c = cluster(3, |b| b);
    common::run(&c).assert_code(0);
    c.node(0).create_db("app");
    // A long interval: between two looks, only the page is asked for.
    let w = Watcher::start(&c, &[("COUCHDB_WATCH_INTERVAL", "1h")]);
    w.until("couchdb_cluster_healthy", "1");
    c.reset_counters();
    for _ in 0..5 {
        let (code, page) = w.get("/").unwrap();
        assert_eq!(code, 200);
        assert!(
            page.contains("<strong>HEALTHY</strong><br>healthy: 3 members, all up"),
            "{page}"
        );
        for i in 0..3 {
            let name = c.node(i).name();
            assert!(
                page.contains(&format!("<tr data-node=\"{name}\" data-state=\"up\">")),
                "{page}"
            );
            assert!(page.contains(&format!("class=\"node\" data-node=\"{name}\"")));
        }
        assert!(
            page.contains("<ol id=\"changes\"><li>"),
            "the change is listed: {page}"
        );
        let (code, json) = w.get("/status.json").unwrap();
        assert_eq!(code, 200);
        let j: serde_json::Value = serde_json::from_str(&json).expect(&json);
        assert_eq!(j["verdict"], "healthy");
        assert_eq!(j["members"], 3);
        assert_eq!(j["nodes"].as_array().map(Vec::len), Some(3));
        assert!(j["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["up"] == true
                && n["member"] == true
                && n["copies"].as_u64() > Some(0)
                && n["bytes"].as_u64() > Some(0)));
    }
    assert_eq!(
        c.requests().len(),
        0,
        "the page asked the nodes: {:?}",
        c.requests()
    );
    assert_eq!(w.get("/nothing").map(|(code, _)| code), Some(404));
    w.stop().assert_code(0);
}

#[test]
fn the_page_follows_a_member_stopped_and_never_shows_a_secret_at_trace_level() {
    const USER: &str = "backup-admin";
    const BACKUP_PASSWORD: &str = "bk-Pg4-never-logged";
    let (c, backup) = formed_with_backup(USER, BACKUP_PASSWORD);
    let w = Watcher::start_with_backup(
        &c,
        &backup,
        (USER, BACKUP_PASSWORD),
        &[("RUST_LOG", "trace")],
    );
    w.until("couchdb_backup_failing", "0");
    let mut seen = Vec::new();
    let mut look = |w: &Watcher| {
        for path in ["/", "/status.json", "/metrics"] {
            let (code, body) = w.get(path).unwrap();
            assert_eq!(code, 200, "{path}");
            seen.push(body.clone());
        }
        seen.last().cloned().unwrap()
    };
    look(&w);
    let stopped = c.node(2).name();
    c.node(2).stop();
    w.until("couchdb_cluster_healthy", "0");
    let (_, page) = w.get("/").unwrap();
    assert!(page.contains("<strong>NOT HEALTHY</strong>"), "{page}");
    assert!(
        page.contains(&format!("<tr data-node=\"{stopped}\" data-state=\"down\">")),
        "{page}"
    );
    let metrics = look(&w);
    assert!(
        metrics.contains(&format!("couchdb_node_up{{node=\"{stopped}\"}} 0")),
        "{metrics}"
    );
    c.node(2).start();
    w.until("couchdb_cluster_healthy", "1");
    let (_, page) = w.get("/").unwrap();
    // Newest first: back to healthy, then the stop.
    let healthy_again = page.find("healthy: 3 members, all up").unwrap();
    let not_healthy = page.find("not healthy, ").expect(&page);
    assert!(healthy_again < not_healthy, "{page}");
    look(&w);
    let r = w.stop();
    r.assert_code(0);
    let secrets = [
        common::PASSWORD,
        common::COOKIE,
        BACKUP_PASSWORD,
        &common::authorization()["Basic ".len()..],
    ];
    for body in seen.iter().chain([&r.stderr]) {
        for secret in secrets {
            assert!(!body.contains(secret), "a secret in:\n{body}");
        }
        assert!(
            !body.contains("AuthSession"),
            "a session cookie in:\n{body}"
        );
        assert!(
            !body.contains(&format!("{USER}:")),
            "credentials in:\n{body}"
        );
    }
    assert!(r.stderr.contains("TRACE"), "not at trace level");
}

#[test]
fn a_drained_member_is_up_in_the_metrics_and_drained_on_the_page() {
    let c = cluster(3, |b| b);
    common::run(&c).assert_code(0);
    let w = Watcher::start(&c, &[]);
    w.until("couchdb_cluster_healthy", "1");
    let drained = c.node(1).name();
    c.node(1)
        .inject(couchsim::Fault::Maintenance("nolb".into()));
    w.until("couchdb_cluster_nodes_up", "2");
    let (_, metrics) = w.get("/metrics").unwrap();
    assert!(
        metrics.contains(&format!("couchdb_node_up{{node=\"{drained}\"}} 1")),
        "a drained node is not down:\n{metrics}"
    );
    let (_, page) = w.get("/").unwrap();
    assert!(
        page.contains(&format!(
            "<tr data-node=\"{drained}\" data-state=\"drained\">"
        )),
        "{page}"
    );
    assert!(page.contains("drained (maintenance: nolb)"), "{page}");
    let (_, json) = w.get("/status.json").unwrap();
    let j: serde_json::Value = serde_json::from_str(&json).unwrap();
    let row = j["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == drained.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        (row["up"].clone(), row["maintenance"].clone()),
        (true.into(), "nolb".into())
    );
    w.stop().assert_code(0);
}

#[test]
fn security_findings_are_exported_and_kept_between_readings() {
    let c = cluster(3, |b| b);
    let w = Watcher::start(&c, &[("COUCHDB_COOKIE", "weak")]);
    w.until("couchdb_cluster_healthy", "1");
    // Read with the sizes (the first tick, then every 20th): the plain distribution and the
    // weak cookie; published again by the ticks in between.
    w.until("couchdb_security_findings", "2");
    let ticks: u64 = w
        .metric("couchdb_watch_ticks_total")
        .unwrap()
        .parse()
        .unwrap();
    w.until_count("couchdb_watch_ticks_total", ticks + 2);
    let (_, page) = w.get("/metrics").unwrap();
    for line in [
        "couchdb_security_findings 2",
        "couchdb_security_finding{kind=\"cookie_weak\"} 1",
        "couchdb_security_finding{kind=\"dist_cleartext\"} 1",
    ] {
        assert!(page.lines().any(|l| l == line), "no `{line}` in\n{page}");
    }
    let r = w.stop();
    r.assert_code(0);
    assert!(!r.stderr.contains("weak\""), "{}", r.stderr);
    r.assert_says(&["watch: security: 2 finding(s): cookie_weak, dist_cleartext"]);
}
