//! Short lines at any N: a list of names becomes a few of them and "and N more".

/// At most this many names in one log line or message.
pub const SHOWN: usize = 5;

/// `a, b, c, d, e and 27 more`.
pub fn list_some(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(SHOWN).map(String::as_str).collect();
    if items.len() > shown.len() {
        format!(
            "{} and {} more",
            shown.join(", "),
            items.len() - shown.len()
        )
    } else {
        shown.join(", ")
    }
}

/// `1.2 GB`, `830 KB`, `512 B`: for logs and tables.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// `2026-06-04T09:16:17Z`: a moment in UTC, RFC 3339 to the second (the epoch for a clock set
/// before it).
pub fn utc(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `12 s`, `4 min`, `3 h`, `2 d`: how long ago, as people say it.
pub fn ago(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// Up to `SHOWN` lines joined by `; `, then how many more.
pub fn some_lines(lines: &[String]) -> String {
    let shown = lines
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    match lines.len().saturating_sub(SHOWN) {
        0 => shown,
        more => format!("{shown}; and {more} more"),
    }
}

/// Names that differ only in one number, folded back into ranges, then cut like `list_some`:
/// `couchdb@couchdb-{0..31}.couchdb.default.svc.cluster.local` — the inverse of the ranges
/// COUCHDB_NODES takes. Order of first appearance is kept; names that do not fit stay as they are.
pub fn list_compact(items: &[String]) -> String {
    // For each way of picking "the varying number" (the k-th run of digits), fold and keep the
    // shortest result.
    let runs = |s: &str| digit_runs(s).len();
    let most = items.iter().map(|s| runs(s)).max().unwrap_or(0);
    (0..most)
        .map(|k| fold(items, k))
        .chain(std::iter::once(items.to_vec()))
        .min_by_key(|groups| groups.len())
        .map(|groups| list_some(&groups))
        .unwrap_or_default()
}

/// (start, end) of every run of ASCII digits in `s`.
fn digit_runs(s: &str) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices().chain(std::iter::once((s.len(), ' '))) {
        match (c.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(a)) => {
                runs.push((a, i));
                start = None;
            }
            _ => {}
        }
    }
    runs
}

/// Names that share all but one number.
struct Group<'a> {
    /// (prefix, suffix) around the number; `None`: a name kept as it is.
    key: Option<(&'a str, &'a str)>,
    numbers: Vec<u64>,
    first: &'a str,
}

/// Folds the names whose k-th digit run varies: `prefix{a..b}suffix` for each run of
/// consecutive numbers with the same prefix and suffix.
fn fold(items: &[String], k: usize) -> Vec<String> {
    let mut groups: Vec<Group> = Vec::new();
    for item in items {
        let split = digit_runs(item).get(k).and_then(|&(a, b)| {
            let digits = &item[a..b];
            let padded = digits.len() > 1 && digits.starts_with('0');
            let n = digits.parse::<u64>().ok().filter(|_| !padded)?;
            Some(((&item[..a], &item[b..]), n))
        });
        match split {
            Some((key, n)) => match groups.iter_mut().find(|g| g.key == Some(key)) {
                Some(g) => g.numbers.push(n),
                None => groups.push(Group {
                    key: Some(key),
                    numbers: vec![n],
                    first: item,
                }),
            },
            None => groups.push(Group {
                key: None,
                numbers: Vec::new(),
                first: item,
            }),
        }
    }
    let mut out = Vec::new();
    for Group {
        key,
        mut numbers,
        first,
    } in groups
    {
        let Some((prefix, suffix)) = key else {
            out.push(first.to_string());
            continue;
        };
        numbers.sort_unstable();
        numbers.dedup();
        let mut i = 0;
        while i < numbers.len() {
            let mut j = i;
            while j + 1 < numbers.len() && numbers[j + 1] == numbers[j] + 1 {
                j += 1;
            }
            out.push(if j == i {
                format!("{prefix}{}{suffix}", numbers[i])
            } else {
                format!("{prefix}{{{}..{}}}{suffix}", numbers[i], numbers[j])
            });
            i = j + 1;
        }
    }
    out
}

/// Orders names the way people count: `couchdb-2` before `couchdb-10`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        let (Some(x), Some(y)) = (a.chars().next(), b.chars().next()) else {
            return a.len().cmp(&b.len());
        };
        if x.is_ascii_digit() && y.is_ascii_digit() {
            let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (da, db) = (digits(a), digits(b));
            let (na, nb) = (
                a[..da].trim_start_matches('0'),
                b[..db].trim_start_matches('0'),
            );
            let order = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if order.is_ne() {
                return order;
            }
            (a, b) = (&a[da..], &b[db..]);
        } else {
            if x != y {
                return x.cmp(&y);
            }
            (a, b) = (&a[x.len_utf8()..], &b[y.len_utf8()..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_in_utc_and_how_long_ago() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // `date -u -d @1780564577 +%FT%TZ`; a leap day; the last second of a year.
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(1_780_564_577)),
            "2026-06-04T09:16:17Z"
        );
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(1_735_689_599)),
            "2024-12-31T23:59:59Z"
        );
        assert_eq!(ago(Duration::from_secs(12)), "12 s");
        assert_eq!(ago(Duration::from_secs(600)), "10 min");
        assert_eq!(ago(Duration::from_secs(3 * 3600)), "3 h");
        assert_eq!(ago(Duration::from_secs(5 * 86_400)), "5 d");
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(24_776), "25 KB");
        assert_eq!(bytes(1_234_567), "1.2 MB");
        assert_eq!(bytes(3_000_000_000), "3.0 GB");
    }

    #[test]
    fn numbered_names_fold_into_ranges() {
        let names = |f: &dyn Fn(usize) -> String, r: std::ops::Range<usize>| -> Vec<String> {
            r.map(f).collect()
        };
        let k8s = names(
            &|i| format!("couchdb@couchdb-{i}.couchdb.default.svc.cluster.local"),
            0..32,
        );
        assert_eq!(
            list_compact(&k8s),
            "couchdb@couchdb-{0..31}.couchdb.default.svc.cluster.local"
        );
        let sim = names(&|i| format!("node{i}@127.0.0.1"), 1..33);
        assert_eq!(list_compact(&sim), "node{1..32}@127.0.0.1");
        let ips = names(&|i| format!("10.244.2.{i}"), 1..33);
        assert_eq!(list_compact(&ips), "10.244.2.{1..32}");
        let gappy: Vec<String> = ["a-1.x", "a-2.x", "a-4.x", "b.y", "a-3.z"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(list_compact(&gappy), "a-{1..2}.x, a-4.x, b.y, a-3.z");
        let padded: Vec<String> = ["n08", "n09"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            list_compact(&padded),
            "n08, n09",
            "padding is not guessed at"
        );
        assert_eq!(list_compact(&[]), "");
    }

    #[test]
    fn numbers_in_names_sort_as_numbers() {
        let mut names = vec![
            "couchdb-10.x",
            "couchdb-2.x",
            "couchdb-1.x",
            "b",
            "a",
            "couchdb-1",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "a",
                "b",
                "couchdb-1",
                "couchdb-1.x",
                "couchdb-2.x",
                "couchdb-10.x"
            ]
        );
    }

    #[test]
    fn long_lists_are_cut_with_a_count() {
        let names: Vec<String> = (1..=32).map(|i| format!("n{i}")).collect();
        assert_eq!(list_some(&names[..2]), "n1, n2");
        assert_eq!(list_some(&names), "n1, n2, n3, n4, n5 and 27 more");
        assert_eq!(list_some(&[]), "");
    }
}
