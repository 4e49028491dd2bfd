//! mem3's rules, as pure functions: key ranges, where copies go, shard map docs in `_dbs`
//! (their exact body, so revs match CouchDB's), what a `PUT /_node/_local/_dbs/<db>` is
//! checked for (`mem3_bdu`: only `by_node`/`by_range` symmetry), which range a doc id hashes
//! to (`crc32` of the id), and shard file names (`shards/<range>/<db>.<suffix>`).

use std::collections::BTreeMap;

use super::ejson::Ej;
use crate::util;

/// A db's map as mem3 uses it: the ranges that have copies, each with its nodes (descending,
/// as CouchDB lists them), and the suffix of its files (`.1795524961`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardMap {
    pub suffix: String,
    pub by_range: BTreeMap<String, Vec<String>>,
}

impl ShardMap {
    /// The map of a `_dbs` doc body (`None` when it has no usable `by_range`).
    pub fn of(body: &Ej) -> Option<ShardMap> {
        let by_range = body.get("by_range")?.fields()?;
        let mut out = BTreeMap::new();
        for (range, nodes) in by_range {
            let mut list = nodes.strings();
            if list.is_empty() {
                continue;
            }
            list.sort();
            list.dedup();
            list.reverse();
            out.insert(range.clone(), list);
        }
        Some(ShardMap {
            suffix: suffix_of(body),
            by_range: out,
        })
    }

    /// The range a doc id hashes into and its nodes (`None`: no range holds it).
    pub fn locate(&self, doc_id: &str) -> Option<(&String, &Vec<String>)> {
        let h = util::crc32(doc_id.as_bytes());
        self.by_range
            .iter()
            .find(|(r, _)| parse_range(r).map(|(b, e)| b <= h && h <= e) == Some(true))
    }

    pub fn file(&self, db: &str, range: &str) -> String {
        file_name(range, db, &self.suffix)
    }

