//! `status`, `remove` and `rebalance`: the real binary against the simulator.

mod common;

use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    assert_never_short, assert_readable, cluster, copies_per_node, counts_before, ids, label,
    listing, run, run_args, settle, write_all,
};
use couchsim::{Cluster, Delays, Fault};
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
        r.assert_shows(&[&c.node(i).name(), &label(&c, i)]);
    }
    r.assert_shows(&["verdict: healthy", "3 databases"]);
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
    r.assert_shows(&[&label(&c, 2), "under-replicated"]);
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
    r.assert_shows(&["maintenance"]);
    // Its copies do not count while it is out of service.
    r.assert_shows(&["in maintenance"]);
}

#[test]
fn status_names_config_drift() {
    let c = formed(3, &[]);
    c.node(2).rehash_admin();
    let r = status(&c, &[]);
    r.assert_code(6);
    r.assert_shows(&["admin hash differs"]);
    assert!(!r.stdout.contains("pbkdf2"), "a hash reached the output");
}

#[test]
fn status_of_unjoined_nodes_says_they_are_not_members() {
    let c = cluster(3, |b| b);
    let r = status(&c, &[]);
    r.assert_code(6);
    r.assert_shows(&["not a member", "_users does not exist"]);
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
    r.assert_shows(&["node9@127.0.0.1 not a member"]);
    let r = status(&c, &["app"]);
    r.assert_shows(&["node9@127.0.0.1 (not a member)"]);
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
    r.assert_shows(&[&format!(
        "app: under-replicated, 1 range(s) short of 3 copies: {A} has 2 of 3"
    )]);
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
    r.assert_shows(&["a move was interrupted", &format!("{A} {from} → {to}")]);
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

/// `app`'s map with an intent field this tool did not write: CouchDB stores it (trap 12), this
/// tool cannot read it.
fn with_an_unreadable_map(c: &Cluster) {
    let mut doc = dbs_doc(c, 0, "app");
    doc["couchdb_cluster_init"] = Value::from(42);
    put_dbs_doc(c, 0, "app", &doc);
    c.reset_counters();
}

#[test]
fn status_names_a_shard_map_it_cannot_read_and_still_shows_the_rest() {
    let c = formed(3, &["app", "other"]);
    with_an_unreadable_map(&c);
    let r = status(&c, &[]);
    r.assert_code(6);
    r.assert_shows(&[
        "shard map of app: `couchdb_cluster_init` is not what this tool writes",
        "3 databases",
    ]);
    for i in 0..3 {
        r.assert_shows(&[&c.node(i).name()]);
    }
    let j = json(&status(&c, &["--json"]));
    assert_eq!(j["healthy"], false);
    assert_eq!(j["databases"].as_array().unwrap().len(), 3);
    let r = status(&c, &["app"]);
    r.assert_code(6);
    r.assert_says(&["shard map of app"]);
    run_args(&c, &["check"], &[]).assert_code(6);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn remove_and_rebalance_refuse_while_a_shard_map_cannot_be_read() {
    let c = grown(4);
    with_an_unreadable_map(&c);
    for args in [vec!["rebalance"], vec!["remove", &c.node(3).name()]] {
        let r = run_args(&c, &args, &[]);
        r.assert_code(8);
        r.assert_says(&["shard map of app", "Nothing was written"]);
    }
    assert_eq!(c.count_writes(), 0);
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
    // A summary, not 200 tables: the healthy databases are counted, not listed (the security
    // section adds its few lines).
    assert!(r.stdout.lines().count() < 25, "{}", r.stdout);
    r.assert_shows(&["62 databases"]);
    // Requests: 5 per node (its release, `GET /`, among them: issue 23), one page of shard
    // maps, one of `_nodes` docs (the zones; issue 24), one file list per member, one per copy
    // for its file size (the bytes per node; issue 17): 62 databases × q=2 × n=3, and one
    // `_security` per database (the security section; issue 26).
    let requests = c.requests().len();
    assert!(
        requests <= 5 * 5 + 1 + 1 + 5 + 62 * 6 + 62,
        "{requests} requests"
    );
    // `check` (which an init container may ask every 2 s) reads no copy: none per database.
    c.reset_counters();
    run_args(&c, &["check"], &[]).assert_code(0);
    let requests = c.requests().len();
    assert!(requests <= 5 * 5 + 1 + 1 + 5, "{requests} requests");
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
    r.assert_shows(&["3 database(s) to change: 6 move(s)"]);
    for i in [3, 4] {
        r.assert_shows(&[&format!("→ {}", c.node(i).name())]);
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
    r.assert_shows(&[
        "3 database(s) to change: 6 move(s)",
        &format!("{leaving} 6 → 0"),
        &format!("{} 0 → 6", c.node(3).name()),
    ]);
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
        &[("COUCHDB_NODES", &listing(&c, &[0, 2, 3]))],
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
    r.assert_says(&["elsewhere:5984", "not an Erlang name"]);
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn remove_of_a_stopped_node_given_by_address_asks_for_its_name_at_once() {
    let c = grown(4);
    c.node(3).stop();
    let started = Instant::now();
    let r = run_args(
        &c,
        &["remove", &label(&c, 3)],
        &[("COUCHDB_INIT_TIMEOUT", "120s")],
    );
    r.assert_code(2);
    r.assert_says(&[&label(&c, 3), "does not answer", "give the name instead"]);
    // It tells the operator what to do now, not after COUCHDB_INIT_TIMEOUT of retrying a node
    // that may be down for good.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(c.count_writes(), 0);
}

#[test]
fn remove_with_a_wrong_password_exits_4_after_one_try() {
    let c = grown(4);
    let r = run_args(
        &c,
        &["remove", &label(&c, 3)],
        &[("COUCHDB_PASSWORD", "wrong")],
    );
    r.assert_code(4);
    r.assert_says(&["refused COUCHDB_USER/COUCHDB_PASSWORD"]);
    let tries = c.requests().iter().filter(|q| q.status == 401).count();
    assert_eq!(tries, 1, "wrong passwords sent");
}

#[test]
fn remove_by_name_of_a_node_still_in_couchdb_nodes_says_to_take_it_out() {
    // Left in COUCHDB_NODES, the next init (every `compose up`) would join it again.
    let c = grown(4);
    let r = run_args(&c, &["remove", &c.node(3).name()], &[]);
    r.assert_code(0);
    r.assert_says(&["STOP it and WIPE its data", "take it out of COUCHDB_NODES"]);
}

#[test]
fn remove_of_a_stranger_holding_nothing_writes_nothing() {
    let c = formed(3, &["app"]);
    let r = run_args(&c, &["remove", "node9@127.0.0.1"], &[]);
    r.assert_code(0);
    // A misspelt name looks the same: the members are named, so the operator can tell.
    r.assert_says(&["nothing to do", "the members: node{1..3}@127.0.0.1"]);
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

// ---- remove and rebalance for real ---------------------------------------------------------------

/// A formed cluster of `first` nodes with `app` (q=2, n=3) holding 200 documents, grown to
/// `total` nodes (the new ones joined by init).
fn with_docs(first: usize, total: usize) -> (Cluster, Vec<String>) {
    with_docs_and(first, total, Delays::fast())
}

fn with_docs_and(first: usize, total: usize, delays: Delays) -> (Cluster, Vec<String>) {
    let mut c = cluster(first, |b| b.delays(delays));
    run(&c).assert_code(0);
    assert!(c.node(0).create_db_q_n("app", 2, 3));
    let docs = ids("doc", 200);
    write_all(&c, "app", &docs);
    for _ in first..total {
        c.add_node(|s| s);
    }
    if total > first {
        run(&c).assert_code(0);
    }
    settle(&c, &["_users", "_replicator", "app"]);
    c.reset_counters();
    c.clear_shard_map_events();
    (c, docs)
}

/// Writes documents through the nodes `through`, one at a time, while `f` runs; returns what
/// `f` returned and every id a write was acknowledged for.
fn writing_while<T>(
    c: &Cluster,
    db: &str,
    through: &[usize],
    f: impl FnOnce() -> T,
) -> (T, Vec<String>) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut written = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("live{i:05}");
                if c.node(through[i % through.len()]).write_docs(db, &[&id]) == 1 {
                    written.push(id);
                }
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
            written
        });
        let out = f();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (out, writer.join().expect("writer"))
    })
}

