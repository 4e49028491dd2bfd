//! The command line: which procedure to run, and the help text. Options are parsed here only;
//! everything else comes from the environment (src/util/config.rs).

use crate::commands::{drain, rebalance, remove, restore, status};
use crate::util::config::{BACKUP_VARIABLES, VARIABLES};
use crate::util::exit::TABLE;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Form (or confirm) the cluster and verify it: the default.
    Init,
    /// Read-only: is this a formed, healthy cluster? With `wait`, until it is (an app's init
    /// container), within COUCHDB_INIT_TIMEOUT.
    Check {
        wait: bool,
    },
    /// Read-only: the cluster at a glance.
    Status(status::Options),
    /// Move every copy off a node, then take it out of the cluster.
    Remove(remove::Options),
    /// Spread the databases evenly over the members.
    Rebalance(rebalance::Options),
    /// On a formed cluster: every database continuously replicated to COUCHDB_BACKUP_URL.
    Backup,
    /// Keep running: form, join new nodes, repair drift, keep backups; serve metrics.
    Watch,
    /// Databases brought back from COUCHDB_BACKUP_URL into a formed, healthy cluster.
    Restore(restore::Options),
    /// Out of the load balancer before a stop, once that is proven.
    Drain(drain::Options),
    /// Back into the load balancer once connected and caught up.
    Undrain(drain::Options),
    /// A Kubernetes pod's sidecar: not ready until its node caught up; `/drain` for preStop.
    Guard,
    Help,
    Version,
}

/// The subcommands and what they do, for `--help`.
const SUBCOMMANDS: &[(&str, &str)] = &[
    (
        "init",
        "(default) wait, identify, preflight, join, converge, finish, verify; backup if COUCHDB_BACKUP_URL is set",
    ),
    (
        "check",
        "read-only: is this a formed, healthy cluster? (for healthchecks; waits at most 10 s)",
    ),
    (
        "check --wait",
        "read-only, until the cluster is healthy or COUCHDB_INIT_TIMEOUT (for an app's init container)",
    ),
    (
        "status",
        "[--json] [--details] [DB]  read-only: nodes, databases, copies, problems",
    ),
    (
        "remove",
        "NODE [--dry-run] [--accept-fewer-copies] [--delete-leftovers]  move every copy off NODE \
         (its Erlang name or COUCHDB_NODES address), then take it out of the members",
    ),
    (
        "rebalance",
        "[--dry-run] [--delete-leftovers]  with zones every range over them first, then even out the \
         copies per member over the whole cluster",
    ),
    (
        "backup",
        "on a formed cluster: every database replicated to COUCHDB_BACKUP_URL, documents arriving",
    ),
    (
        "watch",
        "keep running: form once COUCHDB_EXPECT nodes answer, join nodes that appear, repair drift, \
         keep backups; metrics on COUCHDB_METRICS_ADDR; exits 0 on SIGTERM",
    ),
    (
        "restore",
        "[--dry-run] [--q N] [DB...]  bring databases (documents, _security, _users) back from \
         COUCHDB_BACKUP_URL into a formed, healthy cluster; merges, never deletes",
    ),
    (
        "drain",
        "NODE  out of the load balancer (maintenance_mode nolb), proven through COUCHDB_LB_URL; then \
         it is safe to stop; refused while another node is drained or the cluster is not healthy",
    ),
    (
        "undrain",
        "NODE  back into the load balancer once it is a connected member again and its copies have \
         caught up with the others (exit 14 if not within COUCHDB_INIT_TIMEOUT)",
    ),
    (
        "guard",
        "keep running beside one node (COUCHDB_NODES): /ready once it has caught up, /drain for a \
         preStop hook, on COUCHDB_GUARD_ADDR (Kubernetes)",
    ),
];

