//! The command line: which procedure to run, and the help text. Options are parsed here only;
//! everything else comes from the environment (src/config.rs).

use crate::config::{BACKUP_VARIABLES, VARIABLES};
use crate::exit::TABLE;

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
    /// On a formed cluster: every database continuously replicated to COUCHDB_BACKUP_URL.
    Backup,
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
        "read-only, until the cluster is formed or COUCHDB_INIT_TIMEOUT (for an app's init container)",
    ),
    (
        "backup",
        "on a formed cluster: every database replicated to COUCHDB_BACKUP_URL, documents arriving",
    ),
];

/// `Err` carries the message for the operator; the caller exits with the configuration code.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["init"] => Ok(Command::Init),
        ["check"] => Ok(Command::Check { wait: false }),
        ["check", "--wait"] => Ok(Command::Check { wait: true }),
        ["backup"] => Ok(Command::Backup),
        ["-h" | "--help" | "help"] => Ok(Command::Help),
        ["-V" | "--version"] => Ok(Command::Version),
        other => Err(format!("unknown arguments {other:?}")),
    }
}

pub fn usage() -> String {
    let mut names: Vec<&str> = SUBCOMMANDS
        .iter()
        .filter_map(|(name, _)| name.split_whitespace().next())
        .collect();
    names.dedup();
    let mut s = format!(
        "couchdb-cluster-init {VERSION}\n\
         Forms a CouchDB 3.4.2 cluster from freshly started nodes, verifies it, and exits.\n\n\
         Usage: couchdb-cluster-init [{}|--help|--version]\n",
        names.join("|")
    );
    for (name, meaning) in SUBCOMMANDS {
        s += &format!("  {name:<13} {meaning}\n");
    }
    s += "\nEnvironment:\n";
    for (name, meaning) in VARIABLES {
        s += &format!("  {name:<26} {meaning}\n");
    }
    s += "\nBackup (init and backup, when COUCHDB_BACKUP_URL is set):\n";
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
        assert_eq!(parse(&args(&["--help"])), Ok(Command::Help));
        assert!(parse(&args(&["check", "extra"])).is_err());
        assert!(parse(&args(&["--frobnicate"])).is_err());
    }

    #[test]
    fn usage_lists_every_subcommand() {
        let u = usage();
        for (name, _) in SUBCOMMANDS {
            assert!(u.contains(name), "{name}");
        }
    }
}
