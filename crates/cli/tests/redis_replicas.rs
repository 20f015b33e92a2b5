//! Replicas sharing one real Redis, as separate `prefixcache serve` processes
//! this test owns: a request that missed on one replica is a hit on the other, and a
//! Redis killed under load costs no failed client request; hits return after restart.

// Test helpers outside #[test] fns are not covered by clippy's test exemption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use prefixcache_testkit::process::Service;
use prefixcache_testkit::redis::{RedisServer, require_redis};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_prefixcache");

fn serve_on_redis(mock: &str, redis: &str, data: &std::path::Path) -> Service {
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
            // A short memory-tier freshness so the test sees Redis itself soon.
            ("PREFIXCACHE_STORE_MEMORY_TTL", "200ms"),
        ],
    )
}

fn body(text: &str) -> serde_json::Value {
    json!({"model": "gpt-4o-mini", "temperature": 0,
           "messages": [{"role": "user", "content": text}]})
}

async fn status_of(client: &reqwest::Client, url: &str, text: &str) -> (u16, String) {
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .header("authorization", "Bearer sk-replicas")
        .json(&body(text))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-prefixcache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    r.bytes().await.unwrap();
    (status, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_cache() {
    if !require_redis("two_replicas_share_one_cache") {
        return;
    }
    let redis = RedisServer::start();
    let mock = Service::start(
        BIN.as_ref(),
        &["mock-upstream", "--listen", "127.0.0.1:0"],
        &[],
    );
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // No tenant secret is configured: the replicas agree on one through Redis.
    let a = serve_on_redis(&mock.url, &redis.url(), da.path());
    let b = serve_on_redis(&mock.url, &redis.url(), db.path());
    let client = reqwest::Client::new();
    assert_eq!(
        status_of(&client, &a.url, "shared").await,
        (200, "MISS".into())
    );
    let mut on_b = (0, String::new());
    // The first replica stores the entry after answering; wait for it (bounded).
    for _ in 0..100 {
        on_b = status_of(&client, &b.url, "shared").await;
        if on_b.1 == "HIT" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        on_b,
        (200, "HIT".into()),
        "a miss on replica A is a hit on replica B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_under_load_fails_no_request() {
    if !require_redis("killing_redis_under_load_fails_no_request") {
        return;
    }
    let mut redis = RedisServer::start();
    let mock = Service::start(
        BIN.as_ref(),
        &["mock-upstream", "--listen", "127.0.0.1:0"],
        &[],
    );
    let data = tempfile::tempdir().unwrap();
    let proxy = serve_on_redis(&mock.url, &redis.url(), data.path());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // Load: 8 workers cycling over 20 bodies, so most requests are hits.
    let load = |phase: &'static str, requests: usize| {
        let client = client.clone();
        let url = proxy.url.clone();
        async move {
            let results = futures_util::future::join_all((0..8).map(|w| {
                let client = client.clone();
                let url = url.clone();
                async move {
                    let mut out = Vec::new();
                    for i in 0..requests / 8 {
                        out.push(
                            status_of(&client, &url, &format!("{phase} body {}", (w + i) % 20))
                                .await,
                        );
                    }
                    out
                }
            }))
            .await;
            results.into_iter().flatten().collect::<Vec<_>>()
        }
    };
    let before = load("steady", 400).await;
    let pid = redis.pid().unwrap();
    redis.kill();
    let during = load("outage", 400).await;
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
        load("probe", 8).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready.contains("\"status\":\"ok\""),
        "store never recovered: {ready}"
    );
    let after = load("recovered", 400).await;

    let all: Vec<_> = before.iter().chain(&during).chain(&after).collect();
    let failed = all.iter().filter(|(s, _)| *s != 200).count();
    println!(
        "redis outage under load: {} requests sent ({} before, {} during the outage of redis pid {pid}, {} after restart), {failed} failed",
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
    let hits_after = after.iter().filter(|(_, c)| c == "HIT").count();
    assert!(
        hits_after > 300,
        "hits return after the restart: {hits_after} of {}",
        after.len()
    );
    // And they come from the restarted Redis, which holds the new entries.
    let keys = redis.command(&["DBSIZE"]).unwrap().text();
    assert!(
        keys.parse::<u64>().unwrap() >= 20,
        "Redis holds the entries again: {keys}"
    );
}
