//! Failure domains: which zone each node is in, the `[cluster] placement` rule that makes
//! CouchDB spread every new database over them, and how spread the existing ranges are. Pure
//! functions, no I/O: formation writes what they say, the planner moves copies by them,
//! `status` and `watch` report them.
//!
//! A range is spread as far as it can be when no zone holds more of its copies than it must:
//! with `k` copies and zones of `c₁, c₂, …` members, the fewest copies the fullest zone can
//! hold is the smallest `m` with `Σ min(m, cᵢ) ≥ k` (`most_in_one_zone`). With as many zones
//! as copies that is one copy per zone: a lost zone takes one copy, and CouchDB's quorum (two
//! of three) still answers.

use std::collections::{BTreeMap, BTreeSet};

use crate::client::ShardDoc;
use crate::util::config::ZoneList;

/// Node (Erlang name) → zone.
pub type Zones = BTreeMap<String, String>;

/// Members per zone.
fn sizes(zones: &Zones, members: &[String]) -> BTreeMap<String, usize> {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for m in members {
        if let Some(z) = zones.get(m) {
            *per.entry(z.clone()).or_default() += 1;
        }
    }
    per
}

/// The fewest copies of a `copies`-copy range that the fullest zone can hold, zones having
/// `sizes` members each; `copies` when the members cannot hold them all.
pub fn most_in_one_zone(copies: usize, sizes: &[usize]) -> usize {
    (1..=copies)
        .find(|&m| sizes.iter().map(|&c| c.min(m)).sum::<usize>() >= copies)
        .unwrap_or(copies)
}

/// `[cluster] placement` for `n` copies over the members' zones, `a:1,b:1,c:1`: copies handed
/// out one by one to the zone holding the fewest so far that has a member left for one —
/// among equals the larger zone, then by name — so every zone gets a copy before any gets a
/// second, and the counts add up to `n` (or to every member, when there are fewer). Never
/// fewer: CouchDB caps a zone's count at its nodes without a word (`c:2` of a one-node zone is
/// one copy), and a placement overrides `n`, so a rule naming fewer copies than `n` would make
/// every new database short of copies, silently. With fewer zones than `n` some zone holds two
/// copies of every new range; with more, only `n` zones (the largest) get new databases, and
/// `rebalance` spreads copies onto the others. `None` when no member has a zone.
pub fn placement_rule(zones: &Zones, members: &[String], n: usize) -> Option<String> {
    let sizes = sizes(zones, members);
    if sizes.is_empty() {
        return None;
    }
    let total = n.min(sizes.values().sum());
    let mut given: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..total {
        let next = sizes
            .iter()
            .filter(|(z, &c)| given.get(z.as_str()).copied().unwrap_or(0) < c)
            .min_by_key(|(z, &c)| {
                (
                    given.get(z.as_str()).copied().unwrap_or(0),
                    std::cmp::Reverse(c),
                    z.as_str(),
                )
            })
            .map(|(z, _)| z.as_str());
        if let Some(z) = next {
            *given.entry(z).or_default() += 1;
        }
    }
    Some(
        given
            .iter()
            .map(|(z, k)| format!("{z}:{k}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// A range whose copies share a zone where the zones would allow them not to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    pub db: String,
    pub range: String,
    pub zone: String,
    /// Copies in that zone, of `copies`.
    pub in_zone: usize,
    pub copies: usize,
}

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {} of {} copies in zone {}",
            self.db, self.range, self.in_zone, self.copies, self.zone
        )
    }
}

/// Every range whose fullest zone holds more of its copies than it must over the members'
/// zones (`most_in_one_zone`). Copies on nodes without a zone are not counted.
pub fn shared_ranges(docs: &[ShardDoc], zones: &Zones, members: &[String]) -> Vec<Shared> {
    let sizes: Vec<usize> = sizes(zones, members).into_values().collect();
    if sizes.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for doc in docs {
        for (range, nodes) in &doc.map {
            let mut per: BTreeMap<&str, usize> = BTreeMap::new();
            for n in nodes {
                if let Some(z) = zones.get(n) {
                    *per.entry(z.as_str()).or_default() += 1;
                }
            }
            // The fullest zone, the first by name among equals.
            let Some((zone, &in_zone)) = per.iter().rev().max_by_key(|(_, &c)| c) else {
                continue;
            };
            if in_zone > most_in_one_zone(nodes.len(), &sizes) {
                found.push(Shared {
                    db: doc.db.clone(),
                    range: range.clone(),
                    zone: zone.to_string(),
                    in_zone,
                    copies: nodes.len(),
                });
            }
        }
    }
    found
}

