//! Continuous replication to a backup node (PROTOCOL.md "Continuous replication to a backup
//! node", traps 17–21) with fast timings: a 3-node cluster replicating to a 4th node that
//! never joined, over real HTTP between simulated nodes.

use std::net::SocketAddr;
use std::time::Duration;

use couchsim::{Cluster, Delays};
use serde_json::{json, Value};

mod common;
use common::*;

const LONG: Duration = Duration::from_secs(10);

/// Fast, but a crashed job waits a second before a tick restarts it, so a test sees the
/// first crash and not a later one (a restart while the target is still down crashes again).
fn delays() -> Delays {
    Delays {
        repl_jitter: (Duration::ZERO, Duration::ZERO),
        repl_checkpoint: Duration::from_secs(30),
        repl_interval: Duration::from_millis(200),
        repl_backoff: Duration::from_secs(1),
        repl_health: Duration::from_secs(10),
        ..fast()
    }
}

/// node1..3 formed and finished; node4 up, never joined (the backup target).
fn cluster(d: Delays) -> Cluster {
    let c = Cluster::builder().nodes(4).delays(d).seed(14).start();
    let a = c.node(0).addr();
    for i in 2..=3 {
        let path = format!("/_node/_local/_nodes/node{i}@127.0.0.1");
        assert_eq!(req(a, "PUT", &path, Some("{}")).status, 201);
    }
    let three = names(&[1, 2, 3]);
    wait_for("formation", LONG, || {
        (0..3).all(|i| c.node(i).membership() == (three.clone(), three.clone()))
    });
    assert_eq!(finish_cluster(a).status, 201);
    c
}

