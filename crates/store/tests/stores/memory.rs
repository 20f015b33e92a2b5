//! The memory store: conformance, and its byte bound.

use std::sync::Arc;

use prefixcache_core::key::CacheKey;
use prefixcache_store::memory::MemoryStore;
use prefixcache_store::{CacheStore, Clock, ManualClock, SystemClock};

use crate::conformance::{self, Backend, HOUR_MS, Keys, entry, noise};

struct Memory(Arc<MemoryStore>);

impl Backend for Memory {
    fn store(&self) -> Arc<dyn CacheStore> {
        self.0.clone()
    }
    async fn write_raw(&self, _key: &CacheKey, _expires_at_ms: u64, _bytes: Vec<u8>) -> bool {
        false
    }
    async fn raw_exists(&self, _key: &CacheKey) -> bool {
        false
    }
}

fn clock() -> ManualClock {
    ManualClock::new(SystemClock.now_ms())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_conformance() {
    let clock = clock();
    let store = MemoryStore::new(256 << 20, Arc::new(clock.clone()));
    conformance::conformance(&Memory(Arc::new(store)), &clock).await;
}

#[tokio::test]
async fn memory_stays_within_its_byte_bound() {
    let clock = clock();
    const MAX: u64 = 1 << 20;
    let store = MemoryStore::new(MAX, Arc::new(clock.clone()));
    let keys = Keys::new();
    for i in 0..100 {
        let e = entry(clock.now_ms(), HOUR_MS, noise(50_000, i + 1));
        store.put(&keys.key("bound", i as u32), &e).await.unwrap();
    }
    store.flush().await.unwrap();
    let stats = store.stats();
    assert!(stats.bytes <= MAX, "{stats:?}");
    assert!(stats.entries >= 10 && stats.entries < 100, "{stats:?}");
    assert!(
        stats.evictions > 0,
        "entries dropped for room are counted: {stats:?}"
    );
    // An entry heavier than the whole capacity is not kept at all.
    let huge = entry(clock.now_ms(), HOUR_MS, noise(2 << 20, 9));
    let k = keys.key("huge", 0);
    store.put(&k, &huge).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.get(&k).await.unwrap(), None);
}