#[test]
fn rebalance_after_growth_spreads_every_database_and_loses_nothing() {
    let (c, docs) = with_docs(3, 5);
    let dbs = ["_users", "_replicator", "app"];
    let before: Vec<_> = dbs.iter().map(|db| counts_before(&c, db)).collect();
    let (r, live) = writing_while(&c, "app", &[0, 1, 2, 3, 4], || {
        run_args(&c, &["rebalance"], &[])
    });
    r.assert_code(0);
    r.assert_says(&["6 copies moved"]);
    for (db, counts) in dbs.iter().zip(&before) {
        assert_never_short(&c, db, counts, 3);
    }
    let all: Vec<String> = docs.iter().chain(&live).cloned().collect();
    assert!(
        !live.is_empty(),
        "the writer wrote nothing during the rebalance"
    );
    assert_readable(&c, "app", &[0, 1, 2, 3, 4], &all);
    // 18 copies over 5 nodes: 4, 4, 4, 3, 3 in some order; each database on 2,1,1,1,1.
    let mut per = copies_per_node(&c, &["_users", "_replicator", "app"]);
    per.sort();
    assert_eq!(per, [3, 3, 4, 4, 4]);
    for db in ["_users", "_replicator", "app"] {
        let mut one = copies_per_node(&c, &[db]);
        one.sort();
        assert_eq!(one, [1, 1, 1, 1, 2], "{db}");
    }
    // Idempotent: a second run writes nothing; status is healthy and balanced.
    c.reset_counters();
    let again = run_args(&c, &["rebalance"], &[]);
    again.assert_code(0);
    assert_eq!(c.count_writes(), 0, "{}", again.stderr);
    let s = status(&c, &[]);
    s.assert_code(0);
    s.assert_shows(&["spread evenly"]);
}

