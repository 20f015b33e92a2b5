//! Building the configured store: the one constructor the proxy calls.

use std::sync::Arc;
use std::time::Duration;

use prefixcache_core::config::{StoreConfig, StoreKind};

use crate::disk::DiskStore;
use crate::guard::{GuardConfig, GuardState, GuardedStore};
use crate::memory::MemoryStore;
use crate::redis::RedisStore;
use crate::tiered::TieredStore;
use crate::{CacheStore, Clock, StoreError};

/// The store the proxy uses, and what it reports about it.
#[derive(Debug)]
pub struct OpenedStore {
    /// Memory, or memory in front of the guarded disk / Redis store.
    pub store: Arc<dyn CacheStore>,
    /// The fail-open guard of the store that can fail (for `/readyz` and metrics).
    pub guard: Arc<GuardState>,
    pub kind: StoreKind,
    redis: Option<Arc<RedisStore>>,
}

/// Bound of the tenant-secret handshake at startup.
const SECRET_TIMEOUT: Duration = Duration::from_secs(10);

impl OpenedStore {
    /// A tenant secret shared by every replica on the same store, for when none is
    /// configured: `Some` only for Redis (replicas on one Redis must agree, and the
    /// first to ask creates it), `None` for process-local stores (the proxy keeps its
    /// secret in the data dir).
    ///
    /// Bounded by 10 s; an unreachable Redis is an error (the caller decides whether
    /// to start without the shared secret).
    pub async fn shared_secret(&self) -> Result<Option<String>, StoreError> {
        let Some(redis) = &self.redis else {
            return Ok(None);
        };
        match tokio::time::timeout(SECRET_TIMEOUT, redis.shared_secret()).await {
            Ok(secret) => secret.map(Some),
            Err(_) => Err(StoreError::Timeout(SECRET_TIMEOUT)),
        }
    }
}

/// Opens the store `config` describes:
/// - `memory`: a [`MemoryStore`] of `memory_bytes`, guarded;
/// - `disk`: a [`DiskStore`] of `disk_bytes` under `data_dir`, guarded, behind a memory
///   tier of `memory_bytes` (no freshness cap: this process is the only writer);
/// - `redis`: a [`RedisStore`] at `redis_url`, guarded, behind a memory tier of
///   `memory_bytes` whose copies live at most `memory_ttl` (other replicas write too).
///   Redis is not contacted here: a proxy starts while Redis is down, and fails open.
///
/// Every operation of the guarded store is bounded by `store.timeout` and goes through
/// the circuit breaker (`guard.rs`). Errors here are startup errors (the data dir
/// cannot be created, the file is locked by another process, the Redis URL is invalid).
pub async fn open(config: &StoreConfig, clock: Arc<dyn Clock>) -> Result<OpenedStore, StoreError> {
    let guard_config = GuardConfig::new(config.timeout);
    match config.kind {
        StoreKind::Memory => {
            let memory = MemoryStore::new(config.memory_bytes, clock);
            let guarded = GuardedStore::new(Arc::new(memory), guard_config);
            Ok(OpenedStore {
                guard: guarded.state(),
                store: Arc::new(guarded),
                kind: config.kind,
                redis: None,
            })
        }
        StoreKind::Disk => {
            let disk = DiskStore::open(&config.data_dir, config.disk_bytes, clock.clone()).await?;
            let guarded = GuardedStore::new(Arc::new(disk), guard_config);
            let guard = guarded.state();
            let memory = MemoryStore::new(config.memory_bytes, clock.clone());
            let tiered = TieredStore::new(memory, Arc::new(guarded), None, clock);
            Ok(OpenedStore {
                store: Arc::new(tiered),
                guard,
                kind: config.kind,
                redis: None,
            })
        }
        StoreKind::Redis => {
            let redis = Arc::new(RedisStore::new(&config.redis_url, clock.clone())?);
            let guarded = GuardedStore::new(redis.clone(), guard_config);
            let guard = guarded.state();
            let memory = MemoryStore::new(config.memory_bytes, clock.clone());
            let tiered =
                TieredStore::new(memory, Arc::new(guarded), Some(config.memory_ttl), clock);
            Ok(OpenedStore {
                store: Arc::new(tiered),
                guard,
                kind: config.kind,
                redis: Some(redis),
            })
        }
    }
}