/// `Err` carries the message for the operator; the caller exits with the configuration code.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["init"] => Ok(Command::Init),
        ["check"] => Ok(Command::Check { wait: false }),
        ["check", "--wait"] => Ok(Command::Check { wait: true }),
        ["status", rest @ ..] => {
            let (flags, names) = split(rest, &["--json", "--details"])?;
            let db = match names.as_slice() {
                [] => None,
                [db] => Some(db.to_string()),
                more => return Err(format!("status takes at most one database, not {more:?}")),
            };
            Ok(Command::Status(status::Options {
                json: flags.contains(&"--json"),
                details: flags.contains(&"--details"),
                db,
            }))
        }
        ["remove", rest @ ..] => {
            let (flags, names) = split(
                rest,
                &["--dry-run", "--accept-fewer-copies", "--delete-leftovers"],
            )?;
            let [node] = names.as_slice() else {
                return Err("remove takes exactly one NODE: its Erlang name or its address in COUCHDB_NODES".into());
            };
            Ok(Command::Remove(remove::Options {
                node: node.to_string(),
                dry_run: flags.contains(&"--dry-run"),
                accept_fewer: flags.contains(&"--accept-fewer-copies"),
                delete_leftovers: flags.contains(&"--delete-leftovers"),
            }))
        }
        ["rebalance", rest @ ..] => {
            let (flags, names) = split(rest, &["--dry-run", "--delete-leftovers"])?;
            if !names.is_empty() {
                return Err(format!("rebalance takes no arguments, not {names:?}"));
            }
            Ok(Command::Rebalance(rebalance::Options {
                dry_run: flags.contains(&"--dry-run"),
                delete_leftovers: flags.contains(&"--delete-leftovers"),
            }))
        }
        ["drain" | "undrain", rest @ ..] => {
            let command = args[0];
            let (_, names) = split(rest, &[])?;
            let [node] = names.as_slice() else {
                return Err(format!(
                    "{command} takes exactly one NODE: its Erlang name or its address in COUCHDB_NODES"
                ));
            };
            let opts = drain::Options {
                node: node.to_string(),
            };
            Ok(match command {
                "drain" => Command::Drain(opts),
                _ => Command::Undrain(opts),
            })
        }
        ["guard"] => Ok(Command::Guard),
        ["backup"] => Ok(Command::Backup),
        ["watch"] => Ok(Command::Watch),
        ["restore", rest @ ..] => parse_restore(rest).map(Command::Restore),
        ["-h" | "--help" | "help"] => Ok(Command::Help),
        ["-V" | "--version"] => Ok(Command::Version),
        other => Err(format!("unknown arguments {other:?}")),
    }
}

/// `restore [--dry-run] [--q N|--q=N] [DB...]`.
fn parse_restore(args: &[&str]) -> Result<restore::Options, String> {
    let mut opts = restore::Options::default();
    let mut rest: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let (flag, inline) = match args[i].split_once('=') {
            Some((f, v)) if f == "--q" => (f, Some(v)),
            _ => (args[i], None),
        };
        if flag == "--q" {
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i).copied().unwrap_or("")
                }
            };
            if opts.q.is_some() {
                return Err("option --q given twice".into());
            }
            opts.q = match value.parse::<u32>() {
                Ok(q) if (1..=256).contains(&q) => Some(q),
                _ => {
                    return Err(format!(
                        "--q takes a number of shard ranges from 1 to 256, not `{value}`"
                    ))
                }
            };
        } else {
            rest.push(args[i]);
        }
        i += 1;
    }
    let (flags, names) = split(&rest, &["--dry-run", "--q"])?;
    opts.dry_run = flags.contains(&"--dry-run");
    for name in names {
        if opts.dbs.iter().any(|d| d == name) {
            return Err(format!("restore: database `{name}` named twice"));
        }
        opts.dbs.push(name.to_string());
    }
    Ok(opts)
}

/// Flags (each from `known`, at most once) apart from the other arguments.
fn split<'a>(args: &[&'a str], known: &[&str]) -> Result<(Vec<&'a str>, Vec<&'a str>), String> {
    let (flags, names): (Vec<&str>, Vec<&str>) = args.iter().partition(|a| a.starts_with('-'));
    for (i, f) in flags.iter().enumerate() {
        if !known.contains(f) {
            return Err(format!(
                "unknown option {f} (this command takes {})",
                known.join(", ")
            ));
        }
        if flags[..i].contains(f) {
            return Err(format!("option {f} given twice"));
        }
    }
    Ok((flags, names))
}

