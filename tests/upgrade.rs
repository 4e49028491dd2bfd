//! `drain`, `undrain` and a rolling upgrade, with the real binary against the simulator: the
//! refusals (nothing written), the load balancer's proof, the wait for a returning node's
//! copies to catch up, the named failures, versions and the drained state in `status` and
//! `watch`, and every command on a cluster of mixed releases.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lb::Lb;
use common::{cluster, http, label, run, run_args, writes, Run, PASSWORD};
use couchsim::{Cluster, Delays, Version};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", PASSWORD);
const R0: &str = "00000000-7fffffff";
const R1: &str = "80000000-ffffffff";

/// A formed cluster of three, `versions` per node, with the database `app` holding `docs`.
fn formed(versions: [Version; 3], docs: usize, delays: Delays) -> Cluster {
    let c = cluster(3, move |b| {
        b.delays(delays)
            .configure(0, move |s| s.version(versions[0]))
            .configure(1, move |s| s.version(versions[1]))
            .configure(2, move |s| s.version(versions[2]))
    });
    run(&c).assert_code(0);
    assert!(c.node(0).create_db_q_n("app", 2, 3));
    let ids: Vec<String> = (0..docs).map(|i| format!("init-{i:04}")).collect();
    assert_eq!(c.node(0).write_docs("app", &ids), docs);
    c.reset_counters();
    c
}

fn old() -> [Version; 3] {
    [Version::V3_4_2; 3]
}

fn maintenance(c: &Cluster, i: usize) -> Option<String> {
    c.node(i).config("couchdb", "maintenance_mode")
}

fn drained(c: &Cluster, i: usize) {
    c.node(i).set_config("couchdb", "maintenance_mode", "nolb");
}

fn lb(c: &Cluster) -> Lb {
    Lb::start(
        c.nodes().iter().map(|n| n.addr()).collect(),
        Duration::from_millis(100),
        true,
    )
}

fn drain(c: &Cluster, node: &str, env: &[(&str, &str)]) -> Run {
    run_args(c, &["drain", node], env)
}

fn undrain(c: &Cluster, node: &str, env: &[(&str, &str)]) -> Run {
    run_args(c, &["undrain", node], env)
}

/// The sum of `doc_count`s of node `i`'s copies of `app`.
fn docs_on(c: &Cluster, i: usize) -> u64 {
    [R0, R1]
        .iter()
        .map(|r| c.node(i).copy_doc_count("app", r).unwrap_or(0))
        .sum()
}

#[test]
fn drain_refuses_writing_nothing_while_another_node_is_out_a_member_is_down_or_the_cluster_is_unhealthy(
) {
    let c = formed(old(), 10, Delays::fast());
    let node2 = label(&c, 1);
    drained(&c, 2);
    let r = drain(&c, &node2, &[]);
    r.assert_code(13);
    r.assert_says(&[
        "not draining",
        "node3@127.0.0.1",
        "one node at a time",
        "nothing written",
    ]);
    assert_eq!(writes(&c), Vec::<String>::new());
    c.node(2).set_config("couchdb", "maintenance_mode", "false");

    c.node(2).stop();
    let r = drain(&c, &node2, &[]);
    r.assert_code(13);
    r.assert_says(&["node3@127.0.0.1", "not connected"]);
    // The stopped one itself, by address: asked once, not waited for.
    let r = drain(&c, &label(&c, 2), &[]);
    r.assert_code(13);
    r.assert_says(&["it does not answer", "nothing written"]);
    assert_eq!(writes(&c), Vec::<String>::new());
    c.node(2).start();
    run_args(&c, &["check", "--wait"], &[]).assert_code(0);

    // Config drift: the cluster is not healthy.
    c.node(1).rehash_admin();
    let r = drain(&c, &label(&c, 0), &[]);
    r.assert_code(13);
    r.assert_says(&["not healthy", "config drift"]);
    assert_eq!(writes(&c), Vec::<String>::new());
    run(&c).assert_code(0);
    c.reset_counters();

    let r = drain(&c, "couchdb@nowhere.example", &[]);
    r.assert_code(13);
    r.assert_says(&["not a member", "node1@127.0.0.1"]);
    let r = drain(&c, "couchdb-9", &[]);
    r.assert_code(2);
    assert_eq!(writes(&c), Vec::<String>::new());
}

