//! Configuration: read once from the environment, validated up front, so that a typo is a clear
//! error naming the variable (exit 2) instead of a silent default discovered at 3 a.m.

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Deserialize;

mod backup;
mod drain;
mod zones;
pub use backup::{Backup, Databases, Selected, BACKUP_VARIABLES, USERS_DB};
pub use drain::{Drain, DEFAULT_GUARD_ADDR, DEFAULT_LB_INTERVAL};
pub use zones::{valid_zone, ZoneList, ZoneNode};

/// The default overall deadline: long enough for a Kubernetes pod whose image is still being
/// pulled, short enough that a broken compose stack fails within minutes rather than hanging.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(300);
/// `finish_cluster` alone may take 5 s (it waits for every node to connect), so a single request
/// must be allowed comfortably more than that.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_PORT: u16 = 5984;
/// `watch` looks every 15 s: a new pod is joined within ~15 s of answering, and an idle look
/// costs each node a few GETs (docs/performance.md) — nothing a CouchDB notices at 4 a minute.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(15);
/// 9985: beside 9984, the port of the community couchdb-prometheus-exporter, so both can run in
/// one pod; every interface, so that Prometheus on the pod network can scrape it.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9985";
/// Erlang's port mapper, where a node's distribution port is asked for (`ERL_EPMD_PORT`).
pub const DEFAULT_EPMD_PORT: u16 = 4369;
/// More nodes than this in COUCHDB_NODES (or COUCHDB_EXPECT) is a typo, e.g. `{0..1000}`.
pub const MAX_NODES: usize = 256;

