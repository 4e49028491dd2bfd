//! The real binary's `restore` against the simulator: a cluster backed up to a standalone
//! CouchDB, lost, and rebuilt under other Erlang names; the restore brings back every database,
//! its documents, deletions and design docs, its `_security`, and the application's users.

mod common;

use std::time::{Duration, Instant};

use common::{cluster, run_args, Run, PASSWORD};
use couchsim::{Cluster, Delays, Fault};
use serde_json::{json, Value};

const BACKUP_USER: &str = "backup-admin";
const BACKUP_PASSWORD: &str = "bk-Rq2-never-logged";
const ALICE_PASSWORD: &str = "alice-pw-7-never-logged";

fn security() -> Value {
    json!({
        "admins": {"names": [], "roles": ["ops"]},
        "members": {"names": ["alice"], "roles": ["staff"]}
    })
}

/// A standalone backup CouchDB with its own admin and server uuid.
fn backup_couch() -> Cluster {
    cluster(1, |b| {
        b.admin(BACKUP_USER, BACKUP_PASSWORD)
            .seed(0xBAC)
            .configure(0, |n| n.name("couchdb@backup.example"))
    })
}

/// A formed three-node cluster whose nodes carry `prefix`-names (`couchdb@<prefix>1.example`…).
fn formed(prefix: &'static str, seed: u64) -> Cluster {
    formed_with(prefix, seed, Delays::fast())
}

/// `formed`, with its own simulated timings.
fn formed_with(prefix: &'static str, seed: u64, delays: Delays) -> Cluster {
    let c = cluster(3, move |mut b| {
        b = b.seed(seed).delays(delays);
        for i in 0..3 {
            b = b.configure(i, move |n| {
                n.name(&format!("couchdb@{prefix}{}.example", i + 1))
            });
        }
        b
    });
    common::run(&c).assert_code(0);
    c
}

fn env(backup: &Cluster) -> Vec<(&'static str, String)> {
    vec![
        ("COUCHDB_BACKUP_URL", backup.node(0).url()),
        ("COUCHDB_BACKUP_USER", BACKUP_USER.into()),
        ("COUCHDB_BACKUP_PASSWORD", BACKUP_PASSWORD.into()),
    ]
}

fn run(c: &Cluster, backup: &Cluster, args: &[&str], extra: &[(&str, &str)]) -> Run {
    let mut e: Vec<(&str, String)> = env(backup);
    e.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let pairs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_args(c, args, &pairs)
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
}

/// The old cluster's data: `app` (40 docs, one with an attachment, a deletion, a design doc
/// with a view, members-only `_security`), `orders` (12 docs, default `_security`), and the user alice.
fn fill(c: &Cluster) {
    let n = c.node(0);
    n.create_db("app");
    assert_eq!(n.write_docs("app", &ids("doc", 40)), 40);
    n.put_doc("app", "gone", &json!({"x": 1})).expect("gone");
    n.delete_doc("app", "gone").expect("deletion");
    // "hello, attachment" in base64
    let photo = json!({"title": "with a file", "_attachments": {"note.txt": {
        "content_type": "text/plain", "data": "aGVsbG8sIGF0dGFjaG1lbnQ="}}});
    assert_eq!(common::put_json(n, "/app/photo", &photo), 201);
    let view = json!({"views": {"all": {"map": "function(d){ emit(d._id, null); }"}}});
    assert_eq!(common::put_json(n, "/app/_design/v", &view), 201);
    assert_eq!(common::put_json(n, "/app/_security", &security()), 200);
    n.create_db("orders");
    assert_eq!(n.write_docs("orders", &ids("order", 12)), 12);
    let alice = json!({"name": "alice", "password": ALICE_PASSWORD, "roles": [], "type": "user"});
    assert_eq!(
        common::put_json(n, "/_users/org.couchdb.user:alice", &alice),
        201
    );
}

