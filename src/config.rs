//! Configuration: read once from the environment, validated up front, so that a typo is a clear
//! error naming the variable (exit 2) instead of a silent default discovered at 3 a.m.

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::exit::{Failure, Status};

/// The default overall deadline: long enough for a Kubernetes pod whose image is still being
/// pulled, short enough that a broken compose stack fails within minutes rather than hanging.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(300);
/// `finish_cluster` alone may take 5 s (it waits for every node to connect), so a single request
/// must be allowed comfortably more than that.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_PORT: u16 = 5984;

/// The variables we read, for `--help` and the README: (name, meaning).
pub const VARIABLES: &[(&str, &str)] = &[
    ("COUCHDB_USER", "admin user every node shares (required)"),
    (
        "COUCHDB_PASSWORD",
        "its password (or COUCHDB_PASSWORD_FILE: a file holding it)",
    ),
    (
        "COUCHDB_COOKIE",
        "the Erlang cookie the nodes run with (or COUCHDB_COOKIE_FILE)",
    ),
    (
        "COUCHDB_NODES",
        "comma-separated nodes: host, host:port or http://host:port (required)",
    ),
    (
        "COUCHDB_COORDINATOR",
        "the node that joins the others (default: the first of COUCHDB_NODES)",
    ),
    (
        "COUCHDB_INIT_TIMEOUT",
        "overall deadline, e.g. 90s, 5m (default 5m)",
    ),
    (
        "COUCHDB_REQUEST_TIMEOUT",
        "deadline of one HTTP request, e.g. 500ms, 15s (default 15s)",
    ),
    (
        "RUST_LOG",
        "log level: error, warn, info (default), debug, trace",
    ),
];

/// A value that must never reach a log: its `Debug` is redacted and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One node as the operator wrote it, and the base URL we talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    /// What the operator wrote in COUCHDB_NODES: the name we use in every message.
    pub label: String,
    /// `http://host:port`, no trailing slash.
    pub url: String,
}

#[derive(Debug)]
pub struct Config {
    pub user: String,
    pub password: Secret,
    pub cookie: Secret,
    pub nodes: Vec<NodeAddr>,
    /// Index into `nodes`.
    pub coordinator: usize,
    pub init_timeout: Duration,
    pub request_timeout: Duration,
}

/// The raw variables, all optional so that we, not envy, word the error for a missing one.
#[derive(Deserialize, Default)]
struct Raw {
    user: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    cookie: Option<String>,
    cookie_file: Option<String>,
    nodes: Option<String>,
    coordinator: Option<String>,
    init_timeout: Option<String>,
    request_timeout: Option<String>,
}

fn invalid(message: String) -> anyhow::Error {
    Failure::new(Status::Config, message).into()
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config> {
        Config::from_vars(std::env::vars())
    }

    /// Reads the given variables (tests pass their own instead of touching the environment).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
        let raw: Raw = envy::prefixed("COUCHDB_")
            .from_iter(vars)
            .map_err(|e| invalid(format!("cannot read the COUCHDB_* variables: {e}")))?;

        let user = required("COUCHDB_USER", raw.user)?;
        let password = secret_from("COUCHDB_PASSWORD", raw.password, raw.password_file)?;
        let cookie = secret_from("COUCHDB_COOKIE", raw.cookie, raw.cookie_file)?;
        check_cookie(&cookie)?;
        let nodes = parse_nodes(&required("COUCHDB_NODES", raw.nodes)?)?;
        let coordinator = match raw.coordinator {
            None => 0,
            Some(c) => find_coordinator(&nodes, &c)?,
        };
        let init_timeout = duration_var(
            "COUCHDB_INIT_TIMEOUT",
            raw.init_timeout,
            DEFAULT_INIT_TIMEOUT,
        )?;
        let request_timeout = duration_var(
            "COUCHDB_REQUEST_TIMEOUT",
            raw.request_timeout,
            DEFAULT_REQUEST_TIMEOUT,
        )?;
        Ok(Config {
            user,
            password: Secret(password),
            cookie: Secret(cookie),
            nodes,
            coordinator,
            init_timeout,
            request_timeout,
        })
    }
}

fn required(name: &str, value: Option<String>) -> Result<String> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Some(_) => Err(invalid(format!("{name} is set but empty"))),
        None => Err(invalid(format!("{name} is not set"))),
    }
}

