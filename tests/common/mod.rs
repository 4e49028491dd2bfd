//! Runs the real binary against an in-process simulated cluster.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod lb;

use couchsim::{Cluster, ClusterBuilder, Delays};

pub mod watcher;

pub const PASSWORD: &str = "pw-Zq8-never-logged";
pub const COOKIE: &str = "cookie-Kx3-never-logged";

/// N nodes with test credentials and quick (but not zero) CouchDB-side delays.
pub fn cluster(n: usize, configure: impl FnOnce(ClusterBuilder) -> ClusterBuilder) -> Cluster {
    let builder = Cluster::builder()
        .nodes(n)
        .admin("admin", PASSWORD)
        .cookie(COOKIE)
        .delays(Delays::fast());
    configure(builder).start()
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code, code,
            "exit code; stderr:\n{}\nstdout:\n{}",
            self.stderr, self.stdout
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
    }

    /// The output (stdout: a table, a plan) shows every one of `parts`.
    pub fn assert_shows(&self, parts: &[&str]) {
        contains_all("stdout", &self.stdout, parts);
    }

    /// The log names every one of `parts` (a node, a cause, a phase).
    pub fn assert_says(&self, parts: &[&str]) {
        contains_all("stderr", &self.stderr, parts);
    }
}

/// None of `secrets` in the run's output (stdout and stderr): run it at RUST_LOG=trace.
pub fn assert_hidden(r: &Run, secrets: &[&str]) {
    let out = format!("{}{}", r.stdout, r.stderr);
    for secret in secrets {
        assert!(!out.contains(secret), "`{secret}` leaked:\n{out}");
    }
}

fn contains_all(name: &str, text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "no `{part}` in {name}:\n{text}");
    }
}

/// How the nodes appear in COUCHDB_NODES, hence in messages.
pub fn label(c: &Cluster, i: usize) -> String {
    c.node(i).url().trim_start_matches("http://").to_string()
}

pub fn run(c: &Cluster) -> Run {
    run_args(c, &[], &[])
}

pub fn run_with(c: &Cluster, env: &[(&str, &str)]) -> Run {
    run_args(c, &[], env)
}

pub fn run_args(c: &Cluster, args: &[&str], env: &[(&str, &str)]) -> Run {
    finish(spawn(c, args, env))
}

/// The binary with the test environment (every node of `c` in COUCHDB_NODES), not started.
pub fn command(c: &Cluster, args: &[&str], env: &[(&str, &str)]) -> Command {
    let nodes: Vec<String> = (0..c.len()).map(|i| label(c, i)).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_couchdb-cluster-init"));
    cmd.args(args)
        .env_clear()
        .env("COUCHDB_USER", "admin")
        .env("COUCHDB_PASSWORD", PASSWORD)
        .env("COUCHDB_COOKIE", COOKIE)
        .env("COUCHDB_NODES", nodes.join(","))
        .env("COUCHDB_EPMD_PORT", c.epmd_port().to_string())
        .env("COUCHDB_INIT_TIMEOUT", "20s")
        .env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts the binary against `c` without waiting for it: for runs that overlap.
pub fn spawn(c: &Cluster, args: &[&str], env: &[(&str, &str)]) -> (Child, Instant) {
    let mut cmd = command(c, args, env);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    (cmd.spawn().expect("run couchdb-cluster-init"), started)
}

/// Waits for a run started by `spawn`.
pub fn finish((child, started): (Child, Instant)) -> Run {
    let out = child
        .wait_with_output()
        .expect("wait for couchdb-cluster-init");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// One authenticated `PUT path` (body `{}`) straight to a simulated node, as CouchDB itself or
/// another tool would write; returns the status.
pub fn put(node: &couchsim::Node, path: &str) -> u16 {
    put_json(node, path, &serde_json::json!({}))
}

/// `put` with a body.
pub fn put_json(node: &couchsim::Node, path: &str, body: &serde_json::Value) -> u16 {
    let addr = node.addr();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = authorization();
    let body = body.to_string();
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"))
}

/// `Basic …` for the test admin, for requests a test makes itself.
pub fn authorization() -> String {
    format!("Basic {}", base64(&format!("admin:{PASSWORD}")))
}

/// Every node lists every node as connected and as member, and `_users`/`_replicator` have
/// min(3, N) distinct copies of each range.
pub fn assert_formed(c: &Cluster) {
    let mut expected: Vec<String> = (0..c.len()).map(|i| c.node(i).name()).collect();
    expected.sort();
    for i in 0..c.len() {
        let (mut all, mut members) = c.node(i).membership();
        all.sort();
        members.sort();
        assert_eq!(all, expected, "all_nodes on {}", c.node(i).name());
        assert_eq!(members, expected, "cluster_nodes on {}", c.node(i).name());
    }
    for db in ["_users", "_replicator"] {
        let shards = c
            .node(0)
            .shards(db)
            .unwrap_or_else(|| panic!("{db} missing"));
        assert_eq!(shards.len(), 2, "{db} ranges");
        for holders in shards.values() {
            let mut distinct = holders.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), 3.min(c.len()), "{db} copies: {holders:?}");
        }
    }
}

