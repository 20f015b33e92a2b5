//! A memory tier in front of another store (disk or Redis): hits on hot keys never leave
//! the process, and a failing backing store does not take the memory tier's hits with it.
//!
//! # Freshness rules
//! - `get`: memory first; on a memory miss the backing store, and a backing hit is
//!   copied into memory.
//! - `put`: memory first, then the backing store. If the backing put fails the entry is
//!   still in memory (served locally) and the error is returned so it is counted.
//! - `delete` and `purge` remove from both tiers: the backing store, then memory (memory
//!   even when the backing store failed; the error is returned).
//! - A memory copy is served at most until the entry's own expiry, and, when a
//!   `fill_ttl` is set, at most `fill_ttl` after it was copied or written. Set it for a
//!   *shared* backing store (Redis): another replica's overwrite, delete or purge
//!   cannot reach this process's memory, so `fill_ttl` (`store.memory_ttl`, 10 s by
//!   default) is how long such a change can stay invisible here. A local disk store is
//!   written only through this tier, so it needs no bound.
//! - A fill never resurrects what a concurrent write removed: every put, delete and
//!   purge bumps a per-key-stripe generation, and a get that saw the generation move
//!   while it read the backing store drops its copy instead of keeping it.
//! - Errors from the backing store are returned as they are; the memory tier itself
//!   cannot fail. The fail-open guard (`guard.rs`) wraps the backing store, not this
//!   tier, so an open circuit to Redis skips Redis but still serves memory hits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use prefixcache_core::key::CacheKey;

use crate::memory::MemoryStore;
use crate::{CacheStore, Clock, Entry, PurgeFilter, StoreError, StoreStats};

/// Generation stripes: enough that unrelated writes rarely cancel a fill.
const STRIPES: usize = 64;

/// Memory in front of `backing`.
pub struct TieredStore {
    memory: MemoryStore,
    backing: Arc<dyn CacheStore>,
    fill_ttl: Option<Duration>,
    clock: Arc<dyn Clock>,
    generations: [AtomicU64; STRIPES],
}

impl TieredStore {
    /// `fill_ttl`: the freshness bound of memory copies (`None` for a store only this
    /// process writes, e.g. disk; `Some(memory_ttl)` for a shared one, e.g. Redis).
    pub fn new(
        memory: MemoryStore,
        backing: Arc<dyn CacheStore>,
        fill_ttl: Option<Duration>,
        clock: Arc<dyn Clock>,
    ) -> TieredStore {
        TieredStore {
            memory,
            backing,
            fill_ttl,
            clock,
            generations: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn generation(&self, key: &CacheKey) -> &AtomicU64 {
        &self.generations[key.as_bytes()[0] as usize % STRIPES]
    }

    fn bump(&self, key: &CacheKey) {
        self.generation(key).fetch_add(1, Ordering::SeqCst);
    }

    fn bump_all(&self) {
        for g in &self.generations {
            g.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The memory tier (for its own stats).
    pub fn memory(&self) -> &MemoryStore {
        &self.memory
    }

    /// The store behind the memory tier.
    pub fn backing(&self) -> &Arc<dyn CacheStore> {
        &self.backing
    }

    fn memory_until(&self, entry: &Entry) -> u64 {
        match self.fill_ttl {
            Some(ttl) => self
                .clock
                .now_ms()
                .saturating_add(ttl.as_millis() as u64)
                .min(entry.meta.expires_at_ms),
            None => entry.meta.expires_at_ms,
        }
    }
}

#[async_trait]
impl CacheStore for TieredStore {
    fn backend(&self) -> &'static str {
        "tiered"
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Entry>, StoreError> {
        if let Some(e) = self.memory.get(key).await? {
            return Ok(Some(e));
        }
        let generation = self.generation(key);
        let before = generation.load(Ordering::SeqCst);
        let found = self.backing.get(key).await?;
        if let Some(e) = &found
            && generation.load(Ordering::SeqCst) == before
        {
            self.memory.put_until(key, e, self.memory_until(e)).await;
            // A write that landed between the check and the fill may have been
            // overwritten by this older copy: drop it, the next get reads through.
            if generation.load(Ordering::SeqCst) != before {
                self.memory.delete(key).await?;
            }
        }
        Ok(found)
    }

    async fn put(&self, key: &CacheKey, entry: &Entry) -> Result<(), StoreError> {
        let until = self.memory_until(entry);
        self.bump(key);
        self.memory.put_until(key, entry, until).await;
        let stored = self.backing.put(key, entry).await;
        self.bump(key);
        // A get that read the previous backing entry while this put was in flight may
        // have copied it over ours after our first insert; writing again makes the
        // newest entry win (and a fill that comes later sees the bump and drops itself).
        self.memory.put_until(key, entry, until).await;
        stored
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        // Backing first, memory last, with a bump on each side: a concurrent get can
        // neither keep a copy it filled before the memory delete nor fill one after.
        self.bump(key);
        let deleted = self.backing.delete(key).await;
        self.bump(key);
        self.memory.delete(key).await?;
        deleted
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.backing.health().await
    }

    /// Counts what the backing store removed: memory holds copies of its entries.
    /// Ordered like `delete`; memory is purged even when the backing store fails.
    async fn purge(&self, filter: &PurgeFilter) -> Result<u64, StoreError> {
        self.bump_all();
        let purged = self.backing.purge(filter).await;
        self.bump_all();
        self.memory.purge(filter).await?;
        purged
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.memory.flush().await?;
        self.backing.flush().await
    }

    /// The backing store's figures: it holds every entry, memory only copies.
    fn stats(&self) -> StoreStats {
        self.backing.stats()
    }
}

impl std::fmt::Debug for TieredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredStore")
            .field("memory", &self.memory)
            .field("backing", &self.backing)
            .field("fill_ttl", &self.fill_ttl)
            .finish()
    }
}
