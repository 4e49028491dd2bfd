//! Integration tests of the in-process cluster: formation through `_nodes`, cookie mismatch,
//! stop/restart, and the wire quirks the product must survive.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use couchsim::{Cluster, Delays, Fault};
use serde_json::{json, Value};

mod common;
use common::*;

/// Every node of `c` has node1..3 in both `all_nodes` and `cluster_nodes`.
fn all_three_joined(c: &Cluster) -> bool {
    c.nodes()
        .iter()
        .all(|n| n.membership() == (names(&[1, 2, 3]), names(&[1, 2, 3])))
}

/// Three nodes joined through `_nodes` docs on node1, fully connected, and `finish_cluster`
/// answered 201.
fn finished_three_node_cluster() -> Cluster {
    let c = Cluster::builder().nodes(3).delays(fast()).start();
    let a = c.node(0).addr();
    for n in ["node2@127.0.0.1", "node3@127.0.0.1"] {
        req(a, "PUT", &format!("/_node/_local/_nodes/{n}"), Some("{}"));
    }
    wait_for("formation", Duration::from_secs(5), || all_three_joined(&c));
    assert_eq!(finish_cluster(a).status, 201);
    c
}

#[test]
fn three_nodes_form_through_nodes_docs_and_finish() {
    let c = Cluster::builder().nodes(3).delays(fast()).start();
    let a = c.node(0).addr();
    assert_eq!(req(a, "GET", "/_up", None).status, 200);
    assert_eq!(
        req(a, "GET", "/_cluster_setup", None).json(),
        json!({"state": "cluster_enabled"})
    );
    for n in ["node2@127.0.0.1", "node3@127.0.0.1"] {
        let r = req(a, "PUT", &format!("/_node/_local/_nodes/{n}"), Some("{}"));
        assert_eq!(r.status, 201);
        assert_eq!(
            r.json(),
            json!({"ok": true, "id": n, "rev": "1-967a00dff5e02add41819138abb3284d"})
        );
    }
    assert_eq!(
        req(a, "PUT", "/_node/_local/_nodes/node2@127.0.0.1", Some("{}")).json(),
        json!({"error": "conflict", "reason": "Document update conflict."})
    );
    wait_for("full membership everywhere", Duration::from_secs(5), || {
        all_three_joined(&c)
    });
    for i in 0..3 {
        let m = req(c.node(i).addr(), "GET", "/_membership", None).json();
        assert_eq!(
            m,
            json!({"all_nodes": names(&[1, 2, 3]), "cluster_nodes": names(&[1, 2, 3])})
        );
    }
    let r = finish_cluster(a);
    assert_eq!((r.status, r.json()), (201, json!({"ok": true})));
    let expect = json!({"shards": {
        "00000000-7fffffff": ["node3@127.0.0.1", "node2@127.0.0.1", "node1@127.0.0.1"],
        "80000000-ffffffff": ["node3@127.0.0.1", "node2@127.0.0.1", "node1@127.0.0.1"]}});
    assert_eq!(req(a, "GET", "/_users/_shards", None).json(), expect);
    wait_for("_dbs replicated", Duration::from_secs(5), || {
        c.nodes()
            .iter()
            .all(|n| n.all_dbs() == vec!["_replicator", "_users"])
    });
    for i in 0..3 {
        let addr = c.node(i).addr();
        assert_eq!(req(addr, "GET", "/_users/_shards", None).json(), expect);
        assert_eq!(
            req(addr, "GET", "/_cluster_setup", None).json(),
            json!({"state": "cluster_finished"})
        );
    }
    // the coordinator's admin hash, uuid and secret were copied
    let h = c.node(0).config("admins", "admin");
    let u = c.node(0).config("couchdb", "uuid");
    for i in 1..3 {
        assert_eq!(c.node(i).config("admins", "admin"), h);
        assert_eq!(c.node(i).config("couchdb", "uuid"), u);
    }
    let r = finish_cluster(c.node(1).addr());
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"error": "bad_request", "reason": "Cluster is already finished"})
        )
    );
    // remote node config through the mesh
    let r = req(
        c.node(1).addr(),
        "GET",
        "/_node/node3@127.0.0.1/_config/couchdb/uuid",
        None,
    );
    assert_eq!((r.status, r.json()), (200, json!(u)));
    assert!(c.count_writes() >= 4);
}