/// `GET path` on `c`'s node `i` as `user`.
fn get(c: &Cluster, i: usize, path: &str, user: (&str, &str)) -> (u16, Value) {
    common::http(c.node(i), "GET", path, Some(user), None)
}

fn admin() -> (&'static str, &'static str) {
    ("admin", PASSWORD)
}

/// What the binary wrote on either side (not the replication jobs' own requests).
fn our_writes(c: &Cluster, backup: &Cluster) -> Vec<String> {
    common::our_writes(&[c, backup])
}

/// A restore run right now exits 0, sends no write to either side, and says so.
fn a_rerun_only_reads(c: &Cluster, backup: &Cluster) -> Run {
    c.reset_counters();
    backup.reset_counters();
    let r = run(c, backup, &["restore"], &[]);
    r.assert_code(0);
    r.assert_says(&["nothing to do, nothing written"]);
    assert_eq!(our_writes(c, backup), Vec::<String>::new());
    r
}

fn assert_no_secret(r: &Run) {
    common::assert_hidden(
        r,
        &[
            PASSWORD,
            BACKUP_PASSWORD,
            ALICE_PASSWORD,
            "YWRtaW46",
            "YmFja3VwLWFkbWluOg",
        ],
    );
}

/// `node` answers every one of the next `times` `method path` requests with `status`.
fn refuse(node: &couchsim::Node, method: &str, path: &str, times: usize, status: u16) {
    for nth in 1..=times {
        node.inject(Fault::FailNth {
            method: method.into(),
            path: path.into(),
            nth,
            status,
        });
    }
}

/// A cluster backed up, then lost: the backup CouchDB holding its databases and users.
fn lost_cluster() -> Cluster {
    let backup = backup_couch();
    let old = formed("old", 1);
    fill(&old);
    let r = run(&old, &backup, &["backup"], &[]);
    r.assert_code(0);
    r.assert_says(&["3 database(s) replicated and caught up: _users, app, orders"]);
    // The backup caught up (documents, users, `_security`) before the old cluster is dropped.
    let started = Instant::now();
    while backup
        .node(0)
        .doc("_users", "org.couchdb.user:alice")
        .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "alice never reached the backup"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(old);
    backup
}

/// The replicator writes a one-shot's `completed` into its own copy of `_replicator` only; the
/// others get it by internal replication this long after (CouchDB: 5 s). Long enough that the
/// restore's DELETE always comes first and is answered 202 (trap 27).
fn slow_internal_replication(after: Duration) -> Delays {
    Delays {
        sync_delay: after,
        ..Delays::fast()
    }
}

/// The ids of the `_replicator` docs `c` answered a DELETE of since its counters were reset,
/// each with the status it answered.
fn deleted_replication_docs(c: &Cluster) -> Vec<(String, u16)> {
    c.requests()
        .into_iter()
        .filter(|q| q.method == "DELETE" && q.path.starts_with("/_replicator/"))
        .map(|q| {
            let id = q.path["/_replicator/".len()..]
                .split('?')
                .next()
                .unwrap_or_default()
                .replace("%3A", ":");
            (id, q.status)
        })
        .collect()
}

/// Where `_replicator/<id>` is still live: each node's `GET …?open_revs=all` (what a client
/// reading through that node gets: a quorum of copies may still agree on the old revision),
/// and each node's own copy. Empty: no node answers it and no copy holds it.
fn live_anywhere(c: &Cluster, id: &str) -> Vec<String> {
    let path = format!("/_replicator/{}?open_revs=all", id.replace(':', "%3A"));
    let mut live = Vec::new();
    for i in 0..c.len() {
        let n = c.node(i);
        let (status, leaves) = get(c, i, &path, admin());
        match status {
            404 => {}
            200 => {
                for leaf in leaves.as_array().into_iter().flatten() {
                    if leaf["ok"]["_deleted"] != json!(true) {
                        live.push(format!("{} answers {}", n.name(), leaf["ok"]["_rev"]));
                    }
                }
            }
            other => panic!("{path} through {}: {other} {leaves}", n.name()),
        }
        for (rev, deleted) in n.copy_revs("_replicator", id).unwrap_or_default() {
            if !deleted {
                live.push(format!("{}'s copy holds {rev}", n.name()));
            }
        }
    }
    live
}

