//! Zones (issue 24), the real binary against the simulator: init writes each node's zone and
//! `[cluster] placement`; `rebalance` spreads databases made before the zones over them and a
//! lost zone loses nothing; `remove` keeps the spread and the placement for the members left;
//! a node without a zone is refused with its name.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{
    assert_never_short, assert_readable, cluster, copies_per_node, counts_before, http, ids, label,
    listing, run_args, run_with, settle, write_all, writes, PASSWORD,
};
use couchsim::Cluster;

/// COUCHDB_ZONES naming the nodes by address (as COUCHDB_NODES does): node `i` in `zones[i]`.
fn zones_env(c: &Cluster, nodes: &[usize], zones: &[&str]) -> String {
    nodes
        .iter()
        .zip(zones)
        .map(|(&i, z)| format!("{}={z}", label(c, i)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Node name → the zone of its `_nodes` doc, as node `i` has them.
fn zones_on(c: &Cluster, i: usize) -> BTreeMap<String, String> {
    let (status, body) = http(
        c.node(i),
        "GET",
        "/_node/_local/_nodes/_all_docs?include_docs=true",
        Some(("admin", PASSWORD)),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            Some((
                r["id"].as_str()?.to_string(),
                r["doc"]["zone"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Every range of every database in `dbs` has its copies in `want` distinct zones, none twice
/// on a node.
fn assert_on_zones(c: &Cluster, dbs: &[&str], zones: &BTreeMap<String, String>, want: usize) {
    for db in dbs {
        for (range, holders) in c.node(0).shards(db).expect("db exists") {
            let distinct: BTreeSet<&String> = holders.iter().collect();
            assert_eq!(distinct.len(), holders.len(), "{db} {range}: {holders:?}");
            let on: BTreeSet<&String> = holders.iter().filter_map(|h| zones.get(h)).collect();
            assert_eq!(
                on.len(),
                want,
                "{db} {range} on {holders:?}: zones {on:?}, not {want}"
            );
        }
    }
}

/// `PUT /<db>?q=` through node `i`: the status.
fn create_through(c: &Cluster, i: usize, db: &str, q: usize) -> u16 {
    http(
        c.node(i),
        "PUT",
        &format!("/{db}?q={q}"),
        Some(("admin", PASSWORD)),
        None,
    )
    .0
}

const DBS: [&str; 7] = [
    "_users",
    "_replicator",
    "tenant1",
    "tenant2",
    "tenant3",
    "tenant4",
    "orders",
];

#[test]
fn rebalance_spreads_databases_made_before_the_zones_and_a_lost_zone_loses_nothing() {
    // Six nodes formed with no zones; databases made then (q=1 and q=4) each put a range on
    // three neighbours of CouchDB's rotation: two of them share a zone once zones are given.
    let c = cluster(6, |b| b);
    common::run(&c).assert_code(0);
    for t in ["tenant1", "tenant2", "tenant3", "tenant4"] {
        assert!(c.node(0).create_db_q_n(t, 1, 3));
    }
    assert!(c.node(0).create_db_q_n("orders", 4, 3));
    let docs = ids("doc", 40);
    for db in &DBS[2..] {
        write_all(&c, db, &docs);
    }
    settle(&c, &DBS);
    let zones = zones_env(&c, &[0, 1, 2, 3, 4, 5], &["a", "a", "b", "b", "c", "c"]);
    let env = [("COUCHDB_ZONES", zones.as_str())];

    // init writes the zones and the placement, on every node.
    c.reset_counters();
    let r = run_with(&c, &env);
    r.assert_code(0);
    r.assert_says(&["3 zones (a: 2 nodes, b: 2, c: 2)", "wrote the zones of"]);
    r.assert_says(&["set [cluster] placement a:1,b:1,c:1 on 6 node(s)"]);
    let by_name: BTreeMap<String, String> = (0..6)
        .map(|i| {
            (
                c.node(i).name(),
                ["a", "a", "b", "b", "c", "c"][i].to_string(),
            )
        })
        .collect();
    for i in 0..6 {
        assert_eq!(zones_on(&c, i), by_name, "node {i}'s _nodes");
        assert_eq!(
            c.node(i).config("cluster", "placement").as_deref(),
            Some("a:1,b:1,c:1")
        );
    }
    // A formed cluster with the right zones gets no write.
    c.reset_counters();
    run_with(&c, &env).assert_code(0);
    assert_eq!(c.count_writes(), 0, "{:?}", writes(&c));

    // status names the zones and every range that shares one; a warning, not a problem.
    let s = run_args(&c, &["status"], &env);
    s.assert_code(0);
    s.assert_shows(&["zone", "of 3 copies in zone", "`rebalance` spreads them"]);
    s.assert_shows(&[
        "[cluster] placement a:1,b:1,c:1 on every node",
        "verdict: healthy",
    ]);
    let check = run_args(&c, &["check"], &env);
    check.assert_code(0);
    check.assert_says(&["12 range(s) share a zone where they need not"]);
    let dry = run_args(&c, &["rebalance", "--dry-run"], &env);
    dry.assert_code(0);
    dry.assert_shows(&["zones per range, before → after:", "→ a, b, c"]);
    dry.assert_shows(&[&format!("{} zone a;", c.node(0).name())]);

    // rebalance: every range over three zones, counts even, nothing ever short.
    let before: Vec<_> = DBS.iter().map(|db| counts_before(&c, db)).collect();
    c.clear_shard_map_events();
    c.reset_counters();
    let r = run_args(&c, &["rebalance"], &env);
    r.assert_code(0);
    for (db, counts) in DBS.iter().zip(&before) {
        assert_never_short(&c, db, counts, 3);
    }
    assert_on_zones(&c, &DBS, &by_name, 3);
    // 36 copies over 6 members: 6 each (today's rule: within one).
    let per = copies_per_node(&c, &DBS);
    assert!(
        per.iter().max().unwrap() - per.iter().min().unwrap() <= 1,
        "{per:?}"
    );
    for db in &DBS[2..] {
        assert_readable(&c, db, &[0, 1, 2, 3, 4, 5], &docs);
    }
    c.reset_counters();
    let again = run_args(&c, &["rebalance"], &env);
    again.assert_code(0);
    assert_eq!(c.count_writes(), 0, "{}", again.stderr);
    let s = run_args(&c, &["status"], &env);
    s.assert_code(0);
    s.assert_shows(&["every range's copies over as many zones"]);

    // A database made now is placed by zone by CouchDB itself, through any node.
    assert_eq!(create_through(&c, 3, "later", 4), 201);
    assert_on_zones(&c, &["later"], &by_name, 3);

    // Zone c lost: every document still readable and writable through the others.
    c.node(4).stop();
    c.node(5).stop();
    for db in &DBS[2..] {
        for id in &docs {
            for i in 0..4 {
                assert!(
                    c.node(i).doc(db, id).is_some(),
                    "{db}/{id} unreadable through {}",
                    c.node(i).name()
                );
            }
        }
        let fresh: Vec<String> = (0..4).map(|i| format!("after-{db}-{i}")).collect();
        for (i, id) in fresh.iter().enumerate() {
            assert_eq!(
                c.node(i).write_docs(db, std::slice::from_ref(id)),
                1,
                "{db}/{id} not written"
            );
        }
        for id in &fresh {
            assert!(c.node(0).doc(db, id).is_some(), "{db}/{id} lost");
        }
    }
}

#[test]
fn remove_keeps_every_range_over_the_zones_and_the_placement_follows_the_members() {
    // Formed with zones from the start: `_users` and `_replicator` are placed by zone too.
    let c = cluster(6, |b| b);
    let all = [0, 1, 2, 3, 4, 5];
    let zones = ["a", "a", "b", "b", "c", "c"];
    let env = zones_env(&c, &all, &zones);
    run_with(&c, &[("COUCHDB_ZONES", &env)]).assert_code(0);
    let by_name: BTreeMap<String, String> = (0..6)
        .map(|i| (c.node(i).name(), zones[i].to_string()))
        .collect();
    assert_on_zones(&c, &["_users", "_replicator"], &by_name, 3);
    assert_eq!(create_through(&c, 0, "app", 4), 201);
    write_all(&c, "app", &ids("doc", 30));
    let dbs = ["_users", "_replicator", "app"];
    settle(&c, &dbs);
    assert_on_zones(&c, &dbs, &by_name, 3);

    // node6 leaves; node5 is still in zone c: every range stays on three zones.
    let rest = [0, 1, 2, 3, 4];
    let nodes = listing(&c, &rest);
    let rest_zones = zones_env(&c, &rest, &zones[..5]);
    let env = [
        ("COUCHDB_NODES", nodes.as_str()),
        ("COUCHDB_ZONES", rest_zones.as_str()),
    ];
    let before: Vec<_> = dbs.iter().map(|db| counts_before(&c, db)).collect();
    c.clear_shard_map_events();
    let r = run_args(&c, &["remove", &c.node(5).name()], &env);
    r.assert_code(0);
    for (db, counts) in dbs.iter().zip(&before) {
        assert_never_short(&c, db, counts, 3);
    }
    assert_on_zones(&c, &dbs, &by_name, 3);
    assert_readable(&c, "app", &rest, &ids("doc", 30));
    c.node(5).stop();
    for i in rest {
        assert_eq!(
            c.node(i).config("cluster", "placement").as_deref(),
            Some("a:1,b:1,c:1")
        );
    }

    // node5, zone c's last node, leaves: two zones for three copies. The placement is set for
    // the four left before its `_nodes` doc goes, so CouchDB still creates databases.
    let rest = [0, 1, 2, 3];
    let nodes = listing(&c, &rest);
    let rest_zones = zones_env(&c, &rest, &zones[..4]);
    let env = [
        ("COUCHDB_NODES", nodes.as_str()),
        ("COUCHDB_ZONES", rest_zones.as_str()),
    ];
    let r = run_args(&c, &["remove", &c.node(4).name()], &env);
    r.assert_code(0);
    r.assert_says(&["placement: [cluster] placement a:2,b:1 on every other member"]);
    assert_on_zones(&c, &dbs, &by_name, 2);
    for i in rest {
        assert_eq!(
            c.node(i).config("cluster", "placement").as_deref(),
            Some("a:2,b:1")
        );
    }
    c.node(4).stop();
    assert_eq!(create_through(&c, 2, "after", 2), 201);
    assert_on_zones(&c, &["after"], &by_name, 2);
    // And the members left are healthy with these zones: nothing to write.
    c.reset_counters();
    run_with(&c, &env).assert_code(0);
    assert_eq!(c.count_writes(), 0, "{:?}", writes(&c));
    run_args(&c, &["status"], &env).assert_code(0);
}

#[test]
fn a_node_that_joins_later_gets_its_zone_and_the_placement_follows() {
    // Two zones for three nodes: one gets two copies of every range (a:2,b:1).
    let mut c = cluster(3, |b| b);
    let env = zones_env(&c, &[0, 1, 2], &["a", "a", "b"]);
    let r = run_with(&c, &[("COUCHDB_ZONES", &env)]);
    r.assert_code(0);
    r.assert_says(&[
        "set [cluster] placement a:2,b:1 on 3 node(s)",
        "more than one copy in some zone",
    ]);
    // A node in a third zone joins: its zone is written with its join, and the rule becomes
    // one copy per zone on every node.
    c.add_node(|s| s);
    let env = zones_env(&c, &[0, 1, 2, 3], &["a", "a", "b", "c"]);
    c.reset_counters();
    let r = run_with(&c, &[("COUCHDB_ZONES", &env)]);
    r.assert_code(0);
    r.assert_says(&[&format!("wrote the zones of {}", c.node(3).name())]);
    r.assert_says(&["set [cluster] placement a:1,b:1,c:1 on 4 node(s)"]);
    let zone_writes: Vec<String> = writes(&c)
        .into_iter()
        .filter(|w| w.starts_with("PUT /_node/_local/_nodes/"))
        .collect();
    // One PUT joins node4, one writes its zone: the others' docs are left as they were.
    assert_eq!(zone_writes.len(), 2, "{zone_writes:?}");
    for i in 0..4 {
        assert_eq!(
            c.node(i).config("cluster", "placement").as_deref(),
            Some("a:1,b:1,c:1")
        );
    }
    assert_eq!(create_through(&c, 3, "fresh", 2), 201);
    let by_name: BTreeMap<String, String> = (0..4)
        .map(|i| (c.node(i).name(), ["a", "a", "b", "c"][i].to_string()))
        .collect();
    assert_on_zones(&c, &["fresh"], &by_name, 3);
}

#[test]
fn a_node_without_a_zone_is_refused_with_its_name() {
    let c = cluster(3, |b| b);
    // Every node by address: known at once, before anything is sent.
    let two = zones_env(&c, &[0, 1], &["a", "b"]);
    let r = run_with(&c, &[("COUCHDB_ZONES", &two)]);
    r.assert_code(2);
    r.assert_says(&["COUCHDB_ZONES gives no zone for", &label(&c, 2)]);
    assert_eq!(
        c.requests().len(),
        0,
        "sent before the configuration is valid"
    );

    // By Erlang name: known once the nodes say their names; still nothing written.
    let by_name = format!("{}=a,{}=b", c.node(0).name(), c.node(1).name());
    let r = run_with(&c, &[("COUCHDB_ZONES", &by_name)]);
    r.assert_code(2);
    r.assert_says(&[
        &c.node(2).name(),
        "has no zone while 2 other node(s) have one",
    ]);
    assert_eq!(c.count_writes(), 0, "{:?}", writes(&c));

    // Without COUCHDB_ZONES each node reports its own (a pod's [couchdb_cluster_init] zone).
    c.node(0)
        .set_config("couchdb_cluster_init", "zone", "eu-1a");
    c.node(1)
        .set_config("couchdb_cluster_init", "zone", "eu-1b");
    c.reset_counters();
    let r = common::run(&c);
    r.assert_code(2);
    r.assert_says(&[&label(&c, 2), "has no zone", "[couchdb_cluster_init] zone"]);
    assert_eq!(c.count_writes(), 0, "{:?}", writes(&c));
    c.node(2)
        .set_config("couchdb_cluster_init", "zone", "eu-1c");
    let r = common::run(&c);
    r.assert_code(0);
    r.assert_says(&["set [cluster] placement eu-1a:1,eu-1b:1,eu-1c:1 on 3 node(s)"]);
    let expected: BTreeMap<String, String> = (0..3)
        .map(|i| (c.node(i).name(), ["eu-1a", "eu-1b", "eu-1c"][i].to_string()))
        .collect();
    assert_eq!(zones_on(&c, 2), expected);
    assert_on_zones(&c, &["_users", "_replicator"], &expected, 3);
}

/// Prints the runs docs/operations.md shows in its "Zones" section: six nodes formed without
/// zones, `orders` (q=4, 200 documents) and `tenant1`–`tenant4` (q=1) made then; zones given
/// (`init`), `status`, `rebalance --dry-run`, `rebalance`, `status`, and `check` with zone c
/// stopped. Not a check of its own (the tests above check all of it):
/// `cargo test --test zones docs_examples -- --ignored --nocapture`.
#[test]
#[ignore]
fn docs_examples() {
    let c = cluster(6, |b| b);
    common::run(&c).assert_code(0);
    assert!(c.node(0).create_db_q_n("orders", 4, 3));
    write_all(&c, "orders", &ids("order", 200));
    for t in ["tenant1", "tenant2", "tenant3", "tenant4"] {
        assert!(c.node(0).create_db_q_n(t, 1, 3));
        write_all(&c, t, &ids("doc", 3));
    }
    settle(&c, &DBS);
    let zones: Vec<String> = (0..6)
        .map(|i| format!("{}={}", c.node(i).name(), ["a", "a", "b", "b", "c", "c"][i]))
        .collect();
    let zones = zones.join(",");
    let env = [("COUCHDB_ZONES", zones.as_str())];
    println!("COUCHDB_ZONES={zones}\n");
    let show = |title: &str, r: &common::Run| {
        println!("$ couchdb-cluster-init {title}\n{}{}", r.stdout, r.stderr);
    };
    let r = run_with(&c, &env);
    r.assert_code(0);
    show("", &r);
    for args in [
        &["status"][..],
        &["rebalance", "--dry-run"],
        &["rebalance"],
        &["status"],
    ] {
        let r = run_args(&c, args, &env);
        r.assert_code(0);
        show(&args.join(" "), &r);
    }
    c.node(4).stop();
    c.node(5).stop();
    let r = run_args(&c, &["status"], &env);
    r.assert_code(3);
    show("status (zone c stopped)", &r);
    let order_ids = ids("order", 200);
    let read = (0..4)
        .map(|i| {
            order_ids
                .iter()
                .filter(|id| c.node(i).doc("orders", id).is_some())
                .count()
        })
        .collect::<Vec<_>>();
    let written = (0..4)
        .map(|i| c.node(i).write_docs("orders", &[format!("new{i}")]))
        .sum::<usize>();
    println!(
        "orders read through node1-4: {read:?} of 200; written through node1-4: {written} of 4"
    );
    assert_eq!((read, written), (vec![200; 4], 4));
}

/// Prints docs/kubernetes.md's "Zones" example: three nodes, each reporting the zone its pod's
/// init container wrote (`[couchdb_cluster_init] zone`, set here through the simulator's config
/// as that file sets it), formed by `init` with no COUCHDB_ZONES; then `status`. Not a check of
/// its own: `cargo test --test zones docs_examples_kubernetes -- --ignored --nocapture`.
#[test]
#[ignore]
fn docs_examples_kubernetes() {
    let c = cluster(3, |b| b);
    for (i, zone) in ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
        .iter()
        .enumerate()
    {
        c.node(i).set_config("couchdb_cluster_init", "zone", zone);
    }
    let r = common::run(&c);
    r.assert_code(0);
    println!("$ couchdb-cluster-init\n{}", r.stderr);
    let r = run_args(&c, &["status"], &[]);
    r.assert_code(0);
    println!("$ couchdb-cluster-init status\n{}", r.stdout);
}
