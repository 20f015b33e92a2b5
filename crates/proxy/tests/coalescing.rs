//! Identical requests in flight cost one upstream call, and a failing leader
//! does not fail its followers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Harness, Reply, Setup, chat_body};
use prefixcache_mock::{Latency, MockConfig};
use serde_json::json;

fn slow_mock() -> MockConfig {
    MockConfig {
        latency: Latency::Fixed(Duration::from_millis(500)),
        ..Default::default()
    }
}

async fn fifty(h: &Harness, body: serde_json::Value) -> Vec<Reply> {
    futures_util::future::join_all((0..50).map(|_| h.chat(&body))).await
}

#[tokio::test]
async fn fifty_identical_requests_make_one_upstream_call() {
    let h = Harness::start(Setup::default().mock(slow_mock())).await;
    let replies = fifty(&h, chat_body("coalesce me")).await;
    assert_eq!(h.upstream_calls(), 1, "exactly one upstream call");
    let statuses: Vec<&str> = replies.iter().map(Reply::cache).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "MISS").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "COALESCED").count(),
        49,
        "{statuses:?}"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.body == replies[0].body)
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("prefixcache_coalesced_total 49"),
        "{metrics}"
    );
}

#[tokio::test]
async fn fifty_identical_streams_make_one_upstream_call() {
    let h = Harness::start(Setup::default().mock(slow_mock())).await;
    let mut body = chat_body("coalesce my stream");
    body["stream"] = json!(true);
    let replies = fifty(&h, body).await;
    assert_eq!(h.upstream_calls(), 1);
    let coalesced = replies.iter().filter(|r| r.cache() == "COALESCED").count();
    assert_eq!(coalesced, 49);
    let content = replies[0].streamed_content();
    assert!(!content.is_empty());
    for r in &replies {
        assert_eq!(r.status, 200);
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("text/event-stream")
        );
        assert_eq!(
            r.body, replies[0].body,
            "every follower got the same stream bytes"
        );
    }
}

#[tokio::test]
async fn streaming_followers_receive_the_stream_as_it_arrives() {
    // 10 chunks, 100 ms apart: a follower sees its first chunk long before the end.
    let mock = MockConfig {
        latency: Latency::Fixed(Duration::from_millis(200)),
        chunk_delay: Duration::from_millis(100),
        output_tokens: 10..=10,
        ..Default::default()
    };
    let h = Harness::start(Setup::default().mock(mock)).await;
    let mut body = chat_body("live followers");
    body["stream"] = json!(true);
    let leader = h.post("/v1/chat/completions").json(&body).send();
    let leader = tokio::spawn(leader);
    // Let the leader's request reach the proxy first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut follower = h
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(follower.headers()["x-prefixcache-status"], "COALESCED");
    let first = follower.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    // The upstream response is still being read when the follower has its first chunk.
    assert!(
        h.mock.stats().in_flight > 0,
        "follower only got data at the end"
    );
    let mut rest = first.to_vec();
    while let Some(c) = follower.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let leader = leader.await.unwrap().unwrap().bytes().await.unwrap();
    assert_eq!(leader.as_ref(), rest.as_slice());
    assert_eq!(h.upstream_calls(), 1);
}

#[tokio::test]
async fn a_json_follower_of_a_streaming_leader_gets_json() {
    let h = Harness::start(Setup::default().mock(slow_mock())).await;
    let mut stream = chat_body("mixed forms");
    stream["stream"] = json!(true);
    let json_body = chat_body("mixed forms");
    let (a, b) = tokio::join!(async { h.chat(&stream).await }, async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.chat(&json_body).await
    });
    assert_eq!((a.cache(), b.cache()), ("MISS", "COALESCED"));
    assert_eq!(b.content(), a.streamed_content());
    assert_eq!(h.upstream_calls(), 1);
}

#[tokio::test]
async fn followers_of_a_failed_leader_call_upstream_themselves() {
    let h = Harness::start(Setup::default().mock(slow_mock())).await;
    let mut body = chat_body("failing leader");
    body["model"] = json!("mock-error-500");
    let replies = futures_util::future::join_all((0..10).map(|_| h.chat(&body))).await;
    assert!(replies.iter().all(|r| r.status == 500));
    assert!(replies.iter().all(|r| r.cache() != "COALESCED"));
    // The leader's call, then one per follower: none was failed by the leader's error.
    assert_eq!(h.upstream_calls(), 10);
}

#[tokio::test]
async fn a_no_cache_request_does_not_join_a_flight() {
    let h = Harness::start(Setup::default().mock(slow_mock())).await;
    let body = chat_body("no-cache does not join");
    let (a, b) = tokio::join!(async { h.chat(&body).await }, async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.chat_with(&[("cache-control", "no-cache")], &body).await
    });
    assert_eq!((a.cache(), b.cache()), ("MISS", "BYPASS"));
    assert_eq!(h.upstream_calls(), 2);
}
