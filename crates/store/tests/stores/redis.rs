//! The Redis store against a real `redis-server` and a real 3-master Redis Cluster:
//! conformance, URLs (password, db, TLS), the shared tenant secret, and outages.
//! Skips loudly without `redis-server` locally; fails under `CI=true`.

use std::sync::Arc;
use std::time::Duration;

use prefixcache_core::config::{Config, StoreKind};
use prefixcache_core::key::CacheKey;
use prefixcache_store::guard::{CircuitState, GuardConfig, GuardedStore};
use prefixcache_store::memory::MemoryStore;
use prefixcache_store::redis::RedisStore;
use prefixcache_store::tiered::TieredStore;
use prefixcache_store::{CacheStore, Clock, ManualClock, StoreError, SystemClock, open};
use prefixcache_testkit::redis::{RedisCluster, RedisServer, require_openssl, require_redis};

use crate::conformance::{self, Backend, HOUR_MS, Keys, chat_body, entry};

struct Redis {
    store: Arc<dyn CacheStore>,
    raw: Arc<RedisStore>,
}

impl Redis {
    fn plain(raw: RedisStore) -> Redis {
        let raw = Arc::new(raw);
        Redis {
            store: raw.clone(),
            raw,
        }
    }
}

impl Backend for Redis {
    fn store(&self) -> Arc<dyn CacheStore> {
        self.store.clone()
    }
    async fn write_raw(&self, key: &CacheKey, expires_at_ms: u64, bytes: Vec<u8>) -> bool {
        let ttl = expires_at_ms.saturating_sub(SystemClock.now_ms());
        self.raw
            .put_raw(key, Duration::from_millis(ttl), &bytes)
            .await
            .unwrap();
        true
    }
    async fn raw_exists(&self, key: &CacheKey) -> bool {
        self.raw.get_raw(key).await.unwrap().is_some()
    }
    fn exact_bytes(&self) -> bool {
        false
    }
}

fn clock() -> ManualClock {
    ManualClock::new(SystemClock.now_ms())
}

