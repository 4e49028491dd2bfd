//! Placement benchmark (issue 17): `rebalance` after growth 3 → 4 with many single-range
//! databases, the real release binary against an in-process simulated cluster (couchsim), once
//! per COUCHDB_MOVE_CONCURRENCY; and the planner alone at 1000 databases grown 3 → 8, and
//! (issue 24) at 1000 databases over 9 nodes in 3 zones, zones first.
//!
//! Per concurrency: a fresh 3-node cluster formed by the binary, `BENCH_DBS` databases of q=1,
//! n=3 (one in ten holding 200 documents, the others 2), a fourth node joined by the binary,
//! every copy settled; then `rebalance` is timed (wall, requests, writes, its logged phases)
//! and run again (it must write nothing). Requests come from the simulator's own log
//! (`Cluster::requests`, reset just before each run).
//!
//! Environment: `BENCH_BINARY` (default: the binary cargo built), `BENCH_DBS` (default 1000),
//! `BENCH_CONCURRENCY` (default `1,4`; empty: the planner alone). Progress goes to stderr; stdout holds the table. Exits 1
//! if a rerun wrote anything or copies are not even afterwards (a bug, not a slow run).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use couchdb_cluster_init::client::ShardDoc;
use couchdb_cluster_init::cluster::planner::{plan_rebalance, Sizes};
use couchdb_cluster_init::cluster::zones::{shared_ranges, Zones};
use couchsim::{Cluster, Delays};

const USER: &str = "admin";
const PASSWORD: &str = "bench-password";
const COOKIE: &str = "bench-cookie-3f9c";

/// The recorded delays, made deterministic (no one-in-five slow `_nodes` copy).
fn delays() -> Delays {
    Delays {
        slow_copy_one_in: 0,
        ..Delays::default()
    }
}

fn binary() -> PathBuf {
    std::env::var_os("BENCH_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_couchdb-cluster-init")))
}

struct Run {
    ok: bool,
    wall: Duration,
    stderr: String,
}

