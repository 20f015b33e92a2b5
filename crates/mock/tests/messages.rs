//! The mock's Anthropic Messages API over HTTP: headers, the error shape and special
//! models, JSON and SSE answers (text, tools, thinking), `count_tokens`, and the
//! simulated prompt cache in the usage fields.

// Test helpers: a failed expectation should panic with its message, like in a #[test].
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{Reply, post_raw};
use prefixcache_core::sse::split_all;
use prefixcache_core::wire::anthropic::{EventKind, MessageAssembler};
use prefixcache_mock::clock::ManualClock;
use prefixcache_mock::{MockConfig, MockRoute, MockServer, spawn_local};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

async fn messages(server: &MockServer, body: &Value) -> Reply {
    post_raw(
        server,
        "/v1/messages",
        &body.to_string(),
        &[VERSION, ("x-api-key", "sk-ant-test")],
    )
    .await
}

/// A system prompt well over 1,024 estimated tokens (each sentence is about 12).
fn long_system() -> String {
    (0..150)
        .map(|i| format!("Rule {i}: answer the customer politely and cite the policy. "))
        .collect()
}

fn body(extra: Value) -> Value {
    let mut b = json!({"model": "claude-sonnet-4-5", "max_tokens": 256,
        "messages": [{"role": "user", "content": "What is the refund window?"}]});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn usage(r: &Reply) -> (u64, u64, u64, u64, u64) {
    let u = &r.json()["usage"];
    (
        u["input_tokens"].as_u64().unwrap(),
        u["cache_read_input_tokens"].as_u64().unwrap(),
        u["cache_creation_input_tokens"].as_u64().unwrap(),
        u["cache_creation"]["ephemeral_5m_input_tokens"]
            .as_u64()
            .unwrap(),
        u["cache_creation"]["ephemeral_1h_input_tokens"]
            .as_u64()
            .unwrap(),
    )
}

#[tokio::test]
async fn a_message_has_the_api_shape_and_headers() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let r = messages(&server, &body(json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let rid = r.header("request-id").unwrap();
    assert!(rid.starts_with("req_011C") && rid.len() == 28, "{rid}");
    assert!(r.header("anthropic-organization-id").is_some());
    for h in [
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
    ] {
        assert!(r.header(h).is_some(), "{h}");
    }
    let m = r.json();
    let keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 8, "{m}");
    assert!(m["id"].as_str().unwrap().starts_with("msg_01"));
    assert_eq!(
        (m["type"].as_str(), m["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(m["model"], "claude-sonnet-4-5");
    assert_eq!(m["content"][0]["type"], "text");
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["stop_sequence"], Value::Null);
    // Field order is the API's.
    assert!(r.text().starts_with("{\"id\":\"msg_01"), "{}", r.text());
    // A short prompt: nothing cached, nothing written.
    let (input, read, written, _, _) = usage(&r);
    assert!(input > 0 && read == 0 && written == 0);
    assert!(m["usage"]["output_tokens"].as_u64().unwrap() >= 16);
    // The same request gives the same content, with another id.
    let again = messages(&server, &body(json!({}))).await.json();
    assert_eq!(again["content"], m["content"]);
    assert_ne!(again["id"], m["id"]);
    assert_eq!(server.stats().route(MockRoute::Messages), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn errors_have_the_api_shape() {
    let config = MockConfig {
        require_auth: true,
        ..MockConfig::default()
    };
    let server = spawn_local(config).await.unwrap();
    let b = body(json!({})).to_string();
    let check = |r: &Reply, status: u16, kind: &str, message: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let j = r.json();
        assert_eq!(j["type"], "error");
        assert_eq!(j["error"]["type"], kind, "{j}");
        assert!(
            j["error"]["message"].as_str().unwrap().contains(message),
            "{j}"
        );
        assert_eq!(j["request_id"].as_str(), r.header("request-id"));
    };
    let r = post_raw(&server, "/v1/messages", &b, &[("x-api-key", "sk-ant-x")]).await;
    check(
        &r,
        400,
        "invalid_request_error",
        "anthropic-version: header is required",
    );
    let r = post_raw(&server, "/v1/messages", &b, &[VERSION]).await;
    check(
        &r,
        401,
        "authentication_error",
        "x-api-key header is required",
    );
    let r = post_raw(
        &server,
        "/v1/messages",
        &b,
        &[VERSION, ("x-api-key", "sk-invalid-1")],
    )
    .await;
    check(&r, 401, "authentication_error", "invalid x-api-key");
    // The SDK's form: Authorization: Bearer.
    let r = post_raw(
        &server,
        "/v1/messages",
        &b,
        &[
            ("anthropic-version", "2026-10-21"),
            ("authorization", "Bearer sk-ant-x"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = [VERSION, ("x-api-key", "sk-ant-x")];
    let r = post_raw(&server, "/v1/messages", "{", &auth).await;
    check(&r, 400, "invalid_request_error", "parsing the body");
    let r = post_raw(
        &server,
        "/v1/messages",
        r#"{"model":"m","messages":[]}"#,
        &auth,
    )
    .await;
    check(
        &r,
        400,
        "invalid_request_error",
        "max_tokens: Field required",
    );
    let five: Vec<Value> = (0..5)
        .map(|_| json!({"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}))
        .collect();
    let r = post_raw(
        &server,
        "/v1/messages",
        &body(json!({"messages": [{"role": "user", "content": five}]})).to_string(),
        &auth,
    )
    .await;
    check(
        &r,
        400,
        "invalid_request_error",
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    );
    for (model, status, kind) in [
        ("mock-error-429", 429, "rate_limit_error"),
        ("mock-error-500", 500, "api_error"),
        ("mock-error-529", 529, "overloaded_error"),
        ("mock-error-404", 404, "not_found_error"),
    ] {
        let r = post_raw(
            &server,
            "/v1/messages",
            &body(json!({"model": model})).to_string(),
            &auth,
        )
        .await;
        check(&r, status, kind, "");
        if status == 429 {
            assert_eq!(r.header("retry-after"), Some("1"));
        }
        if status == 529 {
            assert_eq!(r.json()["error"]["message"], "Overloaded");
        }
    }
    server.shutdown().await.unwrap();
}

/// Assembles a Messages stream with core's assembler (checked against the SDK in core's
/// tests).
fn assemble(sse: &Bytes) -> (MessageAssembler, Vec<EventKind>) {
    let mut asm = MessageAssembler::new();
    let kinds = split_all(sse, false).iter().map(|e| asm.push(e)).collect();
    (asm, kinds)
}

#[tokio::test]
async fn streams_carry_the_same_message_as_json() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    for extra in [
        json!({}),
        json!({"tools": [{"name": "get_weather", "description": "Weather.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]}}],
            "messages": [{"role": "user", "content": "Use get_weather for Paris."}]}),
        json!({"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 4096}),
        json!({"thinking": {"type": "adaptive"}}),
    ] {
        let json_reply = messages(&server, &body(extra.clone())).await;
        assert_eq!(json_reply.status, 200, "{}", json_reply.text());
        let want = json_reply.json();
        let mut streamed = body(extra.clone());
        streamed["stream"] = json!(true);
        let r = messages(&server, &streamed).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("text/event-stream; charset=utf-8")
        );
        let (asm, kinds) = assemble(&r.body);
        assert!(asm.is_complete(), "{}", r.text());
        assert_eq!(kinds.first(), Some(&EventKind::MessageStart));
        assert!(kinds.contains(&EventKind::Ping));
        let got: Value = serde_json::from_slice(&asm.into_json().unwrap()).unwrap();
        // Ids differ per response (tool use ids too); everything else is the same.
        let strip = |mut v: Value| {
            v["id"] = Value::Null;
            for b in v["content"].as_array_mut().unwrap() {
                if b.get("id").is_some() {
                    b["id"] = Value::Null;
                }
            }
            v
        };
        assert_eq!(strip(got), strip(want.clone()), "{extra}");
        match extra.get("tools") {
            Some(_) => {
                assert_eq!(want["stop_reason"], "tool_use");
                let call = want["content"].as_array().unwrap().last().unwrap().clone();
                assert_eq!(call["name"], "get_weather");
                assert!(call["id"].as_str().unwrap().starts_with("toolu_01"));
                assert!(call["input"]["city"].is_string(), "{call}");
                assert!(r.text().contains("input_json_delta"));
            }
            None if extra.get("thinking").is_some() => {
                let t = &want["content"][0];
                assert_eq!(t["type"], "thinking");
                assert!(!t["thinking"].as_str().unwrap().is_empty());
                assert!(!t["signature"].as_str().unwrap().is_empty());
                assert!(
                    r.text().contains("thinking_delta") && r.text().contains("signature_delta")
                );
            }
            None => assert!(r.text().contains("text_delta")),
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_cut_stream_never_completes() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let resp = common::client()
        .post(format!("{}/v1/messages", server.url()))
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body(json!({"model": "mock-cut-stream", "stream": true})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The body fails mid-way: what arrived does not assemble to a complete message.
    let mut got: Vec<u8> = Vec::new();
    let mut resp = resp;
    while let Ok(Some(chunk)) = resp.chunk().await {
        got.extend_from_slice(&chunk);
    }
    let (asm, _) = assemble(&Bytes::from(got));
    assert!(!asm.is_complete());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_prompt_cache_fills_the_usage() {
    let clock = ManualClock::new();
    let config = MockConfig {
        clock: Arc::new(clock.clone()),
        ..MockConfig::default()
    };
    let server = spawn_local(config).await.unwrap();
    let marked = |ttl: Option<&str>| {
        let mut cc = json!({"type": "ephemeral"});
        if let Some(t) = ttl {
            cc["ttl"] = json!(t);
        }
        body(json!({"system": [{"type": "text", "text": long_system(), "cache_control": cc}]}))
    };
    // count_tokens gives the total with nothing cached.
    let counted = post_raw(
        &server,
        "/v1/messages/count_tokens",
        &marked(None).to_string(),
        &[VERSION],
    )
    .await;
    assert_eq!(counted.status, 200, "{}", counted.text());
    let total = counted.json()["input_tokens"].as_u64().unwrap();

    let first = usage(&messages(&server, &marked(None)).await);
    let (input, read, written, w5, w1) = first;
    assert_eq!((read, w1), (0, 0));
    assert!(written > 1024, "{first:?}");
    assert_eq!(w5, written);
    assert_eq!(input + written, total);
    // A different question after the same system prompt reads it.
    let mut other = marked(None);
    other["messages"] = json!([{"role": "user", "content": "And the shipping time?"}]);
    let (input2, read2, written2, _, _) = usage(&messages(&server, &other).await);
    assert_eq!((read2, written2), (written, 0));
    assert!(input2 > 0 && input2 < 40, "{input2}");
    // Six minutes later the 5-minute entry is gone...
    clock.advance(Duration::from_secs(6 * 60));
    let (_, read3, written3, _, _) = usage(&messages(&server, &marked(None)).await);
    assert_eq!((read3, written3), (0, written));
    // ... a 1-hour entry is not (a 1h marker on the same prefix: written again at 1h).
    let (_, _, w, _, w1h) = usage(&messages(&server, &marked(Some("1h"))).await);
    assert_eq!((w, w1h), (0, 0), "the 5m entry is still live and is read");
    clock.advance(Duration::from_secs(50 * 60));
    let (_, r, _, _, _) = usage(&messages(&server, &marked(Some("1h"))).await);
    assert_eq!(r, written, "refreshed to an hour by the 1h read");
    // Another API key is another organization: nothing shared.
    let r = post_raw(
        &server,
        "/v1/messages",
        &marked(None).to_string(),
        &[VERSION, ("x-api-key", "sk-ant-other")],
    )
    .await;
    assert_eq!(usage(&r).1, 0);
    // Automatic caching: one top-level field, the breakpoint on the last block.
    let auto = body(json!({"cache_control": {"type": "ephemeral"}, "system": long_system()}));
    let (i1, r1, w_auto, _, _) = usage(&messages(&server, &auto).await);
    // After the last block (the user message): its end, and the reply priming.
    assert_eq!(i1, 3, "{i1}");
    // Its lookback found the system prompt's entry (a plain string system prompt is the
    // same block as a one-text-block list): read it, wrote the question after it.
    assert_eq!(r1, written);
    assert!(w_auto > 0 && w_auto < 40, "{w_auto}");
    let (_, r_auto, _, _, _) = usage(&messages(&server, &auto).await);
    assert_eq!(r_auto, r1 + w_auto);
    // Markers never change the answer.
    let plain = messages(&server, &body(json!({"system": long_system()})))
        .await
        .json();
    let with = messages(&server, &auto).await.json();
    assert_eq!(plain["content"], with["content"]);
    assert!(server.stats().prompt_cache.hits >= 4);
    server.shutdown().await.unwrap();
}
