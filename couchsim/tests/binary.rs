//! The `couchsim` binary as docker-compose runs it: environment like `couchdb:3.4.2`, names
//! resolved through DNS (here: loopback IPs as dotted host names), state kept in a data dir,
//! and the `curl` multi-call mode.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const AUTH: &str = "YWRtaW46cGFzc3dvcmQ="; // admin:password

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "couchsim-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The distribution and epmd ports that go with an HTTP port: the same for every node of one
/// test (each on its own loopback IP), as 9100 and 4369 are for every container.
fn dist_ports(http: u16) -> (u16, u16) {
    static PORTS: std::sync::Mutex<Vec<(u16, u16, u16)>> = std::sync::Mutex::new(Vec::new());
    let mut all = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, d, e)) = all.iter().find(|(h, _, _)| *h == http) {
        return (*d, *e);
    }
    let (d, e) = (free_port(), free_port());
    all.push((http, d, e));
    (d, e)
}

fn spawn(ip: &str, port: u16, data: &Path, extra: &[(&str, &str)]) -> Proc {
    let (dist, epmd) = dist_ports(port);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_couchsim"));
    cmd.env_clear()
        .env("NODENAME", ip)
        .env("COUCHDB_USER", "admin")
        .env("COUCHDB_PASSWORD", "password")
        .env("COUCHDB_ERLANG_COOKIE", "binary-test-cookie")
        .env("COUCHSIM_LISTEN_IP", ip)
        .env("COUCHSIM_PORT", port.to_string())
        .env("COUCHSIM_DIST_PORT", dist.to_string())
        .env("COUCHSIM_EPMD_PORT", epmd.to_string())
        .env("COUCHSIM_DATA", data.join("data"))
        .env("COUCHSIM_ETC", data.join("etc"))
        .env("COUCHSIM_DELAYS", "fast")
        .stdout(Stdio::null())
        .stderr(
            if extra.iter().any(|(k, _)| *k == "COUCHDB_ERLANG_COOKIE") {
                Stdio::piped()
            } else {
                Stdio::null()
            },
        );
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("spawn couchsim"))
}

/// Polls `addr`'s `/_membership` for up to 5 s until `all_nodes` and `cluster_nodes` are
/// both `want`; panics with `what` and the last answer otherwise.
fn wait_membership(addr: SocketAddr, want: &Value, what: &str) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let m = req(addr, "GET", "/_membership", None).unwrap().1;
        if m["all_nodes"] == *want && m["cluster_nodes"] == *want {
            break;
        }
        assert!(Instant::now() < end, "{what}: {m}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn req(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Basic {AUTH}\r\n"
    );
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        head.push_str("\r\n");
    }
    s.write_all(head.as_bytes())?;
    let mut rd = BufReader::new(s);
    let mut line = String::new();
    rd.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let mut rest = Vec::new();
    rd.read_to_end(&mut rest)?;
    let text = String::from_utf8_lossy(&rest);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn wait_up(addr: SocketAddr) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Ok((200, _)) = req(addr, "GET", "/_up", None) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{addr} never came up");
}

fn loopback_alias_works(ip: &str) -> bool {
    TcpListener::bind((ip, 0)).is_ok()
}

