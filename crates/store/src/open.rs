//! Building the configured store: the one constructor the proxy calls.

use std::sync::Arc;

use prefixcache_core::config::{StoreConfig, StoreKind};

use crate::disk::DiskStore;
use crate::guard::{GuardConfig, GuardState, GuardedStore};
use crate::memory::MemoryStore;
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
}

impl OpenedStore {
    /// A tenant secret shared by every replica on the same store, for when none is
    /// configured: `Some` only for Redis (replicas on one Redis must agree, and the
    /// first to ask creates it), `None` for process-local stores (the proxy keeps its
    /// secret in the data dir).
    pub async fn shared_secret(&self) -> Result<Option<String>, StoreError> {
        match self.kind {
            StoreKind::Memory | StoreKind::Disk => Ok(None),
            StoreKind::Redis => Err(redis_not_built()),
        }
    }
}

fn redis_not_built() -> StoreError {
    StoreError::Unavailable(
        "store.kind = \"redis\" is not available in this build yet; use \"disk\" or \"memory\""
            .into(),
    )
}

/// Opens the store `config` describes:
/// - `memory`: a [`MemoryStore`] of `memory_bytes`, guarded;
/// - `disk`: a [`DiskStore`] of `disk_bytes` under `data_dir`, guarded, behind a memory
///   tier of `memory_bytes` (no freshness cap: this process is the only writer).
///
/// Every operation of the guarded store is bounded by `store.timeout` and goes through
/// the circuit breaker (`guard.rs`). Errors here are startup errors (the data dir
/// cannot be created, the file is locked by another process).
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
            })
        }
        StoreKind::Redis => Err(redis_not_built()),
    }
}
