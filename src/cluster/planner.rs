//! Where copies should go: pure functions over shard maps, no I/O. `rebalance` and `remove`
//! plan here, the move engine (src/cluster/moves.rs) checks every edit here before it PUTs it, and
//! `--dry-run` prints these plans.
//!
//! Rules: never two copies of a range on one node; as few moves as possible; a database is
//! balanced when its copies per member differ by at most one (as even as q × n allows); among
//! equal choices, the node holding fewer copies over all databases wins, then the lower name,
//! so a plan is the same every time for the same maps.

use std::collections::{BTreeMap, BTreeSet};

use crate::client::{parse_file, Move, ShardDoc, ShardMap};

/// Copies per node over all databases.
pub type Load = BTreeMap<String, usize>;

/// What to do to one database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbPlan {
    pub db: String,
    /// Moves an earlier run started: finished first.
    pub unfinished: Vec<Move>,
    pub moves: Vec<Move>,
    /// (range, node): copies removed with no replacement (`remove --accept-fewer-copies`).
    pub drops: Vec<(String, String)>,
}

impl DbPlan {
    pub fn is_empty(&self) -> bool {
        self.unfinished.is_empty() && self.moves.is_empty() && self.drops.is_empty()
    }
}

/// The map once the moves an earlier run recorded are finished: each new copy that is in the
/// map replaces the old copy it was made for.
pub fn settled(doc: &ShardDoc) -> ShardMap {
    let mut map = doc.map.clone();
    for m in unfinished(doc) {
        if let Some(nodes) = map.get_mut(&m.range) {
            nodes.retain(|n| *n != m.from);
        }
    }
    map
}

/// The recorded moves that can still be finished: new copy in the map, old copy still there —
/// on two nodes (a record edited to `from == to` would have its one copy removed).
pub fn unfinished(doc: &ShardDoc) -> Vec<Move> {
    doc.moves
        .iter()
        .filter(|m| m.from != m.to)
        .filter(|m| {
            doc.map
                .get(&m.range)
                .is_some_and(|nodes| nodes.contains(&m.to) && nodes.contains(&m.from))
        })
        .cloned()
        .collect()
}

pub fn load<'a>(maps: impl IntoIterator<Item = &'a ShardMap>) -> Load {
    let mut load = Load::new();
    for map in maps {
        for node in map.values().flatten() {
            *load.entry(node.clone()).or_default() += 1;
        }
    }
    load
}

fn apply(load: &mut Load, moves: &[Move], drops: &[(String, String)]) {
    for m in moves {
        if let Some(c) = load.get_mut(&m.from) {
            *c = c.saturating_sub(1);
        }
        *load.entry(m.to.clone()).or_default() += 1;
    }
    for (_, node) in drops {
        if let Some(c) = load.get_mut(node) {
            *c = c.saturating_sub(1);
        }
    }
}

/// Copies of this database per member (members holding none included).
fn counts(map: &ShardMap, members: &[String]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = members.iter().map(|m| (m.clone(), 0)).collect();
    for node in map.values().flatten() {
        if let Some(c) = counts.get_mut(node) {
            *c += 1;
        }
    }
    counts
}

fn global(load: &Load, node: &str) -> usize {
    load.get(node).copied().unwrap_or(0)
}

