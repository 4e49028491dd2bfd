//! How exposed the cluster is: the findings `status` lists in its security section and `watch`
//! counts, each naming what to change. Only the distribution's are problems (exit 15, counted
//! in `check`'s verdict): a node that does not run the distribution COUCHDB_DIST_TLS says, or
//! nodes whose distributions differ, cannot all connect — and the odd one out would be the one
//! exposed. Everything else is a setting the operator may have chosen; it is reported, never
//! changed, and does not take a serving cluster out of rotation.
//!
//! What the tool can tell, and how (it has no TLS library and, usually, no cookie):
//! - each listed node's distribution: epmd (COUCHDB_EPMD_PORT) says its port, a padded
//!   ClientHello says TLS or plain (`client::dist`), and TLS 1.2 shows the certificate's issuer
//!   and whether peers are asked for one;
//! - from each node's `_config` (read anyway): CORS, `users_db_public`, `require_valid_user`,
//!   `bind_address`;
//! - `_security` of `_users`, `_replicator` and (`status`, every 20th `watch` tick) every
//!   database;
//! - COUCHDB_COOKIE (only when given) and COUCHDB_PASSWORD: their strength, never their values.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::client::dist::{self, Transport};
use crate::client::{Access, NodeError};
use crate::cluster::session::{each_bounded, Session};
use crate::cluster::survey::{Survey, PARALLEL};
use crate::util::config::Config;
use crate::util::exit::Status;
use crate::util::text::list_some;

/// A probe of one port waits at most this long: a plain node closes at once, a TLS one answers
/// within a round trip; only a silent firewall takes it all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Public databases named before "and N more".
const SHOWN: usize = 5;

/// One listed node's distribution, as probed.
#[derive(Debug, Clone)]
pub struct DistView {
    /// `couchdb-2 (couchdb@couchdb-2.cluster)`.
    pub label: String,
    pub port: Option<u16>,
    pub transport: Transport,
}

