//! Graceful shutdown: on the signal the proxy stops accepting, lets in-flight streams
//! finish (bounded by `drain_timeout`), stores what completed, and returns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Harness, Setup, chat_body};
use serde_json::json;

#[tokio::test]
async fn an_in_flight_stream_finishes_after_the_signal() {
    let mut h = Harness::start(Setup::default()).await;
    let mut body = chat_body("drain me");
    body["stream"] = json!(true);
    // The upstream holds the rest of the stream until the signal has been given.
    let mut resp = h
        .post("/v1/chat/completions")
        .header("x-mock-stream-gate", "drain@2")
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut got = resp.chunk().await.unwrap().unwrap().to_vec();
    h.held_at("drain", 1).await;
    h.begin_shutdown();
    h.open_gate("drain");
    while let Some(c) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    let text = String::from_utf8(got).unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream completed: {text}"
    );
    // New connections are refused once the listener is closed.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match h.client.get(format!("{}/healthz", h.url)).send().await {
            Err(e) if e.is_connect() => break,
            _ => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the listener stops accepting after the signal"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let state = h.state.clone();
    let key = h.chat_key(common::KEY_A, &body, "default");
    h.shutdown().await;
    assert!(
        state.tasks.is_closed() && state.tasks.is_empty(),
        "background work was waited for"
    );
    // What completed during the drain was stored.
    let stored = state.store.get(&key).await.unwrap().expect("stored");
    assert!(
        stored.body.ends_with(b"data: [DONE]\n\n") && stored.body.len() >= text.len(),
        "the whole stream was stored"
    );
}

#[tokio::test]
async fn a_stream_longer_than_the_drain_timeout_is_cut() {
    let mut h = Harness::start(Setup::default().toml("drain_timeout = \"300ms\"")).await;
    let mut body = chat_body("too long to drain");
    body["stream"] = json!(true);
    // The upstream never sends the rest: the gate stays closed past the drain timeout.
    let mut resp = h
        .post("/v1/chat/completions")
        .header("x-mock-stream-gate", "never@2")
        .json(&body)
        .send()
        .await
        .unwrap();
    resp.chunk().await.unwrap().unwrap();
    h.held_at("never", 1).await;
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
