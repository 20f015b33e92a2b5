//! Automatic prompt-cache breakpoints through the proxy, against the mock's simulation of
//! GPT-5.6's prompt cache: a long stable system prompt with a changing user message is
//! cached only with a breakpoint at its end; families that do not recur get none;
//! conversations are not made worse; callers' own breakpoints and older models' requests
//! go upstream as sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Harness, Recorder, Setup, metric};
use prefixcache_core::tokenizer::encoding_for_model;
use serde_json::{Value, json};

const MODEL: &str = "gpt-5.6-terra";

/// About 4,500 tokens of fixed instructions.
fn system_prompt() -> String {
    let rule = "You review purchase contracts for a hardware wholesaler. Quote clause numbers \
                exactly, flag every payment term longer than thirty days, never invent a \
                delivery date, and list the parties' obligations in the order they appear. ";
    format!("Instructions, version 7.\n{}", rule.repeat(100))
}

fn task(i: usize) -> String {
    format!(
        "Contract {i}: the supplier delivers {i} pallets within {} days; payment is due after {} days. Review it.",
        10 + i,
        20 + i
    )
}

fn agent_body(i: usize) -> Value {
    json!({"model": MODEL, "temperature": 0, "messages": [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": task(i)}
    ]})
}

fn cached(reply: &common::Reply) -> u64 {
    reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap()
}

/// Sends `n` agent requests under `breakpoints`; returns the cached tokens of each, the
/// dollars spent (writes included) and the breakpoint header of each.
async fn agent_run(breakpoints: &str, n: usize) -> (Vec<u64>, f64, Vec<String>) {
    let h = Harness::start(Setup::default().toml(&format!(
        "[strategies.default]\nbreakpoints = \"{breakpoints}\""
    )))
    .await;
    let mut cached_tokens = Vec::new();
    let mut headers = Vec::new();
    for i in 0..n {
        let r = h.chat(&agent_body(i)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.cache(), "MISS");
        cached_tokens.push(cached(&r));
        headers.push(
            r.header("x-prefixcache-breakpoint")
                .unwrap_or("")
                .to_string(),
        );
    }
    h.settle().await;
    let m = h.metrics().await;
    let spent = metric(&m, "prefixcache_cost_usd_total", &[("kind", "spent")]);
    let injected = metric(&m, "prefixcache_breakpoints_injected_total", &[]);
    if breakpoints == "off" {
        assert_eq!(injected, 0.0);
    } else {
        assert_eq!(injected, (n - 1) as f64, "every request after the first");
        let auto_spent = metric(
            &m,
            "prefixcache_provider_breakpoint_usd_total",
            &[("breakpoints", "auto"), ("kind", "spent")],
        );
        assert!(auto_spent > 0.0 && auto_spent < spent);
    }
    (cached_tokens, spent, headers)
}

#[tokio::test]
async fn a_stable_system_prompt_is_cached_only_with_auto_breakpoints() {
    let stable = encoding_for_model(MODEL).encoding.count(&system_prompt()) as f64;
    assert!(stable > 4000.0, "{stable} tokens");
    let n = 12;
    let (off, off_usd, off_headers) = agent_run("off", n).await;
    let (auto, auto_usd, headers) = agent_run("auto", n).await;
    let share = |c: &[u64]| c.iter().map(|&t| t as f64).sum::<f64>() / (c.len() as f64 * stable);
    // Warm-up: the first request teaches the boundary, the second writes it.
    let (off_share, auto_share) = (share(&off[2..]), share(&auto[2..]));
    println!(
        "stable prefix {stable} tokens; cached share after warm-up: off {off_share:.3}, auto {auto_share:.3}; \
         dollars incl. writes: off {off_usd:.6}, auto {auto_usd:.6}"
    );
    assert!(off_share < 0.05, "off: {off:?}");
    assert!(auto_share >= 0.9, "auto: {auto:?}");
    assert!(auto_usd < off_usd, "auto {auto_usd} vs off {off_usd}");
    assert!(off_headers.iter().all(String::is_empty), "off: no header");
    assert!(
        headers[0].starts_with("none; reason=not_recurring"),
        "{}",
        headers[0]
    );
    for h in &headers[1..] {
        assert!(
            h.starts_with("injected; block=0; path=messages[0].content; tokens="),
            "{h}"
        );
    }
}

#[tokio::test]
async fn families_that_do_not_recur_within_the_ttl_get_nothing() {
    let mut spent = Vec::new();
    for breakpoints in ["off", "auto"] {
        let h = Harness::start(Setup::default().toml(&format!(
            "[strategies.default]\nbreakpoints = \"{breakpoints}\""
        )))
        .await;
        for i in 0..5 {
            let r = h.chat(&agent_body(i)).await;
            assert_eq!(r.status, 200);
            if breakpoints == "auto" {
                let header = r.header("x-prefixcache-breakpoint").unwrap();
                assert!(header.starts_with("none; reason=not_recurring"), "{header}");
            }
            // Longer than a breakpoint's 30-minute lifetime between requests.
            h.clock.advance(Duration::from_secs(31 * 60));
        }
        h.settle().await;
        let m = h.metrics().await;
        assert_eq!(
            metric(&m, "prefixcache_breakpoints_injected_total", &[]),
            0.0
        );
        spent.push(metric(
            &m,
            "prefixcache_cost_usd_total",
            &[("kind", "spent")],
        ));
    }
    assert_eq!(spent[0], spent[1], "auto costs nothing extra");
}