/// Moves that spread one database evenly over `members`, fewest first. Copies on nodes that
/// are not in `members` stay where they are and are not counted.
pub fn balance(map: &ShardMap, members: &[String], load: &Load) -> Vec<Move> {
    let mut map = map.clone();
    let mut counts = counts(&map, members);
    let (Some(&max), Some(&min)) = (counts.values().max(), counts.values().min()) else {
        return Vec::new();
    };
    if max - min <= 1 {
        return Vec::new();
    }
    let total: usize = counts.values().sum();
    let (base, extra) = (total / members.len(), total % members.len());
    // The nodes that keep one copy more than the others: those holding the most already (fewest
    // moves), then the least loaded over all databases.
    let mut order: Vec<&String> = members.iter().collect();
    order.sort_by_key(|n| (std::cmp::Reverse(counts[*n]), global(load, n), (*n).clone()));
    let target: BTreeMap<String, usize> = order
        .iter()
        .enumerate()
        .map(|(i, n)| ((*n).clone(), base + usize::from(i < extra)))
        .collect();
    let mut moves = Vec::new();
    loop {
        let over = members
            .iter()
            .filter(|n| counts[*n] > target[*n])
            .max_by_key(|n| {
                (
                    counts[*n] - target[*n],
                    global(load, n),
                    std::cmp::Reverse(*n),
                )
            });
        let under = members
            .iter()
            .filter(|n| counts[*n] < target[*n])
            .max_by_key(|n| {
                (
                    target[*n] - counts[*n],
                    std::cmp::Reverse(global(load, n)),
                    std::cmp::Reverse(*n),
                )
            });
        let (Some(from), Some(to)) = (over.cloned(), under.cloned()) else {
            return moves;
        };
        // `from` holds more ranges than `to`, so one of them is not on `to` yet.
        let Some(range) = map
            .iter()
            .find(|(_, nodes)| nodes.contains(&from) && !nodes.contains(&to))
            .map(|(r, _)| r.clone())
        else {
            return moves;
        };
        if let Some(nodes) = map.get_mut(&range) {
            nodes.retain(|n| *n != from);
            nodes.push(to.clone());
        }
        *counts.entry(from.clone()).or_default() -= 1;
        *counts.entry(to.clone()).or_default() += 1;
        moves.push(Move { range, from, to });
    }
}

/// A new home for every copy `leaving` holds: a member that lacks that range, the one holding
/// the fewest copies of this database, then over all. Returns the moves and the ranges no
/// member can take.
pub fn evacuate(
    map: &ShardMap,
    leaving: &str,
    members: &[String],
    load: &Load,
) -> (Vec<Move>, Vec<String>) {
    let others: Vec<String> = members.iter().filter(|m| *m != leaving).cloned().collect();
    let mut counts = counts(map, &others);
    let (mut moves, mut homeless) = (Vec::new(), Vec::new());
    for (range, nodes) in map {
        if !nodes.iter().any(|n| n == leaving) {
            continue;
        }
        let home = others
            .iter()
            .filter(|m| !nodes.contains(m))
            .min_by_key(|m| (counts[*m], global(load, m), (*m).clone()));
        match home {
            Some(to) => {
                *counts.entry(to.clone()).or_default() += 1;
                moves.push(Move {
                    range: range.clone(),
                    from: leaving.to_string(),
                    to: to.clone(),
                });
            }
            None => homeless.push(range.clone()),
        }
    }
    (moves, homeless)
}

/// `rebalance`: every database balanced in turn, each one's choices tie-broken by the load
/// the plans before it leave.
pub fn plan_rebalance(docs: &[ShardDoc], members: &[String]) -> Vec<DbPlan> {
    let settled: Vec<ShardMap> = docs.iter().map(settled).collect();
    let mut load = load(&settled);
    docs.iter()
        .zip(&settled)
        .map(|(doc, map)| {
            let moves = balance(map, members, &load);
            apply(&mut load, &moves, &[]);
            DbPlan {
                db: doc.db.clone(),
                unfinished: unfinished(doc),
                moves,
                drops: Vec::new(),
            }
        })
        .collect()
}