#[test]
fn two_binaries_join_over_dns_names_and_keep_state() {
    if !loopback_alias_works("127.0.0.2") || !loopback_alias_works("127.0.0.3") {
        eprintln!("skipped: 127.0.0.2/127.0.0.3 not usable here");
        return;
    }
    let port = free_port();
    let (d1, d2) = (tmpdir("n1"), tmpdir("n2"));
    let a: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let b: SocketAddr = format!("127.0.0.3:{port}").parse().unwrap();
    let p1 = spawn("127.0.0.2", port, &d1, &[]);
    let p2 = spawn("127.0.0.3", port, &d2, &[]);
    wait_up(a);
    wait_up(b);
    assert_eq!(
        req(a, "GET", "/_node/_local", None).unwrap().1,
        json!({"name": "couchdb@127.0.0.2"})
    );
    assert_eq!(
        req(a, "GET", "/_cluster_setup", None).unwrap().1,
        json!({"state": "cluster_enabled"})
    );
    let (s, _) = req(
        a,
        "PUT",
        "/_node/_local/_nodes/couchdb@127.0.0.3",
        Some("{}"),
    )
    .unwrap();
    assert_eq!(s, 201);
    let both = json!(["couchdb@127.0.0.2", "couchdb@127.0.0.3"]);
    wait_membership(b, &both, "no convergence");
    let (s, _) = req(
        a,
        "POST",
        "/_cluster_setup",
        Some(r#"{"action":"finish_cluster"}"#),
    )
    .unwrap();
    assert_eq!(s, 201);
    // node 2 is drained, then re-created as 3.5.2 with its data and config (the image's
    // COUCHSIM_VERSION): it keeps _nodes/_dbs/config, maintenance mode included, and reconnects
    let hash = req(b, "GET", "/_node/_local/_config/admins/admin", None)
        .unwrap()
        .1;
    let path = "/_node/_local/_config/couchdb/maintenance_mode";
    assert_eq!(req(b, "PUT", path, Some(r#""nolb""#)).unwrap().0, 200);
    drop(p2);
    let _p2 = spawn("127.0.0.3", port, &d2, &[("COUCHSIM_VERSION", "3.5.2")]);
    let end = Instant::now() + Duration::from_secs(10);
    while !matches!(req(b, "GET", "/_up", None), Ok((404, _))) {
        assert!(Instant::now() < end, "{b} never came back");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        req(b, "GET", "/_up", None).unwrap().1,
        json!({"status": "nolb"})
    );
    assert_eq!(req(b, "GET", "/", None).unwrap().1["version"], "3.5.2");
    assert_eq!(
        req(b, "PUT", path, Some(r#""false""#)).unwrap().1,
        json!("nolb")
    );
    wait_up(b);
    wait_membership(b, &both, "no reconnection");
    assert_eq!(
        req(b, "GET", "/_node/_local/_config/admins/admin", None)
            .unwrap()
            .1,
        hash
    );
    assert_eq!(
        req(b, "GET", "/_all_dbs", None).unwrap().1,
        json!(["_replicator", "_users"])
    );
    drop(p1);
    let _ = std::fs::remove_dir_all(d1);
    let _ = std::fs::remove_dir_all(d2);
}

#[test]
fn dotless_nodename_never_connects_and_monster_refuses_to_boot() {
    let port = free_port();
    let d = tmpdir("mon");
    let mut p = spawn(
        "127.0.0.1",
        port,
        &d,
        &[("COUCHDB_ERLANG_COOKIE", "monster")],
    );
    let status = p.0.wait().unwrap();
    assert!(!status.success());
    let mut err = String::new();
    p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("refusing to start"), "{err}");
    assert!(!err.contains("password"));
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn curl_multicall_for_healthchecks() {
    let port = free_port();
    let d = tmpdir("curl");
    let _p = spawn("127.0.0.1", port, &d, &[("NODENAME", "couchdb-1")]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_up(addr);
    let bin = env!("CARGO_BIN_EXE_couchsim");
    let run = |args: &[&str]| {
        Command::new(bin)
            .arg("curl")
            .args(args)
            .output()
            .expect("run curl mode")
    };
    let ok = run(&["-fsS", &format!("http://localhost:{port}/_up")]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "{\"status\":\"ok\",\"seeds\":{}}\n"
    );
    let e = run(&["-fsS", &format!("http://localhost:{port}/_membership")]);
    assert_eq!(e.status.code(), Some(22));
    let dead = free_port();
    let e = run(&["-fsS", &format!("http://127.0.0.1:{dead}/_up")]);
    assert_eq!(e.status.code(), Some(7));
    let _ = std::fs::remove_dir_all(d);
}

/// The bundle's node healthcheck shape, as `sh -c` in the image: the credentials come from
/// the environment and reach curl on stdin (`-K -`), never on a command line; grep decides.
#[test]
fn sh_pipes_credentials_from_the_environment_into_curl_and_grep() {
    let port = free_port();
    let d = tmpdir("sh");
    let _p = spawn("127.0.0.1", port, &d, &[("NODENAME", "couchdb-1.test")]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_up(addr);
    let script = format!(
        "curl -fsS -o /dev/null http://localhost:{port}/_up && \
         printf 'user = \"%s:%s\"\\n' \"$COUCHDB_USER\" \"$COUCHDB_PASSWORD\" | \
         curl -fsS -K - http://localhost:{port}/_membership | grep -qF '\"cluster_nodes\"'"
    );
    let run = |password: &str| {
        Command::new(env!("CARGO_BIN_EXE_couchsim"))
            .args(["sh", "-c", &script])
            .env_clear()
            .env("COUCHDB_USER", "admin")
            .env("COUCHDB_PASSWORD", password)
            .output()
            .expect("run sh mode")
    };
    let ok = run("password");
    assert_eq!(ok.status.code(), Some(0), "{:?}", ok);
    // A wrong password: curl fails (401), grep sees nothing, the check fails.
    let bad = run("wrong");
    assert_eq!(bad.status.code(), Some(1), "{:?}", bad);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("401"));
    // grep as its own multi-call tool, on stdin.
    let mut grep = Command::new(env!("CARGO_BIN_EXE_couchsim"))
        .args(["grep", "-qF", "\",\""])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    grep.stdin
        .take()
        .unwrap()
        .write_all(br#"{"shards":{"00000000-7fffffff":["a","b"]}}"#)
        .unwrap();
    assert_eq!(grep.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_dir_all(d);
}
