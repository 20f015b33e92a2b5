//! Trust, on real sockets: no wrong answer from the cache (member order of schemas,
//! exact numbers, query strings, duplicate keys, server-side state, upstream
//! `Cache-Control`), no leak between tenants (every credential separates them; drift
//! findings stay in the caller's namespace), and faithful forwarding (the caller's
//! bytes with only the documented splices, paths inside the base, connection headers
//! dropped, no secrets in error bodies). Each test fails on the behaviour it pins.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{Harness, Recorder, Reply, Setup, metric, raw_http};
use prefixcache_mock::MockRoute;
use serde_json::{Value, json};

/// POSTs `body` exactly as written (no re-serialization) with extra headers.
async fn send_raw(h: &Harness, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut req = h
        .post(path)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Reply::read(req.send().await.unwrap()).await
}

async fn chat_raw(h: &Harness, body: &str) -> Reply {
    send_raw(h, "/v1/chat/completions", &[], body).await
}

/// The bytes the mock received for the last request of a route.
fn last_sent(h: &Harness, route: MockRoute) -> String {
    let seen = h
        .mock
        .mock
        .last_request(route)
        .expect("upstream was called");
    String::from_utf8(seen.body.to_vec()).unwrap()
}

const SYSTEM: &str = "You are the support assistant of Acme Corp. Answer questions about \
    orders, refunds and shipping politely and briefly. Never promise delivery dates. If a \
    question is about anything else, say that you can only help with Acme orders.";

fn drift_body(system: &str, user: &str) -> Value {
    json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": user}]})
}

#[tokio::test]
async fn whitespace_drift_is_no_oracle_on_another_tenants_prompt() {
    let h = Harness::start(Setup::default()).await;
    // Tenant A's prompt, seen a few times (misses: each user message differs).
    for i in 0..3 {
        let r = h.chat(&drift_body(SYSTEM, &format!("order {i}"))).await;
        assert_eq!(r.status, 200);
    }
    // Tenant B guesses A's prompt with other whitespace: it must learn nothing.
    let guess = SYSTEM.replace(". ", ".  ");
    let b = h
        .client
        .post(format!("{}/v1/chat/completions", h.url))
        .header("authorization", "Bearer sk-tenant-b")
        .json(&drift_body(&guess, "order 9"))
        .send()
        .await
        .unwrap();
    let b = Reply::read(b).await;
    assert_eq!(b.status, 200);
    let warning = b.header("x-prefixcache-warning").unwrap_or_default();
    assert!(
        !warning.contains("whitespace-drift"),
        "tenant B was told about tenant A's prompt: {warning}"
    );
    // The same variant from tenant A is A's own drift, and is reported.
    let a = h.chat(&drift_body(&guess, "order 10")).await;
    let warning = a.header("x-prefixcache-warning").unwrap_or_default();
    assert!(warning.contains("whitespace-drift"), "{warning:?}");
}

#[tokio::test]
async fn every_forwarded_credential_separates_tenants() {
    let h = Harness::start(Setup::default()).await;
    let body = common::chat_body("which tenant am I?");
    let send = |headers: Vec<(&'static str, &'static str)>, query: &'static str| {
        // The same `Authorization` every time: only the other credential differs.
        let mut req = h.post(&format!("/v1/chat/completions{query}")).json(&body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { Reply::read(req.send().await.unwrap()).await }
    };
    for name in ["x-api-key", "x-goog-api-key", "api-key"] {
        let first = send(vec![(name, "tenant-1")], "").await;
        assert_eq!(first.cache(), "MISS", "{name}");
        assert_eq!(
            send(vec![(name, "tenant-1")], "").await.cache(),
            "HIT",
            "{name}"
        );
        let other = send(vec![(name, "tenant-2")], "").await;
        assert_eq!(
            other.cache(),
            "MISS",
            "another {name} must not see tenant-1's entry"
        );
        assert_ne!(other.content(), "");
    }
    // A credential in the query string (Gemini's `?key=`).
    assert_eq!(send(vec![], "?key=tenant-1").await.cache(), "MISS");
    assert_eq!(send(vec![], "?key=tenant-1").await.cache(), "HIT");
    assert_eq!(send(vec![], "?key=tenant-2").await.cache(), "MISS");
}

