//! Rolling-upgrade benchmark: how long `drain`, the restart and `undrain` take per node, and the
//! whole upgrade, on simulated CouchDB nodes with the recorded timings (`Delays::default()`: a
//! 1.1 s boot, the returning node's catch-up 0.5 s + 5 ms per missed document), behind a load
//! balancer that health-checks `/_up` every 2 s (the bundle's Traefik interval), while a client
//! writes through it every 50 ms (tests/common/lb.rs is the balancer of the tests).
//!
//! For each of `BENCH_UPGRADE_NODES` (default `3,5`): a formed cluster holding `app` with
//! `BENCH_UPGRADE_DOCS` documents (default 1000); then, for each node, the highest first: drain
//! (through the balancer), restart as 3.5.2 with `BENCH_UPGRADE_AWAY` (default 3 s) between the
//! stop and the start — the writes of that time are what it misses —, undrain. Prints a markdown
//! table on stdout; exits 1 if the client saw an answer that is not a 2xx.
//! `scripts/bench` runs it with the static binary (`BENCH_BINARY`).

// The tests' helpers and balancer themselves, not copies (the bench uses only part of them).
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use couchsim::{Cluster, Delays, Version};

use common::lb;

const USER: &str = "admin";
const PASSWORD: &str = common::PASSWORD;

fn binary() -> PathBuf {
    std::env::var_os("BENCH_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_couchdb-cluster-init")))
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The binary against `c`: (exit code, seconds).
fn run(c: &Cluster, args: &[&str], lb: &str) -> (i32, f64) {
    let nodes: Vec<String> = c
        .nodes()
        .iter()
        .map(|n| n.url().trim_start_matches("http://").to_string())
        .collect();
    let t = Instant::now();
    let out = Command::new(binary())
        .args(args)
        .env_clear()
        .env("COUCHDB_USER", USER)
        .env("COUCHDB_PASSWORD", PASSWORD)
        .env("COUCHDB_NODES", nodes.join(","))
        .env("COUCHDB_LB_URL", lb)
        .env("COUCHDB_INIT_TIMEOUT", "5m")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run couchdb-cluster-init");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code().unwrap_or(-1), t.elapsed().as_secs_f64())
}

/// One write through the balancer: its status (0: no answer).
fn put(lb: std::net::SocketAddr, id: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .put(&format!("http://{lb}/app/{id}"))
        .header("Authorization", &common::authorization())
        .header("Content-Type", "application/json")
        .send("{\"bench\":true}")
        .map_or(0, |r| r.status().as_u16())
}

fn main() {
    let docs = env_num("BENCH_UPGRADE_DOCS", 1000) as usize;
    let away = Duration::from_secs(env_num("BENCH_UPGRADE_AWAY", 3));
    println!("| nodes | docs | drain (s, per node) | stop → start (s) | undrain: back + caught up + routed (s, per node) | per node (s) | whole upgrade (s) | client writes | not 2xx |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut bad = false;
    for n in env_list("BENCH_UPGRADE_NODES", "3,5") {
        eprintln!("bench: {n} nodes, {docs} documents");
        let c = Cluster::builder()
            .nodes(n)
            .admin(USER, PASSWORD)
            .delays(Delays::default())
            .start();
        let balancer = lb::Lb::start(
            c.nodes().iter().map(|x| x.addr()).collect(),
            Duration::from_secs(2),
            true,
        );
        let url = balancer.url();
        assert_eq!(run(&c, &[], &url).0, 0, "formation");
        assert!(c.node(0).create_db_q_n("app", 2, 3.min(n as u64)));
        let ids: Vec<String> = (0..docs).map(|i| format!("doc-{i:06}")).collect();
        for chunk in ids.chunks(500) {
            c.node(0).write_docs("app", chunk);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (written, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let client = {
            let (stop, written, failed, addr) = (
                stop.clone(),
                written.clone(),
                failed.clone(),
                balancer.addr(),
            );
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    match put(addr, &format!("client-{i:06}")) {
                        200..=299 => written.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let (mut drains, mut restarts, mut undrains, mut per_node) =
            (vec![], vec![], vec![], vec![]);
        let whole = Instant::now();
        for i in (0..n).rev() {
            let node = c.node(i).url().trim_start_matches("http://").to_string();
            let t = Instant::now();
            let (code, took) = run(&c, &["drain", &node], &url);
            assert_eq!(code, 0, "drain {node}");
            drains.push(took);
            let r = Instant::now();
            c.node(i).stop();
            std::thread::sleep(away);
            c.node(i).upgrade(Version::V3_5_2);
            restarts.push(r.elapsed().as_secs_f64());
            let (code, took) = run(&c, &["undrain", &node], &url);
            assert_eq!(code, 0, "undrain {node}");
            undrains.push(took);
            per_node.push(t.elapsed().as_secs_f64());
        }
        let total = whole.elapsed().as_secs_f64();
        stop.store(true, Ordering::SeqCst);
        let _ = client.join();
        let range = |v: &[f64]| {
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(0.0, f64::max);
            format!("{lo:.1}–{hi:.1}")
        };
        let failed = failed.load(Ordering::SeqCst);
        bad |= failed > 0;
        println!(
            "| {n} | {docs} | {} | {} | {} | {} | {total:.1} | {} | {failed} |",
            range(&drains),
            range(&restarts),
            range(&undrains),
            range(&per_node),
            written.load(Ordering::SeqCst)
        );
    }
    println!();
    println!("Simulated nodes with the recorded timings; the stop → start column is the bench's own wait (BENCH_UPGRADE_AWAY) plus the 1.1 s boot, what a real re-creation's pull and start replace.");
    if bad {
        std::process::exit(1);
    }
}
