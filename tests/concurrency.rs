//! Several writers at once, on the simulator with the real binary: two inits started together
//! (a Job retried, a hook and a manual run), CouchDB's own seedlist joining nodes before us,
//! and PROTOCOL.md trap 22 — the first writes to a fresh `_nodes` race and the loser is not
//! written (modelled by couchsim: `Delays::nodes_create`).

mod common;

use std::time::Duration;

use common::{assert_formed, cluster, finish, put, puts, run, spawn, writes};
use couchsim::{Cluster, Delays};

/// N nodes whose first `_nodes` write takes `took`; other writes meanwhile lose (trap 22).
fn slow_first_write(n: usize, took: Duration) -> Cluster {
    cluster(n, |b| {
        b.delays(Delays {
            nodes_create: took,
            ..Delays::fast()
        })
    })
}

/// The `_nodes` PUTs the coordinator answered 500 (a lost race, nothing written).
fn lost_races(c: &Cluster) -> usize {
    c.node(0)
        .requests()
        .iter()
        .filter(|q| {
            q.method == "PUT" && q.path.starts_with("/_node/_local/_nodes/") && q.status == 500
        })
        .count()
}

#[test]
fn two_inits_at_once_end_in_one_cluster() {
    // The first `_nodes` write takes 100 ms: two runs started together meet inside it.
    for n in [3, 3, 5] {
        let c = slow_first_write(n, Duration::from_millis(100));
        let (a, b) = (spawn(&c, &[], &[]), spawn(&c, &[], &[]));
        let (a, b) = (finish(a), finish(b));
        a.assert_code(0);
        b.assert_code(0);
        assert_formed(&c);
        eprintln!("{n} nodes: {} lost _nodes races, retried", lost_races(&c));
    }
}

#[test]
fn a_join_whose_put_loses_the_race_asks_again() {
    // Someone else's first write to the coordinator's `_nodes` is under way (2 s) when the run
    // sends its first PUT: CouchDB answers 500 badmatch/file_exists and writes nothing.
    let c = slow_first_write(3, Duration::from_secs(2));
    let third = c.node(2).name();
    std::thread::scope(|s| {
        let other = s.spawn(|| put(c.node(0), &format!("/_node/_local/_nodes/{third}")));
        std::thread::sleep(Duration::from_millis(100));
        let r = run(&c);
        assert_eq!(other.join().unwrap(), 201);
        r.assert_code(0);
        r.assert_says(&["were there already"]);
    });
    assert!(
        lost_races(&c) > 0,
        "the run never met the race: {:?}",
        writes(&c)
    );
    assert_formed(&c);
}

#[test]
fn a_join_of_many_nodes_never_races_itself() {
    let c = slow_first_write(6, Duration::from_millis(200));
    let r = run(&c);
    r.assert_code(0);
    assert_formed(&c);
    let puts = puts(&c);
    assert_eq!(puts.len(), 5, "one PUT per joined node: {puts:?}");
    assert_eq!(lost_races(&c), 0, "the first PUT went alone");
    r.assert_says(&["added 5 of 5 nodes"]);
}

/// What the chart's `[cluster] seedlist` does by itself: every node lists every node.
fn join_by_seedlist(c: &Cluster, nodes: &[usize]) {
    for &i in nodes {
        for &j in nodes {
            if i != j {
                let status = put(
                    c.node(i),
                    &format!("/_node/_local/_nodes/{}", c.node(j).name()),
                );
                assert!(matches!(status, 201 | 409), "PUT on node {i}: {status}");
            }
        }
    }
}

#[test]
fn nodes_joined_by_a_seedlist_are_members_not_another_cluster() {
    let c = cluster(3, |b| b);
    join_by_seedlist(&c, &[0, 1, 2]);
    c.reset_counters();
    let r = run(&c);
    r.assert_code(0);
    assert_formed(&c);
    assert_eq!(writes(&c), ["POST /_cluster_setup"], "finish only, no join");
}

#[test]
fn nodes_that_joined_each_other_but_not_the_coordinator_are_joined_to_it() {
    let c = cluster(4, |b| b);
    join_by_seedlist(&c, &[2, 3]);
    let r = run(&c);
    r.assert_code(0);
    assert_formed(&c);
}

#[test]
fn nodes_that_formed_a_cluster_of_their_own_with_databases_are_refused() {
    let c = cluster(4, |b| b);
    join_by_seedlist(&c, &[2, 3]);
    c.node(2).create_db("theirs");
    c.reset_counters();
    let r = run(&c);
    r.assert_code(5);
    r.assert_says(&["theirs", "Nothing was written"]);
    assert_eq!(c.count_writes(), 0, "{:?}", writes(&c));
}

#[test]
fn a_long_wait_says_that_it_is_still_waiting() {
    let c = cluster(3, |b| b.configure(2, |n| n.stopped()));
    let r = common::run_with(&c, &[("COUCHDB_INIT_TIMEOUT", "12s")]);
    r.assert_code(3);
    let third = common::label(&c, 2);
    r.assert_says(&[
        "wait: waiting for 1 of 3 nodes",
        "still waiting for 1 of 3 nodes",
        "s left",
        &third,
    ]);
}

#[test]
fn check_wait_waits_read_only_until_an_init_has_formed_the_cluster() {
    let c = cluster(3, |b| b);
    let check = spawn(&c, &["check", "--wait"], &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.count_writes(), 0, "check wrote: {:?}", writes(&c));
    run(&c).assert_code(0);
    let r = finish(check);
    r.assert_code(0);
    r.assert_says(&["until the cluster is formed", "cluster of 3 nodes verified"]);
}

#[test]
fn check_wait_stops_at_once_on_a_wrong_password() {
    let c = cluster(3, |b| b);
    let r = common::run_args(&c, &["check", "--wait"], &[("COUCHDB_PASSWORD", "wrong")]);
    r.assert_code(4);
    assert!(r.took < Duration::from_secs(10), "took {:?}", r.took);
}
