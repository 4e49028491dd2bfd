//! What the nodes of one in-process cluster share beyond the network: the shard-map observer
//! the product's tests assert on (every map change any node applies, with each holder's
//! copy count at that instant), and placement pins (mem3 places copies at random and names
//! files by the clock; a replay of a recording pins both).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Instant;

use super::store::Store;
use crate::spec::Request;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Map = BTreeMap<String, Vec<String>>;

/// One shard-map change, as one node applied it (see `Cluster::shard_map_events`).
#[derive(Debug, Clone, PartialEq)]
pub struct ShardMapEvent {
    /// When it was applied.
    pub at: Instant,
    /// The node whose `_dbs` changed.
    pub node: String,
    pub db: String,
    /// range → holders, descending (as `GET /<db>/_shards`); empty when the db was deleted.
    pub map: BTreeMap<String, Vec<String>>,
    /// range → holder → `doc_count` of that holder's copy right after the change (`None`:
    /// the holder has no such file, or is not a node of this cluster).
    pub doc_counts: BTreeMap<String, BTreeMap<String, Option<u64>>>,
}

impl ShardMapEvent {
    /// How many holders of `range` had a copy with at least `docs` documents.
    pub fn copies_with_at_least(&self, range: &str, docs: u64) -> usize {
        self.doc_counts
            .get(range)
            .map(|h| h.values().filter(|c| c.is_some_and(|c| c >= docs)).count())
            .unwrap_or(0)
    }
}

/// A pinned placement for the next creation of a db.
#[derive(Debug, Clone, Default)]
pub struct Pin {
    pub suffix: Option<String>,
    pub by_range: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Default)]
pub struct Shared {
    stores: RwLock<BTreeMap<String, Weak<Mutex<Store>>>>,
    events: Mutex<Vec<ShardMapEvent>>,
    /// (node, db) → the map last recorded for it.
    last: Mutex<HashMap<(String, String), Map>>,
    pins: Mutex<HashMap<String, Pin>>,
    /// Writes (PUT, POST, DELETE) the nodes answered, and the hook told of each.
    writes: Mutex<usize>,
    on_write: Mutex<Option<WriteHook>>,
}

/// Told of every write a node applied, before its answer goes out: the request as logged and
/// how many writes the cluster has answered with it.
pub type WriteHook = Arc<dyn Fn(&Request, usize) + Send + Sync>;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    pub fn register(&self, node: &str, store: Weak<Mutex<Store>>) {
        self.stores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string(), store);
    }

    /// Records `node`'s map of `db` if it differs from the last one recorded for that node.
    /// Call without holding any store lock: the holders' stores are read here.
    pub fn record(&self, node: &str, db: &str, map: BTreeMap<String, Vec<String>>, suffix: &str) {
        {
            let mut last = lock(&self.last);
            let key = (node.to_string(), db.to_string());
            if last.get(&key) == Some(&map) {
                return;
            }
            last.insert(key, map.clone());
        }
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        let mut doc_counts = BTreeMap::new();
        for (range, holders) in &map {
            let file = super::shards::file_name(range, db, suffix);
            let counts = holders
                .iter()
                .map(|h| {
                    let count = stores
                        .get(h)
                        .and_then(Weak::upgrade)
                        .and_then(|s| lock(&s).files.get(&file).map(|f| f.doc_count()));
                    (h.clone(), count)
                })
                .collect();
            doc_counts.insert(range.clone(), counts);
        }
        drop(stores);
        lock(&self.events).push(ShardMapEvent {
            at: Instant::now(),
            node: node.to_string(),
            db: db.to_string(),
            map,
            doc_counts,
        });
    }

    pub fn events(&self) -> Vec<ShardMapEvent> {
        lock(&self.events).clone()
    }

    pub fn clear_events(&self) {
        lock(&self.events).clear();
    }

    pub fn on_write(&self, hook: Option<WriteHook>) {
        *lock(&self.on_write) = hook;
    }

    /// A node applied a write: count it and tell the hook (on the answering thread).
    pub fn wrote(&self, request: &Request) {
        let k = {
            let mut n = lock(&self.writes);
            *n += 1;
            *n
        };
        let hook = lock(&self.on_write).clone();
        if let Some(h) = hook {
            h(request, k);
        }
    }

    pub fn pin(&self, db: &str, pin: Pin) {
        lock(&self.pins).insert(db.to_string(), pin);
    }

    /// The pin for `db`, used up.
    pub fn take_pin(&self, db: &str) -> Pin {
        lock(&self.pins).remove(db).unwrap_or_default()
    }
}
