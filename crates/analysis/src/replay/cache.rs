//! The simulated response cache of one spec: slots by key with the full request hash,
//! absolute expiry (a hit does not extend it, as in the proxy's stores) and optional
//! LRU capacity. Exact keying is the special case where the slot key already covers the
//! whole request, so the hash check always passes for a live slot.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use rustc_hash::FxHasher;

/// One stored response.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u128,
    expires_ms: i64,
    /// What the call that stored it cost: what a hit on it saves.
    cost_usd: f64,
    /// LRU stamp of its last use.
    stamp: u64,
}

/// A simulated cache.
#[derive(Debug)]
pub struct SimCache {
    slots: HashMap<u128, Slot, BuildHasherDefault<FxHasher>>,
    capacity: Option<usize>,
    /// Uses in order, with stale entries skipped lazily (a slot's current stamp is the
    /// one that counts): O(1) per use, compacted when it grows past 4x the slots.
    lru: VecDeque<(u64, u128)>,
    next_stamp: u64,
    pub evictions: u64,
}

impl SimCache {
    pub fn new(capacity: Option<u64>) -> SimCache {
        SimCache {
            slots: HashMap::default(),
            capacity: capacity.map(|c| usize::try_from(c).unwrap_or(usize::MAX)),
            lru: VecDeque::new(),
            next_stamp: 0,
            evictions: 0,
        }
    }

    /// Looks a request up: `Some(cost of the stored call)` when the slot `key` is live and
    /// holds the request `hash`. An expired slot is dropped.
    pub fn lookup(&mut self, key: u128, hash: u128, now_ms: i64) -> Option<f64> {
        let slot = self.slots.get_mut(&key)?;
        if slot.expires_ms <= now_ms {
            self.slots.remove(&key);
            return None;
        }
        if slot.hash != hash {
            return None;
        }
        let cost = slot.cost_usd;
        if self.capacity.is_some() {
            let stamp = self.next_stamp;
            self.next_stamp += 1;
            slot.stamp = stamp;
            self.lru.push_back((stamp, key));
            self.compact();
        }
        Some(cost)
    }

    /// Stores (or overwrites) the slot `key`, evicting the least recently used slots
    /// beyond the capacity.
    pub fn store(&mut self, key: u128, hash: u128, expires_ms: i64, cost_usd: f64) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.slots.insert(
            key,
            Slot {
                hash,
                expires_ms,
                cost_usd,
                stamp,
            },
        );
        let Some(cap) = self.capacity else {
            return;
        };
        self.lru.push_back((stamp, key));
        while self.slots.len() > cap {
            let Some((stamp, victim)) = self.lru.pop_front() else {
                break;
            };
            if self.slots.get(&victim).is_some_and(|s| s.stamp == stamp) {
                self.slots.remove(&victim);
                self.evictions += 1;
            }
        }
        self.compact();
    }

    fn compact(&mut self) {
        if self.lru.len() > 4 * self.slots.len().max(1024) {
            let slots = &self.slots;
            self.lru
                .retain(|(stamp, key)| slots.get(key).is_some_and(|s| s.stamp == *stamp));
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_check_expiry_and_overwrite() {
        let mut c = SimCache::new(None);
        assert_eq!(c.lookup(1, 10, 0), None);
        c.store(1, 10, 100, 0.5);
        assert_eq!(c.lookup(1, 10, 99), Some(0.5));
        assert_eq!(c.lookup(1, 11, 99), None, "same slot, other request");
        c.store(1, 11, 200, 0.7);
        assert_eq!(c.lookup(1, 10, 150), None, "overwritten");
        assert_eq!(c.lookup(1, 11, 150), Some(0.7));
        assert_eq!(c.lookup(1, 11, 200), None, "expired at its expiry");
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_evicts_the_least_recently_used() {
        let mut c = SimCache::new(Some(2));
        c.store(1, 1, 1000, 0.0);
        c.store(2, 2, 1000, 0.0);
        assert!(c.lookup(1, 1, 0).is_some()); // 1 is now more recent than 2
        c.store(3, 3, 1000, 0.0); // evicts 2
        assert!(c.lookup(2, 2, 0).is_none());
        assert!(c.lookup(1, 1, 0).is_some());
        assert!(c.lookup(3, 3, 0).is_some());
        assert_eq!((c.len(), c.evictions), (2, 1));
        // Many uses of the same slots keep the queue bounded.
        for i in 0..100_000 {
            c.lookup(1 + (i % 2), 1 + (i % 2), 0);
        }
        assert!(c.lru.len() <= 4 * 1024 + 1);
    }
}