#[test]
fn rebalance_deletes_leftovers_only_when_asked() {
    let (c, _) = with_docs(3, 4);
    run_args(&c, &["rebalance"], &[]).assert_code(0);
    let leftovers = |c: &Cluster| -> usize {
        let j = json(&status(c, &["--json"]));
        j["leftovers"].as_array().unwrap().len()
    };
    let kept = leftovers(&c);
    assert!(kept > 0, "the copies moved off leave their files (trap 16)");
    let r = run_args(&c, &["rebalance", "--delete-leftovers"], &[]);
    r.assert_code(0);
    r.assert_says(&[&format!("{kept} of {kept} leftover shard file(s) deleted")]);
    assert_eq!(leftovers(&c), 0);
    status(&c, &[]).assert_code(0);
}

/// 4 members, finished on all four, so node4 holds copies of `_users`, `_replicator` and
/// `app` (transcript 12).
fn four_with_docs() -> (Cluster, Vec<String>) {
    with_docs(4, 4)
}

/// No shard map of the test's databases lists `node`.
fn assert_no_copy_on(c: &Cluster, node: &str) {
    for db in ["_users", "_replicator", "app"] {
        assert!(!holds(c, db, node), "{db} still lists {node}");
    }
}

fn holds(c: &Cluster, db: &str, node: &str) -> bool {
    c.node(0)
        .shards(db)
        .unwrap()
        .values()
        .flatten()
        .any(|h| h == node)
}

#[test]
fn remove_moves_every_copy_first_then_the_node_leaves() {
    let (c, docs) = four_with_docs();
    let leaving = c.node(3).name();
    assert!(["_users", "_replicator", "app"]
        .iter()
        .any(|db| holds(&c, db, &leaving)));
    let before: Vec<(&str, Vec<(String, u64)>)> = ["_users", "_replicator", "app"]
        .iter()
        .map(|db| (*db, counts_before(&c, db)))
        .collect();
    let nodes = listing(&c, &[0, 1, 2]);
    let (r, live) = writing_while(&c, "app", &[0, 1, 2], || {
        run_args(&c, &["remove", &leaving], &[("COUCHDB_NODES", &nodes)])
    });
    r.assert_code(0);
    r.assert_says(&[
        "STOP it and WIPE its data",
        "every other member (3) has dropped",
    ]);
    for (db, counts) in &before {
        assert_never_short(&c, db, counts, 3);
        assert!(!holds(&c, db, &leaving), "{db} still lists {leaving}");
    }
    let all: Vec<String> = docs.iter().chain(&live).cloned().collect();
    assert_readable(&c, "app", &[0, 1, 2], &all);
    for i in 0..3 {
        let (_, members) = c.node(i).membership();
        assert!(
            !members.contains(&leaving),
            "{} still lists {leaving}",
            c.node(i).name()
        );
    }
    // Trap 14: the _nodes DELETE came after the last shard-map edit (all go to one node).
    let writes: Vec<String> = c
        .node(0)
        .requests()
        .into_iter()
        .filter(|q| matches!(q.method.as_str(), "PUT" | "DELETE"))
        .map(|q| format!("{} {}", q.method, q.path))
        .collect();
    let last_edit = writes
        .iter()
        .rposition(|w| w.starts_with("PUT /_node/_local/_dbs/"))
        .unwrap();
    let delete = writes
        .iter()
        .position(|w| w.starts_with("DELETE /_node/_local/_nodes/"))
        .unwrap();
    assert!(last_edit < delete, "{writes:#?}");
    // A second run finds nothing to do and writes nothing.
    c.reset_counters();
    let again = run_args(&c, &["remove", &leaving], &[("COUCHDB_NODES", &nodes)]);
    again.assert_code(0);
    again.assert_says(&["nothing to do"]);
    assert_eq!(c.count_writes(), 0);
    // The three left are healthy once the removed node is stopped.
    c.node(3).stop();
    run_args(&c, &["status"], &[("COUCHDB_NODES", &nodes)]).assert_code(0);
}

#[test]
fn remove_moves_the_copies_of_a_node_that_is_already_down() {
    let (c, docs) = four_with_docs();
    let leaving = c.node(3).name();
    c.node(3).stop();
    let nodes = listing(&c, &[0, 1, 2]);
    let r = run_args(&c, &["remove", &leaving], &[("COUCHDB_NODES", &nodes)]);
    r.assert_code(0);
    assert_no_copy_on(&c, &leaving);
    assert_readable(&c, "app", &[0, 1, 2], &docs);
    run_args(&c, &["status"], &[("COUCHDB_NODES", &nodes)]).assert_code(0);
}

