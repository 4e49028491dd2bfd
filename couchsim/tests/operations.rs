//! The operations model (PROTOCOL.md "Moving a shard copy", "Removing a node", "Spreading
//! old databases", traps 11–16): documents in clustered dbs, per-node shard copies, `_dbs`
//! edits and their ring propagation, internal replication, and what a removed node does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use couchsim::{Cluster, Delays};
use serde_json::{json, Value};

mod common;
use common::*;

const R0: &str = "00000000-7fffffff";
const R1: &str = "80000000-ffffffff";
const LONG: Duration = Duration::from_secs(10);

fn delays() -> Delays {
    Delays {
        removed_hears_one_in: 0,
        ..fast()
    }
}

/// `total` nodes; node1..node`members` joined through `_nodes` PUTs on node1 (one after the
/// other: trap 22) and finished.
fn formed(total: usize, members: usize, d: Delays) -> Cluster {
    let c = Cluster::builder().nodes(total).delays(d).seed(11).start();
    let a = c.node(0).addr();
    for i in 2..=members {
        let r = req(
            a,
            "PUT",
            &format!("/_node/_local/_nodes/node{i}@127.0.0.1"),
            Some("{}"),
        );
        assert_eq!(r.status, 201);
    }
    let want: Vec<usize> = (1..=members).collect();
    wait_for("formation", LONG, || {
        (0..members).all(|i| c.node(i).membership() == (names(&want), names(&want)))
    });
    assert_eq!(finish_cluster(a).status, 201);
    c
}

fn join(c: &Cluster, i: usize) {
    let r = req(
        c.node(0).addr(),
        "PUT",
        &format!("/_node/_local/_nodes/node{i}@127.0.0.1"),
        Some("{}"),
    );
    assert_eq!(r.status, 201);
    wait_for(&format!("node{i} joined"), LONG, || {
        c.node(i - 1)
            .membership()
            .1
            .contains(&format!("node{i}@127.0.0.1"))
            && c.node(0)
                .membership()
                .0
                .contains(&format!("node{i}@127.0.0.1"))
    });
}

fn docs_body(ids: impl Iterator<Item = String>) -> String {
    let docs: Vec<Value> = ids
        .enumerate()
        .map(|(i, id)| json!({"_id": id, "n": i}))
        .collect();
    json!({ "docs": docs }).to_string()
}

fn bulk(a: SocketAddr, db: &str, n: usize, prefix: &str) -> Resp {
    let body = docs_body((0..n).map(|i| format!("{prefix}{i:03}")));
    req(a, "POST", &format!("/{db}/_bulk_docs"), Some(&body))
}

fn dbs_doc(a: SocketAddr, db: &str) -> Value {
    let r = req(a, "GET", &format!("/_node/_local/_dbs/{db}"), None);
    assert_eq!(r.status, 200);
    r.json()
}

fn suffix(doc: &Value) -> String {
    doc["shard_suffix"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as u8 as char)
        .collect()
}

fn edit(doc: &mut Value, op: &str, range: &str, node: &str) {
    doc["changelog"]
        .as_array_mut()
        .unwrap()
        .push(json!([op, range, node]));
    {
        let by_node = doc["by_node"].as_object_mut().unwrap();
        if op == "add" {
            by_node
                .entry(node)
                .or_insert(json!([]))
                .as_array_mut()
                .unwrap()
                .push(json!(range));
        } else {
            by_node[node].as_array_mut().unwrap().retain(|r| r != range);
            if by_node[node].as_array().unwrap().is_empty() {
                by_node.remove(node);
            }
        }
    }
    let list = doc["by_range"][range].as_array_mut().unwrap();
    if op == "add" {
        list.push(json!(node));
    } else {
        list.retain(|n| n != node);
    }
}

fn put_dbs(a: SocketAddr, db: &str, doc: &Value) -> Resp {
    req(
        a,
        "PUT",
        &format!("/_node/_local/_dbs/{db}"),
        Some(&doc.to_string()),
    )
}

