//! Restore benchmark: the real release binary's `restore` of many databases from a simulated
//! standalone backup CouchDB into a simulated, freshly formed 3-node cluster.
//!
//! The backup gets `BENCH_RESTORE_DBS` databases (default 200) of `BENCH_RESTORE_DOCS` documents
//! each (default 500); a cluster is formed by the binary (`init`); then `restore` runs and is
//! timed, then run again on the restored cluster (it must only read). The simulator replicates
//! over HTTP as CouchDB's replicator does, with CouchDB's own replication timings
//! (`Delays::default()`: a job starts 0–5 s after it is added, `startup_jitter`; 135 ms from
//! `_revs_diff` to the write), the rest of the cluster's delays fast.
//!
//! Environment: `BENCH_BINARY` (the binary to measure), `BENCH_RESTORE_DBS`,
//! `BENCH_RESTORE_DOCS`. Progress on stderr; stdout holds the table and its notes. Exits 1 if the
//! restore failed or the rerun wrote anything.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use couchsim::{Cluster, Delays};

const USER: &str = "admin";
const PASSWORD: &str = "bench-password";
const COOKIE: &str = "bench-cookie-3f9c";
const BACKUP_USER: &str = "backup-admin";
const BACKUP_PASSWORD: &str = "bench-backup-password";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fast cluster delays, CouchDB's replication timings.
fn delays() -> Delays {
    let real = Delays::default();
    Delays {
        repl_start_period: real.repl_start_period,
        repl_quiet_period: real.repl_quiet_period,
        repl_job_add: real.repl_job_add,
        repl_jitter: real.repl_jitter,
        repl_latency: real.repl_latency,
        repl_checkpoint: real.repl_checkpoint,
        repl_retries: real.repl_retries,
        repl_interval: real.repl_interval,
        repl_backoff: real.repl_backoff,
        repl_health: real.repl_health,
        ..Delays::fast()
    }
}

struct Ran {
    wall: Duration,
    ok: bool,
    log: String,
}

fn run(binary: &PathBuf, c: &Cluster, backup: &Cluster, args: &[&str]) -> Ran {
    let nodes: Vec<String> = c
        .urls()
        .iter()
        .map(|u| u.trim_start_matches("http://").to_string())
        .collect();
    let started = Instant::now();
    let out = Command::new(binary)
        .args(args)
        .env_clear()
        .env("COUCHDB_USER", USER)
        .env("COUCHDB_PASSWORD", PASSWORD)
        .env("COUCHDB_COOKIE", COOKIE)
        .env("COUCHDB_NODES", nodes.join(","))
        .env("COUCHDB_INIT_TIMEOUT", "30m")
        .env("COUCHDB_BACKUP_URL", backup.node(0).url())
        .env("COUCHDB_BACKUP_USER", BACKUP_USER)
        .env("COUCHDB_BACKUP_PASSWORD", BACKUP_PASSWORD)
        .env("RUST_LOG", "info")
        .output()
        .expect("run the binary");
    Ran {
        wall: started.elapsed(),
        ok: out.status.success(),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let binary = PathBuf::from(
        std::env::var("BENCH_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_couchdb-cluster-init").to_string()),
    );
    let dbs = env_num("BENCH_RESTORE_DBS", 200);
    let docs = env_num("BENCH_RESTORE_DOCS", 500);

    eprintln!("restore bench: {dbs} databases × {docs} documents on the backup");
    let backup = Cluster::builder()
        .nodes(1)
        .admin(BACKUP_USER, BACKUP_PASSWORD)
        .delays(delays())
        .seed(0xBAC)
        .configure(0, |n| n.name("couchdb@backup.example"))
        .start();
    let ids: Vec<String> = (0..docs).map(|i| format!("doc-{i:05}")).collect();
    for d in 0..dbs {
        let db = format!("db{d:04}");
        backup.node(0).create_db(&db);
        for chunk in ids.chunks(1000) {
            backup.node(0).write_docs(&db, chunk);
        }
    }
    let c = Cluster::builder()
        .nodes(3)
        .admin(USER, PASSWORD)
        .cookie(COOKIE)
        .delays(delays())
        .start();
    let init = run(&binary, &c, &backup, &[]);
    assert!(init.ok, "init failed:\n{}", init.log);

    eprintln!("restore bench: restoring");
    let first = run(&binary, &c, &backup, &["restore"]);
    if !first.ok {
        eprintln!("{}", first.log);
    }
    c.reset_counters();
    backup.reset_counters();
    let again = run(&binary, &c, &backup, &["restore"]);
    let writes = c
        .requests()
        .iter()
        .chain(backup.requests().iter())
        .filter(|q| matches!(q.method.as_str(), "PUT" | "POST" | "DELETE"))
        .filter(|q| !q.path.ends_with("/_revs_diff"))
        .count();
    let total = (dbs * docs) as f64;
    let secs = first.wall.as_secs_f64();
    println!("| restore | databases × documents | wall | documents/s | rerun (reads only) | rerun writes |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {dbs} × {docs} | {:.1} s | {:.0} | {:.2} s | {writes} |",
        if first.ok { "exit 0" } else { "FAILED" },
        secs,
        total / secs,
        again.wall.as_secs_f64()
    );
    println!();
    println!(
        "- Simulator: a standalone backup node and a 3-node cluster (q=2, n=3), CouchDB's replication \
         timings (a job starts 0–5 s after its doc, 135 ms from `_revs_diff` to the write); the \
         restore runs {} one-shot replications at once.",
        couchdb_cluster_init::commands::restore::AT_ONCE
    );
    if !first.ok || !again.ok || writes > 0 {
        std::process::exit(1);
    }
}