/// A node as the zone sources see it: its place in COUCHDB_NODES (if listed), its Erlang
/// name, and the zone it reports for itself (`[couchdb_cluster_init] zone`).
#[derive(Debug, Clone)]
pub struct Reporting<'a> {
    pub listed: Option<usize>,
    pub label: String,
    pub name: &'a str,
    pub reported: Option<&'a str>,
}

/// The zone of every node: from COUCHDB_ZONES when it is set (then it alone says), else from
/// each node's own report. `Ok(None)`: no node has a zone (zones are off). `Err` names each
/// node without a zone while others have one — a configuration error: CouchDB's placement
/// would leave such a node out of every new database. Also the Erlang names COUCHDB_ZONES
/// gives that are none of the nodes (a typo is also a node without a zone, named above).
pub fn declared(
    list: Option<&ZoneList>,
    nodes: &[Reporting],
) -> Result<(Option<Zones>, Vec<String>), String> {
    let mut zones = Zones::new();
    let mut without = Vec::new();
    for n in nodes {
        let zone = match list {
            Some(list) => list.zone_of(n.listed, n.name),
            None => n.reported,
        };
        match zone {
            Some(z) => {
                zones.insert(n.name.to_string(), z.to_string());
            }
            None => without.push(format!("{} ({})", n.label, n.name)),
        }
    }
    let unknown: Vec<String> = list
        .into_iter()
        .flat_map(ZoneList::names)
        .filter(|name| !nodes.iter().any(|n| n.name == *name))
        .map(str::to_string)
        .collect();
    if zones.is_empty() {
        return match list {
            // Set, yet naming none of these nodes.
            Some(_) if !nodes.is_empty() => Err(format!(
                "COUCHDB_ZONES gives none of the nodes a zone ({}): name each by its Erlang name or as in \
                 COUCHDB_NODES",
                crate::util::text::list_some(&without)
            )),
            _ => Ok((None, unknown)),
        };
    }
    if !without.is_empty() {
        let how = match list {
            Some(_) => "add it to COUCHDB_ZONES",
            None => "give its pod the zone too (its [couchdb_cluster_init] zone, docs/kubernetes.md), or set COUCHDB_ZONES",
        };
        return Err(format!(
            "{} {} no zone while {} other node(s) have one: {how}. Once one node has a zone every node needs one: \
             CouchDB's placement leaves a node without one out of every new database",
            crate::util::text::list_some(&without),
            if without.len() == 1 { "has" } else { "have" },
            zones.len()
        ));
    }
    Ok((Some(zones), unknown))
}

