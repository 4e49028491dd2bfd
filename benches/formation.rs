//! Formation benchmark: the real release binary against in-process simulated clusters.
//!
//! For each N it starts N simulated CouchDB nodes (couchsim), waits until every one answers
//! `GET /_up`, then runs the binary and times it; then runs it again on the cluster it formed.
//! Request counts come from the simulator's own log (`Cluster::requests`), reset just before each
//! run, so they hold the binary's requests only. While the binary runs, a thread watches the
//! cluster in-process (no HTTP, not counted) to time what the simulated CouchDB itself takes:
//! convergence and `finish_cluster`. CPU time and peak RSS come from `wait4(2)` on the child.
//! The simulated nodes pay a first authentication against an admin hash as real CPU work
//! (`Delays::first_auth_cpu`), as CouchDB's PBKDF2 does, and count it (`Node::password_hashes`):
//! N nodes hashing at once share the machine's cores. Phase times come from the binary's own
//! "<phase>: done in …" lines.
//!
//! `scripts/bench` builds the static binary, measures binary and image size and runs this with
//! them; `cargo bench --bench formation` alone measures the binary cargo built for the bench.
//!
//! Environment: `BENCH_BINARY` (the binary to measure), `BENCH_RUNS` (runs per N, default 5),
//! `BENCH_NODES` (default `3,5,9,16,32`), `BENCH_BINARY_BYTES` and `BENCH_IMAGE_BYTES` (sizes,
//! or `n/a: <why>`), `BENCH_VERBOSE` (set: every run's log, requests and watched instants on
//! stderr), `BENCH_DIST_TLS` (set: every node on the TLS distribution, certificates of one CA,
//! and the binary with COUCHDB_DIST_TLS=true — the cost of the encrypted distribution).
//! Progress goes to stderr; stdout holds only the table and its notes. Exits 1 if a rerun on a
//! formed cluster wrote anything (a bug, not a slow run).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use couchsim::{Cluster, Delays};

const USER: &str = "admin";
const PASSWORD: &str = "bench-password";
const COOKIE: &str = "bench-cookie-3f9c";

/// The simulator's recorded CouchDB 3.4.2 timings, made deterministic: each range pinned to its
/// upper end and the occasional one-second slow `_nodes` copy (1 in 5) switched off. With the
/// dice left in, a median of five runs would measure the dice (the chance of no slow copy is
/// 0.64 at N=3 and 0.001 at N=32), not the binary. A first authentication burns `first_auth` of
/// CPU, as PBKDF2 does, instead of sleeping it.
fn bench_delays() -> Delays {
    let mut d = Delays::default();
    d.nodes_copy = (d.nodes_copy.1, d.nodes_copy.1);
    d.finish_create = (d.finish_create.1, d.finish_create.1);
    d.slow_copy_one_in = 0;
    d.first_auth_cpu = true;
    d
}

fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// The least time `hashes` password hashes take: each is `first_auth` of CPU, and no more than
/// one per core runs at a time.
fn logins(d: &Delays, hashes: u64) -> Duration {
    if hashes == 0 {
        return Duration::ZERO;
    }
    (d.first_auth * hashes as u32 / cores()).max(d.first_auth)
}

/// Convergence on 3 nodes by the configured delays: the coordinator's ticker sees the new
/// `_nodes` docs (one `tick`), connects to the two new members one after the other (2 ×
/// `connect`); the last one holds the copied `_nodes` `nodes_copy` after that connection and
/// applies it on its next `tick`.
fn converge_3(d: &Delays) -> Duration {
    d.tick + d.connect * 2 + d.nodes_copy.1 + d.tick
}

// ---- one run of the binary ------------------------------------------------------------------