fn rep_doc(c: &Cluster, id: &str, target_db: &str, extra: Value) -> String {
    let auth = json!({"basic": {"username": "admin", "password": "password"}});
    let mut doc = json!({
        "_id": id,
        "source": {"url": format!("{}/app", c.node(0).url()), "auth": auth},
        "target": {"url": format!("{}/{target_db}", c.node(3).url()), "auth": auth},
        "continuous": true,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        doc[k] = v.clone();
    }
    doc.to_string()
}

fn sched(addr: SocketAddr, id: &str) -> Value {
    req(
        addr,
        "GET",
        &format!("/_scheduler/docs/_replicator/{id}"),
        None,
    )
    .json()
}

fn wait_state(addr: SocketAddr, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    wait_for(&format!("{id} {state}"), LONG, || {
        last = sched(addr, id);
        last["state"] == state
    });
    last
}

fn arrived(c: &Cluster, db: &str, id: &str) -> bool {
    req(c.node(3).addr(), "GET", &format!("/{db}/{id}"), None).status == 200
}

fn put(c: &Cluster, id: &str) {
    let r = req(
        c.node(0).addr(),
        "PUT",
        &format!("/app/{id}"),
        Some(r#"{"x":1}"#),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

fn setup(d: Delays) -> Cluster {
    let c = cluster(d);
    let ids: Vec<String> = (0..20).map(|i| format!("doc{i:03}")).collect();
    assert_eq!(req(c.node(0).addr(), "PUT", "/app", None).status, 201);
    assert_eq!(c.node(0).write_docs("app", &ids), 20);
    let t = req(c.node(3).addr(), "PUT", "/app_backup", None);
    assert_eq!(t.status, 201);
    let info = req(c.node(3).addr(), "GET", "/app_backup", None).json();
    assert_eq!(info["cluster"], json!({"q": 2, "n": 1, "w": 1, "r": 1}));
    c
}

/// POSTs a `_replicator` doc through node1: the status.
fn post(c: &Cluster, doc: &str) -> u16 {
    req(c.node(0).addr(), "POST", "/_replicator", Some(doc)).status
}

/// `setup`, then doc `backup` replicating app → node4's app_backup, its 20 docs arrived.
fn backing_up(d: Delays) -> Cluster {
    let c = setup(d);
    assert_eq!(
        post(&c, &rep_doc(&c, "backup", "app_backup", json!({}))),
        201
    );
    wait_for("20 docs on the target", LONG, || {
        c.node(3).doc_count("app_backup") == Some(20)
    });
    // The target applies a batch before its answer reaches the job: until the job has counted
    // it, a target stopped now would fail that `_bulk_docs`, not the later checkpoint.
    wait_for("the job to have counted them", LONG, || {
        c.replications().iter().any(|r| r.docs_written >= 20)
    });
    c
}

#[test]
fn documents_arrive_and_every_member_reports_the_job_without_credentials() {
    let c = backing_up(delays());
    let a = c.node(0).addr();
    let got = req(c.node(3).addr(), "GET", "/app_backup/doc007", None).json();
    let src = req(a, "GET", "/app/doc007", None).json();
    assert_eq!(got, src, "same doc, same rev on both ends");
    let s = wait_state(a, "backup", "running");
    assert!(s["info"]["docs_written"].as_u64().unwrap_or(0) >= 20, "{s}");
    assert_eq!(s["source"], format!("{}/app/", c.node(0).url()));
    for i in 1..3 {
        let other = sched(c.node(i).addr(), "backup");
        assert_eq!(other["node"], s["node"], "any member answers the same");
        assert_eq!(other["id"], s["id"]);
    }
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32 + "+continuous".len(), "{id}");
    let jobs = req(c.node(1).addr(), "GET", "/_scheduler/jobs", None);
    let all = req(c.node(2).addr(), "GET", "/_scheduler/docs", None);
    for body in [&jobs.body, &all.body] {
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains("password"), "trap 21: {text}");
    }
    assert_eq!(jobs.json()["total_rows"], 1);
    assert_eq!(jobs.json()["jobs"][0]["history"][0]["type"], "started");
    assert_eq!(all.json()["docs"][0]["doc_id"], "backup");
    // the doc itself keeps the password, and gained an owner (trap 21)
    let doc = req(a, "GET", "/_replicator/backup", None).json();
    assert_eq!(doc["owner"], "admin");
    assert_eq!(doc["target"]["auth"]["basic"]["password"], "password");
    // continuous: a new write arrives
    put(&c, "live0");
    wait_for("live0 on the target", LONG, || {
        arrived(&c, "app_backup", "live0")
    });
    // the same _id again: 409, with POST or PUT without _rev
    let again = rep_doc(&c, "backup", "app_backup", json!({}));
    assert_eq!(post(&c, &again), 409);
    assert_eq!(
        req(a, "PUT", "/_replicator/backup", Some(&again)).status,
        409
    );
    // deleting the doc stops the job
    let rev = doc["_rev"].as_str().unwrap().to_string();
    let del = req(a, "DELETE", &format!("/_replicator/backup?rev={rev}"), None);
    assert_eq!(del.status, 200);
    wait_for("no job left", LONG, || {
        req(a, "GET", "/_scheduler/jobs", None).json()["total_rows"] == 0
    });
    let gone = req(a, "GET", "/_scheduler/docs/_replicator/backup", None);
    assert_eq!(gone.status, 404);
    assert_eq!(
        gone.json(),
        json!({"error": "not_found", "reason": "missing"})
    );
    put(&c, "after-delete");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!arrived(&c, "app_backup", "after-delete"));
}

/// Trap 17: a dead target shows only when the replication has to talk to it; trap 18: the
/// job comes back only on a scheduler tick after its backoff.
#[test]
fn a_stopped_target_crashes_the_job_at_the_next_write_and_it_recovers() {
    let c = backing_up(delays());
    let a = c.node(0).addr();
    c.node(3).stop();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sched(a, "backup")["state"],
        "running",
        "trap 17: still running"
    );
    put(&c, "during-outage");
    let s = wait_state(a, "backup", "crashing");
    assert_eq!(s["error_count"], 1);
    let reason = s["info"]["error"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("{http_request_failed,\"POST\""),
        "{reason}"
    );
    assert!(reason.contains("/app_backup/_revs_diff\""), "{reason}");
    assert!(reason.contains("econnrefused"), "{reason}");
    let jobs = req(a, "GET", "/_scheduler/jobs", None).json();
    assert_eq!(jobs["jobs"][0]["pid"], Value::Null);
    assert_eq!(jobs["jobs"][0]["history"][0]["type"], "crashed");
    c.node(3).start();
    let s = wait_state(a, "backup", "running");
    assert_eq!(s["error_count"], 1, "one crash in a row");
    wait_for("the outage write", LONG, || {
        arrived(&c, "app_backup", "during-outage")
    });
    let history = &req(a, "GET", "/_scheduler/jobs", None).json()["jobs"][0]["history"];
    let kinds: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["started", "crashed", "started", "added"]);
}