#[test]
fn remove_of_a_down_node_an_interrupted_move_was_filling_takes_that_copy_back() {
    // A rebalance added a copy of `app` on node4 (to replace node3's) and was killed before
    // that copy was proven; then node4 died. Its new copy can never be proven now: the move is
    // undone (node3's copy never left), not waited for until every deadline.
    let (c, docs) = with_docs(3, 4);
    let (from, to) = (c.node(2).name(), c.node(3).name());
    let mut doc = with_copy(dbs_doc(&c, 0, "app"), A, &to);
    doc["couchdb_cluster_init"] =
        serde_json::json!({"moves": [{"range": A, "from": from, "to": to}]});
    put_dbs_doc(&c, 0, "app", &doc);
    let before = counts_before(&c, "app");
    c.node(3).stop();
    let nodes = listing(&c, &[0, 1, 2]);
    let r = run_args(&c, &["remove", &to], &[("COUCHDB_NODES", &nodes)]);
    r.assert_code(0);
    assert_no_copy_on(&c, &to);
    assert!(holds(&c, "app", &from), "node3's copy was never to leave");
    assert_never_short(&c, "app", &before, 3);
    assert_readable(&c, "app", &[0, 1, 2], &docs);
    run_args(&c, &["status"], &[("COUCHDB_NODES", &nodes)]).assert_code(0);
}

/// `remove node3 --accept-fewer-copies`, COUCHDB_NODES listing the two that stay (returned).
fn remove_third_accepting_fewer(c: &Cluster) -> (common::Run, String) {
    let nodes = listing(c, &[0, 1]);
    let r = run_args(
        c,
        &["remove", &c.node(2).name(), "--accept-fewer-copies"],
        &[("COUCHDB_NODES", &nodes)],
    );
    (r, nodes)
}

#[test]
fn remove_with_accept_fewer_copies_keeps_what_the_others_can_hold() {
    let (c, docs) = with_docs(3, 3);
    let (r, nodes) = remove_third_accepting_fewer(&c);
    r.assert_code(0);
    r.assert_says(&["with no replacement"]);
    for db in ["_users", "_replicator", "app"] {
        for holders in c.node(0).shards(db).unwrap().values() {
            assert_eq!(holders.len(), 2, "{db}: {holders:?}");
        }
    }
    assert_readable(&c, "app", &[0, 1], &docs);
    c.node(2).stop();
    run_args(&c, &["status"], &[("COUCHDB_NODES", &nodes)]).assert_code(0);
}

#[test]
fn remove_with_accept_fewer_copies_loses_no_document_only_the_dropped_copy_holds() {
    // Fewer copies, not fewer documents: node3's copies took writes while the two others were
    // down (202, one copy), and internal replication has not pushed them yet when the remove
    // starts. Once node3 is out of the maps, nothing ever pushes them again.
    let slow_sync = Delays {
        sync_push: (Duration::from_millis(2500), Duration::from_millis(2500)),
        sync_delay: Duration::from_millis(2500),
        ..Delays::fast()
    };
    let (c, docs) = with_docs_and(3, 3, slow_sync);
    c.node(0).stop();
    c.node(1).stop();
    let only = ids("only", 20);
    assert_eq!(
        c.node(2).write_docs("app", &only),
        20,
        "one-copy writes (202)"
    );
    c.node(0).start();
    c.node(1).start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.node(0).membership().0.len() < 3 {
        assert!(Instant::now() < deadline, "the nodes never reconnected");
        std::thread::sleep(Duration::from_millis(10));
    }
    remove_third_accepting_fewer(&c).0.assert_code(0);
    c.node(2).stop();
    let all: Vec<String> = docs.iter().chain(&only).cloned().collect();
    assert_readable(&c, "app", &[0, 1], &all);
}

#[test]
fn remove_also_moves_the_copies_of_a_node_whose_nodes_doc_was_deleted_too_early() {
    // Trap 14: the operator deleted the _nodes doc first; the maps still list the node.
    let (c, docs) = four_with_docs();
    let leaving = c.node(3).name();
    let url = format!("{}/_node/_local/_nodes/{leaving}", c.node(0).url());
    let doc = ureq::get(&url)
        .header("Authorization", common::authorization())
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let rev = serde_json::from_str::<Value>(&doc).unwrap()["_rev"]
        .as_str()
        .unwrap()
        .to_string();
    ureq::delete(&format!("{url}?rev={rev}"))
        .header("Authorization", common::authorization())
        .call()
        .unwrap();
    let nodes = listing(&c, &[0, 1, 2]);
    let s = run_args(&c, &["status"], &[("COUCHDB_NODES", &nodes)]);
    assert_ne!(s.code, 0);
    s.assert_shows(&["not a member"]);
    let r = run_args(&c, &["remove", &leaving], &[("COUCHDB_NODES", &nodes)]);
    r.assert_code(0);
    assert_no_copy_on(&c, &leaving);
    assert_readable(&c, "app", &[0, 1, 2], &docs);
}

