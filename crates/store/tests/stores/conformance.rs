//! The one behaviour suite every backend passes: `conformance(backend, clock)`.
//!
//! Each case uses keys of its own (derived from a per-run salt), so the suite can share
//! a store with other data; the purge and stats cases start from an empty store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prefixcache_core::key::{CacheKey, FamilyId, RequestHash};
use prefixcache_core::route::Route;
use prefixcache_core::usage::Usage;
use prefixcache_store::entry::{self, FORMAT_VERSION};
use prefixcache_store::{
    CacheStore, Clock, ContentForm, Entry, EntryMeta, ManualClock, PurgeFilter,
};

/// A backend under test: the store, and the backend-specific hooks the suite needs.
#[allow(async_fn_in_trait)]
pub trait Backend {
    fn store(&self) -> Arc<dyn CacheStore>;

    /// Writes `bytes` under `key` exactly as the backend stores encoded entries.
    /// Returns false for backends that hold typed entries (memory), which cannot be
    /// corrupt: the corruption cases are then skipped for that backend.
    async fn write_raw(&self, key: &CacheKey, expires_at_ms: u64, bytes: Vec<u8>) -> bool;

    /// Whether anything is stored under `key`, read around the decoding layer.
    async fn raw_exists(&self, key: &CacheKey) -> bool;

    /// Whether `stats().bytes` counts this store's entries exactly (memory, disk), or
    /// is a server-wide approximation (Redis: `used_memory_dataset`, which moves with
    /// client buffers too). Entry counts must be exact either way (see `stats_move`).
    fn exact_bytes(&self) -> bool {
        true
    }
}

pub const HOUR_MS: u64 = 3600 * 1000;

/// Deterministic distinct keys for one run.
pub struct Keys {
    salt: [u8; 8],
}

impl Keys {
    pub fn new() -> Keys {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Keys {
            salt: (t ^ u64::from(std::process::id())).to_le_bytes(),
        }
    }

    pub fn key(&self, case: &str, i: u32) -> CacheKey {
        let mut h = blake3::Hasher::new();
        h.update(&self.salt);
        h.update(case.as_bytes());
        h.update(&i.to_le_bytes());
        CacheKey(*h.finalize().as_bytes())
    }
}

/// A realistic entry: a chat completion body, expiring `ttl_ms` after `now`.
pub fn entry(now: u64, ttl_ms: u64, body: impl Into<Bytes>) -> Entry {
    Entry {
        meta: EntryMeta {
            created_at_ms: now,
            expires_at_ms: now + ttl_ms,
            request_hash: RequestHash([0xab; 32]),
            route: Route::ChatCompletions,
            form: ContentForm::Json,
            strategy: "default".into(),
            family: Some(FamilyId([0xcd; 32])),
            namespace_tag: [1, 1, 1, 1, 1, 1, 1, 1],
            model: "gpt-4o-mini-2024-07-18".into(),
            usage: Usage {
                prompt_tokens: 1500,
                completion_tokens: 42,
                cached_tokens: 1024,
                cache_write_tokens: 0,
                cache_write_long_tokens: 0,
            },
        },
        body: body.into(),
    }
}

pub fn chat_body(tag: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"chatcmpl-{tag}","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"answer {tag}"}},"finish_reason":"stop"}}]}}"#
    ))
}

