//! The backup's part of the configuration: the `COUCHDB_BACKUP_*` variables, read by their own
//! function into their own struct. Backup is on when `COUCHDB_BACKUP_URL` is set; every other
//! backup variable without it is an error, not something silently ignored.

use anyhow::Result;
use serde::Deserialize;

use super::{invalid, parse_node, required, secret_from, NodeAddr, NodeList, Secret};

/// The backup variables, for `--help` and docs/configuration.md's backup table: (name, meaning).
pub const BACKUP_VARIABLES: &[(&str, &str)] = &[
    (
        "COUCHDB_BACKUP_URL",
        "turns backup on: the separate CouchDB to replicate to, host[:port] or http://host:port, reachable from here and from every node",
    ),
    (
        "COUCHDB_BACKUP_USER",
        "an admin of the backup CouchDB (default: COUCHDB_USER, with COUCHDB_PASSWORD)",
    ),
    (
        "COUCHDB_BACKUP_PASSWORD",
        "its password (or COUCHDB_BACKUP_PASSWORD_FILE); set together with COUCHDB_BACKUP_USER",
    ),
    (
        "COUCHDB_BACKUP_DBS",
        "which databases: * (default) = every user database, now and later, and _users; or a comma-separated list of names; -NAME leaves one out of * (e.g. *,-_users: not the users)",
    ),
    (
        "COUCHDB_BACKUP_CREATE_DBS",
        "true (default): create missing databases on the backup CouchDB; false: a missing one is an error",
    ),
    (
        "COUCHDB_BACKUP_SOURCE_URL",
        "the cluster as the nodes reach it, the replications' source (default: the coordinator, or COUCHDB_SERVICE)",
    ),
];

/// The only system database that may be backed up, and is by default: without it an
/// application's users cannot log in to a restored cluster. `_replicator` may not: its docs
/// hold passwords in clear (trap 21), and copying them would start replications on the backup.
pub const USERS_DB: &str = "_users";

/// Longest database name CouchDB accepts.
const MAX_DB_NAME: usize = 238;

#[derive(Debug, Clone)]
pub struct Backup {
    /// The standalone CouchDB that receives the copies.
    pub target: NodeAddr,
    pub user: String,
    pub password: Secret,
    /// The variables the target's credentials came from, for messages.
    pub credentials: &'static str,
    pub dbs: Databases,
    pub create_dbs: bool,
    /// COUCHDB_BACKUP_SOURCE_URL; `None`: the coordinator (or COUCHDB_SERVICE), found at run time.
    pub source: Option<NodeAddr>,
}

/// COUCHDB_BACKUP_DBS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Databases {
    /// `*`: every database whose name does not start with `_`, those created later included,
    /// and `_users`.
    pub every_user_db: bool,
    /// Named ones, `_users` among them if wanted.
    pub listed: Vec<String>,
    /// `-NAME`: left out of `*`.
    pub excluded: Vec<String>,
}

/// What the selection makes of the cluster's databases.
#[derive(Debug, PartialEq, Eq)]
pub struct Selected {
    /// To back up, sorted.
    pub dbs: Vec<String>,
    /// Listed in COUCHDB_BACKUP_DBS but not on the cluster (yet).
    pub absent: Vec<String>,
}

impl Databases {
    pub fn select(&self, on_cluster: &[String]) -> Selected {
        let mut dbs: Vec<String> = on_cluster
            .iter()
            .filter(|db| {
                let by_star = self.every_user_db && (!db.starts_with('_') || *db == USERS_DB);
                (by_star || self.listed.contains(db)) && !self.excluded.contains(db)
            })
            .cloned()
            .collect();
        dbs.sort();
        dbs.dedup();
        let absent = self
            .listed
            .iter()
            .filter(|db| !on_cluster.contains(db))
            .cloned()
            .collect();
        Selected { dbs, absent }
    }
}

#[derive(Deserialize, Default)]
struct Raw {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    dbs: Option<String>,
    create_dbs: Option<String>,
    source_url: Option<String>,
}

