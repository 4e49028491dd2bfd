//! Where copies should go: pure functions over shard maps, no I/O. `rebalance` and `remove`
//! plan here, the move engine (src/cluster/moves.rs) checks every edit here before it PUTs it, and
//! `--dry-run` prints these plans.
//!
//! Rules: never two copies of a range on one node; as few moves as possible; with zones
//! (src/cluster/zones.rs), first every range spread over as many zones as its copies and the
//! zones allow (`Placement::spread_zones`), and no later move takes that back; then a database
//! is balanced when its copies per member differ by at most one (as even as q × n allows), and
//! the cluster when its members' copies over all databases do too, where moves can get there
//! (`Placement::level`); among equal choices, the copy whose bytes best even out the members'
//! bytes, then the node holding fewer copies, then the lower name, so a plan is the same every
//! time for the same maps. `node_loads` gives copies and bytes per node for `status` (and any
//! other report).

use std::collections::{BTreeMap, BTreeSet};

use crate::client::{parse_file, Move, ShardDoc, ShardMap};
use crate::cluster::zones::{most_in_one_zone, Zones};
use crate::util::text::bytes;

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

/// The zone rule for the functions that plan one database by name: a copy may go from one
/// zone to another only while the zone it goes to then holds no more of the range's copies
/// than it must (`most_in_one_zone` over the members' zones). A node without a zone counts as
/// a zone of its own (callers refuse such a cluster; this keeps a plan sane if one slips by).
/// No member with a zone: every move is allowed, as before zones.
struct ZoneRule<'a> {
    zones: &'a Zones,
    /// Members per zone.
    sizes: Vec<usize>,
}

impl<'a> ZoneRule<'a> {
    fn new(zones: &'a Zones, members: &[String]) -> Self {
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        if members.iter().any(|m| zones.contains_key(m)) {
            for m in members {
                *per.entry(zone_key(zones, m)).or_default() += 1;
            }
        }
        ZoneRule {
            zones,
            sizes: per.into_values().collect(),
        }
    }

    /// May the copy of a range held by `holders` go from `from` to `to`?
    fn allows(&self, holders: &[String], from: &str, to: &str) -> bool {
        if self.sizes.is_empty() {
            return true;
        }
        let zt = zone_key(self.zones, to);
        if zone_key(self.zones, from) == zt {
            return true;
        }
        let there = holders
            .iter()
            .filter(|h| *h != from && zone_key(self.zones, h) == zt)
            .count();
        there < most_in_one_zone(holders.len(), &self.sizes)
    }
}

/// A node's zone, or its own name when it has none.
fn zone_key<'z>(zones: &'z Zones, node: &'z str) -> &'z str {
    zones.get(node).map_or(node, String::as_str)
}

/// Moves that spread one database evenly over `members`, fewest first. Copies on nodes that
/// are not in `members` stay where they are and are not counted.
#[cfg(test)]
fn balance(map: &ShardMap, members: &[String], load: &Load) -> Vec<Move> {
    balance_where(map, members, load, &ZoneRule::new(&Zones::new(), members))
}