#[test]
fn drain_says_it_is_safe_once_the_load_balancer_sends_the_node_nothing() {
    let c = formed(old(), 10, Delays::fast());
    let balancer = lb(&c);
    let url = balancer.url();
    let r = drain(&c, &label(&c, 2), &[("COUCHDB_LB_URL", &url)]);
    r.assert_code(0);
    let done = Instant::now();
    r.assert_says(&[
        "drain: maintenance_mode = nolb on",
        "answers /_up with 404 `nolb` now",
        "leave: the load balancer to stop sending it requests",
        "20 requests in a row through",
        "node1@127.0.0.1, node2@127.0.0.1",
        "safe to stop it",
    ]);
    assert_eq!(maintenance(&c, 2).as_deref(), Some("nolb"));
    assert_eq!(
        writes(&c),
        ["PUT /_node/_local/_config/couchdb/maintenance_mode"]
    );
    // Nothing reached it through the balancer once drain said so.
    std::thread::sleep(Duration::from_millis(300));
    let late: Vec<_> = balancer
        .served()
        .into_iter()
        .filter(|(t, a, _)| *t > done && *a == c.node(2).addr())
        .collect();
    assert!(late.is_empty(), "{late:?}");

    // Again: drained already, it only proves it again, writing nothing.
    c.reset_counters();
    let r = drain(&c, "node3@127.0.0.1", &[("COUCHDB_LB_URL", &url)]);
    r.assert_code(0);
    r.assert_says(&["drained already", "safe to stop it"]);
    assert_eq!(writes(&c), Vec::<String>::new());
    // A drained node is a finding, not a problem.
    run_args(&c, &["check"], &[]).assert_code(0);
}

#[test]
fn drain_without_the_balancer_waits_one_named_interval_and_fails_if_the_balancer_keeps_it() {
    let c = formed(old(), 10, Delays::fast());
    let r = drain(&c, &label(&c, 1), &[("COUCHDB_LB_INTERVAL", "300ms")]);
    r.assert_code(0);
    r.assert_says(&[
        "no COUCHDB_LB_URL to ask, so waiting one health-check interval",
        "COUCHDB_LB_INTERVAL 300ms",
        "one health-check interval (300ms) has passed",
    ]);
    c.node(1).set_config("couchdb", "maintenance_mode", "false");

    // A balancer that never checks health keeps sending it requests: not proven, exit 13.
    let blind = Lb::start(
        c.nodes().iter().map(|n| n.addr()).collect(),
        Duration::from_millis(100),
        false,
    );
    let r = drain(
        &c,
        &label(&c, 1),
        &[
            ("COUCHDB_LB_URL", &blind.url()),
            ("COUCHDB_INIT_TIMEOUT", "2s"),
        ],
    );
    r.assert_code(13);
    r.assert_says(&[
        "still did not answer 20 requests in a row",
        "do not stop it",
    ]);
    assert_eq!(
        maintenance(&c, 1).as_deref(),
        Some("nolb"),
        "it stays drained"
    );
}

/// Drained, stopped, `missed` documents written meanwhile, started again as `version`.
fn away_and_back(c: &Cluster, missed: usize, version: Version) {
    drained(c, 2);
    c.node(2).stop();
    let ids: Vec<String> = (0..missed).map(|i| format!("missed-{i:04}")).collect();
    assert_eq!(c.node(0).write_docs("app", &ids), missed);
    c.node(2).upgrade(version);
    c.reset_counters();
}

