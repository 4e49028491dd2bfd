//! Binary mode: `couchsim` standing in for `couchdb:3.4.2` in docker-compose, and the `curl`
//! multi-call mode for healthchecks in a `FROM scratch` image. Kept in the library so it is
//! testable; `main.rs` only dispatches.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{self, ClientRequest};
use crate::dist::{DnsEpmd, NONODE};
use crate::node::{self, log_line, NodeConfig, NodeInner, Persist};
use crate::spec::{Delays, NodeSpec};
use crate::util;

/// Entry point used by `main.rs`. Returns the process exit code.
pub fn main_with_args(args: Vec<String>) -> i32 {
    let prog = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    if prog == "sh" {
        return sh(&args[1..]);
    }
    if prog == "curl" || args.get(1).map(String::as_str) == Some("curl") {
        let rest: Vec<String> = if prog == "curl" {
            args.into_iter().skip(1).collect()
        } else {
            args.into_iter().skip(2).collect()
        };
        return curl(&rest);
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
    pub dist_port: u16,
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
    let cookie = setcookie_from_erl_flags(&get("ERL_FLAGS").unwrap_or_default())
        .or_else(|| get("COUCHDB_ERLANG_COOKIE"));
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
        dist_port: parse_port(env, "COUCHSIM_DIST_PORT", 5984)?,
        persist,
        delays,
        seed,
        secret,
    })
}

