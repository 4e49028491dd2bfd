//! The tables in docs/configuration.md are copies of the code's: keep them equal.

use couchdb_cluster_init::config::{BACKUP_VARIABLES, VARIABLES};
use couchdb_cluster_init::exit::TABLE;

/// The page that holds the variables and exit-code tables.
const TABLES: &str = "docs/configuration.md";

fn tables_page() -> String {
    std::fs::read_to_string(format!("{}/{TABLES}", env!("CARGO_MANIFEST_DIR"))).expect(TABLES)
}

/// The data rows of the markdown table between `<!-- marker… -->` and `<!-- /marker -->`.
fn rows(marker: &str) -> Vec<(String, String)> {
    let text = tables_page();
    let start = text
        .find(&format!("<!-- {marker}"))
        .unwrap_or_else(|| panic!("no {marker} in {TABLES}"));
    let end = text
        .find(&format!("<!-- /{marker} -->"))
        .unwrap_or_else(|| panic!("no /{marker} in {TABLES}"));
    text[start..end]
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .skip(1)
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].trim_matches('`').to_string(), cells[1].to_string())
        })
        .collect()
}

#[test]
fn exit_code_table_matches_the_code() {
    let expected: Vec<(String, String)> = TABLE
        .iter()
        .map(|(_, code, m)| (code.to_string(), m.to_string()))
        .collect();
    assert_eq!(rows("exit-table"), expected);
}

/// A variables table as docs/configuration.md must show it.
fn variables(table: &[(&str, &str)]) -> Vec<(String, String)> {
    table
        .iter()
        .map(|(v, m)| (v.to_string(), m.to_string()))
        .collect()
}

#[test]
fn environment_tables_match_the_code() {
    assert_eq!(rows("env-table"), variables(VARIABLES));
    assert_eq!(rows("backup-env-table"), variables(BACKUP_VARIABLES));
}

#[test]
fn help_prints_both_tables() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_couchdb-cluster-init"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (name, _) in VARIABLES.iter().chain(BACKUP_VARIABLES) {
        assert!(help.contains(name), "{name} missing from --help");
    }
    for (_, code, meaning) in TABLE {
        assert!(
            help.contains(&format!("{code}  {meaning}")),
            "exit {code} missing from --help"
        );
    }
}

#[test]
fn unknown_arguments_exit_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_couchdb-cluster-init"))
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