/// `GET /_node/<node>/shards%2F<range>%2F<db><suffix>` through `via`: the copy's doc_count.
fn copy_count(via: SocketAddr, node: usize, range: &str, db: &str, sfx: &str) -> Option<u64> {
    let path = format!("/_node/node{node}@127.0.0.1/shards%2F{range}%2F{db}{sfx}");
    let r = req(via, "GET", &path, None);
    (r.status == 200).then(|| r.json()["doc_count"].as_u64().unwrap())
}

/// Renames a range in both maps of `db`'s `_dbs` doc (every holder keeps its copy): 201.
fn rename_range(a: SocketAddr, db: &str, from: &str, to: &str) -> Value {
    let mut doc = dbs_doc(a, db);
    let nodes = doc["by_range"][from].clone();
    doc["by_range"].as_object_mut().unwrap().remove(from);
    doc["by_range"][to] = nodes;
    for ranges in doc["by_node"].as_object_mut().unwrap().values_mut() {
        for r in ranges.as_array_mut().unwrap() {
            if r == from {
                *r = json!(to);
            }
        }
    }
    assert_eq!(put_dbs(a, db, &doc).status, 201);
    doc
}

fn node_name(i: usize) -> String {
    format!("node{i}@127.0.0.1")
}

fn shards_everywhere(c: &Cluster, db: &str, range: &str, has: &str, yes: bool) -> bool {
    c.nodes().iter().filter(|n| n.is_running()).all(|n| {
        n.shards(db)
            .map(|s| s.get(range).map(|l| l.iter().any(|x| x == has)) == Some(yes))
            .unwrap_or(false)
    })
}