fn run(c: &Cluster, args: &[&str], concurrency: usize) -> Run {
    let nodes: Vec<String> = c
        .urls()
        .iter()
        .map(|u| u.trim_start_matches("http://").to_string())
        .collect();
    let started = Instant::now();
    let out = Command::new(binary())
        .args(args)
        .env_clear()
        .env("COUCHDB_USER", USER)
        .env("COUCHDB_PASSWORD", PASSWORD)
        .env("COUCHDB_COOKIE", COOKIE)
        .env("COUCHDB_NODES", nodes.join(","))
        .env("COUCHDB_INIT_TIMEOUT", "10m")
        .env("COUCHDB_MOVE_CONCURRENCY", concurrency.to_string())
        .env("RUST_LOG", "info")
        .output()
        .expect("run the binary");
    Run {
        ok: out.status.success(),
        wall: started.elapsed(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The "<phase>: done in 1.23s" lines, as "phase 1.23s, …".
fn phases(log: &str) -> String {
    log.lines()
        .filter_map(|l| {
            let l = l.split("] ").nth(1).unwrap_or(l);
            let (phase, took) = l.split_once(": done in ")?;
            Some(format!("{phase} {took}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A 3-node cluster with `count` single-range databases, grown to 4 and settled.
fn grown(count: usize) -> Cluster {
    let mut c = Cluster::builder()
        .nodes(3)
        .admin(USER, PASSWORD)
        .cookie(COOKIE)
        .delays(delays())
        .start();
    assert!(run(&c, &[], 1).ok, "formation failed");
    let dbs: Vec<String> = (0..count).map(|i| format!("tenant{i:04}")).collect();
    c.node(0).create_dbs_q_n(&dbs, 1, 3);
    for (i, db) in dbs.iter().enumerate() {
        let n = if i % 10 == 0 { 200 } else { 2 };
        let ids: Vec<String> = (0..n).map(|d| format!("doc{d:03}")).collect();
        c.node(0).write_docs(db, &ids);
    }
    c.add_node(|s| s);
    assert!(run(&c, &[], 1).ok, "joining node4 failed");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !c.nodes().iter().all(|n| n.settled()) {
        assert!(Instant::now() < deadline, "the copies never settled");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.reset_counters();
    c
}

/// Copies per node over every database.
fn spread(c: &Cluster) -> Vec<usize> {
    let mut per: BTreeMap<String, usize> = c.nodes().iter().map(|n| (n.name(), 0)).collect();
    for db in c.node(0).all_dbs() {
        for holders in c.node(0).shards(&db).unwrap_or_default().values() {
            for h in holders {
                *per.entry(h.clone()).or_default() += 1;
            }
        }
    }
    per.into_values().collect()
}

/// The planner alone: `count` databases (q = 1, 1, 1, 2, 4 in turn) made on node1–3, planned
/// over `members` nodes with `zones` (node → zone; empty: none). Returns the median of 5
/// plans, the moves, and how many ranges still share a zone where they need not once carried
/// out (0, or the planner is wrong).
fn planner_alone(count: usize, members: usize, zones: &Zones) -> (Duration, usize, usize) {
    let node = |i: usize| format!("node{i}@127.0.0.1");
    let docs: Vec<ShardDoc> = (0..count)
        .map(|i| {
            let q = [1u32, 1, 1, 2, 4][i % 5];
            let step = u32::MAX / q;
            let mut by_range = serde_json::Map::new();
            let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in 0..q {
                let end = if r + 1 == q {
                    u32::MAX
                } else {
                    step * (r + 1) - 1
                };
                let range = format!("{:08x}-{end:08x}", step * r);
                by_range.insert(
                    range.clone(),
                    serde_json::json!([node(1), node(2), node(3)]),
                );
                for n in 1..=3 {
                    by_node.entry(node(n)).or_default().push(range.clone());
                }
            }
            ShardDoc::parse(serde_json::json!({
                "_id": format!("tenant{i:04}"), "_rev": "1-a", "shard_suffix": [46, 49],
                "by_range": by_range, "by_node": by_node,
            }))
            .expect("a shard map")
        })
        .collect();
    let members: Vec<String> = (1..=members).map(node).collect();
    // Each database's copies weigh 4 KB to 4 MB (a fixed spread, so runs are alike): the bytes
    // are what the planner chooses among moves by.
    let sizes: Sizes = docs
        .iter()
        .enumerate()
        .flat_map(|(i, d)| {
            let bytes = 4096 * (1 + (i as u64 * 7919) % 1000);
            d.map
                .iter()
                .flat_map(move |(range, on)| {
                    on.iter()
                        .map(move |n| ((d.db.clone(), range.clone(), n.clone()), bytes))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut times = Vec::new();
    let mut plans = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        plans = plan_rebalance(&docs, &members, &sizes, zones);
        times.push(t.elapsed());
    }
    times.sort();
    let moves = plans.iter().map(|p| p.moves.len()).sum();
    // The maps once carried out: each move's new copy in, its old one out.
    let done: Vec<ShardDoc> = docs
        .iter()
        .zip(&plans)
        .map(|(d, p)| {
            let mut by_range = d.map.clone();
            for m in &p.moves {
                if let Some(on) = by_range.get_mut(&m.range) {
                    on.retain(|n| *n != m.from);
                    on.push(m.to.clone());
                }
            }
            let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (r, on) in &by_range {
                for n in on {
                    by_node.entry(n.clone()).or_default().push(r.clone());
                }
            }
            ShardDoc::parse(serde_json::json!({
                "_id": d.db, "_rev": "1-a", "shard_suffix": [46, 49],
                "by_range": by_range, "by_node": by_node,
            }))
            .expect("a shard map")
        })
        .collect();
    (times[2], moves, shared_ranges(&done, zones, &members).len())
}

fn main() {
    let count: usize = std::env::var("BENCH_DBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let mut failed = false;
    println!("| Measure | Result |");
    println!("|---|---|");
    let (took, moves, _) = planner_alone(1000, 8, &Zones::new());
    println!(
        "| Planner alone: 1000 databases (q=1,1,1,2,4; 4 KB–4 MB a copy) made on 3 nodes, planned over 8 | {took:.2?} (median of 5), {moves} moves |"
    );
    // node1–3 in zone a, node4–6 in b, node7–9 in c: every range starts in zone a alone.
    let zones: Zones = (1..=9)
        .map(|i| {
            (
                format!("node{i}@127.0.0.1"),
                ["a", "b", "c"][(i - 1) / 3].to_string(),
            )
        })
        .collect();
    let (took, moves, shared) = planner_alone(1000, 9, &zones);
    failed |= shared > 0;
    println!(
        "| Planner alone, zones first: the same 1000 databases made on 3 nodes of zone a, planned over 9 nodes in 3 zones | {took:.2?} (median of 5), {moves} moves, {shared} ranges left sharing a zone |"
    );
    for &k in &levels {
        eprintln!("bench: {count} databases, 3 → 4 nodes, concurrency {k}: setting up");
        let c = grown(count);
        eprintln!("bench: rebalance, concurrency {k}");
        let r = run(&c, &["rebalance"], k);
        let requests = c.requests();
        let writes = c.count_writes();
        let per = spread(&c);
        let summary = r
            .stderr
            .lines()
            .rev()
            .find(|l| l.contains("rebalance: ") && l.contains("moved"))
            .unwrap_or("?")
            .to_string();
        if !r.ok {
            eprintln!("{}", r.stderr);
            failed = true;
        }
        let even = per.iter().max().unwrap_or(&0) - per.iter().min().unwrap_or(&0) <= 1;
        failed |= !even;
        println!(
            "| Rebalance 3 → 4, {count} × q=1, COUCHDB_MOVE_CONCURRENCY={k}: wall | {:.2?} ({}) |",
            r.wall,
            phases(&r.stderr)
        );
        println!(
            "| … requests / writes | {} requests, {writes} writes; {} |",
            requests.len(),
            summary.split("] ").nth(1).unwrap_or(&summary)
        );
        println!("| … copies per node after | {per:?} |");
        c.reset_counters();
        let again = run(&c, &["rebalance"], k);
        let rewrites = c.count_writes();
        failed |= rewrites > 0 || !again.ok;
        println!(
            "| … rerun on the balanced cluster | {:.2?} ({}), {} requests, {rewrites} writes |",
            again.wall,
            phases(&again.stderr),
            c.requests().len()
        );
    }
    if failed {
        eprintln!("bench: a rebalance failed, left the copies uneven, or its rerun wrote");
        std::process::exit(1);
    }
}
