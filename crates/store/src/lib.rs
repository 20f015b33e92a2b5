//! Where cache entries live: the [`CacheStore`] trait every backend implements, the
//! [`Entry`] they hold, and the clock that decides when an entry has expired.
//!
//! A miss is `Ok(None)`, never an error; an error means the store itself is in trouble,
//! and the proxy then serves the request from upstream (fail open) and counts it.
//!
//! # Layout
//! - [`clock`]: wall-clock milliseconds, real or manual (for TTL tests without sleeps).
//! - [`entry`]: the versioned, checksummed binary encoding of an [`Entry`].
//! - [`memory`]: moka, bounded by bytes; the whole cache or the hot tier of another.
//! - [`disk`]: redb under the data directory, group commit, eviction by expiry.
//! - [`redis`]: Redis and Redis Cluster (redis-rs), shared by replicas.
//! - [`tiered`]: a memory tier in front of another store, and its freshness rules.
//! - [`guard`]: the fail-open guard: timeouts and a circuit breaker around a store.
//! - [`private`]: directories and files readable by the proxy's user only.
//! - `open.rs`: [`open`], which builds the configured store for the proxy.
//! - `lib.rs`: the trait, the entry, errors, stats and purge filters.

pub mod clock;
pub mod disk;
pub mod entry;
pub mod guard;
pub mod memory;
mod open;
pub mod private;
pub mod redis;
pub mod tiered;

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use prefixcache_core::key::{CacheKey, FamilyId, RequestHash};
use prefixcache_core::route::Route;
use prefixcache_core::usage::Usage;

pub use clock::{Clock, ManualClock, SystemClock};
pub use open::{OpenedStore, open};

/// The form a response body was received and stored in. A hit can be rendered in the
/// other form (JSON from a stored stream and vice versa).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentForm {
    /// One JSON object, as a non-streamed response.
    Json,
    /// The raw server-sent-event stream, `data: [DONE]` included.
    Sse,
}

impl ContentForm {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentForm::Json => "json",
            ContentForm::Sse => "sse",
        }
    }
}

/// What is known about an entry without reading its body.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryMeta {
    /// Unix milliseconds when the entry was stored.
    pub created_at_ms: u64,
    /// Unix milliseconds after which the entry is a miss.
    pub expires_at_ms: u64,
    /// Hash of the full canonical request; compared on every hit.
    pub request_hash: RequestHash,
    pub route: Route,
    pub form: ContentForm,
    /// Strategy that stored it (for purge and stats).
    pub strategy: String,
    /// Prefix family of the request, when known (for purge).
    pub family: Option<FamilyId>,
    /// First 8 bytes of the caller's namespace (for purge by tenant); never the credential.
    pub namespace_tag: [u8; 8],
    /// The `model` the response reports (for pricing a hit's savings).
    pub model: String,
    /// Usage of the original upstream call: what a hit saves.
    pub usage: Usage,
}

/// A stored response: metadata plus the body exactly as upstream sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub meta: EntryMeta,
    pub body: Bytes,
}

impl Entry {
    /// Whether the entry has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.meta.expires_at_ms
    }

    /// Approximate bytes this entry occupies in memory (for byte-bounded tiers).
    pub fn weight(&self) -> u64 {
        (self.body.len() + self.meta.strategy.len() + self.meta.model.len() + 160) as u64
    }
}

/// A store operation failed. The request is then served from upstream.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached (connection refused, DNS, closed file).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The operation took longer than `store.timeout`.
    #[error("store operation timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The circuit breaker is open: the store is skipped for a while after failures.
    #[error("store skipped: circuit open after repeated failures")]
    CircuitOpen,
    /// The backend reported an error (I/O, protocol, transaction).
    #[error("store error: {0}")]
    Backend(String),
}

impl StoreError {
    /// Short label for the `result` label of `store_operations_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Timeout(_) => "timeout",
            StoreError::CircuitOpen => "circuit_open",
            StoreError::Backend(_) => "error",
        }
    }
}

/// Approximate size of a store, cheap to read (for the `entries` and `store_bytes` gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub entries: u64,
    pub bytes: u64,
    /// Entries dropped before their expiry for lack of room since the store opened
    /// (Redis: the servers' `evicted_keys`, since they started).
    pub evictions: u64,
}

/// Which entries `purge` removes; every given field must match (an empty filter matches all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeFilter {
    pub namespace_tag: Option<[u8; 8]>,
    pub strategy: Option<String>,
    pub family: Option<FamilyId>,
}

impl PurgeFilter {
    pub fn matches(&self, meta: &EntryMeta) -> bool {
        self.namespace_tag.is_none_or(|t| t == meta.namespace_tag)
            && self.strategy.as_deref().is_none_or(|s| s == meta.strategy)
            && self.family.is_none_or(|f| meta.family == Some(f))
    }
}

/// A cache backend. Implementations are shared across requests (`Arc<dyn CacheStore>`).
///
/// Contract, for every backend:
/// - `get` of an absent, expired or undecodable entry is `Ok(None)`; an undecodable
///   (corrupt or old-format) entry is also deleted, best effort.
/// - `put` overwrites; the entry expires at `entry.meta.expires_at_ms` by the store's clock.
///   A `put` whose entry has already expired stores nothing (an older entry under the
///   key is removed: the newer response superseded it) and succeeds. A backend may
///   decline to store an entry too large for its budget, the same way.
/// - Errors mean the store is unwell, never that a key is missing. No method panics.
/// - Futures may be dropped at any await point (timeouts); a dropped `put` either
///   happened or did not, it never leaves a half-written entry that decodes.
#[async_trait]
pub trait CacheStore: Send + Sync + 'static {
    /// Backend name for metric labels: `memory`, `disk`, `redis`, `tiered`.
    fn backend(&self) -> &'static str;

    /// The entry under `key`, if present and fresh.
    async fn get(&self, key: &CacheKey) -> Result<Option<Entry>, StoreError>;

    /// Stores `entry` under `key` until `entry.meta.expires_at_ms`.
    async fn put(&self, key: &CacheKey, entry: &Entry) -> Result<(), StoreError>;

    /// Removes the entry under `key`; absent is fine.
    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError>;

    /// Ok when the store can serve requests now (used by `/readyz`).
    async fn health(&self) -> Result<(), StoreError>;

    /// Removes every entry matching `filter`; returns how many were removed.
    async fn purge(&self, filter: &PurgeFilter) -> Result<u64, StoreError>;

    /// Makes everything written so far durable (called at shutdown).
    async fn flush(&self) -> Result<(), StoreError>;

    /// Approximate entry count and bytes.
    fn stats(&self) -> StoreStats;
}

impl fmt::Debug for dyn CacheStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheStore({})", self.backend())
    }
}

/// Bodies at least this large are encoded on a blocking thread: lz4 runs at roughly
/// 0.5-1 GB/s, so above this an encode would hold a runtime thread for a few hundred
/// microseconds.
pub(crate) const ENCODE_OFFLOAD_BYTES: usize = 256 * 1024;

/// Encodes `entry` without holding up the async runtime on large bodies.
pub(crate) async fn encode_off_runtime(entry: &Entry) -> Result<Vec<u8>, StoreError> {
    if entry.body.len() < ENCODE_OFFLOAD_BYTES {
        return Ok(entry::encode(entry));
    }
    let entry = entry.clone();
    tokio::task::spawn_blocking(move || entry::encode(&entry))
        .await
        .map_err(|e| StoreError::Backend(format!("encode task failed: {e}")))
}
