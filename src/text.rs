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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_cut_with_a_count() {
        let names: Vec<String> = (1..=32).map(|i| format!("n{i}")).collect();
        assert_eq!(list_some(&names[..2]), "n1, n2");
        assert_eq!(list_some(&names), "n1, n2, n3, n4, n5 and 27 more");
        assert_eq!(list_some(&[]), "");
    }
}
