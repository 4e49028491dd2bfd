//! `watch` on the simulator, with the real binary: it forms, joins a node that answers late,
//! writes nothing when there is nothing to do, publishes the verdict as metrics, stops cleanly
//! on SIGTERM, shares the cluster with a second watcher, and stops at a wrong password.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{assert_formed, cluster, finish, spawn, writes, Run};
use couchsim::{Cluster, Delays};

const INTERVAL: &str = "200ms";

/// A port nobody listens on now (the system's pick, released for the watcher).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

struct Watcher {
    run: Option<(Child, Instant)>,
    port: u16,
}

impl Watcher {
    fn start(c: &Cluster, env: &[(&str, &str)]) -> Watcher {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut all: Vec<(&str, &str)> = vec![
            ("COUCHDB_WATCH_INTERVAL", INTERVAL),
            ("COUCHDB_METRICS_ADDR", &addr),
        ];
        all.extend_from_slice(env);
        Watcher {
            run: Some(spawn(c, &["watch"], &all)),
            port,
        }
    }

    /// `GET path` on the metrics port: (status, body); `None` while nothing listens.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        let status = answer.split_whitespace().nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    }

    /// The value of one unlabelled series, as its line says it.
    fn metric(&self, name: &str) -> Option<String> {
        let (_, page) = self.get("/metrics")?;
        page.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
    }

    /// Waits (at most 20 s) until `name` reads `value`.
    fn until(&self, name: &str, value: &str) {
        let t = Instant::now();
        while self.metric(name).as_deref() != Some(value) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{name} never became {value}; page:\n{}",
                self.get("/metrics").map(|(_, p)| p).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most 20 s) until the counter `name` reaches `at_least`.
    fn until_count(&self, name: &str, at_least: u64) {
        let t = Instant::now();
        while self
            .metric(name)
            .and_then(|v| v.parse::<u64>().ok())
            .is_none_or(|v| v < at_least)
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{name} never reached {at_least}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the run; `took` is from the signal.
    fn stop(mut self) -> Run {
        let (child, _) = self.run.take().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        finish((child, Instant::now()))
    }

    fn wait(mut self) -> Run {
        finish(self.run.take().expect("running"))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some((child, _)) = &mut self.run {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

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
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // A long interval: the signal finds it asleep between ticks.
    let w = Watcher {
        run: Some(spawn(
            &c,
            &["watch"],
            &[
                ("COUCHDB_WATCH_INTERVAL", "1h"),
                ("COUCHDB_METRICS_ADDR", &addr),
            ],
        )),
        port,
    };
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
fn with_a_backup_a_database_created_later_is_backed_up_and_its_lag_published() {
    const USER: &str = "backup-admin";
    const PASSWORD: &str = "bk-Vw7-never-logged";
    let c = cluster(3, |b| b);
    common::run(&c).assert_code(0);
    let backup = cluster(1, |b| {
        b.admin(USER, PASSWORD)
            .seed(0xBAC)
            .configure(0, |n| n.name("couchdb@backup.example"))
    });
    let url = backup.node(0).url();
    c.node(0).create_db("app");
    c.node(0).write_docs("app", &["a1", "a2"]);
    let w = Watcher::start(
        &c,
        &[
            ("COUCHDB_BACKUP_URL", &url),
            ("COUCHDB_BACKUP_USER", USER),
            ("COUCHDB_BACKUP_PASSWORD", PASSWORD),
        ],
    );
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
