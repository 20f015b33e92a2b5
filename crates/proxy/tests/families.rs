//! Prefix families on the wire: `x-prefixcache-family` groups requests that
//! share their first N tokens, and `key_mode = "prefix"` keeps one slot per family.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::{Harness, Reply, Setup, chat_body};
use serde_json::json;

const SYSTEM: &str = "You are a meticulous document analyzer. Read the document the user \
    provides and extract the key entities, the main topics, and a sentiment score between \
    -1 and 1. Answer in JSON with the fields entities, topics and sentiment. Be concise.";

fn doc(system: &str, user: &str) -> serde_json::Value {
    json!({
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ],
    })
}

#[tokio::test]
async fn family_header_follows_the_first_n_tokens() {
    let h = Harness::start(Setup::default()).await;
    let a = h.chat(&doc(SYSTEM, "Document: the first contract")).await;
    let b = h.chat(&doc(SYSTEM, "Document: a different memo")).await;
    let fam = |r: &Reply| r.header("x-prefixcache-family").unwrap().to_string();
    assert_eq!(fam(&a).len(), 16);
    assert_eq!(fam(&a), fam(&b), "same first 50 tokens, same family");
    assert_ne!(a.header("x-prefixcache-key"), b.header("x-prefixcache-key"));
    let c = h
        .chat(&doc(
            &format!("[RequestID: 7f3a] {SYSTEM}"),
            "Document: the first contract",
        ))
        .await;
    assert_ne!(
        fam(&a),
        fam(&c),
        "a request id at the start moves the family"
    );
    // Short prompts are their own family.
    let d = h.chat(&chat_body("hi")).await;
    let e = h.chat(&chat_body("hello")).await;
    assert_ne!(fam(&d), fam(&e));
}

#[tokio::test]
async fn prefix_key_mode_hits_only_on_a_full_match_and_overwrites_on_a_miss() {
    let h =
        Harness::start(Setup::default().toml("[strategies.default]\nkey_mode = \"prefix\"")).await;
    let first = doc(SYSTEM, "Document: one");
    let second = doc(SYSTEM, "Document: two");
    assert_eq!(h.chat(&first).await.cache(), "MISS");
    h.settle().await;
    let f = h.chat(&first).await;
    assert_eq!(f.cache(), "HIT");
    // Same family, different request: the stored full hash does not match.
    let s = h.chat(&second).await;
    assert_eq!(s.cache(), "MISS");
    assert_eq!(
        f.header("x-prefixcache-key"),
        s.header("x-prefixcache-key"),
        "one slot per family"
    );
    h.settle().await;
    // ...and the miss overwrote the family's single slot.
    assert_eq!(h.chat(&second).await.cache(), "HIT");
    assert_eq!(
        h.chat(&first).await.cache(),
        "MISS",
        "the first entry was overwritten"
    );
}

#[tokio::test]
async fn normalize_whitespace_merges_families_and_keys_but_forwards_the_original() {
    let h =
        Harness::start(Setup::default().toml("[strategies.default]\nnormalize_whitespace = true"))
            .await;
    let tidy = doc("Summarize: the text below.", "Some text");
    let messy = doc("Summarize:\n\n\n  the   text below. ", "Some   text");
    let a = h.chat(&tidy).await;
    let b = h.chat(&messy).await;
    assert_eq!(
        a.header("x-prefixcache-family"),
        b.header("x-prefixcache-family")
    );
    assert_eq!((a.cache(), b.cache()), ("MISS", "HIT"));
    let c = h
        .chat(&doc("Summarize:\n\n\n  the   text below.   ", "Other text"))
        .await;
    assert_eq!(c.cache(), "MISS");
    let seen = h
        .mock
        .mock
        .last_request(prefixcache_mock::MockRoute::ChatCompletions)
        .unwrap();
    assert_eq!(
        seen.json().unwrap()["messages"][0]["content"],
        "Summarize:\n\n\n  the   text below.   ",
        "the request sent upstream is never altered"
    );
}

#[tokio::test]
async fn prefix_mode_never_coalesces_different_requests_of_one_family() {
    let mock = prefixcache_mock::MockConfig {
        latency: prefixcache_mock::Latency::Fixed(std::time::Duration::from_millis(300)),
        ..Default::default()
    };
    let h = Harness::start(
        Setup::default()
            .mock(mock)
            .toml("[strategies.default]\nkey_mode = \"prefix\""),
    )
    .await;
    let (alpha, beta) = (
        doc(SYSTEM, "Document: alpha"),
        doc(SYSTEM, "Document: beta"),
    );
    let (a, b) = tokio::join!(h.chat(&alpha), h.chat(&beta));
    assert_eq!(
        a.header("x-prefixcache-key"),
        b.header("x-prefixcache-key"),
        "one slot"
    );
    assert_eq!((a.cache(), b.cache()), ("MISS", "MISS"));
    assert_ne!(
        a.content(),
        b.content(),
        "each got the answer to its own request"
    );
    assert_eq!(h.upstream_calls(), 2);
}
