//! Clustered update sequences (`"100-g1AAAA…"`): the number is the sum of one copy's
//! `update_seq` per range, the rest says which copy and where — so `_changes?since=` can
//! resume each range from the copy it read. CouchDB packs an Erlang term there; the simulator
//! packs `[[range, node, seq], …]` as JSON in URL-safe base64 behind the same `g1AAAA` prefix.

use serde_json::Value;

use crate::util;

const TAG: &str = "g1AAAA";

/// Where a clustered read stands in one range: which copy (`node`) and how far (`seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub range: String,
    pub node: String,
    pub seq: u64,
}

pub fn encode(positions: &[Pos]) -> String {
    let sum: u64 = positions.iter().map(|p| p.seq).sum();
    let list: Vec<Value> = positions
        .iter()
        .map(|p| serde_json::json!([p.range, p.node, p.seq]))
        .collect();
    let packed = util::base64_encode(Value::Array(list).to_string().as_bytes())
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_string();
    format!("{sum}-{TAG}{packed}")
}

/// The positions in a `since`: `0`, `now` (the caller's business) and anything unreadable
/// give none, i.e. from the start.
pub fn decode(since: &str) -> Vec<Pos> {
    let Some((_, rest)) = since.split_once('-') else {
        return Vec::new();
    };
    let Some(packed) = rest.strip_prefix(TAG) else {
        return Vec::new();
    };
    let mut b64 = packed.replace('-', "+").replace('_', "/");
    while b64.len() % 4 != 0 {
        b64.push('=');
    }
    let Some(list) = util::base64_decode(&b64)
        .and_then(|bytes| serde_json::from_slice::<Vec<(String, String, u64)>>(&bytes).ok())
    else {
        return Vec::new();
    };
    list.into_iter()
        .map(|(range, node, seq)| Pos { range, node, seq })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = vec![
            Pos {
                range: "00000000-7fffffff".into(),
                node: "node1@127.0.0.1".into(),
                seq: 45,
            },
            Pos {
                range: "80000000-ffffffff".into(),
                node: "node3@127.0.0.1".into(),
                seq: 55,
            },
        ];
        let s = encode(&p);
        assert!(s.starts_with("100-g1AAAA"), "{s}");
        assert!(!s.contains(['+', '/', '=']), "{s}");
        assert_eq!(decode(&s), p);
    }

    #[test]
    fn anything_else_means_from_the_start() {
        for s in ["0", "", "now", "12-g1AAAA!!", "3-xyz", "-", "7-g1AAAAW10"] {
            assert!(decode(s).is_empty(), "{s}");
        }
    }
}
