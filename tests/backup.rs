//! The real binary's backup against the simulator: a formed cluster, and a separate standalone
//! CouchDB (a one-node simulated "cluster" that is never formed) as the backup.

mod common;

use std::time::{Duration, Instant};

use common::{cluster, run_args, run_with, Run, PASSWORD};
use couchsim::{Cluster, Delays};

const BACKUP_USER: &str = "backup-admin";
const BACKUP_PASSWORD: &str = "bk-Vw7-never-logged";

/// A formed three-node cluster holding `dbs` (name, number of documents), and a fresh standalone
/// CouchDB with its own admin.
struct Rig {
    cluster: Cluster,
    backup: Cluster,
}

impl Rig {
    fn new(dbs: &[(&str, usize)]) -> Rig {
        Rig::with_delays(dbs, Delays::fast())
    }

    /// `new`, the cluster with its own simulated timings.
    fn with_delays(dbs: &[(&str, usize)], delays: Delays) -> Rig {
        let c = cluster(3, move |b| b.delays(delays));
        common::run(&c).assert_code(0);
        let rig = Rig {
            cluster: c,
            backup: cluster(1, |b| {
                // Its own seed: a separate CouchDB has its own server uuid.
                b.admin(BACKUP_USER, BACKUP_PASSWORD)
                    .seed(0xBAC)
                    .configure(0, |n| n.name("couchdb@backup.example"))
            }),
        };
        for (db, n) in dbs {
            rig.add_db(db, *n);
        }
        rig
    }

    fn add_db(&self, db: &str, n: usize) {
        self.cluster.node(0).create_db(db);
        assert_eq!(self.cluster.node(0).write_docs(db, &ids(db, 0, n)), n);
    }

    fn url(&self) -> String {
        self.backup.node(0).url()
    }

    /// `backup` (or `init` with `args` empty) with the backup configured, plus `extra`.
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let url = self.url();
        let mut env = vec![
            ("COUCHDB_BACKUP_URL", url.as_str()),
            ("COUCHDB_BACKUP_USER", BACKUP_USER),
            ("COUCHDB_BACKUP_PASSWORD", BACKUP_PASSWORD),
        ];
        env.extend_from_slice(extra);
        run_args(&self.cluster, args, &env)
    }

    /// Waits (generously) until the backup has `id` in `db`.
    fn arrives(&self, db: &str, id: &str) -> Duration {
        let started = Instant::now();
        while self.backup.node(0).doc(db, id).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{db}/{id} never reached the backup"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }

    fn backup_docs(&self, db: &str) -> usize {
        self.backup.node(0).doc_ids(db).map_or(0, |ids| ids.len())
    }

    /// The `_replicator` docs on the cluster.
    fn replicator_ids(&self) -> Vec<String> {
        self.cluster
            .node(0)
            .doc_ids("_replicator")
            .unwrap_or_default()
    }

    /// The writes the binary sent to either side (not the replication jobs' own).
    fn our_writes(&self) -> Vec<String> {
        common::our_writes(&[&self.cluster, &self.backup])
    }

    /// Requests the backup CouchDB got with credentials (a wrong password counts each time).
    fn authenticated(&self) -> usize {
        self.backup
            .requests()
            .iter()
            .filter(|q| q.user.is_some())
            .count()
    }

    fn reset(&self) {
        self.cluster.reset_counters();
        self.backup.reset_counters();
    }
}

fn ids(prefix: &str, from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("{prefix}-{i:04}")).collect()
}

#[test]
fn init_replicates_every_database_and_new_documents_arrive() {
    let rig = Rig::new(&[("app", 100), ("orders", 20), ("empty", 0)]);
    let r = rig.run(&[], &[]);
    r.assert_code(0);
    // `_users` too, by default: without it the application's users could not log in to a
    // cluster restored from the backup.
    r.assert_says(&["backup:", "4 database(s) replicated and caught up"]);
    for (db, n) in [("app", 100), ("orders", 20), ("empty", 0)] {
        assert_eq!(rig.backup_docs(db), n, "{db} on the backup");
    }
    let mut docs = rig.replicator_ids();
    docs.sort();
    assert_eq!(
        docs,
        [
            "backup:_users",
            "backup:app",
            "backup:empty",
            "backup:orders"
        ]
    );
    // Continuous: a document written afterwards reaches the backup by itself.
    rig.cluster.node(1).write_docs("app", &["late"]);
    rig.arrives("app", "late");
}