#[tokio::test]
async fn configured_tenant_headers_separate_tenants() {
    let h =
        Harness::start(Setup::default().toml("[cache]\ntenant_headers = [\"x-team-token\"]")).await;
    let body = common::chat_body("team question");
    let r1 = h.chat_with(&[("x-team-token", "team-1")], &body).await;
    let r2 = h.chat_with(&[("x-team-token", "team-2")], &body).await;
    let r3 = h.chat_with(&[("x-team-token", "team-1")], &body).await;
    assert_eq!(
        (r1.cache(), r2.cache(), r3.cache()),
        ("MISS", "MISS", "HIT")
    );
}

const SCHEMA_AB: &str = r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"Describe a cat."}],
 "response_format":{"type":"json_schema","json_schema":{"name":"pet","schema":{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]}}}}"#;

#[tokio::test]
async fn schema_property_order_is_part_of_the_key() {
    let h = Harness::start(Setup::default()).await;
    assert_eq!(chat_raw(&h, SCHEMA_AB).await.cache(), "MISS");
    // The same schema with its properties the other way round: the model writes `age`
    // first, so it is another request.
    let swapped = SCHEMA_AB.replace(
        r#""name":{"type":"string"},"age":{"type":"integer"}"#,
        r#""age":{"type":"integer"},"name":{"type":"string"}"#,
    );
    assert_ne!(swapped, SCHEMA_AB);
    assert_eq!(chat_raw(&h, &swapped).await.cache(), "MISS");
    // Reordered members of fixed structs (top level, message, format wrapper) are the
    // same request.
    let reordered = r#"{"response_format":{"json_schema":{"schema":{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]},"name":"pet"},"type":"json_schema"},
 "messages":[{"content":"Describe a cat.","role":"user"}],"temperature":0,"model":"gpt-4o-mini"}"#;
    assert_eq!(chat_raw(&h, reordered).await.cache(), "HIT");
    assert_eq!(h.upstream_calls(), 2);
}

#[tokio::test]
async fn the_query_string_is_part_of_the_key() {
    let h = Harness::start(Setup::default()).await;
    let body = common::chat_body("versioned");
    let path = |v: &str| format!("/v1/chat/completions?api-version={v}");
    let a = h.send(&path("2024-02-01"), &body).await;
    let b = h.send(&path("2025-04-01-preview"), &body).await;
    let a2 = h.send(&path("2024-02-01"), &body).await;
    assert_eq!((a.cache(), b.cache(), a2.cache()), ("MISS", "MISS", "HIT"));
    let seen = h
        .mock
        .mock
        .last_request(MockRoute::ChatCompletions)
        .unwrap();
    assert!(
        seen.uri.ends_with("?api-version=2025-04-01-preview"),
        "{}",
        seen.uri
    );
}

#[tokio::test]
async fn integers_beyond_2_pow_64_keep_their_value() {
    let h = Harness::start(Setup::default()).await;
    let body = |n: &str| {
        format!(
            r#"{{"model":"gpt-4o-mini","temperature":0,"x_seed":{n},"messages":[{{"role":"user","content":"roll"}}]}}"#
        )
    };
    assert_eq!(
        chat_raw(&h, &body("18446744073709551616")).await.cache(),
        "MISS"
    );
    assert_eq!(
        chat_raw(&h, &body("18446744073709551617")).await.cache(),
        "MISS"
    );
    assert_eq!(
        chat_raw(&h, &body("18446744073709551617")).await.cache(),
        "HIT"
    );
    // 1 and 1.0 are an integer and a float to the provider's parser: not merged.
    assert_eq!(chat_raw(&h, &body("1")).await.cache(), "MISS");
    assert_eq!(chat_raw(&h, &body("1.0")).await.cache(), "MISS");
    assert_eq!(chat_raw(&h, &body("1.00")).await.cache(), "HIT");
}