/// Trap 17 too: with no write, the dead target shows at the first checkpoint that has
/// something to commit.
#[test]
fn a_stopped_target_with_no_writes_crashes_at_the_checkpoint() {
    let c = backing_up(Delays {
        repl_checkpoint: Duration::from_millis(400),
        ..delays()
    });
    let a = c.node(0).addr();
    c.node(3).stop();
    let s = wait_state(a, "backup", "crashing");
    let reason = s["info"]["error"].as_str().unwrap_or("");
    assert!(
        reason
            .starts_with("Failure on target commit: {'EXIT',\n    {http_request_failed,\"POST\","),
        "{reason}"
    );
    assert!(
        reason.contains("/app_backup/_ensure_full_commit\""),
        "{reason}"
    );
}

/// Trap 19: the target re-hashes its admin (as enable_single_node does): the replicator's
/// session dies, the next write crashes the job with a 401, a later run logs in again.
#[test]
fn a_rehashed_target_admin_crashes_the_job_until_it_restarts() {
    let c = backing_up(delays());
    let a = c.node(0).addr();
    c.node(3).rehash_admin();
    put(&c, "after-rehash");
    let s = wait_state(a, "backup", "crashing");
    assert_eq!(
        s["info"]["error"],
        "{revs_diff_failed,401,\n                  {[{<<\"error\">>,<<\"unauthorized\">>},\n                    {<<\"reason\">>,\n                     <<\"You are not authorized to access this db.\">>}]}}"
    );
    wait_state(a, "backup", "running");
    wait_for("the write after the re-hash", LONG, || {
        arrived(&c, "app_backup", "after-rehash")
    });
}

/// Trap 20: one replication, one doc.
#[test]
fn a_second_doc_for_the_same_replication_fails_and_is_marked() {
    let c = backing_up(delays());
    let a = c.node(0).addr();
    wait_state(a, "backup", "running");
    let dup = rep_doc(&c, "backup-again", "app_backup", json!({}));
    assert_eq!(post(&c, &dup), 201);
    let s = wait_state(a, "backup-again", "failed");
    let id = sched(a, "backup")["id"].as_str().unwrap().to_string();
    assert_eq!(s["id"], Value::Null);
    assert_eq!(s["error_count"], 1);
    assert_eq!(
        s["info"]["error"],
        format!(
            "Replication `{id}` specified by document `backup-again` already started, \
             triggered by document `backup` from db `_replicator`"
        )
    );
    let d = req(a, "GET", "/_replicator/backup-again", None).json();
    assert_eq!(d["_replication_state"], "failed");
    assert_eq!(d["_replication_state_reason"], s["info"]["error"]);
    let rev = d["_rev"].as_str().unwrap();
    assert!(rev.starts_with("2-"), "{rev}");
    // CouchDB answered 202 (fewer than w copies had rev 2 yet); the simulator's GET above
    // repaired the other copies already (see couchsim/README.md, what is not modelled).
    let del = req(
        a,
        "DELETE",
        &format!("/_replicator/backup-again?rev={rev}"),
        None,
    );
    assert!(matches!(del.status, 200 | 202), "{}", del.status);
    assert_eq!(sched(a, "backup")["state"], "running");
}

