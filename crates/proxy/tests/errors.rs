//! Bad input gets a clear OpenAI-shaped error and loses nothing; upstream and store
//! trouble never turn into a hang or a wrong answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::{Harness, KEY_A, Reply, Setup, chat_body};
use prefixcache_core::key::CacheKey;
use prefixcache_store::{CacheStore, Entry, PurgeFilter, StoreError, StoreStats};
use serde_json::json;

fn assert_openai_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let e = &r.json()["error"];
    assert_eq!(e["code"], code);
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(e["type"].is_string());
    assert!(e.get("param").is_some());
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let h = Harness::start(Setup::default()).await;
    for raw in ["{\"model\": ", "[1,2]", "", "not json"] {
        let r = Reply::read(
            h.post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(raw)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_openai_error(&r, 400, "invalid_json");
    }
    assert_eq!(h.upstream_calls(), 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let h = Harness::start(Setup::default().toml("max_body_bytes = \"1KiB\"")).await;
    let big = chat_body(&"x".repeat(2000));
    assert_openai_error(&h.chat(&big).await, 413, "body_too_large");
    // Without a declared length (chunked), the limit still holds.
    let raw = serde_json::to_vec(&big).unwrap();
    let stream = futures_util::stream::iter(
        raw.chunks(100)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let r = Reply::read(
        h.post("/v1/chat/completions")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_openai_error(&r, 413, "body_too_large");
    assert_eq!(h.chat(&chat_body("small")).await.status, 200);
}

#[tokio::test]
async fn unknown_routes_are_forwarded_unchanged() {
    let h = Harness::start(Setup::default()).await;
    let models = h
        .client
        .get(format!("{}/v1/models?limit=3", h.url))
        .header("authorization", KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert!(models.headers().get("x-prefixcache-status").is_none());
    let seen = h
        .mock
        .mock
        .last_request(prefixcache_mock::MockRoute::Models)
        .unwrap();
    assert!(seen.uri.ends_with("/v1/models?limit=3"), "{}", seen.uri);
    assert_eq!(seen.authorization(), Some(KEY_A));
    // An unknown path gets upstream's own 404, untouched.
    let r = Reply::read(
        h.client
            .delete(format!("{}/v1/nothing/here", h.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_object());
    // A GET on a cached path is forwarded, not cached.
    let r = h
        .client
        .get(format!("{}/v1/chat/completions", h.url))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-prefixcache-status").is_none());
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let h = Harness::start(Setup::default().upstream(&format!("http://127.0.0.1:{port}"))).await;
    assert_openai_error(
        &h.chat(&chat_body("down")).await,
        502,
        "upstream_unreachable",
    );
    let r = Reply::read(
        h.client
            .get(format!("{}/v1/models", h.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_openai_error(&r, 502, "upstream_unreachable");
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504() {
    let h = Harness::start(Setup::default().toml("upstream_timeout = \"300ms\"")).await;
    let mut body = chat_body("hang");
    body["model"] = json!("mock-timeout");
    assert_openai_error(&h.chat(&body).await, 504, "upstream_timeout");
    assert_eq!(h.state.store.stats().entries, 0);
}

/// A store where every operation fails, as a Redis that went away.
#[derive(Debug)]
struct BrokenStore;

#[async_trait]
impl CacheStore for BrokenStore {
    fn backend(&self) -> &'static str {
        "broken"
    }
    async fn get(&self, _: &CacheKey) -> Result<Option<Entry>, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn put(&self, _: &CacheKey, _: &Entry) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn delete(&self, _: &CacheKey) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn health(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn purge(&self, _: &PurgeFilter) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

/// A store that never answers.
#[derive(Debug)]
struct HangingStore;

#[async_trait]
impl CacheStore for HangingStore {
    fn backend(&self) -> &'static str {
        "hanging"
    }
    async fn get(&self, _: &CacheKey) -> Result<Option<Entry>, StoreError> {
        std::future::pending().await
    }
    async fn put(&self, _: &CacheKey, _: &Entry) -> Result<(), StoreError> {
        std::future::pending().await
    }
    async fn delete(&self, _: &CacheKey) -> Result<(), StoreError> {
        std::future::pending().await
    }
    async fn health(&self) -> Result<(), StoreError> {
        std::future::pending().await
    }
    async fn purge(&self, _: &PurgeFilter) -> Result<u64, StoreError> {
        std::future::pending().await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

#[tokio::test]
async fn a_failing_store_fails_open() {
    for store in [
        Arc::new(BrokenStore) as Arc<dyn CacheStore>,
        Arc::new(HangingStore),
    ] {
        let h = Harness::start(
            Setup::default()
                .store(store)
                .toml("[store]\ntimeout = \"20ms\""),
        )
        .await;
        for _ in 0..3 {
            let r = h.chat(&chat_body("fail open")).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.cache(), "MISS");
        }
        let mut s = chat_body("fail open stream");
        s["stream"] = json!(true);
        let r = h.chat(&s).await;
        assert_eq!(r.status, 200);
        assert!(String::from_utf8_lossy(&r.body).contains("[DONE]"));
        let ready = Reply::read(
            h.client
                .get(format!("{}/readyz", h.url))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(ready.status, 200, "failing open is still ready");
        assert_eq!(ready.json()["status"], "degraded");
        h.settle().await;
        let metrics = h.metrics().await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("prefixcache_store_operations_total{")
                    && l.contains("op=\"get\"")
                    && (l.contains("result=\"unavailable\"") || l.contains("result=\"timeout\""))),
            "{metrics}"
        );
    }
}
