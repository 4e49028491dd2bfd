//! Binary mode: `couchsim` standing in for `couchdb:3.4.2` in docker-compose, and the `curl`,
//! `grep` and `sh` multi-call modes for healthchecks in a `FROM scratch` image (`tools`). Kept
//! in the library so it is testable; `main.rs` only dispatches.
//!
//! A top layer beside the in-process API (neither uses the other): it builds a node from the
//! environment (`node`, `net`, `spec`), starts it with `http::server`, and `tools` talk HTTP
//! through `net::client`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::http::server;
use crate::net::epmd::{long_name_ok, DnsEpmd, EpmdServer, Registry, NONODE};
use crate::net::tls::Distribution;
use crate::node::{self, log_line, NodeConfig, NodeInner, Persist};
use crate::spec::{Delays, NodeSpec, Version};
use crate::util;

mod tools;

pub use tools::{
    curl, curl_config_args, grep, parse_curl_args, printf, sh, sh_with, shell_words, CurlArgs,
};

/// Entry point used by `main.rs`. Returns the process exit code. Called as `curl`, `grep` or
/// `sh` (argv[0], as the image's copies are), or as `couchsim curl|grep|sh …`, it is that tool.
pub fn main_with_args(args: Vec<String>) -> i32 {
    let base = |a: &String| a.rsplit('/').next().unwrap_or(a).to_string();
    let tools = ["curl", "grep", "sh"];
    let (tool, rest) = match (args.first().map(base), args.get(1)) {
        (Some(prog), _) if tools.contains(&prog.as_str()) => (prog, &args[1..]),
        (_, Some(first)) if tools.contains(&first.as_str()) => (first.clone(), &args[2..]),
        _ => (String::new(), &args[..0]),
    };
    match tool.as_str() {
        "curl" => return curl(rest),
        "grep" => return grep(rest),
        "sh" => return sh(rest),
        _ => {}
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    match server_config(&env) {
        Ok(cfg) => serve(cfg),
        Err(msg) => {
            eprintln!("[couchsim] {msg}");
            1
        }
    }
}

// ---------------------------------------------------------------------------------------------
// server
// ---------------------------------------------------------------------------------------------

/// What the environment asks for (the `couchdb:3.4.2` image's variables plus `COUCHSIM_*`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub spec: NodeSpec,
    pub listen_ip: IpAddr,
    pub port: u16,
    /// The distribution's port (9100, the image's `inet_dist_listen_min`/`max`), and epmd's.
    pub dist_port: u16,
    pub epmd_port: u16,
    /// Plain TCP or TLS, from `ERL_FLAGS`.
    pub dist: Distribution,
    pub persist: Option<Persist>,
    pub delays: Delays,
    pub seed: u64,
    /// `COUCHDB_SECRET`: the entrypoint writes it on every start.
    pub secret: Option<String>,
}

fn setcookie_from_erl_flags(flags: &str) -> Option<String> {
    let words: Vec<&str> = flags.split_whitespace().collect();
    let mut found = None;
    for w in words.windows(2) {
        if w[0] == "-setcookie" {
            found = Some(w[1].trim_matches(|c| c == '\'' || c == '"').to_string());
        }
    }
    found
}

fn parse_port(env: &HashMap<String, String>, key: &str, default: u16) -> Result<u16, String> {
    match env.get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{key}={v:?} is not a port number")),
    }
}