#[test]
fn a_missing_target_db_crashes_unless_create_target() {
    let c = setup(delays());
    let a = c.node(0).addr();
    assert_eq!(post(&c, &rep_doc(&c, "nodb", "missing_db", json!({}))), 201);
    let s = wait_state(a, "nodb", "crashing");
    assert_eq!(
        s["info"]["error"],
        format!(
            "db_not_found: could not open {}/missing_db/",
            c.node(3).url()
        )
    );
    let doc = rep_doc(&c, "made", "made_db", json!({"create_target": true}));
    assert_eq!(post(&c, &doc), 201);
    wait_for("created and filled", LONG, || {
        c.node(3).doc_count("made_db") == Some(20)
    });
    let s = sched(a, "made");
    assert!(
        s["id"]
            .as_str()
            .unwrap_or("")
            .ends_with("+continuous+create_target"),
        "{s}"
    );
}

#[test]
fn bad_replication_docs_are_refused_with_couchdbs_reasons() {
    let c = cluster(delays());
    let a = c.node(0).addr();
    let r = req(
        a,
        "POST",
        "/_replicator",
        Some(r#"{"_id":"x","target":"http://h/db"}"#),
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"error": "forbidden", "reason": "The `source' property must exist and be either a string or an object."})
    );
    let r = req(
        a,
        "PUT",
        "/_replicator/y",
        Some(r#"{"source":"http://h/a","target":"http://h/b","continuous":"yes"}"#),
    );
    assert_eq!(r.status, 403);
    // a local endpoint passes validation, then fails
    let r = req(
        a,
        "PUT",
        "/_replicator/z",
        Some(r#"{"source":"app","target":"http://h/b"}"#),
    );
    assert_eq!(r.status, 201);
    let s = wait_state(a, "z", "failed");
    assert_eq!(s["info"]["error"], "local_endpoints_not_supported");
}

/// What the product's tests read in-process: the replications each node holds, doc counts;
/// deletions arrive as tombstones; the replicator's own requests are not counted as writes.
#[test]
fn the_in_process_view_tombstones_and_quiet_counters() {
    let c = backing_up(delays());
    assert!(c.node(0).delete_doc("app", "doc003").is_some());
    let rev = c.node(0).put_doc("app", "extra", &json!({"k": 1})).unwrap();
    assert!(rev.starts_with("1-"), "{rev}");
    wait_for("the deletion and the new doc", LONG, || {
        let info = req(c.node(3).addr(), "GET", "/app_backup", None).json();
        info["doc_count"] == 20 && info["doc_del_count"] == 1
    });
    // The job counts a batch once the target has taken it: the counters may trail the docs.
    wait_for("the job to count both writes", LONG, || {
        c.replications().iter().all(|r| r.docs_written >= 22)
    });
    let reps = c.replications();
    assert_eq!(reps.len(), 1, "{reps:?}");
    let r = &reps[0];
    assert_eq!((r.doc_id.as_str(), r.state.as_str()), ("backup", "running"));
    assert_eq!(r.target, format!("{}/app_backup/", c.node(3).url()));
    assert!(r.docs_written >= 22, "{r:?}");
    assert_eq!(r.error, None);
    c.reset_counters();
    put(&c, "one-more");
    wait_for("one-more", LONG, || arrived(&c, "app_backup", "one-more"));
    assert_eq!(
        c.count_writes(),
        1,
        "only the test's own PUT: {:?}",
        c.requests()
    );
}

/// A job dies with the member running it; once the cluster is stable again another member
/// owns the doc and replicates.
#[test]
fn the_job_moves_when_its_node_stops() {
    let c = backing_up(delays());
    let a = c.node(0).addr();
    let owner = wait_state(a, "backup", "running")["node"].clone();
    let i = (0..3)
        .find(|&i| owner == c.node(i).name())
        .expect("a member runs it");
    c.node(i).stop();
    let other = c.node((i + 1) % 3).addr();
    wait_for("another member runs it", LONG, || {
        let s = sched(other, "backup");
        s["state"] == "running" && s["node"] != owner
    });
    let r = req(other, "PUT", "/app/after-move", Some(r#"{"x":1}"#));
    assert_eq!(r.status, 201);
    wait_for("the write after the move", LONG, || {
        arrived(&c, "app_backup", "after-move")
    });
}