/// Incompressible bytes (xorshift), so sizes survive lz4.
pub fn noise(n: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Runs every case against `backend`, whose store reads time from `clock`.
pub async fn conformance(backend: &impl Backend, clock: &ManualClock) {
    let keys = Keys::new();
    miss_is_ok_none(backend, &keys).await;
    round_trip_is_exact(backend, &keys, clock).await;
    put_overwrites(backend, &keys, clock).await;
    delete_removes(backend, &keys, clock).await;
    ttl_follows_the_clock(backend, &keys, clock).await;
    expired_put_stores_nothing(backend, &keys, clock).await;
    large_bodies_round_trip(backend, &keys, clock).await;
    concurrent_puts_and_gets(backend, &keys, clock).await;
    corrupt_bytes_are_a_miss_and_deleted(backend, &keys, clock).await;
    purge_by_each_filter(backend, &keys, clock).await;
    stats_move(backend, &keys, clock).await;
    health_and_flush_succeed(backend).await;
}

async fn miss_is_ok_none(b: &impl Backend, keys: &Keys) {
    let store = b.store();
    for i in 0..3 {
        assert_eq!(store.get(&keys.key("miss", i)).await.unwrap(), None);
    }
}

async fn round_trip_is_exact(b: &impl Backend, keys: &Keys, clock: &ManualClock) {
    let store = b.store();
    let now = clock.now_ms();
    let k = keys.key("round-trip", 0);
    let mut e = entry(now, HOUR_MS, chat_body("rt"));
    e.meta.form = ContentForm::Sse;
    e.meta.route = Route::Responses;
    e.meta.family = None;
    store.put(&k, &e).await.unwrap();
    let got = store.get(&k).await.unwrap().expect("hit after put");
    assert_eq!(got, e, "entry round-trips exactly");
    assert_eq!(&got.body[..], &e.body[..], "body byte-equal");
    // Reading does not consume it.
    assert_eq!(store.get(&k).await.unwrap(), Some(e));
}

async fn put_overwrites(b: &impl Backend, keys: &Keys, clock: &ManualClock) {
    let store = b.store();
    let now = clock.now_ms();
    let k = keys.key("overwrite", 0);
    store
        .put(&k, &entry(now, HOUR_MS, chat_body("first")))
        .await
        .unwrap();
    let second = entry(now, 2 * HOUR_MS, chat_body("second"));
    store.put(&k, &second).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap(), Some(second));
}

async fn delete_removes(b: &impl Backend, keys: &Keys, clock: &ManualClock) {
    let store = b.store();
    let now = clock.now_ms();
    let (k, other) = (keys.key("delete", 0), keys.key("delete", 1));
    store
        .put(&k, &entry(now, HOUR_MS, chat_body("d")))
        .await
        .unwrap();
    store
        .put(&other, &entry(now, HOUR_MS, chat_body("o")))
        .await
        .unwrap();
    store.delete(&k).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert!(store.get(&other).await.unwrap().is_some(), "only that key");
    // Deleting what is absent is fine.
    store.delete(&k).await.unwrap();
    store.delete(&keys.key("delete", 99)).await.unwrap();
}

async fn ttl_follows_the_clock(b: &impl Backend, keys: &Keys, clock: &ManualClock) {
    let store = b.store();
    let now = clock.now_ms();
    let (short, long) = (keys.key("ttl", 0), keys.key("ttl", 1));
    store
        .put(&short, &entry(now, 10_000, chat_body("short")))
        .await
        .unwrap();
    store
        .put(&long, &entry(now, HOUR_MS, chat_body("long")))
        .await
        .unwrap();
    clock.advance(Duration::from_millis(9_999));
    assert!(
        store.get(&short).await.unwrap().is_some(),
        "fresh 1 ms before expiry"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        store.get(&short).await.unwrap(),
        None,
        "a miss at its expiry"
    );
    assert_eq!(store.get(&short).await.unwrap(), None, "and stays one");
    assert!(
        store.get(&long).await.unwrap().is_some(),
        "others unaffected"
    );
    // The key can be used again.
    let again = entry(clock.now_ms(), HOUR_MS, chat_body("again"));
    store.put(&short, &again).await.unwrap();
    assert_eq!(store.get(&short).await.unwrap(), Some(again));
}

async fn expired_put_stores_nothing(b: &impl Backend, keys: &Keys, clock: &ManualClock) {
    let store = b.store();
    let now = clock.now_ms();
    let k = keys.key("expired-put", 0);
    let mut dead = entry(now, 0, chat_body("dead"));
    dead.meta.expires_at_ms = now - 1;
    store.put(&k, &dead).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap(), None);
    dead.meta.expires_at_ms = now; // expiring exactly now is expired too
    store.put(&k, &dead).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap(), None);
    // An expired put over a live entry leaves no entry (it replaced it with nothing).
    let k2 = keys.key("expired-put", 1);
    store
        .put(&k2, &entry(now, HOUR_MS, chat_body("live")))
        .await
        .unwrap();
    store.put(&k2, &dead).await.unwrap();
    assert_eq!(store.get(&k2).await.unwrap(), None);
}

