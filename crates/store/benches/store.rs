//! Store micro-benchmarks: entry encode/decode by body size, and get/put on the memory,
//! disk and Redis stores (the disk put both one at a time and 64 at once, to show group
//! commit). The Redis group starts its own `redis-server` and is skipped without one.
//!
//! Run: `cargo bench -p prefixcache-store --bench store`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prefixcache_core::key::{CacheKey, FamilyId, RequestHash};
use prefixcache_core::route::Route;
use prefixcache_core::usage::Usage;
use prefixcache_store::disk::DiskStore;
use prefixcache_store::memory::MemoryStore;
use prefixcache_store::redis::RedisStore;
use prefixcache_store::{CacheStore, Clock, ContentForm, Entry, EntryMeta, SystemClock, entry};

/// A chat-completion-like JSON body of about `n` bytes (compresses like real responses).
fn body(n: usize) -> Bytes {
    let mut s = String::from(
        r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":""#,
    );
    let words = [
        "the", "cache", "prefix", "token", "model", "returns", "a", "response", "quickly", "and",
    ];
    let mut i = 0usize;
    while s.len() < n.saturating_sub(40) {
        s.push_str(words[(i * 7 + i / 3) % words.len()]);
        s.push(' ');
        i += 1;
    }
    s.push_str(r#""},"finish_reason":"stop"}]}"#);
    Bytes::from(s)
}

fn make_entry(n: usize) -> Entry {
    let now = SystemClock.now_ms();
    Entry {
        meta: EntryMeta {
            created_at_ms: now,
            expires_at_ms: now + 3_600_000,
            request_hash: RequestHash([1; 32]),
            route: Route::ChatCompletions,
            form: ContentForm::Json,
            strategy: "default".into(),
            family: Some(FamilyId([2; 32])),
            namespace_tag: [3; 8],
            model: "gpt-4o-mini".into(),
            usage: Usage {
                prompt_tokens: 1500,
                completion_tokens: 100,
                cached_tokens: 1024,
                cache_write_tokens: 0,
                cache_write_long_tokens: 0,
            },
        },
        body: body(n),
    }
}

fn key(i: u64) -> CacheKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8] = 0x5a;
    CacheKey(k)
}

const SIZES: [(usize, &str); 4] = [
    (1 << 10, "1KiB"),
    (16 << 10, "16KiB"),
    (256 << 10, "256KiB"),
    (1 << 20, "1MiB"),
];

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("entry");
    for (n, label) in SIZES {
        let e = make_entry(n);
        let encoded = entry::encode(&e);
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_with_input(BenchmarkId::new("encode", label), &e, |b, e| {
            b.iter(|| entry::encode(e))
        });
        g.bench_with_input(BenchmarkId::new("decode", label), &encoded, |b, enc| {
            b.iter(|| entry::decode(enc).unwrap())
        });
    }
    g.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    let store = MemoryStore::new(512 << 20, Arc::new(SystemClock));
    let mut g = c.benchmark_group("memory");
    for (n, label) in [SIZES[0], SIZES[1]] {
        let e = make_entry(n);
        rt.block_on(async {
            for i in 0..1000 {
                store.put(&key(i), &e).await.unwrap();
            }
        });
        let mut i = 0u64;
        g.bench_function(BenchmarkId::new("get_hit", label), |b| {
            b.iter(|| {
                i = (i + 1) % 1000;
                rt.block_on(store.get(&key(i))).unwrap().unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("put", label), |b| {
            b.iter(|| {
                i = (i + 1) % 1000;
                rt.block_on(store.put(&key(i), &e)).unwrap()
            })
        });
    }
    g.finish();
}

fn disk(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        rt.block_on(DiskStore::open(dir.path(), 4 << 30, Arc::new(SystemClock)))
            .unwrap(),
    );
    let mut g = c.benchmark_group("disk");
    g.measurement_time(Duration::from_secs(8));
    for (n, label) in [SIZES[0], SIZES[1]] {
        let e = make_entry(n);
        rt.block_on(async {
            for i in 0..1000 {
                store.put(&key(i), &e).await.unwrap();
            }
        });
        let mut i = 0u64;
        g.bench_function(BenchmarkId::new("get_hit", label), |b| {
            b.iter(|| {
                i = (i + 1) % 1000;
                rt.block_on(store.get(&key(i))).unwrap().unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("put", label), |b| {
            b.iter(|| {
                i = (i + 1) % 1000;
                rt.block_on(store.put(&key(i), &e)).unwrap()
            })
        });
        // 64 puts in flight at once: the writer commits them in a few batches.
        g.throughput(Throughput::Elements(64));
        g.bench_function(BenchmarkId::new("put_64_concurrent", label), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut set = tokio::task::JoinSet::new();
                    for j in 0..64 {
                        let (store, e) = (store.clone(), e.clone());
                        i = (i + 1) % 1000;
                        let k = key(i + j * 1000);
                        set.spawn(async move { store.put(&k, &e).await.unwrap() });
                    }
                    while set.join_next().await.is_some() {}
                })
            })
        });
        g.throughput(Throughput::Elements(1));
    }
    g.finish();
    drop(store);
}

fn redis(c: &mut Criterion) {
    if prefixcache_testkit::which("redis-server").is_none() {
        eprintln!("redis-server not found: skipping the redis benches");
        return;
    }
    let server = prefixcache_testkit::redis::RedisServer::start();
    let rt = runtime();
    let store = RedisStore::new(&server.url(), Arc::new(SystemClock)).unwrap();
    let mut g = c.benchmark_group("redis");
    for (n, label) in [SIZES[0], SIZES[1]] {
        let e = make_entry(n);
        rt.block_on(async {
            for i in 0..1000 {
                store.put(&key(i), &e).await.unwrap();
            }
        });
        let mut i = 0u64;
        g.bench_function(BenchmarkId::new("get_hit", label), |b| {
            b.iter(|| {
                i = (i + 1) % 1000;
                rt.block_on(store.get(&key(i))).unwrap().unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("put", label), |b| {
            b.iter(|| {
                i = (i + 1) % 1000;
                rt.block_on(store.put(&key(i), &e)).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec, memory, disk, redis);
criterion_main!(benches);