/// `balance`, each move kept within the zone rule: where the preferred pair of nodes has no
/// range it may move, the next pair is tried.
fn balance_where(map: &ShardMap, members: &[String], load: &Load, rule: &ZoneRule) -> Vec<Move> {
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
        // The most over and the most under first (every key ends in the name: no ties).
        let mut over: Vec<&String> = members.iter().filter(|n| counts[*n] > target[*n]).collect();
        over.sort_by_key(|n| {
            std::cmp::Reverse((
                counts[*n] - target[*n],
                global(load, n),
                std::cmp::Reverse(*n),
            ))
        });
        let mut under: Vec<&String> = members.iter().filter(|n| counts[*n] < target[*n]).collect();
        under.sort_by_key(|n| {
            std::cmp::Reverse((
                target[*n] - counts[*n],
                std::cmp::Reverse(global(load, n)),
                std::cmp::Reverse(*n),
            ))
        });
        // `from` holds more ranges than `to`, so one of them is not on `to` yet; without zones
        // the first pair always has one.
        let found = over.iter().find_map(|from| {
            under.iter().find_map(|to| {
                map.iter()
                    .find(|(_, nodes)| {
                        nodes.contains(from) && !nodes.contains(to) && rule.allows(nodes, from, to)
                    })
                    .map(|(r, _)| (r.clone(), (*from).clone(), (*to).clone()))
            })
        });
        let Some((range, from, to)) = found else {
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

/// A new home for every copy `leaving` holds: a member that lacks that range — within the
/// zone rule where one can, else anywhere (a copy kept comes before its zone) — the one
/// holding the fewest copies of this database, then over all. Returns the moves and the ranges
/// no member can take.
pub fn evacuate(
    map: &ShardMap,
    leaving: &str,
    members: &[String],
    load: &Load,
    zones: &Zones,
) -> (Vec<Move>, Vec<String>) {
    let others: Vec<String> = members.iter().filter(|m| *m != leaving).cloned().collect();
    let rule = ZoneRule::new(zones, &others);
    let mut counts = counts(map, &others);
    let (mut moves, mut homeless) = (Vec::new(), Vec::new());
    for (range, nodes) in map {
        if !nodes.iter().any(|n| n == leaving) {
            continue;
        }
        let home = others
            .iter()
            .filter(|m| !nodes.contains(m))
            .min_by_key(|m| {
                (
                    !rule.allows(nodes, leaving, m),
                    counts[*m],
                    global(load, m),
                    (*m).clone(),
                )
            });
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

/// Bytes of each copy whose size was read: (database, range, node) → its file's size.
pub type Sizes = BTreeMap<(String, String, String), u64>;

/// What one node holds over all databases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub copies: usize,
    /// The sizes of the copies it holds whose size is known.
    pub bytes: u64,
}

/// Copies and bytes per node over all databases, as `maps` place them (every node a map
/// names; `members` holding nothing are listed with zero).
pub fn node_loads(
    docs: &[ShardDoc],
    sizes: &Sizes,
    members: &[String],
) -> BTreeMap<String, NodeLoad> {
    let mut loads: BTreeMap<String, NodeLoad> = members
        .iter()
        .map(|m| (m.clone(), NodeLoad::default()))
        .collect();
    for doc in docs {
        for (range, nodes) in &doc.map {
            let bytes = range_bytes(doc, range, sizes);
            for node in nodes {
                let l = loads.entry(node.clone()).or_default();
                l.copies += 1;
                l.bytes += sizes
                    .get(&(doc.db.clone(), range.clone(), node.clone()))
                    .copied()
                    .unwrap_or(bytes);
            }
        }
    }
    loads
}

/// What a copy of `range` weighs once filled: the largest of its copies whose size is known.
fn range_bytes(doc: &ShardDoc, range: &str, sizes: &Sizes) -> u64 {
    doc.map
        .get(range)
        .into_iter()
        .flatten()
        .filter_map(|n| sizes.get(&(doc.db.clone(), range.to_string(), n.clone())))
        .max()
        .copied()
        .unwrap_or(0)
}

/// The whole cluster while a plan is made: each database's map with the moves planned so far,
/// and what each node holds. Nodes and ranges are numbered (nodes in name order, so comparing
/// numbers compares names): choosing among thousands of copies is then a scan of small arrays.
struct Placement {
    /// Node number → name, in name order.
    nodes: Vec<String>,
    /// Per database: its ranges' names, and per range the numbers of the nodes holding it.
    ranges: Vec<Vec<String>>,
    maps: Vec<Vec<Vec<usize>>>,
    /// Per database, per range: bytes of one filled copy.
    weight: Vec<Vec<u64>>,
    /// Per database: (range, from, to) moves planned.
    moves: Vec<Vec<(usize, usize, usize)>>,
    /// Per node number.
    loads: Vec<NodeLoad>,
    /// Per node number: the (database, range) copies it holds.
    held: Vec<BTreeSet<(usize, usize)>>,
    /// Per node number: its zone's number (a node without a zone: one of its own).
    zone: Vec<usize>,
    /// The plan's members per zone; empty when no member has a zone (no zone rule).
    zone_sizes: Vec<usize>,
}

impl Placement {
    fn new(
        docs: &[ShardDoc],
        maps: &[ShardMap],
        sizes: &Sizes,
        members: &[String],
        zones: &Zones,
    ) -> Self {
        let names: BTreeSet<&String> = members
            .iter()
            .chain(maps.iter().flat_map(|m| m.values().flatten()))
            .collect();
        let nodes: Vec<String> = names.into_iter().cloned().collect();
        let keys: Vec<&str> = nodes.iter().map(|n| zone_key(zones, n)).collect();
        let distinct: BTreeSet<&str> = keys.iter().copied().collect();
        let number = |k: &str| distinct.iter().position(|d| *d == k).unwrap_or(0);
        let zone: Vec<usize> = keys.iter().map(|k| number(k)).collect();
        let mut zone_sizes = vec![0; distinct.len()];
        if members.iter().any(|m| zones.contains_key(m)) {
            for m in members {
                zone_sizes[number(zone_key(zones, m))] += 1;
            }
            zone_sizes.retain(|&c| c > 0);
        } else {
            zone_sizes.clear();
        }
        let mut p = Placement {
            loads: vec![NodeLoad::default(); nodes.len()],
            held: vec![BTreeSet::new(); nodes.len()],
            zone,
            zone_sizes,
            nodes,
            ranges: Vec::new(),
            maps: Vec::new(),
            weight: Vec::new(),
            moves: vec![Vec::new(); docs.len()],
        };
        for (i, (doc, map)) in docs.iter().zip(maps).enumerate() {
            let mut ranges = Vec::new();
            let mut holders = Vec::new();
            let mut weights = Vec::new();
            for (r, (range, on)) in map.iter().enumerate() {
                let w = range_bytes(doc, range, sizes);
                let on: Vec<usize> = on.iter().filter_map(|n| p.node(n)).collect();
                for &n in &on {
                    p.loads[n].copies += 1;
                    p.loads[n].bytes += w;
                    p.held[n].insert((i, r));
                }
                ranges.push(range.clone());
                holders.push(on);
                weights.push(w);
            }
            p.ranges.push(ranges);
            p.maps.push(holders);
            p.weight.push(weights);
        }
        p
    }

    fn node(&self, name: &str) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }

    fn numbers(&self, names: &[String]) -> Vec<usize> {
        names.iter().filter_map(|n| self.node(n)).collect()
    }

    /// Copies per node, by name: the tie-break `balance` and `evacuate` take.
    fn loads_by_copies(&self) -> Load {
        self.nodes
            .iter()
            .zip(&self.loads)
            .map(|(n, l)| (n.clone(), l.copies))
            .collect()
    }

    /// `shift` for a move named as `balance` and `evacuate` name it.
    fn shift_named(&mut self, db: usize, m: &Move) {
        let r = self.ranges[db].iter().position(|r| *r == m.range);
        if let (Some(r), Some(from), Some(to)) = (r, self.node(&m.from), self.node(&m.to)) {
            self.shift(db, r, from, to);
        }
    }

    /// Moves the copy of range `r` of `db` from `from` to `to`, folding it into a move planned
    /// earlier for that copy (a → b then b → c is a → c; a → b then b → a is no move).
    fn shift(&mut self, db: usize, r: usize, from: usize, to: usize) {
        let on = &mut self.maps[db][r];
        on.retain(|n| *n != from);
        on.push(to);
        let w = self.weight[db][r];
        let l = &mut self.loads[from];
        l.copies = l.copies.saturating_sub(1);
        l.bytes = l.bytes.saturating_sub(w);
        self.loads[to].copies += 1;
        self.loads[to].bytes += w;
        self.held[from].remove(&(db, r));
        self.held[to].insert((db, r));
        let moves = &mut self.moves[db];
        match moves.iter().position(|m| m.0 == r && m.2 == from) {
            Some(i) if moves[i].1 == to => {
                moves.remove(i);
            }
            Some(i) => moves[i].2 = to,
            None => moves.push((r, from, to)),
        }
    }

    /// Copies of database `db` on node `n`.
    fn db_copies(&self, db: usize, n: usize) -> usize {
        self.maps[db].iter().filter(|on| on.contains(&n)).count()
    }

    /// The most copies of range `r` of `db` one zone should hold.
    fn zone_limit(&self, db: usize, r: usize) -> usize {
        most_in_one_zone(self.maps[db][r].len(), &self.zone_sizes)
    }

    /// Copies of range `r` of `db` in zone `z`.
    fn in_zone(&self, db: usize, r: usize, z: usize) -> usize {
        self.maps[db][r]
            .iter()
            .filter(|&&n| self.zone[n] == z)
            .count()
    }

    /// May the copy of range `r` of `db` go from `from` to `to` without its zones getting
    /// fuller than they must? Always, within one zone, or without zones.
    fn zone_ok(&self, db: usize, r: usize, from: usize, to: usize) -> bool {
        self.zone_sizes.is_empty()
            || self.zone[from] == self.zone[to]
            || self.in_zone(db, r, self.zone[to]) < self.zone_limit(db, r)
    }

    /// Zones first: every range whose fullest zone holds more of its copies than it must gets
    /// one of them moved, from the fullest zone to a member of a zone with room for one more
    /// — from the node there holding the most copies of the database, then over all; to the
    /// member of the emptiest such zone holding the fewest copies of the database, then over
    /// all, then by name — until none does. Each move makes the fullest zone one copy less
    /// full, and a zone with room always exists while one is too full (the limit is what the
    /// zones can hold), so it ends.
    fn spread_zones(&mut self, members: &[String]) {
        if self.zone_sizes.is_empty() {
            return;
        }
        let members = self.numbers(members);
        for db in 0..self.maps.len() {
            for r in 0..self.maps[db].len() {
                while let Some((from, to)) = self.zone_move(db, r, &members) {
                    self.shift(db, r, from, to);
                }
            }
        }
    }

    /// The next move `spread_zones` makes for range `r` of `db`, if it needs one.
    fn zone_move(&self, db: usize, r: usize, members: &[usize]) -> Option<(usize, usize)> {
        let limit = self.zone_limit(db, r);
        let on = &self.maps[db][r];
        let from = on
            .iter()
            .copied()
            .filter(|&n| self.in_zone(db, r, self.zone[n]) > limit)
            .max_by_key(|&n| {
                (
                    self.in_zone(db, r, self.zone[n]),
                    self.db_copies(db, n),
                    self.loads[n].copies,
                    std::cmp::Reverse(n),
                )
            })?;
        let to = members
            .iter()
            .copied()
            .filter(|n| !on.contains(n) && self.in_zone(db, r, self.zone[*n]) < limit)
            .min_by_key(|&n| {
                (
                    self.in_zone(db, r, self.zone[n]),
                    self.db_copies(db, n),
                    self.loads[n].copies,
                    n,
                )
            })?;
        Some((from, to))
    }

    /// Database `db`'s map as planned so far, by name.
    fn map_named(&self, db: usize) -> ShardMap {
        self.ranges[db]
            .iter()
            .zip(&self.maps[db])
            .map(|(range, on)| {
                let mut nodes: Vec<String> = on.iter().map(|&n| self.nodes[n].clone()).collect();
                nodes.sort();
                (range.clone(), nodes)
            })
            .collect()
    }

    /// Evens out the copies per member over the whole cluster: while the most loaded member
    /// holds two or more copies more than the least loaded, one copy goes from the one to the
    /// other (never onto a node holding that range; never making its database less even).
    /// Among the copies that could go, the one whose bytes best bring both toward the average
    /// bytes per member (`pick`), then the smaller, then by name. `retarget_only`: only copies
    /// already planned to move may (`remove`: their new home changes, no move is added).
    fn level(&mut self, members: &[String], retarget_only: bool) {
        let members = self.numbers(members);
        loop {
            let mut order = members.clone();
            order.sort_by_key(|&n| (self.loads[n].copies, self.loads[n].bytes, n));
            let (Some(&low), Some(&high)) = (order.first(), order.last()) else {
                return;
            };
            if self.loads[high].copies < self.loads[low].copies + 2 {
                return;
            }
            let mut found = None;
            'pairs: for &from in order.iter().rev() {
                for &to in &order {
                    if self.loads[from].copies < self.loads[to].copies + 2 {
                        break;
                    }
                    if let Some((db, r)) = self.pick(from, to, &members, retarget_only) {
                        found = Some((db, r, from, to));
                        break 'pairs;
                    }
                }
            }
            let Some((db, r, from, to)) = found else {
                return;
            };
            self.shift(db, r, from, to);
        }
    }

    /// The copy on `from` to move to `to`. Bytes: `to` should end near the average bytes per
    /// member, so each copy it still takes should weigh about what it lacks divided by the
    /// copies it lacks; likewise for what `from` has too much. The copy nearest both wins.
    fn pick(
        &self,
        from: usize,
        to: usize,
        members: &[usize],
        retarget_only: bool,
    ) -> Option<(usize, usize)> {
        let (f, t) = (self.loads[from], self.loads[to]);
        let count = members.len().max(1) as f64;
        let bytes = members
            .iter()
            .map(|&m| self.loads[m].bytes as f64)
            .sum::<f64>()
            / count;
        let copies = members
            .iter()
            .map(|&m| self.loads[m].copies as f64)
            .sum::<f64>()
            / count;
        let ideal_in = ((bytes - t.bytes as f64) / (copies - t.copies as f64).max(1.0)).max(0.0);
        let ideal_out = ((f.bytes as f64 - bytes) / (f.copies as f64 - copies).max(1.0)).max(0.0);
        let mut best: Option<((u64, u64), (usize, usize))> = None;
        // In (database, range) order, so that among equal keys the first found wins: databases
        // in the order read (`_all_docs`: by name), then ranges by name.
        for &(db, r) in &self.held[from] {
            let w = self.weight[db][r];
            let off = ((w as f64 - ideal_in).abs() + (w as f64 - ideal_out).abs()) as u64;
            if best.is_some_and(|(key, _)| key <= (off, w))
                || self.maps[db][r].contains(&to)
                || self.db_copies(db, from) <= self.db_copies(db, to)
                || !self.zone_ok(db, r, from, to)
                || (retarget_only && !self.moves[db].iter().any(|m| m.0 == r && m.2 == from))
            {
                continue;
            }
            best = Some(((off, w), (db, r)));
            if (off, w) == (0, 0) {
                break;
            }
        }
        best.map(|(_, copy)| copy)
    }

    /// The moves planned, per database, by name.
    fn into_moves(self) -> Vec<Vec<Move>> {
        let (nodes, ranges) = (&self.nodes, &self.ranges);
        self.moves
            .iter()
            .enumerate()
            .map(|(db, moves)| {
                moves
                    .iter()
                    .map(|&(r, from, to)| Move {
                        range: ranges[db][r].clone(),
                        from: nodes[from].clone(),
                        to: nodes[to].clone(),
                    })
                    .collect()
            })
            .collect()
    }
}

/// `rebalance`: with zones, every range first spread over them (`Placement::spread_zones`);
/// then each database spread evenly over `members` on its own, then the copies per member
/// evened out over the whole cluster (`Placement::level`), neither undoing a zone's spread.
/// `sizes`: the copies' bytes, to choose among equal moves; `zones`: each node's zone (none:
/// no zone rule).
pub fn plan_rebalance(
    docs: &[ShardDoc],
    members: &[String],
    sizes: &Sizes,
    zones: &Zones,
) -> Vec<DbPlan> {
    let settled: Vec<ShardMap> = docs.iter().map(settled).collect();
    let mut p = Placement::new(docs, &settled, sizes, members, zones);
    p.spread_zones(members);
    let rule = ZoneRule::new(zones, members);
    for i in 0..docs.len() {
        let map = p.map_named(i);
        for m in balance_where(&map, members, &p.loads_by_copies(), &rule) {
            p.shift_named(i, &m);
        }
    }
    p.level(members, false);
    docs.iter()
        .zip(p.into_moves())
        .map(|(doc, moves)| DbPlan {
            db: doc.db.clone(),
            unfinished: unfinished(doc),
            moves,
            drops: Vec::new(),
        })
        .collect()
}

/// `remove`: every copy on `leaving` gets a new home, on the member lacking that range that
/// keeps the range within the zone rule (`evacuate`), holds the fewest copies of its database,
/// then over all; then the members left are evened
/// out over the whole cluster: first by choosing other new homes, then, where that is not
/// enough, by moving other copies between them. With `accept_fewer`, a copy no member can take is
/// dropped, else it is listed in the `Err` as (database, range).
pub fn plan_removal(
    docs: &[ShardDoc],
    leaving: &str,
    members: &[String],
    accept_fewer: bool,
    sizes: &Sizes,
    zones: &Zones,
) -> Result<Vec<DbPlan>, Vec<(String, String)>> {
    let settled: Vec<ShardMap> = docs.iter().map(settled).collect();
    let others: Vec<String> = members.iter().filter(|m| *m != leaving).cloned().collect();
    let mut p = Placement::new(docs, &settled, sizes, &others, zones);
    let mut drops = vec![Vec::new(); docs.len()];
    let mut short = Vec::new();
    for (i, (doc, map)) in docs.iter().zip(&settled).enumerate() {
        let (moves, homeless) = evacuate(map, leaving, members, &p.loads_by_copies(), zones);
        for m in moves {
            p.shift_named(i, &m);
        }
        for r in homeless {
            if accept_fewer {
                drops[i].push((r, leaving.to_string()));
            } else {
                short.push((doc.db.clone(), r));
            }
        }
    }
    if !short.is_empty() {
        return Err(short);
    }
    // First only the new homes change; where that cannot even the members out (the copies
    // leaving sit beside the same few members), other copies move too, as `rebalance` would.
    p.level(&others, true);
    p.level(&others, false);
    Ok(docs
        .iter()
        .zip(p.into_moves())
        .zip(drops)
        .map(|((doc, moves), drops)| DbPlan {
            db: doc.db.clone(),
            unfinished: unfinished(doc),
            moves,
            drops,
        })
        .collect())
}

/// The planned moves that still apply to `map` as just read: the old copy is there and the
/// new node lacks the range. A rerun after a kill finds the moves it finished gone.
pub fn still_to_do(planned: &[Move], map: &ShardMap) -> Vec<Move> {
    planned
        .iter()
        .filter(|m| {
            map.get(&m.range)
                .is_some_and(|nodes| nodes.contains(&m.from) && !nodes.contains(&m.to))
        })
        .cloned()
        .collect()
}

/// "unbalanced: node4 holds 2 of 312 copies (even would be 78)": the member furthest from an
/// even share, when the most and least loaded members differ by two copies or more; `None`
/// when they do not (whether moves can even them out is `plan_rebalance`'s to say).
pub fn imbalance(loads: &BTreeMap<String, NodeLoad>, members: &[String]) -> Option<String> {
    let counts: Vec<(&String, usize)> = members
        .iter()
        .map(|m| (m, loads.get(m).map_or(0, |l| l.copies)))
        .collect();
    let total: usize = counts.iter().map(|c| c.1).sum();
    let (min, max) = (
        counts.iter().map(|c| c.1).min()?,
        counts.iter().map(|c| c.1).max()?,
    );
    if max < min + 2 {
        return None;
    }
    let even = total as f64 / members.len() as f64;
    let (node, held) = counts
        .iter()
        .max_by(|a, b| {
            (a.1 as f64 - even)
                .abs()
                .total_cmp(&(b.1 as f64 - even).abs())
                .then_with(|| b.0.cmp(a.0))
        })
        .copied()?;
    Some(format!(
        "unbalanced: {node} holds {held} of {total} copies (even would be {})",
        (even.round() as usize)
    ))
}

/// A plan in words, for `--dry-run` and the log: one line per database that changes, then
/// the copies per node before and after.
pub fn render_plan(
    docs: &[ShardDoc],
    plans: &[DbPlan],
    sizes: &Sizes,
    members: &[String],
    zones: &Zones,
) -> String {
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
    let planned = planned(docs, plans);
    if !zones.is_empty() {
        out.extend(zones_text(docs, &planned, plans, zones));
    }
    out.push(per_node_text(docs, &planned, sizes, members, zones));
    out.join("\n")
}

/// Per range that moves, its copies' zones before → after: `orders 00000000-7fffffff: a, a, b
/// → a, b, c`.
fn zones_text(
    docs: &[ShardDoc],
    planned: &[ShardDoc],
    plans: &[DbPlan],
    zones: &Zones,
) -> Vec<String> {
    let words = |nodes: &[String]| -> String {
        let mut z: Vec<&str> = nodes
            .iter()
            .map(|n| zones.get(n).map_or("-", String::as_str))
            .collect();
        z.sort();
        z.join(", ")
    };
    let mut lines = vec!["zones per range, before → after:".to_string()];
    for ((doc, after), plan) in docs.iter().zip(planned).zip(plans) {
        let moved: BTreeSet<&String> = plan
            .unfinished
            .iter()
            .chain(&plan.moves)
            .map(|m| &m.range)
            .chain(plan.drops.iter().map(|(r, _)| r))
            .collect();
        for range in moved {
            let (Some(b), Some(a)) = (doc.map.get(range), after.map.get(range)) else {
                continue;
            };
            lines.push(format!("  {} {range}: {} → {}", doc.db, words(b), words(a)));
        }
    }
    lines
}

/// Each database's map once its plan is carried out.
fn planned(docs: &[ShardDoc], plans: &[DbPlan]) -> Vec<ShardDoc> {
    docs.iter()
        .zip(plans)
        .map(|(doc, plan)| {
            let mut map = settled(doc);
            for m in &plan.moves {
                if let Some(nodes) = map.get_mut(&m.range) {
                    nodes.retain(|n| *n != m.from);
                    nodes.push(m.to.clone());
                }
            }
            for (range, node) in &plan.drops {
                if let Some(nodes) = map.get_mut(range) {
                    nodes.retain(|n| n != node);
                }
            }
            let mut planned = doc.clone();
            planned.map = map;
            planned
        })
        .collect()
}

/// Copies and bytes per node, before → after the plan: one line per node (with its zone).
fn per_node_text(
    docs: &[ShardDoc],
    planned: &[ShardDoc],
    sizes: &Sizes,
    members: &[String],
    zones: &Zones,
) -> String {
    let before = node_loads(docs, sizes, members);
    let after = node_loads(planned, sizes, members);
    let nodes: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut lines = vec![if zones.is_empty() {
        "per node (copies, bytes), before → after:".to_string()
    } else {
        "per node (zone; copies, bytes), before → after:".to_string()
    }];
    for n in nodes {
        let (b, a) = (
            before.get(n).copied().unwrap_or_default(),
            after.get(n).copied().unwrap_or_default(),
        );
        let zone = match (zones.is_empty(), zones.get(n)) {
            (true, _) => String::new(),
            (false, Some(z)) => format!(" zone {z};"),
            (false, None) => " no zone;".to_string(),
        };
        lines.push(format!(
            "  {n}{zone} {} → {} copies, {} → {}",
            b.copies,
            a.copies,
            bytes(b.bytes),
            bytes(a.bytes)
        ));
    }
    lines.join("\n")
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

    /// A seeded xorshift: `rand(k)` is below `k`, the same every run.
    fn xorshift(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |k: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % k as u64) as usize
        }
    }

    /// `q` ranges, each on `copies` distinct members picked by `rand`.
    fn random_map(
        members: &[String],
        q: usize,
        copies: usize,
        rand: &mut impl FnMut(usize) -> usize,
    ) -> ShardMap {
        (0..q)
            .map(|r| {
                let mut pool = members.to_vec();
                let held = (0..copies).map(|_| pool.remove(rand(pool.len()))).collect();
                (format!("{r:08x}"), held)
            })
            .collect()
    }

    #[test]
    fn random_maps_end_balanced_with_the_fewest_moves() {
        let mut rand = xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..500 {
            let m = 1 + rand(9);
            let members: Vec<String> = (1..=m).map(n).collect();
            let q = 1 + rand(8);
            let copies = 1 + rand(m.min(4));
            let old = random_map(&members, q, copies, &mut rand);
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
        let (moves, homeless) = evacuate(
            &users,
            &n(4),
            &nodes(&[1, 2, 3, 4]),
            &Load::new(),
            &Zones::new(),
        );
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
        let (moves, homeless) = evacuate(
            &full,
            &n(3),
            &nodes(&[1, 2, 3]),
            &Load::new(),
            &Zones::new(),
        );
        assert!(moves.is_empty());
        assert_eq!(homeless, [A, B]);
    }

    #[test]
    fn evacuate_spreads_over_the_least_loaded() {
        let m = map(&[(A, &[1, 2, 5]), (B, &[3, 4, 5])]);
        let (moves, _) = evacuate(
            &m,
            &n(5),
            &nodes(&[1, 2, 3, 4, 5, 6]),
            &Load::new(),
            &Zones::new(),
        );
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
        let short = plan_removal(
            &docs,
            &n(3),
            &nodes(&[1, 2, 3]),
            false,
            &Sizes::new(),
            &Zones::new(),
        )
        .unwrap_err();
        assert_eq!(
            short,
            [
                ("a".to_string(), A.to_string()),
                ("a".to_string(), B.to_string())
            ]
        );
        let plans = plan_removal(
            &docs,
            &n(3),
            &nodes(&[1, 2, 3]),
            true,
            &Sizes::new(),
            &Zones::new(),
        )
        .unwrap();
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
        let plans = plan_rebalance(
            std::slice::from_ref(&d),
            &nodes(&[1, 2, 3, 4, 5]),
            &Sizes::new(),
            &Zones::new(),
        );
        assert_eq!(plans[0].unfinished, [m]);
        // The rest of the plan starts from the settled map: one more move, onto node5.
        assert_eq!(plans[0].moves.len(), 1);
        assert_eq!(plans[0].moves[0].to, n(5));
        // A database without intent, with four copies, was made with n = 4: left alone.
        let d4 = doc("n4", map(&[(A, &[1, 2, 3, 4]), (B, &[2, 3, 4, 5])]), vec![]);
        assert!(plan_rebalance(
            &[d4],
            &nodes(&[1, 2, 3, 4, 5]),
            &Sizes::new(),
            &Zones::new()
        )[0]
        .is_empty());
    }

    const WHOLE: &str = "00000000-ffffffff";

    /// `count` single-range databases, database i on the nodes `place(i)`.
    fn single_range(count: usize, place: impl Fn(usize) -> Vec<usize>) -> Vec<ShardDoc> {
        (0..count)
            .map(|i| doc(&format!("db{i:04}"), map(&[(WHOLE, &place(i))]), vec![]))
            .collect()
    }

    /// The maps once `plans` are carried out.
    fn carried_out(docs: &[ShardDoc], plans: &[DbPlan]) -> Vec<ShardDoc> {
        docs.iter()
            .zip(plans)
            .map(|(d, p)| {
                let mut m = after(settled(d), &p.moves);
                for (range, node) in &p.drops {
                    m.get_mut(range).unwrap().retain(|x| x != node);
                }
                doc(&d.db, m, vec![])
            })
            .collect()
    }

    fn spread(docs: &[ShardDoc], members: &[String]) -> (usize, usize) {
        let loads = node_loads(docs, &Sizes::new(), members);
        let counts: Vec<usize> = members.iter().map(|m| loads[m].copies).collect();
        (*counts.iter().min().unwrap(), *counts.iter().max().unwrap())
    }

    fn assert_every_range_keeps_distinct_copies(before: &[ShardDoc], after: &[ShardDoc]) {
        for (b, a) in before.iter().zip(after) {
            for (range, nodes) in &a.map {
                let distinct: BTreeSet<&String> = nodes.iter().collect();
                assert_eq!(distinct.len(), nodes.len(), "{} {range}: {nodes:?}", a.db);
                assert_eq!(nodes.len(), b.map[range].len(), "{} {range}", a.db);
            }
        }
    }

    #[test]
    fn growth_with_many_single_range_databases_evens_out_the_whole_cluster() {
        // Issue 17: 100 databases of q=1, n=3 on 3 nodes, grown to 4. Each database on its own
        // is "balanced" (1,1,1,0), but node4 would hold nothing.
        let docs = single_range(100, |_| vec![1, 2, 3]);
        let members = nodes(&[1, 2, 3, 4]);
        let plans = plan_rebalance(&docs, &members, &Sizes::new(), &Zones::new());
        let moves: usize = plans.iter().map(|p| p.moves.len()).sum();
        // 300 copies: 75 each; node4 gets 75, the fewest moves there can be.
        assert_eq!(moves, 75);
        let done = carried_out(&docs, &plans);
        assert_eq!(spread(&done, &members), (75, 75));
        assert_every_range_keeps_distinct_copies(&docs, &done);
        // Nothing moves between the old nodes: every move goes onto node4.
        assert!(plans.iter().flat_map(|p| &p.moves).all(|m| m.to == n(4)));
        // Once carried out, nothing is left to do.
        assert!(
            plan_rebalance(&done, &members, &Sizes::new(), &Zones::new())
                .iter()
                .all(DbPlan::is_empty)
        );
    }

    #[test]
    fn plans_are_the_same_for_the_same_maps() {
        let docs = single_range(60, |i| vec![1 + i % 3, 1 + (i + 1) % 3, 1 + (i + 2) % 3]);
        let members = nodes(&[1, 2, 3, 4, 5]);
        let sizes: Sizes = docs
            .iter()
            .flat_map(|d| {
                d.map[WHOLE]
                    .iter()
                    .map(|node| {
                        (
                            (d.db.clone(), WHOLE.to_string(), node.clone()),
                            4096 * d.db.len() as u64,
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let first = plan_rebalance(&docs, &members, &sizes, &Zones::new());
        assert_eq!(
            first,
            plan_rebalance(&docs, &members, &sizes, &Zones::new())
        );
        let done = carried_out(&docs, &first);
        let (low, high) = spread(&done, &members);
        assert!(high - low <= 1, "{low}..{high}");
    }

    #[test]
    fn mixed_shapes_at_scale_end_within_one_copy_and_never_double_a_range() {
        // 1000 databases, some q=2 and q=4, all made on 3 nodes, grown to 8.
        let members = nodes(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let docs: Vec<ShardDoc> = (0..1000)
            .map(|i| {
                let q = [1, 1, 1, 2, 4][i % 5];
                let ranges: Vec<(String, Vec<usize>)> = (0..q)
                    .map(|r| (format!("{r:08x}-{r:08x}"), vec![1, 2, 3]))
                    .collect();
                let m: ShardMap = ranges
                    .into_iter()
                    .map(|(r, ids)| (r, nodes(&ids)))
                    .collect();
                doc(&format!("db{i:04}"), m, vec![])
            })
            .collect();
        let plans = plan_rebalance(&docs, &members, &Sizes::new(), &Zones::new());
        let done = carried_out(&docs, &plans);
        assert_every_range_keeps_distinct_copies(&docs, &done);
        let (low, high) = spread(&done, &members);
        assert!(high - low <= 1, "{low}..{high}");
        // Each database stays spread within itself.
        for d in &done {
            let c = per_node(&d.map, &members);
            assert!(
                c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
                "{}: {c:?}",
                d.db
            );
        }
    }

    #[test]
    fn among_equal_moves_the_ones_that_even_out_bytes_win() {
        // 12 databases on 3 nodes: 3 large (1 MB a copy), 9 small (10 KB). Node4 gets 9
        // copies; it should get about a quarter of the bytes, not 9 small copies.
        let docs = single_range(12, |_| vec![1, 2, 3]);
        let members = nodes(&[1, 2, 3, 4]);
        let size = |i: usize| if i < 3 { 1_000_000 } else { 10_000 };
        let sizes: Sizes = docs
            .iter()
            .enumerate()
            .flat_map(|(i, d)| {
                [1, 2, 3].map(|node| ((d.db.clone(), WHOLE.to_string(), n(node)), size(i)))
            })
            .collect();
        let plans = plan_rebalance(&docs, &members, &sizes, &Zones::new());
        let done = carried_out(&docs, &plans);
        assert_eq!(spread(&done, &members), (9, 9));
        let loads = node_loads(&done, &sizes, &members);
        let total: u64 = loads.values().map(|l| l.bytes).sum();
        for (node, l) in &loads {
            let share = l.bytes as f64 / total as f64;
            assert!(
                (0.15..0.35).contains(&share),
                "{node}: {} of {total} bytes",
                l.bytes
            );
        }
    }

    #[test]
    fn removal_leaves_the_remaining_members_even() {
        // 100 single-range databases spread evenly over 5 nodes; node5 leaves.
        let docs = single_range(100, |i| vec![1 + i % 5, 1 + (i + 1) % 5, 1 + (i + 2) % 5]);
        let members = nodes(&[1, 2, 3, 4, 5]);
        let plans =
            plan_removal(&docs, &n(5), &members, false, &Sizes::new(), &Zones::new()).unwrap();
        let moves: usize = plans.iter().map(|p| p.moves.len()).sum();
        assert_eq!(moves, 60, "only node5's copies move");
        assert!(plans.iter().flat_map(|p| &p.moves).all(|m| m.from == n(5)));
        let done = carried_out(&docs, &plans);
        assert_every_range_keeps_distinct_copies(&docs, &done);
        let rest = nodes(&[1, 2, 3, 4]);
        assert_eq!(spread(&done, &rest), (75, 75));
        assert_eq!(node_loads(&done, &Sizes::new(), &members)[&n(5)].copies, 0);
    }

    #[test]
    fn removal_evens_out_the_rest_even_when_the_leaving_copies_sit_beside_the_same_members() {
        // node5's copies all sit beside node1 and node4: only node2 and node3 can take them.
        let docs = single_range(40, |i| {
            if i < 20 {
                vec![1, 4, 5]
            } else {
                vec![1 + i % 2, 2 + i % 2, 4]
            }
        });
        let members = nodes(&[1, 2, 3, 4, 5]);
        let plans =
            plan_removal(&docs, &n(5), &members, false, &Sizes::new(), &Zones::new()).unwrap();
        let done = carried_out(&docs, &plans);
        assert_every_range_keeps_distinct_copies(&docs, &done);
        let (low, high) = spread(&done, &nodes(&[1, 2, 3, 4]));
        assert!(high - low <= 1, "{low}..{high}");
    }

    /// node1–2 in zone a, node3–4 in b, node5–6 in c (the 6 nodes in 3 zones).
    fn three_zones() -> Zones {
        (1..=6)
            .map(|i| (n(i), ["a", "b", "c"][(i - 1) / 2].to_string()))
            .collect()
    }

    /// Every range of every database on as many zones as it can be (`most_in_one_zone`).
    fn assert_spread_over_zones(docs: &[ShardDoc], zones: &Zones, members: &[String]) {
        assert_eq!(
            crate::cluster::zones::shared_ranges(docs, zones, members),
            [],
            "ranges that share a zone"
        );
    }

    /// Databases made before the zones: `count` of q=1 and `count` of q=4, all on node1–3
    /// (zones a, a, b), as CouchDB put them on the first nodes.
    fn made_before_zones(count: usize) -> Vec<ShardDoc> {
        let mut docs = single_range(count, |_| vec![1, 2, 3]);
        for i in 0..count {
            let m: ShardMap = (0..4u32)
                .map(|r| (format!("{:08x}", r << 28), nodes(&[1, 2, 3])))
                .collect();
            docs.push(doc(&format!("q4db{i:03}"), m, vec![]));
        }
        docs
    }

    #[test]
    fn zones_come_first_then_counts_and_a_plan_repeats() {
        let members = nodes(&[1, 2, 3, 4, 5, 6]);
        let zones = three_zones();
        let docs = made_before_zones(20);
        let plans = plan_rebalance(&docs, &members, &Sizes::new(), &zones);
        assert_eq!(
            plans,
            plan_rebalance(&docs, &members, &Sizes::new(), &zones)
        );
        let done = carried_out(&docs, &plans);
        assert_every_range_keeps_distinct_copies(&docs, &done);
        assert_spread_over_zones(&done, &zones, &members);
        // 300 copies over 6 members: 50 each, as today's rule would have it without zones.
        let (low, high) = spread(&done, &members);
        assert!(high - low <= 1, "{low}..{high}");
        for d in &done {
            let c = per_node(&d.map, &members);
            assert!(
                c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
                "{}: {c:?}",
                d.db
            );
        }
        // Once carried out, nothing is left to do.
        assert!(plan_rebalance(&done, &members, &Sizes::new(), &zones)
            .iter()
            .all(DbPlan::is_empty));
        // The same maps without zones: the old plan, which leaves ranges sharing a zone.
        let plain = carried_out(
            &docs,
            &plan_rebalance(&docs, &members, &Sizes::new(), &Zones::new()),
        );
        assert!(!crate::cluster::zones::shared_ranges(&plain, &zones, &members).is_empty());
    }

    #[test]
    fn an_even_cluster_with_ranges_sharing_a_zone_is_not_balanced() {
        // Copies per node even (2 each) and each database even: today's rule moves nothing.
        let members = nodes(&[1, 2, 3, 4, 5, 6]);
        let docs = vec![
            doc("x", map(&[(WHOLE, &[1, 2, 3])]), vec![]),
            doc("y", map(&[(WHOLE, &[4, 5, 6])]), vec![]),
            doc("z", map(&[(WHOLE, &[1, 3, 5])]), vec![]),
            doc("w", map(&[(WHOLE, &[2, 4, 6])]), vec![]),
        ];
        assert!(
            plan_rebalance(&docs, &members, &Sizes::new(), &Zones::new())
                .iter()
                .all(DbPlan::is_empty)
        );
        let zones = three_zones();
        let plans = plan_rebalance(&docs, &members, &Sizes::new(), &zones);
        // x (a, a, b) and y (b, c, c) each need one move; z and w are spread already.
        let moves: Vec<usize> = plans.iter().map(|p| p.moves.len()).collect();
        assert_eq!(moves, [1, 1, 0, 0], "{plans:?}");
        let done = carried_out(&docs, &plans);
        assert_spread_over_zones(&done, &zones, &members);
        assert_eq!(spread(&done, &members), (2, 2));
    }

    #[test]
    fn uneven_zones_hold_as_few_copies_of_a_range_as_they_can() {
        // Zone a is one node, zone b five: every range gets a's node and two of b's.
        let members = nodes(&[1, 2, 3, 4, 5, 6]);
        let zones: Zones = (1..=6)
            .map(|i| (n(i), if i == 1 { "a" } else { "b" }.to_string()))
            .collect();
        let docs = single_range(10, |i| vec![2 + i % 5, 2 + (i + 1) % 5, 2 + (i + 2) % 5]);
        let done = carried_out(
            &docs,
            &plan_rebalance(&docs, &members, &Sizes::new(), &zones),
        );
        assert_every_range_keeps_distinct_copies(&docs, &done);
        for d in &done {
            assert!(d.map[WHOLE].contains(&n(1)), "{}: {:?}", d.db, d.map);
        }
        assert_spread_over_zones(&done, &zones, &members);
    }

    #[test]
    fn random_maps_and_zones_end_spread_with_every_copy_kept() {
        let mut rand = xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..150 {
            let m = 2 + rand(8);
            let members: Vec<String> = (1..=m).map(n).collect();
            let zone_count = 1 + rand(4);
            let zones: Zones = members
                .iter()
                .map(|x| (x.clone(), format!("z{}", rand(zone_count))))
                .collect();
            let docs: Vec<ShardDoc> = (0..1 + rand(6))
                .map(|d| {
                    let q = 1 + rand(4);
                    let copies = 1 + rand(m.min(3));
                    doc(
                        &format!("db{d}"),
                        random_map(&members, q, copies, &mut rand),
                        vec![],
                    )
                })
                .collect();
            let plans = plan_rebalance(&docs, &members, &Sizes::new(), &zones);
            let done = carried_out(&docs, &plans);
            assert_every_range_keeps_distinct_copies(&docs, &done);
            assert_spread_over_zones(&done, &zones, &members);
            assert_eq!(
                plans,
                plan_rebalance(&docs, &members, &Sizes::new(), &zones)
            );
        }
    }

    #[test]
    fn removal_keeps_every_range_over_the_zones() {
        // Spread over the zones already; node6 (zone c, beside node5) leaves.
        let members = nodes(&[1, 2, 3, 4, 5, 6]);
        let zones = three_zones();
        let docs = single_range(30, |i| vec![1 + i % 2, 3 + (i / 2) % 2, 5 + (i / 4) % 2]);
        assert_spread_over_zones(&docs, &zones, &members);
        let plans = plan_removal(&docs, &n(6), &members, false, &Sizes::new(), &zones).unwrap();
        let done = carried_out(&docs, &plans);
        assert_every_range_keeps_distinct_copies(&docs, &done);
        let rest = nodes(&[1, 2, 3, 4, 5]);
        assert_spread_over_zones(&done, &zones, &rest);
        assert_eq!(node_loads(&done, &Sizes::new(), &members)[&n(6)].copies, 0);
        // Without zones the same removal puts some of node6's copies beside another zone's.
        let plain = carried_out(
            &docs,
            &plan_removal(&docs, &n(6), &members, false, &Sizes::new(), &Zones::new()).unwrap(),
        );
        assert!(!crate::cluster::zones::shared_ranges(&plain, &zones, &rest).is_empty());
    }

    #[test]
    fn a_plan_in_words_shows_the_zones() {
        let members = nodes(&[1, 2, 3, 4, 5, 6]);
        let zones = three_zones();
        let docs = vec![doc("orders", map(&[(WHOLE, &[1, 2, 3])]), vec![])];
        let plans = plan_rebalance(&docs, &members, &Sizes::new(), &zones);
        let text = render_plan(&docs, &plans, &Sizes::new(), &members, &zones);
        assert!(
            text.contains(&format!("  orders {WHOLE}: a, a, b → a, b, c")),
            "{text}"
        );
        assert!(text.contains(&format!("  {} zone a; 1 → ", n(1))), "{text}");
        let plain = render_plan(&docs, &plans, &Sizes::new(), &members, &Zones::new());
        assert!(!plain.contains("zone"), "{plain}");
    }

    #[test]
    fn imbalance_names_the_member_furthest_from_even() {
        let docs = single_range(104, |_| vec![1, 2, 3]);
        let mut docs = docs;
        docs.push(doc("_users", map(&[(A, &[1, 4]), (B, &[2, 4])]), vec![]));
        let members = nodes(&[1, 2, 3, 4]);
        let loads = node_loads(&docs, &Sizes::new(), &members);
        assert_eq!(
            imbalance(&loads, &members).unwrap(),
            format!(
                "unbalanced: {} holds 2 of 316 copies (even would be 79)",
                n(4)
            )
        );
        let even = single_range(4, |i| vec![1 + i % 4, 1 + (i + 1) % 4, 1 + (i + 2) % 4]);
        assert_eq!(
            imbalance(&node_loads(&even, &Sizes::new(), &members), &members),
            None
        );
    }

    #[test]
    fn planned_moves_already_done_are_not_done_again() {
        let planned = [Move {
            range: A.into(),
            from: n(3),
            to: n(4),
        }];
        assert_eq!(still_to_do(&planned, &map(&[(A, &[1, 2, 3])])), planned);
        assert_eq!(still_to_do(&planned, &map(&[(A, &[1, 2, 4])])), []);
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