#[test]
fn with_a_202_on_its_cleanup_it_waits_until_every_copy_agrees_and_a_rerun_writes_nothing() {
    let backup = lost_cluster();
    let new = formed_with("new", 12, slow_internal_replication(Duration::from_secs(3)));
    new.reset_counters();
    let r = run(&new, &backup, &["restore"], &[("RUST_LOG", "trace")]);
    r.assert_code(0);
    r.assert_says(&[
        "replicated 3 database(s)",
        "gone from every copy of _replicator",
    ]);
    assert_no_secret(&r);
    // The case at hand: CouchDB took a DELETE on the one copy the replicator had written.
    let deleted = deleted_replication_docs(&new);
    assert_eq!(deleted.len(), 3, "{deleted:?}");
    assert!(deleted.iter().any(|(_, s)| *s == 202), "{deleted:?}");
    // No node answers any of them live, and no copy holds one: no password left (trap 21).
    for (id, _) in &deleted {
        assert_eq!(live_anywhere(&new, id), Vec::<String>::new(), "{id}");
    }
    // Right after, a rerun only reads, and says so.
    a_rerun_only_reads(&new, &backup).assert_says(&["leftovers: none"]);
}

#[test]
fn copies_that_outlast_the_deadline_are_named_and_a_rerun_finds_them_and_counts_them() {
    let backup = lost_cluster();
    // The copies the replicator did not write keep rev 1 (both passwords in it) for a minute,
    // and the tool's request to push the deletion at once is refused.
    let new = formed_with(
        "new",
        13,
        slow_internal_replication(Duration::from_secs(60)),
    );
    for i in 0..new.len() {
        refuse(new.node(i), "POST", "/_replicator/_sync_shards", 50, 500);
    }
    let r = run(
        &new,
        &backup,
        &["restore"],
        &[("COUCHDB_INIT_TIMEOUT", "4s"), ("RUST_LOG", "trace")],
    );
    r.assert_code(12);
    r.assert_says(&[
        "restore incomplete",
        "still live in _replicator, both passwords in each",
        "restore:",
        "live at 1-",
        "run it again to finish",
    ]);
    assert_no_secret(&r);
    let deleted = deleted_replication_docs(&new);
    let lingering: Vec<&String> = deleted
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !live_anywhere(&new, id).is_empty())
        .collect();
    assert!(!lingering.is_empty(), "{deleted:?}");

    // The next run finds them in the copies that still hold them, says so and counts them.
    for i in 0..new.len() {
        new.node(i).clear_faults();
    }
    let r = run(&new, &backup, &["restore"], &[("RUST_LOG", "trace")]);
    r.assert_code(0);
    r.assert_says(&[
        &format!(
            "deleted {} replication document(s) an earlier run left",
            lingering.len()
        ),
        "now gone from every copy",
    ]);
    assert!(!r.stderr.contains("nothing written"), "{}", r.stderr);
    assert_no_secret(&r);
    for id in &lingering {
        assert_eq!(live_anywhere(&new, id), Vec::<String>::new(), "{id}");
    }
    a_rerun_only_reads(&new, &backup);
}