/// Builds the node for a config (not started).
pub fn build_node(cfg: &ServerConfig) -> Arc<NodeInner> {
    let addr = SocketAddr::new(cfg.listen_ip, cfg.port);
    let inner = NodeInner::new(NodeConfig {
        shared: Default::default(),
        spec: cfg.spec.clone(),
        delays: cfg.delays.clone(),
        epmd: Arc::new(DnsEpmd {
            port: cfg.dist_port,
        }),
        seed: cfg.seed,
        seq: Arc::new(AtomicU64::new(0)),
        listener: None,
        addr,
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
    } else if !crate::dist::long_name_ok(&cfg.spec.name) {
        log_line(&format!(
            "** System running to use fully qualified hostnames ** ** Hostname {} is illegal **",
            cfg.spec.name.split_once('@').map(|(_, h)| h).unwrap_or("")
        ));
    }
    let node = build_node(&cfg);
    node.start();
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

// ---------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------

/// Splits a shell word list (single and double quotes, backslash escapes).
pub fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'') | (None, '"') => {
                quote = Some(c);
                have = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    have = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if have || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if have || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A very small `sh -c` for compose healthchecks written in shell form in a `FROM scratch`
/// image: `curl … [|| exit N]`, `… && …`, `exit N`. Anything else is refused (127).
pub fn sh(args: &[String]) -> i32 {
    let script = match args {
        [flag, script, ..] if flag == "-c" => script.clone(),
        _ => {
            eprintln!("sh: only `sh -c '<command>'` is supported by couchsim");
            return 2;
        }
    };
    let mut status = 0;
    for (i, alt) in script.split("||").enumerate() {
        if i > 0 && status == 0 {
            break;
        }
        status = 0;
        for cmd in alt.split("&&") {
            let words = shell_words(cmd);
            status = match words.first().map(|w| w.rsplit('/').next().unwrap_or(w)) {
                None => 0,
                Some("curl") => curl(&words[1..]),
                Some("exit") => words.get(1).and_then(|c| c.parse().ok()).unwrap_or(0),
                Some("true") => 0,
                Some("false") => 1,
                Some(other) => {
                    eprintln!("sh: {other}: not found (couchsim's sh runs curl only)");
                    127
                }
            };
            if status != 0 {
                break;
            }
        }
    }
    status
}

#[derive(Debug, Default, PartialEq)]
pub struct CurlArgs {
    pub fail: bool,
    pub silent: bool,
    pub show_error: bool,
    pub method: Option<String>,
    pub headers: Vec<(String, String)>,
    pub data: Option<String>,
    pub user: Option<String>,
    pub output: Option<String>,
    pub max_time: Option<f64>,
    pub url: Option<String>,
}

pub fn parse_curl_args(args: &[String]) -> Result<CurlArgs, String> {
    let mut a = CurlArgs::default();
    let mut i = 0;
    let take = |i: &mut usize, flag: &str| -> Result<String, String> {
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| format!("option {flag}: requires parameter"))
    };
    while i < args.len() {
        let arg = &args[i];
        match arg.as_str() {
            "--fail" => a.fail = true,
            "--silent" => a.silent = true,
            "--show-error" => a.show_error = true,
            "-X" | "--request" => a.method = Some(take(&mut i, arg)?),
            "-H" | "--header" => {
                let h = take(&mut i, arg)?;
                if let Some((k, v)) = h.split_once(':') {
                    a.headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            "-d" | "--data" | "--data-raw" | "--data-binary" => a.data = Some(take(&mut i, arg)?),
            "-u" | "--user" => a.user = Some(take(&mut i, arg)?),
            "-o" | "--output" => a.output = Some(take(&mut i, arg)?),
            "-m" | "--max-time" => {
                let v = take(&mut i, arg)?;
                a.max_time = Some(v.parse().map_err(|_| format!("bad --max-time {v}"))?);
            }
            "-v" | "--verbose" | "-L" | "--location" | "-k" | "--insecure" | "-i" => {}
            s if s.starts_with("--") => return Err(format!("option {s}: is unknown")),
            s if s.starts_with('-') && s.len() > 1 => {
                for c in s[1..].chars() {
                    match c {
                        'f' => a.fail = true,
                        's' => a.silent = true,
                        'S' => a.show_error = true,
                        'v' | 'L' | 'k' | 'i' => {}
                        _ => return Err(format!("option -{c}: is unknown")),
                    }
                }
            }
            url => a.url = Some(url.to_string()),
        }
        i += 1;
    }
    Ok(a)
}

/// A minimal curl: exit 0 on success, 22 on an HTTP error with `-f`, 7 when the connection
/// fails, 6 when the host does not resolve, 28 on timeout, 2/3 on bad usage/URL.
pub fn curl(args: &[String]) -> i32 {
    let a = match parse_curl_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("curl: {e}");
            return 2;
        }
    };
    let say = |code: i32, msg: &str| {
        if !a.silent || a.show_error {
            eprintln!("curl: ({code}) {msg}");
        }
        code
    };
    let url = match a.url.as_deref().and_then(client::parse_url) {
        Some(u) => u,
        None => return say(3, "URL using bad/illegal format or missing URL"),
    };
    let addrs = match client::resolve_all(&url.host, url.port) {
        Ok(a) => a,
        Err(_) => return say(6, &format!("Could not resolve host: {}", url.host)),
    };
    let method = a
        .method
        .clone()
        .unwrap_or_else(|| if a.data.is_some() { "POST" } else { "GET" }.to_string());
    let mut req = ClientRequest::new(&method, &url.path);
    req.host = format!("{}:{}", url.host, url.port);
    req.headers = a.headers.clone();
    req.body = a.data.clone().map(String::into_bytes);
    req.basic_auth = a
        .user
        .as_deref()
        .map(|u| {
            let (n, p) = u.split_once(':').unwrap_or((u, ""));
            (n.to_string(), p.to_string())
        })
        .or(url.user.clone());
    let secs = a.max_time.unwrap_or(300.0);
    let secs = if secs.is_finite() {
        secs.clamp(0.001, 86_400.0)
    } else {
        300.0
    };
    req.timeout = Duration::from_secs_f64(secs);
    // Like curl: try every address (localhost may be ::1 first; the node listens on IPv4).
    let mut result = Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
    for addr in addrs {
        result = client::send(addr, &req);
        match &result {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            _ => break,
        }
    }
    let resp = match result {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {
            return say(28, "Operation timed out")
        }
        Err(_) => {
            return say(
                7,
                &format!(
                    "Failed to connect to {} port {}: Connection refused",
                    url.host, url.port
                ),
            )
        }
    };
    if a.fail && resp.status >= 400 {
        return say(
            22,
            &format!("The requested URL returned error: {}", resp.status),
        );
    }
    let written = match &a.output {
        Some(path) => std::fs::write(path, &resp.body),
        None => {
            let mut out = io::stdout();
            out.write_all(&resp.body).and_then(|_| out.flush())
        }
    };
    if written.is_err() {
        return say(23, "Failure writing output to destination");
    }
    0
}

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
        assert_eq!((c.port, c.dist_port), (5984, 5984));
        let c = server_config(&env(&[])).unwrap();
        assert_eq!(c.spec.name, NONODE);
        assert_eq!(c.spec.admin, None);
        let e = server_config(&env(&[("COUCHDB_ERLANG_COOKIE", "monster")])).unwrap_err();
        assert!(!e.contains("monster"));
        assert!(server_config(&env(&[("COUCHSIM_PORT", "x")])).is_err());
    }

    #[test]
    fn curl_flags() {
        let args: Vec<String> = ["-fsS", "http://localhost:5984/_up"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = parse_curl_args(&args).unwrap();
        assert!(a.fail && a.silent && a.show_error);
        assert_eq!(a.url.as_deref(), Some("http://localhost:5984/_up"));
        assert!(parse_curl_args(&["-Z".to_string()]).is_err());
    }

    #[test]
    fn shell_form_healthchecks() {
        assert_eq!(
            shell_words(r#"curl -fsS "http://x:1/_up" || exit 1"#),
            vec!["curl", "-fsS", "http://x:1/_up", "||", "exit", "1"]
        );
        assert_eq!(sh(&["-c".into(), "exit 3".into()]), 3);
        assert_eq!(sh(&["-c".into(), "false || exit 1".into()]), 1);
        assert_eq!(sh(&["-c".into(), "true && exit 4".into()]), 4);
        assert_eq!(sh(&["-c".into(), "wget x".into()]), 127);
    }

    #[test]
    fn curl_exit_codes() {
        // nothing listens on this port
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let url = format!("http://127.0.0.1:{port}/_up");
        assert_eq!(curl(&["-fsS".into(), url]), 7);
        assert_eq!(curl(&["-fsS".into()]), 3);
    }
}