/// A formed cluster of 3.4.2 nodes with `docs` documents whose node3 was away while `missed`
/// more were written, and is back as 3.5.2; its copies catch up `catch_up` after it reconnects.
fn returned(catch_up: Duration, docs: usize, missed: usize) -> Cluster {
    let d = Delays {
        catch_up,
        ..Delays::fast()
    };
    let c = formed(old(), docs, d);
    away_and_back(&c, missed, Version::V3_5_2);
    c
}

/// A loopback address nothing listens on now (the system's pick, released for the binary).
fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// `guard` beside node `i`, asking through the balancer `lb`: the run, and where it answers.
fn start_guard(c: &Cluster, i: usize, lb: &str) -> ((std::process::Child, Instant), String) {
    let addr = free_addr();
    let node = label(c, i);
    let run = common::spawn(
        c,
        &["guard"],
        &[
            ("COUCHDB_NODES", node.as_str()),
            ("COUCHDB_GUARD_ADDR", addr.as_str()),
            ("COUCHDB_LB_URL", lb),
        ],
    );
    (run, addr)
}

#[test]
fn undrain_clears_maintenance_only_once_every_copy_has_caught_up() {
    let c = returned(Duration::from_millis(1500), 40, 60);
    // What the returning node holds when maintenance mode is cleared: what the others hold.
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let (seen, node3, node1) = (seen.clone(), c.node(2).clone(), c.node(0).clone());
        c.on_write(move |req, _| {
            if req.path.ends_with("/maintenance_mode") {
                let count = |n: &couchsim::Node| -> u64 {
                    [R0, R1]
                        .iter()
                        .map(|r| n.copy_doc_count("app", r).unwrap_or(0))
                        .sum()
                };
                seen.lock().unwrap().push((count(&node3), count(&node1)));
            }
        });
    }
    let r = undrain(&c, &label(&c, 2), &[]);
    r.assert_code(0);
    assert_eq!(*seen.lock().unwrap(), [(100, 100)], "{}", r.stderr);
    r.assert_says(&[
        "catch up: waiting for",
        "holds what the other copies of its range hold",
        "undrain: maintenance_mode off on",
        "is back",
    ]);
    assert_eq!(maintenance(&c, 2).as_deref(), Some("false"));
    assert_eq!(docs_on(&c, 2), 100);
    // Running it again: not drained, nothing written.
    c.reset_counters();
    let r = undrain(&c, "node3@127.0.0.1", &[]);
    r.assert_code(0);
    r.assert_says(&["is not drained: nothing to do"]);
    assert_eq!(writes(&c), Vec::<String>::new());
}

#[test]
fn a_node_that_does_not_catch_up_or_come_back_in_time_is_exit_14_and_stays_drained() {
    let c = returned(Duration::from_secs(600), 10, 5);
    let r = undrain(&c, &label(&c, 2), &[("COUCHDB_INIT_TIMEOUT", "2s")]);
    r.assert_code(14);
    r.assert_says(&[
        "has not caught up within",
        "hold less than the others",
        "app 00000000-7fffffff: ",
        " documents",
        "stays drained; nothing was written",
    ]);
    assert_eq!(maintenance(&c, 2).as_deref(), Some("nolb"));
    assert_eq!(writes(&c), Vec::<String>::new());

    c.node(2).stop();
    let r = undrain(&c, &label(&c, 2), &[("COUCHDB_INIT_TIMEOUT", "2s")]);
    r.assert_code(14);
    r.assert_says(&["did not come back within", "stays drained"]);
    let r = undrain(&c, "node3@127.0.0.1", &[("COUCHDB_INIT_TIMEOUT", "2s")]);
    r.assert_code(14);
    r.assert_says(&["did not come back within", "not connected to"]);
    assert_eq!(writes(&c), Vec::<String>::new());
}

/// Writes a new document through `lb` every 20 ms and reads it back, until `stop`: every answer
/// that is not a 2xx, and the ids whose write was acknowledged.
fn client(
    lb: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut failed, mut written) = (Vec::new(), Vec::new());
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let id = format!("client-{i:05}");
            let (status, _) = through(lb, "PUT", &format!("/app/{id}"), Some(&json!({"i": i})));
            if (200..300).contains(&status) {
                written.push(id.clone());
                let (status, _) = through(lb, "GET", &format!("/app/{id}"), None);
                if !(200..300).contains(&status) {
                    failed.push(format!("GET {id}: {status}"));
                }
            } else {
                failed.push(format!("PUT {id}: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (failed, written)
    })
}

