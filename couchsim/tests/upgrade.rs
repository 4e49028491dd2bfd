//! A rolling upgrade as `transcripts/upgrade/18` recorded it (PROTOCOL.md, "A rolling
//! upgrade"): a node answers as its release where 3.4.2 and 3.5.2 differ, keeps its data and
//! `maintenance_mode` across the re-creation, and comes back with copies that lack the writes
//! made while it was away until its peers push them — with `internal_replication_jobs` 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use couchsim::{Cluster, Delays, Version};
use serde_json::{json, Value};

mod common;
use common::*;

const LONG: Duration = Duration::from_secs(10);

/// Three nodes joined and finished; node3 starts as `third`.
fn formed(d: Delays, third: Version) -> Cluster {
    let c = Cluster::builder()
        .delays(d)
        .seed(18)
        .configure(2, move |s| s.version(third))
        .start();
    let a = c.node(0).addr();
    for i in 2..=3 {
        let path = format!("/_node/_local/_nodes/node{i}@127.0.0.1");
        assert_eq!(req(a, "PUT", &path, Some("{}")).status, 201);
    }
    let all = names(&[1, 2, 3]);
    wait_for("formation", LONG, || {
        (0..3).all(|i| c.node(i).membership() == (all.clone(), all.clone()))
    });
    assert_eq!(finish_cluster(a).status, 201);
    c
}

/// The status line and headers of `GET path`, as sent.
fn head(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {AUTH}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    all.split("\r\n\r\n").next().unwrap().to_string()
}

fn text(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = req(addr, "GET", path, None);
    (
        r.status,
        String::from_utf8_lossy(&r.body).trim_end().to_string(),
    )
}