/// Reads the environment. `Err` is a message for stderr (never containing a secret).
pub fn server_config(env: &HashMap<String, String>) -> Result<ServerConfig, String> {
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    let name = match get("NODENAME") {
        Some(n) => format!("couchdb@{n}"),
        None => NONODE.to_string(),
    };
    let erl_flags = get("ERL_FLAGS").unwrap_or_default();
    let cookie = setcookie_from_erl_flags(&erl_flags).or_else(|| get("COUCHDB_ERLANG_COOKIE"));
    let dist = Distribution::from_erl_flags(&erl_flags)
        .map_err(|e| format!("refusing to start: the distribution cannot start: ERL_FLAGS: {e}"))?;
    let seed = get("COUCHSIM_SEED")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| util::unix_now().as_nanos() as u64);
    let cookie = match cookie {
        Some(c) if c == "monster" => {
            return Err(
                "refusing to start: the Erlang cookie is CouchDB's old default \
                 (3.4.2 will not start with it); set COUCHDB_ERLANG_COOKIE"
                    .to_string(),
            )
        }
        Some(c) => c,
        // Erlang makes up a random cookie when none is configured.
        None => util::Rng::new(seed ^ 0xC00C1E).hex(10),
    };
    let admin = match (get("COUCHDB_USER"), get("COUCHDB_PASSWORD")) {
        (Some(u), Some(p)) => Some((u, p)),
        _ => None,
    };
    let mut spec = NodeSpec::new(&name, &cookie, admin);
    spec.bind_address = "any".to_string();
    // Baked into an image tagged as that release (tests/compose/images.sh).
    if let Some(v) = get("COUCHSIM_VERSION") {
        spec.version = Version::parse(&v).ok_or_else(|| {
            let known: Vec<&str> = Version::ALL.iter().map(|v| v.as_str()).collect();
            format!(
                "COUCHSIM_VERSION={v:?} is not a release the simulator knows ({})",
                known.join(", ")
            )
        })?;
    }
    let secret = get("COUCHDB_SECRET");
    spec.secret = secret.clone();
    let data = get("COUCHSIM_DATA").unwrap_or_else(|| "/opt/couchdb/data".to_string());
    let etc = get("COUCHSIM_ETC").unwrap_or_else(|| "/opt/couchdb/etc/local.d".to_string());
    let persist = if get("COUCHSIM_NO_PERSIST").is_some() {
        None
    } else {
        Some(Persist {
            data_file: PathBuf::from(data).join("couchsim-state.json"),
            config_file: PathBuf::from(etc).join("couchsim-config.json"),
        })
    };
    let mut delays = match get("COUCHSIM_DELAYS").as_deref() {
        Some("fast") => Delays::fast(),
        _ => Delays::default(),
    };
    if let Some(ms) = get("COUCHSIM_BOOT_MS").and_then(|v| v.parse().ok()) {
        delays.boot = Duration::from_millis(ms);
    }
    let listen_ip = match get("COUCHSIM_LISTEN_IP") {
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(ip) => ip
            .parse()
            .map_err(|_| format!("COUCHSIM_LISTEN_IP={ip:?} is not an IP address"))?,
    };
    Ok(ServerConfig {
        spec,
        listen_ip,
        port: parse_port(env, "COUCHSIM_PORT", 5984)?,
        dist_port: parse_port(env, "COUCHSIM_DIST_PORT", 9100)?,
        epmd_port: parse_port(env, "COUCHSIM_EPMD_PORT", 4369)?,
        dist,
        persist,
        delays,
        seed,
        secret,
    })
}

/// Builds the node for a config (not started); `local` is what its epmd answers.
pub fn build_node(cfg: &ServerConfig, local: Arc<Registry>) -> Arc<NodeInner> {
    let addr = SocketAddr::new(cfg.listen_ip, cfg.port);
    let inner = NodeInner::new(NodeConfig {
        shared: Default::default(),
        spec: cfg.spec.clone(),
        delays: cfg.delays.clone(),
        epmd: Arc::new(DnsEpmd {
            port: cfg.dist_port,
            local,
        }),
        seed: cfg.seed,
        seq: Arc::new(AtomicU64::new(0)),
        listener: None,
        addr,
        dist_listener: None,
        dist_addr: SocketAddr::new(cfg.listen_ip, cfg.dist_port),
        dist: cfg.dist.clone(),
        persist: cfg.persist.clone(),
    });
    if let Some(s) = &cfg.secret {
        inner.set_config("chttpd_auth", "secret", s);
    }
    inner
}

