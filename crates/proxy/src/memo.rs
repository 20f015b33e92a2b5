//! A small bounded memo for facts derived from recurring prompt parts (static prefixes,
//! family windows): computed once, cleared wholesale when full.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

/// A memo of at most `capacity` entries. When full it is cleared rather than evicting
/// one by one: the values are cheap to recompute, and the working set of templates is
/// far smaller than the capacity, so it refills with what matters at once.
#[derive(Debug)]
pub struct Memo<K, V> {
    map: Mutex<HashMap<K, V>>,
    capacity: usize,
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    pub fn new(capacity: usize) -> Memo<K, V> {
        Memo {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, V>> {
        // Each update is one insert or one clear: a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value for `key`, computing it (without holding the lock) when absent.
    pub fn get_or_compute(&self, key: K, compute: impl FnOnce() -> V) -> V {
        if let Some(v) = self.lock().get(&key) {
            return v.clone();
        }
        let value = compute();
        let mut map = self.lock();
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(key, value.clone());
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_once_and_stays_bounded() {
        let memo = Memo::new(2);
        let mut calls = 0;
        assert_eq!(
            memo.get_or_compute(1, || {
                calls += 1;
                10
            }),
            10
        );
        assert_eq!(
            memo.get_or_compute(1, || {
                calls += 1;
                11
            }),
            10
        );
        assert_eq!(calls, 1);
        memo.get_or_compute(2, || 20);
        memo.get_or_compute(3, || 30);
        assert!(memo.lock().len() <= 2);
    }
}