#[test]
fn a_cluster_rebuilt_under_other_names_gets_everything_back_and_a_rerun_only_reads() {
    let backup = lost_cluster();
    let new = formed("new", 2);
    assert_eq!(get(&new, 0, "/app", admin()).0, 404);

    // The plan first: nothing written.
    new.reset_counters();
    backup.reset_counters();
    let r = run(&new, &backup, &["restore", "--dry-run"], &[]);
    r.assert_code(0);
    r.assert_shows(&[
        "3 database(s)",
        "app",
        "missing: created",
        "_users",
        "exists",
    ]);
    assert_eq!(our_writes(&new, &backup), Vec::<String>::new());

    let r = run(&new, &backup, &["restore"], &[("RUST_LOG", "trace")]);
    r.assert_code(0);
    r.assert_says(&[
        "created 2 database(s)",
        "replicated 3 database(s)",
        "wrote _security",
    ]);
    assert_no_secret(&r);

    // Documents, the deletion, the design doc and its view, through any node.
    let (status, info) = get(&new, 1, "/app", admin());
    assert_eq!(status, 200);
    assert_eq!(
        (info["doc_count"].as_u64(), info["doc_del_count"].as_u64()),
        (Some(42), Some(1))
    );
    assert_eq!(get(&new, 2, "/app/gone", admin()).0, 404);
    let (status, view) = get(&new, 2, "/app/_design/v/_view/all?limit=0", admin());
    assert_eq!((status, view["total_rows"].as_u64()), (200, Some(41)));
    let (status, photo) = get(&new, 1, "/app/photo?attachments=true", admin());
    let note = &photo["_attachments"]["note.txt"];
    assert_eq!(
        (
            status,
            &note["data"],
            &note["length"],
            &note["content_type"]
        ),
        (
            200,
            &json!("aGVsbG8sIGF0dGFjaG1lbnQ="),
            &json!(17),
            &json!("text/plain")
        )
    );
    let (_, stub) = get(&new, 2, "/app/photo", admin());
    assert_eq!(stub["_attachments"]["note.txt"]["stub"], json!(true));
    assert_eq!(
        get(&new, 0, "/orders", admin()).1["doc_count"].as_u64(),
        Some(12)
    );
    assert_eq!(get(&new, 1, "/app/_security", admin()).1, security());
    // No replication doc left behind: they hold passwords in clear (trap 21).
    let left: Vec<String> = new.node(0).doc_ids("_replicator").unwrap_or_default();
    assert!(
        left.iter().all(|id| !id.starts_with("restore:")),
        "{left:?}"
    );

    // The application's user logs in and reads her database; not the one she is not in.
    let alice = ("alice", ALICE_PASSWORD);
    let (status, session) = get(&new, 2, "/_session", alice);
    assert_eq!(
        (status, &session["userCtx"]["name"]),
        (200, &json!("alice"))
    );
    assert_eq!(get(&new, 0, "/app/doc-0001", alice).0, 200);
    // `orders` kept CouchDB's default (admins only): refused to her, as on the old cluster.
    assert_eq!(get(&new, 0, "/orders/order-0001", alice).0, 403);

    // On a restored cluster a rerun only reads.
    a_rerun_only_reads(&new, &backup);
}

#[test]
fn it_refuses_writing_nothing_when_a_database_is_not_on_the_backup_the_cluster_is_unhealthy_or_the_backup_is_the_cluster(
) {
    let backup = lost_cluster();
    let new = formed("fresh", 3);
    new.reset_counters();
    backup.reset_counters();

    let r = run(&new, &backup, &["restore", "_replicator"], &[]);
    r.assert_code(12);
    r.assert_says(&["_replicator is never restored"]);

    let r = run(&new, &backup, &["restore", "app", "nosuchdb"], &[]);
    r.assert_code(12);
    r.assert_says(&[
        "restore refused, nothing written",
        "not on the backup",
        "nosuchdb",
    ]);
    assert_no_secret(&r);

    // The backup named by another address of one of the cluster's own nodes: same server uuid.
    let own = new.node(1).url().replace("127.0.0.1", "localhost");
    let r = run(
        &new,
        &backup,
        &["restore"],
        &[
            ("COUCHDB_BACKUP_URL", &own),
            ("COUCHDB_BACKUP_USER", "admin"),
            ("COUCHDB_BACKUP_PASSWORD", PASSWORD),
        ],
    );
    r.assert_code(12);
    r.assert_says(&["this cluster's server uuid"]);

    // A member in `_nodes` that never comes: not healthy.
    assert_eq!(
        common::put(new.node(0), "/_node/_local/_nodes/couchdb@ghost.example"),
        201
    );
    let r = run(
        &new,
        &backup,
        &["restore"],
        &[("COUCHDB_INIT_TIMEOUT", "5s")],
    );
    r.assert_code(12);
    r.assert_says(&["restore refused, nothing written", "not healthy"]);
    let writes: Vec<String> = our_writes(&new, &backup)
        .into_iter()
        .filter(|w| !w.contains("ghost"))
        .collect();
    assert_eq!(writes, Vec::<String>::new());
    assert_eq!(get(&new, 0, "/app", admin()).0, 404);
}

