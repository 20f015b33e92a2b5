//! Metrics after a scripted sequence: a miss, a hit, coalesced requests, a
//! store failure and an upstream 500, with exact counter deltas and dollar sums.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{Harness, Setup, chat_body, metric};
use prefixcache_core::key::CacheKey;
use prefixcache_core::pricing::PriceTable;
use prefixcache_mock::{Latency, MockConfig};
use prefixcache_store::memory::MemoryStore;
use prefixcache_store::{
    CacheStore, Clock, Entry, ManualClock, PurgeFilter, StoreError, StoreStats,
};
use serde_json::{Value, json};

/// A memory store that fails every operation while `broken` is set.
#[derive(Debug)]
struct Flaky {
    inner: MemoryStore,
    broken: std::sync::atomic::AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            Err(StoreError::Unavailable("down for the test".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl CacheStore for Flaky {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    async fn get(&self, k: &CacheKey) -> Result<Option<Entry>, StoreError> {
        self.check()?;
        self.inner.get(k).await
    }
    async fn put(&self, k: &CacheKey, e: &Entry) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put(k, e).await
    }
    async fn delete(&self, k: &CacheKey) -> Result<(), StoreError> {
        self.check()?;
        self.inner.delete(k).await
    }
    async fn health(&self) -> Result<(), StoreError> {
        self.check()
    }
    async fn purge(&self, f: &PurgeFilter) -> Result<u64, StoreError> {
        self.inner.purge(f).await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

/// Dollars of one usage object at gpt-4o-mini's prices, computed here from the rates.
fn dollars(usage: &Value) -> f64 {
    let (_, price) = PriceTable::builtin().lookup("gpt-4o-mini").unwrap();
    let r = &price.base;
    let prompt = usage["prompt_tokens"].as_f64().unwrap();
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_f64()
        .unwrap_or(0.0);
    let completion = usage["completion_tokens"].as_f64().unwrap();
    ((prompt - cached) * r.input + cached * r.cached_input + completion * r.output) / 1e6
}

#[tokio::test]
async fn scripted_sequence_gives_exact_deltas() {
    let clock = ManualClock::new(1_800_000_000_000);
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let store = Arc::new(Flaky {
        inner: MemoryStore::new(64 << 20, clock_dyn),
        broken: false.into(),
    });
    let mock = MockConfig {
        latency: Latency::Fixed(Duration::from_millis(300)),
        ..Default::default()
    };
    let h = Harness::start(
        Setup::default()
            .mock(mock)
            .clock(clock)
            .store(store.clone()),
    )
    .await;

    // 1 miss, then 1 hit.
    let miss = h.chat(&chat_body("metered")).await;
    h.settle().await;
    assert_eq!(h.chat(&chat_body("metered")).await.cache(), "HIT");
    // 3 identical concurrent requests: 1 miss + 2 coalesced.
    let body = chat_body("metered together");
    let replies = futures_util::future::join_all((0..3).map(|_| h.chat(&body))).await;
    let together = replies.iter().find(|r| r.cache() == "MISS").unwrap();
    assert_eq!(
        replies.iter().filter(|r| r.cache() == "COALESCED").count(),
        2
    );
    h.settle().await;
    // The store goes down: a miss served from upstream, the lookup and the write fail.
    store
        .broken
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let during = h.chat(&chat_body("store is down")).await;
    assert_eq!((during.status, during.cache()), (200, "MISS"));
    h.settle().await;
    store
        .broken
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // An upstream 500.
    let mut failing = chat_body("upstream fails");
    failing["model"] = json!("mock-error-500");
    assert_eq!(h.chat(&failing).await.status, 500);
    h.settle().await;

    let m = h.metrics().await;
    let req = "prefixcache_requests_total";
    assert_eq!(metric(&m, req, &[("status", "miss")]), 4.0, "{m}");
    assert_eq!(metric(&m, req, &[("status", "hit")]), 1.0);
    assert_eq!(metric(&m, req, &[("status", "coalesced")]), 2.0);
    assert_eq!(metric(&m, "prefixcache_coalesced_total", &[]), 2.0);
    assert_eq!(
        metric(&m, "prefixcache_upstream_errors_total", &[("code", "500")]),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "prefixcache_store_operations_total",
            &[("op", "get"), ("result", "unavailable")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "prefixcache_store_operations_total",
            &[("op", "put"), ("result", "unavailable")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "prefixcache_store_operations_total",
            &[("op", "get"), ("result", "hit")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "prefixcache_request_duration_seconds_count",
            &[("status", "hit")]
        ),
        1.0
    );

    // Dollars: three paid calls (the 500 has no usage), and three answers that cost
    // nothing (one hit, two coalesced), each saving what its original call cost.
    let spent = dollars(&miss.json()["usage"])
        + dollars(&together.json()["usage"])
        + dollars(&during.json()["usage"]);
    let saved = dollars(&miss.json()["usage"]) + 2.0 * dollars(&together.json()["usage"]);
    let got_spent = metric(&m, "prefixcache_cost_usd_total", &[("kind", "spent")]);
    let got_saved = metric(&m, "prefixcache_cost_usd_total", &[("kind", "saved")]);
    assert!(
        (got_spent - spent).abs() < 1e-12,
        "spent {got_spent} != {spent}"
    );
    assert!(
        (got_saved - saved).abs() < 1e-12,
        "saved {got_saved} != {saved}"
    );
    let prompt_cache = metric(
        &m,
        "prefixcache_tokens_total",
        &[("kind", "prompt"), ("source", "cache")],
    );
    let expected = miss.json()["usage"]["prompt_tokens"].as_f64().unwrap()
        + 2.0 * together.json()["usage"]["prompt_tokens"].as_f64().unwrap();
    assert_eq!(prompt_cache, expected);
}

/// GPT-5.6 traffic through the proxy: the mock reports cache writes and reads, and the
/// metrics count write tokens and the dollars spent on provider-cache writes and reads
/// at the table's rates (computed here from the rates and the reported usage).
#[tokio::test]
async fn gpt_5_6_cache_writes_are_counted_in_tokens_and_dollars() {
    let h = Harness::start(Setup::default()).await;
    let system = "stable instructions for the agent ".repeat(300);
    let body = |q: &str| {
        json!({
            "model": "gpt-5.6-terra",
            "temperature": 0,
            "prompt_cache_key": "agents",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": system,
                    "prompt_cache_breakpoint": {"mode": "explicit"}}]},
                {"role": "user", "content": q}
            ]
        })
    };
    let mut usages = Vec::new();
    for q in ["first task", "second task"] {
        let r = h.chat(&body(q)).await;
        assert_eq!((r.status, r.cache()), (200, "MISS"));
        usages.push(r.json()["usage"].clone());
        h.settle().await;
    }
    let d = |u: &Value, k: &str| u["prompt_tokens_details"][k].as_f64().unwrap();
    // The second call reads the system prompt the first one wrote.
    assert_eq!(d(&usages[0], "cached_tokens"), 0.0);
    assert!(d(&usages[0], "cache_write_tokens") > 1024.0);
    assert!(d(&usages[1], "cached_tokens") > 1024.0);
    let (_, price) = PriceTable::builtin().lookup("gpt-5.6-terra").unwrap();
    let r = &price.base;
    let written: f64 = usages.iter().map(|u| d(u, "cache_write_tokens")).sum();
    let read: f64 = usages.iter().map(|u| d(u, "cached_tokens")).sum();
    let m = h.metrics().await;
    let tokens = "prefixcache_tokens_total";
    let up = ("source", "upstream");
    assert_eq!(
        metric(&m, tokens, &[("kind", "cache_write_prompt"), up]),
        written
    );
    assert_eq!(metric(&m, tokens, &[("kind", "cached_prompt"), up]), read);
    let usd = "prefixcache_provider_cache_usd_total";
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(
        metric(&m, usd, &[("kind", "cache_write")]),
        written * r.cache_write / 1e6
    ));
    assert!(close(
        metric(&m, usd, &[("kind", "cache_read")]),
        read * r.cached_input / 1e6
    ));
    // The write price is 1.25x the input price (OpenAI: GPT-5.6 and later).
    assert!(close(r.cache_write, 1.25 * r.input));
}