fn store(url: &str, clock: &ManualClock) -> RedisStore {
    RedisStore::new(url, Arc::new(clock.clone())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_conformance() {
    if !require_redis("redis_conformance") {
        return;
    }
    let server = RedisServer::start();
    let clock = clock();
    conformance::conformance(&Redis::plain(store(&server.url(), &clock)), &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_conformance() {
    if !require_redis("redis_cluster_conformance") {
        return;
    }
    let cluster = RedisCluster::start(3);
    let clock = clock();
    let redis = Redis::plain(store(&cluster.url(), &clock));
    conformance::conformance(&redis, &clock).await;

    // Keys spread over every master: the client routes by slot.
    let keys = Keys::new();
    for i in 0..60 {
        let e = entry(clock.now_ms(), HOUR_MS, chat_body("spread"));
        redis.store.put(&keys.key("spread", i), &e).await.unwrap();
    }
    for node in cluster.nodes() {
        let n: i64 = node.command(&["DBSIZE"]).unwrap().text().parse().unwrap();
        assert!(n > 0, "master {} holds no key", node.port());
    }
    // Stats are DBSIZE summed over the masters. (Retried: an entry of the TTL case can
    // expire between the two reads.)
    let node_sum = || -> u64 {
        cluster
            .nodes()
            .iter()
            .map(|n| {
                n.command(&["DBSIZE"])
                    .unwrap()
                    .text()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    let mut seen = Vec::new();
    for _ in 0..5 {
        redis.store.flush().await.unwrap();
        let (ours, theirs) = (redis.store.stats().entries, node_sum());
        if ours == theirs {
            break;
        }
        seen.push((ours, theirs));
    }
    assert!(seen.len() < 5, "stats vs DBSIZE per node: {seen:?}");
}

/// The memory tier in front of Redis, as `open` builds it for `kind = "redis"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_redis_conformance() {
    if !require_redis("tiered_redis_conformance") {
        return;
    }
    let server = RedisServer::start();
    let clock = clock();
    let raw = Arc::new(store(&server.url(), &clock));
    let tiered = TieredStore::new(
        MemoryStore::new(64 << 20, Arc::new(clock.clone())),
        raw.clone(),
        Some(Duration::from_secs(10)),
        Arc::new(clock.clone()),
    );
    let backend = Redis {
        store: Arc::new(tiered),
        raw,
    };
    conformance::conformance(&backend, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_builds_the_redis_kind_and_shares_the_tenant_secret() {
    if !require_redis("open_builds_the_redis_kind_and_shares_the_tenant_secret") {
        return;
    }
    let server = RedisServer::start();
    let clock = clock();
    let mut config = Config::defaults().store;
    config.kind = StoreKind::Redis;
    config.redis_url = server.url();
    config.timeout = Duration::from_secs(30);
    let a = open(&config, Arc::new(clock.clone())).await.unwrap();
    let b = open(&config, Arc::new(clock.clone())).await.unwrap();
    assert_eq!(a.store.backend(), "tiered");

    // Two replicas: a put through one is a hit through the other.
    let k = Keys::new().key("replicas", 0);
    let e = entry(clock.now_ms(), HOUR_MS, chat_body("shared"));
    a.store.put(&k, &e).await.unwrap();
    assert_eq!(b.store.get(&k).await.unwrap(), Some(e));

    // Whoever asks first creates the secret; everyone gets the same one, every time.
    let (sa, sb) = tokio::join!(a.shared_secret(), b.shared_secret());
    let (sa, sb) = (sa.unwrap().unwrap(), sb.unwrap().unwrap());
    assert_eq!(sa, sb);
    assert_eq!(sa.len(), 64);
    assert!(sa.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a.shared_secret().await.unwrap().unwrap(), sa);
    assert_eq!(
        server
            .command(&["GET", "prefixcache:v1:tenant-secret"])
            .unwrap()
            .text(),
        sa
    );
    // Purge never touches it.
    a.store.purge(&Default::default()).await.unwrap();
    assert_eq!(b.shared_secret().await.unwrap().unwrap(), sa);

    // Another Redis, another secret.
    let other = RedisServer::start();
    config.redis_url = other.url();
    let c = open(&config, Arc::new(clock.clone())).await.unwrap();
    assert_ne!(c.shared_secret().await.unwrap().unwrap(), sa);
}

#[tokio::test]
async fn password_and_database_come_from_the_url() {
    if !require_redis("password_and_database_come_from_the_url") {
        return;
    }
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let clock = clock();
    let k = Keys::new().key("auth", 0);
    let e = entry(clock.now_ms(), HOUR_MS, chat_body("auth"));

    let good = store(
        &format!("redis://:s3cret@127.0.0.1:{}/3", server.port()),
        &clock,
    );
    good.put(&k, &e).await.unwrap();
    assert_eq!(good.get(&k).await.unwrap(), Some(e));
    good.flush().await.unwrap();
    assert_eq!(good.stats().entries, 1, "DBSIZE of db 3");
    // It is in database 3, not 0.
    let key = format!("prefixcache:v1:{}", k.to_hex());
    let exists = |db: &str| {
        let out = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &server.port().to_string(),
                "-a",
                "s3cret",
                "--no-auth-warning",
            ])
            .args(["-n", db, "EXISTS", &key])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        (exists("3"), exists("0")),
        ("1".to_string(), "0".to_string())
    );

    let wrong = store(
        &format!("redis://:nope@127.0.0.1:{}/3", server.port()),
        &clock,
    );
    assert!(wrong.get(&k).await.is_err(), "a wrong password is an error");
    let none = store(&server.url(), &clock);
    assert!(
        none.put(&k, &entry(clock.now_ms(), HOUR_MS, chat_body("x")))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn tls_with_rediss() {
    if !require_redis("tls_with_rediss") || !require_openssl("tls_with_rediss") {
        return;
    }
    let server = RedisServer::start_tls();
    let port = server.tls_port().unwrap();
    let clock = clock();
    let k = Keys::new().key("tls", 0);
    let e = entry(clock.now_ms(), HOUR_MS, chat_body("tls"));

    // The test CA is not trusted: verification must refuse it.
    let verified = store(&format!("rediss://127.0.0.1:{port}"), &clock);
    let err = verified.get(&k).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");

    // Encrypted, without verification, as the URL asks.
    let insecure = store(&format!("rediss://127.0.0.1:{port}/#insecure"), &clock);
    insecure.put(&k, &e).await.unwrap();
    assert_eq!(insecure.get(&k).await.unwrap(), Some(e));
    // The plain port sees the same data: it went through the TLS listener to Redis.
    let key = format!("prefixcache:v1:{}", k.to_hex());
    assert!(server.command(&["EXISTS", &key]).unwrap().text() == "1");
}

#[tokio::test]
async fn a_store_created_while_redis_is_down_fails_fast_and_recovers() {
    if !require_redis("a_store_created_while_redis_is_down_fails_fast_and_recovers") {
        return;
    }
    let mut server = RedisServer::start();
    server.kill();
    let clock = clock();
    let redis = store(&server.url(), &clock);
    let k = Keys::new().key("down", 0);
    assert!(matches!(
        redis.get(&k).await,
        Err(StoreError::Unavailable(_))
    ));
    server.restart();
    let e = entry(clock.now_ms(), HOUR_MS, chat_body("up"));
    redis.put(&k, &e).await.unwrap();
    assert_eq!(redis.get(&k).await.unwrap(), Some(e));
}

/// Kill Redis under a guarded store: operations fail fast (never hang), the circuit
/// opens, and after Redis comes back the store recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guarded_store_fails_open_through_a_redis_restart() {
    if !require_redis("the_guarded_store_fails_open_through_a_redis_restart") {
        return;
    }
    let mut server = RedisServer::start();
    let clock = clock();
    let guarded = GuardedStore::new(
        Arc::new(store(&server.url(), &clock)),
        GuardConfig {
            open_base: Duration::from_millis(50),
            open_max: Duration::from_millis(200),
            ..GuardConfig::new(Duration::from_secs(2))
        },
    );
    let state = guarded.state();
    let keys = Keys::new();
    let e = entry(clock.now_ms(), HOUR_MS, chat_body("before"));
    guarded.put(&keys.key("outage", 0), &e).await.unwrap();
    assert!(guarded.get(&keys.key("outage", 0)).await.unwrap().is_some());

    server.kill();
    let mut errors = 0;
    for i in 0..20 {
        match guarded.get(&keys.key("outage", i)).await {
            Ok(_) => {}
            Err(StoreError::Unavailable(_) | StoreError::Timeout(_) | StoreError::CircuitOpen) => {
                errors += 1
            }
            Err(other) => panic!("unexpected error kind: {other}"),
        }
    }
    assert_eq!(
        errors, 20,
        "every operation during the outage is an error, none hangs"
    );
    assert!(state.is_degraded());
    assert!(state.snapshot().trips >= 1);

    server.restart();
    // The circuit probes again within open_max; the client reconnects by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let after = entry(clock.now_ms(), HOUR_MS, chat_body("after"));
    loop {
        if guarded.put(&keys.key("outage", 100), &after).await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered: {:?}",
            state.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state.state(), CircuitState::Closed);
    assert_eq!(
        guarded.get(&keys.key("outage", 100)).await.unwrap(),
        Some(after)
    );
}

/// `stats()` is synchronous; a task owned by the store keeps it fresh without anyone
/// calling `flush` or `health`.
#[tokio::test]
async fn stats_refresh_in_the_background() {
    if !require_redis("stats_refresh_in_the_background") {
        return;
    }
    let server = RedisServer::start();
    let clock = clock();
    let writer = store(&server.url(), &clock);
    let keys = Keys::new();
    for i in 0..5 {
        let e = entry(clock.now_ms(), HOUR_MS, chat_body("bg"));
        writer.put(&keys.key("bg", i), &e).await.unwrap();
    }
    let reader = store(&server.url(), &clock);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while reader.stats().entries < 5 {
        assert!(std::time::Instant::now() < deadline, "{:?}", reader.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reader.stats().bytes > 0);
}

/// What `open` builds for `kind = "redis"` through an outage: the guard sits around Redis
/// only, so memory hits keep being served while Redis is dead, misses fail fast, and
/// after a restart the store is shared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_memory_hits_and_recovers() {
    if !require_redis("a_redis_outage_keeps_memory_hits_and_recovers") {
        return;
    }
    let mut server = RedisServer::start();
    let clock = clock();
    let mut config = Config::defaults().store;
    config.kind = StoreKind::Redis;
    config.redis_url = server.url();
    config.memory_ttl = Duration::from_secs(600);
    config.timeout = Duration::from_secs(2);
    let opened = open(&config, Arc::new(clock.clone())).await.unwrap();
    let store = opened.store.clone();
    let keys = Keys::new();
    for i in 0..50 {
        let e = entry(clock.now_ms(), HOUR_MS, chat_body(&format!("hot{i}")));
        store.put(&keys.key("hot", i), &e).await.unwrap();
    }

    server.kill();
    for i in 0..50 {
        let got = store.get(&keys.key("hot", i)).await.unwrap();
        assert_eq!(
            got.unwrap().body,
            chat_body(&format!("hot{i}")),
            "memory hit {i}"
        );
    }
    for i in 0..20 {
        match store.get(&keys.key("cold", i)).await {
            Err(StoreError::Unavailable(_) | StoreError::Timeout(_) | StoreError::CircuitOpen) => {}
            other => panic!("a miss during the outage must be a store error, got {other:?}"),
        }
    }
    assert!(opened.guard.is_degraded(), "{:?}", opened.guard.snapshot());
    // A put during the outage reports the failure but still serves from memory.
    let during = entry(clock.now_ms(), HOUR_MS, chat_body("during"));
    assert!(store.put(&keys.key("during", 0), &during).await.is_err());
    assert_eq!(
        store.get(&keys.key("during", 0)).await.unwrap(),
        Some(during)
    );

    server.restart();
    let after = entry(clock.now_ms(), HOUR_MS, chat_body("after"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.put(&keys.key("after", 0), &after).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            opened.guard.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!opened.guard.is_degraded());
    // Shared again: another replica sees the entry written after the restart.
    let other = open(&config, Arc::new(clock.clone())).await.unwrap();
    assert_eq!(
        other.store.get(&keys.key("after", 0)).await.unwrap(),
        Some(after)
    );
}

/// CRC-16/XMODEM, continued from `crc` over `bytes`.
fn crc16(mut crc: u16, bytes: &[u8]) -> u16 {
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Redis Cluster's key slot: CRC-16/XMODEM of the key mod 16384 (no hash tags in ours).
fn key_slot(key: &[u8]) -> u16 {
    crc16(0, key) % 16384
}

/// `n` cache keys whose Redis keys all hash to one slot, and that slot. The keys differ
/// in their last four bytes only, so the CRC of the common prefix is computed once.
fn keys_in_one_slot(n: usize) -> (Vec<CacheKey>, u16) {
    let salt = Keys::new().key("slot", 0);
    let full = format!("prefixcache:v1:{}", salt.to_hex());
    let prefix = crc16(0, &full.as_bytes()[..full.len() - 8]);
    let mut found: Vec<CacheKey> = Vec::new();
    let mut slot = None;
    let mut tail = [0u8; 8];
    for i in 0u32.. {
        let bytes = i.to_le_bytes();
        for (j, b) in bytes.iter().enumerate() {
            tail[2 * j] = b"0123456789abcdef"[usize::from(b >> 4)];
            tail[2 * j + 1] = b"0123456789abcdef"[usize::from(b & 15)];
        }
        let s = crc16(prefix, &tail) % 16384;
        if *slot.get_or_insert(s) != s {
            continue;
        }
        let mut k = salt;
        k.0[28..].copy_from_slice(&bytes);
        debug_assert_eq!(
            key_slot(format!("prefixcache:v1:{}", k.to_hex()).as_bytes()),
            s
        );
        found.push(k);
        if found.len() == n {
            break;
        }
    }
    (found, slot.unwrap())
}

#[test]
fn the_slot_function_agrees_with_the_server() {
    if !require_redis("the_slot_function_agrees_with_the_server") {
        return;
    }
    let server = RedisServer::start_with(&["--cluster-enabled", "yes"]);
    for key in [
        "a",
        "prefixcache:v1:00ff",
        "somewhat longer key with spaces",
    ] {
        let got = server.command(&["CLUSTER", "KEYSLOT", key]).unwrap().text();
        assert_eq!(got, key_slot(key.as_bytes()).to_string(), "{key}");
    }
}

/// A slot moves between masters while entries are read and written: keys already moved
/// are answered by the target through `ASK` redirects (which need `ASKING` sent on the
/// same connection right before the command), new keys are written there, and after the
/// move `MOVED` sends everyone to the new owner. No operation fails, none returns another
/// key's entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migration_under_load_loses_and_confuses_nothing() {
    if !require_redis("a_slot_migration_under_load_loses_and_confuses_nothing") {
        return;
    }
    let cluster = RedisCluster::start(3);
    let clock = clock();
    let store = Arc::new(store(&cluster.url(), &clock));
    let (keys, slot) = keys_in_one_slot(24);
    let rkey = |k: &CacheKey| format!("prefixcache:v1:{}", k.to_hex());
    let body = |k: &CacheKey| chat_body(&k.to_hex());
    let put = |k: CacheKey| {
        let store = store.clone();
        let e = entry(clock.now_ms(), HOUR_MS, body(&k));
        async move { store.put(&k, &e).await }
    };
    // The first 12 exist before the move.
    for k in &keys[..12] {
        put(*k).await.unwrap();
    }
    let nodes = cluster.nodes();
    let owns = |n: &RedisServer| n.command(&["EXISTS", &rkey(&keys[0])]).unwrap().is_ok();
    let source = nodes.iter().position(owns).expect("an owner");
    let target = (source + 1) % nodes.len();
    let id = |n: &RedisServer| n.command(&["CLUSTER", "MYID"]).unwrap().text();
    let (src, dst) = (&nodes[source], &nodes[target]);
    let slot = slot.to_string();
    assert!(
        dst.command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &id(src)])
            .unwrap()
            .is_ok()
    );
    assert!(
        src.command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &id(dst)])
            .unwrap()
            .is_ok()
    );
    let migrate = |ks: &[CacheKey]| {
        let port = dst.port().to_string();
        let names: Vec<String> = ks.iter().map(rkey).collect();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "10000", "KEYS"];
        args.extend(names.iter().map(String::as_str));
        let reply = src.command(&args).unwrap();
        assert!(reply.is_ok(), "MIGRATE: {reply:?}");
    };
    // Half of the old keys move now; the slot is mid-migration.
    migrate(&keys[..6]);

    // Load: every key read many times, the new keys written, all concurrently.
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..20 {
        for (i, k) in keys.iter().enumerate() {
            let (store, k) = (store.clone(), *k);
            let expected = body(&k);
            let e = entry(clock.now_ms(), HOUR_MS, body(&k));
            tasks.spawn(async move {
                if i >= 12 && round == 0 {
                    store
                        .put(&k, &e)
                        .await
                        .map_err(|e| format!("put {i}: {e}"))?;
                }
                match store.get(&k).await {
                    Ok(Some(got)) if got.body == expected => Ok(()),
                    Ok(Some(_)) => Err(format!("get {i}: another key's entry")),
                    // A new key read before its own first write lands.
                    Ok(None) if i >= 12 => Ok(()),
                    Ok(None) => Err(format!("get {i}: lost")),
                    Err(e) => Err(format!("get {i}: {e}")),
                }
            });
        }
    }
    let mut failures = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.unwrap() {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 480 operations failed during the migration: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    // Finish the move: every master learns the new owner; clients follow MOVED.
    let remaining: Vec<CacheKey> = keys
        .iter()
        .copied()
        .filter(|k| src.command(&["EXISTS", &rkey(k)]).unwrap().text() == "1")
        .collect();
    if !remaining.is_empty() {
        migrate(&remaining);
    }
    for n in nodes {
        assert!(
            n.command(&["CLUSTER", "SETSLOT", &slot, "NODE", &id(dst)])
                .unwrap()
                .is_ok()
        );
    }
    for k in &keys {
        assert_eq!(dst.command(&["EXISTS", &rkey(k)]).unwrap().text(), "1");
        let got = store
            .get(k)
            .await
            .unwrap()
            .expect("every entry survives the move");
        assert_eq!(got.body, body(k));
    }
}

/// Redis expires entries itself: every write carries `PX` with the time left until the
/// entry's expiry, so an entry nobody reads again still leaves the server on time.
#[tokio::test]
async fn entries_expire_on_the_server() {
    if !require_redis("entries_expire_on_the_server") {
        return;
    }
    let server = RedisServer::start();
    let clock = clock();
    let redis = store(&server.url(), &clock);
    let keys = Keys::new();
    for (i, ttl_ms) in [(0, 10_000u64), (1, HOUR_MS)] {
        let k = keys.key("pttl", i);
        redis
            .put(&k, &entry(clock.now_ms(), ttl_ms, chat_body("pttl")))
            .await
            .unwrap();
        let pttl: i64 = server
            .command(&["PTTL", &format!("prefixcache:v1:{}", k.to_hex())])
            .unwrap()
            .text()
            .parse()
            .unwrap();
        // At most the entry's lifetime, and not much less (the write just happened).
        assert!(
            pttl > 0
                && pttl <= ttl_ms as i64
                && pttl > ttl_ms as i64 - 30_000.min(ttl_ms as i64 / 2),
            "PTTL {pttl} for a {ttl_ms} ms entry"
        );
    }
    // The clock moved on: the time left shrinks with it.
    clock.advance(Duration::from_millis(HOUR_MS / 2));
    let k = keys.key("pttl", 2);
    let e = entry(clock.now_ms() - HOUR_MS / 2, HOUR_MS, chat_body("older"));
    redis.put(&k, &e).await.unwrap();
    let pttl: i64 = server
        .command(&["PTTL", &format!("prefixcache:v1:{}", k.to_hex())])
        .unwrap()
        .text()
        .parse()
        .unwrap();
    assert!(pttl > 0 && pttl <= (HOUR_MS / 2) as i64, "PTTL {pttl}");
}

/// A master fails over to its replica while entries are read and written: every read
/// answers the right entry or fails (the proxy then fails open), never another key's;
/// after the failover every operation succeeds and the entries written before it are
/// still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_under_load_confuses_nothing() {
    if !require_redis("a_master_failover_under_load_confuses_nothing") {
        return;
    }
    let cluster = RedisCluster::start_with_replicas(3, 1);
    let clock = clock();
    let store = Arc::new(store(&cluster.url(), &clock));
    let keys = Keys::new();
    let all: Vec<CacheKey> = (0..60).map(|i| keys.key("failover", i)).collect();
    let body = |k: &CacheKey| chat_body(&k.to_hex());
    for k in &all {
        let e = entry(clock.now_ms(), HOUR_MS, body(k));
        store.put(k, &e).await.unwrap();
    }
    let master = cluster
        .owner_of(&format!("prefixcache:v1:{}", all[0].to_hex()))
        .expect("an owner");
    let replica = *cluster.replicas_of(master).first().expect("a replica");
    // Let the replica catch up with every write before it takes over.
    let wait = cluster.nodes()[master]
        .command(&["WAIT", "1", "10000"])
        .unwrap();
    assert_eq!(wait.text(), "1");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (store, stop, all) = (store.clone(), stop.clone(), all.clone());
        load.spawn(async move {
            let (mut ok, mut failed, mut wrong) = (0u64, 0u64, Vec::new());
            let mut i = w;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let k = all[i % all.len()];
                match store.get(&k).await {
                    Ok(Some(e)) if e.body == chat_body(&k.to_hex()) => ok += 1,
                    Ok(other) => wrong.push(format!("{}: {other:?}", k.short_hex())),
                    Err(_) => failed += 1,
                }
                i += 7;
                tokio::task::yield_now().await;
            }
            (ok, failed, wrong)
        });
    }
    // Blocking (the testkit polls the nodes); the load keeps running on the other worker.
    tokio::task::block_in_place(|| cluster.fail_over_to(replica));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = load.join_next().await {
        let (o, f, wrong) = r.unwrap();
        assert!(
            wrong.is_empty(),
            "wrong answers during the failover: {wrong:?}"
        );
        ok += o;
        failed += f;
    }
    println!("failover under load: {ok} reads answered, {failed} failed (fail open)");
    assert!(ok > 0);

    // After the failover: every entry is there, every operation succeeds (the client
    // follows MOVED to the new master while it refreshes its slot map).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    'again: loop {
        for k in &all {
            match store.get(k).await {
                Ok(Some(e)) => assert_eq!(e.body, body(k)),
                Ok(None) => panic!("{} lost in the failover", k.short_hex()),
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "not recovered: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue 'again;
                }
            }
        }
        break;
    }
    let after = keys.key("after-failover", 0);
    store
        .put(&after, &entry(clock.now_ms(), HOUR_MS, body(&after)))
        .await
        .unwrap();
    assert_eq!(store.get(&after).await.unwrap().unwrap().body, body(&after));
}