fn serve(cfg: ServerConfig) -> i32 {
    node::LOG_ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
    install_signal_handlers();
    log_line(&format!(
        "starting {} (admin {}, data {})",
        cfg.spec.name,
        if cfg.spec.admin.is_some() {
            "from COUCHDB_USER"
        } else {
            "none"
        },
        cfg.persist
            .as_ref()
            .map(|p| p.data_file.display().to_string())
            .unwrap_or_else(|| "not kept".into())
    ));
    if cfg.spec.name == NONODE {
        log_line("NODENAME is not set: this node is nonode@nohost and cannot join a cluster");
    } else if !long_name_ok(&cfg.spec.name) {
        log_line(&format!(
            "** System running to use fully qualified hostnames ** ** Hostname {} is illegal **",
            cfg.spec.name.split_once('@').map(|(_, h)| h).unwrap_or("")
        ));
    }
    log_line(&format!(
        "distribution: {:?} on port {}{}",
        cfg.dist,
        cfg.dist_port,
        if cfg.spec.name == NONODE {
            " (not started: no name)"
        } else {
            ""
        }
    ));
    let local = Arc::new(Registry::default());
    // Erlang starts epmd with the first distributed node of a host; a node without a name
    // starts neither.
    let _epmd = match long_name_ok(&cfg.spec.name) {
        true => match std::net::TcpListener::bind(SocketAddr::new(cfg.listen_ip, cfg.epmd_port))
            .and_then(|l| EpmdServer::start(l, local.clone()))
        {
            Ok(e) => Some(e),
            Err(e) => {
                log_line(&format!(
                    "epmd: cannot listen on port {}: {e}",
                    cfg.epmd_port
                ));
                None
            }
        },
        false => None,
    };
    let node = build_node(&cfg, local);
    server::start(&node);
    loop {
        std::thread::park();
    }
}

#[cfg(unix)]
fn install_signal_handlers() {
    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        fn _exit(code: i32) -> !;
    }
    extern "C" fn on_term(_sig: i32) {
        // State is written after every change: leaving at once is safe.
        unsafe { _exit(0) }
    }
    // SIGINT = 2, SIGTERM = 15 on Linux. PID 1 in a container gets no default handler.
    unsafe {
        signal(2, on_term);
        signal(15, on_term);
    }
}

#[cfg(not(unix))]
fn install_signal_handlers() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_like_the_docker_image() {
        let c = server_config(&env(&[
            ("NODENAME", "couchdb-1.cluster"),
            ("COUCHDB_USER", "admin"),
            ("COUCHDB_PASSWORD", "pw"),
            ("COUCHDB_ERLANG_COOKIE", "abc"),
            ("ERL_FLAGS", "+K true -setcookie 'xyz' +A 4"),
        ]))
        .unwrap();
        assert_eq!(c.spec.name, "couchdb@couchdb-1.cluster");
        assert_eq!(c.spec.cookie, "xyz");
        assert_eq!(c.spec.admin, Some(("admin".into(), "pw".into())));
        assert_eq!((c.port, c.dist_port, c.epmd_port), (5984, 9100, 4369));
        let c = server_config(&env(&[])).unwrap();
        assert_eq!(c.spec.name, NONODE);
        assert_eq!(c.spec.admin, None);
        let e = server_config(&env(&[("COUCHDB_ERLANG_COOKIE", "monster")])).unwrap_err();
        assert!(!e.contains("monster"));
        assert!(server_config(&env(&[("COUCHSIM_PORT", "x")])).is_err());
        assert_eq!(c.spec.version, Version::V3_4_2);
        let c = server_config(&env(&[("COUCHSIM_VERSION", "3.5.2")])).unwrap();
        assert_eq!(c.spec.version, Version::V3_5_2);
        let e = server_config(&env(&[("COUCHSIM_VERSION", "3.9")])).unwrap_err();
        assert!(e.contains("3.4.2, 3.5.2"), "{e}");
    }
}