#[test]
fn a_rerun_writes_nothing_and_reports_the_backup_caught_up() {
    let rig = Rig::new(&[("app", 30)]);
    rig.run(&["backup"], &[]).assert_code(0);
    rig.reset();
    let r = rig.run(&["backup"], &[]);
    r.assert_code(0);
    assert_eq!(rig.our_writes(), Vec::<String>::new());
    r.assert_says(&[
        "2 database(s) replicated and caught up: _users, app",
        "nothing written",
    ]);
}

#[test]
fn a_database_created_later_is_covered_by_the_next_run() {
    let rig = Rig::new(&[("app", 10)]);
    rig.run(&["backup"], &[]).assert_code(0);
    rig.add_db("later", 15);
    rig.reset();
    let r = rig.run(&["backup"], &[]);
    r.assert_code(0);
    assert_eq!(rig.backup_docs("later"), 15);
    let writes = rig.our_writes();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes
        .iter()
        .any(|w| w.starts_with("PUT /_replicator/backup%3Alater")));
    assert!(writes.iter().any(|w| w == "PUT /later"));
}

#[test]
fn the_backup_stopped_is_reported_and_recovers_once_it_is_back() {
    let rig = Rig::new(&[("app", 10)]);
    rig.run(&["backup"], &[]).assert_code(0);
    rig.backup.node(0).stop();
    rig.cluster.node(0).write_docs("app", &["during-outage"]);
    let r = rig.run(&["backup"], &[("COUCHDB_INIT_TIMEOUT", "2s")]);
    r.assert_code(11);
    r.assert_says(&[&rig.url().replace("http://", ""), "did not answer /_up"]);
    rig.backup.node(0).start();
    // CouchDB restarts the crashed job only after its backoff, on its scheduler tick (trap 18):
    // the run waits for the documents, saying so, within its deadline.
    let r = rig.run(&["backup"], &[("COUCHDB_INIT_TIMEOUT", "60s")]);
    r.assert_code(0);
    assert!(rig.backup.node(0).doc("app", "during-outage").is_some());
}

#[test]
fn a_changed_backup_password_renews_our_replication_and_documents_arrive_again() {
    const NEW: &str = "bk-rotated-Qz4-never-logged";
    let rig = Rig::new(&[("app", 20), ("orders", 5)]);
    rig.run(&["backup"], &[]).assert_code(0);
    // The operator rotates the backup's password, then writes on: the job still holds the old
    // one, its session stops working (the cookie is bound to the hash) and documents stop
    // arriving.
    rig.backup.node(0).set_config("admins", BACKUP_USER, NEW);
    rig.cluster.node(0).write_docs("app", &ids("app", 20, 30));
    rig.reset();
    let r = rig.run(
        &["backup"],
        &[("COUCHDB_BACKUP_PASSWORD", NEW), ("RUST_LOG", "trace")],
    );
    r.assert_code(0);
    r.assert_says(&["renewed 3 replication(s)", "_users", "app", "orders"]);
    let mut writes = rig.our_writes();
    writes.sort();
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert!(
        writes[0].starts_with("PUT /_replicator/backup%3A_users"),
        "{writes:?}"
    );
    assert!(
        writes[1].starts_with("PUT /_replicator/backup%3Aapp"),
        "{writes:?}"
    );
    assert!(
        writes[2].starts_with("PUT /_replicator/backup%3Aorders"),
        "{writes:?}"
    );
    assert_eq!(rig.backup_docs("app"), 30);
    // Still one doc per database (trap 20), and nothing written once they are current.
    let mut docs = rig.replicator_ids();
    docs.sort();
    assert_eq!(docs, ["backup:_users", "backup:app", "backup:orders"]);
    let out = format!("{}{}", r.stdout, r.stderr);
    for secret in [PASSWORD, BACKUP_PASSWORD, NEW] {
        assert!(!out.contains(secret), "`{secret}` leaked:\n{out}");
    }
    rig.reset();
    let r = rig.run(&["backup"], &[("COUCHDB_BACKUP_PASSWORD", NEW)]);
    r.assert_code(0);
    assert_eq!(rig.our_writes(), Vec::<String>::new());
    rig.cluster.node(2).write_docs("app", &["after-rotation"]);
    rig.arrives("app", "after-rotation");
}

