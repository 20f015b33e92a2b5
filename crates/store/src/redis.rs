//! The Redis store: standalone Redis (`redis://`, `rediss://`) or Redis Cluster
//! (`redis+cluster://host:port,host:port`), shared by every replica.
//!
//! # Client
//! redis-rs: a multiplexed `ConnectionManager` (one connection shared by all requests,
//! reconnecting on its own after errors) for standalone, and the async cluster
//! connection (slot discovery, MOVED/ASK redirects, reconnects) for Cluster. The first
//! connection is made lazily by the first operation, so a proxy starts, and fails open,
//! while Redis is down; every operation is bounded by the guard's timeout anyway.
//!
//! # Keys and values
//! An entry lives under `prefixcache:v1:<64 hex key>` as the binary encoding of
//! `entry.rs`, written with `SET .. PX <ms until expires_at_ms>`, so Redis expires it
//! itself. `v1` is the key-space version (bumped if the key layout ever changes); the
//! entry carries its own format version inside.
//!
//! # Stats
//! Approximate, from cheap server commands: `entries` = `DBSIZE` and `bytes` =
//! `used_memory_dataset` from `INFO memory`, summed over the masters. They count the
//! whole database (a Redis shared with other data inflates them). `stats()` must be
//! cheap and synchronous, so it returns the last figures, which a background task owned
//! by the store refreshes every [`STATS_INTERVAL`] (and `flush` at once).
//!
//! # Purge
//! `SCAN MATCH prefixcache:v1:* COUNT 1000` on every master, then for each page a
//! `GETRANGE key 0 255` per key, all in flight at once (the header, `entry::meta_len`
//! bytes, fits; longer headers get a second read), decode and filter, then `DEL` of the
//! matches. Single-key commands, because a cluster pipeline may not cross slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::try_join_all;
use prefixcache_core::key::{CacheKey, hex};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, TlsMode, Value};

use crate::entry;
use crate::{CacheStore, Clock, Entry, PurgeFilter, StoreError, StoreStats};

/// Prefix of every key this store writes.
pub const KEY_PREFIX: &str = "prefixcache:v1:";
/// Where replicas agree on the tenant secret.
pub const SECRET_KEY: &str = "prefixcache:v1:tenant-secret";
/// Bytes of the first ranged read of a header during purge.
const HEADER_PROBE: usize = 256;
const SCAN_COUNT: usize = 1000;
/// How often the background task refreshes the approximate stats.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);
/// Per-command bound inside the client; the guard's (shorter) timeout normally fires
/// first, this only bounds admin operations (purge) that issue many commands.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A cluster connection that has answered no command for this long, while commands were
/// sent, is dropped and a new one is built from the seed nodes (at most once per this
/// interval).
const CLUSTER_STALE_AFTER: Duration = Duration::from_secs(3);

/// Where the store connects, parsed from `store.redis_url`.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisTarget {
    /// A `redis://` or `rediss://` URL, as redis-rs reads it (password, db, `#insecure`).
    Standalone(String),
    /// Seed nodes, each a `redis://` / `rediss://` URL with the credentials.
    Cluster {
        nodes: Vec<String>,
        tls: Option<TlsMode>,
        db: i64,
    },
}