    /// The ranges `node` holds.
    pub fn ranges_on(&self, node: &str) -> Vec<String> {
        self.by_range
            .iter()
            .filter(|(_, nodes)| nodes.iter().any(|n| n == node))
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// `q` as `GET /<db>` reports it: ranges with at least one copy.
    pub fn q(&self) -> usize {
        self.by_range.len()
    }

    /// `n` as `GET /<db>` reports it: the most copies any range has.
    pub fn n(&self) -> usize {
        self.by_range.values().map(Vec::len).max().unwrap_or(0)
    }
}

/// `shard_suffix` (char codes) as text.
pub fn suffix_of(body: &Ej) -> String {
    body.get("shard_suffix")
        .and_then(Ej::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|b| match b {
                    Ej::Num(n) => n.as_u64().and_then(|c| char::from_u32(c as u32)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `00000000-7fffffff` → (0, 0x7fffffff)
pub fn parse_range(r: &str) -> Option<(u32, u32)> {
    let (b, e) = r.split_once('-')?;
    if b.len() != 8 || e.len() != 8 {
        return None;
    }
    Some((
        u32::from_str_radix(b, 16).ok()?,
        u32::from_str_radix(e, 16).ok()?,
    ))
}

pub fn file_name(range: &str, db: &str, suffix: &str) -> String {
    format!("shards/{range}/{db}{suffix}")
}

/// `shards/<range>/<db>.<suffix>` → (range, db, suffix with its dot).
pub fn parse_file_name(name: &str) -> Option<(String, String, String)> {
    let rest = name.strip_prefix("shards/")?;
    let (range, file) = rest.split_once('/')?;
    let dot = file.rfind('.')?;
    Some((
        range.to_string(),
        file[..dot].to_string(),
        file[dot..].to_string(),
    ))
}

/// Key ranges for `q` shards (`q = 2` → the two ranges CouchDB shows).
pub fn ranges(q: u64) -> Vec<String> {
    let q = q.clamp(1, 256);
    let top: u64 = 1 << 32;
    let step = top / q;
    (0..q)
        .map(|i| {
            let b = i * step;
            let e = if i == q - 1 {
                top - 1
            } else {
                (i + 1) * step - 1
            };
            format!("{b:08x}-{e:08x}")
        })
        .collect()
}

/// Where the copies of each range go, as mem3 does it: the member list (descending), rotated,
/// then `n` copies of each range handed out round-robin (`mem3_util:create_partition_map`).
/// mem3 rotates at random; the simulator rotates by the db name's CRC-32 so runs repeat —
/// the rule is chosen so that `griddb` over four nodes lands as in transcript 08.
pub fn place(db: &str, members: &[String], n: u64, q: u64) -> BTreeMap<String, Vec<String>> {
    let mut nodes: Vec<String> = members.to_vec();
    nodes.sort();
    nodes.dedup();
    nodes.reverse();
    let mut out = BTreeMap::new();
    if nodes.is_empty() {
        return out;
    }
    let len = nodes.len();
    let rot = len - 1 - (util::crc32(db.as_bytes()) as usize % len);
    nodes.rotate_left(rot);
    let n = (n as usize).clamp(1, len);
    let mut i = 0;
    for range in ranges(q) {
        let mut copies = Vec::new();
        for _ in 0..n {
            copies.push(nodes[i % len].clone());
            i += 1;
        }
        copies.sort();
        copies.reverse();
        out.insert(range, copies);
    }
    out
}

/// A member as mem3's placement sees it: its name, and the `zone` and `decom` fields of its
/// `_nodes` doc (`mem3:node_info/2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub zone: Option<String>,
    pub decom: bool,
}

/// Why mem3 refused to place a new db (HTTP 500, `unknown_error`, nothing created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unplaced {
    /// A zone of the placement has no (allowed) node: `no_nodes_in_zone` (transcript 16).
    NoNodesInZone,
    /// A placement that is not `zone:count,…`: mem3's `decode_placement_string` crashes on
    /// its match (not recorded; the reason is the Erlang error's name).
    Malformed,
}

impl Unplaced {
    pub fn reason(self) -> &'static str {
        match self {
            Unplaced::NoNodesInZone => "no_nodes_in_zone",
            Unplaced::Malformed => "badmatch",
        }
    }
}

/// `a:1,b:1,c:1` → [(a, 1), (b, 1), (c, 1)], as `mem3:decode_placement_string/1`.
pub fn parse_placement(text: &str) -> Option<Vec<(String, u64)>> {
    text.split(',')
        .filter(|rule| !rule.is_empty())
        .map(|rule| {
            let (zone, count) = rule.split_once(':')?;
            if zone.is_empty() || count.contains(':') {
                return None;
            }
            Some((zone.to_string(), count.trim().parse().ok()?))
        })
        .collect()
}

/// Where a new db's copies go (`mem3:choose_shards/2`): over the members not marked `decom`;
/// with a placement (`?placement=`, else `[cluster] placement`), zone by zone — each zone's
/// members get `count` copies of every range, capped at the zone's nodes without a word
/// (`c:2` of a one-node zone is one copy), and `n` is ignored; a zone with no node refuses
/// the whole db. Without one, `n` copies over all of them (`place`).
pub fn choose(
    db: &str,
    members: &[Candidate],
    placement: Option<&str>,
    n: u64,
    q: u64,
) -> Result<BTreeMap<String, Vec<String>>, Unplaced> {
    let allowed: Vec<&Candidate> = members.iter().filter(|m| !m.decom).collect();
    let Some(text) = placement else {
        let names: Vec<String> = allowed.iter().map(|m| m.name.clone()).collect();
        return Ok(place(db, &names, n, q));
    };
    let rules = parse_placement(text).ok_or(Unplaced::Malformed)?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (zone, count) in rules {
        let in_zone: Vec<String> = allowed
            .iter()
            .filter(|m| m.zone.as_deref() == Some(zone.as_str()))
            .map(|m| m.name.clone())
            .collect();
        if in_zone.is_empty() {
            return Err(Unplaced::NoNodesInZone);
        }
        for (range, copies) in place(db, &in_zone, count, q) {
            out.entry(range).or_default().extend(copies);
        }
    }
    for copies in out.values_mut() {
        copies.sort();
        copies.dedup();
        copies.reverse();
    }
    Ok(out)
}

/// The `_dbs` doc body mem3 writes for a new db: `shard_suffix`, `changelog` (range by range,
/// nodes ascending), `by_node`, `by_range` (nodes ascending), and `props` — an empty object
/// when the db was created over HTTP, absent for the ones `finish_cluster` creates
/// (transcript 12's `_users`/`_replicator` docs have none).
pub fn map_doc(by_range: &BTreeMap<String, Vec<String>>, suffix: &str, props: bool) -> Ej {
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut changelog = Vec::new();
    let mut ranges = Vec::new();
    for (range, nodes) in by_range {
        let mut asc = nodes.clone();
        asc.sort();
        for n in &asc {
            by_node.entry(n.clone()).or_default().push(range.clone());
            changelog.push(Ej::Arr(vec![
                Ej::from("add"),
                Ej::from(range.as_str()),
                Ej::from(n.as_str()),
            ]));
        }
        ranges.push((range.clone(), strs(&asc)));
    }
    let mut doc = vec![
        (
            "shard_suffix".into(),
            Ej::Arr(suffix.bytes().map(|b| Ej::Num(b.into())).collect()),
        ),
        ("changelog".into(), Ej::Arr(changelog)),
        (
            "by_node".into(),
            Ej::Obj(by_node.into_iter().map(|(n, r)| (n, strs(&r))).collect()),
        ),
        ("by_range".into(), Ej::Obj(ranges)),
    ];
    if props {
        doc.push(("props".into(), Ej::empty()));
    }
    Ej::Obj(doc)
}

fn strs(v: &[String]) -> Ej {
    Ej::Arr(v.iter().map(|s| Ej::from(s.as_str())).collect())
}

/// `mem3_bdu`: what a `_dbs` write is checked for. `Err` is the 403 reason. Nothing else is
/// checked: not membership, not range names, not that every range keeps a copy (trap 12).
pub fn validate(body: &Ej) -> Result<(), String> {
    let by_node = match body.get("by_node") {
        Some(Ej::Obj(f)) => f,
        _ => return Err("by_node is mandatory".to_string()),
    };
    let by_range = match body.get("by_range") {
        Some(Ej::Obj(f)) => f,
        _ => return Err("by_range is mandatory".to_string()),
    };
    let holds = |map: &[(String, Ej)], key: &str, member: &str| {
        map.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.strings().iter().any(|m| m == member))
            .unwrap_or(false)
    };
    for (node, ranges) in by_node {
        for range in ranges.strings() {
            if !holds(by_range, &range, node) {
                return Err(format!("by_range for {range} missing {node}"));
            }
        }
    }
    for (range, nodes) in by_range {
        for node in nodes.strings() {
            if !holds(by_node, &node, range) {
                return Err(format!("by_node for {node} missing {range}"));
            }
        }
    }
    Ok(())
}

/// CouchDB's db name rule (system dbs start with `_`).
pub fn valid_db_name(name: &str) -> bool {
    const SYSTEM: [&str; 4] = ["_users", "_replicator", "_global_changes", "_metadata"];
    if SYSTEM.contains(&name) {
        return true;
    }
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_$()+-/".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGES: [&str; 2] = ["00000000-7fffffff", "80000000-ffffffff"];

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn ej(s: &str) -> Ej {
        Ej::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn three_nodes_every_range_everywhere_descending() {
        let m = names(&["node1@127.0.0.1", "node2@127.0.0.1", "node3@127.0.0.1"]);
        for db in ["_users", "_replicator", "x"] {
            let s = place(db, &m, 3, 2);
            for r in RANGES {
                assert_eq!(
                    s[r],
                    names(&["node3@127.0.0.1", "node2@127.0.0.1", "node1@127.0.0.1"])
                );
            }
        }
    }

    #[test]
    fn griddb_over_four_nodes_as_transcript_08() {
        let m = names(&[
            "node1@127.0.0.1",
            "node2@127.0.0.1",
            "node3@127.0.0.1",
            "node4@127.0.0.1",
        ]);
        let s = place("griddb", &m, 3, 2);
        assert_eq!(
            s["00000000-7fffffff"],
            names(&["node4@127.0.0.1", "node3@127.0.0.1", "node1@127.0.0.1"])
        );
        assert_eq!(
            s["80000000-ffffffff"],
            names(&["node4@127.0.0.1", "node2@127.0.0.1", "node1@127.0.0.1"])
        );
    }

    #[test]
    fn n_is_capped_by_members_and_phantoms_count() {
        let s = place("_users", &names(&["node3@127.0.0.1"]), 3, 2);
        assert_eq!(s["00000000-7fffffff"], names(&["node3@127.0.0.1"]));
        let s = place("db", &names(&["a@x.y", "phantom@x.y"]), 3, 2);
        assert_eq!(s["00000000-7fffffff"].len(), 2);
    }

    fn members(zones: &[(&str, Option<&str>, bool)]) -> Vec<Candidate> {
        zones
            .iter()
            .map(|(name, zone, decom)| Candidate {
                name: name.to_string(),
                zone: zone.map(str::to_string),
                decom: *decom,
            })
            .collect()
    }

    /// Transcript 16's zones: a = node1, node2; b = node3, node4; c = node5.
    fn sixteen() -> Vec<Candidate> {
        members(&[
            ("node1@127.0.0.1", Some("a"), false),
            ("node2@127.0.0.1", Some("a"), false),
            ("node3@127.0.0.1", Some("b"), false),
            ("node4@127.0.0.1", Some("b"), false),
            ("node5@127.0.0.1", Some("c"), false),
        ])
    }

    fn zones_of(copies: &[String]) -> Vec<&'static str> {
        let mut z: Vec<&str> = copies
            .iter()
            .map(|c| match c.as_str() {
                "node1@127.0.0.1" | "node2@127.0.0.1" => "a",
                "node3@127.0.0.1" | "node4@127.0.0.1" => "b",
                _ => "c",
            })
            .collect();
        z.sort();
        z
    }

    #[test]
    fn placement_puts_each_zones_share_on_its_nodes_as_transcript_16() {
        let m = sixteen();
        let map = choose("zoned1", &m, Some("a:1,b:1,c:1"), 3, 4).unwrap();
        assert_eq!(map.len(), 4);
        for copies in map.values() {
            assert_eq!(zones_of(copies), ["a", "b", "c"]);
            assert!(copies.contains(&"node5@127.0.0.1".to_string()));
        }
        // n is ignored when a placement names the copies.
        assert_eq!(
            choose("withn2", &m, Some("a:1,b:1,c:1"), 2, 2),
            choose("withn2", &m, Some("a:1,b:1,c:1"), 3, 2)
        );
        let per_db = choose("perdb", &m, Some("a:2,b:1"), 3, 2).unwrap();
        for copies in per_db.values() {
            assert_eq!(zones_of(copies), ["a", "a", "b"]);
        }
        // Fewer nodes in the zone than asked: fewer copies, no error.
        let short = choose("toomany", &m, Some("c:2"), 3, 2).unwrap();
        assert!(short
            .values()
            .all(|c| *c == ["node5@127.0.0.1".to_string()]));
        assert_eq!(
            choose("nozone", &m, Some("a:1,z:1"), 3, 2),
            Err(Unplaced::NoNodesInZone)
        );
        assert_eq!(choose("x", &m, Some("a"), 3, 2), Err(Unplaced::Malformed));
    }

    #[test]
    fn decom_takes_a_node_out_of_new_dbs() {
        let mut m = sixteen();
        m[4].decom = true;
        assert_eq!(
            choose("afterdecom", &m, Some("a:1,b:1,c:1"), 3, 2),
            Err(Unplaced::NoNodesInZone)
        );
        let spread = choose("nodecom", &m, None, 3, 2).unwrap();
        assert!(spread.values().flatten().all(|n| n != "node5@127.0.0.1"));
        // Without a placement, zones change nothing.
        assert_eq!(
            choose("plain", &sixteen(), None, 3, 2).unwrap(),
            place(
                "plain",
                &sixteen().into_iter().map(|c| c.name).collect::<Vec<_>>(),
                3,
                2
            )
        );
    }

    #[test]
    fn ranges_for_q() {
        assert_eq!(ranges(2), RANGES.to_vec());
        assert_eq!(ranges(1), vec!["00000000-ffffffff".to_string()]);
        assert_eq!(ranges(4)[1], "40000000-7fffffff");
    }

    #[test]
    fn doc_ids_hash_like_mem3() {
        let all = place("moveme", &names(&["a@x.y"]), 1, 2);
        let map = ShardMap {
            suffix: ".1".into(),
            by_range: all,
        };
        // transcript 11: doc000 → 80000000-ffffffff; 88 of doc000..doc199 in the first range
        assert_eq!(map.locate("doc000").unwrap().0, "80000000-ffffffff");
        let first = (0..200)
            .filter(|i| map.locate(&format!("doc{i:03}")).unwrap().0 == "00000000-7fffffff")
            .count();
        assert_eq!(first, 88);
        // and scratch: s002, w0 in the first range, s000, k0 in the second
        for (id, r) in [
            ("s002", 0),
            ("w0", 0),
            ("aftermove0", 0),
            ("s000", 1),
            ("k0", 1),
            ("ghost2", 1),
        ] {
            assert_eq!(map.locate(id).unwrap().0, RANGES[r], "{id}");
        }
        let renamed = ShardMap {
            suffix: ".1".into(),
            by_range: [("00000000-7fffffff".to_string(), names(&["a@x.y"]))].into(),
        };
        assert!(renamed.locate("doc000").is_none());
    }

    #[test]
    fn map_docs_and_files() {
        let by_range = place(
            "moveme",
            &names(&["node1@127.0.0.1", "node2@127.0.0.1", "node3@127.0.0.1"]),
            3,
            2,
        );
        let doc = map_doc(&by_range, ".1795524961", true);
        assert_eq!(
            crate::node::ejson::new_rev(false, None, &doc),
            "1-0293fe5aaf3ccc3d035c10d3a2a5654a",
            "the same body (and rev) as transcript 11 line 32"
        );
        let m = ShardMap::of(&doc).unwrap();
        assert_eq!(m.suffix, ".1795524961");
        assert_eq!((m.q(), m.n()), (2, 3));
        assert_eq!(
            m.file("moveme", RANGES[0]),
            "shards/00000000-7fffffff/moveme.1795524961"
        );
        assert_eq!(
            parse_file_name("shards/00000000-7fffffff/a/b.c.1795524961"),
            Some((RANGES[0].into(), "a/b.c".into(), ".1795524961".into()))
        );
        assert_eq!(parse_file_name("_dbs"), None);
        // transcript 12 line 365: `_replicator` as finish_cluster made it, without `props`
        let by_range = [
            (
                RANGES[0].to_string(),
                names(&["node1@127.0.0.1", "node2@127.0.0.1", "node3@127.0.0.1"]),
            ),
            (
                RANGES[1].to_string(),
                names(&["node2@127.0.0.1", "node3@127.0.0.1", "node4@127.0.0.1"]),
            ),
        ]
        .into();
        assert_eq!(
            crate::node::ejson::new_rev(false, None, &map_doc(&by_range, ".1795525313", false)),
            "1-b973d51d292a4549127493f03717737f"
        );
    }

    #[test]
    fn validation_is_only_symmetry() {
        let ok = r#"{"by_node":{"n1":["r1"]},"by_range":{"r1":["n1"]}}"#;
        assert_eq!(validate(&ej(ok)), Ok(()));
        assert_eq!(
            validate(&ej(r#"{"by_range":{}}"#)),
            Err("by_node is mandatory".into())
        );
        assert_eq!(
            validate(&ej(
                r#"{"by_node":{"n1":["r1"]},"by_range":{"r1":["n1","n4"]}}"#
            )),
            Err("by_node for n4 missing r1".into())
        );
        assert_eq!(
            validate(&ej(
                r#"{"by_node":{"n1":["r1"],"n4":["r1"]},"by_range":{"r1":["n1"]}}"#
            )),
            Err("by_range for r1 missing n4".into())
        );
        assert_eq!(
            validate(&ej(r#"{"by_node":{"n1":["r1"]},"by_range":{"r1":"n1"}}"#)),
            Err("by_range for r1 missing n1".into())
        );
        // a non-member, a made-up range, no copies at all: accepted
        assert_eq!(
            validate(&ej(
                r#"{"by_node":{"ghost@x.y":["zz"]},"by_range":{"zz":["ghost@x.y"]}}"#
            )),
            Ok(())
        );
        assert_eq!(validate(&ej(r#"{"by_node":{},"by_range":{}}"#)), Ok(()));
    }

    #[test]
    fn db_names() {
        assert!(valid_db_name("griddb"));
        assert!(valid_db_name("_users"));
        assert!(!valid_db_name("_foo"));
        assert!(!valid_db_name("Abc"));
        assert!(!valid_db_name("1abc"));
    }
}