/// A renewal written over the revision the replicator put into its own copy only (its `failed`
/// state): CouchDB answers 202 and the other copies keep the old revision, the old password in
/// it (trap 27). The run waits until every copy holds the new one.
#[test]
fn a_renewal_answered_202_is_waited_for_until_every_copy_holds_it() {
    const OLD: &str = "bk-old-Tq1-never-logged";
    // The copies the replicator did not write get its state 10 s later (CouchDB: 5 s).
    let slow = Delays {
        sync_delay: Duration::from_secs(10),
        ..Delays::fast()
    };
    let rig = Rig::with_delays(&[("app", 10)], slow);
    let n = rig.cluster.node(0);
    rig.backup.node(0).create_db("app");
    let doc = |password: &str| {
        serde_json::json!({
            "source": {"url": format!("{}/app", n.url()),
                       "auth": {"basic": {"username": "admin", "password": PASSWORD}}},
            "target": {"url": format!("{}/app", rig.url()),
                       "auth": {"basic": {"username": BACKUP_USER, "password": password}}},
            "continuous": true,
        })
    };
    // Someone's replication of the same pair runs first, on the node that takes ours; ours,
    // written with a password since rotated, then fails as its duplicate (trap 20): the
    // replicator writes `failed` into its own copy only.
    let owner = rig.cluster.replicator_owner("backup:app");
    let theirs = (0..)
        .map(|i| format!("theirs-{i}"))
        .find(|id| rig.cluster.replicator_owner(id) == owner)
        .expect("an id on the same replicator");
    assert_eq!(
        common::put_json(n, &format!("/_replicator/{theirs}"), &doc(BACKUP_PASSWORD)),
        201
    );
    rig.arrives("app", "app-0009");
    assert_eq!(
        common::put_json(n, "/_replicator/backup:app", &doc(OLD)),
        201
    );
    let started = Instant::now();
    while n
        .doc("_replicator", "backup:app")
        .map(|d| d["_replication_state"].clone())
        != Some(serde_json::json!("failed"))
    {
        assert!(started.elapsed() < Duration::from_secs(5), "never failed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(n.delete_doc("_replicator", &theirs).is_some());
    rig.reset();
    let r = rig.run(
        &["backup"],
        &[("COUCHDB_BACKUP_DBS", "app"), ("RUST_LOG", "trace")],
    );
    r.assert_code(0);
    r.assert_says(&["renewed 1 replication(s)"]);
    let renewal: Vec<u16> = rig
        .cluster
        .requests()
        .iter()
        .filter(|q| q.method == "PUT" && q.path.starts_with("/_replicator/backup%3Aapp"))
        .map(|q| q.status)
        .collect();
    assert_eq!(renewal, [202], "the renewal CouchDB took on one copy");
    // Every copy holds the new revision (or the replicator's on top of it): none is left with
    // the old password in its winning revision.
    for i in 0..rig.cluster.len() {
        let copy = rig.cluster.node(i).copy_revs("_replicator", "backup:app");
        for (rev, deleted) in copy.unwrap_or_default() {
            let generation: u64 = rev.split('-').next().unwrap_or("0").parse().unwrap_or(0);
            assert!(!deleted && generation >= 3, "node {i}'s copy holds {rev}");
        }
    }
    common::assert_hidden(
        &r,
        &[
            PASSWORD,
            BACKUP_PASSWORD,
            OLD,
            "YWRtaW46",
            "YmFja3VwLWFkbWluOg",
        ],
    );
    // Renewed: its job runs with the current password.
    n.write_docs("app", &["after-renewal"]);
    rig.arrives("app", "after-renewal");
}

#[test]
fn another_doc_replicating_the_same_pair_is_reported_not_doubled() {
    let rig = Rig::new(&[("app", 10)]);
    let source = format!("{}/app", rig.cluster.node(0).url());
    let target = format!("{}/app", rig.url());
    rig.backup.node(0).create_db("app");
    let status = common::put_json(
        rig.cluster.node(0),
        "/_replicator/mine",
        &serde_json::json!({
            "source": {"url": source, "auth": {"basic": {"username": "admin", "password": PASSWORD}}},
            "target": {"url": target, "auth": {"basic": {"username": BACKUP_USER, "password": BACKUP_PASSWORD}}},
            "continuous": true,
        }),
    );
    assert_eq!(status, 201);
    // Someone's replication, running: its documents are on the backup.
    rig.arrives("app", "app-0009");
    rig.reset();
    // (`_users` left out, the opt-out of COUCHDB_BACKUP_DBS: this is about `app` alone.)
    let r = rig.run(&["backup"], &[("COUCHDB_BACKUP_DBS", "*,-_users")]);
    r.assert_code(0);
    r.assert_says(&["app by `mine`", "not adding a second"]);
    assert_eq!(rig.replicator_ids(), ["mine"]);
    assert_eq!(rig.our_writes(), Vec::<String>::new());
}

#[test]
fn no_credential_reaches_any_output_even_at_trace_level() {
    let rig = Rig::new(&[("app", 10)]);
    let check = |r: &Run| {
        let out = format!("{}{}", r.stdout, r.stderr);
        for secret in [PASSWORD, BACKUP_PASSWORD, "YWRtaW46", "YmFja3VwLWFkbWluOg"] {
            assert!(!out.contains(secret), "`{secret}` leaked:\n{out}");
        }
    };
    let r = rig.run(&[], &[("RUST_LOG", "trace")]);
    r.assert_code(0);
    assert!(r.stderr.contains("TRACE"), "trace logging was on");
    check(&r);
    // Failing runs, whose messages carry the backup's and the scheduler's answers.
    rig.backup.node(0).stop();
    let r = rig.run(
        &["backup"],
        &[("RUST_LOG", "trace"), ("COUCHDB_INIT_TIMEOUT", "2s")],
    );
    r.assert_code(11);
    check(&r);
    rig.backup.node(0).start();
    let r = rig.run(
        &["backup"],
        &[
            ("RUST_LOG", "trace"),
            ("COUCHDB_BACKUP_PASSWORD", "wrong-but-secret"),
        ],
    );
    r.assert_code(11);
    check(&r);
    assert!(!r.stderr.contains("wrong-but-secret"));
}

#[test]
fn a_wrong_backup_password_stops_at_once_and_gives_no_job_the_password() {
    let rig = Rig::new(&[("app", 10)]);
    let r = rig.run(&["backup"], &[("COUCHDB_BACKUP_PASSWORD", "wrong")]);
    r.assert_code(11);
    r.assert_says(&["COUCHDB_BACKUP_USER/COUCHDB_BACKUP_PASSWORD", "not retried"]);
    assert_eq!(rig.authenticated(), 1, "tries with credentials");
    assert!(rig.replicator_ids().is_empty());
}

#[test]
fn status_with_a_wrong_backup_password_asks_the_backup_once_and_never_locks_it() {
    // More databases than the lockout allows failures (5): one wrong try per database would
    // lock the backup's admin for 5 minutes, the right password included (trap 7).
    let rig = Rig::new(&[]);
    for i in 0..8 {
        rig.add_db(&format!("db{i}"), 1);
    }
    rig.run(&["backup"], &[]).assert_code(0);
    rig.reset();
    let r = rig.run(&["status"], &[("COUCHDB_BACKUP_PASSWORD", "wrong")]);
    r.assert_code(11);
    r.assert_shows(&["COUCHDB_BACKUP_USER/COUCHDB_BACKUP_PASSWORD", "not retried"]);
    assert_eq!(rig.authenticated(), 1, "tries with credentials");
    // Not locked: the right password still works.
    rig.run(&["status"], &[]).assert_code(0);
}

#[test]
fn bad_backup_configuration_exits_2_naming_the_variable_before_any_request() {
    let rig = Rig::new(&[("app", 1)]);
    rig.reset();
    let node = common::label(&rig.cluster, 1);
    for (env, says) in [
        (vec![("COUCHDB_BACKUP_DBS", "app")], "COUCHDB_BACKUP_URL"),
        (
            vec![("COUCHDB_BACKUP_URL", "http://u:secret-in-url@backup:5984")],
            "COUCHDB_BACKUP_URL",
        ),
        (vec![("COUCHDB_BACKUP_URL", "https://backup")], "https"),
        (vec![("COUCHDB_BACKUP_URL", node.as_str())], "separate"),
        (
            vec![
                ("COUCHDB_BACKUP_URL", "backup"),
                ("COUCHDB_BACKUP_USER", "x"),
            ],
            "COUCHDB_BACKUP_PASSWORD",
        ),
        (
            vec![
                ("COUCHDB_BACKUP_URL", "backup"),
                ("COUCHDB_BACKUP_DBS", "_replicator"),
            ],
            "COUCHDB_BACKUP_DBS",
        ),
        (
            vec![
                ("COUCHDB_BACKUP_URL", "backup"),
                ("COUCHDB_BACKUP_CREATE_DBS", "maybe"),
            ],
            "COUCHDB_BACKUP_CREATE_DBS",
        ),
    ] {
        let r = run_with(&rig.cluster, &env);
        r.assert_code(2);
        r.assert_says(&[says]);
        assert!(!r.stderr.contains("secret-in-url"));
    }
    let r = run_args(&rig.cluster, &["backup"], &[]);
    r.assert_code(2);
    r.assert_says(&["COUCHDB_BACKUP_URL is not set"]);
    assert_eq!(rig.cluster.requests().len(), 0, "nothing sent");
}

#[test]
fn a_job_that_delivers_nothing_is_reported_with_its_error_and_when_couchdb_retries_it() {
    let rig = Rig::new(&[("app", 5)]);
    // The nodes cannot reach the source at this address: the job crashes, documents never come.
    let r = rig.run(
        &["backup"],
        &[
            ("COUCHDB_BACKUP_SOURCE_URL", "http://127.0.0.1:1"),
            ("COUCHDB_INIT_TIMEOUT", "3s"),
            ("COUCHDB_BACKUP_DBS", "app"),
        ],
    );
    r.assert_code(11);
    r.assert_says(&[
        "waiting for 1 database(s) to catch up",
        "app: 0 of 5 documents on the backup, crashing",
        "econnrefused",
        "CouchDB restarts it",
        "not sooner",
    ]);
}

#[test]
fn users_only_when_listed_and_missing_backup_databases_created_only_when_allowed() {
    let rig = Rig::new(&[("app", 3), ("other", 2)]);
    rig.reset();
    let r = rig.run(
        &["backup"],
        &[
            ("COUCHDB_BACKUP_DBS", "app,_users"),
            ("COUCHDB_BACKUP_CREATE_DBS", "false"),
        ],
    );
    r.assert_code(11);
    r.assert_says(&[
        "2 database(s) missing",
        "COUCHDB_BACKUP_CREATE_DBS=false",
        "_users, app",
    ]);
    assert!(
        rig.replicator_ids().is_empty(),
        "no job without its database"
    );
    assert_eq!(rig.our_writes(), Vec::<String>::new());
    let r = rig.run(&["backup"], &[("COUCHDB_BACKUP_DBS", "app,_users,later")]);
    r.assert_code(0);
    r.assert_says(&["not on the cluster (yet): later"]);
    let mut docs = rig.replicator_ids();
    docs.sort();
    assert_eq!(docs, ["backup:_users", "backup:app"]);
    assert!(rig.backup.node(0).doc("_users", "_design/_auth").is_some());
    assert_eq!(rig.backup_docs("other"), 0);
}

#[test]
fn status_shows_each_databases_backup_and_exits_11_when_one_is_not_in_place() {
    let rig = Rig::new(&[("app", 12)]);
    rig.run(&["backup"], &[]).assert_code(0);
    let r = rig.run(&["status"], &[]);
    r.assert_code(0);
    assert!(
        r.stdout
            .contains("backup: 2 database(s); in place: every one replicated"),
        "{}",
        r.stdout
    );
    rig.add_db("later", 3);
    rig.reset();
    let r = rig.run(&["status"], &[]);
    r.assert_code(11);
    let row = |db: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{db} ")))
            .unwrap_or_else(|| panic!("no row for {db}:\n{}", r.stdout))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row("app"), "app yes (backup:app) running 0 same");
    assert_eq!(row("later"), "later no no replication - -");
    r.assert_says(&["the cluster is healthy; its backup is not in place: later"]);
    assert_eq!(rig.our_writes(), Vec::<String>::new(), "status only reads");

    let r = rig.run(&["status", "--json"], &[]);
    r.assert_code(11);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).expect("status --json");
    assert_eq!(json["exit"], 11);
    assert_eq!(json["backup"]["in_place"], false);
    let dbs = json["backup"]["databases"].as_array().expect("databases");
    let app = dbs.iter().find(|d| d["db"] == "app").expect("app");
    assert_eq!(
        (
            &app["replicated"],
            &app["state"],
            &app["lag"],
            &app["source_docs"]
        ),
        (&true.into(), &"running".into(), &0.into(), &12.into())
    );
    let later = dbs.iter().find(|d| d["db"] == "later").expect("later");
    assert_eq!(later["replicated"], false);

    // The backup CouchDB down: said at once, with no credential in it.
    rig.backup.node(0).stop();
    let started = Instant::now();
    let r = rig.run(&["status"], &[("RUST_LOG", "trace")]);
    r.assert_code(11);
    assert!(started.elapsed() < Duration::from_secs(8), "status waited");
    assert!(
        r.stdout
            .contains("backup: NOT in place: the backup CouchDB"),
        "{}",
        r.stdout
    );
    let out = format!("{}{}", r.stdout, r.stderr);
    for secret in [PASSWORD, BACKUP_PASSWORD] {
        assert!(!out.contains(secret), "`{secret}` leaked:\n{out}");
    }
}

