//! The docs agree with the code and lead somewhere: the tables in docs/configuration.md are
//! copies of the code's, and every relative link in README.md and docs/*.md finds its file and heading.

use couchdb_cluster_init::util::config::{BACKUP_VARIABLES, VARIABLES};
use couchdb_cluster_init::util::exit::TABLE;

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

/// The markdown pages a reader follows links through: README.md and docs/*.md.
fn pages() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "no docs/*.md");
    [vec![root.join("README.md")], docs].concat()
}

/// The lines of a page outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                return false;
            }
            !in_fence
        })
        .collect()
}

/// The targets of a line's links and images, `[text](target)` or `[text](target "title")`,
/// outside its `code spans`.
fn link_targets(line: &str) -> Vec<String> {
    let line: String = line.split('`').step_by(2).collect();
    line.match_indices("](")
        .filter_map(|(i, _)| line[i + 2..].split(')').next())
        .filter_map(|inside| inside.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The anchors GitHub makes for a page's headings: the text lower-cased, everything but letters,
/// digits, `-` and `_` dropped (a code span keeps its text), spaces turned into `-`; `-1`, `-2` …
/// after a repeated one.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut anchors = Vec::new();
    for line in prose(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base: String = line[hashes..]
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let repeats = seen.iter().filter(|s| **s == base).count();
        anchors.push(match repeats {
            0 => base.clone(),
            n => format!("{base}-{n}"),
        });
        seen.push(base);
    }
    anchors
}

/// A page's relative links that lead nowhere: no such file, or no heading there makes the anchor.
fn broken_links(page: &std::path::Path, text: &str) -> Vec<String> {
    let mut broken = Vec::new();
    for target in prose(text).into_iter().flat_map(link_targets) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
        let linked = if path.is_empty() {
            text.to_string()
        } else {
            let file = page.parent().expect("the page's folder").join(path);
            if !file.exists() {
                broken.push(format!("{target}: no such file"));
                continue;
            }
            if anchor.is_empty() || file.extension().is_none_or(|e| e != "md") {
                continue;
            }
            std::fs::read_to_string(&file).expect("the linked page")
        };
        if !anchor.is_empty() && !anchors(&linked).iter().any(|a| a == anchor) {
            broken.push(format!("{target}: no heading makes #{anchor}"));
        }
    }
    broken
}

#[test]
fn every_relative_link_leads_somewhere() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut broken, mut links) = (Vec::new(), 0);
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("page");
        links += prose(&text).into_iter().flat_map(link_targets).count();
        let name = page
            .strip_prefix(root)
            .unwrap_or(&page)
            .display()
            .to_string();
        broken.extend(
            broken_links(&page, &text)
                .into_iter()
                .map(|b| format!("{name}: {b}")),
        );
    }
    assert!(links > 0, "no links found: the check reads nothing");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_reads_markdown_as_github_does() {
    let headings =
        "# `status` — at a glance\n## The bundle (`compose.yaml`)\n## A\n## A\n```\n# no\n```";
    assert_eq!(
        anchors(headings),
        ["status--at-a-glance", "the-bundle-composeyaml", "a", "a-1"]
    );
    assert_eq!(
        link_targets("[a](x.md) `[b](code.md)` [`c`](y.md#z \"t\") ![i](img.png)"),
        ["x.md", "y.md#z", "img.png"]
    );
    let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let fine = "# Here\n[a](docs/backup.md#backup) [b](https://example.org/x) [c](#here)";
    assert_eq!(broken_links(&readme, fine), Vec::<String>::new());
    for gone in [
        "[a](docs/nowhere.md)",
        "[a](docs/backup.md#nowhere)",
        "[a](#there)",
    ] {
        assert_eq!(broken_links(&readme, gone).len(), 1, "{gone}");
    }
}