/// The variables we read, for `--help` and docs/configuration.md: (name, meaning).
pub const VARIABLES: &[(&str, &str)] = &[
    ("COUCHDB_USER", "admin user every node shares (required)"),
    (
        "COUCHDB_PASSWORD",
        "its password (or COUCHDB_PASSWORD_FILE: a file holding it)",
    ),
    (
        "COUCHDB_COOKIE",
        "the Erlang cookie the nodes run with (or COUCHDB_COOKIE_FILE); optional, checked for values CouchDB refuses",
    ),
    (
        "COUCHDB_NODES",
        "comma-separated nodes: host, host:port or http://host:port; ranges like couchdb-{0..2}.couchdb",
    ),
    (
        "COUCHDB_SERVICE",
        "instead of COUCHDB_NODES: a DNS name with one address per node (a headless Service), e.g. couchdb",
    ),
    (
        "COUCHDB_EXPECT",
        "how many nodes must answer before forming: with COUCHDB_SERVICE (required there) addresses that resolve; with COUCHDB_NODES (default: all) nodes up, the coordinator among them",
    ),
    (
        "COUCHDB_COORDINATOR",
        "the node that joins the others (default: the first of COUCHDB_NODES; with COUCHDB_SERVICE the lowest Erlang name)",
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
        "COUCHDB_ZONES",
        "each node's failure domain, NODE=ZONE,… (NODE an Erlang name or as in COUCHDB_NODES): written into the nodes' _nodes docs with a [cluster] placement; unset: each node's own [couchdb_cluster_init] zone, if any",
    ),
    (
        "COUCHDB_MOVE_CONCURRENCY",
        "remove/rebalance: moves of different databases carried out at once, 1 to 32 (default 4)",
    ),
    (
        "COUCHDB_WATCH_INTERVAL",
        "watch: how often it looks at the cluster, e.g. 5s, 1m (default 15s)",
    ),
    (
        "COUCHDB_METRICS_ADDR",
        "watch: address:port serving its status page (/, /status.json), /metrics and /healthz (default 0.0.0.0:9985)",
    ),
    (
        "COUCHDB_DIST_TLS",
        "true: every node's Erlang distribution must run TLS (compose/dist-tls.yaml), checked at formation and by check/status (exit 15); false: plain TCP on purpose; unset: reported, not required",
    ),
    (
        "COUCHDB_EPMD_PORT",
        "where each node's epmd answers which port its distribution listens on (default 4369), for that check",
    ),
    (
        "COUCHDB_LB_URL",
        "drain/undrain/guard: the load balancer in front of the nodes (e.g. http://traefik:5984, a Kubernetes client Service): drain proves through it that the node gets no more requests",
    ),
    (
        "COUCHDB_LB_INTERVAL",
        "drain without COUCHDB_LB_URL: the load balancer's health-check interval, waited out (plus 1 s) after /_up answers 404 (default 30s, Traefik's)",
    ),
    (
        "COUCHDB_GUARD_ADDR",
        "guard: address:port serving /ready and /drain for the pod's probes and preStop hook (default 0.0.0.0:9986)",
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

impl NodeAddr {
    /// The host part of `url`, as DNS is asked for it (IPv6 without brackets).
    pub fn host(&self) -> &str {
        let authority = self.url.trim_start_matches("http://");
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(DEFAULT_PORT)
    }
}

/// Where the nodes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeList {
    /// COUCHDB_NODES, ranges expanded, in the order written.
    Listed {
        nodes: Vec<NodeAddr>,
        /// Index into `nodes`.
        coordinator: usize,
        /// COUCHDB_EXPECT: how many must answer before forming (the others are joined by a later
        /// run, or by `watch`); all of them unless set.
        expect: usize,
    },
    /// COUCHDB_SERVICE: every address the name resolves to is a node; at least `expect` of them.
    Service { service: NodeAddr, expect: usize },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub user: String,
    pub password: Secret,
    /// Never sent anywhere: checked for values CouchDB refuses, and named in diagnoses.
    pub cookie: Option<Secret>,
    pub nodes: NodeList,
    pub init_timeout: Duration,
    pub request_timeout: Duration,
    /// COUCHDB_MOVE_CONCURRENCY: databases `remove`/`rebalance` move at once.
    pub move_concurrency: usize,
    /// COUCHDB_BACKUP_*: `None` when backup is off.
    pub backup: Option<Backup>,
    /// COUCHDB_ZONES; `None`: unset (then each node's own report, if any, says its zone).
    pub zones: Option<ZoneList>,
    /// `watch` only: the time between two looks, and where its metrics are served.
    pub watch_interval: Duration,
    pub metrics_addr: std::net::SocketAddr,
    /// COUCHDB_DIST_TLS: the distribution every node must run (`None`: not required).
    pub dist_tls: Option<bool>,
    /// COUCHDB_EPMD_PORT.
    pub epmd_port: u16,
    /// COUCHDB_LB_*, COUCHDB_GUARD_ADDR: `drain`, `undrain`, `guard`.
    pub drain: Drain,
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
    service: Option<String>,
    expect: Option<String>,
    coordinator: Option<String>,
    init_timeout: Option<String>,
    request_timeout: Option<String>,
    move_concurrency: Option<String>,
    zones: Option<String>,
    watch_interval: Option<String>,
    metrics_addr: Option<String>,
    dist_tls: Option<String>,
    epmd_port: Option<String>,
    lb_url: Option<String>,
    lb_interval: Option<String>,
    guard_addr: Option<String>,
}

/// A variable is missing or malformed; the message names it. `exit::status_of` gives it the
/// configuration exit code (config sits below exit, so it cannot name a status itself).
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(message: String) -> anyhow::Error {
    ConfigError(message).into()
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config> {
        // Not `std::env::vars()`: it panics on any variable that is not UTF-8 — anyone's, with
        // the value in the panic message.
        let mut vars = Vec::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            match value.into_string() {
                Ok(value) => vars.push((key.to_string(), value)),
                Err(_) if key.starts_with("COUCHDB_") => {
                    return Err(invalid(format!("{key} is not valid UTF-8 text")))
                }
                Err(_) => {}
            }
        }
        Config::from_vars(vars)
    }

    /// Reads the given variables (tests pass their own instead of touching the environment).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let raw: Raw = envy::prefixed("COUCHDB_")
            .from_iter(vars.iter().cloned())
            .map_err(|e| invalid(format!("cannot read the COUCHDB_* variables: {e}")))?;

        let user = required("COUCHDB_USER", raw.user)?;
        let password = secret_from("COUCHDB_PASSWORD", raw.password, raw.password_file)?;
        let cookie = match (raw.cookie, raw.cookie_file) {
            (None, None) => None,
            (value, file) => Some(secret_from("COUCHDB_COOKIE", value, file)?),
        };
        if let Some(cookie) = &cookie {
            check_cookie(cookie)?;
        }
        let nodes = node_list(raw.nodes, raw.service, raw.expect, raw.coordinator)?;
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
        let move_concurrency = move_concurrency(raw.move_concurrency)?;
        let zones = zones::read(raw.zones, &nodes)?;
        let watch_interval = duration_var(
            "COUCHDB_WATCH_INTERVAL",
            raw.watch_interval,
            DEFAULT_WATCH_INTERVAL,
        )?;
        if watch_interval < Duration::from_millis(100) {
            return Err(invalid(format!(
                "COUCHDB_WATCH_INTERVAL={watch_interval:?} is too short: at least 100ms"
            )));
        }
        let metrics_addr = raw
            .metrics_addr
            .as_deref()
            .unwrap_or(DEFAULT_METRICS_ADDR)
            .trim()
            .parse()
            .map_err(|_| {
                invalid(format!(
                    "COUCHDB_METRICS_ADDR=`{}` is not an address and port like 0.0.0.0:9985 or [::]:9985",
                    raw.metrics_addr.as_deref().unwrap_or_default()
                ))
            })?;
        let dist_tls = match raw.dist_tls.as_deref().map(str::trim) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(invalid(format!(
                    "COUCHDB_DIST_TLS=`{other}`: expected true (every node runs TLS distribution) or false"
                )))
            }
        };
        let epmd_port = match raw.epmd_port.as_deref() {
            None => DEFAULT_EPMD_PORT,
            Some(p) => parse_port(p.trim())
                .map_err(|_| invalid(format!("COUCHDB_EPMD_PORT=`{p}` is not a port number")))?,
        };
        let drain = drain::read(raw.lb_url, raw.lb_interval, raw.guard_addr)?;
        let password = Secret(password);
        let backup = backup::read(&vars, &nodes, &user, &password)?;
        Ok(Config {
            user,
            password,
            cookie: cookie.map(Secret),
            nodes,
            init_timeout,
            request_timeout,
            move_concurrency,
            backup,
            zones,
            watch_interval,
            metrics_addr,
            dist_tls,
            epmd_port,
            drain,
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

/// COUCHDB_NODES or COUCHDB_SERVICE (with COUCHDB_EXPECT): exactly one way to find the nodes.
fn node_list(
    nodes: Option<String>,
    service: Option<String>,
    expect: Option<String>,
    coordinator: Option<String>,
) -> Result<NodeList> {
    match (nodes, service) {
        (Some(_), Some(_)) => Err(invalid(
            "both COUCHDB_NODES and COUCHDB_SERVICE are set: keep only one".into(),
        )),
        (None, None) => Err(invalid(
            "COUCHDB_NODES is not set (nor COUCHDB_SERVICE, to find the nodes by DNS)".into(),
        )),
        (Some(list), None) => {
            let nodes = parse_nodes(&required("COUCHDB_NODES", Some(list))?)?;
            let coordinator = match coordinator {
                None => 0,
                Some(c) => find_coordinator(&nodes, &c)?,
            };
            let expect = match expect {
                None => nodes.len(),
                Some(text) => count_up_to(&text, nodes.len()).map_err(|_| {
                    invalid(format!(
                        "COUCHDB_EXPECT=`{text}` is not a number of nodes from 1 to {}, the nodes COUCHDB_NODES lists",
                        nodes.len()
                    ))
                })?,
            };
            Ok(NodeList::Listed {
                nodes,
                coordinator,
                expect,
            })
        }
        (None, Some(service)) => {
            let service = parse_node(
                "COUCHDB_SERVICE",
                &required("COUCHDB_SERVICE", Some(service))?,
            )?;
            if coordinator.is_some() {
                return Err(invalid(
                    "COUCHDB_COORDINATOR cannot be used with COUCHDB_SERVICE: the nodes are found at run time, \
                     and the one with the lowest Erlang name coordinates (couchdb-0 in a StatefulSet)"
                        .into(),
                ));
            }
            let text = required("COUCHDB_EXPECT", expect).map_err(|_| {
                invalid(
                    "COUCHDB_EXPECT is not set: with COUCHDB_SERVICE, say how many nodes to wait for \
                     (the StatefulSet's replicas)"
                        .into(),
                )
            })?;
            let expect = count_up_to(&text, MAX_NODES).map_err(|_| {
                invalid(format!(
                    "COUCHDB_EXPECT=`{text}` is not a number of nodes from 1 to {MAX_NODES}"
                ))
            })?;
            Ok(NodeList::Service { service, expect })
        }
    }
}

/// A count (COUCHDB_EXPECT, COUCHDB_MOVE_CONCURRENCY): a whole number from 1 to `max`.
fn count_up_to(text: &str, max: usize) -> std::result::Result<usize, ()> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(()),
    }
}

