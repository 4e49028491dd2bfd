//! The security section of `status`, against the simulator: each finding absent on the
//! default cluster and present once its setting is there, none of them changing the exit
//! code, nothing written; and the distribution checked at formation: TLS nodes of one CA form,
//! a node without TLS or with a certificate from another CA is refused before anything is
//! written (exit 15) and named by `status`.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use std::time::Duration;

use common::lb::Lb;
use common::watcher::Watcher;
use common::{assert_formed, cluster, http, put_json, run, run_args, run_with, COOKIE, PASSWORD};
use couchsim::{fixtures, Cluster, Version};
use serde_json::{json, Value};

fn status_json(c: &Cluster, env: &[(&str, &str)]) -> (i32, Value) {
    let r = run_args(c, &["status", "--json"], env);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    for secret in [PASSWORD, COOKIE, "sh0rt"] {
        assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret));
    }
    let v = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    (r.code, v)
}

fn kinds(v: &Value) -> BTreeSet<String> {
    v["security"]["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings in {v}"))
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

fn text_of<'a>(v: &'a Value, kind: &str) -> &'a str {
    v["security"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind)
        .and_then(|f| f["text"].as_str())
        .unwrap_or_else(|| panic!("no {kind} in {v}"))
}

#[test]
fn each_finding_is_absent_by_default_and_present_once_its_setting_is() {
    let c = cluster(3, |b| b);
    run(&c).assert_code(0);
    c.node(0).create_db("open");
    c.node(0).create_db("closed");
    c.reset_counters();

    // The default cluster: only the plain distribution, and not when plain is what is meant.
    let (code, v) = status_json(&c, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(kinds(&v), ["dist_cleartext".to_string()].into());
    let dist = v["security"]["distribution"].as_array().unwrap();
    assert_eq!(dist.len(), 3);
    assert!(dist
        .iter()
        .all(|d| d["transport"] == "plain TCP" && d["port"].is_u64()));
    let (_, v) = status_json(&c, &[("COUCHDB_DIST_TLS", "false")]);
    assert!(kinds(&v).is_empty(), "{v}");

    // Every setting that exposes something, made the way an operator (or a tutorial) makes it.
    let n1 = c.node(0);
    let n2 = c.node(1);
    n2.set_config("chttpd_auth", "users_db_public", "true");
    for (k, val) in [("enable_cors", "true")] {
        n1.set_config("httpd", k, val);
    }
    n1.set_config("cors", "origins", "*");
    n1.set_config("cors", "credentials", "true");
    // CouchDB 3 refuses to edit _users' _security unless told it may.
    let public = json!({});
    assert_eq!(put_json(n1, "/_users/_security", &public), 403);
    for n in c.nodes() {
        n.set_config("couchdb", "users_db_security_editable", "true");
    }
    assert_eq!(put_json(n1, "/_users/_security", &public), 200);
    let bob = json!({"members": {"names": ["bob"], "roles": []}});
    assert_eq!(put_json(n1, "/_replicator/_security", &bob), 200);
    assert_eq!(put_json(n1, "/open/_security", &public), 200);
    c.reset_counters();

    let env = [("COUCHDB_COOKIE", "sh0rt")];
    let (code, v) = status_json(&c, &env);
    assert_eq!(code, 0, "findings are not problems: {v}");
    assert_eq!(c.count_writes(), 0, "status wrote to the cluster");
    let want: BTreeSet<String> = [
        "dist_cleartext",
        "cookie_weak",
        "users_db_public",
        "users_readable",
        "replicator_readable",
        "db_public",
        "cors_open",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(kinds(&v), want, "{v}");
    // Each names where, and what to change.
    for (kind, says) in [
        ("cookie_weak", "5 characters from 2"),
        ("users_db_public", "set it to false"),
        ("users_readable", "anyone (no members: public)"),
        ("replicator_readable", "bob"),
        ("db_public", "1 database(s) name no members in their _security, so anyone, even without a password, can read and write them: open"),
        ("cors_open", "list your origins"),
    ] {
        assert!(text_of(&v, kind).contains(says), "{kind}: {}", text_of(&v, kind));
    }
    assert!(text_of(&v, "users_db_public").contains(&common::label(&c, 1)));
    assert!(!text_of(&v, "db_public").contains("closed"));
    // The people's table shows the same section.
    let r = run_args(&c, &["status"], &env);
    r.assert_code(0);
    r.assert_shows(&[
        "security: 7 finding(s)",
        "distribution: plain TCP on all 3 listed nodes",
    ]);
    // `check` reads none of it (an init container may ask every 2 s) and stays healthy.
    c.reset_counters();
    run_args(&c, &["check"], &env).assert_code(0);
    assert!(c.requests().iter().all(|q| !q.path.ends_with("/_security")));
    // init warns of what the configuration alone shows, and writes nothing for it.
    c.reset_counters();
    let r = run_with(&c, &env);
    r.assert_code(0);
    r.assert_says(&[
        "security: COUCHDB_COOKIE is 5 characters",
        "distribution: plain TCP",
    ]);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn a_well_known_admin_password_is_never_accepted_silently() {
    let c = Cluster::builder()
        .nodes(2)
        .admin("admin", "password")
        .cookie(COOKIE)
        .delays(couchsim::Delays::fast())
        .start();
    let env = [("COUCHDB_PASSWORD", "password")];
    let r = run_with(&c, &env);
    r.assert_code(0);
    r.assert_says(&["security: COUCHDB_PASSWORD is a well-known default"]);
    let r = run_args(&c, &["status", "--json"], &env);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(kinds(&v).contains("admin_password_default"), "{v}");
    assert!(
        !r.stdout.contains("\"password\""),
        "the password itself is shown"
    );
}

// ---- the distribution -----------------------------------------------------------------------------

fn certs(tag: &str, ca: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cci-dist-{tag}-{}", std::process::id()));
    fixtures::make_certificates(&dir, ca, &[("node", "IP:127.0.0.1")]).unwrap();
    dir
}

/// A cluster whose nodes run the distribution `flags` says for each (`None`: plain).
fn with_flags(flags: Vec<Option<String>>) -> Cluster {
    cluster(flags.len(), |mut b| {
        for (i, f) in flags.into_iter().enumerate() {
            if let Some(f) = f {
                b = b.configure(i, move |s| s.erl_flags(&f));
            }
        }
        b
    })
}

#[test]
fn tls_nodes_of_one_ca_form_and_status_shows_their_distribution() {
    let dir = certs("ok", "cci test CA");
    let f = fixtures::erl_flags(&dir, "node").unwrap();
    let c = with_flags(vec![Some(f.clone()), Some(f.clone()), Some(f)]);
    let tls = [("COUCHDB_DIST_TLS", "true")];
    let r = run_with(&c, &tls);
    r.assert_code(0);
    r.assert_says(&["distribution: TLS on 3 node(s)"]);
    assert_formed(&c);
    c.reset_counters();
    let (code, v) = status_json(&c, &tls);
    assert_eq!(code, 0, "{v}");
    assert!(kinds(&v).is_empty(), "{v}");
    for d in v["security"]["distribution"].as_array().unwrap() {
        assert_eq!(d["transport"], "TLS", "{d}");
        assert_eq!(d["issuer"], "cci test CA", "{d}");
        assert_eq!(d["verifies_peers"], true, "{d}");
    }
    run_args(&c, &["check"], &tls).assert_code(0);
    assert_eq!(c.count_writes(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_node_without_tls_among_tls_nodes_is_refused_before_anything_is_written() {
    let dir = certs("plain", "cci test CA");
    let f = fixtures::erl_flags(&dir, "node").unwrap();
    let c = with_flags(vec![Some(f.clone()), Some(f), None]);
    for env in [vec![("COUCHDB_DIST_TLS", "true")], vec![]] {
        c.reset_counters();
        let r = run_with(&c, &env);
        r.assert_code(15);
        r.assert_says(&[&common::label(&c, 2), "plain TCP", "Nothing was written"]);
        assert_eq!(c.count_writes(), 0, "{env:?}");
    }
    // `check` with the setting names it too (exit 15 once the rest is healthy; here the
    // cluster is not formed, so its first problem wins).
    let r = run_args(&c, &["status"], &[("COUCHDB_DIST_TLS", "true")]);
    r.assert_shows(&["PROBLEM: ", "plain TCP while COUCHDB_DIST_TLS=true"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_node_with_a_certificate_of_another_ca_never_joins_and_status_names_it() {
    let (ours, theirs) = (certs("ours", "cci test CA"), certs("theirs", "another CA"));
    let f = fixtures::erl_flags(&ours, "node").unwrap();
    let other = fixtures::erl_flags(&theirs, "node").unwrap();
    let c = with_flags(vec![Some(f.clone()), Some(f), Some(other)]);
    let tls = [("COUCHDB_DIST_TLS", "true")];
    let r = run_with(&c, &tls);
    r.assert_code(15);
    r.assert_says(&[
        &common::label(&c, 2),
        "issued by `another CA`",
        "Nothing was written",
    ]);
    assert_eq!(c.count_writes(), 0);
    // Joined by hand all the same, it never connects: status names it, and why.
    let two = [
        (
            "COUCHDB_NODES",
            format!("{},{}", common::label(&c, 0), common::label(&c, 1)),
        ),
        ("COUCHDB_DIST_TLS", "true".to_string()),
    ];
    let two: Vec<(&str, &str)> = two.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_with(&c, &two).assert_code(0);
    let name = c.node(2).name();
    assert_eq!(
        common::put(c.node(0), &format!("/_node/_local/_nodes/{name}")),
        201
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(c.node(0).membership().0.len(), 2, "it connected");
    let r = run_args(&c, &["status"], &tls);
    assert_ne!(r.code, 0);
    r.assert_shows(&[
        &format!("({name}): do not list node1@127.0.0.1, node2@127.0.0.1 as connected"),
        &format!("({name})'s distribution certificate is issued by `another CA`"),
    ]);
    let _ = std::fs::remove_dir_all(ours);
    let _ = std::fs::remove_dir_all(theirs);
}

#[test]
fn growth_remove_and_rebalance_work_the_same_over_tls() {
    let dir = certs("ops", "cci test CA");
    let f = fixtures::erl_flags(&dir, "node").unwrap();
    let mut c = with_flags(vec![Some(f.clone()), Some(f.clone()), Some(f.clone())]);
    let tls = [("COUCHDB_DIST_TLS", "true")];
    run_with(&c, &tls).assert_code(0);
    c.node(0).create_db("app");
    let ids: Vec<String> = (0..30).map(|i| format!("doc{i:02}")).collect();
    assert_eq!(c.node(0).write_docs("app", &ids), 30);
    // Growth: a fourth TLS node joins.
    let g = f.clone();
    c.add_node(move |s| s.erl_flags(&g));
    run_with(&c, &tls).assert_code(0);
    assert_formed(&c);
    // The copies move onto it and off it again, over the TLS distribution.
    run_args(&c, &["rebalance"], &tls).assert_code(0);
    let name = c.node(3).name();
    run_args(&c, &["remove", &name], &tls).assert_code(0);
    let mut seen = c.node(1).doc_ids("app").unwrap_or_default();
    seen.sort();
    assert_eq!(seen, ids, "documents after the moves");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn backup_watch_restore_and_a_rolling_upgrade_work_the_same_over_tls() {
    const USER: &str = "backup-admin";
    const PASSWORD_B: &str = "bk-Tl5-never-logged";
    let dir = certs("rest", "cci test CA");
    let f = fixtures::erl_flags(&dir, "node").unwrap();
    let c = with_flags(vec![Some(f.clone()), Some(f.clone()), Some(f)]);
    let tls = [("COUCHDB_DIST_TLS", "true")];
    run_with(&c, &tls).assert_code(0);
    let ids: Vec<String> = (0..20).map(|i| format!("doc{i:02}")).collect();
    c.node(0).create_db("app");
    assert_eq!(c.node(0).write_docs("app", &ids), 20);
    // The backup CouchDB (replication is HTTP: its distribution does not matter).
    let backup = cluster(1, |b| {
        b.admin(USER, PASSWORD_B)
            .seed(0xBAC)
            .configure(0, |n| n.name("couchdb@backup.example"))
    });
    let url = backup.node(0).url();
    let with_backup = [
        ("COUCHDB_DIST_TLS", "true"),
        ("COUCHDB_BACKUP_URL", url.as_str()),
        ("COUCHDB_BACKUP_USER", USER),
        ("COUCHDB_BACKUP_PASSWORD", PASSWORD_B),
    ];
    // watch keeps it backed up, and finds nothing exposed.
    let w = Watcher::start(&c, &with_backup);
    w.until("couchdb_cluster_healthy", "1");
    w.until("couchdb_backup_docs_behind", "0");
    w.until("couchdb_backup_failing", "0");
    w.until("couchdb_security_findings", "0");
    w.stop().assert_code(0);
    run_args(&c, &["backup"], &with_backup).assert_code(0);
    // One node drained, re-created as 3.5.2 with its data and its certificate, and back.
    let balancer = Lb::start(
        c.nodes().iter().map(|n| n.addr()).collect(),
        Duration::from_millis(100),
        true,
    );
    let lb = balancer.url();
    let drain_env = [
        ("COUCHDB_DIST_TLS", "true"),
        ("COUCHDB_LB_URL", lb.as_str()),
    ];
    let name = c.node(2).name();
    run_args(&c, &["drain", &name], &drain_env).assert_code(0);
    c.node(2).upgrade(Version::V3_5_2);
    run_args(&c, &["undrain", &name], &drain_env).assert_code(0);
    run_args(&c, &["check"], &tls).assert_code(0);
    // A lost database comes back from the backup.
    let (status, _) = http(c.node(0), "DELETE", "/app", Some(("admin", PASSWORD)), None);
    assert_eq!(status, 200);
    run_args(&c, &["restore", "app"], &with_backup).assert_code(0);
    let mut seen = c.node(1).doc_ids("app").unwrap_or_default();
    seen.sort();
    assert_eq!(seen, ids, "documents after the restore");
    let _ = std::fs::remove_dir_all(dir);
}

/// Not a check: prints docs/operations.md's "Security" example (`cargo test --test security
/// docs_examples -- --ignored --nocapture`): `status` of a cluster with a 9-character cookie,
/// CORS open on node1, a database whose `_security` names no members and `_replicator` opened
/// to a role. The test above checks each finding.
#[test]
#[ignore]
fn docs_examples() {
    let c = cluster(3, |b| b);
    run(&c).assert_code(0);
    c.node(0).create_db("open");
    let n1 = c.node(0);
    n1.set_config("httpd", "enable_cors", "true");
    n1.set_config("cors", "origins", "*");
    n1.set_config("cors", "credentials", "true");
    assert_eq!(put_json(n1, "/open/_security", &json!({})), 200);
    let ops = json!({"members": {"names": [], "roles": ["ops"]}});
    assert_eq!(put_json(n1, "/_replicator/_security", &ops), 200);
    let r = run_args(&c, &["status"], &[("COUCHDB_COOKIE", "weakcook1")]);
    r.assert_code(0);
    println!("$ couchdb-cluster-init status\n{}", r.stdout);
}

#[test]
fn with_a_listed_node_down_the_distribution_is_said_of_the_nodes_that_answer() {
    let c = cluster(3, |b| b);
    run(&c).assert_code(0);
    c.node(2).stop();
    let r = run_args(&c, &["status"], &[]);
    r.assert_shows(&[
        "distribution: plain TCP on all 2 listed nodes that answer",
        "the Erlang distribution of all 2 listed nodes that answer is plain TCP",
    ]);
    c.node(2).start();
    let r = run_args(&c, &["status"], &[]);
    r.assert_shows(&["distribution: plain TCP on all 3 listed nodes\n"]);
}