/// A cluster grown 3 → 4 whose `app` shard map has two edits from one revision (trap 13:
/// both 201, one loses silently), seen as a conflict on node1.
fn conflicted() -> Cluster {
    let slow_ring = Delays {
        ring_hop: (Duration::from_millis(150), Duration::from_millis(200)),
        ..Delays::fast()
    };
    let mut c = cluster(3, |b| b.delays(slow_ring));
    run(&c).assert_code(0);
    assert!(c.node(0).create_db_q_n("app", 2, 3));
    c.add_node(|s| s);
    run(&c).assert_code(0);
    let base = dbs_doc(&c, 0, "app");
    let mut edits = [base.clone(), base];
    edits[0]["props"] = serde_json::json!({"edit": "a"});
    edits[1]["props"] = serde_json::json!({"edit": "b"});
    std::thread::scope(|s| {
        for (i, e) in edits.iter().enumerate() {
            let c = &c;
            s.spawn(move || put_dbs_doc(c, i, "app", e));
        }
    });
    let seen = || {
        c.node(0)
            .dbs_doc("app")
            .is_some_and(|d| d.get("_conflicts").is_some())
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen() {
        assert!(Instant::now() < deadline, "no conflict appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    c
}

#[test]
fn status_finds_a_conflict_in_a_shard_map() {
    let c = conflicted();
    let r = status(&c, &[]);
    r.assert_code(6);
    r.assert_shows(&["app: its shard map has 1 conflicting revision(s)"]);
}

#[test]
fn a_conflict_in_a_shard_map_is_found_and_resolved() {
    let c = conflicted();
    let r = run_args(&c, &["rebalance"], &[]);
    r.assert_code(0);
    r.assert_says(&[
        "two edits of its shard map were made from one revision",
        "1 shard-map conflict(s) resolved",
    ]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.nodes().iter().any(|n| {
        n.dbs_doc("app")
            .is_some_and(|d| d.get("_conflicts").is_some())
    }) {
        assert!(Instant::now() < deadline, "a node still has the conflict");
        std::thread::sleep(Duration::from_millis(20));
    }
    status(&c, &[]).assert_code(0);
}

/// Runs `args` and SIGKILLs the binary at its `k`-th write (PUT, POST or DELETE): the write
/// is applied but its answer never reaches the binary — the harshest place to be interrupted.
/// `false` if the run ended by itself first.
fn killed_after_write(c: &Cluster, args: &[&str], env: &[(&str, &str)], k: usize) -> bool {
    let child: Arc<Mutex<Option<Child>>> = Arc::default();
    let killed = Arc::new(AtomicBool::new(false));
    let seen = AtomicUsize::new(0);
    {
        let (child, killed) = (Arc::clone(&child), Arc::clone(&killed));
        // Runs on the node's answering thread, after the write and before its answer.
        c.on_write(move |_, _| {
            if seen.fetch_add(1, Ordering::SeqCst) + 1 == k {
                if let Some(ch) = child.lock().unwrap().as_mut() {
                    ch.kill().expect("kill");
                    killed.store(true, Ordering::SeqCst);
                }
            }
        });
    }
    {
        // Held while spawning, so that the hook cannot miss the child.
        let mut slot = child.lock().unwrap();
        *slot = Some(
            common::command(c, args, env)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn"),
        );
    }
    loop {
        if let Some(ch) = child.lock().unwrap().as_mut() {
            if ch.try_wait().expect("wait").is_some() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // The next runs are not to be killed.
    c.on_write(|_, _| {});
    killed.load(Ordering::SeqCst)
}

/// For every k: kill the operation after its k-th write, run it again, and check that it
/// converged with nothing lost and no range ever short of complete copies.
fn killed_at_every_step(
    args: &[&str],
    first: usize,
    total: usize,
    env: impl Fn(&Cluster) -> Vec<(String, String)>,
    check: impl Fn(&Cluster),
) {
    for k in 1.. {
        let (c, docs) = with_docs(first, total);
        let env = env(&c);
        let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let dbs = ["_users", "_replicator", "app"];
        let before: Vec<_> = dbs.iter().map(|db| counts_before(&c, db)).collect();
        let killed = killed_after_write(&c, args, &env, k);
        let r = run_args(&c, args, &env);
        r.assert_code(0);
        for (db, counts) in dbs.iter().zip(&before) {
            if c.shard_map_events().iter().any(|e| e.db == *db) {
                assert_never_short(&c, db, counts, 3);
            }
        }
        assert_readable(&c, "app", &[0, 1, 2], &docs);
        check(&c);
        c.reset_counters();
        run_args(&c, args, &env).assert_code(0);
        assert_eq!(
            c.count_writes(),
            0,
            "after a kill at write {k}, a third run still wrote"
        );
        if !killed {
            assert!(k > 3, "the whole run made only {k} writes");
            break;
        }
    }
}

#[test]
fn rebalance_killed_at_every_step_then_run_again_converges() {
    killed_at_every_step(
        &["rebalance"],
        3,
        5,
        |_| Vec::new(),
        |c| {
            let mut per = copies_per_node(c, &["_users", "_replicator", "app"]);
            per.sort();
            assert_eq!(per, [3, 3, 4, 4, 4]);
            let s = status(c, &[]);
            s.assert_code(0);
            s.assert_shows(&["spread evenly"]);
        },
    );
}

#[test]
fn remove_killed_at_every_step_then_run_again_converges() {
    let env = |c: &Cluster| vec![("COUCHDB_NODES".to_string(), listing(c, &[0, 1, 2]))];
    killed_at_every_step(&["remove", "node4@127.0.0.1"], 4, 4, env, |c| {
        assert_no_copy_on(c, "node4@127.0.0.1");
        for i in 0..3 {
            assert!(!c
                .node(i)
                .membership()
                .1
                .contains(&"node4@127.0.0.1".to_string()));
        }
    });
}

#[test]
fn a_deadline_in_the_middle_of_a_move_keeps_every_copy_and_a_rerun_finishes() {
    // Internal replication slower than the whole deadline: no new copy can fill in time.
    let slow_sync = Delays {
        sync_push: (Duration::from_millis(2500), Duration::from_millis(2500)),
        ..Delays::fast()
    };
    let (c, docs) = with_docs_and(3, 4, slow_sync);
    let dbs = ["_users", "_replicator", "app"];
    let before: Vec<_> = dbs.iter().map(|db| counts_before(&c, db)).collect();
    let r = run_args(&c, &["rebalance"], &[("COUCHDB_INIT_TIMEOUT", "1500ms")]);
    r.assert_code(9);
    r.assert_says(&["did not fill before the deadline", "run it again"]);
    let s = status(&c, &[]);
    s.assert_code(6);
    s.assert_shows(&["a move was interrupted"]);
    let r = run_args(&c, &["rebalance"], &[]);
    r.assert_code(0);
    for (db, counts) in dbs.iter().zip(&before) {
        assert_never_short(&c, db, counts, 3);
    }
    assert_readable(&c, "app", &[0, 1, 2, 3], &docs);
    status(&c, &[]).assert_code(0);
}

#[test]
fn a_target_node_restarting_during_a_rebalance_loses_nothing() {
    let (c, docs) = with_docs(3, 5);
    let dbs = ["_users", "_replicator", "app"];
    let before: Vec<_> = dbs.iter().map(|db| counts_before(&c, db)).collect();
    let first = std::thread::scope(|s| {
        s.spawn(|| {
            // Once the first copies are added (the first write), node5 restarts, twice.
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.count_writes() == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            for _ in 0..2 {
                c.node(4).restart();
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        run_args(&c, &["rebalance"], &[])
    });
    // It finishes, or stops without removing anything (exit 9); never anything else.
    assert!(
        matches!(first.code, 0 | 9),
        "exit {}: {}",
        first.code,
        first.stderr
    );
    run_args(&c, &["rebalance"], &[]).assert_code(0);
    for (db, counts) in dbs.iter().zip(&before) {
        assert_never_short(&c, db, counts, 3);
    }
    assert_readable(&c, "app", &[0, 1, 2, 3, 4], &docs);
    status(&c, &[]).assert_code(0);
}

// ---- placement over the whole cluster (issue 17) ------------------------------------------------

/// The single-range databases of `many`: `count` of q=1, n=3, the first `large` holding 300
/// documents each, the others 3.
struct Many {
    dbs: Vec<String>,
    docs: Vec<Vec<String>>,
}

/// A formed cluster of `first` nodes with `count` q=1 databases (a mix of large and small),
/// grown to `total` nodes (the new ones joined by init).
fn many(first: usize, total: usize, count: usize, large: usize) -> (Cluster, Many) {
    let mut c = cluster(first, |b| b);
    run(&c).assert_code(0);
    let dbs: Vec<String> = (0..count).map(|i| format!("tenant{i:03}")).collect();
    assert_eq!(c.node(0).create_dbs_q_n(&dbs, 1, 3), count);
    let docs: Vec<Vec<String>> = (0..count)
        .map(|i| ids("doc", if i < large { 300 } else { 3 }))
        .collect();
    for (db, ids) in dbs.iter().zip(&docs) {
        write_all(&c, db, ids);
    }
    for _ in first..total {
        c.add_node(|s| s);
    }
    if total > first {
        run(&c).assert_code(0);
    }
    let mut all: Vec<&str> = vec!["_users", "_replicator"];
    all.extend(dbs.iter().map(String::as_str));
    settle(&c, &all);
    c.reset_counters();
    c.clear_shard_map_events();
    (c, Many { dbs, docs })
}

impl Many {
    fn all(&self) -> Vec<&str> {
        let mut all: Vec<&str> = vec!["_users", "_replicator"];
        all.extend(self.dbs.iter().map(String::as_str));
        all
    }

    /// No range of these databases was ever short of 3 complete copies (`before`: each one's
    /// counts before the operation), and every document is readable through `through`.
    fn assert_nothing_lost(&self, c: &Cluster, before: &[Vec<(String, u64)>], through: &[usize]) {
        for (db, counts) in self.dbs.iter().zip(before) {
            if c.shard_map_events().iter().any(|e| e.db == *db) {
                assert_never_short(c, db, counts, 3);
            }
        }
        for (db, ids) in self.dbs.iter().zip(&self.docs) {
            assert_readable(c, db, through, ids);
        }
    }
}

/// Copies per member (those in `members`) over every database: (fewest, most).
fn spread_over(c: &Cluster, dbs: &[&str], members: &[usize]) -> (usize, usize) {
    let per = copies_per_node(c, dbs);
    let on: Vec<usize> = members.iter().map(|&i| per[i]).collect();
    (*on.iter().min().unwrap(), *on.iter().max().unwrap())
}

/// Every range of every database has `n` copies on `n` different nodes.
fn assert_copies_kept(c: &Cluster, dbs: &[&str], n: usize) {
    for db in dbs {
        for (range, holders) in c.node(0).shards(db).expect("db exists") {
            let mut distinct = holders.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), n, "{db} {range}: {holders:?}");
        }
    }
}

#[test]
fn rebalance_after_growth_with_many_single_range_databases_evens_out_the_whole_cluster() {
    let (c, m) = many(3, 4, 60, 6);
    let all = m.all();
    let node4 = c.node(3).name();
    // Before: every database is spread within itself (1,1,1,0), but node4 holds nothing.
    let s = status(&c, &[]);
    s.assert_code(0);
    s.assert_shows(&[
        &format!("unbalanced: {node4} holds 0 of 192 copies (even would be 48)"),
        "verdict: healthy",
    ]);
    // A warning, not a problem: check says healthy.
    run_args(&c, &["check"], &[]).assert_code(0);
    let j = json(&status(&c, &["--json"]));
    assert_eq!(j["healthy"], true);
    assert!(j["unbalanced"].as_str().unwrap().contains(&node4));
    assert!(j["nodes"][0]["bytes"].as_u64().unwrap() > 0);

    // --dry-run: the plan with copies and bytes per node, and no write.
    let dry = run_args(&c, &["rebalance", "--dry-run"], &[]);
    dry.assert_code(0);
    dry.assert_shows(&[
        "per node (copies, bytes), before → after:",
        &format!("{node4} 0 → 48 copies, 0 B → "),
    ]);
    assert_eq!(c.count_writes(), 0);

    let before: Vec<_> = m.dbs.iter().map(|db| counts_before(&c, db)).collect();
    let r = run_args(&c, &["rebalance"], &[]);
    r.assert_code(0);
    r.assert_says(&["48 copies moved"]);
    // 192 copies over 4 members: 48 each, and every database kept its 3 copies.
    assert_eq!(spread_over(&c, &all, &[0, 1, 2, 3]), (48, 48));
    assert_copies_kept(&c, &all, 3);
    m.assert_nothing_lost(&c, &before, &[0, 1, 2, 3]);
    // Bytes moved too: node4 holds a share of the large databases, not only small ones.
    let j = json(&status(&c, &["--json"]));
    let bytes: Vec<u64> = j["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["bytes"].as_u64().unwrap())
        .collect();
    let total: u64 = bytes.iter().sum();
    for b in &bytes {
        assert!(*b * 8 > total, "bytes per node {bytes:?}");
    }
    assert!(j["unbalanced"].is_null());

    // A rerun writes nothing; status reports no imbalance.
    c.reset_counters();
    let again = run_args(&c, &["rebalance"], &[]);
    again.assert_code(0);
    again.assert_says(&["nothing moved"]);
    assert_eq!(c.count_writes(), 0, "{}", again.stderr);
    let s = status(&c, &[]);
    s.assert_code(0);
    s.assert_shows(&["spread evenly"]);
    assert!(!s.stdout.contains("unbalanced:"), "{}", s.stdout);
}

#[test]
fn moves_of_different_databases_run_concurrently_and_report_progress() {
    let (c, m) = many(3, 4, 24, 0);
    let r = run_args(
        &c,
        &["rebalance"],
        &[("COUCHDB_MOVE_CONCURRENCY", "8"), ("RUST_LOG", "debug")],
    );
    r.assert_code(0);
    assert_eq!(spread_over(&c, &m.all(), &[0, 1, 2, 3]), (21, 21));
    assert_copies_kept(&c, &m.all(), 3);
    // Several databases were under way at once: an "adding" of one came before the "removed"
    // of another.
    let lines: Vec<&str> = r.stderr.lines().collect();
    let first_done = lines
        .iter()
        .position(|l| l.contains("removed the old copies"))
        .expect("a move finished");
    let added_before = lines[..first_done]
        .iter()
        .filter(|l| l.contains(": adding "))
        .count();
    assert!(added_before > 1, "{}", r.stderr);
    // Never two edits of one database at once: each database's maps went add → remove.
    for db in &m.dbs {
        let events: Vec<_> = c
            .shard_map_events()
            .into_iter()
            .filter(|e| e.db == *db && e.node == c.node(0).name())
            .collect();
        assert!(events.len() <= 2, "{db}: {events:?}");
    }
}

#[test]
fn remove_on_a_cluster_of_many_databases_leaves_the_others_even() {
    let (c, m) = many(3, 5, 40, 4);
    let all = m.all();
    run_args(&c, &["rebalance"], &[]).assert_code(0);
    let (low, high) = spread_over(&c, &all, &[0, 1, 2, 3, 4]);
    assert!(high - low <= 1, "{low}..{high}");
    let node5 = c.node(4).name();
    let env = [("COUCHDB_NODES", listing(&c, &[0, 1, 2, 3]))];
    let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let before: Vec<_> = m.dbs.iter().map(|db| counts_before(&c, db)).collect();
    c.clear_shard_map_events();
    let r = run_args(&c, &["remove", &node5], &env);
    r.assert_code(0);
    for db in &all {
        assert!(!holds(&c, db, &node5), "{db} still lists {node5}");
    }
    assert_copies_kept(&c, &all, 3);
    let (low, high) = spread_over(&c, &all, &[0, 1, 2, 3]);
    assert!(high - low <= 1, "{low}..{high}");
    m.assert_nothing_lost(&c, &before, &[0, 1, 2, 3]);
}

#[test]
fn concurrent_moves_killed_part_way_then_run_again_converge() {
    // Four databases under way at once when the kill lands: each rerun finishes them all.
    for k in [3, 11, 26, 45] {
        let (c, m) = many(3, 4, 24, 3);
        let all = m.all();
        let before: Vec<_> = m.dbs.iter().map(|db| counts_before(&c, db)).collect();
        let env = [("COUCHDB_MOVE_CONCURRENCY", "4")];
        let killed = killed_after_write(&c, &["rebalance"], &env, k);
        assert!(killed, "the run ended before its write {k}");
        run_args(&c, &["rebalance"], &env).assert_code(0);
        assert_eq!(
            spread_over(&c, &all, &[0, 1, 2, 3]),
            (21, 21),
            "kill at {k}"
        );
        assert_copies_kept(&c, &all, 3);
        m.assert_nothing_lost(&c, &before, &[0, 1, 2, 3]);
        c.reset_counters();
        run_args(&c, &["rebalance"], &env).assert_code(0);
        assert_eq!(
            c.count_writes(),
            0,
            "after a kill at write {k}, a third run still wrote"
        );
    }
}

/// Prints the runs docs/operations.md shows, one after the other: 5 nodes on loopback, `orders`
/// (q=2, 200 documents) and `tenant1`…`tenant8` (q=1, 3 documents each) all made before node4
/// and node5 joined; `status`, `rebalance --dry-run`, `rebalance`, `rebalance` again,
/// `remove node5@127.0.0.1` (node5 out of COUCHDB_NODES), then node5 and node3 stopped and
/// `status`. Not a check of its own (the tests above check all of it):
/// `cargo test --test ops docs_examples -- --ignored --nocapture`.
#[test]
#[ignore]
fn docs_examples() {
    let mut c = cluster(3, |b| b);
    run(&c).assert_code(0);
    assert!(c.node(0).create_db_q_n("orders", 2, 3));
    write_all(&c, "orders", &ids("order", 200));
    let tenants: Vec<String> = (1..=8).map(|i| format!("tenant{i}")).collect();
    for t in &tenants {
        assert!(c.node(0).create_db_q_n(t, 1, 3));
        write_all(&c, t, &ids("doc", 3));
    }
    for _ in 0..2 {
        c.add_node(|s| s);
    }
    run(&c).assert_code(0);
    let mut dbs = vec!["_users", "_replicator", "orders"];
    dbs.extend(tenants.iter().map(String::as_str));
    settle(&c, &dbs);
    let show = |title: &str, r: &common::Run| {
        println!(
            "$ couchdb-cluster-init {title}   # exit {}\n{}--- stderr:\n{}",
            r.code, r.stdout, r.stderr
        );
    };
    for args in [
        &["status"][..],
        &["rebalance", "--dry-run"],
        &["rebalance"],
        &["rebalance"],
    ] {
        let r = run_args(&c, args, &[]);
        r.assert_code(0);
        show(&args.join(" "), &r);
    }
    let leaving = c.node(4).name();
    let four = listing(&c, &[0, 1, 2, 3]);
    let env = [("COUCHDB_NODES", four.as_str())];
    let r = run_args(&c, &["remove", &leaving], &env);
    r.assert_code(0);
    show(&format!("remove {leaving}"), &r);
    c.node(4).stop();
    c.node(2).stop();
    let r = run_args(&c, &["status"], &env);
    r.assert_code(3);
    show("status   # node5 removed and stopped, node3 stopped", &r);
}

#[test]
fn members_not_connected_are_matched_to_the_listed_nodes_that_do_not_answer() {
    let c = cluster(4, |b| b);
    run(&c).assert_code(0);
    c.node(3).stop();
    let r = run_args(&c, &["status"], &[]);
    r.assert_shows(&[&format!(
        "member {} is not connected (it may be {}, which does not answer)",
        c.node(3).name(),
        label(&c, 3)
    )]);
    c.node(2).stop();
    let r = run_args(&c, &["status"], &[]);
    r.assert_shows(&[&format!(
        "member {} is not connected (it may be one of {}, {}, which do not answer)",
        c.node(2).name(),
        label(&c, 2),
        label(&c, 3)
    )]);
}