impl DistView {
    pub fn word(&self) -> &'static str {
        match self.transport {
            Transport::Tls(_) => "TLS",
            Transport::Plain => "plain TCP",
            Transport::Unknown(_) => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A short stable name: the metric's `kind` label.
    pub kind: &'static str,
    /// Counted in the verdict (exit 15).
    pub problem: bool,
    /// What is exposed and what to change.
    pub text: String,
}

/// What the security section reads besides the survey.
#[derive(Debug, Clone, Default)]
pub struct Exposure {
    pub dist: Vec<DistView>,
    /// `_users` and `_replicator`: who gets in (`None`: no such database, or not read).
    pub users: Option<Access>,
    pub replicator: Option<Access>,
    /// Databases whose `_security` names no members (`None`: not read).
    pub public_dbs: Option<Vec<String>>,
}

/// Probes the distribution of every listed node that answered (in parallel).
pub fn probe(session: &Session, survey: &Survey) -> Vec<DistView> {
    let nodes: Vec<(String, String, String)> = survey
        .nodes
        .iter()
        .filter_map(|n| {
            let addr = n.addr.as_ref()?;
            Some((n.label(), addr.host().to_string(), n.name.clone()?))
        })
        .collect();
    probe_nodes(session, &nodes)
}

/// "all 3 listed nodes", or "all 3 listed nodes that answer" when others do not (only nodes
/// that answer are probed).
pub fn all_probed(survey: &Survey, probed: usize) -> String {
    let listed = survey.nodes.iter().filter(|n| n.addr.is_some()).count();
    match probed == listed {
        true => format!("all {probed} listed nodes"),
        false => format!("all {probed} listed nodes that answer"),
    }
}

/// Probes each (label, host, Erlang name): epmd at the host, then its distribution port.
pub fn probe_nodes(session: &Session, nodes: &[(String, String, String)]) -> Vec<DistView> {
    let port = session.cfg.epmd_port;
    each_bounded(nodes, PARALLEL, |(label, host, name)| {
        let (port, transport) = match dist::probe_node(host, port, name, PROBE_TIMEOUT) {
            Ok((p, t)) => (Some(p), t),
            Err(why) => (None, Transport::Unknown(why)),
        };
        DistView {
            label: label.clone(),
            port,
            transport,
        }
    })
}

/// Reads what the findings need beyond the survey; `all_dbs`: every database's `_security`
/// too (one GET each).
pub fn read(session: &Session, survey: &Survey, all_dbs: bool) -> Result<Exposure, NodeError> {
    let via = &survey.via;
    let access = |db: &str| session.client.access(via, db);
    let users = access("_users")?;
    let replicator = access("_replicator")?;
    let public_dbs = match all_dbs {
        false => None,
        true => {
            let dbs: Vec<&str> = survey
                .docs
                .iter()
                .map(|d| d.db.as_str())
                .filter(|db| !db.starts_with('_'))
                .collect();
            let read = each_bounded(&dbs, PARALLEL, |db| access(db));
            let mut public = Vec::new();
            for (db, a) in dbs.iter().zip(read) {
                if a?.is_some_and(|a| a.public) {
                    public.push(db.to_string());
                }
            }
            Some(public)
        }
    };
    Ok(Exposure {
        dist: probe(session, survey),
        users,
        replicator,
        public_dbs,
    })
}

/// The distribution problems: nodes that are not on the configured transport, nodes on
/// different ones, TLS certificates of different CAs.
pub fn dist_problems(expect: Option<bool>, seen: &[DistView]) -> Vec<String> {
    let mut out = Vec::new();
    let on = |f: fn(&Transport) -> bool| -> Vec<String> {
        seen.iter()
            .filter(|d| f(&d.transport))
            .map(|d| format!("{} (port {})", d.label, d.port.unwrap_or(0)))
            .collect()
    };
    let tls = on(|t| matches!(t, Transport::Tls(_)));
    let plain = on(|t| *t == Transport::Plain);
    match expect {
        Some(true) if !plain.is_empty() => out.push(format!(
            "{} run(s) the Erlang distribution on plain TCP while COUCHDB_DIST_TLS=true: it cannot connect to \
             the TLS nodes, and its traffic would cross in clear — start it with the TLS distribution's \
             ERL_FLAGS and its certificate (compose/dist-tls.yaml, k8s/dist-tls)",
            list_some(&plain)
        )),
        Some(false) if !tls.is_empty() => out.push(format!(
            "{} run(s) the Erlang distribution on TLS while COUCHDB_DIST_TLS=false: it cannot connect to the \
             plain nodes — set COUCHDB_DIST_TLS=true and start every node with TLS, or none",
            list_some(&tls)
        )),
        None if !tls.is_empty() && !plain.is_empty() => out.push(format!(
            "the nodes run different Erlang distributions, which never connect to each other: plain TCP on {}, \
             TLS on {} — give every node the same ERL_FLAGS (and set COUCHDB_DIST_TLS to the one you mean)",
            list_some(&plain),
            list_some(&tls)
        )),
        _ => {}
    }
    // Certificates by issuer: a node whose CA the others do not share is refused by them.
    let mut by_issuer: BTreeMap<&[u8], (String, Vec<String>)> = BTreeMap::new();
    for d in seen {
        if let Transport::Tls(t) = &d.transport {
            if let Some((der, cn)) = &t.issuer {
                let e = by_issuer
                    .entry(der)
                    .or_insert_with(|| (cn.clone(), Vec::new()));
                e.1.push(d.label.clone());
            }
        }
    }
    if by_issuer.len() > 1 {
        let mut groups: Vec<(String, Vec<String>)> = by_issuer.into_values().collect();
        groups.sort_by_key(|(_, nodes)| std::cmp::Reverse(nodes.len()));
        let (ca, most) = &groups[0];
        for (other, nodes) in &groups[1..] {
            out.push(format!(
                "{}'s distribution certificate is issued by `{other}`, the certificates of {} by `{ca}`: nodes \
                 that verify their peers against one CA refuse the other, so it never connects — give it a \
                 certificate from the cluster's CA (scripts/gen-env --dist-tls makes them)",
                list_some(nodes),
                list_some(most)
            ));
        }
    }
    out
}

/// Every finding, the distribution's problems first.
pub fn findings(cfg: &Config, survey: &Survey, e: &Exposure) -> Vec<Finding> {
    let mut out: Vec<Finding> = dist_problems(cfg.dist_tls, &e.dist)
        .into_iter()
        .map(|text| Finding {
            kind: "dist_mismatch",
            problem: true,
            text,
        })
        .collect();
    out.extend(credentials(cfg));
    let mut note = |kind: &'static str, text: String| {
        out.push(Finding {
            kind,
            problem: false,
            text,
        })
    };
    let unknown: Vec<String> = e
        .dist
        .iter()
        .filter_map(|d| match &d.transport {
            Transport::Unknown(why) => Some(format!("{} ({why})", d.label)),
            _ => None,
        })
        .collect();
    if cfg.dist_tls.is_some() && !unknown.is_empty() {
        note(
            "dist_unchecked",
            format!(
                "could not tell which distribution {} run(s), so COUCHDB_DIST_TLS cannot be checked there: let \
                 this tool reach epmd (COUCHDB_EPMD_PORT) and the distribution port",
                list_some(&unknown)
            ),
        );
    }
    let plain: Vec<String> = e
        .dist
        .iter()
        .filter(|d| d.transport == Transport::Plain)
        .map(|d| d.label.clone())
        .collect();
    if !plain.is_empty() && cfg.dist_tls.is_none() {
        let which = match plain.len() == e.dist.len() {
            true => all_probed(survey, e.dist.len()),
            false => list_some(&plain),
        };
        note(
            "dist_cleartext",
            format!(
                "the Erlang distribution of {which} is plain TCP, guarded by the cookie alone, and reachable from where \
                 this tool runs: every document and replicated password hash crosses the network in clear — turn \
                 on TLS (compose/dist-tls.yaml, k8s/dist-tls) and set COUCHDB_DIST_TLS=true (or \
                 COUCHDB_DIST_TLS=false to say plain is meant)"
            ),
        );
    }
    let open: Vec<String> = e
        .dist
        .iter()
        .filter(
            |d| matches!(&d.transport, Transport::Tls(t) if t.asks_for_certificate == Some(false)),
        )
        .map(|d| d.label.clone())
        .collect();
    if !open.is_empty() {
        note(
            "dist_peers_unverified",
            format!(
                "the TLS distribution of {} asks the nodes that call it for no certificate: anyone who reaches its \
                 port with the cookie gets in — put {{verify, verify_peer}} and {{fail_if_no_peer_cert, true}} in \
                 the server section of its ssl_dist_optfile",
                list_some(&open)
            ),
        );
    }
    let public_users: Vec<String> = nodes_where(survey, |s| s.users_db_public);
    if !public_users.is_empty() {
        note(
            "users_db_public",
            format!(
                "[chttpd_auth] users_db_public = true on {}: every user can read every user's document in _users \
                 (names, roles, password hashes and salts) — set it to false",
                list_some(&public_users)
            ),
        );
    }
    for (db, kind, why) in [
        (
            "_users",
            "users_readable",
            "its documents are the application's users with their password hashes",
        ),
        (
            "_replicator",
            "replicator_readable",
            "its documents hold the credentials of every replication",
        ),
    ] {
        let access = if db == "_users" {
            &e.users
        } else {
            &e.replicator
        };
        if let Some(a) = access
            .as_ref()
            .filter(|a| a.public || !a.members.is_empty())
        {
            note(
                kind,
                format!(
                    "{db} lets in {} besides the admins, and {why} — make its members admins only: PUT \
                     /{db}/_security {{\"members\":{{\"roles\":[\"_admin\"]}},\"admins\":{{\"roles\":[\"_admin\"]}}}}",
                    who(a)
                ),
            );
        }
    }
    if let Some(public) = e.public_dbs.as_ref().filter(|p| !p.is_empty()) {
        let anyone = if nodes_where(survey, |s| !s.require_valid_user).is_empty() {
            "any authenticated user"
        } else {
            "anyone, even without a password,"
        };
        let mut shown: Vec<String> = public.iter().take(SHOWN).cloned().collect();
        if public.len() > SHOWN {
            shown.push(format!("and {} more", public.len() - SHOWN));
        }
        note(
            "db_public",
            format!(
                "{} database(s) name no members in their _security, so {anyone} can read and write them: {} — \
                 name who may (PUT /<db>/_security with members)",
                public.len(),
                shown.join(", ")
            ),
        );
    }
    let cors = nodes_where(survey, |s| {
        s.enable_cors && s.cors_credentials && s.cors_origins.iter().any(|o| o == "*")
    });
    if !cors.is_empty() {
        note(
            "cors_open",
            format!(
                "CORS on {} allows every origin with credentials ([cors] origins = *, credentials = true): CouchDB \
                 then echoes any page's origin, so any web page a logged-in user opens can act as that user — \
                 list your origins in [cors] origins, or set [cors] credentials = false",
                list_some(&cors)
            ),
        );
    }
    out
}

