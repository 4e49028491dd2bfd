//! Runs the real binary against an in-process simulated cluster.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use couchsim::{Cluster, ClusterBuilder, Delays};

pub const PASSWORD: &str = "pw-Zq8-never-logged";
pub const COOKIE: &str = "cookie-Kx3-never-logged";

/// N nodes with test credentials and quick (but not zero) CouchDB-side delays.
pub fn cluster(n: usize, configure: impl FnOnce(ClusterBuilder) -> ClusterBuilder) -> Cluster {
    let builder = Cluster::builder()
        .nodes(n)
        .admin("admin", PASSWORD)
        .cookie(COOKIE)
        .delays(Delays::fast());
    configure(builder).start()
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code, code,
            "exit code; stderr:\n{}\nstdout:\n{}",
            self.stderr, self.stdout
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
    }

    /// The output (stdout: a table, a plan) shows every one of `parts`.
    pub fn assert_shows(&self, parts: &[&str]) {
        contains_all("stdout", &self.stdout, parts);
    }

    /// The log names every one of `parts` (a node, a cause, a phase).
    pub fn assert_says(&self, parts: &[&str]) {
        contains_all("stderr", &self.stderr, parts);
    }
}

fn contains_all(name: &str, text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "no `{part}` in {name}:\n{text}");
    }
}

/// How the nodes appear in COUCHDB_NODES, hence in messages.
pub fn label(c: &Cluster, i: usize) -> String {
    c.node(i).url().trim_start_matches("http://").to_string()
}

pub fn run(c: &Cluster) -> Run {
    run_args(c, &[], &[])
}

pub fn run_with(c: &Cluster, env: &[(&str, &str)]) -> Run {
    run_args(c, &[], env)
}

pub fn run_args(c: &Cluster, args: &[&str], env: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let out = command(c, args, env)
        .output()
        .expect("run couchdb-cluster-init");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// The binary with the test environment (every node of `c` in COUCHDB_NODES), not started.
pub fn command(c: &Cluster, args: &[&str], env: &[(&str, &str)]) -> Command {
    let nodes: Vec<String> = (0..c.len()).map(|i| label(c, i)).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_couchdb-cluster-init"));
    cmd.args(args)
        .env_clear()
        .env("COUCHDB_USER", "admin")
        .env("COUCHDB_PASSWORD", PASSWORD)
        .env("COUCHDB_COOKIE", COOKIE)
        .env("COUCHDB_NODES", nodes.join(","))
        .env("COUCHDB_INIT_TIMEOUT", "20s")
        .env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `Basic …` for the test admin, for requests a test makes itself.
pub fn authorization() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("admin:{PASSWORD}");
    let mut out = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    format!("Basic {out}")
}