/// `remove`: every copy on `leaving` gets a new home; with `accept_fewer`, a copy no member can
/// take is dropped, else it is listed in the `Err` as (database, range).
pub fn plan_removal(
    docs: &[ShardDoc],
    leaving: &str,
    members: &[String],
    accept_fewer: bool,
) -> Result<Vec<DbPlan>, Vec<(String, String)>> {
    let settled: Vec<ShardMap> = docs.iter().map(settled).collect();
    let mut load = load(&settled);
    let mut plans = Vec::new();
    let mut short = Vec::new();
    for (doc, map) in docs.iter().zip(&settled) {
        let (moves, homeless) = evacuate(map, leaving, members, &load);
        let drops: Vec<(String, String)> = homeless
            .into_iter()
            .map(|r| (r, leaving.to_string()))
            .collect();
        if !accept_fewer {
            short.extend(drops.iter().map(|(r, _)| (doc.db.clone(), r.clone())));
        }
        apply(&mut load, &moves, &drops);
        plans.push(DbPlan {
            db: doc.db.clone(),
            unfinished: unfinished(doc),
            moves,
            drops: if accept_fewer { drops } else { Vec::new() },
        });
    }
    if short.is_empty() {
        Ok(plans)
    } else {
        Err(short)
    }
}

/// A plan in words, for `--dry-run` and the log: one line per database that changes, then
/// the copies per node before and after.
pub fn render_plan(docs: &[ShardDoc], plans: &[DbPlan]) -> String {
    let changing: Vec<&DbPlan> = plans.iter().filter(|p| !p.is_empty()).collect();
    let moves: usize = changing
        .iter()
        .map(|p| p.unfinished.len() + p.moves.len())
        .sum();
    let drops: usize = changing.iter().map(|p| p.drops.len()).sum();
    if changing.is_empty() {
        return "plan: nothing to do: every database is already where it should be".into();
    }
    let mut out = vec![format!(
        "plan: {} database(s) to change: {moves} move(s){}",
        changing.len(),
        if drops > 0 {
            format!(", {drops} cop(ies) dropped with no replacement")
        } else {
            String::new()
        }
    )];
    let words = |ms: &[Move]| -> String {
        ms.iter()
            .map(|m| format!("{} {} → {}", m.range, m.from, m.to))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for p in &changing {
        let mut parts = Vec::new();
        if !p.unfinished.is_empty() {
            parts.push(format!("finish the interrupted {}", words(&p.unfinished)));
        }
        if !p.moves.is_empty() {
            parts.push(words(&p.moves));
        }
        for (range, node) in &p.drops {
            parts.push(format!("drop {range} on {node} (no member can take it)"));
        }
        out.push(format!("  {}: {}", p.db, parts.join("; ")));
    }
    let before = load(docs.iter().map(|d| &d.map));
    let mut after = load(docs.iter().map(settled).collect::<Vec<_>>().iter());
    for p in plans {
        apply(&mut after, &p.moves, &p.drops);
    }
    let nodes: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let per_node: Vec<String> = nodes
        .iter()
        .map(|n| format!("{n} {} → {}", global(&before, n), global(&after, n)))
        .collect();
    out.push(format!("copies per node: {}", per_node.join(", ")));
    out.join("\n")
}

/// A shard file on a node whose shard map does not list that copy (trap 16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub node: String,
    pub file: String,
    /// The database it is an old copy of; `None` when no current database owns the file (it
    /// belongs to a database deleted or re-created meanwhile): reported, never deleted.
    pub db: Option<String>,
    pub range: String,
}

/// Files (`node` → its `_all_dbs`) that hold a copy no shard map lists.
pub fn leftovers(docs: &[ShardDoc], files: &BTreeMap<String, Vec<String>>) -> Vec<Leftover> {
    let mut found = Vec::new();
    for (node, list) in files {
        for file in list {
            let Some((range, db, suffix)) = parse_file(file) else {
                continue;
            };
            let owner = docs.iter().find(|d| d.db == db && d.suffix == suffix);
            let listed = owner
                .and_then(|d| d.map.get(range))
                .is_some_and(|nodes| nodes.contains(node));
            if !listed {
                found.push(Leftover {
                    node: node.clone(),
                    file: file.clone(),
                    db: owner.map(|d| d.db.clone()),
                    range: range.to_string(),
                });
            }
        }
    }
    found
}

