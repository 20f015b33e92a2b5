//! `open`: the configured store, as the proxy gets it.

use std::sync::Arc;
use std::time::Duration;

use prefixcache_core::config::{Config, StoreKind};
use prefixcache_core::key::CacheKey;
use prefixcache_store::guard::CircuitState;
use prefixcache_store::{Clock, ManualClock, SystemClock, open};

use crate::conformance::{self, Backend, HOUR_MS, Keys, chat_body, entry};

struct Opened(Arc<dyn prefixcache_store::CacheStore>);

impl Backend for Opened {
    fn store(&self) -> Arc<dyn prefixcache_store::CacheStore> {
        self.0.clone()
    }
    async fn write_raw(&self, _: &CacheKey, _: u64, _: Vec<u8>) -> bool {
        false // covered by the disk and tiered suites
    }
    async fn raw_exists(&self, _: &CacheKey) -> bool {
        false
    }
}

fn config(kind: StoreKind, dir: &std::path::Path) -> prefixcache_core::config::StoreConfig {
    let mut c = Config::defaults().store;
    c.kind = kind;
    c.data_dir = dir.to_path_buf();
    c.memory_bytes = 64 << 20;
    c.disk_bytes = 1 << 30;
    // Generous: this suite checks behaviour, not latency (the guard has its own tests).
    c.timeout = Duration::from_secs(30);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_builds_each_local_kind() {
    for kind in [StoreKind::Memory, StoreKind::Disk] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(SystemClock.now_ms());
        let opened = open(&config(kind, dir.path()), Arc::new(clock.clone()))
            .await
            .unwrap();
        assert_eq!(opened.kind, kind);
        assert_eq!(opened.guard.state(), CircuitState::Closed);
        assert_eq!(opened.shared_secret().await.unwrap(), None);
        let expect = if kind == StoreKind::Memory {
            "memory"
        } else {
            "tiered"
        };
        assert_eq!(opened.store.backend(), expect);
        conformance::conformance(&Opened(opened.store.clone()), &clock).await;
    }
}

#[tokio::test]
async fn the_disk_kind_persists_under_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now_ms());
    let k = Keys::new().key("open", 0);
    let e = entry(clock.now_ms(), HOUR_MS, chat_body("open"));
    {
        let opened = open(
            &config(StoreKind::Disk, dir.path()),
            Arc::new(clock.clone()),
        )
        .await
        .unwrap();
        opened.store.put(&k, &e).await.unwrap();
        opened.store.flush().await.unwrap();
    }
    assert!(dir.path().join("cache.redb").is_file());
    let opened = open(
        &config(StoreKind::Disk, dir.path()),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    assert_eq!(opened.store.get(&k).await.unwrap(), Some(e));
}
