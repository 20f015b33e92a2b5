//! The embedded disk store behind the proxy: entries survive a restart, expire after
//! their TTL on a controlled clock, and a corrupt entry is a miss, never a crash.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, KEY_A, Setup, chat_body};
use prefixcache_store::disk::DiskStore;
use prefixcache_store::{CacheStore, Clock, ManualClock};

async fn disk(dir: &std::path::Path, clock: &ManualClock) -> Arc<DiskStore> {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    Arc::new(DiskStore::open(dir, 64 << 20, clock).await.unwrap())
}

#[tokio::test]
async fn entries_survive_a_restart_and_expire_after_their_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_800_000_000_000);
    let body = chat_body("persist me");

    let store = disk(dir.path(), &clock).await;
    let h = Harness::start(
        Setup::default()
            .store(store.clone() as Arc<dyn CacheStore>)
            .clock(clock.clone())
            .toml("[cache]\ndefault_ttl = \"1h\""),
    )
    .await;
    let first = h.chat(&body).await;
    assert_eq!(first.cache(), "MISS");
    h.settle().await;
    h.shutdown().await;
    drop(store);

    let store = disk(dir.path(), &clock).await;
    let h = Harness::start(
        Setup::default()
            .store(store.clone() as Arc<dyn CacheStore>)
            .clock(clock.clone())
            .toml("[cache]\ndefault_ttl = \"1h\""),
    )
    .await;
    clock.advance(Duration::from_secs(1800));
    let again = h.chat(&body).await;
    assert_eq!(again.cache(), "HIT", "the entry survived the restart");
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("x-prefixcache-age"), Some("1800"));
    assert_eq!(h.upstream_calls(), 0, "the new proxy never called upstream");

    clock.advance(Duration::from_secs(1801));
    assert_eq!(h.chat(&body).await.cache(), "MISS", "expired after the TTL");
}

#[tokio::test]
async fn a_corrupt_entry_is_a_miss_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_800_000_000_000);
    let store = disk(dir.path(), &clock).await;
    let h = Harness::start(
        Setup::default()
            .store(store.clone() as Arc<dyn CacheStore>)
            .clock(clock.clone()),
    )
    .await;
    let body = chat_body("corrupt me");
    let key = h.chat_key(KEY_A, &body, "default");
    store
        .put_raw(
            &key,
            clock.now_ms() + 3_600_000,
            b"PXC\x01 not an entry at all".to_vec(),
        )
        .await
        .unwrap();
    assert!(store.get_raw(&key).await.unwrap().is_some());
    let r = h.chat(&body).await;
    assert_eq!((r.status, r.cache()), (200, "MISS"));
    h.settle().await;
    assert_eq!(
        h.chat(&body).await.cache(),
        "HIT",
        "the fresh response replaced it"
    );
}
