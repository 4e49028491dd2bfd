//! A `watch` run of the real binary against a simulated cluster, and its metrics port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

use couchsim::Cluster;

use super::{finish, spawn, Run};

/// The watch interval unless a test sets COUCHDB_WATCH_INTERVAL.
pub const INTERVAL: &str = "200ms";

/// A port nobody listens on now (the system's pick, released for the watcher).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub struct Watcher {
    pub run: Option<(Child, Instant)>,
    pub port: u16,
}

impl Watcher {
    pub fn start(c: &Cluster, env: &[(&str, &str)]) -> Watcher {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut all: Vec<(&str, &str)> = vec![
            ("COUCHDB_WATCH_INTERVAL", INTERVAL),
            ("COUCHDB_METRICS_ADDR", &addr),
        ];
        all.extend_from_slice(env);
        Watcher {
            run: Some(spawn(c, &["watch"], &all)),
            port,
        }
    }

    /// `GET path` on the metrics port: (status, body); `None` while nothing listens.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        let status = answer.split_whitespace().nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    }

    /// The value of one unlabelled series, as its line says it.
    pub fn metric(&self, name: &str) -> Option<String> {
        let (_, page) = self.get("/metrics")?;
        page.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
    }

    /// Waits (at most 20 s) until `name` reads `value`.
    pub fn until(&self, name: &str, value: &str) {
        let t = Instant::now();
        while self.metric(name).as_deref() != Some(value) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{name} never became {value}; page:\n{}",
                self.get("/metrics").map(|(_, p)| p).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most 20 s) until the counter `name` reaches `at_least`.
    pub fn until_count(&self, name: &str, at_least: u64) {
        let t = Instant::now();
        while self
            .metric(name)
            .and_then(|v| v.parse::<u64>().ok())
            .is_none_or(|v| v < at_least)
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{name} never reached {at_least}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the run; `took` is from the signal.
    pub fn stop(mut self) -> Run {
        let (child, _) = self.run.take().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        finish((child, Instant::now()))
    }

    pub fn wait(mut self) -> Run {
        finish(self.run.take().expect("running"))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some((child, _)) = &mut self.run {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A formed 3-node cluster holding `app` (two documents), and a backup CouchDB beside it (one
/// node that never joins) whose admin is `user`/`password`.
pub fn formed_with_backup(user: &str, password: &str) -> (Cluster, Cluster) {
    let c = super::cluster(3, |b| b);
    super::run(&c).assert_code(0);
    let (user, password) = (user.to_string(), password.to_string());
    let backup = super::cluster(1, move |b| {
        b.admin(&user, &password)
            .seed(0xBAC)
            .configure(0, |n| n.name("couchdb@backup.example"))
    });
    c.node(0).create_db("app");
    c.node(0).write_docs("app", &["a1", "a2"]);
    (c, backup)
}

impl Watcher {
    /// `start`, backing up into `backup` as `user`/`password`.
    pub fn start_with_backup(
        c: &Cluster,
        backup: &Cluster,
        (user, password): (&str, &str),
        env: &[(&str, &str)],
    ) -> Watcher {
        let url = backup.node(0).url();
        let mut all = vec![
            ("COUCHDB_BACKUP_URL", url.as_str()),
            ("COUCHDB_BACKUP_USER", user),
            ("COUCHDB_BACKUP_PASSWORD", password),
        ];
        all.extend_from_slice(env);
        Watcher::start(c, &all)
    }
}