/// `db`'s `_security` through `node`, as an admin of that side.
fn security(c: &Cluster, user: &str, password: &str, db: &str) -> serde_json::Value {
    let (status, body) = common::http(
        c.node(0),
        "GET",
        &format!("/{db}/_security"),
        Some((user, password)),
        None,
    );
    assert_eq!(status, 200, "GET /{db}/_security: {body}");
    body
}

#[test]
fn security_objects_reach_the_backup_and_a_rerun_writes_nothing() {
    let rig = Rig::new(&[("app", 5), ("open", 2)]);
    let members = serde_json::json!({
        "admins": {"names": [], "roles": ["ops"]},
        "members": {"names": ["alice"], "roles": ["staff"]}
    });
    let put = common::put_json(rig.cluster.node(1), "/app/_security", &members);
    assert_eq!(put, 200);
    let r = rig.run(&["backup"], &[]);
    r.assert_code(0);
    r.assert_says(&["wrote _security of 1 database(s) on the backup"]);
    assert_eq!(
        security(&rig.backup, BACKUP_USER, BACKUP_PASSWORD, "app"),
        members
    );
    // `open` kept the default on both sides: nothing to write there.
    assert_eq!(
        security(&rig.backup, BACKUP_USER, BACKUP_PASSWORD, "open"),
        security(&rig.cluster, "admin", PASSWORD, "open")
    );
    rig.reset();
    rig.run(&["backup"], &[]).assert_code(0);
    assert_eq!(rig.our_writes(), Vec::<String>::new());

    // Changed on the cluster: `status` says the backup is not in place, the next run fixes it.
    let bob = serde_json::json!({"members": {"names": ["alice", "bob"]}});
    assert_eq!(
        common::put_json(rig.cluster.node(2), "/app/_security", &bob),
        200
    );
    let r = rig.run(&["status"], &[]);
    r.assert_code(11);
    r.assert_shows(&["NOT in place: 1 not backed up"]);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("app ") && l.contains("differs")),
        "{}",
        r.stdout
    );
    rig.reset();
    rig.run(&["backup"], &[]).assert_code(0);
    assert_eq!(rig.our_writes(), ["PUT /app/_security"]);
    assert_eq!(
        security(&rig.backup, BACKUP_USER, BACKUP_PASSWORD, "app"),
        bob
    );
    rig.reset();
    rig.run(&["backup"], &[]).assert_code(0);
    assert_eq!(rig.our_writes(), Vec::<String>::new());
    rig.run(&["status"], &[]).assert_code(0);
}