/// The `PUT`s the nodes answered, as `PUT path`.
pub fn puts(c: &Cluster) -> Vec<String> {
    writes(c)
        .into_iter()
        .filter(|w| w.starts_with("PUT"))
        .collect()
}

/// The writes the nodes answered, as `METHOD path`.
pub fn writes(c: &Cluster) -> Vec<String> {
    c.requests()
        .into_iter()
        .filter(|q| matches!(q.method.as_str(), "PUT" | "POST" | "DELETE"))
        .map(|q| format!("{} {}", q.method, q.path))
        .collect()
}

/// The requests `node` answered that carried credentials: a wrong password must be sent at most
/// once per node (5 failures lock the account).
pub fn authenticated(node: &couchsim::Node) -> usize {
    node.requests().iter().filter(|q| q.user.is_some()).count()
}

/// The run stopped with exit 4 naming the password, after at most one authenticated request
/// per node, and wrote nothing.
pub fn assert_stopped_at_a_wrong_password(c: &Cluster, r: &Run) {
    r.assert_code(4);
    r.assert_says(&["COUCHDB_PASSWORD"]);
    for i in 0..c.len() {
        let authenticated = authenticated(c.node(i));
        assert!(
            authenticated <= 1,
            "node {i}: {authenticated} authenticated requests"
        );
    }
    assert_eq!(c.count_writes(), 0, "{:?}", writes(c));
}

/// The writes the binary sent to any of `clusters`: every write they answered but the
/// replication jobs' own protocol (sessions, checkpoints, revs_diff, bulk reads and writes),
/// which is CouchDB's, not ours (`_revs_diff` is a read sent as POST in any case).
pub fn our_writes(clusters: &[&Cluster]) -> Vec<String> {
    const REPLICATOR: [&str; 6] = [
        "/_session",
        "/_local/",
        "/_bulk_get",
        "/_revs_diff",
        "/_bulk_docs",
        "/_ensure_full_commit",
    ];
    clusters
        .iter()
        .flat_map(|c| writes(c))
        .filter(|w| !REPLICATOR.iter().any(|r| w.contains(r)))
        .collect()
}

/// One request straight to a simulated node as `user` (basic auth; `None`: anonymous):
/// (status, JSON body, or Null).
#[allow(dead_code)]
pub fn http(
    node: &couchsim::Node,
    method: &str,
    path: &str,
    user: Option<(&str, &str)>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let addr = node.addr();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = user
        .map(|(u, p)| format!("Authorization: Basic {}\r\n", base64(&format!("{u}:{p}"))))
        .unwrap_or_default();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
    let json = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn base64(raw: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

// ---- documents and copies, for the tests that move them ---------------------------------------

pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:03}")).collect()
}