#[test]
fn cookie_mismatch_never_connects_and_finish_times_out() {
    let c = Cluster::builder()
        .nodes(2)
        .delays(fast())
        .configure(1, |s| s.cookie("a-different-cookie"))
        .start();
    let a = c.node(0).addr();
    assert_eq!(
        req(a, "PUT", "/_node/_local/_nodes/node2@127.0.0.1", Some("{}")).status,
        201
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.node(0).membership(), (names(&[1]), names(&[1, 2])));
    assert_eq!(c.node(1).membership(), (names(&[2]), names(&[2])));
    let r = req(
        a,
        "GET",
        "/_node/node2@127.0.0.1/_config/couchdb/uuid",
        None,
    );
    assert_eq!(
        (r.status, r.json()),
        (
            412,
            json!({"error": "nodedown", "reason": "node2@127.0.0.1 is down"})
        )
    );
    let t = Instant::now();
    let r = finish_cluster(a);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        (r.status, r.json()),
        (
            500,
            json!({"error": "setup_error", "reason": "Cluster setup timed out waiting for nodes to connect"})
        )
    );
    assert!(c.node(0).all_dbs().is_empty());
    // add_node pushes the cookie (in memory): then the retry timer connects them
    let body = format!(
        r#"{{"action":"add_node","host":"127.0.0.1","port":{},"username":"admin","password":"password","name":"node2"}}"#,
        c.node(1).addr().port()
    );
    let r = req(a, "POST", "/_cluster_setup", Some(&body));
    assert_eq!(r.status, 409);
    wait_for(
        "connection after receive_cookie",
        Duration::from_secs(5),
        || c.node(1).membership() == (names(&[1, 2]), names(&[1, 2])),
    );
    // lost again on restart
    c.node(1).restart();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(c.node(0).membership().0, names(&[1]));
}

#[test]
fn stop_and_restart_a_member() {
    let c = finished_three_node_cluster();
    let a = c.node(0).addr();
    c.node(2).stop();
    assert!(!c.node(2).is_running());
    assert!(req_raw(c.node(2).addr(), "GET", "/_up", None, None).is_err());
    wait_for("node3 gone from all_nodes", Duration::from_secs(2), || {
        c.node(0).membership() == (names(&[1, 2]), names(&[1, 2, 3]))
            && c.node(1).membership() == (names(&[1, 2]), names(&[1, 2, 3]))
    });
    let r = req(
        a,
        "GET",
        "/_node/node3@127.0.0.1/_config/couchdb/uuid",
        None,
    );
    assert_eq!(r.status, 412);
    assert_eq!(req(a, "GET", "/_users", None).status, 200);
    assert_eq!(finish_cluster(a).status, 500);
    c.node(2).start();
    wait_for("node3 back", Duration::from_secs(2), || {
        all_three_joined(&c)
    });
    assert_eq!(
        req(c.node(2).addr(), "GET", "/_cluster_setup", None).json(),
        json!({"state": "cluster_finished"})
    );
}

#[test]
fn auth_bodies_and_lockout() {
    let c = Cluster::builder().nodes(1).delays(fast()).start();
    let a = c.node(0).addr();
    let r = req_raw(a, "GET", "/_membership", None, None).unwrap();
    assert_eq!(
        (r.status, r.json()),
        (
            401,
            json!({"error": "unauthorized", "reason": "You are not a server admin."})
        )
    );
    assert_eq!(req_raw(a, "GET", "/_up", None, None).unwrap().status, 200);
    let wrong = "YWRtaW46d3JvbmdwYXNzd29yZA=="; // admin:wrongpassword
    for p in ["/", "/_up", "/_membership", "/_cluster_setup", "/_all_dbs"] {
        let r = req_raw(a, "GET", p, Some(wrong), None).unwrap();
        assert_eq!(
            (r.status, r.json()),
            (
                401,
                json!({"error": "unauthorized", "reason": "Name or password is incorrect."})
            )
        );
    }
    let r = req_raw(a, "GET", "/_membership", Some(AUTH), None).unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["reason"],
        "Account is temporarily locked due to multiple authentication failures"
    );
    let log = c.node(0).requests();
    assert_eq!(log.last().unwrap().user.as_deref(), Some("admin"));
    assert_eq!(log.last().unwrap().status, 403);
}

