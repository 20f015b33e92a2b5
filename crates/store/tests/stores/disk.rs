//! The disk store: conformance, restarts, eviction, the sweep, and a damaged file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prefixcache_core::key::CacheKey;
use prefixcache_store::disk::{DiskStore, FILE_NAME};
use prefixcache_store::{CacheStore, Clock, ManualClock, SystemClock};

use crate::conformance::{self, Backend, HOUR_MS, Keys, chat_body, entry, noise};

pub struct Disk(pub Arc<DiskStore>);

impl Backend for Disk {
    fn store(&self) -> Arc<dyn CacheStore> {
        self.0.clone()
    }
    async fn write_raw(&self, key: &CacheKey, expires_at_ms: u64, bytes: Vec<u8>) -> bool {
        self.0.put_raw(key, expires_at_ms, bytes).await.unwrap();
        true
    }
    async fn raw_exists(&self, key: &CacheKey) -> bool {
        self.0.get_raw(key).await.unwrap().is_some()
    }
}

fn clock() -> ManualClock {
    ManualClock::new(SystemClock.now_ms())
}

async fn open(dir: &Path, max_bytes: u64, clock: &ManualClock) -> DiskStore {
    DiskStore::open(dir, max_bytes, Arc::new(clock.clone()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = open(dir.path(), 1 << 30, &clock).await;
    assert!(store.path().ends_with(FILE_NAME));
    conformance::conformance(&Disk(Arc::new(store)), &clock).await;
}

#[tokio::test]
async fn disk_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let keys = Keys::new();
    let now = clock.now_ms();
    let kept = entry(now, HOUR_MS, chat_body("kept"));
    let short = entry(now, 60_000, chat_body("short"));
    {
        let store = open(dir.path(), 1 << 30, &clock).await;
        store.put(&keys.key("reopen", 0), &kept).await.unwrap();
        store.put(&keys.key("reopen", 1), &short).await.unwrap();
        // No flush: dropping the store must make its writes durable by itself.
    }
    let store = open(dir.path(), 1 << 30, &clock).await;
    assert_eq!(store.get(&keys.key("reopen", 0)).await.unwrap(), Some(kept));
    assert_eq!(store.stats().entries, 2, "totals persist");
    drop(store);

    // Expiry is by the clock, across restarts too.
    clock.advance(Duration::from_secs(61));
    let store = open(dir.path(), 1 << 30, &clock).await;
    assert_eq!(store.get(&keys.key("reopen", 1)).await.unwrap(), None);
    assert!(store.get(&keys.key("reopen", 0)).await.unwrap().is_some());
    store.flush().await.unwrap();
    assert_eq!(
        store.stats().entries,
        1,
        "the expired entry was deleted on read"
    );
}

#[tokio::test]
async fn disk_evicts_soonest_expiring_first_and_stays_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let keys = Keys::new();
    const BUDGET: u64 = 1 << 20;
    let store = open(dir.path(), BUDGET, &clock).await;
    let now = clock.now_ms();
    // Later puts expire later, so the first ones are the soonest-expiring.
    for i in 0..200u32 {
        let e = entry(
            now,
            HOUR_MS + u64::from(i) * 1000,
            noise(20_000, u64::from(i) + 1),
        );
        store.put(&keys.key("evict", i), &e).await.unwrap();
        assert!(
            store.stats().bytes <= BUDGET,
            "after put {i}: {:?}",
            store.stats()
        );
    }
    let stats = store.stats();
    assert!(stats.entries >= 30 && stats.entries < 200, "{stats:?}");
    assert_eq!(store.get(&keys.key("evict", 0)).await.unwrap(), None);
    assert!(store.get(&keys.key("evict", 199)).await.unwrap().is_some());
    // What survives is exactly a suffix of the put order.
    let mut present = Vec::new();
    for i in 0..200u32 {
        present.push(store.get(&keys.key("evict", i)).await.unwrap().is_some());
    }
    let first = present.iter().position(|&p| p).unwrap();
    assert!(
        present[first..].iter().all(|&p| p),
        "survivors form a suffix"
    );
    assert_eq!((200 - first) as u64, stats.entries);
    // Every entry that went was evicted for room (none had expired).
    assert_eq!(stats.evictions, 200 - stats.entries, "{stats:?}");

    // An entry too large for the budget is not stored and evicts nothing.
    let big = entry(now, 10 * HOUR_MS, noise(BUDGET as usize / 2, 3));
    store.put(&keys.key("evict", 1000), &big).await.unwrap();
    assert_eq!(store.get(&keys.key("evict", 1000)).await.unwrap(), None);
    assert_eq!(store.stats().entries, stats.entries);
    assert_eq!(store.stats().evictions, stats.evictions);
}