/// What the configuration alone says: the cookie's strength (when COUCHDB_COOKIE is given) and
/// a well-known admin password. `init` warns of these at every run.
pub fn credentials(cfg: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut say = |kind: &'static str, text: String| {
        out.push(Finding {
            kind,
            problem: false,
            text,
        })
    };
    if let Some(cookie) = &cfg.cookie {
        let (len, classes) = strength(cookie.expose());
        if len < 20 || classes < 2 {
            say(
                "cookie_weak",
                format!(
                    "COUCHDB_COOKIE is {len} characters from {classes} character class(es): anyone who guesses it \
                     and reaches the distribution port runs code on every node — make it at least 20 random \
                     characters from two classes or more (scripts/gen-env makes 32 from [A-Za-z0-9]), on every \
                     node and here"
                ),
            );
        }
    }
    if well_known(&cfg.user, cfg.password.expose()) {
        say(
            "admin_password_default",
            "COUCHDB_PASSWORD is a well-known default (the examples' admin/password and the like) or the user name \
             itself: change the admin's password on every node (PUT /_node/_local/_config/admins/<user>), then in \
             COUCHDB_PASSWORD (scripts/gen-env makes a random one)"
                .into(),
        );
    }
    out
}

/// The exit status the findings call for, if any.
pub fn status_of(found: &[Finding]) -> Option<Status> {
    found.iter().any(|f| f.problem).then_some(Status::Security)
}

