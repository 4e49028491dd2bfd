//! Watch benchmark: what an idle `watch` costs the nodes and holds in memory.
//!
//! For each case it starts simulated CouchDB nodes (couchsim, in-process), runs the release
//! binary's `watch` on them (interval `BENCH_WATCH_INTERVAL`, default 1s) until its metrics say the
//! cluster is healthy, then counts every request the nodes answer over `BENCH_WATCH_TICKS` idle
//! looks (default 10), per node and per look, and reads the watcher's resident memory
//! (`/proc/<pid>/status`: VmRSS now, VmHWM its peak) and the size of its `/metrics` page. Then
//! SIGTERM, and the exit code and how long it took.
//!
//! Cases: `BENCH_WATCH_NODES` (default `3,9,32`) empty clusters, and 3 nodes holding
//! `BENCH_WATCH_DBS` databases (default 2000). `scripts/bench` runs it with the static binary
//! (`BENCH_BINARY`). Prints a markdown table on stdout; exits 1 if an idle look wrote anything.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use couchsim::{Cluster, Delays};

const USER: &str = "admin";
const PASSWORD: &str = "bench-password";
const COOKIE: &str = "bench-cookie-3f9c";

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    Some(answer.split_once("\r\n\r\n")?.1.to_string())
}

fn metric(port: u16, name: &str) -> Option<u64> {
    get(port, "/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
}

/// (VmRSS, VmHWM) in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

struct Row {
    case: String,
    gets_per_node: (f64, f64),
    per_look: f64,
    writes: usize,
    rss: (u64, u64),
    page: usize,
    stop: Duration,
    code: i32,
}

fn spawn(binary: &Path, c: &Cluster, port: u16, interval: &str) -> Child {
    let nodes: Vec<String> = c
        .urls()
        .iter()
        .map(|u| u.trim_start_matches("http://").to_string())
        .collect();
    Command::new(binary)
        .arg("watch")
        .env_clear()
        .env("COUCHDB_USER", USER)
        .env("COUCHDB_PASSWORD", PASSWORD)
        .env("COUCHDB_COOKIE", COOKIE)
        .env("COUCHDB_NODES", nodes.join(","))
        .env("COUCHDB_WATCH_INTERVAL", interval)
        .env("COUCHDB_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the binary")
}

/// `dbs` databases are created once the watcher has formed the cluster, and counted by it before
/// the looks are measured.
fn measure(
    binary: &Path,
    case: String,
    c: &Cluster,
    interval: &str,
    looks: u64,
    dbs: usize,
) -> Row {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = spawn(binary, c, port, interval);
    let t = Instant::now();
    while metric(port, "couchdb_cluster_healthy") != Some(1) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{case}: never healthy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if dbs > 0 {
        eprintln!("bench: creating {dbs} databases");
        for i in 0..dbs {
            c.node(i % c.len()).create_db(&format!("userdb-{i:05}"));
        }
        let t = Instant::now();
        while metric(port, "couchdb_cluster_databases") != Some(dbs as u64 + 2) {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "{case}: never saw the databases"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Start counting at the end of a look.
    let first = metric(port, "couchdb_watch_ticks_total").unwrap_or(0);
    while metric(port, "couchdb_watch_ticks_total").unwrap_or(0) == first {
        std::thread::sleep(Duration::from_millis(5));
    }
    c.reset_counters();
    let from = metric(port, "couchdb_watch_ticks_total").unwrap_or(0);
    while metric(port, "couchdb_watch_ticks_total").unwrap_or(0) < from + looks {
        std::thread::sleep(Duration::from_millis(5));
    }
    let done = metric(port, "couchdb_watch_ticks_total").unwrap_or(0) - from;
    let gets: Vec<f64> = c
        .nodes()
        .iter()
        .map(|n| n.count("GET") as f64 / done as f64)
        .collect();
    let total: f64 = c.requests().len() as f64 / done as f64;
    let writes = c.count_writes();
    let rss = memory(child.id());
    let page = get(port, "/metrics").map_or(0, |p| p.len());
    let t = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let code = child.wait().map_or(-1, |s| s.code().unwrap_or(-1));
    let stop = t.elapsed();
    eprintln!("bench: {case}: {done} looks measured");
    Row {
        case,
        gets_per_node: (
            gets.iter().cloned().fold(f64::MAX, f64::min),
            gets.iter().cloned().fold(0.0, f64::max),
        ),
        per_look: total,
        writes,
        rss,
        page,
        stop,
        code,
    }
}

fn cluster(n: usize) -> Cluster {
    Cluster::builder()
        .nodes(n)
        .admin(USER, PASSWORD)
        .cookie(COOKIE)
        .delays(Delays::fast())
        .start()
}

fn main() {
    let binary = PathBuf::from(
        std::env::var("BENCH_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_couchdb-cluster-init").to_string()),
    );
    let interval = std::env::var("BENCH_WATCH_INTERVAL").unwrap_or_else(|_| "1s".into());
    let looks: u64 = std::env::var("BENCH_WATCH_TICKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let ns: Vec<usize> = std::env::var("BENCH_WATCH_NODES")
        .unwrap_or_else(|_| "3,9,32".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let dbs: usize = std::env::var("BENCH_WATCH_DBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);

    let mut rows = Vec::new();
    for &n in &ns {
        let c = cluster(n);
        rows.push(measure(
            &binary,
            format!("{n} nodes"),
            &c,
            &interval,
            looks,
            0,
        ));
    }
    if dbs > 0 {
        let c = cluster(3);
        rows.push(measure(
            &binary,
            format!("3 nodes, {dbs} databases"),
            &c,
            &interval,
            looks,
            dbs,
        ));
    }

    println!("| Idle `watch` (interval {interval}, {looks} looks) | requests per look, all nodes | GETs per node per look | writes | RSS now / peak | `/metrics` page | SIGTERM → exit |");
    println!("|---|---|---|---|---|---|---|");
    let mut status = 0;
    for r in &rows {
        if r.writes > 0 || r.code != 0 {
            status = 1;
        }
        println!(
            "| {} | {:.1} | {:.1}–{:.1} | {} | {:.1} / {:.1} MB | {} bytes | {} ms, exit {} |",
            r.case,
            r.per_look,
            r.gets_per_node.0,
            r.gets_per_node.1,
            r.writes,
            r.rss.0 as f64 * 1024.0 / 1e6,
            r.rss.1 as f64 * 1024.0 / 1e6,
            r.page,
            r.stop.as_millis(),
            r.code
        );
    }
    println!();
    println!("- Requests: every request the simulated nodes answered while the watcher made the looks, divided by the looks (the coordinator also answers the shard maps: the higher GETs figure). Writes must be 0.");
    println!("- RSS: the watcher's `/proc/<pid>/status` after the looks (VmRSS) and its peak (VmHWM), formation included. MB = 10^6 bytes.");
    std::process::exit(status);
}