/// Writes every id (retrying those a loaded simulator did not take at once).
pub fn write_all(c: &Cluster, db: &str, ids: &[String]) {
    c.node(0).write_docs(db, ids);
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in ids {
        while c.node(0).doc(db, id).is_none() {
            assert!(Instant::now() < deadline, "could not write {id}");
            c.node(0).write_docs(db, &[id]);
        }
    }
}

/// Waits until every copy of every range of `dbs` holds what the fullest holds: the state
/// "before" an operation is a settled one (`_users` gets `_design/_auth` after its creation,
/// and new files appear a moment after a map names them).
pub fn settle(c: &Cluster, dbs: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for db in dbs {
        c.node(0).sync_shards(db);
        for (range, holders) in c.node(0).shards(db).expect("db exists") {
            loop {
                let counts: Vec<Option<u64>> = holders
                    .iter()
                    .filter_map(|h| c.nodes().iter().find(|n| n.name() == *h))
                    .map(|n| n.copy_doc_count(db, &range))
                    .collect();
                let most = counts.iter().flatten().max().copied();
                if counts.iter().all(|n| n.is_some() && *n == most) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{db} {range} never settled: {counts:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Each range's document count before an operation (the fullest copy).
pub fn counts_before(c: &Cluster, db: &str) -> Vec<(String, u64)> {
    let map = c.node(0).shards(db).expect("db exists");
    map.iter()
        .map(|(range, holders)| {
            let most = holders
                .iter()
                .filter_map(|h| c.nodes().iter().find(|n| n.name() == *h))
                .filter_map(|n| n.copy_doc_count(db, range))
                .max()
                .unwrap_or(0);
            (range.clone(), most)
        })
        .collect()
}

/// On every shard-map change any node applied, every range of `db` had at least `n` copies
/// holding what the range held before the operation.
pub fn assert_never_short(c: &Cluster, db: &str, before: &[(String, u64)], n: usize) {
    let events: Vec<_> = c
        .shard_map_events()
        .into_iter()
        .filter(|e| e.db == db)
        .collect();
    assert!(!events.is_empty(), "no shard-map change of {db} was seen");
    for e in &events {
        for (range, docs) in before {
            assert!(
                e.copies_with_at_least(range, *docs) >= n,
                "{db} {range} had fewer than {n} complete copies ({docs} docs) on {} at {:?}: {e:?}",
                e.node,
                e.at
            );
        }
    }
}

/// Every id in `ids` is listed by `_all_docs` through each node in `through`. Allows 5 s: a
/// write made during a move reaches the new copy by the write-triggered push.
pub fn assert_readable(c: &Cluster, db: &str, through: &[usize], ids: &[String]) {
    let mut want = ids.to_vec();
    want.sort();
    want.dedup();
    for &i in through {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut seen = c.node(i).doc_ids(db).unwrap_or_default();
            seen.sort();
            let missing: Vec<&String> = want
                .iter()
                .filter(|id| seen.binary_search(id).is_err())
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} documents missing through {}: {:?}…",
                missing.len(),
                c.node(i).name(),
                &missing[..missing.len().min(5)]
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Copies per node over `dbs`, in node order.
pub fn copies_per_node(c: &Cluster, dbs: &[&str]) -> Vec<usize> {
    let mut per = vec![0; c.len()];
    for db in dbs {
        for holders in c.node(0).shards(db).unwrap().values() {
            for h in holders {
                if let Some(i) = c.nodes().iter().position(|n| n.name() == *h) {
                    per[i] += 1;
                }
            }
        }
    }
    per
}

/// COUCHDB_NODES for some of the nodes.
pub fn listing(c: &Cluster, nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|&i| label(c, i))
        .collect::<Vec<_>>()
        .join(",")
}