fn nodes_where(s: &Survey, f: impl Fn(&crate::client::Settings) -> bool) -> Vec<String> {
    s.nodes
        .iter()
        .filter(|n| n.config.as_ref().is_some_and(|c| f(&c.settings)))
        .map(|n| n.label())
        .collect()
}

fn who(a: &Access) -> String {
    if a.public {
        "anyone (no members: public)".into()
    } else {
        list_some(&a.members)
    }
}

/// (length, character classes among lower, upper, digit, other).
fn strength(s: &str) -> (usize, usize) {
    let classes = [
        s.chars().any(|c| c.is_ascii_lowercase()),
        s.chars().any(|c| c.is_ascii_uppercase()),
        s.chars().any(|c| c.is_ascii_digit()),
        s.chars().any(|c| !c.is_ascii_alphanumeric()),
    ];
    (s.chars().count(), classes.iter().filter(|c| **c).count())
}

/// The passwords every scanner tries first.
const WELL_KNOWN: &[&str] = &[
    "admin",
    "password",
    "couchdb",
    "relax",
    "changeme",
    "secret",
    "123456",
    "12345678",
    "pass",
    "letmein",
    "root",
    "test",
    "admin123",
    "password1",
    "qwerty",
];

fn well_known(user: &str, password: &str) -> bool {
    let p = password.to_ascii_lowercase();
    WELL_KNOWN.contains(&p.as_str()) || p == user.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::dist::TlsSeen;

    fn view(label: &str, t: Transport) -> DistView {
        DistView {
            label: label.into(),
            port: Some(9100),
            transport: t,
        }
    }

    fn tls(ca: &str) -> Transport {
        Transport::Tls(TlsSeen {
            issuer: Some((ca.as_bytes().to_vec(), ca.into())),
            asks_for_certificate: Some(true),
        })
    }

    #[test]
    fn a_plain_node_among_tls_ones_is_named_whatever_is_configured() {
        let seen = [
            view("a", tls("ca")),
            view("b", tls("ca")),
            view("c", Transport::Plain),
        ];
        for expect in [None, Some(true)] {
            let p = dist_problems(expect, &seen);
            assert_eq!(p.len(), 1, "{expect:?}: {p:?}");
            assert!(
                p[0].contains("c (port 9100)") && p[0].contains("plain TCP"),
                "{p:?}"
            );
        }
        let p = dist_problems(Some(false), &seen);
        assert!(p[0].contains("a (port 9100), b (port 9100)"), "{p:?}");
        let all_plain = [view("a", Transport::Plain), view("b", Transport::Plain)];
        assert!(dist_problems(None, &all_plain).is_empty());
        assert!(dist_problems(Some(false), &all_plain).is_empty());
        assert_eq!(dist_problems(Some(true), &all_plain).len(), 1);
    }

    #[test]
    fn a_certificate_of_another_ca_is_named() {
        let seen = [
            view("a", tls("ours")),
            view("b", tls("ours")),
            view("c", tls("theirs")),
        ];
        let p = dist_problems(Some(true), &seen);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("c's distribution certificate is issued by `theirs`"),
            "{p:?}"
        );
    }

    #[test]
    fn strength_and_defaults() {
        assert_eq!(strength("abcdefgh"), (8, 1));
        assert_eq!(strength("aB3-"), (4, 4));
        assert!(well_known("admin", "Password"));
        assert!(well_known("ops", "OPS"));
        assert!(!well_known("admin", "Xq7rT0mZ2pLw9vBn"));
    }
}
