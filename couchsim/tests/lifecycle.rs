//! Dropping a cluster leaves no thread and no listening port behind; malformed input never
//! kills a node. (One test per concern; thread counting needs this file's own process.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use couchsim::{Cluster, Delays};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn get(addr: std::net::SocketAddr, raw: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_millis(300)))?;
    s.write_all(raw)?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn drop_stops_everything_and_garbage_does_not_kill_nodes() {
    let before = threads();
    let addrs;
    {
        let mut c = Cluster::builder()
            .nodes(3)
            .delays(Delays::fast())
            .configure(2, |s| s.stopped())
            .start();
        addrs = c.urls();
        let a = c.node(0).addr();
        // the stopped node's port refuses connections
        assert!(TcpStream::connect(c.node(2).addr()).is_err());
        for raw in [
            &b"\x00\x01\x02garbage\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST /_cluster_setup HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
            b"GET /_node/%ZZ/%/_config HTTP/1.1\r\nAuthorization: Basic !!!\r\n\r\n",
            b"GET /_node/_local/_nodes/\xff\xfe HTTP/1.1\r\n\r\n",
            b"POST /_couchsim/dist/connect HTTP/1.1\r\nContent-Length: 5\r\n\r\n{\"a\":",
            b"POST /_couchsim/dist/sync HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]",
            b"GET / HTTP/1.1\r\nHost: x",
        ] {
            let _ = get(a, raw);
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100_000));
        let _ = get(a, long.as_bytes());
        let up = get(a, b"GET /_up HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert!(up.starts_with("HTTP/1.1 200"), "{up}");
        // grow, start the stopped one, join everything, then drop
        c.add_node(|s| s);
        c.node(2).start();
        let admin = "Authorization: Basic YWRtaW46cGFzc3dvcmQ=\r\n";
        for n in ["node2@127.0.0.1", "node3@127.0.0.1", "node4@127.0.0.1"] {
            let r = get(
                a,
                format!(
                    "PUT /_node/_local/_nodes/{n} HTTP/1.1\r\n{admin}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                )
                .as_bytes(),
            )
            .unwrap();
            assert!(r.starts_with("HTTP/1.1 201"), "{r}");
        }
        let end = Instant::now() + Duration::from_secs(5);
        while c.nodes().iter().any(|n| n.membership().0.len() != 4) {
            assert!(Instant::now() < end, "no convergence");
            std::thread::sleep(Duration::from_millis(5));
        }
        // a keep-alive connection left open must not keep the node alive
        let mut idle = TcpStream::connect(a).unwrap();
        idle.write_all(b"GET /_up HTTP/1.1\r\n\r\n").unwrap();
        std::mem::forget(idle);
    }
    for url in addrs {
        let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
        assert!(TcpStream::connect(addr).is_err(), "{addr} still listens");
    }
    let end = Instant::now() + Duration::from_secs(2);
    while threads() > before && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        threads() <= before,
        "{} threads before, {} after",
        before,
        threads()
    );
}