async fn large_bodies_round_trip(b: &impl Backend, keys: &Keys, clock: &ManualClock) {
    let store = b.store();
    let now = clock.now_ms();
    let mut json = String::with_capacity(5 << 20);
    json.push_str("{\"data\":[");
    let mut i = 0;
    while json.len() < 5 << 20 {
        json.push_str(&format!(
            "{{\"index\":{i},\"embedding\":[0.0123,-0.987,{i}.5]}},"
        ));
        i += 1;
    }
    json.push_str("{}]}");
    for (n, body) in [Bytes::from(json), noise(3 << 20, 7)]
        .into_iter()
        .enumerate()
    {
        let k = keys.key("large", n as u32);
        let e = entry(now, HOUR_MS, body);
        store.put(&k, &e).await.unwrap();
        let got = store.get(&k).await.unwrap().expect("large entry hit");
        assert_eq!(got.body.len(), e.body.len());
        assert!(got == e, "large entry {n} round-trips byte-equal");
    }
}

async fn concurrent_puts_and_gets(b: &impl Backend, keys: &Keys, clock: &ManualClock) {
    const N: u32 = 200;
    let store = b.store();
    let now = clock.now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let store = store.clone();
        let k = keys.key("concurrent", i);
        let e = entry(now, HOUR_MS, chat_body(&format!("c{i}")));
        tasks.spawn(async move {
            store.put(&k, &e).await.unwrap();
            // Interleave reads of other keys with the writes.
            let _ = store.get(&k).await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for i in 0..N {
        let store = store.clone();
        let k = keys.key("concurrent", i);
        tasks.spawn(async move {
            let got = store
                .get(&k)
                .await
                .unwrap()
                .expect("every concurrent put landed");
            assert_eq!(got.body, chat_body(&format!("c{i}")));
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

async fn corrupt_bytes_are_a_miss_and_deleted(b: &impl Backend, keys: &Keys, clock: &ManualClock) {
    let store = b.store();
    let now = clock.now_ms();
    let good = entry::encode(&entry(now, HOUR_MS, chat_body("corrupt")));
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x20;
    let mut old_version = good.clone();
    old_version[4] = FORMAT_VERSION.wrapping_sub(1);
    let cases: [(&str, Vec<u8>); 5] = [
        ("garbage", b"definitely not an entry".to_vec()),
        ("flipped byte", flipped),
        ("old version", old_version),
        ("truncated", good[..good.len() - 10].to_vec()),
        ("empty", Vec::new()),
    ];
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let k = keys.key("corrupt", i as u32);
        if !b.write_raw(&k, now + HOUR_MS, bytes).await {
            return; // typed-entry backend: nothing can be corrupt
        }
        assert!(b.raw_exists(&k).await, "{what}: raw write landed");
        assert_eq!(store.get(&k).await.unwrap(), None, "{what}: a miss");
        store.flush().await.unwrap();
        assert!(!b.raw_exists(&k).await, "{what}: deleted after the miss");
        // The key works normally afterwards.
        let e = entry(now, HOUR_MS, chat_body(what));
        store.put(&k, &e).await.unwrap();
        assert_eq!(store.get(&k).await.unwrap(), Some(e));
    }
    // Sanity: the untouched encoding written raw is a hit.
    let k = keys.key("corrupt", 100);
    assert!(b.write_raw(&k, now + HOUR_MS, good).await);
    assert!(store.get(&k).await.unwrap().is_some());
}

async fn purge_by_each_filter(b: &impl Backend, keys: &Keys, clock: &ManualClock) {
    let store = b.store();
    store.purge(&PurgeFilter::default()).await.unwrap();
    store.flush().await.unwrap();
    let now = clock.now_ms();
    // 2 namespaces x 2 strategies x (family A, family B, none) = 12 entries.
    let mut all = Vec::new();
    let mut i = 0;
    for tag in [[1u8; 8], [2u8; 8]] {
        for strategy in ["docs", "chat"] {
            for family in [Some(FamilyId([0xa; 32])), Some(FamilyId([0xb; 32])), None] {
                let mut e = entry(now, HOUR_MS, chat_body(&format!("p{i}")));
                e.meta.namespace_tag = tag;
                e.meta.strategy = strategy.into();
                e.meta.family = family;
                let k = keys.key("purge", i);
                store.put(&k, &e).await.unwrap();
                all.push((k, e));
                i += 1;
            }
        }
    }
    let alive = |store: Arc<dyn CacheStore>, all: Vec<(CacheKey, Entry)>| async move {
        let mut n = 0;
        for (k, _) in &all {
            n += u32::from(store.get(k).await.unwrap().is_some());
        }
        n
    };

    let by_family = PurgeFilter {
        family: Some(FamilyId([0xa; 32])),
        ..Default::default()
    };
    assert_eq!(store.purge(&by_family).await.unwrap(), 4);
    for (k, e) in &all {
        let expect = e.meta.family != Some(FamilyId([0xa; 32]));
        assert_eq!(
            store.get(k).await.unwrap().is_some(),
            expect,
            "{:?}",
            e.meta
        );
    }
    assert_eq!(store.purge(&by_family).await.unwrap(), 0, "idempotent");

    let by_strategy_and_tag = PurgeFilter {
        namespace_tag: Some([2; 8]),
        strategy: Some("chat".into()),
        family: None,
    };
    assert_eq!(store.purge(&by_strategy_and_tag).await.unwrap(), 2);
    assert_eq!(alive(store.clone(), all.clone()).await, 6);

    let by_tag = PurgeFilter {
        namespace_tag: Some([1; 8]),
        ..Default::default()
    };
    assert_eq!(store.purge(&by_tag).await.unwrap(), 4);
    assert_eq!(alive(store.clone(), all.clone()).await, 2);
    for (k, e) in &all {
        if store.get(k).await.unwrap().is_some() {
            assert_eq!(
                (e.meta.namespace_tag, e.meta.strategy.as_str()),
                ([2; 8], "docs")
            );
            assert_ne!(e.meta.family, Some(FamilyId([0xa; 32])));
        }
    }

    let by_strategy = PurgeFilter {
        strategy: Some("docs".into()),
        ..Default::default()
    };
    assert_eq!(store.purge(&by_strategy).await.unwrap(), 2);
    assert_eq!(alive(store.clone(), all.clone()).await, 0);

    // The empty filter matches everything.
    for (k, e) in all.iter().take(3) {
        store.put(k, e).await.unwrap();
    }
    assert_eq!(store.purge(&PurgeFilter::default()).await.unwrap(), 3);
    assert_eq!(alive(store.clone(), all.clone()).await, 0);
}

/// Entry counts are exact on every backend here: memory and disk count their entries,
/// and Redis's `DBSIZE` counts keys, which is exact on a server (or cluster) holding
/// only this suite's data, as the tests give it. Bytes are exact on memory and disk
/// (every entry below has the same encoded size, so the totals move by exact
/// multiples); on Redis they are `used_memory_dataset`, which moves with the server's
/// own buffers, so only a lower bound holds.
async fn stats_move(b: &impl Backend, keys: &Keys, clock: &ManualClock) {
    let store = b.store();
    store.purge(&PurgeFilter::default()).await.unwrap();
    store.flush().await.unwrap();
    let empty = store.stats();
    assert_eq!(empty.entries, 0, "a purged store is empty: {empty:?}");
    let now = clock.now_ms();
    const N: u32 = 20;
    const BODY: usize = 10_000;
    for i in 0..N {
        let e = entry(now, HOUR_MS, noise(BODY, u64::from(i) + 1));
        store.put(&keys.key("stats", i), &e).await.unwrap();
    }
    store.flush().await.unwrap();
    let full = store.stats();
    assert_eq!(full.entries, u64::from(N), "{empty:?} -> {full:?}");
    // Only meaningful where bytes are exact (Redis's figure can even shrink).
    let per_entry = full.bytes.saturating_sub(empty.bytes) / u64::from(N);
    if b.exact_bytes() {
        assert_eq!(
            full.bytes - empty.bytes,
            per_entry * u64::from(N),
            "equal entries cost equal bytes: {empty:?} -> {full:?}"
        );
        assert!(per_entry >= BODY as u64, "{per_entry} bytes per entry");
    } else {
        assert!(full.bytes >= u64::from(N) * BODY as u64, "{full:?}");
    }
    for i in 0..N / 2 {
        store.delete(&keys.key("stats", i)).await.unwrap();
    }
    store.flush().await.unwrap();
    let half = store.stats();
    assert_eq!(half.entries, u64::from(N / 2), "{full:?} -> {half:?}");
    if b.exact_bytes() {
        assert_eq!(
            half.bytes,
            empty.bytes + per_entry * u64::from(N / 2),
            "{full:?} -> {half:?}"
        );
    }
}

async fn health_and_flush_succeed(b: &impl Backend) {
    let store = b.store();
    store.health().await.unwrap();
    store.flush().await.unwrap();
}