/// Parses `redis://[user:pass@]host[:port][/db]`, `rediss://...` (TLS; add `#insecure`
/// to skip certificate verification) and `redis+cluster://[user:pass@]host:port,host:port`
/// (or `rediss+cluster://`). Errors name what is wrong, for the config error message.
pub fn parse_url(url: &str) -> Result<RedisTarget, String> {
    let url = url.trim();
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("expected redis://, rediss:// or redis+cluster://, got {url:?}"))?;
    let (node_scheme, cluster) = match scheme {
        "redis" => ("redis", false),
        "rediss" => ("rediss", false),
        "redis+cluster" | "redis-cluster" => ("redis", true),
        "rediss+cluster" | "rediss-cluster" => ("rediss", true),
        other => {
            return Err(format!(
                "unknown scheme {other:?}: expected redis, rediss, redis+cluster or rediss+cluster"
            ));
        }
    };
    if !cluster {
        return Ok(RedisTarget::Standalone(url.to_string()));
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (hosts, db) = match hosts.split_once('/') {
        Some((h, "")) => (h, 0),
        Some((h, d)) => (
            h,
            d.parse::<i64>()
                .map_err(|_| format!("database must be a number, got {d:?}"))?,
        ),
        None => (hosts, 0),
    };
    let mut nodes = Vec::new();
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let host = if host.contains(':') || host.starts_with('[') {
            host.to_string()
        } else {
            format!("{host}:6379")
        };
        nodes.push(format!("{node_scheme}://{auth}{host}"));
    }
    if nodes.is_empty() {
        return Err(format!("no cluster nodes in {url:?}"));
    }
    let tls = match (node_scheme, fragment) {
        ("rediss", Some("insecure")) => Some(TlsMode::Insecure),
        ("rediss", _) => Some(TlsMode::Secure),
        _ => None,
    };
    Ok(RedisTarget::Cluster { nodes, tls, db })
}

/// The URL with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (userinfo, hosts) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{hosts}")
        }
        _ => url.to_string(),
    }
}

// One per store, built once: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A Redis or Redis Cluster store. Owns a background task that refreshes the
/// approximate stats every [`STATS_INTERVAL`] (aborted when the store is dropped).
pub struct RedisStore {
    shared: Arc<Shared>,
    /// The stats refresher; a `JoinSet` so dropping the store aborts it.
    _refresher: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

/// The store's state, shared with its stats refresher (which holds it weakly).
struct Shared {
    client: Client,
    /// The connection, built on first use (and rebuilt, see [`Shared::conn`]).
    conn: std::sync::Mutex<Option<Conn>>,
    /// Held while a connection is being built, so only one is.
    connecting: tokio::sync::Mutex<()>,
    /// Time base of the two instants below, in milliseconds since it (plus one, so 0
    /// means "none").
    born: std::time::Instant,
    /// When the oldest command sent since the last answer was sent; 0 after an answer.
    unanswered_since_ms: AtomicU64,
    /// When the connection was last dropped for a new one.
    rebuilt_ms: AtomicU64,
    clock: Arc<dyn Clock>,
    url: String,
    entries: AtomicU64,
    bytes: AtomicU64,
    evictions: AtomicU64,
}

fn unavailable(e: RedisError) -> StoreError {
    if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
    {
        StoreError::Unavailable(format!("redis: {e}"))
    } else {
        StoreError::Backend(format!("redis: {e}"))
    }
}

fn redis_key(key: &CacheKey) -> String {
    format!("{KEY_PREFIX}{}", key.to_hex())
}

impl RedisStore {
    /// A store for `url` (see [`parse_url`]). Does not connect here: the first operation
    /// (or the stats refresher) does, so this succeeds while Redis is down. Called
    /// inside a tokio runtime it starts the stats refresher; outside one, stats are
    /// refreshed only by `flush`.
    pub fn new(url: &str, clock: Arc<dyn Clock>) -> Result<RedisStore, StoreError> {
        let shared = Arc::new(Shared::new(url, clock)?);
        let mut refresher = tokio::task::JoinSet::new();
        if tokio::runtime::Handle::try_current().is_ok() {
            let weak = Arc::downgrade(&shared);
            refresher.spawn(async move {
                let mut tick = tokio::time::interval(STATS_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    let Some(shared) = weak.upgrade() else { break };
                    // Errors only leave the last figures in place; the request path
                    // reports Redis trouble on its own.
                    let _ = tokio::time::timeout(STATS_INTERVAL, shared.refresh_stats()).await;
                }
            });
        }
        Ok(RedisStore {
            shared,
            _refresher: std::sync::Mutex::new(refresher),
        })
    }