/// `couchdb-{0..2}.couchdb` → `couchdb-0.couchdb`, `couchdb-1.couchdb`, `couchdb-2.couchdb`.
/// One numeric range per entry, lowest first; `{00..15}` pads to two digits. Anything else
/// with a brace is refused rather than guessed at.
pub fn expand_range(entry: &str) -> std::result::Result<Vec<String>, String> {
    let Some(open) = entry.find('{') else {
        return if entry.contains('}') {
            Err(format!("`{entry}` has a `}}` without a `{{`"))
        } else {
            Ok(vec![entry.to_string()])
        };
    };
    let close = entry[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| {
            format!(
                "`{entry}` has a `{{` without a `}}` (lists like {{a,b}} are not supported: write a range \
                 {{0..2}} or list the nodes)"
            )
        })?;
    let (prefix, inner, suffix) = (&entry[..open], &entry[open + 1..close], &entry[close + 1..]);
    if suffix.contains(['{', '}']) {
        return Err(format!(
            "`{entry}` has more than one {{…}}: one range per entry"
        ));
    }
    let (first, last) = inner
        .split_once("..")
        .filter(|(a, b)| {
            [a, b]
                .iter()
                .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
        })
        .ok_or_else(|| {
            format!("`{entry}`: `{{{inner}}}` is not a range of numbers like {{0..2}}")
        })?;
    let (Ok(from), Ok(to)) = (first.parse::<usize>(), last.parse::<usize>()) else {
        return Err(format!(
            "`{entry}`: `{{{inner}}}` has a number that is far too large"
        ));
    };
    if from > to {
        return Err(format!(
            "`{entry}`: write the range lowest first, {{{last}..{first}}}"
        ));
    }
    let count = to - from + 1;
    if count > MAX_NODES {
        return Err(format!(
            "`{entry}` gives {count} nodes; more than {MAX_NODES} is surely a typo"
        ));
    }
    let padded = |s: &str| s.len() > 1 && s.starts_with('0');
    let width = if padded(first) || padded(last) {
        first.len().max(last.len())
    } else {
        0
    };
    Ok((from..=to)
        .map(|i| format!("{prefix}{i:0width$}{suffix}"))
        .collect())
}