struct Sample {
    /// From the instant every node answered `/_up` (or from launch, for a rerun) to exit 0.
    wall: Duration,
    /// What the simulated CouchDB took, watched in-process (zero on a formed cluster).
    converge: Duration,
    finish: Duration,
    requests: usize,
    writes: usize,
    /// Password hashes the nodes computed during the run (first authentications).
    hashes: u64,
    /// "<phase>: done in …", as the binary logged it.
    phases: Vec<(String, Duration)>,
    cpu_user: Duration,
    cpu_sys: Duration,
    max_rss_kib: u64,
}

impl Sample {
    /// The CouchDB-side time on this run's critical path.
    fn couchdb(&self, d: &Delays) -> Duration {
        logins(d, self.hashes) + self.converge + self.finish
    }
}

/// Instants seen by watching the cluster in-process.
#[derive(Default)]
struct Watch {
    /// The coordinator lists every node as a member (the last `_nodes` PUT landed).
    joined: Option<Instant>,
    /// Every node lists every node as connected and as member.
    converged: Option<Instant>,
    /// `finish_cluster` began copying: another node holds the coordinator's admin hash.
    copying: Option<Instant>,
    /// Every node lists `_replicator`: `finish_cluster` created the last of its two databases
    /// and wrote its shard map to every member, which it does before answering.
    created: Option<Instant>,
}

fn watch(c: &Cluster, done: &AtomicBool) -> Watch {
    let mut names: Vec<String> = c.nodes().iter().map(|n| n.name()).collect();
    names.sort();
    let full = |(mut all, mut members): (Vec<String>, Vec<String>)| {
        all.sort();
        members.sort();
        (all == names, members == names)
    };
    let coordinator = c.node(0);
    let admin_hash = |i: usize| c.node(i).config("admins", USER);
    let mut w = Watch::default();
    while !done.load(Ordering::SeqCst) && w.created.is_none() {
        let now = Instant::now();
        if w.joined.is_none() {
            if full(coordinator.membership()).1 {
                w.joined = Some(now);
            }
        } else if w.converged.is_none() {
            if c.nodes()
                .iter()
                .all(|n| full(n.membership()) == (true, true))
            {
                w.converged = Some(now);
            }
        } else if w.copying.is_none() {
            let hash = admin_hash(0);
            if (1..c.len()).any(|i| admin_hash(i) == hash) {
                w.copying = Some(now);
            }
        } else if c
            .nodes()
            .iter()
            .all(|n| n.all_dbs().iter().any(|db| db == "_replicator"))
        {
            w.created = Some(now);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    w
}

fn between(from: Option<Instant>, to: Option<Instant>) -> Duration {
    match (from, to) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Duration::ZERO,
    }
}

/// Runs the binary against `c` and times it from `t0`, watching the cluster meanwhile.
fn run_binary(binary: &Path, c: &Cluster, t0: Instant, log: &Path) -> Sample {
    let done = AtomicBool::new(false);
    let (sample, w) = std::thread::scope(|s| {
        let watcher = s.spawn(|| watch(c, &done));
        let sample = run_and_wait(binary, c, t0, log);
        done.store(true, Ordering::SeqCst);
        (sample, watcher.join().expect("watch the cluster"))
    });
    let mut sample = sample.unwrap_or_else(|e| panic!("{e}"));
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        let at = |i: Option<Instant>| i.map(|i| ms(i.saturating_duration_since(t0)));
        eprintln!(
            "bench: watched (from t0): joined {:?}, converged {:?}, copying {:?}, created {:?}, exit {}",
            at(w.joined),
            at(w.converged),
            at(w.copying),
            at(w.created),
            ms(sample.wall)
        );
    }
    sample.converge = between(w.joined, w.converged);
    sample.finish = between(w.copying, w.created);
    sample
}

#[repr(C)]
struct Timeval {
    sec: i64,
    usec: i64,
}

impl Timeval {
    fn duration(&self) -> Duration {
        Duration::from_secs(self.sec as u64) + Duration::from_micros(self.usec as u64)
    }
}

