//! The tiered store: conformance over disk, and its freshness rules.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prefixcache_core::key::CacheKey;
use prefixcache_store::disk::DiskStore;
use prefixcache_store::memory::MemoryStore;
use prefixcache_store::tiered::TieredStore;
use prefixcache_store::{
    CacheStore, Clock, Entry, ManualClock, PurgeFilter, StoreError, StoreStats, SystemClock,
};

use crate::conformance::{self, Backend, HOUR_MS, Keys, chat_body, entry};

struct Tiered {
    tiered: Arc<TieredStore>,
    disk: Arc<DiskStore>,
}

impl Backend for Tiered {
    fn store(&self) -> Arc<dyn CacheStore> {
        self.tiered.clone()
    }
    async fn write_raw(&self, key: &CacheKey, expires_at_ms: u64, bytes: Vec<u8>) -> bool {
        self.disk.put_raw(key, expires_at_ms, bytes).await.unwrap();
        true
    }
    async fn raw_exists(&self, key: &CacheKey) -> bool {
        self.disk.get_raw(key).await.unwrap().is_some()
    }
}

fn clock() -> ManualClock {
    ManualClock::new(SystemClock.now_ms())
}

async fn tiered_over_disk(
    dir: &std::path::Path,
    clock: &ManualClock,
    fill_ttl: Option<Duration>,
) -> Tiered {
    let disk = Arc::new(
        DiskStore::open(dir, 1 << 30, Arc::new(clock.clone()))
            .await
            .unwrap(),
    );
    let memory = MemoryStore::new(64 << 20, Arc::new(clock.clone()));
    let tiered = TieredStore::new(memory, disk.clone(), fill_ttl, Arc::new(clock.clone()));
    Tiered {
        tiered: Arc::new(tiered),
        disk,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    conformance::conformance(&tiered_over_disk(dir.path(), &clock, None).await, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_conformance_with_a_fill_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let backend = tiered_over_disk(dir.path(), &clock, Some(Duration::from_secs(10))).await;
    conformance::conformance(&backend, &clock).await;
}

#[tokio::test]
async fn a_backing_hit_fills_memory() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let t = tiered_over_disk(dir.path(), &clock, None).await;
    let k = Keys::new().key("fill", 0);
    let e = entry(clock.now_ms(), HOUR_MS, chat_body("fill"));
    t.disk.put(&k, &e).await.unwrap();
    assert_eq!(t.tiered.memory().get(&k).await.unwrap(), None);
    assert_eq!(t.tiered.get(&k).await.unwrap(), Some(e.clone()));
    assert_eq!(t.tiered.memory().get(&k).await.unwrap(), Some(e));
}

/// A shared store changed behind this process's back (another replica's delete) stays
/// visible through memory for at most `fill_ttl`.
#[tokio::test]
async fn the_fill_ttl_bounds_staleness() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let t = tiered_over_disk(dir.path(), &clock, Some(Duration::from_secs(10))).await;
    let k = Keys::new().key("stale", 0);
    let e = entry(clock.now_ms(), HOUR_MS, chat_body("stale"));
    t.tiered.put(&k, &e).await.unwrap();
    t.disk.delete(&k).await.unwrap(); // "another replica" deletes it
    clock.advance(Duration::from_millis(9_999));
    assert_eq!(t.tiered.get(&k).await.unwrap(), Some(e), "within the bound");
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        t.tiered.get(&k).await.unwrap(),
        None,
        "gone after the bound"
    );

    // Without a bound (disk: the only writer is this process) the copy lives on.
    let dir = tempfile::tempdir().unwrap();
    let t = tiered_over_disk(dir.path(), &clock, None).await;
    let e = entry(clock.now_ms(), HOUR_MS, chat_body("unbounded"));
    t.tiered.put(&k, &e).await.unwrap();
    t.disk.delete(&k).await.unwrap();
    clock.advance(Duration::from_secs(600));
    assert_eq!(t.tiered.get(&k).await.unwrap(), Some(e));
}

/// A backing store that fails every operation (Redis down).
struct Down;

#[async_trait]
impl CacheStore for Down {
    fn backend(&self) -> &'static str {
        "down"
    }
    async fn get(&self, _: &CacheKey) -> Result<Option<Entry>, StoreError> {
        Err(StoreError::Unavailable("refused".into()))
    }
    async fn put(&self, _: &CacheKey, _: &Entry) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("refused".into()))
    }
    async fn delete(&self, _: &CacheKey) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("refused".into()))
    }
    async fn health(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("refused".into()))
    }
    async fn purge(&self, _: &PurgeFilter) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable("refused".into()))
    }
    async fn flush(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("refused".into()))
    }
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

#[tokio::test]
async fn a_failing_backing_store_keeps_memory_hits() {
    let clock = clock();
    let memory = MemoryStore::new(1 << 20, Arc::new(clock.clone()));
    let t = TieredStore::new(
        memory,
        Arc::new(Down),
        Some(Duration::from_secs(10)),
        Arc::new(clock.clone()),
    );
    let keys = Keys::new();
    let (k, miss) = (keys.key("down", 0), keys.key("down", 1));
    let e = entry(clock.now_ms(), HOUR_MS, chat_body("down"));
    assert!(
        t.put(&k, &e).await.is_err(),
        "the backing failure is reported"
    );
    assert_eq!(
        t.get(&k).await.unwrap(),
        Some(e),
        "but memory serves the hit"
    );
    assert!(
        t.get(&miss).await.is_err(),
        "a memory miss surfaces the error"
    );
    assert!(t.delete(&k).await.is_err());
    assert_eq!(
        t.memory().get(&k).await.unwrap(),
        None,
        "memory deleted anyway"
    );
    assert!(t.health().await.is_err());
}

#[tokio::test]
async fn purge_and_delete_reach_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let t = tiered_over_disk(dir.path(), &clock, None).await;
    let keys = Keys::new();
    let mut e = entry(clock.now_ms(), HOUR_MS, chat_body("p"));
    e.meta.strategy = "gone".into();
    for i in 0..5 {
        t.tiered.put(&keys.key("p", i), &e).await.unwrap();
    }
    let purged = t
        .tiered
        .purge(&PurgeFilter {
            strategy: Some("gone".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(purged, 5);
    for i in 0..5 {
        assert_eq!(
            t.tiered.memory().get(&keys.key("p", i)).await.unwrap(),
            None
        );
        assert_eq!(t.disk.get(&keys.key("p", i)).await.unwrap(), None);
    }
}