#[test]
fn each_release_answers_as_recorded() {
    let c = formed(fast(), Version::V3_5_2);
    let (old, new) = (c.node(0).addr(), c.node(2).addr());
    assert_eq!(c.node(2).version(), Version::V3_5_2);

    let welcome = req(new, "GET", "/", None).json();
    assert_eq!(welcome["version"], "3.5.2");
    assert_eq!(welcome["git_sha"], "5b4d921");
    assert_eq!(req(old, "GET", "/", None).json()["version"], "3.4.2");
    assert!(head(new, "/").contains("\r\nServer: CouchDB/3.5.2 (Erlang OTP/27)"));
    assert!(head(old, "/").contains("\r\nServer: CouchDB/3.4.2 (Erlang OTP/25)"));
    // The same two keys of /_up, in the other order (the recording's poller saw it).
    assert_eq!(
        text(new, "/_up"),
        (200, r#"{"seeds":{},"status":"ok"}"#.into())
    );
    assert_eq!(
        text(old, "/_up"),
        (200, r#"{"status":"ok","seeds":{}}"#.into())
    );

    let engine = |v: &Value| v["javascript_engine"]["version"].clone();
    let local = |a| req(a, "GET", "/_node/_local/_versions", None).json();
    assert_eq!(engine(&local(new)), "128");
    assert_eq!(local(new)["erlang"]["version"], "27.3.4.1");
    assert_eq!(engine(&local(old)), "78");
    // 3.5.2 asks a 3.4.2 node by an RPC it does not have; 3.4.2 answers for itself.
    let (status, body) = text(new, "/_node/node1@127.0.0.1/_versions");
    assert_eq!(status, 500);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "invalid_ejson",
               "reason": "{badrpc,{'EXIT',{undef,[{chttpd_node,get_versions,[],[]}]}}}"})
    );
    let (status, body) = text(old, "/_node/node3@127.0.0.1/_versions");
    assert_eq!(status, 200);
    assert_eq!(engine(&serde_json::from_str(&body).unwrap()), "78");

    // The mixed cluster works: a write through the 3.5.2 node reads back through a 3.4.2 one.
    assert_eq!(req(new, "PUT", "/app", None).status, 201);
    assert_eq!(req(new, "PUT", "/app/a", Some(r#"{"x":1}"#)).status, 201);
    assert_eq!(req(old, "GET", "/app/a", None).json()["x"], 1);
    c.node(1).upgrade(Version::V3_5_2);
    wait_for("node2 back", LONG, || c.node(0).membership().0.len() == 3);
    let (status, body) = text(new, "/_node/node2@127.0.0.1/_versions");
    assert_eq!(
        (status, engine(&serde_json::from_str(&body).unwrap())),
        (200, json!("128"))
    );
}

#[test]
fn maintenance_mode_and_data_survive_the_re_creation() {
    let c = formed(fast(), Version::V3_4_2);
    let a = c.node(2).addr();
    let set = |v: &str| {
        req(
            a,
            "PUT",
            "/_node/_local/_config/couchdb/maintenance_mode",
            Some(v),
        )
    };
    assert_eq!(set(r#""nolb""#).json(), json!(""));
    assert_eq!(text(a, "/_up"), (404, r#"{"status":"nolb"}"#.into()));
    // It still serves the cluster.
    assert_eq!(req(c.node(0).addr(), "PUT", "/app", None).status, 201);
    assert_eq!(req(a, "GET", "/app", None).status, 200);

    c.node(2).upgrade(Version::V3_5_2);
    assert_eq!(req(a, "GET", "/", None).json()["version"], "3.5.2");
    assert_eq!(text(a, "/_up"), (404, r#"{"status":"nolb"}"#.into()));
    assert_eq!(
        req(
            a,
            "GET",
            "/_node/_local/_config/couchdb/maintenance_mode",
            None
        )
        .json(),
        json!("nolb")
    );
    wait_for("node3 back", LONG, || c.node(2).membership().0.len() == 3);
    assert_eq!(req(a, "GET", "/app", None).status, 200);
    assert_eq!(set(r#""false""#).json(), json!("nolb"));
    assert_eq!(
        text(a, "/_up"),
        (200, r#"{"seeds":{},"status":"ok"}"#.into())
    );
}

/// `doc_count` of `node`'s copy of every range of `db` (0 where it has none).
fn counts(c: &Cluster, node: usize, db: &str) -> Vec<u64> {
    ["00000000-7fffffff", "80000000-ffffffff"]
        .iter()
        .map(|r| c.node(node).copy_doc_count(db, r).unwrap_or(0))
        .collect()
}

fn jobs(c: &Cluster, node: usize) -> u64 {
    req(c.node(node).addr(), "GET", "/_node/_local/_system", None).json()
        ["internal_replication_jobs"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_node_that_was_away_lacks_the_writes_it_missed_for_a_while() {
    let d = Delays {
        catch_up: Duration::from_millis(600),
        catch_up_per_doc: Duration::from_millis(10),
        ..fast()
    };
    let c = formed(d, Version::V3_4_2);
    assert!(c.node(0).create_db_q_n("app", 2, 3));
    let before: Vec<String> = (0..40).map(|i| format!("before-{i:03}")).collect();
    assert_eq!(c.node(0).write_docs("app", &before), 40);
    wait_for("every copy has the first writes", LONG, || {
        counts(&c, 2, "app").iter().sum::<u64>() == 40
    });

    c.node(2).stop();
    wait_for("node3 gone", LONG, || c.node(0).membership().0.len() == 2);
    let missed: Vec<String> = (0..30).map(|i| format!("missed-{i:03}")).collect();
    assert_eq!(c.node(0).write_docs("app", &missed), 30);
    c.node(2).upgrade(Version::V3_5_2);
    wait_for("node3 connected", LONG, || {
        c.node(0).membership().0.len() == 3 && c.node(2).membership().0.len() == 3
    });
    // Connected and answering, and still short — and `_system` says no replication runs.
    wait_for("internal_replication_jobs 0 everywhere", LONG, || {
        (0..3).all(|i| jobs(&c, i) == 0)
    });
    assert_eq!(counts(&c, 2, "app").iter().sum::<u64>(), 40);
    assert_eq!(counts(&c, 0, "app").iter().sum::<u64>(), 70);
    // A write made now lands on it at once: only what it missed is late.
    assert_eq!(c.node(0).write_docs("app", &["after"]), 1);
    assert_eq!(counts(&c, 2, "app").iter().sum::<u64>(), 41);
    wait_for("node3 caught up", LONG, || {
        counts(&c, 2, "app") == counts(&c, 0, "app")
    });
}