/// What an edit may do; anything else is refused before the PUT (trap 12: CouchDB accepts a
/// non-member, a misspelled range or a range left with no copy, with 201).
#[derive(Debug, Default)]
pub struct Rules {
    /// Nodes a copy may be added on: connected members.
    pub may_add_on: BTreeSet<String>,
    /// (range, node) copies this edit may remove.
    pub may_remove: BTreeSet<(String, String)>,
    /// range → the fewest copies it may be left with (default: as many as before the edit).
    pub floor: BTreeMap<String, usize>,
}

pub fn check_edit(
    db: &str,
    before: &ShardMap,
    after: &ShardMap,
    rules: &Rules,
) -> Result<(), String> {
    let refuse = |why: String| Err(format!("refusing to write the shard map of {db}: {why}"));
    if before.keys().ne(after.keys()) {
        return refuse(format!(
            "its ranges would change from {:?} to {:?}",
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>()
        ));
    }
    for (range, nodes) in after {
        let old: BTreeSet<&String> = before[range].iter().collect();
        let new: BTreeSet<&String> = nodes.iter().collect();
        if new.len() != nodes.len() {
            return refuse(format!("range {range} would list a node twice"));
        }
        if let Some(stranger) = new
            .difference(&old)
            .find(|n| !rules.may_add_on.contains(**n))
        {
            return refuse(format!(
                "range {range} would get a copy on {stranger}, which is not a connected member"
            ));
        }
        if let Some(kept) = old
            .difference(&new)
            .find(|n| !rules.may_remove.contains(&(range.clone(), (**n).clone())))
        {
            return refuse(format!(
                "range {range} would lose its copy on {kept}, which this step may not remove"
            ));
        }
        let floor = rules.floor.get(range).copied().unwrap_or(old.len()).max(1);
        if nodes.len() < floor {
            return refuse(format!(
                "range {range} would keep {} cop{} where it must keep {floor}",
                nodes.len(),
                if nodes.len() == 1 { "y" } else { "ies" }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00000000-7fffffff";
    const B: &str = "80000000-ffffffff";

    fn n(i: usize) -> String {
        format!("node{i}@127.0.0.1")
    }

    fn nodes(ids: &[usize]) -> Vec<String> {
        ids.iter().map(|&i| n(i)).collect()
    }

    fn map(ranges: &[(&str, &[usize])]) -> ShardMap {
        ranges
            .iter()
            .map(|(r, ids)| (r.to_string(), nodes(ids)))
            .collect()
    }

    fn after(mut m: ShardMap, moves: &[Move]) -> ShardMap {
        for mv in moves {
            let list = m.get_mut(&mv.range).unwrap();
            assert!(
                list.contains(&mv.from),
                "{mv:?} from a node without the copy"
            );
            assert!(
                !list.contains(&mv.to),
                "{mv:?}: two copies of a range on one node"
            );
            list.retain(|x| *x != mv.from);
            list.push(mv.to.clone());
        }
        m
    }

    fn per_node(m: &ShardMap, members: &[String]) -> Vec<usize> {
        counts(m, members).into_values().collect()
    }

    #[test]
    fn three_to_five_needs_two_moves_as_in_transcript_13() {
        let old = map(&[(A, &[1, 2, 3]), (B, &[1, 2, 3])]);
        let members = nodes(&[1, 2, 3, 4, 5]);
        let moves = balance(&old, &members, &Load::new());
        assert_eq!(moves.len(), 2, "{moves:?}");
        let new = after(old, &moves);
        let mut c = per_node(&new, &members);
        c.sort();
        assert_eq!(c, [1, 1, 1, 1, 2]);
        assert!(moves.iter().any(|m| m.to == n(4)) && moves.iter().any(|m| m.to == n(5)));
    }

    #[test]
    fn a_balanced_database_is_left_alone() {
        let members = nodes(&[1, 2, 3, 4, 5]);
        for m in [
            map(&[(A, &[1, 2, 4]), (B, &[3, 4, 5])]),
            map(&[(A, &[1, 2, 3])]),
        ] {
            assert_eq!(balance(&m, &members, &Load::new()), []);
        }
        let three = nodes(&[1, 2, 3]);
        assert_eq!(
            balance(
                &map(&[(A, &[1, 2, 3]), (B, &[1, 2, 3])]),
                &three,
                &Load::new()
            ),
            []
        );
    }

    #[test]
    fn balance_is_as_even_as_q_times_n_allows_with_fewest_moves() {
        // q = 8, n = 3 on 3 nodes, grown to 7: 24 copies → 3 or 4 each.
        let ranges: Vec<String> = (0..8)
            .map(|i| format!("{:08x}-{:08x}", i << 28, (i << 28) | 0x0fff_ffff))
            .collect();
        let old: ShardMap = ranges
            .iter()
            .map(|r| (r.clone(), nodes(&[1, 2, 3])))
            .collect();
        let members = nodes(&[1, 2, 3, 4, 5, 6, 7]);
        let moves = balance(&old, &members, &Load::new());
        let new = after(old, &moves);
        let c = per_node(&new, &members);
        assert!(
            c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
            "{c:?}"
        );
        // 24 / 7 = 3 rest 3: the three old nodes keep 4 each, so 12 copies move — no fewer can.
        assert_eq!(moves.len(), 12);
        for nodes in new.values() {
            assert_eq!(nodes.iter().collect::<BTreeSet<_>>().len(), 3);
        }
    }

    #[test]
    fn random_maps_end_balanced_with_the_fewest_moves() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |k: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % k as u64) as usize
        };
        for _ in 0..500 {
            let m = 1 + rand(9);
            let members: Vec<String> = (1..=m).map(n).collect();
            let q = 1 + rand(8);
            let copies = 1 + rand(m.min(4));
            let old: ShardMap = (0..q)
                .map(|r| {
                    let mut pool = members.clone();
                    let held: Vec<String> =
                        (0..copies).map(|_| pool.remove(rand(pool.len()))).collect();
                    (format!("{r:08x}"), held)
                })
                .collect();
            let moves = balance(&old, &members, &Load::new());
            let new = after(old.clone(), &moves);
            let c = per_node(&new, &members);
            assert!(
                c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
                "{old:?} → {new:?}"
            );
            // The fewest: the nodes holding the most keep the one extra copy.
            let mut before = per_node(&old, &members);
            before.sort_by(|a, b| b.cmp(a));
            let (base, extra) = (q * copies / m, q * copies % m);
            let least: usize = before
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(base + usize::from(i < extra)))
                .sum();
            assert_eq!(moves.len(), least, "{old:?}");
        }
    }

    #[test]
    fn ties_go_to_the_least_loaded_node_and_plans_repeat() {
        let old = map(&[(A, &[1, 2, 3]), (B, &[1, 2, 3])]);
        let members = nodes(&[1, 2, 3, 4, 5]);
        let mut load = Load::new();
        load.insert(n(1), 50);
        load.insert(n(2), 40);
        load.insert(n(3), 10);
        let moves = balance(&old, &members, &load);
        let new = after(old.clone(), &moves);
        assert_eq!(
            counts(&new, &members)[&n(3)],
            2,
            "the least loaded keeps two: {moves:?}"
        );
        assert_eq!(moves, balance(&old, &members, &load));
    }

    #[test]
    fn evacuate_finds_a_member_lacking_each_range() {
        // Transcript 12: node4 holds A of _users; node1–3 remain.
        let users = map(&[(A, &[1, 2, 4]), (B, &[1, 2, 3])]);
        let (moves, homeless) = evacuate(&users, &n(4), &nodes(&[1, 2, 3, 4]), &Load::new());
        assert_eq!(
            moves,
            [Move {
                range: A.into(),
                from: n(4),
                to: n(3)
            }]
        );
        assert!(homeless.is_empty());
        // n = 3 on three nodes: the two left cannot hold three copies.
        let full = map(&[(A, &[1, 2, 3]), (B, &[1, 2, 3])]);
        let (moves, homeless) = evacuate(&full, &n(3), &nodes(&[1, 2, 3]), &Load::new());
        assert!(moves.is_empty());
        assert_eq!(homeless, [A, B]);
    }

    #[test]
    fn evacuate_spreads_over_the_least_loaded() {
        let m = map(&[(A, &[1, 2, 5]), (B, &[3, 4, 5])]);
        let (moves, _) = evacuate(&m, &n(5), &nodes(&[1, 2, 3, 4, 5, 6]), &Load::new());
        // node6 holds none of this database: it takes the first; then every candidate holds
        // one, and the lowest name takes the second.
        assert_eq!(
            moves.iter().map(|m| m.to.clone()).collect::<Vec<_>>(),
            [n(6), n(1)]
        );
        let c = per_node(&after(m, &moves), &nodes(&[1, 2, 3, 4, 5, 6]));
        assert_eq!(c, [2, 1, 1, 1, 0, 1]);
    }

    fn doc(db: &str, m: ShardMap, moves: Vec<Move>) -> ShardDoc {
        let mut v = serde_json::json!({
            "_id": db, "_rev": "1-x", "shard_suffix": [46, 49],
            "by_range": m,
            "by_node": {},
        });
        let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (r, ns) in &m {
            for x in ns {
                by_node.entry(x.clone()).or_default().push(r.clone());
            }
        }
        v["by_node"] = serde_json::json!(by_node);
        if !moves.is_empty() {
            v[crate::client::INTENT_FIELD] = serde_json::json!({ "moves": moves });
        }
        ShardDoc::parse(v).unwrap()
    }

    #[test]
    fn removal_is_refused_when_members_cannot_hold_n_copies() {
        let docs = [doc("a", map(&[(A, &[1, 2, 3]), (B, &[1, 2, 3])]), vec![])];
        let short = plan_removal(&docs, &n(3), &nodes(&[1, 2, 3]), false).unwrap_err();
        assert_eq!(
            short,
            [
                ("a".to_string(), A.to_string()),
                ("a".to_string(), B.to_string())
            ]
        );
        let plans = plan_removal(&docs, &n(3), &nodes(&[1, 2, 3]), true).unwrap();
        assert_eq!(
            plans[0].drops,
            [(A.to_string(), n(3)), (B.to_string(), n(3))]
        );
    }

    #[test]
    fn an_interrupted_move_is_finished_not_planned_again() {
        // A run added node4 to A (to replace node3) and was killed before the remove edit.
        let m = Move {
            range: A.into(),
            from: n(3),
            to: n(4),
        };
        let d = doc(
            "old",
            map(&[(A, &[1, 2, 3, 4]), (B, &[1, 2, 3])]),
            vec![m.clone()],
        );
        assert_eq!(settled(&d), map(&[(A, &[1, 2, 4]), (B, &[1, 2, 3])]));
        let plans = plan_rebalance(std::slice::from_ref(&d), &nodes(&[1, 2, 3, 4, 5]));
        assert_eq!(plans[0].unfinished, [m]);
        // The rest of the plan starts from the settled map: one more move, onto node5.
        assert_eq!(plans[0].moves.len(), 1);
        assert_eq!(plans[0].moves[0].to, n(5));
        // A database without intent, with four copies, was made with n = 4: left alone.
        let d4 = doc("n4", map(&[(A, &[1, 2, 3, 4]), (B, &[2, 3, 4, 5])]), vec![]);
        assert!(plan_rebalance(&[d4], &nodes(&[1, 2, 3, 4, 5]))[0].is_empty());
    }

    #[test]
    fn a_recorded_move_onto_its_own_node_is_no_move() {
        // An intent edited by hand (or garbled) with from == to: "finishing" it would remove
        // that node's copy and put nothing in its place.
        let bogus = Move {
            range: A.into(),
            from: n(3),
            to: n(3),
        };
        let d = doc("old", map(&[(A, &[1, 2, 3]), (B, &[1, 2, 3])]), vec![bogus]);
        assert!(unfinished(&d).is_empty());
        assert_eq!(settled(&d), d.map);
    }

    #[test]
    fn more_copies_than_members_never_doubles_a_range() {
        // n = 3 on two members (a third copy on a node that left): nothing sensible to move.
        let m = map(&[(A, &[1, 2, 9])]);
        assert_eq!(balance(&m, &nodes(&[1, 2]), &Load::new()), []);
    }

    #[test]
    fn leftovers_are_files_no_map_lists() {
        let d = doc("a/b", map(&[(A, &[1, 2, 4]), (B, &[1, 2, 3])]), vec![]);
        let files: BTreeMap<String, Vec<String>> = [
            (
                n(3),
                vec![
                    "_dbs".into(),
                    format!("shards/{A}/a/b.1"),
                    format!("shards/{B}/a/b.1"),
                ],
            ),
            (
                n(4),
                vec![format!("shards/{A}/a/b.1"), format!("shards/{A}/gone.7")],
            ),
        ]
        .into_iter()
        .collect();
        let found = leftovers(&[d], &files);
        assert_eq!(
            found,
            [
                Leftover {
                    node: n(3),
                    file: format!("shards/{A}/a/b.1"),
                    db: Some("a/b".into()),
                    range: A.into()
                },
                Leftover {
                    node: n(4),
                    file: format!("shards/{A}/gone.7"),
                    db: None,
                    range: A.into()
                },
            ]
        );
    }

    fn rules(add: &[usize], remove: &[(&str, usize)], floor: &[(&str, usize)]) -> Rules {
        Rules {
            may_add_on: nodes(add).into_iter().collect(),
            may_remove: remove.iter().map(|(r, i)| (r.to_string(), n(*i))).collect(),
            floor: floor.iter().map(|(r, f)| (r.to_string(), *f)).collect(),
        }
    }

    #[test]
    fn edits_couchdb_would_accept_but_lose_data_are_refused() {
        let before = map(&[(A, &[1, 2, 3]), (B, &[1, 2, 3])]);
        let ok = map(&[(A, &[1, 2, 3, 4]), (B, &[1, 2, 3])]);
        check_edit("db", &before, &ok, &rules(&[4], &[], &[])).unwrap();
        for (bad, r, why) in [
            (
                map(&[(A, &[1, 2, 3, 9]), (B, &[1, 2, 3])]),
                rules(&[4], &[], &[]),
                "not a connected member",
            ),
            (
                map(&[(A, &[1, 2, 3]), ("80000000-fffffffe", &[1, 2, 3])]),
                rules(&[4], &[], &[]),
                "ranges would change",
            ),
            (
                map(&[(A, &[1, 2]), (B, &[1, 2, 3])]),
                rules(&[], &[], &[]),
                "may not remove",
            ),
            (
                map(&[(A, &[1, 2]), (B, &[1, 2, 3])]),
                rules(&[], &[(A, 3)], &[]),
                "must keep 3",
            ),
            (
                map(&[(A, &[]), (B, &[1, 2, 3])]),
                rules(&[], &[(A, 1), (A, 2), (A, 3)], &[(A, 0)]),
                "must keep 1",
            ),
            (
                map(&[(A, &[1, 1, 2, 3]), (B, &[1, 2, 3])]),
                rules(&[1], &[], &[]),
                "twice",
            ),
        ] {
            let e = check_edit("db", &before, &bad, &r).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        // Removing the old copy once the new one is in, down to the count before the move.
        let moved = map(&[(A, &[1, 2, 4]), (B, &[1, 2, 3])]);
        check_edit("db", &ok, &moved, &rules(&[], &[(A, 3)], &[(A, 3)])).unwrap();
    }
}