/// Reads the `COUCHDB_BACKUP_*` variables; `None` when backup is off. `nodes` and the cluster
/// admin are what the target must not be, and what the credentials default to.
pub fn read(
    vars: &[(String, String)],
    nodes: &NodeList,
    cluster_user: &str,
    cluster_password: &Secret,
) -> Result<Option<Backup>> {
    let raw: Raw = envy::prefixed("COUCHDB_BACKUP_")
        .from_iter(vars.iter().cloned())
        .map_err(|e| invalid(format!("cannot read the COUCHDB_BACKUP_* variables: {e}")))?;
    let Some(url) = raw.url else {
        if let Some(name) = stray(vars) {
            return Err(invalid(format!(
                "{name} is set but COUCHDB_BACKUP_URL is not: set COUCHDB_BACKUP_URL to turn backup on, \
                 or remove {name}"
            )));
        }
        return Ok(None);
    };
    let target = address(
        "COUCHDB_BACKUP_URL",
        &required("COUCHDB_BACKUP_URL", Some(url))?,
    )?;
    refuse_cluster_address(&target, nodes)?;
    let (user, password, credentials) =
        match (raw.user, raw.password.is_some() || raw.password_file.is_some()) {
            (None, false) => (
                cluster_user.to_string(),
                cluster_password.clone(),
                "COUCHDB_USER/COUCHDB_PASSWORD (COUCHDB_BACKUP_USER is not set)",
            ),
            (Some(user), true) => (
                required("COUCHDB_BACKUP_USER", Some(user))?,
                Secret::new(secret_from(
                    "COUCHDB_BACKUP_PASSWORD",
                    raw.password,
                    raw.password_file,
                )?),
                "COUCHDB_BACKUP_USER/COUCHDB_BACKUP_PASSWORD",
            ),
            (Some(_), false) => {
                return Err(invalid(
                    "COUCHDB_BACKUP_USER is set but COUCHDB_BACKUP_PASSWORD is not (nor COUCHDB_BACKUP_PASSWORD_FILE)"
                        .into(),
                ))
            }
            (None, true) => {
                return Err(invalid(
                    "COUCHDB_BACKUP_PASSWORD is set but COUCHDB_BACKUP_USER is not: set both, or neither to use \
                     the cluster admin's"
                        .into(),
                ))
            }
        };
    let dbs = match raw.dbs {
        None => Databases {
            every_user_db: true,
            listed: Vec::new(),
            excluded: Vec::new(),
        },
        Some(list) => parse_dbs(&list)?,
    };
    let create_dbs = match raw.create_dbs.as_deref().map(str::trim) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(invalid(format!(
                "COUCHDB_BACKUP_CREATE_DBS=`{other}`: write true or false"
            )))
        }
    };
    let source = match raw.source_url {
        None => None,
        Some(s) => Some(address(
            "COUCHDB_BACKUP_SOURCE_URL",
            &required("COUCHDB_BACKUP_SOURCE_URL", Some(s))?,
        )?),
    };
    Ok(Some(Backup {
        target,
        user,
        password,
        credentials,
        dbs,
        create_dbs,
        source,
    }))
}

/// The first backup variable that is set, other than the URL.
fn stray(vars: &[(String, String)]) -> Option<String> {
    vars.iter()
        .map(|(k, _)| k)
        .find(|k| k.starts_with("COUCHDB_BACKUP_") && k.as_str() != "COUCHDB_BACKUP_URL")
        .cloned()
}

/// A URL like the nodes': http only, host and port, no path. Credentials in it are refused
/// without echoing them: they belong in the `*_USER`/`*_PASSWORD` variables.
fn address(var: &str, text: &str) -> Result<NodeAddr> {
    if text.contains('@') {
        return Err(invalid(format!(
            "{var} holds credentials (user:password@host); give them in COUCHDB_BACKUP_USER and \
             COUCHDB_BACKUP_PASSWORD instead"
        )));
    }
    parse_node(var, text)
}

/// Replicating a cluster into one of its own nodes would back up nothing.
fn refuse_cluster_address(target: &NodeAddr, nodes: &NodeList) -> Result<()> {
    let cluster: Vec<&NodeAddr> = match nodes {
        NodeList::Listed { nodes, .. } => nodes.iter().collect(),
        NodeList::Service { service, .. } => vec![service],
    };
    match cluster.iter().find(|n| n.url == target.url) {
        Some(node) => Err(invalid(format!(
            "COUCHDB_BACKUP_URL is {}, one of the cluster's own nodes: the backup must be a separate CouchDB",
            node.label
        ))),
        None => Ok(()),
    }
}

