//! The GPT-5.6 prompt-cache rules over HTTP: usage fields (`cache_write_tokens`,
//! `cached_tokens`) in Chat Completions and Responses, JSON and SSE; the implicit
//! breakpoint's pitfall and the explicit breakpoint that fixes it; validation of the new
//! fields; older models unchanged. Expected values are computed from the prompt sizes the
//! mock reports, never from the simulation itself.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns parse replies the mock must give

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{post, sse_events};
use prefixcache_mock::clock::ManualClock;
use prefixcache_mock::{MockConfig, PromptCacheConfig, spawn_local};
use serde_json::{Value, json};

/// One simulated machine, so every request lands where the last one wrote.
fn config(clock: &ManualClock) -> MockConfig {
    MockConfig {
        clock: Arc::new(clock.clone()),
        prompt_cache: PromptCacheConfig {
            machines: 1,
            ..PromptCacheConfig::default()
        },
        ..MockConfig::default()
    }
}

/// An agent-style chat request: a long stable system prompt (a one-part array, marked
/// with a breakpoint when `marked`), then a question that changes every call.
fn agent_chat(model: &str, system: &str, question: &str, marked: bool) -> Value {
    let mut part = json!({"type": "text", "text": system});
    if marked {
        part["prompt_cache_breakpoint"] = json!({"mode": "explicit"});
    }
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": [part]},
            {"role": "user", "content": question}
        ]
    })
}

/// The reply priming every chat prompt ends with (`<start> assistant <message>`, the
/// cookbook's 3 tokens): after the last message, so never inside a cached prefix.
const PRIMING: u64 = 3;

fn usage_of(v: &Value) -> (u64, u64, u64) {
    let u = &v["usage"];
    let d = &u["prompt_tokens_details"];
    (
        u["prompt_tokens"].as_u64().unwrap(),
        d["cached_tokens"].as_u64().unwrap(),
        d["cache_write_tokens"].as_u64().unwrap(),
    )
}

