//! What the proxy tells about its traffic: the request log, token metrics,
//! and the `prompt_cache_key` it adds for the provider's prompt cache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{Harness, Setup, chat_body, metric};
use prefixcache_mock::MockRoute;
use serde_json::{Value, json};

fn conversation(system: &str, turns: &[&str]) -> Value {
    let mut messages = vec![json!({"role": "system", "content": system})];
    for (i, t) in turns.iter().enumerate() {
        if i > 0 {
            messages.push(json!({"role": "assistant", "content": format!("answer {i}")}));
        }
        messages.push(json!({"role": "user", "content": t}));
    }
    json!({"model": "gpt-4o-mini", "temperature": 0, "messages": messages})
}

fn forwarded_key(h: &Harness) -> Option<String> {
    let seen = h
        .mock
        .mock
        .last_request(MockRoute::ChatCompletions)
        .unwrap();
    seen.json().unwrap()["prompt_cache_key"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn conversation_keys_are_stable_per_conversation_and_never_overwrite() {
    let h = Harness::start(
        Setup::default().toml("[strategies.default]\nprompt_cache_key = \"conversation\""),
    )
    .await;
    h.chat(&conversation("You are terse.", &["first question"]))
        .await;
    let turn1 = forwarded_key(&h).expect("a key is added");
    assert!(turn1.starts_with("pfx-c-"), "{turn1}");
    h.chat(&conversation(
        "You are terse.",
        &["first question", "second"],
    ))
    .await;
    assert_eq!(
        forwarded_key(&h).unwrap(),
        turn1,
        "every turn of a conversation shares the key"
    );
    h.chat(&conversation("You are terse.", &["another conversation"]))
        .await;
    assert_ne!(forwarded_key(&h).unwrap(), turn1);

    let mut own = conversation("You are terse.", &["mine"]);
    own["prompt_cache_key"] = json!("caller-key");
    h.chat(&own).await;
    assert_eq!(
        forwarded_key(&h).unwrap(),
        "caller-key",
        "a caller's key is never replaced"
    );
    // The key is not part of the cache key: the same request without it is a hit.
    own.as_object_mut().unwrap().remove("prompt_cache_key");
    assert_eq!(h.chat(&own).await.cache(), "HIT");
}

/// The default, `auto`: a quiet family (here two requests) gets the family's key, the
/// same for its single-turn requests and its conversations' turns.
#[tokio::test]
async fn the_default_key_of_a_quiet_family_is_the_familys() {
    let h = Harness::start(Setup::default()).await;
    // Longer than the family's 50-token window, so every turn is in one family.
    let system = "You are terse. Answer in one sentence, cite the manual's section numbers, \
                  and never guess prices or stock levels. "
        .repeat(4);
    h.chat(&conversation(&system, &["first question"])).await;
    let first = forwarded_key(&h).expect("a key is added by default");
    assert!(first.starts_with("pfx-f-"), "{first}");
    h.chat(&conversation(&system, &["first question", "second"]))
        .await;
    assert_eq!(forwarded_key(&h).unwrap(), first);
    h.chat(&conversation(&system, &["another conversation"]))
        .await;
    assert_eq!(forwarded_key(&h).unwrap(), first);
}

#[tokio::test]
async fn family_and_off_policies() {
    let h = Harness::start(Setup::default().toml(
        "[strategies.fam]\nprompt_cache_key = \"family\"\n[strategies.none]\nprompt_cache_key = \"off\"",
    ))
    .await;
    let with = |strategy: &'static str, body: Value| {
        let h = &h;
        async move {
            h.chat_with(&[("x-prefixcache-strategy", strategy)], &body)
                .await
        }
    };
    let r = with("fam", chat_body("family policy")).await;
    let key = forwarded_key(&h).unwrap();
    assert_eq!(
        &key["pfx-f-".len()..][..16],
        r.header("x-prefixcache-family").unwrap(),
        "the family key is derived from the family"
    );
    with("none", chat_body("off policy")).await;
    assert_eq!(forwarded_key(&h), None);
    // Legacy completions do not accept the field.
    h.send(
        "/v1/completions",
        &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "p"}),
    )
    .await;
    let seen = h.mock.mock.last_request(MockRoute::Completions).unwrap();
    assert!(seen.json().unwrap().get("prompt_cache_key").is_none());
}

#[tokio::test]
async fn request_log_has_one_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.jsonl");
    let h = Harness::start(
        Setup::default().toml(&format!("[log]\npath = {:?}", path.display().to_string())),
    )
    .await;
    let body = chat_body("log me");
    h.chat(&body).await;
    h.settle().await;
    h.chat(&body).await;
    let mut stream = chat_body("log my stream");
    stream["stream"] = json!(true);
    h.chat(&stream).await;
    h.settle().await;
    h.shutdown().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    let (miss, hit, streamed) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(
        (miss["status"].as_str(), hit["status"].as_str()),
        (Some("miss"), Some("hit"))
    );
    assert_eq!(miss["request"], body, "the request as sent");
    assert_eq!(miss["key"], hit["key"]);
    assert_eq!(miss["tenant"].as_str().unwrap().len(), 16);
    assert!(!text.contains("sk-test"), "never the credential");
    assert_eq!(miss["route"], "chat_completions");
    assert_eq!(miss["http_status"], 200);
    assert_eq!(
        miss["usage"], hit["usage"],
        "a hit reports the usage it saved"
    );
    assert!(miss["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(miss["ts"].as_str().unwrap().ends_with('Z'));
    assert!(
        streamed["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "usage read from the stream"
    );
}

#[tokio::test]
async fn token_metrics_count_upstream_and_cache_separately() {
    let h = Harness::start(Setup::default()).await;
    let body = chat_body("count my tokens");
    let first = h.chat(&body).await;
    h.settle().await;
    h.chat(&body).await;
    h.chat(&body).await;
    let usage = &first.json()["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_f64().unwrap(),
        usage["completion_tokens"].as_f64().unwrap(),
    );
    let m = h.metrics().await;
    let t = "prefixcache_tokens_total";
    assert_eq!(
        metric(&m, t, &[("kind", "prompt"), ("source", "upstream")]),
        p
    );
    assert_eq!(
        metric(&m, t, &[("kind", "completion"), ("source", "upstream")]),
        c
    );
    assert_eq!(
        metric(&m, t, &[("kind", "prompt"), ("source", "cache")]),
        2.0 * p
    );
    assert_eq!(
        metric(&m, t, &[("kind", "completion"), ("source", "cache")]),
        2.0 * c
    );
    assert_eq!(
        metric(&m, "prefixcache_requests_total", &[("status", "hit")]),
        2.0
    );
    assert_eq!(
        metric(&m, "prefixcache_requests_total", &[("status", "miss")]),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "prefixcache_provider_cacheable_total",
            &[("cacheable", "false")]
        ),
        1.0,
        "a short prompt cannot be provider-cached"
    );
    assert!(
        m.contains("# HELP prefixcache_tokens Tokens"),
        "every metric has help text"
    );
}
