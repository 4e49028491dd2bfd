use std::process::ExitCode;

use couchdb_cluster_init::clock::SystemClock;
use couchdb_cluster_init::config::{Config, VARIABLES};
use couchdb_cluster_init::exit::{status_of, Status, TABLE};
use couchdb_cluster_init::formation::Formation;
use couchdb_cluster_init::logging;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn usage() -> String {
    let mut s = format!(
        "couchdb-cluster-init {VERSION}\n\
         Forms a CouchDB 3.4.2 cluster from freshly started nodes, verifies it, and exits.\n\n\
         Usage: couchdb-cluster-init [init|check|--help|--version]\n  \
         init    (default) wait, identify, preflight, join, converge, finish, verify\n  \
         check   read-only: is this a formed, healthy cluster? (for healthchecks)\n\n\
         Environment:\n"
    );
    for (name, meaning) in VARIABLES {
        s += &format!("  {name:<25} {meaning}\n");
    }
    s += "\nExit codes:\n";
    for (_, code, meaning) in TABLE {
        s += &format!("  {code}  {meaning}\n");
    }
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["init"] => false,
        ["check"] => true,
        ["-h" | "--help" | "help"] => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        ["-V" | "--version"] => {
            println!("couchdb-cluster-init {VERSION}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("error: unknown arguments {other:?}\n\n{}", usage());
            return ExitCode::from(Status::Config.code());
        }
    };
    logging::init();

    let result = Config::from_env().and_then(|cfg| {
        let clock = SystemClock;
        if check {
            let timeout = cfg
                .init_timeout
                .min(couchdb_cluster_init::formation::CHECK_WAIT);
            Formation::new(&cfg, &clock, timeout).check()
        } else {
            Formation::new(&cfg, &clock, cfg.init_timeout).init()
        }
    });
    match result {
        Ok(summary) => {
            log::info!("{}", summary.line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let status = status_of(&e);
            // Not through the logger: the reason must reach the operator even with RUST_LOG=off.
            eprintln!("error: {e:#}");
            eprintln!("exit {} ({status:?})", status.code());
            ExitCode::from(status.code())
        }
    }
}
