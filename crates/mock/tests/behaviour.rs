//! What tests of the proxy rely on: error models, auth, hangs and cut connections that
//! end cleanly, stream pacing, latency, the prompt-cache simulation over HTTP, and the
//! counters and recorded requests.

#![allow(clippy::disallowed_methods)] // tests spawn client tasks and await them

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{client, get, post, post_raw, sse_events};
use prefixcache_mock::clock::ManualClock;
use prefixcache_mock::{Latency, MockConfig, MockRoute, spawn_local};
use serde_json::{Value, json};

/// Polls `cond` until it holds; the bound only turns a broken build into a failure.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 120 s for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn malformed_json_and_missing_fields_are_400_in_openai_shape() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let r = post_raw(&server, "/v1/chat/completions", "{not json", &[]).await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not parse the JSON body")
    );
    assert_eq!(e["error"]["param"], Value::Null);
    assert_eq!(e["error"]["code"], Value::Null);
    let r = post(&server, "/v1/chat/completions", &json!({"model": "gpt-4o"})).await;
    assert_eq!(
        (r.status, r.json()["error"]["param"].clone()),
        (400, json!("messages"))
    );
    let r = post(&server, "/v1/chat/completions", &json!({"messages": []})).await;
    assert_eq!(r.status, 400);
    assert!(
        r.header("x-request-id").is_some(),
        "errors carry the API headers too"
    );
    let s = server.stats();
    assert_eq!(s.statuses.get(&400), Some(&3));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn error_models() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let r = post(
        &server,
        "/v1/chat/completions",
        &chat("mock-error-429", false),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(r.json()["error"]["type"], "requests");
    let r = post(
        &server,
        "/v1/responses",
        &json!({"model": "mock-error-500", "input": "x"}),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["type"], "server_error");
    let r = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "mock-error-400", "input": "x"}),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = post(
        &server,
        "/v1/chat/completions",
        &chat("mock-error-503", true),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(server.stats().models.get("mock-error-429"), Some(&1));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn auth_when_required() {
    let server = spawn_local(MockConfig {
        require_auth: true,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let body = chat("gpt-4o", false).to_string();
    let none = post_raw(&server, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(none.status, 401);
    assert!(
        none.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("didn't provide an API key")
    );
    let bad = post_raw(
        &server,
        "/v1/chat/completions",
        &body,
        &[("authorization", "Bearer sk-invalid-0123456789")],
    )
    .await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["error"]["code"], "invalid_api_key");
    assert!(
        !bad.text().contains("sk-invalid-0123456789"),
        "the key is redacted"
    );
    let basic = post_raw(
        &server,
        "/v1/chat/completions",
        &body,
        &[("authorization", "Basic abc")],
    )
    .await;
    assert_eq!(basic.status, 401);
    let ok = post_raw(
        &server,
        "/v1/chat/completions",
        &body,
        &[("authorization", "Bearer sk-good")],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(get(&server, "/v1/models").await.status, 401);
    server.shutdown().await.unwrap();
    // Off by default.
    let open = spawn_local(MockConfig::default()).await.unwrap();
    assert_eq!(
        post_raw(&open, "/v1/chat/completions", &body, &[])
            .await
            .status,
        200
    );
    open.shutdown().await.unwrap();
}

#[tokio::test]
async fn requests_are_recorded_and_counted() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let body =
        r#"{"model":"gpt-4o","prompt_cache_key":"k1","messages":[{"role":"user","content":"hi"}]}"#;
    let r = post_raw(
        &server,
        "/v1/chat/completions",
        body,
        &[
            ("authorization", "Bearer sk-abc"),
            ("openai-organization", "org-1"),
            ("openai-project", "proj-1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("openai-organization"), Some("org-1"));
    post(
        &server,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "x"}),
    )
    .await;
    let last = server
        .mock
        .last_request(MockRoute::ChatCompletions)
        .unwrap();
    assert_eq!(last.method, "POST");
    assert_eq!(last.authorization(), Some("Bearer sk-abc"));
    assert_eq!(last.organization(), Some("org-1"));
    assert_eq!(last.project(), Some("proj-1"));
    assert_eq!(
        &last.body[..],
        body.as_bytes(),
        "the raw body, byte for byte"
    );
    assert_eq!(last.json().unwrap()["prompt_cache_key"], "k1");

    let s = server.stats();
    assert_eq!(s.total, 2);
    assert_eq!(s.route(MockRoute::ChatCompletions), 1);
    assert_eq!(s.route(MockRoute::Embeddings), 1);
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.models.get("gpt-4o"), Some(&1));
    // Over HTTP too.
    let http = get(&server, "/mock/stats").await.json();
    assert_eq!(http["total"], 2);
    assert_eq!(http["routes"]["chat_completions"], 1);
    assert_eq!(http["statuses"]["200"], 2);
    let reqs = get(&server, "/mock/requests?route=chat_completions")
        .await
        .json();
    assert_eq!(
        reqs["chat_completions"][0]["headers"]["openai-project"],
        json!(["proj-1"])
    );
    assert_eq!(
        reqs["chat_completions"][0]["body"]["prompt_cache_key"],
        "k1"
    );
    assert_eq!(
        get(&server, "/mock/stats").await.json()["total"],
        2,
        "/mock/* is not counted"
    );
    let reset = client()
        .post(format!("{}/mock/reset", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    let s = server.stats();
    assert_eq!((s.total, s.route(MockRoute::ChatCompletions)), (0, 0));
    assert!(
        server
            .mock
            .last_request(MockRoute::ChatCompletions)
            .is_none()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn timeout_model_waits_until_the_client_gives_up_and_leaks_nothing() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = c
        .post(format!("{}/v1/chat/completions", server.url()))
        .body(chat("mock-timeout", false).to_string())
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // The handler ends with the connection: in-flight drops back to zero.
    wait_until("nothing in flight", || server.stats().in_flight == 0).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_releases_a_hanging_request() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let url = format!("{}/v1/chat/completions", server.url());
    let pending = tokio::spawn(async move {
        client()
            .post(url)
            .body(chat("mock-timeout", false).to_string())
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    wait_until("the hanging request arrived", || {
        server.stats().in_flight == 1
    })
    .await;
    server.shutdown().await.unwrap();
    let outcome = pending.await.unwrap();
    assert!(matches!(outcome, Ok(503) | Err(_)), "{outcome:?}");
}

#[tokio::test]
async fn cut_stream_closes_without_done() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let resp = client()
        .post(format!("{}/v1/chat/completions", server.url()))
        .body(chat("mock-cut-stream", true).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    let mut got = Vec::new();
    let err = loop {
        match resp.chunk().await {
            Ok(Some(b)) => got.extend_from_slice(&b),
            Ok(None) => panic!("the stream ended cleanly"),
            Err(e) => break e,
        }
    };
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with("data: {"), "some chunks arrived: {text:?}");
    assert!(!text.contains("[DONE]"));
    assert!(!err.to_string().is_empty());

    // Not streamed: headers promise a body that never fully arrives.
    let resp = client()
        .post(format!("{}/v1/chat/completions", server.url()))
        .body(chat("mock-cut-stream", false).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let expected: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(expected > 0);
    assert!(resp.bytes().await.is_err(), "the body is cut short");
    wait_until("nothing in flight", || server.stats().in_flight == 0).await;
    server.shutdown().await.unwrap();
}

/// With time paused, the mock's inter-chunk sleeps only end when the client waits, so
/// every read returns exactly one event, one (virtual) chunk delay apart.
#[tokio::test(start_paused = true)]
async fn stream_events_arrive_one_write_at_a_time_with_the_configured_delay() {
    let delay = Duration::from_secs(3600);
    let server = spawn_local(MockConfig {
        chunk_delay: delay,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let plain = post(&server, "/v1/chat/completions", &chat("gpt-4o", false))
        .await
        .json();
    let mut resp = client()
        .post(format!("{}/v1/chat/completions", server.url()))
        .body(chat("gpt-4o", true).to_string())
        .send()
        .await
        .unwrap();
    let mut reads = Vec::new();
    let mut last = tokio::time::Instant::now();
    let mut gaps = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        gaps.push(last.elapsed());
        last = tokio::time::Instant::now();
        reads.push(String::from_utf8(chunk.to_vec()).unwrap());
    }
    let events = sse_events(&reads.concat());
    assert_eq!(reads.len(), events.len(), "one read per event");
    for r in &reads {
        assert!(
            r.ends_with("\n\n") && r.matches("\n\n").count() == 1,
            "{r:?}"
        );
    }
    for g in &gaps[1..] {
        assert!(*g >= delay && *g < delay * 2, "gap {g:?}");
    }
    let content: String = events[..events.len() - 1]
        .iter()
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        content,
        plain["choices"][0]["message"]["content"].as_str().unwrap()
    );
    // The per-request header overrides the configured delay.
    let start = tokio::time::Instant::now();
    let r = post_raw(
        &server,
        "/v1/chat/completions",
        &chat("gpt-4o", true).to_string(),
        &[("x-mock-chunk-delay", "0")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(start.elapsed() < delay);
    server.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_answer_and_the_first_byte() {
    let server = spawn_local(MockConfig {
        latency: "250ms".parse().unwrap(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    for stream in [false, true] {
        let start = tokio::time::Instant::now();
        let resp = client()
            .post(format!("{}/v1/chat/completions", server.url()))
            .body(chat("gpt-4o", stream).to_string())
            .send()
            .await
            .unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(250),
            "headers after the latency"
        );
        assert_eq!(resp.status(), 200);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn latency_draws_are_reproducible_for_a_seed() {
    let spec: Latency = "lognormal:mean=1247ms,p99=3421ms".parse().unwrap();
    let draws = |seed: u64| {
        let mock = prefixcache_mock::Mock::new(MockConfig {
            latency: spec,
            seed,
            ..MockConfig::default()
        });
        (0..20).map(|_| mock.sample_latency()).collect::<Vec<_>>()
    };
    assert_eq!(draws(1), draws(1));
    assert_ne!(draws(1), draws(2));
    assert!(draws(1).iter().all(|d| !d.is_zero()));
}

fn long_chat(system: &str, user: &str, key: Option<&str>, stream: bool) -> Value {
    let mut v = json!({
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    });
    if let Some(k) = key {
        v["prompt_cache_key"] = json!(k);
    }
    if stream {
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    v
}

#[tokio::test]
async fn prompt_cache_fills_cached_tokens_streamed_or_not_and_expires() {
    let clock = ManualClock::new();
    let config = MockConfig {
        clock: Arc::new(clock.clone()),
        ..MockConfig::default()
    };
    let server = spawn_local(config).await.unwrap();
    let system = common::long_text(1500);
    let first = post(
        &server,
        "/v1/chat/completions",
        &long_chat(&system, "q1", None, false),
    )
    .await
    .json();
    let prompt = first["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 1500);
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    // Another question after the same long system prompt: the shared prefix hits.
    let second = post(
        &server,
        "/v1/chat/completions",
        &long_chat(&system, "q2", None, false),
    )
    .await
    .json();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached >= 1024 && cached % 128 == 0 && cached <= prompt,
        "cached {cached} of {prompt}"
    );
    // Streamed: the usage chunk carries it.
    let r = post(
        &server,
        "/v1/chat/completions",
        &long_chat(&system, "q3", None, true),
    )
    .await;
    let events = sse_events(&r.text());
    let usage = events[events.len() - 2].json()["usage"].clone();
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        cached
    );
    // Responses API reports it too.
    let resp = post(
        &server,
        "/v1/responses",
        &json!({"model": "gpt-4o", "instructions": system, "input": "q4"}),
    )
    .await
    .json();
    let first_resp = resp["usage"]["input_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let resp = post(
        &server,
        "/v1/responses",
        &json!({"model": "gpt-4o", "instructions": system, "input": "q5"}),
    )
    .await
    .json();
    assert!(
        resp["usage"]["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            >= 1024.max(first_resp)
    );
    // Short prompts never hit.
    for _ in 0..3 {
        let v = post(
            &server,
            "/v1/chat/completions",
            &long_chat("short", "q", None, false),
        )
        .await
        .json();
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    }
    // Idle past the TTL: gone.
    clock.advance(Duration::from_secs(5 * 60 + 1));
    let v = post(
        &server,
        "/v1/chat/completions",
        &long_chat(&system, "q6", None, false),
    )
    .await
    .json();
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let pc = server.stats().prompt_cache;
    assert!(pc.hits >= 3 && pc.cached_tokens >= 3 * 1024);
    server.shutdown().await.unwrap();
}

/// Multi-turn conversations sharing one system prompt, above the overflow rate: with a
/// per-conversation `prompt_cache_key` more of the prompt is served from cache.
#[tokio::test]
async fn a_conversation_key_raises_the_cached_share_over_http() {
    async fn run(with_key: bool) -> f64 {
        let clock = ManualClock::new();
        let server = spawn_local(MockConfig {
            clock: Arc::new(clock.clone()),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let system = common::long_text(1100);
        let mut histories: Vec<Vec<Value>> = (0..12)
            .map(|_| vec![json!({"role": "system", "content": system})])
            .collect();
        let (mut prompt, mut cached) = (0u64, 0u64);
        for turn in 0..6 {
            for (c, h) in histories.iter_mut().enumerate() {
                h.push(json!({"role": "user", "content": format!("conversation {c} turn {turn}: {}", common::long_text(120))}));
                let mut body = json!({"model": "gpt-4o", "messages": h});
                if with_key {
                    body["prompt_cache_key"] = json!(format!("conv-{c}"));
                }
                let v = post(&server, "/v1/chat/completions", &body).await.json();
                prompt += v["usage"]["prompt_tokens"].as_u64().unwrap();
                cached += v["usage"]["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .unwrap();
                h.push(v["choices"][0]["message"].clone());
                clock.advance(Duration::from_secs(1)); // 60 requests a minute in total
            }
        }
        server.shutdown().await.unwrap();
        cached as f64 / prompt as f64
    }
    let without = run(false).await;
    let with = run(true).await;
    assert!(
        with > without + 0.1,
        "cached share with key {with:.3}, without {without:.3}"
    );
}

/// Complete SSE events in `bytes` (the mock's events contain no blank line).
fn count_events(bytes: &[u8]) -> usize {
    bytes.windows(2).filter(|w| w == b"\n\n").count()
}

/// A head gate holds the whole response (errors included) until the test opens it; a
/// stream gate holds the rest of a body after N parts; `x-mock-cut-after` cuts a stream
/// after N events and a JSON body after N bytes. Over HTTP too (`/mock/gates`).
#[tokio::test]
async fn gates_hold_and_cuts_cut_where_the_test_says() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let url = format!("{}/v1/chat/completions", server.url());
    let gates = server.mock.gates();

    // Head gate, on an error model: nothing arrives until the gate opens.
    let held = tokio::spawn({
        let url = url.clone();
        async move {
            client()
                .post(url)
                .header("x-mock-head-gate", "head")
                .body(chat("mock-error-500", false).to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    wait_until("held at the head gate", || gates.state("head").waiting == 1).await;
    assert!(!held.is_finished());
    let listed: Value = serde_json::from_slice(
        &client()
            .get(format!("{}/mock/gates", server.url()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        listed["head"],
        json!({"open": false, "waiting": 1, "passed": 0})
    );
    let opened = client()
        .post(format!("{}/mock/gates/head/open", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    assert_eq!(held.await.unwrap(), 500);
    assert_eq!(gates.state("head").passed, 1);

    // Stream gate after 3 events: exactly those arrive, then the rest after opening.
    let mut resp = client()
        .post(&url)
        .header("x-mock-stream-gate", "mid@3")
        .body(chat("gpt-4o-mini", true).to_string())
        .send()
        .await
        .unwrap();
    let mut got = Vec::new();
    while count_events(&got) < 3 {
        got.extend_from_slice(&resp.chunk().await.unwrap().unwrap());
    }
    wait_until("held mid-stream", || gates.state("mid").waiting == 1).await;
    assert_eq!(count_events(&got), 3, "nothing past the gate yet");
    gates.open("mid").unwrap();
    while let Some(c) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert!(String::from_utf8_lossy(&got).ends_with("data: [DONE]\n\n"));

    // Cut after 4 events of a stream, and after 10 bytes of a JSON body.
    let mut resp = client()
        .post(&url)
        .header("x-mock-cut-after", "4")
        .body(chat("gpt-4o-mini", true).to_string())
        .send()
        .await
        .unwrap();
    let mut got = Vec::new();
    let cut = loop {
        match resp.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(cut, "the stream is cut, not ended");
    assert_eq!(count_events(&got), 4);
    let resp = client()
        .post(&url)
        .header("x-mock-cut-after", "10")
        .body(chat("gpt-4o-mini", false).to_string())
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 10
    );
    assert!(resp.bytes().await.is_err(), "a short body");

    // Malformed controls are the API's 400.
    for (name, value) in [
        ("x-mock-head-gate", "two words"),
        ("x-mock-stream-gate", "g@x"),
        ("x-mock-cut-after", "-3"),
    ] {
        let r = client()
            .post(&url)
            .header(name, value)
            .body(chat("gpt-4o-mini", false).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name}: {value}");
        let e: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error");
    }
    server.shutdown().await.unwrap();
}

/// Shutdown opens every gate: a held response ends, the server stops.
#[tokio::test]
async fn shutdown_releases_gated_responses() {
    let server = spawn_local(MockConfig::default()).await.unwrap();
    let url = format!("{}/v1/chat/completions", server.url());
    let held = tokio::spawn(async move {
        client()
            .post(url)
            .header("x-mock-head-gate", "forever")
            .body(chat("gpt-4o-mini", false).to_string())
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let gates = server.mock.gates();
    wait_until("held", || gates.state("forever").waiting == 1).await;
    server.shutdown().await.unwrap();
    assert!(matches!(held.await.unwrap(), Ok(200) | Err(_)));
}