/// The zones in words for a log line: `3 zones (a: 2 nodes, b: 2, c: 1)`.
pub fn describe(zones: &Zones) -> String {
    let per: BTreeMap<&str, usize> = zones.values().fold(BTreeMap::new(), |mut m, z| {
        *m.entry(z.as_str()).or_default() += 1;
        m
    });
    let parts: Vec<String> = per
        .iter()
        .enumerate()
        .map(|(i, (z, c))| {
            if i == 0 {
                format!("{z}: {c} node{}", if *c == 1 { "" } else { "s" })
            } else {
                format!("{z}: {c}")
            }
        })
        .collect();
    format!(
        "{} zone{} ({})",
        per.len(),
        if per.len() == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

/// The zones a `[cluster] placement` names that no member is in: CouchDB then refuses every
/// new database (500 `no_nodes_in_zone`).
pub fn empty_zones(rule: &str, zones: &Zones, members: &[String]) -> Vec<String> {
    let present: BTreeSet<&str> = members
        .iter()
        .filter_map(|m| zones.get(m).map(String::as_str))
        .collect();
    rule.split(',')
        .filter_map(|r| r.split_once(':').map(|(z, _)| z.trim()))
        .filter(|z| !z.is_empty() && !present.contains(z))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones(pairs: &[(&str, &str)]) -> Zones {
        pairs
            .iter()
            .map(|(n, z)| (n.to_string(), z.to_string()))
            .collect()
    }

    fn names(z: &Zones) -> Vec<String> {
        z.keys().cloned().collect()
    }

    #[test]
    fn a_rule_names_n_copies_one_zone_each_before_any_zone_gets_two() {
        // Transcript 16: a = 2 nodes, b = 2, c = 1.
        let z = zones(&[
            ("n1", "a"),
            ("n2", "a"),
            ("n3", "b"),
            ("n4", "b"),
            ("n5", "c"),
        ]);
        assert_eq!(
            placement_rule(&z, &names(&z), 3).as_deref(),
            Some("a:1,b:1,c:1")
        );
        // Two zones for three copies: the larger one takes the second copy.
        let two = zones(&[("n1", "a"), ("n2", "b"), ("n3", "b")]);
        assert_eq!(
            placement_rule(&two, &names(&two), 3).as_deref(),
            Some("a:1,b:2")
        );
        // More zones than copies: n of them, the larger first.
        let four = zones(&[
            ("n1", "a"),
            ("n2", "b"),
            ("n3", "c"),
            ("n4", "d"),
            ("n5", "d"),
        ]);
        assert_eq!(
            placement_rule(&four, &names(&four), 3).as_deref(),
            Some("a:1,b:1,d:1")
        );
        // Fewer members than n: every member, no zone named beyond its nodes.
        let small = zones(&[("n1", "a"), ("n2", "b")]);
        assert_eq!(
            placement_rule(&small, &names(&small), 3).as_deref(),
            Some("a:1,b:1")
        );
        assert_eq!(placement_rule(&Zones::new(), &["n1".into()], 3), None);
        // Whatever the zones, the rule's counts add up to n when the members can hold n.
        for (sizes, n) in [
            (vec![1, 1, 1], 3),
            (vec![5, 1], 3),
            (vec![2, 2, 2], 5),
            (vec![1, 1], 2),
        ] {
            let mut z = Zones::new();
            for (i, c) in sizes.iter().enumerate() {
                for j in 0..*c {
                    z.insert(format!("n{i}-{j}"), format!("z{i}"));
                }
            }
            let rule = placement_rule(&z, &names(&z), n).unwrap();
            let total: usize = rule
                .split(',')
                .map(|r| r.split_once(':').unwrap().1.parse::<usize>().unwrap())
                .sum();
            assert_eq!(total, n, "{sizes:?}: {rule}");
        }
    }

    #[test]
    fn the_fullest_zone_holds_as_few_copies_as_the_zones_allow() {
        assert_eq!(most_in_one_zone(3, &[2, 2, 2]), 1);
        assert_eq!(most_in_one_zone(3, &[3, 3]), 2);
        assert_eq!(most_in_one_zone(4, &[2, 2]), 2);
        assert_eq!(most_in_one_zone(3, &[1, 5]), 2);
        assert_eq!(most_in_one_zone(3, &[6]), 3);
        // More copies than members: nothing to aim at.
        assert_eq!(most_in_one_zone(3, &[1, 1]), 3);
    }

    #[test]
    fn a_zone_of_every_node_from_one_source() {
        let list = crate::util::config::Config::from_vars(
            [
                ("COUCHDB_USER", "a"),
                ("COUCHDB_PASSWORD", "p"),
                ("COUCHDB_NODES", "h1,h2"),
                ("COUCHDB_ZONES", "h1=a,n2@h2.x=b,typo@h9.x=c"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap()
        .zones
        .unwrap();
        let nodes = [
            Reporting {
                listed: Some(0),
                label: "h1".into(),
                name: "n1@h1.x",
                reported: Some("ignored"),
            },
            Reporting {
                listed: Some(1),
                label: "h2".into(),
                name: "n2@h2.x",
                reported: None,
            },
        ];
        let (z, unknown) = declared(Some(&list), &nodes).unwrap();
        assert_eq!(z.unwrap(), zones(&[("n1@h1.x", "a"), ("n2@h2.x", "b")]));
        assert_eq!(unknown, ["typo@h9.x"]);
        // Without COUCHDB_ZONES each node's own report says; one without is named.
        let mut reported = nodes.clone();
        reported[0].reported = Some("eu-1a");
        let e = declared(None, &reported).unwrap_err();
        assert!(
            e.contains("h2 (n2@h2.x) has no zone") && e.contains("1 other"),
            "{e}"
        );
        reported[1].reported = Some("eu-1b");
        assert_eq!(
            declared(None, &reported).unwrap().0.unwrap()["n2@h2.x"],
            "eu-1b"
        );
        // No zone anywhere: zones are off.
        assert_eq!(declared(None, &[]).unwrap().0, None);
        let mut none = nodes.clone();
        none[0].reported = None;
        assert_eq!(declared(None, &none).unwrap().0, None);
    }

    #[test]
    fn a_placement_naming_a_zone_without_members_is_found() {
        let z = zones(&[("n1", "a"), ("n2", "b")]);
        assert_eq!(empty_zones("a:1,b:1", &z, &names(&z)), Vec::<String>::new());
        assert_eq!(empty_zones("a:1,z:1", &z, &names(&z)), ["z"]);
        assert_eq!(describe(&z), "2 zones (a: 1 node, b: 1)");
    }
}