/// `struct rusage` on x86_64 Linux: two timevals, then 14 longs starting with `ru_maxrss` (KiB).
#[repr(C)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    maxrss: i64,
    _rest: [i64; 13],
}

extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
}

/// Resets the request log, launches the binary with the cluster's nodes and waits for it.
fn run_and_wait(binary: &Path, c: &Cluster, t0: Instant, log: &Path) -> Result<Sample, String> {
    let nodes: Vec<String> = (0..c.len())
        .map(|i| c.node(i).url().trim_start_matches("http://").to_string())
        .collect();
    c.reset_counters();
    let hashes = |c: &Cluster| c.nodes().iter().map(|n| n.password_hashes()).sum::<u64>();
    let hashes_before = hashes(c);
    let out = std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| format!("{e}"))?;
    let child = Command::new(binary)
        .env_clear()
        .env("COUCHDB_USER", USER)
        .env("COUCHDB_PASSWORD", PASSWORD)
        .env("COUCHDB_COOKIE", COOKIE)
        .env("COUCHDB_NODES", nodes.join(","))
        .env("COUCHDB_EPMD_PORT", c.epmd_port().to_string())
        .env("COUCHDB_INIT_TIMEOUT", "60s")
        .envs(dist_tls().map(|_| ("COUCHDB_DIST_TLS", "true")))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("run {}: {e}", binary.display()))?;
    // std's Child::wait drops the resource usage; wait4 returns it, for this child alone.
    let mut status = 0i32;
    // SAFETY: `Rusage` is plain integers, for which all-zero is a valid value.
    let mut usage: Rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the types wait4(2) writes.
        let pid = unsafe { wait4(child.id() as i32, &mut status, 0, &mut usage) };
        if pid > 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {e}"));
        }
    }
    let wall = t0.elapsed();
    let said = std::fs::read_to_string(log).unwrap_or_default();
    if status & 0x7f != 0 || (status >> 8) & 0xff != 0 {
        return Err(format!(
            "the binary did not exit 0 (wait status {status:#x}) on {} nodes; it said:\n{said}",
            c.len()
        ));
    }
    let requests = c.requests();
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("bench: the binary said:\n{said}bench: the requests it sent:");
        for r in &requests {
            eprintln!("  {} {} -> {}", r.method, r.path, r.status);
        }
    }
    Ok(Sample {
        wall,
        converge: Duration::ZERO,
        finish: Duration::ZERO,
        requests: requests.len(),
        writes: c.count_writes(),
        hashes: hashes(c) - hashes_before,
        phases: phases(&said),
        cpu_user: usage.utime.duration(),
        cpu_sys: usage.stime.duration(),
        max_rss_kib: usage.maxrss as u64,
    })
}

/// `identify: done in 1.23s` → ("identify", 1.23 s), for every phase the binary logged.
fn phases(log: &str) -> Vec<(String, Duration)> {
    log.lines()
        .filter_map(|line| {
            let (head, took) = line.split_once(": done in ")?;
            let phase = head.rsplit(' ').next()?.to_string();
            let split = took.find(|c: char| !c.is_ascii_digit() && c != '.')?;
            let (number, unit) = took.split_at(split);
            let number: f64 = number.parse().ok()?;
            let seconds = match unit.trim() {
                "s" => number,
                "ms" => number / 1e3,
                "µs" => number / 1e6,
                "ns" => number / 1e9,
                _ => return None,
            };
            Some((phase, Duration::from_secs_f64(seconds)))
        })
        .collect()
}

/// Polls `GET /_up` on every node in parallel (every 2 ms) and returns the instant the last one
/// answered 200: formation time is measured from there.
fn wait_all_up(c: &Cluster) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(60);
    std::thread::scope(|s| {
        let polls: Vec<_> = c
            .urls()
            .into_iter()
            .map(|url| {
                s.spawn(move || loop {
                    if up(&url) {
                        return Instant::now();
                    }
                    assert!(Instant::now() < deadline, "{url} never answered /_up");
                    std::thread::sleep(Duration::from_millis(2));
                })
            })
            .collect();
        polls
            .into_iter()
            .map(|p| p.join().expect("poll /_up"))
            .max()
            .expect("at least one node")
    })
}

