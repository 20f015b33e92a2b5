//! The cache's behaviour through real sockets: what is a hit, what is a miss, what is
//! never stored, and what the caller can steer with headers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Harness, KEY_A, Reply, Setup, chat_body};
use serde_json::json;

#[tokio::test]
async fn second_identical_request_is_a_hit_with_the_same_body() {
    let h = Harness::start(Setup::default()).await;
    let body = chat_body("hello");
    let a = h.chat(&body).await;
    let b = h.chat(&body).await;
    assert_eq!((a.cache(), b.cache()), ("MISS", "HIT"));
    assert_eq!(a.status, 200);
    assert_eq!(a.body, b.body, "a hit returns the stored bytes unchanged");
    assert_eq!(a.header("x-prefixcache-key"), b.header("x-prefixcache-key"));
    assert_eq!(b.header("x-prefixcache-age"), Some("0"));
    assert_eq!(h.upstream_calls(), 1);
}

#[tokio::test]
async fn key_order_and_json_whitespace_do_not_matter() {
    let h = Harness::start(Setup::default()).await;
    let compact =
        r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"order"}]}"#;
    // (`0`, not `0.0`: an integer and a float are different inputs, docs/security.md.)
    let shuffled = "{ \"messages\" : [ {\"content\":\"order\", \"role\":\"user\"} ],\n  \"temperature\": 0, \"model\": \"gpt-4o-mini\" }";
    let send = |raw: &'static str| {
        h.post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(raw)
            .send()
    };
    let a = Reply::read(send(compact).await.unwrap()).await;
    let b = Reply::read(send(shuffled).await.unwrap()).await;
    assert_eq!((a.cache(), b.cache()), ("MISS", "HIT"));
}

#[tokio::test]
async fn every_semantic_difference_misses() {
    let h = Harness::start(Setup::default()).await;
    let base = chat_body("differences");
    assert_eq!(h.chat(&base).await.cache(), "MISS");
    let mut variants = Vec::new();
    for (field, value) in [
        ("temperature", json!(0.5)),
        ("model", json!("gpt-4o")),
        (
            "messages",
            json!([{"role": "user", "content": "differences!"}]),
        ),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]),
        ),
        ("max_tokens", json!(5)),
    ] {
        let mut v = base.clone();
        v[field] = value;
        variants.push(v);
    }
    for v in &variants {
        assert_eq!(h.chat(v).await.cache(), "MISS", "{v}");
    }
    // Bookkeeping fields are not part of the key.
    let mut noisy = base.clone();
    noisy["user"] = json!("someone");
    noisy["metadata"] = json!({"trace": "1"});
    assert_eq!(h.chat(&noisy).await.cache(), "HIT");
}

#[tokio::test]
async fn another_credential_is_another_namespace() {
    let h = Harness::start(Setup::default()).await;
    let body = chat_body("tenants");
    assert_eq!(h.chat(&body).await.cache(), "MISS");
    let other = Reply::read(
        h.client
            .post(format!("{}/v1/chat/completions", h.url))
            .header("authorization", "Bearer sk-someone-else")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(other.cache(), "MISS");
    let project = h
        .chat_with(&[("openai-project", "proj_other")], &body)
        .await;
    assert_eq!(
        project.cache(),
        "MISS",
        "a project-scoped caller is its own namespace"
    );
    assert_eq!(h.chat(&body).await.cache(), "HIT");
}

#[tokio::test]
async fn streamed_miss_then_json_hit_and_the_reverse() {
    let h = Harness::start(Setup::default()).await;
    let mut stream_body = chat_body("stream first");
    stream_body["stream"] = json!(true);
    let streamed = h.chat(&stream_body).await;
    assert_eq!(streamed.cache(), "MISS");
    assert!(
        streamed
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = String::from_utf8_lossy(&streamed.body).to_string();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        !text.contains("\"choices\":[]"),
        "the usage chunk the proxy asked for is not forwarded to a caller that did not ask"
    );
    h.settle().await;
    let json_hit = h.chat(&chat_body("stream first")).await;
    assert_eq!(json_hit.cache(), "HIT");
    assert_eq!(json_hit.content(), streamed.streamed_content());
    assert!(json_hit.json()["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let json_miss = h.chat(&chat_body("json first")).await;
    assert_eq!(json_miss.cache(), "MISS");
    let mut s = chat_body("json first");
    s["stream"] = json!(true);
    s["stream_options"] = json!({"include_usage": true});
    let stream_hit = h.chat(&s).await;
    assert_eq!(stream_hit.cache(), "HIT");
    assert_eq!(stream_hit.streamed_content(), json_miss.content());
    let text = String::from_utf8_lossy(&stream_hit.body);
    assert!(
        text.contains("\"choices\":[]"),
        "usage was asked for: {text}"
    );
}

#[tokio::test]
async fn forwarded_request_carries_include_usage_and_credentials_untouched() {
    let h = Harness::start(Setup::default()).await;
    let mut body = chat_body("forwarding");
    body["stream"] = json!(true);
    let r = h
        .chat_with(
            &[
                ("openai-organization", "org_1"),
                ("openai-project", "proj_1"),
                ("cache-control", "no-store"),
                ("x-prefixcache-ttl", "60"),
            ],
            &body,
        )
        .await;
    assert_eq!(r.status, 200);
    let seen = h
        .mock
        .mock
        .last_request(prefixcache_mock::MockRoute::ChatCompletions)
        .unwrap();
    assert_eq!(seen.authorization(), Some(KEY_A));
    assert_eq!(seen.organization(), Some("org_1"));
    assert_eq!(seen.project(), Some("proj_1"));
    assert!(seen.header("cache-control").is_none());
    assert!(seen.header("x-prefixcache-ttl").is_none());
    let sent = seen.json().unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], json!(true));
    assert_eq!(sent["messages"], body["messages"]);
}

#[tokio::test]
async fn upstream_errors_pass_through_and_are_never_stored() {
    let h = Harness::start(Setup::default()).await;
    let mut body = chat_body("errors");
    body["model"] = json!("mock-error-429");
    for _ in 0..2 {
        let r = h.chat(&body).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.cache(), "MISS");
        assert!(
            r.header("retry-after").is_some(),
            "upstream headers pass through"
        );
        assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    }
    body["model"] = json!("mock-error-500");
    for _ in 0..2 {
        assert_eq!(h.chat(&body).await.status, 500);
    }
    assert_eq!(h.upstream_calls(), 4);
}