/// Conversations of one family, turn by turn: the proxy's breakpoint on the shared
/// system prompt must not cost more than the provider's own implicit breakpoints.
#[tokio::test]
async fn multi_turn_conversations_are_not_made_worse() {
    let mut results = Vec::new();
    for breakpoints in ["off", "auto"] {
        let h = Harness::start(Setup::default().toml(&format!(
            "[strategies.default]\nbreakpoints = \"{breakpoints}\""
        )))
        .await;
        let mut histories: Vec<Vec<Value>> = (0..4)
            .map(|_| vec![json!({"role": "system", "content": system_prompt()})])
            .collect();
        for turn in 0..4 {
            for (c, history) in histories.iter_mut().enumerate() {
                history.push(json!({"role": "user", "content": format!("conversation {c}, turn {turn}: {}", task(c * 10 + turn))}));
                let r = h
                    .chat(&json!({"model": MODEL, "temperature": 0, "messages": history}))
                    .await;
                assert_eq!(r.status, 200);
                history.push(json!({"role": "assistant", "content": r.content()}));
            }
        }
        h.settle().await;
        let m = h.metrics().await;
        let t = "prefixcache_tokens_total";
        let prompt = metric(&m, t, &[("kind", "prompt"), ("source", "upstream")]);
        let cached = metric(&m, t, &[("kind", "cached_prompt"), ("source", "upstream")]);
        let spent = metric(&m, "prefixcache_cost_usd_total", &[("kind", "spent")]);
        results.push((cached / prompt, spent));
    }
    let ((off_share, off_usd), (auto_share, auto_usd)) = (results[0], results[1]);
    println!(
        "conversations: off {off_share:.3} ${off_usd:.6}; auto {auto_share:.3} ${auto_usd:.6}"
    );
    assert!(auto_share >= off_share, "{auto_share} < {off_share}");
    assert!(auto_usd <= off_usd, "{auto_usd} > {off_usd}");
}

/// The proxy against a recording upstream: what is forwarded, byte for byte.
async fn forwarded(model: &str, bodies: &[String]) -> Vec<bytes::Bytes> {
    let rec = Recorder::start(&[]).await;
    let h = Harness::start(Setup::default().upstream(&rec.url)).await;
    for b in bodies {
        let r = h
            .post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(b.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model}");
    }
    h.settle().await;
    rec.seen().into_iter().map(|s| s.body).collect()
}

fn raw_agent(model: &str, i: usize, own_key: bool, own_breakpoint: bool) -> String {
    let system = if own_breakpoint {
        format!(
            r#"[{{"type": "text", "text": {}, "prompt_cache_breakpoint": {{"mode": "explicit"}}}}]"#,
            serde_json::to_string(&system_prompt()).unwrap()
        )
    } else {
        serde_json::to_string(&system_prompt()).unwrap()
    };
    let key = if own_key {
        r#""prompt_cache_key" : "mine", "#
    } else {
        ""
    };
    format!(
        "{{ {key}\"model\":\"{model}\", \"temperature\" : 0.0,\n \"messages\": [{{\"role\":\"system\", \"content\": {system}}}, {{\"role\":\"user\",\"content\":{}}}] }}",
        serde_json::to_string(&task(i)).unwrap()
    )
}

#[tokio::test]
async fn the_breakpoint_is_the_only_change_to_the_callers_bytes() {
    let bodies: Vec<String> = (0..3).map(|i| raw_agent(MODEL, i, true, false)).collect();
    let seen = forwarded(MODEL, &bodies).await;
    assert_eq!(seen[0], bodies[0].as_bytes(), "nothing learned yet");
    let system = serde_json::to_string(&system_prompt()).unwrap();
    for (sent, got) in bodies.iter().zip(&seen).skip(1) {
        let expected = sent.replacen(
            &format!("\"content\": {system}"),
            &format!(
                "\"content\": [{{\"type\":\"text\",\"text\":{system},\"prompt_cache_breakpoint\":{{\"mode\":\"explicit\"}}}}]"
            ),
            1,
        );
        assert_eq!(std::str::from_utf8(got).unwrap(), expected);
    }
}

#[tokio::test]
async fn callers_breakpoints_and_older_models_go_upstream_as_sent() {
    let own: Vec<String> = (0..4).map(|i| raw_agent(MODEL, i, true, true)).collect();
    let seen = forwarded(MODEL, &own).await;
    for (sent, got) in own.iter().zip(&seen) {
        assert_eq!(got, sent.as_bytes());
    }
    let older: Vec<String> = (0..4)
        .map(|i| raw_agent("gpt-4o-mini", i, true, false))
        .collect();
    let seen = forwarded("gpt-4o-mini", &older).await;
    for (sent, got) in older.iter().zip(&seen) {
        assert_eq!(got, sent.as_bytes());
    }
}