#[test]
fn malformed_setup_body_gets_a_second_unsolicited_500() {
    let c = Cluster::builder().nodes(1).delays(fast()).start();
    let a = c.node(0).addr();
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = r#"{"action": "enable_cluster","#;
    write!(
        s,
        "POST /_cluster_setup HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {AUTH}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut rd = BufReader::new(s);
    let first = read_resp(&mut rd).unwrap();
    assert_eq!(first.status, 400);
    assert_eq!(first.json()["reason"], "Missing JSON body'");
    let second = read_resp(&mut rd).unwrap();
    assert_eq!(second.status, 500);
    assert_eq!(second.json()["reason"], "function_clause");
}

#[test]
fn faults_and_nonode() {
    let c = Cluster::builder()
        .nodes(2)
        .delays(fast())
        .configure(1, |s| s.nonode())
        .start();
    let a = c.node(0).addr();
    c.node(0).inject(Fault::Maintenance("nolb".into()));
    let r = req(a, "GET", "/_up", None);
    assert_eq!((r.status, r.json()), (404, json!({"status": "nolb"})));
    c.node(0).clear_faults();
    c.node(0).inject(Fault::FailNth {
        method: "GET".into(),
        path: "/_membership".into(),
        nth: 2,
        status: 500,
    });
    assert_eq!(req(a, "GET", "/_membership", None).status, 200);
    assert_eq!(req(a, "GET", "/_membership", None).status, 500);
    assert_eq!(req(a, "GET", "/_membership", None).status, 200);
    c.node(0).inject(Fault::MalformedJson {
        path: "/_node/_local".into(),
    });
    assert!(serde_json::from_slice::<Value>(&req(a, "GET", "/_node/_local", None).body).is_err());
    c.node(0).clear_faults();
    // nonode@nohost answers but never connects
    let b = c.node(1).addr();
    assert_eq!(
        req(b, "GET", "/_node/_local", None).json(),
        json!({"name": "nonode@nohost"})
    );
    req(a, "PUT", "/_node/_local/_nodes/nonode@nohost", Some("{}"));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.node(0).membership().0, names(&[1]));
}

#[test]
fn dotless_names_never_connect() {
    let c = Cluster::builder()
        .nodes(2)
        .delays(fast())
        .configure(0, |s| s.name("couchdb@couchdb-1"))
        .configure(1, |s| s.name("couchdb@couchdb-2"))
        .start();
    let a = c.node(0).addr();
    assert_eq!(
        req(
            a,
            "PUT",
            "/_node/_local/_nodes/couchdb@couchdb-2",
            Some("{}")
        )
        .status,
        201
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        c.node(0).membership(),
        (
            vec!["couchdb@couchdb-1".to_string()],
            vec![
                "couchdb@couchdb-1".to_string(),
                "couchdb@couchdb-2".to_string()
            ]
        )
    );
    // a new db still places shards on the phantom
    assert_eq!(req(a, "PUT", "/griddb", None).status, 201);
    let s = c.node(0).shards("griddb").unwrap();
    assert!(s.values().all(|v| v.len() == 2));
}