/// `couchdb-1` → `http://couchdb-1:5984`; `couchdb-1:6984`; `http://10.0.0.5:5984/`.
/// `var` is the variable it came from, for the message.
pub fn parse_node(var: &str, entry: &str) -> Result<NodeAddr> {
    let label = entry.trim().to_string();
    let bad = |why: &str| invalid(format!("{var}: node `{label}` {why}"));
    if label.is_empty() {
        return Err(invalid(format!(
            "{var} has an empty entry (two commas in a row?)"
        )));
    }
    refuse_credentials(var, &label)?;
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

/// Checked before anything else looks at an entry: every later message quotes it, and the part
/// before an `@` would be credentials (in a password, `/`, `?` or a brace could come first).
fn refuse_credentials(var: &str, entry: &str) -> Result<()> {
    if entry.contains('@') {
        return Err(invalid(format!(
            "{var}: an entry holds credentials (user:password@host); use COUCHDB_USER and COUCHDB_PASSWORD instead"
        )));
    }
    Ok(())
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
    let mut entries = Vec::new();
    for entry in list.split(',') {
        refuse_credentials("COUCHDB_NODES", entry)?;
        entries.extend(
            expand_range(entry.trim()).map_err(|why| invalid(format!("COUCHDB_NODES: {why}")))?,
        );
    }
    if entries.len() > MAX_NODES {
        return Err(invalid(format!(
            "COUCHDB_NODES lists {} nodes; more than {MAX_NODES} is surely a typo",
            entries.len()
        )));
    }
    let nodes = entries
        .iter()
        .map(|e| parse_node("COUCHDB_NODES", e))
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
    let wanted = parse_node("COUCHDB_COORDINATOR", wanted)?;
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

/// Moves of different databases at once when COUCHDB_MOVE_CONCURRENCY is not set: a few fill at
/// once without crowding a small CouchDB.
pub const DEFAULT_MOVE_CONCURRENCY: usize = 4;
/// More than this at once only queues on the nodes (each move also reads its copies 8 at a time).
pub const MAX_MOVE_CONCURRENCY: usize = 32;

fn move_concurrency(value: Option<String>) -> Result<usize> {
    let Some(v) = value else {
        return Ok(DEFAULT_MOVE_CONCURRENCY);
    };
    count_up_to(&v, MAX_MOVE_CONCURRENCY).map_err(|_| {
        invalid(format!(
            "COUCHDB_MOVE_CONCURRENCY=`{v}`: expected a whole number from 1 to {MAX_MOVE_CONCURRENCY}"
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
        assert!(
            e.chain().any(|c| c.downcast_ref::<ConfigError>().is_some()),
            "not a configuration error: {e:#}"
        );
        format!("{e:#}")
    }

    #[test]
    fn parses_nodes_in_three_forms() {
        let c = with(&[]).unwrap();
        let NodeList::Listed {
            nodes, coordinator, ..
        } = c.nodes
        else {
            panic!("listed")
        };
        let urls: Vec<_> = nodes.iter().map(|n| n.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://couchdb-1:5984",
                "http://couchdb-2:6984",
                "http://10.0.0.3:5984"
            ]
        );
        assert_eq!(coordinator, 0);
        assert_eq!(c.init_timeout, DEFAULT_INIT_TIMEOUT);
        assert_eq!(c.move_concurrency, DEFAULT_MOVE_CONCURRENCY);
    }

    #[test]
    fn move_concurrency_is_a_small_whole_number() {
        let c = with(&[("COUCHDB_MOVE_CONCURRENCY", "8")]).unwrap();
        assert_eq!(c.move_concurrency, 8);
        for bad in ["0", "33", "four", "-1", ""] {
            let e = config_error(with(&[("COUCHDB_MOVE_CONCURRENCY", bad)]));
            assert!(e.contains("COUCHDB_MOVE_CONCURRENCY"), "{e}");
        }
    }

    fn listed(c: Config) -> (Vec<String>, usize) {
        match c.nodes {
            NodeList::Listed {
                nodes, coordinator, ..
            } => (nodes.into_iter().map(|n| n.label).collect(), coordinator),
            other => panic!("not listed: {other:?}"),
        }
    }

    #[test]
    fn zones_name_nodes_by_address_or_erlang_name() {
        let c = with(&[(
            "COUCHDB_ZONES",
            "couchdb-1=a, http://couchdb-2:6984=b,10.0.0.3=eu-west-1c",
        )])
        .unwrap();
        let z = c.zones.unwrap();
        assert_eq!(z.zone_of(Some(1), "x@y.z"), Some("b"));
        assert_eq!(z.zone_of(Some(2), "x@y.z"), Some("eu-west-1c"));
        let by_name = with(&[(
            "COUCHDB_ZONES",
            "couchdb@couchdb-1.cluster=a,couchdb-2:6984=b",
        )])
        .unwrap()
        .zones
        .unwrap();
        assert_eq!(
            by_name.zone_of(None, "couchdb@couchdb-1.cluster"),
            Some("a")
        );
        assert_eq!(by_name.zone_of(Some(0), "couchdb@elsewhere.x"), None);
        assert!(with(&[]).unwrap().zones.is_none());
    }

    #[test]
    fn bad_zones_are_named_at_once() {
        for (value, says) in [
            ("", "set but empty"),
            ("couchdb-1", "entry 1 is not NODE=ZONE"),
            ("couchdb-1=a,couchdb-2=", "entry 2"),
            ("couchdb-1=a:1", "not a zone name"),
            ("couchdb-9=a", "`couchdb-9` is not an Erlang name"),
            (
                "couchdb-1=a,couchdb-1:5984=b",
                "gives node `couchdb-1` twice",
            ),
            // Every node by address: the one left out is named at once.
            ("couchdb-1=a,couchdb-2:6984=b", "gives no zone for 10.0.0.3"),
        ] {
            let e = config_error(with(&[("COUCHDB_ZONES", value)]));
            assert!(
                e.contains("COUCHDB_ZONES") && e.contains(says),
                "{value}: {e}"
            );
        }
        // An `@` with a `:` is credentials, not a name: never echoed.
        let e = config_error(with(&[("COUCHDB_ZONES", "admin:hunter2@couchdb-1=a")]));
        assert!(!e.contains("hunter2"), "{e}");
        // With COUCHDB_SERVICE only Erlang names can name a node.
        let mut v = base();
        v.retain(|(k, _)| *k != "COUCHDB_NODES");
        v.extend([
            ("COUCHDB_SERVICE", "couchdb"),
            ("COUCHDB_EXPECT", "3"),
            ("COUCHDB_ZONES", "couchdb-0=a"),
        ]);
        assert!(config_error(Config::from_vars(vars(&v))).contains("COUCHDB_SERVICE"));
    }

    #[test]
    fn coordinator_must_be_listed() {
        assert_eq!(
            listed(with(&[("COUCHDB_COORDINATOR", "couchdb-2:6984")]).unwrap()).1,
            1
        );
        assert!(config_error(with(&[("COUCHDB_COORDINATOR", "couchdb-9")]))
            .contains("COUCHDB_COORDINATOR"));
    }

    #[test]
    fn missing_and_empty_values_name_the_variable() {
        for name in ["COUCHDB_USER", "COUCHDB_PASSWORD", "COUCHDB_NODES"] {
            let mut v = base();
            v.retain(|(k, _)| *k != name);
            assert!(
                config_error(Config::from_vars(vars(&v))).contains(name),
                "{name}"
            );
        }
        for name in [
            "COUCHDB_USER",
            "COUCHDB_PASSWORD",
            "COUCHDB_COOKIE",
            "COUCHDB_NODES",
        ] {
            assert!(
                config_error(with(&[(name, "")])).contains(name),
                "{name} empty"
            );
        }
    }

    #[test]
    fn the_cookie_is_optional_for_apps_that_only_check() {
        let mut v = base();
        v.retain(|(k, _)| *k != "COUCHDB_COOKIE");
        assert!(Config::from_vars(vars(&v)).unwrap().cookie.is_none());
    }

    #[test]
    fn brace_ranges_expand_in_order() {
        let (labels, _) = listed(
            with(&[(
                "COUCHDB_NODES",
                "couchdb-{0..2}.couchdb, http://db-{8..10}.x:6984,solo",
            )])
            .unwrap(),
        );
        assert_eq!(
            labels,
            [
                "couchdb-0.couchdb",
                "couchdb-1.couchdb",
                "couchdb-2.couchdb",
                "db-8.x:6984",
                "db-9.x:6984",
                "db-10.x:6984",
                "solo"
            ]
        );
        assert_eq!(
            expand_range("n{08..10}").unwrap(),
            ["n08", "n09", "n10"],
            "zero-padded like the shell"
        );
        assert_eq!(expand_range("n{3..3}").unwrap(), ["n3"]);
    }

    #[test]
    fn bad_ranges_are_refused_loudly() {
        for (list, says) in [
            ("couchdb-{2..0}", "lowest first"),
            ("couchdb-{0..99999}", "100000 nodes"),
            ("couchdb-{}", "not a range"),
            ("couchdb-{a..c}", "not a range"),
            ("couchdb-{0..}", "not a range"),
            ("couchdb-{0-2}", "not a range"),
            ("couchdb-{0..2", "without a `}`"),
            ("couchdb-{0,1}", "lists like {a,b}"),
            ("couchdb-0}", "without a `{`"),
            ("c-{0..1}-{0..1}", "one range per entry"),
            ("c-{0..99999999999999999999999}", "far too large"),
            ("a-{0..200},b-{0..200}", "402 nodes"),
            ("couchdb-{0..1},couchdb-{1..2}", "twice"),
        ] {
            let e = config_error(with(&[("COUCHDB_NODES", list)]));
            assert!(
                e.contains("COUCHDB_NODES") && e.contains(says),
                "{list}: {e}"
            );
        }
    }

    #[test]
    fn a_service_needs_an_expected_count_and_excludes_a_node_list() {
        let service = |extra: &[(&'static str, &'static str)]| {
            let mut v: Vec<(&str, &str)> = base()
                .into_iter()
                .filter(|(k, _)| *k != "COUCHDB_NODES")
                .collect();
            v.extend_from_slice(extra);
            Config::from_vars(vars(&v))
        };
        let c = service(&[("COUCHDB_SERVICE", "couchdb:6984"), ("COUCHDB_EXPECT", "3")]).unwrap();
        let NodeList::Service { service: s, expect } = c.nodes else {
            panic!("service")
        };
        assert_eq!((s.host(), s.port(), expect), ("couchdb", 6984, 3));
        for (extra, says) in [
            (
                vec![("COUCHDB_SERVICE", "couchdb")],
                "COUCHDB_EXPECT is not set",
            ),
            (
                vec![("COUCHDB_SERVICE", "couchdb"), ("COUCHDB_EXPECT", "0")],
                "COUCHDB_EXPECT=`0`",
            ),
            (
                vec![("COUCHDB_SERVICE", "couchdb"), ("COUCHDB_EXPECT", "three")],
                "COUCHDB_EXPECT=`three`",
            ),
            (
                vec![
                    ("COUCHDB_SERVICE", "https://couchdb"),
                    ("COUCHDB_EXPECT", "3"),
                ],
                "COUCHDB_SERVICE: node",
            ),
            (
                vec![
                    ("COUCHDB_SERVICE", "couchdb"),
                    ("COUCHDB_EXPECT", "3"),
                    ("COUCHDB_NODES", "a"),
                ],
                "keep only one",
            ),
            (
                vec![
                    ("COUCHDB_SERVICE", "couchdb"),
                    ("COUCHDB_EXPECT", "3"),
                    ("COUCHDB_COORDINATOR", "a"),
                ],
                "lowest Erlang name",
            ),
            (vec![("COUCHDB_EXPECT", "3")], "COUCHDB_SERVICE"),
        ] {
            let e = config_error(service(&extra));
            assert!(e.contains(says), "{extra:?}: {e}");
        }
        // With COUCHDB_NODES, at most the nodes it lists; all of them unless set.
        let expect = |c: Config| match c.nodes {
            NodeList::Listed { expect, .. } => expect,
            other => panic!("{other:?}"),
        };
        assert_eq!(expect(with(&[]).unwrap()), 3);
        assert_eq!(expect(with(&[("COUCHDB_EXPECT", "2")]).unwrap()), 2);
        for bad in ["4", "0", "two"] {
            let m = config_error(with(&[("COUCHDB_EXPECT", bad)]));
            assert!(
                m.contains(&format!("COUCHDB_EXPECT=`{bad}`")) && m.contains("from 1 to 3"),
                "{m}"
            );
        }
    }

    #[test]
    fn refuses_unusable_cookies() {
        assert!(config_error(with(&[("COUCHDB_COOKIE", "monster")])).contains("monster"));
        assert!(config_error(with(&[("COUCHDB_COOKIE", "a b")])).contains("COUCHDB_COOKIE"));
    }

    #[test]
    fn watch_settings_have_defaults_and_bad_ones_are_named() {
        let c = with(&[]).unwrap();
        assert_eq!(c.watch_interval, DEFAULT_WATCH_INTERVAL);
        assert_eq!(c.metrics_addr.port(), 9985);
        let c = with(&[
            ("COUCHDB_WATCH_INTERVAL", "2s"),
            ("COUCHDB_METRICS_ADDR", "127.0.0.1:9100"),
        ])
        .unwrap();
        assert_eq!(c.watch_interval, Duration::from_secs(2));
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9100");
        for (var, bad) in [
            ("COUCHDB_WATCH_INTERVAL", "15"),
            ("COUCHDB_WATCH_INTERVAL", "10ms"),
            ("COUCHDB_METRICS_ADDR", "9985"),
            ("COUCHDB_METRICS_ADDR", "localhost:x"),
        ] {
            let m = config_error(with(&[(var, bad)]));
            assert!(m.contains(var), "{m}");
        }
    }

    #[test]
    fn the_distribution_settings_are_a_boolean_and_a_port() {
        let c = with(&[]).unwrap();
        assert_eq!((c.dist_tls, c.epmd_port), (None, 4369));
        let c = with(&[("COUCHDB_DIST_TLS", "true"), ("COUCHDB_EPMD_PORT", "14369")]).unwrap();
        assert_eq!((c.dist_tls, c.epmd_port), (Some(true), 14369));
        assert_eq!(
            with(&[("COUCHDB_DIST_TLS", "false")]).unwrap().dist_tls,
            Some(false)
        );
        for (var, bad) in [
            ("COUCHDB_DIST_TLS", "yes"),
            ("COUCHDB_DIST_TLS", "1"),
            ("COUCHDB_EPMD_PORT", "0"),
            ("COUCHDB_EPMD_PORT", "epmd"),
        ] {
            let m = config_error(with(&[(var, bad)]));
            assert!(m.contains(var), "{m}");
        }
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
    fn credentials_in_any_node_entry_are_never_echoed() {
        // Refused for the scheme, a path or a brace before the `@` was seen: still no echo.
        for (var, entry) in [
            ("COUCHDB_NODES", "https://admin:hunter2@a:6984"),
            ("COUCHDB_NODES", "ftp://admin:hunter2@a"),
            ("COUCHDB_NODES", "http://admin:hun/ter2@a:5984"),
            ("COUCHDB_NODES", "http://admin:hun?ter2@a"),
            ("COUCHDB_NODES", "http://admin:hun{ter2@a"),
            ("COUCHDB_NODES", "b,http://admin:hunter2}@a"),
            ("COUCHDB_COORDINATOR", "https://admin:hunter2@couchdb-1"),
        ] {
            let e = config_error(with(&[(var, entry)]));
            assert!(
                !e.contains("hunter2") && !e.contains("hun"),
                "{entry}: credentials echoed: {e}"
            );
            assert!(e.contains(var), "{entry}: {e}");
        }
        let e = config_error(Config::from_vars(vars(&[
            ("COUCHDB_USER", "admin"),
            ("COUCHDB_PASSWORD", "pw"),
            ("COUCHDB_SERVICE", "https://admin:hunter2@couchdb"),
            ("COUCHDB_EXPECT", "3"),
        ])));
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
