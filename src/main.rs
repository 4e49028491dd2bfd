use std::process::ExitCode;

use couchdb_cluster_init::cli::{self, Command, VERSION};
use couchdb_cluster_init::commands::formation::Formation;
use couchdb_cluster_init::commands::{
    drain, guard, rebalance, remove, restore, status, undrain, watch,
};
use couchdb_cluster_init::util::clock::SystemClock;
use couchdb_cluster_init::util::config::Config;
use couchdb_cluster_init::util::exit::{status_of, Status};
use couchdb_cluster_init::util::logging;
use couchdb_cluster_init::util::signals;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(Command::Help) => {
            print!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("couchdb-cluster-init {VERSION}");
            return ExitCode::SUCCESS;
        }
        Ok(command) => command,
        Err(message) => {
            eprintln!("error: {message}\n\n{}", cli::usage());
            return ExitCode::from(Status::Config.code());
        }
    };
    logging::init();

    let clock = SystemClock;
    let result = Config::from_env().and_then(|cfg| match command {
        Command::Check { wait } => status::check(&cfg, &clock, wait).map(|s| Some(s.line())),
        Command::Status(opts) => status::status(&cfg, &clock, &opts).map(|()| None),
        Command::Remove(opts) => remove::remove(&cfg, &clock, &opts).map(Some),
        Command::Rebalance(opts) => rebalance::rebalance(&cfg, &clock, &opts).map(Some),
        Command::Restore(opts) => restore::restore(&cfg, &clock, &opts).map(Some),
        Command::Backup => Formation::new(&cfg, &clock, cfg.init_timeout)
            .backup()
            .map(|summary| Some(summary.line())),
        Command::Init => Formation::new(&cfg, &clock, cfg.init_timeout)
            .init()
            .map(|summary| Some(summary.line())),
        Command::Watch => watch::watch(&cfg, signals::stop_flag()).map(|()| None),
        Command::Drain(opts) => drain::drain(&cfg, &clock, &opts).map(Some),
        Command::Undrain(opts) => undrain::undrain(&cfg, &clock, &opts).map(Some),
        Command::Guard => guard::guard(&cfg, signals::stop_flag()).map(|()| None),
        // Answered above, before the environment is read.
        Command::Help | Command::Version => Ok(None),
    });
    match result {
        Ok(line) => {
            if let Some(line) = line {
                log::info!("{line}");
            }
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