/// One `GET /_up` without credentials, like the binary's: true on 200.
fn up(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /_up HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

// ---- the measurements -----------------------------------------------------------------------

/// With BENCH_DIST_TLS: the `ERL_FLAGS` of every node (one CA, one certificate for 127.0.0.1,
/// made once).
fn dist_tls() -> Option<String> {
    static FLAGS: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FLAGS
        .get_or_init(|| {
            std::env::var_os("BENCH_DIST_TLS")?;
            let dir = std::env::temp_dir().join(format!("cci-bench-tls-{}", std::process::id()));
            couchsim::fixtures::make_certificates(&dir, "bench CA", &[("node", "IP:127.0.0.1")])
                .unwrap_or_else(|e| panic!("bench: certificates: {e}"));
            Some(couchsim::fixtures::erl_flags(&dir, "node").unwrap_or_else(|e| panic!("{e}")))
        })
        .clone()
}

struct PerN {
    n: usize,
    form: Vec<Sample>,
    rerun: Vec<Sample>,
}

fn measure(binary: &Path, n: usize, runs: usize, delays: &Delays, log: &Path) -> PerN {
    let mut form = Vec::new();
    let mut rerun = Vec::new();
    for run in 0..runs {
        let mut b = Cluster::builder()
            .nodes(n)
            .admin(USER, PASSWORD)
            .cookie(COOKIE)
            .delays(delays.clone())
            .seed(1000 * n as u64 + run as u64);
        if let Some(flags) = dist_tls() {
            for i in 0..n {
                let f = flags.clone();
                b = b.configure(i, move |s| s.erl_flags(&f));
            }
        }
        let c = b.start();
        let t0 = wait_all_up(&c);
        let f = run_binary(binary, &c, t0, log);
        let r = run_binary(binary, &c, Instant::now(), log);
        eprintln!(
            "bench: N={n:<2} run {}: formation {} ({} requests, {} hashes; CouchDB-side {}), rerun {} ({} requests, {} hashes, {} writes)",
            run + 1,
            ms(f.wall),
            f.requests,
            f.hashes,
            ms(f.couchdb(delays)),
            ms(r.wall),
            r.requests,
            r.hashes,
            r.writes
        );
        form.push(f);
        rerun.push(r);
    }
    PerN { n, form, rerun }
}

// ---- the table ------------------------------------------------------------------------------

fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// A size passed in by the script: bytes, or `n/a: <why>`.
fn size_row(name: &str, var: &str, limit: u64) -> String {
    let value = std::env::var(var).unwrap_or_else(|_| format!("n/a: {var} not set"));
    match value.trim().parse::<u64>() {
        Ok(bytes) => format!(
            "| {name} | {} ({bytes} bytes) | ≤ {} | {} |",
            mb(bytes),
            mb(limit),
            verdict(bytes <= limit)
        ),
        Err(_) => format!("| {name} | {value} | ≤ {} | n/a |", mb(limit)),
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: numbers, comma-separated"))
        })
        .collect()
}