#[test]
fn a_copy_moves_as_the_docs_describe_and_no_range_ever_loses_a_copy() {
    let d = delays();
    let c = formed(4, 3, d.clone());
    let a = c.node(0).addr();
    assert_eq!(req(a, "PUT", "/moveme?q=2&n=3", None).status, 201);
    let r = bulk(a, "moveme", 200, "doc");
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json()[0],
        json!({"ok": true, "id": "doc000", "rev": "1-6a1adde9be9cd8e7d5ef76edc6836391"})
    );
    let info = req(a, "GET", "/moveme", None).json();
    assert_eq!(info["doc_count"], 200);
    assert_eq!(info["cluster"], json!({"q": 2, "n": 3, "w": 2, "r": 2}));
    join(&c, 4);
    let doc = dbs_doc(a, "moveme");
    let sfx = suffix(&doc);
    for n in 1..=3 {
        assert_eq!(copy_count(a, n, R0, "moveme", &sfx), Some(88));
        assert_eq!(copy_count(a, n, R1, "moveme", &sfx), Some(112));
    }
    assert_eq!(
        req(a, "GET", "/moveme/_shards/doc000", None).json(),
        json!({"range": R1, "nodes": names(&[3, 2, 1])})
    );
    // documented step 2, through node1: the old value comes back
    let mm = "/_node/node4@127.0.0.1/_config/couchdb/maintenance_mode";
    let r = req(a, "PUT", mm, Some(r#""true""#));
    assert_eq!((r.status, r.json()), (200, json!("")));
    let r = req(c.node(3).addr(), "GET", "/_up", None);
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"status": "maintenance_mode"}))
    );
    // the bulk write's own push (sync_delay after it) has run: nothing is pending now
    std::thread::sleep(d.sync_delay * 3);
    let t_before = Instant::now();
    // step 3: add node4 to 00000000-7fffffff, on node1
    let mut doc = dbs_doc(a, "moveme");
    edit(&mut doc, "add", R0, &node_name(4));
    let r = put_dbs(a, "moveme", &doc);
    assert_eq!(r.status, 201);
    assert!(r.json()["rev"].as_str().unwrap().starts_with("2-"));
    wait_for("the edit on every node", LONG, || {
        shards_everywhere(&c, "moveme", R0, &node_name(4), true)
    });
    // node4 made the file itself; the edit copied no data (trap 11)
    let files = req(a, "GET", "/_node/node4@127.0.0.1/_all_dbs", None).json();
    assert!(files
        .as_array()
        .unwrap()
        .contains(&json!(format!("shards/{R0}/moveme{sfx}"))));
    assert_eq!(
        &files.as_array().unwrap()[..3],
        &[json!("_dbs"), json!("_nodes"), json!("_users")]
    );
    std::thread::sleep(d.sync_delay * 3);
    assert_eq!(copy_count(a, 4, R0, "moveme", &sfx), Some(0));
    let sys = req(a, "GET", "/_node/node4@127.0.0.1/_system", None).json();
    assert_eq!(sys["internal_replication_jobs"], 0);
    // _sync_shards fills it; maintenance mode does not stop that
    let r = req(a, "POST", "/moveme/_sync_shards", None);
    assert_eq!((r.status, r.json()), (202, json!({"ok": true})));
    wait_for("node4's copy filled", LONG, || {
        copy_count(a, 4, R0, "moveme", &sfx) == Some(88)
    });
    let r = req(a, "PUT", mm, Some(r#""false""#));
    assert_eq!((r.status, r.json()), (200, json!("true")));
    assert_eq!(req(c.node(3).addr(), "GET", "/_up", None).status, 200);
    // step 6: remove node3, on node2
    let b = c.node(1).addr();
    let mut doc = dbs_doc(b, "moveme");
    edit(&mut doc, "remove", R0, &node_name(3));
    assert_eq!(put_dbs(b, "moveme", &doc).status, 201);
    wait_for("the removal on every node", LONG, || {
        shards_everywhere(&c, "moveme", R0, &node_name(3), false)
    });
    // node3 keeps an orphan that no longer gets writes (trap 16)
    assert_eq!(copy_count(a, 3, R0, "moveme", &sfx), Some(88));
    let r = req(a, "PUT", "/moveme/aftermove0", Some(r#"{"after":"move"}"#));
    assert_eq!(
        (r.status, r.json()),
        (
            201,
            json!({"ok": true, "id": "aftermove0", "rev": "1-d6f5ddb809f9d811a37ca3455a564d34"})
        )
    );
    wait_for("the write on node4's copy", LONG, || {
        copy_count(a, 4, R0, "moveme", &sfx) == Some(89)
    });
    std::thread::sleep(d.sync_delay * 2);
    assert_eq!(copy_count(a, 3, R0, "moveme", &sfx), Some(88));
    // step 7 over HTTP
    let orphan = format!("/_node/node3@127.0.0.1/shards%2F{R0}%2Fmoveme{sfx}");
    let r = req(a, "DELETE", &orphan, None);
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    assert_eq!(req(a, "GET", &orphan, None).status, 404);
    assert_eq!(req(a, "GET", "/moveme", None).json()["doc_count"], 201);
    let r = req(a, "GET", "/moveme/_all_docs?limit=0", None).json();
    assert_eq!(r, json!({"total_rows": 201, "offset": 0, "rows": []}));
    // the observer: from the first edit on, range 0 never had fewer than 3 complete copies
    let events: Vec<_> = c
        .shard_map_events()
        .into_iter()
        .filter(|e| e.db == "moveme" && e.at >= t_before)
        .collect();
    assert!(events.len() >= 8, "{} events", events.len());
    for e in &events {
        assert!(
            e.copies_with_at_least(R0, 88) >= 3,
            "{} applied a map with too few complete copies: {:?}",
            e.node,
            e.doc_counts
        );
    }
    // the in-process view agrees with HTTP
    assert_eq!(c.node(3).copy_doc_count("moveme", R0), Some(89));
    assert_eq!(c.node(2).copy_doc_count("moveme", R0), None);
    assert_eq!(c.node(0).doc_ids("moveme").map(|v| v.len()), Some(201));
}

#[test]
fn reads_through_an_empty_new_copy_come_back_short_and_a_doc_read_repairs() {
    let d = delays();
    let c = formed(4, 3, d.clone());
    let a = c.node(0).addr();
    assert!(c.node(0).create_db_q_n("old", 2, 3));
    let ids: Vec<String> = (0..200).map(|i| format!("doc{i:03}")).collect();
    let written = c.node(0).write_docs("old", &ids);
    assert_eq!(
        written,
        200,
        "map {:?}, members {:?}, ids readable {:?}",
        c.node(0).shards("old"),
        c.node(0).membership(),
        c.node(0).doc_ids("old").map(|v| v.len())
    );
    join(&c, 4);
    std::thread::sleep(d.sync_delay * 3);
    let mut doc = dbs_doc(a, "old");
    let sfx = suffix(&doc);
    edit(&mut doc, "add", R0, &node_name(4));
    assert_eq!(put_dbs(a, "old", &doc).status, 201);
    wait_for("the edit on node4", LONG, || {
        shards_everywhere(&c, "old", R0, &node_name(4), true)
    });
    let n4 = c.node(3).addr();
    let mut totals = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..40 {
        let r = req(n4, "GET", "/old/_all_docs?limit=0", None);
        assert_eq!(r.status, 200, "always 200, even when short");
        totals.push(r.json()["total_rows"].as_u64().unwrap());
        counts.push(
            req(n4, "GET", "/old", None).json()["doc_count"]
                .as_u64()
                .unwrap(),
        );
    }
    for seen in [&totals, &counts] {
        assert!(seen.contains(&200), "{seen:?}");
        assert!(seen.contains(&112), "never short: {seen:?}");
        assert!(seen.iter().all(|t| *t == 200 || *t == 112), "{seen:?}");
    }
    // a single-doc read asks every copy: right, and it writes the doc into the empty one
    let id = ids
        .iter()
        .find(|id| req(a, "GET", &format!("/old/_shards/{id}"), None).json()["range"] == R0)
        .unwrap();
    let r = req(n4, "GET", &format!("/old/{id}"), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["_id"], json!(id));
    assert_eq!(copy_count(a, 4, R0, "old", &sfx), Some(1));
    // a write into the range: sync_delay later the new copy has everything
    let t = Instant::now();
    let r = req(a, "PUT", "/old/trigger2", Some(r#"{"t":2}"#));
    assert_eq!(r.status, 201);
    wait_for("the write-triggered push", LONG, || {
        copy_count(a, 4, R0, "old", &sfx) == Some(89)
    });
    assert!(t.elapsed() >= d.sync_delay, "filled before sync_delay");
}

#[test]
fn bad_edits_answer_as_couchdb_and_the_unchecked_ones_do_harm() {
    let d = delays();
    let c = formed(3, 3, d.clone());
    let a = c.node(0).addr();
    assert_eq!(req(a, "PUT", "/moveme?q=2&n=3", None).status, 201);
    assert_eq!(bulk(a, "moveme", 200, "doc").status, 201);
    let base = dbs_doc(a, "moveme");
    let forbidden = |body: &Value, reason: &str| {
        let r = put_dbs(a, "moveme", body);
        assert_eq!(
            (r.status, r.json()),
            (403, json!({"error": "forbidden", "reason": reason}))
        );
    };
    let conflict = json!({"error": "conflict", "reason": "Document update conflict."});
    let mut stale = base.clone();
    stale["_rev"] = json!("1-00000000000000000000000000000000");
    let r = put_dbs(a, "moveme", &stale);
    assert_eq!((r.status, r.json()), (409, conflict.clone()));
    let mut norev = base.clone();
    norev.as_object_mut().unwrap().remove("_rev");
    assert_eq!(put_dbs(a, "moveme", &norev).status, 409);
    let mut b = base.clone();
    b["by_range"][R1]
        .as_array_mut()
        .unwrap()
        .push(json!("node4@127.0.0.1"));
    forbidden(&b, &format!("by_node for node4@127.0.0.1 missing {R1}"));
    let mut b = base.clone();
    b["by_node"]["node4@127.0.0.1"] = json!([R1]);
    forbidden(&b, &format!("by_range for {R1} missing node4@127.0.0.1"));
    let mut b = base.clone();
    b.as_object_mut().unwrap().remove("by_node");
    forbidden(&b, "by_node is mandatory");
    let mut b = base.clone();
    b["by_range"][R1] = json!("node1@127.0.0.1");
    forbidden(&b, &format!("by_range for {R1} missing node1@127.0.0.1"));
    // a changelog-only edit: 201
    let mut b = base.clone();
    b["changelog"]
        .as_array_mut()
        .unwrap()
        .push(json!(["add", R1, "node4@127.0.0.1"]));
    let r = put_dbs(a, "moveme", &b);
    assert_eq!(r.status, 201);
    // a renamed range: 201, and the docs of that range vanish until it is renamed back
    let wrong = "80000000-fffffffe";
    let doc = rename_range(a, "moveme", R1, wrong);
    let r = req(a, "GET", "/moveme/doc000", None);
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "not_found", "reason": "missing"}))
    );
    assert_eq!(req(a, "GET", "/moveme", None).json()["doc_count"], 88);
    let file = format!("shards/{wrong}/moveme{}", suffix(&doc));
    wait_for("every holder made the renamed range's file", LONG, || {
        c.nodes().iter().all(|n| n.files().contains(&file))
    });
    rename_range(a, "moveme", wrong, R1);
    assert_eq!(req(a, "GET", "/moveme/doc000", None).status, 200);
    // a node that is not a member: 201; writes and reads still work; asking it: 412
    let mut doc = dbs_doc(a, "moveme");
    edit(&mut doc, "add", R1, "node9@127.0.0.1");
    assert_eq!(put_dbs(a, "moveme", &doc).status, 201);
    let r = req(a, "GET", "/moveme/_shards/ghost2", None).json();
    assert_eq!(r["nodes"][0], "node9@127.0.0.1");
    assert_eq!(
        req(a, "PUT", "/moveme/ghost2", Some(r#"{"ghost":true}"#)).status,
        201
    );
    assert_eq!(req(a, "GET", "/moveme/ghost2", None).status, 200);
    assert_eq!(req(a, "POST", "/moveme/_sync_shards", None).status, 202);
    let r = req(a, "GET", "/_node/node9@127.0.0.1/_all_dbs", None);
    assert_eq!(
        (r.status, r.json()),
        (
            412,
            json!({"error": "nodedown", "reason": "node9@127.0.0.1 is down"})
        )
    );
    assert_eq!(
        req(a, "GET", "/_node/node8@127.0.0.1/_all_dbs", None).status,
        404
    );
    // every copy of one range removed: 201; the other range still answers
    assert!(c.node(0).create_db_q_n("scratch", 2, 3));
    let ids: Vec<String> = (0..20).map(|i| format!("s{i:03}")).collect();
    assert_eq!(c.node(0).write_docs("scratch", &ids), 20);
    let mut doc = dbs_doc(a, "scratch");
    for n in 1..=3 {
        edit(&mut doc, "remove", R0, &node_name(n));
    }
    doc["by_range"].as_object_mut().unwrap().remove(R0);
    assert_eq!(put_dbs(a, "scratch", &doc).status, 201);
    let r = req(a, "GET", "/scratch/_shards/s002", None);
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"], "badmatch");
    assert_eq!(r.json()["reason"], "{[]}");
    let info = req(a, "GET", "/scratch", None).json();
    assert_eq!(info["doc_count"], 12);
    assert_eq!(info["cluster"]["q"], 1);
    assert_eq!(
        req(a, "GET", "/scratch/_all_docs", None).json()["total_rows"],
        12
    );
    let t = Instant::now();
    let r = req(a, "GET", "/scratch/s002", None);
    assert_eq!(
        (r.status, r.json()),
        (500, json!({"error": "error", "reason": "timeout"}))
    );
    assert!(t.elapsed() >= d.no_copy_timeout);
    let r = req(a, "PUT", "/scratch/w0", Some(r#"{"x":1}"#));
    assert_eq!(
        (r.status, r.json()),
        (
            500,
            json!({"error": "error", "reason": "internal_server_error"})
        )
    );
    assert_eq!(req(a, "PUT", "/scratch/k0", Some(r#"{"x":1}"#)).status, 201);
}

#[test]
fn two_edits_from_one_rev_both_201_one_loses_silently() {
    let d = Delays {
        // wide enough that the two PUTs meet before either edit travels
        ring_hop: (Duration::from_millis(150), Duration::from_millis(200)),
        ..delays()
    };
    let c = formed(3, 3, d);
    let (a, b) = (c.node(0).addr(), c.node(1).addr());
    assert_eq!(req(a, "PUT", "/moveme?q=2&n=3", None).status, 201);
    let base = dbs_doc(a, "moveme");
    let mut ea = base.clone();
    ea["props"] = json!({"edit": "a"});
    let mut eb = base.clone();
    eb["props"] = json!({"edit": "b"});
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| put_dbs(a, "moveme", &ea));
        let hb = s.spawn(|| put_dbs(b, "moveme", &eb));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert_eq!((ra.status, rb.status), (201, 201));
    let (ra, rb) = (
        ra.json()["rev"].as_str().unwrap().to_string(),
        rb.json()["rev"].as_str().unwrap().to_string(),
    );
    let (win, lose) = if ra > rb { (ra, rb) } else { (rb, ra) };
    let converged = |c: &Cluster, conflicts: Value| {
        c.nodes().iter().all(|n| {
            n.dbs_doc("moveme")
                .map(|d| (d["_rev"].clone(), d["_conflicts"].clone()))
                == Some((json!(win), conflicts.clone()))
        })
    };
    wait_for("the same winner and loser everywhere", LONG, || {
        converged(&c, json!([lose]))
    });
    // without ?conflicts=true nothing shows
    let plain = dbs_doc(a, "moveme");
    assert!(plain.get("_conflicts").is_none());
    let r = req(a, "GET", "/_node/_local/_dbs/moveme?conflicts=true", None).json();
    assert_eq!(r["_conflicts"], json!([lose]));
    let r = req(
        a,
        "DELETE",
        &format!("/_node/_local/_dbs/moveme?rev={lose}"),
        None,
    );
    assert_eq!(r.status, 200);
    assert!(r.json()["rev"].as_str().unwrap().starts_with(&format!(
        "{}-",
        lose.split('-').next().unwrap().parse::<u64>().unwrap() + 1
    )));
    wait_for("the conflict gone everywhere", LONG, || {
        converged(&c, Value::Null)
    });
}

#[test]
fn a_removed_node_keeps_running_as_a_member_and_comes_back_unless_wiped() {
    let c = formed(4, 4, delays());
    let (a, b) = (c.node(0).addr(), c.node(1).addr());
    let n4 = c.node(3);
    let doc = req(b, "GET", "/_node/_local/_nodes/node4@127.0.0.1", None).json();
    assert_eq!(doc["_rev"], "1-967a00dff5e02add41819138abb3284d");
    let path = "/_node/_local/_nodes/node4@127.0.0.1?rev=1-967a00dff5e02add41819138abb3284d";
    let r = req(b, "DELETE", path, None);
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            json!({"ok": true, "id": "node4@127.0.0.1", "rev": "2-eec205a9d413992850a6e32678485900"})
        )
    );
    wait_for(
        "node4 out of the other members' cluster_nodes",
        LONG,
        || (0..3).all(|i| c.node(i).membership() == (names(&[1, 2, 3, 4]), names(&[1, 2, 3]))),
    );
    let gone = json!({"error": "not_found", "reason": "deleted"});
    for p in [path, "/_node/_local/_nodes/node4@127.0.0.1"] {
        let r = req(b, "DELETE", p, None);
        assert_eq!((r.status, r.json()), (404, gone.clone()));
    }
    let r = req(b, "GET", "/_node/_local/_nodes/node4@127.0.0.1", None);
    assert_eq!((r.status, r.json()), (404, gone.clone()));
    // removed_hears_one_in = 0: node4 never hears of it
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        n4.membership(),
        (names(&[1, 2, 3, 4]), names(&[1, 2, 3, 4]))
    );
    // ... and still acts as a member: its db spreads to node1, with a copy on node4
    let r = req(n4.addr(), "PUT", "/from_removed?q=2&n=3", None);
    assert_eq!(r.status, 201);
    wait_for("node1 lists node4's db", LONG, || {
        c.node(0).all_dbs().contains(&"from_removed".to_string())
    });
    let shards = c.node(0).shards("from_removed").unwrap();
    assert!(shards.values().flatten().any(|n| n == "node4@127.0.0.1"));
    assert_eq!(req(a, "GET", "/from_removed", None).status, 200);
    // restarted with its data, never having heard: back in all_nodes, not in cluster_nodes
    n4.restart();
    wait_for("node4 reconnected", LONG, || {
        c.node(0).membership() == (names(&[1, 2, 3, 4]), names(&[1, 2, 3]))
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.node(0).membership().1, names(&[1, 2, 3]));
    assert_eq!(n4.membership().1, names(&[1, 2, 3, 4]));
    // it learns (a DELETE on node4 itself), then restarts with its data: back everywhere
    let r = req(n4.addr(), "DELETE", path, None);
    assert_eq!(r.status, 200);
    n4.restart();
    wait_for("node4 back in every cluster_nodes", LONG, || {
        (0..4).all(|i| c.node(i).membership().1 == names(&[1, 2, 3, 4]))
    });
    let r = req(a, "GET", "/_node/_local/_nodes/node4@127.0.0.1", None).json();
    assert_eq!(r["_rev"], "3-5570e8bbb34412db757c2df4bfa1099b");
    // removed again, stopped, wiped, started: it comes up alone
    let r = req(
        a,
        "DELETE",
        "/_node/_local/_nodes/node4@127.0.0.1?rev=3-5570e8bbb34412db757c2df4bfa1099b",
        None,
    );
    assert_eq!(r.status, 200);
    wait_for("node4 removed again", LONG, || {
        (0..3).all(|i| c.node(i).membership().1 == names(&[1, 2, 3]))
    });
    n4.stop();
    n4.wipe();
    n4.start();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(n4.membership(), (names(&[4]), names(&[4])));
    assert!(n4.all_dbs().is_empty());
    assert_eq!(c.node(0).membership().0, names(&[1, 2, 3]));
}

#[test]
fn the_removed_node_may_hear_of_it_and_then_lacks_itself() {
    let d = Delays {
        removed_hears_one_in: 1,
        ..fast()
    };
    let c = formed(3, 3, d);
    let r = req(
        c.node(0).addr(),
        "DELETE",
        "/_node/_local/_nodes/node3@127.0.0.1?rev=1-967a00dff5e02add41819138abb3284d",
        None,
    );
    assert_eq!(r.status, 200);
    wait_for("node3 hears of its removal", LONG, || {
        c.node(2).membership().1 == names(&[1, 2])
    });
}

#[test]
fn writes_go_to_every_reachable_copy_and_quorum_decides_201_or_202() {
    let c = formed(3, 3, delays());
    let a = c.node(0).addr();
    assert!(c.node(0).create_db_q_n("w", 1, 3));
    c.node(2).stop();
    wait_for("node3 down", LONG, || {
        c.node(0).membership().0 == names(&[1, 2])
    });
    let r = req(a, "PUT", "/w/a", Some("{}"));
    assert_eq!(r.status, 201, "2 of 3 copies is w=2");
    c.node(1).stop();
    wait_for("node2 down", LONG, || {
        c.node(0).membership().0 == names(&[1])
    });
    let r = req(a, "PUT", "/w/b", Some("{}"));
    assert_eq!(r.status, 202, "1 of 3 copies is less than w");
    let r = req(a, "PUT", "/w/a", Some("{}"));
    assert_eq!(r.status, 409);
    let r = req(
        a,
        "POST",
        "/w/_bulk_docs",
        Some(r#"{"docs":[{"_id":"c"},{"_id":"a"}]}"#),
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.json()[1]["error"], "conflict");
    // anonymous: not for a db's documents
    let r = req_raw(a, "GET", "/w/a", None, None).unwrap();
    assert_eq!(r.status, 401);
    // the restarted members catch up when they reconnect
    c.node(1).start();
    c.node(2).start();
    wait_for("both copies complete again", LONG, || {
        (1..3).all(|i| c.node(i).copy_doc_count("w", "00000000-ffffffff") == Some(3))
    });
}