#[tokio::test]
async fn a_cut_stream_is_forwarded_as_cut_and_not_stored() {
    let h = Harness::start(Setup::default()).await;
    let mut body = chat_body("cut");
    body["model"] = json!("mock-cut-stream");
    body["stream"] = json!(true);
    for _ in 0..2 {
        let resp = h
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.bytes().await.is_err(),
            "the client must see the cut, not a clean end"
        );
        h.settle().await;
    }
    assert_eq!(h.upstream_calls(), 2);
    assert_eq!(h.state.store.stats().entries, 0);
}

#[tokio::test]
async fn cache_control_and_ttl_headers() {
    let h = Harness::start(Setup::default()).await;
    let body = chat_body("directives");
    let with = |name: &'static str, value: &'static str| {
        let body = &body;
        let h = &h;
        async move { h.chat_with(&[(name, value)], body).await }
    };
    assert_eq!(with("cache-control", "no-store").await.cache(), "MISS");
    assert_eq!(
        h.chat(&body).await.cache(),
        "MISS",
        "no-store stored nothing"
    );
    assert_eq!(h.chat(&body).await.cache(), "HIT");
    assert_eq!(with("cache-control", "no-cache").await.cache(), "BYPASS");
    assert_eq!(h.upstream_calls(), 3);

    let short = chat_body("ttl");
    let r = h.chat_with(&[("x-prefixcache-ttl", "10")], &short).await;
    assert_eq!(r.cache(), "MISS");
    h.settle().await;
    assert_eq!(h.chat(&short).await.cache(), "HIT");
    h.clock.advance(Duration::from_secs(11));
    assert_eq!(
        h.chat(&short).await.cache(),
        "MISS",
        "expired after its own TTL"
    );

    let bad = with("x-prefixcache-ttl", "soon").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "x-prefixcache-ttl");
}