pub fn usage() -> String {
    let mut names: Vec<&str> = SUBCOMMANDS
        .iter()
        .filter_map(|(name, _)| name.split_whitespace().next())
        .collect();
    names.dedup();
    let mut s = format!(
        "couchdb-cluster-init {VERSION}\n\
         Forms a CouchDB cluster (3.4.2, 3.5.x) from freshly started nodes and verifies it; then\n\
         shows it, takes nodes out of it, spreads its databases without losing a copy, and drains\n\
         a node for a rolling upgrade.\n\n\
         Usage: couchdb-cluster-init [{}|--help|--version] [ARGS]\n",
        names.join("|")
    );
    for (name, meaning) in SUBCOMMANDS {
        s += &format!("  {name:<13} {meaning}\n");
    }
    s += "\nEnvironment:\n";
    for (name, meaning) in VARIABLES {
        s += &format!("  {name:<26} {meaning}\n");
    }
    s += "\nBackup (init and backup, when COUCHDB_BACKUP_URL is set; restore reads from it):\n";
    for (name, meaning) in BACKUP_VARIABLES {
        s += &format!("  {name:<26} {meaning}\n");
    }
    s += "\nExit codes:\n";
    for (_, code, meaning) in TABLE {
        s += &format!("  {code}  {meaning}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subcommands_parse_and_junk_is_refused() {
        assert_eq!(parse(&args(&[])), Ok(Command::Init));
        assert_eq!(parse(&args(&["init"])), Ok(Command::Init));
        assert_eq!(parse(&args(&["check"])), Ok(Command::Check { wait: false }));
        assert_eq!(
            parse(&args(&["check", "--wait"])),
            Ok(Command::Check { wait: true })
        );
        assert!(parse(&args(&["init", "--wait"])).is_err());
        assert_eq!(parse(&args(&["backup"])), Ok(Command::Backup));
        assert_eq!(parse(&args(&["watch"])), Ok(Command::Watch));
        assert!(parse(&args(&["watch", "now"])).is_err());
        assert_eq!(parse(&args(&["--help"])), Ok(Command::Help));
        assert!(parse(&args(&["check", "extra"])).is_err());
        assert_eq!(
            parse(&args(&["status", "--json", "a/b"])),
            Ok(Command::Status(status::Options {
                json: true,
                details: false,
                db: Some("a/b".into())
            }))
        );
        assert_eq!(
            parse(&args(&["remove", "--dry-run", "couchdb@couchdb-4.cluster"])),
            Ok(Command::Remove(remove::Options {
                node: "couchdb@couchdb-4.cluster".into(),
                dry_run: true,
                accept_fewer: false,
                delete_leftovers: false,
            }))
        );
        assert!(parse(&args(&["remove"])).is_err());
        assert!(parse(&args(&["remove", "a", "b"])).is_err());
        assert!(parse(&args(&["remove", "a", "--force"])).is_err());
        assert!(parse(&args(&["rebalance", "--dry-run", "--dry-run"])).is_err());
        assert!(parse(&args(&["rebalance", "db"])).is_err());
        assert_eq!(
            parse(&args(&["drain", "couchdb-2"])),
            Ok(Command::Drain(drain::Options {
                node: "couchdb-2".into()
            }))
        );
        assert_eq!(
            parse(&args(&["undrain", "couchdb@couchdb-2.x"])),
            Ok(Command::Undrain(drain::Options {
                node: "couchdb@couchdb-2.x".into()
            }))
        );
        for bad in [
            &["drain"][..],
            &["drain", "a", "b"],
            &["undrain", "--force", "a"],
            &["guard", "x"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&args(&["guard"])), Ok(Command::Guard));
        assert!(parse(&args(&["--frobnicate"])).is_err());
        assert_eq!(
            parse(&args(&[
                "restore",
                "--dry-run",
                "app",
                "--q",
                "8",
                "_users"
            ])),
            Ok(Command::Restore(restore::Options {
                dry_run: true,
                q: Some(8),
                dbs: vec!["app".into(), "_users".into()],
            }))
        );
        assert_eq!(
            parse(&args(&["restore", "--q=2"])),
            Ok(Command::Restore(restore::Options {
                q: Some(2),
                ..Default::default()
            }))
        );
        for bad in [
            &["restore", "--q"][..],
            &["restore", "--q", "0"],
            &["restore", "--q", "x"],
            &["restore", "--q=1", "--q=2"],
            &["restore", "app", "app"],
            &["restore", "--force"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usage_lists_every_subcommand() {
        let u = usage();
        for (name, _) in SUBCOMMANDS {
            assert!(u.contains(name), "{name}");
        }
    }
}