#[test]
fn users_are_backed_up_by_default_onto_a_bare_backup_and_can_be_left_out() {
    let rig = Rig::new(&[("app", 3)]);
    // A bare standalone CouchDB has no `_users` (trap 25).
    assert!(!rig.backup.node(0).all_dbs().contains(&"_users".to_string()));
    let alice =
        serde_json::json!({"name": "alice", "password": "alice-pw-7", "roles": [], "type": "user"});
    assert_eq!(
        common::put_json(
            rig.cluster.node(0),
            "/_users/org.couchdb.user:alice",
            &alice
        ),
        201
    );
    rig.reset();
    let r = rig.run(&["backup"], &[("COUCHDB_BACKUP_DBS", "*,-_users")]);
    r.assert_code(0);
    assert!(!rig.backup.node(0).all_dbs().contains(&"_users".to_string()));
    let r = rig.run(&["backup"], &[]);
    r.assert_code(0);
    r.assert_says(&["replicated and caught up: _users, app"]);
    rig.arrives("_users", "org.couchdb.user:alice");
    let user = rig
        .backup
        .node(0)
        .doc("_users", "org.couchdb.user:alice")
        .expect("alice on the backup");
    // Salted hashes travel, never the password itself.
    assert!(user.get("derived_key").is_some() && user.get("password").is_none());
}