/// Where a restore is killed: when `at` first holds on the new cluster.
type Moment = fn(&Cluster) -> bool;

/// Its first database exists: killed while creating the databases (or just after).
fn databases_created(c: &Cluster) -> bool {
    c.node(0).all_dbs().iter().any(|db| db.starts_with("db"))
}

/// Its first replication docs are written: killed while replicating.
fn replicating(c: &Cluster) -> bool {
    let ids = c.node(0).doc_ids("_replicator").unwrap_or_default();
    ids.iter().any(|id| id.starts_with("restore:"))
}

/// Its first database holds every document: killed between replication, security and verify.
fn first_filled(c: &Cluster) -> bool {
    c.node(0).doc_count("db00") == Some(60)
}

#[test]
fn killed_at_any_step_a_rerun_finishes_and_leaves_no_replication_doc() {
    let backup = backup_couch();
    let old = formed("old", 4);
    for i in 0..12 {
        let db = format!("db{i:02}");
        old.node(0).create_db(&db);
        assert_eq!(old.node(0).write_docs(&db, &ids("d", 60)), 60);
    }
    let open = json!({"members": {"names": ["alice"]}});
    assert_eq!(common::put_json(old.node(0), "/db00/_security", &open), 200);
    run(&old, &backup, &["backup"], &[]).assert_code(0);
    drop(old);
    let moments: [(&str, Moment); 3] = [
        ("databases created", databases_created),
        ("replicating", replicating),
        ("a database filled", first_filled),
    ];
    for (seed, (what, at)) in (10..).zip(moments) {
        let new = formed("new", seed);
        let mut e: Vec<(&str, String)> = env(&backup);
        e.push(("RUST_LOG", "debug".into()));
        let pairs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (mut child, started) = common::spawn(&new, &["restore"], &pairs);
        while !at(&new) {
            assert!(started.elapsed() < Duration::from_secs(20), "{what}: never");
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().expect("kill");
        let _ = child.wait();

        let r = run(&new, &backup, &["restore"], &[]);
        r.assert_code(0);
        r.assert_says(&["restore: 13 database(s)"]);
        // Killed while its replications ran: their docs are an earlier run's, named and counted.
        if what == "replicating" {
            r.assert_says(&["replication document(s) an earlier run left (restore:"]);
        }
        for i in 0..12 {
            let (_, info) = get(&new, 0, &format!("/db{i:02}"), admin());
            assert_eq!(info["doc_count"].as_u64(), Some(60), "{what}: db{i:02}");
        }
        assert_eq!(get(&new, 1, "/db00/_security", admin()).1, open, "{what}");
        let left: Vec<String> = new.node(0).doc_ids("_replicator").unwrap_or_default();
        assert!(
            left.iter().all(|id| !id.starts_with("restore:")),
            "{what}: {left:?}"
        );
        new.reset_counters();
        backup.reset_counters();
        run(&new, &backup, &["restore"], &[]).assert_code(0);
        assert_eq!(our_writes(&new, &backup), Vec::<String>::new(), "{what}");
    }
}

#[test]
fn into_an_existing_database_it_merges_keeps_the_clusters_documents_and_counts_conflicts() {
    let backup = lost_cluster();
    let new = formed("new", 6);
    let n = new.node(0);
    n.create_db("app");
    // The cluster's own documents, one of them also in the backup with other contents.
    n.put_doc("app", "only-here", &json!({"mine": true}))
        .expect("only-here");
    n.put_doc("app", "doc-0003", &json!({"changed": "here"}))
        .expect("doc-0003");
    let r = run(
        &new,
        &backup,
        &["restore", "app", "orders", "--q", "4"],
        &[],
    );
    r.assert_code(0);
    r.assert_says(&[
        "1 document(s) with new conflicts",
        "app: 1 document(s) changed on both sides",
    ]);
    assert!(n.doc("app", "only-here").is_some(), "kept");
    let (_, info) = get(&new, 1, "/app", admin());
    assert_eq!(info["doc_count"].as_u64(), Some(43));
    // `--q` for the databases it creates (`orders`); `app` keeps the shard map it had.
    assert_eq!(n.shards("orders").map(|s| s.len()), Some(4));
    assert_eq!(n.shards("app").map(|s| s.len()), Some(2));
    // Named: only those two; `_users` was not asked for.
    assert!(n.doc("_users", "org.couchdb.user:alice").is_none());
}

/// Not a check: prints the output docs/backup.md shows (`cargo test --test restore -- --ignored
/// --nocapture docs_examples`): `status` with a backup whose `_security` differs, and a
/// `restore --dry-run` into a cluster that has some of the databases.
#[test]
#[ignore]
fn docs_examples() {
    let backup = lost_cluster();
    let new = formed("new", 7);
    new.node(0).create_db("orders");
    let r = run(&new, &backup, &["restore", "--dry-run"], &[]);
    println!(
        "$ couchdb-cluster-init restore --dry-run\n{}\n{}",
        r.stderr, r.stdout
    );
    let r = run(&new, &backup, &["restore"], &[]);
    println!("$ couchdb-cluster-init restore\n{}", r.stderr);
    run(&new, &backup, &["backup"], &[]).assert_code(0);
    let open = json!({"members": {"names": ["alice", "bob"]}});
    assert_eq!(
        common::put_json(new.node(0), "/orders/_security", &open),
        200
    );
    let r = run(&new, &backup, &["status"], &[]);
    println!("$ couchdb-cluster-init status\n{}\n{}", r.stdout, r.stderr);
}

#[test]
fn at_the_deadline_it_stops_its_replications_names_what_is_missing_and_a_rerun_finishes() {
    let backup = lost_cluster();
    let new = formed("new", 8);
    // The backup refuses the replicator's reads of `app` (and only those: the tool never calls
    // `_bulk_get`): its job crashes and is retried by CouchDB, and never completes.
    refuse(backup.node(0), "POST", "/app/_bulk_get", 200, 500);
    let r = run(
        &new,
        &backup,
        &["restore"],
        &[("COUCHDB_INIT_TIMEOUT", "4s")],
    );
    r.assert_code(12);
    r.assert_says(&[
        "restore incomplete",
        "not finished by COUCHDB_INIT_TIMEOUT: app",
        "run it again to finish",
    ]);
    assert_no_secret(&r);
    let left: Vec<String> = new.node(0).doc_ids("_replicator").unwrap_or_default();
    assert!(
        left.iter().all(|id| !id.starts_with("restore:")),
        "{left:?}"
    );
    backup.node(0).clear_faults();
    let r = run(&new, &backup, &["restore"], &[]);
    r.assert_code(0);
    assert_eq!(
        get(&new, 0, "/app", admin()).1["doc_count"].as_u64(),
        Some(42)
    );
}
