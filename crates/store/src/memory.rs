//! The in-process store (moka): bounded by bytes, per-entry TTL, checked against the
//! injected [`Clock`] on every read.
//!
//! moka expires entries on its own monotonic clock, which frees memory; the proxy's
//! [`Clock`] decides freshness. Both agree in production (the deadline is converted to
//! a moka TTL at insert time), and under a [`crate::ManualClock`] the clock check alone
//! makes TTL tests exact without sleeping.
//!
//! ```
//! use std::sync::Arc;
//! use prefixcache_store::{CacheStore, SystemClock, memory::MemoryStore};
//!
//! let store = MemoryStore::new(64 * 1024 * 1024, Arc::new(SystemClock));
//! assert_eq!(store.backend(), "memory");
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use prefixcache_core::key::CacheKey;

use crate::{CacheStore, Clock, Entry, PurgeFilter, StoreError, StoreStats};

/// Longest moka TTL we hand out; an entry lives at most this long in memory even if its
/// own expiry is later (keeps moka's timer wheel within its comfortable range).
const MAX_MEMORY_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// One cached entry and the time (Unix ms, the store's clock) until which this copy may
/// be served: the entry's own expiry, or earlier when a tier caps freshness.
#[derive(Debug)]
struct Slot {
    entry: Entry,
    until_ms: u64,
}

/// Converts each slot's deadline into a moka TTL at insert/replace time.
struct DeadlineExpiry(Arc<dyn Clock>);

impl DeadlineExpiry {
    fn ttl(&self, slot: &Slot) -> Option<Duration> {
        let ms = slot.until_ms.saturating_sub(self.0.now_ms());
        Some(Duration::from_millis(ms).min(MAX_MEMORY_TTL))
    }
}

impl Expiry<CacheKey, Arc<Slot>> for DeadlineExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Slot>,
        _created_at: Instant,
    ) -> Option<Duration> {
        self.ttl(value)
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Slot>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.ttl(value)
    }
}

/// A byte-bounded in-memory store. Entries heavier than the whole capacity are not kept.
/// Eviction is moka's TinyLFU: frequently hit entries survive one-off ones.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<CacheKey, Arc<Slot>>,
    clock: Arc<dyn Clock>,
    /// Entries moka evicted for room (not expired, not replaced, not deleted).
    evictions: Arc<AtomicU64>,
}

impl MemoryStore {
    /// A store holding at most about `max_bytes` (by [`Entry::weight`]).
    pub fn new(max_bytes: u64, clock: Arc<dyn Clock>) -> MemoryStore {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = evictions.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, slot: &Arc<Slot>| {
                u32::try_from(slot.entry.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(DeadlineExpiry(clock.clone()))
            .eviction_listener(move |_key, _slot, cause| {
                if cause == RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        MemoryStore {
            cache,
            clock,
            evictions,
        }
    }

    /// Stores `entry` but serves it only until `until_ms` (capped at the entry's own
    /// expiry). The tiered store uses this to bound how stale a copy of a shared
    /// backend's entry can get.
    pub async fn put_until(&self, key: &CacheKey, entry: &Entry, until_ms: u64) {
        let until_ms = until_ms.min(entry.meta.expires_at_ms);
        if until_ms <= self.clock.now_ms() {
            self.cache.invalidate(key).await;
            return;
        }
        let slot = Arc::new(Slot {
            entry: entry.clone(),
            until_ms,
        });
        self.cache.insert(*key, slot).await;
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Entry>, StoreError> {
        let Some(slot) = self.cache.get(key).await else {
            return Ok(None);
        };
        if self.clock.now_ms() >= slot.until_ms {
            self.cache.invalidate(key).await;
            return Ok(None);
        }
        Ok(Some(slot.entry.clone()))
    }

    async fn put(&self, key: &CacheKey, entry: &Entry) -> Result<(), StoreError> {
        self.put_until(key, entry, entry.meta.expires_at_ms).await;
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.cache.invalidate(key).await;
        Ok(())
    }

    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn purge(&self, filter: &PurgeFilter) -> Result<u64, StoreError> {
        // Collect first: invalidating while iterating moka's segments is allowed but
        // would make the count depend on iteration order.
        let doomed: Vec<CacheKey> = self
            .cache
            .iter()
            .filter(|(_, slot)| filter.matches(&slot.entry.meta))
            .map(|(key, _)| *key)
            .collect();
        let mut removed = 0;
        for key in doomed {
            if self.cache.remove(&key).await.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Runs moka's pending maintenance, so [`CacheStore::stats`] is exact afterwards.
    async fn flush(&self) -> Result<(), StoreError> {
        self.cache.run_pending_tasks().await;
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("stats", &self.stats())
            .finish()
    }
}
