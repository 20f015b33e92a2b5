//! Replicas sharing one real Redis, as separate `prefixcache serve` processes this test
//! owns: a request that missed on one replica is a hit on the other (one upstream call
//! in all); a Redis killed while requests are in flight costs no failed client
//! request, and after its restart hits come from Redis itself.

// Test helpers outside #[test] fns are not covered by clippy's test exemption.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The test awaits every task it spawns before it ends.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prefixcache_testkit::process::Service;
use prefixcache_testkit::redis::{RedisServer, require_redis};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_prefixcache");

/// `serve` on Redis; `memory_ttl` bounds how long its memory tier may answer for Redis
/// (`0s`: every lookup is a Redis `GET`), `store_timeout` each store operation.
fn serve_on_redis(
    mock: &str,
    redis: &str,
    data: &std::path::Path,
    memory_ttl: &str,
    store_timeout: &str,
) -> Service {
    Service::start(
        BIN.as_ref(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            mock,
            "--store",
            "redis",
            "--redis-url",
            redis,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[
            ("PREFIXCACHE_CONFIG", "/dev/null"),
            ("RUST_LOG", "warn"),
            ("PREFIXCACHE_STORE_MEMORY_TTL", memory_ttl),
            ("PREFIXCACHE_STORE_TIMEOUT", store_timeout),
        ],
    )
}

fn mock_upstream() -> Service {
    Service::start(
        BIN.as_ref(),
        &["mock-upstream", "--listen", "127.0.0.1:0"],
        &[],
    )
}

fn body(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0,
           "messages": [{"role": "user", "content": text}]})
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    text: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = client
        .post(format!("{url}/v1/chat/completions"))
        .header("authorization", "Bearer sk-replicas")
        .json(&body(text));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-prefixcache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    r.bytes().await.unwrap();
    (status, cache)
}

async fn status_of(client: &reqwest::Client, url: &str, text: &str) -> (u16, String) {
    send(client, url, text, &[]).await
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Calls of one command on a Redis server, from `INFO commandstats`.
fn redis_calls(redis: &RedisServer, command: &str) -> u64 {
    let info = redis.command(&["INFO", "commandstats"]).unwrap().text();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_cache() {
    if !require_redis("two_replicas_share_one_cache") {
        return;
    }
    let redis = RedisServer::start();
    let mock = mock_upstream();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // No tenant secret is configured: the replicas agree on one through Redis.
    // A slow write on a loaded machine must not look like an unshared cache.
    let a = serve_on_redis(&mock.url, &redis.url(), da.path(), "10s", "30s");
    let b = serve_on_redis(&mock.url, &redis.url(), db.path(), "10s", "30s");
    let client = reqwest::Client::new();
    assert_eq!(
        status_of(&client, &a.url, "shared").await,
        (200, "MISS".into())
    );
    // A's answer was stored before its last byte reached us, so B's very first
    // request finds it: a hit without a second upstream call.
    assert_eq!(
        status_of(&client, &b.url, "shared").await,
        (200, "HIT".into()),
        "a miss on replica A is a hit on replica B"
    );
    let stats = get_json(&client, &format!("{}/mock/stats", mock.url)).await;
    assert_eq!(stats["total"], 1, "one upstream call in all: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_under_load_fails_no_request() {
    if !require_redis("killing_redis_under_load_fails_no_request") {
        return;
    }
    let mut redis = RedisServer::start();
    let mock = mock_upstream();
    let data = tempfile::tempdir().unwrap();
    // No memory tier in front of Redis: a HIT can only come from Redis.
    // A dead Redis refuses connections at once, so failing open stays fast; the
    // timeout only has to be long enough that a loaded machine's slow GET is no miss.
    let proxy = serve_on_redis(&mock.url, &redis.url(), data.path(), "0s", "2s");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // Load: 8 workers cycling over 20 bodies, so most requests are hits. `done` counts
    // answered requests, so the test can act while the rest are in flight.
    let load = |phase: &'static str, requests: usize, done: Arc<AtomicUsize>| {
        let client = client.clone();
        let url = proxy.url.clone();
        async move {
            let results = futures_util::future::join_all((0..8).map(|w| {
                let (client, url, done) = (client.clone(), url.clone(), done.clone());
                async move {
                    let mut out = Vec::new();
                    for i in 0..requests / 8 {
                        let text = format!("{phase} body {}", (w + i) % 20);
                        out.push(status_of(&client, &url, &text).await);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    out
                }
            }))
            .await;
            results.into_iter().flatten().collect::<Vec<_>>()
        }
    };
    let before = load("steady", 400, Arc::default()).await;

    // The outage begins while the load runs: 8 requests in flight at any moment, and one
    // held at the upstream (a miss that will store into a dead Redis).
    let done = Arc::new(AtomicUsize::new(0));
    let outage = tokio::spawn(load("outage", 400, done.clone()));
    let held = tokio::spawn({
        let (client, url) = (client.clone(), proxy.url.clone());
        async move {
            send(
                &client,
                &url,
                "held across the kill",
                &[("x-mock-head-gate", "kill")],
            )
            .await
        }
    });
    let gates = format!("{}/mock/gates", mock.url);
    while done.load(Ordering::SeqCst) < 40
        || get_json(&client, &gates).await["kill"]["waiting"] != 1
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = redis.pid().unwrap();
    redis.kill();
    let killed_at = done.load(Ordering::SeqCst);
    client
        .post(format!("{}/mock/gates/kill/open", mock.url))
        .send()
        .await
        .unwrap();
    let held = held.await.unwrap();
    let during = outage.await.unwrap();
    assert!(killed_at < 400, "the kill came while the load ran");
    assert_eq!(held, (200, "MISS".into()), "in flight across the kill");

    redis.restart();
    // The circuit breaker probes Redis again after its open interval; wait until the
    // proxy reports the store healthy (bounded), then measure.
    let mut ready = String::new();
    for _ in 0..300 {
        ready = client
            .get(format!("{}/readyz", proxy.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if ready.contains("\"status\":\"ok\"") {
            break;
        }
        // Keep traffic flowing: probes ride on real requests.
        load("probe", 8, Arc::default()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready.contains("\"status\":\"ok\""),
        "store never recovered: {ready}"
    );
    let gets_before = redis_calls(&redis, "get");
    let after = load("recovered", 400, Arc::default()).await;
    let gets = redis_calls(&redis, "get") - gets_before;

    let all: Vec<_> = before.iter().chain(&during).chain(&after).collect();
    let failed = all.iter().filter(|(s, _)| *s != 200).count();
    println!(
        "redis outage under load: {} requests sent ({} before, {} during the outage of redis pid {pid}, killed after {killed_at} of them, {} after restart), {failed} failed",
        all.len(),
        before.len(),
        during.len(),
        after.len()
    );
    assert_eq!(
        failed, 0,
        "no client request may fail because Redis is down"
    );
    assert!(
        during
            .iter()
            .all(|(_, c)| c == "MISS" || c == "HIT" || c == "COALESCED")
    );
    // A store that did not come back gives no HIT at all (no memory tier). How many of the
    // rest are HITs rather than COALESCED joins of a concurrent miss depends on the
    // machine's scheduling, so the bound is half, not a count tuned to one machine.
    let hits_after = after.iter().filter(|(_, c)| c == "HIT").count();
    assert!(
        hits_after >= after.len() / 2,
        "hits return after the restart: {hits_after} of {}",
        after.len()
    );
    // With no memory tier every lookup is a GET on the restarted Redis, hits included.
    assert!(
        gets >= after.len() as u64,
        "{gets} Redis GETs for {} lookups",
        after.len()
    );
}