#[tokio::test]
async fn duplicate_keys_are_forwarded_unchanged_and_never_cached() {
    let h = Harness::start(Setup::default()).await;
    let body = r#"{"model":"gpt-4o-mini","stream":true,"temperature":0,"temperature":1.5,
        "messages":[{"role":"user","content":"twice"}]}"#;
    for _ in 0..2 {
        let r = chat_raw(&h, body).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.cache(), "BYPASS");
        assert_eq!(r.header("x-prefixcache-bypass"), Some("duplicate_keys"));
        // Byte for byte: not even include_usage is spliced in.
        assert_eq!(last_sent(&h, MockRoute::ChatCompletions), body);
    }
    // Nested duplicates count too.
    let nested = r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","role":"system","content":"x"}]}"#;
    assert_eq!(chat_raw(&h, nested).await.cache(), "BYPASS");
    assert_eq!(h.upstream_calls(), 3);
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "prefixcache_bypass_total",
            &[("reason", "duplicate_keys")]
        ),
        3.0
    );
}

#[tokio::test]
async fn responses_store_is_keyed_and_server_state_is_never_cached() {
    let h = Harness::start(Setup::default()).await;
    let resp = |extra: &str| {
        format!(r#"{{"model":"gpt-4o-mini","temperature":0,"input":"Say hi."{extra}}}"#)
    };
    let post = |b: String| {
        let h = &h;
        async move { send_raw(h, "/v1/responses", &[], &b).await }
    };
    assert_eq!(post(resp(r#","store":false"#)).await.cache(), "MISS");
    // A stored response's id must exist upstream: not answered from a store:false one.
    assert_eq!(post(resp(r#","store":true"#)).await.cache(), "MISS");
    assert_eq!(post(resp(r#","store":true"#)).await.cache(), "HIT");
    for (extra, reason) in [
        (r#","conversation":"conv_123""#, "conversation"),
        (r#","background":true"#, "background"),
        (r#","prompt":{"id":"pmpt_1"}"#, "stored_prompt"),
        (
            r#","tools":[{"type":"file_search","vector_store_ids":["vs_1"]}]"#,
            "provider_tool",
        ),
    ] {
        for _ in 0..2 {
            let r = post(resp(extra)).await;
            assert_eq!(r.cache(), "BYPASS", "{extra}");
            assert_eq!(r.header("x-prefixcache-bypass"), Some(reason));
        }
    }
    assert_eq!(h.upstream_calls(), 2 + 8);
}

#[tokio::test]
async fn upstream_no_store_is_never_stored_or_shared() {
    let up = Recorder::start(&[("cache-control", "no-store")]).await;
    let h = Harness::start(Setup::default().upstream(&up.url)).await;
    let body = common::chat_body("do not keep this");
    let a = h.chat(&body).await;
    let b = h.chat(&body).await;
    assert_eq!((a.cache(), b.cache()), ("MISS", "MISS"));
    assert_eq!(
        (a.content(), b.content()),
        ("answer 1".into(), "answer 2".into())
    );
    h.settle().await;
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "prefixcache_store_skipped_total",
            &[("reason", "upstream_no_store")]
        ),
        2.0
    );
}

#[tokio::test]
async fn upstream_private_is_stored_only_in_the_callers_own_namespace() {
    let up = Recorder::start(&[("cache-control", "private, max-age=60")]).await;
    // Per-caller namespaces: the caller's own entry.
    let h = Harness::start(Setup::default().upstream(&up.url)).await;
    let body = common::chat_body("mine only");
    assert_eq!(h.chat(&body).await.cache(), "MISS");
    h.settle().await;
    assert_eq!(h.chat(&body).await.cache(), "HIT");
    // One namespace for everyone: a private answer is not kept.
    let up = Recorder::start(&[("cache-control", "private")]).await;
    let h = Harness::start(
        Setup::default()
            .upstream(&up.url)
            .toml("[cache]\ntenant = \"shared\""),
    )
    .await;
    assert_eq!(h.chat(&body).await.cache(), "MISS");
    h.settle().await;
    assert_eq!(h.chat(&body).await.cache(), "MISS");
}

/// Nested member order, number spellings, escapes and whitespace that a re-serialization
/// would change.
const FRAGILE: &str = r#""model": "gpt-4o-mini", "temperature": 0.0, "seed": 18446744073709551617,
  "messages": [{"role": "user", "content": "caf\u00e9 \/ tea"}],
  "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object",
    "properties": {"zeta": {"type": "number", "minimum": 1.50}, "alpha": {"type": "string"}}}}}"#;

#[tokio::test]
async fn forwarded_bytes_are_the_callers_with_only_the_documented_splices() {
    let h =
        Harness::start(Setup::default().toml("[strategies.default]\nprompt_cache_key = \"off\""))
            .await;
    let cases: [(&str, &str, &str); 5] = [
        // (head of the body, what the proxy must make of it, description)
        (
            "",
            r#""stream_options":{"include_usage":true},"#,
            "inserted after the brace",
        ),
        (
            r#""stream_options" : null,"#,
            r#""stream_options" : {"include_usage":true},"#,
            "null replaced",
        ),
        (
            r#""stream_options": {"include_obfuscation": false},"#,
            r#""stream_options": {"include_usage":true,"include_obfuscation": false},"#,
            "inserted into the caller's object",
        ),
        (
            r#""stream_options":{"include_usage" : false},"#,
            r#""stream_options":{"include_usage" : true},"#,
            "false replaced",
        ),
        (
            r#""stream_options":{"include_usage":true},"#,
            r#""stream_options":{"include_usage":true},"#,
            "nothing to do",
        ),
    ];
    // Every case is the same request to the cache: `no-cache` sends each upstream.
    let fresh = |body: String| {
        let h = &h;
        async move {
            send_raw(
                h,
                "/v1/chat/completions",
                &[("cache-control", "no-cache")],
                &body,
            )
            .await
        }
    };
    for (head, spliced, what) in cases {
        let body = format!("{{{head}\n  {FRAGILE}, \"stream\": true }}");
        let want = format!("{{{spliced}\n  {FRAGILE}, \"stream\": true }}");
        let r = fresh(body).await;
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(last_sent(&h, MockRoute::ChatCompletions), want, "{what}");
    }

    // prompt_cache_key: inserted, or replacing a null, with the proxy's derived key.
    let h = Harness::start(Setup::default()).await;
    let fresh = |body: String| {
        let h = &h;
        async move {
            send_raw(
                h,
                "/v1/chat/completions",
                &[("cache-control", "no-cache")],
                &body,
            )
            .await
        }
    };
    fresh(format!("{{\n  {FRAGILE} }}")).await;
    let sent = last_sent(&h, MockRoute::ChatCompletions);
    let key = serde_json::from_str::<Value>(&sent).unwrap()["prompt_cache_key"]
        .as_str()
        .expect("a derived key")
        .to_string();
    assert_eq!(
        sent,
        format!("{{\"prompt_cache_key\":\"{key}\",\n  {FRAGILE} }}")
    );
    fresh(format!("{{\"prompt_cache_key\": null,\n  {FRAGILE} }}")).await;
    assert_eq!(
        last_sent(&h, MockRoute::ChatCompletions),
        format!("{{\"prompt_cache_key\": \"{key}\",\n  {FRAGILE} }}")
    );
    // The caller's own key: the bytes as sent.
    let body = format!("{{\"prompt_cache_key\": \"mine\",\n  {FRAGILE} }}");
    fresh(body.clone()).await;
    assert_eq!(last_sent(&h, MockRoute::ChatCompletions), body);
    assert_eq!(h.upstream_calls(), 3);
}

#[tokio::test]
async fn paths_never_leave_the_upstream_base_and_the_proxys_key_stays_on_the_api() {
    let up = Recorder::start(&[]).await;
    let h = Harness::start(
        Setup::default()
            .upstream(&format!("{}/base", up.url))
            .toml("upstream_api_key = \"sk-proxy-own\""),
    )
    .await;
    for target in [
        "/v1/../../admin",
        "/v1/%2e%2e/%2e%2e/admin",
        "/v1/%2E%2E/admin",
        "/v1/./models",
        "/v1/models%2f..%2f..%2fadmin",
        "/v1/a%5c..%5cadmin",
    ] {
        let (status, text) = raw_http(&h.url, target, "").await;
        assert_eq!(status, 400, "{target}: {text}");
        assert!(text.contains("invalid_request_error"), "{text}");
    }
    assert!(
        up.seen().is_empty(),
        "nothing may reach upstream: {:?}",
        up.seen()
    );
    // Inside the API: forwarded under the base, with the proxy's key.
    let (status, _) = raw_http(&h.url, "/v1/models", "").await;
    assert_eq!(status, 200);
    // Outside it: forwarded, but without the proxy's key.
    let (status, _) = raw_http(&h.url, "/internal/status", "").await;
    assert_eq!(status, 200);
    let seen = up.seen();
    assert_eq!(seen[0].uri, "/base/v1/models");
    assert_eq!(seen[0].headers["authorization"], "Bearer sk-proxy-own");
    assert_eq!(seen[1].uri, "/base/internal/status");
    assert!(seen[1].headers.get("authorization").is_none());
}

#[tokio::test]
async fn headers_named_by_connection_are_dropped_both_ways() {
    let up = Recorder::start(&[
        ("connection", "x-upstream-hop"),
        ("x-upstream-hop", "internal"),
        ("x-end-to-end", "kept"),
    ])
    .await;
    let h = Harness::start(Setup::default().upstream(&up.url)).await;
    let headers = [
        ("connection", "keep-alive, x-client-hop"),
        ("x-client-hop", "secret"),
    ];
    // A cached route and a forwarded one.
    let cached = h.chat_with(&headers, &common::chat_body("hop")).await;
    let mut req = h.client.get(format!("{}/v1/models", h.url));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let other = Reply::read(req.send().await.unwrap()).await;
    for r in [&cached, &other] {
        assert_eq!(r.status, 200);
        assert!(r.header("x-upstream-hop").is_none(), "{:?}", r.headers);
        assert_eq!(r.header("x-end-to-end"), Some("kept"));
    }
    for seen in up.seen() {
        assert!(
            seen.headers.get("x-client-hop").is_none(),
            "{} {:?}",
            seen.uri,
            seen.headers
        );
    }
    assert_eq!(up.seen().len(), 2);
}

#[tokio::test]
async fn error_bodies_carry_no_upstream_url_and_no_caller_query() {
    // A closed port, and credentials in the configured URL.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let h = Harness::start(
        Setup::default().upstream(&format!("http://svc:up-s3cret@{addr}/internal-base")),
    )
    .await;
    let chat = h
        .send(
            "/v1/chat/completions?api-key=caller-s3cret",
            &common::chat_body("x"),
        )
        .await;
    let (status, other) = raw_http(&h.url, "/v1/models?key=caller-s3cret", "").await;
    assert_eq!(chat.status, 502);
    assert_eq!(status, 502);
    let chat = String::from_utf8_lossy(&chat.body).to_string();
    for text in [&chat, &other] {
        for secret in ["s3cret", "internal-base", &addr.to_string(), "caller"] {
            assert!(!text.contains(secret), "{secret:?} leaked in {text}");
        }
    }
    assert!(chat.contains("upstream unreachable"), "{chat}");
}