/// The prompt tokens of `body` as the mock counts them (a request to an older model with
/// the markers removed has the same token sequence).
async fn prompt_tokens(server: &prefixcache_mock::MockServer, body: &Value) -> u64 {
    let r = post(server, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["usage"]["prompt_tokens"].as_u64().unwrap()
}

#[tokio::test]
async fn a_changing_question_after_a_stable_prefix_reads_nothing_without_a_breakpoint() {
    let clock = ManualClock::new();
    let server = spawn_local(config(&clock)).await.unwrap();
    let system = common::long_text(3000);
    let mut totals = (0u64, 0u64, 0u64);
    for i in 0..5 {
        let body = agent_chat("gpt-5.6-terra", &system, &format!("task number {i}"), false);
        let v = post(&server, "/v1/chat/completions", &body).await.json();
        let (prompt, cached, written) = usage_of(&v);
        // The implicit breakpoint sits after the new question: every call writes its
        // whole prompt (but the reply priming) and reads nothing.
        assert_eq!((cached, written), (0, prompt - PRIMING), "call {i}");
        totals = (totals.0 + prompt, totals.1 + cached, totals.2 + written);
    }
    assert_eq!(totals.1, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_explicit_breakpoint_on_the_stable_prefix_makes_later_calls_read_it() {
    let clock = ManualClock::new();
    let server = spawn_local(config(&clock)).await.unwrap();
    let system = common::long_text(3000);
    // The prefix up to the breakpoint, measured on an older model (same sequence): the
    // system message alone is that prompt minus the question's message and the priming.
    // Simpler and exact: the breakpoint ends after the system part's text, which is the
    // prompt of [system] minus its closing <end> and the 3 priming tokens.
    let sys_only = json!({"model": "gpt-4o", "messages": [{"role": "system", "content": [{"type": "text", "text": system}]}]});
    let prefix = prompt_tokens(&server, &sys_only).await - 1 - 3;
    server.mock.reset();

    let first = post(
        &server,
        "/v1/chat/completions",
        &agent_chat("gpt-5.6-terra", &system, "task number 0", true),
    )
    .await
    .json();
    let (prompt0, cached0, written0) = usage_of(&first);
    // Writes the explicit breakpoint and the implicit one behind the question: the
    // whole prompt but the priming, once.
    assert_eq!((cached0, written0), (0, prompt0 - PRIMING));
    for i in 1..5 {
        clock.advance(Duration::from_secs(60));
        let v = post(
            &server,
            "/v1/chat/completions",
            &agent_chat("gpt-5.6-terra", &system, &format!("task number {i}"), true),
        )
        .await
        .json();
        let (prompt, cached, written) = usage_of(&v);
        // Reads exactly the stable prefix (no 128-token rounding) and writes only the
        // question's tail; each prompt token counts once.
        assert_eq!(cached, prefix, "call {i}");
        assert_eq!(written, prompt - PRIMING - prefix, "call {i}");
    }
    let s = server.stats().prompt_cache;
    assert_eq!(s.cached_tokens, 4 * prefix);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn explicit_mode_and_ttl_over_http() {
    let clock = ManualClock::new();
    let server = spawn_local(config(&clock)).await.unwrap();
    let system = common::long_text(2000);
    let mut body = agent_chat("gpt-5.6-luna", &system, "q", false);
    body["prompt_cache_options"] = json!({"mode": "explicit", "ttl": "30m"});
    // Explicit mode without markers: nothing read, nothing written, ever.
    for _ in 0..2 {
        let v = post(&server, "/v1/chat/completions", &body).await.json();
        assert_eq!((usage_of(&v).1, usage_of(&v).2), (0, 0));
    }
    // With a marker: written once, read 29 minutes later, gone 30 minutes after that.
    let mut body = agent_chat("gpt-5.6-luna", &system, "q", true);
    body["prompt_cache_options"] = json!({"mode": "explicit"});
    let v = post(&server, "/v1/chat/completions", &body).await.json();
    let (prompt, cached, written) = usage_of(&v);
    assert_eq!(cached, 0);
    assert!(written > 1024 && written < prompt, "only up to the marker");
    clock.advance(Duration::from_secs(29 * 60));
    let v = post(&server, "/v1/chat/completions", &body).await.json();
    assert_eq!((usage_of(&v).1, usage_of(&v).2), (written, 0));
    clock.advance(Duration::from_secs(30 * 60 + 1));
    let v = post(&server, "/v1/chat/completions", &body).await.json();
    assert_eq!((usage_of(&v).1, usage_of(&v).2), (0, written));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn usage_fields_in_streams_and_responses() {
    let clock = ManualClock::new();
    let server = spawn_local(config(&clock)).await.unwrap();
    let system = common::long_text(2000);
    // Chat stream with include_usage: the last chunk carries both fields.
    let mut body = agent_chat("gpt-5.6-sol", &system, "first", true);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&server, "/v1/chat/completions", &body).await;
    let events = sse_events(&r.text());
    let last = events[events.len() - 2].json();
    let (prompt, cached, written) = usage_of(&last);
    assert_eq!((cached, written), (0, prompt - PRIMING));

    // Responses: the instructions and an explicit breakpoint on the first input part,
    // 12 hours. Written tokens are split by lifetime.
    let resp = |q: &str, stream: bool| {
        json!({
            "model": "gpt-5.6-sol",
            "stream": stream,
            "prompt_cache_options": {"ttl": "30m"},
            "input": [
                {"role": "developer", "content": [{"type": "input_text", "text": system,
                    "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "12h"}}]},
                {"role": "user", "content": [{"type": "input_text", "text": q}]}
            ]
        })
    };
    let v = post(&server, "/v1/responses", &resp("one", false))
        .await
        .json();
    let u = &v["usage"];
    let input = u["input_tokens"].as_u64().unwrap();
    let d = &u["input_tokens_details"];
    let h12 = d["cache_write_tokens_details"]["ttl_12h_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(d["cached_tokens"], 0);
    assert_eq!(d["cache_write_tokens"], json!(input - PRIMING));
    assert!(h12 > 1024 && h12 < input);
    assert_eq!(
        d["cache_write_tokens_details"]["ttl_30m_tokens"],
        json!(input - PRIMING - h12)
    );
    assert_eq!(
        v["prompt_cache_options"],
        json!({"mode": "implicit", "ttl": "30m"})
    );
    // Streamed: response.completed carries the same usage shape; the 12 h prefix is read.
    let r = post(&server, "/v1/responses", &resp("two", true)).await;
    let events = sse_events(&r.text());
    let done = events
        .iter()
        .map(|e| e.json())
        .find(|e| e["type"] == "response.completed")
        .unwrap();
    let d = &done["response"]["usage"]["input_tokens_details"];
    let input2 = done["response"]["usage"]["input_tokens"].as_u64().unwrap();
    assert_eq!(d["cached_tokens"], json!(h12));
    assert_eq!(d["cache_write_tokens"], json!(input2 - PRIMING - h12));
    assert_eq!(d["cache_write_tokens_details"]["ttl_12h_tokens"], 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn new_fields_are_validated_and_older_models_unchanged() {
    let clock = ManualClock::new();
    let server = spawn_local(config(&clock)).await.unwrap();
    // Older model: the new fields are rejected, usage keeps its shape.
    let mut body = agent_chat("gpt-5.5", "x", "y", false);
    body["prompt_cache_options"] = json!({"mode": "explicit"});
    let r = post(&server, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        json!({"message": "Unsupported parameter: 'prompt_cache_options' is not supported with this model.",
               "type": "invalid_request_error", "param": "prompt_cache_options", "code": "unsupported_parameter"})
    );
    let r = post(
        &server,
        "/v1/chat/completions",
        &agent_chat("gpt-4o", "x", "y", true),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["param"],
        "messages[0].content[0].prompt_cache_breakpoint"
    );
    let v = post(
        &server,
        "/v1/chat/completions",
        &agent_chat("gpt-4o", "x", "y", false),
    )
    .await
    .json();
    assert!(
        v["usage"]["prompt_tokens_details"]
            .get("cache_write_tokens")
            .is_none()
    );
    // GPT-5.6: a malformed marker is a 400 naming its path.
    let mut body = agent_chat("gpt-5.6", "x", "y", false);
    body["messages"][1]["content"] =
        json!([{"type": "text", "text": "y", "prompt_cache_breakpoint": {"mode": "sometimes"}}]);
    let r = post(&server, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(
        e["error"]["param"],
        "messages[1].content[0].prompt_cache_breakpoint.mode"
    );
    assert_eq!(e["error"]["code"], "invalid_value");
    // Chat Completions accepts only the 30-minute lifetime.
    let mut body = agent_chat("gpt-5.6", "x", "y", false);
    body["prompt_cache_options"] = json!({"ttl": "12h"});
    assert_eq!(
        post(&server, "/v1/chat/completions", &body).await.status,
        400
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn markers_do_not_change_what_the_model_writes() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let text = |v: Value| v["choices"][0]["message"]["content"].clone();
    let a = post(
        &server,
        "/v1/chat/completions",
        &agent_chat("gpt-5.6", "stable", "q", false),
    )
    .await
    .json();
    let mut marked = agent_chat("gpt-5.6", "stable", "q", true);
    marked["prompt_cache_options"] = json!({"mode": "implicit"});
    let b = post(&server, "/v1/chat/completions", &marked).await.json();
    assert_eq!(text(a), text(b));
    server.shutdown().await.unwrap();
}
