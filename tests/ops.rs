//! `status`, `remove` and `rebalance`: the real binary against the simulator.

mod common;

use common::{cluster, label, run, run_args};
use couchsim::{Cluster, Fault};
use serde_json::Value;

/// A formed cluster of `n` nodes, with user databases `dbs`.
fn formed(n: usize, dbs: &[&str]) -> Cluster {
    let c = cluster(n, |b| b);
    run(&c).assert_code(0);
    for db in dbs {
        c.node(0).create_db(db);
    }
    c.reset_counters();
    c
}

/// The shard map doc of `db` on node `i`, as CouchDB sends it.
fn dbs_doc(c: &Cluster, i: usize, db: &str) -> Value {
    let url = format!("{}/_node/_local/_dbs/{db}", c.node(i).url());
    let mut r = ureq::get(&url)
        .header("Authorization", common::authorization())
        .call()
        .expect("GET _dbs doc");
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

/// PUTs a shard map doc on node `i` as an operator would by hand (CouchDB checks almost
/// nothing: trap 12).
fn put_dbs_doc(c: &Cluster, i: usize, db: &str, doc: &Value) {
    let url = format!("{}/_node/_local/_dbs/{db}", c.node(i).url());
    let r = ureq::put(&url)
        .header("Authorization", common::authorization())
        .header("Content-Type", "application/json")
        .send(doc.to_string())
        .expect("PUT _dbs doc");
    assert_eq!(r.status().as_u16(), 201);
}

/// `db`'s map with `node` added to `range` in both by_range and by_node.
fn with_copy(mut doc: Value, range: &str, node: &str) -> Value {
    doc["by_range"][range]
        .as_array_mut()
        .unwrap()
        .push(node.into());
    let by_node = doc["by_node"].as_object_mut().unwrap();
    let ranges = by_node.entry(node).or_insert(Value::Array(vec![]));
    ranges.as_array_mut().unwrap().push(range.into());
    doc
}

fn status(c: &Cluster, args: &[&str]) -> common::Run {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    run_args(c, &all, &[])
}

fn json(r: &common::Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

const A: &str = "00000000-7fffffff";

// ---- status: one test per verdict ---------------------------------------------------------------

#[test]
fn status_of_a_healthy_cluster_exits_0_and_writes_nothing() {
    let c = formed(3, &["app"]);
    let r = status(&c, &[]);
    r.assert_code(0);
    for i in 0..3 {
        assert!(r.stdout.contains(&c.node(i).name()), "{}", r.stdout);
        assert!(r.stdout.contains(&label(&c, i)), "{}", r.stdout);
    }
    assert!(r.stdout.contains("verdict: healthy"), "{}", r.stdout);
    assert!(r.stdout.contains("3 databases"), "{}", r.stdout);
    let j = json(&status(&c, &["--json"]));
    assert_eq!(j["healthy"], true);
    assert_eq!(j["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(j["databases"].as_array().unwrap().len(), 3);
    assert_eq!(c.count_writes(), 0);
    // check gives the same verdict.
    run_args(&c, &["check"], &[]).assert_code(0);
}

#[test]
fn status_names_a_stopped_member_exit_3() {
    let c = formed(3, &["app"]);
    c.node(2).stop();
    let r = status(&c, &[]);
    r.assert_code(3);
    assert!(r.stdout.contains(&label(&c, 2)), "{}", r.stdout);
    assert!(r.stdout.contains("under-replicated"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains(&format!("{} not connected", c.node(2).name())),
        "{}",
        r.stdout
    );
    let j = json(&status(&c, &["--json"]));
    assert_eq!(j["healthy"], false);
    assert_eq!(j["exit"], 3);
}

#[test]
fn status_names_a_node_in_maintenance() {
    let c = formed(3, &[]);
    c.node(1)
        .inject(Fault::Maintenance("maintenance_mode".into()));
    let r = status(&c, &[]);
    r.assert_code(6);
    assert!(r.stdout.contains("maintenance"), "{}", r.stdout);
    // Its copies do not count while it is out of service.
    assert!(r.stdout.contains("in maintenance"), "{}", r.stdout);
}

#[test]
fn status_names_config_drift() {
    let c = formed(3, &[]);
    c.node(2).rehash_admin();
    let r = status(&c, &[]);
    r.assert_code(6);
    assert!(r.stdout.contains("admin hash differs"), "{}", r.stdout);
    assert!(!r.stdout.contains("pbkdf2"), "a hash reached the output");
}

#[test]
fn status_of_unjoined_nodes_says_they_are_not_members() {
    let c = cluster(3, |b| b);
    let r = status(&c, &[]);
    r.assert_code(6);
    assert!(r.stdout.contains("not a member"), "{}", r.stdout);
    assert!(r.stdout.contains("_users does not exist"), "{}", r.stdout);
}

#[test]
fn status_finds_a_copy_on_a_node_that_is_not_a_member() {
    // Trap 12: CouchDB accepts a shard map naming any node.
    let c = formed(3, &["app"]);
    put_dbs_doc(
        &c,
        0,
        "app",
        &with_copy(dbs_doc(&c, 0, "app"), A, "node9@127.0.0.1"),
    );
    let r = status(&c, &[]);
    r.assert_code(6);
    assert!(
        r.stdout.contains("node9@127.0.0.1 not a member"),
        "{}",
        r.stdout
    );
    let r = status(&c, &["app"]);
    assert!(
        r.stdout.contains("node9@127.0.0.1 (not a member)"),
        "{}",
        r.stdout
    );
}

#[test]
fn status_finds_an_under_replicated_range() {
    let c = formed(3, &["app"]);
    let mut doc = dbs_doc(&c, 0, "app");
    let gone = c.node(2).name();
    doc["by_range"][A]
        .as_array_mut()
        .unwrap()
        .retain(|n| *n != gone.as_str());
    doc["by_node"][&gone]
        .as_array_mut()
        .unwrap()
        .retain(|r| *r != A);
    put_dbs_doc(&c, 0, "app", &doc);
    let r = status(&c, &[]);
    r.assert_code(6);
    assert!(
        r.stdout.contains(&format!(
            "app: under-replicated, 1 range(s) short of 3 copies: {A} has 2 of 3"
        )),
        "{}",
        r.stdout
    );
}

#[test]
fn status_finds_an_interrupted_move() {
    let mut c = formed(3, &["app"]);
    c.add_node(|n| n);
    run(&c).assert_code(0);
    let (from, to) = (c.node(2).name(), c.node(3).name());
    let mut doc = with_copy(dbs_doc(&c, 0, "app"), A, &to);
    doc["couchdb_cluster_init"] =
        serde_json::json!({"moves": [{"range": A, "from": from, "to": to}]});
    put_dbs_doc(&c, 0, "app", &doc);
    let r = status(&c, &[]);
    r.assert_code(6);
    assert!(r.stdout.contains("a move was interrupted"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("{A} {from} → {to}")),
        "{}",
        r.stdout
    );
    // The database still has n = 3: the new copy is not counted as a fourth.
    let j = json(&status(&c, &["--json"]));
    let app = j["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["db"] == "app")
        .unwrap()
        .clone();
    assert_eq!(app["n"], 3, "{app}");
}

#[test]
fn status_names_an_unknown_database() {
    let c = formed(3, &[]);
    let r = status(&c, &["nosuchdb"]);
    r.assert_code(2);
    r.assert_says(&["nosuchdb"]);
}

#[test]
fn status_stays_short_and_cheap_at_many_databases() {
    let c = formed(5, &[]);
    // 60, not 200: the simulator pushes its whole `_dbs` on every creation, so 200 take a minute
    // to make; what is asserted does not grow with the count.
    for i in 0..60 {
        c.node(0).create_db(&format!("db{i:03}"));
    }
    c.reset_counters();
    let r = status(&c, &[]);
    r.assert_code(0);
    // A summary, not 200 tables: the healthy databases are counted, not listed.
    assert!(r.stdout.lines().count() < 20, "{}", r.stdout);
    assert!(r.stdout.contains("62 databases"), "{}", r.stdout);
    // Requests: 4 per node, one page of shard maps, one file list per member — none per database.
    let requests = c.requests().len();
    assert!(requests <= 4 * 5 + 1 + 5, "{requests} requests");
}

// ---- remove and rebalance: what is refused or only planned writes nothing -----------------------

/// A formed cluster of 3 with `app`, grown to `n` (the new nodes joined by init).
fn grown(n: usize) -> Cluster {
    let mut c = formed(3, &["app"]);
    for _ in 3..n {
        c.add_node(|s| s);
    }
    run(&c).assert_code(0);
    c.reset_counters();
    c
}

#[test]
fn rebalance_dry_run_prints_the_plan_and_writes_nothing() {
    let c = grown(5);
    let r = run_args(&c, &["rebalance", "--dry-run"], &[]);
    r.assert_code(0);
    // q=2 × n=3 = 6 copies of each database on 5 nodes: two moves each (transcript 13).
    assert!(
        r.stdout.contains("3 database(s) to change: 6 move(s)"),
        "{}",
        r.stdout
    );
    for i in [3, 4] {
        assert!(
            r.stdout.contains(&format!("→ {}", c.node(i).name())),
            "{}",
            r.stdout
        );
    }
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn remove_dry_run_prints_the_plan_and_writes_nothing() {
    let c = grown(4);
    let leaving = c.node(0).name();
    let r = run_args(&c, &["remove", "--dry-run", &label(&c, 0)], &[]);
    r.assert_code(0);
    // node1 holds both ranges of _users, _replicator and app; only node4 lacks them.
    assert!(
        r.stdout.contains("3 database(s) to change: 6 move(s)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("{leaving} 6 → 0")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("{} 0 → 6", c.node(3).name())),
        "{}",
        r.stdout
    );
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn remove_is_refused_when_the_others_cannot_hold_n_copies() {
    let c = formed(3, &["app"]);
    let r = run_args(&c, &["remove", &label(&c, 2)], &[]);
    r.assert_code(8);
    r.assert_says(&[
        "cannot hold",
        "--accept-fewer-copies",
        "Nothing was written",
    ]);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn remove_is_refused_while_another_member_is_down() {
    let c = grown(4);
    c.node(1).stop();
    let r = run_args(
        &c,
        &["remove", &c.node(3).name()],
        &[("COUCHDB_NODES", &[0, 2, 3].map(|i| label(&c, i)).join(","))],
    );
    r.assert_code(8);
    r.assert_says(&[&c.node(1).name(), "down", "Nothing was written"]);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn remove_of_an_address_not_in_couchdb_nodes_is_a_configuration_error() {
    let c = formed(3, &[]);
    let r = run_args(&c, &["remove", "elsewhere:5984"], &[]);
    r.assert_code(2);
    r.assert_says(&["elsewhere:5984", "COUCHDB_NODES"]);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn remove_of_a_stranger_holding_nothing_writes_nothing() {
    let c = formed(3, &["app"]);
    let r = run_args(&c, &["remove", "node9@127.0.0.1"], &[]);
    r.assert_code(0);
    r.assert_says(&["nothing to do"]);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn rebalance_is_refused_when_a_map_names_a_non_member() {
    let c = grown(4);
    put_dbs_doc(
        &c,
        0,
        "app",
        &with_copy(dbs_doc(&c, 0, "app"), A, "node9@127.0.0.1"),
    );
    c.reset_counters();
    let r = run_args(&c, &["rebalance"], &[]);
    r.assert_code(8);
    r.assert_says(&["node9@127.0.0.1", "remove", "Nothing was written"]);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn rebalance_on_a_balanced_cluster_writes_nothing() {
    let c = formed(3, &["app"]);
    let r = run_args(&c, &["rebalance"], &[]);
    r.assert_code(0);
    r.assert_says(&["nothing moved"]);
    assert_eq!(c.count_writes(), 0);
}