/// One admin request through the load balancer: (status, body).
fn through(
    lb: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let url = format!("http://{lb}{path}");
    let auth = common::authorization();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let answer = match (method, body) {
        ("PUT", Some(b)) => agent
            .put(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(b.to_string()),
        _ => agent.get(&url).header("Authorization", &auth).call(),
    };
    match answer {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

#[test]
fn a_rolling_upgrade_through_the_balancer_fails_no_request_and_loses_no_write() {
    let delays = Delays {
        catch_up: Duration::from_millis(500),
        ..Delays::fast()
    };
    let c = formed(old(), 50, delays);
    let balancer = lb(&c);
    let url = balancer.url();
    let env = [("COUCHDB_LB_URL", url.as_str())];
    let stop = Arc::new(AtomicBool::new(false));
    let writer = client(balancer.addr(), stop.clone());
    for i in (0..3).rev() {
        run_args(&c, &["check"], &[]).assert_code(0);
        drain(&c, &label(&c, i), &env).assert_code(0);
        c.node(i).upgrade(Version::V3_5_2);
        let r = undrain(&c, &label(&c, i), &env);
        r.assert_code(0);
        r.assert_says(&["the load balancer routes to it again"]);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (failed, written) = writer.join().unwrap();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert!(written.len() > 20, "only {} writes", written.len());
    for id in &written {
        for n in c.nodes() {
            let (status, _) = http(n, "GET", &format!("/app/{id}"), Some(ADMIN), None);
            assert_eq!(status, 200, "{id} through {}", n.name());
        }
    }
    assert!(c.nodes().iter().all(|n| n.version() == Version::V3_5_2));
    let r = run_args(&c, &["status"], &[]);
    r.assert_code(0);
    assert!(!r.stdout.contains("versions: mixed"), "{}", r.stdout);
    // No request through the balancer ever reached a node that was not up for it.
    let bad: Vec<_> = balancer
        .served()
        .into_iter()
        .filter(|(_, _, s)| *s >= 500)
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn status_and_watch_show_each_release_and_the_drained_node() {
    let c = formed(
        [Version::V3_4_2, Version::V3_4_2, Version::V3_5_2],
        5,
        Delays::fast(),
    );
    drained(&c, 1);
    let r = run_args(&c, &["status"], &[]);
    r.assert_code(0);
    let head = r.stdout.lines().nth(2).unwrap_or_default().to_string();
    assert!(head.contains("version") && head.contains("state"), "{head}");
    r.assert_shows(&[
        "3.4.2",
        "3.5.2",
        "drained (nolb)",
        "versions: mixed, 3.4.2 on",
        "3.5.2 on",
        "drained: ",
        "verdict: healthy",
    ]);
    let r = run_args(&c, &["status", "--json"], &[]);
    r.assert_code(0);
    let j: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["versions"], json!(["3.4.2", "3.5.2"]));
    let by_name = |n: &str| {
        j["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("node3@127.0.0.1")["version"], "3.5.2");
    assert_eq!(by_name("node2@127.0.0.1")["state"], "drained (nolb)");
    assert!(j["healthy"].as_bool().unwrap());

    // watch: the versions, the drained node; it never undoes the drain.
    let addr = free_addr();
    let mut w = common::spawn(
        &c,
        &["watch"],
        &[
            ("COUCHDB_WATCH_INTERVAL", "200ms"),
            ("COUCHDB_METRICS_ADDR", &addr),
        ],
    );
    let t = Instant::now();
    let page = loop {
        let page = ureq::get(&format!("http://{addr}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        if page.contains("couchdb_watch_ticks_total 3") || t.elapsed() > Duration::from_secs(20) {
            break page;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for line in [
        "couchdb_node_version_info{node=\"node1@127.0.0.1\",version=\"3.4.2\"} 1",
        "couchdb_node_version_info{node=\"node3@127.0.0.1\",version=\"3.5.2\"} 1",
        "couchdb_cluster_versions 2",
        "couchdb_node_maintenance{node=\"node2@127.0.0.1\"} 1",
        "couchdb_node_maintenance{node=\"node1@127.0.0.1\"} 0",
        "couchdb_cluster_healthy 1",
    ] {
        assert!(page.lines().any(|l| l == line), "no `{line}` in\n{page}");
    }
    // The status page and its JSON show each node's release and the drained one.
    let get = |path: &str| {
        ureq::get(&format!("http://{addr}{path}"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    };
    let json: serde_json::Value = serde_json::from_str(&get("/status.json")).unwrap();
    let row = |n: &str| {
        json["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == n).cloned())
            .unwrap_or_default()
    };
    assert_eq!(row("node1@127.0.0.1")["version"], "3.4.2", "{json}");
    assert_eq!(row("node3@127.0.0.1")["version"], "3.5.2", "{json}");
    assert_eq!(row("node2@127.0.0.1")["maintenance"], "nolb", "{json}");
    let html = get("/");
    assert!(
        html.contains("<th>version</th>") && html.contains("3.5.2"),
        "{html}"
    );
    terminate(&mut w.0);
    let out = common::finish(w);
    assert_eq!(
        maintenance(&c, 1).as_deref(),
        Some("nolb"),
        "{}",
        out.stderr
    );
    assert_eq!(writes(&c), Vec::<String>::new(), "{}", out.stderr);
}

/// SIGTERM to a child we started.
fn terminate(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

#[test]
fn every_command_works_on_a_cluster_of_mixed_releases() {
    let c = cluster(3, |b| {
        b.configure(0, |s| s.version(Version::V3_5_2))
            .configure(2, |s| s.version(Version::V3_5_2))
    });
    run(&c).assert_code(0);
    common::assert_formed(&c);
    run_args(&c, &["check"], &[]).assert_code(0);
    // Drift on a 3.5.2 node, repaired by init.
    c.node(2).rehash_admin();
    run_args(&c, &["check"], &[]).assert_code(6);
    run(&c).assert_code(0);
    run_args(&c, &["check"], &[]).assert_code(0);
    c.node(0).create_db("app");
    assert_eq!(c.node(0).write_docs("app", &["a", "b", "c"]), 3);

    // Growth by a 3.5.2 node, rebalance, then its removal.
    let mut c = c;
    let fourth = c.add_node(|s| s.version(Version::V3_5_2)).clone();
    let four: Vec<String> = (0..4).map(|i| label(&c, i)).collect();
    let nodes = four.join(",");
    let env = [("COUCHDB_NODES", nodes.as_str())];
    common::run_with(&c, &env).assert_code(0);
    run_args(&c, &["rebalance"], &env).assert_code(0);
    assert!(c
        .node(0)
        .shards("app")
        .unwrap()
        .values()
        .flatten()
        .any(|n| *n == fourth.name()));
    run_args(&c, &["remove", &four[3]], &env).assert_code(0);
    // As `remove` says: stop it and wipe its data (trap 15).
    fourth.stop();
    fourth.wipe();
    assert_eq!(c.node(0).doc_ids("app").unwrap().len(), 3);

    // Backup to a 3.5.2 CouchDB, and restore (a merge: nothing to bring back).
    let backup = cluster(1, |b| {
        b.seed(0xBAC).configure(0, |s| {
            s.name("couchdb@backup.example").version(Version::V3_5_2)
        })
    });
    let url = backup.node(0).url();
    let three: Vec<String> = (0..3).map(|i| label(&c, i)).collect();
    let nodes = three.join(",");
    let env = [
        ("COUCHDB_NODES", nodes.as_str()),
        ("COUCHDB_BACKUP_URL", url.as_str()),
    ];
    run_args(&c, &["backup"], &env).assert_code(0);
    let t = Instant::now();
    while backup.node(0).doc_count("app") != Some(3) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "app never reached the backup"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    run_args(&c, &["restore", "app"], &env).assert_code(0);
    let r = run_args(&c, &["status"], &env);
    r.assert_code(0);
    r.assert_shows(&["versions: mixed, 3.4.2 on", "3.5.2 on"]);
}

/// `GET path` on a local port: (status, body); `None` while nothing listens there.
fn probe(addr: &str, path: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(&format!("http://{addr}{path}")).call().ok()?;
    Some((r.status().as_u16(), r.body_mut().read_to_string().ok()?))
}

#[test]
fn guard_keeps_its_node_not_ready_until_caught_up_and_drains_it_for_a_stop() {
    let c = returned(Duration::from_millis(1500), 40, 60);
    let balancer = lb(&c);
    let (mut g, addr) = start_guard(&c, 2, &balancer.url());
    // Not ready while its copies lack what it missed; ready once they hold it, undrained.
    let t = Instant::now();
    let mut said = Vec::new();
    loop {
        if let Some((status, body)) = probe(&addr, "/ready") {
            if status == 200 {
                break;
            }
            said.push(body);
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "never ready: {said:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        said.iter().any(|s| s.starts_with("not caught up yet")),
        "{said:?}"
    );
    assert_eq!(docs_on(&c, 2), 100);
    assert_eq!(maintenance(&c, 2).as_deref(), Some("false"));

    // The preStop hook: drained, out of the balancer, then not ready.
    let (status, body) = probe(&addr, "/drain").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("20 requests in a row"), "{body}");
    assert_eq!(maintenance(&c, 2).as_deref(), Some("nolb"));
    assert_eq!(probe(&addr, "/ready").unwrap().0, 503);
    terminate(&mut g.0);
    let out = common::finish(g);
    out.assert_code(0);
    out.assert_says(&["guard: ", "caught up, undrained; ready", "it may stop"]);
}

/// Not a check: prints what docs/upgrade.md shows (`cargo test --test upgrade -- --ignored
/// --nocapture docs_examples`): `drain` through a balancer, `status` with a drained node and mixed
/// releases, `undrain` of a node that missed writes.
#[test]
#[ignore]
fn docs_examples() {
    let d = Delays {
        catch_up: Duration::from_millis(800),
        ..Delays::fast()
    };
    let c = formed([Version::V3_4_2, Version::V3_4_2, Version::V3_5_2], 200, d);
    let balancer = lb(&c);
    let url = balancer.url();
    let env = [("COUCHDB_LB_URL", url.as_str())];
    let r = drain(&c, &label(&c, 1), &env);
    println!(
        "$ couchdb-cluster-init drain {}\n{}",
        label(&c, 1),
        r.stderr
    );
    let r = run_args(&c, &["status"], &env);
    println!("$ couchdb-cluster-init status\n{}", r.stdout);
    c.node(1).stop();
    // Not `missed-…`: `away_and_back` below writes those into the same database.
    let ids: Vec<String> = (0..40).map(|i| format!("away-{i:04}")).collect();
    c.node(0).write_docs("app", &ids);
    c.node(1).upgrade(Version::V3_5_2);
    let r = undrain(&c, &label(&c, 1), &env);
    println!(
        "$ couchdb-cluster-init undrain {}\n{}",
        label(&c, 1),
        r.stderr
    );

    // The guard beside node3, after a stop that its preStop drained.
    away_and_back(&c, 60, Version::V3_5_2);
    let (mut g, addr) = start_guard(&c, 2, &url);
    while probe(&addr, "/ready").map(|(s, _)| s) != Some(200) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let drained = probe(&addr, "/drain").unwrap();
    terminate(&mut g.0);
    let out = common::finish(g);
    println!(
        "$ couchdb-cluster-init guard   # then GET /drain: {drained:?}\n{}",
        out.stderr
    );
}
