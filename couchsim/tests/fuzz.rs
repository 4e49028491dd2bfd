//! Random requests (seeded) against every route family: the node must keep answering and
//! never panic (a panic in release, where `panic = "abort"`, would kill the whole node).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use couchsim::{Cluster, Delays};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

#[test]
fn random_requests_never_kill_a_node() {
    let c = Cluster::builder().nodes(2).delays(Delays::fast()).start();
    let a = c.node(0).addr();
    // a db with documents, so the document routes reach the clustered code
    c.node(0).create_db("db");
    c.node(0).write_docs("db", &["doc1", "doc2"]);
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let methods = ["GET", "PUT", "POST", "DELETE", "HEAD", "COPY", "PATCH"];
    let paths = [
        "/",
        "/_up",
        "/_session",
        "/_uuids?count=99999",
        "/_uuids?count=-1",
        "/_membership",
        "/_cluster_setup",
        "/_cluster_setup?ensure_dbs_exist=%5B",
        "/_all_dbs",
        "/_node/_local",
        "/_node/_local/_config",
        "/_node/_local/_config/admins",
        "/_node/_local/_config/a/b",
        "/_node/_local/_nodes",
        "/_node/_local/_nodes/_all_docs?include_docs=true",
        "/_node/_local/_nodes/x%40y.z?rev=1-x",
        "/_node/_local/_dbs/_users",
        "/_node/node2@127.0.0.1/_config",
        "/_node/ghost@a.b/x",
        "/_node/%",
        "/db",
        "/db/_shards",
        "/db/_all_docs",
        "/_users",
        "/Bad",
        "/_bad",
        "/db?q=0&n=0",
        "/db?q=9999",
        "/_couchsim/dist/proxy",
        "/_couchsim/dist/shard",
        "/db/doc1",
        "/db/doc1?rev=1-x",
        "/db/doc1?conflicts=true",
        "/db/_design/x",
        "/db/_local/x",
        "/db/_bulk_docs",
        "/db/_sync_shards",
        "/db/_shards/doc1",
        "/db/_shards/",
        "/db/_all_docs?limit=-1&skip=x",
        "/db/_all_docs?limit=0",
        "/_node/_local/_all_dbs",
        "/_node/_local/_system",
        "/_node/_local/_dbs/db",
        "/_node/_local/_dbs/db?conflicts=true",
        "/_node/_local/_dbs/db?rev=1-x",
        "/_node/_local/shards%2F00000000-7fffffff%2Fdb.1",
        "/_node/_local/shards%2Fx",
        "/_node/node2@127.0.0.1/shards%2F00000000-7fffffff%2Fdb.1",
        "/_node/node2@127.0.0.1/_all_dbs",
        "/%%%",
        "//",
        "/_scheduler/docs",
        "/_scheduler/docs?limit=-1&skip=x",
        "/_scheduler/docs?limit=1&skip=99",
        "/_scheduler/docs/_replicator",
        "/_scheduler/docs/_replicator/r1",
        "/_scheduler/docs/_replicator/%2F..%2F",
        "/_scheduler/docs/other/r1",
        "/_scheduler/jobs",
        "/_scheduler/jobs/x",
        "/_scheduler",
        "/_replicator",
        "/_replicator/r1",
        "/_replicator/r1?rev=1-x",
        "/_replicator/_all_docs",
        "/_node/_local/_couchsim_replicator",
        "/db/_changes",
        "/db/_changes?since=%%&feed=longpoll&timeout=5",
        "/db/_changes?since=3-g1AAAA!!&style=all_docs",
        "/db/_changes?since=9-g1AAAAW10&feed=longpoll&timeout=x",
        "/db/_changes?since=now&feed=longpoll&timeout=3",
        "/db/_revs_diff",
        "/db/_bulk_get?revs=true",
        "/db/_ensure_full_commit",
        "/db/_local/x",
        "/db/_local/",
        "/db/_local/a/b",
    ];
    let bodies = [
        "", "{}", "[]", "null", "\"x\"", "{\"action\":\"enable_cluster\",\"node_count\":\"x\"}",
        "{\"action\":\"enable_cluster\",\"bind_address\":1}",
        "{\"action\":\"add_node\",\"host\":\"127.0.0.1\",\"port\":1,\"username\":\"a\",\"password\":\"b\"}",
        "{\"action\":\"add_node\",\"host\":\"\",\"port\":\"x\",\"username\":1,\"password\":[]}",
        "{\"action\":\"finish_cluster\",\"ensure_dbs_exist\":[1]}",
        "{\"action\":\"receive_cookie\",\"cookie\":{}}", "{\"action\":\"enable_single_node\"}",
        "{\"_rev\":5}", "\"plain\"", "{\"name\":\"admin\",\"password\":\"password\"}",
        "\u{0}\u{1}", "{\"a\":",
        "{\"docs\":[{\"_id\":1},{\"_bad\":2},7,{\"_id\":\"d\",\"_rev\":\"x\"}]}",
        "{\"docs\":[{\"_id\":\"d\",\"_rev\":\"3-ab\",\"_revisions\":{\"start\":-1,\"ids\":[1,\"z\"]}}],\"new_edits\":false}",
        "{\"docs\":{}}",
        "{\"by_node\":{\"n@x.y\":[\"zz\"]},\"by_range\":{\"zz\":[\"n@x.y\"]}}",
        "{\"by_node\":{\"n@x.y\":\"r\"},\"by_range\":{\"r\":7}}",
        "{\"by_node\":[],\"by_range\":null,\"shard_suffix\":[99999,-1,\"a\"]}",
        "{\"n\":18446744073709551615,\"m\":-9223372036854775808,\"f\":1e308,\"deep\":[[[[[]]]]]}",
        "{\"_deleted\":true}",
        "{\"source\":\"http://a:b@:0/x\",\"target\":{\"url\":\"http://127.0.0.1:1/db\",\"auth\":{\"basic\":7}},\"continuous\":true}",
        "{\"source\":{\"url\":\"http://127.0.0.1:1/db\",\"auth\":{\"basic\":{\"username\":1}}},\"target\":\"http://[::1\",\"create_target\":true}",
        "{\"source\":\"app\",\"target\":{},\"owner\":null,\"_replication_state\":\"failed\"}",
        "{\"doc1\":[\"1-x\",7],\"x\":\"y\",\"doc2\":{}}",
        "{\"docs\":[{\"id\":1},{\"id\":\"doc1\",\"rev\":\"9-z\"},7,{\"id\":\"doc1\"}]}",
        "{\"_rev\":\"0-9\",\"a\":1}",
    ];
    let auths = [
        "",
        "Authorization: Basic YWRtaW46cGFzc3dvcmQ=\r\n",
        "Authorization: Basic ==\r\n",
        "Authorization: Bearer x\r\n",
    ];
    let ctypes = [
        "",
        "Content-Type: application/json\r\n",
        "Content-Type: text/plain\r\n",
    ];
    for _ in 0..800 {
        let body = r.pick(&bodies);
        let raw = format!(
            "{} {} HTTP/1.1\r\nHost: x\r\n{}{}Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            r.pick(&methods),
            r.pick(&paths),
            r.pick(&auths),
            r.pick(&ctypes),
            body.len(),
            body
        );
        let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(2)).expect("node died");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 "),
            "no answer to {raw:?}: {text:?}"
        );
    }
    assert!(c.node(0).is_running());
    let mut s = TcpStream::connect(a).unwrap();
    s.write_all(b"GET /_up HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 "), "{out}");
}