fn main() {
    let binary = PathBuf::from(
        std::env::var("BENCH_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_couchdb-cluster-init").to_string()),
    );
    let runs = env_or::<usize>("BENCH_RUNS", "5")[0];
    let ns = env_or::<usize>("BENCH_NODES", "3,5,9,16,32");
    assert!(runs > 0 && ns.iter().all(|n| *n > 0), "nothing to measure");
    let log = std::env::temp_dir().join(format!("couchdb-init-bench-{}.log", std::process::id()));
    let delays = bench_delays();

    let results: Vec<PerN> = ns
        .iter()
        .map(|&n| measure(&binary, n, runs, &delays, &log))
        .collect();
    let _ = std::fs::remove_file(&log);

    let mut rows = Vec::new();
    let wall_of = |p: &PerN| median(p.form.iter().map(|s| s.wall).collect());
    let base = results.iter().find(|p| p.n == 3);
    for p in &results {
        let wall = wall_of(p);
        let lo = p.form.iter().map(|s| s.wall).min().unwrap_or_default();
        let hi = p.form.iter().map(|s| s.wall).max().unwrap_or_default();
        let of = |f: fn(&Sample) -> Duration| median(p.form.iter().map(f).collect());
        let couchdb = median(p.form.iter().map(|s| s.couchdb(&delays)).collect());
        let binary_share = median(
            p.form
                .iter()
                .map(|s| s.wall.saturating_sub(s.couchdb(&delays)))
                .collect(),
        );
        let hashes = median(p.form.iter().map(|s| s.hashes).collect());
        let (target, ok) = match (p.n, base) {
            (3, _) => (
                format!(
                    "binary ≤ 50 ms over CouchDB-side (by the configured delays alone: {} + {} + {} = {})",
                    ms(logins(&delays, 3)),
                    ms(converge_3(&delays)),
                    ms(delays.finish_create.1),
                    ms(logins(&delays, 3) + converge_3(&delays) + delays.finish_create.1)
                ),
                Some(binary_share <= Duration::from_millis(50)),
            ),
            (32, Some(base)) => (
                format!(
                    "≤ 2 × N=3 = {} (here {:.2} ×)",
                    ms(wall_of(base) * 2),
                    wall.as_secs_f64() / wall_of(base).as_secs_f64()
                ),
                Some(wall <= wall_of(base) * 2),
            ),
            _ => ("—".to_string(), None),
        };
        rows.push(format!(
            "| Formation, N={}: wall, last `/_up` → exit 0 | {} (range {}–{}); CouchDB-side {} (logins {}, convergence {}, finish_cluster {}); binary {} | {target} | {} |",
            p.n,
            ms(wall),
            lo.as_millis(),
            hi.as_millis(),
            ms(couchdb),
            ms(logins(&delays, hashes)),
            ms(of(|s| s.converge)),
            ms(of(|s| s.finish)),
            ms(binary_share),
            ok.map(verdict).unwrap_or("—")
        ));
        let names: Vec<String> = p.form[0].phases.iter().map(|(n, _)| n.clone()).collect();
        let phase_times: Vec<String> = names
            .iter()
            .map(|name| {
                let took = median(
                    p.form
                        .iter()
                        .filter_map(|s| s.phases.iter().find(|(n, _)| n == name).map(|(_, d)| *d))
                        .collect(),
                );
                format!("{name} {}", ms(took))
            })
            .collect();
        rows.push(format!(
            "| Formation, N={}: phases, as the binary logged them | {} | — | — |",
            p.n,
            phase_times.join(", ")
        ));
        let all_hashes: Vec<u64> = p.form.iter().map(|s| s.hashes).collect();
        rows.push(format!(
            "| Formation, N={}: password hashes the nodes paid | {hashes} (range {}–{}) | ≤ N = {} (one each, to learn its name) | {} |",
            p.n,
            all_hashes.iter().min().unwrap_or(&0),
            all_hashes.iter().max().unwrap_or(&0),
            p.n,
            verdict(hashes <= p.n as u64)
        ));
        let requests: Vec<usize> = p.form.iter().map(|s| s.requests).collect();
        let median_requests = median(requests.clone());
        let limit = 4 * p.n + 8;
        rows.push(format!(
            "| Formation, N={}: requests | {median_requests} (range {}–{}) | ≤ 4N + 8 = {limit} | {} |",
            p.n,
            requests.iter().min().unwrap_or(&0),
            requests.iter().max().unwrap_or(&0),
            verdict(median_requests <= limit)
        ));
    }
    let mut rerun_wrote = false;
    for p in &results {
        let writes: usize = p.rerun.iter().map(|s| s.writes).sum();
        rerun_wrote |= writes > 0;
        rows.push(format!(
            "| Rerun on the formed cluster, N={} | {}, {} requests, {} hashes, {writes} writes in {} runs | reads only | {} |",
            p.n,
            ms(median(p.rerun.iter().map(|s| s.wall).collect())),
            median(p.rerun.iter().map(|s| s.requests).collect()),
            median(p.rerun.iter().map(|s| s.hashes).collect()),
            p.rerun.len(),
            verdict(writes == 0)
        ));
    }
    if let Some(base) = base {
        let rss = base.form.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
        rows.push(format!(
            "| Peak RSS, 3-node formation (highest of {}) | {} ({rss} KiB) | ≤ 6.00 MB | {} |",
            base.form.len(),
            mb(rss * 1024),
            verdict(rss * 1024 <= 6_000_000)
        ));
        let of = |f: fn(&Sample) -> Duration| median(base.form.iter().map(f).collect());
        rows.push(format!(
            "| CPU time, 3-node formation (median) | {} (user {}, sys {}) | — | — |",
            ms(of(|s| s.cpu_user + s.cpu_sys)),
            ms(of(|s| s.cpu_user)),
            ms(of(|s| s.cpu_sys))
        ));
    }
    rows.push(size_row(
        "Release binary (static, stripped)",
        "BENCH_BINARY_BYTES",
        2_000_000,
    ));
    rows.push(size_row(
        "Image (`FROM scratch` + the binary)",
        "BENCH_IMAGE_BYTES",
        3_000_000,
    ));

    println!("| Measure | Result | Target | Verdict |");
    println!("|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!();
    println!(
        "- Wall: median of {runs} runs, each on a fresh simulated cluster (couchsim, in the bench process, on \
         loopback). It runs from the instant the last node answered `GET /_up` (the bench polls every node every \
         2 ms, in parallel, then launches the binary) to the binary's exit 0, process start included; nothing is \
         subtracted. A rerun is timed from its launch."
    );
    println!(
        "- Delays: the simulator's recorded `Delays::default()` (first_auth {}, connect {}, nodes_copy {}, \
         finish_create {}, tick {}), with the nodes_copy and finish_create ranges pinned to their upper end and \
         the 1-in-5 one-second `_nodes` copy switched off, so that runs are alike. A first authentication \
         against an admin hash burns first_auth of CPU on the answering node's thread (`first_auth_cpu`), as \
         PBKDF2 does: nodes that hash at once share the machine's {} cores, as they did in the 16-node \
         recording (~110–175 ms each).",
        ms(delays.first_auth),
        ms(delays.connect),
        ms(delays.nodes_copy.1),
        ms(delays.finish_create.1),
        ms(delays.tick),
        cores()
    );
    println!(
        "- CouchDB-side, per run: logins = the least time the password hashes the nodes paid can take \
         (hashes × first_auth ÷ cores, at least one first_auth; counted by `Node::password_hashes`) + \
         convergence (watched in-process: from \
         the coordinator listing every member to every node listing every node as connected and member) + \
         finish_cluster (watched: from its first config copy to every node listing `_replicator`). The simulator connects \
         and copies to one peer at a time, so the last two grow with N. Binary = wall − CouchDB-side (median of \
         the per-run differences): process start, requests, and polls that land after the state changed."
    );
    println!(
        "- Requests: every HTTP request the simulated nodes answered during the run (`Cluster::requests`, reset \
         just before it; the nodes' own distribution traffic is not counted). Writes = PUT + POST + DELETE \
         (`Cluster::count_writes`)."
    );
    println!("- Peak RSS and CPU time: the binary's own `wait4(2)` rusage. MB = 10^6 bytes.");
    if rerun_wrote {
        eprintln!("bench: a rerun on a formed cluster wrote: that is a bug, not a slow run");
        std::process::exit(1);
    }
}