/// `*`, `_users`, database names and `-NAME` exclusions, comma-separated.
fn parse_dbs(list: &str) -> Result<Databases> {
    let mut dbs = Databases {
        every_user_db: false,
        listed: Vec::new(),
        excluded: Vec::new(),
    };
    for entry in list.split(',').map(str::trim) {
        let bad = |why: &str| {
            invalid(format!(
                "COUCHDB_BACKUP_DBS: `{entry}` {why}; write * (every user database and _users), names, \
                 _users, or -NAME to leave one out of *"
            ))
        };
        let (excluding, entry) = match entry.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, entry),
        };
        if excluding && (entry.is_empty() || entry == "*") {
            return Err(bad(
                "is not a CouchDB database name (a lowercase letter, then a-z, 0-9, _ $ ( ) + - /)",
            ));
        }
        if entry == "*" {
            if dbs.every_user_db {
                return Err(bad("is listed twice"));
            }
            dbs.every_user_db = true;
            continue;
        }
        if entry.is_empty() {
            return Err(invalid(
                "COUCHDB_BACKUP_DBS has an empty entry (two commas in a row?)".into(),
            ));
        }
        if entry == "_replicator" {
            return Err(bad(
                "cannot be backed up: its documents hold passwords in clear, and on the backup they \
                 would start replications",
            ));
        }
        if entry.starts_with('_') && entry != USERS_DB {
            return Err(bad(
                "is a system database; of those only _users can be backed up",
            ));
        }
        if entry != USERS_DB && !is_db_name(entry) {
            return Err(bad(
                "is not a CouchDB database name (a lowercase letter, then a-z, 0-9, _ $ ( ) + - /)",
            ));
        }
        if dbs.listed.iter().chain(&dbs.excluded).any(|d| d == entry) {
            return Err(bad("is listed twice"));
        }
        if excluding {
            dbs.excluded.push(entry.to_string());
        } else {
            dbs.listed.push(entry.to_string());
        }
    }
    if !dbs.every_user_db && !dbs.excluded.is_empty() {
        return Err(invalid(format!(
            "COUCHDB_BACKUP_DBS: -{} leaves a database out of *, but * is not listed; list the \
             databases to back up, or add *",
            dbs.excluded[0]
        )));
    }
    Ok(dbs)
}

