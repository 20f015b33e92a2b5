//! Graceful shutdown: on the signal the proxy stops accepting, lets in-flight streams
//! finish (bounded by `drain_timeout`), stores what completed, and returns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Harness, Setup, chat_body};
use prefixcache_mock::MockConfig;
use serde_json::json;

#[tokio::test]
async fn an_in_flight_stream_finishes_after_the_signal() {
    let mock = MockConfig {
        chunk_delay: Duration::from_millis(50),
        output_tokens: 20..=20,
        ..Default::default()
    };
    let mut h = Harness::start(Setup::default().mock(mock)).await;
    let mut body = chat_body("drain me");
    body["stream"] = json!(true);
    let mut resp = h
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut got = resp.chunk().await.unwrap().unwrap().to_vec();
    h.begin_shutdown();
    while let Some(c) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    let text = String::from_utf8(got).unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream completed: {text}"
    );
    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..200 {
        match h.client.get(format!("{}/healthz", h.url)).send().await {
            Err(e) if e.is_connect() => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(refused, "the listener stops accepting after the signal");
    let state = h.state.clone();
    h.shutdown().await;
    assert!(
        state.tasks.is_closed() && state.tasks.is_empty(),
        "background work was waited for"
    );
}

#[tokio::test]
async fn a_stream_longer_than_the_drain_timeout_is_cut() {
    let mock = MockConfig {
        chunk_delay: Duration::from_millis(200),
        output_tokens: 40..=40,
        ..Default::default()
    };
    let mut h = Harness::start(
        Setup::default()
            .mock(mock)
            .toml("drain_timeout = \"300ms\""),
    )
    .await;
    let mut body = chat_body("too long to drain");
    body["stream"] = json!(true);
    let mut resp = h
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    resp.chunk().await.unwrap().unwrap();
    h.begin_shutdown();
    let mut ended_cleanly = true;
    loop {
        match resp.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                ended_cleanly = false;
                break;
            }
        }
    }
    assert!(
        !ended_cleanly,
        "a connection still open at the drain deadline is closed"
    );
    h.shutdown().await;
}