/// `NAME` or `NAME_FILE` (the Docker-secrets convention), exactly one of them.
fn secret_from(name: &str, value: Option<String>, file: Option<String>) -> Result<String> {
    let value = match (value, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "both {name} and {name}_FILE are set: keep only one"
            )))
        }
        (Some(v), None) => v,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| invalid(format!("{name}_FILE: cannot read {path}: {e}")))?
            // Editors and `echo` add a final newline that is not part of the secret.
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None) => return Err(invalid(format!("{name} is not set (nor {name}_FILE)"))),
    };
    if value.is_empty() {
        return Err(invalid(format!("{name} is empty")));
    }
    Ok(value)
}

fn check_cookie(cookie: &str) -> Result<()> {
    // CouchDB 3.4.2 refuses to boot with the cookie it used to ship as a default.
    if cookie == "monster" {
        bail!(invalid(
            "COUCHDB_COOKIE is the old default `monster`, which CouchDB 3.4.2 refuses to start with: \
             generate a random one (scripts/gen-env)"
                .into()
        ));
    }
    if cookie.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(invalid(
            "COUCHDB_COOKIE contains whitespace, which an Erlang cookie cannot hold".into()
        ));
    }
    Ok(())
}

/// `couchdb-1` → `http://couchdb-1:5984`; `couchdb-1:6984`; `http://10.0.0.5:5984/`.
pub fn parse_node(entry: &str) -> Result<NodeAddr> {
    let label = entry.trim().to_string();
    let bad = |why: &str| invalid(format!("COUCHDB_NODES: node `{label}` {why}"));
    if label.is_empty() {
        return Err(invalid(
            "COUCHDB_NODES has an empty entry (two commas in a row?)".into(),
        ));
    }
    let rest = if let Some(rest) = label.strip_prefix("http://") {
        rest
    } else if label.starts_with("https://") {
        return Err(bad("uses https, which this build does not speak: use http on the cluster's private network"));
    } else if label.contains("://") {
        return Err(bad("has a scheme other than http://"));
    } else {
        &label
    };
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') || authority.contains('?') {
        return Err(bad("has a path: give only host or host:port"));
    }
    if authority.contains('@') {
        // Never echo it: the part before @ would be credentials.
        return Err(invalid(
            "COUCHDB_NODES: an entry holds credentials (user:password@host); use COUCHDB_USER and COUCHDB_PASSWORD instead"
                .into(),
        ));
    }
    let (host, port) = split_host_port(authority).map_err(|why| bad(&why))?;
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    let url = format!("http://{host}:{port}");
    // Only the label carries credentials-free user text; mask nothing else.
    Ok(NodeAddr {
        label: if label.contains("://") {
            authority.to_string()
        } else {
            label
        },
        url,
    })
}

fn split_host_port(authority: &str) -> std::result::Result<(String, u16), String> {
    // Bracketed IPv6: [::1]:5984
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("has an unclosed [")?;
        let port = match after {
            "" => DEFAULT_PORT,
            p => parse_port(p.strip_prefix(':').ok_or("has junk after ]")?)?,
        };
        return Ok((format!("[{host}]"), port));
    }
    match authority.rsplit_once(':') {
        None => Ok((authority.to_string(), DEFAULT_PORT)),
        Some((host, port)) => Ok((host.to_string(), parse_port(port)?)),
    }
}

fn parse_port(p: &str) -> std::result::Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("has an invalid port `{p}`")),
        Ok(port) => Ok(port),
    }
}

fn parse_nodes(list: &str) -> Result<Vec<NodeAddr>> {
    let nodes = list
        .split(',')
        .map(parse_node)
        .collect::<Result<Vec<_>>>()?;
    for (i, a) in nodes.iter().enumerate() {
        if nodes[..i].iter().any(|b| b.url == a.url) {
            return Err(invalid(format!(
                "COUCHDB_NODES lists node `{}` twice",
                a.label
            )));
        }
    }
    Ok(nodes)
}