#[tokio::test]
async fn disk_sweeps_expired_entries_on_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let keys = Keys::new();
    let store = open(dir.path(), 1 << 30, &clock).await;
    let now = clock.now_ms();
    for i in 0..50 {
        store
            .put(&keys.key("sweep", i), &entry(now, 1_000, chat_body("s")))
            .await
            .unwrap();
    }
    assert_eq!(store.stats().entries, 50);
    clock.advance(Duration::from_secs(2));
    store
        .put(
            &keys.key("sweep", 100),
            &entry(clock.now_ms(), HOUR_MS, chat_body("new")),
        )
        .await
        .unwrap();
    assert_eq!(
        store.stats().entries,
        1,
        "expired rows swept without being read"
    );
    assert_eq!(
        store.stats().evictions,
        0,
        "expired entries are not evictions"
    );
    for i in 0..50 {
        assert!(
            store
                .get_raw(&keys.key("sweep", i))
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn a_damaged_database_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    std::fs::write(dir.path().join(FILE_NAME), vec![0x5a; 64 * 1024]).unwrap();
    let store = open(dir.path(), 1 << 30, &clock).await;
    let keys = Keys::new();
    let e = entry(clock.now_ms(), HOUR_MS, chat_body("fresh"));
    store.put(&keys.key("fresh", 0), &e).await.unwrap();
    assert_eq!(store.get(&keys.key("fresh", 0)).await.unwrap(), Some(e));
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cache.redb.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
}

#[tokio::test]
async fn a_second_open_of_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let _first = open(dir.path(), 1 << 30, &clock).await;
    let err = DiskStore::open(dir.path(), 1 << 30, Arc::new(clock.clone()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already open"), "{err}");
}

/// Eviction frees pages that redb reuses: under churn many times the budget, the file
/// stays within a small multiple of `disk_bytes` instead of growing with the traffic.
/// (The durable-commit trigger is by bytes, so this bound does not depend on speed.)
#[tokio::test]
async fn the_file_stays_bounded_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let keys = Keys::new();
    const BUDGET: u64 = 8 << 20;
    let store = open(dir.path(), BUDGET, &clock).await;
    let now = clock.now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    let store = Arc::new(store);
    // 5x the budget, 16 writers at a time so batches are realistic.
    for i in 0..4_000u32 {
        let (store, k) = (store.clone(), keys.key("churn", i));
        let e = entry(now, HOUR_MS + u64::from(i), noise(10_000, u64::from(i) + 1));
        tasks.spawn(async move { store.put(&k, &e).await.unwrap() });
        if tasks.len() >= 16 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    store.flush().await.unwrap();
    let stats = store.stats();
    let file = std::fs::metadata(store.path()).unwrap().len();
    eprintln!(
        "churn: budget {BUDGET} B, accounted {} B in {} entries, file {file} B ({:.2}x budget)",
        stats.bytes,
        stats.entries,
        file as f64 / BUDGET as f64
    );
    assert!(stats.bytes <= BUDGET);
    assert!(file <= 3 * BUDGET, "file {file} B for a {BUDGET} B budget");
}
