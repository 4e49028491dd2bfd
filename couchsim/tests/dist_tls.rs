//! TLS distribution (`ERL_FLAGS="-proto_dist couch -ssl_dist_optfile …"`): nodes on TLS with
//! certificates of one CA connect and form; a node without TLS, or with a certificate of
//! another CA, never connects to them; the distribution has a port of its own, and on it a
//! TLS node answers a plain Erlang handshake with a TLS alert, not with the handshake.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use common::{fast, req, wait_for};
use couchsim::{fixtures, Cluster};

fn dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("couchsim-dist-tls-{tag}-{}", std::process::id()))
}

const LOCAL: &str = "IP:127.0.0.1";

#[test]
fn tls_nodes_of_one_ca_connect_and_the_others_never_do() {
    let (good, other) = (dir("good"), dir("other"));
    fixtures::make_certificates(&good, "couchsim test CA", &[("node", LOCAL)]).unwrap();
    fixtures::make_certificates(&other, "another CA", &[("node", LOCAL)]).unwrap();
    let flags = fixtures::erl_flags(&good, "node").unwrap();
    let foreign = fixtures::erl_flags(&other, "node").unwrap();
    let mut c = Cluster::builder().nodes(3).delays(fast());
    for i in 0..3 {
        let f = flags.clone();
        c = c.configure(i, move |s| s.erl_flags(&f));
    }
    let mut c = c.start();
    let plain = c.add_node(|s| s).clone(); // node4: no ERL_FLAGS
    let stranger = c.add_node(move |s| s.erl_flags(&foreign)).clone(); // node5: another CA
    let a = c.node(0).addr();
    for n in ["node2", "node3", "node4", "node5"] {
        let r = req(
            a,
            "PUT",
            &format!("/_node/_local/_nodes/{n}@127.0.0.1"),
            Some("{}"),
        );
        assert_eq!(r.status, 201, "{n}");
    }
    let three = common::names(&[1, 2, 3]);
    wait_for("the TLS nodes to connect", Duration::from_secs(5), || {
        (1..3).all(|i| c.node(i).membership().0 == three)
    });
    // Retried on every tick meanwhile: neither ever connects.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(c.node(0).membership().0, three);
    assert_eq!(plain.membership().0, vec!["node4@127.0.0.1".to_string()]);
    assert_eq!(stranger.membership().0, vec!["node5@127.0.0.1".to_string()]);

    // The HTTP port carries no distribution: the dist port is another one.
    assert_ne!(c.node(0).dist_addr().port(), c.node(0).addr().port());
    // A plain Erlang handshake on a TLS node's distribution port: a TLS alert back.
    let mut s = TcpStream::connect(c.node(0).dist_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"\x00\x03N{}").unwrap();
    let mut first = [0u8; 3];
    s.read_exact(&mut first).unwrap();
    assert_eq!(first[0], 0x15, "not a TLS alert record: {first:?}");
    assert_eq!(first[1], 0x03);
    let _ = std::fs::remove_dir_all(good);
    let _ = std::fs::remove_dir_all(other);
}

#[test]
fn a_plain_node_ignores_what_is_not_an_erlang_handshake() {
    let c = Cluster::builder().nodes(1).delays(fast()).start();
    // A TLS record's first two bytes read as a length of 5635; given that many, the plain
    // node finds no `N` tag and closes at once, answering nothing.
    let mut s = TcpStream::connect(c.node(0).dist_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut hello = vec![0x16, 0x03];
    hello.extend(std::iter::repeat_n(0x01, 5635));
    s.write_all(&hello).unwrap();
    let mut out = Vec::new();
    assert_eq!(s.read_to_end(&mut out).unwrap(), 0, "{out:?}");
}