#[test]
fn expect_continue_and_keep_alive() {
    let c = Cluster::builder().nodes(1).delays(fast()).start();
    let a = c.node(0).addr();
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = "{}";
    write!(
        s,
        "PUT /_node/_local/_nodes/x@y.z HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {AUTH}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    rd.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    rd.read_line(&mut line).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    assert_eq!(read_resp(&mut rd).unwrap().status, 201);
    // same connection, next request
    write!(s, "GET /_up HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_resp(&mut rd).unwrap().status, 200);
    write!(
        s,
        "HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /_up HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut l = String::new();
    rd.read_line(&mut l).unwrap();
    assert!(l.starts_with("HTTP/1.1 200"));
    loop {
        let mut h = String::new();
        rd.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
    }
    // no body after HEAD: the next bytes are the next response
    assert_eq!(
        read_resp(&mut rd).unwrap().json(),
        json!({"status": "ok", "seeds": {}})
    );
}

#[test]
fn a_wiped_member_is_repopulated_by_the_running_cluster() {
    let c = finished_three_node_cluster();
    let old_uuid = c.node(2).config("couchdb", "uuid");
    c.node(2).stop();
    c.node(2).wipe();
    assert_ne!(c.node(2).config("couchdb", "uuid"), old_uuid);
    c.node(2).start();
    // fresh at first (or already re-populated), then the others push their state into it
    wait_for("re-population", Duration::from_secs(5), || {
        c.node(2).membership() == (names(&[1, 2, 3]), names(&[1, 2, 3]))
            && c.node(2).all_dbs() == vec!["_replicator", "_users"]
    });
}

/// Trap 22: two first writes at once to a fresh node's `_nodes`: one 201, one 500
/// `badmatch`/`file_exists` whose doc is not written. Once `_nodes` has had a write,
/// concurrent PUTs of different docs all get 201.
#[test]
fn first_nodes_writes_race_then_concurrent_puts_are_fine() {
    let d = Delays {
        // Wide enough that the two PUTs overlap even on a loaded machine.
        nodes_create: Duration::from_millis(400),
        ..fast()
    };
    let c = Cluster::builder().nodes(5).delays(d).start();
    let a = c.node(0).addr();
    let put_all = |names: &[&str]| -> Vec<Resp> {
        std::thread::scope(|s| {
            let hs: Vec<_> = names
                .iter()
                .map(|n| {
                    let path = format!("/_node/_local/_nodes/{n}");
                    s.spawn(move || req(a, "PUT", &path, Some("{}")))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let first = put_all(&["node2@127.0.0.1", "node3@127.0.0.1"]);
    let mut statuses: Vec<u16> = first.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, vec![201, 500]);
    let lost = first.iter().position(|r| r.status == 500).unwrap();
    assert_eq!(
        first[lost].json(),
        json!({"error": "badmatch", "reason": "file_exists"})
    );
    let won = ["node2@127.0.0.1", "node3@127.0.0.1"][1 - lost];
    let cluster_nodes = req(a, "GET", "/_membership", None).json()["cluster_nodes"].clone();
    assert_eq!(cluster_nodes, json!(["node1@127.0.0.1", won]));
    // `_nodes` has been written: concurrent PUTs of different docs are all written.
    let rest = put_all(&["node4@127.0.0.1", "node5@127.0.0.1"]);
    assert!(rest.iter().all(|r| r.status == 201), "{:?}", {
        rest.iter().map(|r| r.status).collect::<Vec<_>>()
    });
    let cluster_nodes = req(a, "GET", "/_membership", None).json()["cluster_nodes"].clone();
    assert_eq!(cluster_nodes.as_array().map(Vec::len), Some(4));
}

/// After `finish_cluster` copies the coordinator's admin hash, each other node's next
/// authenticated request computes the password hash again (once), like CouchDB's PBKDF2.
#[test]
fn a_copied_admin_hash_costs_one_more_password_hash() {
    let c = finished_three_node_cluster();
    let node2 = c.node(1);
    // finish_cluster copied node1's hash: node2 has not checked the new one yet.
    let before = node2.password_hashes();
    assert_eq!(req(node2.addr(), "GET", "/_up", None).status, 200);
    assert_eq!(node2.password_hashes(), before + 1);
    assert_eq!(req(node2.addr(), "GET", "/_membership", None).status, 200);
    assert_eq!(node2.password_hashes(), before + 1);
    // POST /_session hashes too (a new salt makes a new hash)
    node2.rehash_admin();
    let r = req_raw(
        node2.addr(),
        "POST",
        "/_session",
        None,
        Some(r#"{"name":"admin","password":"password"}"#),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(node2.password_hashes(), before + 2);
}

/// `first_auth_cpu`: the first authentication burns CPU for `first_auth` instead of
/// sleeping, so it takes at least that long in wall time too.
#[test]
fn first_auth_can_cost_real_cpu() {
    let d = Delays {
        first_auth: Duration::from_millis(150),
        first_auth_cpu: true,
        ..fast()
    };
    let c = Cluster::builder().nodes(1).delays(d).start();
    let t = Instant::now();
    assert_eq!(req(c.node(0).addr(), "GET", "/_up", None).status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(140),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(c.node(0).password_hashes(), 1);
}

#[test]
fn a_member_put_back_after_its_doc_was_deleted_is_tried_at_once() {
    // A member that never connected is tried again only after `retry_timer`; deleting its
    // `_nodes` doc and putting it back is a new member, tried at once (as mem3 does).
    let mut d = fast();
    d.retry_timer = Duration::from_secs(30);
    let c = Cluster::builder()
        .nodes(2)
        .delays(d)
        .configure(1, |s| s.stopped())
        .start();
    let a = c.node(0).addr();
    let path = "/_node/_local/_nodes/node2@127.0.0.1";
    assert_eq!(req(a, "PUT", path, Some("{}")).status, 201);
    std::thread::sleep(Duration::from_millis(100)); // the attempt failed: retry in 30 s
    c.node(1).start();
    let rev = req(a, "GET", path, None).json()["_rev"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        req(a, "DELETE", &format!("{path}?rev={rev}"), None).status,
        200
    );
    assert_eq!(req(a, "PUT", path, Some("{}")).status, 201);
    wait_for("node2 connected", Duration::from_secs(3), || {
        c.node(0).membership().0.len() == 2
    });
}