    /// The URL this store uses, password redacted.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The tenant secret every replica on this Redis shares: created by the first
    /// replica that asks (`SET .. NX`, 32 random bytes as hex, no expiry), read by the
    /// others. Replicas never disagree, whichever starts first.
    pub async fn shared_secret(&self) -> Result<String, StoreError> {
        self.shared.shared_secret().await
    }

    /// Refreshes the approximate stats now (one `DBSIZE` and one `INFO memory` per master).
    pub async fn refresh_stats(&self) -> Result<StoreStats, StoreError> {
        self.shared.refresh_stats().await
    }

    /// Stores already-encoded bytes under `key` as they are. For tests and tools.
    pub async fn put_raw(
        &self,
        key: &CacheKey,
        ttl: Duration,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.shared.put_raw(key, ttl, bytes).await
    }

    /// The raw bytes under `key`, without decoding. For tests and tools.
    pub async fn get_raw(&self, key: &CacheKey) -> Result<Option<Bytes>, StoreError> {
        self.shared.get_raw(key).await
    }
}

impl Shared {
    fn new(url: &str, clock: Arc<dyn Clock>) -> Result<Shared, StoreError> {
        // rustls panics at the first TLS connection unless exactly one crypto provider
        // is chosen; choose ring (the one the workspace builds) explicitly. An error
        // only means one is installed already.
        if url.trim_start().starts_with("rediss") {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let target = parse_url(url).map_err(|m| {
            StoreError::Unavailable(format!("store.redis_url {}: {m}", redact(url)))
        })?;
        let bad = |e: RedisError| {
            StoreError::Unavailable(format!("store.redis_url {}: {e}", redact(url)))
        };
        let client = match target {
            RedisTarget::Standalone(u) => Client::Single(redis::Client::open(u).map_err(bad)?),
            RedisTarget::Cluster { nodes, tls, db } => {
                let mut b = ClusterClientBuilder::new(nodes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(2);
                if let Some(tls) = tls {
                    b = b.tls(tls);
                }
                if db != 0 {
                    b = b.database_id(db);
                }
                Client::Cluster(b.build().map_err(bad)?)
            }
        };
        Ok(Shared {
            client,
            conn: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            born: std::time::Instant::now(),
            unanswered_since_ms: AtomicU64::new(0),
            rebuilt_ms: AtomicU64::new(0),
            clock,
            url: redact(url),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn cached_conn(&self) -> Option<Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The connection, built on first use. A single-node connection reconnects by
    /// itself. A cluster connection can stay broken after its client was cut off the
    /// network while the cluster failed over (it keeps asking nodes that are gone), so
    /// one that has answered nothing for [`CLUSTER_STALE_AFTER`] while commands were
    /// sent (errors and the guard's timeouts alike) is replaced by a new one built from
    /// the seed nodes, as at start-up. An idle connection is left alone.
    async fn conn(&self) -> Result<Conn, StoreError> {
        if matches!(self.client, Client::Cluster(_)) {
            let now = self.elapsed_ms();
            let stale = CLUSTER_STALE_AFTER.as_millis() as u64;
            let unanswered = self.unanswered_since_ms.load(Ordering::Relaxed);
            let rebuilt = self.rebuilt_ms.load(Ordering::Relaxed);
            if unanswered != 0
                && now.saturating_sub(unanswered) > stale
                && now.saturating_sub(rebuilt) > stale
                && self
                    .rebuilt_ms
                    .compare_exchange(rebuilt, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                && self
                    .conn
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .is_some()
            {
                tracing::info!(url = %self.url, "no answer from the Redis Cluster for a while; reconnecting from the seed nodes");
            }
        }
        if let Some(conn) = self.cached_conn() {
            return Ok(conn);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(conn) = self.cached_conn() {
            return Ok(conn);
        }
        let conn = match &self.client {
            Client::Single(c) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                c.get_connection_manager_with_config(config)
                    .await
                    .map(Conn::Single)
            }
            Client::Cluster(c) => c.get_async_connection().await.map(Conn::Cluster),
        }
        .map_err(unavailable)?;
        // A fresh connection counts as an answer: it is not replaced right away.
        self.unanswered_since_ms.store(0, Ordering::Relaxed);
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        // Only the first unanswered command sets the time (0 -> now).
        let _ = self.unanswered_since_ms.compare_exchange(
            0,
            self.elapsed_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let mut conn = self.conn().await?;
        let result = cmd.query_async(&mut conn).await.map_err(unavailable);
        // An error the server replied with is an answer too: the connection works.
        if !matches!(result, Err(StoreError::Unavailable(_))) {
            self.unanswered_since_ms.store(0, Ordering::Relaxed);
        }
        result
    }

    async fn shared_secret(&self) -> Result<String, StoreError> {
        let candidate = hex(&rand::random::<[u8; 32]>());
        let mut set = redis::cmd("SET");
        set.arg(SECRET_KEY).arg(&candidate).arg("NX");
        let _: Value = self.query(&set).await?;
        let mut get = redis::cmd("GET");
        get.arg(SECRET_KEY);
        let secret: Option<String> = self.query(&get).await?;
        secret
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| StoreError::Backend(format!("{SECRET_KEY} vanished after SET NX")))
    }

    async fn refresh_stats(&self) -> Result<StoreStats, StoreError> {
        let entries: u64 = self.query(&redis::cmd("DBSIZE")).await?;
        // The default sections hold both `memory` and `stats` (one section argument
        // per call before Redis 7).
        let reply: Value = self.query(&redis::cmd("INFO")).await?;
        let (mut bytes, mut evictions) = (0u64, 0u64);
        for_each_text(&reply, &mut |text| {
            for line in text.lines() {
                let line = line.trim();
                if let Some(v) = line.strip_prefix("used_memory_dataset:") {
                    bytes += v.trim().parse::<u64>().unwrap_or(0);
                } else if let Some(v) = line.strip_prefix("evicted_keys:") {
                    evictions += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        });
        self.entries.store(entries, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        self.evictions.store(evictions, Ordering::Relaxed);
        Ok(StoreStats {
            entries,
            bytes,
            evictions,
        })
    }

    async fn put_raw(&self, key: &CacheKey, ttl: Duration, bytes: &[u8]) -> Result<(), StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(redis_key(key))
            .arg(bytes)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        self.query::<Value>(&set).await.map(drop)
    }

    async fn get_raw(&self, key: &CacheKey) -> Result<Option<Bytes>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(redis_key(key));
        self.query(&get).await
    }

    /// `(host, port)` of every master: one element for standalone.
    async fn masters(&self, conn: &mut Conn) -> Result<Vec<Option<(String, u16)>>, StoreError> {
        let Conn::Cluster(c) = conn else {
            return Ok(vec![None]);
        };
        let slots = c
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(unavailable)?;
        let mut masters: Vec<Option<(String, u16)>> = Vec::new();
        if let Value::Array(ranges) = slots {
            for range in ranges {
                let Value::Array(parts) = range else { continue };
                // [start, end, [host, port, id, ..], replicas...]
                let Some(Value::Array(node)) = parts.get(2) else {
                    continue;
                };
                let host = match node.first() {
                    Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(Value::SimpleString(s)) => s.clone(),
                    _ => continue,
                };
                let Some(Value::Int(port)) = node.get(1) else {
                    continue;
                };
                let m = Some((host, *port as u16));
                if !masters.contains(&m) {
                    masters.push(m);
                }
            }
        }
        if masters.is_empty() {
            return Err(StoreError::Backend(
                "CLUSTER SLOTS listed no masters".into(),
            ));
        }
        Ok(masters)
    }

    async fn scan_page(
        &self,
        conn: &mut Conn,
        node: &Option<(String, u16)>,
        cursor: u64,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(format!("{KEY_PREFIX}*"))
            .arg("COUNT")
            .arg(SCAN_COUNT);
        match (conn, node) {
            (Conn::Cluster(c), Some((host, port))) => {
                let v = c
                    .route_command(
                        scan,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        }),
                    )
                    .await
                    .map_err(unavailable)?;
                redis::from_redis_value(v).map_err(|e| StoreError::Backend(e.to_string()))
            }
            (conn, _) => scan.query_async(conn).await.map_err(unavailable),
        }
    }

    /// Purges the matching entries among `keys` (one SCAN page); returns how many were
    /// deleted.
    async fn purge_page(
        &self,
        conn: &mut Conn,
        keys: Vec<String>,
        filter: &PurgeFilter,
    ) -> Result<u64, StoreError> {
        let keys: Vec<String> = keys.into_iter().filter(|k| k != SECRET_KEY).collect();
        if keys.is_empty() {
            return Ok(0);
        }
        // Concurrent single-key commands, not a pipeline: the connection multiplexes
        // them anyway, and a cluster pipeline must not cross slots.
        let heads: Vec<Option<Vec<u8>>> = try_join_all(keys.iter().map(|k| {
            let mut conn = conn.clone();
            let mut cmd = redis::cmd("GETRANGE");
            cmd.arg(k).arg(0).arg(HEADER_PROBE - 1);
            async move { cmd.query_async(&mut conn).await.map_err(unavailable) }
        }))
        .await?;
        let (mut doomed, mut garbage) = (Vec::new(), Vec::new());
        for (k, head) in keys.into_iter().zip(heads) {
            let Some(head) = head.filter(|h| !h.is_empty()) else {
                continue; // expired between SCAN and GETRANGE
            };
            let meta = match entry::meta_len(&head) {
                Ok(n) if n <= head.len() => entry::decode_meta(&head),
                Ok(n) => {
                    let mut get = redis::cmd("GETRANGE");
                    get.arg(&k).arg(0).arg(n - 1);
                    let full: Vec<u8> = get.query_async(conn).await.map_err(unavailable)?;
                    entry::decode_meta(&full)
                }
                Err(e) => Err(e),
            };
            match meta {
                Ok(m) if filter.matches(&m) => doomed.push(k),
                Ok(_) => {}
                Err(_) => garbage.push(k),
            }
        }
        let removed = self.del_each(conn, &doomed).await?;
        // Undecodable values under our prefix are garbage whatever the filter.
        self.del_each(conn, &garbage).await?;
        Ok(removed)
    }

    async fn del_each(&self, conn: &mut Conn, keys: &[String]) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let counts: Vec<u64> = try_join_all(keys.iter().map(|k| {
            let mut conn = conn.clone();
            let mut cmd = redis::cmd("DEL");
            cmd.arg(k);
            async move { cmd.query_async(&mut conn).await.map_err(unavailable) }
        }))
        .await?;
        Ok(counts.iter().sum())
    }
}

/// Calls `f` with every text in a reply (a bulk string, or the values of a per-node map).
fn for_each_text(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::BulkString(b) => f(&String::from_utf8_lossy(b)),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => f(s),
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|i| for_each_text(i, f)),
        Value::Map(pairs) => pairs.iter().for_each(|(_, v)| for_each_text(v, f)),
        _ => {}
    }
}

impl Shared {
    async fn get(&self, key: &CacheKey) -> Result<Option<Entry>, StoreError> {
        let Some(bytes) = self.get_raw(key).await? else {
            return Ok(None);
        };
        let decoded = if bytes.len() >= crate::ENCODE_OFFLOAD_BYTES {
            tokio::task::spawn_blocking(move || entry::decode_bytes(&bytes))
                .await
                .map_err(|e| StoreError::Backend(format!("decode task failed: {e}")))?
        } else {
            entry::decode_bytes(&bytes)
        };
        match decoded {
            // Redis expires entries itself; a reader whose clock runs ahead of the
            // writer's just treats it as a miss.
            Ok(e) if e.is_expired(self.clock.now_ms()) => Ok(None),
            Ok(e) => Ok(Some(e)),
            Err(err) => {
                tracing::warn!(key = %key.short_hex(), error = %err, reason = err.metric_label(),
                    "undecodable redis entry; treated as a miss and deleted");
                // Best effort and unconditional: if another replica rewrote the key
                // meanwhile, the worst case is one extra miss.
                let _ = self.delete(key).await;
                Ok(None)
            }
        }
    }

    async fn put(&self, key: &CacheKey, entry: &Entry) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        if entry.is_expired(now) {
            return self.delete(key).await;
        }
        let bytes = crate::encode_off_runtime(entry).await?;
        self.put_raw(
            key,
            Duration::from_millis(entry.meta.expires_at_ms - now),
            &bytes,
        )
        .await
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        let mut del = redis::cmd("DEL");
        del.arg(redis_key(key));
        self.query::<Value>(&del).await.map(drop)
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.query::<Value>(&redis::cmd("PING")).await.map(drop)
    }

    async fn purge(&self, filter: &PurgeFilter) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let mut removed = 0;
        for node in self.masters(&mut conn).await? {
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan_page(&mut conn, &node, cursor).await?;
                removed += self.purge_page(&mut conn, keys, filter).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl CacheStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Entry>, StoreError> {
        self.shared.get(key).await
    }

    async fn put(&self, key: &CacheKey, entry: &Entry) -> Result<(), StoreError> {
        self.shared.put(key, entry).await
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.shared.delete(key).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.shared.health().await
    }

    async fn purge(&self, filter: &PurgeFilter) -> Result<u64, StoreError> {
        self.shared.purge(filter).await
    }

    /// Redis persists on its own terms; this refreshes the stats.
    async fn flush(&self) -> Result<(), StoreError> {
        self.shared.refresh_stats().await.map(drop)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            entries: self.shared.entries.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            evictions: self.shared.evictions.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shared.url)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_urls_pass_through() {
        for u in [
            "redis://127.0.0.1:6379",
            "redis://:pw@host:6380/2",
            "rediss://user:pw@host:6380/#insecure",
        ] {
            assert_eq!(parse_url(u), Ok(RedisTarget::Standalone(u.to_string())));
        }
    }

    #[test]
    fn cluster_urls_become_seed_nodes_with_credentials() {
        assert_eq!(
            parse_url("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7001,node3"),
            Ok(RedisTarget::Cluster {
                nodes: vec![
                    "redis://:s3cret@10.0.0.1:7000".into(),
                    "redis://:s3cret@10.0.0.2:7001".into(),
                    "redis://:s3cret@node3:6379".into(),
                ],
                tls: None,
                db: 0,
            })
        );
        assert_eq!(
            parse_url("rediss+cluster://a:1,b:2/#insecure"),
            Ok(RedisTarget::Cluster {
                nodes: vec!["rediss://a:1".into(), "rediss://b:2".into()],
                tls: Some(TlsMode::Insecure),
                db: 0,
            })
        );
        assert!(matches!(
            parse_url("rediss+cluster://a:1"),
            Ok(RedisTarget::Cluster {
                tls: Some(TlsMode::Secure),
                ..
            })
        ));
    }

    #[test]
    fn bad_urls_say_why() {
        assert!(
            parse_url("http://x")
                .unwrap_err()
                .contains("unknown scheme")
        );
        assert!(
            parse_url("localhost:6379")
                .unwrap_err()
                .contains("expected")
        );
        assert!(
            parse_url("redis+cluster://")
                .unwrap_err()
                .contains("no cluster nodes")
        );
        assert!(
            parse_url("redis+cluster://a:1/x")
                .unwrap_err()
                .contains("database")
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(
            redact("redis+cluster://u:pw@a:1,b:2"),
            "redis+cluster://u:***@a:1,b:2"
        );
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