#[tokio::test]
async fn strategies_by_header_glob_and_their_policies() {
    let h = Harness::start(Setup::default().toml(
        r#"
[strategies.mini]
match = { model = "gpt-4o-mini*" }
ttl = "1h"
[strategies.strict]
cache_sampled = false
[strategies.annotated]
annotate_body = true
"#,
    ))
    .await;
    let unknown = h
        .chat_with(&[("x-prefixcache-strategy", "nope")], &chat_body("x"))
        .await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );

    // Sampled requests are not cached by a strategy with cache_sampled = false.
    let strict = |body: serde_json::Value| {
        let h = &h;
        async move {
            h.chat_with(&[("x-prefixcache-strategy", "strict")], &body)
                .await
        }
    };
    let mut sampled = chat_body("sampled");
    sampled["temperature"] = json!(0.7);
    assert_eq!(strict(sampled.clone()).await.cache(), "BYPASS");
    assert_eq!(strict(sampled).await.cache(), "BYPASS");
    assert_eq!(strict(chat_body("greedy")).await.cache(), "MISS");
    assert_eq!(strict(chat_body("greedy")).await.cache(), "HIT");

    // The model glob picks `mini`; its TTL is 1 h.
    let body = chat_body("glob");
    assert_eq!(h.chat(&body).await.cache(), "MISS");
    h.settle().await;
    h.clock.advance(Duration::from_secs(3599));
    assert_eq!(h.chat(&body).await.cache(), "HIT");
    h.clock.advance(Duration::from_secs(2));
    assert_eq!(h.chat(&body).await.cache(), "MISS");

    let annotated = |body: serde_json::Value| {
        let h = &h;
        async move {
            h.chat_with(&[("x-prefixcache-strategy", "annotated")], &body)
                .await
        }
    };
    let a = annotated(chat_body("annotate")).await;
    let b = annotated(chat_body("annotate")).await;
    assert_eq!(
        (a.json()["_cached"].clone(), b.json()["_cached"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(a.json()["_cache_key"], b.json()["_cache_key"]);
    assert_eq!(a.json()["choices"], b.json()["choices"]);
}

#[tokio::test]
async fn other_routes_are_cached_too() {
    let h = Harness::start(Setup::default()).await;
    let emb = json!({"model": "text-embedding-3-small", "input": "embed"});
    assert_eq!(h.send("/v1/embeddings", &emb).await.cache(), "MISS");
    assert_eq!(h.send("/v1/embeddings", &emb).await.cache(), "HIT");
    let comp = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once", "max_tokens": 5});
    assert_eq!(h.send("/v1/completions", &comp).await.cache(), "MISS");
    assert_eq!(h.send("/v1/completions", &comp).await.cache(), "HIT");
    let resp = json!({"model": "gpt-4o-mini", "input": "respond"});
    let a = h.send("/v1/responses", &resp).await;
    let b = h.send("/v1/responses", &resp).await;
    assert_eq!((a.cache(), b.cache()), ("MISS", "HIT"));
    assert_eq!(a.json()["output"], b.json()["output"]);
    // The same body on another route is another key.
    assert_eq!(h.send("/v1/completions", &emb).await.cache(), "MISS");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_still_gets_the_response_stored() {
    let h = Harness::start(Setup::default()).await;
    let mut body = chat_body("leave early");
    body["stream"] = json!(true);
    // The upstream sends two events and holds the rest until the client has left.
    let mut resp = h
        .post("/v1/chat/completions")
        .header("x-mock-stream-gate", "leave@2")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-prefixcache-status"], "MISS");
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(resp);
    h.held_at("leave", 1).await;
    h.open_gate("leave");
    h.settle().await;
    let after = h.chat(&chat_body("leave early")).await;
    assert_eq!(
        after.cache(),
        "HIT",
        "the proxy finished reading and stored it"
    );
    assert_eq!(h.upstream_calls(), 1);
}

/// The text of every choice of a streamed chat or legacy completion, by index.
fn streamed_choices(r: &Reply) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for data in String::from_utf8_lossy(&r.body)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
    {
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        for c in v["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            if out.len() <= i {
                out.resize(i + 1, String::new());
            }
            let piece = c["delta"]["content"].as_str().or(c["text"].as_str());
            out[i].push_str(piece.unwrap_or(""));
        }
    }
    out
}

#[tokio::test]
async fn a_streamed_legacy_completion_is_a_streamed_hit() {
    let h = Harness::start(Setup::default()).await;
    let stream = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time",
        "max_tokens": 16, "temperature": 0, "stream": true});
    let a = h.send("/v1/completions", &stream).await;
    let b = h.send("/v1/completions", &stream).await;
    assert_eq!((a.cache(), b.cache()), ("MISS", "HIT"));
    assert!(
        b.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(b.body, a.body, "the stream is replayed byte for byte");
    let text = streamed_choices(&a);
    assert!(!text[0].is_empty());
    // The same request not streamed is answered from the stored stream.
    let mut json_body = stream.clone();
    json_body["stream"] = json!(false);
    let c = h.send("/v1/completions", &json_body).await;
    assert_eq!(c.cache(), "HIT");
    assert_eq!(c.json()["choices"][0]["text"], text[0]);
    assert_eq!(h.upstream_calls(), 1);
}

#[tokio::test]
async fn several_choices_are_stored_and_served_in_either_form() {
    let h = Harness::start(Setup::default()).await;
    // JSON first, then the stream from the stored JSON.
    let mut body = chat_body("three choices");
    body["n"] = json!(3);
    let a = h.chat(&body).await;
    assert_eq!(a.cache(), "MISS");
    let choices: Vec<String> = (0..3)
        .map(|i| {
            a.json()["choices"][i]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(choices.iter().all(|c| !c.is_empty()));
    body["stream"] = json!(true);
    let b = h.chat(&body).await;
    assert_eq!(b.cache(), "HIT");
    assert_eq!(streamed_choices(&b), choices);

    // A stream first, then the JSON from the stored stream.
    let mut body = chat_body("two choices");
    body["n"] = json!(2);
    body["stream"] = json!(true);
    let c = h.chat(&body).await;
    assert_eq!(c.cache(), "MISS");
    let streamed = streamed_choices(&c);
    assert_eq!(streamed.len(), 2);
    body["stream"] = json!(false);
    let d = h.chat(&body).await;
    assert_eq!(d.cache(), "HIT");
    for (i, text) in streamed.iter().enumerate() {
        assert_eq!(d.json()["choices"][i]["message"]["content"], *text);
        assert_eq!(d.json()["choices"][i]["index"], i);
    }
    assert_eq!(h.upstream_calls(), 2);
}