/// CouchDB's rule: `^[a-z][a-z0-9_$()+/-]*$`, at most 238 characters.
fn is_db_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_DB_NAME
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_$()+-/".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::exit::{status_of, Status};

    fn nodes() -> NodeList {
        NodeList::Listed {
            nodes: vec![
                parse_node("COUCHDB_NODES", "couchdb-1").unwrap(),
                parse_node("COUCHDB_NODES", "couchdb-2").unwrap(),
            ],
            coordinator: 0,
            expect: 2,
        }
    }

    fn with(pairs: &[(&str, &str)]) -> Result<Option<Backup>> {
        let vars: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read(&vars, &nodes(), "admin", &Secret::new("cluster-pw"))
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        let e = with(pairs).expect_err("expected a configuration error");
        assert_eq!(status_of(&e), Status::Config, "{e:#}");
        format!("{e:#}")
    }

    #[test]
    fn off_unless_the_url_is_set_and_strays_are_named() {
        assert!(with(&[("COUCHDB_USER", "x")]).unwrap().is_none());
        let e = error(&[("COUCHDB_BACKUP_DBS", "app")]);
        assert!(
            e.contains("COUCHDB_BACKUP_DBS") && e.contains("COUCHDB_BACKUP_URL"),
            "{e}"
        );
        assert!(error(&[("COUCHDB_BACKUP_URL", " ")]).contains("empty"));
    }

    #[test]
    fn defaults_every_user_db_created_with_the_cluster_admin() {
        let b = with(&[("COUCHDB_BACKUP_URL", "couchdb-backup")])
            .unwrap()
            .unwrap();
        assert_eq!(b.target.url, "http://couchdb-backup:5984");
        assert_eq!(
            (b.user.as_str(), b.password.expose()),
            ("admin", "cluster-pw")
        );
        assert!(b.credentials.contains("COUCHDB_BACKUP_USER is not set"));
        assert!(b.create_dbs && b.dbs.every_user_db && b.dbs.listed.is_empty());
        assert_eq!(b.source, None);
    }

    #[test]
    fn own_credentials_come_in_pairs() {
        let b = with(&[
            ("COUCHDB_BACKUP_URL", "http://10.0.0.9:5984"),
            ("COUCHDB_BACKUP_USER", "backup"),
            ("COUCHDB_BACKUP_PASSWORD", "backup-pw"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (b.user.as_str(), b.password.expose()),
            ("backup", "backup-pw")
        );
        let url = ("COUCHDB_BACKUP_URL", "b");
        assert!(
            error(&[url, ("COUCHDB_BACKUP_USER", "backup")]).contains("COUCHDB_BACKUP_PASSWORD")
        );
        assert!(error(&[url, ("COUCHDB_BACKUP_PASSWORD", "p")]).contains("COUCHDB_BACKUP_USER"));
    }

    #[test]
    fn the_url_is_http_without_credentials_and_not_a_cluster_node() {
        let e = error(&[("COUCHDB_BACKUP_URL", "http://admin:hunter2@backup:5984")]);
        assert!(
            e.contains("COUCHDB_BACKUP_URL") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(error(&[("COUCHDB_BACKUP_URL", "https://backup")]).contains("https"));
        assert!(error(&[("COUCHDB_BACKUP_URL", "backup/db")]).contains("path"));
        let e = error(&[("COUCHDB_BACKUP_URL", "http://couchdb-2:5984")]);
        assert!(e.contains("couchdb-2") && e.contains("separate"), "{e}");
        let e = error(&[
            ("COUCHDB_BACKUP_URL", "b"),
            ("COUCHDB_BACKUP_SOURCE_URL", "x:0"),
        ]);
        assert!(e.contains("COUCHDB_BACKUP_SOURCE_URL"), "{e}");
    }

    #[test]
    fn databases_are_star_names_or_users() {
        let url = ("COUCHDB_BACKUP_URL", "b");
        let dbs = |list: &str| {
            with(&[url, ("COUCHDB_BACKUP_DBS", list)])
                .unwrap()
                .unwrap()
                .dbs
        };
        assert_eq!(
            dbs("*, _users"),
            Databases {
                every_user_db: true,
                listed: vec!["_users".into()],
                excluded: vec![],
            }
        );
        assert_eq!(
            dbs("*,-_users,-old"),
            Databases {
                every_user_db: true,
                listed: vec![],
                excluded: vec!["_users".into(), "old".into()],
            }
        );
        assert_eq!(dbs("app,a/b$(x)+-_1").listed, ["app", "a/b$(x)+-_1"]);
        for (bad, says) in [
            ("_replicator", "passwords"),
            ("_global_changes", "system database"),
            ("App", "not a CouchDB database name"),
            ("1db", "not a CouchDB database name"),
            ("app,,b", "empty entry"),
            ("app,app", "twice"),
            ("*,*", "twice"),
            ("*,-app,app", "twice"),
            ("app,-_users", "* is not listed"),
            ("*,-_replicator", "passwords"),
            ("*,-", "not a CouchDB database name"),
        ] {
            let e = error(&[url, ("COUCHDB_BACKUP_DBS", bad)]);
            assert!(
                e.contains("COUCHDB_BACKUP_DBS") && e.contains(says),
                "{bad}: {e}"
            );
        }
        let e = error(&[url, ("COUCHDB_BACKUP_CREATE_DBS", "yes")]);
        assert!(e.contains("COUCHDB_BACKUP_CREATE_DBS"), "{e}");
        assert!(
            !with(&[url, ("COUCHDB_BACKUP_CREATE_DBS", "false")])
                .unwrap()
                .unwrap()
                .create_dbs
        );
    }

    #[test]
    fn selection_takes_user_dbs_and_names_the_absent() {
        let cluster: Vec<String> = ["_replicator", "_users", "b", "a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let all = Databases {
            every_user_db: true,
            listed: vec![],
            excluded: vec![],
        };
        assert_eq!(all.select(&cluster).dbs, ["_users", "a", "b"]);
        let no_users = Databases {
            excluded: vec!["_users".into(), "a".into()],
            ..all
        };
        assert_eq!(no_users.select(&cluster).dbs, ["b"]);
        let some = Databases {
            every_user_db: false,
            listed: vec!["_users".into(), "b".into(), "later".into()],
            excluded: vec![],
        };
        assert_eq!(
            some.select(&cluster),
            Selected {
                dbs: vec!["_users".into(), "b".into()],
                absent: vec!["later".into()]
            }
        );
    }

    #[test]
    fn the_password_does_not_debug_print() {
        let b = with(&[
            ("COUCHDB_BACKUP_URL", "b"),
            ("COUCHDB_BACKUP_USER", "u"),
            ("COUCHDB_BACKUP_PASSWORD", "s3cret-backup"),
        ])
        .unwrap()
        .unwrap();
        assert!(!format!("{b:?}").contains("s3cret-backup"));
    }
}