fn find_coordinator(nodes: &[NodeAddr], wanted: &str) -> Result<usize> {
    let wanted = parse_node(wanted).context("COUCHDB_COORDINATOR")?;
    nodes
        .iter()
        .position(|n| n.url == wanted.url)
        .ok_or_else(|| {
            invalid(format!(
                "COUCHDB_COORDINATOR `{}` is not one of COUCHDB_NODES ({})",
                wanted.label,
                nodes
                    .iter()
                    .map(|n| n.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

fn duration_var(name: &str, value: Option<String>, default: Duration) -> Result<Duration> {
    match value {
        None => Ok(default),
        Some(v) => parse_duration(&v).map_err(|why| invalid(format!("{name}=`{v}`: {why}"))),
    }
}

/// `500ms`, `90s`, `2m`, `1h`. A bare number is refused: seconds or milliseconds is a guess we
/// will not make for the operator.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err("expected a number with a unit, like 500ms, 90s or 5m".into());
    }
    let n: u64 = digits.parse().map_err(|_| "number too large".to_string())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "" => return Err("missing unit: write e.g. 90s or 500ms".into()),
        _ => return Err(format!("unknown unit `{unit}`: use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::status_of;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("COUCHDB_USER", "admin"),
            ("COUCHDB_PASSWORD", "pw"),
            ("COUCHDB_COOKIE", "c00kie"),
            (
                "COUCHDB_NODES",
                "couchdb-1,couchdb-2:6984,http://10.0.0.3:5984/",
            ),
        ]
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Result<Config> {
        let mut v = base();
        for (k, val) in extra {
            v.retain(|(bk, _)| bk != k);
            v.push((k, val));
        }
        Config::from_vars(vars(&v))
    }

    fn config_error(r: Result<Config>) -> String {
        let e = r.expect_err("expected a configuration error");
        assert_eq!(status_of(&e), Status::Config, "{e:#}");
        format!("{e:#}")
    }

    #[test]
    fn parses_nodes_in_three_forms() {
        let c = with(&[]).unwrap();
        let urls: Vec<_> = c.nodes.iter().map(|n| n.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://couchdb-1:5984",
                "http://couchdb-2:6984",
                "http://10.0.0.3:5984"
            ]
        );
        assert_eq!(c.coordinator, 0);
        assert_eq!(c.init_timeout, DEFAULT_INIT_TIMEOUT);
    }

    #[test]
    fn coordinator_must_be_listed() {
        assert_eq!(
            with(&[("COUCHDB_COORDINATOR", "couchdb-2:6984")])
                .unwrap()
                .coordinator,
            1
        );
        assert!(config_error(with(&[("COUCHDB_COORDINATOR", "couchdb-9")]))
            .contains("COUCHDB_COORDINATOR"));
    }

    #[test]
    fn missing_and_empty_values_name_the_variable() {
        for name in [
            "COUCHDB_USER",
            "COUCHDB_PASSWORD",
            "COUCHDB_COOKIE",
            "COUCHDB_NODES",
        ] {
            let mut v = base();
            v.retain(|(k, _)| *k != name);
            assert!(
                config_error(Config::from_vars(vars(&v))).contains(name),
                "{name}"
            );
            assert!(
                config_error(with(&[(name, "")])).contains(name),
                "{name} empty"
            );
        }
    }

    #[test]
    fn refuses_unusable_cookies() {
        assert!(config_error(with(&[("COUCHDB_COOKIE", "monster")])).contains("monster"));
        assert!(config_error(with(&[("COUCHDB_COOKIE", "a b")])).contains("COUCHDB_COOKIE"));
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["90", "", "s", "1.5s", "0s", "-1s", "5 minutes"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(
            config_error(with(&[("COUCHDB_INIT_TIMEOUT", "90")])).contains("COUCHDB_INIT_TIMEOUT")
        );
    }

    #[test]
    fn bad_node_entries_are_named() {
        assert!(config_error(with(&[("COUCHDB_NODES", "a,,b")])).contains("empty entry"));
        assert!(config_error(with(&[("COUCHDB_NODES", "a,a")])).contains("twice"));
        assert!(config_error(with(&[("COUCHDB_NODES", "a:99999")])).contains("`a:99999`"));
        assert!(config_error(with(&[("COUCHDB_NODES", "https://a")])).contains("https"));
        let e = config_error(with(&[("COUCHDB_NODES", "http://admin:hunter2@a:5984")]));
        assert!(!e.contains("hunter2"), "credentials echoed: {e}");
    }

    #[test]
    fn secrets_from_files_lose_the_final_newline() {
        let dir = std::env::temp_dir().join(format!("cci-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let path = file.to_str().unwrap().to_string();
        let mut v = vars(&base());
        v.retain(|(k, _)| k != "COUCHDB_PASSWORD");
        v.push(("COUCHDB_PASSWORD_FILE".into(), path.clone()));
        assert_eq!(
            Config::from_vars(v.clone()).unwrap().password.expose(),
            "s3cret"
        );
        v.push(("COUCHDB_PASSWORD".into(), "x".into()));
        assert!(config_error(Config::from_vars(v)).contains("both"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let c = with(&[]).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("pw\"") && !shown.contains("c00kie"),
            "{shown}"
        );
    }
}
