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
